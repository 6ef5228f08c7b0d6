/* raft_sim_test.c - a deterministic simulation of the real Raft core
 * (raft.h): 3- and 5-node clusters on a simulated network, disk and clock,
 * all driven by one seed, after FoundationDB's and TigerBeetle's
 * simulators. Each seed injects message loss, duplicates, reordering and
 * delays, partitions (asymmetric ones too), crashes that lose whatever a
 * node had not fsync'ed, restarts, leadership transfers and membership
 * changes, while clients write and read (ReadIndex) a small key-value
 * state machine. After every step it checks election safety, log
 * matching, leader completeness, state-machine safety and the driver
 * contract (nothing sent before the state it depends on is durable); at
 * the end, that no acknowledged write was lost and that the history is
 * linearizable (a WGL search per key), then two probes: a follower cut off
 * and brought back must not depose the leader (Pre-Vote), and a leader
 * cut off must step down (CheckQuorum) without confirming a read.
 *
 *   build/test/net/raft_sim_test              the default seeds (short)
 *   SIM_SEEDS=N build/test/net/raft_sim_test  N seeds from SIM_START (1)
 *   SIM_SEED=S build/test/net/raft_sim_test   replay seed S exactly
 *   SIM_SCENARIO=figure8 SIM_SEED=S ...       replay one scripted scenario
 *   SIM_SCENARIOS=0 ...                       random seeds only
 *   SIM_VERBOSE=1 (2: every message) ...      trace every event
 *
 * A failing seed prints itself and the command that replays it.
 * docs/raft_core.md lists the bugs planted to show the checks bite. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "raft.h"
#include "rng.h"

#define MAXN 9 /* node slots: ids 1..MAXN, never reused */
#define NK 4   /* keys of the state machine */
#define NC 4   /* clients */
#define MAX_OPS                                     \
  240 /* client operations per seed: the WGL search \
         stays small */
#define MAX_PENDING 64
#define DEFAULT_SEEDS 500
#define SCENARIO_SEEDS 8 /* each scripted scenario, under varied timing */
#define INF UINT64_MAX
#define MS 1000ull /* the clock counts microseconds */

/* {======================================================================
** Memory for one seed, freed at its end: message copies and entry bytes
** are immutable once made, so logs and copies share them
** ======================================================================= */

typedef struct chunk {
  struct chunk *next;
  size_t used, cap;
  unsigned char mem[];
} chunk;

static chunk *g_chunks;

static void *salloc(size_t n) {
  n = (n + 15u) & ~(size_t)15u;
  if (n == 0) n = 16;
  if (!g_chunks || g_chunks->cap - g_chunks->used < n) {
    size_t cap = n > (1u << 20) ? n : (1u << 20);
    chunk *c = malloc(sizeof(*c) + cap);
    if (!c) {
      fprintf(stderr, "raft_sim: out of memory\n");
      exit(2);
    }
    c->next = g_chunks;
    c->used = 0;
    c->cap = cap;
    g_chunks = c;
  }
  void *p = g_chunks->mem + g_chunks->used;
  g_chunks->used += n;
  return p;
}

static void sfree_all(void) {
  while (g_chunks) {
    chunk *n = g_chunks->next;
    free(g_chunks);
    g_chunks = n;
  }
}

static void *xrealloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  if (!q) {
    fprintf(stderr, "raft_sim: out of memory\n");
    exit(2);
  }
  return q;
}

/* {======================================================================
** The simulated disk: a log of entries with a chained hash per entry (the
** hash of everything up to it), so comparing two logs' prefixes is one
** comparison
** ======================================================================= */

typedef struct sent {
  uint64_t term, index, chain;
  int type;
  const unsigned char *data;
  size_t len;
} sent;

typedef struct slog {
  uint64_t snap_index, snap_term, snap_chain;
  lkvnet_raft_conf snap_conf;
  sent *e;
  size_t n, cap;
} slog;

static uint64_t slog_last(const slog *l) { return l->snap_index + l->n; }

static const sent *slog_at(const slog *l, uint64_t i) {
  if (i <= l->snap_index || i > slog_last(l)) return NULL;
  return &l->e[i - l->snap_index - 1];
}

static uint64_t slog_chain(const slog *l, uint64_t i) {
  if (i == l->snap_index) return l->snap_chain;
  const sent *e = slog_at(l, i);
  return e ? e->chain : 0;
}

static uint64_t slog_term(const slog *l, uint64_t i) {
  if (i == l->snap_index) return l->snap_term;
  const sent *e = slog_at(l, i);
  return e ? e->term : 0;
}

static void slog_copy(slog *dst, const slog *src) {
  sent *e = dst->e;
  size_t cap = dst->cap;
  if (cap < src->n) {
    cap = src->n + 64;
    e = xrealloc(e, cap * sizeof(*e));
  }
  *dst = *src;
  dst->e = e;
  dst->cap = cap;
  if (src->n) memcpy(dst->e, src->e, src->n * sizeof(*e));
}

static void slog_push(slog *l, const sent *s) {
  if (l->n == l->cap) {
    l->cap = l->cap ? l->cap * 2 : 64;
    l->e = xrealloc(l->e, l->cap * sizeof(*l->e));
  }
  l->e[l->n++] = *s;
}

static void slog_compact(slog *l, uint64_t index,
                         const lkvnet_raft_conf *conf) {
  if (index <= l->snap_index) return;
  uint64_t term = slog_term(l, index), chain = slog_chain(l, index);
  size_t drop = (size_t)(index - l->snap_index);
  if (drop > l->n) drop = l->n;
  memmove(l->e, l->e + drop, (l->n - drop) * sizeof(*l->e));
  l->n -= drop;
  l->snap_index = index;
  l->snap_term = term;
  l->snap_chain = chain;
  l->snap_conf = *conf;
}

static uint64_t mix(uint64_t x) { return lkv_mix64(x); }

static uint64_t hash_bytes(const unsigned char *p, size_t n) {
  uint64_t h = 0x243f6a8885a308d3ull ^ n;
  for (size_t i = 0; i < n; i++) h = mix(h ^ p[i]);
  return h;
}

static uint64_t chain_next(uint64_t prev, uint64_t term, int type,
                           const unsigned char *d, size_t n) {
  return mix(prev ^ mix(term * 31u + (uint64_t)type) ^ hash_bytes(d, n)) | 1u;
}

#define CHAIN0 0x5eed5eed5eed5eedull /* the chain "before index 1" */

/* {======================================================================
** The world
** ======================================================================= */

enum { OP_PENDING, OP_OK, OP_FAILED, OP_UNKNOWN, OP_ABANDONED };

typedef struct sop {
  int client, node, key, write, status;
  uint64_t value; /* written (the op's id), or read */
  uint64_t invoke, resp;
  uint64_t index, term; /* a write's entry; a read's index once ok */
  int confirmed;        /* a read released by ReadIndex */
} sop;

typedef struct snode {
  int exists, up, founding, epoch, restarts;
  lkvnet_raft *core;
  slog W, D; /* written (readable) and durable */
  lkvnet_raft_hardstate hs_w, hs_d;
  uint64_t snap_kv[NK];     /* the snapshot's state, durable */
  uint64_t kv[NK], applied; /* the state machine (memory) */
  lkvnet_raft_conf sm_conf; /* the configuration as of applied */
  int fsync_pending, unsynced;
  slog F; /* what the fsync under way covers */
  lkvnet_raft_hardstate hs_f;
  int slow_disk; /* fsyncs of 2..40 ms, not 0.2..4 */
  uint64_t tick_us;
  uint64_t bad_conflicts; /* counted over every incarnation */
  /* a snapshot received with a MSG_SNAP, for the install it may ask */
  int stash;
  uint64_t st_index, st_term, st_chain, st_kv[NK];
  int pend[MAX_PENDING]; /* client ops waiting on this node */
  int n_pend;
} snode;

typedef struct smsg { /* a message in flight, deep-copied */
  lkvnet_raft_msg m;
  lkvnet_raft_conf conf;
  uint64_t snap_chain, snap_kv[NK];
} smsg;

enum {
  EV_DELIVER,
  EV_TICK,
  EV_FSYNC,
  EV_CLIENT,
  EV_OPTIMEOUT,
  EV_FAULT,
  EV_RESTART,
  EV_HEAL,
  EV_NET
};

typedef struct ev {
  uint64_t t, seq;
  int type, a, epoch;
  void *p;
} ev;

typedef struct client {
  int op; /* in flight, or -1 */
  int guess;
} client;

static struct sim {
  uint64_t seed, rng, now, seq;
  int verbose, failed;
  char why[600];
  /* drawn per seed */
  int n_init, et, hb;
  uint64_t tick_us;
  int compact_every;
  size_t max_msg, max_infl, max_apply;
  int f_crash, f_part, f_net, f_transfer, f_member, f_partial;
  double p_slow;
  /* the network */
  int block[MAXN + 1][MAXN + 1];
  double drop, dup, p_long;
  uint64_t dmin, dmax;
  /* nodes, events, clients */
  snode nodes[MAXN + 1];
  ev *heap;
  size_t n_heap, cap_heap;
  client cl[NC];
  sop ops[MAX_OPS];
  int n_ops;
  int clients_on, faults_on;
  int probe_read; /* a read asked of an isolated leader */
  uint64_t probe_ctx;
  /* what the checks remember */
  uint64_t *leader_of; /* term -> leader id (election safety) */
  size_t n_leader_of;
  uint64_t *lm_key_i, *lm_key_t, *lm_val; /* (index, term) -> chain */
  size_t lm_cap, lm_n;
  uint64_t *cchain; /* index -> chain of the committed entry (0: unknown) */
  size_t n_cchain;
  uint64_t max_commit;
  uint64_t *op_index; /* op id -> the index it was applied at */
  uint64_t stats_msgs, stats_events;
} S;

/* What the seeds exercised, summed: a run that passes while exercising
 * nothing proves nothing, so the summary shows it. */
static struct totals {
  uint64_t events, msgs, ops, writes_ok, writes_unknown, writes_failed,
      reads_ok, installs, crashes, partitions, leaders, transfers, conf_changes,
      elections, prevotes, read_rounds, quorum_lost, lin_states;
} G;

static void failf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void failf(const char *fmt, ...) {
  if (S.failed) return;
  S.failed = 1;
  va_list ap;
  va_start(ap, fmt);
  int k = snprintf(S.why, sizeof(S.why),
                   "t=%" PRIu64 ".%03" PRIu64 "s: ", S.now / 1000000,
                   (S.now / 1000) % 1000);
  vsnprintf(S.why + k, sizeof(S.why) - (size_t)k, fmt, ap);
  va_end(ap);
}

#define TRACE(...)                           \
  do {                                       \
    if (S.verbose) {                         \
      printf("%8.3f ", (double)S.now / 1e6); \
      printf(__VA_ARGS__);                   \
      printf("\n");                          \
    }                                        \
  } while (0)

static uint64_t rnd(void) { return lkv_splitmix64(&S.rng); }
static uint64_t rndn(uint64_t n) { return n ? rnd() % n : 0; }
static uint64_t rndr(uint64_t lo, uint64_t hi) {
  return lo + rndn(hi - lo + 1);
}
static int chance(double p) {
  return (double)(rnd() >> 11) * (1.0 / 9007199254740992.0) < p;
}

/* ---- events: a binary heap on (time, sequence), so equal times keep
 * the order they were scheduled in and every run is the same ---- */

static int ev_less(const ev *a, const ev *b) {
  return a->t < b->t || (a->t == b->t && a->seq < b->seq);
}

static void schedule(uint64_t t, int type, int a, int epoch, void *p) {
  if (S.n_heap == S.cap_heap) {
    S.cap_heap = S.cap_heap ? S.cap_heap * 2 : 1024;
    S.heap = xrealloc(S.heap, S.cap_heap * sizeof(*S.heap));
  }
  size_t i = S.n_heap++;
  S.heap[i] = (ev){t, S.seq++, type, a, epoch, p};
  while (i && ev_less(&S.heap[i], &S.heap[(i - 1) / 2])) {
    ev x = S.heap[i];
    S.heap[i] = S.heap[(i - 1) / 2];
    S.heap[(i - 1) / 2] = x;
    i = (i - 1) / 2;
  }
}

static ev pop_event(void) {
  ev top = S.heap[0];
  S.heap[0] = S.heap[--S.n_heap];
  size_t i = 0;
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    if (l < S.n_heap && ev_less(&S.heap[l], &S.heap[m])) m = l;
    if (r < S.n_heap && ev_less(&S.heap[r], &S.heap[m])) m = r;
    if (m == i) break;
    ev x = S.heap[i];
    S.heap[i] = S.heap[m];
    S.heap[m] = x;
    i = m;
  }
  return top;
}

/* {======================================================================
** The checks that run after every step
** ======================================================================= */

/* Election safety: at most one leader per term, over all time. */
static void check_leader(int id, uint64_t term) {
  if (term >= S.n_leader_of) {
    size_t n = (size_t)term * 2 + 16;
    S.leader_of = xrealloc(S.leader_of, n * sizeof(*S.leader_of));
    memset(S.leader_of + S.n_leader_of, 0,
           (n - S.n_leader_of) * sizeof(*S.leader_of));
    S.n_leader_of = n;
  }
  if (S.leader_of[term] == 0) {
    S.leader_of[term] = (uint64_t)id;
    G.leaders++;
    lkvnet_raft_status st;
    lkvnet_raft_status_get(S.nodes[id].core, &st);
    if (!st.voter)
      failf("n%d leads term %" PRIu64
            " without being a voter of its "
            "configuration",
            id, term);
    TRACE("n%d leads term %" PRIu64, id, term);
    /* leader completeness: every entry committed so far is in the new
     * leader's log (its chain at the highest commit is the same) */
    snode *n = &S.nodes[id];
    uint64_t c = S.max_commit;
    if (c > n->W.snap_index) {
      uint64_t ch = slog_chain(&n->W, c);
      if (ch != S.cchain[c])
        failf("leader completeness: n%d leads term %" PRIu64
              " without committed entry %" PRIu64 " (its last %" PRIu64 ")",
              id, term, c, slog_last(&n->W));
    }
  } else if (S.leader_of[term] != (uint64_t)id) {
    failf("election safety: n%d and n%" PRIu64 " both lead term %" PRIu64, id,
          S.leader_of[term], term);
  }
}

/* Log matching, checked where entries are written: two entries with the
 * same index and term anywhere, ever, must have the same prefix. */
static void lm_insert(uint64_t i, uint64_t t, uint64_t chain, int id) {
  if (S.lm_n * 2 >= S.lm_cap) {
    size_t oc = S.lm_cap, nc = oc ? oc * 2 : 4096;
    uint64_t *ki = calloc(nc, 8), *kt = calloc(nc, 8), *kv = calloc(nc, 8);
    if (!ki || !kt || !kv) exit(2);
    for (size_t j = 0; j < oc; j++) {
      if (!S.lm_key_i[j]) continue;
      size_t h =
          mix(S.lm_key_i[j] * 0x9e3779b97f4a7c15ull ^ S.lm_key_t[j]) & (nc - 1);
      while (ki[h]) h = (h + 1) & (nc - 1);
      ki[h] = S.lm_key_i[j];
      kt[h] = S.lm_key_t[j];
      kv[h] = S.lm_val[j];
    }
    free(S.lm_key_i);
    free(S.lm_key_t);
    free(S.lm_val);
    S.lm_key_i = ki;
    S.lm_key_t = kt;
    S.lm_val = kv;
    S.lm_cap = nc;
  }
  size_t h = mix(i * 0x9e3779b97f4a7c15ull ^ t) & (S.lm_cap - 1);
  while (S.lm_key_i[h]) {
    if (S.lm_key_i[h] == i && S.lm_key_t[h] == t) {
      if (S.lm_val[h] != chain)
        failf("log matching: n%d's entry %" PRIu64 " of term %" PRIu64
              " has another history than one written before",
              id, i, t);
      return;
    }
    h = (h + 1) & (S.lm_cap - 1);
  }
  S.lm_key_i[h] = i;
  S.lm_key_t[h] = t;
  S.lm_val[h] = chain;
  S.lm_n++;
}

static void cchain_grow(uint64_t i) {
  if (i < S.n_cchain) return;
  size_t n = (size_t)i * 2 + 64;
  S.cchain = xrealloc(S.cchain, n * sizeof(*S.cchain));
  memset(S.cchain + S.n_cchain, 0, (n - S.n_cchain) * sizeof(*S.cchain));
  S.op_index = xrealloc(S.op_index, n * sizeof(*S.op_index));
  memset(S.op_index + S.n_cchain, 0, (n - S.n_cchain) * sizeof(*S.op_index));
  S.n_cchain = n;
}

/* A node's commit index says its log through it is committed: it must
 * agree with every other node's committed prefix (state-machine safety
 * at the log) and it extends what later leaders must hold. */
static void note_commit(int id, uint64_t c) {
  snode *n = &S.nodes[id];
  if (c <= n->W.snap_index) return;
  if (c > slog_last(&n->W)) {
    failf("n%d's commit index %" PRIu64 " is past its log (%" PRIu64 ")", id, c,
          slog_last(&n->W));
    return;
  }
  cchain_grow(c);
  uint64_t ch = slog_chain(&n->W, c);
  if (S.cchain[c] && S.cchain[c] != ch) {
    failf("state machine safety: n%d committed another entry %" PRIu64
          " than was committed before",
          id, c);
    return;
  }
  if (c > S.max_commit) {
    for (uint64_t i = c; i > S.max_commit && i > n->W.snap_index; i--) {
      uint64_t x = slog_chain(&n->W, i);
      if (S.cchain[i] && S.cchain[i] != x) {
        failf("state machine safety: n%d's committed entry %" PRIu64
              " differs from one committed before",
              id, i);
        return;
      }
      S.cchain[i] = x;
    }
    S.max_commit = c;
  } else {
    S.cchain[c] = ch;
  }
}

/* {======================================================================
** The driver: storage callbacks, persistence, the Ready loop
** ======================================================================= */

static void st_snapshot(void *ctx, uint64_t *index, uint64_t *term,
                        lkvnet_raft_conf *conf) {
  snode *n = ctx;
  *index = n->W.snap_index;
  *term = n->W.snap_term;
  *conf = n->W.snap_conf;
}

static uint64_t st_last(void *ctx) { return slog_last(&((snode *)ctx)->W); }

static int st_term(void *ctx, uint64_t index, uint64_t *term) {
  snode *n = ctx;
  if (index == n->W.snap_index) {
    *term = n->W.snap_term;
    return LKV_OK;
  }
  const sent *e = slog_at(&n->W, index);
  if (!e) return LKV_NOTFOUND;
  *term = e->term;
  return LKV_OK;
}

static int st_entries(void *ctx, uint64_t lo, uint64_t hi,
                      int (*emit)(void *, const lkvnet_raft_entry *),
                      void *arg) {
  snode *n = ctx;
  if (lo <= n->W.snap_index) return LKV_NOTFOUND;
  for (uint64_t i = lo; i < hi; i++) {
    const sent *e = slog_at(&n->W, i);
    if (!e) return LKV_NOTFOUND;
    lkvnet_raft_entry x = {e->term, e->index, e->type, e->data, e->len};
    if (emit(arg, &x)) break;
  }
  return LKV_OK;
}

static int id_of(const snode *n) { return (int)(n - S.nodes); }

static lkvnet_raft_conf initial_conf(void) {
  lkvnet_raft_conf c;
  memset(&c, 0, sizeof(c));
  for (int i = 1; i <= S.n_init; i++) c.voters[c.n_voters++] = (uint64_t)i;
  return c;
}

static void drive(int id);

static void node_start(int id) {
  snode *n = &S.nodes[id];
  lkvnet_raft_config c;
  lkvnet_raft_config_init(&c);
  c.id = (uint64_t)id;
  c.election_ticks = S.et;
  c.heartbeat_ticks = S.hb;
  c.seed = S.seed * 1000003u + (uint64_t)n->restarts;
  c.campaign_first = id == 1;
  c.max_msg_bytes = S.max_msg;
  c.max_inflight = S.max_infl;
  c.max_apply_bytes = S.max_apply;
  c.storage =
      (lkvnet_raft_storage){n, st_snapshot, st_last, st_term, st_entries};
  c.hs = n->hs_d;
  c.applied = n->W.snap_index;
  if (n->founding) c.bootstrap = initial_conf();
  memcpy(n->kv, n->snap_kv, sizeof(n->kv));
  n->applied = n->W.snap_index;
  if (n->W.snap_index)
    n->sm_conf = n->W.snap_conf;
  else
    n->sm_conf = c.bootstrap;
  lkv_err err;
  if (lkvnet_raft_new(&c, &n->core, &err) != LKV_OK) {
    failf("n%d: lkvnet_raft_new: %s", id, err.msg);
    return;
  }
  n->exists = n->up = 1;
  n->epoch++;
  n->fsync_pending = 0;
  n->stash = 0;
  TRACE("n%d starts (incarnation %d, log %" PRIu64 "..%" PRIu64
        ", term %" PRIu64 ")",
        id, n->restarts, n->W.snap_index, slog_last(&n->W), n->hs_d.term);
  schedule(S.now + rndn(n->tick_us) + 1, EV_TICK, id, n->epoch, NULL);
}

static void op_finish(int o, int status) {
  sop *op = &S.ops[o];
  if (op->status != OP_PENDING) return;
  op->status = status;
  op->resp = status == OP_OK ? S.now : INF;
  snode *n = &S.nodes[op->node];
  for (int i = 0; i < n->n_pend; i++) {
    if (n->pend[i] != o) continue;
    n->pend[i] = n->pend[--n->n_pend];
    break;
  }
  client *c = &S.cl[op->client];
  if (c->op == o) {
    c->op = -1;
    schedule(S.now + rndr(1 * MS, 30 * MS), EV_CLIENT, op->client, 0, NULL);
  }
  TRACE("op %d (%s k%d) -> %s", o, op->write ? "write" : "read", op->key,
        status == OP_OK       ? "ok"
        : status == OP_FAILED ? "failed"
                              : "unknown");
}

static void count_core(const lkvnet_raft_status *st) {
  G.transfers += st->counters.transfers;
  G.elections += st->counters.elections_started;
  G.prevotes += st->counters.prevote_rounds;
  G.read_rounds += st->counters.read_index_rounds;
  G.quorum_lost += st->counters.quorum_lost;
}

static void node_crash(int id) {
  snode *n = &S.nodes[id];
  if (!n->up) return;
  lkvnet_raft_status st;
  lkvnet_raft_status_get(n->core, &st);
  n->bad_conflicts += st.counters.bad_conflicts;
  count_core(&st);
  G.crashes++;
  lkvnet_raft_free(n->core);
  n->core = NULL;
  n->up = 0;
  n->epoch++;
  /* The disk keeps what was synced; with f_partial the page cache may
   * also have flushed part of what was not: a prefix of the written log
   * past the durable one (never a mix of the two). */
  if (S.f_partial && chance(0.3) && n->W.snap_index == n->D.snap_index) {
    uint64_t common = n->D.snap_index;
    uint64_t dl = slog_last(&n->D), wl = slog_last(&n->W);
    while (common < dl && common < wl &&
           slog_chain(&n->D, common + 1) == slog_chain(&n->W, common + 1))
      common++;
    /* entries past the common prefix on disk only are a cut tail of an
     * older term: the core lowered its durable index below them */
    n->W.n = (size_t)(rndr(common, wl) - n->W.snap_index);
    slog_copy(&n->D, &n->W);
  }
  slog_copy(&n->W, &n->D);
  n->hs_w = n->hs_d;
  n->restarts++;
  /* the clients waiting on it learn nothing more */
  while (n->n_pend) {
    int o = n->pend[0];
    op_finish(o, S.ops[o].write ? OP_UNKNOWN : OP_ABANDONED);
  }
  TRACE("n%d crashes (durable log %" PRIu64 "..%" PRIu64 ", term %" PRIu64 ")",
        id, n->D.snap_index, slog_last(&n->D), n->hs_d.term);
}

static void compact(snode *n) {
  if (n->applied - n->W.snap_index < (uint64_t)S.compact_every) return;
  uint64_t a = n->applied;
  if (a > slog_last(&n->D) || slog_chain(&n->D, a) != slog_chain(&n->W, a)) {
    failf("n%d applied %" PRIu64 " past its durable log", id_of(n), a);
    return;
  }
  slog_compact(&n->W, a, &n->sm_conf);
  slog_compact(&n->D, a, &n->sm_conf);
  if (n->fsync_pending) slog_compact(&n->F, a, &n->sm_conf);
  memcpy(n->snap_kv, n->kv, sizeof(n->kv));
}

static void apply_entry(snode *n, const lkvnet_raft_entry *e) {
  int id = id_of(n);
  if (e->index != n->applied + 1) {
    failf("n%d applies %" PRIu64 " after %" PRIu64, id, e->index, n->applied);
    return;
  }
  const sent *w = slog_at(&n->W, e->index);
  if (!w || w->term != e->term) {
    failf("n%d applies %" PRIu64 " that its log does not hold", id, e->index);
    return;
  }
  /* state-machine safety: the same entry at this index on every node */
  cchain_grow(e->index);
  if (S.cchain[e->index] && S.cchain[e->index] != w->chain) {
    failf("state machine safety: n%d applies another entry at %" PRIu64, id,
          e->index);
    return;
  }
  if (!S.cchain[e->index] && e->type == LKVNET_RAFT_ENTRY_CONF)
    G.conf_changes++;
  S.cchain[e->index] = w->chain;
  if (e->index > S.max_commit) note_commit(id, e->index);
  n->applied = e->index;
  if (e->type == LKVNET_RAFT_ENTRY_NORMAL && e->len == 17) {
    uint64_t opid, val;
    memcpy(&opid, e->data, 8);
    memcpy(&val, e->data + 9, 8);
    n->kv[e->data[8] % NK] = val;
    if (opid >= 1 && opid <= MAX_OPS) {
      uint64_t *oi = &S.op_index[opid];
      if (*oi && *oi != e->index)
        failf("op %" PRIu64 " applied at %" PRIu64 " and %" PRIu64, opid, *oi,
              e->index);
      *oi = e->index;
    }
  } else if (e->type == LKVNET_RAFT_ENTRY_CONF) {
    lkvnet_raft_confchange cc;
    lkv_err err;
    if (lkvnet_raft_conf_decode(e->data, e->len, &cc, &err) != LKV_OK)
      failf("n%d: a committed CONF entry does not decode: %s", id, err.msg);
    else
      n->sm_conf = cc.conf;
  }
  /* clients waiting: the write at this index, reads up to it */
  for (int i = 0; i < n->n_pend;) {
    sop *op = &S.ops[n->pend[i]];
    int o = n->pend[i];
    if (op->write && op->index == e->index) {
      op_finish(o, op->term == e->term ? OP_OK : OP_FAILED);
      continue;
    }
    if (!op->write && op->confirmed && op->index <= n->applied) {
      op->value = n->kv[op->key];
      op_finish(o, OP_OK);
      continue;
    }
    i++;
  }
}

static void net_send(int from, const lkvnet_raft_msg *m);
static void dump_nodes(void);

/* The contract (raft.h, 3 and 4), checked on each message as it leaves:
 * the state it depends on is on this node's disk. */
static void check_send(snode *n, const lkvnet_raft_msg *m) {
  int id = id_of(n);
  int pre = m->type == LKVNET_RAFT_MSG_PREVOTE ||
            m->type == LKVNET_RAFT_MSG_PREVOTE_RESP;
  if (!pre && m->term > n->hs_d.term)
    failf("contract: n%d sends a message of term %" PRIu64 " with term %" PRIu64
          " on disk",
          id, m->term, n->hs_d.term);
  if (m->type == LKVNET_RAFT_MSG_VOTE &&
      (n->hs_d.vote != (uint64_t)id || n->hs_d.term != m->term))
    failf("contract: n%d asks for votes in term %" PRIu64
          " before its own vote is on disk",
          id, m->term);
  if (m->type == LKVNET_RAFT_MSG_VOTE_RESP && !m->reject &&
      (n->hs_d.vote != m->to || n->hs_d.term != m->term))
    failf("contract: n%d grants its vote of term %" PRIu64 " to n%" PRIu64
          " with vote n%" PRIu64 " term %" PRIu64 " on disk",
          id, m->term, m->to, n->hs_d.vote, n->hs_d.term);
  if (m->type == LKVNET_RAFT_MSG_APP_RESP && !m->reject &&
      m->index > n->D.snap_index &&
      (m->index > slog_last(&n->D) ||
       slog_chain(&n->D, m->index) != slog_chain(&n->W, m->index)))
    failf("contract: n%d acknowledges entry %" PRIu64
          " that is not on its disk (durable through %" PRIu64 ")",
          id, m->index, slog_last(&n->D));
}

static void handle_ready(snode *n, const lkvnet_raft_ready *rd) {
  int id = id_of(n);
  if (rd->role == LKVNET_RAFT_LEADER) check_leader(id, rd->hs.term);
  /* a: the snapshot, installed durably */
  if (rd->has_snapshot) {
    if (!n->stash || n->st_index != rd->snap_index ||
        n->st_term != rd->snap_term) {
      failf("n%d is asked to install a snapshot at %" PRIu64
            " it never received",
            id, rd->snap_index);
      return;
    }
    if (rd->snap_index <= n->applied) {
      failf("n%d is asked to install snapshot %" PRIu64
            " behind applied %" PRIu64,
            id, rd->snap_index, n->applied);
      return;
    }
    n->W.n = 0;
    n->W.snap_index = rd->snap_index;
    n->W.snap_term = rd->snap_term;
    n->W.snap_chain = n->st_chain;
    n->W.snap_conf = rd->snap_conf;
    slog_copy(&n->D, &n->W);
    if (n->fsync_pending) slog_copy(&n->F, &n->W); /* it covers nothing new */
    memcpy(n->snap_kv, n->st_kv, sizeof(n->kv));
    memcpy(n->kv, n->st_kv, sizeof(n->kv));
    n->applied = rd->snap_index;
    n->sm_conf = rd->snap_conf;
    cchain_grow(rd->snap_index);
    if (S.cchain[rd->snap_index] && S.cchain[rd->snap_index] != n->st_chain)
      failf("n%d installs a snapshot at %" PRIu64 " unlike what was committed",
            id, rd->snap_index);
    G.installs++;
    TRACE("n%d installs snapshot %" PRIu64 "/%" PRIu64, id, rd->snap_index,
          rd->snap_term);
  }
  /* b: entries, cut first where they overlap */
  if (rd->n_entries) {
    uint64_t first = rd->entries[0].index, last = slog_last(&n->W);
    if (first > last + 1 || first <= n->W.snap_index) {
      failf("n%d is given entries from %" PRIu64 " for a log %" PRIu64
            "..%" PRIu64,
            id, first, n->W.snap_index, last);
      return;
    }
    if (first <= n->applied) {
      failf("n%d is told to cut applied entry %" PRIu64, id, first);
      return;
    }
    n->W.n = (size_t)(first - 1 - n->W.snap_index);
    uint64_t prev = slog_chain(&n->W, first - 1);
    for (size_t i = 0; i < rd->n_entries; i++) {
      const lkvnet_raft_entry *e = &rd->entries[i];
      unsigned char *d = NULL;
      if (e->len) {
        d = salloc(e->len);
        memcpy(d, e->data, e->len);
      }
      sent s = {e->term, e->index, 0, e->type, d, e->len};
      s.chain = prev = chain_next(prev, e->term, e->type, d, e->len);
      slog_push(&n->W, &s);
      lm_insert(e->index, e->term, s.chain, id);
    }
    n->unsynced = 1;
  }
  /* c: the hard state; synced now when messages depend on it */
  if (rd->hs_changed) {
    if (rd->hs.term < n->hs_w.term)
      failf("n%d's term goes back from %" PRIu64 " to %" PRIu64, id,
            n->hs_w.term, rd->hs.term);
    if (rd->hs.term == n->hs_d.term && n->hs_d.vote &&
        rd->hs.vote != n->hs_d.vote)
      failf("n%d changes its vote in term %" PRIu64 " from n%" PRIu64
            " to n%" PRIu64,
            id, rd->hs.term, n->hs_d.vote, rd->hs.vote);
    n->hs_w = rd->hs;
    if (rd->must_sync)
      n->hs_d = rd->hs;
    else
      n->unsynced = 1;
  }
  /* d: messages */
  for (size_t i = 0; i < rd->n_msgs; i++) {
    check_send(n, &rd->msgs[i]);
    net_send(id, &rd->msgs[i]);
  }
  /* e: committed entries */
  for (size_t i = 0; i < rd->n_committed && !S.failed; i++)
    apply_entry(n, &rd->committed[i]);
  /* f: reads */
  for (size_t i = 0; i < rd->n_reads; i++) {
    const lkvnet_raft_read *r = &rd->reads[i];
    if (S.probe_read && r->ctx == S.probe_ctx && r->ok && !S.failed) {
      dump_nodes();
      failf("n%d, cut off from the others, confirmed a read (index %" PRIu64
            ")",
            id, r->index);
    }
    for (int k = 0; k < n->n_pend; k++) {
      int o = n->pend[k];
      sop *op = &S.ops[o];
      if (op->write || (uint64_t)o + 1 != r->ctx) continue;
      if (!r->ok) {
        op_finish(o, OP_ABANDONED);
      } else {
        op->confirmed = 1;
        op->index = r->index;
        if (n->applied >= r->index) {
          op->value = n->kv[op->key];
          op_finish(o, OP_OK);
        }
      }
      break;
    }
  }
}

static void drive(int id) {
  snode *n = &S.nodes[id];
  int rounds = 0;
  while (n->up && !S.failed && lkvnet_raft_has_ready(n->core)) {
    if (++rounds > 1000) {
      failf("n%d: has_ready stays true", id);
      return;
    }
    lkvnet_raft_ready rd;
    lkvnet_raft_ready_get(n->core, &rd);
    handle_ready(n, &rd);
    lkvnet_raft_advance(n->core);
    compact(n);
  }
  if (!n->up || S.failed) return;
  lkvnet_raft_status st;
  lkvnet_raft_status_get(n->core, &st);
  if (st.last_index != slog_last(&n->W))
    failf("n%d: the core's last index %" PRIu64 " is not the log's %" PRIu64,
          id, st.last_index, slog_last(&n->W));
  if (st.applied != n->applied)
    failf("n%d: the core's applied %" PRIu64
          " is not the state machine's %" PRIu64,
          id, st.applied, n->applied);
  if (st.role == LKVNET_RAFT_LEADER) check_leader(id, st.term);
  note_commit(id, st.commit);
  if (n->unsynced && !n->fsync_pending) {
    /* an fsync covers what was written when it started; the node learns
     * of it when it ends, by then maybe with a cut log (the core must
     * check a report against its own log) */
    n->fsync_pending = 1;
    n->unsynced = 0;
    slog_copy(&n->F, &n->W);
    n->hs_f = n->hs_w;
    uint64_t d = n->slow_disk ? rndr(2 * MS, 40 * MS) : rndr(200, 4000);
    if (chance(0.02)) d += rndr(20 * MS, 150 * MS); /* a stall */
    schedule(S.now + d, EV_FSYNC, id, n->epoch, NULL);
  }
}

/* {======================================================================
** The network
** ======================================================================= */

static smsg *msg_copy(int from, const lkvnet_raft_msg *m) {
  smsg *s = salloc(sizeof(*s));
  memset(s, 0, sizeof(*s));
  s->m = *m;
  if (m->n_entries) {
    lkvnet_raft_entry *es = salloc(m->n_entries * sizeof(*es));
    for (size_t i = 0; i < m->n_entries; i++) {
      es[i] = m->entries[i];
      if (es[i].len) {
        unsigned char *d = salloc(es[i].len);
        memcpy(d, m->entries[i].data, es[i].len);
        es[i].data = d;
      }
    }
    s->m.entries = es;
  } else {
    s->m.entries = NULL;
  }
  s->m.conf = NULL;
  if (m->type == LKVNET_RAFT_MSG_SNAP) {
    /* the driver sends its own latest snapshot, and says so */
    snode *n = &S.nodes[from];
    s->m.index = n->W.snap_index;
    s->m.log_term = n->W.snap_term;
    s->conf = n->W.snap_conf;
    s->m.conf = &s->conf;
    s->snap_chain = n->W.snap_chain;
    memcpy(s->snap_kv, n->snap_kv, sizeof(s->snap_kv));
  }
  return s;
}

static void snap_report(int from, int to, int ok) {
  snode *n = &S.nodes[from];
  if (!n->up) return;
  lkvnet_raft_report_snapshot(n->core, (uint64_t)to, ok);
  drive(from);
}

static void net_send(int from, const lkvnet_raft_msg *m) {
  int to = (int)m->to;
  S.stats_msgs++;
  if (to < 1 || to > MAXN) {
    failf("n%d sends to n%d", from, to);
    return;
  }
  int snap = m->type == LKVNET_RAFT_MSG_SNAP;
  if (S.block[from][to] || chance(S.drop)) {
    if (snap) {
      /* a stream that fails is seen failing by its sender */
      schedule(S.now + rndr(S.dmin, S.dmax), EV_NET, from, to, NULL);
    } else if (m->type == LKVNET_RAFT_MSG_APP && S.block[from][to] &&
               chance(0.3)) {
      snode *n = &S.nodes[from];
      lkvnet_raft_report_unreachable(n->core, (uint64_t)to);
    }
    return;
  }
  smsg *s = msg_copy(from, m);
  int copies = chance(S.dup) ? 2 : 1;
  for (int i = 0; i < copies; i++) {
    uint64_t d = rndr(S.dmin, S.dmax);
    if (chance(S.p_long)) d += rndr(20 * MS, 300 * MS); /* reordered */
    schedule(S.now + d, EV_DELIVER, to, 0, s);
  }
}

static const char *msg_name(int t) {
  static const char *names[] = {
      "?",         "app",     "app_resp",     "hb",   "hb_resp",    "vote",
      "vote_resp", "prevote", "prevote_resp", "snap", "timeout_now"};
  return t >= 1 && t <= 10 ? names[t] : "?";
}

static void deliver(smsg *s) {
  int to = (int)s->m.to, from = (int)s->m.from;
  snode *n = &S.nodes[to];
  if (S.verbose > 1)
    TRACE("  n%d -> n%d %s term %" PRIu64 " index %" PRIu64 " lt %" PRIu64
          " commit %" PRIu64 " n %zu%s%s",
          from, to, msg_name(s->m.type), s->m.term, s->m.index, s->m.log_term,
          s->m.commit, s->m.n_entries, s->m.reject ? " reject" : "",
          !n->up || S.block[from][to] ? " (lost)" : "");
  int snap = s->m.type == LKVNET_RAFT_MSG_SNAP;
  if (!n->up || S.block[from][to]) {
    if (snap) snap_report(from, to, 0);
    return;
  }
  if (snap) {
    n->stash = 1;
    n->st_index = s->m.index;
    n->st_term = s->m.log_term;
    n->st_chain = s->snap_chain;
    memcpy(n->st_kv, s->snap_kv, sizeof(n->st_kv));
  }
  lkvnet_raft_step(n->core, &s->m);
  drive(to);
  n->stash = 0;
  if (snap) snap_report(from, to, 1);
}

static void fsync_done(int id) {
  snode *n = &S.nodes[id];
  n->fsync_pending = 0;
  /* What the fsync covered is on disk now (the log it was taken from
   * may have been cut since: then the disk holds an older tail than W,
   * and the core must not believe the report). Compactions and installs
   * meanwhile were applied to F as well. */
  slog_copy(&n->D, &n->F);
  if (n->hs_f.term > n->hs_d.term ||
      (n->hs_f.term == n->hs_d.term && n->hs_f.commit > n->hs_d.commit))
    n->hs_d = n->hs_f;
  uint64_t l = slog_last(&n->F);
  lkvnet_raft_durable(n->core, l, slog_term(&n->F, l));
  drive(id);
}

/* {======================================================================
** Clients
** ======================================================================= */

static int leader_node(void) {
  int best = 0;
  uint64_t bt = 0;
  for (int i = 1; i <= MAXN; i++) {
    snode *n = &S.nodes[i];
    if (!n->up) continue;
    lkvnet_raft_status st;
    lkvnet_raft_status_get(n->core, &st);
    if (st.role == LKVNET_RAFT_LEADER && st.term >= bt) {
      best = i;
      bt = st.term;
    }
  }
  return best;
}

static int random_up(void) {
  int ids[MAXN], k = 0;
  for (int i = 1; i <= MAXN; i++)
    if (S.nodes[i].up) ids[k++] = i;
  return k ? ids[rndn((uint64_t)k)] : 0;
}

static void client_step(int c) {
  client *cl = &S.cl[c];
  if (!S.clients_on || cl->op >= 0 || S.n_ops >= MAX_OPS) return;
  int id = cl->guess;
  if (id < 1 || !S.nodes[id].up) id = random_up();
  if (!id) {
    schedule(S.now + 20 * MS, EV_CLIENT, c, 0, NULL);
    return;
  }
  snode *n = &S.nodes[id];
  lkvnet_raft_status st;
  lkvnet_raft_status_get(n->core, &st);
  if (st.role != LKVNET_RAFT_LEADER || n->n_pend >= MAX_PENDING) {
    /* what a follower would say: try the leader it knows */
    cl->guess =
        st.leader && st.leader != (uint64_t)id ? (int)st.leader : random_up();
    schedule(S.now + rndr(2 * MS, 20 * MS), EV_CLIENT, c, 0, NULL);
    return;
  }
  int o = S.n_ops;
  sop *op = &S.ops[o];
  memset(op, 0, sizeof(*op));
  op->client = c;
  op->node = id;
  op->key = (int)rndn(NK);
  op->write = chance(0.55);
  op->invoke = S.now;
  op->status = OP_PENDING;
  int rc;
  lkv_err err;
  if (op->write) {
    unsigned char d[17];
    uint64_t opid = (uint64_t)o + 1;
    op->value = opid;
    memcpy(d, &opid, 8);
    d[8] = (unsigned char)op->key;
    memcpy(d + 9, &opid, 8);
    rc =
        lkvnet_raft_propose(n->core, d, sizeof(d), &op->index, &op->term, &err);
  } else {
    rc = lkvnet_raft_read_index(n->core, (uint64_t)o + 1, &err);
  }
  if (rc != LKV_OK) { /* a transfer under way: retry in a moment */
    schedule(S.now + rndr(5 * MS, 30 * MS), EV_CLIENT, c, 0, NULL);
    drive(id);
    return;
  }
  S.n_ops++;
  cl->op = o;
  n->pend[n->n_pend++] = o;
  TRACE("op %d: client %d %s k%d at n%d (index %" PRIu64 ")", o, c,
        op->write ? "writes" : "reads", op->key, id, op->index);
  schedule(S.now + 1500 * MS, EV_OPTIMEOUT, o, 0, NULL);
  drive(id);
}

/* {======================================================================
** Faults
** ======================================================================= */

static void heal(void) { memset(S.block, 0, sizeof(S.block)); }

static void net_profile(int calm) {
  if (calm) {
    S.drop = 0;
    S.dup = 0;
    S.p_long = 0;
    S.dmin = 500;
    S.dmax = 3 * MS;
    return;
  }
  static const double drops[] = {0, 0, 0.01, 0.05, 0.2};
  static const double dups[] = {0, 0.02, 0.1};
  static const uint64_t dmaxs[] = {3 * MS, 15 * MS, 40 * MS};
  S.drop = drops[rndn(5)];
  S.dup = dups[rndn(3)];
  S.p_long = chance(0.5) ? 0.02 : 0;
  S.dmin = 300;
  S.dmax = dmaxs[rndn(3)];
}

static int n_up(void) {
  int k = 0;
  for (int i = 1; i <= MAXN; i++) k += S.nodes[i].up;
  return k;
}

static void partition(void) {
  heal();
  int kind = (int)rndn(4);
  if (kind == 3) { /* the leader and at most one other, away from the rest */
    int l = leader_node(), o = random_up();
    if (!l) l = random_up();
    for (int i = 1; i <= MAXN; i++)
      for (int j = 1; j <= MAXN; j++) {
        int si = i == l || i == o, sj = j == l || j == o;
        S.block[i][j] = si != sj;
      }
    TRACE("partition: n%d and n%d away from the rest", l, o);
    G.partitions++;
  } else if (kind == 0) { /* one node cut off */
    int x = chance(0.5) ? leader_node() : 0;
    if (!x) x = random_up();
    for (int i = 1; i <= MAXN; i++) S.block[x][i] = S.block[i][x] = i != x;
    TRACE("partition: n%d cut off", x);
    G.partitions++;
  } else if (kind == 1) { /* two sides */
    int side[MAXN + 1];
    for (int i = 1; i <= MAXN; i++) side[i] = (int)rndn(2);
    for (int i = 1; i <= MAXN; i++)
      for (int j = 1; j <= MAXN; j++) S.block[i][j] = side[i] != side[j];
    TRACE("partition: two sides");
    G.partitions++;
  } else { /* one-way links: a hears nothing from b, b hears a */
    int k = (int)rndr(1, 4);
    for (int i = 0; i < k; i++) {
      int a = (int)rndr(1, MAXN), b = (int)rndr(1, MAXN);
      if (a != b) S.block[a][b] = 1;
      TRACE("partition: n%d -/-> n%d", a, b);
    }
    G.partitions++;
  }
  schedule(S.now + rndr(100 * MS, 2000 * MS), EV_HEAL, 0, 0, NULL);
}

static void membership(void) {
  int l = leader_node();
  if (!l) return;
  snode *n = &S.nodes[l];
  lkvnet_raft_status st;
  lkvnet_raft_status_get(n->core, &st);
  lkv_err err;
  int rc = LKV_INVALID;
  /* an impatient operator sometimes asks again before the last change
   * committed: the core must refuse */
  if (st.pending_conf_index && chance(0.5)) return;
  /* promote a learner that has caught up */
  for (size_t i = 0; i < st.n_progress; i++) {
    const lkvnet_raft_progress *p = &st.progress[i];
    if (!p->voter && p->match + 2 >= st.commit && p->match > 0) {
      rc = lkvnet_raft_propose_conf(n->core, LKVNET_RAFT_CONF_ADD_VOTER, p->id,
                                    NULL, 0, NULL, NULL, &err);
      TRACE("n%d: promote n%" PRIu64 ": %d", l, p->id, rc);
      drive(l);
      return;
    }
  }
  int spare = 0;
  for (int i = 1; i <= MAXN && !spare; i++)
    if (!S.nodes[i].exists) spare = i;
  size_t members = st.conf.n_voters + st.conf.n_learners;
  if (spare && members < 6 && (st.conf.n_voters <= 3 || chance(0.5))) {
    char url[32];
    int k = snprintf(url, sizeof(url), "http://n%d", spare);
    rc = lkvnet_raft_propose_conf(n->core, LKVNET_RAFT_CONF_ADD_LEARNER,
                                  (uint64_t)spare, url, (size_t)k, NULL, NULL,
                                  &err);
    TRACE("n%d: add learner n%d: %d", l, spare, rc);
    if (rc == LKV_OK) {
      snode *s = &S.nodes[spare];
      s->founding = 0;
      s->tick_us = S.tick_us * rndr(95, 105) / 100;
      s->slow_disk = chance(S.p_slow);
      node_start(spare);
    }
  } else if (st.conf.n_voters > 3 || st.conf.n_learners) {
    uint64_t victim;
    if (st.conf.n_learners && chance(0.3))
      victim = st.conf.learners[rndn(st.conf.n_learners)];
    else if (st.conf.n_voters > 3)
      victim = st.conf.voters[rndn(st.conf.n_voters)];
    else
      return;
    rc = lkvnet_raft_propose_conf(n->core, LKVNET_RAFT_CONF_REMOVE, victim,
                                  NULL, 0, NULL, NULL, &err);
    TRACE("n%d: remove n%" PRIu64 ": %d", l, victim, rc);
  }
  drive(l);
}

static void fault(void) {
  if (!S.faults_on) return;
  int r = (int)rndn(100);
  if (r < 22 && S.f_crash) {
    /* half the crashes hit the leader: that is where elections, lost
     * tails and overwritten entries come from */
    int x = chance(0.5) ? leader_node() : 0;
    if (!x) x = random_up();
    if (x && n_up() > 1) {
      node_crash(x);
      schedule(S.now + rndr(30 * MS, 2000 * MS), EV_RESTART, x, 0, NULL);
    }
  } else if (r < 40 && S.f_part) {
    partition();
  } else if (r < 55 && S.f_net) {
    net_profile(0);
    TRACE("net: drop %.2f dup %.2f delay %" PRIu64 "..%" PRIu64 " us", S.drop,
          S.dup, S.dmin, S.dmax);
  } else if (r < 65 && S.f_transfer) {
    int l = leader_node();
    if (l) {
      lkvnet_raft_status st;
      lkvnet_raft_status_get(S.nodes[l].core, &st);
      uint64_t t = st.conf.voters[rndn(st.conf.n_voters)];
      lkv_err err;
      int rc = lkvnet_raft_transfer(S.nodes[l].core, t, &err);
      TRACE("n%d: transfer to n%" PRIu64 ": %d", l, t, rc);
      (void)rc;
      drive(l);
    }
  } else if (r < 75 && S.f_member) {
    membership();
  }
  schedule(S.now + rndr(50 * MS, 400 * MS), EV_FAULT, 0, 0, NULL);
}

/* {======================================================================
** Running
** ======================================================================= */

static void run_until(uint64_t t_end) {
  while (!S.failed && S.n_heap && S.heap[0].t <= t_end) {
    ev e = pop_event();
    S.now = e.t;
    S.stats_events++;
    snode *n = e.a >= 1 && e.a <= MAXN ? &S.nodes[e.a] : NULL;
    switch (e.type) {
      case EV_DELIVER:
        deliver(e.p);
        break;
      case EV_TICK:
        if (!n->up || n->epoch != e.epoch) break;
        lkvnet_raft_tick(n->core);
        drive(e.a);
        schedule(S.now + n->tick_us, EV_TICK, e.a, n->epoch, NULL);
        break;
      case EV_FSYNC:
        if (n->up && n->epoch == e.epoch) fsync_done(e.a);
        break;
      case EV_CLIENT:
        client_step(e.a);
        break;
      case EV_OPTIMEOUT:
        if (S.ops[e.a].status == OP_PENDING)
          op_finish(e.a, S.ops[e.a].write ? OP_UNKNOWN : OP_ABANDONED);
        break;
      case EV_FAULT:
        fault();
        break;
      case EV_RESTART:
        if (!n->up) node_start(e.a);
        break;
      case EV_HEAL:
        if (S.faults_on) heal();
        break;
      case EV_NET: /* a snapshot stream that failed */
        snap_report(e.a, e.epoch, 0);
        break;
    }
  }
  if (!S.failed && S.now < t_end) S.now = t_end;
}

static int converged(int *leader) {
  int l = leader_node();
  *leader = l;
  if (!l) return 0;
  for (int i = 0; i < NC; i++)
    if (S.cl[i].op >= 0) return 0;
  lkvnet_raft_status ls;
  lkvnet_raft_status_get(S.nodes[l].core, &ls);
  if (ls.commit != ls.last_index || ls.pending_conf_index) return 0;
  for (int i = 1; i <= MAXN; i++) {
    snode *n = &S.nodes[i];
    int member = lkvnet_raft_conf_is_voter(&ls.conf, (uint64_t)i) ||
                 lkvnet_raft_conf_is_learner(&ls.conf, (uint64_t)i);
    if (!member) continue;
    if (!n->up || n->applied != ls.last_index) return 0;
  }
  return 1;
}

/* What each node believes, for a failure that is not one step's. */
static void dump_nodes(void) {
  for (int i = 1; i <= MAXN; i++) {
    snode *n = &S.nodes[i];
    if (!n->exists) continue;
    if (!n->up) {
      fprintf(stderr, "  n%d down\n", i);
      continue;
    }
    lkvnet_raft_status st;
    lkvnet_raft_status_get(n->core, &st);
    fprintf(stderr,
            "  n%d %s term %" PRIu64 " lead %" PRIu64 " commit %" PRIu64
            " applied %" PRIu64 " last %" PRIu64 " durable %" PRIu64
            " voters %zu learners %zu%s%s pending_conf %" PRIu64 "\n",
            i, lkvnet_raft_role_name(st.role), st.term, st.leader, st.commit,
            st.applied, st.last_index, st.durable, st.conf.n_voters,
            st.conf.n_learners, st.voter ? " voter" : "",
            st.learner ? " learner" : "", st.pending_conf_index);
    for (size_t k = 0; k < st.n_progress; k++)
      fprintf(stderr,
              "    -> n%" PRIu64 " %s state %d match %" PRIu64 " next %" PRIu64
              " active %d\n",
              st.progress[k].id, st.progress[k].voter ? "voter" : "learner",
              st.progress[k].state, st.progress[k].match, st.progress[k].next,
              st.progress[k].recent_active);
  }
}

static int run_to_convergence(uint64_t limit, const char *what) {
  uint64_t end = S.now + limit;
  int l = 0;
  while (!S.failed && S.now < end) {
    run_until(S.now + 20 * MS);
    if (converged(&l)) return l;
  }
  if (!S.failed) {
    failf("no convergence within %" PRIu64 " s %s (leader n%d)",
          limit / 1000000, what, l);
    dump_nodes();
  }
  return 0;
}

/* {======================================================================
** Linearizability: Wing & Gong's search with Lowe's memo, per key, on a
** register. A write whose fate is unknown returns at infinity: it may
** take effect at any point after it began, or never.
** ======================================================================= */

typedef struct lop {
  int write;
  uint64_t value, inv, resp;
} lop;

typedef struct lev {
  int op, ret;
  uint64_t t;
  struct lev *prev, *next, *match;
} lev;

static int lev_cmp(const void *a, const void *b) {
  const lev *x = a, *y = b;
  if (x->t != y->t) return x->t < y->t ? -1 : 1;
  if (x->ret != y->ret) return x->ret - y->ret; /* calls first: overlap */
  return x->op - y->op;
}

typedef struct memo {
  uint64_t *bits; /* words per entry, flat */
  uint64_t *state;
  unsigned char *used;
  size_t cap, n, words;
} memo;

static uint64_t memo_hash(const uint64_t *b, size_t w, uint64_t s) {
  uint64_t h = mix(s);
  for (size_t i = 0; i < w; i++) h = mix(h ^ b[i]);
  return h;
}

static int memo_add(memo *m, const uint64_t *b, uint64_t s);

static void memo_grow(memo *m) {
  memo o = *m;
  m->cap = o.cap ? o.cap * 2 : 1024;
  m->n = 0;
  m->bits = calloc(m->cap * m->words, 8);
  m->state = calloc(m->cap, 8);
  m->used = calloc(m->cap, 1);
  if (!m->bits || !m->state || !m->used) exit(2);
  for (size_t i = 0; i < o.cap; i++)
    if (o.used[i]) memo_add(m, o.bits + i * o.words, o.state[i]);
  free(o.bits);
  free(o.state);
  free(o.used);
}

/* 1 when (b, s) was new. */
static int memo_add(memo *m, const uint64_t *b, uint64_t s) {
  if ((m->n + 1) * 2 > m->cap) memo_grow(m);
  size_t h = memo_hash(b, m->words, s) & (m->cap - 1);
  while (m->used[h]) {
    if (m->state[h] == s && !memcmp(m->bits + h * m->words, b, m->words * 8))
      return 0;
    h = (h + 1) & (m->cap - 1);
  }
  m->used[h] = 1;
  m->state[h] = s;
  memcpy(m->bits + h * m->words, b, m->words * 8);
  m->n++;
  return 1;
}

static void lift(lev *e) {
  e->prev->next = e->next;
  if (e->next) e->next->prev = e->prev;
  lev *r = e->match;
  r->prev->next = r->next;
  if (r->next) r->next->prev = r->prev;
}

static void unlift(lev *e) {
  lev *r = e->match;
  r->prev->next = r;
  if (r->next) r->next->prev = r;
  e->prev->next = e;
  if (e->next) e->next->prev = e;
}

/* 1 when the history is linearizable; -1 when the search gave up. */
static int lin_check(const lop *ops, int n, size_t *explored) {
  if (n == 0) return 1;
  lev *evs = calloc((size_t)n * 2 + 1, sizeof(*evs));
  if (!evs) exit(2);
  for (int i = 0; i < n; i++) {
    evs[2 * i] = (lev){i, 0, ops[i].inv, NULL, NULL, NULL};
    evs[2 * i + 1] = (lev){i, 1, ops[i].resp, NULL, NULL, NULL};
  }
  qsort(evs, (size_t)n * 2, sizeof(*evs), lev_cmp);
  lev head = {-1, 0, 0, NULL, NULL, NULL};
  lev *call_of[MAX_OPS], *ret_of[MAX_OPS];
  lev *prev = &head;
  for (int i = 0; i < 2 * n; i++) {
    lev *e = &evs[i];
    e->prev = prev;
    prev->next = e;
    prev = e;
    if (e->ret)
      ret_of[e->op] = e;
    else
      call_of[e->op] = e;
  }
  for (int i = 0; i < n; i++) call_of[i]->match = ret_of[i];
  memo m = {NULL, NULL, NULL, 0, 0, ((size_t)n + 63) / 64};
  uint64_t bits[(MAX_OPS + 63) / 64] = {0};
  struct {
    lev *e;
    uint64_t s;
  } stack[MAX_OPS];
  int sp = 0, ok = 1;
  uint64_t state = 0; /* every key starts absent */
  lev *e = head.next;
  while (head.next) {
    if (m.n > 4000000) {
      ok = -1;
      break;
    }
    if (!e->ret) {
      const lop *o = &ops[e->op];
      int legal = o->write || state == o->value;
      uint64_t ns = o->write ? o->value : state;
      if (legal) {
        bits[e->op / 64] |= 1ull << (e->op % 64);
        if (memo_add(&m, bits, ns)) {
          stack[sp].e = e;
          stack[sp].s = state;
          sp++;
          state = ns;
          lift(e);
          e = head.next;
          continue;
        }
        bits[e->op / 64] &= ~(1ull << (e->op % 64));
      }
      e = e->next;
    } else {
      if (sp == 0) {
        ok = 0;
        break;
      }
      sp--;
      lev *c = stack[sp].e;
      state = stack[sp].s;
      bits[c->op / 64] &= ~(1ull << (c->op % 64));
      unlift(c);
      e = c->next;
    }
  }
  *explored += m.n;
  G.lin_states += m.n;
  free(m.bits);
  free(m.state);
  free(m.used);
  free(evs);
  return ok;
}

static void check_history(void) {
  size_t explored = 0;
  for (int k = 0; k < NK && !S.failed; k++) {
    lop ops[MAX_OPS];
    int n = 0;
    for (int o = 0; o < S.n_ops; o++) {
      const sop *op = &S.ops[o];
      if (op->key != k) continue;
      if (op->status == OP_OK || (op->write && op->status == OP_UNKNOWN))
        ops[n++] = (lop){op->write, op->value, op->invoke, op->resp};
    }
    int rc = lin_check(ops, n, &explored);
    if (rc == 0)
      failf(
          "linearizability: the history of key %d (%d operations) has no "
          "legal order",
          k, n);
    else if (rc < 0)
      failf("linearizability: the search for key %d gave up", k);
  }
}

/* {======================================================================
** The end of a seed: convergence, durability of acknowledgements, the
** history, then the Pre-Vote and CheckQuorum probes
** ======================================================================= */

static void final_checks(int l) {
  lkvnet_raft_status ls;
  lkvnet_raft_status_get(S.nodes[l].core, &ls);
  for (int i = 1; i <= MAXN && !S.failed; i++) {
    snode *n = &S.nodes[i];
    if (!n->up) continue;
    int member = lkvnet_raft_conf_is_voter(&ls.conf, (uint64_t)i) ||
                 lkvnet_raft_conf_is_learner(&ls.conf, (uint64_t)i);
    lkvnet_raft_status st;
    lkvnet_raft_status_get(n->core, &st);
    if (n->bad_conflicts + st.counters.bad_conflicts)
      failf("n%d was sent entries contradicting its committed log", i);
    if (member && memcmp(n->kv, S.nodes[l].kv, sizeof(n->kv)))
      failf("n%d's state differs from the leader n%d's", i, l);
  }
  for (int o = 0; o < S.n_ops && !S.failed; o++) {
    const sop *op = &S.ops[o];
    if (!op->write) continue;
    uint64_t at = (uint64_t)o + 1 < S.n_cchain ? S.op_index[o + 1] : 0;
    if (op->status == OP_OK && at != op->index)
      failf("acknowledged write op %d (index %" PRIu64 ") was lost", o,
            op->index);
    if (op->status == OP_FAILED && at)
      failf("write op %d, answered 'not written', was applied at %" PRIu64, o,
            at);
  }
  if (!S.failed) check_history();
}

static int node_term(int id, int *role, uint64_t *lead) {
  lkvnet_raft_status st;
  lkvnet_raft_status_get(S.nodes[id].core, &st);
  if (role) *role = st.role;
  if (lead) *lead = st.leader;
  return (int)st.term;
}

static void probes(int l) {
  lkvnet_raft_status ls;
  lkvnet_raft_status_get(S.nodes[l].core, &ls);
  if (ls.conf.n_voters < 3) return;
  uint64_t et = (uint64_t)S.et * S.tick_us;
  /* Pre-Vote: a follower cut off keeps its term, and coming back does
   * not depose the leader */
  int f = 0;
  for (size_t i = 0; i < ls.conf.n_voters && !f; i++)
    if (ls.conf.voters[i] != (uint64_t)l) f = (int)ls.conf.voters[i];
  int tf = node_term(f, NULL, NULL), tl = (int)ls.term;
  for (int i = 1; i <= MAXN; i++) S.block[f][i] = S.block[i][f] = 1;
  run_until(S.now + 6 * et);
  int role;
  uint64_t lead;
  if (!S.failed && node_term(f, NULL, NULL) != tf)
    failf("pre-vote: n%d, cut off, went from term %d to %d", f, tf,
          node_term(f, NULL, NULL));
  heal();
  run_until(S.now + 6 * et);
  if (!S.failed &&
      (node_term(l, &role, NULL) != tl || role != LKVNET_RAFT_LEADER))
    failf("pre-vote: n%d's return deposed leader n%d of term %d (now term %d)",
          f, l, tl, node_term(l, NULL, NULL));
  if (!S.failed && (node_term(f, NULL, &lead) != tl || lead != (uint64_t)l))
    failf("pre-vote: n%d did not rejoin leader n%d in term %d", f, l, tl);
  if (S.failed) return;
  /* CheckQuorum: a leader cut off steps down within two election
   * timeouts, and never confirms a read meanwhile */
  for (int i = 1; i <= MAXN; i++) S.block[l][i] = S.block[i][l] = 1;
  S.probe_read = 1;
  S.probe_ctx = 1u << 30;
  lkv_err err;
  if (lkvnet_raft_read_index(S.nodes[l].core, S.probe_ctx, &err) == LKV_OK)
    drive(l);
  run_until(S.now + 3 * et);
  if (!S.failed && S.nodes[l].up) {
    node_term(l, &role, NULL);
    if (role == LKVNET_RAFT_LEADER)
      failf(
          "check quorum: n%d, cut off, still leads after 3 election "
          "timeouts",
          l);
  }
  run_until(S.now + 5 * et);
  int nl = leader_node();
  if (!S.failed && (!nl || nl == l))
    failf("check quorum: no new leader while n%d was cut off", l);
  S.probe_read = 0;
  heal();
  if (!S.failed) l = run_to_convergence(20 * 1000 * MS, "after CheckQuorum");
  if (S.failed) return;
  /* Transfer: the leader refuses writes while it hands over, and a
   * caught-up target leads within an election timeout */
  lkvnet_raft_status_get(S.nodes[l].core, &ls);
  uint64_t t = 0;
  for (size_t i = 0; i < ls.conf.n_voters && !t; i++)
    if (ls.conf.voters[i] != (uint64_t)l) t = ls.conf.voters[i];
  snode *ln = &S.nodes[l];
  int rc = lkvnet_raft_transfer(ln->core, t, &err);
  unsigned char d[17] = {0};
  if (rc == LKV_OK &&
      lkvnet_raft_propose(ln->core, d, sizeof(d), NULL, NULL, &err) != LKV_BUSY)
    failf("transfer: n%d took a write while handing over to n%" PRIu64, l, t);
  if (rc != LKV_OK)
    failf("transfer: n%d refused to hand over to n%" PRIu64 ": %s", l, t,
          err.msg);
  drive(l);
  run_until(S.now + et);
  if (!S.failed && leader_node() != (int)t)
    failf("transfer: n%" PRIu64
          " does not lead an election timeout after "
          "n%d handed over (leader n%d)",
          t, l, leader_node());
  if (!S.failed) l = run_to_convergence(20 * 1000 * MS, "after a transfer");
  if (S.failed) return;
  /* Removing the leader: it commits its removal, hands over, steps
   * down, and the others go on without it */
  ln = &S.nodes[l];
  rc = lkvnet_raft_propose_conf(ln->core, LKVNET_RAFT_CONF_REMOVE, (uint64_t)l,
                                NULL, 0, NULL, NULL, &err);
  if (rc != LKV_OK) {
    failf("remove: n%d refused to remove itself: %s", l, err.msg);
    return;
  }
  drive(l);
  run_until(S.now + 2 * et);
  lkvnet_raft_status_get(ln->core, &ls);
  int nl2 = leader_node();
  if (!S.failed && (ls.role == LKVNET_RAFT_LEADER || ls.voter))
    failf("remove: n%d still %s two election timeouts after removing itself", l,
          ls.voter ? "a voter" : "leads");
  if (!S.failed && (!nl2 || nl2 == l))
    failf("remove: no leader two election timeouts after n%d left", l);
  if (!S.failed) l = run_to_convergence(20 * 1000 * MS, "after a removal");
  if (!S.failed) final_checks(l);
}

static void seed_params(void) {
  S.n_init = chance(0.5) ? 3 : 5;
  S.et = 10;
  S.hb = (int)rndr(1, 3);
  S.tick_us = 10 * MS;
  S.compact_every = (int)rndr(8, 64);
  S.max_msg = (size_t)rndr(40, 400);
  S.max_infl = (size_t)rndr(1, 8);
  S.max_apply = (size_t)rndr(20, 200);
  int profile = (int)rndn(4);
  /* most seeds get everything; some a single kind of fault, so its
   * effects are not drowned by the others */
  S.f_crash = profile != 1 || chance(0.3);
  S.f_part = profile != 2 || chance(0.3);
  S.f_net = 1;
  S.f_transfer = profile != 3 || chance(0.5);
  S.f_member = chance(0.6);
  S.f_partial = chance(0.5);
  S.p_slow = chance(0.5) ? 0.5 : 0;
}

static void seed_free(void) {
  for (int i = 1; i <= MAXN; i++) {
    snode *n = &S.nodes[i];
    if (n->up) {
      lkvnet_raft_status st;
      lkvnet_raft_status_get(n->core, &st);
      count_core(&st);
    }
    lkvnet_raft_free(n->core);
    free(n->W.e);
    free(n->D.e);
    free(n->F.e);
  }
  free(S.heap);
  free(S.leader_of);
  free(S.lm_key_i);
  free(S.lm_key_t);
  free(S.lm_val);
  free(S.cchain);
  free(S.op_index);
  sfree_all();
}

static void world_start(void) {
  cchain_grow(MAX_OPS + 1);
  net_profile(1);
  for (int i = 1; i <= S.n_init; i++) {
    snode *n = &S.nodes[i];
    n->founding = 1;
    n->tick_us = S.tick_us * rndr(95, 105) / 100; /* clocks drift */
    n->slow_disk = chance(S.p_slow);
    node_start(i);
  }
  for (int c = 0; c < NC; c++) S.cl[c].op = -1;
}

static void world_reset(uint64_t seed, int verbose) {
  memset(&S, 0, sizeof(S));
  S.seed = seed;
  S.rng = lkv_mix64(seed);
  S.verbose = verbose;
}

static void tally_ops(void) {
  for (int o = 0; o < S.n_ops; o++) {
    const sop *op = &S.ops[o];
    if (op->write) {
      G.writes_ok += op->status == OP_OK;
      G.writes_unknown += op->status == OP_UNKNOWN;
      G.writes_failed += op->status == OP_FAILED;
    } else {
      G.reads_ok += op->status == OP_OK;
    }
  }
  G.events += S.stats_events;
  G.msgs += S.stats_msgs;
  G.ops += (uint64_t)S.n_ops;
}

static int run_seed(uint64_t seed, int verbose) {
  world_reset(seed, verbose);
  seed_params();
  world_start();
  for (int c = 0; c < NC; c++) {
    S.cl[c].op = -1;
    schedule(rndr(50 * MS, 200 * MS), EV_CLIENT, c, 0, NULL);
  }
  S.clients_on = 1;
  /* the first 300 ms are calm: the campaign-first hint must make n1 the
   * leader of term 1 */
  run_until(300 * MS);
  if (!S.failed && (S.n_leader_of < 2 || S.leader_of[1] != 1))
    failf("campaign first: term 1's leader is n%" PRIu64 ", not n1",
          S.n_leader_of > 1 ? S.leader_of[1] : 0);
  S.faults_on = 1;
  uint64_t chaos = rndr(3000, 8000) * MS;
  schedule(S.now + 10 * MS, EV_FAULT, 0, 0, NULL);
  run_until(chaos);
  /* the storm ends: heal, restart, let the clients finish */
  S.faults_on = 0;
  heal();
  net_profile(1);
  for (int i = 1; i <= MAXN; i++)
    if (S.nodes[i].exists && !S.nodes[i].up) node_start(i);
  run_until(S.now + 500 * MS);
  S.clients_on = 0;
  int l = run_to_convergence(30 * 1000 * MS, "after the faults");
  if (!S.failed) final_checks(l);
  if (!S.failed) probes(l);
  int failed = S.failed;
  tally_ops();
  seed_free();
  return failed;
}

/* {======================================================================
** Scenarios: fault schedules written by hand, for the bugs that need a
** precise sequence no random schedule reaches in a modest number of seeds
** (etcd raft's interaction tests do the same). The checks are the same;
** each scenario runs under several seeds, which vary the timing.
** ======================================================================= */

static int sc_a, sc_mask;
static uint64_t sc_i;

static lkvnet_raft_status node_status(int id) {
  lkvnet_raft_status st;
  memset(&st, 0, sizeof(st));
  if (S.nodes[id].up) lkvnet_raft_status_get(S.nodes[id].core, &st);
  return st;
}

/* Run event by event until pred holds; a step that never comes is a
 * failure of the scenario (its set-up no longer works: mend it). */
static int step_until(const char *what, int (*pred)(void), uint64_t limit) {
  uint64_t end = S.now + limit;
  while (!S.failed) {
    if (pred()) {
      TRACE("scenario: %s", what);
      return 1;
    }
    if (!S.n_heap || S.heap[0].t > end) break;
    run_until(S.heap[0].t);
  }
  if (!S.failed)
    failf("scenario: '%s' did not happen within %" PRIu64 " ms", what,
          (uint64_t)(limit / MS));
  return 0;
}

/* Links between nodes of different groups are cut (both ways). */
static void set_groups(const int *g) {
  for (int i = 1; i <= MAXN; i++)
    for (int j = 1; j <= MAXN; j++) S.block[i][j] = i != j && g[i] != g[j];
}

static void scenario_write(int id) {
  static uint64_t val = 1u << 20;
  unsigned char d[17];
  uint64_t opid = 0, v = val++;
  memcpy(d, &opid, 8);
  d[8] = (unsigned char)(v % NK);
  memcpy(d + 9, &v, 8);
  lkv_err err;
  if (lkvnet_raft_propose(S.nodes[id].core, d, sizeof(d), NULL, NULL, &err))
    failf("scenario: n%d refused a write: %s", id, err.msg);
  drive(id);
}

static int p_leads_all_applied(void) {
  if (leader_node() != sc_a) return 0;
  for (int i = 1; i <= S.n_init; i++)
    if (!S.nodes[i].up || S.nodes[i].applied < sc_i) return 0;
  return 1;
}

static int p_durable(void) {
  for (int i = 1; i <= MAXN; i++)
    if ((sc_mask >> i & 1) && slog_last(&S.nodes[i].D) < sc_i) return 0;
  return 1;
}

static int p_leader_in(void) {
  for (int i = 1; i <= MAXN; i++) {
    if (!(sc_mask >> i & 1) || !S.nodes[i].up) continue;
    if (node_status(i).role == LKVNET_RAFT_LEADER) {
      sc_a = i;
      return 1;
    }
  }
  return 0;
}

static int p_commit(void) { return node_status(sc_a).commit >= sc_i; }

static void scenario_params(int n) {
  S.n_init = n;
  S.et = 10;
  S.hb = 1;
  S.tick_us = 10 * MS;
  S.compact_every = 1 << 30;
  S.max_msg = 20; /* one 17-byte write per append */
  S.max_infl = 1;
  S.max_apply = 4096;
}

static int scenario_end(void) {
  heal();
  for (int i = 1; i <= MAXN; i++)
    if (S.nodes[i].exists && !S.nodes[i].up) node_start(i);
  int l =
      S.failed ? 0 : run_to_convergence(20 * 1000 * MS, "after the scenario");
  if (!S.failed) final_checks(l);
  int failed = S.failed;
  tally_ops();
  seed_free();
  return failed;
}

/* Raft's figure 8: entries of an old term, once on a majority, can still
 * be overwritten; only counting entries of the leader's own term is safe.
 * Five nodes. n1's writes (term t1) reach n2 only; a leader L2 of {3,4,5}
 * is cut off the moment it is elected, its no-op (term t2) nowhere else;
 * n1 or n2 leads again (t3) and copies the old writes to X and Y one per
 * append. A core that commits the first of them on that majority (before
 * its own no-op gets there) has L2 overwrite it once L2, X and Y meet. */
static int scenario_figure8(uint64_t seed, int verbose) {
  world_reset(seed, verbose);
  scenario_params(5);
  world_start();
  sc_a = 1;
  sc_i = 1;
  if (!step_until("n1 leads", p_leads_all_applied, 2000 * MS))
    return scenario_end();
  int g[MAXN + 1] = {0, 1, 1, 2, 2, 2, 9, 9, 9, 9};
  set_groups(g);
  uint64_t i = slog_last(&S.nodes[1].W) + 1;
  for (int k = 0; k < 3; k++) scenario_write(1);
  sc_mask = 1 << 1 | 1 << 2;
  sc_i = i + 2;
  if (!step_until("n1 and n2 hold the writes", p_durable, 1000 * MS))
    return scenario_end();
  node_crash(1);
  sc_mask = 1 << 3 | 1 << 4 | 1 << 5;
  if (!step_until("a leader of {3,4,5}", p_leader_in, 3000 * MS))
    return scenario_end();
  int l2 = sc_a, x = 0, y = 0;
  for (int k = 3; k <= 5; k++)
    if (k != l2) {
      if (!x)
        x = k;
      else
        y = k;
    }
  int g2[MAXN + 1] = {0, 1, 1, 0, 0, 0, 9, 9, 9, 9};
  g2[l2] = 3;
  g2[x] = g2[y] = 1;
  set_groups(g2);
  node_start(1);
  sc_mask = 1 << 1 | 1 << 2;
  if (!step_until("n1 or n2 leads again", p_leader_in, 3000 * MS))
    return scenario_end();
  sc_i = i;
  if (!step_until("the old writes commit", p_commit, 3000 * MS))
    return scenario_end();
  int g3[MAXN + 1] = {0, 1, 1, 0, 0, 0, 9, 9, 9, 9};
  g3[l2] = g3[x] = g3[y] = 2;
  set_groups(g3);
  run_until(S.now + 3000 * MS);
  return scenario_end();
}

/* Two membership changes pending at once: five voters; n1 and n2 cut
 * off from 3, 4, 5; n1 removes 5 and then 4. A core that lets the second
 * change in lives under {1,2,3}, where n1 and n2 are a majority, and
 * commits while 3, 4, 5 elect a leader under {1..5} and commit too. */
static int scenario_two_changes(uint64_t seed, int verbose) {
  world_reset(seed, verbose);
  scenario_params(5);
  world_start();
  sc_a = 1;
  sc_i = 1;
  if (!step_until("n1 leads", p_leads_all_applied, 2000 * MS))
    return scenario_end();
  int g[MAXN + 1] = {0, 1, 1, 2, 2, 2, 9, 9, 9, 9};
  set_groups(g);
  lkv_err err;
  snode *n = &S.nodes[1];
  (void)lkvnet_raft_propose_conf(n->core, LKVNET_RAFT_CONF_REMOVE, 5, NULL, 0,
                                 NULL, NULL, &err);
  (void)lkvnet_raft_propose_conf(n->core, LKVNET_RAFT_CONF_REMOVE, 4, NULL, 0,
                                 NULL, NULL, &err);
  drive(1);
  scenario_write(1);
  sc_mask = 1 << 3 | 1 << 4 | 1 << 5;
  if (!step_until("a leader of {3,4,5}", p_leader_in, 3000 * MS))
    return scenario_end();
  scenario_write(sc_a);
  run_until(S.now + 500 * MS);
  return scenario_end();
}

/* The single-server bug (Ongaro, raft-dev 2015): a leader must commit an
 * entry of its term before it changes the configuration. Voters 1..4; n1
 * adds 5, which only n5 hears; n1 dies; L of {2,3,4} removes 1 at once
 * and commits it under {2,3,4} with one follower F, G cut off; n1 returns
 * with 5 and G, a majority of {1..5}, and commits over it. */
static int scenario_change_first(uint64_t seed, int verbose) {
  world_reset(seed, verbose);
  scenario_params(4);
  world_start();
  sc_a = 1;
  sc_i = 1;
  if (!step_until("n1 leads", p_leads_all_applied, 2000 * MS))
    return scenario_end();
  int g[MAXN + 1] = {0, 1, 2, 2, 2, 1, 9, 9, 9, 9};
  set_groups(g);
  snode *n5 = &S.nodes[5];
  n5->founding = 0;
  n5->tick_us = S.tick_us;
  node_start(5);
  lkv_err err;
  uint64_t k;
  if (lkvnet_raft_propose_conf(S.nodes[1].core, LKVNET_RAFT_CONF_ADD_VOTER, 5,
                               NULL, 0, &k, NULL, &err)) {
    failf("scenario: n1 refused to add n5: %s", err.msg);
    return scenario_end();
  }
  drive(1);
  sc_mask = 1 << 1 | 1 << 5;
  sc_i = k;
  if (!step_until("n1 and n5 hold the change", p_durable, 1000 * MS))
    return scenario_end();
  node_crash(1);
  sc_mask = 1 << 2 | 1 << 3 | 1 << 4;
  if (!step_until("a leader of {2,3,4}", p_leader_in, 3000 * MS))
    return scenario_end();
  int l = sc_a, f = 0, gg = 0;
  for (int j = 2; j <= 4; j++)
    if (j != l) {
      if (!f)
        f = j;
      else
        gg = j;
    }
  int g2[MAXN + 1] = {0, 0, 0, 0, 0, 1, 9, 9, 9, 9};
  g2[l] = g2[f] = 2;
  g2[gg] = 3;
  set_groups(g2);
  (void)lkvnet_raft_propose_conf(S.nodes[l].core, LKVNET_RAFT_CONF_REMOVE, 1,
                                 NULL, 0, NULL, NULL, &err);
  drive(l);
  run_until(S.now + 300 * MS);
  int g3[MAXN + 1] = {0, 1, 0, 0, 0, 1, 9, 9, 9, 9};
  g3[l] = g3[f] = 2;
  g3[gg] = 1;
  set_groups(g3);
  node_start(1);
  run_until(S.now + 3000 * MS);
  return scenario_end();
}

int main(int argc, char **argv) {
  (void)argc;
  const char *one = getenv("SIM_SEED");
  const char *many = getenv("SIM_SEEDS");
  const char *start = getenv("SIM_START");
  int verbose = getenv("SIM_VERBOSE") ? atoi(getenv("SIM_VERBOSE")) : 0;
  uint64_t first = one     ? strtoull(one, NULL, 10)
                   : start ? strtoull(start, NULL, 10)
                           : 1;
  uint64_t count = one ? 1 : many ? strtoull(many, NULL, 10) : DEFAULT_SEEDS;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  uint64_t failures = 0;
  /* the scenarios, each under SCENARIO_SEEDS seeds (not when replaying
   * one random seed) */
  static const struct {
    const char *name;
    int (*run)(uint64_t, int);
  } sc[] = {{"figure8", scenario_figure8},
            {"two_changes", scenario_two_changes},
            {"change_first", scenario_change_first}};
  const char *only = getenv("SIM_SCENARIO");
  const char *scs = getenv("SIM_SCENARIOS");
  int scenarios = !(scs && !strcmp(scs, "0")) && (!one || only);
  for (size_t k = 0; k < sizeof(sc) / sizeof(sc[0]) && scenarios; k++) {
    if (only && strcmp(only, sc[k].name)) continue;
    uint64_t n = one ? 1 : SCENARIO_SEEDS;
    for (uint64_t s = one ? first : 1; s < (one ? first : 1) + n; s++) {
      if (!sc[k].run(s, verbose)) continue;
      failures++;
      fprintf(stderr, "raft_sim: scenario %s, seed %" PRIu64 " failed: %s\n",
              sc[k].name, s, S.why);
      fprintf(stderr, "  replay: SIM_SCENARIO=%s SIM_SEED=%" PRIu64 " %s\n",
              sc[k].name, s, argv[0]);
      break;
    }
  }
  if (only) count = 0;
  for (uint64_t s = first; s < first + count && failures < 3; s++) {
    if (run_seed(s, verbose)) {
      failures++;
      fprintf(stderr, "raft_sim: seed %" PRIu64 " failed: %s\n", s, S.why);
      fprintf(stderr, "  replay: SIM_SEED=%" PRIu64 " %s\n", s, argv[0]);
      if (one) break;
    }
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double secs =
      (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
  printf("raft_sim: %" PRIu64 " seed(s) from %" PRIu64 ", %" PRIu64
         " failed, %.1f s (%.1f seeds/s)\n",
         count, first, failures, secs, secs > 0 ? (double)count / secs : 0.0);
  printf("  %" PRIu64 " events, %" PRIu64 " messages; %" PRIu64
         " crashes, %" PRIu64 " partitions; %" PRIu64 " leaders, %" PRIu64
         " elections, %" PRIu64 " pre-vote rounds, %" PRIu64
         " quorum losses, %" PRIu64 " transfers, %" PRIu64
         " configuration changes, %" PRIu64 " snapshot installs\n",
         G.events, G.msgs, G.crashes, G.partitions, G.leaders, G.elections,
         G.prevotes, G.quorum_lost, G.transfers, G.conf_changes, G.installs);
  printf("  %" PRIu64 " client ops: writes %" PRIu64 " ok, %" PRIu64
         " unknown, %" PRIu64 " not written; reads %" PRIu64 " ok (%" PRIu64
         " read-index rounds); %" PRIu64 " linearizability states\n",
         G.ops, G.writes_ok, G.writes_unknown, G.writes_failed, G.reads_ok,
         G.read_rounds, G.lin_states);
  if (failures) return 1;
  printf("ok\n");
  return 0;
}
