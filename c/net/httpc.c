/* httpc.c - the HTTP client's one-shot request (httpc.h) on an evhttp
 * connection in a private event_base, and what it shares with the load
 * generator (loadgen.c, through httpc_int.h): URL parsing and the
 * diagnosis of a failed request.
 *
 * evhttp reports a failed request by calling the request callback with a
 * NULL request or a response code of 0, without saying why (a refused
 * connect is not even passed to the error callback in libevent 2.1). So a
 * failure is diagnosed afterwards: a timeout is ours (a timer), anything
 * else is probed with getaddrinfo and a connect of our own, which yields
 * the sentence a person wants ("connection refused", "cannot resolve"). */
#include "httpc.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "err.h"
#include "httpc_int.h"
#include "lkvnet.h"

#define PROBE_TIMEOUT_MS 2000

static struct timeval ms_tv(int ms) {
  struct timeval tv;
  tv.tv_sec = ms / 1000;
  tv.tv_usec = (ms % 1000) * 1000;
  return tv;
}

/* {======================================================================
** URLs and diagnosis
** ======================================================================= */

int lkvnet_url_parse(const char *url, lkvnet_url *u, lkv_err *err) {
  struct evhttp_uri *p;
  const char *scheme, *host, *path, *query;
  size_t tlen;
  memset(u, 0, sizeof *u);
  if (url == NULL || strncasecmp(url, "http://", 7) != 0)
    return lkv_seterr(err, LKV_INVALID,
                      "'%s' is not an http:// URL (expected "
                      "http://HOST:PORT[/path])",
                      url != NULL ? url : "(null)");
  p = evhttp_uri_parse_with_flags(url, 0);
  if (p == NULL)
    return lkv_seterr(err, LKV_INVALID, "'%s' is not a valid URL", url);
  scheme = evhttp_uri_get_scheme(p);
  host = evhttp_uri_get_host(p);
  if (scheme == NULL || strcasecmp(scheme, "http") != 0 || host == NULL ||
      host[0] == '\0' || strlen(host) >= sizeof u->host) {
    evhttp_uri_free(p);
    return lkv_seterr(err, LKV_INVALID, "'%s': expected http://HOST:PORT", url);
  }
  /* evhttp_uri keeps an IPv6 literal in its brackets ("[::1]"):
   * connect() and getaddrinfo want the bare address, the Host header
   * and our sentences the bracketed one */
  if (host[0] == '[') {
    size_t hl = strlen(host);
    if (hl < 3 || host[hl - 1] != ']') {
      evhttp_uri_free(p);
      return lkv_seterr(err, LKV_INVALID, "'%s': bad IPv6 address", url);
    }
    snprintf(u->host, sizeof u->host, "%.*s", (int)(hl - 2), host + 1);
  } else {
    snprintf(u->host, sizeof u->host, "%s", host);
  }
  u->port = evhttp_uri_get_port(p);
  if (u->port < 0) u->port = 80;
  if (u->port == 0 || u->port > 65535) {
    evhttp_uri_free(p);
    return lkv_seterr(err, LKV_INVALID, "'%s': port out of range", url);
  }
  snprintf(u->hostport, sizeof u->hostport,
           strchr(u->host, ':') != NULL ? "[%s]:%d" : "%s:%d", u->host,
           u->port);
  path = evhttp_uri_get_path(p);
  query = evhttp_uri_get_query(p);
  if (path == NULL || path[0] == '\0') path = "/";
  tlen = strlen(path) + (query != NULL ? strlen(query) + 1 : 0) + 1;
  u->target = malloc(tlen);
  if (u->target == NULL) {
    evhttp_uri_free(p);
    return lkv_seterr(err, LKV_NOMEM, "URL of %zu bytes", tlen);
  }
  snprintf(u->target, tlen, "%s%s%s", path, query != NULL ? "?" : "",
           query != NULL ? query : "");
  evhttp_uri_free(p);
  return LKV_OK;
}

void lkvnet_url_free(lkvnet_url *u) {
  free(u->target);
  u->target = NULL;
}

/* strerror with a lower-case first letter, as our sentences go. */
static void lowerr(int e, char *buf, size_t n) {
  snprintf(buf, n, "%s", strerror(e));
  if (buf[0] >= 'A' && buf[0] <= 'Z' && !(buf[1] >= 'A' && buf[1] <= 'Z'))
    buf[0] = (char)(buf[0] - 'A' + 'a');
}

/* Why did a request to u fail? Resolve and connect ourselves. Returns 0
 * when a connection can be made (the failure came later), else -1 with
 * the reason in why. */
static int probe(const lkvnet_url *u, char *why, size_t n) {
  struct addrinfo hints, *ai = NULL, *a;
  char port[16], e[128];
  int rc, last = 0;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  snprintf(port, sizeof port, "%d", u->port);
  rc = getaddrinfo(u->host, port, &hints, &ai);
  if (rc != 0) {
    snprintf(why, n, "cannot resolve host '%s': %s", u->host, gai_strerror(rc));
    return -1;
  }
  for (a = ai; a != NULL; a = a->ai_next) {
    int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    a->ai_protocol);
    if (fd < 0) {
      last = errno;
      continue;
    }
    if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
      close(fd);
      freeaddrinfo(ai);
      return 0;
    }
    if (errno == EINPROGRESS) {
      struct pollfd pfd = {fd, POLLOUT, 0};
      int so = 0;
      socklen_t sl = sizeof so;
      rc = poll(&pfd, 1, PROBE_TIMEOUT_MS);
      if (rc == 0) {
        last = ETIMEDOUT;
      } else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &so, &sl) == 0 &&
                 so == 0) {
        close(fd);
        freeaddrinfo(ai);
        return 0;
      } else {
        last = so != 0 ? so : errno;
      }
    } else {
      last = errno;
    }
    close(fd);
  }
  freeaddrinfo(ai);
  lowerr(last != 0 ? last : ECONNREFUSED, e, sizeof e);
  snprintf(why, n, "%s", e);
  return -1;
}

void lkvnet_httpc_diagnose(const char *url, const lkvnet_url *u, int timed_out,
                           int timeout_ms, char *out, size_t n) {
  char why[300];
  if (probe(u, why, sizeof why) != 0) {
    /* the path plays no part in connecting: name the node only */
    snprintf(out, n, "cannot connect to http://%.120s: %.100s", u->hostport,
             why);
  } else if (timed_out) {
    snprintf(out, n, "no answer from %.120s within %d ms", url, timeout_ms);
  } else {
    snprintf(out, n, "the connection to %.120s closed before a complete answer",
             url);
  }
}

/* The sentence for a failed one-shot request to url. timed_out: our timer
 * fired; kind: what evhttp's error callback said (-1: nothing). */
static void diagnose(const char *url, const lkvnet_url *u, int timed_out,
                     int timeout_ms, int kind, char *out, size_t n) {
  if (timed_out || kind == EVREQ_HTTP_TIMEOUT) {
    lkvnet_httpc_diagnose(url, u, 1, timeout_ms, out, n);
  } else if (kind == EVREQ_HTTP_DATA_TOO_LONG) {
    snprintf(out, n, "the answer from %.120s is over %zu bytes", url,
             LKVNET_HTTPC_MAX_BODY);
  } else if (kind == EVREQ_HTTP_INVALID_HEADER) {
    snprintf(out, n, "%.120s sent a malformed HTTP answer", url);
  } else {
    lkvnet_httpc_diagnose(url, u, 0, timeout_ms, out, n);
  }
}

static int method_of(const char *m, enum evhttp_cmd_type *t) {
  static const struct {
    const char *name;
    enum evhttp_cmd_type type;
  } methods[] = {
      {"GET", EVHTTP_REQ_GET},     {"POST", EVHTTP_REQ_POST},
      {"PUT", EVHTTP_REQ_PUT},     {"DELETE", EVHTTP_REQ_DELETE},
      {"HEAD", EVHTTP_REQ_HEAD},   {"OPTIONS", EVHTTP_REQ_OPTIONS},
      {"PATCH", EVHTTP_REQ_PATCH},
  };
  size_t i;
  for (i = 0; i < sizeof methods / sizeof methods[0]; i++) {
    if (strcasecmp(m, methods[i].name) == 0) {
      *t = methods[i].type;
      return 0;
    }
  }
  return -1;
}

/* }====================================================================== */

/* {======================================================================
** One request
** ======================================================================= */

typedef struct OneShot {
  struct event_base *base;
  int done, status, kind, nomem;
  char *body;
  size_t len;
} OneShot;

static void one_error_cb(enum evhttp_request_error e, void *arg) {
  ((OneShot *)arg)->kind = (int)e;
}

static void one_done_cb(struct evhttp_request *req, void *arg) {
  OneShot *o = arg;
  o->done = 1;
  if (req != NULL) o->status = evhttp_request_get_response_code(req);
  if (req != NULL && o->status != 0) {
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t n = evbuffer_get_length(in);
    o->body = malloc(n + 1);
    if (o->body == NULL) {
      o->nomem = 1;
    } else {
      evbuffer_remove(in, o->body, n);
      o->body[n] = '\0';
      o->len = n;
    }
  }
  event_base_loopbreak(o->base);
}

static void one_timeout_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  event_base_loopbreak(arg);
}

void lkvnet_response_free(lkvnet_response *r) {
  if (r == NULL) return;
  free(r->body);
  memset(r, 0, sizeof *r);
}

int lkvnet_http_request(const char *method, const char *url,
                        const lkvnet_header *headers, size_t nheaders,
                        const char *body, size_t body_len, int timeout_ms,
                        lkvnet_response *out, lkv_err *err) {
  enum evhttp_cmd_type type;
  OneShot o;
  lkvnet_url u;
  struct evhttp_connection *conn = NULL;
  struct evhttp_request *req;
  struct evkeyvalq *oh;
  struct event *timer = NULL;
  struct timeval tv;
  size_t i;
  int rc, has_length = 0;

  memset(out, 0, sizeof *out);
  memset(&o, 0, sizeof o);
  o.kind = -1;
  if (timeout_ms <= 0) timeout_ms = LKVNET_HTTPC_DEFAULT_TIMEOUT_MS;
  if (method == NULL || method_of(method, &type) != 0)
    return lkv_seterr(err, LKV_INVALID,
                      "unsupported HTTP method '%s' (GET, HEAD, POST, "
                      "PUT, DELETE, OPTIONS, PATCH)",
                      method != NULL ? method : "(null)");
  if (nheaders > LKVNET_HTTPC_MAX_HEADERS)
    return lkv_seterr(err, LKV_INVALID, "%zu headers; at most %d", nheaders,
                      LKVNET_HTTPC_MAX_HEADERS);
  rc = lkvnet_url_parse(url, &u, err);
  if (rc != LKV_OK) return rc;

  o.base = event_base_new();
  if (o.base == NULL) {
    rc = lkv_seterr(err, LKV_NOMEM, "event_base_new failed");
    goto done;
  }
  conn =
      evhttp_connection_base_new(o.base, NULL, u.host, (unsigned short)u.port);
  timer = evtimer_new(o.base, one_timeout_cb, o.base);
  if (conn == NULL || timer == NULL) {
    rc = lkv_seterr(err, LKV_NOMEM, "cannot set up a connection to %s", url);
    goto done;
  }
  tv = ms_tv(timeout_ms);
  evhttp_connection_set_timeout_tv(conn, &tv);
  evhttp_connection_set_max_body_size(conn, (ev_ssize_t)LKVNET_HTTPC_MAX_BODY);
  req = evhttp_request_new(one_done_cb, &o);
  if (req == NULL) {
    rc = lkv_seterr(err, LKV_NOMEM, "evhttp_request_new failed");
    goto done;
  }
  evhttp_request_set_error_cb(req, one_error_cb);
  oh = evhttp_request_get_output_headers(req);
  evhttp_add_header(oh, "Host", u.hostport);
  for (i = 0; i < nheaders; i++) {
    const char *n = headers[i].name, *v = headers[i].value;
    if (n == NULL || v == NULL || n[0] == '\0' || strpbrk(n, ":\r\n ") ||
        evhttp_add_header(oh, n, v) != 0) {
      evhttp_request_free(req); /* not yet handed to the connection */
      rc = lkv_seterr(err, LKV_INVALID,
                      "bad request header '%s' (a name without ':' or "
                      "blanks, values without line breaks)",
                      n != NULL ? n : "(null)");
      goto done;
    }
    if (strcasecmp(n, "Content-Length") == 0) has_length = 1;
  }
  if (body_len > 0 || type == EVHTTP_REQ_POST || type == EVHTTP_REQ_PUT ||
      type == EVHTTP_REQ_PATCH) {
    char len[32];
    if (!has_length) {
      snprintf(len, sizeof len, "%zu", body_len);
      evhttp_add_header(oh, "Content-Length", len);
    }
    if (body_len > 0 &&
        evbuffer_add(evhttp_request_get_output_buffer(req), body, body_len)) {
      evhttp_request_free(req);
      rc = lkv_seterr(err, LKV_NOMEM, "request body of %zu bytes", body_len);
      goto done;
    }
  }
  /* evhttp owns req from here: it frees it after the callback, or with
   * the connection when no answer came */
  if (evhttp_make_request(conn, req, type, u.target) != 0) {
    rc = lkv_seterr(err, LKV_IOERROR, "cannot send a request to %s", url);
    goto done;
  }
  /* a connection that fails at once (the name does not resolve, no
   * descriptor left) runs one_done_cb inside evhttp_make_request: its
   * loopbreak came before the loop, which would forget it and wait for
   * the timer; there is nothing to wait for */
  if (!o.done) {
    evtimer_add(timer, &tv);
    event_base_dispatch(o.base);
  }

  if (o.nomem) {
    rc = lkv_seterr(err, LKV_NOMEM, "the answer from %s", url);
  } else if (o.done && o.status != 0) {
    out->status = o.status;
    out->body = o.body;
    out->body_len = o.len;
    o.body = NULL;
    rc = LKV_OK;
  } else {
    char why[LKV_ERR_MSG_LEN];
    diagnose(url, &u, !o.done, timeout_ms, o.kind, why, sizeof why);
    rc = lkv_seterr(
        err, o.kind == EVREQ_HTTP_DATA_TOO_LONG ? LKV_TOOBIG : LKV_IOERROR,
        "%s", why);
  }
done:
  free(o.body);
  if (timer != NULL) event_free(timer);
  if (conn != NULL) evhttp_connection_free(conn);
  if (o.base != NULL) event_base_free(o.base);
  lkvnet_url_free(&u);
  return rc;
}

/* }====================================================================== */
