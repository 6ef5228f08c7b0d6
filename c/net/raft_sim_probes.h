/* raft_sim_probes.h - part of raft_sim_test.c, and included only there,
 * after raft_sim_driver.h: the end of a seed, once the world has
 * converged. The final checks (every member holds the same state, no
 * acknowledged write was lost, each key's history is linearizable), then
 * the probes, which run the world on: Pre-Vote, CheckQuorum, a transfer
 * and the leader's removal. Everything is static: this is a piece of one
 * program, not an interface. */
#ifndef LKVNET_RAFT_SIM_PROBES_H
#define LKVNET_RAFT_SIM_PROBES_H

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

#endif /* LKVNET_RAFT_SIM_PROBES_H */
