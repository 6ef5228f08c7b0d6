/* raft_sim_driver.h - part of raft_sim_test.c, and included only there,
 * after raft_sim_world.h and raft_sim_check.h: what drives the real core.
 * The storage callbacks over the simulated disk, starting and crashing
 * nodes, the state machine and its compaction, the Ready loop and what it
 * persists, the clients, the faults, and the event loop that runs the
 * world to a time or to convergence. Everything is static: this is a
 * piece of one program, not an interface. */
#ifndef LKVNET_RAFT_SIM_DRIVER_H
#define LKVNET_RAFT_SIM_DRIVER_H

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

static lkvnet_raft_conf initial_conf(void) {
  lkvnet_raft_conf c;
  memset(&c, 0, sizeof(c));
  for (int i = 1; i <= S.n_init; i++) c.voters[c.n_voters++] = (uint64_t)i;
  return c;
}

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
  G.gone_reports += st->counters.leader_gone_reports;
}

static void drive(int id);

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
  /* its connections close: the nodes it led (most of them; a
   * connection may be between messages) hear it at once */
  if (S.f_gone)
    for (int y = 1; y <= MAXN; y++)
      if (y != id && S.nodes[y].up && chance(0.8)) {
        lkvnet_raft_report_leader_gone(S.nodes[y].core, (uint64_t)id);
        drive(y);
      }
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

static void dump_nodes(void);

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
  } else if (r < 80 && S.f_gone) {
    /* a false alarm: a live leader's connection closed (a timeout, a
     * reset); the node it told must not disturb a healthy leader */
    int y = random_up();
    if (y) {
      lkvnet_raft_status st;
      lkvnet_raft_status_get(S.nodes[y].core, &st);
      TRACE("n%d: told leader n%" PRIu64 " is gone", y, st.leader);
      lkvnet_raft_report_leader_gone(S.nodes[y].core, st.leader);
      drive(y);
    }
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
      case EV_DELIVER: deliver(e.p); break;
      case EV_TICK:
        if (!n->up || n->epoch != e.epoch) break;
        lkvnet_raft_tick(n->core);
        drive(e.a);
        schedule(S.now + n->tick_us, EV_TICK, e.a, n->epoch, NULL);
        break;
      case EV_FSYNC:
        if (n->up && n->epoch == e.epoch) fsync_done(e.a);
        break;
      case EV_CLIENT: client_step(e.a); break;
      case EV_OPTIMEOUT:
        if (S.ops[e.a].status == OP_PENDING)
          op_finish(e.a, S.ops[e.a].write ? OP_UNKNOWN : OP_ABANDONED);
        break;
      case EV_FAULT: fault(); break;
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

#endif /* LKVNET_RAFT_SIM_DRIVER_H */
