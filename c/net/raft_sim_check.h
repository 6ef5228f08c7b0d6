/* raft_sim_check.h - part of raft_sim_test.c, and included only there,
 * after raft_sim_world.h: the checks. Those that run after every step
 * (election safety, log matching, leader completeness, state-machine
 * safety, and the driver contract on each message as it leaves), which
 * the driver (raft_sim_driver.h) calls; and the linearizability checker,
 * which the end of a seed (raft_sim_probes.h) runs over the history.
 * Everything is static: this is a piece of one program, not an
 * interface. */
#ifndef LKVNET_RAFT_SIM_CHECK_H
#define LKVNET_RAFT_SIM_CHECK_H

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

#endif /* LKVNET_RAFT_SIM_CHECK_H */
