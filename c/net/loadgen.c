/* loadgen.c - the load generator of httpc.h (lunakv bench --url): keep-
 * alive evhttp connections in a private event_base, one request in
 * flight on each. */
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "err.h"
#include "hist.h"
#include "httpc.h"
#include "httpc_int.h"
#include "json.h"
#include "lkvnet.h"
#include "rng.h"

static double now_sec(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct timeval ms_tv(int ms) {
  struct timeval tv;
  tv.tv_sec = ms / 1000;
  tv.tv_usec = (ms % 1000) * 1000;
  return tv;
}

/* {======================================================================
** The load generator
** ======================================================================= */

void lkvnet_bench_spec_init(lkvnet_bench_spec *s) {
  memset(s, 0, sizeof *s);
  s->connections = 32;
  s->write_pct = 100;
  s->key_size = 16;
  s->value_size = 100;
  s->key_space = 100000;
  s->sequential = 1;
  s->seed = 1;
  s->timeout_ms = LKVNET_HTTPC_DEFAULT_TIMEOUT_MS;
  s->target = LKVNET_TARGET_LUNAKV;
}

/* After a transport error a connection waits before its next request,
 * BACKOFF_MIN_MS doubling up to BACKOFF_MAX_MS: a dead node among live
 * ones must not spin the one event thread. */
#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 1000
/* Give up when no request has succeeded yet and every connection has
 * failed in the transport this many times in a row (50+100+200 ms of
 * back-off in between): there is nothing to measure. */
#define GIVE_UP_FAILS 4
/* Descriptors kept for the rest of the process (the event base, a probe,
 * whatever the caller holds open) when checking RLIMIT_NOFILE. */
#define FD_MARGIN 64

typedef struct Bench Bench;

typedef struct BConn {
  Bench *b;
  size_t url; /* index into b->urls */
  struct evhttp_connection *evcon;
  struct event *next; /* fires to issue this connection's next request */
  double t0;
  int write;
  int busy;
  int backoff_ms; /* the wait after the next transport error */
  int fails;      /* transport errors in a row */
} BConn;

struct Bench {
  const lkvnet_bench_spec *s;
  lkvnet_bench_result *res;
  struct event_base *base;
  lkvnet_url *urls;
  BConn *conns;
  size_t nconns;
  char *value; /* the value as it goes in a body (base64 for etcd) */
  size_t vlen;
  char call_path[LKVNET_FN_NAME_MAX + 8]; /* "/call/{function}" */
  lkv_hist hist; /* nanoseconds, one per successful request */
  uint64_t issued, next_key, rng, ok;
  size_t inflight;
  size_t failing; /* connections with fails >= GIVE_UP_FAILS */
  long fail_url;  /* the URL of the first transport error (-1: none) */
  double start, last;
  int stopping, nomem, gave_up, send_failed;
};

static void bench_note_error(Bench *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void bench_note_error(Bench *b, const char *fmt, ...) {
  va_list ap;
  if (b->res->first_error[0] != '\0') return;
  va_start(ap, fmt);
  vsnprintf(b->res->first_error, sizeof b->res->first_error, fmt, ap);
  va_end(ap);
}

/* Is there nothing left to issue? */
static int bench_finished(const Bench *b) {
  return b->stopping || b->nomem || b->gave_up ||
         (b->s->ops != 0 && b->issued >= b->s->ops);
}

/* Issue c's next request after ms milliseconds (0: once this callback
 * returns). Requests are only ever issued from c->next's callback, never
 * from a request's callback: evhttp runs that inside evhttp_make_request
 * when a connection fails at once, and issuing there would recurse. */
static void bench_schedule(BConn *c, int ms) {
  if (ms <= 0) {
    event_active(c->next, EV_TIMEOUT, 1);
  } else {
    struct timeval tv = ms_tv(ms);
    if (evtimer_add(c->next, &tv) != 0) c->b->nomem = 1;
  }
}

/* Stop the loop when nothing is left to issue or wait for. */
static void bench_maybe_end(Bench *b) {
  if (bench_finished(b) && b->inflight == 0) event_base_loopbreak(b->base);
}

static void bench_done_cb(struct evhttp_request *req, void *arg) {
  BConn *c = arg;
  Bench *b = c->b;
  double t = now_sec();
  int status = req != NULL ? evhttp_request_get_response_code(req) : 0;
  int wait_ms = 0;
  c->busy = 0;
  b->inflight--;
  b->last = t;
  b->res->ops++;
  if (c->write)
    b->res->writes++;
  else
    b->res->reads++;
  if (status != 0) {
    /* an answer: the transport works */
    if (c->fails >= GIVE_UP_FAILS) b->failing--;
    c->fails = 0;
    c->backoff_ms = 0;
  }
  if (status >= 200 && status < 300) {
    double d = (t - c->t0) * 1e9;
    b->ok++;
    lkv_hist_add(&b->hist, d > 0 ? (uint64_t)d : 0);
  } else {
    b->res->errors++;
    if (status == 0) {
      b->res->transport_errors++;
      if (b->fail_url < 0) b->fail_url = (long)c->url;
      bench_note_error(b, "a request to http://%s failed in the transport",
                       b->urls[c->url].hostport);
      wait_ms = c->backoff_ms > 0 ? c->backoff_ms : BACKOFF_MIN_MS;
      c->backoff_ms =
          wait_ms * 2 < BACKOFF_MAX_MS ? wait_ms * 2 : BACKOFF_MAX_MS;
      if (++c->fails == GIVE_UP_FAILS) b->failing++;
      /* a target that refuses everything: stop rather than wait on */
      if (b->ok == 0 && b->failing == b->nconns) b->gave_up = 1;
    } else {
      struct evbuffer *in = evhttp_request_get_input_buffer(req);
      char text[160];
      size_t n = evbuffer_copyout(in, text, sizeof text - 1);
      text[n > 0 ? n : 0] = '\0';
      text[strcspn(text, "\r\n")] = '\0';
      bench_note_error(b, "HTTP %d from http://%s: %s", status,
                       b->urls[c->url].hostport, text);
    }
  }
  if (!bench_finished(b)) bench_schedule(c, wait_ms);
  bench_maybe_end(b);
}

/* Append the key of number k (zero-padded to key_size) as text. */
static void key_text(const Bench *b, uint64_t k, char *buf, size_t n) {
  snprintf(buf, n, "%0*llu", (int)b->s->key_size, (unsigned long long)k);
}

static void bench_issue(BConn *c) {
  Bench *b = c->b;
  const lkvnet_bench_spec *s = b->s;
  struct evhttp_request *req;
  struct evkeyvalq *oh;
  struct evbuffer *ob;
  enum evhttp_cmd_type type;
  char key[64], target[128];
  uint64_t k;
  int write = (int)(lkv_splitmix64(&b->rng) % 100) < s->write_pct;
  const char *path;

  if (write && s->sequential) {
    k = b->next_key++ % s->key_space;
  } else {
    k = lkv_splitmix64(&b->rng) % s->key_space;
  }
  key_text(b, s->key_offset + k, key, sizeof key);
  req = evhttp_request_new(bench_done_cb, c);
  if (req == NULL) {
    b->nomem = 1;
    bench_maybe_end(b);
    return;
  }
  oh = evhttp_request_get_output_headers(req);
  ob = evhttp_request_get_output_buffer(req);
  evhttp_add_header(oh, "Host", b->urls[c->url].hostport);
  if (s->target == LKVNET_TARGET_ETCD) {
    lkvnet_jbuf kb = {0};
    lkvnet_jbuf_base64(&kb, key, s->key_size);
    type = EVHTTP_REQ_POST;
    path = write ? "/v3/kv/put" : "/v3/kv/range";
    evbuffer_add(ob, "{\"key\":\"", 8);
    if (kb.data != NULL) evbuffer_add(ob, kb.data, kb.len);
    if (write) {
      evbuffer_add(ob, "\",\"value\":\"", 11);
      evbuffer_add(ob, b->value, b->vlen);
    }
    evbuffer_add(ob, "\"}", 2);
    if (kb.failed) b->nomem = 1;
    lkvnet_jbuf_free(&kb);
  } else if (write && s->target == LKVNET_TARGET_CALL) {
    /* the function makes its own value: the key is all it needs */
    type = EVHTTP_REQ_POST;
    path = b->call_path;
    evbuffer_add_printf(ob, "{\"key\":\"%s\"}", key);
  } else if (write) {
    type = EVHTTP_REQ_POST;
    path = "/set";
    evbuffer_add_printf(ob, "{\"key\":\"%s\",\"value\":\"", key);
    evbuffer_add(ob, b->value, b->vlen);
    evbuffer_add(ob, "\"}", 2);
  } else {
    type = EVHTTP_REQ_GET;
    snprintf(target, sizeof target, "/get?key=%s%s", key,
             s->consistent ? "&consistent=true" : "");
    path = target;
  }
  if (type == EVHTTP_REQ_POST) {
    char len[32];
    snprintf(len, sizeof len, "%zu", evbuffer_get_length(ob));
    evhttp_add_header(oh, "Content-Type", "application/json");
    evhttp_add_header(oh, "Content-Length", len);
  }
  c->write = write;
  c->t0 = now_sec();
  /* counted before the call: a connection that fails at once runs
   * bench_done_cb inside evhttp_make_request, which takes them back */
  c->busy = 1;
  b->issued++;
  b->inflight++;
  if (evhttp_make_request(c->evcon, req, type, path) != 0) {
    /* not sent and no callback (evhttp could not even set up the
     * connection): count it as a failed request and stop the run */
    c->busy = 0;
    b->inflight--;
    b->res->ops++;
    if (write)
      b->res->writes++;
    else
      b->res->reads++;
    b->res->errors++;
    b->res->transport_errors++;
    if (b->fail_url < 0) b->fail_url = (long)c->url;
    bench_note_error(b, "cannot send a request to http://%s",
                     b->urls[c->url].hostport);
    b->send_failed = 1;
    b->gave_up = 1;
    bench_maybe_end(b);
  }
  /* nothing of c may be touched here: its request may be over already */
}

static void bench_next_cb(evutil_socket_t fd, short what, void *arg) {
  BConn *c = arg;
  (void)fd;
  (void)what;
  if (bench_finished(c->b))
    bench_maybe_end(c->b);
  else
    bench_issue(c);
}

static void bench_stop_cb(evutil_socket_t fd, short what, void *arg) {
  Bench *b = arg;
  (void)fd;
  (void)what;
  b->stopping = 1;
  bench_maybe_end(b);
}

static int bench_check(const lkvnet_bench_spec *s, lkv_err *err) {
  double space_max = 1;
  size_t i;
  struct rlimit rl;
  if (s->urls == NULL || s->nurls == 0)
    return lkv_seterr(err, LKV_INVALID, "no URL to send requests to");
  if (s->connections < 1 || s->connections > LKVNET_BENCH_MAX_CONNECTIONS)
    return lkv_seterr(err, LKV_INVALID, "connections must be 1 .. %d",
                      LKVNET_BENCH_MAX_CONNECTIONS);
  /* every connection holds a descriptor: past the limit they would fail
   * for want of one and measure nothing */
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
      (rlim_t)s->connections + FD_MARGIN > rl.rlim_cur) {
    long most = (long)rl.rlim_cur - FD_MARGIN;
    return lkv_seterr(err, LKV_INVALID,
                      "%d connections need as many file descriptors; the "
                      "limit is %llu open files (ulimit -n), %d of them "
                      "kept for the rest: use at most %ld connections or "
                      "raise the limit",
                      s->connections, (unsigned long long)rl.rlim_cur,
                      FD_MARGIN, most > 0 ? most : 0);
  }
  if (s->ops == 0 && s->duration_ms <= 0)
    return lkv_seterr(err, LKV_INVALID,
                      "give a number of operations or a duration");
  if (s->target != LKVNET_TARGET_LUNAKV && s->target != LKVNET_TARGET_ETCD &&
      s->target != LKVNET_TARGET_CALL)
    return lkv_seterr(err, LKV_INVALID, "unknown target %d", (int)s->target);
  if (s->target == LKVNET_TARGET_CALL) {
    /* checked here, not left to the node's 404: a bad name would make
     * every request of the run fail, or need escaping in the path */
    size_t n = s->function != NULL ? strlen(s->function) : 0;
    if (n == 0)
      return lkv_seterr(err, LKV_INVALID,
                        "the call target needs a function name");
    if (n > LKVNET_FN_NAME_MAX ||
        strspn(s->function,
               "abcdefghijklmnopqrstuvwxyz"
               "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") != n)
      return lkv_seterr(err, LKV_INVALID,
                        "function name '%.80s' is not 1 to %d bytes of "
                        "[A-Za-z0-9_.-]",
                        s->function, LKVNET_FN_NAME_MAX);
  }
  if (s->write_pct < 0 || s->write_pct > 100)
    return lkv_seterr(err, LKV_INVALID, "write share must be 0 .. 100");
  if (s->key_size < 1 || s->key_size > 40)
    return lkv_seterr(err, LKV_INVALID, "key size must be 1 .. 40");
  if (s->value_size > LKV_MAX_VALUE_BYTES / 2)
    return lkv_seterr(err, LKV_INVALID, "value size over %zu",
                      (size_t)LKV_MAX_VALUE_BYTES / 2);
  if (s->key_space == 0)
    return lkv_seterr(err, LKV_INVALID, "the key space is empty");
  for (i = 0; i < s->key_size && space_max < 1e19; i++) space_max *= 10;
  if ((double)s->key_offset + (double)s->key_space > space_max)
    return lkv_seterr(err, LKV_INVALID,
                      "%llu keys from %llu do not fit in %zu digits",
                      (unsigned long long)s->key_space,
                      (unsigned long long)s->key_offset, s->key_size);
  return LKV_OK;
}

static void bench_free(Bench *b) {
  size_t i;
  if (b->conns != NULL) {
    for (i = 0; i < b->nconns; i++) {
      if (b->conns[i].evcon != NULL) evhttp_connection_free(b->conns[i].evcon);
      if (b->conns[i].next != NULL) event_free(b->conns[i].next);
    }
  }
  if (b->urls != NULL) {
    for (i = 0; i < b->s->nurls; i++) lkvnet_url_free(&b->urls[i]);
  }
  free(b->conns);
  free(b->urls);
  free(b->value);
  lkv_hist_free(&b->hist);
  if (b->base != NULL) event_base_free(b->base);
}

int lkvnet_bench_run(const lkvnet_bench_spec *s, lkvnet_bench_result *res,
                     lkv_err *err) {
  Bench b;
  struct event *stop = NULL;
  struct timeval tv;
  size_t i;
  int rc;

  memset(res, 0, sizeof *res);
  rc = bench_check(s, err);
  if (rc != LKV_OK) return rc;
  memset(&b, 0, sizeof b);
  b.s = s;
  b.res = res;
  b.rng = s->seed * 0x2545F4914F6CDD1DULL + 1;
  b.nconns = (size_t)s->connections;
  b.fail_url = -1;
  if (s->target == LKVNET_TARGET_CALL)
    snprintf(b.call_path, sizeof b.call_path, "/call/%s", s->function);
  b.urls = calloc(s->nurls, sizeof *b.urls);
  b.conns = calloc(b.nconns, sizeof *b.conns);
  b.base = event_base_new();
  if (b.urls == NULL || b.conns == NULL || b.base == NULL ||
      lkv_hist_init(&b.hist) != LKV_OK) {
    rc = lkv_seterr(err, LKV_NOMEM, "load generator state");
    goto done;
  }
  for (i = 0; i < s->nurls; i++) {
    rc = lkvnet_url_parse(s->urls[i], &b.urls[i], err);
    if (rc != LKV_OK) goto done;
  }
  /* the value, printable letters so no JSON escaping is needed; etcd's
   * gateway wants bytes fields in base64 */
  {
    char *raw = malloc(s->value_size + 1);
    uint64_t vr = s->seed;
    if (raw == NULL) {
      rc = lkv_seterr(err, LKV_NOMEM, "value of %zu bytes", s->value_size);
      goto done;
    }
    for (i = 0; i < s->value_size; i++)
      raw[i] = (char)('a' + (int)(lkv_splitmix64(&vr) % 26));
    raw[s->value_size] = '\0';
    if (s->target == LKVNET_TARGET_ETCD) {
      lkvnet_jbuf vb = {0};
      lkvnet_jbuf_base64(&vb, raw, s->value_size);
      free(raw);
      if (vb.failed) {
        lkvnet_jbuf_free(&vb);
        rc = lkv_seterr(err, LKV_NOMEM, "value of %zu bytes", s->value_size);
        goto done;
      }
      b.value = vb.data; /* the jbuf's memory is plain malloc'd bytes */
      b.vlen = vb.len;
      if (b.value == NULL) b.value = calloc(1, 1);
    } else {
      b.value = raw;
      b.vlen = s->value_size;
    }
  }
  tv = ms_tv(s->timeout_ms > 0 ? s->timeout_ms
                               : LKVNET_HTTPC_DEFAULT_TIMEOUT_MS);
  for (i = 0; i < b.nconns; i++) {
    BConn *c = &b.conns[i];
    c->b = &b;
    c->url = i % s->nurls;
    c->evcon = evhttp_connection_base_new(b.base, NULL, b.urls[c->url].host,
                                          (unsigned short)b.urls[c->url].port);
    c->next = evtimer_new(b.base, bench_next_cb, c);
    if (c->evcon == NULL || c->next == NULL) {
      rc = lkv_seterr(err, LKV_NOMEM, "connection %zu", i);
      goto done;
    }
    evhttp_connection_set_timeout_tv(c->evcon, &tv);
  }
  if (s->duration_ms > 0) {
    struct timeval dt = ms_tv(s->duration_ms);
    stop = evtimer_new(b.base, bench_stop_cb, &b);
    if (stop == NULL) {
      rc = lkv_seterr(err, LKV_NOMEM, "timer");
      goto done;
    }
    evtimer_add(stop, &dt);
  }
  b.start = b.last = now_sec();
  /* every first request goes out from the loop, like the later ones */
  for (i = 0; i < b.nconns; i++) bench_schedule(&b.conns[i], 0);
  event_base_dispatch(b.base);

  res->seconds = b.last - b.start;
  res->ops_per_sec = res->seconds > 0 ? (double)b.ok / res->seconds : 0;
  res->p50_us = lkv_hist_pct(&b.hist, 50) / 1e3;
  res->p90_us = lkv_hist_pct(&b.hist, 90) / 1e3;
  res->p99_us = lkv_hist_pct(&b.hist, 99) / 1e3;
  res->max_us = (double)b.hist.max / 1e3;
  if (b.nomem) {
    rc = lkv_seterr(err, LKV_NOMEM,
                    "load generator (%llu of %llu "
                    "requests made)",
                    (unsigned long long)res->ops, (unsigned long long)s->ops);
  } else if (b.gave_up) {
    /* an aborted run is an error even when some answers came after the
     * decision: the figures would measure a fraction of the load */
    char why[LKV_ERR_MSG_LEN];
    size_t u = b.fail_url >= 0 ? (size_t)b.fail_url : 0;
    if (b.send_failed)
      snprintf(why, sizeof why, "%s", res->first_error);
    else
      lkvnet_httpc_diagnose(s->urls[u], &b.urls[u], 0, 0, why, sizeof why);
    rc = lkv_seterr(err, LKV_IOERROR,
                    "%s (the run stopped after %llu requests: %llu failed "
                    "in the transport, %llu succeeded)",
                    why, (unsigned long long)res->ops,
                    (unsigned long long)res->transport_errors,
                    (unsigned long long)b.ok);
  } else {
    rc = LKV_OK;
  }
done:
  if (stop != NULL) event_free(stop);
  bench_free(&b);
  return rc;
}

/* }====================================================================== */
