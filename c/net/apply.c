/* apply.c - the entries between commit and apply, on the leader and on
 * followers alike (docs/replication.md, "The commit path"): the apply of
 * what the Raft core releases as committed to the engine, the writes
 * waiting for their entry (pending) and the consistent reads waiting for
 * an index (waiters), with their answers. The core decides what is
 * committed (raftnode.c hands the entries over); this file calls neither
 * the core nor the driver. Runs on the event loop's thread; the node's
 * state is node.h. */
#include <event2/event.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "coding.h"
#include "json.h"
#include "memberconf.h"
#include "node.h"
#include "rlog.h"

/* {======================================================================
** The pending writes
** ======================================================================= */

void lkvnet_node_pending_free(lkvnet_server *s, lkvnet_pending *p) {
  s->pending_bytes -= p->bytes;
  free(p->extra);
  free(p);
}

int lkvnet_node_pending_push(lkvnet_server *s, uint64_t index, uint64_t term,
                             size_t bytes) {
  lkvnet_pending *p = calloc(1, sizeof *p);
  if (p == NULL) return -1;
  p->index = index;
  p->term = term;
  p->bytes = bytes;
  s->pending_bytes += bytes;
  if (s->tail)
    s->tail->next = p;
  else
    s->head = p;
  s->tail = p;
  return 0;
}

void lkvnet_node_pending_unknown(lkvnet_server *s, const char *why) {
  lkvnet_pending *p;
  while ((p = s->head) != NULL) {
    s->head = p->next;
    lkvnet_node_held_error(&p->h, 503,
                           "outcome unknown: %s; index %llu (term %llu) may "
                           "still be written by the next leader, or never",
                           why, (unsigned long long)p->index,
                           (unsigned long long)p->term);
    lkvnet_node_pending_free(s, p);
  }
  s->tail = NULL;
}

/* }====================================================================== */

/* {======================================================================
** Apply: committed entries into the engine, in index order
** ======================================================================= */

/* The configuration as the engine keeps it (LKVNET_CONF_KEY), with the
 * URL of every member this node knows (memberconf.h has the format). */
static int put_conf(lkvnet_server *s, const lkvnet_raft_conf *c, lkv_err *err) {
  unsigned char b[LKVNET_KEPTCONF_MAX];
  lkvnet_keptconf k;
  size_t n;
  lkvnet_node_keptconf_of(s, c, &k);
  n = lkvnet_keptconf_encode(&k, b);
  return lkv_batch_set(s->batch, LKVNET_CONF_KEY, sizeof LKVNET_CONF_KEY - 1, b,
                       n, err);
}

int lkvnet_node_set_applied(lkvnet_server *s, uint64_t index,
                            const lkvnet_raft_conf *conf, lkv_err *err) {
  unsigned char idx[8];
  uint64_t seq;
  int rc = LKV_OK;
  lkv_put64(idx, index);
  lkv_batch_clear(s->batch);
  if (conf != NULL) rc = put_conf(s, conf, err);
  if (rc == LKV_OK)
    rc = lkv_batch_set(s->batch, LKVNET_APPLIED_KEY,
                       sizeof LKVNET_APPLIED_KEY - 1, idx, 8, err);
  if (rc == LKV_OK) rc = lkv_db_write(s->db, s->batch, &seq, err);
  lkv_batch_clear(s->batch);
  return rc;
}

/* A BATCH entry's writes into s->batch (all of them, or an error); *libs
 * is set when one of them is a stored library's key. */
static int batch_writes(lkvnet_server *s, const lkvnet_raft_entry *e,
                        const unsigned char *d, size_t n, int *libs,
                        lkv_err *err) {
  size_t off = 4, i;
  uint32_t count;
  int rc = LKV_OK;
  if (n < 4)
    return lkv_seterr(err, LKV_CORRUPTION, "entry %llu: a batch without count",
                      (unsigned long long)e->index);
  count = lkv_get32(d);
  for (i = 0; i < count && rc == LKV_OK; i++) {
    lkvnet_fn_write w;
    if (lkvnet_node_batch_next(d, n, &off, &w) != 0)
      return lkv_seterr(err, LKV_CORRUPTION,
                        "entry %llu: batch write %zu is malformed",
                        (unsigned long long)e->index, i);
    if (lkvnet_node_is_library_key(w.key, w.klen)) *libs = 1;
    rc = w.op == LKVNET_FN_SET
             ? lkv_batch_set(s->batch, w.key, w.klen, w.val, w.vlen, err)
             : lkv_batch_delete(s->batch, w.key, w.klen, err);
  }
  if (rc == LKV_OK && off != n)
    return lkv_seterr(err, LKV_CORRUPTION, "entry %llu: bytes after the batch",
                      (unsigned long long)e->index);
  return rc;
}

/* Add the writes of one committed entry to s->batch (a configuration
 * change also keeps its configuration, so that a snapshot of the engine
 * carries it; a BATCH entry's writes go in whole); *libs is set when a
 * stored library's key is among them. */
static int add_entry(lkvnet_server *s, const lkvnet_raft_entry *e, int *libs,
                     lkv_err *err) {
  int rc = LKV_OK, op;
  const char *key, *val;
  size_t klen, vlen;
  if (e->type == LKVNET_RAFT_ENTRY_NORMAL) {
    if (lkvnet_node_cmd_decode(e->data, e->len, &op, &key, &klen, &val,
                               &vlen) != 0)
      return lkv_seterr(err, LKV_CORRUPTION, "entry %llu is not a command",
                        (unsigned long long)e->index);
    if (op == LKVNET_OP_SET)
      rc = lkv_batch_set(s->batch, key, klen, val, vlen, err);
    else if (op == LKVNET_OP_BATCH)
      rc = batch_writes(s, e, (const unsigned char *)val, vlen, libs, err);
    else
      rc = lkv_batch_delete(s->batch, key, klen, err);
  } else if (e->type == LKVNET_RAFT_ENTRY_CONF) {
    lkvnet_raft_confchange cc;
    lkvnet_node_learn_conf_entry(s, e->index, e->data, e->len);
    if ((rc = lkvnet_raft_conf_decode(e->data, e->len, &cc, err)) == LKV_OK &&
        (rc = put_conf(s, &cc.conf, err)) == LKV_OK)
      s->conf = cc.conf;
  }
  return rc;
}

/* How many committed entries one engine batch takes at most, and how
 * many bytes of their data (one entry may be larger: it goes alone). */
#define APPLY_GROUP_MAX 256
#define APPLY_GROUP_BYTES (1u << 20)
/* While the engine is busy, how often the apply is tried again, in
 * microseconds, and how many groups one try applies at most. */
#define APPLY_RETRY_US 2000
#define APPLY_LATER_GROUPS 16

static void on_apply_later(evutil_socket_t fd, short what, void *arg);

/* The entries of ents[0..n) that one engine batch takes: at least one. */
static size_t group_len(const lkvnet_raft_entry *ents, size_t n) {
  size_t i, bytes = ents[0].len;
  for (i = 1; i < n && i < APPLY_GROUP_MAX; i++) {
    if (bytes + ents[i].len > APPLY_GROUP_BYTES) break;
    bytes += ents[i].len;
  }
  return i;
}

/* Apply committed entries ents[0..n) and the applied index of the last
 * one as one engine batch: atomically, and with one engine write for
 * what a whole commit round released (the engine's log is written per
 * batch, so this is one system call, not one per entry). */
static int apply_group(lkvnet_server *s, const lkvnet_raft_entry *ents,
                       size_t n, lkv_err *err) {
  unsigned char idx[8];
  int rc = LKV_OK, libs = 0;
  uint64_t seq;
  size_t i;
  lkv_put64(idx, ents[n - 1].index);
  lkv_batch_clear(s->batch);
  for (i = 0; i < n && rc == LKV_OK; i++)
    rc = add_entry(s, &ents[i], &libs, err);
  if (rc == LKV_OK)
    rc = lkv_batch_set(s->batch, LKVNET_APPLIED_KEY,
                       sizeof LKVNET_APPLIED_KEY - 1, idx, 8, err);
  /* never wait for the engine's flushes or compactions here, on the
   * loop that also answers heartbeats and requests: LKV_BUSY puts the
   * apply off (apply_later) */
  if (rc == LKV_OK)
    rc = lkv_db_write_opt(s->db, s->batch, LKV_WRITE_NO_STALL, &seq, err);
  lkv_batch_clear(s->batch);
  /* every node recompiles from what the engine now holds */
  if (rc == LKV_OK && libs && s->has_fns) s->fns.changed(s->fns.ctx);
  return rc;
}

/* The writes waiting at or below e's index learn their fate: e is theirs
 * (same index and term: written), or another entry took their index (a
 * new leader's log replaced it: never written). */
static void answer_pending(lkvnet_server *s, const lkvnet_raft_entry *e) {
  lkvnet_pending *p;
  while ((p = s->head) != NULL && p->index <= e->index) {
    s->head = p->next;
    if (s->head == NULL) s->tail = NULL;
    if (p->index == e->index && p->term == e->term) {
      lkvnet_jbuf b;
      memset(&b, 0, sizeof b);
      lkvnet_jbuf_lit(&b, "{\"ok\": true, \"index\": ");
      lkvnet_jbuf_u64(&b, p->index);
      if (p->extra != NULL) lkvnet_jbuf_lit(&b, p->extra);
      lkvnet_jbuf_lit(&b, "}");
      lkvnet_node_held_json(&p->h, 200, &b);
    } else {
      lkvnet_node_held_error(&p->h, 503,
                             "not written: index %llu went to another "
                             "leader's entry (term %llu, not %llu); retry",
                             (unsigned long long)p->index,
                             (unsigned long long)e->term,
                             (unsigned long long)p->term);
    }
    lkvnet_node_pending_free(s, p);
  }
}

/* The configuration change waiting for entry (conf_index, conf_term)
 * learns its fate from the entry applied at that index: applied (200,
 * with the configuration it leads to), or another leader's entry took
 * the index (503: the configuration did not change). */
static void answer_conf(lkvnet_server *s, const lkvnet_raft_entry *e) {
  lkvnet_raft_confchange cc;
  lkvnet_jbuf b;
  if (s->conf_index == 0 || e->index < s->conf_index) return;
  if (e->index == s->conf_index && e->term == s->conf_term &&
      e->type == LKVNET_RAFT_ENTRY_CONF &&
      lkvnet_raft_conf_decode(e->data, e->len, &cc, NULL) == LKV_OK) {
    memset(&b, 0, sizeof b);
    lkvnet_jbuf_lit(&b, "{\"ok\": true, \"index\": ");
    lkvnet_jbuf_u64(&b, e->index);
    lkvnet_jbuf_lit(&b, ", \"term\": ");
    lkvnet_jbuf_u64(&b, e->term);
    lkvnet_jbuf_lit(&b, ", ");
    lkvnet_node_put_members(s, &b, &cc.conf);
    lkvnet_jbuf_lit(&b, "}");
    lkvnet_node_held_json(&s->conf_h, 200, &b);
  } else {
    lkvnet_node_held_error(&s->conf_h, 503,
                           "not changed: index %llu went to another "
                           "leader's entry; retry",
                           (unsigned long long)s->conf_index);
  }
  s->conf_index = 0;
}

/* Apply ents[0..n) in groups and answer what each releases. Returns 0
 * when all are applied, 1 when the engine would have stalled (*busy_at:
 * the first index not applied; nothing of its group was written), -1
 * when it refused (s->apply_err set). */
static int apply_run(lkvnet_server *s, const lkvnet_raft_entry *ents, size_t n,
                     uint64_t *busy_at) {
  size_t i = 0, g, k;
  while (i < n) {
    lkv_err err;
    int rc;
    err.msg[0] = '\0';
    if (s->apply_err.code != LKV_OK) return -1;
    g = 1;
    if (ents[i].index > s->applied_index) {
      g = group_len(ents + i, n - i);
      if ((rc = apply_group(s, ents + i, g, &err)) == LKV_BUSY) {
        *busy_at = ents[i].index;
        return 1;
      }
      if (rc != LKV_OK) {
        /* the engine refused: the state machine cannot move past these
         * entries; stop applying and refuse writes (a restart retries) */
        s->apply_err = err;
        lkvnet_node_log(s, "cannot apply indexes %llu..%llu: %s",
                        (unsigned long long)ents[i].index,
                        (unsigned long long)ents[i + g - 1].index, err.msg);
        return -1;
      }
      s->applied_index = ents[i + g - 1].index;
    }
    for (k = i; k < i + g; k++) {
      answer_pending(s, &ents[k]);
      answer_conf(s, &ents[k]);
    }
    i += g;
  }
  return 0;
}

/* What follows an apply run: the writes an apply failure strands are
 * answered, the overlay, the reads and calls waiting for the applied
 * index, a log compaction. */
static void after_apply(lkvnet_server *s) {
  if (s->apply_err.code != LKV_OK) {
    lkvnet_pending *p;
    while ((p = s->head) != NULL) {
      s->head = p->next;
      lkvnet_node_held_error(&p->h, 500,
                             "index %llu may be committed but the engine "
                             "refused to apply: %s",
                             (unsigned long long)p->index, s->apply_err.msg);
      lkvnet_node_pending_free(s, p);
    }
    s->tail = NULL;
  }
  lkvnet_overlay_applied(&s->ovl, s->applied_index);
  lkvnet_node_serve_waiters(s);
  lkvnet_node_maybe_compact(s);
}

/* The engine would stall: entries from the applied index + 1 through hi
 * wait in the log, and a timer retries them (apply_later). */
static void defer_apply(lkvnet_server *s, uint64_t from, uint64_t hi) {
  struct timeval tv = {0, APPLY_RETRY_US};
  if (s->apply_hi == 0) {
    s->apply_deferrals++;
    s->apply_behind_since = lkvnet_node_now();
    if (s->apply_behind_logged + 60.0 <= s->apply_behind_since) {
      s->apply_behind_logged = s->apply_behind_since;
      lkvnet_node_log(s,
                      "the engine is busy (flushing or compacting): "
                      "applying from index %llu later, without blocking",
                      (unsigned long long)from);
    }
  }
  if (hi > s->apply_hi) s->apply_hi = hi;
  if (s->apply_ev == NULL &&
      (s->apply_ev = evtimer_new(s->base, on_apply_later, s)) == NULL) {
    /* cannot even wait: the next Ready's apply retries (apply_hi set) */
    return;
  }
  evtimer_add(s->apply_ev, &tv);
}

int lkvnet_node_apply_too_far_behind(const lkvnet_server *s) {
  return s->commit_index > s->applied_index + s->max_apply_lag;
}

int lkvnet_node_apply_entries(lkvnet_server *s, const lkvnet_raft_entry *ents,
                              size_t n) {
  uint64_t busy_at = 0;
  int rc = 0;
  if (s->apply_hi != 0) {
    /* earlier entries wait for the engine: these wait behind them */
    if (n > 0 && ents[n - 1].index > s->apply_hi)
      s->apply_hi = ents[n - 1].index;
    if (s->apply_ev == NULL) lkvnet_node_apply_later(s); /* no timer: now */
    return s->apply_err.code != LKV_OK ? -1 : 0;
  }
  if (n > 0 && (rc = apply_run(s, ents, n, &busy_at)) == 1)
    defer_apply(s, busy_at, ents[n - 1].index);
  after_apply(s);
  return rc < 0 ? -1 : 0;
}

/* An entry read back from the log for apply_later, copied: the log's
 * buffer is gone after the read. */
typedef struct later {
  lkvnet_raft_entry ents[APPLY_GROUP_MAX];
  size_t n, bytes;
  int nomem;
} later;

static int later_take(void *arg, const lkvnet_raft_entry *e) {
  later *l = arg;
  lkvnet_raft_entry *c = &l->ents[l->n];
  if (l->n > 0 && l->bytes + e->len > APPLY_GROUP_BYTES) return 1;
  *c = *e;
  if (e->len > 0) {
    unsigned char *d = malloc(e->len);
    if (d == NULL) {
      l->nomem = 1;
      return 1;
    }
    memcpy(d, e->data, e->len);
    c->data = d;
  }
  l->n++;
  l->bytes += e->len;
  return l->n == APPLY_GROUP_MAX;
}

/* Apply what waits in the log for the engine, a bounded amount per call
 * so that the loop keeps answering; again after APPLY_RETRY_US while the
 * engine is busy, at once while there is more. */
void lkvnet_node_apply_later(lkvnet_server *s) {
  int groups, rc = 0;
  uint64_t busy_at = 0;
  if (s->apply_hi == 0) return;
  if (s->needs_snapshot) { /* an install decides the engine's state */
    defer_apply(s, s->applied_index + 1, s->apply_hi);
    return;
  }
  for (groups = 0;
       groups < APPLY_LATER_GROUPS && rc == 0 && s->applied_index < s->apply_hi;
       groups++) {
    later l;
    size_t i;
    uint64_t hi = s->apply_hi;
    l.n = l.bytes = 0;
    l.nomem = 0;
    rc = lkvnet_node_log_entries(s, s->applied_index + 1, hi + 1, later_take,
                                 &l);
    if (rc == LKV_OK && l.nomem) rc = LKV_NOMEM;
    if (rc == LKV_OK && l.n == 0) rc = LKV_NOTFOUND;
    if (rc != LKV_OK) {
      /* the committed entries are not in the log: nothing can apply them */
      lkv_seterr(&s->apply_err, rc,
                 "cannot read committed entries %llu..%llu back from the "
                 "log to apply them",
                 (unsigned long long)s->applied_index + 1,
                 (unsigned long long)hi);
      lkvnet_node_log(s, "%s", s->apply_err.msg);
      rc = -1;
    } else {
      rc = apply_run(s, l.ents, l.n, &busy_at);
    }
    for (i = 0; i < l.n; i++) free((void *)l.ents[i].data);
  }
  if (rc == 1) {
    defer_apply(s, busy_at, s->apply_hi);
  } else if (rc == 0 && s->applied_index < s->apply_hi) {
    if (s->apply_ev != NULL) /* more: the next iteration goes on */
      event_active(s->apply_ev, EV_TIMEOUT, 0);
  } else {
    double took = lkvnet_node_now() - s->apply_behind_since;
    if (rc == 0 && took >= 1.0)
      lkvnet_node_log(s,
                      "applied through index %llu after waiting %.1f s for "
                      "the engine",
                      (unsigned long long)s->applied_index, took);
    s->apply_hi = 0;
  }
  after_apply(s);
}

static void on_apply_later(evutil_socket_t fd, short what, void *arg) {
  lkvnet_server *s = arg;
  (void)fd;
  (void)what;
  lkvnet_node_apply_later(s);
  lkvnet_node_wake(s); /* a Ready may be due: calls released, answers */
}

/* }====================================================================== */

/* {======================================================================
** Requests waiting for an index
** ======================================================================= */

/* Answer GET /get from this node's engine. */
void lkvnet_node_read_local(lkvnet_server *s, lkvnet_req *req, int route,
                            double start, const char *key, size_t klen) {
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

/* Answer the consistent reads whose index is applied. A serve may add
 * waiters (a stored function's call waiting again, funcs.c): they go
 * after the ones kept, and none is served in the pass that added it. */
void lkvnet_node_serve_waiters(lkvnet_server *s) {
  lkvnet_waiter *list = s->waiters, *keep = NULL, **tail = &keep, *w;
  if (s->waiters == NULL) return; /* the usual case, on every apply */
  s->waiters = NULL;
  while ((w = list) != NULL) {
    list = w->next;
    if (w->h.req == NULL ||
        (w->target != UINT64_MAX && s->applied_index >= w->target)) {
      lkvnet_req *req = lkvnet_node_unhold(&w->h);
      if (req) w->serve(s, w, req);
      free(w->key);
      free(w);
    } else {
      w->next = NULL;
      *tail = w;
      tail = &w->next;
    }
  }
  *tail = s->waiters;
  s->waiters = keep;
}

void lkvnet_node_read_released(lkvnet_server *s, uint64_t ctx, uint64_t index,
                               int ok) {
  lkvnet_waiter *w;
  for (w = s->waiters; w != NULL; w = w->next) {
    if (w->ctx != ctx || w->target != UINT64_MAX) continue;
    if (ok) {
      w->target = index > w->floor ? index : w->floor;
    } else {
      /* this node stopped leading before it could confirm the read: it
       * goes to the next leader (park.c; 503 "no leader" if none comes
       * within an election timeout); the waiter is freed unanswered */
      lkvnet_req *req = lkvnet_node_unhold(&w->h);
      if (req != NULL) lkvnet_node_park(s, req, w->h.route, w->h.start);
    }
    break;
  }
}

lkvnet_waiter *lkvnet_node_waiter_add(lkvnet_server *s, lkvnet_req *req,
                                      int route, double start,
                                      lkvnet_read_fn serve, char *key,
                                      size_t klen) {
  lkvnet_waiter *w = calloc(1, sizeof *w);
  if (w == NULL) {
    free(key);
    return NULL;
  }
  w->serve = serve;
  w->target = UINT64_MAX;
  w->key = key;
  w->klen = klen;
  w->ctx = ++s->next_ctx;
  lkvnet_node_hold(s, &w->h, req, route, start,
                   start + s->write_timeout_ms / 1000.0);
  w->next = s->waiters;
  s->waiters = w;
  return w;
}

/* }====================================================================== */
