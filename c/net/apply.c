/* apply.c - the entries between append and apply, on the leader and on
 * followers alike (docs/replication.md, "The commit path"): the pending
 * list, the apply of what is committed to the engine, and the requests
 * that wait on this path, with their answers: a write for its entry's
 * apply, a follower's /append for its sync, a consistent read for the
 * apply of what was committed when it came. Who moves the commit index is
 * repl.c (the leader) or follow.c (a follower); this file calls neither.
 * Runs on the event loop's thread; the node's state is node.h. */
#include <event2/http.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "node.h"
#include "rlog.h"

/* {======================================================================
** The pending list
** ======================================================================= */

void lkvnet_node_pending_free(lkvnet_server *s, lkvnet_pending *p) {
  s->pending_bytes -= p->klen + p->vlen;
  free(p->key);
  free(p->val);
  free(p);
}

int lkvnet_node_pending_push(lkvnet_server *s, uint64_t index, int op,
                             const char *key, size_t klen, const char *val,
                             size_t vlen) {
  lkvnet_pending *p = calloc(1, sizeof *p);
  if (p == NULL) return -1;
  p->key = malloc(klen ? klen : 1);
  p->val = malloc(vlen ? vlen : 1);
  if (p->key == NULL || p->val == NULL) {
    free(p->key);
    free(p->val);
    free(p);
    return -1;
  }
  if (klen) memcpy(p->key, key, klen);
  if (vlen) memcpy(p->val, val, vlen);
  p->index = index;
  p->op = op;
  p->klen = klen;
  p->vlen = vlen;
  s->pending_bytes += klen + vlen;
  if (s->tail)
    s->tail->next = p;
  else
    s->head = p;
  s->tail = p;
  return 0;
}

/* Forget pending entries after index (a follower cut its log there). */
void lkvnet_node_pending_cut(lkvnet_server *s, uint64_t index) {
  lkvnet_pending **pp = &s->head, *p;
  s->tail = NULL;
  while ((p = *pp) != NULL && p->index <= index) {
    s->tail = p;
    pp = &p->next;
  }
  *pp = NULL;
  while (p != NULL) {
    lkvnet_pending *next = p->next;
    lkvnet_node_held_error(&p->h, 503,
                           "index %llu was replaced by the leader's log",
                           (unsigned long long)p->index);
    lkvnet_node_pending_free(s, p);
    p = next;
  }
}

/* }====================================================================== */

/* {======================================================================
** Apply: committed entries into the engine, in index order
** ======================================================================= */

/* Apply one committed entry and the new applied index atomically. */
static int apply_entry(lkvnet_server *s, const lkvnet_pending *p,
                       lkv_err *err) {
  unsigned char idx[8];
  int i, rc = LKV_OK;
  uint64_t seq;
  for (i = 0; i < 8; i++) idx[i] = (unsigned char)(p->index >> (8 * i));
  lkv_batch_clear(s->batch);
  if (p->op == LKVNET_OP_SET)
    rc = lkv_batch_set(s->batch, p->key, p->klen, p->val, p->vlen, err);
  else if (p->op == LKVNET_OP_DELETE)
    rc = lkv_batch_delete(s->batch, p->key, p->klen, err);
  if (rc == LKV_OK)
    rc = lkv_batch_set(s->batch, LKVNET_APPLIED_KEY,
                       sizeof LKVNET_APPLIED_KEY - 1, idx, 8, err);
  if (rc == LKV_OK) rc = lkv_db_write(s->db, s->batch, &seq, err);
  return rc;
}

void lkvnet_node_apply_committed(lkvnet_server *s) {
  /* a follower applies only what its own log holds durably: a machine
   * crash must not leave the engine ahead of the log */
  uint64_t limit = s->commit_index, durable;
  if (!s->leader) {
    durable = lkvnet_rlog_durable_index(s->rlog);
    if (durable < limit) limit = durable;
  }
  while (s->head != NULL && s->head->index <= limit) {
    lkvnet_pending *p = s->head;
    int rc = LKV_OK;
    lkv_err err;
    err.msg[0] = '\0';
    if (s->apply_err.code != LKV_OK) break;
    rc = apply_entry(s, p, &err);
    if (rc != LKV_OK) {
      /* the engine refused: the state machine cannot move past this
       * entry; stop applying and refuse writes (a restart retries) */
      s->apply_err = err;
      lkvnet_node_log(s, "cannot apply index %llu: %s",
                      (unsigned long long)p->index, err.msg);
      break;
    }
    s->applied_index = p->index;
    s->head = p->next;
    if (s->head == NULL) s->tail = NULL;
    if (p->h.req != NULL) {
      lkvnet_jbuf b;
      memset(&b, 0, sizeof b);
      lkvnet_jbuf_lit(&b, "{\"ok\": true, \"index\": ");
      lkvnet_jbuf_u64(&b, p->index);
      lkvnet_jbuf_lit(&b, "}");
      lkvnet_node_held_json(&p->h, 200, &b);
    }
    lkvnet_node_pending_free(s, p);
  }
  /* whatever still waits after an apply failure gets its answer now */
  if (s->apply_err.code != LKV_OK) {
    lkvnet_pending *p;
    for (p = s->head; p != NULL; p = p->next)
      lkvnet_node_held_error(&p->h, 500,
                             "index %llu is durable in the log "
                             "but the engine refused it: %s",
                             (unsigned long long)p->index, s->apply_err.msg);
  }
  lkvnet_node_serve_waiters(s);
  lkvnet_node_maybe_compact(s);
}

/* }====================================================================== */

/* {======================================================================
** Requests waiting for an index
** ======================================================================= */

static void status_fields(lkvnet_server *s, lkvnet_jbuf *b, uint64_t match) {
  lkvnet_jbuf_lit(b, ", \"term\": ");
  lkvnet_jbuf_u64(b, s->term);
  lkvnet_jbuf_lit(b, ", \"match_index\": ");
  lkvnet_jbuf_u64(b, match);
  lkvnet_jbuf_lit(b, ", \"last_index\": ");
  lkvnet_jbuf_u64(b, s->needs_snapshot ? 0 : lkvnet_node_last_index(s));
}

/* {"ok", "term", "match_index", "last_index"[, "error"]}: 200 when the
 * entries are durable here, 409 when refused (stale term, a log that
 * does not match at prev_index); the leader reads the numbers. */
void lkvnet_node_reply_append(lkvnet_server *s, lkvnet_held *h, int code,
                              uint64_t match, const char *error) {
  lkvnet_jbuf b;
  memset(&b, 0, sizeof b);
  lkvnet_jbuf_lit(&b, code == 200 ? "{\"ok\": true" : "{\"ok\": false");
  status_fields(s, &b, match);
  if (error != NULL) {
    lkvnet_jbuf_lit(&b, ", \"error\": ");
    lkvnet_jbuf_str(&b, error, strlen(error));
  }
  lkvnet_jbuf_lit(&b, "}");
  lkvnet_node_held_json(h, code, &b);
}

/* Answer GET /get from this node's engine. */
void lkvnet_node_read_local(lkvnet_server *s, struct evhttp_request *req,
                            int route, double start, const char *key,
                            size_t klen) {
  lkv_err err;
  lkvnet_jbuf b;
  int rc;
  err.msg[0] = '\0';
  rc = lkv_db_get(s->db, key, klen, LKV_SEQ_LATEST, &s->getbuf, &err);
  if (rc != LKV_OK && rc != LKV_NOTFOUND) {
    lkvnet_node_reply_error(s, req, route, start,
                            lkvnet_node_http_status_of(rc), "%s", err.msg);
    return;
  }
  memset(&b, 0, sizeof b);
  lkvnet_jbuf_lit(&b, "{");
  lkvnet_node_put_bytes_member(&b, "key", key, klen);
  lkvnet_jbuf_lit(&b, ", ");
  if (rc == LKV_NOTFOUND)
    lkvnet_jbuf_lit(&b, "\"value\": null");
  else
    lkvnet_node_put_bytes_member(&b, "value", s->getbuf.data, s->getbuf.len);
  lkvnet_jbuf_lit(&b, "}");
  lkvnet_node_reply_json(s, req, route, start, 200, &b);
}

/* Answer what waited for the log's sync (a follower's /append) or for an
 * apply (a consistent read). */
void lkvnet_node_serve_waiters(lkvnet_server *s) {
  lkvnet_waiter **pp = &s->waiters, *w;
  uint64_t durable;
  if (s->waiters == NULL) return; /* the usual case, on every apply */
  durable = lkvnet_rlog_durable_index(s->rlog);
  while ((w = *pp) != NULL) {
    int done = 0;
    if (w->h.req == NULL) {
      done = 1;
    } else if (w->kind == LKVNET_WAIT_APPEND && durable >= w->target) {
      lkvnet_node_reply_append(s, &w->h, 200, w->target, NULL);
      done = 1;
    } else if (w->kind == LKVNET_WAIT_READ && s->applied_index >= w->target) {
      struct evhttp_request *req = lkvnet_node_unhold(&w->h);
      if (req)
        lkvnet_node_read_local(s, req, w->h.route, w->h.start, w->key, w->klen);
      done = 1;
    }
    if (done) {
      *pp = w->next;
      free(w->key);
      free(w);
    } else {
      pp = &w->next;
    }
  }
}

lkvnet_waiter *lkvnet_node_waiter_add(lkvnet_server *s,
                                      struct evhttp_request *req, int route,
                                      double start, int kind, uint64_t target) {
  lkvnet_waiter *w = calloc(1, sizeof *w);
  if (w == NULL) return NULL;
  w->kind = kind;
  w->target = target;
  lkvnet_node_hold(s, &w->h, req, route, start,
                   start + s->write_timeout_ms / 1000.0);
  w->next = s->waiters;
  s->waiters = w;
  return w;
}

/* }====================================================================== */
