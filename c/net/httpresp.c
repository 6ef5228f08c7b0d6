/* httpresp.c - the load generator's reader of HTTP/1.x answers
 * (httpresp.h): a state machine fed the bytes as they come, which frames
 * the body (RFC 9112 section 6.3: no body for 1xx, 204 and 304; chunked
 * before Content-Length; else to the close) and skips it. */
#include "httpresp.h"

#include <string.h>
#include <strings.h>

/* Where the reader is in an answer. */
enum {
  R_HEAD,       /* status line and headers, to the empty line */
  R_BODY,       /* `left` bytes of body (Content-Length) */
  R_TO_CLOSE,   /* a body that ends when the server closes */
  R_CHUNK_SIZE, /* a chunk's size line */
  R_CHUNK_DATA, /* `left` bytes of a chunk */
  R_CHUNK_END,  /* the CRLF after a chunk */
  R_TRAILER,    /* trailer lines, to the empty line */
  R_DONE,       /* the answer is complete: nothing more is read */
  R_FAILED      /* the bytes were not an answer: nothing more is read */
};

/* More hex digits in a chunk size than any answer of ours needs (and
 * than a uint64_t holds, past 16). */
#define MAX_CHUNK_DIGITS 15

void lkvnet_httpresp_start(lkvnet_httpresp *r, int want_text) {
  r->state = R_HEAD;
  r->status = 0;
  r->close_after = 0;
  r->want_text = want_text;
  r->left = 0;
  r->text_len = 0;
}

int lkvnet_httpresp_ends_at_close(const lkvnet_httpresp *r) {
  return r->state == R_TO_CLOSE;
}

/* Does v[0 .. n) hold word, in any case? */
static int has_word(const char *v, size_t n, const char *word) {
  size_t w = strlen(word), i;
  for (i = 0; i + w <= n; i++)
    if (strncasecmp(v + i, word, w) == 0) return 1;
  return 0;
}

/* The value of a Content-Length header, v[0 .. n): digits, then blanks.
 * Returns 0, or -1 when it is not a number or too big. */
static int content_length(const char *v, size_t n, uint64_t *out) {
  uint64_t x = 0;
  size_t j = 0;
  for (; j < n && v[j] >= '0' && v[j] <= '9'; j++) {
    if (x > (UINT64_MAX - 9) / 10) return -1;
    x = x * 10 + (uint64_t)(v[j] - '0');
  }
  if (j == 0) return -1;
  while (j < n && (v[j] == ' ' || v[j] == '\t')) j++;
  *out = x;
  return j == n ? 0 : -1;
}

/* Read the head p[0 .. n), which ends in the empty line: the status and
 * the headers that frame the body and say whether the connection stays
 * open. Returns 0, or -1 when it is not an HTTP/1.x answer. A 1xx answer
 * leaves r in R_HEAD, for the answer after it. */
static int read_head(lkvnet_httpresp *r, const char *p, size_t n) {
  const char *end = p + n - 2; /* the empty line's CRLF */
  const char *line;
  int http10, chunked = 0, close = 0, keep_alive = 0, has_length = 0, i;
  uint64_t length = 0;
  /* "HTTP/1.1 200 OK": the version, a space, three digits, then the
   * reason phrase after a space, or none */
  if (n < 16 || memcmp(p, "HTTP/1.", 7) != 0 || p[7] < '0' || p[7] > '9' ||
      p[8] != ' ' || (p[12] != ' ' && p[12] != '\r'))
    return -1;
  r->status = 0;
  for (i = 9; i < 12; i++) {
    if (p[i] < '0' || p[i] > '9') return -1;
    r->status = r->status * 10 + (p[i] - '0');
  }
  http10 = p[7] == '0';
  line = (const char *)memchr(p, '\n', n) + 1;
  while (line < end) {
    /* there is a CR at end, so each search finds one */
    const char *eol = memchr(line, '\r', (size_t)(end - line) + 1);
    const char *colon = memchr(line, ':', (size_t)(eol - line));
    const char *v;
    size_t nl, vl;
    if (eol[1] != '\n' || colon == NULL) return -1;
    nl = (size_t)(colon - line);
    for (v = colon + 1; v < eol && (*v == ' ' || *v == '\t'); v++) {
    }
    vl = (size_t)(eol - v);
    if (nl == 14 && strncasecmp(line, "content-length", 14) == 0) {
      uint64_t x;
      if (content_length(v, vl, &x) != 0 || (has_length && x != length))
        return -1;
      length = x;
      has_length = 1;
    } else if (nl == 17 && strncasecmp(line, "transfer-encoding", 17) == 0) {
      chunked |= has_word(v, vl, "chunked");
    } else if (nl == 10 && strncasecmp(line, "connection", 10) == 0) {
      close |= has_word(v, vl, "close");
      keep_alive |= has_word(v, vl, "keep-alive");
    }
    line = eol + 2;
  }
  if (r->status < 100) return -1; /* no class of answer starts with 0 */
  if (r->status < 200) {
    /* an interim answer (100 Continue); 101 would switch protocols,
     * which no request of ours asks for */
    return r->status == 101 ? -1 : 0;
  }
  if (close || (http10 && !keep_alive)) r->close_after = 1;
  if (r->status < 300) r->want_text = 0; /* a success: no text wanted */
  if (r->status == 204 || r->status == 304) {
    r->state = R_BODY;
    r->left = 0;
  } else if (chunked) {
    r->state = R_CHUNK_SIZE;
  } else if (has_length) {
    r->state = R_BODY;
    r->left = length;
  } else {
    r->state = R_TO_CLOSE;
    r->close_after = 1;
  }
  return 0;
}

/* Keep body bytes for the caller while it wants them. */
static void keep(lkvnet_httpresp *r, const char *p, size_t n) {
  if (!r->want_text || r->text_len >= LKVNET_HTTPRESP_TEXT) return;
  if (n > LKVNET_HTTPRESP_TEXT - r->text_len)
    n = LKVNET_HTTPRESP_TEXT - r->text_len;
  memcpy(r->text + r->text_len, p, n);
  r->text_len += n;
}

/* Skip up to n bytes of body or chunk at p. Returns how many. */
static size_t skip(lkvnet_httpresp *r, const char *p, size_t n) {
  size_t k = r->left < n ? (size_t)r->left : n;
  keep(r, p, k);
  r->left -= k;
  return k;
}

/* The size line p[0 .. n) (without its CRLF): hex digits, then blanks
 * and ;extensions, which say nothing we need. */
static int chunk_size(const char *p, size_t n, uint64_t *out) {
  uint64_t size = 0;
  size_t j;
  for (j = 0; j < n; j++) {
    int d = p[j] >= '0' && p[j] <= '9'   ? p[j] - '0'
            : p[j] >= 'a' && p[j] <= 'f' ? p[j] - 'a' + 10
            : p[j] >= 'A' && p[j] <= 'F' ? p[j] - 'A' + 10
                                         : -1;
    if (d < 0) break;
    if (j == MAX_CHUNK_DIGITS) return -1;
    size = size * 16 + (uint64_t)d;
  }
  if (j == 0) return -1;
  while (j < n && (p[j] == ' ' || p[j] == '\t')) j++;
  *out = size;
  return j == n || p[j] == ';' ? 0 : -1;
}

/* Where a line of at most LKVNET_HTTPRESP_MAX_HEAD bytes, CRLF included,
 * ends in p[0 .. n): 1 and *eol at its CR; 0 when it is not all there
 * yet; -1 when it is too long. A line is refused by its length whether it
 * comes whole or in pieces, so the verdict never depends on the cuts. */
static int line_end(const char *p, size_t n, const char **eol) {
  *eol = memmem(p, n, "\r\n", 2);
  if (*eol == NULL) return n > LKVNET_HTTPRESP_MAX_HEAD ? -1 : 0;
  return (size_t)(*eol - p) + 2 > LKVNET_HTTPRESP_MAX_HEAD ? -1 : 1;
}

/* The answer is complete or refused: r stays so, whatever comes next. */
static int finish(lkvnet_httpresp *r, int rc) {
  r->state = rc == 1 ? R_DONE : R_FAILED;
  return rc;
}

int lkvnet_httpresp_feed(lkvnet_httpresp *r, const char *p, size_t n,
                         size_t *used) {
  size_t i = 0;
  int rc;
  for (;;) {
    const char *e;
    *used = i;
    switch (r->state) {
      case R_HEAD:
        e = memmem(p + i, n - i, "\r\n\r\n", 4);
        if (e == NULL)
          return n - i > LKVNET_HTTPRESP_MAX_HEAD ? finish(r, -1) : 0;
        if ((size_t)(e - (p + i)) + 4 > LKVNET_HTTPRESP_MAX_HEAD ||
            read_head(r, p + i, (size_t)(e - (p + i)) + 4) != 0)
          return finish(r, -1);
        i = (size_t)(e - p) + 4;
        break;
      case R_BODY:
        i += skip(r, p + i, n - i);
        *used = i;
        return r->left == 0 ? finish(r, 1) : 0;
      case R_TO_CLOSE:
        keep(r, p + i, n - i);
        *used = n;
        return 0;
      case R_CHUNK_SIZE:
        rc = line_end(p + i, n - i, &e);
        if (rc <= 0) return rc < 0 ? finish(r, -1) : 0;
        if (chunk_size(p + i, (size_t)(e - (p + i)), &r->left) != 0)
          return finish(r, -1);
        i = (size_t)(e - p) + 2;
        r->state = r->left == 0 ? R_TRAILER : R_CHUNK_DATA;
        break;
      case R_CHUNK_DATA:
        i += skip(r, p + i, n - i);
        if (r->left > 0) {
          *used = i;
          return 0;
        }
        r->state = R_CHUNK_END;
        break;
      case R_CHUNK_END:
        if (n - i < 2) return 0;
        if (p[i] != '\r' || p[i + 1] != '\n') return finish(r, -1);
        i += 2;
        r->state = R_CHUNK_SIZE;
        break;
      case R_TRAILER:
        rc = line_end(p + i, n - i, &e);
        if (rc <= 0) return rc < 0 ? finish(r, -1) : 0;
        if (e == p + i) {
          *used = i + 2;
          return finish(r, 1); /* the empty line */
        }
        i = (size_t)(e - p) + 2;
        break;
      case R_DONE: return 1;
      default: return -1; /* R_FAILED */
    }
  }
}
