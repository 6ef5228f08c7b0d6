/* loadgen_test.c - the load generator (loadgen.c) against a server of
 * canned answers run on a thread of this test, for the HTTP framings a
 * real server may use and evhttp's server never does in our tests: a
 * chunked body (extensions, a trailer), an interim 100 answer, a body
 * that ends when the server closes, Connection: close after each answer,
 * an answer written one byte at a time, an HTTP error whose body is
 * chunked, garbage, and no answer at all (the timeout). The requests the
 * server reads are checked too: whole, in the shape of the target. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "httpc.h"
#include "test.h"

/* {======================================================================
** The canned server
** ======================================================================= */

#define RAW_MAX_CONNS 64
#define RAW_REQ_MAX 4096

typedef struct RawConn {
  int fd;
  char req[RAW_REQ_MAX];
  size_t len;
} RawConn;

typedef struct Raw {
  int lfd, port;
  pthread_t thread;
  /* set while no run is going on, read by the server thread */
  const char *answer; /* written whole for every request */
  int dribble;        /* one byte per send(), a short pause between */
  int close_after;    /* close the connection after each answer */
  int silent;         /* read requests, answer none */
  /* the server thread's counts, read once a run is over */
  unsigned long accepted, requests, bad_requests;
  char first_req[RAW_REQ_MAX]; /* the first request's head and body */
  atomic_int stop; /* set by the test's thread, read by the server's */
  int running;
  RawConn conns[RAW_MAX_CONNS];
} Raw;

static void raw_close(RawConn *c) {
  close(c->fd);
  c->fd = -1;
  c->len = 0;
}

static void raw_write(Raw *s, int fd, const char *p, size_t n) {
  struct timespec pause = {0, 20000};
  while (n > 0) {
    ssize_t w = send(fd, p, s->dribble ? 1 : n, MSG_NOSIGNAL);
    if (w <= 0) return; /* the client went away: its run is over */
    p += w;
    n -= (size_t)w;
    if (s->dribble) nanosleep(&pause, NULL);
  }
}

/* A request is whole when its head and Content-Length bytes are in:
 * returns its length, 0 while incomplete, -1 when malformed. */
static long raw_request_len(const RawConn *c) {
  const char *end = memmem(c->req, c->len, "\r\n\r\n", 4);
  const char *cl;
  size_t head, body = 0;
  if (end == NULL) return c->len >= RAW_REQ_MAX ? -1 : 0;
  head = (size_t)(end - c->req) + 4;
  cl = memmem(c->req, head, "\r\nContent-Length: ", 18);
  if (cl != NULL) body = strtoul(cl + 18, NULL, 10);
  if (head + body > RAW_REQ_MAX) return -1;
  return head + body <= c->len ? (long)(head + body) : 0;
}

/* Is this a request the generator may send (lunakv target, writes)? */
static int raw_request_ok(const char *r, size_t n) {
  static const char post[] = "POST /set HTTP/1.1\r\nHost: 127.0.0.1:";
  const char *body = memmem(r, n, "\r\n\r\n", 4);
  return n > sizeof post && memcmp(r, post, sizeof post - 1) == 0 &&
         memmem(r, n, "\r\nContent-Type: application/json\r\n", 34) != NULL &&
         body != NULL && memcmp(body + 4, "{\"key\":\"", 8) == 0 &&
         r[n - 1] == '}';
}

static void raw_serve_one(Raw *s, RawConn *c) {
  ssize_t n = recv(c->fd, c->req + c->len, RAW_REQ_MAX - c->len, 0);
  long whole;
  if (n <= 0) {
    raw_close(c);
    return;
  }
  c->len += (size_t)n;
  while ((whole = raw_request_len(c)) != 0) {
    if (whole < 0) {
      s->bad_requests++;
      raw_close(c);
      return;
    }
    if (s->requests++ == 0) {
      memcpy(s->first_req, c->req, (size_t)whole);
      s->first_req[whole] = '\0';
    }
    if (!raw_request_ok(c->req, (size_t)whole)) s->bad_requests++;
    memmove(c->req, c->req + whole, c->len - (size_t)whole);
    c->len -= (size_t)whole;
    if (s->silent) continue;
    raw_write(s, c->fd, s->answer, strlen(s->answer));
    if (s->close_after) {
      raw_close(c);
      return;
    }
  }
}

static void *raw_serve(void *arg) {
  Raw *s = arg;
  struct pollfd pfd[RAW_MAX_CONNS + 1];
  int i;
  while (!atomic_load(&s->stop)) {
    int n = 1;
    pfd[0].fd = s->lfd;
    pfd[0].events = POLLIN;
    for (i = 0; i < RAW_MAX_CONNS; i++) {
      pfd[n].fd = s->conns[i].fd; /* -1: poll skips it */
      pfd[n].events = POLLIN;
      pfd[n].revents = 0;
      n++;
    }
    if (poll(pfd, (nfds_t)n, 20) <= 0) continue;
    if (pfd[0].revents & POLLIN) {
      int fd = accept(s->lfd, NULL, NULL), one = 1;
      for (i = 0; fd >= 0 && i < RAW_MAX_CONNS; i++) {
        if (s->conns[i].fd < 0) {
          s->conns[i].fd = fd;
          s->conns[i].len = 0;
          setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          s->accepted++;
          fd = -1;
        }
      }
      if (fd >= 0) close(fd); /* full: the client sees a reset */
    }
    for (i = 0; i < RAW_MAX_CONNS; i++)
      if (pfd[i + 1].fd >= 0 && (pfd[i + 1].revents & (POLLIN | POLLHUP)))
        raw_serve_one(s, &s->conns[i]);
  }
  return NULL;
}

static void raw_start(Raw *s) {
  struct sockaddr_in sin;
  socklen_t len = sizeof sin;
  int i, one = 1;
  memset(s, 0, sizeof *s);
  for (i = 0; i < RAW_MAX_CONNS; i++) s->conns[i].fd = -1;
  s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  CHECK(s->lfd >= 0);
  setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  memset(&sin, 0, sizeof sin);
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  CHECK(bind(s->lfd, (struct sockaddr *)&sin, sizeof sin) == 0);
  CHECK(listen(s->lfd, 128) == 0);
  getsockname(s->lfd, (struct sockaddr *)&sin, &len);
  s->port = ntohs(sin.sin_port);
}

/* Stop the server thread: its counts are final until raw_set. */
static void raw_pause(Raw *s) {
  int i;
  if (!s->running) return;
  atomic_store(&s->stop, 1);
  pthread_join(s->thread, NULL);
  s->running = 0;
  for (i = 0; i < RAW_MAX_CONNS; i++)
    if (s->conns[i].fd >= 0) raw_close(&s->conns[i]);
}

/* Answer `answer` to every request from now on, the counts zeroed. */
static void raw_set(Raw *s, const char *answer, int dribble, int close_after,
                    int silent) {
  raw_pause(s);
  s->answer = answer;
  s->dribble = dribble;
  s->close_after = close_after;
  s->silent = silent;
  s->accepted = s->requests = s->bad_requests = 0;
  s->first_req[0] = '\0';
  atomic_store(&s->stop, 0);
  CHECK(pthread_create(&s->thread, NULL, raw_serve, s) == 0);
  s->running = 1;
}

static void raw_stop(Raw *s) {
  raw_pause(s);
  close(s->lfd);
}

/* }====================================================================== */

typedef struct Case {
  const char *name;
  const char *answer;
  int dribble, close_after;
  int http_errors; /* every request is an HTTP error */
} Case;

/* Each framing a server may use, answered to every request of a run of
 * 40 on 3 connections: all 40 are counted, once each, as successes (or
 * as HTTP errors), none as a transport error. */
static void test_framings(Raw *s) {
  static const Case cases[] = {
      {"content-length", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 0, 0,
       0},
      {"lower-case names, dribbled",
       "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
       "content-length: 12\r\n\r\n{\"ok\": true}",
       1, 0, 0},
      {"chunked, with an extension and a trailer, dribbled",
       "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
       "5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\n",
       1, 0, 0},
      {"chunked and a Content-Length: chunked wins",
       "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n"
       "transfer-encoding: CHUNKED\r\n\r\n2\r\nok\r\n0\r\n\r\n",
       0, 0, 0},
      {"an interim 100 first",
       "HTTP/1.1 100 Continue\r\n\r\n"
       "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
       0, 0, 0},
      {"Connection: close after each answer",
       "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", 0,
       1, 0},
      {"a body to the close, HTTP/1.0",
       "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of this", 1, 1,
       0},
      {"204, no body", "HTTP/1.1 204 No Content\r\n\r\n", 0, 0, 0},
      {"503s",
       "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 6\r\n\r\nno way", 0,
       0, 1},
  };
  char url[64];
  const char *urls[1];
  lkvnet_bench_spec spec;
  lkvnet_bench_result res;
  lkv_err err;
  size_t i;

  snprintf(url, sizeof url, "http://127.0.0.1:%d", s->port);
  urls[0] = url;
  for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const Case *c = &cases[i];
    raw_set(s, c->answer, c->dribble, c->close_after, 0);
    lkvnet_bench_spec_init(&spec);
    spec.urls = urls;
    spec.nurls = 1;
    spec.connections = 3;
    spec.ops = 40;
    spec.value_size = 20;
    err.msg[0] = '\0';
    CHECK_OK(lkvnet_bench_run(&spec, &res, &err), &err);
    raw_pause(s); /* its counts are final */
    if (res.ops != 40 || res.writes != 40 || res.transport_errors != 0 ||
        res.errors != (c->http_errors ? 40u : 0u) || s->bad_requests != 0) {
      fprintf(stderr,
              "framing '%s': ops %llu, errors %llu (transport %llu), "
              "bad requests %lu; first error: %s\n",
              c->name, (unsigned long long)res.ops,
              (unsigned long long)res.errors,
              (unsigned long long)res.transport_errors, s->bad_requests,
              res.first_error);
      CHECK(0);
    }
  }
}

/* The server's side of the counts: with Connection: close every request
 * comes on a connection of its own; a keep-alive run opens each
 * connection once. */
static void test_connections(Raw *s) {
  char url[64];
  const char *urls[1];
  lkvnet_bench_spec spec;
  lkvnet_bench_result res;
  lkv_err err;

  snprintf(url, sizeof url, "http://127.0.0.1:%d", s->port);
  urls[0] = url;
  lkvnet_bench_spec_init(&spec);
  spec.urls = urls;
  spec.nurls = 1;
  spec.connections = 4;
  spec.ops = 100;
  spec.value_size = 10;

  raw_set(s, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 0, 0, 0);
  CHECK_OK(lkvnet_bench_run(&spec, &res, &err), &err);
  raw_pause(s);
  CHECK(res.ops == 100 && res.errors == 0);
  CHECK(s->requests == 100 && s->accepted == 4);
  /* the request as it went out: head, then the JSON body */
  CHECK(strncmp(s->first_req, "POST /set HTTP/1.1\r\nHost: 127.0.0.1:", 36) ==
        0);
  CHECK(strstr(s->first_req, "\r\nContent-Length: 47\r\n\r\n{\"key\":\"") !=
        NULL);

  raw_set(s,
          "HTTP/1.1 200 OK\r\nCONNECTION: Close\r\nContent-Length: 2\r\n"
          "\r\nok",
          0, 1, 0);
  CHECK_OK(lkvnet_bench_run(&spec, &res, &err), &err);
  raw_pause(s);
  CHECK(res.ops == 100 && res.errors == 0);
  CHECK(s->requests == 100 && s->accepted == 100);
}

/* An HTTP error's first line of body is kept, chunks joined. */
static void test_error_text(Raw *s) {
  char url[64], want[128];
  const char *urls[1];
  lkvnet_bench_spec spec;
  lkvnet_bench_result res;
  lkv_err err;

  snprintf(url, sizeof url, "http://127.0.0.1:%d", s->port);
  urls[0] = url;
  lkvnet_bench_spec_init(&spec);
  spec.urls = urls;
  spec.nurls = 1;
  spec.connections = 2;
  spec.ops = 10;
  raw_set(s,
          "HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked"
          "\r\n\r\n4\r\n{\"ok\r\n1a\r\n\": false, \"error\": \"busy\"}\r\n"
          "6\r\n\r\nmore\r\n0\r\n\r\n",
          1, 0, 0);
  CHECK_OK(lkvnet_bench_run(&spec, &res, &err), &err);
  CHECK(res.ops == 10 && res.errors == 10 && res.transport_errors == 0);
  snprintf(want, sizeof want,
           "HTTP 503 from http://127.0.0.1:%d: {\"ok\": false, "
           "\"error\": \"busy\"}",
           s->port);
  CHECK(strcmp(res.first_error, want) == 0);
  if (strcmp(res.first_error, want) != 0)
    fprintf(stderr, "first_error: %s\n", res.first_error);
}

/* What is not an answer is a transport error: the run gives up with the
 * reason when nothing succeeded. */
static void test_transport_failures(Raw *s) {
  char url[64], want[160];
  const char *urls[1];
  lkvnet_bench_spec spec;
  lkvnet_bench_result res;
  lkv_err err;
  int rc;

  snprintf(url, sizeof url, "http://127.0.0.1:%d", s->port);
  urls[0] = url;
  lkvnet_bench_spec_init(&spec);
  spec.urls = urls;
  spec.nurls = 1;
  spec.connections = 2;
  spec.duration_ms = 60000; /* the give-up ends the run long before */

  /* garbage for an answer */
  raw_set(s, "HELLO\r\n\r\n", 0, 0, 0);
  rc = lkvnet_bench_run(&spec, &res, &err);
  CHECK(rc == LKV_IOERROR);
  CHECK(res.ops == res.transport_errors && res.ops >= 2 * 4);
  snprintf(want, sizeof want, "io error: %s sent a malformed HTTP answer (",
           url);
  CHECK(strncmp(err.msg, want, strlen(want)) == 0);
  if (strncmp(err.msg, want, strlen(want)) != 0)
    fprintf(stderr, "garbage: %s\n", err.msg);

  /* an answer cut short by the close */
  raw_set(s, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", 0, 1, 0);
  rc = lkvnet_bench_run(&spec, &res, &err);
  CHECK(rc == LKV_IOERROR);
  CHECK(strstr(err.msg, "closed before a complete answer") != NULL);

  /* no answer: each request times out, its connection is reset */
  raw_set(s, "", 0, 0, 1);
  spec.timeout_ms = 100;
  rc = lkvnet_bench_run(&spec, &res, &err);
  CHECK(rc == LKV_IOERROR);
  CHECK(res.ops == res.transport_errors && res.ops >= 2 * 4);
  snprintf(want, sizeof want, "io error: no answer from %s within 100 ms (",
           url);
  CHECK(strncmp(err.msg, want, strlen(want)) == 0);
  if (strncmp(err.msg, want, strlen(want)) != 0)
    fprintf(stderr, "silent: %s\n", err.msg);
  raw_pause(s);
  /* the timed-out connections were not reused */
  CHECK(s->accepted > 2);
}

int main(void) {
  Raw s;
  signal(SIGPIPE, SIG_IGN);
  raw_start(&s);
  test_framings(&s);
  test_connections(&s);
  test_error_text(&s);
  test_transport_failures(&s);
  raw_stop(&s);
  TEST_MAIN_END();
}
