/* repl.c - the leader's side of replication (docs/replication.md): a
 * client's write checked, appended and held for its commit; the commit
 * index, counted from the followers' match indexes; a new term and its
 * no-op; one /append in flight per follower carrying every entry it
 * lacks, a /snapshot stream when the log was cut behind it, and the
 * bookkeeping of each follower's state (up, down, backoff). The apply of
 * what commits is apply.c's. Runs on the event loop's thread; the node's
 * state is node.h. */
#include <event2/buffer.h>
#include <event2/http.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "json.h"
#include "node.h"
#include "rlog.h"

/* {======================================================================
** Taking a write: check, append, hold, send
** ======================================================================= */

/* Start a write on the leader: check it, append it, send it to the
 * followers, and leave the request waiting for its commit. Refusals
 * answer at once and write nothing. */
void lkvnet_node_write_begin(lkvnet_server *s, struct evhttp_request *req,
                             int route, double start, int op, const char *key,
                             size_t klen, const char *val, size_t vlen) {
  uint64_t index;
  lkv_err err;
  int rc;
  if (s->draining) {
    lkvnet_node_reply_error(s, req, route, start, 503,
                            "the node is shutting down");
    return;
  }
  if (s->apply_err.code != LKV_OK) {
    lkvnet_node_reply_error(s, req, route, start, 500, "writes are stopped: %s",
                            s->apply_err.msg);
    return;
  }
  if (s->pending_bytes + klen + vlen > s->max_uncommitted) {
    /* without a majority every refused write would still sit in memory
     * (it is in the log and may commit later): past this, refuse them
     * before they are written */
    lkvnet_node_reply_error(s, req, route, start, 503,
                            "%zu bytes of writes are waiting "
                            "for a majority; refusing more until it is back",
                            s->pending_bytes);
    return;
  }
  if (lkvnet_node_is_reserved(key, klen)) {
    lkvnet_node_reply_error(
        s, req, route, start, 400,
        "keys starting with \\xff\\xfflunakv/ are reserved");
    return;
  }
  if (klen > LKV_MAX_KEY_BYTES) {
    lkvnet_node_reply_error(s, req, route, start, 413,
                            "key is %zu bytes; the limit is %u", klen,
                            (unsigned)LKV_MAX_KEY_BYTES);
    return;
  }
  if (vlen > LKV_MAX_VALUE_BYTES) {
    lkvnet_node_reply_error(s, req, route, start, 413,
                            "value is %zu bytes; the limit is %u", vlen,
                            (unsigned)LKV_MAX_VALUE_BYTES);
    return;
  }
  err.msg[0] = '\0';
  rc = lkvnet_rlog_append(s->rlog, s->term, op, key, klen, val, vlen, &index,
                          &err);
  if (rc != LKV_OK) {
    lkvnet_node_reply_error(s, req, route, start,
                            lkvnet_node_http_status_of(rc), "%s", err.msg);
    return;
  }
  if (lkvnet_node_pending_push(s, index, op, key, klen, val, vlen) != 0) {
    /* appended but untracked: applying past it would skip it, so the
     * node stops applying; a restart replays it from the log */
    lkv_seterr(&s->apply_err, LKV_NOMEM,
               "out of memory tracking index "
               "%llu",
               (unsigned long long)index);
    lkvnet_node_reply_error(s, req, route, start, 500, "%s", s->apply_err.msg);
    return;
  }
  lkvnet_node_hold(s, &s->tail->h, req, route, start,
                   start + s->write_timeout_ms / 1000.0);
  lkvnet_node_peers_kick(s);
}

/* }====================================================================== */

/* {======================================================================
** The commit index and the term
** ======================================================================= */

static int cmp_desc(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? 1 : x > y ? -1 : 0;
}

/* The leader's commit index: the highest index durable on a majority of
 * the nodes, counting the leader, which must hold it itself: with a fixed
 * leader there are no elections to keep a node that lacks an entry from
 * leading, so the leader never counts an entry it could lose. As in Raft
 * (section 5.4.2), only an entry of the leader's own term commits by
 * counting; earlier ones commit with it (hence the no-op at term start).
 * A node alone commits whatever it has synced. */
static uint64_t majority_index(lkvnet_server *s) {
  uint64_t self = lkvnet_rlog_durable_index(s->rlog), c, t;
  size_t need = (s->npeers + 1) / 2 + 1, i; /* nodes that must hold it */
  uint64_t m[LKVNET_MAX_NODES];
  if (s->npeers == 0) return self;
  for (i = 0; i < s->npeers; i++) m[i] = s->peers[i].match_index;
  qsort(m, i, sizeof m[0], cmp_desc);
  c = m[need - 2]; /* the (need-1)-th best follower */
  if (c > self) c = self;
  if (c <= s->commit_index) return s->commit_index;
  if (lkvnet_rlog_term_at(s->rlog, c, &t) != LKV_OK || t != s->term)
    return s->commit_index;
  return c;
}

void lkvnet_node_advance_commit(lkvnet_server *s) {
  uint64_t c = s->leader ? majority_index(s) : s->commit_index;
  int moved = c > s->commit_index;
  if (moved) s->commit_index = c;
  lkvnet_node_apply_committed(s);
  /* followers learn the new commit index with the next batch */
  if (moved && s->leader) lkvnet_node_peers_kick(s);
}

/* Lead in term t: persist it before anything of it is written, then
 * append its no-op, through which entries of earlier terms commit (Raft
 * 5.4.2); consistent reads wait for it. A node alone needs no no-op. */
int lkvnet_node_start_term(lkvnet_server *s, uint64_t t) {
  uint64_t idx;
  lkv_err err;
  int rc;
  err.msg[0] = '\0';
  if ((rc = lkvnet_term_store(s->data_dir, s->env, t, &err)) != LKV_OK) {
    lkvnet_node_log(s, "cannot persist term %llu: %s", (unsigned long long)t,
                    err.msg);
    return rc;
  }
  s->term = t;
  if (s->npeers == 0) return LKV_OK;
  if ((rc = lkvnet_rlog_append(s->rlog, s->term, LKVNET_OP_NOOP, NULL, 0, NULL,
                               0, &idx, &err)) != LKV_OK) {
    lkvnet_node_log(s, "cannot append the no-op of term %llu: %s",
                    (unsigned long long)t, err.msg);
    return rc;
  }
  if (lkvnet_node_pending_push(s, idx, LKVNET_OP_NOOP, NULL, 0, NULL, 0) != 0)
    return LKV_NOMEM;
  s->term_start = idx;
  return LKV_OK;
}

/* }====================================================================== */

/* {======================================================================
** Sending to followers
** ======================================================================= */

static void peer_log_state(lkvnet_server *s, lkvnet_peer *p, int state,
                           const char *why) {
  if (p->state == state) return;
  if (state == LKVNET_PEER_UP)
    lkvnet_node_log(s, "peer %s up (match index %llu)", p->url,
                    (unsigned long long)p->match_index);
  else
    lkvnet_node_log(s, "peer %s down: %s", p->url, why);
  p->state = state;
}

static void peer_failed(lkvnet_server *s, lkvnet_peer *p, const char *why) {
  double t = lkvnet_node_now();
  p->failures++;
  snprintf(p->last_error, sizeof p->last_error, "%s", why);
  peer_log_state(s, p, LKVNET_PEER_DOWN, why);
  /* back off: 50 ms doubling to 1 s, so a dead follower costs little */
  p->backoff = p->backoff <= 0 ? 0.05 : p->backoff * 2;
  if (p->backoff > 1.0) p->backoff = 1.0;
  p->retry_at = t + p->backoff;
  if (p->snap != NULL) { /* start the stream over when it comes back */
    lkv_iter_free(p->snap);
    p->snap = NULL;
  }
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
  if (s->token != NULL) evhttp_add_header(h, LKVNET_TOKEN_HEADER, s->token);
  return r;
}

/* The JSON answer of a follower: ok, its term, the index it matched (or
 * its last index, when it refused), and its error. */
typedef struct PeerAnswer {
  int code, ok;
  uint64_t term, match_index, last_index;
  char error[200];
} PeerAnswer;

static int peer_answer(struct evhttp_request *r, PeerAnswer *a) {
  lkvnet_json_object o;
  char jerr[LKVNET_JSON_ERR_LEN];
  struct evbuffer *in;
  size_t n;
  const char *body;
  const lkvnet_json_member *m;
  memset(a, 0, sizeof *a);
  if (r == NULL || (a->code = evhttp_request_get_response_code(r)) == 0) {
    snprintf(a->error, sizeof a->error,
             "no answer (connection refused, "
             "reset or timed out)");
    return -1;
  }
  in = evhttp_request_get_input_buffer(r);
  n = evbuffer_get_length(in);
  body = n ? (const char *)evbuffer_pullup(in, -1) : "";
  memset(&o, 0, sizeof o);
  if (body == NULL || lkvnet_json_parse_object(body, n, &o, jerr) != 0) {
    snprintf(a->error, sizeof a->error,
             "HTTP %d with a body that is not "
             "JSON",
             a->code);
    lkvnet_json_free(&o);
    return -1;
  }
  a->ok = lkvnet_json_true(&o, "ok");
  lkvnet_json_u64(&o, "term", &a->term);
  lkvnet_json_u64(&o, "match_index", &a->match_index);
  lkvnet_json_u64(&o, "last_index", &a->last_index);
  if ((m = lkvnet_json_get(&o, "error")) != NULL && m->str != NULL)
    snprintf(a->error, sizeof a->error, "HTTP %d: %.180s", a->code, m->str);
  lkvnet_json_free(&o);
  return 0;
}

static void free_frames(const void *data, size_t len, void *extra) {
  (void)len;
  (void)extra;
  free((void *)data);
}

static void peer_send(lkvnet_server *s, lkvnet_peer *p);

/* A follower answered (or failed to answer) an /append. */
static void on_append_reply(struct evhttp_request *r, void *arg) {
  lkvnet_peer *p = arg;
  lkvnet_server *s = p->s;
  PeerAnswer a;
  p->inflight = 0;
  if (peer_answer(r, &a) != 0 || (a.code != 200 && a.code != 409)) {
    peer_failed(s, p, a.error[0] ? a.error : "refused");
    return;
  }
  p->last_contact = lkvnet_node_now();
  p->backoff = 0;
  if (a.ok) {
    if (a.match_index > p->match_index) p->match_index = a.match_index;
    p->next_index = a.match_index + 1;
    peer_log_state(s, p, LKVNET_PEER_UP, NULL);
    lkvnet_node_advance_commit(s);
  } else {
    /* a refusal: its log ends earlier or differs at prev_index; back up
     * to just after its last index (or one entry before the probe) */
    uint64_t nx = a.last_index + 1;
    if (a.term > s->term) {
      /* the follower saw a later term (this node's state was lost or
       * restored from an old copy): lead in a newer one, or it would
       * refuse us forever */
      lkvnet_node_log(s,
                      "peer %s is at term %llu, past ours (%llu): "
                      "starting term %llu",
                      p->url, (unsigned long long)a.term,
                      (unsigned long long)s->term,
                      (unsigned long long)a.term + 1);
      if (lkvnet_node_start_term(s, a.term + 1) != LKV_OK) {
        peer_failed(s, p, "cannot start a new term");
        return;
      }
    }
    if (nx >= p->next_index) nx = p->next_index > 1 ? p->next_index - 1 : 1;
    if (a.last_index < p->match_index) {
      /* it lost entries it had (its directory was wiped or restored):
       * what it holds is what it says; entries committed with its help
       * stay committed, on the leader's disk */
      lkvnet_node_log(s, "peer %s now ends at index %llu (it had %llu)", p->url,
                      (unsigned long long)a.last_index,
                      (unsigned long long)p->match_index);
      p->match_index = a.last_index;
    }
    p->next_index = nx;
    peer_log_state(s, p, LKVNET_PEER_UP, NULL);
  }
  peer_send(s, p);
}

static void on_snapshot_reply(struct evhttp_request *r, void *arg) {
  lkvnet_peer *p = arg;
  lkvnet_server *s = p->s;
  PeerAnswer a;
  p->inflight = 0;
  if (peer_answer(r, &a) != 0 || a.code != 200 || !a.ok) {
    peer_failed(s, p, a.error[0] ? a.error : "snapshot refused");
    return;
  }
  p->last_contact = lkvnet_node_now();
  p->backoff = 0;
  p->snap_sent += p->snap_chunk;
  if (p->snap_done) {
    lkv_iter_free(p->snap);
    p->snap = NULL;
    p->snapshots_sent++;
    p->match_index = p->snap_index;
    p->next_index = p->snap_index + 1;
    lkvnet_node_log(s,
                    "peer %s installed the snapshot at index %llu "
                    "(%llu keys)",
                    p->url, (unsigned long long)p->snap_index,
                    (unsigned long long)p->snap_sent);
    lkvnet_node_advance_commit(s);
  }
  peer_send(s, p);
}

/* The next chunk of the snapshot stream: pairs from the engine iterator,
 * as log frames (op set, index = the pair's number in the stream). */
static void peer_send_snapshot(lkvnet_server *s, lkvnet_peer *p) {
  struct evhttp_request *r;
  struct evbuffer *out;
  char uri[256];
  lkv_err err;
  size_t bytes = 0;
  lkvnet_entry e;
  err.msg[0] = '\0';
  if (p->snap == NULL) {
    lkvnet_rlog_stats rs;
    lkvnet_rlog_stats_get(s->rlog, &rs);
    if (lkv_iter_new(s->db, LKV_SEQ_LATEST, &p->snap, &err) != LKV_OK) {
      peer_failed(s, p, err.msg);
      return;
    }
    /* the loop applies entries itself, so the engine is exactly at the
     * applied index while it builds the view */
    p->snap_index = s->applied_index;
    if (lkvnet_rlog_term_at(s->rlog, p->snap_index, &p->snap_term) != LKV_OK)
      p->snap_term = rs.base_term;
    p->snap_sent = 0;
    lkv_iter_seek_first(p->snap);
    lkvnet_node_log(s,
                    "peer %s needs index %llu, behind the log's start "
                    "(%llu): sending a snapshot at index %llu",
                    p->url, (unsigned long long)p->next_index,
                    (unsigned long long)rs.base_index + 1,
                    (unsigned long long)p->snap_index);
  }
  if ((r = peer_request(s, p, on_snapshot_reply)) == NULL) {
    peer_failed(s, p, "out of memory");
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
    if (!lkvnet_node_is_reserved(e.key, e.klen)) {
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
    lkvnet_node_log(s, "snapshot for %s: the engine failed: %s", p->url,
                    err.msg);
    peer_failed(s, p, err.msg);
    return;
  }
  p->snap_done = !lkv_iter_valid(p->snap);
  snprintf(uri, sizeof uri,
           "/snapshot?term=%llu&index=%llu&snap_term=%llu"
           "&offset=%llu&done=%d",
           (unsigned long long)s->term, (unsigned long long)p->snap_index,
           (unsigned long long)p->snap_term, (unsigned long long)p->snap_sent,
           p->snap_done);
  p->inflight = 1;
  p->last_send = lkvnet_node_now();
  if (evhttp_make_request(p->conn, r, EVHTTP_REQ_POST, uri) != 0) {
    p->inflight = 0; /* no callback will come (libevent 2.1) */
    evhttp_request_free(r);
    peer_failed(s, p, "cannot send the request");
  }
}

/* Send what the follower lacks, the commit index when it moved, or a
 * heartbeat when it has been quiet; nothing while a request is out. */
static void peer_send(lkvnet_server *s, lkvnet_peer *p) {
  uint64_t base = lkvnet_rlog_base_index(s->rlog);
  struct evhttp_request *r;
  unsigned char *frames = NULL;
  size_t len = 0;
  uint64_t to, prev_term = 0;
  char uri[256];
  lkv_err err;
  double t = lkvnet_node_now();
  /* a draining leader keeps replicating: its writes in flight still
   * need their majority */
  if (p->inflight || t < p->retry_at) return;
  if (p->snap != NULL ||
      (p->next_index <= base && p->state == LKVNET_PEER_UP)) {
    peer_send_snapshot(s, p);
    return;
  }
  if (p->next_index <= base) {
    /* not heard from yet: probe with what the log still has before
     * building a snapshot for a follower that may not need one */
    p->next_index = base + 1;
  }
  if (p->next_index > lkvnet_node_last_index(s) &&
      p->sent_commit >= s->commit_index &&
      t - p->last_send < s->heartbeat_ms / 1000.0)
    return;
  err.msg[0] = '\0';
  if (lkvnet_rlog_read(s->rlog, p->next_index, LKVNET_APPEND_MAX_BYTES, &frames,
                       &len, &to, &err) != LKV_OK) {
    peer_failed(s, p, err.msg);
    return;
  }
  lkvnet_rlog_term_at(s->rlog, p->next_index - 1, &prev_term);
  if ((r = peer_request(s, p, on_append_reply)) == NULL) {
    free(frames);
    peer_failed(s, p, "out of memory");
    return;
  }
  /* the body takes the frames over (freed once sent): no copy of a
   * batch of up to LKVNET_APPEND_MAX_BYTES per follower per round */
  if (len == 0) {
    free(frames);
  } else if (evbuffer_add_reference(evhttp_request_get_output_buffer(r), frames,
                                    len, free_frames, NULL) != 0) {
    free(frames);
    evhttp_request_free(r);
    peer_failed(s, p, "out of memory");
    return;
  }
  snprintf(uri, sizeof uri,
           "/append?term=%llu&prev_index=%llu&prev_term=%llu"
           "&commit=%llu",
           (unsigned long long)s->term, (unsigned long long)(p->next_index - 1),
           (unsigned long long)prev_term, (unsigned long long)s->commit_index);
  p->inflight = 1;
  p->sent_to = to;
  p->sent_commit = s->commit_index;
  p->last_send = t;
  p->appends++;
  if (to >= p->next_index) p->entries_sent += to - p->next_index + 1;
  if (evhttp_make_request(p->conn, r, EVHTTP_REQ_POST, uri) != 0) {
    p->inflight = 0; /* no callback will come (libevent 2.1) */
    evhttp_request_free(r);
    peer_failed(s, p, "cannot send the request");
  }
}

void lkvnet_node_peers_kick(lkvnet_server *s) {
  size_t i;
  for (i = 0; i < s->npeers; i++) peer_send(s, &s->peers[i]);
}

/* }====================================================================== */
