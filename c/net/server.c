/* server.c - the HTTP node (lkvnet.h): routes, the commit path,
 * forwarding and the metrics; the leader's side of replication is repl.c,
 * the follower's side (and the other internal routes) follow.c, the state
 * they share node.h. Routes and bodies are docs/http_api.md; the commit
 * path is docs/replication.md. Everything here runs on the event loop's
 * thread; the only other thread is the replication log's syncer, which
 * reports through a pipe (rlog.h).
 *
 * Every request ends in exactly one call of reply(): synchronously for
 * reads and refusals, from the commit path (apply or timeout) for writes. */
#include "lkvnet.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "json.h"
#include "neterr.h"
#include "rlog.h"
#include "node.h"

/* {======================================================================
** State (the types are in node.h)
** ======================================================================= */

static const char *const route_names[LKVNET_NROUTES] = {
    "/set", "/delete", "/get", "/scan", "/status", "/stats", "/health",
    "/metrics", "/kv", "/append", "/snapshot", "/sync", "other"};

static const int status_codes[] = {200, 400, 401, 403, 404, 405,
                                   409, 410, 413, 500, 503};
_Static_assert(sizeof status_codes / sizeof status_codes[0] == LKVNET_NSTATUS,
               "LKVNET_NSTATUS in node.h");

static const double buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                 0.05,   0.1,   0.25,   0.5,   1,    2.5, 5};
_Static_assert(sizeof buckets / sizeof buckets[0] == LKVNET_NBUCKETS,
               "LKVNET_NBUCKETS in node.h");

static const char *const peer_states[] = {"unknown", "up", "down"};
_Static_assert(sizeof peer_states / sizeof *peer_states == LKVNET_PEER_DOWN + 1,
               "a name for every peer state of node.h");

/* A request a follower passes to the leader, waiting for its answer. */
typedef struct Fwd {
  lkvnet_held h;
  size_t conn; /* index in s->fwd */
} Fwd;

double lkvnet_node_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void lkvnet_node_log(lkvnet_server *s, const char *fmt, ...) {
  char line[768];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (s->log != NULL) {
    s->log(s->log_ctx, line);
  } else {
    char ts[32];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
    fprintf(stderr, "%s lunakv node %s: %s\n", ts,
            s->my_url ? s->my_url : "-", line);
  }
}

int lkvnet_node_is_reserved(const char *k, size_t n) {
  size_t p = sizeof LKVNET_RESERVED_PREFIX - 1;
  return n >= p && memcmp(k, LKVNET_RESERVED_PREFIX, p) == 0;
}

/* }====================================================================== */

/* {======================================================================
** Replies and metrics
** ======================================================================= */

static const char *reason(int code) {
  switch (code) {
  case 200: return "OK";
  case 400: return "Bad Request";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 413: return "Payload Too Large";
  case 503: return "Service Unavailable";
  default: return "Internal Server Error";
  }
}

static void count(lkvnet_server *s, int route, int code, double start) {
  size_t i;
  double d = lkvnet_node_now() - start;
  for (i = 0; i < LKVNET_NSTATUS; i++)
    if (status_codes[i] == code) break;
  s->requests[route][i]++;
  for (i = 0; i < LKVNET_NBUCKETS; i++)
    if (d <= buckets[i]) s->hist[route][i]++;
  s->lat_sum[route] += d;
  s->lat_count[route]++;
}

/* The one way out of every request. A HEAD gets the headers a GET would
 * (RFC 9110 9.3.2), Content-Length included, and no body: libevent 2.1
 * writes whatever is in the output buffer, and leaves Content-Length out
 * for HEAD, so a body there would be read as the start of the next
 * response on a keep-alive connection. */
static void reply(lkvnet_server *s, struct evhttp_request *req, int route,
                  double start, int code, const char *ctype, const char *data,
                  size_t len) {
  static const char oom[] = "{\"ok\": false, \"error\": \"out of memory\"}";
  struct evbuffer *out = evhttp_request_get_output_buffer(req);
  struct evkeyvalq *h = evhttp_request_get_output_headers(req);
  evhttp_add_header(h, "Content-Type", ctype);
  if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
    char n[32];
    snprintf(n, sizeof n, "%zu", len);
    evhttp_add_header(h, "Content-Length", n);
  } else if (len > 0 && evbuffer_add(out, data, len) != 0) {
    evbuffer_drain(out, evbuffer_get_length(out));
    evbuffer_add(out, oom, sizeof oom - 1);
    code = 500;
  }
  count(s, route, code, start);
  evhttp_send_reply(req, code, reason(code), NULL);
}

void lkvnet_node_reply_json(lkvnet_server *s, struct evhttp_request *req,
                     int route, double start, int code, lkvnet_jbuf *b) {
  if (b->failed) {
    static const char oom[] = "{\"ok\": false, \"error\": \"out of memory\"}";
    reply(s, req, route, start, 500, "application/json", oom, sizeof oom - 1);
  } else {
    lkvnet_jbuf_raw(b, "\n", 1);
    reply(s, req, route, start, code, "application/json", b->data, b->len);
  }
  lkvnet_jbuf_free(b);
}

void lkvnet_node_reply_error(lkvnet_server *s, struct evhttp_request *req,
                      int route, double start, int code, const char *fmt,
                      ...) {
  char msg[512];
  lkvnet_jbuf b;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  memset(&b, 0, sizeof b);
  lkvnet_jbuf_lit(&b, "{\"ok\": false, \"error\": ");
  lkvnet_jbuf_str(&b, msg, strlen(msg));
  lkvnet_jbuf_lit(&b, "}");
  lkvnet_node_reply_json(s, req, route, start, code, &b);
}

int lkvnet_node_http_status_of(int lkv_code) {
  switch (lkv_code) {
  case LKV_INVALID: return 400;
  case LKV_TOOBIG: return 413;
  case LKV_NOTFOUND: return 404;
  default: return 500;
  }
}

/* A JSON member "name": s, as a string when s is UTF-8, else base64 with
 * "name_encoding": "base64" beside it (docs/http_api.md, "Encoding"). */
void lkvnet_node_put_bytes_member(lkvnet_jbuf *b, const char *name, const char *v,
                           size_t n) {
  lkvnet_jbuf_lit(b, "\"");
  lkvnet_jbuf_lit(b, name);
  lkvnet_jbuf_lit(b, "\": ");
  if (lkvnet_utf8_valid(v, n)) {
    lkvnet_jbuf_str(b, v, n);
  } else {
    lkvnet_jbuf_lit(b, "\"");
    lkvnet_jbuf_base64(b, v, n);
    lkvnet_jbuf_lit(b, "\", \"");
    lkvnet_jbuf_lit(b, name);
    lkvnet_jbuf_lit(b, "_encoding\": \"base64\"");
  }
}

/* }====================================================================== */

/* {======================================================================
** Held requests
** ======================================================================= */

void lkvnet_node_hold(lkvnet_server *s, lkvnet_held *h,
                      struct evhttp_request *req, int route, double start,
                      double deadline) {
  h->req = req;
  h->s = s;
  h->route = route;
  h->start = start;
  h->deadline = deadline;
  s->waiting++;
}

/* Take the request back to answer it (NULL when it is gone already). */
static struct evhttp_request *unhold(lkvnet_held *h) {
  struct evhttp_request *req = h->req;
  if (req == NULL) return NULL;
  h->req = NULL;
  h->s->waiting--;
  return req;
}

static void held_error(lkvnet_held *h, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void held_error(lkvnet_held *h, int code, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  struct evhttp_request *req = unhold(h);
  if (req == NULL) return;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  lkvnet_node_reply_error(h->s, req, h->route, h->start, code, "%s", msg);
}

void lkvnet_node_held_json(lkvnet_held *h, int code, lkvnet_jbuf *b) {
  struct evhttp_request *req = unhold(h);
  if (req == NULL) lkvnet_jbuf_free(b);
  else lkvnet_node_reply_json(h->s, req, h->route, h->start, code, b);
}

/* }====================================================================== */

/* {======================================================================
** The commit path: append -> durable on a majority -> apply -> reply
** ======================================================================= */

static void pending_free(lkvnet_server *s, lkvnet_pending *p) {
  s->pending_bytes -= p->klen + p->vlen;
  free(p->key);
  free(p->val);
  free(p);
}

int lkvnet_node_pending_push(lkvnet_server *s, uint64_t index, int op,
                      const char *key, size_t klen, const char *val,
                      size_t vlen) {
  lkvnet_pending *p = calloc(1, sizeof *p);
  if (p == NULL) return -1;
  p->key = malloc(klen ? klen : 1);
  p->val = malloc(vlen ? vlen : 1);
  if (p->key == NULL || p->val == NULL) {
    free(p->key);
    free(p->val);
    free(p);
    return -1;
  }
  if (klen) memcpy(p->key, key, klen);
  if (vlen) memcpy(p->val, val, vlen);
  p->index = index;
  p->op = op;
  p->klen = klen;
  p->vlen = vlen;
  s->pending_bytes += klen + vlen;
  if (s->tail) s->tail->next = p;
  else s->head = p;
  s->tail = p;
  return 0;
}

/* Forget pending entries after index (a follower cut its log there). */
void lkvnet_node_pending_cut(lkvnet_server *s, uint64_t index) {
  lkvnet_pending **pp = &s->head, *p;
  s->tail = NULL;
  while ((p = *pp) != NULL && p->index <= index) {
    s->tail = p;
    pp = &p->next;
  }
  *pp = NULL;
  while (p != NULL) {
    lkvnet_pending *next = p->next;
    held_error(&p->h, 503, "index %llu was replaced by the leader's log",
               (unsigned long long)p->index);
    pending_free(s, p);
    p = next;
  }
}

uint64_t lkvnet_node_last_index(lkvnet_server *s) {
  return lkvnet_rlog_last_index(s->rlog);
}

static int cmp_desc(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? 1 : x > y ? -1 : 0;
}

/* The leader's commit index: the highest index durable on a majority of
 * the nodes, counting the leader, which must hold it itself: with a fixed
 * leader there are no elections to keep a node that lacks an entry from
 * leading, so the leader never counts an entry it could lose. As in Raft
 * (section 5.4.2), only an entry of the leader's own term commits by
 * counting; earlier ones commit with it (hence the no-op at term start).
 * A node alone commits whatever it has synced. */
static uint64_t majority_index(lkvnet_server *s) {
  uint64_t self = lkvnet_rlog_durable_index(s->rlog), c, t;
  size_t need = (s->npeers + 1) / 2 + 1, i; /* nodes that must hold it */
  uint64_t m[LKVNET_MAX_NODES];
  if (s->npeers == 0) return self;
  for (i = 0; i < s->npeers; i++) m[i] = s->peers[i].match_index;
  qsort(m, i, sizeof m[0], cmp_desc);
  c = m[need - 2]; /* the (need-1)-th best follower */
  if (c > self) c = self;
  if (c <= s->commit_index) return s->commit_index;
  if (lkvnet_rlog_term_at(s->rlog, c, &t) != LKV_OK || t != s->term)
    return s->commit_index;
  return c;
}

/* Apply one committed entry and the new applied index atomically. */
static int apply_entry(lkvnet_server *s, const lkvnet_pending *p,
                       lkv_err *err) {
  unsigned char idx[8];
  int i, rc = LKV_OK;
  uint64_t seq;
  for (i = 0; i < 8; i++) idx[i] = (unsigned char)(p->index >> (8 * i));
  lkv_batch_clear(s->batch);
  if (p->op == LKVNET_OP_SET)
    rc = lkv_batch_set(s->batch, p->key, p->klen, p->val, p->vlen, err);
  else if (p->op == LKVNET_OP_DELETE)
    rc = lkv_batch_delete(s->batch, p->key, p->klen, err);
  if (rc == LKV_OK)
    rc = lkv_batch_set(s->batch, LKVNET_APPLIED_KEY,
                       sizeof LKVNET_APPLIED_KEY - 1, idx, 8, err);
  if (rc == LKV_OK) rc = lkv_db_write(s->db, s->batch, &seq, err);
  return rc;
}

static void serve_waiters(lkvnet_server *s);
static void maybe_compact(lkvnet_server *s);

void lkvnet_node_apply_committed(lkvnet_server *s) {
  /* a follower applies only what its own log holds durably: a machine
   * crash must not leave the engine ahead of the log */
  uint64_t limit = s->commit_index, durable;
  if (!s->leader) {
    durable = lkvnet_rlog_durable_index(s->rlog);
    if (durable < limit) limit = durable;
  }
  while (s->head != NULL && s->head->index <= limit) {
    lkvnet_pending *p = s->head;
    int rc = LKV_OK;
    lkv_err err;
    err.msg[0] = '\0';
    if (s->apply_err.code != LKV_OK) break;
    rc = apply_entry(s, p, &err);
    if (rc != LKV_OK) {
      /* the engine refused: the state machine cannot move past this
       * entry; stop applying and refuse writes (a restart retries) */
      s->apply_err = err;
      lkvnet_node_log(s, "cannot apply index %llu: %s", (unsigned long long)p->index,
            err.msg);
      break;
    }
    s->applied_index = p->index;
    s->head = p->next;
    if (s->head == NULL) s->tail = NULL;
    if (p->h.req != NULL) {
      lkvnet_jbuf b;
      memset(&b, 0, sizeof b);
      lkvnet_jbuf_lit(&b, "{\"ok\": true, \"index\": ");
      lkvnet_jbuf_u64(&b, p->index);
      lkvnet_jbuf_lit(&b, "}");
      lkvnet_node_held_json(&p->h, 200, &b);
    }
    pending_free(s, p);
  }
  /* whatever still waits after an apply failure gets its answer now */
  if (s->apply_err.code != LKV_OK) {
    lkvnet_pending *p;
    for (p = s->head; p != NULL; p = p->next)
      held_error(&p->h, 500, "index %llu is durable in the log but the "
                 "engine refused it: %s", (unsigned long long)p->index,
                 s->apply_err.msg);
  }
  serve_waiters(s);
  maybe_compact(s);
}

void lkvnet_node_advance_commit(lkvnet_server *s) {
  uint64_t c = s->leader ? majority_index(s) : s->commit_index;
  int moved = c > s->commit_index;
  if (moved) s->commit_index = c;
  lkvnet_node_apply_committed(s);
  /* followers learn the new commit index with the next batch */
  if (moved && s->leader) lkvnet_node_peers_kick(s);
}

/* Log compaction: once LOG_COMPACTION_THRESHOLD applied entries sit
 * behind the log's start, cut them: they are in the engine, which is made
 * durable first (its WAL runs without fsync; lkv_db_sync syncs it, which
 * costs one fdatasync, not a table). A leader keeps what a live follower
 * still needs, so only a follower that was away gets a snapshot instead.
 *
 * The engine sync and the rewrite run off the loop
 * (lkvnet_rlog_compact_begin): requests, appends and heartbeats go on
 * meanwhile, and on_notify reports the outcome (compaction_poll). Entries
 * up to the applied index are never cut from the log again (a follower
 * cuts only entries it has not applied), which is what the rewrite may
 * copy while the loop appends. */
static int compaction_prepare(void *ctx, lkv_err *err) {
  /* on the compaction's thread: only the engine (thread-safe) and the
   * test hook's path, fixed at open, are touched */
  lkvnet_server *s = ctx;
  if (s->test_gate != NULL) {
    int i;
    for (i = 0; i < 6000 && access(s->test_gate, F_OK) == 0; i++)
      usleep(10 * 1000); /* 60 s at most */
  }
  return lkv_db_sync(s->db, err);
}

static void maybe_compact(lkvnet_server *s) {
  uint64_t target = s->applied_index, t, base;
  size_t i;
  lkv_err err;
  if (s->compaction_threshold == 0 || s->installing ||
      lkvnet_rlog_compacting(s->rlog))
    return;
  base = lkvnet_rlog_base_index(s->rlog);
  if (target <= base || target - base < s->compaction_threshold) return;
  for (i = 0; i < s->npeers; i++)
    if (s->peers[i].state == LKVNET_PEER_UP &&
        s->peers[i].match_index < target)
      target = s->peers[i].match_index;
  if (target <= base || target - base < s->compaction_threshold) return;
  err.msg[0] = '\0';
  if (lkvnet_rlog_term_at(s->rlog, target, &t) != LKV_OK) return;
  if (lkvnet_rlog_compact_begin(s->rlog, target, t, s->applied_index,
                                compaction_prepare, s, &err) != LKV_OK) {
    lkvnet_node_log(s, "log compaction at index %llu failed: %s",
          (unsigned long long)target, err.msg);
    return;
  }
  s->compact_index = target;
  s->compact_term = t;
  lkvnet_node_log(s, "log compaction: cutting the log after index %llu "
                  "(term %llu) in the background", (unsigned long long)target,
                  (unsigned long long)t);
}

/* A compaction moved on (or ended): report how it ended. */
static void compaction_poll(lkvnet_server *s) {
  lkv_err err;
  err.msg[0] = '\0';
  switch (lkvnet_rlog_compact_poll(s->rlog, &err)) {
  case LKVNET_COMPACT_DONE:
    s->compactions++;
    lkvnet_node_log(s, "log compacted: entries up to %llu (term %llu) are now "
          "only in the engine", (unsigned long long)s->compact_index,
          (unsigned long long)s->compact_term);
    break;
  case LKVNET_COMPACT_FAILED:
    lkvnet_node_log(s, "log compaction at index %llu failed: %s",
          (unsigned long long)s->compact_index, err.msg);
    break;
  default: break;
  }
}

static void read_local(lkvnet_server *s, struct evhttp_request *req,
                       int route, double start, const char *key, size_t klen);

/* Answer what waited for the log's sync (a follower's /append) or for an
 * apply (a consistent read). */
static void serve_waiters(lkvnet_server *s) {
  lkvnet_waiter **pp = &s->waiters, *w;
  uint64_t durable;
  if (s->waiters == NULL) return; /* the usual case, on every apply */
  durable = lkvnet_rlog_durable_index(s->rlog);
  while ((w = *pp) != NULL) {
    int done = 0;
    if (w->h.req == NULL) {
      done = 1;
    } else if (w->kind == LKVNET_WAIT_APPEND && durable >= w->target) {
      lkvnet_node_reply_append(s, &w->h, 200, w->target, NULL);
      done = 1;
    } else if (w->kind == LKVNET_WAIT_READ && s->applied_index >= w->target) {
      struct evhttp_request *req = unhold(&w->h);
      if (req) read_local(s, req, w->h.route, w->h.start, w->key, w->klen);
      done = 1;
    }
    if (done) {
      *pp = w->next;
      free(w->key);
      free(w);
    } else {
      pp = &w->next;
    }
  }
}

lkvnet_waiter *lkvnet_node_waiter_add(lkvnet_server *s,
                                      struct evhttp_request *req, int route,
                                      double start, int kind, uint64_t target) {
  lkvnet_waiter *w = calloc(1, sizeof *w);
  if (w == NULL) return NULL;
  w->kind = kind;
  w->target = target;
  lkvnet_node_hold(s, &w->h, req, route, start, start + s->write_timeout_ms / 1000.0);
  w->next = s->waiters;
  s->waiters = w;
  return w;
}

/* The syncer made more of the log durable (or failed). */
static void on_notify(evutil_socket_t fd, short what, void *arg) {
  lkvnet_server *s = arg;
  char drain[64];
  lkv_err err;
  (void)what;
  while (read(fd, drain, sizeof drain) > 0) {
  }
  compaction_poll(s);
  if (lkvnet_rlog_error(s->rlog, &err) != LKV_OK) {
    lkvnet_pending *p;
    lkvnet_waiter *w;
    uint64_t durable = lkvnet_rlog_durable_index(s->rlog);
    for (p = s->head; p != NULL; p = p->next)
      if (p->index > durable)
        held_error(&p->h, 500, "the replication log failed: %s", err.msg);
    for (w = s->waiters; w != NULL; w = w->next)
      if (w->kind == LKVNET_WAIT_APPEND)
        held_error(&w->h, 500, "the replication log failed: %s", err.msg);
  }
  lkvnet_node_advance_commit(s);
  serve_waiters(s);
}

/* Start a write on the leader: check it, append it, send it to the
 * followers, and leave the request waiting for its commit. Refusals
 * answer at once and write nothing. */
static void write_begin(lkvnet_server *s, struct evhttp_request *req,
                        int route, double start, int op, const char *key,
                        size_t klen, const char *val, size_t vlen) {
  uint64_t index;
  lkv_err err;
  int rc;
  if (s->draining) {
    lkvnet_node_reply_error(s, req, route, start, 503, "the node is shutting down");
    return;
  }
  if (s->apply_err.code != LKV_OK) {
    lkvnet_node_reply_error(s, req, route, start, 500, "writes are stopped: %s",
                     s->apply_err.msg);
    return;
  }
  if (s->pending_bytes + klen + vlen > s->max_uncommitted) {
    /* without a majority every refused write would still sit in memory
     * (it is in the log and may commit later): past this, refuse them
     * before they are written */
    lkvnet_node_reply_error(s, req, route, start, 503,
                     "%zu bytes of writes are waiting "
                     "for a majority; refusing more until it is back",
                     s->pending_bytes);
    return;
  }
  if (lkvnet_node_is_reserved(key, klen)) {
    lkvnet_node_reply_error(s, req, route, start, 400,
                     "keys starting with \\xff\\xfflunakv/ are reserved");
    return;
  }
  if (klen > LKV_MAX_KEY_BYTES) {
    lkvnet_node_reply_error(s, req, route, start, 413,
                     "key is %zu bytes; the limit is %u",
                     klen, (unsigned)LKV_MAX_KEY_BYTES);
    return;
  }
  if (vlen > LKV_MAX_VALUE_BYTES) {
    lkvnet_node_reply_error(s, req, route, start, 413,
                     "value is %zu bytes; the limit is %u", vlen,
                     (unsigned)LKV_MAX_VALUE_BYTES);
    return;
  }
  err.msg[0] = '\0';
  rc = lkvnet_rlog_append(s->rlog, s->term, op, key, klen, val, vlen, &index,
                          &err);
  if (rc != LKV_OK) {
    lkvnet_node_reply_error(s, req, route, start, lkvnet_node_http_status_of(rc), "%s",
                     err.msg);
    return;
  }
  if (lkvnet_node_pending_push(s, index, op, key, klen, val, vlen) != 0) {
    /* appended but untracked: applying past it would skip it, so the
     * node stops applying; a restart replays it from the log */
    lkvnet_seterr(&s->apply_err, LKV_NOMEM, "out of memory tracking index "
                  "%llu", (unsigned long long)index);
    lkvnet_node_reply_error(s, req, route, start, 500, "%s", s->apply_err.msg);
    return;
  }
  lkvnet_node_hold(s, &s->tail->h, req, route, start,
            start + s->write_timeout_ms / 1000.0);
  lkvnet_node_peers_kick(s);
}

/* How many nodes hold index durably (the leader counted), for messages. */
static size_t holders(lkvnet_server *s, uint64_t index) {
  size_t n = lkvnet_rlog_durable_index(s->rlog) >= index, i;
  for (i = 0; i < s->npeers; i++) n += s->peers[i].match_index >= index;
  return n;
}

/* A drain ends once every request held is answered and every answer is
 * written out (the loop writes them: stopping it first would drop them
 * unsent), or DRAIN_FLUSH_S after the last answer for a client that does
 * not read its own. */
#define DRAIN_FLUSH_S 5.0

static void drain_step(lkvnet_server *s) {
  double t;
  if (!s->draining || s->waiting > 0) return;
  t = lkvnet_node_now();
  if (s->drained_at == 0) s->drained_at = t;
  if (lkvnet_node_conns_answering(s) == 0 || t - s->drained_at >= DRAIN_FLUSH_S)
    event_base_loopexit(s->base, NULL);
}

/* Every 50 ms: answer what missed its deadline; heartbeats and retries
 * to followers; finish a drain. */
static void on_tick(evutil_socket_t fd, short what, void *arg) {
  lkvnet_server *s = arg;
  double t = lkvnet_node_now();
  lkvnet_pending *p;
  lkvnet_waiter *w;
  (void)fd;
  (void)what;
  for (p = s->head; p != NULL && s->waiting > 0; p = p->next) {
    if (p->h.req == NULL || t < p->h.deadline) continue;
    held_error(&p->h, 503,
               "no quorum: index %llu is durable on %zu of %zu nodes after "
               "%d ms; the write may still be applied later",
               (unsigned long long)p->index, holders(s, p->index),
               s->npeers + 1, s->write_timeout_ms);
  }
  for (w = s->waiters; w != NULL; w = w->next) {
    if (w->h.req == NULL || t < w->h.deadline) continue;
    if (w->kind == LKVNET_WAIT_READ)
      held_error(&w->h, 503, "consistent read: index %llu not applied "
                 "within %d ms", (unsigned long long)w->target,
                 s->write_timeout_ms);
    else
      held_error(&w->h, 503, "the log did not sync index %llu within %d ms",
                 (unsigned long long)w->target, s->write_timeout_ms);
  }
  serve_waiters(s); /* frees the answered */
  compaction_poll(s); /* what a truncate or an install finished */
  lkvnet_node_peers_kick(s); /* retries and heartbeats; followers have no peers */
  drain_step(s);
}

static void on_signal(evutil_socket_t sig, short what, void *arg) {
  lkvnet_server *s = arg;
  (void)what;
  if (s->draining) return;
  s->draining = 1;
  lkvnet_node_log(s, "received %s: stopping (%zu request(s) in flight)",
        sig == SIGTERM ? "SIGTERM" : "SIGINT", s->waiting);
  if (s->sock != NULL) {
    evhttp_del_accept_socket(s->http, s->sock);
    s->sock = NULL;
  }
  drain_step(s);
}

/* }====================================================================== */

/* Lead in term t: persist it before anything of it is written, then
 * append its no-op, through which entries of earlier terms commit (Raft
 * 5.4.2); consistent reads wait for it. A node alone needs no no-op. */
int lkvnet_node_start_term(lkvnet_server *s, uint64_t t) {
  uint64_t idx;
  lkv_err err;
  int rc;
  err.msg[0] = '\0';
  if ((rc = lkvnet_term_store(s->data_dir, s->env, t, &err)) != LKV_OK) {
    lkvnet_node_log(s, "cannot persist term %llu: %s", (unsigned long long)t, err.msg);
    return rc;
  }
  s->term = t;
  if (s->npeers == 0) return LKV_OK;
  if ((rc = lkvnet_rlog_append(s->rlog, s->term, LKVNET_OP_NOOP, NULL, 0,
                               NULL, 0, &idx, &err)) != LKV_OK) {
    lkvnet_node_log(s, "cannot append the no-op of term %llu: %s",
          (unsigned long long)t, err.msg);
    return rc;
  }
  if (lkvnet_node_pending_push(s, idx, LKVNET_OP_NOOP, NULL, 0, NULL, 0) != 0)
    return LKV_NOMEM;
  s->term_start = idx;
  return LKV_OK;
}

/* {======================================================================
** Request parsing helpers
** ======================================================================= */

/* The value of query parameter name, URL-decoded ('+' is a space), in a
 * malloc'd buffer the caller frees; NULL when absent. *found tells absent
 * from out of memory. */
char *lkvnet_node_query_param(const char *query, const char *name, size_t *len,
                       int *found) {
  size_t nl = strlen(name);
  const char *p = query;
  *found = 0;
  while (p != NULL && *p) {
    const char *amp = strchr(p, '&');
    const char *end = amp ? amp : p + strlen(p);
    const char *eq = memchr(p, '=', (size_t)(end - p));
    const char *kend = eq ? eq : end;
    if ((size_t)(kend - p) == nl && memcmp(p, name, nl) == 0) {
      size_t vl = eq ? (size_t)(end - eq - 1) : 0;
      char *raw = malloc(vl + 1), *dec;
      *found = 1;
      if (raw == NULL) return NULL;
      if (vl) memcpy(raw, eq + 1, vl);
      raw[vl] = '\0';
      dec = evhttp_uridecode(raw, 1, len);
      free(raw);
      return dec;
    }
    p = amp ? amp + 1 : NULL;
  }
  return NULL;
}

/* A limit: decimal digits only, at most 1000000 (/scan then caps it at
 * LKVNET_SCAN_MAX_LIMIT; /sync takes it as is). 0, or -1. */
int lkvnet_node_parse_limit(const char *v, long *out) {
  long n = 0;
  if (*v == '\0') return -1;
  for (; *v; v++) {
    if (*v < '0' || *v > '9') return -1;
    n = n * 10 + (*v - '0');
    if (n > 1000000) return -1;
  }
  *out = n;
  return 0;
}

static const lkvnet_json_member *need_string(lkvnet_server *s,
                                             struct evhttp_request *req,
                                             int route, double start,
                                             const lkvnet_json_object *o,
                                             const char *name) {
  const lkvnet_json_member *m = lkvnet_json_get(o, name);
  if (m == NULL) {
    lkvnet_node_reply_error(s, req, route, start, 400, "missing member \"%s\"", name);
    return NULL;
  }
  if (m->type != LKVNET_JSON_STRING) {
    lkvnet_node_reply_error(s, req, route, start, 400,
                     "member \"%s\" must be a string, not %s", name,
                     lkvnet_json_type_name(m->type));
    return NULL;
  }
  return m;
}

/* }====================================================================== */

/* {======================================================================
** Forwarding: a follower passes writes and consistent reads to the leader
** ======================================================================= */

static struct evhttp_connection *connect_url(lkvnet_server *s, const char *url,
                                             char **hostport, lkv_err *err);

/* An idle connection to the leader, a new one while under the cap, else
 * the least busy; (size_t)-1 when none can be made. */
static size_t fwd_conn(lkvnet_server *s) {
  size_t i, best = 0;
  char *hp = NULL;
  for (i = 0; i < s->nfwd; i++) {
    if (s->fwd_busy[i] == 0) return i;
    if (s->fwd_busy[i] < s->fwd_busy[best]) best = i;
  }
  if (s->nfwd < LKVNET_FORWARD_CONNS) {
    struct evhttp_connection *c = connect_url(s, s->leader_url, &hp, NULL);
    if (c != NULL) {
      evhttp_connection_set_timeout(c, (s->write_timeout_ms + 999) / 1000 +
                                           2);
      if (s->leader_hostport == NULL) s->leader_hostport = hp;
      else free(hp);
      s->fwd[s->nfwd] = c;
      s->fwd_busy[s->nfwd] = 0;
      return s->nfwd++;
    }
  }
  return s->nfwd > 0 ? best : (size_t)-1;
}

static void on_forward_reply(struct evhttp_request *r, void *arg) {
  Fwd *f = arg;
  lkvnet_server *s = f->h.s;
  struct evhttp_request *req;
  int code = r ? evhttp_request_get_response_code(r) : 0;
  s->fwd_busy[f->conn]--;
  if (code == 0) {
    held_error(&f->h, 503, "the leader %s did not answer (down, or the "
               "connection failed)", s->leader_url);
  } else if ((req = unhold(&f->h)) != NULL) {
    struct evbuffer *in = evhttp_request_get_input_buffer(r);
    size_t n = evbuffer_get_length(in);
    const char *body = n ? (const char *)evbuffer_pullup(in, -1) : "";
    const char *ct = evhttp_find_header(evhttp_request_get_input_headers(r),
                                        "Content-Type");
    reply(s, req, f->h.route, f->h.start, code,
          ct ? ct : "application/json", body ? body : "", body ? n : 0);
  }
  free(f);
}

static void forward(lkvnet_server *s, struct evhttp_request *req, int route,
                    double start) {
  struct evhttp_connection *c;
  struct evhttp_request *r;
  struct evkeyvalq *ih = evhttp_request_get_input_headers(req), *oh;
  const char *ct = evhttp_find_header(ih, "Content-Type");
  enum evhttp_cmd_type cmd;
  size_t ci;
  Fwd *f;
  if (evhttp_find_header(ih, "X-Lunakv-Forwarded-By") != NULL) {
    lkvnet_node_reply_error(s, req, route, start, 503, "forwarded to a node that does "
                     "not lead: LEADER_URL differs between nodes");
    return;
  }
  if (s->draining) {
    lkvnet_node_reply_error(s, req, route, start, 503, "the node is shutting down");
    return;
  }
  if ((ci = fwd_conn(s)) == (size_t)-1) {
    lkvnet_node_reply_error(s, req, route, start, 500, "out of memory");
    return;
  }
  c = s->fwd[ci];
  if ((f = calloc(1, sizeof *f)) == NULL ||
      (r = evhttp_request_new(on_forward_reply, f)) == NULL) {
    free(f);
    lkvnet_node_reply_error(s, req, route, start, 500, "out of memory");
    return;
  }
  oh = evhttp_request_get_output_headers(r);
  evhttp_add_header(oh, "Host", s->leader_hostport);
  evhttp_add_header(oh, "X-Lunakv-Forwarded-By", s->my_url);
  if (ct) evhttp_add_header(oh, "Content-Type", ct);
  evbuffer_add_buffer(evhttp_request_get_output_buffer(r),
                      evhttp_request_get_input_buffer(req));
  lkvnet_node_hold(s, &f->h, req, route, start, 0);
  f->conn = ci;
  s->fwd_busy[ci]++;
  /* a HEAD goes as a GET: reply() leaves the body out and keeps its
   * length, which a HEAD answer from the leader would not carry */
  cmd = evhttp_request_get_command(req);
  if (cmd == EVHTTP_REQ_HEAD) cmd = EVHTTP_REQ_GET;
  if (evhttp_make_request(c, r, cmd, evhttp_request_get_uri(req)) != 0) {
    /* libevent 2.1 does not call back after a refusal here */
    s->fwd_busy[ci]--;
    held_error(&f->h, 503, "cannot reach the leader %s", s->leader_url);
    evhttp_request_free(r);
    free(f);
  }
}

/* }====================================================================== */

/* {======================================================================
** Routes
** ======================================================================= */

static void route_write_json(lkvnet_server *s, struct evhttp_request *req,
                             int route, double start) {
  struct evbuffer *in = evhttp_request_get_input_buffer(req);
  size_t n = evbuffer_get_length(in);
  const char *body = n ? (const char *)evbuffer_pullup(in, -1) : "";
  lkvnet_json_object o;
  char jerr[LKVNET_JSON_ERR_LEN];
  const lkvnet_json_member *k, *v = NULL;
  memset(&o, 0, sizeof o);
  if (body == NULL) {
    lkvnet_node_reply_error(s, req, route, start, 500,
                     "out of memory reading the body");
    return;
  }
  if (lkvnet_json_parse_object(body, n, &o, jerr) != 0) {
    lkvnet_node_reply_error(s, req, route, start, 400, "malformed JSON: %s", jerr);
    return;
  }
  if ((k = need_string(s, req, route, start, &o, "key")) != NULL &&
      (route == LKVNET_ROUTE_DELETE ||
       (v = need_string(s, req, route, start, &o, "value")) != NULL)) {
    if (route == LKVNET_ROUTE_SET)
      write_begin(s, req, route, start, LKVNET_OP_SET, k->str, k->len, v->str,
                  v->len);
    else
      write_begin(s, req, route, start, LKVNET_OP_DELETE, k->str, k->len,
                  NULL, 0);
  }
  lkvnet_json_free(&o);
}

/* Answer GET /get from this node's engine. */
static void read_local(lkvnet_server *s, struct evhttp_request *req,
                       int route, double start, const char *key,
                       size_t klen) {
  lkv_err err;
  lkvnet_jbuf b;
  int rc;
  err.msg[0] = '\0';
  rc = lkv_db_get(s->db, key, klen, LKV_SEQ_LATEST, &s->getbuf, &err);
  if (rc != LKV_OK && rc != LKV_NOTFOUND) {
    lkvnet_node_reply_error(s, req, route, start, lkvnet_node_http_status_of(rc), "%s",
                     err.msg);
    return;
  }
  memset(&b, 0, sizeof b);
  lkvnet_jbuf_lit(&b, "{");
  lkvnet_node_put_bytes_member(&b, "key", key, klen);
  lkvnet_jbuf_lit(&b, ", ");
  if (rc == LKV_NOTFOUND) lkvnet_jbuf_lit(&b, "\"value\": null");
  else lkvnet_node_put_bytes_member(&b, "value", s->getbuf.data, s->getbuf.len);
  lkvnet_jbuf_lit(&b, "}");
  lkvnet_node_reply_json(s, req, route, start, 200, &b);
}

/* GET /get?key=K[&consistent=true]. A consistent read on the leader waits
 * until everything committed when it arrived is applied, and, after a
 * restart, until an entry of the leader's own term has committed (before
 * that, the leader cannot know what earlier terms committed); followers
 * forward consistent reads (on_request). */
static void route_get(lkvnet_server *s, struct evhttp_request *req,
                      const char *query, double start, int consistent) {
  size_t klen;
  int found;
  char *key = lkvnet_node_query_param(query, "key", &klen, &found);
  uint64_t target = s->commit_index;
  lkvnet_waiter *w;
  if (key == NULL) {
    if (found)
      lkvnet_node_reply_error(s, req, LKVNET_ROUTE_GET, start, 500,
                              "out of memory");
    else lkvnet_node_reply_error(s, req, LKVNET_ROUTE_GET, start, 400,
                          "missing query parameter \"key\"");
    return;
  }
  if (lkvnet_node_is_reserved(key, klen)) {
    free(key);
    lkvnet_node_reply_error(s, req, LKVNET_ROUTE_GET, start, 400,
                     "keys starting with \\xff\\xfflunakv/ are reserved");
    return;
  }
  if (consistent && s->term_start > target) target = s->term_start;
  if (!consistent || s->applied_index >= target) {
    read_local(s, req, LKVNET_ROUTE_GET, start, key, klen);
    free(key);
    return;
  }
  if ((w = lkvnet_node_waiter_add(s, req, LKVNET_ROUTE_GET, start,
                                  LKVNET_WAIT_READ, target)) == NULL) {
    free(key);
    lkvnet_node_reply_error(s, req, LKVNET_ROUTE_GET, start, 500,
                            "out of memory");
    return;
  }
  w->key = key;
  w->klen = klen;
}

/* "true" or "1" turn a flag on. */
static int query_flag(const char *query, const char *name) {
  size_t n;
  int found, on;
  char *v = lkvnet_node_query_param(query, name, &n, &found);
  on = v != NULL && (strcmp(v, "true") == 0 || strcmp(v, "1") == 0);
  free(v);
  return on;
}

static void route_scan(lkvnet_server *s, struct evhttp_request *req,
                       const char *query, double start) {
  size_t alen = 0, blen = 0, llen;
  int fa, fb, fl, rc;
  char *a = lkvnet_node_query_param(query, "start", &alen, &fa);
  char *bnd = lkvnet_node_query_param(query, "end", &blen, &fb);
  char *lim = lkvnet_node_query_param(query, "limit", &llen, &fl);
  long limit = LKVNET_SCAN_DEFAULT_LIMIT, n = 0;
  lkv_iter *it = NULL;
  lkv_err err;
  lkvnet_jbuf b;
  int more = 0;
  memset(&b, 0, sizeof b);
  if ((fa && !a) || (fb && !bnd) || (fl && !lim)) {
    lkvnet_node_reply_error(s, req, LKVNET_ROUTE_SCAN, start, 500,
                            "out of memory");
    goto done;
  }
  if (lim != NULL && (lkvnet_node_parse_limit(lim, &limit) != 0 || limit < 1 ||
                      limit > LKVNET_SCAN_MAX_LIMIT)) {
    lkvnet_node_reply_error(s, req, LKVNET_ROUTE_SCAN, start, 400,
                     "limit must be an integer from 1 to %d",
                     LKVNET_SCAN_MAX_LIMIT);
    goto done;
  }
  err.msg[0] = '\0';
  if ((rc = lkv_iter_new(s->db, LKV_SEQ_LATEST, &it, &err)) != LKV_OK) {
    lkvnet_node_reply_error(s, req, LKVNET_ROUTE_SCAN, start,
                            lkvnet_node_http_status_of(rc), "%s", err.msg);
    goto done;
  }
  if (a != NULL) lkv_iter_seek(it, a, alen);
  else lkv_iter_seek_first(it);
  lkvnet_jbuf_lit(&b, "{\"items\": [");
  for (; lkv_iter_valid(it); lkv_iter_next(it)) {
    size_t kl, vl;
    const char *k = lkv_iter_key(it, &kl), *v;
    if (bnd != NULL && lkv_key_compare(k, kl, bnd, blen) > 0) break;
    if (lkvnet_node_is_reserved(k, kl)) continue;
    if (n == limit || b.len >= LKVNET_SCAN_MAX_BYTES) {
      more = 1;
      break;
    }
    v = lkv_iter_value(it, &vl);
    lkvnet_jbuf_lit(&b, n ? ", {" : "{");
    lkvnet_node_put_bytes_member(&b, "key", k, kl);
    lkvnet_jbuf_lit(&b, ", ");
    lkvnet_node_put_bytes_member(&b, "value", v, vl);
    lkvnet_jbuf_lit(&b, "}");
    n++;
  }
  if ((rc = lkv_iter_status(it, &err)) != LKV_OK) {
    lkvnet_jbuf_free(&b);
    lkvnet_node_reply_error(s, req, LKVNET_ROUTE_SCAN, start,
                            lkvnet_node_http_status_of(rc), "%s", err.msg);
    goto done;
  }
  lkvnet_jbuf_lit(&b, more ? "], \"more\": true}" : "], \"more\": false}");
  lkvnet_node_reply_json(s, req, LKVNET_ROUTE_SCAN, start, 200, &b);
done:
  if (it != NULL) lkv_iter_free(it);
  free(a);
  free(bnd);
  free(lim);
}

static void jfield(lkvnet_jbuf *b, const char *name, uint64_t v) {
  lkvnet_jbuf_lit(b, ", \"");
  lkvnet_jbuf_lit(b, name);
  lkvnet_jbuf_lit(b, "\": ");
  lkvnet_jbuf_u64(b, v);
}

static void route_status(lkvnet_server *s, struct evhttp_request *req,
                         double start) {
  lkvnet_jbuf b;
  lkvnet_rlog_stats rs;
  size_t i;
  lkvnet_rlog_stats_get(s->rlog, &rs);
  memset(&b, 0, sizeof b);
  lkvnet_jbuf_lit(&b, "{\"leader\": ");
  lkvnet_jbuf_str(&b, s->leader_url, strlen(s->leader_url));
  lkvnet_jbuf_lit(&b, ", \"term\": ");
  lkvnet_jbuf_u64(&b, s->term);
  lkvnet_jbuf_lit(&b, ", \"my_url\": ");
  lkvnet_jbuf_str(&b, s->my_url, strlen(s->my_url));
  lkvnet_jbuf_lit(&b, s->leader ? ", \"role\": \"leader\"" :
                                  ", \"role\": \"follower\"");
  lkvnet_jbuf_lit(&b, ", \"commit_index\": ");
  lkvnet_jbuf_u64(&b, s->commit_index);
  lkvnet_jbuf_lit(&b, ", \"last_index\": ");
  lkvnet_jbuf_u64(&b, rs.last_index);
  lkvnet_jbuf_lit(&b, ", \"applied_index\": ");
  lkvnet_jbuf_u64(&b, s->applied_index);
  lkvnet_jbuf_lit(&b, ", \"durable_index\": ");
  lkvnet_jbuf_u64(&b, rs.durable_index);
  lkvnet_jbuf_lit(&b, ", \"base_index\": ");
  lkvnet_jbuf_u64(&b, rs.base_index);
  lkvnet_jbuf_lit(&b, ", \"nodes\": [");
  for (i = 0; i < s->nnodes; i++) {
    if (i) lkvnet_jbuf_lit(&b, ", ");
    lkvnet_jbuf_str(&b, s->nodes[i], strlen(s->nodes[i]));
  }
  lkvnet_jbuf_lit(&b, "]");
  if (s->leader) {
    double t = lkvnet_node_now();
    lkvnet_jbuf_lit(&b, ", \"followers\": [");
    for (i = 0; i < s->npeers; i++) {
      lkvnet_peer *p = &s->peers[i];
      lkvnet_jbuf_lit(&b, i ? ", {\"url\": " : "{\"url\": ");
      lkvnet_jbuf_str(&b, p->url, strlen(p->url));
      lkvnet_jbuf_lit(&b, ", \"state\": \"");
      lkvnet_jbuf_lit(&b, p->snap ? "snapshot" : peer_states[p->state]);
      lkvnet_jbuf_lit(&b, "\"");
      jfield(&b, "match_index", p->match_index);
      jfield(&b, "next_index", p->next_index);
      jfield(&b, "lag", rs.last_index - (p->match_index < rs.last_index
                                         ? p->match_index : rs.last_index));
      jfield(&b, "last_contact_ms",
             p->last_contact > 0 ? (uint64_t)((t - p->last_contact) * 1000)
                                 : 0);
      jfield(&b, "snapshots_sent", p->snapshots_sent);
      if (p->state == LKVNET_PEER_DOWN) {
        lkvnet_jbuf_lit(&b, ", \"error\": ");
        lkvnet_jbuf_str(&b, p->last_error, strlen(p->last_error));
      }
      lkvnet_jbuf_lit(&b, "}");
    }
    lkvnet_jbuf_lit(&b, "]");
  } else if (s->needs_snapshot) {
    lkvnet_jbuf_lit(&b, ", \"needs_snapshot\": true");
  }
  lkvnet_jbuf_lit(&b, "}");
  lkvnet_node_reply_json(s, req, LKVNET_ROUTE_STATUS, start, 200, &b);
}

static void jlevels(lkvnet_jbuf *b, const char *name, const uint64_t *v) {
  int i;
  lkvnet_jbuf_lit(b, ", \"");
  lkvnet_jbuf_lit(b, name);
  lkvnet_jbuf_lit(b, "\": [");
  for (i = 0; i < LKV_MAX_LEVELS; i++) {
    if (i) lkvnet_jbuf_lit(b, ", ");
    lkvnet_jbuf_u64(b, v[i]);
  }
  lkvnet_jbuf_lit(b, "]");
}

static void route_stats(lkvnet_server *s, struct evhttp_request *req,
                        double start) {
  lkv_stats st;
  lkvnet_rlog_stats rs;
  lkvnet_jbuf b;
  lkv_db_stats(s->db, &st);
  lkvnet_rlog_stats_get(s->rlog, &rs);
  memset(&b, 0, sizeof b);
  lkvnet_jbuf_lit(&b, "{\"seq\": ");
  lkvnet_jbuf_u64(&b, st.seq);
  jfield(&b, "sstable_count", st.sstable_count);
  jlevels(&b, "sstables_per_level", st.sstables_per_level);
  jlevels(&b, "bytes_per_level", st.bytes_per_level);
  jfield(&b, "total_size_bytes", st.total_size_bytes);
  jfield(&b, "memtable_size_bytes", st.memtable_size_bytes);
  jfield(&b, "memtable_keys", st.memtable_keys);
  jfield(&b, "imm_memtables", st.imm_memtables);
  jfield(&b, "wal_size_bytes", st.wal_size_bytes);
  jfield(&b, "bytes_written_user", st.bytes_written_user);
  jfield(&b, "bytes_written_disk", st.bytes_written_disk);
  jfield(&b, "bytes_written_wal", st.bytes_written_wal);
  lkvnet_jbuf_lit(&b, ", \"write_amplification\": ");
  lkvnet_jbuf_double(&b, st.write_amplification);
  jfield(&b, "flushes", st.flushes);
  jfield(&b, "compactions", st.compactions);
  jfield(&b, "compaction_bytes_read", st.compaction_bytes_read);
  jfield(&b, "compaction_bytes_written", st.compaction_bytes_written);
  jlevels(&b, "bytes_written_per_level", st.bytes_written_per_level);
  jfield(&b, "stall_slowdowns", st.stall_slowdowns);
  jfield(&b, "stall_stops", st.stall_stops);
  jfield(&b, "stall_micros", st.stall_micros);
  jfield(&b, "bloom_checks", st.bloom_checks);
  jfield(&b, "bloom_negatives", st.bloom_negatives);
  jfield(&b, "block_reads", st.block_reads);
  jfield(&b, "block_cache_hits", st.block_cache_hits);
  jfield(&b, "block_cache_bytes", st.block_cache_bytes);
  jfield(&b, "live_snapshots", st.live_snapshots);
  jfield(&b, "live_iterators", st.live_iterators);
  jfield(&b, "wal_syncs", st.wal_syncs);
  jfield(&b, "wal_dropped_bytes", st.wal_dropped_bytes);
  lkvnet_jbuf_lit(&b, ", \"recovery\": ");
  lkvnet_jbuf_str(&b, st.recovery_msg, strlen(st.recovery_msg));
  lkvnet_jbuf_lit(&b, ", \"bg_error\": ");
  lkvnet_jbuf_str(&b, st.bg_error_msg, strlen(st.bg_error_msg));
  lkvnet_jbuf_lit(&b, ", \"rlog\": {\"last_index\": ");
  lkvnet_jbuf_u64(&b, rs.last_index);
  jfield(&b, "last_term", rs.last_term);
  jfield(&b, "durable_index", rs.durable_index);
  jfield(&b, "appends", rs.appends);
  jfield(&b, "syncs", rs.syncs);
  jfield(&b, "bytes", rs.bytes);
  jfield(&b, "dropped_bytes", rs.dropped_bytes);
  lkvnet_jbuf_lit(&b, "}}");
  lkvnet_node_reply_json(s, req, LKVNET_ROUTE_STATS, start, 200, &b);
}

static void route_health(lkvnet_server *s, struct evhttp_request *req,
                         double start) {
  lkvnet_jbuf b;
  memset(&b, 0, sizeof b);
  lkvnet_jbuf_lit(&b, s->leader ? "{\"ok\": true, \"role\": \"leader\"}"
                                : "{\"ok\": true, \"role\": \"follower\"}");
  lkvnet_node_reply_json(s, req, LKVNET_ROUTE_HEALTH, start, 200, &b);
}

static void mline(lkvnet_jbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void mline(lkvnet_jbuf *b, const char *fmt, ...) {
  char line[256];
  va_list ap;
  int k;
  va_start(ap, fmt);
  k = vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (k > 0) lkvnet_jbuf_raw(b, line, (size_t)k < sizeof line ? (size_t)k
                                                              : sizeof line - 1);
}

/* One per-follower counter family: lunakv_replication_<name>_total
 * {follower="url"}, read from the uint64_t at `field` in each lkvnet_peer. */
static void peer_counters(lkvnet_jbuf *b, const lkvnet_server *s,
                          const char *name, const char *help, size_t field) {
  size_t i;
  mline(b, "# HELP lunakv_replication_%s_total %s\n"
           "# TYPE lunakv_replication_%s_total counter\n", name, help, name);
  for (i = 0; i < s->npeers; i++)
    mline(b, "lunakv_replication_%s_total{follower=\"%s\"} %llu\n", name,
          s->peers[i].url,
          (unsigned long long)*(const uint64_t *)((const char *)&s->peers[i] +
                                                 field));
}

static void route_metrics(lkvnet_server *s, struct evhttp_request *req,
                          double start) {
  lkvnet_jbuf b;
  lkv_stats st;
  lkvnet_rlog_stats rs;
  int r;
  size_t i;
  memset(&b, 0, sizeof b);
  /* count this request first so a scrape sees itself */
  lkv_db_stats(s->db, &st);
  lkvnet_rlog_stats_get(s->rlog, &rs);
  mline(&b, "# HELP lunakv_http_requests_total HTTP requests answered, by "
            "route and status.\n# TYPE lunakv_http_requests_total counter\n");
  for (r = 0; r < LKVNET_NROUTES; r++)
    for (i = 0; i <= LKVNET_NSTATUS; i++)
      if (s->requests[r][i])
        mline(&b, "lunakv_http_requests_total{route=\"%s\",code=\"%s%d\"} "
                  "%llu\n", route_names[r], i < LKVNET_NSTATUS ? "" : "other",
              i < LKVNET_NSTATUS ? status_codes[i] : 0,
              (unsigned long long)s->requests[r][i]);
  mline(&b, "# HELP lunakv_http_request_duration_seconds Time from request "
            "to reply (writes include the commit).\n"
            "# TYPE lunakv_http_request_duration_seconds histogram\n");
  for (r = 0; r < LKVNET_NROUTES; r++) {
    if (s->lat_count[r] == 0) continue;
    for (i = 0; i < LKVNET_NBUCKETS; i++)
      mline(&b, "lunakv_http_request_duration_seconds_bucket{route=\"%s\","
                "le=\"%g\"} %llu\n", route_names[r], buckets[i],
            (unsigned long long)s->hist[r][i]);
    mline(&b, "lunakv_http_request_duration_seconds_bucket{route=\"%s\","
              "le=\"+Inf\"} %llu\n", route_names[r],
          (unsigned long long)s->lat_count[r]);
    mline(&b, "lunakv_http_request_duration_seconds_sum{route=\"%s\"} %.9f\n",
          route_names[r], s->lat_sum[r]);
    mline(&b, "lunakv_http_request_duration_seconds_count{route=\"%s\"} "
              "%llu\n", route_names[r], (unsigned long long)s->lat_count[r]);
  }
#define GAUGE(name, help, v)                                                 \
  mline(&b, "# HELP lunakv_" name " " help "\n# TYPE lunakv_" name           \
            " gauge\nlunakv_" name " %llu\n", (unsigned long long)(v))
#define COUNTER(name, help, v)                                               \
  mline(&b, "# HELP lunakv_" name " " help "\n# TYPE lunakv_" name           \
            " counter\nlunakv_" name " %llu\n", (unsigned long long)(v))
  GAUGE("rlog_last_index", "Last index in the replication log.",
        rs.last_index);
  GAUGE("rlog_durable_index", "Last index fdatasync'ed.", rs.durable_index);
  GAUGE("commit_index", "Last index durable on a majority.", s->commit_index);
  GAUGE("applied_index", "Last index applied to the engine.",
        s->applied_index);
  GAUGE("rlog_base_index", "Entries up to this index are compacted into "
        "the engine.", rs.base_index);
  GAUGE("term", "The node's current term.", s->term);
  COUNTER("rlog_compactions_total", "Log compactions.", s->compactions);
  GAUGE("http_connections_open", "Client connections open.", s->conns.open);
  mline(&b, "# HELP lunakv_http_connections_closed_total Client connections "
            "the node closed, by reason.\n"
            "# TYPE lunakv_http_connections_closed_total counter\n");
  mline(&b, "lunakv_http_connections_closed_total{reason=\"read_timeout\"} "
            "%llu\n", (unsigned long long)s->conns.read_timeouts);
  mline(&b, "lunakv_http_connections_closed_total{reason=\"idle_timeout\"} "
            "%llu\n", (unsigned long long)s->conns.idle_timeouts);
  COUNTER("http_accept_errors_total", "accept() calls that failed (each "
          "pauses accepting).", s->conns.accept_errors);
  if (s->npeers > 0) {
    mline(&b, "# HELP lunakv_replication_lag_entries Entries in the "
              "leader's log that a follower does not hold yet.\n"
              "# TYPE lunakv_replication_lag_entries gauge\n");
    for (i = 0; i < s->npeers; i++)
      mline(&b, "lunakv_replication_lag_entries{follower=\"%s\"} %llu\n",
            s->peers[i].url,
            (unsigned long long)(rs.last_index > s->peers[i].match_index
                                     ? rs.last_index - s->peers[i].match_index
                                     : 0));
    mline(&b, "# HELP lunakv_replication_follower_up 1 when the follower "
              "answered its last request.\n"
              "# TYPE lunakv_replication_follower_up gauge\n");
    for (i = 0; i < s->npeers; i++)
      mline(&b, "lunakv_replication_follower_up{follower=\"%s\"} %d\n",
            s->peers[i].url, s->peers[i].state == LKVNET_PEER_UP);
    /* appends per entry sent: how much the batching saves */
    peer_counters(&b, s, "entries_sent", "Entries sent to a follower.",
                  offsetof(lkvnet_peer, entries_sent));
    peer_counters(&b, s, "appends", "/append requests sent to a follower "
                  "(heartbeats included).", offsetof(lkvnet_peer, appends));
    peer_counters(&b, s, "failures", "Requests to a follower that got no "
                  "usable answer.", offsetof(lkvnet_peer, failures));
  }
  COUNTER("rlog_syncs_total", "fdatasync calls on the replication log.",
          rs.syncs);
  COUNTER("rlog_bytes_total", "Bytes appended to the replication log.",
          rs.bytes);
  GAUGE("engine_seq", "Engine sequence number.", st.seq);
  GAUGE("engine_sstables", "Live SSTables.", st.sstable_count);
  GAUGE("engine_total_size_bytes", "Bytes in live SSTables.",
        st.total_size_bytes);
  GAUGE("engine_memtable_size_bytes", "Bytes in memtables.",
        st.memtable_size_bytes);
  COUNTER("engine_bytes_written_user_total", "Key and value bytes written.",
          st.bytes_written_user);
  COUNTER("engine_bytes_written_disk_total", "SSTable bytes written.",
          st.bytes_written_disk);
  COUNTER("engine_flushes_total", "Memtable flushes.", st.flushes);
  COUNTER("engine_compactions_total", "Compactions.", st.compactions);
  COUNTER("engine_stall_micros_total", "Time writers waited.",
          st.stall_micros);
  COUNTER("engine_block_reads_total", "Data blocks read.", st.block_reads);
  COUNTER("engine_block_cache_hits_total", "Block cache hits.",
          st.block_cache_hits);
  COUNTER("engine_bloom_negatives_total", "Lookups a Bloom filter spared.",
          st.bloom_negatives);
#undef GAUGE
#undef COUNTER
  if (b.failed) {
    lkvnet_jbuf_free(&b);
    lkvnet_node_reply_error(s, req, LKVNET_ROUTE_METRICS, start, 500,
                            "out of memory");
    return;
  }
  reply(s, req, LKVNET_ROUTE_METRICS, start, 200, "text/plain; version=0.0.4",
        b.data, b.len);
  lkvnet_jbuf_free(&b);
}

static void route_kv(lkvnet_server *s, struct evhttp_request *req,
                     const char *path, enum evhttp_cmd_type cmd,
                     double start) {
  size_t klen;
  char *key = evhttp_uridecode(path + 4, 0, &klen);
  if (key == NULL) {
    lkvnet_node_reply_error(s, req, LKVNET_ROUTE_KV, start, 500,
                            "out of memory");
    return;
  }
  if (cmd == EVHTTP_REQ_GET) {
    lkv_err err;
    int rc;
    err.msg[0] = '\0';
    if (lkvnet_node_is_reserved(key, klen)) {
      lkvnet_node_reply_error(s, req, LKVNET_ROUTE_KV, start, 400,
                       "keys starting with \\xff\\xfflunakv/ are reserved");
    } else if ((rc = lkv_db_get(s->db, key, klen, LKV_SEQ_LATEST, &s->getbuf,
                                &err)) == LKV_OK) {
      reply(s, req, LKVNET_ROUTE_KV, start, 200, "application/octet-stream",
            s->getbuf.data, s->getbuf.len);
    } else if (rc == LKV_NOTFOUND) {
      lkvnet_node_reply_error(s, req, LKVNET_ROUTE_KV, start, 404,
                              "key not found");
    } else {
      lkvnet_node_reply_error(s, req, LKVNET_ROUTE_KV, start,
                              lkvnet_node_http_status_of(rc), "%s", err.msg);
    }
  } else if (cmd == EVHTTP_REQ_PUT) {
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t n = evbuffer_get_length(in);
    const char *v = n ? (const char *)evbuffer_pullup(in, -1) : "";
    if (v == NULL)
      lkvnet_node_reply_error(s, req, LKVNET_ROUTE_KV, start, 500,
                              "out of memory");
    else
      write_begin(s, req, LKVNET_ROUTE_KV, start, LKVNET_OP_SET, key, klen, v,
                  n);
  } else {
    write_begin(s, req, LKVNET_ROUTE_KV, start, LKVNET_OP_DELETE, key, klen,
                NULL, 0);
  }
  free(key);
}

static const char *method_name(enum evhttp_cmd_type c) {
  switch (c) {
  case EVHTTP_REQ_GET: return "GET";
  case EVHTTP_REQ_POST: return "POST";
  case EVHTTP_REQ_HEAD: return "HEAD";
  case EVHTTP_REQ_PUT: return "PUT";
  case EVHTTP_REQ_DELETE: return "DELETE";
  case EVHTTP_REQ_OPTIONS: return "OPTIONS";
  case EVHTTP_REQ_TRACE: return "TRACE";
  case EVHTTP_REQ_CONNECT: return "CONNECT";
  case EVHTTP_REQ_PATCH: return "PATCH";
  default: return "?";
  }
}

static const struct {
  const char *path;
  int route;
  enum evhttp_cmd_type method;
} routes[] = {
    {"/set", LKVNET_ROUTE_SET, EVHTTP_REQ_POST},
    {"/delete", LKVNET_ROUTE_DELETE, EVHTTP_REQ_POST},
    {"/get", LKVNET_ROUTE_GET, EVHTTP_REQ_GET},
    {"/scan", LKVNET_ROUTE_SCAN, EVHTTP_REQ_GET},
    {"/status", LKVNET_ROUTE_STATUS, EVHTTP_REQ_GET},
    {"/stats", LKVNET_ROUTE_STATS, EVHTTP_REQ_GET},
    {"/health", LKVNET_ROUTE_HEALTH, EVHTTP_REQ_GET},
    {"/metrics", LKVNET_ROUTE_METRICS, EVHTTP_REQ_GET},
    {"/append", LKVNET_ROUTE_APPEND, EVHTTP_REQ_POST},
    {"/snapshot", LKVNET_ROUTE_SNAPSHOT, EVHTTP_REQ_POST},
    {"/sync", LKVNET_ROUTE_SYNC, EVHTTP_REQ_GET},
};

static void on_request(struct evhttp_request *req, void *arg) {
  lkvnet_server *s = arg;
  double start = lkvnet_node_now();
  const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
  const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
  const char *query = uri ? evhttp_uri_get_query(uri) : NULL;
  enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
  size_t body = evbuffer_get_length(evhttp_request_get_input_buffer(req));
  size_t i;
  int route = LKVNET_ROUTE_OTHER;
  lkvnet_node_conns_request(s, req);
  /* HEAD is GET without the body (reply() leaves it out) */
  if (cmd == EVHTTP_REQ_HEAD) cmd = EVHTTP_REQ_GET;
  if (path == NULL || *path == '\0') path = "/";
  for (i = 0; i < sizeof routes / sizeof routes[0]; i++)
    if (strcmp(path, routes[i].path) == 0) route = routes[i].route;
  if (route == LKVNET_ROUTE_OTHER && strncmp(path, "/kv/", 4) == 0)
    route = LKVNET_ROUTE_KV;
  if (route == LKVNET_ROUTE_OTHER) {
    lkvnet_node_reply_error(s, req, LKVNET_ROUTE_OTHER, start, 404,
                            "no route %s %s",
                            method_name(evhttp_request_get_command(req)), path);
    return;
  }
  if (route == LKVNET_ROUTE_KV) {
    if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_PUT &&
        cmd != EVHTTP_REQ_DELETE) {
      evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
                        "GET, HEAD, PUT, DELETE");
      lkvnet_node_reply_error(s, req, route, start, 405,
                       "method %s not allowed on /kv/{key} (use GET, PUT or "
                       "DELETE)", method_name(evhttp_request_get_command(req)));
      return;
    }
  } else {
    for (i = 0; routes[i].route != route; i++) {
    }
    if (cmd != routes[i].method) {
      const char *m = method_name(routes[i].method);
      evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
                        routes[i].method == EVHTTP_REQ_GET ? "GET, HEAD" : m);
      lkvnet_node_reply_error(s, req, route, start, 405,
                       "method %s not allowed on %s (use %s)",
                       method_name(evhttp_request_get_command(req)), path, m);
      return;
    }
  }
  /* internal bodies carry whole entries (each within the body limit when
   * it was written) plus a batch; evhttp's own cap still bounds them */
  if (body > s->max_body && route != LKVNET_ROUTE_APPEND &&
      route != LKVNET_ROUTE_SNAPSHOT) {
    lkvnet_node_reply_error(s, req, route, start, 413,
                     "request body is %zu bytes; the limit is %zu", body,
                     s->max_body);
    return;
  }
  if (!query) query = "";
  if (route == LKVNET_ROUTE_APPEND || route == LKVNET_ROUTE_SNAPSHOT ||
      route == LKVNET_ROUTE_SYNC) {
    if (!lkvnet_node_authorized(s, req, route, start)) return;
  } else if (!s->leader &&
             (route == LKVNET_ROUTE_SET || route == LKVNET_ROUTE_DELETE ||
              (route == LKVNET_ROUTE_KV && cmd != EVHTTP_REQ_GET) ||
              (route == LKVNET_ROUTE_GET &&
               query_flag(query, "consistent")))) {
    forward(s, req, route, start);
    return;
  }
  switch (route) {
  case LKVNET_ROUTE_SET:
  case LKVNET_ROUTE_DELETE: route_write_json(s, req, route, start); break;
  case LKVNET_ROUTE_GET:
    route_get(s, req, query, start, s->leader && query_flag(query,
                                                            "consistent"));
    break;
  case LKVNET_ROUTE_APPEND:
    lkvnet_node_route_append(s, req, query, start);
    break;
  case LKVNET_ROUTE_SNAPSHOT:
    lkvnet_node_route_snapshot(s, req, query, start);
    break;
  case LKVNET_ROUTE_SYNC: lkvnet_node_route_sync(s, req, query, start); break;
  case LKVNET_ROUTE_SCAN: route_scan(s, req, query, start); break;
  case LKVNET_ROUTE_STATUS: route_status(s, req, start); break;
  case LKVNET_ROUTE_STATS: route_stats(s, req, start); break;
  case LKVNET_ROUTE_HEALTH: route_health(s, req, start); break;
  case LKVNET_ROUTE_METRICS: route_metrics(s, req, start); break;
  default: route_kv(s, req, path, cmd, start); break;
  }
}

/* }====================================================================== */

/* {======================================================================
** Open, run, close
** ======================================================================= */

void lkvnet_options_init(lkvnet_options *o) {
  memset(o, 0, sizeof *o);
  o->host = "127.0.0.1";
  o->max_body_bytes = LKVNET_DEFAULT_MAX_BODY;
  o->write_timeout_ms = LKVNET_DEFAULT_WRITE_TIMEOUT_MS;
  o->heartbeat_ms = LKVNET_DEFAULT_HEARTBEAT_MS;
  o->max_uncommitted_bytes = LKVNET_MAX_UNCOMMITTED_BYTES;
  o->log_compaction_threshold = LKVNET_DEFAULT_LOG_COMPACTION;
  o->read_timeout_ms = LKVNET_DEFAULT_READ_TIMEOUT_MS;
  o->idle_timeout_ms = LKVNET_DEFAULT_IDLE_TIMEOUT_MS;
  o->max_connections = LKVNET_DEFAULT_MAX_CONNECTIONS;
  lkv_options_init(&o->engine);
}

/* Every numeric option within its range (lkvnet.h), checked before
 * anything is opened: a value the node cannot run with is the caller's
 * mistake, named, never a crash or a silent default. */
static int check_options(const lkvnet_options *o, lkv_err *err) {
  static const struct {
    const char *name;
    size_t offset;
    int is_size; /* size_t, else int */
    uint64_t lo, hi;
  } ranges[] = {
      {"max_body_bytes", offsetof(lkvnet_options, max_body_bytes), 1,
       LKVNET_MIN_MAX_BODY, LKVNET_MAX_MAX_BODY},
      {"write_timeout_ms", offsetof(lkvnet_options, write_timeout_ms), 0,
       LKVNET_MIN_WRITE_TIMEOUT_MS, LKVNET_MAX_WRITE_TIMEOUT_MS},
      {"heartbeat_ms", offsetof(lkvnet_options, heartbeat_ms), 0,
       LKVNET_MIN_HEARTBEAT_MS, LKVNET_MAX_HEARTBEAT_MS},
      {"max_uncommitted_bytes", offsetof(lkvnet_options, max_uncommitted_bytes),
       1, LKVNET_MIN_MAX_UNCOMMITTED, LKVNET_MAX_MAX_UNCOMMITTED},
      {"read_timeout_ms", offsetof(lkvnet_options, read_timeout_ms), 0,
       LKVNET_MIN_READ_TIMEOUT_MS, LKVNET_MAX_READ_TIMEOUT_MS},
      {"idle_timeout_ms", offsetof(lkvnet_options, idle_timeout_ms), 0,
       LKVNET_MIN_IDLE_TIMEOUT_MS, LKVNET_MAX_IDLE_TIMEOUT_MS},
      {"max_connections", offsetof(lkvnet_options, max_connections), 0,
       LKVNET_MIN_MAX_CONNECTIONS, LKVNET_MAX_MAX_CONNECTIONS},
  };
  size_t i;
  if (o->data_dir == NULL || o->data_dir[0] == '\0')
    return lkvnet_seterr(err, LKV_INVALID, "option data_dir is missing");
  if (o->host == NULL)
    return lkvnet_seterr(err, LKV_INVALID, "option host is missing");
  if (o->port < 0 || o->port > 65535)
    return lkvnet_seterr(err, LKV_INVALID, "option port is %d; it must be "
                         "from 0 to 65535", o->port);
  for (i = 0; i < sizeof ranges / sizeof ranges[0]; i++) {
    const char *p = (const char *)o + ranges[i].offset;
    long long v;
    if (ranges[i].is_size)
      v = (long long)*(const size_t *)(const void *)p;
    else
      v = *(const int *)(const void *)p;
    if (v < 0 || (uint64_t)v < ranges[i].lo || (uint64_t)v > ranges[i].hi)
      return lkvnet_seterr(err, LKV_INVALID, "option %s is %lld; it must be "
                           "from %llu to %llu", ranges[i].name, v,
                           (unsigned long long)ranges[i].lo,
                           (unsigned long long)ranges[i].hi);
  }
  return LKV_OK;
}

/* Start-up replay: entries past the applied index wait in the pending
 * list for the commit index, like new ones. */
static int replay_entry(void *ctx, const lkvnet_entry *e, lkv_err *err) {
  lkvnet_server *s = ctx;
  if (e->index <= s->applied_index) return LKV_OK;
  if (lkvnet_node_pending_push(s, e->index, e->op, e->key, e->klen, e->val,
                        e->vlen) != 0)
    return lkvnet_seterr(err, LKV_NOMEM, "replaying index %llu",
                  (unsigned long long)e->index);
  return LKV_OK;
}

static char *dupstr(const char *p) {
  return p ? strdup(p) : NULL;
}

/* DATA_DIR through the env: made when missing, and then its parent
 * synced, so the new directory (and the log inside it) survives a crash. */
static int make_data_dir(const lkv_env *env, const char *dir, lkv_err *err) {
  char parent[4096];
  const char *slash;
  lkv_env_info st;
  int e = env->mkdir(env, dir);
  if (e == EEXIST) {
    if ((e = env->stat(env, dir, &st)) != 0)
      return lkvnet_seterr(err, LKV_IOERROR, "stat %s: %s", dir, strerror(e));
    if (!st.is_dir)
      return lkvnet_seterr(err, LKV_INVALID, "%s exists and is not a "
                           "directory", dir);
    return LKV_OK;
  }
  if (e != 0)
    return lkvnet_seterr(err, LKV_IOERROR, "mkdir %s: %s", dir, strerror(e));
  slash = strrchr(dir, '/');
  while (slash != NULL && slash > dir && slash[1] == '\0') /* "a/b/" */
    slash = memrchr(dir, '/', (size_t)(slash - dir));
  if (slash == NULL)
    snprintf(parent, sizeof parent, ".");
  else if (slash == dir)
    snprintf(parent, sizeof parent, "/");
  else
    snprintf(parent, sizeof parent, "%.*s", (int)(slash - dir), dir);
  if ((e = env->sync_dir(env, parent)) != 0)
    return lkvnet_seterr(err, LKV_IOERROR, "fsync directory %s: %s", parent,
                         strerror(e));
  return LKV_OK;
}

/* "http://host:port" -> a client connection of this loop, and the Host
 * header to send. */
static struct evhttp_connection *connect_url(lkvnet_server *s, const char *url,
                                             char **hostport, lkv_err *err) {
  struct evhttp_uri *u = evhttp_uri_parse(url);
  const char *host = u ? evhttp_uri_get_host(u) : NULL;
  int port = u ? evhttp_uri_get_port(u) : -1;
  struct evhttp_connection *c = NULL;
  char hp[300];
  if (host == NULL) {
    if (u) evhttp_uri_free(u);
    lkvnet_seterr(err, LKV_INVALID, "not a node URL: %s", url);
    return NULL;
  }
  if (port < 0) port = 80;
  snprintf(hp, sizeof hp, "%s:%d", host, port);
  c = evhttp_connection_base_new(s->base, NULL, host, (ev_uint16_t)port);
  evhttp_uri_free(u);
  if (c == NULL || (*hostport = strdup(hp)) == NULL) {
    if (c) evhttp_connection_free(c);
    lkvnet_seterr(err, LKV_NOMEM, "connection to %s", url);
    return NULL;
  }
  evhttp_connection_set_retries(c, 0);
  return c;
}

/* The leader: a new term (persisted before anything of it is written), a
 * peer (lkvnet_peer) per follower, and the term's no-op. A follower: its
 * connections to the leader, for forwarding. */
static int setup_cluster(lkvnet_server *s, lkv_err *err) {
  size_t i;
  int rc;
  if (s->leader) {
    if ((s->peers = calloc(s->nnodes, sizeof *s->peers)) == NULL)
      return lkvnet_seterr(err, LKV_NOMEM, "peers");
    for (i = 0; i < s->nnodes; i++) {
      lkvnet_peer *p = &s->peers[s->npeers];
      if (strcmp(s->nodes[i], s->my_url) == 0) continue;
      if ((p->url = strdup(s->nodes[i])) == NULL)
        return lkvnet_seterr(err, LKV_NOMEM, "peers");
      s->npeers++;
      p->s = s;
      if ((p->conn = connect_url(s, p->url, &p->hostport, err)) == NULL)
        return err ? err->code : LKV_INVALID;
      /* a silent follower is down after this, not after TCP's minutes */
      evhttp_connection_set_timeout(p->conn, 2);
      p->next_index = lkvnet_node_last_index(s) + 1;
    }
    if ((rc = lkvnet_node_start_term(s, s->term + 1)) != LKV_OK)
      return lkvnet_seterr(err, rc, "cannot start term %llu in %s (see the "
                           "log line above)",
                           (unsigned long long)s->term + 1, s->data_dir);
  } else {
    /* check LEADER_URL now; connections open as forwarding needs them */
    if (fwd_conn(s) == (size_t)-1)
      return lkvnet_seterr(err, LKV_INVALID, "cannot connect to the leader "
                           "URL %s", s->leader_url);
  }
  return LKV_OK;
}

int lkvnet_server_open(const lkvnet_options *o, lkvnet_server **out,
                       lkv_err *err) {
  lkvnet_server *s;
  lkv_options eo = o->engine;
  char dbdir[4096];
  lkv_err e;
  int rc = LKV_OK;
  size_t i;
  uint64_t replayed_from;
  lkvnet_rlog_stats rs;
  *out = NULL;
  e.code = LKV_OK;
  e.msg[0] = '\0';
  if ((rc = check_options(o, err)) != LKV_OK) return rc;
  if ((s = calloc(1, sizeof *s)) == NULL)
    return lkvnet_seterr(err, LKV_NOMEM, "server");
  s->pipefd[0] = s->pipefd[1] = -1;
  s->env = o->engine.env != NULL ? o->engine.env : lkv_env_posix();
  s->max_body = o->max_body_bytes;
  s->write_timeout_ms = o->write_timeout_ms;
  s->log = o->log;
  s->log_ctx = o->log_ctx;
  s->heartbeat_ms = o->heartbeat_ms;
  s->compaction_threshold = o->log_compaction_threshold;
  s->max_uncommitted = o->max_uncommitted_bytes;
  s->read_timeout_ms = o->read_timeout_ms;
  s->idle_timeout_ms = o->idle_timeout_ms;
  s->max_conns = (size_t)o->max_connections;
  if (o->token != NULL && o->token[0] != '\0' &&
      (s->token = strdup(o->token)) == NULL) {
    rc = lkvnet_seterr(&e, LKV_NOMEM, "server");
    goto fail;
  }
  {
    /* the test hook of compaction_prepare, read once (spec/24) */
    const char *gate = getenv("LUNAKV_TEST_COMPACTION_GATE");
    if (gate != NULL && gate[0] != '\0' &&
        (s->test_gate = strdup(gate)) == NULL) {
      rc = lkvnet_seterr(&e, LKV_NOMEM, "server");
      goto fail;
    }
  }
  s->data_dir = dupstr(o->data_dir);
  s->host = dupstr(o->host);
  s->nnodes = o->nodes ? o->nnodes : 0;
  if (s->nnodes > LKVNET_MAX_NODES) {
    rc = lkvnet_seterr(&e, LKV_INVALID, "%zu nodes; a cluster has at most %d",
                       s->nnodes, LKVNET_MAX_NODES);
    s->nnodes = 0;
    goto fail;
  }
  s->nodes = calloc(s->nnodes ? s->nnodes : 1, sizeof *s->nodes);
  if (s->data_dir == NULL || s->host == NULL || s->nodes == NULL) {
    rc = lkvnet_seterr(&e, LKV_NOMEM, "server");
    goto fail;
  }
  for (i = 0; i < s->nnodes; i++)
    if ((s->nodes[i] = dupstr(o->nodes[i])) == NULL) {
      rc = lkvnet_seterr(&e, LKV_NOMEM, "server");
      goto fail;
    }

  /* the engine; its WAL need not sync: the log is the durable record */
  if ((rc = make_data_dir(s->env, s->data_dir, &e)) != LKV_OK) goto fail;
  if ((size_t)snprintf(dbdir, sizeof dbdir, "%s/db", s->data_dir) >=
      sizeof dbdir) {
    rc = lkvnet_seterr(&e, LKV_INVALID, "data directory path is too long");
    goto fail;
  }
  eo.sync = LKV_SYNC_NONE;
  if ((rc = lkv_db_open(dbdir, &eo, &s->db, &e)) != LKV_OK) goto fail;
  if ((s->batch = lkv_batch_new()) == NULL) {
    rc = lkvnet_seterr(&e, LKV_NOMEM, "batch");
    goto fail;
  }
  rc = lkv_db_get(s->db, LKVNET_APPLIED_KEY, sizeof LKVNET_APPLIED_KEY - 1,
                  LKV_SEQ_LATEST, &s->getbuf, &e);
  if (rc == LKV_OK && s->getbuf.len == 8) {
    for (i = 0; i < 8; i++)
      s->applied_index |= (uint64_t)(unsigned char)s->getbuf.data[i] << (8 * i);
  } else if (rc != LKV_NOTFOUND) {
    if (rc == LKV_OK)
      rc = lkvnet_seterr(&e, LKV_CORRUPTION, "%s: the applied index is %zu bytes, "
                  "not 8", dbdir, s->getbuf.len);
    goto fail;
  }
  rc = lkv_db_get(s->db, LKVNET_INSTALL_KEY, sizeof LKVNET_INSTALL_KEY - 1,
                  LKV_SEQ_LATEST, &s->getbuf, &e);
  if (rc == LKV_OK) {
    s->needs_snapshot = 1; /* an install broke off: the engine is partial */
    s->applied_index = 0;
  } else if (rc != LKV_NOTFOUND) {
    goto fail;
  }
  rc = LKV_OK;
  s->commit_index = s->applied_index;
  replayed_from = s->applied_index;

  /* the log, and the pipe its syncer reports through */
  if (pipe2(s->pipefd, O_NONBLOCK | O_CLOEXEC) != 0) {
    rc = lkvnet_seterr(&e, LKV_IOERROR, "pipe: %s", strerror(errno));
    goto fail;
  }
  if ((rc = lkvnet_rlog_open(s->data_dir, s->env, s->pipefd[1],
                             replay_entry, s, &s->rlog, &e)) != LKV_OK)
    goto fail;
  lkvnet_rlog_stats_get(s->rlog, &rs);
  if (rs.last_index < s->applied_index) {
    rc = lkvnet_seterr(&e, LKV_CORRUPTION, "%s/%s ends at index %llu but the engine "
                "has applied up to %llu", s->data_dir, LKVNET_RLOG_FILE,
                (unsigned long long)rs.last_index,
                (unsigned long long)s->applied_index);
    goto fail;
  }
  if ((rc = lkvnet_term_load(s->data_dir, s->env, &s->term, &e)) != LKV_OK)
    goto fail;
  if (rs.last_term > s->term) s->term = rs.last_term;

  /* the loop and the listening socket */
  if ((s->base = event_base_new()) == NULL ||
      (s->http = evhttp_new(s->base)) == NULL) {
    rc = lkvnet_seterr(&e, LKV_NOMEM, "event loop");
    goto fail;
  }
  /* evhttp refuses bodies past its own cap with an HTML 413 before we see
   * them; ours is higher so bodies up to twice the limit (at least 1 MiB
   * over it) get our JSON 413 (docs/http_api.md, "Limits") */
  evhttp_set_max_body_size(s->http,
                           (ev_ssize_t)(s->max_body + (s->max_body > (1u << 20)
                                                           ? s->max_body
                                                           : (1u << 20))));
  /* read and drop a refused body before answering, so the client sees the
   * 413 instead of a reset connection */
  evhttp_set_flags(s->http, EVHTTP_SERVER_LINGERING_CLOSE);
  evhttp_set_allowed_methods(
      s->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                   EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
                   EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
  evhttp_set_gencb(s->http, on_request, s);
  s->sock = evhttp_bind_socket_with_handle(s->http, s->host,
                                           (ev_uint16_t)o->port);
  if (s->sock == NULL) {
    rc = lkvnet_seterr(&e, LKV_IOERROR, "cannot listen on %s:%d: %s", s->host,
                o->port, strerror(errno));
    goto fail;
  }
  if ((rc = lkvnet_node_conns_open(s, &e)) != LKV_OK) goto fail;
  {
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    evutil_socket_t fd = evhttp_bound_socket_get_fd(s->sock);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
      if (ss.ss_family == AF_INET)
        s->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
      else if (ss.ss_family == AF_INET6)
        s->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
  }
  if (o->my_url != NULL) {
    s->my_url = dupstr(o->my_url);
  } else {
    char u[512];
    snprintf(u, sizeof u, strchr(s->host, ':') ? "http://[%s]:%d"
                                               : "http://%s:%d",
             s->host, s->port);
    s->my_url = dupstr(u);
  }
  s->leader_url = dupstr(o->leader_url ? o->leader_url : s->my_url);
  if (s->my_url == NULL || s->leader_url == NULL) {
    rc = lkvnet_seterr(&e, LKV_NOMEM, "server");
    goto fail;
  }
  s->leader = strcmp(s->my_url, s->leader_url) == 0;
  if (s->nnodes == 0) {
    free(s->nodes);
    if ((s->nodes = calloc(1, sizeof *s->nodes)) == NULL ||
        (s->nodes[0] = dupstr(s->my_url)) == NULL) {
      rc = lkvnet_seterr(&e, LKV_NOMEM, "server");
      goto fail;
    }
    s->nnodes = 1;
  }
  if ((rc = setup_cluster(s, &e)) != LKV_OK) goto fail;
  s->notify_ev = event_new(s->base, s->pipefd[0], EV_READ | EV_PERSIST,
                           on_notify, s);
  s->tick_ev = event_new(s->base, -1, EV_PERSIST, on_tick, s);
  if (s->notify_ev == NULL || s->tick_ev == NULL) {
    rc = lkvnet_seterr(&e, LKV_NOMEM, "events");
    goto fail;
  }

  /* apply what the log holds past the engine, as far as it is committed */
  if (s->leader) lkvnet_node_advance_commit(s);
  if (s->needs_snapshot)
    lkvnet_node_log(s, "the engine holds an unfinished snapshot install: waiting for "
          "the leader to send a new one");
  if (s->apply_err.code != LKV_OK) {
    e = s->apply_err;
    rc = e.code;
    goto fail;
  }
  if (rs.dropped_bytes)
    lkvnet_node_log(s, "replication log: cut %llu byte(s) at open (%s)",
          (unsigned long long)rs.dropped_bytes, rs.dropped_why);
  lkvnet_node_log(s, "replication log: %llu entries (last index %llu, term %llu); "
        "applied %llu -> %llu", (unsigned long long)(rs.last_index -
                                                     rs.base_index),
        (unsigned long long)rs.last_index, (unsigned long long)s->term,
        (unsigned long long)replayed_from,
        (unsigned long long)s->applied_index);
  *out = s;
  return LKV_OK;
fail:
  if (err != NULL) *err = e;
  lkvnet_server_close(s, NULL);
  return rc;
}

int lkvnet_server_port(const lkvnet_server *s) { return s->port; }

const char *lkvnet_server_url(const lkvnet_server *s) { return s->my_url; }

int lkvnet_server_run(lkvnet_server *s, lkv_err *err) {
  struct timeval tick = {0, 50 * 1000};
  struct sigaction ign, old_pipe;
  int rc = LKV_OK;
  memset(&ign, 0, sizeof ign);
  ign.sa_handler = SIG_IGN;
  sigaction(SIGPIPE, &ign, &old_pipe);
  s->sigterm_ev = evsignal_new(s->base, SIGTERM, on_signal, s);
  s->sigint_ev = evsignal_new(s->base, SIGINT, on_signal, s);
  if (s->sigterm_ev == NULL || s->sigint_ev == NULL ||
      event_add(s->sigterm_ev, NULL) != 0 ||
      event_add(s->sigint_ev, NULL) != 0 ||
      event_add(s->notify_ev, NULL) != 0 ||
      event_add(s->tick_ev, &tick) != 0 ||
      lkvnet_node_conns_start(s) != 0) {
    rc = lkvnet_seterr(err, LKV_IOERROR, "cannot register the loop's events");
  } else {
    lkvnet_node_log(s, "listening on %s:%d as %s (%s; leader %s; %zu node(s))",
          s->host, s->port, s->my_url, s->leader ? "leader" : "follower",
          s->leader_url, s->nnodes);
    if (event_base_dispatch(s->base) < 0)
      rc = lkvnet_seterr(err, LKV_IOERROR, "the event loop failed");
  }
  /* the signal events restore the previous handlers when freed */
  if (s->sigterm_ev) event_free(s->sigterm_ev);
  if (s->sigint_ev) event_free(s->sigint_ev);
  s->sigterm_ev = s->sigint_ev = NULL;
  sigaction(SIGPIPE, &old_pipe, NULL);
  return rc;
}

int lkvnet_server_close(lkvnet_server *s, lkv_err *err) {
  int rc = LKV_OK;
  lkv_err e;
  size_t i;
  lkvnet_pending *p;
  lkvnet_waiter *w;
  if (s == NULL) return LKV_OK;
  /* answer anything still waiting (a loop that failed, not a drain) */
  for (p = s->head; p != NULL; p = p->next)
    held_error(&p->h, 503, "the node is shutting down");
  while ((w = s->waiters) != NULL) {
    held_error(&w->h, 503, "the node is shutting down");
    s->waiters = w->next;
    free(w->key);
    free(w);
  }
  for (i = 0; i < s->npeers; i++) {
    lkvnet_peer *pe = &s->peers[i];
    if (pe->conn) evhttp_connection_free(pe->conn);
    if (pe->snap) lkv_iter_free(pe->snap);
    free(pe->url);
    free(pe->hostport);
  }
  free(s->peers);
  for (i = 0; i < s->nfwd; i++) evhttp_connection_free(s->fwd[i]);
  free(s->leader_hostport);
  free(s->token);
  free(s->test_gate);
  /* evhttp_free frees the listener first, then closes the connections,
   * whose close callbacks must not enable it again */
  s->draining = 1;
  s->sock = NULL;
  lkvnet_node_conns_close(s);
  if (s->http) evhttp_free(s->http);
  lkvnet_node_conns_free(s);
  if (s->notify_ev) event_free(s->notify_ev);
  if (s->tick_ev) event_free(s->tick_ev);
  if (s->sigterm_ev) event_free(s->sigterm_ev);
  if (s->sigint_ev) event_free(s->sigint_ev);
  if (s->base) event_base_free(s->base);
  if (s->rlog && lkvnet_rlog_close(s->rlog, &e) != LKV_OK && rc == LKV_OK) {
    rc = e.code;
    if (err) *err = e;
  }
  while ((p = s->head) != NULL) {
    s->head = p->next;
    pending_free(s, p);
  }
  if (s->pipefd[0] >= 0) close(s->pipefd[0]);
  if (s->pipefd[1] >= 0) close(s->pipefd[1]);
  if (s->batch) lkv_batch_free(s->batch);
  lkv_buf_free(&s->getbuf);
  if (s->db && lkv_db_close(s->db, &e) != LKV_OK && rc == LKV_OK) {
    rc = e.code;
    if (err) *err = e;
  }
  for (i = 0; i < s->nnodes; i++) free(s->nodes[i]);
  free(s->nodes);
  free(s->data_dir);
  free(s->host);
  free(s->my_url);
  free(s->leader_url);
  free(s);
  return rc;
}

/* }====================================================================== */
