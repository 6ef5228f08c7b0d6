/* raft_base.c - what every role of the Raft core shares and that calls
 * no role back: the outgoing message buffer, quorum and voter questions,
 * the election timeout, stepping down to follower (which fails a
 * leader's pending reads), and the finished reads handed to the driver.
 * raft.c and raft_leader.c call it; it calls only raft_log.c, so the
 * core's files call each other one way: raft.c -> raft_leader.c ->
 * raft_base.c -> raft_log.c. */
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "raft_int.h"
#include "rng.h"

int lkvnet_raft_quorum(const lkvnet_raft *r) {
  return (int)(r->conf.n_voters / 2 + 1);
}

int lkvnet_raft_self_voter(const lkvnet_raft *r) {
  return lkvnet_raft_conf_is_voter(&r->conf, r->id);
}

void lkvnet_raft_reset_timeout(lkvnet_raft *r) {
  int et = r->cfg.election_ticks;
  r->elapsed = 0;
  r->hb_elapsed = 0;
  /* [et, 2 et): two nodes rarely time out in the same tick, so one
   * usually gathers its votes before the other starts (Raft 5.2) */
  r->rand_timeout = et + (int)(lkv_splitmix64(&r->rng) % (uint64_t)et);
}

void lkvnet_raft_set_lead(lkvnet_raft *r, uint64_t lead) {
  if (lead != LKVNET_RAFT_NONE && lead != r->seen_lead) {
    r->cnt.leader_changes++;
    r->seen_lead = lead;
  }
  r->lead = lead;
}

lkvnet_raft_msg *lkvnet_raft_send(lkvnet_raft *r, int type, uint64_t to) {
  if (r->n_out == r->cap_out) {
    size_t cap = r->cap_out ? r->cap_out * 2 : 32;
    lkvnet_raft_msg *p = realloc(r->out, cap * sizeof(*p));
    if (!p) {
      r->cnt.dropped_msgs++;
      return NULL;
    }
    r->out = p;
    r->cap_out = cap;
  }
  lkvnet_raft_msg *m = &r->out[r->n_out++];
  memset(m, 0, sizeof(*m));
  m->type = type;
  m->from = r->id;
  m->to = to;
  m->term = r->term;
  return m;
}

int lkvnet_raft_push_done(lkvnet_raft *r, uint64_t ctx, uint64_t index,
                          int ok) {
  if (r->n_done == r->cap_done) {
    size_t cap = r->cap_done ? r->cap_done * 2 : 16;
    lkvnet_raft_read *p = realloc(r->done_reads, cap * sizeof(*p));
    if (!p) return LKV_NOMEM;
    r->done_reads = p;
    r->cap_done = cap;
  }
  r->done_reads[r->n_done++] = (lkvnet_raft_read){ctx, index, ok};
  return LKV_OK;
}

void lkvnet_raft_reads_fail(lkvnet_raft *r) {
  size_t k = 0;
  for (size_t i = 0; i < r->n_reads; i++)
    if (lkvnet_raft_push_done(r, r->reads[i].ctx, 0, 0) != LKV_OK)
      r->reads[k++] = r->reads[i]; /* told at the next step-down */
  r->n_reads = k;
}

void lkvnet_raft_become_follower(lkvnet_raft *r, uint64_t term, uint64_t lead) {
  if (r->role == LKVNET_RAFT_LEADER) lkvnet_raft_reads_fail(r);
  if (term != r->term) {
    r->term = term;
    r->vote = LKVNET_RAFT_NONE;
  }
  r->role = LKVNET_RAFT_FOLLOWER;
  lkvnet_raft_set_lead(r, lead);
  lkvnet_raft_reset_timeout(r);
  r->transferee = LKVNET_RAFT_NONE;
  /* what this node acknowledged was for the old leader; committed
   * entries match every later leader's log (leader completeness) */
  r->ack_matched = r->commit;
  r->ack_sent = 0;
  r->ack_need = 0;
  r->ack_pending = 0;
}
