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
 * docs/raft_core.md lists the bugs planted to show the checks bite.
 *
 * This file runs the seeds and the scripted scenarios; the rest of the
 * simulation is in four headers that only it includes, in the order
 * below (each uses what the ones before it define). */
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

/* memory, the simulated disk, the world, the events, the network */
#include "raft_sim_world.h"
/* the checks after every step; the linearizability checker */
#include "raft_sim_check.h"
/* the driver of the core, the clients, the faults, the event loop */
#include "raft_sim_driver.h"
/* the end of a seed: the final checks and the probes */
#include "raft_sim_probes.h"

/* {======================================================================
** Running a seed: its settings, the world's start and end, the totals
** ======================================================================= */

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
  /* the transport's "the leader's connection closed": after crashes,
   * and false ones about live leaders */
  S.f_gone = chance(0.7);
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

/* Every scenario's opening: n nodes with the scenario's settings, n1
 * leading with everything applied, then the partition groups g. Returns
 * 0 when n1 does not lead in time (the failure is recorded). */
static int scenario_begin(uint64_t seed, int verbose, int n, const int *g) {
  world_reset(seed, verbose);
  scenario_params(n);
  world_start();
  sc_a = 1;
  sc_i = 1;
  if (!step_until("n1 leads", p_leads_all_applied, 2000 * MS)) return 0;
  set_groups(g);
  return 1;
}

/* Raft's figure 8: entries of an old term, once on a majority, can still
 * be overwritten; only counting entries of the leader's own term is safe.
 * Five nodes. n1's writes (term t1) reach n2 only; a leader L2 of {3,4,5}
 * is cut off the moment it is elected, its no-op (term t2) nowhere else;
 * n1 or n2 leads again (t3) and copies the old writes to X and Y one per
 * append. A core that commits the first of them on that majority (before
 * its own no-op gets there) has L2 overwrite it once L2, X and Y meet. */
static int scenario_figure8(uint64_t seed, int verbose) {
  int g[MAXN + 1] = {0, 1, 1, 2, 2, 2, 9, 9, 9, 9};
  if (!scenario_begin(seed, verbose, 5, g)) return scenario_end();
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
  int g[MAXN + 1] = {0, 1, 1, 2, 2, 2, 9, 9, 9, 9};
  if (!scenario_begin(seed, verbose, 5, g)) return scenario_end();
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
  int g[MAXN + 1] = {0, 1, 2, 2, 2, 1, 9, 9, 9, 9};
  if (!scenario_begin(seed, verbose, 4, g)) return scenario_end();
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
         " quorum losses, %" PRIu64 " leaders forgotten, %" PRIu64
         " transfers, %" PRIu64 " configuration changes, %" PRIu64
         " snapshot installs\n",
         G.events, G.msgs, G.crashes, G.partitions, G.leaders, G.elections,
         G.prevotes, G.quorum_lost, G.gone_reports, G.transfers, G.conf_changes,
         G.installs);
  printf("  %" PRIu64 " client ops: writes %" PRIu64 " ok, %" PRIu64
         " unknown, %" PRIu64 " not written; reads %" PRIu64 " ok (%" PRIu64
         " read-index rounds); %" PRIu64 " linearizability states\n",
         G.ops, G.writes_ok, G.writes_unknown, G.writes_failed, G.reads_ok,
         G.read_rounds, G.lin_states);
  if (failures) return 1;
  printf("ok\n");
  return 0;
}
