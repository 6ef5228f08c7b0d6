/* node.c - the node's small shared services, called by every other file
 * of the node and calling none of them but loop.c and hserver.c:
 * reserved keys, the replies (each counted for /metrics), requests held
 * past their handler, query parameters and client connections of the
 * loop. The state is node.h; everything here runs on the event loop's
 * thread.
 *
 * Every request ends in exactly one call of lkvnet_node_reply():
 * synchronously for reads and refusals, from the commit path (apply or
 * timeout) for writes. */
#include "node.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_struct.h>
#include <event2/event.h>
#include <event2/http.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "json.h"
#include "rlog.h"

/* {======================================================================
** Reserved keys
** ======================================================================= */

int lkvnet_node_is_reserved(const char *k, size_t n) {
  size_t p = sizeof LKVNET_RESERVED_PREFIX - 1;
  return n >= p && memcmp(k, LKVNET_RESERVED_PREFIX, p) == 0;
}

int lkvnet_node_is_library_key(const char *k, size_t n) {
  size_t a = sizeof LKVNET_LIB_PREFIX - 1,
         b = sizeof LKVNET_LIBLIMITS_PREFIX - 1;
  return (n >= a && memcmp(k, LKVNET_LIB_PREFIX, a) == 0) ||
         (n >= b && memcmp(k, LKVNET_LIBLIMITS_PREFIX, b) == 0);
}

uint64_t lkvnet_node_last_index(lkvnet_server *s) {
  return lkvnet_rlog_last_index(s->rlog);
}

/* }====================================================================== */

/* {======================================================================
** Replies and their counts
** ======================================================================= */

/* unsized here, so that the asserts below see the initializers' length */
const int lkvnet_node_status_codes[] = {200, 400, 401, 403, 404, 405,
                                        409, 410, 413, 500, 503};
_Static_assert(sizeof lkvnet_node_status_codes /
                       sizeof lkvnet_node_status_codes[0] ==
                   LKVNET_NSTATUS,
               "LKVNET_NSTATUS in node.h");

const double lkvnet_node_latency_buckets[] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};
_Static_assert(sizeof lkvnet_node_latency_buckets /
                       sizeof lkvnet_node_latency_buckets[0] ==
                   LKVNET_NBUCKETS,
               "LKVNET_NBUCKETS in node.h");

static void count(lkvnet_server *s, int route, int code, double start) {
  size_t i;
  double d = lkvnet_node_now() - start;
  for (i = 0; i < LKVNET_NSTATUS; i++)
    if (lkvnet_node_status_codes[i] == code) break;
  s->requests[route][i]++;
  for (i = 0; i < LKVNET_NBUCKETS; i++)
    if (d <= lkvnet_node_latency_buckets[i]) s->hist[route][i]++;
  s->lat_sum[route] += d;
  s->lat_count[route]++;
}

void lkvnet_node_write_now(struct evhttp_connection *evcon) {
  struct bufferevent *bev =
      evcon != NULL ? evhttp_connection_get_bufferevent(evcon) : NULL;
  /* only with bytes to write: an empty buffer would run evhttp's
   * write-done callback on a connection that is not writing (an
   * outgoing one reading its answer asserts), and one still connecting
   * has nothing in it yet (its request goes out once connected) */
  if (bev != NULL && evbuffer_get_length(bufferevent_get_output(bev)) > 0)
    event_active(&bev->ev_write, EV_WRITE, 1);
}

/* The one way out of every request, counted for /metrics. */
void lkvnet_node_reply(lkvnet_server *s, lkvnet_req *req, int route,
                       double start, int code, const char *ctype,
                       const char *data, size_t len) {
  count(s, route, lkvnet_req_send(req, code, ctype, data, len), start);
}

void lkvnet_node_reply_json(lkvnet_server *s, lkvnet_req *req, int route,
                            double start, int code, lkvnet_jbuf *b) {
  if (b->failed) {
    static const char oom[] = "{\"ok\": false, \"error\": \"out of memory\"}";
    lkvnet_node_reply(s, req, route, start, 500, "application/json", oom,
                      sizeof oom - 1);
  } else {
    lkvnet_jbuf_raw(b, "\n", 1);
    lkvnet_node_reply(s, req, route, start, code, "application/json", b->data,
                      b->len);
  }
  lkvnet_jbuf_free(b);
}

void lkvnet_node_reply_error(lkvnet_server *s, lkvnet_req *req, int route,
                             double start, int code, const char *fmt, ...) {
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
void lkvnet_node_put_bytes_member(lkvnet_jbuf *b, const char *name,
                                  const char *v, size_t n) {
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

void lkvnet_node_hold(lkvnet_server *s, lkvnet_held *h, lkvnet_req *req,
                      int route, double start, double deadline) {
  h->req = req;
  h->s = s;
  h->route = route;
  h->start = start;
  h->deadline = deadline;
  s->waiting++;
}

/* Take the request back to answer it (NULL when it is gone already). */
lkvnet_req *lkvnet_node_unhold(lkvnet_held *h) {
  lkvnet_req *req = h->req;
  if (req == NULL) return NULL;
  h->req = NULL;
  h->s->waiting--;
  return req;
}

void lkvnet_node_held_error(lkvnet_held *h, int code, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  lkvnet_req *req = lkvnet_node_unhold(h);
  if (req == NULL) return;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  lkvnet_node_reply_error(h->s, req, h->route, h->start, code, "%s", msg);
}

void lkvnet_node_held_json(lkvnet_held *h, int code, lkvnet_jbuf *b) {
  lkvnet_req *req = lkvnet_node_unhold(h);
  if (req == NULL)
    lkvnet_jbuf_free(b);
  else
    lkvnet_node_reply_json(h->s, req, h->route, h->start, code, b);
}

/* }====================================================================== */

/* {======================================================================
** Request parsing, and connections of this loop
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

/* "http://host:port" -> a client connection of this loop, and the Host
 * header to send. */
struct evhttp_connection *lkvnet_node_connect_url(lkvnet_server *s,
                                                  const char *url,
                                                  char **hostport,
                                                  lkv_err *err) {
  struct evhttp_uri *u = evhttp_uri_parse(url);
  const char *host = u ? evhttp_uri_get_host(u) : NULL;
  int port = u ? evhttp_uri_get_port(u) : -1;
  struct evhttp_connection *c = NULL;
  char hp[300];
  if (host == NULL) {
    if (u) evhttp_uri_free(u);
    lkv_seterr(err, LKV_INVALID, "not a node URL: %s", url);
    return NULL;
  }
  if (port < 0) port = 80;
  snprintf(hp, sizeof hp, "%s:%d", host, port);
  c = evhttp_connection_base_new(s->base, NULL, host, (ev_uint16_t)port);
  evhttp_uri_free(u);
  if (c == NULL || (hostport != NULL && (*hostport = strdup(hp)) == NULL)) {
    if (c) evhttp_connection_free(c);
    lkv_seterr(err, LKV_NOMEM, "connection to %s", url);
    return NULL;
  }
  evhttp_connection_set_retries(c, 0);
  return c;
}

/* }====================================================================== */

/* {======================================================================
** Node ids, the driver's wake-up, "no leader"
** ======================================================================= */

uint64_t lkvnet_node_id_of(const char *url) {
  /* FNV-1a over the normalised URL, then splitmix64's finaliser so that
   * URLs differing in one digit give unrelated ids */
  uint64_t h = 1469598103934665603ull;
  size_t n = strlen(url), i;
  const char *host = strstr(url, "://");
  size_t host_end = n;
  while (n > 0 && url[n - 1] == '/') n--;
  if (host != NULL) {
    const char *slash = strchr(host + 3, '/');
    host_end = slash ? (size_t)(slash - url) : n;
  }
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)url[i];
    if (i < host_end && c >= 'A' && c <= 'Z') c = (unsigned char)(c + 32);
    h ^= c;
    h *= 1099511628211ull;
  }
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  h ^= h >> 31;
  return h != 0 ? h : 1;
}

int lkvnet_node_may_campaign(const lkvnet_server *s) {
  return !s->needs_snapshot && !s->join_unfinished;
}

void lkvnet_node_reply_no_leader(lkvnet_server *s, lkvnet_req *req, int route,
                                 double start) {
  lkvnet_jbuf b;
  lkvnet_req_add_header(req, "Retry-After", "1");
  memset(&b, 0, sizeof b);
  lkvnet_jbuf_lit(&b,
                  "{\"ok\": false, \"error\": \"no leader\", \"detail\": "
                  "\"no leader is known (an election is under way, or no "
                  "majority of the nodes is up): retry\", \"term\": ");
  lkvnet_jbuf_u64(&b, s->term);
  lkvnet_jbuf_lit(&b, "}");
  lkvnet_node_reply_json(s, req, route, start, 503, &b);
}

/* }====================================================================== */
