/* httpc_test.c - the HTTP client (httpc.c) against a small evhttp server
 * run on a thread of this test: answers and their bodies, headers, a
 * refused connection, a timeout, bad arguments, and the load generator in
 * both target modes. Under `make asan` leaks are checked here (the specs
 * run the same code inside lua5.4, where they are not). */
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "httpc.h"
#include "test.h"

/* {======================================================================
** The test server
** ======================================================================= */

typedef struct Server {
  struct event_base *base;
  struct evhttp *http;
  int port;
  pthread_t thread;
  unsigned long puts, ranges, sets, gets;
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
  } else if (strcmp(uri, "/echo") == 0) {
    /* the body back, and the X-Test header in a header */
    const char *x = evhttp_find_header(evhttp_request_get_input_headers(req),
                                       "X-Test");
    evhttp_add_header(evhttp_request_get_output_headers(req), "X-Seen",
                      x != NULL ? x : "");
    evbuffer_add_printf(out, "%s|", x != NULL ? x : "(none)");
    evbuffer_add_buffer(out, in);
    evhttp_send_reply(req, 200, "OK", out);
  } else if (strcmp(uri, "/set") == 0) {
    s->sets++;
    evbuffer_add_printf(out, "{\"ok\": true, \"index\": %lu}", s->sets);
    evhttp_send_reply(req, 200, "OK", out);
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
  CHECK_OK(lkvnet_http_request("DELETE", url, NULL, 0, NULL, 0, 2000, &r,
                               &err),
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
           "refused", port);
  CHECK(strcmp(err.msg, want) == 0);
  CHECK(r.body == NULL && r.status == 0);

  snprintf(url, sizeof url, "http://127.0.0.1:%d/slow", s->port);
  CHECK(lkvnet_http_request("GET", url, NULL, 0, NULL, 0, 100, &r, &err) ==
        LKV_IOERROR);
  snprintf(want, sizeof want, "io error: no answer from %s within 100 ms",
           url);
  CHECK(strcmp(err.msg, want) == 0);

  CHECK(lkvnet_http_request("FETCH", url, NULL, 0, NULL, 0, 100, &r, &err) ==
        LKV_INVALID);
  CHECK(strstr(err.msg, "unsupported HTTP method 'FETCH'") != NULL);
  CHECK(lkvnet_http_request("GET", "https://x/", NULL, 0, NULL, 0, 100, &r,
                            &err) == LKV_INVALID);
  CHECK(lkvnet_http_request("GET", "http://x:99999/", NULL, 0, NULL, 0, 100,
                            &r, &err) == LKV_INVALID);
  CHECK(lkvnet_http_request("GET", url, bad, 1, NULL, 0, 100, &r, &err) ==
        LKV_INVALID);
  CHECK(strstr(err.msg, "bad request header 'X-Bad'") != NULL);
}

static void test_bench(Server *s) {
  char url[64];
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

int main(void) {
  Server s;
  signal(SIGPIPE, SIG_IGN);
  server_start(&s);
  test_request(&s);
  test_failures(&s);
  test_bench(&s);
  server_stop(&s);
  TEST_MAIN_END();
}
