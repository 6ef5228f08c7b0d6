/* fuzz_http.c - libFuzzer target: the node's HTTP request parser
 * (c/net/hparse.c) over arbitrary bytes. The head parser, under several
 * max_head bounds, either asks for more, refuses with a reason, or
 * describes a head lying inside the input; a prefix of the input never
 * gets a verdict the whole does not get, and the kept-offset scan agrees
 * with a fresh one however the input arrives. The chunked decoder, run on
 * what follows a parsed head (else the whole input), gives the same
 * verdict, data and end in one call, in place, and in random pieces. */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "hparse.h"

/* A small generator seeded by the input, so a run is reproducible. */
static uint64_t rng_next(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

static uint64_t seed_of(const uint8_t *d, size_t n) {
  uint64_t h = 1469598103934665603ull;
  size_t i;
  for (i = 0; i < n; i++) h = (h ^ d[i]) * 1099511628211ull;
  return h | 1;
}

static int is_status(int rc) {
  return rc == 400 || rc == 413 || rc == 431 || rc == 501 || rc == 505;
}

static int inside(const char *p, size_t len, const char *buf, size_t n) {
  return p >= buf && len <= n && (size_t)(p - buf) <= n - len;
}

/* lkvnet_hhead_find by field i's name finds the first field of that name,
 * in any case. */
static void check_find(const lkvnet_hhead *h, size_t i) {
  static char name[65536 + 1];
  const lkvnet_hfield *f = &h->fields[i];
  const char *v;
  size_t j, k, vn = 0;
  if (f->name_len >= sizeof name) return;
  for (k = 0; k < f->name_len; k++) /* flip the case of letters */
    name[k] = (char)(isalpha((unsigned char)f->name[k]) ? f->name[k] ^ 0x20
                                                        : f->name[k]);
  name[k] = '\0';
  v = lkvnet_hhead_find(h, name, &vn);
  for (j = 0; j <= i; j++)
    if (h->fields[j].name_len == f->name_len &&
        strncasecmp(h->fields[j].name, f->name, f->name_len) == 0)
      break;
  if (v != h->fields[j].value || vn != h->fields[j].value_len) abort();
}

static void check_head(const char *buf, size_t n, size_t max, int rc,
                       const lkvnet_hhead *h, const char *why) {
  size_t i;
  if (rc == 0) return;
  if (rc != 1) {
    if (!is_status(rc) || rc == 413 || why == NULL || why[0] == '\0') abort();
    if (strcmp(lkvnet_http_reason(rc), "Unknown") == 0) abort();
    return;
  }
  if (h->head_len < 4 || h->head_len > n || h->head_len > max) abort();
  if (memcmp(buf + h->head_len - 4, "\r\n\r\n", 4) != 0) abort();
  if (h->method < LKVNET_HTTP_GET || h->method > LKVNET_HTTP_OTHER) abort();
  if (h->method_len == 0 || h->target_len == 0) abort();
  if (!inside(h->method_str, h->method_len, buf, h->head_len)) abort();
  if (!inside(h->target, h->target_len, buf, h->head_len)) abort();
  if (memchr(h->target, ' ', h->target_len)) abort();
  if (h->minor != 0 && h->minor != 1) abort();
  if (h->nfields > LKVNET_HTTP_MAX_HEADERS) abort();
  if (h->chunked && h->has_length) abort();
  if (h->minor == 0 && (h->chunked || h->expect_continue)) abort();
  if (!h->has_length && h->content_length != 0) abort();
  if (h->content_length > (uint64_t)INT64_MAX) abort();
  if ((h->keep_alive | h->chunked | h->has_length | h->expect_continue) > 1)
    abort();
  for (i = 0; i < h->nfields; i++) {
    const lkvnet_hfield *f = &h->fields[i];
    size_t k;
    if (f->name_len == 0) abort();
    if (!inside(f->name, f->name_len, buf, h->head_len)) abort();
    if (!inside(f->value, f->value_len, buf, h->head_len)) abort();
    if (f->value < f->name + f->name_len + 1) abort();
    if (f->name[f->name_len] != ':') abort();
    for (k = 0; k < f->value_len; k++)
      if (f->value[k] == '\r' || f->value[k] == '\n' || f->value[k] == 0)
        abort();
    if (f->value_len && (f->value[0] == ' ' || f->value[0] == '\t' ||
                         f->value[f->value_len - 1] == ' ' ||
                         f->value[f->value_len - 1] == '\t'))
      abort();
    check_find(h, i);
  }
}

static void fuzz_head(const char *buf, size_t n, uint64_t *rng) {
  static const size_t maxes[] = {0, 1, 16, 64, 1024, 65536, SIZE_MAX};
  size_t m;
  for (m = 0; m < sizeof maxes / sizeof maxes[0]; m++) {
    size_t max = maxes[m], scan = 0, k, have;
    lkvnet_hhead h, h2;
    const char *why = NULL, *why2 = NULL;
    int rc = lkvnet_hparse_head(buf, n, max, &h, &why), r;
    check_head(buf, n, max, rc, &h, why);
    /* the scan agrees with the parse */
    r = lkvnet_hparse_scan(buf, n, max, &scan, &why2);
    if (r == 0 && rc != 0) abort();
    if (r != 0 && r != 1 && r != rc) abort();
    if (r == 1 && (rc == 0 || (rc == 1 && scan != h.head_len))) abort();
    if (rc == 1) {
      /* the head alone parses the same; one byte less is not a head */
      if (lkvnet_hparse_head(buf, h.head_len, max, &h2, &why2) != 1 ||
          h2.head_len != h.head_len || h2.nfields != h.nfields ||
          h2.content_length != h.content_length)
        abort();
      if (lkvnet_hparse_head(buf, h.head_len - 1, max, &h2, &why2) != 0)
        abort();
    }
    /* a prefix gets no verdict but the whole's */
    k = n ? (size_t)(rng_next(rng) % (n + 1)) : 0;
    r = lkvnet_hparse_head(buf, k, max, &h2, &why2);
    if (r != 0 && r != rc) abort();
    if (r == 1 && h2.head_len != h.head_len) abort();
    /* arriving in pieces, the kept scan answers as a fresh one */
    scan = 0;
    for (have = 0; have < n;) {
      size_t fresh = 0;
      int a, b;
      have += 1 + (size_t)(rng_next(rng) % 64);
      if (have > n) have = n;
      a = lkvnet_hparse_scan(buf, have, max, &scan, &why2);
      b = lkvnet_hparse_scan(buf, have, max, &fresh, &why2);
      if (a != b || (a == 1 && scan != fresh)) abort();
      if (a != 0) break;
    }
  }
}

/* The body's decoding in pieces of random sizes, in place in one buffer
 * as the server does it: the status, the data in buf[0 .. *olen), the
 * input used in *used. */
static int chunk_pieces(const char *body, size_t n, uint64_t max_body,
                        uint64_t *rng, char *buf, size_t *olen, size_t *used) {
  lkvnet_hchunk c;
  size_t in = 0, o = 0;
  const char *why = NULL;
  int rc = 0;
  lkvnet_hchunk_init(&c);
  memcpy(buf, body, n);
  while (rc == 0 && in < n) {
    size_t k = 1 + (size_t)(rng_next(rng) % (n - in)), u = 0, p = 0;
    if (rng_next(rng) & 1) k = 1 + k % 8; /* often small */
    if (k > n - in) k = n - in;
    rc = lkvnet_hchunk_feed(&c, buf + in, k, buf + o, &u, &p, max_body, &why);
    if (p > u || u > k || (rc == 0 && u != k)) abort();
    if (rc != 0 && rc != 1 && (!is_status(rc) || why == NULL)) abort();
    o += p;
    in += u;
  }
  *olen = o;
  *used = in;
  return rc;
}

static void fuzz_chunked(const char *body, size_t n, uint64_t *rng) {
  lkvnet_hchunk c;
  const char *why = NULL;
  size_t used, prod, u2, p2, olen, oused;
  char *out = malloc(n ? n : 1), *copy = malloc(n ? n : 1);
  int rc, r;
  if (out == NULL || copy == NULL) abort();
  /* whole, out of place */
  lkvnet_hchunk_init(&c);
  rc = lkvnet_hchunk_feed(&c, body, n, out, &used, &prod, UINT64_MAX, &why);
  if (prod > used || used > n || (rc == 0 && used != n)) abort();
  if (rc != 0 && rc != 1 && (rc != 400 || why == NULL)) abort();
  if (rc == 400) {
    /* refused: refused again, nothing taken */
    const char *first = why;
    if (lkvnet_hchunk_feed(&c, body, n, out, &u2, &p2, UINT64_MAX, &why) !=
            400 ||
        u2 != 0 || p2 != 0 || why != first)
      abort();
  }
  if (rc == 1) {
    /* finished: nothing more is taken */
    if (lkvnet_hchunk_feed(&c, body, n, out, &u2, &p2, UINT64_MAX, &why) != 1 ||
        u2 != 0 || p2 != 0)
      abort();
    if (used < 5 || memcmp(body + used - 2, "\r\n", 2) != 0) abort();
  }
  /* whole, in place */
  memcpy(copy, body, n);
  lkvnet_hchunk_init(&c);
  r = lkvnet_hchunk_feed(&c, copy, n, copy, &u2, &p2, UINT64_MAX, &why);
  if (r != rc || u2 != used || p2 != prod || memcmp(copy, out, prod) != 0)
    abort();
  /* in pieces, in place */
  r = chunk_pieces(body, n, UINT64_MAX, rng, copy, &olen, &oused);
  if (r != rc || oused != used || olen != prod || memcmp(copy, out, prod) != 0)
    abort();
  /* a max_body the data exceeds is 413 at the same data; one it fits in
   * changes nothing */
  if (prod > 0) {
    uint64_t max = (uint64_t)(rng_next(rng) % prod);
    r = chunk_pieces(body, n, max, rng, copy, &olen, &oused);
    if (r != 413 || olen > max || memcmp(copy, out, olen) != 0) abort();
  }
  if (rc == 1) {
    r = chunk_pieces(body, n, prod, rng, copy, &olen, &oused);
    if (r != 1 || oused != used || olen != prod) abort();
  }
  free(out);
  free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
  const char *buf = (const char *)data;
  uint64_t rng = seed_of(data, n);
  lkvnet_hhead h;
  const char *why;
  size_t start = 0;
  fuzz_head(buf, n, &rng);
  if (lkvnet_hparse_head(buf, n, 65536, &h, &why) == 1) start = h.head_len;
  fuzz_chunked(buf + start, n - start, &rng);
  return 0;
}
