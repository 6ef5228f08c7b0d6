/* httpc_int.h - what the one-shot client (httpc.c) shares with the load
 * generator (loadgen.c): parsed URLs and the sentence for a failed
 * request. Not installed; httpc.h is the contract. */
#ifndef LKVNET_HTTPC_INT_H
#define LKVNET_HTTPC_INT_H

#include <stddef.h>

#include "lunakv.h"

/* A request's time limit when the caller gives none (<= 0). */
#define LKVNET_HTTPC_DEFAULT_TIMEOUT_MS 10000

/* A parsed http:// URL: host for connect(), the Host header, and the
 * request target (path and query). */
typedef struct lkvnet_url {
  char host[256];     /* for getaddrinfo: an IPv6 literal without [] */
  int port;           /* 1 .. 65535; 80 when the URL names none */
  char hostport[300]; /* the Host header, "[::1]:8000" */
  char *target;       /* malloc'd "/path?query" */
} lkvnet_url;

/* Parse url into *u (zeroed first). LKV_INVALID with a sentence naming
 * the URL for anything but http://HOST[:PORT][/path][?query]; LKV_NOMEM.
 * On success the caller frees u with lkvnet_url_free; on failure *u
 * holds nothing (freeing it is still safe). */
int lkvnet_url_parse(const char *url, lkvnet_url *u, lkv_err *err);

/* Free what u owns; safe on a zeroed or freed lkvnet_url. */
void lkvnet_url_free(lkvnet_url *u);

/* The sentence for a failed request to url (parsed as u), in out (n
 * bytes): resolves and connects to u itself (blocking, 2 s at most) and
 * says "cannot connect to http://HOST:PORT: why" when that fails, else
 * "no answer from URL within timeout_ms ms" when timed_out, else "the
 * connection to URL closed before a complete answer". */
void lkvnet_httpc_diagnose(const char *url, const lkvnet_url *u, int timed_out,
                           int timeout_ms, char *out, size_t n);

#endif
