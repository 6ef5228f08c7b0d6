/* loadgen.c - the load generator of httpc.h (lunakv bench --url), built to
 * take as little as it can from the machine it measures (it often shares
 * the cores with the node):
 *  - raw non-blocking TCP connections, one request in flight on each,
 *    connected once and again only after a close or a failure; a socket is
 *    registered with the event base once, EV_READ|EV_PERSIST, and an
 *    EV_WRITE event is added only while a connect or the tail of a request
 *    the socket would not take is pending;
 *  - a request is a template made at the start, one per URL and kind
 *    (write, read), of which only the key's bytes change; it goes out with
 *    one send() from the callback that read the previous answer;
 *  - answers are read into one buffer all connections share and parsed by
 *    httpresp.c (status line, Content-Length, chunked, Connection:
 *    close), which skips their bodies but for an HTTP error's first line,
 *    the one first_error quotes;
 *  - one periodic timer for the run finds the requests past their time
 *    limit and the connections whose back-off is over.
 * The HTTP is what a load generator needs: HTTP/1.1 (1.0 answers read),
 * no pipelining. */
#include <errno.h>
#include <event2/event.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "hist.h"
#include "httpc.h"
#include "httpc_int.h"
#include "httpresp.h"
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
/* The scan of the connections for timeouts and back-offs ends: every
 * TICK_MS, or a quarter of the time limit when that is shorter, so a
 * request is failed at most a tick after its limit and a back-off lasts
 * at most a tick longer than its term. */
#define TICK_MS 25
/* What one read() asks for, into the buffer all connections share. */
#define READ_BYTES 65536

/* {======================================================================
** State
** ======================================================================= */

/* A request with the key's place in it: the bytes of one request of a
 * kind to one URL, sent as they are once the key is written in. */
typedef struct Tmpl {
  char *buf;
  size_t len;
  size_t key_at; /* the key's first byte */
} Tmpl;

/* A URL the run talks to. */
typedef struct Target {
  lkvnet_url u;
  struct addrinfo *ai; /* resolved at the first connect (NULL: not yet) */
  size_t nai;
  Tmpl wr, rd; /* a write, a read */
} Target;

/* Why a request failed in the transport, for the sentence of a run that
 * gives up (the rest is found by probing the URL). */
enum { FAIL_CLOSED, FAIL_MALFORMED, FAIL_TIMEOUT };

/* Where a connection is in the run. */
enum {
  C_IDLE, /* nothing to do (the run is over, or about to be) */
  C_BUSY, /* a request in flight (or waiting on its connect) */
  C_WAIT  /* backing off after a transport error until `due` */
};

typedef struct Bench Bench;

typedef struct BConn {
  Bench *b;
  size_t url;        /* index into b->targets */
  int fd;            /* -1: closed, connected by the next request */
  int connecting;    /* a non-blocking connect is under way */
  size_t ai;         /* which of the URL's addresses to connect to */
  struct event *rev; /* EV_READ|EV_PERSIST on fd while it is open */
  struct event *wev; /* EV_WRITE on fd, added while out or a connect waits */
  int state;         /* C_IDLE, C_BUSY, C_WAIT */
  int write;         /* the request in flight is a write */
  double t0;         /* when it went out */
  double due;        /* C_WAIT: when the next request may go */
  int backoff_ms;    /* the wait after the next transport error */
  int fails;         /* transport errors in a row */
  /* the tail of the request the socket did not take yet */
  char *out;
  size_t out_off, out_len, out_cap;
  /* the answer being read */
  lkvnet_httpresp resp;
  char *carry;      /* a head or line cut by the end of a read */
  size_t carry_len; /* (malloc'd at the first, LKVNET_HTTPRESP_MAX_HEAD) */
} BConn;

struct Bench {
  const lkvnet_bench_spec *s;
  lkvnet_bench_result *res;
  struct event_base *base;
  struct event *tick, *stop;
  Target *targets;
  BConn *conns;
  size_t nconns;
  char *value; /* the value as it goes in a body (base64 for etcd) */
  size_t vlen;
  char *rbuf;    /* carry + READ_BYTES: where every read lands */
  lkv_hist hist; /* nanoseconds, one per successful request */
  uint64_t issued, next_key, rng, ok;
  size_t inflight;
  size_t failing; /* connections with fails >= GIVE_UP_FAILS */
  long fail_url;  /* the URL of the first transport error (-1: none) */
  int fail_kind;  /* and its FAIL_* */
  int timeout_ms;
  double timeout_s, start, last;
  int stopping, nomem, gave_up;
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

/* Stop the loop when nothing is left to issue or wait for. */
static void bench_maybe_end(Bench *b) {
  if (bench_finished(b) && b->inflight == 0) event_base_loopbreak(b->base);
}

/* }====================================================================== */

/* {======================================================================
** Requests
** ======================================================================= */

/* The key of number k, zero-padded decimal, into p[0 .. w). bench_check
 * made sure every key number fits in w digits. */
static void put_digits(char *p, size_t w, uint64_t k) {
  while (w > 0) {
    p[--w] = (char)('0' + k % 10);
    k /= 10;
  }
}

/* Standard base64 of s[0 .. n) with padding into p (4 * ceil(n / 3)
 * bytes), as lkvnet_jbuf_base64 writes it: etcd's gateway wants bytes
 * fields so. */
static void put_base64(char *p, const char *s, size_t n) {
  static const char a[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const unsigned char *q = (const unsigned char *)s;
  size_t i;
  for (i = 0; i + 2 < n; i += 3) {
    unsigned v = (unsigned)q[i] << 16 | (unsigned)q[i + 1] << 8 | q[i + 2];
    *p++ = a[v >> 18];
    *p++ = a[(v >> 12) & 63];
    *p++ = a[(v >> 6) & 63];
    *p++ = a[v & 63];
  }
  if (i < n) {
    unsigned v =
        (unsigned)q[i] << 16 | (i + 1 < n ? (unsigned)q[i + 1] << 8 : 0);
    *p++ = a[v >> 18];
    *p++ = a[(v >> 12) & 63];
    *p++ = i + 1 < n ? a[(v >> 6) & 63] : '=';
    *p = '=';
  }
}

static size_t base64_len(size_t n) { return (n + 2) / 3 * 4; }

/* The key's bytes as they go in a request. */
static size_t key_len(const Bench *b) {
  return b->s->target == LKVNET_TARGET_ETCD ? base64_len(b->s->key_size)
                                            : b->s->key_size;
}

static void put_key(const Bench *b, char *p, uint64_t k) {
  if (b->s->target == LKVNET_TARGET_ETCD) {
    char digits[64];
    put_digits(digits, b->s->key_size, k);
    put_base64(p, digits, b->s->key_size);
  } else {
    put_digits(p, b->s->key_size, k);
  }
}

/* POST path with the body {"key":"K"} or, with a value,
 * {"key":"K","value":"V"}. Returns 0, or -1 when out of memory. */
static int tmpl_post(Tmpl *m, const char *hostport, const char *path,
                     size_t klen, const char *value, size_t vlen) {
  char head[600];
  size_t blen = 8 + klen + (value != NULL ? 11 + vlen : 0) + 2;
  int hl = snprintf(head, sizeof head,
                    "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: "
                    "application/json\r\nContent-Length: %zu\r\n\r\n",
                    path, hostport, blen);
  char *p;
  if (hl < 0 || (size_t)hl >= sizeof head) return -1;
  m->len = (size_t)hl + blen;
  m->buf = p = malloc(m->len);
  if (p == NULL) return -1;
  memcpy(p, head, (size_t)hl);
  p += hl;
  memcpy(p, "{\"key\":\"", 8);
  m->key_at = (size_t)hl + 8;
  memset(p + 8, '0', klen);
  p += 8 + klen;
  if (value != NULL) {
    memcpy(p, "\",\"value\":\"", 11);
    memcpy(p + 11, value, vlen);
    p += 11 + vlen;
  }
  memcpy(p, "\"}", 2);
  return 0;
}

/* GET /get?key=K[&consistent=true]. */
static int tmpl_get(Tmpl *m, const char *hostport, size_t klen,
                    int consistent) {
  char tail[400];
  int tl = snprintf(tail, sizeof tail, "%s HTTP/1.1\r\nHost: %s\r\n\r\n",
                    consistent ? "&consistent=true" : "", hostport);
  if (tl < 0 || (size_t)tl >= sizeof tail) return -1;
  m->len = 13 + klen + (size_t)tl;
  m->buf = malloc(m->len);
  if (m->buf == NULL) return -1;
  memcpy(m->buf, "GET /get?key=", 13);
  m->key_at = 13;
  memset(m->buf + 13, '0', klen);
  memcpy(m->buf + 13 + klen, tail, (size_t)tl);
  return 0;
}

/* Both requests of target t. Returns 0, or nonzero when out of memory. */
static int tmpl_make(const Bench *b, Target *t) {
  const lkvnet_bench_spec *s = b->s;
  const char *hp = t->u.hostport;
  size_t kl = key_len(b);
  char call_path[LKVNET_FN_NAME_MAX + 8]; /* "/call/{function}" */
  switch (s->target) {
    case LKVNET_TARGET_ETCD:
      return tmpl_post(&t->wr, hp, "/v3/kv/put", kl, b->value, b->vlen) ||
             tmpl_post(&t->rd, hp, "/v3/kv/range", kl, NULL, 0);
    case LKVNET_TARGET_CALL:
      /* the function makes its own value: the key is all it needs */
      snprintf(call_path, sizeof call_path, "/call/%s", s->function);
      return tmpl_post(&t->wr, hp, call_path, kl, NULL, 0) ||
             tmpl_get(&t->rd, hp, kl, s->consistent);
    default:
      return tmpl_post(&t->wr, hp, "/set", kl, b->value, b->vlen) ||
             tmpl_get(&t->rd, hp, kl, s->consistent);
  }
}

/* }====================================================================== */

/* {======================================================================
** Connections
** ======================================================================= */

static void read_cb(evutil_socket_t fd, short what, void *arg);
static void write_cb(evutil_socket_t fd, short what, void *arg);
static void issue(BConn *c);

/* Close c's socket, if open, and forget what was pending on it. */
static void conn_close(BConn *c) {
  if (c->fd < 0) return;
  event_del(c->rev);
  event_del(c->wev);
  close(c->fd);
  c->fd = -1;
  c->connecting = 0;
  c->out_off = c->out_len = 0;
  c->carry_len = 0;
}

/* Resolve t's host once (blocking, as evhttp's connect without a DNS
 * base did). Returns 0 or -1. */
static int target_resolve(Target *t) {
  struct addrinfo hints, *a;
  char port[16];
  if (t->ai != NULL) return 0;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  snprintf(port, sizeof port, "%d", t->u.port);
  if (getaddrinfo(t->u.host, port, &hints, &t->ai) != 0) {
    t->ai = NULL;
    return -1;
  }
  for (t->nai = 0, a = t->ai; a != NULL; a = a->ai_next) t->nai++;
  return 0;
}

/* Open c's socket and start connecting it: registered for reading from
 * now until it closes; for writing while the connect is under way.
 * Returns 0, or -1 (the request fails in the transport). */
static int conn_open(BConn *c) {
  Target *t = &c->b->targets[c->url];
  struct addrinfo *a;
  size_t i;
  int fd, one = 1;
  if (target_resolve(t) != 0) return -1;
  /* a host with several addresses: each failed connect moves this
   * connection on to the next one */
  for (a = t->ai, i = c->ai % t->nai; i > 0; i--) a = a->ai_next;
  fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
              a->ai_protocol);
  if (fd < 0) return -1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  c->connecting = 0;
  if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
    if (errno != EINPROGRESS) {
      close(fd);
      c->ai++;
      return -1;
    }
    c->connecting = 1;
  }
  /* the events were made at the start and are not pending: assigning
   * them the new descriptor allocates nothing */
  if (event_assign(c->rev, c->b->base, fd, EV_READ | EV_PERSIST, read_cb, c) !=
          0 ||
      event_assign(c->wev, c->b->base, fd, EV_WRITE, write_cb, c) != 0 ||
      event_add(c->rev, NULL) != 0 ||
      (c->connecting && event_add(c->wev, NULL) != 0)) {
    event_del(c->rev);
    close(fd);
    c->connecting = 0;
    return -1;
  }
  c->fd = fd;
  return 0;
}

/* The request in flight on c is over: status is its HTTP status, or 0
 * when it failed in the transport (why: FAIL_*). Counts it, then issues
 * c's next request, at once after an answer, after a back-off after a
 * transport error. */
static void done(BConn *c, int status, int why) {
  Bench *b = c->b;
  double t = now_sec();
  c->state = C_IDLE;
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
  } else if (status != 0) {
    char *text = c->resp.text; /* the body's start, its first line quoted */
    b->res->errors++;
    text[c->resp.text_len] = '\0';
    text[strcspn(text, "\r\n")] = '\0';
    bench_note_error(b, "HTTP %d from http://%s: %s", status,
                     b->targets[c->url].u.hostport, text);
  } else {
    int wait_ms = c->backoff_ms > 0 ? c->backoff_ms : BACKOFF_MIN_MS;
    b->res->errors++;
    b->res->transport_errors++;
    if (b->fail_url < 0) {
      b->fail_url = (long)c->url;
      b->fail_kind = why;
    }
    bench_note_error(b, "a request to http://%s failed in the transport",
                     b->targets[c->url].u.hostport);
    c->backoff_ms = wait_ms * 2 < BACKOFF_MAX_MS ? wait_ms * 2 : BACKOFF_MAX_MS;
    if (++c->fails == GIVE_UP_FAILS) b->failing++;
    /* a target that refuses everything: stop rather than wait on */
    if (b->ok == 0 && b->failing == b->nconns) b->gave_up = 1;
    c->state = C_WAIT;
    c->due = t + wait_ms / 1e3;
  }
  /* an answer's next request goes out from here, inside the read
   * callback: no timer, no pass through the loop. It cannot recurse:
   * a request that fails at once ends in back-off, not in a request. */
  if (c->state == C_IDLE && !bench_finished(b)) issue(c);
  bench_maybe_end(b);
}

/* The request in flight on c failed in the transport: the connection is
 * reset (a failed connect moves on to the host's next address). */
static void fail(BConn *c, int why) {
  if (c->connecting) c->ai++;
  conn_close(c);
  if (c->state == C_BUSY) done(c, 0, why);
}

/* Queue n bytes the socket did not take and wait until it can. */
static int queue_out(BConn *c, const char *p, size_t n) {
  if (n > c->out_cap) {
    char *q = realloc(c->out, n);
    if (q == NULL) return -1;
    c->out = q;
    c->out_cap = n;
  }
  memcpy(c->out, p, n);
  c->out_off = 0;
  c->out_len = n;
  return event_add(c->wev, NULL);
}

/* Send n bytes on c's connected socket, queueing what it does not take;
 * a socket that takes none of it fails the request. */
static void send_all(BConn *c, const char *p, size_t n) {
  ssize_t w;
  do {
    w = send(c->fd, p, n, MSG_NOSIGNAL);
  } while (w < 0 && errno == EINTR);
  if (w == (ssize_t)n) return;
  if (w < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      fail(c, FAIL_CLOSED);
      return;
    }
    w = 0;
  }
  if (queue_out(c, p + w, n - (size_t)w) != 0) {
    c->b->nomem = 1;
    fail(c, FAIL_CLOSED);
  }
}

/* Issue c's next request: draw write or read and the key (in the order
 * the generator always has, so a seed gives the same keys), write the key
 * into the template, send it. */
static void issue(BConn *c) {
  Bench *b = c->b;
  const lkvnet_bench_spec *s = b->s;
  int write = (int)(lkv_splitmix64(&b->rng) % 100) < s->write_pct;
  Tmpl *m = write ? &b->targets[c->url].wr : &b->targets[c->url].rd;
  uint64_t k;
  if (write && s->sequential) {
    k = b->next_key++ % s->key_space;
  } else {
    k = lkv_splitmix64(&b->rng) % s->key_space;
  }
  put_key(b, m->buf + m->key_at, s->key_offset + k);
  c->write = write;
  c->state = C_BUSY;
  /* an HTTP error's text is kept only while there is no first_error */
  lkvnet_httpresp_start(&c->resp, b->res->first_error[0] == '\0');
  c->t0 = now_sec();
  b->issued++;
  b->inflight++;
  if (c->fd < 0 && conn_open(c) != 0) {
    fail(c, FAIL_CLOSED);
  } else if (c->connecting) {
    /* sent when the connect completes (write_cb) */
    if (queue_out(c, m->buf, m->len) != 0) {
      b->nomem = 1;
      fail(c, FAIL_CLOSED);
    }
  } else {
    send_all(c, m->buf, m->len);
  }
}

/* The socket can take more: a connect completed (or failed), or the
 * queued tail of a request can go. */
static void write_cb(evutil_socket_t fd, short what, void *arg) {
  BConn *c = arg;
  ssize_t w;
  (void)what;
  if (c->connecting) {
    int e = 0;
    socklen_t len = sizeof e;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) != 0 || e != 0) {
      fail(c, FAIL_CLOSED);
      return;
    }
    c->connecting = 0;
  }
  if (c->out_off == c->out_len) return;
  do {
    w = send(fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
  } while (w < 0 && errno == EINTR);
  if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
    fail(c, FAIL_CLOSED);
    return;
  }
  if (w > 0) c->out_off += (size_t)w;
  if (c->out_off < c->out_len) {
    if (event_add(c->wev, NULL) != 0) {
      c->b->nomem = 1;
      fail(c, FAIL_CLOSED);
    }
  } else {
    c->out_off = c->out_len = 0;
  }
}

/* }====================================================================== */

/* {======================================================================
** Answers and the clock
** ======================================================================= */

/* Bytes (or the end) came on c's socket. One read() a callback: the
 * socket is level-triggered, so what is left is read on the next pass. */
static void read_cb(evutil_socket_t fd, short what, void *arg) {
  BConn *c = arg;
  Bench *b = c->b;
  size_t have = c->carry_len, used;
  ssize_t n;
  int r;
  (void)what;
  if (have > 0) memcpy(b->rbuf, c->carry, have);
  do {
    n = recv(fd, b->rbuf + have, READ_BYTES, 0);
  } while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
  if (c->state != C_BUSY) {
    /* the server closed a connection with nothing in flight, or sent
     * what nobody asked for: the next request connects anew */
    conn_close(c);
    return;
  }
  if (n <= 0) {
    if (n == 0 && lkvnet_httpresp_ends_at_close(&c->resp)) {
      conn_close(c);
      done(c, c->resp.status, 0);
    } else {
      fail(c, FAIL_CLOSED);
    }
    return;
  }
  c->carry_len = 0;
  r = lkvnet_httpresp_feed(&c->resp, b->rbuf, have + (size_t)n, &used);
  if (r < 0) {
    fail(c, FAIL_MALFORMED);
  } else if (r == 0) {
    /* a head or line cut short: kept for the next read */
    size_t rest = have + (size_t)n - used;
    if (rest > 0 && c->carry == NULL)
      c->carry = malloc(LKVNET_HTTPRESP_MAX_HEAD);
    if (rest > 0 && c->carry == NULL) {
      b->nomem = 1;
      fail(c, FAIL_CLOSED);
      return;
    }
    if (rest > 0) memcpy(c->carry, b->rbuf + used, rest);
    c->carry_len = rest;
  } else {
    /* more bytes than the answer, or a request not all sent: this
     * connection is out of step; the next request opens a new one */
    if (c->resp.close_after || used < have + (size_t)n || c->out_len > 0)
      conn_close(c);
    done(c, c->resp.status, 0);
  }
}

/* Every tick: fail the requests past their time limit (their connection
 * is reset, as evhttp's timeout did), issue the requests whose back-off
 * is over, end the loop when all is done. */
static void tick_cb(evutil_socket_t fd, short what, void *arg) {
  Bench *b = arg;
  double t = now_sec();
  size_t i;
  (void)fd;
  (void)what;
  for (i = 0; i < b->nconns; i++) {
    BConn *c = &b->conns[i];
    if (c->state == C_BUSY && t - c->t0 >= b->timeout_s) {
      fail(c, FAIL_TIMEOUT);
    } else if (c->state == C_WAIT && t >= c->due) {
      c->state = C_IDLE;
      if (!bench_finished(b)) issue(c);
    }
  }
  bench_maybe_end(b);
}

static void stop_cb(evutil_socket_t fd, short what, void *arg) {
  Bench *b = arg;
  (void)fd;
  (void)what;
  b->stopping = 1;
  bench_maybe_end(b);
}

/* }====================================================================== */

/* {======================================================================
** The run
** ======================================================================= */

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
      BConn *c = &b->conns[i];
      if (c->rev != NULL) conn_close(c);
      if (c->rev != NULL) event_free(c->rev);
      if (c->wev != NULL) event_free(c->wev);
      free(c->out);
      free(c->carry);
    }
  }
  if (b->targets != NULL) {
    for (i = 0; i < b->s->nurls; i++) {
      Target *t = &b->targets[i];
      lkvnet_url_free(&t->u);
      if (t->ai != NULL) freeaddrinfo(t->ai);
      free(t->wr.buf);
      free(t->rd.buf);
    }
  }
  free(b->conns);
  free(b->targets);
  free(b->value);
  free(b->rbuf);
  lkv_hist_free(&b->hist);
  if (b->tick != NULL) event_free(b->tick);
  if (b->stop != NULL) event_free(b->stop);
  if (b->base != NULL) event_base_free(b->base);
}

/* The value, printable letters so no JSON escaping is needed; etcd's
 * gateway wants bytes fields in base64. */
static int make_value(Bench *b, lkv_err *err) {
  const lkvnet_bench_spec *s = b->s;
  char *raw = malloc(s->value_size + 1);
  uint64_t vr = s->seed;
  size_t i;
  if (raw == NULL)
    return lkv_seterr(err, LKV_NOMEM, "value of %zu bytes", s->value_size);
  for (i = 0; i < s->value_size; i++)
    raw[i] = (char)('a' + (int)(lkv_splitmix64(&vr) % 26));
  raw[s->value_size] = '\0';
  if (s->target == LKVNET_TARGET_ETCD) {
    lkvnet_jbuf vb = {0};
    lkvnet_jbuf_base64(&vb, raw, s->value_size);
    free(raw);
    if (vb.failed) {
      lkvnet_jbuf_free(&vb);
      return lkv_seterr(err, LKV_NOMEM, "value of %zu bytes", s->value_size);
    }
    b->value = vb.data; /* the jbuf's memory is plain malloc'd bytes */
    b->vlen = vb.len;
    if (b->value == NULL) b->value = calloc(1, 1);
    if (b->value == NULL) return lkv_seterr(err, LKV_NOMEM, "value");
  } else {
    b->value = raw;
    b->vlen = s->value_size;
  }
  return LKV_OK;
}

int lkvnet_bench_run(const lkvnet_bench_spec *s, lkvnet_bench_result *res,
                     lkv_err *err) {
  Bench b;
  struct timeval tv;
  size_t i;
  int rc, tick_ms;

  memset(res, 0, sizeof *res);
  rc = bench_check(s, err);
  if (rc != LKV_OK) return rc;
  memset(&b, 0, sizeof b);
  b.s = s;
  b.res = res;
  b.rng = s->seed * 0x2545F4914F6CDD1DULL + 1;
  b.nconns = (size_t)s->connections;
  b.fail_url = -1;
  b.timeout_ms =
      s->timeout_ms > 0 ? s->timeout_ms : LKVNET_HTTPC_DEFAULT_TIMEOUT_MS;
  b.timeout_s = b.timeout_ms / 1e3;
  b.targets = calloc(s->nurls, sizeof *b.targets);
  b.conns = calloc(b.nconns, sizeof *b.conns);
  b.rbuf = malloc(LKVNET_HTTPRESP_MAX_HEAD + READ_BYTES);
  b.base = event_base_new();
  if (b.targets == NULL || b.conns == NULL || b.rbuf == NULL ||
      b.base == NULL || lkv_hist_init(&b.hist) != LKV_OK) {
    rc = lkv_seterr(err, LKV_NOMEM, "load generator state");
    goto done;
  }
  rc = make_value(&b, err);
  if (rc != LKV_OK) goto done;
  for (i = 0; i < s->nurls; i++) {
    rc = lkvnet_url_parse(s->urls[i], &b.targets[i].u, err);
    if (rc != LKV_OK) goto done;
    if (tmpl_make(&b, &b.targets[i]) != 0) {
      rc = lkv_seterr(err, LKV_NOMEM, "requests to %s", s->urls[i]);
      goto done;
    }
  }
  for (i = 0; i < b.nconns; i++) {
    BConn *c = &b.conns[i];
    c->b = &b;
    c->url = i % s->nurls;
    c->fd = -1;
    /* every connection starts as if its back-off were over: the first
     * tick, at once, issues the first requests from inside the loop */
    c->state = C_WAIT;
    c->rev = event_new(b.base, -1, EV_READ | EV_PERSIST, read_cb, c);
    c->wev = event_new(b.base, -1, EV_WRITE, write_cb, c);
    if (c->rev == NULL || c->wev == NULL) {
      rc = lkv_seterr(err, LKV_NOMEM, "connection %zu", i);
      goto done;
    }
  }
  tick_ms = b.timeout_ms / 4 < TICK_MS ? b.timeout_ms / 4 : TICK_MS;
  tv = ms_tv(tick_ms > 0 ? tick_ms : 1);
  b.tick = event_new(b.base, -1, EV_PERSIST, tick_cb, &b);
  if (b.tick == NULL || event_add(b.tick, &tv) != 0) {
    rc = lkv_seterr(err, LKV_NOMEM, "timer");
    goto done;
  }
  if (s->duration_ms > 0) {
    struct timeval dt = ms_tv(s->duration_ms);
    b.stop = evtimer_new(b.base, stop_cb, &b);
    if (b.stop == NULL || evtimer_add(b.stop, &dt) != 0) {
      rc = lkv_seterr(err, LKV_NOMEM, "timer");
      goto done;
    }
  }
  b.start = b.last = now_sec();
  event_active(b.tick, EV_TIMEOUT, 1);
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
    if (b.fail_kind == FAIL_MALFORMED)
      snprintf(why, sizeof why, "%.120s sent a malformed HTTP answer",
               s->urls[u]);
    else
      lkvnet_httpc_diagnose(s->urls[u], &b.targets[u].u,
                            b.fail_kind == FAIL_TIMEOUT, b.timeout_ms, why,
                            sizeof why);
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
  bench_free(&b);
  return rc;
}

/* }====================================================================== */
