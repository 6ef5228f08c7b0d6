/* forward.c - a follower passes writes and consistent reads to the
 * current leader (docs/replication.md, "Forwarding") over connections it
 * opens as concurrency needs them, and answers with the leader's reply.
 * When the leader changes, connections to the old one are closed once
 * idle. Runs on the event loop's thread; the node's state is node.h. */
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node.h"
#include "rlog.h"

/* Bounds on what waits for the leader: requests on one forwarding
 * connection (one on the wire, one queued behind it: 512 at most over the
 * 256 connections), and the bodies all of them hold (each body is within
 * the body limit; 512 of them are not bounded by it). Past either, 503 at
 * once: nothing was sent. */
#define FWD_QUEUE_MAX 2
#define FWD_BYTES_MAX ((size_t)64 << 20)

/* A request a follower passes to the leader, waiting for its answer (in
 * s->fwds, for the deadline). */
typedef struct lkvnet_fwd {
  lkvnet_held h;
  size_t conn;                /* index in s->fwd */
  size_t bytes;               /* its body, counted in s->fwd_bytes */
  struct evhttp_request *out; /* the request to the leader */
  struct lkvnet_fwd *prev, *next;
} Fwd;

static void fwd_unlink(lkvnet_server *s, Fwd *f) {
  if (f->prev)
    f->prev->next = f->next;
  else
    s->fwds = f->next;
  if (f->next) f->next->prev = f->prev;
  f->prev = f->next = NULL;
  s->fwd_busy[f->conn]--;
  s->fwd_bytes -= f->bytes;
}

/* The peer the leader is (NULL: this node, or no leader known). */
static lkvnet_peer *leader_peer(lkvnet_server *s) {
  return s->leader_id == s->id ? NULL : lkvnet_node_peer_by_id(s, s->leader_id);
}

size_t lkvnet_node_forward_conn(lkvnet_server *s) {
  size_t i, best = (size_t)-1, free_slot = (size_t)-1, pi;
  lkvnet_peer *lp = leader_peer(s);
  if (lp == NULL) return (size_t)-1;
  pi = (size_t)(lp - s->peers);
  for (i = 0; i < s->nfwd; i++) {
    if (s->fwd[i] != NULL && s->fwd_peer[i] != pi && s->fwd_busy[i] == 0) {
      /* an idle connection to a former leader: not needed any more */
      evhttp_connection_free(s->fwd[i]);
      s->fwd[i] = NULL;
    }
    if (s->fwd[i] == NULL) {
      if (free_slot == (size_t)-1) free_slot = i;
      continue;
    }
    if (s->fwd_peer[i] != pi) continue;
    if (s->fwd_busy[i] == 0) return i;
    if (s->fwd_busy[i] >= FWD_QUEUE_MAX) continue;
    if (best == (size_t)-1 || s->fwd_busy[i] < s->fwd_busy[best]) best = i;
  }
  if (free_slot == (size_t)-1 && s->nfwd < LKVNET_FORWARD_CONNS)
    free_slot = s->nfwd;
  if (free_slot != (size_t)-1) {
    struct evhttp_connection *c =
        lkvnet_node_connect_url(s, lp->url, NULL, NULL);
    if (c != NULL) {
      evhttp_connection_set_timeout(c, (s->write_timeout_ms + 999) / 1000 + 2);
      s->fwd[free_slot] = c;
      s->fwd_busy[free_slot] = 0;
      s->fwd_peer[free_slot] = pi;
      if (free_slot == s->nfwd) s->nfwd++;
      return free_slot;
    }
  }
  return best;
}

static void on_forward_reply(struct evhttp_request *r, void *arg) {
  Fwd *f = arg;
  lkvnet_server *s = f->h.s;
  lkvnet_req *req;
  int code = r ? evhttp_request_get_response_code(r) : 0;
  fwd_unlink(s, f);
  if (code == 0) {
    lkvnet_node_held_error(&f->h, 503,
                           "outcome unknown: the leader %s did not answer "
                           "(down, or the connection failed); a write may "
                           "still be applied",
                           s->peers[s->fwd_peer[f->conn]].url);
  } else if ((req = lkvnet_node_unhold(&f->h)) != NULL) {
    struct evbuffer *in = evhttp_request_get_input_buffer(r);
    size_t n = evbuffer_get_length(in);
    const char *body = n ? (const char *)evbuffer_pullup(in, -1) : "";
    struct evkeyvalq *rh = evhttp_request_get_input_headers(r);
    const char *ct = evhttp_find_header(rh, "Content-Type");
    /* the leader's 503s that say "retry" carry when: the client of a
     * follower is owed the same hint as the leader's own */
    const char *ra = evhttp_find_header(rh, "Retry-After");
    if (ra != NULL) lkvnet_req_add_header(req, "Retry-After", ra);
    lkvnet_node_reply(s, req, f->h.route, f->h.start, code,
                      ct ? ct : "application/json", body ? body : "",
                      body ? n : 0);
  }
  free(f);
}

void lkvnet_node_forward(lkvnet_server *s, lkvnet_req *req, int route,
                         double start) {
  struct evhttp_connection *c;
  struct evhttp_request *r;
  struct evkeyvalq *oh;
  const char *ct = lkvnet_req_header(req, "Content-Type");
  enum evhttp_cmd_type cmd;
  size_t ci;
  Fwd *f;
  const char *by = lkvnet_req_header(req, "X-Lunakv-Forwarded-By");
  char hops[1100];
  if (by != NULL && (strchr(by, ',') != NULL || leader_peer(s) == NULL)) {
    /* the leader moved while it was on its way here (twice, or this
     * node knows none yet): the client retries rather than the request
     * going round; a request forwarded once more can still meet a second
     * change, so two hops is the bound */
    if (strchr(by, ',') == NULL && s->leader_id == LKVNET_RAFT_NONE) {
      lkvnet_node_park(s, req, route, start); /* an election runs */
      return;
    }
    lkvnet_req_add_header(req, "Retry-After", "1");
    lkvnet_node_reply_error(s, req, route, start, 503,
                            "not the leader: this node does not lead (any "
                            "more); retry");
    return;
  }
  if (s->draining) {
    lkvnet_node_reply_error(s, req, route, start, 503,
                            "the node is shutting down");
    return;
  }
  if ((ci = lkvnet_node_forward_conn(s)) == (size_t)-1) {
    lkv_err err;
    if (s->log_failed && lkvnet_rlog_error(s->rlog, &err) != LKV_OK)
      /* a stuck log keeps this node quiet, knowing no leader, until it
       * is restarted: "retry" would never help here */
      lkvnet_node_reply_error(s, req, route, start, 500,
                              "the replication log failed: %s; this node "
                              "takes no writes until it is restarted",
                              err.msg);
    else if (leader_peer(s) == NULL)
      lkvnet_node_park(s, req, route, start); /* none known: wait for one */
    else {
      /* Every slot waits on a former leader (paused or dead: its
       * requests run to their timeout), or a new connection failed:
       * nothing was sent, so the client may simply retry. */
      lkvnet_req_add_header(req, "Retry-After", "1");
      lkvnet_node_reply_error(s, req, route, start, 503,
                              "cannot forward to the leader %s: no "
                              "forwarding connection is free (all wait on a "
                              "former leader) and none could be opened; "
                              "nothing was written, retry",
                              leader_peer(s)->url);
    }
    return;
  }
  if (s->fwd_bytes + lkvnet_req_body_len(req) > FWD_BYTES_MAX) {
    lkvnet_req_add_header(req, "Retry-After", "1");
    lkvnet_node_reply_error(s, req, route, start, 503,
                            "%zu bytes of forwarded requests wait for the "
                            "leader %s; nothing was sent, retry",
                            s->fwd_bytes, leader_peer(s)->url);
    return;
  }
  c = s->fwd[ci];
  if ((f = calloc(1, sizeof *f)) == NULL ||
      (r = evhttp_request_new(on_forward_reply, f)) == NULL) {
    free(f);
    lkvnet_node_reply_error(s, req, route, start, 500, "out of memory");
    return;
  }
  oh = evhttp_request_get_output_headers(r);
  evhttp_add_header(oh, "Host", s->peers[s->fwd_peer[ci]].hostport);
  if (by != NULL) {
    /* the second hop: the leader this request was sent to has handed over
     * to the one known here (cut short, the value keeps its comma) */
    snprintf(hops, sizeof hops, "%s, %s", by, s->my_url);
  }
  evhttp_add_header(oh, "X-Lunakv-Forwarded-By", by ? hops : s->my_url);
  /* a membership change needs the token on the leader too */
  if (lkvnet_req_header(req, LKVNET_TOKEN_HEADER) != NULL)
    evhttp_add_header(oh, LKVNET_TOKEN_HEADER,
                      lkvnet_req_header(req, LKVNET_TOKEN_HEADER));
  if (ct) evhttp_add_header(oh, "Content-Type", ct);
  {
    size_t n;
    const char *body = lkvnet_req_body(req, &n);
    if (body == NULL ||
        evbuffer_add(evhttp_request_get_output_buffer(r), body, n) != 0) {
      evhttp_request_free(r);
      free(f);
      lkvnet_node_reply_error(s, req, route, start, 500, "out of memory");
      return;
    }
  }
  f->bytes = evbuffer_get_length(evhttp_request_get_output_buffer(r));
  f->out = r;
  lkvnet_node_hold(s, &f->h, req, route, start,
                   lkvnet_node_now() + s->write_timeout_ms / 1000.0 + 2.0);
  f->conn = ci;
  s->fwd_busy[ci]++;
  s->fwd_bytes += f->bytes;
  if ((f->next = s->fwds) != NULL) f->next->prev = f;
  s->fwds = f;
  /* a HEAD goes as a GET: lkvnet_node_reply() leaves the body out and
   * keeps its length, which a HEAD answer from the leader would not carry */
  switch (lkvnet_req_method(req)) {
    case LKVNET_HTTP_POST: cmd = EVHTTP_REQ_POST; break;
    case LKVNET_HTTP_PUT: cmd = EVHTTP_REQ_PUT; break;
    case LKVNET_HTTP_DELETE: cmd = EVHTTP_REQ_DELETE; break;
    default: cmd = EVHTTP_REQ_GET; break;
  }
  if (evhttp_make_request(c, r, cmd, lkvnet_req_target(req)) != 0) {
    /* libevent 2.1 does not call back after a refusal here */
    fwd_unlink(s, f);
    lkvnet_node_held_error(&f->h, 503, "cannot reach the leader %s",
                           s->peers[s->fwd_peer[ci]].url);
    evhttp_request_free(r);
    free(f);
  }
}

void lkvnet_node_forward_poll(lkvnet_server *s) {
  double t = lkvnet_node_now();
  Fwd *f, *next;
  for (f = s->fwds; f != NULL; f = next) {
    next = f->next;
    if (t < f->h.deadline) continue;
    fwd_unlink(s, f);
    lkvnet_node_held_error(&f->h, 503,
                           "outcome unknown: the leader %s did not answer "
                           "within %d ms; a write may still be applied",
                           s->peers[s->fwd_peer[f->conn]].url,
                           s->write_timeout_ms + 2000);
    /* no callback follows (one queued behind others leaves the queue; the
     * one on the wire resets its connection, and the next reconnects) */
    evhttp_cancel_request(f->out);
    free(f);
  }
}

void lkvnet_node_forward_free(lkvnet_server *s) {
  Fwd *f, *next;
  for (f = s->fwds; f != NULL; f = next) {
    next = f->next;
    lkvnet_node_held_error(&f->h, 503, "the node is shutting down");
    free(f);
  }
  s->fwds = NULL;
}
