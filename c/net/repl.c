/* repl.c - the transport (docs/replication.md, "The transport"): the Raft
 * core's messages to the other nodes, and the leader's snapshot streams.
 *
 * Messages: one POST /raft (the wire format is wire.h) at a time per
 * peer, on that peer's connection, carrying every message to it since
 * the last one was sent: a Ready's messages go at once when nothing is in
 * flight, and otherwise wait, with those of the Readys after it, for the
 * answer. Under load a request then carries many Readys' heartbeats,
 * appends and answers instead of each Ready paying an HTTP round trip
 * behind the others (evhttp sends a connection's requests one after
 * another anyway), and a node still receives one peer's messages in the
 * order they were sent. The answer is an empty 200: answers to messages
 * are messages of their own, sent back the same way. A request that
 * fails (refused, reset, 2 s without an answer) tells the core the peer
 * is unreachable and drops what waited for it; past LKVNET_PEER_PENDING
 * bytes waiting, new messages to that peer are dropped (Raft tolerates
 * any loss) instead of piling up behind a stopped node.
 *
 * Snapshots: a MSG_SNAP from the core starts a stream of the engine's
 * pairs at the applied index to that peer (POST /snapshot, in chunks); the
 * peer steps the MSG_SNAP itself once all of it is installed; the stream's
 * end (or failure) is reported to the core (lkvnet_raft_report_snapshot)
 * once outside a Ready (lkvnet_node_snapshot_reports, from the driver's
 * cycle). A node that stops leading ends its streams
 * (lkvnet_node_snapshots_stop): they are at its term, which the
 * follower no longer follows.
 *
 * Calls the core (reports) and wakes the driver (lkvnet_node_wake), never
 * the driver's functions. Runs on the event loop's thread. */
#include <event2/buffer.h>
#include <event2/http.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "json.h"
#include "node.h"
#include "rlog.h"
#include "wire.h"

/* bytes of messages waiting for one peer's request in flight before new
 * ones drop: a few full appends (each at most LKVNET_APPEND_MAX_BYTES,
 * about) with room for the heartbeats and answers between them */
#define LKVNET_PEER_PENDING (8u * LKVNET_APPEND_MAX_BYTES)
/* a waiting body takes more messages while under this; then a new one
 * starts, so no request is larger than the largest Ready's messages or
 * this (what a receiver's body cap already allows) */
#define LKVNET_PEER_BODY LKVNET_APPEND_MAX_BYTES

/* {======================================================================
** Peers
** ======================================================================= */

static void peer_log_state(lkvnet_server *s, lkvnet_peer *p, int state,
                           const char *why) {
  if (p->state == state) return;
  if (state == LKVNET_PEER_UP)
    lkvnet_node_log(s, "peer %s up", p->url);
  else
    lkvnet_node_log(s, "peer %s down: %s", p->url, why);
  p->state = state;
}

static struct evhttp_request *peer_request(lkvnet_server *s, lkvnet_peer *p,
                                           void (*cb)(struct evhttp_request *,
                                                      void *)) {
  struct evhttp_request *r = evhttp_request_new(cb, p);
  struct evkeyvalq *h;
  if (r == NULL) return NULL;
  h = evhttp_request_get_output_headers(r);
  evhttp_add_header(h, "Host", p->hostport);
  evhttp_add_header(h, "Content-Type", "application/octet-stream");
  evhttp_add_header(h, LKVNET_FROM_HEADER, s->my_url);
  if (s->token != NULL) evhttp_add_header(h, LKVNET_TOKEN_HEADER, s->token);
  return r;
}

/* A short description of a failed internal request's answer. */
static void answer_error(struct evhttp_request *r, char *buf, size_t n) {
  int code = r ? evhttp_request_get_response_code(r) : 0;
  lkvnet_json_object o;
  char jerr[LKVNET_JSON_ERR_LEN];
  const lkvnet_json_member *m;
  struct evbuffer *in;
  size_t len;
  const char *body;
  if (code == 0) {
    snprintf(buf, n, "no answer (connection refused, reset or timed out)");
    return;
  }
  snprintf(buf, n, "HTTP %d", code);
  in = evhttp_request_get_input_buffer(r);
  len = evbuffer_get_length(in);
  body = len ? (const char *)evbuffer_pullup(in, -1) : "";
  memset(&o, 0, sizeof o);
  if (body != NULL && lkvnet_json_parse_object(body, len, &o, jerr) == 0 &&
      (m = lkvnet_json_get(&o, "error")) != NULL && m->str != NULL)
    snprintf(buf, n, "HTTP %d: %.180s", code, m->str);
  lkvnet_json_free(&o);
}

/* }====================================================================== */

/* {======================================================================
** Messages: POST /raft
** ======================================================================= */

static void free_body(const void *data, size_t len, void *extra) {
  (void)len;
  (void)extra;
  free((void *)data);
}

static void post_raft(lkvnet_server *s, lkvnet_peer *p, unsigned char *body,
                      size_t len);

void lkvnet_node_outbox_free(lkvnet_peer *p) {
  lkvnet_outbox *b, *next;
  for (b = p->pend; b != NULL; b = next) {
    next = b->next;
    free(b->buf);
    free(b);
  }
  p->pend = p->pend_tail = NULL;
  p->pend_bytes = 0;
}

static void on_raft_reply(struct evhttp_request *r, void *arg) {
  lkvnet_peer *p = arg;
  lkvnet_server *s = p->s;
  int code = r ? evhttp_request_get_response_code(r) : 0;
  if (p->inflight > 0) p->inflight--;
  if (code == 200) {
    lkvnet_outbox *b;
    const char *nm = evhttp_find_header(evhttp_request_get_input_headers(r),
                                        LKVNET_NOT_MEMBER_HEADER);
    if (nm != NULL) lkvnet_node_told_not_member(s, p, nm);
    p->last_contact = lkvnet_node_now();
    peer_log_state(s, p, LKVNET_PEER_UP, NULL);
    while ((b = p->pend) != NULL && b->len == 0) { /* left by a failed grow */
      if ((p->pend = b->next) == NULL) p->pend_tail = NULL;
      free(b->buf);
      free(b);
    }
    if (b != NULL && p->inflight == 0) {
      /* what gathered meanwhile goes next; the request takes it over */
      if ((p->pend = b->next) == NULL) p->pend_tail = NULL;
      p->pend_bytes -= b->len;
      post_raft(s, p, b->buf, b->len);
      free(b);
    }
    return;
  }
  p->failures++;
  if (p->pend != NULL) p->dropped++; /* for a peer that did not answer */
  lkvnet_node_outbox_free(p);
  answer_error(r, p->last_error, sizeof p->last_error);
  peer_log_state(s, p, LKVNET_PEER_DOWN, p->last_error);
  lkvnet_raft_report_unreachable(s->raft, p->id);
  lkvnet_node_wake(s);
}

static void snapshot_start(lkvnet_server *s, lkvnet_peer *p);

/* Send body (len bytes of messages, malloc'd; taken over) in a POST /raft. */
static void post_raft(lkvnet_server *s, lkvnet_peer *p, unsigned char *body,
                      size_t len) {
  struct evhttp_request *r;
  if ((r = peer_request(s, p, on_raft_reply)) == NULL) {
    free(body);
    p->dropped++;
    return;
  }
  /* the request takes the body over (freed once sent): no copy */
  if (evbuffer_add_reference(evhttp_request_get_output_buffer(r), body, len,
                             free_body, NULL) != 0) {
    free(body);
    evhttp_request_free(r);
    p->dropped++;
    return;
  }
  p->inflight++;
  p->last_send = lkvnet_node_now();
  if (evhttp_make_request(p->conn, r, EVHTTP_REQ_POST, "/raft") != 0) {
    p->inflight--; /* no callback will come (libevent 2.1) */
    evhttp_request_free(r);
    p->dropped++;
    return;
  }
  lkvnet_node_write_now(p->conn); /* the peer starts on it sooner */
}

void lkvnet_node_probe(lkvnet_server *s, lkvnet_peer *p) {
  struct evhttp_request *r;
  if (p->inflight > 0 || (r = peer_request(s, p, on_raft_reply)) == NULL)
    return;
  p->inflight++;
  if (evhttp_make_request(p->conn, r, EVHTTP_REQ_POST, "/raft") != 0) {
    p->inflight--; /* no callback will come (libevent 2.1) */
    evhttp_request_free(r);
  }
}

/* Room for len more bytes at the end of what waits for p: the last
 * body's when it has room, else a new body's. NULL when out of memory. */
static lkvnet_outbox *pending_room(lkvnet_peer *p, size_t len) {
  lkvnet_outbox *b = p->pend_tail;
  if (b == NULL || b->len + len > LKVNET_PEER_BODY) {
    if ((b = calloc(1, sizeof *b)) == NULL) return NULL;
    if (p->pend_tail != NULL)
      p->pend_tail->next = b;
    else
      p->pend = b;
    p->pend_tail = b;
  }
  if (b->len + len > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    unsigned char *n;
    while (cap < b->len + len) cap *= 2;
    if ((n = realloc(b->buf, cap)) == NULL) return NULL;
    b->buf = n;
    b->cap = cap;
  }
  return b;
}

/* The messages of one Ready to one peer: sent now, or added to what waits
 * for the request in flight. */
static void send_batch(lkvnet_server *s, lkvnet_peer *p,
                       const lkvnet_raft_msg *msgs, size_t n) {
  size_t i, len = 0, off = 0;
  unsigned char *body;
  lkvnet_outbox *b = NULL;
  for (i = 0; i < n; i++)
    if (msgs[i].to == p->id && msgs[i].type != LKVNET_RAFT_MSG_SNAP)
      len += lkvnet_wire_size(&msgs[i]);
  if (len == 0) return;
  if (p->inflight > 0) {
    if (p->pend_bytes + len > LKVNET_PEER_PENDING ||
        (b = pending_room(p, len)) == NULL) {
      p->dropped++; /* a peer that answers nothing: as if lost */
      return;
    }
    body = b->buf;
    off = b->len;
  } else if ((body = malloc(len)) == NULL) {
    p->dropped++;
    return;
  }
  for (i = 0; i < n; i++) {
    if (msgs[i].to != p->id || msgs[i].type == LKVNET_RAFT_MSG_SNAP) continue;
    lkvnet_wire_encode(body + off, &msgs[i]);
    off += lkvnet_wire_size(&msgs[i]);
    if (msgs[i].type == LKVNET_RAFT_MSG_APP) {
      p->appends++;
      p->entries_sent += msgs[i].n_entries;
    }
  }
  if (b != NULL) {
    b->len = off;
    p->pend_bytes += len;
  } else {
    post_raft(s, p, body, len);
  }
}

void lkvnet_node_send(lkvnet_server *s, const lkvnet_raft_msg *msgs, size_t n) {
  size_t i, j;
  for (i = 0; i < s->npeers; i++) {
    lkvnet_peer *p = &s->peers[i];
    send_batch(s, p, msgs, n);
    for (j = 0; j < n; j++)
      if (msgs[j].to == p->id && msgs[j].type == LKVNET_RAFT_MSG_SNAP)
        snapshot_start(s, p);
  }
}

/* }====================================================================== */

/* {======================================================================
** Snapshot streams
** ======================================================================= */

static void snapshot_send(lkvnet_server *s, lkvnet_peer *p);

static void snapshot_end(lkvnet_server *s, lkvnet_peer *p, int ok,
                         const char *why) {
  if (p->snap != NULL) lkv_iter_free(p->snap);
  p->snap = NULL;
  p->snap_inflight = 0;
  if (ok) {
    p->snapshots_sent++;
    p->snap_hold_until = lkvnet_node_now() + LKVNET_SNAPSHOT_HOLD_S;
    lkvnet_node_log(
        s, "peer %s installed the snapshot at index %llu (%llu keys)", p->url,
        (unsigned long long)p->snap_index, (unsigned long long)p->snap_sent);
  } else {
    p->failures++;
    snprintf(p->last_error, sizeof p->last_error, "snapshot: %s", why);
    lkvnet_node_log(s, "snapshot to %s failed: %s", p->url, why);
  }
  /* told to the core by the driver's next cycle: a stream can end
   * inside the Ready that started it (its first chunk failing at once),
   * where the core must not be called */
  p->snap_report = ok ? 1 : -1;
  lkvnet_node_wake(s);
}

void lkvnet_node_snapshots_stop(lkvnet_server *s) {
  size_t i;
  for (i = 0; i < s->npeers; i++) {
    lkvnet_peer *p = &s->peers[i];
    if (p->snap == NULL) continue;
    lkvnet_node_log(s, "snapshot to %s stopped: this node no longer leads",
                    p->url);
    lkv_iter_free(p->snap);
    p->snap = NULL; /* a chunk still in flight finds it gone */
    p->snap_inflight = 0;
    p->snap_report = 0; /* its core is no leader: nothing to tell */
  }
}

void lkvnet_node_snapshot_reports(lkvnet_server *s) {
  size_t i;
  for (i = 0; i < s->npeers; i++) {
    lkvnet_peer *p = &s->peers[i];
    int ok = p->snap_report > 0;
    if (p->snap_report == 0) continue;
    p->snap_report = 0;
    lkvnet_raft_report_snapshot(s->raft, p->id, ok);
  }
}

static void on_snapshot_reply(struct evhttp_request *r, void *arg) {
  lkvnet_peer *p = arg;
  lkvnet_server *s = p->s;
  char why[240];
  p->snap_inflight = 0;
  if (p->snap == NULL) return; /* ended meanwhile */
  if (r == NULL || evhttp_request_get_response_code(r) != 200) {
    answer_error(r, why, sizeof why);
    snapshot_end(s, p, 0, why);
    return;
  }
  p->last_contact = lkvnet_node_now();
  p->snap_sent += p->snap_chunk;
  if (p->snap_done) {
    snapshot_end(s, p, 1, NULL);
    return;
  }
  snapshot_send(s, p);
}

/* The configuration as a query value: the voters' ids in hex, comma
 * separated, then ';' and the learners'. */
static void conf_param(const lkvnet_raft_conf *c, char *buf, size_t n) {
  size_t i, off = 0;
  buf[0] = '\0';
  for (i = 0; i < c->n_voters && off < n; i++)
    off += (size_t)snprintf(buf + off, n - off, "%s%llx", i ? "," : "",
                            (unsigned long long)c->voters[i]);
  if (off < n) off += (size_t)snprintf(buf + off, n - off, "%%3B");
  for (i = 0; i < c->n_learners && off < n; i++)
    off += (size_t)snprintf(buf + off, n - off, "%s%llx", i ? "," : "",
                            (unsigned long long)c->learners[i]);
}

static void snapshot_start(lkvnet_server *s, lkvnet_peer *p) {
  lkv_err err;
  lkvnet_rlog_stats rs;
  if (p->snap != NULL) return; /* one stream at a time */
  err.msg[0] = '\0';
  lkvnet_rlog_stats_get(s->rlog, &rs);
  if (lkv_iter_new(s->db, LKV_SEQ_LATEST, &p->snap, &err) != LKV_OK) {
    p->snap = NULL;
    p->snap_report = -1; /* inside the Ready that asked: told after it */
    lkvnet_node_wake(s);
    return;
  }
  /* the loop applies entries itself, so the engine is exactly at the
   * applied index while it builds the view; its term is in the log (the
   * base's, when the applied index is the base) */
  p->snap_index = s->applied_index;
  if (lkvnet_rlog_term_at(s->rlog, p->snap_index, &p->snap_term) != LKV_OK)
    p->snap_term = rs.base_term;
  p->snap_conf = s->conf;
  p->snap_sent = 0;
  if (p->snap_conn == NULL) {
    if ((p->snap_conn = lkvnet_node_connect_url(s, p->url, NULL, NULL)) ==
        NULL) {
      lkv_iter_free(p->snap);
      p->snap = NULL;
      p->snap_report = -1;
      return;
    }
    evhttp_connection_set_timeout(p->snap_conn, LKVNET_SNAPSHOT_TIMEOUT_S);
  }
  lkv_iter_seek_first(p->snap);
  lkvnet_node_log(s,
                  "peer %s needs entries behind the log's start (%llu): "
                  "sending a snapshot at index %llu",
                  p->url, (unsigned long long)rs.base_index + 1,
                  (unsigned long long)p->snap_index);
  snapshot_send(s, p);
}

/* The next chunk: pairs from the engine iterator, as log frames (op set,
 * index = the pair's number in the stream). */
static void snapshot_send(lkvnet_server *s, lkvnet_peer *p) {
  struct evhttp_request *r;
  struct evbuffer *out;
  char uri[1024], conf[700], urls[LKVNET_RAFT_MAX_MEMBERS * 202];
  lkv_err err;
  size_t bytes = 0;
  lkvnet_entry e;
  err.msg[0] = '\0';
  if ((r = peer_request(s, p, on_snapshot_reply)) == NULL) {
    snapshot_end(s, p, 0, "out of memory");
    return;
  }
  out = evhttp_request_get_output_buffer(r);
  p->snap_chunk = 0;
  e.term = p->snap_term;
  e.op = LKVNET_OP_SET;
  while (lkv_iter_valid(p->snap) && bytes < LKVNET_SNAPSHOT_CHUNK_BYTES) {
    unsigned char stackbuf[512], *fb = stackbuf;
    size_t fl;
    e.key = lkv_iter_key(p->snap, &e.klen);
    e.val = lkv_iter_value(p->snap, &e.vlen);
    /* the node's own keys stay behind, but for the stored libraries,
     * which are replicated state */
    if (!lkvnet_node_is_reserved(e.key, e.klen) ||
        lkvnet_node_is_library_key(e.key, e.klen)) {
      e.index = p->snap_sent + p->snap_chunk + 1;
      fl = lkvnet_rlog_frame_size(&e);
      /* whole pairs up to the chunk size, or one pair alone: a chunk stays
       * within what the follower's HTTP layer takes */
      if (p->snap_chunk > 0 && bytes + fl > LKVNET_SNAPSHOT_CHUNK_BYTES) break;
      if (fl > sizeof stackbuf && (fb = malloc(fl)) == NULL) break;
      lkvnet_rlog_encode(fb, &e);
      evbuffer_add(out, fb, fl);
      if (fb != stackbuf) free(fb);
      bytes += fl;
      p->snap_chunk++;
    }
    lkv_iter_next(p->snap);
  }
  if (lkv_iter_status(p->snap, &err) != LKV_OK) {
    evhttp_request_free(r);
    snapshot_end(s, p, 0, err.msg);
    return;
  }
  p->snap_done = !lkv_iter_valid(p->snap);
  conf_param(&p->snap_conf, conf, sizeof conf);
  snprintf(uri, sizeof uri,
           "/snapshot?term=%llu&from=%llx&index=%llu&snap_term=%llu"
           "&offset=%llu&done=%d&conf=%s",
           (unsigned long long)s->term, (unsigned long long)s->id,
           (unsigned long long)p->snap_index, (unsigned long long)p->snap_term,
           (unsigned long long)p->snap_sent, p->snap_done, conf);
  /* every member's URL, so the follower keeps them with the snapshot */
  if (lkvnet_node_members_list(s, &p->snap_conf, urls, sizeof urls) > 0)
    evhttp_add_header(evhttp_request_get_output_headers(r),
                      LKVNET_MEMBERS_HEADER, urls);
  p->snap_inflight = 1;
  if (evhttp_make_request(p->snap_conn, r, EVHTTP_REQ_POST, uri) != 0) {
    evhttp_request_free(r); /* no callback will come (libevent 2.1) */
    snapshot_end(s, p, 0, "cannot send the request");
  }
}

/* }====================================================================== */
