/* hparse.c - the HTTP/1.1 request head and chunked body parser of the
 * node's own server; the contract, and every choice RFC 9112 leaves open,
 * are in hparse.h. One scan finds the end of the head (memchr per line),
 * then one pass over the bytes checks and splits it, driven by a table of
 * character classes. */
#include "hparse.h"

#include <string.h>

/* {======================================================================
** Character classes
** ======================================================================= */

#define TCHAR 1 /* token (RFC 9110 5.6.2): method, field name, coding */
#define VCHAR 2 /* in a field value: HTAB, SP, VCHAR, obs-text */
#define UCHAR 4 /* in a request-target: visible ASCII and bytes >= 0x80 */

static const unsigned char cls[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, /* 0x00 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x10 */
    2, 7, 6, 7, 7, 7, 7, 7, 6, 6, 7, 7, 6, 7, 7, 6, /* 0x20  !"#$%&'()*+,-./ */
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 6, 6, 6, 6, 6, /* 0x30 0-9:;<=>? */
    6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, /* 0x40 @A-O */
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 6, 6, 7, 7, /* 0x50 P-Z[\]^_ */
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, /* 0x60 `a-o */
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 7, 6, 7, 0, /* 0x70 p-z{|}~DEL */
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, /* 0x80 obs-text */
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, /* 0x90 */
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, /* 0xA0 */
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, /* 0xB0 */
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, /* 0xC0 */
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, /* 0xD0 */
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, /* 0xE0 */
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, /* 0xF0 */
};

#define IS(c, k) (cls[(unsigned char)(c)] & (k))

static int lower(int c) { return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c; }

/* s[0 .. n) equals the lower-case lit[0 .. n), ASCII case-insensitively. */
static int ci_eq(const char *s, const char *lit, size_t n) {
  size_t i;
  for (i = 0; i < n; i++)
    if (lower((unsigned char)s[i]) != lit[i]) return 0;
  return 1;
}

#define CI_IS(s, n, lit) \
  ((n) == sizeof(lit) - 1 && ci_eq((s), (lit), sizeof(lit) - 1))

/* The next element of the list v[0 .. n) (RFC 9110 5.6.1) from *at, OWS
 * trimmed, empty elements skipped: 1 and *e, *elen, else 0. */
static int list_next(const char *v, size_t n, size_t *at, const char **e,
                     size_t *elen) {
  size_t i = *at, s, t;
  while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ',')) i++;
  if (i >= n) {
    *at = i;
    return 0;
  }
  s = i;
  while (i < n && v[i] != ',') i++;
  t = i;
  while (t > s && (v[t - 1] == ' ' || v[t - 1] == '\t')) t--;
  *at = i;
  *e = v + s;
  *elen = t - s;
  return 1;
}

/* }====================================================================== */

/* {======================================================================
** The end of the head
** ======================================================================= */

#define FAIL(code, text) \
  do {                   \
    *why = (text);       \
    return (code);       \
  } while (0)

/* *scan is 0 (start over: leading empty lines are still possible, so an
 * empty line there is not the end) or a place past the first byte of the
 * request line from which to look for the next LF: every LF before it was
 * preceded by CR and none ended an empty line. */
int lkvnet_hparse_scan(const char *buf, size_t len, size_t max_head,
                       size_t *scan, const char **why) {
  size_t lim = len < max_head ? len : max_head;
  size_t p = *scan;
  if (p == 0 || p > lim) {
    p = 0;
    while (p + 1 < lim && buf[p] == '\r' && buf[p + 1] == '\n') p += 2;
    if (p < lim && buf[p] == '\n') FAIL(400, "bare LF in the request head");
    if (p < lim && buf[p] == '\r' && p + 1 < lim)
      FAIL(400, "bare CR in the request head");
    if (p >= lim || buf[p] == '\r') {
      *scan = 0;
      goto more;
    }
    p++; /* the request line's first byte, neither CR nor LF */
  }
  for (;;) {
    const char *q = memchr(buf + p, '\n', lim - p);
    size_t i;
    if (q == NULL) {
      *scan = lim;
      goto more;
    }
    i = (size_t)(q - buf);
    /* i >= 1: the request line's first byte comes before any LF */
    if (buf[i - 1] != '\r') FAIL(400, "bare LF in the request head");
    /* i >= 2, as that first byte is not CR either */
    if (buf[i - 2] == '\n') {
      *scan = i + 1;
      return 1;
    }
    p = i + 1;
  }
more:
  if (len >= max_head) FAIL(431, "request head too large");
  return 0;
}

/* }====================================================================== */

/* {======================================================================
** The head
** ======================================================================= */

static int method_of(const char *m, size_t n) {
  switch (n) {
    case 3:
      if (memcmp(m, "GET", 3) == 0) return LKVNET_HTTP_GET;
      if (memcmp(m, "PUT", 3) == 0) return LKVNET_HTTP_PUT;
      break;
    case 4:
      if (memcmp(m, "POST", 4) == 0) return LKVNET_HTTP_POST;
      if (memcmp(m, "HEAD", 4) == 0) return LKVNET_HTTP_HEAD;
      break;
    case 5:
      if (memcmp(m, "PATCH", 5) == 0) return LKVNET_HTTP_PATCH;
      break;
    case 6:
      if (memcmp(m, "DELETE", 6) == 0) return LKVNET_HTTP_DELETE;
      break;
    case 7:
      if (memcmp(m, "OPTIONS", 7) == 0) return LKVNET_HTTP_OPTIONS;
      break;
  }
  return LKVNET_HTTP_OTHER;
}

/* What the framing fields said, gathered over the field lines. */
typedef struct Frame {
  int conn_close, conn_keep;
  int te_seen;    /* a Transfer-Encoding line */
  int te_last;    /* its last coding so far is chunked */
  int te_chunked; /* chunked appeared (twice is refused at once) */
  int te_other;   /* a coding other than chunked appeared */
} Frame;

static int content_length(const char *v, size_t n, uint64_t *out,
                          const char **why) {
  const uint64_t max = (uint64_t)INT64_MAX;
  uint64_t x = 0;
  size_t i;
  if (n == 0) FAIL(400, "empty Content-Length");
  for (i = 0; i < n; i++) {
    unsigned d = (unsigned)((unsigned char)v[i] - '0');
    if (d > 9) FAIL(400, "Content-Length is not a number");
    if (x > (max - d) / 10) FAIL(400, "Content-Length too large");
    x = x * 10 + d;
  }
  *out = x;
  return 0;
}

static int transfer_encoding(Frame *f, const char *v, size_t n,
                             const char **why) {
  size_t at = 0, elen;
  const char *e;
  f->te_seen = 1;
  while (list_next(v, n, &at, &e, &elen)) {
    if (CI_IS(e, elen, "chunked")) {
      if (f->te_chunked) FAIL(400, "chunked applied twice");
      f->te_chunked = 1;
      f->te_last = 1;
    } else {
      f->te_other = 1;
      f->te_last = 0;
    }
  }
  return 0;
}

static void connection(Frame *f, const char *v, size_t n) {
  size_t at = 0, elen;
  const char *e;
  while (list_next(v, n, &at, &e, &elen)) {
    if (CI_IS(e, elen, "close"))
      f->conn_close = 1;
    else if (CI_IS(e, elen, "keep-alive"))
      f->conn_keep = 1;
  }
}

static int expects_continue(const char *v, size_t n) {
  size_t at = 0, elen;
  const char *e;
  while (list_next(v, n, &at, &e, &elen))
    if (CI_IS(e, elen, "100-continue")) return 1;
  return 0;
}

/* The request line at buf[i ..], ending in CRLF before end. Sets i past
 * its CRLF. */
static int request_line(const char *buf, size_t *ip, size_t end,
                        lkvnet_hhead *h, const char **why) {
  size_t i = *ip, s = i;
  while (IS(buf[i], TCHAR)) i++;
  if (i == s || buf[i] != ' ') FAIL(400, "bad method in the request line");
  h->method_str = buf + s;
  h->method_len = i - s;
  h->method = method_of(h->method_str, h->method_len);
  s = ++i;
  while (IS(buf[i], UCHAR)) i++;
  if (i == s || buf[i] != ' ') FAIL(400, "bad request-target");
  h->target = buf + s;
  h->target_len = i - s;
  i++;
  /* "HTTP/" DIGIT "." DIGIT CRLF */
  if (end - i < 10 || memcmp(buf + i, "HTTP/", 5) != 0 ||
      (unsigned)(buf[i + 5] - '0') > 9 || buf[i + 6] != '.' ||
      (unsigned)(buf[i + 7] - '0') > 9 || buf[i + 8] != '\r' ||
      buf[i + 9] != '\n')
    FAIL(400, "bad HTTP version in the request line");
  if (buf[i + 5] != '1' || buf[i + 7] > '1')
    FAIL(505, "HTTP version not supported");
  h->minor = buf[i + 7] - '0';
  *ip = i + 10;
  return 0;
}

/* One field line's meaning for the framing, and for the flags of h. */
static int field(const lkvnet_hfield *fl, int minor, Frame *f, lkvnet_hhead *h,
                 const char **why) {
  const char *v = fl->value;
  size_t n = fl->value_len;
  switch (fl->name_len) {
    case 6:
      if (ci_eq(fl->name, "expect", 6) && minor == 1 && expects_continue(v, n))
        h->expect_continue = 1;
      break;
    case 10:
      if (ci_eq(fl->name, "connection", 10)) connection(f, v, n);
      break;
    case 14:
      if (ci_eq(fl->name, "content-length", 14)) {
        if (h->has_length) FAIL(400, "more than one Content-Length");
        if (content_length(v, n, &h->content_length, why) != 0) return 400;
        h->has_length = 1;
      }
      break;
    case 17:
      if (ci_eq(fl->name, "transfer-encoding", 17))
        return transfer_encoding(f, v, n, why);
      break;
  }
  return 0;
}

int lkvnet_hparse_head(const char *buf, size_t len, size_t max_head,
                       lkvnet_hhead *h, const char **why) {
  size_t scan = 0, i = 0, end, last;
  Frame f = {0, 0, 0, 0, 0, 0};
  int rc = lkvnet_hparse_scan(buf, len, max_head, &scan, why);
  if (rc != 1) return rc;
  end = scan;
  last = end - 2;                /* where the final empty line's CRLF starts */
  while (buf[i] == '\r') i += 2; /* leading empty lines: the scan saw CRLFs */
  h->has_length = 0;
  h->content_length = 0;
  h->expect_continue = 0;
  h->nfields = 0;
  if ((rc = request_line(buf, &i, end, h, why)) != 0) return rc;
  /* Field lines, each ending in CRLF at or before last: every loop below
   * stops at CR (no class holds it), so none reads past its line. */
  while (i < last) {
    size_t s = i, ne, vs, ve;
    lkvnet_hfield *fl;
    while (IS(buf[i], TCHAR)) i++;
    ne = i;
    if (buf[i] != ':') {
      if (i == s && (buf[i] == ' ' || buf[i] == '\t'))
        FAIL(400, "obs-fold or whitespace before a field line");
      if (buf[i] == ' ' || buf[i] == '\t')
        FAIL(400, "whitespace before the colon of a field");
      if (buf[i] == '\r') FAIL(400, "field line without a colon");
      FAIL(400, "bad character in a field name");
    }
    if (i == s) FAIL(400, "empty field name");
    i++;
    while (buf[i] == ' ' || buf[i] == '\t') i++;
    vs = i;
    while (IS(buf[i], VCHAR)) i++;
    if (buf[i] != '\r' || buf[i + 1] != '\n')
      FAIL(400, "control character in a field value");
    ve = i;
    while (ve > vs && (buf[ve - 1] == ' ' || buf[ve - 1] == '\t')) ve--;
    i += 2;
    if (h->nfields == LKVNET_HTTP_MAX_HEADERS)
      FAIL(431, "too many header fields");
    fl = &h->fields[h->nfields++];
    fl->name = buf + s;
    fl->name_len = ne - s;
    fl->value = buf + vs;
    fl->value_len = ve - vs;
    if ((rc = field(fl, h->minor, &f, h, why)) != 0) return rc;
  }
  if (f.te_seen) {
    if (h->minor == 0) FAIL(400, "Transfer-Encoding in an HTTP/1.0 request");
    if (h->has_length) FAIL(400, "both Content-Length and Transfer-Encoding");
    if (!f.te_last) FAIL(400, "Transfer-Encoding does not end in chunked");
    if (f.te_other) FAIL(501, "transfer coding not implemented");
  }
  h->chunked = f.te_seen;
  h->keep_alive = !f.conn_close && (h->minor == 1 || f.conn_keep);
  h->head_len = end;
  return 1;
}

const char *lkvnet_hhead_find(const lkvnet_hhead *h, const char *name,
                              size_t *n) {
  size_t len = strlen(name), i, k;
  for (i = 0; i < h->nfields; i++) {
    const lkvnet_hfield *fl = &h->fields[i];
    if (fl->name_len != len) continue;
    for (k = 0; k < len; k++)
      if (lower((unsigned char)fl->name[k]) != lower((unsigned char)name[k]))
        break;
    if (k == len) {
      *n = fl->value_len;
      return fl->value;
    }
  }
  return NULL;
}

const char *lkvnet_http_reason(int code) {
  switch (code) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
  }
  return "Unknown";
}

/* }====================================================================== */

/* {======================================================================
** Chunked bodies
** ======================================================================= */

enum {
  C_SIZE0,    /* the first hex digit of a chunk size */
  C_SIZE,     /* more hex digits, or what ends the size */
  C_EXT_BWS,  /* whitespace after the size: a ';' must follow */
  C_EXT,      /* a chunk extension, skipped to its CR */
  C_SIZE_LF,  /* the LF ending the chunk-size line */
  C_DATA,     /* left data bytes to copy */
  C_DATA_CR,  /* the CRLF after the data */
  C_DATA_LF,  /* (its LF) */
  C_TR_START, /* a trailer line's first byte, or the final CR */
  C_TR_NAME,  /* a trailer field's name, to its colon */
  C_TR_VALUE, /* its value, to its CR */
  C_TR_LF,    /* the LF ending a trailer line */
  C_END_LF,   /* the LF ending the body */
  C_DONE,
  C_FAILED
};

void lkvnet_hchunk_init(lkvnet_hchunk *c) {
  memset(c, 0, sizeof *c);
  c->state = C_SIZE0;
}

static int hexval(unsigned char ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  ch = (unsigned char)(ch | 0x20);
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  return -1;
}

int lkvnet_hchunk_feed(lkvnet_hchunk *c, const char *in, size_t n, char *out,
                       size_t *used, size_t *produced, uint64_t max_body,
                       const char **why) {
  size_t i = 0, o = 0;
  int rc = 0;
  const char *err = NULL;
#define BAD(code, text) \
  do {                  \
    rc = (code);        \
    err = (text);       \
    goto fail;          \
  } while (0)
  if (c->state == C_DONE) rc = 1;
  if (c->state == C_FAILED) {
    *used = *produced = 0;
    *why = c->why;
    return c->err;
  }
  while (i < n && rc == 0) {
    unsigned char ch = (unsigned char)in[i];
    int d;
    switch (c->state) {
      case C_SIZE0:
      case C_SIZE:
        if ((d = hexval(ch)) >= 0) {
          if (c->ndigits == 16) BAD(400, "chunk size over 16 hex digits");
          c->ndigits++;
          c->left = c->left << 4 | (uint64_t)d;
          if (c->left > (uint64_t)INT64_MAX) BAD(400, "chunk size too large");
          if (c->left > max_body - c->total) BAD(413, "chunked body too large");
          c->state = C_SIZE;
          break;
        }
        if (c->state == C_SIZE0) BAD(400, "chunk size expected");
        if (ch == '\r') {
          c->state = C_SIZE_LF;
          break;
        }
        if (ch == ';')
          c->state = C_EXT;
        else if (ch == ' ' || ch == '\t')
          c->state = C_EXT_BWS;
        else
          BAD(400, "bad character after a chunk size");
        if (++c->ext_bytes > LKVNET_HTTP_MAX_CHUNK_EXT)
          BAD(400, "chunk extensions too long");
        break;
      case C_EXT_BWS:
        if (ch == ';')
          c->state = C_EXT;
        else if (ch != ' ' && ch != '\t')
          BAD(400, "bad chunk extension");
        if (++c->ext_bytes > LKVNET_HTTP_MAX_CHUNK_EXT)
          BAD(400, "chunk extensions too long");
        break;
      case C_EXT:
        if (ch == '\r') {
          c->state = C_SIZE_LF;
          break;
        }
        if (!IS(ch, VCHAR)) BAD(400, "control character in a chunk extension");
        if (++c->ext_bytes > LKVNET_HTTP_MAX_CHUNK_EXT)
          BAD(400, "chunk extensions too long");
        break;
      case C_SIZE_LF:
        if (ch != '\n') BAD(400, "chunk size line not ended by CRLF");
        c->state = c->left == 0 ? C_TR_START : C_DATA;
        break;
      case C_DATA: {
        size_t k = n - i;
        if (k > c->left) k = (size_t)c->left;
        /* o <= i: out never runs ahead of in, so in place is safe */
        if (out + o != in + i) memmove(out + o, in + i, k);
        o += k;
        c->total += k;
        c->left -= k;
        i += k;
        if (c->left == 0) c->state = C_DATA_CR;
        continue;
      }
      case C_DATA_CR:
        if (ch != '\r') BAD(400, "chunk data not followed by CRLF");
        c->state = C_DATA_LF;
        break;
      case C_DATA_LF:
        if (ch != '\n') BAD(400, "chunk data not followed by CRLF");
        c->state = C_SIZE0;
        c->ndigits = 0;
        break;
      case C_TR_START:
      case C_TR_NAME:
      case C_TR_VALUE:
      case C_TR_LF:
      case C_END_LF:
        if (++c->trailer_bytes > LKVNET_HTTP_MAX_TRAILER)
          BAD(400, "trailer section too large");
        switch (c->state) {
          case C_TR_START:
            if (ch == '\r')
              c->state = C_END_LF;
            else if (IS(ch, TCHAR))
              c->state = C_TR_NAME;
            else
              BAD(400, "bad trailer field");
            break;
          case C_TR_NAME:
            if (ch == ':')
              c->state = C_TR_VALUE;
            else if (!IS(ch, TCHAR))
              BAD(400, "bad trailer field name");
            break;
          case C_TR_VALUE:
            if (ch == '\r')
              c->state = C_TR_LF;
            else if (!IS(ch, VCHAR))
              BAD(400, "control character in a trailer field");
            break;
          case C_TR_LF:
            if (ch != '\n') BAD(400, "trailer line not ended by CRLF");
            c->state = C_TR_START;
            break;
          default: /* C_END_LF */
            if (ch != '\n') BAD(400, "chunked body not ended by CRLF");
            c->state = C_DONE;
            rc = 1;
            break;
        }
        break;
    }
    i++;
  }
  *used = i;
  *produced = o;
  return rc;
fail:
  c->state = C_FAILED;
  c->err = rc;
  c->why = err;
  *used = i;
  *produced = o;
  *why = err;
  return rc;
#undef BAD
}

/* }====================================================================== */
