/* hreq.h - one HTTP request the node answers, as its routes see it.
 *
 * Every route reads its request and writes its answer through these
 * calls only, never through the HTTP server's own objects, so that the
 * server under them can change without touching a route. Today that
 * server is the node's own (hserver.c), which replaced libevent's evhttp
 * on the node's port: evhttp cost a malloc per header, an ioctl per read
 * and an epoll_ctl per reply.
 *
 * A request stays valid from the dispatch until lkvnet_req_send, which
 * ends it; a route that holds one (lkvnet_held) answers it exactly once.
 * Runs on the event loop's thread. */
#ifndef LUNAKV_NET_HREQ_H
#define LUNAKV_NET_HREQ_H

#include <stddef.h>
#include <stdint.h>

#include "hparse.h"

typedef struct lkvnet_req lkvnet_req;

/* lkvnet_req_method's values: LKVNET_HTTP_GET ... (hparse.h) */
int lkvnet_req_method(const lkvnet_req *r);
/* The method's name as HTTP spells it ("GET"). */
const char *lkvnet_req_method_name(const lkvnet_req *r);
/* The request-target as sent: path and query, not decoded. */
const char *lkvnet_req_target(const lkvnet_req *r);
/* The target's path (never NULL; "" when it has none) and its query
 * (NULL when there is no '?'), neither decoded. */
const char *lkvnet_req_path(const lkvnet_req *r);
const char *lkvnet_req_query(const lkvnet_req *r);
/* The whole body, contiguous ("" when empty; NULL only when memory ran
 * out making it contiguous). */
const char *lkvnet_req_body(lkvnet_req *r, size_t *n);
size_t lkvnet_req_body_len(const lkvnet_req *r);
/* A request header's value (NULL when absent); names are
 * case-insensitive. */
const char *lkvnet_req_header(const lkvnet_req *r, const char *name);
/* A header for the answer (0, or -1 when out of memory). */
int lkvnet_req_add_header(lkvnet_req *r, const char *name, const char *value);
/* Answer with code, a Content-Type and body[0..n), and start writing it
 * in this loop iteration. A HEAD gets the headers a GET would,
 * Content-Length included, and no body. r is gone after this. Returns
 * the code sent: 500 when memory ran out for the body. */
int lkvnet_req_send(lkvnet_req *r, int code, const char *ctype,
                    const char *body, size_t n);

#endif
