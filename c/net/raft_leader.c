/* raft_leader.c - the Raft core's leader: per-follower progress (probe,
 * replicate, snapshot), appends with fast backtracking, the commit rule,
 * CheckQuorum, ReadIndex, leadership transfer and single-server
 * membership changes (docs/raft_core.md). */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "raft_int.h"

/* {======================================================================
** Peers
** ======================================================================= */

raft_peer *lkvnet_raft_peer(lkvnet_raft *r, uint64_t id) {
  for (size_t i = 0; i < r->n_peers; i++)
    if (r->peers[i].id == id) return &r->peers[i];
  return NULL;
}

static void infl_free_to(raft_peer *p, uint64_t index) {
  while (p->infl_n && p->infl[p->infl_start] <= index) {
    p->infl_start = (p->infl_start + 1) % LKVNET_RAFT_MAX_INFLIGHT;
    p->infl_n--;
  }
}

static void infl_add(raft_peer *p, uint64_t last) {
  size_t at = (p->infl_start + p->infl_n) % LKVNET_RAFT_MAX_INFLIGHT;
  p->infl[at] = last;
  p->infl_n++;
}

static void become_probe(raft_peer *p) {
  if (p->state == LKVNET_RAFT_SNAPSHOT) {
    uint64_t ps = p->pending_snap;
    p->next = (p->match > ps ? p->match : ps) + 1;
  } else {
    p->next = p->match + 1;
  }
  p->state = LKVNET_RAFT_PROBE;
  p->probe_sent = 0;
  p->pending_snap = 0;
  p->infl_start = p->infl_n = 0;
}

static void become_replicate(raft_peer *p) {
  p->state = LKVNET_RAFT_REPLICATE;
  p->next = p->match + 1;
  p->probe_sent = 0;
  p->pending_snap = 0;
  p->infl_start = p->infl_n = 0;
}

static void all_need_send(lkvnet_raft *r) {
  for (size_t i = 0; i < r->n_peers; i++) r->peers[i].need_send = 1;
  r->dirty = 1;
}

/* {======================================================================
** Sending: appends, snapshots, heartbeats
** ======================================================================= */

static void send_snapshot(lkvnet_raft *r, raft_peer *p) {
  /* a follower not heard from lately may be down: a snapshot is big,
   * wait until it answers a heartbeat */
  if (!p->recent_active) return;
  uint64_t si = 0, st = 0;
  lkvnet_raft_conf c;
  memset(&c, 0, sizeof(c));
  r->st.snapshot(r->st.ctx, &si, &st, &c);
  if (si == 0) return; /* nothing compacted: cannot be why it is missing */
  lkvnet_raft_conf *cc = lkvnet_raft_arena_alloc(&r->arena, sizeof(*cc));
  if (!cc) return;
  *cc = c;
  lkvnet_raft_msg *m = lkvnet_raft_send(r, LKVNET_RAFT_MSG_SNAP, p->id);
  if (!m) return;
  m->index = si;
  m->log_term = st;
  m->conf = cc;
  p->state = LKVNET_RAFT_SNAPSHOT;
  p->pending_snap = si;
  p->infl_start = p->infl_n = 0;
}

/* One MSG_APP to p when it may take one: 1 when something was sent. */
static int send_append(lkvnet_raft *r, raft_peer *p) {
  if (p->state == LKVNET_RAFT_SNAPSHOT) return 0;
  if (p->state == LKVNET_RAFT_PROBE && p->probe_sent) return 0;
  if (p->state == LKVNET_RAFT_REPLICATE && p->infl_n >= r->cfg.max_inflight)
    return 0;
  uint64_t last = lkvnet_raft_last_index(r);
  uint64_t prev = p->next - 1, pt;
  if (lkvnet_raft_term_at(r, prev, &pt) != LKV_OK) {
    send_snapshot(r, p); /* compacted away: only a snapshot helps */
    return 1;
  }
  lkvnet_raft_entry *es = NULL;
  size_t n = 0;
  int rc =
      lkvnet_raft_slice(r, p->next, last + 1, r->cfg.max_msg_bytes, &es, &n);
  if (rc == LKV_NOTFOUND) {
    send_snapshot(r, p);
    return 1;
  }
  if (rc != LKV_OK) return 0; /* retried at the next heartbeat */
  /* an empty append probes, or carries a commit index the follower has
   * not been sent; otherwise the heartbeat is enough */
  if (n == 0 && p->state != LKVNET_RAFT_PROBE && !p->force_empty &&
      p->sent_commit >= r->commit)
    return 0;
  p->force_empty = 0;
  lkvnet_raft_msg *m = lkvnet_raft_send(r, LKVNET_RAFT_MSG_APP, p->id);
  if (!m) return 0;
  m->index = prev;
  m->log_term = pt;
  m->entries = es;
  m->n_entries = n;
  m->commit = r->commit;
  p->sent_commit = r->commit;
  if (p->state == LKVNET_RAFT_REPLICATE) {
    if (n) {
      p->next = es[n - 1].index + 1;
      infl_add(p, es[n - 1].index);
    }
  } else {
    p->probe_sent = 1;
  }
  return 1;
}

static void bcast_heartbeat(lkvnet_raft *r) {
  for (size_t i = 0; i < r->n_peers; i++) {
    raft_peer *p = &r->peers[i];
    lkvnet_raft_msg *m = lkvnet_raft_send(r, LKVNET_RAFT_MSG_HEARTBEAT, p->id);
    if (!m) continue;
    /* never a commit index past what the follower matches: it could
     * otherwise apply an entry of its own that the leader's log lacks */
    m->commit = p->match < r->commit ? p->match : r->commit;
    m->context = r->read_round;
  }
}

static void send_timeout_now(lkvnet_raft *r, raft_peer *p) {
  if (lkvnet_raft_send(r, LKVNET_RAFT_MSG_TIMEOUT_NOW, p->id)) {
    r->cnt.transfers++;
    r->transfer_sent = 1;
  }
}

/* {======================================================================
** Becoming leader, ticking, stepping
** ======================================================================= */

void lkvnet_raft_become_leader(lkvnet_raft *r) {
  r->role = LKVNET_RAFT_LEADER;
  if (r->seen_lead != r->id) {
    r->cnt.leader_changes++;
    r->seen_lead = r->id;
  }
  r->lead = r->id;
  r->transferee = LKVNET_RAFT_NONE;
  r->transfer_sent = 0;
  r->elapsed = r->hb_elapsed = 0;
  r->read_round = 0;
  r->cnt.elections_won++;
  uint64_t last = lkvnet_raft_last_index(r);
  for (size_t i = 0; i < r->n_peers; i++) {
    raft_peer *p = &r->peers[i];
    int voter = p->voter;
    lkvnet_raft_peer_init(r, p, p->id);
    p->voter = voter;
    p->next = last + 1;
  }
  /* A no-op of the new term: entries of earlier terms commit only with
   * one of the leader's own (Raft 5.4.2), and ReadIndex needs one
   * committed to know the commit index is current. */
  lkvnet_raft_entry noop = {r->term, last + 1, LKVNET_RAFT_ENTRY_NOOP, NULL, 0};
  if (lkvnet_raft_log_append(r, &noop, 1) != LKV_OK)
    r->cnt.dropped_msgs++; /* the next proposal will do instead */
  all_need_send(r);
  lkvnet_raft_maybe_commit(r);
}

static int quorum_active(lkvnet_raft *r) {
  int n = lkvnet_raft_self_voter(r) ? 1 : 0;
  for (size_t i = 0; i < r->n_peers; i++)
    if (r->peers[i].voter && r->peers[i].recent_active) n++;
  return n >= lkvnet_raft_quorum(r);
}

void lkvnet_raft_leader_tick(lkvnet_raft *r) {
  r->hb_elapsed++;
  r->elapsed++;
  if (r->transferee != LKVNET_RAFT_NONE &&
      ++r->transfer_elapsed >= r->cfg.election_ticks) {
    r->transferee = LKVNET_RAFT_NONE; /* the target did not take over */
    r->transfer_sent = 0;
  }
  if (r->elapsed >= r->cfg.election_ticks) {
    r->elapsed = 0;
    if (r->cfg.check_quorum) {
      if (!quorum_active(r)) {
        /* CheckQuorum: a majority may have elected another leader
         * already; stop serving as this term's (reads included) */
        r->cnt.quorum_lost++;
        lkvnet_raft_become_follower(r, r->term, LKVNET_RAFT_NONE);
        return;
      }
      for (size_t i = 0; i < r->n_peers; i++) r->peers[i].recent_active = 0;
    }
  }
  if (r->hb_elapsed >= r->cfg.heartbeat_ticks) {
    r->hb_elapsed = 0;
    bcast_heartbeat(r);
  }
}

static uint64_t conflict_hint(lkvnet_raft *r, const lkvnet_raft_msg *m) {
  if (m->hint_term == 0) return m->hint_index;
  /* skip our entries of terms the follower does not have at all */
  return lkvnet_raft_find_conflict_by_term(r, m->hint_index, m->hint_term);
}

static void release_reads(lkvnet_raft *r);

static void handle_app_resp(lkvnet_raft *r, raft_peer *p,
                            const lkvnet_raft_msg *m) {
  if (m->reject) {
    if (p->state == LKVNET_RAFT_REPLICATE) {
      if (m->index <= p->match) return; /* stale */
      become_probe(p);
    } else if (p->state == LKVNET_RAFT_PROBE) {
      if (p->next - 1 != m->index) return; /* an answer to an old probe */
      uint64_t h = conflict_hint(r, m) + 1;
      p->next = h < m->index ? h : m->index;
      if (p->next < p->match + 1) p->next = p->match + 1;
      if (p->next < 1) p->next = 1;
      p->probe_sent = 0;
    } else {
      return;
    }
    p->need_send = 1;
    r->dirty = 1;
    return;
  }
  int updated = 0;
  if (m->index > p->match) {
    p->match = m->index;
    updated = 1;
  }
  if (p->next < m->index + 1) p->next = m->index + 1;
  if (updated || (p->state == LKVNET_RAFT_PROBE && p->match == m->index)) {
    if (p->state == LKVNET_RAFT_PROBE)
      become_replicate(p);
    else if (p->state == LKVNET_RAFT_SNAPSHOT && p->match >= p->pending_snap)
      become_replicate(p);
    else if (p->state == LKVNET_RAFT_REPLICATE)
      infl_free_to(p, m->index);
    if (p->voter && updated) lkvnet_raft_maybe_commit(r);
    p->need_send = 1;
    r->dirty = 1;
  }
  if (p->id == r->transferee && !r->transfer_sent &&
      p->match == lkvnet_raft_last_index(r))
    send_timeout_now(r, p);
}

void lkvnet_raft_leader_step(lkvnet_raft *r, const lkvnet_raft_msg *m) {
  raft_peer *p = lkvnet_raft_peer(r, m->from);
  if (!p) return; /* not a member (any more) */
  if (m->type == LKVNET_RAFT_MSG_APP_RESP) {
    p->recent_active = 1;
    handle_app_resp(r, p, m);
  } else if (m->type == LKVNET_RAFT_MSG_HEARTBEAT_RESP) {
    p->recent_active = 1;
    p->probe_sent = 0;
    /* a follower whose answers were lost keeps its window full forever;
     * a heartbeat answer proves it alive: let one more append go */
    if (p->state == LKVNET_RAFT_REPLICATE && p->infl_n >= r->cfg.max_inflight) {
      p->infl_start = (p->infl_start + 1) % LKVNET_RAFT_MAX_INFLIGHT;
      p->infl_n--;
    }
    if (p->match < lkvnet_raft_last_index(r) || p->state == LKVNET_RAFT_PROBE) {
      p->need_send = 1;
      p->force_empty = 1;
      r->dirty = 1;
    }
    if (m->context > p->hb_ack) {
      p->hb_ack = m->context;
      release_reads(r);
    }
  }
}

/* {======================================================================
** The commit rule
** ======================================================================= */

static int cmp_desc(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? 1 : x > y ? -1 : 0;
}

static int committed_in_term(const lkvnet_raft *r) {
  uint64_t t;
  return lkvnet_raft_term_at(r, r->commit, &t) == LKV_OK && t == r->term;
}

static void on_commit(lkvnet_raft *r);

void lkvnet_raft_maybe_commit(lkvnet_raft *r) {
  uint64_t m[LKVNET_RAFT_MAX_MEMBERS];
  size_t n = 0;
  if (lkvnet_raft_self_voter(r)) {
    /* the leader counts itself only for what its own disk holds */
    uint64_t last = lkvnet_raft_last_index(r);
    m[n++] = r->durable < last ? r->durable : last;
  }
  for (size_t i = 0; i < r->n_peers; i++)
    if (r->peers[i].voter) m[n++] = r->peers[i].match;
  size_t q = (size_t)lkvnet_raft_quorum(r);
  if (n < q) return;
  qsort(m, n, sizeof(*m), cmp_desc);
  uint64_t idx = m[q - 1], t;
  if (idx <= r->commit) return;
  /* Raft 5.4.2: count only entries of this term; an older entry held by
   * a majority can still be overwritten by a later leader (figure 8) */
  if (lkvnet_raft_term_at(r, idx, &t) != LKV_OK || t != r->term) return;
  r->commit = idx;
  on_commit(r);
}

/* The leader's removal is committed: hand over to the voter that holds
 * the most of the log (at once if it holds all), then step down. */
static void leave(lkvnet_raft *r) {
  raft_peer *best = NULL;
  for (size_t i = 0; i < r->n_peers; i++) {
    raft_peer *p = &r->peers[i];
    if (p->voter && (!best || p->match > best->match)) best = p;
  }
  if (best && best->match == lkvnet_raft_last_index(r))
    send_timeout_now(r, best);
  lkvnet_raft_become_follower(r, r->term, LKVNET_RAFT_NONE);
}

static void on_commit(lkvnet_raft *r) {
  all_need_send(r);
  if (committed_in_term(r)) {
    for (size_t i = 0; i < r->n_reads; i++) {
      if (r->reads[i].wait_noop) {
        r->reads[i].wait_noop = 0;
        r->reads[i].index = r->commit;
      }
    }
  }
  if (!lkvnet_raft_self_voter(r) &&
      !(r->n_confs && r->confs[r->n_confs - 1].index > r->commit))
    leave(r);
}

/* {======================================================================
** ReadIndex
** ======================================================================= */

/* Release every read whose round a majority has answered: each of those
 * answers came after the read was registered, at this leader's term, so
 * no other leader had committed anything then (it would have needed one
 * of that majority). */
static void release_reads(lkvnet_raft *r) {
  uint64_t acks[LKVNET_RAFT_MAX_MEMBERS];
  size_t n = 0;
  if (lkvnet_raft_self_voter(r)) acks[n++] = UINT64_MAX;
  for (size_t i = 0; i < r->n_peers; i++)
    if (r->peers[i].voter) acks[n++] = r->peers[i].hb_ack;
  size_t q = (size_t)lkvnet_raft_quorum(r);
  if (n < q) return;
  qsort(acks, n, sizeof(*acks), cmp_desc);
  uint64_t done = acks[q - 1];
  size_t k = 0;
  for (size_t i = 0; i < r->n_reads; i++) {
    raft_readreq *q2 = &r->reads[i];
    if (q2->round && q2->round <= done &&
        lkvnet_raft_push_done(r, q2->ctx, q2->index, 1) == LKV_OK)
      continue;
    r->reads[k++] = *q2;
  }
  r->n_reads = k;
}

int lkvnet_raft_read_index(lkvnet_raft *r, uint64_t ctx, lkv_err *err) {
  if (r->role != LKVNET_RAFT_LEADER)
    return lkv_seterr(err, LKV_BUSY, "raft: not the leader");
  if (r->n_reads == r->cap_reads) {
    size_t cap = r->cap_reads ? r->cap_reads * 2 : 16;
    raft_readreq *p = realloc(r->reads, cap * sizeof(*p));
    if (!p) return lkv_seterr(err, LKV_NOMEM, "raft: no memory for a read");
    r->reads = p;
    r->cap_reads = cap;
  }
  raft_readreq *q = &r->reads[r->n_reads++];
  q->ctx = ctx;
  q->round = 0;
  q->wait_noop = !committed_in_term(r);
  q->index = q->wait_noop ? 0 : r->commit;
  r->dirty = 1;
  return LKV_OK;
}

/* {======================================================================
** Flush: what the peers are owed, sent once per Ready
** ======================================================================= */

void lkvnet_raft_flush(lkvnet_raft *r) {
  if (r->role != LKVNET_RAFT_LEADER) return;
  /* reads registered since the last Ready share one heartbeat round */
  int fresh = 0;
  for (size_t i = 0; i < r->n_reads; i++)
    if (!r->reads[i].round && !r->reads[i].wait_noop) fresh = 1;
  if (fresh) {
    r->read_round++;
    r->cnt.read_index_rounds++;
    for (size_t i = 0; i < r->n_reads; i++)
      if (!r->reads[i].round && !r->reads[i].wait_noop)
        r->reads[i].round = r->read_round;
    bcast_heartbeat(r);
    release_reads(r); /* alone, this node is its own majority */
  }
  if (!r->dirty) return;
  r->dirty = 0;
  uint64_t last = lkvnet_raft_last_index(r);
  for (size_t i = 0; i < r->n_peers; i++) {
    raft_peer *p = &r->peers[i];
    if (!p->need_send) continue;
    p->need_send = 0;
    /* stream while the window allows: the round trip is amortised over
     * up to max_inflight appends */
    while (send_append(r, p) && p->state == LKVNET_RAFT_REPLICATE &&
           p->next <= last) {
    }
  }
}

/* {======================================================================
** Proposals, membership, transfer, reports
** ======================================================================= */

static int leader_append(lkvnet_raft *r, int type, const void *data, size_t len,
                         uint64_t *index, uint64_t *term, lkv_err *err) {
  lkvnet_raft_entry e = {r->term, lkvnet_raft_last_index(r) + 1, type, data,
                         len};
  if (lkvnet_raft_log_append(r, &e, 1) != LKV_OK)
    return lkv_seterr(err, LKV_NOMEM, "raft: no memory for a %zu-byte entry",
                      len);
  if (index) *index = e.index;
  if (term) *term = e.term;
  all_need_send(r);
  /* alone, the leader commits once its own disk has the entry */
  lkvnet_raft_maybe_commit(r);
  return LKV_OK;
}

static int check_leader(lkvnet_raft *r, lkv_err *err) {
  if (r->role != LKVNET_RAFT_LEADER)
    return lkv_seterr(err, LKV_BUSY, "raft: not the leader");
  if (r->transferee != LKVNET_RAFT_NONE)
    return lkv_seterr(err, LKV_BUSY,
                      "raft: leadership is being transferred to %llu",
                      (unsigned long long)r->transferee);
  return LKV_OK;
}

int lkvnet_raft_propose(lkvnet_raft *r, const void *data, size_t len,
                        uint64_t *index, uint64_t *term, lkv_err *err) {
  int rc = check_leader(r, err);
  if (rc != LKV_OK) return rc;
  return leader_append(r, LKVNET_RAFT_ENTRY_NORMAL, data, len, index, term,
                       err);
}

static int remove_id(uint64_t *ids, size_t *n, uint64_t id) {
  for (size_t i = 0; i < *n; i++) {
    if (ids[i] != id) continue;
    memmove(ids + i, ids + i + 1, (*n - i - 1) * sizeof(*ids));
    (*n)--;
    return 1;
  }
  return 0;
}

int lkvnet_raft_propose_conf(lkvnet_raft *r, int op, uint64_t node,
                             const void *ctx, size_t ctx_len, uint64_t *index,
                             uint64_t *term, lkv_err *err) {
  int rc = check_leader(r, err);
  if (rc != LKV_OK) return rc;
  if (r->n_confs && r->confs[r->n_confs - 1].index > r->commit)
    return lkv_seterr(err, LKV_BUSY,
                      "raft: a configuration change is pending (index %llu)",
                      (unsigned long long)r->confs[r->n_confs - 1].index);
  if (!committed_in_term(r))
    return lkv_seterr(err, LKV_BUSY,
                      "raft: this term's first entry is not yet committed");
  if (node == LKVNET_RAFT_NONE || ctx_len > UINT32_MAX)
    return lkv_seterr(err, LKV_INVALID, "raft: node id 0 or context too big");
  lkvnet_raft_conf c = r->conf;
  int voter = lkvnet_raft_conf_is_voter(&c, node);
  int learner = lkvnet_raft_conf_is_learner(&c, node);
  size_t members = c.n_voters + c.n_learners;
  switch (op) {
    case LKVNET_RAFT_CONF_ADD_VOTER:
      if (voter)
        return lkv_seterr(err, LKV_INVALID, "raft: %llu is already a voter",
                          (unsigned long long)node);
      if (learner)
        remove_id(c.learners, &c.n_learners, node);
      else if (members >= LKVNET_RAFT_MAX_MEMBERS)
        return lkv_seterr(err, LKV_INVALID, "raft: %d members already",
                          LKVNET_RAFT_MAX_MEMBERS);
      c.voters[c.n_voters++] = node;
      break;
    case LKVNET_RAFT_CONF_ADD_LEARNER:
      if (voter || learner)
        return lkv_seterr(err, LKV_INVALID, "raft: %llu is already a %s",
                          (unsigned long long)node,
                          voter ? "voter" : "learner");
      if (members >= LKVNET_RAFT_MAX_MEMBERS)
        return lkv_seterr(err, LKV_INVALID, "raft: %d members already",
                          LKVNET_RAFT_MAX_MEMBERS);
      c.learners[c.n_learners++] = node;
      break;
    case LKVNET_RAFT_CONF_REMOVE:
      if (voter && c.n_voters == 1)
        return lkv_seterr(err, LKV_INVALID, "raft: %llu is the last voter",
                          (unsigned long long)node);
      if (!remove_id(c.voters, &c.n_voters, node) &&
          !remove_id(c.learners, &c.n_learners, node))
        return lkv_seterr(err, LKV_INVALID, "raft: %llu is not a member",
                          (unsigned long long)node);
      break;
    default: return lkv_seterr(err, LKV_INVALID, "raft: unknown change %d", op);
  }
  unsigned char *data;
  size_t len;
  if (lkvnet_raft_conf_encode(op, node, &c, ctx, ctx_len, &data, &len))
    return lkv_seterr(err, LKV_NOMEM, "raft: no memory for a change");
  rc = leader_append(r, LKVNET_RAFT_ENTRY_CONF, data, len, index, term, err);
  free(data);
  return rc;
}

int lkvnet_raft_transfer(lkvnet_raft *r, uint64_t target, lkv_err *err) {
  if (r->role != LKVNET_RAFT_LEADER)
    return lkv_seterr(err, LKV_BUSY, "raft: not the leader");
  raft_peer *p = lkvnet_raft_peer(r, target);
  if (target == r->id || !p || !p->voter)
    return lkv_seterr(err, LKV_INVALID, "raft: %llu is not another voter",
                      (unsigned long long)target);
  if (r->transferee == target) return LKV_OK;
  r->transferee = target;
  r->transfer_elapsed = 0;
  r->transfer_sent = 0;
  if (p->match == lkvnet_raft_last_index(r)) {
    send_timeout_now(r, p);
  } else {
    p->need_send = 1;
    r->dirty = 1;
  }
  return LKV_OK;
}

void lkvnet_raft_report_unreachable(lkvnet_raft *r, uint64_t id) {
  if (r->role != LKVNET_RAFT_LEADER) return;
  raft_peer *p = lkvnet_raft_peer(r, id);
  if (p && p->state == LKVNET_RAFT_REPLICATE) become_probe(p);
}

void lkvnet_raft_report_snapshot(lkvnet_raft *r, uint64_t id, int ok) {
  if (r->role != LKVNET_RAFT_LEADER) return;
  raft_peer *p = lkvnet_raft_peer(r, id);
  if (!p || p->state != LKVNET_RAFT_SNAPSHOT) return;
  if (!ok) p->pending_snap = 0;
  become_probe(p);
  /* wait for the follower's answer (ok) or a heartbeat (failed) */
  p->probe_sent = 1;
}
