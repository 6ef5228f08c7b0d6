/* raft.h - the Raft consensus core: a state machine with no I/O, in the
 * shape of etcd's raft package (Step / Ready / Advance). The node (the
 * "driver") feeds it messages, clock ticks, proposals and "durable through
 * index n" events, and takes back, in a Ready, what to persist, what to
 * send, what to apply and which reads to release. docs/raft_core.md
 * describes the protocol as built, the driver contract and what is proven
 * (c/net/raft_sim_test.c, a deterministic simulation of the real core).
 *
 * What the core never does: call libevent, the disk, the clock or a
 * random source of its own (the timer is lkvnet_raft_tick, randomness a
 * seed), block, or keep memory the caller cannot release: everything it
 * hands out is owned by the core and valid until the next
 * lkvnet_raft_advance (Readys) or the call's return (the rest); all of it
 * goes with lkvnet_raft_free.
 *
 * Threads: none inside. A core belongs to one thread at a time; nothing
 * here may be called concurrently on one core. Cores share no state.
 *
 * Errors: lunakv.h's vocabulary. LKV_INVALID for a bad argument or
 * config, LKV_NOMEM when an allocation fails (the core is left as it
 * was: a message that could not be taken in is as if lost, which Raft
 * tolerates), LKV_BUSY for a request the core refuses in its present
 * state (not the leader, a leadership transfer or a configuration change
 * under way): lkvnet_raft_status then says which.
 *
 * ---- The driver contract, in one place --------------------------------
 *
 *  1. Open: build the storage (below) over what the disk holds, with
 *     everything in it durable (today's log syncs what it keeps at open),
 *     and pass the persisted hard state and the state machine's applied
 *     index in the config.
 *  2. Call lkvnet_raft_step for every message received, lkvnet_raft_tick
 *     every tick (say 100 ms: timeouts are counted in ticks),
 *     lkvnet_raft_durable after every fdatasync of the log, and the
 *     proposal/read/transfer calls for clients.
 *  3. After any of these, while lkvnet_raft_has_ready: take the Ready,
 *     handle it in this order, then lkvnet_raft_advance. Between
 *     lkvnet_raft_ready_get and lkvnet_raft_advance call nothing on the
 *     core but lkvnet_raft_status_get (the Ready borrows its memory):
 *       a. snapshot: when has_snapshot, install the snapshot received with
 *          the MSG_SNAP just stepped, durably: the state machine at
 *          snap_index, the log emptied after (snap_index, snap_term), the
 *          configuration snap_conf kept with it;
 *       b. entries: write them to the log; when entries[0].index is not
 *          past the log's last index, cut the log after entries[0].index
 *          - 1 first. They need not be durable yet: report that later
 *          with lkvnet_raft_durable (group commit). Once written they must
 *          be readable through the storage;
 *       c. hard state: when hs_changed, write it; when must_sync as well,
 *          make it durable (fsync) now - the messages of this Ready
 *          depend on it (a vote, a new term). Without must_sync only the
 *          commit index moved, and losing it in a crash is harmless;
 *       d. messages: send them (any order, any of them may be lost);
 *       e. committed: apply them in order (a CONF entry's configuration
 *          took effect when it was appended; applying it is for the
 *          driver's own bookkeeping: lkvnet_raft_conf_decode);
 *       f. reads: each (ctx, index) with ok may be answered once the state
 *          machine has applied through index; !ok means leadership was
 *          lost before the read was confirmed: refuse or retry it.
 *  4. Never send a message of a Ready before (a) and (c) are durable, and
 *     never answer a client's write before its entry has been applied
 *     from committed (the core releases an entry for applying only once
 *     it is committed and durable in this node's own log).
 *
 * What must be durable before what (the invariants the simulation
 * checks): a node's term and vote before any message carrying that term
 * leaves it; a granted vote before the grant is sent; a follower's
 * entries through n before it acknowledges n (the core holds that
 * acknowledgement back until lkvnet_raft_durable says so); a leader
 * counts itself in a majority only through its own durable index; an
 * installed snapshot before the acknowledgement that follows it.
 */
#ifndef LKVNET_RAFT_H
#define LKVNET_RAFT_H

#include <stddef.h>
#include <stdint.h>

#include "lunakv.h"

/* Node ids are the driver's: any non-zero 64-bit number per member (0
 * means "nobody": no vote, no leader). */
#define LKVNET_RAFT_NONE 0u

/* A configuration holds at most this many members, voters and learners
 * together: Raft clusters past 7 voters are rare (every write waits for a
 * majority), and a fixed bound keeps a configuration a plain value. */
#define LKVNET_RAFT_MAX_MEMBERS 16

/* The bound on lkvnet_raft_config.max_inflight: the leader keeps, per
 * follower, the last index of each append in flight in a fixed ring. */
#define LKVNET_RAFT_MAX_INFLIGHT 256

/* ---- entries ----------------------------------------------------------- */

enum {
  LKVNET_RAFT_ENTRY_NORMAL = 1, /* a client's command: opaque bytes */
  LKVNET_RAFT_ENTRY_CONF = 2,   /* a configuration change (conf_decode) */
  LKVNET_RAFT_ENTRY_NOOP = 3    /* a new leader's first entry; no data */
};

typedef struct lkvnet_raft_entry {
  uint64_t term, index;
  int type;                  /* LKVNET_RAFT_ENTRY_* */
  const unsigned char *data; /* borrowed: see who hands the entry out */
  size_t len;
} lkvnet_raft_entry;

/* ---- configuration ----------------------------------------------------- */

typedef struct lkvnet_raft_conf {
  uint64_t voters[LKVNET_RAFT_MAX_MEMBERS];
  uint64_t learners[LKVNET_RAFT_MAX_MEMBERS];
  size_t n_voters, n_learners; /* n_voters + n_learners <= MAX_MEMBERS */
} lkvnet_raft_conf;

enum {
  LKVNET_RAFT_CONF_ADD_VOTER = 1,   /* a new voter, or a learner promoted */
  LKVNET_RAFT_CONF_ADD_LEARNER = 2, /* a new non-voting member */
  LKVNET_RAFT_CONF_REMOVE = 3       /* a voter or learner leaves */
};

/* A CONF entry's data decoded: the change, the whole configuration it
 * leads to (so a node that sees only this entry knows every member) and
 * the driver's context (say the node's URL), borrowing the entry's bytes. */
typedef struct lkvnet_raft_confchange {
  int op;        /* LKVNET_RAFT_CONF_* */
  uint64_t node; /* whom it adds or removes */
  lkvnet_raft_conf conf;
  const unsigned char *ctx;
  size_t ctx_len;
} lkvnet_raft_confchange;

/* Decode a CONF entry's data: LKV_OK, or LKV_CORRUPTION when it is not
 * one (wrong version, lengths, a zero or repeated id). */
int lkvnet_raft_conf_decode(const unsigned char *data, size_t len,
                            lkvnet_raft_confchange *out, lkv_err *err);

/* 1 when id is a voter / learner of c. */
int lkvnet_raft_conf_is_voter(const lkvnet_raft_conf *c, uint64_t id);
int lkvnet_raft_conf_is_learner(const lkvnet_raft_conf *c, uint64_t id);

/* ---- the stable log: storage the driver supplies ----------------------- */

/* The core keeps in memory only the entries it has not yet handed to the
 * driver (the unstable tail); everything else it reads through these
 * callbacks, which the driver implements over its log (rlog.h keeps
 * terms in memory, so term is cheap; entries reads the file). The log
 * holds the entries (snap_index, last_index]; snap_index is the entry a
 * snapshot covers (0: none), so first_index is snap_index + 1. The core
 * reads only indexes it has seen written (it tracks the last one itself
 * after opening), so the callbacks never race its own appends.
 *
 * Compaction is the driver's: it may drop entries up to its applied
 * index at any time between calls, as long as the callbacks then answer
 * for the new start (the core asks again when it needs to). */
typedef struct lkvnet_raft_storage {
  void *ctx;
  /* The snapshot the log starts after: its index, term and the
   * configuration as of that index. 0, 0 and an empty configuration for a
   * log that was never compacted. */
  void (*snapshot)(void *ctx, uint64_t *index, uint64_t *term,
                   lkvnet_raft_conf *conf);
  /* The last index held (snap_index when the log is empty). */
  uint64_t (*last_index)(void *ctx);
  /* The term of the entry at index: LKV_OK, or LKV_NOTFOUND when the
   * index is before snap_index (compacted) or past the last entry;
   * snap_index answers the snapshot's term. */
  int (*term)(void *ctx, uint64_t index, uint64_t *term);
  /* Call emit for each entry of [lo, hi) in order, its bytes borrowed for
   * that call only (the core copies what it keeps), until emit returns
   * non-zero (the core has enough) or hi is reached. LKV_OK;
   * LKV_NOTFOUND when lo is at or before snap_index (compacted); another
   * code when the read fails (the core retries later). */
  int (*entries)(void *ctx, uint64_t lo, uint64_t hi,
                 int (*emit)(void *arg, const lkvnet_raft_entry *e), void *arg);
} lkvnet_raft_storage;

/* ---- messages ---------------------------------------------------------- */

enum {
  /* AppendEntries. index/log_term: the entry before entries (the log
   * matching check); commit: the leader's commit index. */
  LKVNET_RAFT_MSG_APP = 1,
  /* Its answer. Accepted (!reject): index = the last entry the follower
   * holds durably and knows to match the leader's log. Rejected: index =
   * the refused prev index; hint_index/hint_term = the follower's last
   * entry at or before it whose term is at most the leader's log_term
   * (fast backtracking: the leader skips a whole term per round trip). */
  LKVNET_RAFT_MSG_APP_RESP = 2,
  /* Heartbeat: commit (at most what the follower matches) and context
   * (the leader's latest read round, echoed back). */
  LKVNET_RAFT_MSG_HEARTBEAT = 3,
  LKVNET_RAFT_MSG_HEARTBEAT_RESP = 4,
  /* RequestVote and Pre-Vote: index/log_term = the candidate's last
   * entry; a Pre-Vote carries the term the candidate would take (its own
   * + 1) and changes no one's term. transfer: sent on MSG_TIMEOUT_NOW, so
   * receivers ignore their leader lease. */
  LKVNET_RAFT_MSG_VOTE = 5,
  LKVNET_RAFT_MSG_VOTE_RESP = 6,
  LKVNET_RAFT_MSG_PREVOTE = 7,
  LKVNET_RAFT_MSG_PREVOTE_RESP = 8,
  /* Leader to follower: "send it a snapshot". index/log_term = the
   * snapshot's entry, conf its configuration. The bytes are the
   * driver's: it sends its latest snapshot (at least this index) and,
   * on the follower, steps this message (with the index, term and conf
   * of the snapshot it actually received) once all of it has arrived.
   * The follower's core then asks for the install (Ready.has_snapshot)
   * or answers that it needs none. */
  LKVNET_RAFT_MSG_SNAP = 9,
  /* Leadership transfer: "campaign now" (Raft thesis 3.10). */
  LKVNET_RAFT_MSG_TIMEOUT_NOW = 10
};

typedef struct lkvnet_raft_msg {
  int type; /* LKVNET_RAFT_MSG_* */
  uint64_t from, to, term;
  uint64_t index, log_term;
  uint64_t commit;
  uint64_t context;
  int reject;
  uint64_t hint_index, hint_term;
  int transfer;
  const lkvnet_raft_entry *entries; /* MSG_APP */
  size_t n_entries;
  const lkvnet_raft_conf *conf; /* MSG_SNAP; NULL otherwise */
} lkvnet_raft_msg;

/* ---- the state handed back --------------------------------------------- */

typedef struct lkvnet_raft_hardstate {
  uint64_t term, vote, commit;
} lkvnet_raft_hardstate;

enum {
  LKVNET_RAFT_FOLLOWER = 0,
  LKVNET_RAFT_PRECANDIDATE = 1, /* asking for pre-votes; term unchanged */
  LKVNET_RAFT_CANDIDATE = 2,
  LKVNET_RAFT_LEADER = 3
};

/* A ReadIndex result: the read registered with ctx may be served once the
 * state machine has applied through index (ok), or must be refused (!ok:
 * this node stopped leading before it could confirm the read). */
typedef struct lkvnet_raft_read {
  uint64_t ctx, index;
  int ok;
} lkvnet_raft_read;

typedef struct lkvnet_raft_ready {
  /* The soft state, for the driver's routing and /status. */
  int role;        /* LKVNET_RAFT_FOLLOWER... */
  uint64_t leader; /* LKVNET_RAFT_NONE when unknown */
  /* The hard state: write it when hs_changed, sync it when must_sync. */
  lkvnet_raft_hardstate hs;
  int hs_changed, must_sync;
  /* A snapshot to install before anything else (contract 3a). */
  int has_snapshot;
  uint64_t snap_index, snap_term;
  lkvnet_raft_conf snap_conf;
  /* Entries to write (contract 3b), consecutive. */
  const lkvnet_raft_entry *entries;
  size_t n_entries;
  const lkvnet_raft_msg *msgs;
  size_t n_msgs;
  /* Committed entries to apply, consecutive from applied + 1. */
  const lkvnet_raft_entry *committed;
  size_t n_committed;
  const lkvnet_raft_read *reads;
  size_t n_reads;
} lkvnet_raft_ready;

/* ---- the core ---------------------------------------------------------- */

typedef struct lkvnet_raft lkvnet_raft;

typedef struct lkvnet_raft_config {
  uint64_t id; /* this node; non-zero */
  /* Timeouts in ticks. A follower (or candidate) that hears no leader
   * for a random number of ticks in [election_ticks, 2 election_ticks)
   * campaigns; a leader sends heartbeats every heartbeat_ticks. Default
   * 10 and 1 (etcd's, with a 100 ms tick: 1 s and 100 ms). REQUIRES
   * heartbeat_ticks < election_ticks. */
  int election_ticks, heartbeat_ticks;
  uint64_t seed;          /* the randomized timeouts (splitmix64) */
  int pre_vote;           /* 1 (default): Pre-Vote before every election */
  int check_quorum;       /* 1 (default): a leader that has not heard from a
                             majority within an election timeout steps down,
                             and followers ignore votes while they hear from a
                             leader (the leader lease) */
  int campaign_first;     /* a hint for a fresh cluster: with term 0 and an
                             empty log, campaign at the first tick */
  size_t max_msg_bytes;   /* entry bytes per MSG_APP, soft (default 1 MiB) */
  size_t max_inflight;    /* MSG_APPs in flight per follower (default 64,
                             at most LKVNET_RAFT_MAX_INFLIGHT) */
  size_t max_apply_bytes; /* committed bytes per Ready, soft (default 8 MiB) */
  lkvnet_raft_storage storage;
  lkvnet_raft_hardstate hs; /* as persisted ({0,0,0} when fresh) */
  uint64_t applied;         /* the state machine has applied through this;
                               REQUIRES snapshot index <= applied <= hs.commit
                               (commit is raised to it otherwise) */
  /* The configuration of a cluster that has none yet: used when the
   * storage holds neither a snapshot nor a CONF entry. Every founding
   * member is given the same voters; a node that joins a running cluster
   * gives none and learns its configuration from the leader. */
  lkvnet_raft_conf bootstrap;
} lkvnet_raft_config;

/* Fill c with the defaults above (ids, storage and state zero). */
void lkvnet_raft_config_init(lkvnet_raft_config *c);

/* Open a core on c (copied; the storage's ctx must outlive the core).
 * Reads the storage's snapshot and scans its log for CONF entries (the
 * configuration in force is the last one appended, committed or not).
 * LKV_INVALID for a bad config, LKV_NOMEM, or the storage's error. */
int lkvnet_raft_new(const lkvnet_raft_config *c, lkvnet_raft **out,
                    lkv_err *err);
/* Free r and everything it owns (a Ready not yet advanced included). */
void lkvnet_raft_free(lkvnet_raft *r);

/* Take in a message addressed to this node (m->to is not checked: the
 * driver routed it). Bytes are borrowed for the call. Stale or
 * malformed messages are dropped (LKV_OK: the network may do the same);
 * LKV_NOMEM when the core could not keep what it should have (as if the
 * message were lost). */
int lkvnet_raft_step(lkvnet_raft *r, const lkvnet_raft_msg *m);

/* One tick of the logical clock. */
void lkvnet_raft_tick(lkvnet_raft *r);

/* The log is durable through index, whose entry has term term (the term
 * guards against a report that crossed a cut: it is ignored unless the
 * core's entry at index still has that term). */
void lkvnet_raft_durable(lkvnet_raft *r, uint64_t index, uint64_t term);

/* Append a client's command (a NORMAL entry with a copy of data) to the
 * leader's log. *index and *term (may be NULL) name the entry: the
 * proposal succeeded exactly when the entry applied at *index has term
 * *term; another term there means it was lost and never applies. LKV_BUSY
 * when this node is not the leader, or is transferring leadership. */
int lkvnet_raft_propose(lkvnet_raft *r, const void *data, size_t len,
                        uint64_t *index, uint64_t *term, lkv_err *err);

/* Propose a single-server configuration change (op LKVNET_RAFT_CONF_*
 * for node, ctx copied into the entry). It takes effect on each node as
 * soon as it is appended there. LKV_BUSY when not the leader, a transfer
 * runs, another change is not yet committed, or this term's first entry
 * is not yet committed (a new leader must commit one entry of its term
 * before a change: the single-server bug of Raft's membership, Ongaro
 * 2015); LKV_INVALID for a change that does not apply (adding a member
 * already in that role, removing a non-member or the last voter, a
 * learner demoted from voter, more than LKVNET_RAFT_MAX_MEMBERS). A
 * leader that removes itself goes on leading until the change commits,
 * without counting itself, then hands over to the most caught-up voter
 * and steps down. */
int lkvnet_raft_propose_conf(lkvnet_raft *r, int op, uint64_t node,
                             const void *ctx, size_t ctx_len, uint64_t *index,
                             uint64_t *term, lkv_err *err);

/* Ask for a linearizable read (ReadIndex). The leader notes its commit
 * index, confirms that it still leads with a round of heartbeats and
 * then releases (ctx, index) in a Ready's reads; a leader whose term has
 * no committed entry yet first waits for its no-op. Reads asked between
 * two Readys share one round. LKV_BUSY when not the leader. */
int lkvnet_raft_read_index(lkvnet_raft *r, uint64_t ctx, lkv_err *err);

/* Hand leadership to voter target (Raft thesis 3.10): proposals are
 * refused while the target catches up; once it holds the whole log it is
 * told to campaign at once (MSG_TIMEOUT_NOW). Abandoned after an election
 * timeout. LKV_BUSY when not the leader; LKV_INVALID when target is not
 * another voter. */
int lkvnet_raft_transfer(lkvnet_raft *r, uint64_t target, lkv_err *err);

/* Campaign now (Pre-Vote first when on): for tools and tests. */
void lkvnet_raft_campaign(lkvnet_raft *r);

/* The transport could not reach id (a leader's hint: its follower goes
 * back to probing), or a snapshot sent to id arrived whole (ok) or
 * failed. */
void lkvnet_raft_report_unreachable(lkvnet_raft *r, uint64_t id);

/* The transport saw the connection of leader id end from its side (a
 * killed process's sockets close at once; a paused one's stay open). A
 * follower that follows id forgets it, so that it campaigns within half
 * an election timeout (at random, at least one tick) instead of waiting
 * a whole one, and grants votes as a node with no leader does: the
 * others saw the same close, so their lease holds none of them back.
 * Only a hint: a live leader keeps its followers (a lone follower's
 * pre-vote is refused under the others' lease, and the leader's next
 * message brings it back), and safety never rests on it. Ignored
 * unless this node follows id. */
void lkvnet_raft_report_leader_gone(lkvnet_raft *r, uint64_t id);
void lkvnet_raft_report_snapshot(lkvnet_raft *r, uint64_t id, int ok);

int lkvnet_raft_has_ready(const lkvnet_raft *r);
/* Fill *rd (see the contract above); everything it points to is the
 * core's until lkvnet_raft_advance. */
void lkvnet_raft_ready_get(lkvnet_raft *r, lkvnet_raft_ready *rd);
/* The last Ready has been handled: entries written, committed applied. */
void lkvnet_raft_advance(lkvnet_raft *r);

/* ---- what the core knows, for /status and /metrics --------------------- */

enum {
  LKVNET_RAFT_PROBE = 0,     /* a follower whose match is unknown: one
                                append per heartbeat until it answers */
  LKVNET_RAFT_REPLICATE = 1, /* streaming, up to max_inflight appends */
  LKVNET_RAFT_SNAPSHOT = 2   /* waiting for a snapshot to arrive */
};

typedef struct lkvnet_raft_progress {
  uint64_t id;
  int voter;
  int state; /* LKVNET_RAFT_PROBE... */
  uint64_t match, next;
  int recent_active;
} lkvnet_raft_progress;

typedef struct lkvnet_raft_counters {
  uint64_t elections_started; /* became candidate */
  uint64_t elections_won;
  uint64_t prevote_rounds;
  uint64_t leader_changes; /* a different leader seen (or became one) */
  uint64_t read_index_rounds;
  uint64_t transfers;           /* MSG_TIMEOUT_NOW sent */
  uint64_t quorum_lost;         /* stepped down by CheckQuorum */
  uint64_t leader_gone_reports; /* followed leaders forgotten at once
                                   (lkvnet_raft_report_leader_gone) */
  uint64_t dropped_msgs;        /* messages not sent for want of memory */
  uint64_t storage_errors;
  uint64_t bad_conflicts; /* a leader's append contradicting committed
                             entries (refused: only a buggy or corrupt
                             leader sends one) */
} lkvnet_raft_counters;

typedef struct lkvnet_raft_status {
  uint64_t id;
  int role;
  int voter, learner; /* this node's place in its configuration; neither:
                         not a member (removed, or not yet added) */
  uint64_t term, vote, leader;
  uint64_t commit, applied, last_index, durable;
  uint64_t transferee;         /* a transfer under way to it, or NONE */
  uint64_t pending_conf_index; /* an uncommitted CONF entry, or 0 */
  lkvnet_raft_conf conf;
  lkvnet_raft_progress progress[LKVNET_RAFT_MAX_MEMBERS]; /* leader only */
  size_t n_progress;
  lkvnet_raft_counters counters;
} lkvnet_raft_status;

void lkvnet_raft_status_get(const lkvnet_raft *r, lkvnet_raft_status *st);

/* The status's term and last_index alone, without its copy: what a
 * caller on every request needs. */
void lkvnet_raft_position(const lkvnet_raft *r, uint64_t *term,
                          uint64_t *last_index);

/* "leader", "follower", "candidate", "precandidate". Static storage. */
const char *lkvnet_raft_role_name(int role);

#endif
