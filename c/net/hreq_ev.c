/* hreq_ev.c - hreq.h over libevent's evhttp: an lkvnet_req is the
 * evhttp_request itself, so nothing is allocated per request. */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_struct.h>
#include <event2/event.h>
#include <event2/http.h>
#include <stdio.h>

#include "hreq.h"
#include "node.h"

static struct evhttp_request *ev(const lkvnet_req *r) {
  return (struct evhttp_request *)(uintptr_t)r;
}

int lkvnet_req_method(const lkvnet_req *r) {
  switch (evhttp_request_get_command(ev(r))) {
    case EVHTTP_REQ_GET: return LKVNET_HTTP_GET;
    case EVHTTP_REQ_HEAD: return LKVNET_HTTP_HEAD;
    case EVHTTP_REQ_POST: return LKVNET_HTTP_POST;
    case EVHTTP_REQ_PUT: return LKVNET_HTTP_PUT;
    case EVHTTP_REQ_DELETE: return LKVNET_HTTP_DELETE;
    case EVHTTP_REQ_OPTIONS: return LKVNET_HTTP_OPTIONS;
    case EVHTTP_REQ_PATCH: return LKVNET_HTTP_PATCH;
    default: return LKVNET_HTTP_OTHER;
  }
}

const char *lkvnet_req_method_name(const lkvnet_req *r) {
  switch (evhttp_request_get_command(ev(r))) {
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

const char *lkvnet_req_target(const lkvnet_req *r) {
  return evhttp_request_get_uri(ev(r));
}

const char *lkvnet_req_path(const lkvnet_req *r) {
  const struct evhttp_uri *u = evhttp_request_get_evhttp_uri(ev(r));
  const char *p = u ? evhttp_uri_get_path(u) : NULL;
  return p ? p : "";
}

const char *lkvnet_req_query(const lkvnet_req *r) {
  const struct evhttp_uri *u = evhttp_request_get_evhttp_uri(ev(r));
  return u ? evhttp_uri_get_query(u) : NULL;
}

const char *lkvnet_req_body(lkvnet_req *r, size_t *n) {
  struct evbuffer *in = evhttp_request_get_input_buffer(ev(r));
  *n = evbuffer_get_length(in);
  return *n ? (const char *)evbuffer_pullup(in, -1) : "";
}

size_t lkvnet_req_body_len(const lkvnet_req *r) {
  return evbuffer_get_length(evhttp_request_get_input_buffer(ev(r)));
}

const char *lkvnet_req_header(const lkvnet_req *r, const char *name) {
  return evhttp_find_header(evhttp_request_get_input_headers(ev(r)), name);
}

int lkvnet_req_add_header(lkvnet_req *r, const char *name, const char *value) {
  return evhttp_add_header(evhttp_request_get_output_headers(ev(r)), name,
                           value);
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

static const char *reason(int code) {
  switch (code) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 503: return "Service Unavailable";
    default: return "Internal Server Error";
  }
}

/* libevent 2.1 writes whatever is in the output buffer for a HEAD and
 * leaves Content-Length out, so a body there would be read as the start
 * of the next response on a keep-alive connection: the length goes in
 * by hand and the body stays out (RFC 9110 9.3.2). */
int lkvnet_req_send(lkvnet_req *r, int code, const char *ctype,
                    const char *body, size_t n) {
  static const char oom[] = "{\"ok\": false, \"error\": \"out of memory\"}";
  struct evhttp_request *req = ev(r);
  struct evbuffer *out = evhttp_request_get_output_buffer(req);
  struct evkeyvalq *h = evhttp_request_get_output_headers(req);
  struct evhttp_connection *evcon = evhttp_request_get_connection(req);
  evhttp_add_header(h, "Content-Type", ctype);
  if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
    char len[32];
    snprintf(len, sizeof len, "%zu", n);
    evhttp_add_header(h, "Content-Length", len);
  } else if (n > 0 && evbuffer_add(out, body, n) != 0) {
    evbuffer_drain(out, evbuffer_get_length(out));
    evbuffer_add(out, oom, sizeof oom - 1);
    code = 500;
  }
  evhttp_send_reply(req, code, reason(code), NULL);
  lkvnet_node_write_now(evcon);
  return code;
}
