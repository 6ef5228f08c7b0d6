/* hparse.h - the HTTP/1.1 request parser of the node's own server (net
 * room): the request head (RFC 9112 2-3, 5, 6) and the chunked body (RFC
 * 9112 7.1). Pure code: no I/O, no allocation, no libevent; the server
 * calls it on its read buffer, and everything it reports points into
 * that buffer.
 *
 * What it accepts, and the choices RFC 9112 leaves to a server:
 *   - Lines end in CRLF. A bare LF anywhere in the head is 400 (RFC 9112
 *     2.2 lets a server take it as a line end; we do not: one way to find
 *     the end of a head, so no proxy in front can frame it differently).
 *     It is found by the same scan that looks for the end of the head, so
 *     a client sending LF-only lines gets its 400 at the first line, not
 *     a wait for a head that never ends. A bare CR is 400 as well.
 *   - Empty lines (CRLF) before the request line are skipped (RFC 9112
 *     2.2); they count in head_len and against max_head.
 *   - Request line: method SP request-target SP HTTP-version, one space
 *     each. The method is a token, matched case-sensitively (RFC 9110
 *     9.1: "get" is LKVNET_HTTP_OTHER). The target is any non-empty run of
 *     visible ASCII or bytes >= 0x80 (what evhttp took before us, so raw
 *     UTF-8 paths keep working); its form (origin, absolute, "*") is not
 *     checked here, the router decides. "HTTP/1.0" and "HTTP/1.1" are
 *     served; any other "HTTP/d.d" is 505; anything else is 400.
 *   - Field lines: token ":" OWS value OWS. Whitespace before the colon,
 *     a line without a colon, an empty name, obs-fold (a line starting
 *     with SP or HTAB, the first one after the request line included) and
 *     control characters other than HTAB in a value are 400. Bytes >= 0x80
 *     (obs-text) are allowed in values.
 *   - Content-Length: one field line whose value is 1*DIGIT, at most
 *     2^63 - 1. "+5", "5 5", "", "0x5" are 400, and so is any second
 *     Content-Length line or list ("5,5"), even an identical one (RFC 9110
 *     8.6 allows either; refusing is what nginx and llhttp do, and leaves
 *     no room for two parsers to differ).
 *   - Transfer-Encoding (all its lines, as one list, codings
 *     case-insensitive): the last coding must be chunked, else 400 (RFC
 *     9112 6.3: the length cannot be known); chunked twice is 400; any
 *     coding before the final chunked ("gzip, chunked") is 501, since we
 *     implement none. Transfer-Encoding in an HTTP/1.0 request is 400 (RFC
 *     9112 6.1), and with a Content-Length it is 400 (RFC 9112 6.3: a
 *     smuggling vector).
 *   - Connection (all its lines, as one list of tokens, case-insensitive):
 *     "close" ends the connection after this request whatever else is
 *     listed; HTTP/1.0 keeps it open only with "keep-alive".
 *   - Expect: "100-continue" (case-insensitive, in a list too) sets
 *     expect_continue in HTTP/1.1 only (RFC 9110 10.1.1: an HTTP/1.0
 *     request's expectation is ignored); other expectations are ignored.
 *   - Host is not required (RFC 9112 3.2 says 400 without one in
 *     HTTP/1.1; evhttp never enforced it and our clients rely on that).
 *   - More than LKVNET_HTTP_MAX_HEADERS field lines, or a head longer than
 *     max_head bytes, is 431.
 *
 * Thread safety: none needed; the functions keep no state of their own.
 */
#ifndef LKVNET_HPARSE_H
#define LKVNET_HPARSE_H

#include <stddef.h>
#include <stdint.h>

#define LKVNET_HTTP_MAX_HEADERS 64
/* the bound on a chunked body's trailer section, final CRLF included */
#define LKVNET_HTTP_MAX_TRAILER 8192
/* the bound on a chunked body's chunk extensions, all chunks together */
#define LKVNET_HTTP_MAX_CHUNK_EXT 16384

enum {
  LKVNET_HTTP_GET = 1,
  LKVNET_HTTP_HEAD,
  LKVNET_HTTP_POST,
  LKVNET_HTTP_PUT,
  LKVNET_HTTP_DELETE,
  LKVNET_HTTP_OPTIONS,
  LKVNET_HTTP_PATCH,
  LKVNET_HTTP_OTHER /* a valid token we do not route: the server answers
                       405/501 */
};

/* One field line; name and value point into the parsed buffer. */
typedef struct lkvnet_hfield {
  const char *name, *value;
  size_t name_len, value_len;
} lkvnet_hfield;

typedef struct lkvnet_hhead {
  int method;             /* LKVNET_HTTP_* */
  const char *method_str; /* as sent (points into buf) */
  size_t method_len;
  const char *target; /* request-target as sent (points into buf) */
  size_t target_len;
  int minor;               /* HTTP/1.<minor>, 0 or 1 */
  int keep_alive;          /* the connection stays open after this request */
  int expect_continue;     /* "Expect: 100-continue" in an HTTP/1.1 request */
  int chunked;             /* Transfer-Encoding: chunked (the only one taken) */
  int has_length;          /* a Content-Length was given */
  uint64_t content_length; /* 0 when absent */
  size_t nfields;
  lkvnet_hfield fields[LKVNET_HTTP_MAX_HEADERS]; /* in the order sent;
                                                    values trimmed of OWS */
  size_t head_len; /* bytes of the head: leading empty lines, request line,
                      field lines and the final CRLF CRLF */
} lkvnet_hhead;

/* Where the head in buf[0 .. len) ends, without parsing it: the cheap check
 * to run as bytes arrive. Returns 1 when the whole head is there (*scan then
 * holds its length; call lkvnet_hparse_head), 0 when more bytes are needed,
 * or 400 (a line ending in a bare LF, a bare CR before the request line) or
 * 431 (no end within max_head bytes), with *why. *scan is where to resume:
 * set it to 0 before the first call for a head and keep it between calls
 * while buf only grows (the same bytes at the same place, max_head
 * unchanged); set it to 0 again for the next head or after moving the
 * bytes. With it a head arriving in many pieces costs O(new bytes) in all
 * rather than O(head) per piece. */
int lkvnet_hparse_scan(const char *buf, size_t len, size_t max_head,
                       size_t *scan, const char **why);

/* Parse the request head at buf[0 .. len). Returns 1 when the head is
 * complete (h filled, h->head_len set: the request's body or the next
 * request starts at buf + head_len), 0 when more bytes are needed (and the
 * head so far is within max_head bytes), or an HTTP status for a request to
 * refuse (400, 431, 501, 505: see the top of this file) with *why a short
 * static English reason. h is only meaningful when 1 is returned.
 *
 * A call on an incomplete head costs one scan for its end (memchr per
 * line) and parses nothing; a caller re-calling with a growing buffer can
 * instead call lkvnet_hparse_scan with a kept offset and call this only
 * once that returns 1. Never reads past buf + len; never writes to buf. */
int lkvnet_hparse_head(const char *buf, size_t len, size_t max_head,
                       lkvnet_hhead *h, const char **why);

/* The value of the first field called name (ASCII case-insensitive), NULL
 * when there is none; *n gets its length. Points into the parsed buffer. */
const char *lkvnet_hhead_find(const lkvnet_hhead *h, const char *name,
                              size_t *n);

/* The reason phrase for a status code ("Not Found"), "Unknown" for a code
 * not in the list the server uses. Static storage. */
const char *lkvnet_http_reason(int code);

/* {======================================================================
** Chunked bodies (RFC 9112 7.1)
** ======================================================================= */

/* The decoder's state between calls; lkvnet_hchunk_init starts it. */
typedef struct lkvnet_hchunk {
  int state;              /* where in the grammar the last byte left us */
  unsigned ndigits;       /* hex digits of the chunk size read so far */
  uint64_t left;          /* the size being read, then its data bytes to copy */
  uint64_t total;         /* data bytes decoded so far */
  uint32_t ext_bytes;     /* chunk extension bytes so far, all chunks */
  uint32_t trailer_bytes; /* trailer section bytes so far */
  int err;                /* after a refusal: its status, */
  const char *why;        /* and its reason, returned again */
} lkvnet_hchunk;

void lkvnet_hchunk_init(lkvnet_hchunk *c);

/* Decode the chunked body from in[0 .. n): the data bytes are written to
 * out (which may equal in: the output never runs ahead of the input, so
 * decoding in place works; any other out needs n bytes of room), *used
 * gets the input bytes consumed and *produced the bytes written. Returns
 * 1 when the last chunk and its trailer section are consumed (*used stops
 * right after the final CRLF: what follows is the next request, and
 * further calls return 1 consuming nothing), 0 when more input is needed
 * (then *used == n: the decoder keeps what it needs in c, so the caller
 * never presents a byte twice), or 400 (a malformed body, a chunk size of
 * more than 16 hex digits or over 2^63 - 1, chunk extensions over
 * LKVNET_HTTP_MAX_CHUNK_EXT bytes in all, a trailer section over
 * LKVNET_HTTP_MAX_TRAILER bytes) or 413 (the data would exceed max_body
 * bytes, refused as soon as a chunk size says so) with *why. Chunk
 * extensions and trailer fields are checked for their characters and
 * skipped. The verdict, the data and where the body ends do not depend on
 * how the input is cut into calls. After a refusal, further calls return it
 * again consuming nothing. */
int lkvnet_hchunk_feed(lkvnet_hchunk *c, const char *in, size_t n, char *out,
                       size_t *used, size_t *produced, uint64_t max_body,
                       const char **why);

/* }====================================================================== */

#endif
