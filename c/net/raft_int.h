/* raft_int.h - the Raft core's insides, shared by raft.c (roles, elections,
 * Step, Ready), raft_log.c (the log: unstable tail, storage, memory,
 * configurations) and raft_leader.c (replication, commit, ReadIndex,
 * transfer, membership). Not installed; raft.h is the contract. */
#ifndef LKVNET_RAFT_INT_H
#define LKVNET_RAFT_INT_H

#include <stddef.h>
#include <stdint.h>

#include "raft.h"

/* An entry the core owns (the unstable tail): data is its own copy. */
typedef struct raft_ent {
  uint64_t term, index;
  int type;
  unsigned char *data;
  size_t len;
} raft_ent;

/* Memory handed out with a Ready (message entries, committed entries,
 * reads): a chain of blocks, all released at once by advance. */
typedef struct raft_block {
  struct raft_block *next;
  size_t used, cap;
  unsigned char mem[];
} raft_block;

typedef struct raft_arena {
  raft_block *head;
} raft_arena;

/* What a leader knows of one other member. */
typedef struct raft_peer {
  uint64_t id;
  int voter;
  int state;      /* LKVNET_RAFT_PROBE... */
  int probe_sent; /* probing: one append out, wait for its answer */
  uint64_t match, next;
  uint64_t pending_snap;     /* SNAPSHOT: the index sent */
  uint64_t sent_commit;      /* the commit index the last append carried */
  size_t infl_start, infl_n; /* REPLICATE: appends in flight, a ring */
  int recent_active;         /* heard from since the last CheckQuorum */
  int need_send;             /* new entries or commit to carry */
  int force_empty;           /* send an append even with nothing new: an answer
                                may have been lost (match < last after a
                                heartbeat's answer) */
  uint64_t hb_ack;           /* the highest read round it has answered */
  int vote;                  /* election tally: 0 none, 1 granted, -1 refused */
  /* last, so that peer_init clears everything above it cheaply */
  uint64_t infl[LKVNET_RAFT_MAX_INFLIGHT]; /* each one's last index */
} raft_peer;

typedef struct raft_confrec {
  uint64_t index;
  lkvnet_raft_conf conf;
} raft_confrec;

typedef struct raft_readreq {
  uint64_t ctx, index, round; /* round 0: not yet sent */
  int wait_noop;              /* this term has no committed entry yet */
} raft_readreq;

struct lkvnet_raft {
  lkvnet_raft_config cfg;
  lkvnet_raft_storage st;
  uint64_t id;
  uint64_t rng;

  /* ---- persistent state (what the hard state carries) ---- */
  uint64_t term, vote;
  lkvnet_raft_hardstate prev_hs; /* as last handed out */
  int prev_role;                 /* the soft state last handed out */
  uint64_t prev_lead;

  /* ---- volatile state ---- */
  int role;
  uint64_t lead;
  uint64_t commit, applied;
  uint64_t durable; /* the log is durable through this (of this log) */
  int elapsed, hb_elapsed, rand_timeout;
  uint64_t transferee;
  int transfer_elapsed;

  /* ---- the log ---- */
  uint64_t snap_index, snap_term; /* the log starts after this */
  uint64_t stable_last;           /* the last index the storage holds */
  raft_ent *u;                    /* unstable tail: u_off .. u_off+u_n-1 */
  size_t u_n, u_cap;
  uint64_t u_off;
  int restore; /* a snapshot to hand out (install) */
  lkvnet_raft_conf restore_conf;

  /* ---- configuration: the base, then every CONF entry past it ---- */
  lkvnet_raft_conf base_conf;
  raft_confrec *confs;
  size_t n_confs, cap_confs;
  lkvnet_raft_conf conf; /* in force: the last of the above */

  /* ---- the peers: members of conf but this node ---- */
  raft_peer peers[LKVNET_RAFT_MAX_MEMBERS];
  size_t n_peers;
  int self_vote; /* this node's own tally */

  /* ---- a follower's acknowledgements to its leader ---- */
  uint64_t ack_matched; /* known to match the leader through this */
  uint64_t ack_sent;    /* acknowledged through this */
  uint64_t ack_need;    /* an append waits for an answer through this */
  int ack_pending;

  /* ---- ReadIndex ---- */
  raft_readreq *reads;
  size_t n_reads, cap_reads;
  uint64_t read_round;          /* the last round of heartbeats numbered */
  lkvnet_raft_read *done_reads; /* released, for the next Ready */
  size_t n_done, cap_done;

  /* ---- what goes out with the next Ready ---- */
  lkvnet_raft_msg *out;
  size_t n_out, cap_out;
  raft_arena arena;
  int dirty;          /* peers may have something to send */
  int transfer_sent;  /* MSG_TIMEOUT_NOW sent for this transfer */
  uint64_t seen_lead; /* the last leader seen, for leader_changes */
  int apply_stalled;  /* the storage failed a read of committed entries */

  /* ---- the Ready handed out, until advance ---- */
  int in_ready;
  size_t handed_u;         /* unstable entries handed */
  uint64_t handed_applied; /* applied once its committed are applied */
  int handed_restore;

  lkvnet_raft_counters cnt;
};

/* ---- raft_log.c: memory ---- */
void *lkvnet_raft_arena_alloc(raft_arena *a, size_t size);
void lkvnet_raft_arena_reset(raft_arena *a);
void lkvnet_raft_arena_free(raft_arena *a);

/* ---- raft_log.c: the log ---- */
uint64_t lkvnet_raft_last_index(const lkvnet_raft *r);
uint64_t lkvnet_raft_last_term(const lkvnet_raft *r);
/* LKV_OK with *term, or LKV_NOTFOUND (compacted, or past the end). */
int lkvnet_raft_term_at(const lkvnet_raft *r, uint64_t index, uint64_t *term);
/* Copies of the entries [lo, hi) into the arena, at most max_bytes of
 * them but at least one: *out and *n. LKV_NOTFOUND when lo is compacted;
 * LKV_NOMEM; the storage's failure. */
int lkvnet_raft_slice(lkvnet_raft *r, uint64_t lo, uint64_t hi,
                      size_t max_bytes, lkvnet_raft_entry **out, size_t *n);
/* Append entries after cutting the log at their first index (a leader
 * passes entries past its last; a follower its conflicting suffix).
 * Copies data; LKV_NOMEM leaves the log as it was. Updates the
 * configuration for CONF entries cut or added. */
int lkvnet_raft_log_append(lkvnet_raft *r, const lkvnet_raft_entry *es,
                           size_t n);
/* The largest index <= index whose term is <= term (fast backtracking). */
uint64_t lkvnet_raft_find_conflict_by_term(const lkvnet_raft *r, uint64_t index,
                                           uint64_t term);
/* The log becomes empty after (index, term) with configuration conf. */
void lkvnet_raft_log_restore(lkvnet_raft *r, uint64_t index, uint64_t term,
                             const lkvnet_raft_conf *conf);
void lkvnet_raft_log_free(lkvnet_raft *r);

/* ---- raft_log.c: configurations ---- */
/* Rebuild conf from the base and the CONF entries (after a cut). */
void lkvnet_raft_conf_refresh(lkvnet_raft *r);
/* Drop records the log no longer needs: those at or before index but
 * the last of them, which becomes the base. */
void lkvnet_raft_conf_compact(lkvnet_raft *r, uint64_t index);
/* Scan the storage's log for CONF entries (at open). */
int lkvnet_raft_conf_load(lkvnet_raft *r, lkv_err *err);
/* Encode a CONF entry's data into a malloc'd buffer (caller frees). */
int lkvnet_raft_conf_encode(int op, uint64_t node, const lkvnet_raft_conf *conf,
                            const void *ctx, size_t ctx_len,
                            unsigned char **out, size_t *len);

/* ---- raft_log.c: the peers of the configuration in force ---- */
void lkvnet_raft_peers_sync(lkvnet_raft *r); /* peers = conf's members */
void lkvnet_raft_peer_init(lkvnet_raft *r, raft_peer *p, uint64_t id);

/* ---- raft_base.c: shared by the role code, calls no role back ---- */
/* Queue a message (entries and conf already in the arena or static). */
lkvnet_raft_msg *lkvnet_raft_send(lkvnet_raft *r, int type, uint64_t to);
void lkvnet_raft_become_follower(lkvnet_raft *r, uint64_t term, uint64_t lead);
int lkvnet_raft_quorum(const lkvnet_raft *r); /* voters / 2 + 1 */
int lkvnet_raft_self_voter(const lkvnet_raft *r);
void lkvnet_raft_set_lead(lkvnet_raft *r, uint64_t lead);
void lkvnet_raft_reset_timeout(lkvnet_raft *r); /* a new random timeout */
/* Hand a finished read to the driver (LKV_NOMEM: try again later). */
int lkvnet_raft_push_done(lkvnet_raft *r, uint64_t ctx, uint64_t index, int ok);
void lkvnet_raft_reads_fail(lkvnet_raft *r); /* leadership lost */

/* ---- raft.c ---- */
void lkvnet_raft_campaign_now(lkvnet_raft *r, int transfer);

/* ---- raft_leader.c ---- */
raft_peer *lkvnet_raft_peer(lkvnet_raft *r, uint64_t id);
void lkvnet_raft_become_leader(lkvnet_raft *r);
void lkvnet_raft_leader_tick(lkvnet_raft *r);
void lkvnet_raft_leader_step(lkvnet_raft *r, const lkvnet_raft_msg *m);
void lkvnet_raft_maybe_commit(lkvnet_raft *r);
void lkvnet_raft_flush(lkvnet_raft *r); /* send what peers are owed */

#endif
