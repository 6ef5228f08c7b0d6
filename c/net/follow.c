/* follow.c - the follower's side of replication (docs/replication.md):
 * /append (the prev-entry check, cutting a conflicting suffix, the answer
 * once the entries are durable here: lkvnet_node_reply_append, apply.c's,
 * as the wait for the sync is), /snapshot (the install, with its
 * crash-safe mark in the engine) and the term a leader's request brings;
 * also the other internal routes, /sync (the log as JSON) and the cluster
 * token check. routes.c dispatches to the lkvnet_node_route_* functions
 * here. Runs on the event loop's thread; the node's state is node.h. */
#include <event2/buffer.h>
#include <event2/http.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "json.h"
#include "node.h"
#include "rlog.h"

/* The shared secret, when one is set: 401 without it, 403 when wrong.
 * The comparison does not stop at the first differing byte. */
int lkvnet_node_authorized(lkvnet_server *s, struct evhttp_request *req,
                           int route, double start) {
  const char *got;
  size_t i, n, m;
  unsigned diff = 0;
  if (s->token == NULL) return 1;
  got = evhttp_find_header(evhttp_request_get_input_headers(req),
                           LKVNET_TOKEN_HEADER);
  if (got == NULL) {
    lkvnet_node_reply_error(s, req, route, start, 401,
                            "this route needs "
                            "the cluster token in the " LKVNET_TOKEN_HEADER
                            " header");
    return 0;
  }
  n = strlen(got);
  m = strlen(s->token);
  for (i = 0; i < m; i++) diff |= (unsigned)(got[i < n ? i : 0] ^ s->token[i]);
  if (diff != 0 || n != m) {
    lkvnet_node_reply_error(s, req, route, start, 403, "wrong cluster token");
    return 0;
  }
  return 1;
}

/* A decimal query parameter; -1 (and a 400) when absent or not a number. */
static int query_u64(lkvnet_server *s, struct evhttp_request *req, int route,
                     double start, const char *query, const char *name,
                     uint64_t *out) {
  size_t len, i;
  int found;
  char *v = lkvnet_node_query_param(query, name, &len, &found);
  uint64_t n = 0;
  if (v == NULL) {
    if (found)
      lkvnet_node_reply_error(s, req, route, start, 500, "out of memory");
    else
      lkvnet_node_reply_error(s, req, route, start, 400,
                              "missing query parameter \"%s\"", name);
    return -1;
  }
  for (i = 0; i < len; i++) {
    unsigned d = (unsigned char)v[i] - '0';
    if (d > 9 || n > (UINT64_MAX - d) / 10) break;
    n = n * 10 + d;
  }
  free(v);
  if (len == 0 || i < len) {
    lkvnet_node_reply_error(
        s, req, route, start, 400,
        "query parameter \"%s\" must be an unsigned integer", name);
    return -1;
  }
  *out = n;
  return 0;
}

/* Answer an internal request at once (not held). */
static void answer_now(lkvnet_server *s, struct evhttp_request *req, int route,
                       double start, int code, uint64_t match,
                       const char *error) {
  lkvnet_held h;
  lkvnet_node_hold(s, &h, req, route, start, start);
  lkvnet_node_reply_append(s, &h, code, match, error);
}

/* A term seen in a leader's request: adopt a newer one, durably (Raft's
 * currentTerm). Returns 0, or -1 after answering a stale one. */
static int follow_term(lkvnet_server *s, struct evhttp_request *req, int route,
                       double start, uint64_t term) {
  lkv_err err;
  if (s->leader) {
    answer_now(s, req, route, start, 409, 0,
               "this node leads (it is "
               "LEADER_URL); it takes no replication from another node");
    return -1;
  }
  if (term < s->term) {
    answer_now(s, req, route, start, 409, 0, "stale term");
    return -1;
  }
  if (term > s->term) {
    err.msg[0] = '\0';
    if (lkvnet_term_store(s->data_dir, s->env, term, &err) != LKV_OK) {
      lkvnet_node_reply_error(s, req, route, start, 500, "%s", err.msg);
      return -1;
    }
    lkvnet_node_log(s, "term %llu (leader %s)", (unsigned long long)term,
                    s->leader_url);
    s->term = term;
  }
  return 0;
}

/* The body of an /append or /snapshot: frames numbered after + 1,
 * after + 2, ... (pairs: op set only), every one checked before anything
 * is written; *last gets the last frame's number (after when none). NULL
 * after answering 400 or 500. */
static const unsigned char *check_frames(lkvnet_server *s,
                                         struct evhttp_request *req, int route,
                                         double start, uint64_t after,
                                         int pairs, size_t *n, uint64_t *last) {
  struct evbuffer *in = evhttp_request_get_input_buffer(req);
  const unsigned char *body;
  size_t off = 0;
  uint64_t expect;
  lkvnet_entry e;
  char why[160];
  int rc;
  *n = evbuffer_get_length(in);
  body = *n ? evbuffer_pullup(in, -1) : (const unsigned char *)"";
  if (body == NULL) {
    lkvnet_node_reply_error(s, req, route, start, 500, "out of memory");
    return NULL;
  }
  for (expect = after + 1;; expect++) {
    rc = lkvnet_rlog_decode(body, *n, &off, &e, why, sizeof why);
    if (rc == 0) {
      *last = expect - 1;
      return body;
    }
    if (rc < 0 || e.index != expect || (pairs && e.op != LKVNET_OP_SET)) {
      lkvnet_node_reply_error(s, req, route, start, 400, "bad frames: %s",
                              rc < 0 ? why : "out of order (or not pairs)");
      return NULL;
    }
  }
}

static int wipe_engine(lkvnet_server *s, lkv_err *err);
static int set_marker(lkvnet_server *s, uint64_t v, int applied, lkv_err *err);

/* POST /append?term&prev_index&prev_term&commit, body: log frames. */
void lkvnet_node_route_append(lkvnet_server *s, struct evhttp_request *req,
                              const char *query, double start) {
  uint64_t term, prev, prev_term, commit, t, match, base, last;
  size_t n, off = 0;
  const unsigned char *body;
  lkvnet_entry e;
  char why[160];
  lkv_err err;
  lkvnet_waiter *w;
  if (query_u64(s, req, LKVNET_ROUTE_APPEND, start, query, "term", &term) !=
          0 ||
      query_u64(s, req, LKVNET_ROUTE_APPEND, start, query, "prev_index",
                &prev) != 0 ||
      query_u64(s, req, LKVNET_ROUTE_APPEND, start, query, "prev_term",
                &prev_term) != 0 ||
      query_u64(s, req, LKVNET_ROUTE_APPEND, start, query, "commit", &commit) !=
          0)
    return;
  if ((body = check_frames(s, req, LKVNET_ROUTE_APPEND, start, prev, 0, &n,
                           &last)) == NULL)
    return;
  if (follow_term(s, req, LKVNET_ROUTE_APPEND, start, term) != 0) return;
  if (s->installing) {
    /* a new leader term, or the stream broke: the install starts over */
    s->installing = 0;
  }
  /* rebuilding from the whole log cuts it to nothing: let a compaction
   * begun before the engine lost its state finish first (rare: it waits
   * for the disk, on the loop) so base_index is the log's real start */
  if (s->needs_snapshot) lkvnet_rlog_compact_wait(s->rlog);
  base = lkvnet_rlog_base_index(s->rlog);
  if (s->needs_snapshot) {
    if (prev != 0 || base != 0) {
      answer_now(s, req, LKVNET_ROUTE_APPEND, start, 409, 0,
                 "this node needs a snapshot");
      return;
    }
    /* the leader offers its whole log instead (it never compacted): an
     * empty engine and log can take it from index 1 */
    err.msg[0] = '\0';
    lkvnet_node_log(s,
                    "unfinished snapshot install: rebuilding from the "
                    "leader's whole log");
    if (lkvnet_rlog_truncate(s->rlog, 0, &err) != LKV_OK ||
        wipe_engine(s, &err) != LKV_OK || set_marker(s, 0, 1, &err) != LKV_OK) {
      lkvnet_node_reply_error(s, req, LKVNET_ROUTE_APPEND, start, 500, "%s",
                              err.msg);
      return;
    }
    lkvnet_node_pending_cut(s, 0);
    s->needs_snapshot = 0;
    s->applied_index = s->commit_index = 0;
  }
  if (prev > lkvnet_node_last_index(s)) {
    answer_now(s, req, LKVNET_ROUTE_APPEND, start, 409, 0,
               "log ends before prev_index");
    return;
  }
  if (prev >= base &&
      (lkvnet_rlog_term_at(s->rlog, prev, &t) != LKV_OK || t != prev_term)) {
    /* Raft: refuse; the leader probes one entry back */
    answer_now(s, req, LKVNET_ROUTE_APPEND, start, 409, 0,
               "log does not match at prev_index");
    return;
  }
  off = 0;
  err.msg[0] = '\0';
  while (lkvnet_rlog_decode(body, n, &off, &e, why, sizeof why) == 1) {
    if (e.index <= base) continue; /* in our snapshot already */
    if (e.index <= lkvnet_node_last_index(s)) {
      if (lkvnet_rlog_term_at(s->rlog, e.index, &t) == LKV_OK && t == e.term)
        continue; /* have it */
      if (e.index <= s->applied_index) {
        /* a leader that lost what it had committed: this node will not
         * unapply it (logged: someone must look) */
        lkvnet_node_log(s,
                        "refusing the leader's entry %llu (term %llu): "
                        "it conflicts with one already applied here",
                        (unsigned long long)e.index,
                        (unsigned long long)e.term);
        lkvnet_node_reply_error(s, req, LKVNET_ROUTE_APPEND, start, 500,
                                "the leader's entry %llu "
                                "conflicts with one already applied here",
                                (unsigned long long)e.index);
        return;
      }
      lkvnet_node_log(
          s, "log conflict at index %llu: cutting %llu entries",
          (unsigned long long)e.index,
          (unsigned long long)(lkvnet_node_last_index(s) - e.index + 1));
      if (lkvnet_rlog_truncate(s->rlog, e.index - 1, &err) != LKV_OK) {
        lkvnet_node_reply_error(s, req, LKVNET_ROUTE_APPEND, start, 500, "%s",
                                err.msg);
        return;
      }
      lkvnet_node_pending_cut(s, e.index - 1);
    }
    if (lkvnet_rlog_append_entry(s->rlog, &e, &err) != LKV_OK) {
      lkvnet_node_reply_error(s, req, LKVNET_ROUTE_APPEND, start,
                              lkvnet_node_http_status_of(err.code), "%s",
                              err.msg);
      return;
    }
    if (lkvnet_node_pending_push(s, e.index, e.op, e.key, e.klen, e.val,
                                 e.vlen) != 0) {
      /* as on the leader: never apply past an untracked entry */
      lkv_seterr(&s->apply_err, LKV_NOMEM,
                 "out of memory tracking "
                 "index %llu",
                 (unsigned long long)e.index);
      lkvnet_node_reply_error(s, req, LKVNET_ROUTE_APPEND, start, 500, "%s",
                              s->apply_err.msg);
      return;
    }
  }
  match = last > base ? last : base;
  if (commit > match) commit = match;
  if (commit > s->commit_index) s->commit_index = commit;
  lkvnet_node_apply_committed(s);
  if (lkvnet_rlog_durable_index(s->rlog) >= match) {
    answer_now(s, req, LKVNET_ROUTE_APPEND, start, 200, match, NULL);
    return;
  }
  if ((w = lkvnet_node_waiter_add(s, req, LKVNET_ROUTE_APPEND, start,
                                  LKVNET_WAIT_APPEND, match)) == NULL)
    lkvnet_node_reply_error(s, req, LKVNET_ROUTE_APPEND, start, 500,
                            "out of memory");
}

/* Delete every user key of the engine in batches (reserved keys, the
 * install mark among them, stay). */
static int wipe_engine(lkvnet_server *s, lkv_err *err) {
  lkv_iter *it = NULL;
  uint64_t seq;
  int rc = lkv_iter_new(s->db, LKV_SEQ_LATEST, &it, err);
  if (rc != LKV_OK) return rc;
  lkv_batch_clear(s->batch);
  for (lkv_iter_seek_first(it); lkv_iter_valid(it) && rc == LKV_OK;
       lkv_iter_next(it)) {
    size_t kl;
    const char *k = lkv_iter_key(it, &kl);
    if (lkvnet_node_is_reserved(k, kl)) continue; /* the install mark stays */
    rc = lkv_batch_delete(s->batch, k, kl, err);
    if (rc == LKV_OK && lkv_batch_count(s->batch) >= 1000) {
      rc = lkv_db_write(s->db, s->batch, &seq, err);
      lkv_batch_clear(s->batch);
    }
  }
  if (rc == LKV_OK) rc = lkv_iter_status(it, err);
  if (rc == LKV_OK) rc = lkv_db_write(s->db, s->batch, &seq, err);
  lkv_batch_clear(s->batch);
  lkv_iter_free(it);
  return rc;
}

static int set_marker(lkvnet_server *s, uint64_t v, int applied, lkv_err *err) {
  unsigned char b[8];
  uint64_t seq;
  int i, rc;
  for (i = 0; i < 8; i++) b[i] = (unsigned char)(v >> (8 * i));
  lkv_batch_clear(s->batch);
  if (applied) {
    rc = lkv_batch_delete(s->batch, LKVNET_INSTALL_KEY,
                          sizeof LKVNET_INSTALL_KEY - 1, err);
    if (rc == LKV_OK)
      rc = lkv_batch_set(s->batch, LKVNET_APPLIED_KEY,
                         sizeof LKVNET_APPLIED_KEY - 1, b, 8, err);
  } else {
    rc = lkv_batch_set(s->batch, LKVNET_INSTALL_KEY,
                       sizeof LKVNET_INSTALL_KEY - 1, b, 8, err);
    if (rc == LKV_OK)
      rc = lkv_batch_delete(s->batch, LKVNET_APPLIED_KEY,
                            sizeof LKVNET_APPLIED_KEY - 1, err);
  }
  if (rc == LKV_OK) rc = lkv_db_write(s->db, s->batch, &seq, err);
  lkv_batch_clear(s->batch);
  return rc;
}

/* An install step failed (the engine or the log): logged, answered 500.
 * Whatever mark the engine holds stays: a node with one asks for a new
 * snapshot, now or after a restart. */
static void install_failed(lkvnet_server *s, struct evhttp_request *req,
                           double start, uint64_t index, const lkv_err *err) {
  lkvnet_node_log(s, "snapshot install at index %llu failed: %s",
                  (unsigned long long)index, err->msg);
  lkvnet_node_reply_error(s, req, LKVNET_ROUTE_SNAPSHOT, start, 500, "%s",
                          err->msg);
}

/* POST /snapshot?term&index&snap_term&offset&done, body: (key, value)
 * pairs as log frames numbered from offset + 1. The first chunk marks
 * the engine as installing (durably: the engine's WAL is not synced, so
 * lkv_db_sync) and empties it; the last one syncs the pairs, restarts the
 * log after the snapshot's index, and only then swaps the mark for the
 * applied index. A crash anywhere in between leaves the mark, and a node
 * with the mark asks for a new snapshot: its log is never cut while its
 * engine could still claim to follow it. */
void lkvnet_node_route_snapshot(lkvnet_server *s, struct evhttp_request *req,
                                const char *query, double start) {
  uint64_t term, index, sterm, offset, done, last, seq;
  size_t n, off = 0;
  const unsigned char *body;
  lkvnet_entry e;
  char why[160];
  lkv_err err;
  int rc;
  if (query_u64(s, req, LKVNET_ROUTE_SNAPSHOT, start, query, "term", &term) !=
          0 ||
      query_u64(s, req, LKVNET_ROUTE_SNAPSHOT, start, query, "index", &index) !=
          0 ||
      query_u64(s, req, LKVNET_ROUTE_SNAPSHOT, start, query, "snap_term",
                &sterm) != 0 ||
      query_u64(s, req, LKVNET_ROUTE_SNAPSHOT, start, query, "offset",
                &offset) != 0 ||
      query_u64(s, req, LKVNET_ROUTE_SNAPSHOT, start, query, "done", &done) !=
          0)
    return;
  if ((body = check_frames(s, req, LKVNET_ROUTE_SNAPSHOT, start, offset, 1, &n,
                           &last)) == NULL)
    return;
  if (follow_term(s, req, LKVNET_ROUTE_SNAPSHOT, start, term) != 0) return;
  err.msg[0] = '\0';
  if (offset == 0) {
    /* begin: nothing in the log past its start or in the engine is kept.
     * A compaction of this node's own log still running finishes first
     * (waiting on the loop: installs are rare), so the start is final. */
    lkvnet_rlog_stats rs;
    lkvnet_rlog_compact_wait(s->rlog);
    lkvnet_rlog_stats_get(s->rlog, &rs);
    if (index < rs.base_index) {
      answer_now(s, req, LKVNET_ROUTE_SNAPSHOT, start, 409, 0,
                 "snapshot older than "
                 "this node's log start");
      return;
    }
    lkvnet_node_log(s, "installing a snapshot at index %llu from the leader",
                    (unsigned long long)index);
    if (set_marker(s, index, 0, &err) != LKV_OK ||
        lkv_db_sync(s->db, &err) != LKV_OK) {
      install_failed(s, req, start, index, &err);
      return;
    }
    /* from here on the engine is partial until done */
    lkvnet_node_pending_cut(s, 0);
    s->needs_snapshot = 1;
    s->applied_index = s->commit_index = 0;
    if (wipe_engine(s, &err) != LKV_OK) {
      install_failed(s, req, start, index, &err);
      return;
    }
    s->installing = 1;
    s->install_index = index;
    s->install_got = 0;
  }
  if (!s->installing || s->install_index != index || offset != s->install_got) {
    answer_now(s, req, LKVNET_ROUTE_SNAPSHOT, start, 409, 0,
               "snapshot chunk out of "
               "order; start again from offset 0");
    return;
  }
  off = 0;
  lkv_batch_clear(s->batch);
  rc = LKV_OK;
  while (rc == LKV_OK &&
         lkvnet_rlog_decode(body, n, &off, &e, why, sizeof why) == 1) {
    rc = lkv_batch_set(s->batch, e.key, e.klen, e.val, e.vlen, &err);
    if (rc == LKV_OK && lkv_batch_count(s->batch) >= 1000) {
      rc = lkv_db_write(s->db, s->batch, &seq, &err);
      lkv_batch_clear(s->batch);
    }
  }
  if (rc == LKV_OK) rc = lkv_db_write(s->db, s->batch, &seq, &err);
  lkv_batch_clear(s->batch);
  if (rc != LKV_OK) {
    install_failed(s, req, start, index, &err);
    return;
  }
  s->install_got = last;
  if (done) {
    /* the log first: a crash before the engine's mark goes leaves the
     * mark, and a new install; the other order could leave an engine
     * ahead of its log */
    lkvnet_rlog_stats rs;
    lkvnet_rlog_stats_get(s->rlog, &rs);
    if (lkv_db_sync(s->db, &err) != LKV_OK ||
        lkvnet_rlog_truncate(s->rlog, rs.base_index, &err) != LKV_OK ||
        lkvnet_rlog_rewrite(s->rlog, index, sterm, &err) != LKV_OK ||
        set_marker(s, index, 1, &err) != LKV_OK) {
      install_failed(s, req, start, index, &err);
      return;
    }
    s->applied_index = s->commit_index = index;
    s->needs_snapshot = 0;
    s->installing = 0;
    lkvnet_node_log(s, "snapshot installed: index %llu, %llu keys",
                    (unsigned long long)index,
                    (unsigned long long)s->install_got);
  }
  answer_now(s, req, LKVNET_ROUTE_SNAPSHOT, start, 200, done ? index : 0, NULL);
}

static const char *op_name(int op) {
  return op == LKVNET_OP_SET      ? "set"
         : op == LKVNET_OP_DELETE ? "delete"
                                  : "noop";
}

/* GET /sync?from_index=N[&limit=M]: the log from N as JSON (410 when N is
 * behind the log's start: that history is only in snapshots now). */
void lkvnet_node_route_sync(lkvnet_server *s, struct evhttp_request *req,
                            const char *query, double start) {
  uint64_t from, limit = LKVNET_SYNC_MAX_ENTRIES, to, i = 0;
  lkvnet_rlog_stats rs;
  unsigned char *frames = NULL;
  size_t len = 0, off = 0;
  lkvnet_entry e;
  char why[160];
  lkvnet_jbuf b;
  lkv_err err;
  int rc, lfound;
  size_t ll;
  char *lim;
  if (query_u64(s, req, LKVNET_ROUTE_SYNC, start, query, "from_index", &from) !=
      0)
    return;
  lim = lkvnet_node_query_param(query, "limit", &ll, &lfound);
  if (lfound) {
    long l;
    if (lim == NULL || lkvnet_node_parse_limit(lim, &l) != 0 || l < 1 ||
        l > LKVNET_SYNC_MAX_ENTRIES) {
      free(lim);
      lkvnet_node_reply_error(s, req, LKVNET_ROUTE_SYNC, start, 400,
                              "limit must be an integer "
                              "from 1 to %d",
                              LKVNET_SYNC_MAX_ENTRIES);
      return;
    }
    limit = (uint64_t)l;
    free(lim);
  }
  if (from == 0) from = 1;
  lkvnet_rlog_stats_get(s->rlog, &rs);
  if (from <= rs.base_index) {
    memset(&b, 0, sizeof b);
    lkvnet_jbuf_lit(&b,
                    "{\"ok\": false, \"error\": \"entries up to the "
                    "base index are compacted into a snapshot\", "
                    "\"base_index\": ");
    lkvnet_jbuf_u64(&b, rs.base_index);
    lkvnet_jbuf_lit(&b, "}");
    lkvnet_node_reply_json(s, req, LKVNET_ROUTE_SYNC, start, 410, &b);
    return;
  }
  err.msg[0] = '\0';
  rc = lkvnet_rlog_read(s->rlog, from, LKVNET_SCAN_MAX_BYTES, &frames, &len,
                        &to, &err);
  if (rc != LKV_OK) {
    lkvnet_node_reply_error(s, req, LKVNET_ROUTE_SYNC, start,
                            lkvnet_node_http_status_of(rc), "%s", err.msg);
    return;
  }
  memset(&b, 0, sizeof b);
  lkvnet_jbuf_lit(&b, "{\"entries\": [");
  while (i < limit &&
         lkvnet_rlog_decode(frames, len, &off, &e, why, sizeof why) == 1) {
    lkvnet_jbuf_lit(&b, i ? ", {\"term\": " : "{\"term\": ");
    lkvnet_jbuf_u64(&b, e.term);
    lkvnet_jbuf_lit(&b, ", \"index\": ");
    lkvnet_jbuf_u64(&b, e.index);
    lkvnet_jbuf_lit(&b, ", \"op\": \"");
    lkvnet_jbuf_lit(&b, op_name(e.op));
    lkvnet_jbuf_lit(&b, "\"");
    if (e.op != LKVNET_OP_NOOP) {
      lkvnet_jbuf_lit(&b, ", ");
      lkvnet_node_put_bytes_member(&b, "key", e.key, e.klen);
    }
    if (e.op == LKVNET_OP_SET) {
      lkvnet_jbuf_lit(&b, ", ");
      lkvnet_node_put_bytes_member(&b, "value", e.val ? e.val : "", e.vlen);
    }
    lkvnet_jbuf_lit(&b, "}");
    i++;
  }
  free(frames);
  lkvnet_jbuf_lit(&b, "], \"base_index\": ");
  lkvnet_jbuf_u64(&b, rs.base_index);
  lkvnet_jbuf_lit(&b, ", \"last_index\": ");
  lkvnet_jbuf_u64(&b, rs.last_index);
  lkvnet_jbuf_lit(&b, ", \"commit_index\": ");
  lkvnet_jbuf_u64(&b, s->commit_index);
  lkvnet_jbuf_lit(&b, from + i <= rs.last_index ? ", \"more\": true}"
                                                : ", \"more\": false}");
  lkvnet_node_reply_json(s, req, LKVNET_ROUTE_SYNC, start, 200, &b);
}
