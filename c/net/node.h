/* node.h - the HTTP node's state, and the functions its files share.
 * Private to c/net: the public interface is lkvnet.h. Everything here is
 * used on the event loop's thread only.
 *
 * The node's files, each calling only files listed above it (so none
 * calls back into a caller):
 *
 *   loop.c        the clock, the log line, waking the Raft driver
 *   hparse.c      HTTP/1.1 request heads and chunked bodies (hparse.h;
 *                 pure)
 *   hserver.c     the HTTP server on the node's port: connections, their
 *                 deadlines, the cap, accept() pauses, and the requests
 *                 (hreq.h) the routes read and answer; a whole request
 *                 goes to the routes through s->dispatch
 *   node.c        reserved keys, replies and their counts, held requests,
 *                 query parsing, outgoing connections, node ids
 *   memberconf.c  node URLs, the kept configuration with them (memberconf.h;
 *                 pure)
 *   overlay.c     a leader's proposed, unapplied writes, as calls read them
 *   peers.c       the nodes known by id and URL (the peer slots), learning
 *                 URLs, who is a member
 *   logcompact.c  when to cut the replication log
 *   apply.c       committed entries into the engine, the writes waiting
 *                 for their entry, the reads waiting for an index
 *   cmd.c         the data of a NORMAL entry: commands, a call's batch
 *                 (pure)
 *   gateenv.c     the engine env of a test hook (LUNAKV_TEST_ENGINE_GATE)
 *   wire.c        the Raft messages' wire format (wire.h; pure)
 *   repl.c        the transport: the core's messages to the other nodes
 *                 (POST /raft), and the leader's snapshot streams
 *   follow.c      the receiving side: /raft, the /snapshot install, /sync,
 *                 the token check
 *   raftnode.c    the driver of the Raft core (raft.h): open, the storage
 *                 over the log, the Ready cycle, proposals, reads
 *   forward.c     a follower passing requests to the leader
 *   members.c     /add_node, /remove_node, a learner's promotion, --join
 *                 (a wiped member's removal, then its addition), a
 *                 member's probe of its leader
 *   metrics.c     /status, /stats, /health, /metrics
 *   funcs.c       the stored functions' routes: libraries and calls
 *   routes.c      a request's way in, and the client routes
 *   server.c      open, the loop's events (syncer, ticks, the driver's
 *                 wake-up, signals), close
 *
 * The core is stepped, ticked or told of durability from several files;
 * each then calls lkvnet_node_wake, which makes the loop run the driver's
 * Ready cycle (lkvnet_node_raft_run) once the current event is done: the
 * files below raftnode.c never call it, so the calls stay one way.
 */
#ifndef LKVNET_NODE_H
#define LKVNET_NODE_H

#include <event2/http.h>
#include <stddef.h>
#include <stdint.h>

#include "hardstate.h"
#include "hreq.h"
#include "json.h"
#include "lkvnet.h"
#include "raft.h"
#include "rlog.h"

/* A request's route, which the metrics count by (its names: metrics.c). */
enum {
  LKVNET_ROUTE_SET,
  LKVNET_ROUTE_DELETE,
  LKVNET_ROUTE_GET,
  LKVNET_ROUTE_SCAN,
  LKVNET_ROUTE_STATUS,
  LKVNET_ROUTE_STATS,
  LKVNET_ROUTE_HEALTH,
  LKVNET_ROUTE_METRICS,
  LKVNET_ROUTE_KV,
  LKVNET_ROUTE_RAFT,
  LKVNET_ROUTE_SNAPSHOT,
  LKVNET_ROUTE_SYNC,
  LKVNET_ROUTE_TRANSFER,
  LKVNET_ROUTE_ADD_NODE,
  LKVNET_ROUTE_REMOVE_NODE,
  LKVNET_ROUTE_FUNCTIONS, /* /functions and /functions/{library} */
  LKVNET_ROUTE_CALL,      /* /call/{function} */
  LKVNET_ROUTE_OTHER,
  LKVNET_NROUTES
};
/* The metrics' shape (the tables are in node.c) */
#define LKVNET_NSTATUS 11  /* status codes counted one by one */
#define LKVNET_NBUCKETS 13 /* latency histogram buckets */

/* Where a --join stands (members.c): asking to be added; a fresh node
 * whose URL the cluster counts already asking to remove it first (then
 * to be added again); added at s->join_index, a fresh node waiting to
 * hold that entry; done (or never started with --join). */
enum {
  LKVNET_JOIN_ADD,
  LKVNET_JOIN_REMOVE,
  LKVNET_JOIN_CATCHUP,
  LKVNET_JOIN_DONE
};

/* Membership (peers.c, members.c; docs/replication.md, "Membership"). A
 * node sends its URL on every /raft and /snapshot request; a leader that
 * does not count the sender as a member answers with its term in
 * NOT_MEMBER; a snapshot's chunks carry every member's URL. */
#define LKVNET_FROM_HEADER "X-Lunakv-From"
#define LKVNET_NOT_MEMBER_HEADER "X-Lunakv-Not-Member"
#define LKVNET_MEMBERS_HEADER "X-Lunakv-Members"
/* The nodes a node keeps URLs and connections for: the members, and a
 * few others heard from (a slot of a non-member is reused when full). */
#define LKVNET_PEER_SLOTS 64
/* A learner is promoted to voter once its match index is within this
 * many entries of the leader's last index (and it answered within an
 * election timeout). */
#define LKVNET_PROMOTE_MAX_LAG 64

/* Every request the node holds past its handler (a write waiting for its
 * commit, a follower's /append waiting for its sync, a consistent read, a
 * forwarded request) starts with this, so a drain knows how many answers
 * are still owed (s->waiting). A client that hangs up meanwhile costs
 * nothing special: libevent keeps the request until it is answered, and
 * the answer then only frees it. */
typedef struct lkvnet_held {
  lkvnet_req *req; /* NULL once answered or gone */
  lkvnet_server *s;
  int route;
  double start, deadline;
} lkvnet_held;

/* A client's write proposed on the leader, waiting for the apply of the
 * entry (index, term) the core gave it: that entry applied means written
 * (200); another term applied at index means it was lost, never written
 * (503 "not written"); its leader deposed meanwhile means nobody knows
 * yet (503 "outcome unknown"). In index order. */
/* What a held write costs besides its key and value (this record, its
 * command's header, the request libevent keeps, the core's entry), as
 * counted against --max-uncommitted-bytes: a flood of tiny writes is
 * bounded too. */
#define LKVNET_PENDING_OVERHEAD 160
/* Committed entries a node lets wait for its engine (applying put off
 * while the engine flushes or compacts, or stopped by an engine error)
 * before it pushes back: a leader refuses new writes (503, Retry-After),
 * a follower stops taking appends (the leader sends them again later),
 * so neither the log nor the writes held in memory grow without bound.
 * etcd refuses proposals past 5,000. */
#define LKVNET_MAX_APPLY_LAG 8192u

typedef struct lkvnet_pending {
  lkvnet_held h;
  struct lkvnet_pending *next;
  uint64_t index, term;
  size_t bytes; /* key, value and overhead, counted in pending_bytes */
  char *extra;  /* NULL, or members added to the 200 answer after
                   "index" (", \"result\": ..."), malloc'd */
} lkvnet_pending;

struct lkvnet_waiter;
/* How a released read is answered (the route that made the waiter). */
typedef void (*lkvnet_read_fn)(lkvnet_server *s, struct lkvnet_waiter *w,
                               lkvnet_req *req);

/* A consistent read waiting, first for the core to confirm the leadership
 * (ReadIndex: target is UINT64_MAX until then), then for the apply of
 * target. ctx names it to the core. */
typedef struct lkvnet_waiter {
  lkvnet_held h;
  struct lkvnet_waiter *next;
  lkvnet_read_fn serve;
  uint64_t target, ctx;
  uint64_t floor;      /* served no earlier than this index's apply either */
  uint64_t floor_term; /* and only by a leader still in this term */
  char *key;           /* the route's argument (the key, the query), malloc'd */
  size_t klen;
} lkvnet_waiter;

enum { LKVNET_PEER_UNKNOWN, LKVNET_PEER_UP, LKVNET_PEER_DOWN };

/* Another node of the cluster, as the transport sees it: its id (a hash
 * of its URL), the connection the core's messages go by (POST /raft, one
 * request per Ready per peer; evhttp queues them in order), and, on a
 * leader, the snapshot being streamed to it and the core's view of its
 * match index (for log compaction and /status). */
/* A body of messages waiting to go to a peer (repl.c). */
typedef struct lkvnet_outbox {
  struct lkvnet_outbox *next;
  unsigned char *buf;
  size_t len, cap;
} lkvnet_outbox;

typedef struct lkvnet_peer {
  lkvnet_server *s;
  uint64_t id;
  char *url, *hostport;
  struct evhttp_connection *conn;
  /* a snapshot stream's own connection (made at its first stream): its
   * chunks wait on the follower's wipe, sync and rewrite, far longer
   * than the messages on conn may, and must not hold them up */
  struct evhttp_connection *snap_conn;
  uint64_t next_index, match_index;
  int inflight, state;
  /* messages encoded while a POST /raft to this peer was in flight: they
   * go in the next ones, when it answers, oldest first (repl.c) */
  struct lkvnet_outbox *pend, *pend_tail;
  size_t pend_bytes;
  double last_send, last_contact, retry_at, backoff;
  char last_error[200];
  uint64_t appends, entries_sent, failures, dropped;
  /* a snapshot being streamed: an engine iterator (one consistent view)
   * at applied index snap_index, snap_sent pairs so far */
  lkv_iter *snap;
  uint64_t snap_index, snap_term, snap_sent, snap_chunk;
  lkvnet_raft_conf snap_conf;
  int snap_done, snap_inflight;
  /* how the last stream ended, not yet told to the core: 1 installed,
   * -1 failed, 0 nothing to tell (lkvnet_node_snapshot_reports) */
  int snap_report;
  /* until then, the log is not cut past snap_index for this peer even
   * while it is down: it has just installed that snapshot and catches up
   * from there (a big store's install leaves it behind and silent for a
   * while; a cut would send it another snapshot, forever) */
  double snap_hold_until;
  uint64_t snapshots_sent;
  int member; /* in this node's configuration (peers.c, after each Ready) */
  /* the index of the last entry seen (written, read or applied) that
   * added it as a learner, 0 when none: it is promoted no sooner than
   * its log holds that entry (members.c) */
  uint64_t added_index;
} lkvnet_peer;

/* The client connections (hserver.c): each is in the list of its phase,
 * oldest first. READING: its request has begun (or it was just
 * accepted), read_timeout_ms applies; HANDLING: the node has the request
 * (held or being answered); WRITING: its answer is made but the socket
 * has not taken all of it, the larger of the two timeouts applies; IDLE:
 * a keep-alive connection between requests, idle_timeout_ms applies. */
enum {
  LKVNET_CONN_WRITING,
  LKVNET_CONN_READING,
  LKVNET_CONN_HANDLING,
  LKVNET_CONN_IDLE,
  LKVNET_NCONN_PHASES
};
typedef struct lkvnet_conn lkvnet_conn;
typedef struct lkvnet_conn_list {
  lkvnet_conn *head, *tail;
} lkvnet_conn_list;
typedef struct lkvnet_conns {
  lkvnet_conn_list lists[LKVNET_NCONN_PHASES];
  struct evconnlistener *listener;
  size_t open; /* accepted and not yet closed (the cap's count) */
  struct event *retry_ev, *tick_ev;
  int accepting;            /* the listener is enabled */
  int full;                 /* at max_conns: not accepting */
  int paused;               /* accept() failed: not accepting until retry_ev */
  double backoff;           /* the current pause, seconds */
  uint64_t accept_failures; /* since accept() last went LOG_EVERY s
                               without failing */
  uint64_t unlogged;        /* failures since the last log line */
  double failing_since, last_failure, last_log, full_logged;
  /* metrics */
  uint64_t accept_errors, read_timeouts, idle_timeouts;
} lkvnet_conns;

/* overlay.c: two generations of the leader's proposed, unapplied writes,
 * each sorted by key; end is the index of its last entry. */
typedef struct lkvnet_ovl_gen {
  struct lkvnet_ovl_item **v;
  size_t n, cap, bytes;
  uint64_t end;
} lkvnet_ovl_gen;

struct lkvnet_overlay {
  lkvnet_ovl_gen g[2]; /* g[0] the older */
  int valid; /* it holds every write of the log past the applied index */
};

struct lkvnet_server {
  char *data_dir, *host, *my_url, *hint_url, *token;
  /* the current leader's URL (one of nodes, or my_url), NULL when unknown */
  const char *leader_url;
  /* the file system of DATA_DIR (the engine's env, lkv_env_posix() when
   * none was given): the log, the term file and the directory go through
   * it; the caller keeps it alive until lkvnet_server_close */
  const lkv_env *env;
  char **nodes;
  size_t nnodes;
  size_t max_body;
  int write_timeout_ms, heartbeat_ms, election_ms;
  int read_timeout_ms, idle_timeout_ms;
  size_t max_conns;
  lkvnet_conns conns;
  /* test hook (LUNAKV_TEST_COMPACTION_GATE): a log compaction waits while
   * this file exists, before it touches the disk; NULL: none. Fixed at
   * open: the compaction's thread reads it too. */
  char *test_gate;
  int test_install_delay_ms; /* spec/23's slow install (0: none) */
  uint64_t compaction_threshold;
  lkvnet_log_fn log;
  void *log_ctx;
  int port;
  int leader; /* this node leads now (the core's role) */
  /* Raft (raftnode.c): the core, this node's id, the soft state of the
   * last Ready, the hard state as persisted */
  lkvnet_raft *raft;
  lkvnet_hardstate *hs; /* the term file, open (hardstate.h) */
  uint64_t id, leader_id, vote;
  int role;
  uint64_t *node_ids;     /* of nodes[] */
  lkvnet_raft_conf conf;  /* the configuration kept with the snapshot */
  unsigned char *scratch; /* the storage's entry bytes, borrowed per emit */
  size_t scratch_cap;
  uint64_t next_ctx; /* of the next ReadIndex */
  uint64_t leader_changes_seen;
  /* failed stores of the term file (retried Ready after Ready): all of
   * them, those of the current run, those since its last log line, and
   * when that line was (0: none in this run) */
  uint64_t hs_failures, hs_run, hs_unlogged;
  double hs_logged;
  struct event *ready_ev, *raft_tick_ev;

  lkv_db *db;
  lkv_batch *batch;
  lkv_buf getbuf;
  lkvnet_rlog *rlog;
  lkvnet_entry *append_buf; /* a Ready's entries as the log takes them */
  lkvnet_overlay ovl;       /* what calls read above the engine (leader) */
  uint64_t ovl_term;        /* the term it was started in */
  uint64_t ovl_from;        /* the log's last index when it started: it
                               holds every write proposed after that */
  uint64_t lib_index;       /* the last entry proposed that wrote a
                               library (calls wait for its apply) */
  size_t append_cap;
  int pipefd[2];

  struct event_base *base;
  struct event *notify_ev, *tick_ev, *sigterm_ev, *sigint_ev;

  uint64_t term, commit_index, applied_index;
  lkvnet_pending *head, *tail; /* in index order */
  size_t pending_bytes;        /* keys and values of the pending writes */
  size_t max_uncommitted;
  lkvnet_waiter *waiters;
  size_t waiting; /* held requests not yet answered */
  /* The node is shutting down: SIGTERM or SIGINT began a drain, or
   * lkvnet_server_close runs. New writes and forwards get 503, and the
   * listener is gone for good (removed by the drain, freed by close). */
  int draining;
  double drained_at; /* when a drain's last held request was answered */
  lkv_err apply_err; /* sticky: the engine refused an apply */
  /* Committed entries the engine could not take without waiting for its
   * flushes or compactions (LKV_BUSY from a LKV_WRITE_NO_STALL write):
   * they wait in the log, from applied_index + 1 through apply_hi (0:
   * none wait), and apply_ev tries them again (apply.c). */
  uint64_t apply_hi;
  uint64_t max_apply_lag; /* LKVNET_MAX_APPLY_LAG, or a test hook's */
  struct event *apply_ev;
  double apply_behind_since, apply_behind_logged;
  uint64_t apply_deferrals;    /* times applying had to wait */
  uint64_t apply_lag_refusals; /* writes refused: applying too far behind */
  uint64_t apply_lag_drops;    /* appends dropped: applying too far behind */
  uint64_t install_busy; /* snapshot chunks refused: the engine was busy */

  /* every other node */
  lkvnet_peer *peers;
  size_t npeers;
  uint64_t compactions;
  uint64_t compact_index, compact_term; /* of the compaction running */
  /* connections to the leader, opened as concurrency needs them: evhttp
   * sends one request at a time on each; fwd_peer is the peer each goes
   * to (a slot whose leader is no longer leader is freed once idle) */
  struct evhttp_connection *fwd[LKVNET_FORWARD_CONNS];
  int fwd_busy[LKVNET_FORWARD_CONNS];
  size_t fwd_peer[LKVNET_FORWARD_CONNS];
  struct lkvnet_fwd *fwds; /* every forwarded request not yet answered */
  size_t fwd_bytes;        /* the bodies they hold */
  size_t nfwd;
  int needs_snapshot; /* the engine holds an unfinished install */
  uint64_t install_index, install_got, install_term;
  lkvnet_raft_conf install_conf;
  int installing;
  char *install_last; /* the last key the install wrote (NULL: none yet) */
  size_t install_last_len;
  int install_stepped; /* its MSG_SNAP went to the core; the end is due */
  int log_failed;      /* the log failed: quiet until it is durable again */
  int hinted; /* LEADER_URL names this node and no term has begun yet */
  /* a leadership transfer under way (POST /transfer_leader, or SIGTERM's
   * hand-over): its target, its deadline, the request waiting for it */
  uint64_t transfer_to;
  double transfer_deadline;
  lkvnet_held transfer_h;
  /* requests waiting for a leader (park.c), in arrival order, and how a
   * request goes through the routes again (routes.c) */
  struct lkvnet_parked *parked, *parked_tail;
  size_t nparked;
  uint64_t parked_total;
  void (*dispatch)(lkvnet_server *s, lkvnet_req *req, double start);
  /* membership (peers.c, members.c): started with --join (no founding
   * voters); a leader of term not_member_term said it does not count
   * this node (cleared when a leader's append or heartbeat arrives);
   * when a leader's message last arrived, and the next probe of the
   * members while none does */
  int joining;
  int not_member;
  uint64_t not_member_term;
  double leader_heard, probe_at;
  /* a configuration change waiting for its entry (conf_index, conf_term)
   * to apply (apply.c answers it) */
  lkvnet_held conf_h;
  uint64_t conf_index, conf_term;
  /* --join (members.c): whom to ask, until when, the request in flight
   * (to LKVNET_JOIN_ADD's or _REMOVE's route), where the join is */
  char *join_url, *join_hostport;
  struct evhttp_connection *join_conn;
  double join_deadline, join_next;
  int join_inflight, join_phase;
  lkv_err join_err; /* the join failed: lkvnet_server_run returns it (the
                       last unsuccessful answer's text until then) */
  /* The join of a node that began on a fresh directory is unfinished
   * (the join mark, hardstate.h, is on disk): whatever its URL voted is
   * not in its term file, so it drops vote and pre-vote requests, never
   * campaigns and serves no read, until its log holds (join_index,
   * join_term), the entry that added it (answered at join_added). */
  int join_unfinished;
  uint64_t join_index, join_term;
  double join_added;
  /* the cluster refused to remove this URL's old membership (join_refusal
   * says how): /health and /status say so, client requests get 503 */
  int join_refused;
  lkv_err join_refusal;
  uint64_t join_votes_dropped; /* requests dropped while unfinished */
  /* stored functions (funcs.c): the binding's hooks, when it gave them */
  lkvnet_functions fns;
  int has_fns;
  /* raftnode.c is between a Ready's get and its advance: nothing may
   * propose to the core (a call released then runs on the next pass) */
  int in_ready;

  /* metrics */
  /* +1: any other status */
  uint64_t requests[LKVNET_NROUTES][LKVNET_NSTATUS + 1];
  uint64_t hist[LKVNET_NROUTES][LKVNET_NBUCKETS];
  double lat_sum[LKVNET_NROUTES];
  uint64_t lat_count[LKVNET_NROUTES];
};

/* ---- node.c ----------------------------------------------------------- */

/* The metrics' status codes (LKVNET_NSTATUS) and latency buckets
 * (LKVNET_NBUCKETS, upper bounds in seconds), for the counts of every
 * reply and for /metrics. */
extern const int lkvnet_node_status_codes[];
extern const double lkvnet_node_latency_buckets[];

double lkvnet_node_now(void); /* CLOCK_MONOTONIC seconds */
/* Write what an outgoing connection, evcon, has to send in this loop
 * iteration. evhttp only enables a connection's write event when a
 * request is made, so
 * the bytes would leave in the next iteration, after an epoll_ctl to ask
 * for EPOLLOUT and an epoll_wait to hear it: the write event is made
 * active instead, and the bufferevent writes at once (or, when the socket
 * is full or still connecting, waits as it always does). The write is the
 * bufferevent's own (its callback, with evhttp's completion after it);
 * only the event it waits on is reached through bufferevent_struct.h,
 * public in libevent 2.1. evcon may be NULL (nothing then). */
void lkvnet_node_write_now(struct evhttp_connection *evcon);

/* A line to the node's log callback (stderr, timestamped, without one). */
void lkvnet_node_log(lkvnet_server *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Keys under LKVNET_RESERVED_PREFIX belong to the node, not to clients. */
int lkvnet_node_is_reserved(const char *k, size_t n);
/* A stored library's keys (LKVNET_LIB_PREFIX, LKVNET_LIBLIMITS_PREFIX):
 * reserved, but replicated (log entries and snapshots carry them). */
int lkvnet_node_is_library_key(const char *k, size_t n);
uint64_t lkvnet_node_last_index(lkvnet_server *s); /* of the replication log */

/* Replies: a request ends in exactly one (a held one: through
 * lkvnet_node_unhold, or lkvnet_node_held_json and _held_error). Each is
 * counted for /metrics under route, with its latency from start. */
void lkvnet_node_reply(lkvnet_server *s, lkvnet_req *req, int route,
                       double start, int code, const char *ctype,
                       const char *data, size_t len);
void lkvnet_node_reply_json(lkvnet_server *s, lkvnet_req *req, int route,
                            double start, int code,
                            lkvnet_jbuf *b); /* frees b */
/* {"ok": false, "error": the message} */
void lkvnet_node_reply_error(lkvnet_server *s, lkvnet_req *req, int route,
                             double start, int code, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
int lkvnet_node_http_status_of(int lkv_code); /* an LKV_* code's HTTP status */
/* "name": v, as a string when UTF-8, else base64 beside name_encoding. */
void lkvnet_node_put_bytes_member(lkvnet_jbuf *b, const char *name,
                                  const char *v, size_t n);

/* Hold a request past its handler (s->waiting counts it until answered). */
void lkvnet_node_hold(lkvnet_server *s, lkvnet_held *h, lkvnet_req *req,
                      int route, double start, double deadline);
/* Take a held request back to answer it (NULL when it is gone already). */
lkvnet_req *lkvnet_node_unhold(lkvnet_held *h);
/* Answer a held request (unless it is gone) with an error. */
void lkvnet_node_held_error(lkvnet_held *h, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Answer a held request (unless it is gone); frees b either way. */
void lkvnet_node_held_json(lkvnet_held *h, int code, lkvnet_jbuf *b);

/* Query parameter name, URL-decoded, malloc'd (NULL: absent, or out of
 * memory when *found). */
char *lkvnet_node_query_param(const char *query, const char *name, size_t *len,
                              int *found);
/* A limit: decimal digits only, at most 1000000. 0, or -1. */
int lkvnet_node_parse_limit(const char *v, long *out);
/* "http://host:port": a client connection of this loop, and the Host
 * header to send (*hostport, malloc'd); NULL on failure (err says why). */
struct evhttp_connection *lkvnet_node_connect_url(lkvnet_server *s,
                                                  const char *url,
                                                  char **hostport,
                                                  lkv_err *err);

/* A node's id: a non-zero 64-bit hash of its URL, normalised (scheme and
 * host lower-cased, a trailing slash dropped), so every node derives the
 * same id for the same node. */
uint64_t lkvnet_node_id_of(const char *url);
/* Run the driver's Ready cycle once the current event is handled. */
void lkvnet_node_wake(lkvnet_server *s);
/* 1 when the node may campaign: not with a partial engine (an unfinished
 * install: it must never lead) nor with an unfinished join (it must not
 * vote, not even for itself). */
int lkvnet_node_may_campaign(const lkvnet_server *s);
/* A 503 with Retry-After: 1 and {"ok": false, "error": "no leader", ...}. */
void lkvnet_node_reply_no_leader(lkvnet_server *s, lkvnet_req *req, int route,
                                 double start);

/* ---- overlay.c -------------------------------------------------------- */

/* Empty it; valid: it holds the log's writes past the applied index from
 * now on (the caller makes sure the log is applied whole), or not. */
void lkvnet_overlay_reset(lkvnet_overlay *o, int valid);
/* The writes of entry index (proposed just now, after every entry the
 * overlay holds); nothing when it is not valid. Out of memory makes it
 * invalid. */
void lkvnet_overlay_add(lkvnet_overlay *o, uint64_t index,
                        const lkvnet_fn_write *w, size_t n);
/* Forget what the engine now holds (everything up to applied). */
void lkvnet_overlay_applied(lkvnet_overlay *o, uint64_t applied);

/* ---- peers.c ---------------------------------------------------------- */

/* The peer slots (LKVNET_PEER_SLOTS, never moved), with a slot for every
 * other node of NODE_URLS, at open. */
int lkvnet_node_peers_open(lkvnet_server *s, lkv_err *err);
/* The peer of an id, or NULL. */
lkvnet_peer *lkvnet_node_peer_by_id(lkvnet_server *s, uint64_t id);
/* The peer of url (normalised), a new slot when it has none; NULL for
 * this node itself or when no slot is free. */
lkvnet_peer *lkvnet_node_peer_learn(lkvnet_server *s, const char *url);
/* A node's URL (this node's, a peer's), or NULL. */
const char *lkvnet_node_url_of(lkvnet_server *s, uint64_t id);
/* Learn url (len bytes, normalised first; ignored when not a node URL
 * or, with id, not that node's). */
void lkvnet_node_learn_url(lkvnet_server *s, const char *url, size_t len,
                           uint64_t id);
/* The context of a change about url (may be NULL): url, then the URLs of
 * c's members, comma-separated, into buf; its length. */
size_t lkvnet_node_conf_ctx(lkvnet_server *s, const char *url,
                            const lkvnet_raft_conf *c, char *buf, size_t n);
/* Learn the URLs a CONF entry's context carries (lkvnet_node_conf_ctx),
 * and, when it adds a learner, that it did so at index (added_index). */
void lkvnet_node_learn_conf_entry(lkvnet_server *s, uint64_t index,
                                  const unsigned char *data, size_t len);
/* Learn every URL of a comma-separated list (LKVNET_MEMBERS_HEADER). */
void lkvnet_node_learn_members(lkvnet_server *s, const char *list);
/* The URLs of c's members this node knows, comma-separated, into buf. */
size_t lkvnet_node_members_list(lkvnet_server *s, const lkvnet_raft_conf *c,
                                char *buf, size_t n);
struct lkvnet_keptconf;
/* c with its members' URLs (those known), to keep in the engine. */
void lkvnet_node_keptconf_of(lkvnet_server *s, const lkvnet_raft_conf *c,
                             struct lkvnet_keptconf *k);
/* "voters": [...], "learners": [...] (URLs; a hex id when unknown). */
void lkvnet_node_put_members(lkvnet_server *s, lkvnet_jbuf *b,
                             const lkvnet_raft_conf *c);
/* Each peer's member flag from the core's configuration. */
void lkvnet_node_peers_sync(lkvnet_server *s);
/* 1 when this node's configuration names it, no leader said otherwise,
 * and its join (if any) is not unfinished. */
int lkvnet_node_is_member(lkvnet_server *s);
/* A /raft request arrived (first: its first message, NULL when empty):
 * learn the sender's URL; note a leader's append or heartbeat; on a
 * leader, answer a sender outside the configuration with
 * LKVNET_NOT_MEMBER_HEADER. */
void lkvnet_node_raft_heard(lkvnet_server *s, lkvnet_req *req,
                            const lkvnet_raft_msg *first);
/* Peer p answered with LKVNET_NOT_MEMBER_HEADER (term). */
void lkvnet_node_told_not_member(lkvnet_server *s, lkvnet_peer *p,
                                 const char *term);

/* ---- hserver.c -------------------------------------------------------- */

/* The HTTP server on the node's port: its connections, their deadlines,
 * the cap and accept() pauses; every whole request goes to
 * lkvnet_node_dispatch. open: bind and listen on host:port (s->port gets
 * the port bound); start: when the loop runs (the deadline timer);
 * stop_accepting: a drain begins; close: every connection closed (after
 * the held requests are answered); free: after it. */
int lkvnet_node_conns_open(lkvnet_server *s, const char *host, int port,
                           lkv_err *err);
int lkvnet_node_conns_start(lkvnet_server *s);
void lkvnet_node_conns_stop_accepting(lkvnet_server *s);
void lkvnet_node_conns_close(lkvnet_server *s);
/* Raft messages of node from arrived on req's connection: when the peer
 * closes it, the core hears lkvnet_raft_report_leader_gone(from). */
void lkvnet_node_conns_raft_from(lkvnet_server *s, lkvnet_req *req,
                                 uint64_t from);
/* Connections whose request the node has and whose reply is not yet
 * written out whole (a drain waits for them: an answer queued but not
 * sent when the loop stops would be lost). */
size_t lkvnet_node_conns_answering(lkvnet_server *s);

/* ---- logcompact.c ----------------------------------------------------- */

/* After an apply: begin a log compaction in the background when enough
 * applied entries sit behind the log's start. */
void lkvnet_node_maybe_compact(lkvnet_server *s);
/* Log how a compaction ended, once it has (on the syncer's reports and
 * on the tick). */
void lkvnet_node_compaction_poll(lkvnet_server *s);

/* ---- apply.c ---------------------------------------------------------- */

/* Track a proposed write (entry index, term) with its request held until
 * it applies; 0, or -1 when out of memory. */
int lkvnet_node_pending_push(lkvnet_server *s, uint64_t index, uint64_t term,
                             size_t bytes);
/* Answer every pending write 503 "outcome unknown" (this node stopped
 * leading: the entries may still commit under the next leader, or be
 * cut) and forget them. */
void lkvnet_node_pending_unknown(lkvnet_server *s, const char *why);
/* Free one entry the caller has taken off the list. */
void lkvnet_node_pending_free(lkvnet_server *s, lkvnet_pending *p);
/* Apply committed entries in order (those at or below the applied index
 * are skipped: an installed snapshot covers them), answer the writes and
 * reads they release, and consider a log compaction. 0, or -1 when the
 * engine refused one (s->apply_err; applying stops). */
int lkvnet_node_apply_entries(lkvnet_server *s, const lkvnet_raft_entry *ents,
                              size_t n);
/* Whether more committed entries wait for the engine than the node lets
 * wait (LKVNET_MAX_APPLY_LAG): a leader then refuses writes, a follower
 * appends. */
int lkvnet_node_apply_too_far_behind(const lkvnet_server *s);
/* Apply some of what waits for the engine (s->apply_hi); the timer's
 * work, also called when no timer could be made. */
void lkvnet_node_apply_later(lkvnet_server *s);
/* Write the applied index (and the configuration, when conf) to the
 * engine in one batch. */
int lkvnet_node_set_applied(lkvnet_server *s, uint64_t index,
                            const lkvnet_raft_conf *conf, lkv_err *err);

/* ---- gateenv.c -------------------------------------------------------- */

/* The engine env of the test hook LUNAKV_TEST_ENGINE_GATE (gateenv.c):
 * table files are created only while no file exists at path. NULL when
 * path is empty or memory is short. Process-wide: one per process. */
const lkv_env *lkvnet_gate_env(const char *path);

/* ---- cmd.c ------------------------------------------------------------ */

/* NORMAL entry data: op 1, klen 4 (little-endian), key, value. Encode
 * into dst (lkvnet_node_cmd_size bytes); decode: 0, or -1 when malformed. */
size_t lkvnet_node_cmd_size(size_t klen, size_t vlen);
void lkvnet_node_cmd_encode(unsigned char *dst, int op, const char *key,
                            size_t klen, const char *val, size_t vlen);
int lkvnet_node_cmd_decode(const unsigned char *d, size_t n, int *op,
                           const char **key, size_t *klen, const char **val,
                           size_t *vlen);
/* A BATCH entry's payload (LKVNET_OP_BATCH): count 4, then per write op 1,
 * klen 4, vlen 4, key, value (little-endian). Size, encode (dst holds
 * lkvnet_node_batch_size bytes), and decode write i from *off: 0, or -1
 * when malformed. */
size_t lkvnet_node_batch_size(const lkvnet_fn_write *w, size_t n);
void lkvnet_node_batch_encode(unsigned char *dst, const lkvnet_fn_write *w,
                              size_t n);
int lkvnet_node_batch_next(const unsigned char *d, size_t n, size_t *off,
                           lkvnet_fn_write *w);
/* Answer GET /get from this node's engine. */
void lkvnet_node_read_local(lkvnet_server *s, lkvnet_req *req, int route,
                            double start, const char *key, size_t klen);
/* Hold a consistent read to be answered by serve once applied through
 * its index (target UINT64_MAX until the core releases it); the waiter
 * takes key (malloc'd) over. NULL when out of memory (key freed). */
lkvnet_waiter *lkvnet_node_waiter_add(lkvnet_server *s, lkvnet_req *req,
                                      int route, double start,
                                      lkvnet_read_fn serve, char *key,
                                      size_t klen);
/* Answer the waiters whose index is applied; free the answered. */
void lkvnet_node_serve_waiters(lkvnet_server *s);
/* A ReadIndex result from the core: (ctx, index) may be served once
 * applied (ok), or is refused 503 (!ok: leadership lost). */
void lkvnet_node_read_released(lkvnet_server *s, uint64_t ctx, uint64_t index,
                               int ok);

/* ---- repl.c ----------------------------------------------------------- */

/* Send the core's messages (one POST /raft per peer); a MSG_SNAP starts
 * (or keeps) the snapshot stream to that peer. */
void lkvnet_node_send(lkvnet_server *s, const lkvnet_raft_msg *msgs, size_t n);
/* frees what waits to be sent to p (at close) */
void lkvnet_node_outbox_free(lkvnet_peer *p);
/* Tell the core how the snapshot streams ended since the last call;
 * only outside a Ready (raft.h: between ready_get and advance nothing
 * but status_get), where lkvnet_node_raft_run calls it. */
void lkvnet_node_snapshot_reports(lkvnet_server *s);
/* End every snapshot stream (the node stopped leading). */
void lkvnet_node_snapshots_stop(lkvnet_server *s);
/* An empty POST /raft to p (unless one is in flight): its answer says
 * whether p, if it leads, counts this node as a member. */
void lkvnet_node_probe(lkvnet_server *s, lkvnet_peer *p);

/* ---- follow.c --------------------------------------------------------- */

/* The internal routes lkvnet_node_dispatch sends to, once
 * lkvnet_node_authorized has checked the cluster token (it answers 401 or
 * 403 and returns 0 when wrong). */
int lkvnet_node_authorized(lkvnet_server *s, lkvnet_req *req, int route,
                           double start);
void lkvnet_node_route_raft(lkvnet_server *s, lkvnet_req *req, double start);
void lkvnet_node_route_snapshot(lkvnet_server *s, lkvnet_req *req,
                                const char *query, double start);
void lkvnet_node_route_sync(lkvnet_server *s, lkvnet_req *req,
                            const char *query, double start);
/* The end of an install of the snapshot this node received: when the core
 * asked for it (Ready.has_snapshot, rewrite) the log restarts after
 * (index, term); either way the configuration is kept, the install mark
 * goes and the engine is synced. 0, or -1 (logged; the mark stays). */
int lkvnet_node_install_finish(lkvnet_server *s, uint64_t index, uint64_t term,
                               const lkvnet_raft_conf *conf, int rewrite);

/* ---- raftstore.c ------------------------------------------------------ */

/* Open the core (s->raft) over the log: id, timeouts, the hard state in
 * s->term and s->vote, the applied index, the founding voters (nodes). */
int lkvnet_node_raft_new(lkvnet_server *s, lkv_err *err);
/* The log's entries [lo, hi) as the core's, in order, to emit (their
 * data good for that call); stops when emit returns non-zero. LKV_OK,
 * LKV_NOTFOUND (compacted away or past the end), or the read's error. */
int lkvnet_node_log_entries(lkvnet_server *s, uint64_t lo, uint64_t hi,
                            int (*emit)(void *arg, const lkvnet_raft_entry *e),
                            void *arg);

/* ---- raftnode.c ------------------------------------------------------- */

/* Open the core over the log and the term file (after both are open). */
int lkvnet_node_raft_open(lkvnet_server *s, lkv_err *err);
/* Handle every Ready the core has (the driver contract, raft.h). */
void lkvnet_node_raft_run(lkvnet_server *s);
/* The syncer made the log durable further: tell the core. */
void lkvnet_node_raft_durable(lkvnet_server *s);
/* The log failed (a write, or the syncer's sticky error): the node goes
 * quiet (log_failed) and, if it led, stops leading and answers every
 * write it holds, so the others elect a leader. */
void lkvnet_node_log_failed(lkvnet_server *s);
/* Whether the node takes a write now (not draining, applying, its log
 * whole); 0 after answering the refusal. */
int lkvnet_node_write_check(lkvnet_server *s, lkvnet_req *req, int route,
                            double start);
/* Propose command cmd (n bytes; bytes counted as uncommitted) and hold
 * req until its entry applies: the pending write, or NULL after
 * answering a refusal. REQUIRES: lkvnet_node_write_check passed, and not
 * inside a Ready (s->in_ready). */
lkvnet_pending *lkvnet_node_propose(lkvnet_server *s, lkvnet_req *req,
                                    int route, double start,
                                    const unsigned char *cmd, size_t n,
                                    size_t bytes);
/* Start a write on the leader: check it, propose it, hold it; a refusal
 * is answered at once. */
void lkvnet_node_write_begin(lkvnet_server *s, lkvnet_req *req, int route,
                             double start, int op, const char *key, size_t klen,
                             const char *val, size_t vlen);
/* Start a consistent read (ReadIndex) on the leader: the waiter w is
 * released by the core (or refused). */
void lkvnet_node_read_begin(lkvnet_server *s, lkvnet_waiter *w);
/* Hand the leadership to the voter whose URL is url (NULL: the most
 * caught-up voter). With req, the request is answered once another node
 * leads (200) or the transfer is abandoned (503); refusals at once. 0
 * when a transfer began. */
int lkvnet_node_transfer_begin(lkvnet_server *s, lkvnet_req *req, double start,
                               const char *url, size_t len);
/* On the tick: a transfer past its deadline is abandoned. */
void lkvnet_node_transfer_poll(lkvnet_server *s);

/* ---- forward.c -------------------------------------------------------- */

/* An idle connection to the leader, a new one while under the cap, else
 * the least busy: its index in s->fwd, or (size_t)-1 when none can be
 * made. */
size_t lkvnet_node_forward_conn(lkvnet_server *s);
/* Pass a request to the leader and answer with its reply. */
void lkvnet_node_forward(lkvnet_server *s, lkvnet_req *req, int route,
                         double start);
/* On the tick: a forwarded request unanswered write_timeout_ms + 2 s
 * after it was sent gets 503 "outcome unknown" and is withdrawn. */
void lkvnet_node_forward_poll(lkvnet_server *s);
/* At close, before the forwarding connections are freed (libevent drops
 * their requests without a callback): 503 "shutting down" to each. */
void lkvnet_node_forward_free(lkvnet_server *s);

/* ---- park.c ----------------------------------------------------------- */

/* Hold a write or consistent read that found no leader to go to (none
 * known, or this leader hands over) until one is, for at most an election
 * timeout from start; answered 503 "no leader" at once when it cannot
 * wait (draining, the log failed, too many parked, past its time). */
void lkvnet_node_park(lkvnet_server *s, lkvnet_req *req, int route,
                      double start);
/* After the role or the leader changed, and on the tick: dispatch the
 * parked requests again once a leader is usable, answer the expired. */
void lkvnet_node_parked_poll(lkvnet_server *s);
/* At close: each still parked is answered 503 "shutting down". */
void lkvnet_node_parked_free(lkvnet_server *s);

/* ---- members.c -------------------------------------------------------- */

/* POST /add_node and POST /remove_node {"node_url": URL} on the leader (a
 * follower forwards them): checked, proposed, answered once the change
 * applies here. */
void lkvnet_node_route_members(lkvnet_server *s, lkvnet_req *req, int route,
                               double start);
/* Every 50 ms: a change past its deadline; on a leader, a learner caught
 * up promoted; a member that hears no leader probes the others; --join's
 * request (re)sent. */
void lkvnet_node_members_poll(lkvnet_server *s);
/* --join: ask url (any member) to add this node, from the loop's start. */
int lkvnet_node_join_open(lkvnet_server *s, const char *url, lkv_err *err);
/* While a --join is under way, `"join": {"state": ..., ...}, ` (with the
 * trailing comma and space) for /status and /health; nothing otherwise. */
void lkvnet_node_put_join(lkvnet_server *s, lkvnet_jbuf *b);
/* Why a node whose join is under way is no member yet, as /health says
 * it, in why (NUL-terminated, cut to n); 0 (why untouched) when no join
 * is under way. */
#define LKVNET_JOIN_WHY_LEN 512
int lkvnet_node_join_why(lkvnet_server *s, char *why, size_t n);

/* ---- funcs.c ---------------------------------------------------------- */

/* The stored functions' routes (docs/http_api.md, "Stored functions"):
 * PUT, GET, DELETE /functions[/{library}] and POST /call/{function}; a
 * follower forwards what must run on the leader. */
void lkvnet_node_route_functions(lkvnet_server *s, lkvnet_req *req,
                                 const char *path, int cmd, double start);
void lkvnet_node_route_call(lkvnet_server *s, lkvnet_req *req, const char *path,
                            const char *query, double start);

/* ---- metrics.c -------------------------------------------------------- */

void lkvnet_node_route_status(lkvnet_server *s, lkvnet_req *req, double start);
void lkvnet_node_route_stats(lkvnet_server *s, lkvnet_req *req, double start);
void lkvnet_node_route_health(lkvnet_server *s, lkvnet_req *req, double start);
void lkvnet_node_route_metrics(lkvnet_server *s, lkvnet_req *req, double start);

/* ---- routes.c --------------------------------------------------------- */

/* A request through the routes (s->dispatch): from the server once it
 * is whole, or again when a parked one is let go; start is when it
 * first arrived. */
void lkvnet_node_dispatch(lkvnet_server *s, lkvnet_req *req, double start);

#endif
