/* fuzz_httpresp.c - libFuzzer target: the load generator's reader of
 * HTTP/1.x answers (httpresp.h) over arbitrary bytes, fed as a socket
 * would hand them over: whole, cut at points drawn from a hash of the
 * input, every k-th byte, and one byte at a time, what is not consumed
 * fed again in front of the next bytes (as loadgen.c does). Every way
 * must give the same verdict (complete, more to come, malformed), status,
 * framing, kept text and end of the answer; each call keeps to what the
 * header promises (used <= n; with 0, a rest of at most MAX_HEAD bytes;
 * an answer done or refused takes no more bytes). Each piece sits in a
 * buffer of its exact size, so ASan sees any read past it. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "httpresp.h"

/* Byte by byte costs a scan of the rest per byte: past this many bytes,
 * the input is cut every few bytes instead. */
#define BYTEWISE_MAX 8192

typedef struct Verdict {
  int rc;          /* the last feed's: 1, 0 or -1 */
  int status;      /* from here on, only when rc >= 0 */
  int close_after; /* r.close_after */
  int at_close;    /* lkvnet_httpresp_ends_at_close */
  uint64_t left;   /* r.left: body or chunk bytes still to come */
  size_t end;      /* rc 1: the offset where the answer ends */
  size_t text_len;
  char text[LKVNET_HTTPRESP_TEXT + 1];
} Verdict;

/* One call, the bytes in a buffer of their exact size. */
static int feed(lkvnet_httpresp *r, const char *p, size_t n, size_t *used) {
  char *b = malloc(n ? n : 1);
  int rc;
  if (b == NULL) abort();
  if (n) memcpy(b, p, n);
  *used = (size_t)-1;
  rc = lkvnet_httpresp_feed(r, b, n, used);
  free(b);
  if (rc < -1 || rc > 1 || *used > n) abort();
  if (rc == 0 && n - *used > LKVNET_HTTPRESP_MAX_HEAD) abort();
  return rc;
}

static uint64_t next_rand(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

/* Feed data[0 .. n) in pieces: mode 0 whole, 1 byte by byte, 2 every k
 * bytes, 3 at random points seeded by h. */
static Verdict run(const char *data, size_t n, int want_text, int mode,
                   size_t k, uint64_t h) {
  lkvnet_httpresp r;
  Verdict v;
  size_t pos = 0, start = 0, used = 0; /* data[start .. pos): not consumed */
  memset(&v, 0, sizeof v);
  lkvnet_httpresp_start(&r, want_text);
  if (h == 0) h = 0x9e3779b97f4a7c15u;
  do {
    size_t step = n - pos;
    if (mode == 1) step = 1;
    if (mode == 2) step = k;
    if (mode == 3) step = (size_t)(next_rand(&h) % 64) + 1;
    if (step > n - pos) step = n - pos;
    pos += step;
    v.rc = feed(&r, data + start, pos - start, &used);
    start += used;
  } while (v.rc == 0 && pos < n);
  if (v.rc != 0) {
    /* done or refused: the reader takes nothing more, and says so again */
    size_t u;
    if (feed(&r, data + start, n - start, &u) != v.rc || u != 0) abort();
  }
  if (v.rc < 0) return v;
  v.end = v.rc == 1 ? start : 0;
  v.status = r.status;
  v.close_after = r.close_after;
  v.at_close = lkvnet_httpresp_ends_at_close(&r);
  v.left = r.left;
  /* the kept text is body bytes: no more than came, nor than fit, and
   * only for an answer past 2xx that the caller asked it of */
  if (r.text_len > LKVNET_HTTPRESP_TEXT || r.text_len > n) abort();
  if (r.text_len > 0 && (!want_text || (r.status >= 200 && r.status < 300)))
    abort();
  v.text_len = r.text_len;
  memcpy(v.text, r.text, r.text_len);
  return v;
}

static void same(const Verdict *a, const Verdict *b) {
  if (a->rc != b->rc) abort();
  if (a->rc < 0) return;
  if (a->status != b->status || a->close_after != b->close_after ||
      a->at_close != b->at_close || a->left != b->left || a->end != b->end ||
      a->text_len != b->text_len || memcmp(a->text, b->text, a->text_len) != 0)
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
  const char *p = (const char *)data;
  uint64_t h = 1469598103934665603u; /* FNV-1a: split points follow the input */
  size_t i;
  for (i = 0; i < n; i++) h = (h ^ data[i]) * 1099511628211u;
  Verdict whole = run(p, n, 1, 0, 0, 0);
  Verdict plain = run(p, n, 0, 0, 0, 0); /* no text asked: none kept */
  if (plain.rc != whole.rc || plain.text_len != 0) abort();
  if (plain.rc >= 0 && plain.status != whole.status) abort();
  if (n <= BYTEWISE_MAX) {
    Verdict v = run(p, n, 1, 1, 0, 0);
    same(&whole, &v);
  }
  Verdict every = run(p, n, 1, 2, (size_t)(h % 13) + 2 + n / BYTEWISE_MAX, 0);
  same(&whole, &every);
  for (i = 0; i < 3; i++) {
    Verdict v = run(p, n, 1, 3, 0, h + i);
    same(&whole, &v);
  }
  return 0;
}
