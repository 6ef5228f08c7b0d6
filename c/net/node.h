/* node.h - the HTTP node's state, and the functions its files share.
 * Private to c/net: the public interface is lkvnet.h. Everything here is
 * used on the event loop's thread only.
 *
 * The node's files, each calling only files listed above it (so none
 * calls back into a caller):
 *
 *   node.c        the clock, the log line, reserved keys, replies and their
 *                 counts, held requests, query parsing, connections of the
 *                 loop
 *   conns.c       the client connections: deadlines, the cap, accept()
 *                 pauses
 *   logcompact.c  when to cut the replication log
 *   apply.c       the pending entries, their apply, and the requests
 *                 waiting for an index
 *   repl.c        the leader: taking a write, the commit index, the term,
 *                 sending to followers
 *   follow.c      a follower: /append, /snapshot, the terms it adopts; also
 *                 /sync and the token check
 *   forward.c     a follower passing requests to the leader
 *   metrics.c     /status, /stats, /health, /metrics
 *   routes.c      a request's way in, and the client routes
 *   server.c      open, the loop's events (syncer, tick, signals), close
 */
#ifndef LKVNET_NODE_H
#define LKVNET_NODE_H

#include <event2/http.h>
#include <stddef.h>
#include <stdint.h>

#include "json.h"
#include "lkvnet.h"
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
  LKVNET_ROUTE_APPEND,
  LKVNET_ROUTE_SNAPSHOT,
  LKVNET_ROUTE_SYNC,
  LKVNET_ROUTE_OTHER,
  LKVNET_NROUTES
};
/* The metrics' shape (the tables are in node.c) */
#define LKVNET_NSTATUS 11  /* status codes counted one by one */
#define LKVNET_NBUCKETS 13 /* latency histogram buckets */

/* Every request the node holds past its handler (a write waiting for its
 * commit, a follower's /append waiting for its sync, a consistent read, a
 * forwarded request) starts with this, so a drain knows how many answers
 * are still owed (s->waiting). A client that hangs up meanwhile costs
 * nothing special: libevent keeps the request until it is answered, and
 * the answer then only frees it. */
typedef struct lkvnet_held {
  struct evhttp_request *req; /* NULL once answered or gone */
  lkvnet_server *s;
  int route;
  double start, deadline;
} lkvnet_held;

/* A log entry between append and apply, with the write waiting for it (a
 * leader's client request; none on followers or for entries found at
 * start-up). */
typedef struct lkvnet_pending {
  lkvnet_held h;
  struct lkvnet_pending *next;
  uint64_t index;
  int op;
  char *key, *val;
  size_t klen, vlen;
} lkvnet_pending;

/* A request waiting for an index: a follower's /append for its fdatasync
 * (target = the match index it will report), a leader's consistent read
 * for its apply (target = the commit index when it came). */
enum { LKVNET_WAIT_APPEND, LKVNET_WAIT_READ };
typedef struct lkvnet_waiter {
  lkvnet_held h;
  struct lkvnet_waiter *next;
  int kind;
  uint64_t target;
  char *key; /* LKVNET_WAIT_READ */
  size_t klen;
} lkvnet_waiter;

enum { LKVNET_PEER_UNKNOWN, LKVNET_PEER_UP, LKVNET_PEER_DOWN };

/* The leader's view of one follower (Raft's nextIndex/matchIndex). One
 * request is in flight per follower at a time, carrying every entry
 * appended since the last one (up to LKVNET_APPEND_MAX_BYTES): while it
 * travels and the follower syncs, new writes gather for the next batch,
 * so a batch grows with the load instead of the round trips. */
typedef struct lkvnet_peer {
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
} lkvnet_peer;

/* The client connections (conns.c): each is in the list of its phase,
 * oldest first. NEW: accepted, not yet set up by evhttp; READING: its
 * request has begun (or it was just accepted), read_timeout_ms applies;
 * HANDLING: the node has the request (held or being answered); IDLE: a
 * keep-alive connection between requests, idle_timeout_ms applies. */
enum {
  LKVNET_CONN_NEW,
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
  lkvnet_conn **by_fd; /* open connections by descriptor */
  size_t by_fd_cap;
  size_t open; /* accepted and not yet closed (the cap's count) */
  struct event *resolve_ev, *retry_ev, *tick_ev;
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

struct lkvnet_server {
  char *data_dir, *host, *my_url, *leader_url, *token;
  /* the file system of DATA_DIR (the engine's env, lkv_env_posix() when
   * none was given): the log, the term file and the directory go through
   * it; the caller keeps it alive until lkvnet_server_close */
  const lkv_env *env;
  char **nodes;
  size_t nnodes;
  size_t max_body;
  int write_timeout_ms, heartbeat_ms;
  int read_timeout_ms, idle_timeout_ms;
  size_t max_conns;
  lkvnet_conns conns;
  /* test hook (LUNAKV_TEST_COMPACTION_GATE): a log compaction waits while
   * this file exists, before it touches the disk; NULL: none. Fixed at
   * open: the compaction's thread reads it too. */
  char *test_gate;
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
  uint64_t term_start;         /* leader: index of its term's no-op (0: none) */
  lkvnet_pending *head, *tail; /* in index order */
  size_t pending_bytes;        /* keys and values held in the pending list */
  size_t max_uncommitted;
  lkvnet_waiter *waiters;
  size_t waiting; /* held requests not yet answered */
  /* The node is shutting down: SIGTERM or SIGINT began a drain, or
   * lkvnet_server_close runs. New writes and forwards get 503, and the
   * listener is gone for good (removed by the drain, freed by close). */
  int draining;
  double drained_at; /* when a drain's last held request was answered */
  lkv_err apply_err; /* sticky: the engine refused an apply */

  /* leader */
  lkvnet_peer *peers;
  size_t npeers;
  uint64_t compactions;
  uint64_t compact_index, compact_term; /* of the compaction running */
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
/* A line to the node's log callback (stderr, timestamped, without one). */
void lkvnet_node_log(lkvnet_server *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Keys under LKVNET_RESERVED_PREFIX belong to the node, not to clients. */
int lkvnet_node_is_reserved(const char *k, size_t n);
uint64_t lkvnet_node_last_index(lkvnet_server *s); /* of the replication log */

/* Replies: a request ends in exactly one (a held one: through
 * lkvnet_node_unhold, or lkvnet_node_held_json and _held_error). Each is
 * counted for /metrics under route, with its latency from start. */
void lkvnet_node_reply(lkvnet_server *s, struct evhttp_request *req, int route,
                       double start, int code, const char *ctype,
                       const char *data, size_t len);
void lkvnet_node_reply_json(lkvnet_server *s, struct evhttp_request *req,
                            int route, double start, int code,
                            lkvnet_jbuf *b); /* frees b */
/* {"ok": false, "error": the message} */
void lkvnet_node_reply_error(lkvnet_server *s, struct evhttp_request *req,
                             int route, double start, int code, const char *fmt,
                             ...) __attribute__((format(printf, 6, 7)));
int lkvnet_node_http_status_of(int lkv_code); /* an LKV_* code's HTTP status */
/* "name": v, as a string when UTF-8, else base64 beside name_encoding. */
void lkvnet_node_put_bytes_member(lkvnet_jbuf *b, const char *name,
                                  const char *v, size_t n);

/* Hold a request past its handler (s->waiting counts it until answered). */
void lkvnet_node_hold(lkvnet_server *s, lkvnet_held *h,
                      struct evhttp_request *req, int route, double start,
                      double deadline);
/* Take a held request back to answer it (NULL when it is gone already). */
struct evhttp_request *lkvnet_node_unhold(lkvnet_held *h);
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

/* ---- conns.c ---------------------------------------------------------- */

/* The client connections' deadlines, cap and accept() pause. open: once
 * the socket is bound (hooks evhttp and the listener); start: when the
 * loop runs (the deadline timer); request: lkvnet_node_on_request, first
 * thing (the request is whole); close: before evhttp_free, once
 * s->draining is set (every connection then reports its close); free:
 * after it. */
int lkvnet_node_conns_open(lkvnet_server *s, lkv_err *err);
int lkvnet_node_conns_start(lkvnet_server *s);
void lkvnet_node_conns_request(lkvnet_server *s, struct evhttp_request *req);
void lkvnet_node_conns_close(lkvnet_server *s);
void lkvnet_node_conns_free(lkvnet_server *s);
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

/* Track a log entry until it is applied; 0, or -1 when out of memory. */
int lkvnet_node_pending_push(lkvnet_server *s, uint64_t index, int op,
                             const char *key, size_t klen, const char *val,
                             size_t vlen);
/* Forget pending entries after index (a follower cut its log there). */
void lkvnet_node_pending_cut(lkvnet_server *s, uint64_t index);
/* Free one entry the caller has taken off the list. */
void lkvnet_node_pending_free(lkvnet_server *s, lkvnet_pending *p);
/* Apply the committed entries (a follower: only those durable here), then
 * answer the waiters and consider a log compaction. */
void lkvnet_node_apply_committed(lkvnet_server *s);
/* Answer a follower's /append: {"ok", "term", "match_index",
 * "last_index"[, "error"]} (at once from follow.c, or from
 * lkvnet_node_serve_waiters once its entries are durable). */
void lkvnet_node_reply_append(lkvnet_server *s, lkvnet_held *h, int code,
                              uint64_t match, const char *error);
/* Answer GET /get from this node's engine. */
void lkvnet_node_read_local(lkvnet_server *s, struct evhttp_request *req,
                            int route, double start, const char *key,
                            size_t klen);
/* Hold a request until index target (LKVNET_WAIT_APPEND: durable;
 * LKVNET_WAIT_READ: applied); NULL when out of memory. */
lkvnet_waiter *lkvnet_node_waiter_add(lkvnet_server *s,
                                      struct evhttp_request *req, int route,
                                      double start, int kind, uint64_t target);
/* Answer the waiters whose index is reached; free the answered. */
void lkvnet_node_serve_waiters(lkvnet_server *s);

/* ---- repl.c ----------------------------------------------------------- */

/* Start a write on the leader (check, append, hold, send); a refusal is
 * answered at once. */
void lkvnet_node_write_begin(lkvnet_server *s, struct evhttp_request *req,
                             int route, double start, int op, const char *key,
                             size_t klen, const char *val, size_t vlen);
/* Recompute the commit index (leader: from the followers' match indexes)
 * and apply what it covers. */
void lkvnet_node_advance_commit(lkvnet_server *s);
/* Begin term t: the leader appends its no-op entry. 0 on success. */
int lkvnet_node_start_term(lkvnet_server *s, uint64_t t);
/* Send each follower what it lacks (/append, or /snapshot when the log no
 * longer holds it); on the tick this also retries followers that are
 * down and sends heartbeats. */
void lkvnet_node_peers_kick(lkvnet_server *s);

/* ---- follow.c --------------------------------------------------------- */

/* The internal routes lkvnet_node_on_request dispatches to, once
 * lkvnet_node_authorized has checked the cluster token (it answers 401 or
 * 403 and returns 0 when wrong). */
int lkvnet_node_authorized(lkvnet_server *s, struct evhttp_request *req,
                           int route, double start);
void lkvnet_node_route_append(lkvnet_server *s, struct evhttp_request *req,
                              const char *query, double start);
void lkvnet_node_route_snapshot(lkvnet_server *s, struct evhttp_request *req,
                                const char *query, double start);
void lkvnet_node_route_sync(lkvnet_server *s, struct evhttp_request *req,
                            const char *query, double start);

/* ---- forward.c -------------------------------------------------------- */

/* An idle connection to the leader, a new one while under the cap, else
 * the least busy: its index in s->fwd, or (size_t)-1 when none can be
 * made. */
size_t lkvnet_node_forward_conn(lkvnet_server *s);
/* Pass a request to the leader and answer with its reply. */
void lkvnet_node_forward(lkvnet_server *s, struct evhttp_request *req,
                         int route, double start);

/* ---- metrics.c -------------------------------------------------------- */

void lkvnet_node_route_status(lkvnet_server *s, struct evhttp_request *req,
                              double start);
void lkvnet_node_route_stats(lkvnet_server *s, struct evhttp_request *req,
                             double start);
void lkvnet_node_route_health(lkvnet_server *s, struct evhttp_request *req,
                              double start);
void lkvnet_node_route_metrics(lkvnet_server *s, struct evhttp_request *req,
                               double start);

/* ---- routes.c --------------------------------------------------------- */

/* evhttp's callback for every request (the argument is the server). */
void lkvnet_node_on_request(struct evhttp_request *req, void *arg);

#endif
