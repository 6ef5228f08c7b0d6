/* raft_sim_world.h - part of raft_sim_test.c, and included only there,
 * after its includes and constants: the simulated world. The memory of
 * one seed; the simulated disk (a log with a chained hash per entry); the
 * world itself (nodes, messages, events, clients, the seed's settings and
 * what the checks remember, all in S; the totals in G), its failure note,
 * trace and random draws; the event heap; and the network, which copies,
 * loses, duplicates and delays each message and hands what arrives (and
 * each finished fsync) to the driver, raft_sim_driver.h. Everything is
 * static: this is a piece of one program, not an interface. */
#ifndef LKVNET_RAFT_SIM_WORLD_H
#define LKVNET_RAFT_SIM_WORLD_H

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
  int f_crash, f_part, f_net, f_transfer, f_member, f_partial, f_gone;
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
      elections, prevotes, read_rounds, quorum_lost, gone_reports, lin_states;
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

/* a node's id: its slot in S.nodes */
static int id_of(const snode *n) { return (int)(n - S.nodes); }

/* {======================================================================
** The network
** ======================================================================= */

/* what the network delivers, the driver (raft_sim_driver.h) takes in */
static void drive(int id);

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

#endif /* LKVNET_RAFT_SIM_WORLD_H */
