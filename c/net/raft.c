/* raft.c - the Raft core: opening, roles and elections (Pre-Vote, the
 * leader lease, CheckQuorum's step-down is in raft_leader.c), Step for
 * every message a follower or candidate handles, ticks, and the Ready /
 * Advance cycle (raft.h has the contract, docs/raft_core.md the why). */
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "raft_int.h"
#include "rng.h"

/* {======================================================================
** Opening and closing
** ======================================================================= */

void lkvnet_raft_config_init(lkvnet_raft_config *c) {
  memset(c, 0, sizeof(*c));
  c->election_ticks = 10;
  c->heartbeat_ticks = 1;
  c->pre_vote = 1;
  c->check_quorum = 1;
  c->max_msg_bytes = 1u << 20;
  c->max_inflight = 64;
  c->max_apply_bytes = 8u << 20;
}

const char *lkvnet_raft_role_name(int role) {
  switch (role) {
    case LKVNET_RAFT_FOLLOWER: return "follower";
    case LKVNET_RAFT_PRECANDIDATE: return "precandidate";
    case LKVNET_RAFT_CANDIDATE: return "candidate";
    case LKVNET_RAFT_LEADER: return "leader";
  }
  return "unknown";
}

static int conf_valid(const lkvnet_raft_conf *c) {
  if (c->n_voters + c->n_learners > LKVNET_RAFT_MAX_MEMBERS) return 0;
  for (size_t i = 0; i < c->n_voters + c->n_learners; i++) {
    uint64_t a = i < c->n_voters ? c->voters[i] : c->learners[i - c->n_voters];
    if (a == LKVNET_RAFT_NONE) return 0;
    for (size_t j = 0; j < i; j++) {
      uint64_t b =
          j < c->n_voters ? c->voters[j] : c->learners[j - c->n_voters];
      if (a == b) return 0;
    }
  }
  return 1;
}

int lkvnet_raft_new(const lkvnet_raft_config *c, lkvnet_raft **out,
                    lkv_err *err) {
  *out = NULL;
  const lkvnet_raft_storage *s = &c->storage;
  if (c->id == LKVNET_RAFT_NONE)
    return lkv_seterr(err, LKV_INVALID, "raft: the node id must not be 0");
  if (c->heartbeat_ticks < 1 || c->election_ticks <= c->heartbeat_ticks)
    return lkv_seterr(err, LKV_INVALID,
                      "raft: heartbeat_ticks %d, election_ticks %d: need "
                      "1 <= heartbeat < election",
                      c->heartbeat_ticks, c->election_ticks);
  if (c->max_inflight < 1 || c->max_inflight > LKVNET_RAFT_MAX_INFLIGHT)
    return lkv_seterr(err, LKV_INVALID,
                      "raft: max_inflight %zu: it must be from 1 to %d",
                      c->max_inflight, LKVNET_RAFT_MAX_INFLIGHT);
  if (!s->snapshot || !s->last_index || !s->term || !s->entries)
    return lkv_seterr(err, LKV_INVALID, "raft: a storage callback is NULL");
  if (!conf_valid(&c->bootstrap))
    return lkv_seterr(err, LKV_INVALID,
                      "raft: the bootstrap configuration has a 0, repeated "
                      "or too many members");

  lkvnet_raft *r = calloc(1, sizeof(*r));
  if (!r) return lkv_seterr(err, LKV_NOMEM, "raft: no memory for the core");
  r->cfg = *c;
  if (!r->cfg.max_msg_bytes) r->cfg.max_msg_bytes = 1;
  if (!r->cfg.max_apply_bytes) r->cfg.max_apply_bytes = 1;
  r->st = *s;
  r->id = c->id;
  /* each node's own stream from the cluster's seed */
  r->rng = c->seed ^ lkv_mix64(c->id);

  lkvnet_raft_conf sconf;
  memset(&sconf, 0, sizeof(sconf));
  s->snapshot(s->ctx, &r->snap_index, &r->snap_term, &sconf);
  r->stable_last = s->last_index(s->ctx);
  r->u_off = r->stable_last + 1;
  if (r->stable_last < r->snap_index || !conf_valid(&sconf)) {
    unsigned long long l = r->stable_last, si = r->snap_index;
    free(r);
    return lkv_seterr(err, LKV_INVALID,
                      "raft: the storage's last index %llu is before its "
                      "snapshot %llu, or its configuration is bad",
                      l, si);
  }
  r->base_conf = (r->snap_index > 0 || sconf.n_voters || sconf.n_learners)
                     ? sconf
                     : c->bootstrap;
  lkvnet_raft_conf_refresh(r);
  int rc = lkvnet_raft_conf_load(r, err);
  if (rc != LKV_OK) {
    lkvnet_raft_free(r);
    return rc;
  }

  uint64_t last = r->stable_last;
  r->durable = last; /* contract 1: what the storage holds is durable */
  r->term = c->hs.term;
  r->vote = c->hs.vote;
  /* A log with entries of a term past the stored one: the term file was
   * lost or restored from an old copy. Taking the log's term (with no
   * vote) is safe: it was this node's term once. */
  uint64_t lt = lkvnet_raft_last_term(r);
  if (lt > r->term) {
    r->term = lt;
    r->vote = LKVNET_RAFT_NONE;
  }
  if (c->applied < r->snap_index || c->applied > last) {
    unsigned long long si = r->snap_index;
    lkvnet_raft_free(r);
    return lkv_seterr(err, LKV_INVALID,
                      "raft: applied index %llu outside the log [%llu, %llu]",
                      (unsigned long long)c->applied, si,
                      (unsigned long long)last);
  }
  r->applied = c->applied;
  /* a commit index the disk does not back (written before its entries
   * were synced) is cut to the log; the leader will say the rest */
  r->commit = c->hs.commit < last ? c->hs.commit : last;
  if (r->commit < r->applied) r->commit = r->applied;
  r->prev_hs.term = r->term;
  r->prev_hs.vote = r->vote;
  r->prev_hs.commit = r->commit;
  /* hand out the term/vote again only if they moved above */
  if (lt > c->hs.term) r->prev_hs = c->hs;

  r->role = LKVNET_RAFT_FOLLOWER;
  r->lead = LKVNET_RAFT_NONE;
  r->ack_matched = r->commit;
  lkvnet_raft_peers_sync(r);
  lkvnet_raft_reset_timeout(r);
  if (c->campaign_first && r->term == 0 && last == 0)
    r->rand_timeout = 1; /* the hinted node times out first */
  *out = r;
  return LKV_OK;
}

void lkvnet_raft_free(lkvnet_raft *r) {
  if (!r) return;
  lkvnet_raft_log_free(r);
  lkvnet_raft_arena_free(&r->arena);
  free(r->out);
  free(r->reads);
  free(r->done_reads);
  free(r);
}

/* {======================================================================
** Roles
** ======================================================================= */

static void tally_reset(lkvnet_raft *r) {
  for (size_t i = 0; i < r->n_peers; i++) r->peers[i].vote = 0;
  r->self_vote = 1;
}

/* Granted and refused among the voters of this node's configuration: a
 * learner's answer, or a stranger's, never counts. */
static void tally(const lkvnet_raft *r, int *granted, int *refused) {
  *granted = r->self_vote > 0 && lkvnet_raft_self_voter(r) ? 1 : 0;
  *refused = 0;
  for (size_t i = 0; i < r->n_peers; i++) {
    if (!r->peers[i].voter) continue;
    if (r->peers[i].vote > 0) (*granted)++;
    if (r->peers[i].vote < 0) (*refused)++;
  }
}

static void ask_votes(lkvnet_raft *r, int type, uint64_t term, int transfer) {
  uint64_t li = lkvnet_raft_last_index(r), lt = lkvnet_raft_last_term(r);
  for (size_t i = 0; i < r->n_peers; i++) {
    if (!r->peers[i].voter) continue;
    lkvnet_raft_msg *m = lkvnet_raft_send(r, type, r->peers[i].id);
    if (!m) continue;
    m->term = term;
    m->index = li;
    m->log_term = lt;
    m->transfer = transfer;
  }
}

static void become_candidate(lkvnet_raft *r, int transfer) {
  r->term++;
  r->vote = r->id;
  r->role = LKVNET_RAFT_CANDIDATE;
  lkvnet_raft_set_lead(r, LKVNET_RAFT_NONE);
  lkvnet_raft_reset_timeout(r);
  tally_reset(r);
  r->cnt.elections_started++;
  int g, x;
  tally(r, &g, &x);
  if (g >= lkvnet_raft_quorum(r)) { /* a single voter */
    lkvnet_raft_become_leader(r);
    return;
  }
  ask_votes(r, LKVNET_RAFT_MSG_VOTE, r->term, transfer);
}

/* Pre-Vote (Raft thesis 9.6): ask whether an election at term + 1 could
 * be won before raising the term, so a node that was cut off (and keeps
 * timing out) cannot depose a healthy leader when it comes back. */
static void become_precandidate(lkvnet_raft *r) {
  r->role = LKVNET_RAFT_PRECANDIDATE;
  lkvnet_raft_set_lead(r, LKVNET_RAFT_NONE);
  lkvnet_raft_reset_timeout(r);
  tally_reset(r);
  r->cnt.prevote_rounds++;
  int g, x;
  tally(r, &g, &x);
  if (g >= lkvnet_raft_quorum(r)) {
    become_candidate(r, 0);
    return;
  }
  ask_votes(r, LKVNET_RAFT_MSG_PREVOTE, r->term + 1, 0);
}

void lkvnet_raft_campaign_now(lkvnet_raft *r, int transfer) {
  /* a learner, a removed node and a stranger never campaign */
  if (!lkvnet_raft_self_voter(r) || r->role == LKVNET_RAFT_LEADER) return;
  if (r->cfg.pre_vote && !transfer)
    become_precandidate(r);
  else
    become_candidate(r, transfer);
}

void lkvnet_raft_campaign(lkvnet_raft *r) { lkvnet_raft_campaign_now(r, 0); }

/* {======================================================================
** Step: votes, and a follower's side of replication
** ======================================================================= */

static void handle_vote(lkvnet_raft *r, const lkvnet_raft_msg *m) {
  int pre = m->type == LKVNET_RAFT_MSG_PREVOTE;
  uint64_t li = lkvnet_raft_last_index(r), lt = lkvnet_raft_last_term(r);
  /* the up-to-date check (Raft 5.4.1): only a candidate whose log holds
   * every committed entry can win, since a majority holds each one */
  int up_to_date = m->log_term > lt || (m->log_term == lt && m->index >= li);
  int can;
  if (pre)
    can = m->term > r->term; /* a pre-vote is for a term to come */
  else
    can = r->vote == m->from ||
          (r->vote == LKVNET_RAFT_NONE && r->lead == LKVNET_RAFT_NONE);
  lkvnet_raft_msg *resp = lkvnet_raft_send(
      r, pre ? LKVNET_RAFT_MSG_PREVOTE_RESP : LKVNET_RAFT_MSG_VOTE_RESP,
      m->from);
  if (!resp) return; /* as if the request were lost: no vote given */
  if (can && up_to_date) {
    resp->term = m->term;
    if (!pre) {
      r->vote = m->from; /* persisted before resp leaves: must_sync */
      r->elapsed = 0;
    }
  } else {
    resp->term = r->term;
    resp->reject = 1;
  }
}

static void handle_vote_resp(lkvnet_raft *r, const lkvnet_raft_msg *m) {
  int pre = m->type == LKVNET_RAFT_MSG_PREVOTE_RESP;
  if (pre != (r->role == LKVNET_RAFT_PRECANDIDATE)) return;
  if (r->role != LKVNET_RAFT_PRECANDIDATE && r->role != LKVNET_RAFT_CANDIDATE)
    return;
  /* A pre-vote grant names the term asked for (ours + 1); one for an
   * older round (our term was lower then) must not count. */
  if (pre && !m->reject && m->term != r->term + 1) return;
  if (m->term != r->term && !(pre && !m->reject)) return;
  raft_peer *p = lkvnet_raft_peer(r, m->from);
  if (!p || !p->voter) return;
  p->vote = m->reject ? -1 : 1;
  int g, x;
  tally(r, &g, &x);
  int q = lkvnet_raft_quorum(r);
  if (g >= q) {
    if (pre)
      become_candidate(r, 0);
    else
      lkvnet_raft_become_leader(r);
  } else if (x >= q) {
    lkvnet_raft_become_follower(r, r->term, LKVNET_RAFT_NONE);
  }
}

static void commit_to(lkvnet_raft *r, uint64_t c) {
  uint64_t last = lkvnet_raft_last_index(r);
  if (c > last) c = last;
  if (c > r->commit) r->commit = c;
  if (r->ack_matched < r->commit) r->ack_matched = r->commit;
}

static void reject_append(lkvnet_raft *r, const lkvnet_raft_msg *m) {
  lkvnet_raft_msg *resp =
      lkvnet_raft_send(r, LKVNET_RAFT_MSG_APP_RESP, m->from);
  if (!resp) return;
  uint64_t last = lkvnet_raft_last_index(r);
  uint64_t hi = m->index < last ? m->index : last;
  uint64_t hint = lkvnet_raft_find_conflict_by_term(r, hi, m->log_term);
  uint64_t ht = 0;
  (void)lkvnet_raft_term_at(r, hint, &ht);
  resp->reject = 1;
  resp->index = m->index;
  resp->hint_index = hint;
  resp->hint_term = ht;
}

static int handle_append(lkvnet_raft *r, const lkvnet_raft_msg *m) {
  /* a message that breaks the format is dropped, as if lost */
  for (size_t i = 0; i < m->n_entries; i++) {
    const lkvnet_raft_entry *e = &m->entries[i];
    if (e->index != m->index + 1 + i || e->term > m->term ||
        (i > 0 && e->term < m->entries[i - 1].term) || e->term < m->log_term)
      return LKV_OK;
  }
  /* the log matching check (Raft 5.3); an entry at or before the commit
   * index matches any leader's (it is committed, maybe compacted) */
  if (m->index > r->commit) {
    uint64_t t;
    if (lkvnet_raft_term_at(r, m->index, &t) != LKV_OK || t != m->log_term) {
      reject_append(r, m);
      return LKV_OK;
    }
  }
  size_t k = 0;
  for (; k < m->n_entries; k++) {
    const lkvnet_raft_entry *e = &m->entries[k];
    uint64_t t;
    int rc = lkvnet_raft_term_at(r, e->index, &t);
    if (e->index <= r->commit) {
      /* never cut what is committed: a leader sending another entry
       * there lost committed data (a bug); count it, keep ours */
      if (rc == LKV_OK && t != e->term) r->cnt.bad_conflicts++;
      continue;
    }
    if (rc != LKV_OK || t != e->term) break;
  }
  if (k < m->n_entries) {
    int rc = lkvnet_raft_log_append(r, &m->entries[k], m->n_entries - k);
    if (rc != LKV_OK) return rc;
  }
  uint64_t last_new = m->index + m->n_entries;
  if (r->ack_matched < last_new) r->ack_matched = last_new;
  commit_to(r, m->commit < last_new ? m->commit : last_new);
  r->ack_need = last_new;
  r->ack_pending = 1;
  return LKV_OK;
}

static void handle_heartbeat(lkvnet_raft *r, const lkvnet_raft_msg *m) {
  /* the leader sends at most what this node matches */
  commit_to(r, m->commit);
  lkvnet_raft_msg *resp =
      lkvnet_raft_send(r, LKVNET_RAFT_MSG_HEARTBEAT_RESP, m->from);
  if (resp) resp->context = m->context;
}

static void handle_snapshot(lkvnet_raft *r, const lkvnet_raft_msg *m) {
  if (!m->conf || !conf_valid(m->conf)) return;
  uint64_t t;
  if (m->index <= r->commit) {
    r->ack_need = r->commit; /* nothing to install: say how far we are */
  } else if (lkvnet_raft_term_at(r, m->index, &t) == LKV_OK &&
             t == m->log_term) {
    /* our log holds the snapshot's entry: it is committed, and so is
     * everything before it */
    commit_to(r, m->index);
    r->ack_need = m->index;
  } else {
    lkvnet_raft_log_restore(r, m->index, m->log_term, m->conf);
    r->ack_matched = m->index;
    r->ack_need = m->index;
  }
  r->ack_pending = 1;
}

int lkvnet_raft_step(lkvnet_raft *r, const lkvnet_raft_msg *m) {
  if (!m || m->from == r->id || m->from == LKVNET_RAFT_NONE) return LKV_OK;
  int t = m->type;
  int is_vote = t == LKVNET_RAFT_MSG_VOTE || t == LKVNET_RAFT_MSG_PREVOTE;
  int from_leader = t == LKVNET_RAFT_MSG_APP ||
                    t == LKVNET_RAFT_MSG_HEARTBEAT || t == LKVNET_RAFT_MSG_SNAP;

  if (m->term > r->term) {
    if (is_vote && !m->transfer && r->cfg.check_quorum &&
        r->lead != LKVNET_RAFT_NONE && r->elapsed < r->cfg.election_ticks) {
      /* the leader lease: this node heard from a leader less than an
       * election timeout ago, so a majority may still follow it; a vote
       * now could depose it for nothing (a node coming back from a
       * partition, or one removed from the configuration) */
      return LKV_OK;
    }
    if (t == LKVNET_RAFT_MSG_PREVOTE ||
        (t == LKVNET_RAFT_MSG_PREVOTE_RESP && !m->reject)) {
      /* a pre-vote changes no one's term: it names a term to come */
    } else {
      /* no term leapfrogging: a higher term anywhere ends our role */
      lkvnet_raft_become_follower(r, m->term,
                                  from_leader ? m->from : LKVNET_RAFT_NONE);
    }
  } else if (m->term < r->term) {
    if (from_leader && (r->cfg.check_quorum || r->cfg.pre_vote)) {
      /* a stale leader (cut off while we moved on) learns our term and
       * steps down; without this a node whose term ran ahead in a
       * partition could never be heard from again, its votes refused
       * under the others' lease */
      (void)lkvnet_raft_send(r, LKVNET_RAFT_MSG_APP_RESP, m->from);
    } else if (t == LKVNET_RAFT_MSG_PREVOTE) {
      lkvnet_raft_msg *resp =
          lkvnet_raft_send(r, LKVNET_RAFT_MSG_PREVOTE_RESP, m->from);
      if (resp) resp->reject = 1;
    }
    return LKV_OK;
  }

  if (is_vote) {
    handle_vote(r, m);
    return LKV_OK;
  }
  if (r->role == LKVNET_RAFT_LEADER) {
    lkvnet_raft_leader_step(r, m);
    return LKV_OK;
  }
  if (t == LKVNET_RAFT_MSG_VOTE_RESP || t == LKVNET_RAFT_MSG_PREVOTE_RESP) {
    handle_vote_resp(r, m);
    return LKV_OK;
  }
  if (from_leader) {
    /* a candidate of this term meets its leader; a follower hears it */
    if (r->role != LKVNET_RAFT_FOLLOWER || r->lead != m->from)
      lkvnet_raft_become_follower(r, m->term, m->from);
    r->elapsed = 0;
    if (t == LKVNET_RAFT_MSG_APP) return handle_append(r, m);
    if (t == LKVNET_RAFT_MSG_HEARTBEAT)
      handle_heartbeat(r, m);
    else
      handle_snapshot(r, m);
    return LKV_OK;
  }
  if (t == LKVNET_RAFT_MSG_TIMEOUT_NOW && r->role == LKVNET_RAFT_FOLLOWER)
    lkvnet_raft_campaign_now(r, 1);
  return LKV_OK;
}

/* {======================================================================
** Ticks, durability, the Ready cycle
** ======================================================================= */

void lkvnet_raft_tick(lkvnet_raft *r) {
  r->apply_stalled = 0;
  if (r->role == LKVNET_RAFT_LEADER) {
    lkvnet_raft_leader_tick(r);
    return;
  }
  r->elapsed++;
  if (r->elapsed >= r->rand_timeout) {
    r->elapsed = 0;
    lkvnet_raft_campaign_now(r, 0); /* a voter only */
  }
}

void lkvnet_raft_report_leader_gone(lkvnet_raft *r, uint64_t id) {
  int half = r->cfg.election_ticks / 2;
  if (id == LKVNET_RAFT_NONE || r->role != LKVNET_RAFT_FOLLOWER ||
      r->lead != id)
    return;
  r->cnt.leader_gone_reports++;
  lkvnet_raft_set_lead(r, LKVNET_RAFT_NONE);
  /* spread over ticks as the normal timeout is, so that both followers
   * of a dead 3-node leader rarely campaign in the same tick and split
   * the vote */
  r->elapsed = 0;
  r->rand_timeout =
      1 + (half > 1 ? (int)(lkv_splitmix64(&r->rng) % (uint64_t)half) : 0);
}

void lkvnet_raft_durable(lkvnet_raft *r, uint64_t index, uint64_t term) {
  uint64_t t;
  if (index <= r->durable || index > r->stable_last) return;
  if (lkvnet_raft_term_at(r, index, &t) != LKV_OK || t != term) return;
  r->durable = index;
  if (r->role == LKVNET_RAFT_LEADER) lkvnet_raft_maybe_commit(r);
}

/* The commit index written with the hard state: never past the durable
 * log, so a restart never finds a commit index its log cannot back. */
static uint64_t hs_commit(const lkvnet_raft *r) {
  return r->commit < r->durable ? r->commit : r->durable;
}

static uint64_t ackable(const lkvnet_raft *r) {
  return r->ack_matched < r->durable ? r->ack_matched : r->durable;
}

static int ack_due(const lkvnet_raft *r) {
  if (r->role != LKVNET_RAFT_FOLLOWER || r->lead == LKVNET_RAFT_NONE) return 0;
  uint64_t a = ackable(r);
  return a > r->ack_sent || (r->ack_pending && a >= r->ack_need);
}

/* A follower answers an append once its log is durable through what it
 * received: the leader counts that answer toward a commit. */
static void follower_ack(lkvnet_raft *r) {
  if (!ack_due(r)) return;
  lkvnet_raft_msg *m = lkvnet_raft_send(r, LKVNET_RAFT_MSG_APP_RESP, r->lead);
  if (!m) return;
  uint64_t a = ackable(r);
  m->index = a;
  if (a > r->ack_sent) r->ack_sent = a;
  if (a >= r->ack_need) r->ack_pending = 0;
}

int lkvnet_raft_has_ready(const lkvnet_raft *r) {
  if (r->n_out || r->u_n || r->restore || r->n_done) return 1;
  if (r->term != r->prev_hs.term || r->vote != r->prev_hs.vote ||
      hs_commit(r) != r->prev_hs.commit)
    return 1;
  if (r->role == LKVNET_RAFT_LEADER && r->dirty) return 1;
  /* the soft state alone (a leader forgotten, say): the driver routes
   * clients by it */
  if (r->role != r->prev_role || r->lead != r->prev_lead) return 1;
  if (ack_due(r)) return 1;
  uint64_t hi = r->commit < r->durable ? r->commit : r->durable;
  return !r->apply_stalled && r->applied < hi;
}

void lkvnet_raft_ready_get(lkvnet_raft *r, lkvnet_raft_ready *rd) {
  memset(rd, 0, sizeof(*rd));
  if (r->role == LKVNET_RAFT_LEADER)
    lkvnet_raft_flush(r);
  else
    follower_ack(r);
  rd->role = r->role;
  rd->leader = r->lead;
  rd->hs.term = r->term;
  rd->hs.vote = r->vote;
  rd->hs.commit = hs_commit(r);
  rd->must_sync = r->term != r->prev_hs.term || r->vote != r->prev_hs.vote;
  rd->hs_changed = rd->must_sync || rd->hs.commit != r->prev_hs.commit;
  if (r->restore) {
    rd->has_snapshot = 1;
    rd->snap_index = r->snap_index;
    rd->snap_term = r->snap_term;
    rd->snap_conf = r->restore_conf;
  }
  if (r->u_n) {
    lkvnet_raft_entry *es =
        lkvnet_raft_arena_alloc(&r->arena, r->u_n * sizeof(*es));
    if (es) {
      for (size_t i = 0; i < r->u_n; i++) {
        const raft_ent *u = &r->u[i];
        es[i] =
            (lkvnet_raft_entry){u->term, u->index, u->type, u->data, u->len};
      }
      rd->entries = es;
      rd->n_entries = r->u_n;
    }
  }
  r->handed_u = rd->n_entries;
  uint64_t hi = r->commit < r->durable ? r->commit : r->durable;
  r->handed_applied = r->applied;
  if (!r->apply_stalled && r->applied < hi) {
    lkvnet_raft_entry *es;
    size_t n;
    if (lkvnet_raft_slice(r, r->applied + 1, hi + 1, r->cfg.max_apply_bytes,
                          &es, &n) == LKV_OK) {
      rd->committed = es;
      rd->n_committed = n;
      r->handed_applied = r->applied + n;
    } else {
      r->apply_stalled = 1; /* retried at the next tick */
    }
  }
  rd->msgs = r->out;
  rd->n_msgs = r->n_out;
  rd->reads = r->done_reads;
  rd->n_reads = r->n_done;
  r->prev_hs = rd->hs;
  r->prev_role = rd->role;
  r->prev_lead = rd->leader;
  r->handed_restore = r->restore;
  r->in_ready = 1;
}

void lkvnet_raft_advance(lkvnet_raft *r) {
  if (!r->in_ready) return;
  if (r->handed_u) {
    for (size_t i = 0; i < r->handed_u; i++) free(r->u[i].data);
    memmove(r->u, r->u + r->handed_u, (r->u_n - r->handed_u) * sizeof(*r->u));
    r->u_n -= r->handed_u;
    r->stable_last += r->handed_u;
    r->u_off = r->stable_last + 1;
  }
  if (r->handed_restore) r->restore = 0;
  if (r->handed_applied > r->applied) r->applied = r->handed_applied;
  /* configurations at or before the commit index can no longer be cut */
  lkvnet_raft_conf_compact(r, r->commit);
  r->n_out = 0;
  r->n_done = 0;
  lkvnet_raft_arena_reset(&r->arena);
  r->handed_u = 0;
  r->handed_restore = 0;
  r->in_ready = 0;
}

void lkvnet_raft_position(const lkvnet_raft *r, uint64_t *term,
                          uint64_t *last_index) {
  *term = r->term;
  *last_index = lkvnet_raft_last_index(r);
}

void lkvnet_raft_status_get(const lkvnet_raft *r, lkvnet_raft_status *st) {
  memset(st, 0, sizeof(*st));
  st->id = r->id;
  st->role = r->role;
  st->voter = lkvnet_raft_self_voter(r);
  st->learner = lkvnet_raft_conf_is_learner(&r->conf, r->id);
  st->term = r->term;
  st->vote = r->vote;
  st->leader = r->lead;
  st->commit = r->commit;
  st->applied = r->applied;
  st->last_index = lkvnet_raft_last_index(r);
  st->durable = r->durable;
  st->transferee = r->transferee;
  if (r->n_confs && r->confs[r->n_confs - 1].index > r->commit)
    st->pending_conf_index = r->confs[r->n_confs - 1].index;
  st->conf = r->conf;
  if (r->role == LKVNET_RAFT_LEADER) {
    for (size_t i = 0; i < r->n_peers; i++) {
      const raft_peer *p = &r->peers[i];
      lkvnet_raft_progress *o = &st->progress[st->n_progress++];
      o->id = p->id;
      o->voter = p->voter;
      o->state = p->state;
      o->match = p->match;
      o->next = p->next;
      o->recent_active = p->recent_active;
    }
  }
  st->counters = r->cnt;
}
