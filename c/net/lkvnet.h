/* lkvnet.h - the public C API of lunakv's net room: an HTTP node serving
 * one engine db over libevent's evhttp, with every write going through the
 * replication log (rlog.h) before it is applied. Routes and bodies:
 * docs/http_api.md; the log and the commit path: docs/replication.md.
 *
 * Conventions are lunakv.h's: fallible functions return LKV_OK or an LKV_*
 * code and fill the trailing lkv_err when it is not NULL.
 *
 * Threads: a server belongs to the thread that opened it; run it there.
 * Internally the replication log's syncer thread does the fdatasync calls,
 * and a log compaction runs its engine sync and file rewrite on a thread
 * of its own (rlog.h); they touch no server state but the log's own and
 * the engine (whose functions are thread-safe).
 *
 * Signals: while lkvnet_server_run runs, SIGTERM and SIGINT are events of
 * its loop (the node stops accepting connections, answers what is in
 * flight, then returns LKV_OK) and SIGPIPE is ignored; the previous
 * dispositions are restored when it returns.
 */
#ifndef LKVNET_H
#define LKVNET_H

#include <stddef.h>
#include <stdint.h>

#include "lunakv.h"

#define LKVNET_DEFAULT_MAX_BODY (4u * 1024u * 1024u) /* 4 MiB */
#define LKVNET_DEFAULT_WRITE_TIMEOUT_MS 5000
/* A request (request line, headers and body) must arrive whole within
 * this long of its first byte, or of the accept for a connection's first
 * request: a client that sends half a request, or one byte now and then,
 * holds a connection at most this long. 10 s: nginx's and Go's header
 * timeouts are of this order, and a 4 MiB body in 10 s needs 3.4 Mbit/s,
 * far below what a node's clients (servers, other nodes) have. */
#define LKVNET_DEFAULT_READ_TIMEOUT_MS 10000
/* A keep-alive connection with no request for this long is closed (also
 * the bound on a reply the client does not read). 60 s: nginx's send and
 * body timeouts and the usual load balancer idle timeout (AWS ALB 60 s);
 * nginx keeps idle connections 75 s. Clients reconnect as needed. */
#define LKVNET_DEFAULT_IDLE_TIMEOUT_MS 60000
/* Open client connections; past this the node stops accepting (new ones
 * wait in the kernel's listen queue) until one closes. 1024: Debian's
 * default open-file limit, room for the 256 forwarding connections each
 * follower may open (LKVNET_FORWARD_CONNS) in a 3-node cluster plus 512
 * clients. */
#define LKVNET_DEFAULT_MAX_CONNECTIONS 1024
#define LKVNET_SCAN_DEFAULT_LIMIT 100
#define LKVNET_SCAN_MAX_LIMIT 1000
/* a scan reply's soft cap */
#define LKVNET_SCAN_MAX_BYTES (8u * 1024u * 1024u)
#define LKVNET_DEFAULT_HEARTBEAT_MS 100 /* also the Raft tick */
/* A follower that hears from no leader for a random time in [this, 2 x
 * this) starts an election; rounded to whole heartbeats (ticks), at least
 * two of them. 1000: etcd's default with its 100 ms heartbeat. */
#define LKVNET_DEFAULT_ELECTION_TIMEOUT_MS 1000
#define LKVNET_MIN_ELECTION_TIMEOUT_MS 2
#define LKVNET_MAX_ELECTION_TIMEOUT_MS 600000
#define LKVNET_MAX_NODES 64
/* Keys and values of uncommitted writes a leader holds before it refuses
 * new ones (503): what a leader without a majority keeps in memory. */
#define LKVNET_MAX_UNCOMMITTED_BYTES (256u * 1024u * 1024u)
#define LKVNET_DEFAULT_LOG_COMPACTION 10000    /* the seed's threshold */
#define LKVNET_APPEND_MAX_BYTES (1u << 20)     /* frames per /append, soft */
#define LKVNET_SNAPSHOT_CHUNK_BYTES (1u << 20) /* pairs per /snapshot, soft */
/* How long the leader waits on one snapshot chunk's answer: the first
 * wipes the follower's store and the last syncs it and rewrites its log,
 * seconds for a big store (past it the stream starts again from 0). */
#define LKVNET_SNAPSHOT_TIMEOUT_S 60
/* How long after a follower installed a snapshot the leader keeps the
 * entries that follow it, though the follower is down meanwhile. */
#define LKVNET_SNAPSHOT_HOLD_S 30
#define LKVNET_SYNC_MAX_ENTRIES 1000 /* entries per /sync reply */
/* A node started with join_url asks that member to add it (and to remove
 * its URL first, for a fresh node whose URL is a member), once a second,
 * for at most this long; then lkvnet_server_run fails (a refused removal
 * leaves it running, refused). */
#define LKVNET_JOIN_TIMEOUT_MS 60000
#define LKVNET_FORWARD_CONNS                     \
  256 /* a follower's connections to the leader, \
         at most (one request in flight each) */
/* The ranges lkvnet_server_open accepts (outside: LKV_INVALID naming the
 * option); `lunakv node` checks the same ones when it parses its flags. */
#define LKVNET_MIN_MAX_BODY 1
#define LKVNET_MAX_MAX_BODY LKV_MAX_VALUE_BYTES
#define LKVNET_MIN_WRITE_TIMEOUT_MS 1
#define LKVNET_MAX_WRITE_TIMEOUT_MS (24 * 3600 * 1000) /* a day */
#define LKVNET_MIN_HEARTBEAT_MS 1
#define LKVNET_MAX_HEARTBEAT_MS 60000
#define LKVNET_MIN_MAX_UNCOMMITTED 1
#define LKVNET_MAX_MAX_UNCOMMITTED ((uint64_t)1 << 40) /* 1 TiB */
#define LKVNET_MIN_READ_TIMEOUT_MS \
  100 /* the timeouts are checked every 50 ms */
#define LKVNET_MAX_READ_TIMEOUT_MS (3600 * 1000) /* an hour */
#define LKVNET_MIN_IDLE_TIMEOUT_MS 100
#define LKVNET_MAX_IDLE_TIMEOUT_MS (24 * 3600 * 1000) /* a day */
#define LKVNET_MIN_MAX_CONNECTIONS 1
#define LKVNET_MAX_MAX_CONNECTIONS (1 << 20) /* Linux's default nr_open */

/* The header that carries the cluster's shared secret on internal routes
 * (/raft, /snapshot, /sync). */
#define LKVNET_TOKEN_HEADER "X-Lunakv-Token"
/* The engine key under which the node keeps its last applied log index
 * (8 bytes, little-endian). Keys starting with this prefix are refused by
 * the HTTP API and left out of scans. */
#define LKVNET_RESERVED_PREFIX "\xff\xfflunakv/"
#define LKVNET_APPLIED_KEY LKVNET_RESERVED_PREFIX "applied_index"
/* Present while a follower installs a snapshot (the index being installed):
 * an engine with it is incomplete and asks for a new snapshot. */
#define LKVNET_INSTALL_KEY LKVNET_RESERVED_PREFIX "installing"
/* The Raft configuration as of the applied index (the voters' and
 * learners' ids and URLs: c/net/memberconf.h), written with the apply of
 * a configuration change and with a snapshot install, so that a snapshot
 * of the engine carries it. */
#define LKVNET_CONF_KEY LKVNET_RESERVED_PREFIX "conf"

/* Stored functions (docs/functions.md): a library is kept in the engine
 * under LKVNET_LIB_PREFIX + its name (its source) and
 * LKVNET_LIBLIMITS_PREFIX + its name (the limits it loads under), the
 * same keys as the embedded API's (lunakv_funcs.h LKVF_LIB_PREFIX,
 * LKVF_LIBLIMITS_PREFIX). Unlike the node's other reserved keys they are
 * replicated: written by log entries, carried by snapshots. */
#define LKVNET_LIB_PREFIX LKVNET_RESERVED_PREFIX "lib/"
#define LKVNET_LIBLIMITS_PREFIX LKVNET_RESERVED_PREFIX "liblimits/"
#define LKVNET_FN_NAME_MAX 64 /* library and function names, as LKVF_ */

/* {======================================================================
** Stored functions: the hooks the Lua binding fills
**
** The net room runs no Lua: the node asks these hooks, on its loop's
** thread, one at a time, to compile a library, list the libraries, tell a
** function's kind and run a call. The hooks read the engine (db) as it is
** at that moment, a call with the overlay above it (together: the state
** with the leader's whole log applied, which the call's entry follows),
** and never write it: a call's writes come back in the answer, and the
** node commits them as one log entry. The libraries the hooks run are
** those stored in db; the node calls changed() whenever an applied entry
** or a snapshot install changed them.
** ======================================================================= */

enum { LKVNET_FN_SET = 1, LKVNET_FN_DELETE = 2 };

typedef struct lkvnet_fn_write {
  int op; /* LKVNET_FN_SET or LKVNET_FN_DELETE */
  const char *key;
  size_t klen;
  const char *val; /* LKVNET_FN_SET only */
  size_t vlen;
} lkvnet_fn_write;

/* What a hook answers. status 200, or the HTTP status of a refusal with
 * error (and limit: the limit's name, SCRIPT_MAX_..., or NULL). Filled
 * by the hook, released with answer_free (every field may be NULL). */
typedef struct lkvnet_fn_answer {
  int status;
  char error[640];
  const char *limit; /* static storage */
  char *json;        /* load: the functions registered (a JSON array);
                        list: {"libraries": [...]}; call: the result */
  size_t json_len;
  char *limits; /* load: the limits text to store beside the source */
  size_t limits_len;
  lkvnet_fn_write *writes; /* call: its writes, in order; apply all or none */
  size_t nwrites;
  void *priv; /* the hook's own */
} lkvnet_fn_answer;

/* What a read-write call reads above the engine on a leader: the writes
 * of the entries it proposed and has not applied yet (overlay.c), so
 * that calls need not wait for each commit. Borrowed for the call. */
typedef struct lkvnet_overlay lkvnet_overlay;
/* key's newest write there: 1 a value (*val, *vlen borrowed for the
 * call), 0 a deletion, -1 none (read the engine). */
int lkvnet_overlay_get(const lkvnet_overlay *o, const char *key, size_t klen,
                       const char **val, size_t *vlen);
/* A position among its keys, ascending: seek to the first key >= lo (NULL:
 * the first), then next gives one key per call (the newest write of each,
 * deletions with *deleted set) until it returns 0. */
typedef struct lkvnet_overlay_pos {
  size_t i[2];
} lkvnet_overlay_pos;
void lkvnet_overlay_seek(const lkvnet_overlay *o, const char *lo, size_t lolen,
                         lkvnet_overlay_pos *p);
int lkvnet_overlay_next(const lkvnet_overlay *o, lkvnet_overlay_pos *p,
                        const char **key, size_t *klen, const char **val,
                        size_t *vlen, int *deleted);
/* 1 when it holds no write. */
int lkvnet_overlay_empty(const lkvnet_overlay *o);

typedef struct lkvnet_functions {
  void *ctx;
  /* Compile and run library name's source without installing it:
   * 200, json and limits set; 400 a bad name, a syntax or run error (with
   * its line), a clash of function names; 4xx/5xx a limit. */
  void (*load)(void *ctx, lkv_db *db, const char *name, size_t nlen,
               const char *src, size_t slen, lkvnet_fn_answer *a);
  /* 200 with json {"libraries": [{"name", "functions", "read_only",
   * ["error"]}, ...]}, sorted by name. */
  void (*list)(void *ctx, lkv_db *db, lkvnet_fn_answer *a);
  /* 1 read-only, 0 read-write, -1 unknown. */
  int (*kind)(void *ctx, lkv_db *db, const char *name, size_t nlen);
  /* Run function name with args (JSON text; NULL: nil) over db, with ov
   * (NULL: none) above it: 200 with json and writes; 404 unknown; 400
   * the script's error or args that are not JSON; 4xx/5xx a limit. */
  void (*call)(void *ctx, lkv_db *db, const lkvnet_overlay *ov,
               const char *name, size_t nlen, const char *args, size_t alen,
               lkvnet_fn_answer *a);
  /* The stored libraries changed: recompile before the next use. */
  void (*changed)(void *ctx);
  void (*answer_free)(void *ctx, lkvnet_fn_answer *a);
} lkvnet_functions;

/* }====================================================================== */

typedef void (*lkvnet_log_fn)(void *ctx, const char *line);

typedef struct lkvnet_options {
  const char *data_dir;     /* the node's directory: db/ and replication.log */
  const char *host;         /* address to listen on; "127.0.0.1" */
  int port;                 /* 0 = any free port (see lkvnet_server_port) */
  const char *my_url;       /* NULL: "http://HOST:PORT" once bound */
  const char *leader_url;   /* a hint: on a fresh cluster (term 0, an
                               empty log) this node campaigns first; NULL
                               or my_url: this node */
  const char *const *nodes; /* every node's URL (may be NULL: just me) */
  size_t nnodes;
  const char *join_url;  /* a member of a running cluster to ask to add this
                            node (POST /add_node); NULL: none. The node then
                            has no founding voters (nodes, leader_url are
                            only URLs it knows) and learns its configuration
                            from the leader. Over a fresh data_dir it votes
                            in nothing until it has caught up, and first
                            asks to remove its URL if that is a member
                            already (docs/replication.md, "Membership") */
  size_t max_body_bytes; /* request bodies over this get 413; 4 MiB */
  int write_timeout_ms;  /* a write not committed by then gets 503; 5000 */
  const char *token;     /* shared secret for internal routes; NULL or
                            "": none */
  uint64_t log_compaction_threshold; /* entries past the last snapshot
                                        before the log is cut; 0: never */
  int heartbeat_ms;        /* the Raft tick: an idle leader's heartbeat to each
                              follower; 100 */
  int election_timeout_ms; /* a follower that hears no leader for this
                              long (randomised up to twice) campaigns;
                              1000; at least 2 heartbeats */
  size_t max_uncommitted_bytes; /* uncommitted key+value bytes a leader
                                   holds before refusing writes; 256 MiB */
  int read_timeout_ms;          /* a request not whole by then: the connection
                                   is closed; 10000 */
  int idle_timeout_ms;          /* a keep-alive connection idle this long is
                                   closed; 60000 */
  int max_connections;          /* open client connections before the node
                                   stops accepting; 1024 */
  lkv_options engine;           /* the engine's options; sync is set to none.
                                   engine.env (NULL: POSIX) is the file system
                                   of the whole DATA_DIR: the node makes the
                                   directory, keeps its replication log and
                                   term file through it too; it must outlive
                                   the server */
  lkvnet_log_fn log;            /* one line per notable event; NULL: stderr */
  void *log_ctx;
  /* stored functions' hooks (copied; ctx must outlive the server); NULL:
   * the /functions and /call routes answer 501 */
  const lkvnet_functions *functions;
} lkvnet_options;

/* Fill *o with the defaults above (engine options from lkv_options_init). */
void lkvnet_options_init(lkvnet_options *o);

/* The node's settings in lkvnet_options (host, port, token and the
 * numeric ones above, not the topology: data_dir, my_url, leader_url,
 * nodes) as a schema in lunakv.h's format, with the defaults and ranges
 * above; *n receives their number. Static storage (nodeopts.c). */
const lkv_option_spec *lkvnet_options_schema(size_t *n);

typedef struct lkvnet_server lkvnet_server;

/* Open the engine in DATA_DIR/db, open the replication log, apply what
 * the log holds past the engine's applied index (as far as it is
 * committed), and bind the listening socket. Every string is copied.
 * LKV_INVALID, before anything is opened, for an option outside its range
 * above (the message names the option, its value and the range).
 * LKV_IOERROR names the address when the bind fails (e.g. "address
 * already in use"). On success *out owns everything until
 * lkvnet_server_close. */
int lkvnet_server_open(const lkvnet_options *o, lkvnet_server **out,
                       lkv_err *err);

/* The bound port (the real one when the options said 0). */
int lkvnet_server_port(const lkvnet_server *s);

/* The node's URL (borrowed until close). */
const char *lkvnet_server_url(const lkvnet_server *s);

/* Serve until SIGTERM or SIGINT, then drain: stop accepting, answer every
 * request in flight (writes get their commit or their failure), return
 * LKV_OK. Returns an error only when the loop itself fails. */
int lkvnet_server_run(lkvnet_server *s, lkv_err *err);

/* Close connections, the replication log and the engine; free s. Returns
 * the first failure (s is freed either way). */
int lkvnet_server_close(lkvnet_server *s, lkv_err *err);

#endif
