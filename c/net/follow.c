/* follow.c - the receiving side of replication (docs/replication.md):
 * POST /raft (the core's messages from another node, stepped into this
 * node's core), POST /snapshot (a leader's snapshot stream, installed in
 * the engine with a crash-safe mark, then stepped into the core as its
 * MSG_SNAP), the install's end once the core asks for it, and the other
 * internal routes, /sync (the log as JSON) and the cluster token check.
 * routes.c dispatches to the lkvnet_node_route_* functions here. Calls the
 * core, and wakes the driver (lkvnet_node_wake) rather than call it. Runs
 * on the event loop's thread; the node's state is node.h. */
#include <event2/event.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "hardstate.h"
#include "json.h"
#include "node.h"
#include "rlog.h"
#include "wire.h"

/* The shared secret, when one is set: 401 without it, 403 when wrong.
 * The comparison does not stop at the first differing byte. */
int lkvnet_node_authorized(lkvnet_server *s, lkvnet_req *req, int route,
                           double start) {
  const char *got;
  size_t i, n, m;
  unsigned diff = 0;
  if (s->token == NULL) return 1;
  got = lkvnet_req_header(req, LKVNET_TOKEN_HEADER);
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
static int query_u64(lkvnet_server *s, lkvnet_req *req, int route, double start,
                     const char *query, const char *name, uint64_t *out) {
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

/* The body of an /append or /snapshot: frames numbered after + 1,
 * after + 2, ... (pairs: op set only), every one checked before anything
 * is written; *last gets the last frame's number (after when none). NULL
 * after answering 400 or 500. */
static const unsigned char *check_frames(lkvnet_server *s, lkvnet_req *req,
                                         int route, double start,
                                         uint64_t after, int pairs, size_t *n,
                                         uint64_t *last) {
  const unsigned char *body;
  size_t off = 0;
  uint64_t expect;
  lkvnet_entry e;
  char why[160];
  int rc;
  body = (const unsigned char *)lkvnet_req_body(req, n);
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

/* Delete every user key of the engine in batches (reserved keys, the
 * install mark among them, stay). */
/* The engine's order: bytewise, a prefix first. */
static int key_cmp(const char *a, size_t al, const char *b, size_t bl) {
  int c = memcmp(a, b, al < bl ? al : bl);
  return c != 0 ? c : (al < bl ? -1 : al > bl);
}

/* The replicated keys (not the node's own: the install mark stays;
 * stored libraries are replicated state) after key lo (from the first
 * when !has_lo) up to hi (to the last when hi == NULL) are deleted: a
 * snapshot's chunk clears the range of keys it covers just before its
 * pairs go in, so an install's wipe costs each chunk its own range
 * rather than the whole store on the loop at the first chunk. Chunks
 * come in key order. */
static int wipe_range(lkvnet_server *s, const char *lo, size_t lo_len,
                      int has_lo, const char *hi, size_t hi_len, int flags,
                      lkv_err *err) {
  lkv_iter *it = NULL;
  uint64_t seq;
  int rc = lkv_iter_new(s->db, LKV_SEQ_LATEST, &it, err);
  if (rc != LKV_OK) return rc;
  lkv_batch_clear(s->batch);
  if (has_lo)
    lkv_iter_seek(it, lo, lo_len);
  else
    lkv_iter_seek_first(it);
  for (; lkv_iter_valid(it) && rc == LKV_OK; lkv_iter_next(it)) {
    size_t kl;
    const char *k = lkv_iter_key(it, &kl);
    if (has_lo && kl == lo_len && memcmp(k, lo, kl) == 0) continue;
    if (hi != NULL && key_cmp(k, kl, hi, hi_len) > 0) break;
    if (lkvnet_node_is_reserved(k, kl) && !lkvnet_node_is_library_key(k, kl))
      continue;
    rc = lkv_batch_delete(s->batch, k, kl, err);
    if (rc == LKV_OK && lkv_batch_count(s->batch) >= 1000) {
      rc = lkv_db_write_opt(s->db, s->batch, flags, &seq, err);
      lkv_batch_clear(s->batch);
    }
  }
  if (rc == LKV_OK) rc = lkv_iter_status(it, err);
  if (rc == LKV_OK) rc = lkv_db_write_opt(s->db, s->batch, flags, &seq, err);
  lkv_batch_clear(s->batch);
  lkv_iter_free(it);
  return rc;
}

/* The last key an install wrote (s->install_last): the next chunk's
 * wipe starts after it. */
static int keep_last(lkvnet_server *s, const char *k, size_t kl) {
  char *c = malloc(kl ? kl : 1);
  if (c == NULL) return -1;
  memcpy(c, k, kl);
  free(s->install_last);
  s->install_last = c;
  s->install_last_len = kl;
  return 0;
}

static int set_marker(lkvnet_server *s, uint64_t v, int applied, int flags,
                      lkv_err *err) {
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
  if (rc == LKV_OK) rc = lkv_db_write_opt(s->db, s->batch, flags, &seq, err);
  lkv_batch_clear(s->batch);
  return rc;
}

/* An install step failed (the engine or the log): logged, answered 500.
 * Whatever mark the engine holds stays: a node with one asks for a new
 * snapshot, now or after a restart. */
static void install_failed(lkvnet_server *s, lkvnet_req *req, double start,
                           uint64_t index, const lkv_err *err) {
  if (err->code == LKV_BUSY) {
    /* the engine would have made the loop wait for its flushes: the
     * chunk is refused instead, and the leader sends the snapshot again
     * from its start later (each chunk re-wipes its range: nothing of
     * this try is trusted) */
    s->install_busy++;
    lkvnet_node_reply_error(s, req, LKVNET_ROUTE_SNAPSHOT, start, 503,
                            "snapshot install at index %llu put off: %s",
                            (unsigned long long)index, err->msg);
    return;
  }
  lkvnet_node_log(s, "snapshot install at index %llu failed: %s",
                  (unsigned long long)index, err->msg);
  lkvnet_node_reply_error(s, req, LKVNET_ROUTE_SNAPSHOT, start, 500, "%s",
                          err->msg);
}

/* A node with an unfinished install (a partial engine) takes no entries:
 * it rebuilds from a leader's whole log when the leader offers it from
 * index 1 (the log emptied back to index 0, the core reopened over it),
 * or else answers every append with a refusal pointing at
 * index 0, so that the leader sends a snapshot. It still follows the
 * leader's term (a heartbeat without a commit index). */
static void deliver_needing_snapshot(lkvnet_server *s,
                                     const lkvnet_raft_msg *m) {
  lkvnet_raft_msg hb = *m, rej;
  lkvnet_raft_status st;
  lkv_err err;
  hb.type = LKVNET_RAFT_MSG_HEARTBEAT;
  hb.commit = 0;
  hb.context = 0;
  hb.entries = NULL;
  hb.n_entries = 0;
  (void)lkvnet_raft_step(s->raft, &hb);
  lkvnet_raft_status_get(s->raft, &st);
  if (st.term != m->term) return; /* a stale leader: the core answered */
  err.msg[0] = '\0';
  if (m->index == 0) {
    uint64_t base = lkvnet_rlog_base_index(s->rlog);
    lkvnet_node_log(s,
                    "unfinished snapshot install: rebuilding from the "
                    "leader's whole log");
    /* the term the heartbeat may have brought is persisted first: the
     * core reopened below starts from the disk's hard state. The log is
     * emptied back to index 0, whatever it was cut at before (a leader
     * that never compacted has no snapshot to send: waiting for one
     * would wait forever); its entries are cut first, so the rewrite
     * lowers the base of an empty log. */
    if (lkvnet_hardstate_store(s->hs, st.term, st.vote, &err) != LKV_OK ||
        lkvnet_rlog_truncate(s->rlog, base, &err) != LKV_OK ||
        (base > 0 && lkvnet_rlog_rewrite(s->rlog, 0, 0, &err) != LKV_OK) ||
        wipe_range(s, NULL, 0, 0, NULL, 0, 0, &err) != LKV_OK ||
        set_marker(s, 0, 1, 0, &err) != LKV_OK) {
      lkvnet_node_log(s, "rebuilding failed: %s", err.msg);
      return;
    }
    s->term = st.term;
    s->vote = st.vote;
    s->needs_snapshot = 0;
    s->applied_index = s->commit_index = 0;
    lkvnet_raft_free(s->raft);
    s->raft = NULL;
    if (lkvnet_node_raft_new(s, &err) != LKV_OK) {
      /* cannot go on without a core: stop (a restart opens it again) */
      lkvnet_node_log(s, "cannot reopen the Raft core: %s", err.msg);
      abort();
    }
    (void)lkvnet_raft_step(s->raft, m);
    return;
  }
  /* the refusal carries the core's term, which the heartbeat above may
   * have just raised: it leaves only once the term file holds it (the
   * driver's cycle stores it; the leader's next append is refused then) */
  if (st.term != s->term) {
    lkvnet_node_wake(s);
    return;
  }
  memset(&rej, 0, sizeof rej);
  rej.type = LKVNET_RAFT_MSG_APP_RESP;
  rej.from = s->id;
  rej.to = m->from;
  rej.term = st.term;
  rej.index = m->index;
  rej.reject = 1;
  lkvnet_node_send(s, &rej, 1);
}

/* POST /raft, body: messages (wire.h), every one checked before any is
 * stepped. Answered 200 at once: the core's answers travel as messages. */
void lkvnet_node_route_raft(lkvnet_server *s, lkvnet_req *req, double start) {
  size_t n, off = 0;
  const unsigned char *body = (const unsigned char *)lkvnet_req_body(req, &n);
  lkvnet_wire_msg w;
  char why[160];
  uint64_t from = LKVNET_RAFT_NONE;
  int rc, first = 1;
  memset(&w, 0, sizeof w);
  if (n > 0 && body == NULL) {
    lkvnet_node_reply_error(s, req, LKVNET_ROUTE_RAFT, start, 500,
                            "out of memory");
    return;
  }
  while ((rc = lkvnet_wire_decode(body, n, &off, &w, why, sizeof why)) == 1) {
  }
  if (rc < 0) {
    lkvnet_wire_msg_free(&w);
    lkvnet_node_reply_error(s, req, LKVNET_ROUTE_RAFT, start, 400,
                            "bad message: %s", why);
    return;
  }
  off = 0;
  if (n == 0) lkvnet_node_raft_heard(s, req, NULL); /* a member's probe */
  while (lkvnet_wire_decode(body, n, &off, &w, why, sizeof why) == 1) {
    const lkvnet_raft_msg *m = &w.m;
    if (first) lkvnet_node_raft_heard(s, req, m);
    first = 0;
    /* a message for another id (a node started with other NODE_URLS), or
     * a snapshot's metadata, which comes only with its data (/snapshot) */
    if (m->to != s->id || m->type == LKVNET_RAFT_MSG_SNAP) continue;
    if (s->log_failed) continue; /* quiet until its log recovers */
    if (s->join_unfinished && (m->type == LKVNET_RAFT_MSG_VOTE ||
                               m->type == LKVNET_RAFT_MSG_PREVOTE ||
                               m->type == LKVNET_RAFT_MSG_TIMEOUT_NOW)) {
      /* its URL may have voted in this term before its directory was
       * lost: no vote until its join is done (members.c), and no
       * campaign a transfer would start; as if lost on the way */
      s->join_votes_dropped++;
      continue;
    }
    from = m->from;
    if (s->needs_snapshot && m->type == LKVNET_RAFT_MSG_APP) {
      deliver_needing_snapshot(s, m);
    } else if (m->type == LKVNET_RAFT_MSG_APP && m->n_entries > 0 &&
               lkvnet_node_apply_too_far_behind(s)) {
      /* applying is far behind: taking more would grow a log that cannot
       * be compacted past the applied index; unanswered, the append is
       * the leader's to send again (heartbeats still keep it leader) */
      s->apply_lag_drops++;
    } else {
      (void)lkvnet_raft_step(s->raft, m);
    }
  }
  /* the connection's sender, once per request (closed by it later, it
   * tells the core its leader may be gone) */
  if (from != LKVNET_RAFT_NONE) lkvnet_node_conns_raft_from(s, req, from);
  lkvnet_wire_msg_free(&w);
  lkvnet_node_reply(s, req, LKVNET_ROUTE_RAFT, start, 200, "application/json",
                    "{\"ok\": true}", 12);
  lkvnet_node_wake(s);
}

/* "v1,v2;l1" (hex ids) into c; 0, or -1 when malformed. */
static int parse_conf(const char *v, lkvnet_raft_conf *c) {
  int learners = 0;
  memset(c, 0, sizeof *c);
  while (*v != '\0') {
    char *end;
    unsigned long long id;
    if (*v == ';') {
      if (learners) return -1;
      learners = 1;
      v++;
      continue;
    }
    if (*v == ',') v++;
    id = strtoull(v, &end, 16);
    if (end == v || id == 0 ||
        c->n_voters + c->n_learners >= LKVNET_RAFT_MAX_MEMBERS)
      return -1;
    if (learners)
      c->learners[c->n_learners++] = id;
    else
      c->voters[c->n_voters++] = id;
    v = end;
  }
  return c->n_voters > 0 ? 0 : -1;
}

/* POST /snapshot?term&from&index&snap_term&offset&done&conf, body: (key,
 * value) pairs as log frames numbered from offset + 1. The first chunk
 * marks the engine as installing (durably: the engine's WAL is not synced,
 * so lkv_db_sync) and empties it; the last one syncs the pairs and steps
 * the snapshot's MSG_SNAP into the core, which asks for the install's end
 * (lkvnet_node_install_finish: the log restarts after the snapshot's
 * index, then the mark goes) or finds its log already holds that entry. A
 * crash anywhere in between leaves the mark, and a node with the mark
 * asks for a new snapshot and never campaigns. */
static void test_silence(evutil_socket_t fd, short what, void *arg) {
  lkvnet_server *s = arg;
  (void)fd;
  (void)what;
  usleep((useconds_t)s->test_install_delay_ms * 1000);
}

void lkvnet_node_route_snapshot(lkvnet_server *s, lkvnet_req *req,
                                const char *query, double start) {
  uint64_t term, from, index, sterm, offset, done, last, seq;
  size_t n, off = 0, clen;
  const unsigned char *body;
  lkvnet_entry e;
  char why[160], *cv;
  lkv_err err;
  lkvnet_raft_status st;
  lkvnet_raft_conf conf;
  const char *last_key = NULL;
  size_t last_len = 0;
  int rc, found, has_last;
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
  cv = lkvnet_node_query_param(query, "from", &clen, &found);
  from = cv ? strtoull(cv, NULL, 16) : 0;
  free(cv);
  cv = lkvnet_node_query_param(query, "conf", &clen, &found);
  rc = cv ? parse_conf(cv, &conf) : -1;
  free(cv);
  if (from == 0 || rc != 0) {
    lkvnet_node_reply_error(s, req, LKVNET_ROUTE_SNAPSHOT, start, 400,
                            "query parameters \"from\" and \"conf\" must name "
                            "the leader and the configuration (hex ids)");
    return;
  }
  if ((body = check_frames(s, req, LKVNET_ROUTE_SNAPSHOT, start, offset, 1, &n,
                           &last)) == NULL)
    return;
  {
    /* the leader's URL and every member's: kept with the snapshot */
    const char *u = lkvnet_req_header(req, LKVNET_FROM_HEADER);
    if (u != NULL) lkvnet_node_learn_url(s, u, strlen(u), from);
    lkvnet_node_learn_members(s, lkvnet_req_header(req, LKVNET_MEMBERS_HEADER));
  }
  if (s->log_failed) {
    lkvnet_node_reply_error(s, req, LKVNET_ROUTE_SNAPSHOT, start, 503,
                            "this node's replication log failed");
    return;
  }
  lkvnet_raft_status_get(s->raft, &st);
  if (term < st.term) {
    lkvnet_node_reply_error(s, req, LKVNET_ROUTE_SNAPSHOT, start, 409,
                            "stale term %llu (this node is at %llu)",
                            (unsigned long long)term,
                            (unsigned long long)st.term);
    return;
  }
  err.msg[0] = '\0';
  if (offset == 0) {
    /* begin: nothing in the log past its start or in the engine is kept.
     * A compaction of this node's own log still running finishes first
     * (waiting on the loop: installs are rare), so the start is final. */
    lkvnet_rlog_stats rs;
    if (index <= st.commit && !s->needs_snapshot) {
      /* this node has what the snapshot holds: the core says how far it
       * is, and the stream stops */
      lkvnet_raft_msg m;
      memset(&m, 0, sizeof m);
      m.type = LKVNET_RAFT_MSG_SNAP;
      m.from = from;
      m.to = s->id;
      m.term = term;
      m.index = index;
      m.log_term = sterm;
      m.conf = &conf;
      (void)lkvnet_raft_step(s->raft, &m);
      lkvnet_node_wake(s);
      lkvnet_node_reply_error(s, req, LKVNET_ROUTE_SNAPSHOT, start, 409,
                              "snapshot not needed: this node has committed "
                              "index %llu",
                              (unsigned long long)st.commit);
      return;
    }
    lkvnet_rlog_compact_wait(s->rlog);
    lkvnet_rlog_stats_get(s->rlog, &rs);
    if (index < rs.base_index) {
      lkvnet_node_reply_error(s, req, LKVNET_ROUTE_SNAPSHOT, start, 409,
                              "snapshot older than this node's log start");
      return;
    }
    lkvnet_node_log(s, "installing a snapshot at index %llu from the leader",
                    (unsigned long long)index);
    if (set_marker(s, index, 0, LKV_WRITE_NO_STALL, &err) != LKV_OK ||
        lkv_db_sync(s->db, &err) != LKV_OK) {
      install_failed(s, req, start, index, &err);
      return;
    }
    /* from here on the engine is partial until done; each chunk clears
     * the keys of its range as it goes in */
    s->needs_snapshot = 1;
    s->applied_index = 0;
    free(s->install_last);
    s->install_last = NULL;
    s->install_last_len = 0;
    s->installing = 1;
    s->install_index = index;
    s->install_term = sterm;
    s->install_got = 0;
  }
  if (!s->installing || s->install_index != index || offset != s->install_got) {
    lkvnet_node_reply_error(s, req, LKVNET_ROUTE_SNAPSHOT, start, 409,
                            "snapshot chunk out of order; start again from "
                            "offset 0");
    return;
  }
  /* the chunk's last key (its pairs are in key order): what it covers */
  off = 0;
  has_last = 0;
  while (lkvnet_rlog_decode(body, n, &off, &e, why, sizeof why) == 1) {
    last_key = e.key;
    last_len = e.klen;
    has_last = 1;
  }
  rc = LKV_OK;
  if (has_last || done)
    rc = wipe_range(s, s->install_last, s->install_last_len,
                    s->install_last != NULL, has_last ? last_key : NULL,
                    last_len, LKV_WRITE_NO_STALL, &err);
  off = 0;
  lkv_batch_clear(s->batch);
  while (rc == LKV_OK &&
         lkvnet_rlog_decode(body, n, &off, &e, why, sizeof why) == 1) {
    rc = lkv_batch_set(s->batch, e.key, e.klen, e.val, e.vlen, &err);
    if (rc == LKV_OK && lkv_batch_count(s->batch) >= 1000) {
      rc = lkv_db_write_opt(s->db, s->batch, LKV_WRITE_NO_STALL, &seq, &err);
      lkv_batch_clear(s->batch);
    }
  }
  if (rc == LKV_OK)
    rc = lkv_db_write_opt(s->db, s->batch, LKV_WRITE_NO_STALL, &seq, &err);
  lkv_batch_clear(s->batch);
  if (rc == LKV_OK && has_last && keep_last(s, last_key, last_len) != 0)
    rc = lkv_seterr(&err, LKV_NOMEM, "snapshot: out of memory");
  /* the last chunk: whatever lies past its last key is not in the
   * snapshot */
  if (rc == LKV_OK && done && has_last)
    rc = wipe_range(s, s->install_last, s->install_last_len, 1, NULL, 0,
                    LKV_WRITE_NO_STALL, &err);
  if (rc != LKV_OK) {
    install_failed(s, req, start, index, &err);
    return;
  }
  s->install_got = last;
  if (done) {
    lkvnet_raft_msg m;
    /* spec/23: an install as slow as a big store's (its sync and the
     * log's rewrite can take seconds), on the loop as theirs are */
    if (s->test_install_delay_ms > 0)
      usleep((useconds_t)s->test_install_delay_ms * 1000);
    if (lkv_db_sync(s->db, &err) != LKV_OK) {
      install_failed(s, req, start, index, &err);
      return;
    }
    /* the pairs are durable: the core decides what the install means */
    memset(&m, 0, sizeof m);
    m.type = LKVNET_RAFT_MSG_SNAP;
    m.from = from;
    m.to = s->id;
    m.term = term;
    m.index = index;
    m.log_term = sterm;
    m.conf = &conf;
    s->install_conf = conf;
    s->install_stepped = 1;
    (void)lkvnet_raft_step(s->raft, &m);
    lkvnet_node_wake(s);
  }
  lkvnet_node_reply(s, req, LKVNET_ROUTE_SNAPSHOT, start, 200,
                    "application/json", "{\"ok\": true}", 12);
  if (done && s->test_install_delay_ms > 0) {
    /* spec/23: silent again a moment after the answer went out, as a
     * node catching up from far behind may be */
    struct timeval tv = {0, 200 * 1000};
    (void)event_base_once(s->base, -1, EV_TIMEOUT, test_silence, s, &tv);
  }
}

int lkvnet_node_install_finish(lkvnet_server *s, uint64_t index, uint64_t term,
                               const lkvnet_raft_conf *conf, int rewrite) {
  lkv_err err;
  lkvnet_rlog_stats rs;
  err.msg[0] = '\0';
  lkvnet_rlog_compact_wait(s->rlog);
  lkvnet_rlog_stats_get(s->rlog, &rs);
  /* the log first: a crash before the engine's mark goes leaves the
   * mark, and a new install; the other order could leave an engine ahead
   * of its log */
  if ((rewrite &&
       (lkvnet_rlog_truncate(s->rlog, rs.base_index, &err) != LKV_OK ||
        lkvnet_rlog_rewrite(s->rlog, index, term, &err) != LKV_OK)) ||
      set_marker(s, index, 1, 0, &err) != LKV_OK ||
      lkvnet_node_set_applied(s, index, conf, &err) != LKV_OK ||
      lkv_db_sync(s->db, &err) != LKV_OK) {
    lkvnet_node_log(s, "snapshot install at index %llu failed: %s",
                    (unsigned long long)index, err.msg);
    return -1;
  }
  s->applied_index = index;
  if (s->commit_index < index) s->commit_index = index;
  s->conf = *conf;
  s->needs_snapshot = 0;
  s->installing = 0;
  s->install_stepped = 0;
  if (s->has_fns) s->fns.changed(s->fns.ctx); /* the libraries came too */
  lkvnet_node_log(s, "snapshot installed: index %llu (term %llu), %llu keys",
                  (unsigned long long)index, (unsigned long long)term,
                  (unsigned long long)s->install_got);
  return 0;
}

static const char *op_name(int op) {
  return op == LKVNET_OP_SET      ? "set"
         : op == LKVNET_OP_DELETE ? "delete"
         : op == LKVNET_OP_CONF   ? "conf"
         : op == LKVNET_OP_BATCH  ? "batch"
                                  : "noop";
}

/* GET /sync?from_index=N[&limit=M]: the log from N as JSON (410 when N is
 * behind the log's start: that history is only in snapshots now). */
void lkvnet_node_route_sync(lkvnet_server *s, lkvnet_req *req,
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
    if (e.op != LKVNET_OP_NOOP && e.op != LKVNET_OP_CONF &&
        e.op != LKVNET_OP_BATCH) {
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
