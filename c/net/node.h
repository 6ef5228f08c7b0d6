/* node.h - the HTTP node's state, shared by server.c (routes, the commit
 * path, metrics) and repl.c (the leader's side of replication). Private
 * to c/net: the public interface is lkvnet.h. Everything here is used on
 * the event loop's thread only. */
#ifndef LKV_NODE_H
#define LKV_NODE_H

#include <stddef.h>
#include <stdint.h>

#include <event2/http.h>

#include "lkvnet.h"
#include "rlog.h"

enum { R_SET, R_DELETE, R_GET, R_SCAN, R_STATUS, R_STATS, R_HEALTH,
       R_METRICS, R_KV, R_APPEND, R_SNAPSHOT, R_SYNC, R_OTHER, NROUTES };
/* The metrics' shape (the tables are in server.c) */
#define NSTATUS 11  /* status codes counted one by one */
#define NBUCKETS 13 /* latency histogram buckets */

/* Every request the node holds past its handler (a write waiting for its
 * commit, a follower's /append waiting for its sync, a consistent read, a
 * forwarded request) starts with this, so a drain knows how many answers
 * are still owed (s->waiting). A client that hangs up meanwhile costs
 * nothing special: libevent keeps the request until it is answered, and
 * the answer then only frees it. */
typedef struct Held {
  struct evhttp_request *req; /* NULL once answered or gone */
  lkvnet_server *s;
  int route;
  double start, deadline;
} Held;

/* A log entry between append and apply, with the write waiting for it (a
 * leader's client request; none on followers or for entries found at
 * start-up). */
typedef struct Pending {
  Held h;
  struct Pending *next;
  uint64_t index;
  int op;
  char *key, *val;
  size_t klen, vlen;
} Pending;

/* A request waiting for an index: a follower's /append for its fdatasync
 * (target = the match index it will report), a leader's consistent read
 * for its apply (target = the commit index when it came). */
enum { W_APPEND, W_READ };
typedef struct Waiter {
  Held h;
  struct Waiter *next;
  int kind;
  uint64_t target;
  char *key; /* W_READ */
  size_t klen;
} Waiter;

/* A request a follower passes to the leader, waiting for its answer. */
typedef struct Fwd {
  Held h;
  size_t conn; /* index in s->fwd */
} Fwd;

enum { PEER_UNKNOWN, PEER_UP, PEER_DOWN };

/* The leader's view of one follower (Raft's nextIndex/matchIndex). One
 * request is in flight per follower at a time, carrying every entry
 * appended since the last one (up to LKVNET_APPEND_MAX_BYTES): while it
 * travels and the follower syncs, new writes gather for the next batch,
 * so a batch grows with the load instead of the round trips. */
typedef struct Peer {
  lkvnet_server *s;
  char *url, *hostport;
  struct evhttp_connection *conn;
  uint64_t next_index, match_index;
  uint64_t sent_to, sent_commit; /* what the request in flight carries */
  int inflight, state;
  double last_send, last_contact, retry_at, backoff;
  char last_error[200];
  uint64_t appends, entries_sent, failures;
  /* a snapshot being streamed: an engine iterator (one consistent view)
   * at applied index snap_index, snap_sent pairs so far */
  lkv_iter *snap;
  uint64_t snap_index, snap_term, snap_sent, snap_chunk;
  int snap_done;
  uint64_t snapshots_sent;
} Peer;

struct lkvnet_server {
  char *data_dir, *host, *my_url, *leader_url, *token;
  char **nodes;
  size_t nnodes;
  size_t max_body;
  int write_timeout_ms, heartbeat_ms;
  uint64_t compaction_threshold;
  lkvnet_log_fn log;
  void *log_ctx;
  int port;
  int leader;

  lkv_db *db;
  lkv_batch *batch;
  lkv_buf getbuf;
  lkvnet_rlog *rlog;
  int pipefd[2];

  struct event_base *base;
  struct evhttp *http;
  struct evhttp_bound_socket *sock;
  struct event *notify_ev, *tick_ev, *sigterm_ev, *sigint_ev;

  uint64_t term, commit_index, applied_index;
  uint64_t term_start; /* leader: index of its term's no-op (0: none) */
  Pending *head, *tail; /* in index order */
  size_t pending_bytes;  /* keys and values held in the pending list */
  size_t max_uncommitted;
  Waiter *waiters;
  size_t waiting;       /* Held requests not yet answered */
  int draining;
  lkv_err apply_err;    /* sticky: the engine refused an apply */

  /* leader */
  Peer *peers;
  size_t npeers;
  uint64_t compactions;
  /* follower */
  char *leader_hostport;
  /* connections to the leader, opened as concurrency needs them: evhttp
   * sends one request at a time on each */
  struct evhttp_connection *fwd[LKVNET_FORWARD_CONNS];
  int fwd_busy[LKVNET_FORWARD_CONNS];
  size_t nfwd;
  int needs_snapshot; /* the engine holds an unfinished install */
  uint64_t install_index, install_got;
  int installing;

  /* metrics */
  uint64_t requests[NROUTES][NSTATUS + 1]; /* +1: any other status */
  uint64_t hist[NROUTES][NBUCKETS];
  double lat_sum[NROUTES];
  uint64_t lat_count[NROUTES];
};

/* ---- shared by server.c and repl.c ------------------------------------ */

double node_now(void); /* CLOCK_MONOTONIC seconds */
/* A line to the node's log callback (stderr, timestamped, without one). */
void node_log(lkvnet_server *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Keys under LKVNET_RESERVED_PREFIX belong to the node, not to clients. */
int node_is_reserved(const char *k, size_t n);
uint64_t node_last_index(lkvnet_server *s); /* of the replication log */
/* Recompute the commit index (leader: from the followers' match indexes)
 * and apply what it covers. */
void node_advance_commit(lkvnet_server *s);
/* Begin term t: the leader appends its no-op entry. 0 on success. */
int node_start_term(lkvnet_server *s, uint64_t t);

/* repl.c: send each follower what it lacks (/append, or /snapshot when
 * the log no longer holds it); the tick also retries followers that are
 * down and sends heartbeats. */
void node_peers_kick(lkvnet_server *s);
void node_peers_tick(lkvnet_server *s);

#endif
