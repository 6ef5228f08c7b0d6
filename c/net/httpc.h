/* httpc.h - lunakv's HTTP client (net room): a blocking one-shot request
 * on libevent's evhttp (httpc.c; the shell's --url mode, cluster
 * orchestration) and a load generator (loadgen.c; lunakv bench --url)
 * that drives a node, a cluster or an etcd cluster over keep-alive
 * connections from one event loop: plain writes and reads, or calls of a
 * stored function. The generator speaks HTTP/1.1 over raw sockets
 * itself, to take as little CPU from the machine it measures as it can.
 *
 * Conventions are lunakv.h's: fallible functions return LKV_OK or an
 * LKV_* code and fill the trailing lkv_err when it is not NULL. A transport
 * failure (cannot resolve, cannot connect, the connection broke, no answer
 * in time) is LKV_IOERROR with a sentence naming the URL, e.g. "io error:
 * cannot connect to http://127.0.0.1:8000: connection refused". Any HTTP
 * answer, 4xx and 5xx included, is a success of the transport: the caller
 * reads the status.
 *
 * Threads: every call builds a private event_base and frees it before it
 * returns, so calls may run on any thread, several at once. Nothing here
 * touches signal dispositions; a caller of lkvnet_http_request that
 * writes to servers which may vanish should ignore SIGPIPE (libevent
 * writes with send(), which raises it on a reset connection; the load
 * generator sends with MSG_NOSIGNAL).
 */
#ifndef LKVNET_HTTPC_H
#define LKVNET_HTTPC_H

#include <stddef.h>
#include <stdint.h>

#include "lunakv.h"

/* The largest response body a one-shot request accepts: a /kv/ value may
 * be 64 MiB, and a reply is never much bigger than what it carries. */
#define LKVNET_HTTPC_MAX_BODY ((size_t)80 * 1024 * 1024)
#define LKVNET_HTTPC_MAX_HEADERS 32

typedef struct lkvnet_header {
  const char *name, *value; /* NUL-terminated, borrowed for the call */
} lkvnet_header;

typedef struct lkvnet_response {
  int status; /* the HTTP status, e.g. 200 or 503 */
  char *body; /* malloc'd, NUL-terminated for convenience (binary safe by
                 body_len); the caller frees it with lkvnet_response_free */
  size_t body_len;
} lkvnet_response;

/* One request, blocking until the answer or timeout_ms (<= 0: 10 s).
 * method: GET, HEAD, POST, PUT, DELETE, OPTIONS or PATCH (any case).
 * url: http://HOST[:PORT][/path][?query]. headers: nheaders extra request
 * headers (Host and, with a body, Content-Length are added; a
 * Content-Type given here wins over none). body may be NULL when
 * body_len is 0.
 * On LKV_OK *out holds the answer (free with lkvnet_response_free); on
 * failure *out is zeroed and holds nothing. LKV_INVALID: a bad method,
 * URL or header; LKV_IOERROR: the transport failed (see the file head);
 * LKV_TOOBIG: the answer's body is over LKVNET_HTTPC_MAX_BODY. */
int lkvnet_http_request(const char *method, const char *url,
                        const lkvnet_header *headers, size_t nheaders,
                        const char *body, size_t body_len, int timeout_ms,
                        lkvnet_response *out, lkv_err *err);

/* Free what a response owns and zero it; safe on a zeroed response. */
void lkvnet_response_free(lkvnet_response *r);

/* ---- the load generator ---------------------------------------------- */

typedef enum lkvnet_bench_target {
  LKVNET_TARGET_LUNAKV, /* POST /set {"key","value"}; GET /get?key=K */
  LKVNET_TARGET_ETCD,   /* POST /v3/kv/put and /v3/kv/range, base64 keys
                           and values (etcd's v3 JSON gateway); range
                           reads are linearizable, etcd's default */
  LKVNET_TARGET_CALL    /* a lunakv node whose writes are calls of the
                           stored function spec.function: POST
                           /call/{function} {"key": K} (no value is
                           sent); reads are GET /get?key=K as for
                           LKVNET_TARGET_LUNAKV */
} lkvnet_bench_target;

typedef struct lkvnet_bench_spec {
  const char *const *urls; /* base URLs (http://HOST:PORT); connection i
                              talks to urls[i % nurls] */
  size_t nurls;
  int connections;    /* keep-alive connections, one request in flight
                         on each; 1 .. LKVNET_BENCH_MAX_CONNECTIONS,
                         and 64 under RLIMIT_NOFILE (ulimit -n) */
  uint64_t ops;       /* stop after this many requests (0: no cap) */
  int duration_ms;    /* stop issuing after this long (0: no limit);
                         at least one of ops and duration_ms is set */
  int write_pct;      /* 0 .. 100: the share of writes (100 = writes
                         only, 0 = reads only) */
  size_t key_size;    /* key bytes: the key number zero-padded */
  size_t value_size;  /* value bytes (printable, no escaping needed) */
  uint64_t key_space; /* keys are key_offset + [0, key_space) */
  uint64_t key_offset;
  int sequential; /* writes take keys in order (wrapping); reads
                     and random writes are uniform in the space */
  int consistent; /* lunakv reads: add &consistent=true */
  uint64_t seed;
  int timeout_ms; /* a request unanswered this long is an error
                     and its connection is reset; <= 0: 10 s */
  lkvnet_bench_target target;
  const char *function; /* LKVNET_TARGET_CALL: the function a write calls,
                           1 to LKVNET_FN_NAME_MAX bytes of [A-Za-z0-9_.-]
                           (the node's rule, so it needs no escaping in
                           the path); borrowed for the call; ignored by
                           the other targets */
} lkvnet_bench_spec;

#define LKVNET_BENCH_MAX_CONNECTIONS 4096

/* Fill *s with the defaults: 32 connections, 100% writes, 16-byte keys,
 * 100-byte values, 100000 keys, sequential, seed 1, timeout 10 s, lunakv;
 * urls, ops and duration_ms (and function for LKVNET_TARGET_CALL) are
 * left for the caller. */
void lkvnet_bench_spec_init(lkvnet_bench_spec *s);

typedef struct lkvnet_bench_result {
  uint64_t ops; /* requests answered or failed */
  uint64_t writes, reads;
  uint64_t errors; /* of ops: transport failures and non-2xx */
  uint64_t transport_errors;
  double seconds;     /* from the first request to the last answer */
  double ops_per_sec; /* successful requests per second */
  double p50_us, p90_us, p99_us, max_us; /* over the successful (2xx)
                            requests only (failures are counted in errors);
                            from a log-linear histogram: within 0.4% of the
                            exact figure; max_us is exact */
  char first_error[256]; /* what the first failure said ("" when none) */
} lkvnet_bench_result;

/* Run the load in one event loop on this thread and fill *res. Returns
 * LKV_INVALID for a bad spec (more connections than descriptors
 * included). A node that answers every request with an HTTP error is not
 * an error of the call: res->errors says so. An answer is read by its
 * Content-Length, its chunks (Transfer-Encoding: chunked) or to the
 * close; after Connection: close (or an HTTP/1.0 answer) the next request
 * opens a new connection, which is not an error. A request fails in the
 * transport when its connection cannot be made, breaks before the whole
 * answer, brings something that is not an HTTP/1.x answer, or stays
 * unanswered past timeout_ms (found within 25 ms of it); its connection
 * is closed, and it waits before its next request (50 ms, doubling up to
 * 1 s, until an answer comes; up to 25 ms more), so a dead node among
 * live ones costs little. When no request has succeeded and every
 * connection has failed in the transport 4 times in a row, the run stops
 * early (there is nothing to measure): LKV_IOERROR with the reason
 * ("cannot connect to http://H:P: connection refused", "no answer from
 * URL within N ms", "URL sent a malformed HTTP answer", "the connection
 * to URL closed before a complete answer") and how far it got; *res
 * holds what was counted. */
int lkvnet_bench_run(const lkvnet_bench_spec *s, lkvnet_bench_result *res,
                     lkv_err *err);

#endif
