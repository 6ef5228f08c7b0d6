/* httpresp.h - a reader of HTTP/1.x answers, as small as the load
 * generator (loadgen.c) needs: the status line, the headers that frame
 * the body (Content-Length, Transfer-Encoding: chunked; without either,
 * the body ends when the server closes) and Connection: close; interim
 * 1xx answers are skipped. The body is skipped too, but for its first
 * bytes when the caller wants them (an HTTP error's, for a message).
 * Lines end in CRLF; a head (status line and headers), a chunk-size line
 * or a trailer may be at most LKVNET_HTTPRESP_MAX_HEAD bytes.
 *
 * Not installed; no allocation, no I/O; one reader per connection, fed
 * the bytes as they come. Not thread-safe (a reader belongs to its
 * connection's thread). */
#ifndef LKVNET_HTTPRESP_H
#define LKVNET_HTTPRESP_H

#include <stddef.h>
#include <stdint.h>

#define LKVNET_HTTPRESP_MAX_HEAD 16384
#define LKVNET_HTTPRESP_TEXT 159 /* body bytes kept for the caller */

typedef struct lkvnet_httpresp {
  int state;       /* where the reader is (httpresp.c) */
  int status;      /* the final answer's status, once its head is in */
  int close_after; /* no next request on this connection: Connection:
                      close, an HTTP/1.0 answer without keep-alive, or a
                      body that ends with the connection */
  int want_text;   /* keep the body's first bytes of a non-2xx answer */
  uint64_t left;   /* body or chunk bytes still to come */
  char text[LKVNET_HTTPRESP_TEXT + 1]; /* those bytes, text_len of them */
  size_t text_len;
} lkvnet_httpresp;

/* Ready r for the answer to the next request. want_text: keep the first
 * LKVNET_HTTPRESP_TEXT bytes of the body if the status is not 2xx. */
void lkvnet_httpresp_start(lkvnet_httpresp *r, int want_text);

/* Read p[0 .. n), the bytes that came after what r has consumed. Returns
 * 1 when the answer is complete, 0 when more is to come, -1 when it is
 * not a well-formed HTTP/1.x answer (the connection cannot be used
 * further). *used: how many bytes of p it consumed. With 0, the rest
 * (never more than LKVNET_HTTPRESP_MAX_HEAD bytes: a head or line cut
 * short) must be fed again in front of the next bytes; with 1, the rest
 * is bytes that answer no request. Once it has returned 1 or -1, r takes
 * no more bytes: each later call returns the same with *used 0, until
 * lkvnet_httpresp_start readies r again. The verdict does not depend on
 * how the bytes were cut: a line too long is refused whole or in pieces. */
int lkvnet_httpresp_feed(lkvnet_httpresp *r, const char *p, size_t n,
                         size_t *used);

/* Does the end of the connection complete r's answer (a body that ends
 * with the connection), rather than cut it short? */
int lkvnet_httpresp_ends_at_close(const lkvnet_httpresp *r);

#endif
