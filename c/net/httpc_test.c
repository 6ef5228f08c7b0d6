/* httpc_test.c - the HTTP client (httpc.c) against a small evhttp server
 * run on a thread of this test: answers and their bodies, headers, a
 * refused connection, a timeout, bad arguments, and the load generator in
 * each target mode (lunakv, etcd, calls of a stored function). Under `make
 * asan` leaks are checked here (the specs run the same code inside lua5.4,
 * where they are not). */
#include "httpc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "test.h"

/* {======================================================================
** The test server
** ======================================================================= */

typedef struct Server {
  struct event_base *base;
  struct evhttp *http;
  int port;
  int port6; /* on ::1, 0 when the host has no IPv6 loopback */
  pthread_t thread;
  unsigned long puts, ranges, sets, gets, calls;
  struct evhttp_request *slow[64]; /* never answered */
  int nslow;
} Server;

static void route(struct evhttp_request *req, void *arg) {
  Server *s = arg;
  const char *uri = evhttp_request_get_uri(req);
  struct evbuffer *out = evbuffer_new();
  struct evbuffer *in = evhttp_request_get_input_buffer(req);
  if (strcmp(uri, "/health") == 0) {
    evbuffer_add_printf(out, "{\"ok\": true}");
    evhttp_send_reply(req, 200, "OK", out);
  } else if (strcmp(uri, "/host") == 0) {
    const char *x =
        evhttp_find_header(evhttp_request_get_input_headers(req), "Host");
    evbuffer_add_printf(out, "%s", x != NULL ? x : "(none)");
    evhttp_send_reply(req, 200, "OK", out);
  } else if (strcmp(uri, "/echo") == 0) {
    /* the body back, and the X-Test header in a header */
    const char *x =
        evhttp_find_header(evhttp_request_get_input_headers(req), "X-Test");
    evhttp_add_header(evhttp_request_get_output_headers(req), "X-Seen",
                      x != NULL ? x : "");
    evbuffer_add_printf(out, "%s|", x != NULL ? x : "(none)");
    evbuffer_add_buffer(out, in);
    evhttp_send_reply(req, 200, "OK", out);
  } else if (strcmp(uri, "/set") == 0) {
    s->sets++;
    evbuffer_add_printf(out, "{\"ok\": true, \"index\": %lu}", s->sets);
    evhttp_send_reply(req, 200, "OK", out);
  } else if (strcmp(uri, "/call/incr") == 0) {
    /* a stored function's call: the body must be {"key":"<16 digits>"},
     * the key alone, as the generator makes keys by default */
    char buf[64] = {0};
    size_t n = evbuffer_copyout(in, buf, sizeof buf - 1);
    if (n != 26 || strncmp(buf, "{\"key\":\"", 8) != 0 ||
        strspn(buf + 8, "0123456789") != 16 || strcmp(buf + 24, "\"}") != 0) {
      evhttp_send_reply(req, 400, "Bad", out);
    } else {
      s->calls++;
      evbuffer_add_printf(out, "{\"ok\": true, \"result\": %lu}", s->calls);
      evhttp_send_reply(req, 200, "OK", out);
    }
  } else if (strncmp(uri, "/get?key=", 9) == 0) {
    s->gets++;
    evbuffer_add_printf(out, "{\"key\": \"k\", \"value\": null}");
    evhttp_send_reply(req, 200, "OK", out);
  } else if (strcmp(uri, "/v3/kv/put") == 0 ||
             strcmp(uri, "/v3/kv/range") == 0) {
    /* etcd's gateway: the body must be {"key": base64 ...} */
    char buf[16] = {0};
    evbuffer_copyout(in, buf, 8);
    if (strcmp(buf, "{\"key\":\"") != 0) {
      evhttp_send_reply(req, 400, "Bad", out);
    } else {
      if (uri[7] == 'p')
        s->puts++;
      else
        s->ranges++;
      evbuffer_add_printf(out, "{\"header\": {}}");
      evhttp_send_reply(req, 200, "OK", out);
    }
  } else if (strcmp(uri, "/quit") == 0) {
    /* the base has no thread support (no libevent_pthreads): it is
     * stopped from its own thread, by a request */
    struct timeval later = {0, 100000}; /* after the reply is written */
    evhttp_send_reply(req, 200, "OK", out);
    event_base_loopexit(s->base, &later);
  } else if (strcmp(uri, "/fail") == 0) {
    evbuffer_add_printf(out, "{\"ok\": false, \"error\": \"no quorum\"}");
    evhttp_send_reply(req, 503, "Unavailable", out);
  } else if (strcmp(uri, "/slow") == 0 && s->nslow < 64) {
    s->slow[s->nslow++] = req; /* answered at shutdown, if ever */
  } else {
    evhttp_send_reply(req, 404, "Not Found", out);
  }
  evbuffer_free(out);
}

static void *serve(void *arg) {
  event_base_dispatch(((Server *)arg)->base);
  return NULL;
}

static void server_start(Server *s) {
  struct evhttp_bound_socket *sock;
  struct sockaddr_in sin;
  socklen_t len = sizeof sin;
  memset(s, 0, sizeof *s);
  s->base = event_base_new();
  s->http = evhttp_new(s->base);
  evhttp_set_gencb(s->http, route, s);
  sock = evhttp_bind_socket_with_handle(s->http, "127.0.0.1", 0);
  CHECK(sock != NULL);
  getsockname(evhttp_bound_socket_get_fd(sock), (struct sockaddr *)&sin, &len);
  s->port = ntohs(sin.sin_port);
  sock = evhttp_bind_socket_with_handle(s->http, "::1", 0);
  if (sock != NULL) {
    struct sockaddr_in6 sin6;
    len = sizeof sin6;
    getsockname(evhttp_bound_socket_get_fd(sock), (struct sockaddr *)&sin6,
                &len);
    s->port6 = ntohs(sin6.sin6_port);
  }
  pthread_create(&s->thread, NULL, serve, s);
}

static void server_stop(Server *s) {
  char url[64];
  lkvnet_response r;
  lkv_err err;
  snprintf(url, sizeof url, "http://127.0.0.1:%d/quit", s->port);
  CHECK_OK(lkvnet_http_request("GET", url, NULL, 0, NULL, 0, 2000, &r, &err),
           &err);
  lkvnet_response_free(&r);
  pthread_join(s->thread, NULL);
  evhttp_free(s->http); /* frees the never-answered requests too */
  event_base_free(s->base);
}

/* A port nothing listens on: bound, then closed. */
static int dead_port(void) {
  struct sockaddr_in sin;
  socklen_t len = sizeof sin;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  memset(&sin, 0, sizeof sin);
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, (struct sockaddr *)&sin, sizeof sin);
  getsockname(fd, (struct sockaddr *)&sin, &len);
  close(fd);
  return ntohs(sin.sin_port);
}

/* }====================================================================== */

static void test_request(Server *s) {
  char url[128];
  lkvnet_response r;
  lkv_err err;
  lkvnet_header hs[2] = {{"X-Test", "hello"}, {"Content-Type", "text/plain"}};
  static const char body[] = "a\0b";

  snprintf(url, sizeof url, "http://127.0.0.1:%d/health", s->port);
  CHECK_OK(lkvnet_http_request("GET", url, NULL, 0, NULL, 0, 2000, &r, &err),
           &err);
  CHECK(r.status == 200);
  CHECK(r.body_len == 12 && strcmp(r.body, "{\"ok\": true}") == 0);
  lkvnet_response_free(&r);
  CHECK(r.body == NULL);

  /* a binary body and a header reach the server */
  snprintf(url, sizeof url, "http://127.0.0.1:%d/echo", s->port);
  CHECK_OK(lkvnet_http_request("post", url, hs, 2, body, 3, 2000, &r, &err),
           &err);
  CHECK(r.status == 200);
  CHECK(r.body_len == 9 && memcmp(r.body, "hello|a\0b", 9) == 0);
  lkvnet_response_free(&r);

  /* 4xx and 5xx are answers, not failures */
  snprintf(url, sizeof url, "http://127.0.0.1:%d/fail", s->port);
  CHECK_OK(lkvnet_http_request("GET", url, NULL, 0, NULL, 0, 2000, &r, &err),
           &err);
  CHECK(r.status == 503 && strstr(r.body, "no quorum") != NULL);
  lkvnet_response_free(&r);
  snprintf(url, sizeof url, "http://127.0.0.1:%d/nowhere", s->port);
  CHECK_OK(lkvnet_http_request("DELETE", url, NULL, 0, NULL, 0, 2000, &r, &err),
           &err);
  CHECK(r.status == 404);
  lkvnet_response_free(&r);
}

static void test_failures(Server *s) {
  char url[128], want[256];
  lkvnet_response r;
  lkv_err err;
  lkvnet_header bad[1] = {{"X-Bad", "a\r\nb"}};
  int port = dead_port();

  snprintf(url, sizeof url, "http://127.0.0.1:%d/health", port);
  CHECK(lkvnet_http_request("GET", url, NULL, 0, NULL, 0, 2000, &r, &err) ==
        LKV_IOERROR);
  snprintf(want, sizeof want,
           "io error: cannot connect to http://127.0.0.1:%d: connection "
           "refused",
           port);
  CHECK(strcmp(err.msg, want) == 0);
  CHECK(r.body == NULL && r.status == 0);

  snprintf(url, sizeof url, "http://127.0.0.1:%d/slow", s->port);
  CHECK(lkvnet_http_request("GET", url, NULL, 0, NULL, 0, 100, &r, &err) ==
        LKV_IOERROR);
  snprintf(want, sizeof want, "io error: no answer from %s within 100 ms", url);
  CHECK(strcmp(err.msg, want) == 0);

  CHECK(lkvnet_http_request("FETCH", url, NULL, 0, NULL, 0, 100, &r, &err) ==
        LKV_INVALID);
  CHECK(strstr(err.msg, "unsupported HTTP method 'FETCH'") != NULL);
  CHECK(lkvnet_http_request("GET", "https://x/", NULL, 0, NULL, 0, 100, &r,
                            &err) == LKV_INVALID);
  CHECK(lkvnet_http_request("GET", "http://x:99999/", NULL, 0, NULL, 0, 100, &r,
                            &err) == LKV_INVALID);
  CHECK(lkvnet_http_request("GET", url, bad, 1, NULL, 0, 100, &r, &err) ==
        LKV_INVALID);
  CHECK(strstr(err.msg, "bad request header 'X-Bad'") != NULL);
}

static void test_bench(Server *s) {
  char url[64], longname[66];
  const char *urls[2];
  lkvnet_bench_spec spec;
  lkvnet_bench_result res;
  lkv_err err;

  snprintf(url, sizeof url, "http://127.0.0.1:%d", s->port);
  urls[0] = urls[1] = url;
  lkvnet_bench_spec_init(&spec);
  spec.urls = urls;
  spec.nurls = 2;
  spec.connections = 8;
  spec.ops = 1000;
  spec.write_pct = 50;
  CHECK_OK(lkvnet_bench_run(&spec, &res, &err), &err);
  CHECK(res.ops == 1000 && res.errors == 0);
  CHECK(res.writes + res.reads == 1000 && res.writes > 300 && res.reads > 300);
  CHECK(res.p50_us > 0 && res.p50_us <= res.p99_us && res.p99_us <= res.max_us);
  CHECK(res.first_error[0] == '\0');

  spec.target = LKVNET_TARGET_ETCD;
  spec.ops = 200;
  spec.connections = 3;
  CHECK_OK(lkvnet_bench_run(&spec, &res, &err), &err);
  CHECK(res.ops == 200 && res.errors == 0);
  CHECK(s->puts == res.writes && s->ranges == res.reads);

  /* calls of a stored function for writes, /get for reads */
  spec.target = LKVNET_TARGET_CALL;
  spec.function = "incr";
  s->gets = 0;
  CHECK_OK(lkvnet_bench_run(&spec, &res, &err), &err);
  CHECK(res.ops == 200 && res.errors == 0);
  CHECK(s->calls == res.writes && s->gets == res.reads && s->calls > 50);
  /* a function the node does not have: every call is an HTTP error */
  spec.function = "nope";
  CHECK_OK(lkvnet_bench_run(&spec, &res, &err), &err);
  CHECK(res.errors == res.writes && res.writes > 50);
  CHECK(strstr(res.first_error, "HTTP 404") != NULL);
  /* no name, or one the node would refuse: a bad spec, nothing sent */
  spec.function = NULL;
  CHECK(lkvnet_bench_run(&spec, &res, &err) == LKV_INVALID);
  CHECK(strstr(err.msg, "needs a function name") != NULL && res.ops == 0);
  spec.function = "";
  CHECK(lkvnet_bench_run(&spec, &res, &err) == LKV_INVALID);
  spec.function = "a/b";
  CHECK(lkvnet_bench_run(&spec, &res, &err) == LKV_INVALID);
  CHECK(strstr(err.msg, "function name 'a/b' is not 1 to 64 bytes") != NULL);
  memset(longname, 'f', 65); /* one byte over the node's limit */
  longname[65] = '\0';
  spec.function = longname;
  CHECK(lkvnet_bench_run(&spec, &res, &err) == LKV_INVALID);
  spec.function = "incr";
  spec.target = (lkvnet_bench_target)7;
  CHECK(lkvnet_bench_run(&spec, &res, &err) == LKV_INVALID);
  CHECK(strstr(err.msg, "unknown target 7") != NULL);

  /* a duration instead of a count */
  spec.target = LKVNET_TARGET_LUNAKV;
  spec.ops = 0;
  spec.duration_ms = 200;
  CHECK_OK(lkvnet_bench_run(&spec, &res, &err), &err);
  CHECK(res.ops > 0 && res.seconds >= 0.19);

  /* refused everywhere: the run gives up with the reason */
  snprintf(url, sizeof url, "http://127.0.0.1:%d", dead_port());
  spec.nurls = 1;
  spec.duration_ms = 5000;
  CHECK(lkvnet_bench_run(&spec, &res, &err) == LKV_IOERROR);
  CHECK(strstr(err.msg, "connection refused") != NULL);

  spec.connections = 0;
  CHECK(lkvnet_bench_run(&spec, &res, &err) == LKV_INVALID);
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Open descriptors of this process (the server's included). */
static int fds_open(void) {
  int fd, n = 0;
  for (fd = 0; fd < 1024; fd++)
    if (fcntl(fd, F_GETFD) != -1) n++;
  return n;
}

/* Before a test uses up every descriptor, let the server close the
 * connections earlier tests left: it runs in this process, so each one it
 * closes later would hand the test a descriptor back mid-run. A request
 * answered after their clients closed shows the server has read their
 * ends; then the count must hold still for 100 ms (10 s at most). */
static void server_settle(Server *s) {
  char url[64];
  lkvnet_response r;
  lkv_err err;
  struct timespec tick = {0, 10000000};
  int n, still = 0, waited;
  snprintf(url, sizeof url, "http://127.0.0.1:%d/health", s->port);
  CHECK_OK(lkvnet_http_request("GET", url, NULL, 0, NULL, 0, 2000, &r, &err),
           &err);
  lkvnet_response_free(&r);
  n = fds_open();
  for (waited = 0; still < 10 && waited < 1000; waited++) {
    int m;
    nanosleep(&tick, NULL);
    m = fds_open();
    still = m == n ? still + 1 : 0;
    n = m;
  }
}

/* Use up every descriptor but `spare` under a soft limit of 256, so that
 * the next connections fail inside evhttp_make_request (EMFILE). Returns
 * how many were taken; fds_release gives them and the limit back. */
static int fds[300], nfds;
static struct rlimit saved_limit;

static void fds_exhaust(int spare) {
  struct rlimit rl;
  int fd;
  getrlimit(RLIMIT_NOFILE, &saved_limit);
  rl = saved_limit;
  if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > 256) rl.rlim_cur = 256;
  CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
  nfds = 0;
  while (nfds < 300 && (fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0)
    fds[nfds++] = fd;
  CHECK(nfds < 300 && errno == EMFILE);
  while (spare-- > 0 && nfds > 0) close(fds[--nfds]);
}

static void fds_release(void) {
  while (nfds > 0) close(fds[--nfds]);
  setrlimit(RLIMIT_NOFILE, &saved_limit);
}

/* A connection that fails inside evhttp_make_request (no descriptor, a
 * name that does not resolve) ends the call at once, not at the timeout.
 * The timeout is a minute and the bound half of it: a call that waited
 * for its timeout fails the check on any machine, and one that ended at
 * once passes however loaded the machine is (no wall-clock race). */
#define SLOW_TIMEOUT_MS 60000
#define AT_ONCE_S 30.0
static void test_sync_failures(Server *s) {
  char url[128];
  lkvnet_response r;
  lkv_err err;
  double t;
  int rc;

  snprintf(url, sizeof url, "http://127.0.0.1:%d/health", s->port);
  server_settle(s);
  /* three for the event base (epoll, a signal socketpair), none to
   * connect */
  fds_exhaust(3);
  t = now();
  rc = lkvnet_http_request("GET", url, NULL, 0, NULL, 0, SLOW_TIMEOUT_MS, &r,
                           &err);
  t = now() - t;
  fds_release();
  CHECK(rc == LKV_IOERROR);
  CHECK(strstr(err.msg, "too many open files") != NULL);
  CHECK(t < AT_ONCE_S);

  rc = lkvnet_http_request("GET", "http://no-such-host.invalid/", NULL, 0, NULL,
                           0, 3000, &r, &err);
  CHECK(rc == LKV_IOERROR);
  CHECK(strstr(err.msg, "cannot resolve host 'no-such-host.invalid'") != NULL);
}

/* IPv6 literals: connect to the bare address, send Host: [addr]:port. */
static void test_ipv6(Server *s) {
  char url[128], want[64];
  const char *urls[1];
  lkvnet_response r;
  lkvnet_bench_spec spec;
  lkvnet_bench_result res;
  lkv_err err;
  if (s->port6 == 0) {
    fprintf(stderr, "httpc_test: no IPv6 loopback, IPv6 checks skipped\n");
    return;
  }
  snprintf(url, sizeof url, "http://[::1]:%d/host", s->port6);
  CHECK_OK(lkvnet_http_request("GET", url, NULL, 0, NULL, 0, 2000, &r, &err),
           &err);
  snprintf(want, sizeof want, "[::1]:%d", s->port6);
  CHECK(r.status == 200 && r.body != NULL && strcmp(r.body, want) == 0);
  lkvnet_response_free(&r);

  snprintf(url, sizeof url, "http://[::1]:%d", s->port6);
  urls[0] = url;
  lkvnet_bench_spec_init(&spec);
  spec.urls = urls;
  spec.nurls = 1;
  spec.connections = 2;
  spec.ops = 50;
  CHECK_OK(lkvnet_bench_run(&spec, &res, &err), &err);
  CHECK(res.ops == 50 && res.errors == 0);

  /* a refusal names the node as it was given */
  snprintf(url, sizeof url, "http://[::1]:%d/health", dead_port());
  CHECK(lkvnet_http_request("GET", url, NULL, 0, NULL, 0, 2000, &r, &err) ==
        LKV_IOERROR);
  CHECK(strstr(err.msg, "cannot connect to http://[::1]:") != NULL);
  CHECK(lkvnet_http_request("GET", "http://[::1/", NULL, 0, NULL, 0, 2000, &r,
                            &err) == LKV_INVALID);
}

/* The load generator when connections fail at once or are too many, and
 * with a dead node among live ones. */
static void test_bench_failures(Server *s) {
  char url[64], dead[64];
  const char *urls[2];
  lkvnet_bench_spec spec;
  lkvnet_bench_result res;
  lkv_err err;
  int rc;
  double t;

  snprintf(url, sizeof url, "http://127.0.0.1:%d", s->port);
  snprintf(dead, sizeof dead, "http://127.0.0.1:%d", dead_port());
  lkvnet_bench_spec_init(&spec);
  spec.urls = urls;
  spec.nurls = 1;
  urls[0] = url;

  /* no descriptor left: every connection fails inside
   * evhttp_make_request; the run ends with the reason, no recursion */
  server_settle(s);
  fds_exhaust(3);
  spec.connections = 150;
  spec.ops = 100000;
  t = now();
  rc = lkvnet_bench_run(&spec, &res, &err);
  t = now() - t;
  fds_release();
  CHECK(rc == LKV_IOERROR);
  CHECK(strstr(err.msg, "too many open files") != NULL);
  CHECK(strstr(err.msg, "the run stopped after") != NULL);
  CHECK(res.ops == res.transport_errors && res.ops >= 4 * 150);
  /* it stopped on its own, far short of the ops asked for: a run that
   * went on would back off for minutes (AT_ONCE_S: no wall-clock race) */
  CHECK(res.ops < 100000);
  CHECK(t < AT_ONCE_S);

  /* more connections than descriptors: refused before anything runs */
  fds_exhaust(200);
  spec.connections = 250;
  rc = lkvnet_bench_run(&spec, &res, &err);
  fds_release();
  CHECK(rc == LKV_INVALID);
  CHECK(strstr(err.msg, "ulimit -n") != NULL);

  /* a dead node among live ones: its connections back off, the live
   * ones go on, the run is a success with the dead one's errors */
  urls[0] = url;
  urls[1] = dead;
  spec.nurls = 2;
  spec.connections = 4;
  spec.ops = 0;
  spec.duration_ms = 400;
  CHECK_OK(lkvnet_bench_run(&spec, &res, &err), &err);
  CHECK(res.ops > res.errors && res.errors == res.transport_errors);
  /* 50 + 100 + 200 ms of back-off: at most 4 tries per dead connection */
  CHECK(res.transport_errors >= 2 && res.transport_errors <= 2 * 5);
  CHECK(strstr(res.first_error, dead + 7) != NULL);
}

int main(void) {
  Server s;
  signal(SIGPIPE, SIG_IGN);
  server_start(&s);
  test_request(&s);
  test_failures(&s);
  test_bench(&s);
  test_sync_failures(&s);
  test_ipv6(&s);
  test_bench_failures(&s);
  server_stop(&s);
  TEST_MAIN_END();
}
