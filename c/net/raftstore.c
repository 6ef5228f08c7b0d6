/* raftstore.c - the Raft core's storage over the replication log (the
 * four callbacks of raft.h's lkvnet_raft_storage) and the core's opening:
 * its id, timeouts, persisted hard state, applied index and founding
 * voters. A NORMAL entry's data is the client's command (apply.c's
 * lkvnet_node_cmd_*): in the log it is a frame of op set or delete with
 * the key and value, so the log's format is unchanged; a NOOP is a frame
 * of op noop, a CONF a frame of op conf with the core's payload. Runs on the
 * event loop's thread; the node's state is node.h. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "node.h"
#include "rlog.h"

/* {======================================================================
** The storage callbacks
** ======================================================================= */

static void st_snapshot(void *ctx, uint64_t *index, uint64_t *term,
                        lkvnet_raft_conf *conf) {
  lkvnet_server *s = ctx;
  lkvnet_rlog_stats rs;
  lkvnet_rlog_stats_get(s->rlog, &rs);
  *index = rs.base_index;
  *term = rs.base_term;
  /* the engine's configuration is the one as of the applied index, at or
   * past the log's base; with no configuration change after the base in
   * the log (the only case where the core reads this) they are the same */
  if (rs.base_index == 0)
    memset(conf, 0, sizeof *conf);
  else
    *conf = s->conf;
}

static uint64_t st_last_index(void *ctx) {
  lkvnet_server *s = ctx;
  return lkvnet_rlog_last_index(s->rlog);
}

static int st_term(void *ctx, uint64_t index, uint64_t *term) {
  lkvnet_server *s = ctx;
  lkvnet_rlog_stats rs;
  lkvnet_rlog_stats_get(s->rlog, &rs);
  if (index == rs.base_index) {
    *term = rs.base_term;
    return LKV_OK;
  }
  if (index < rs.base_index || index > rs.last_index) return LKV_NOTFOUND;
  return lkvnet_rlog_term_at(s->rlog, index, term);
}

/* A log entry as the core's entry (its data in s->scratch, good until the
 * next call). */
static int to_raft(lkvnet_server *s, const lkvnet_entry *le,
                   lkvnet_raft_entry *e) {
  e->term = le->term;
  e->index = le->index;
  e->data = NULL;
  e->len = 0;
  if (le->op == LKVNET_OP_NOOP) {
    e->type = LKVNET_RAFT_ENTRY_NOOP;
    return 0;
  }
  if (le->op == LKVNET_OP_CONF) {
    /* the core's own payload; read at open too (the core looks for the
     * configuration in the log), which is when the URL of a member added
     * after the engine's kept configuration is learned */
    e->type = LKVNET_RAFT_ENTRY_CONF;
    e->data = (const unsigned char *)le->val;
    e->len = le->vlen;
    lkvnet_node_learn_conf_entry(s, le->index, e->data, e->len);
    return 0;
  }
  e->type = LKVNET_RAFT_ENTRY_NORMAL;
  e->len = lkvnet_node_cmd_size(le->klen, le->vlen);
  if (e->len > s->scratch_cap) {
    unsigned char *n = realloc(s->scratch, e->len);
    if (n == NULL) return -1;
    s->scratch = n;
    s->scratch_cap = e->len;
  }
  lkvnet_node_cmd_encode(s->scratch, le->op, le->key, le->klen, le->val,
                         le->vlen);
  e->data = s->scratch;
  return 0;
}

static int st_entries(void *ctx, uint64_t lo, uint64_t hi,
                      int (*emit)(void *arg, const lkvnet_raft_entry *e),
                      void *arg) {
  lkvnet_server *s = ctx;
  lkv_err err;
  if (lo <= lkvnet_rlog_base_index(s->rlog)) return LKV_NOTFOUND;
  while (lo < hi) {
    unsigned char *buf = NULL;
    size_t len = 0, off = 0;
    uint64_t to = 0;
    lkvnet_entry le;
    lkvnet_raft_entry e;
    char why[160];
    int rc, stop = 0;
    err.msg[0] = '\0';
    rc = lkvnet_rlog_read(s->rlog, lo, LKVNET_APPEND_MAX_BYTES, &buf, &len, &to,
                          &err);
    if (rc != LKV_OK) return rc;
    if (len == 0) {
      free(buf);
      return LKV_NOTFOUND; /* past the end: the core asked for too much */
    }
    while (!stop && lo < hi &&
           lkvnet_rlog_decode(buf, len, &off, &le, why, sizeof why) == 1) {
      if (le.index != lo || to_raft(s, &le, &e) != 0) {
        free(buf);
        return le.index != lo ? LKV_CORRUPTION : LKV_NOMEM;
      }
      stop = emit(arg, &e) != 0;
      lo++;
    }
    free(buf);
    if (stop) break;
  }
  return LKV_OK;
}

int lkvnet_node_log_entries(lkvnet_server *s, uint64_t lo, uint64_t hi,
                            int (*emit)(void *arg, const lkvnet_raft_entry *e),
                            void *arg) {
  return st_entries(s, lo, hi, emit, arg);
}

/* }====================================================================== */

/* {======================================================================
** Opening the core
** ======================================================================= */

int lkvnet_node_raft_new(lkvnet_server *s, lkv_err *err) {
  lkvnet_raft_config c;
  size_t i;
  uint64_t base = lkvnet_rlog_base_index(s->rlog);
  lkvnet_raft_config_init(&c);
  c.id = s->id;
  c.heartbeat_ticks = 1;
  c.election_ticks = s->election_ms / s->heartbeat_ms;
  if (c.election_ticks < 2) c.election_ticks = 2;
  c.seed = (uint64_t)time(NULL) ^ ((uint64_t)clock() << 32);
  c.campaign_first = s->hint_url != NULL && strcmp(s->hint_url, s->my_url) == 0;
  c.max_msg_bytes = LKVNET_APPEND_MAX_BYTES;
  /* one append in flight per follower, not the core's 64: while it
   * travels and the follower syncs, new writes gather into the next one,
   * so a batch grows with the load instead of the number of requests
   * (each is an HTTP request, a wake-up of the follower's loop and an
   * fdatasync on a disk the three nodes may share). Measured at 32
   * connections on one VM: 4 in flight 9.1k writes/s, 2 7.4k, 1 10.7k.
   * A lagging follower still gets up to LKVNET_APPEND_MAX_BYTES per
   * round trip, and a snapshot when it is past the log's base. */
  c.max_inflight = 1;
  c.storage.ctx = s;
  c.storage.snapshot = st_snapshot;
  c.storage.last_index = st_last_index;
  c.storage.term = st_term;
  c.storage.entries = st_entries;
  c.hs.term = s->term;
  c.hs.vote = s->vote;
  /* a node with an unfinished install has a partial engine: the core is
   * told it applied through the log's base (its REQUIRES), and the driver
   * applies nothing until a snapshot is installed (raftnode.c) */
  c.applied = s->needs_snapshot ? base : s->applied_index;
  if (c.applied < base) c.applied = base;
  c.hs.commit = c.applied;
  /* a node that joins has no founding voters: it learns its
   * configuration from the leader's log or snapshot */
  for (i = 0; !s->joining && i < s->nnodes && i < LKVNET_RAFT_MAX_MEMBERS; i++)
    c.bootstrap.voters[c.bootstrap.n_voters++] = s->node_ids[i];
  if (s->nnodes > LKVNET_RAFT_MAX_MEMBERS)
    return lkv_seterr(err, LKV_INVALID, "%zu nodes; Raft takes at most %d",
                      s->nnodes, LKVNET_RAFT_MAX_MEMBERS);
  return lkvnet_raft_new(&c, &s->raft, err);
}

/* }====================================================================== */
