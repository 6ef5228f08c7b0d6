/* block_test.c - blocks: round trips at several restart intervals, seeks,
 * long and binary keys, and corrupt or truncated blocks, which must fail
 * with LKV_CORRUPTION and never read outside the block (run under ASan). */
#include "block.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "table.h"
#include "test.h"

typedef struct entry {
  char key[400];
  size_t klen;
  char val[64];
  size_t vlen;
} entry;

/* User key i: printable, binary with zero bytes, or long (past the
 * cursor's inline key buffer); tags count down so versions sort newest
 * first. Generated in increasing internal-key order. */
static void make_entries(entry *e, int n) {
  for (int i = 0; i < n; i++) {
    int u = i / 2; /* two versions per user key */
    size_t kl;
    if (u % 7 == 3) {
      kl = (size_t)snprintf(e[i].key, sizeof e[i].key, "k%06d", u);
      memset(e[i].key + kl, 'x', 300);
      kl += 300;
    } else {
      kl = (size_t)snprintf(e[i].key, sizeof e[i].key, "k%06d", u);
      if (u % 5 == 1) {
        memcpy(e[i].key + kl, "\0\0\x01", 3);
        kl += 3;
      }
    }
    uint64_t seq = (uint64_t)(n - i) * 10;
    lkv_put64(e[i].key + kl,
              lkv_tag(seq, (i % 3 == 0) ? LKV_TYPE_DELETE : LKV_TYPE_VALUE));
    e[i].klen = kl + 8;
    e[i].vlen = (size_t)(i % 4 == 0 ? 0 : snprintf(e[i].val, 64, "v%d", i));
  }
}

static lkv_slice key_of(const entry *e) {
  lkv_slice s = {e->key, e->klen};
  return s;
}

static int eq(lkv_slice a, const char *p, size_t n) {
  return a.n == n && (n == 0 || memcmp(a.p, p, n) == 0);
}

static void build(lkv_block_builder *bb, const entry *e, int n,
                  lkv_slice *out) {
  for (int i = 0; i < n; i++) {
    lkv_slice v = {e[i].val, e[i].vlen};
    CHECK(lkv_block_builder_add(bb, key_of(&e[i]), v) == LKV_OK);
  }
  size_t est = lkv_block_builder_size(bb);
  CHECK(lkv_block_builder_finish(bb, out) == LKV_OK);
  CHECK(out->n == est);
}

static void test_roundtrip(int interval, int n) {
  entry *e = calloc((size_t)n, sizeof *e);
  make_entries(e, n);
  lkv_block_builder bb;
  lkv_block_builder_init(&bb, interval);
  lkv_slice raw;
  build(&bb, e, n, &raw);
  CHECK(bb.nrestarts == (size_t)((n + interval - 1) / interval));
  lkv_block b;
  const char *why;
  CHECK(lkv_block_parse(&b, raw.p, raw.n, &why) == LKV_OK);

  lkv_iiter *it = lkv_block_iter_new(&b, "t.sst", 0);
  int i = 0;
  for (it->ops->seek_first(it); it->ops->valid(it); it->ops->next(it), i++) {
    CHECK(i < n);
    if (i >= n) break;
    CHECK(eq(it->ops->key(it), e[i].key, e[i].klen));
    CHECK(eq(it->ops->value(it), e[i].val, e[i].vlen));
  }
  CHECK(i == n);
  CHECK(it->ops->status(it, NULL) == LKV_OK);

  /* Backward: the same entries in reverse, and prev from every position
   * (restart points and between them) lands on the entry before. */
  i = n - 1;
  for (it->ops->seek_last(it); it->ops->valid(it); it->ops->prev(it), i--) {
    CHECK(i >= 0);
    if (i < 0) break;
    CHECK(eq(it->ops->key(it), e[i].key, e[i].klen));
    CHECK(eq(it->ops->value(it), e[i].val, e[i].vlen));
  }
  CHECK(i == -1);
  CHECK(it->ops->status(it, NULL) == LKV_OK);
  for (i = 0; i < n; i++) {
    it->ops->seek(it, key_of(&e[i]));
    it->ops->prev(it);
    if (i == 0) {
      CHECK(!it->ops->valid(it));
    } else {
      CHECK(it->ops->valid(it) &&
            eq(it->ops->key(it), e[i - 1].key, e[i - 1].klen));
      it->ops->next(it); /* and forward again */
      CHECK(it->ops->valid(it) && eq(it->ops->key(it), e[i].key, e[i].klen));
    }
  }

  /* Seek to every key, and to a key just before each (same user key, a
   * newer tag): both land on entry i. */
  for (i = 0; i < n; i++) {
    it->ops->seek(it, key_of(&e[i]));
    CHECK(it->ops->valid(it) && eq(it->ops->key(it), e[i].key, e[i].klen));
    char t[400];
    memcpy(t, e[i].key, e[i].klen);
    uint64_t tag = lkv_get64(t + e[i].klen - 8);
    lkv_put64(t + e[i].klen - 8, tag + 1);
    lkv_slice ts = {t, e[i].klen};
    it->ops->seek(it, ts);
    CHECK(it->ops->valid(it) && eq(it->ops->key(it), e[i].key, e[i].klen));
    /* one past: the next entry, or the end */
    lkv_put64(t + e[i].klen - 8, tag - 1);
    it->ops->seek(it, ts);
    if (i + 1 < n)
      CHECK(it->ops->valid(it) &&
            eq(it->ops->key(it), e[i + 1].key, e[i + 1].klen));
    else
      CHECK(!it->ops->valid(it));
  }
  /* before everything, after everything */
  char lo[9] = "\0", hi[12] = "\xff\xff\xff";
  lkv_put64(lo + 1, lkv_tag(LKV_MAX_SEQ, LKV_TYPE_SEEK));
  lkv_put64(hi + 3, 0);
  lkv_slice los = {lo, 9}, his = {hi, 11};
  it->ops->seek(it, los);
  CHECK(it->ops->valid(it) && eq(it->ops->key(it), e[0].key, e[0].klen));
  it->ops->seek(it, his);
  CHECK(!it->ops->valid(it));
  CHECK(it->ops->status(it, NULL) == LKV_OK);
  it->ops->destroy(it);

  /* The builder is reusable after reset, and keeps the last key. */
  lkv_block_builder_reset(&bb);
  CHECK(
      eq((lkv_slice){bb.last.data, bb.last.len}, e[n - 1].key, e[n - 1].klen));
  CHECK(lkv_block_builder_size(&bb) == 4);
  lkv_block_builder_free(&bb);
  free(e);
}

static void test_empty(void) {
  lkv_block_builder bb;
  lkv_block_builder_init(&bb, 16);
  lkv_slice raw;
  CHECK(lkv_block_builder_finish(&bb, &raw) == LKV_OK);
  CHECK(raw.n == 4);
  lkv_block b;
  const char *why;
  CHECK(lkv_block_parse(&b, raw.p, raw.n, &why) == LKV_OK);
  lkv_iiter *it = lkv_block_iter_new(&b, NULL, 0);
  it->ops->seek_first(it);
  CHECK(!it->ops->valid(it));
  char k[8] = {0};
  lkv_slice ks = {k, 8};
  it->ops->seek(it, ks);
  CHECK(!it->ops->valid(it));
  it->ops->seek_last(it);
  CHECK(!it->ops->valid(it));
  CHECK(it->ops->status(it, NULL) == LKV_OK);
  it->ops->destroy(it);
  lkv_block_builder_free(&bb);
}

/* Walk and seek a (possibly damaged) block. Returns the status; with a
 * sanitizer any stray read shows up here. */
static int exercise(const char *p, size_t n, const entry *e, int ne,
                    int *entries_seen) {
  lkv_block b;
  const char *why;
  *entries_seen = 0;
  if (lkv_block_parse(&b, p, n, &why) != LKV_OK) return LKV_CORRUPTION;
  /* seeks first, on their own cursor: after a failed walk a cursor stops,
   * so seeking only after the walk would leave a seek's linear scan
   * untried on bytes a walk rejects */
  lkv_iiter *it = lkv_block_iter_new(&b, "000007.sst", 4096);
  for (int i = 0; i < ne; i += 3) {
    it->ops->seek(it, key_of(&e[i]));
    if (it->ops->valid(it)) CHECK(it->ops->key(it).n >= 8);
    if (it->ops->status(it, NULL) != LKV_OK) break;
  }
  int rc0 = it->ops->status(it, NULL);
  CHECK(rc0 == LKV_OK || rc0 == LKV_CORRUPTION);
  it->ops->destroy(it);
  it = lkv_block_iter_new(&b, "000007.sst", 4096);
  for (it->ops->seek_first(it); it->ops->valid(it); it->ops->next(it)) {
    lkv_slice k = it->ops->key(it), v = it->ops->value(it);
    CHECK(k.n >= 8);
    volatile char sink = 0;
    for (size_t j = 0; j < k.n; j++) sink ^= k.p[j];
    for (size_t j = 0; j < v.n; j++) sink ^= v.p[j];
    (void)sink;
    (*entries_seen)++;
  }
  int rc = it->ops->status(it, NULL);
  for (int i = 0; i < ne; i += 7) {
    it->ops->seek(it, key_of(&e[i]));
    if (it->ops->valid(it)) CHECK(it->ops->key(it).n >= 8);
  }
  lkv_err err;
  memset(&err, 0, sizeof err);
  int rc2 = it->ops->status(it, &err);
  it->ops->destroy(it);
  /* backward over the same bytes, on a fresh iterator */
  it = lkv_block_iter_new(&b, "000007.sst", 4096);
  int back = 0;
  for (it->ops->seek_last(it); it->ops->valid(it) && back <= ne;
       it->ops->prev(it)) {
    CHECK(it->ops->key(it).n >= 8);
    back++;
  }
  CHECK(back <= ne + 1);
  lkv_err err3;
  memset(&err3, 0, sizeof err3);
  int rc3 = it->ops->status(it, &err3);
  if (rc3 != LKV_OK) {
    CHECK(rc3 == LKV_CORRUPTION);
    CHECK(strstr(err3.msg, "offset 4096") != NULL);
  }
  if (rc2 != LKV_OK) {
    CHECK(rc2 == LKV_CORRUPTION);
    CHECK(strstr(err.msg, "corrupt") != NULL);
    CHECK(strstr(err.msg, "000007.sst") != NULL);
    CHECK(strstr(err.msg, "offset 4096") != NULL);
  }
  it->ops->destroy(it);
  return rc ? rc : rc2;
}

static void test_corruption(void) {
  const int n = 120;
  entry *e = calloc(n, sizeof *e);
  make_entries(e, n);
  lkv_block_builder bb;
  lkv_block_builder_init(&bb, 4);
  lkv_slice raw;
  build(&bb, e, n, &raw);
  /* Each damaged copy gets its own exact-size heap buffer, so ASan flags
   * a read one byte past the block. */
  int detected = 0, seen;
  for (size_t pos = 0; pos < raw.n; pos++) {
    for (int bit = 0; bit < 8; bit += 3) {
      char *p = malloc(raw.n);
      memcpy(p, raw.p, raw.n);
      p[pos] ^= (char)(1 << bit);
      if (exercise(p, raw.n, e, n, &seen) == LKV_CORRUPTION) detected++;
      free(p);
    }
  }
  printf(
      "block: %d of %zu single-bit flips detected by decoding alone "
      "(the rest is the table's checksum's job)\n",
      detected, raw.n * 3);
  /* every truncation */
  for (size_t len = 0; len < raw.n; len++) {
    char *p = malloc(len ? len : 1);
    memcpy(p, raw.p, len);
    int rc = exercise(p, len, e, n, &seen);
    CHECK(rc == LKV_OK || rc == LKV_CORRUPTION);
    free(p);
  }
  /* random garbage */
  uint64_t x = 88172645463325252ULL;
  for (int round = 0; round < 3000; round++) {
    size_t len = (size_t)(round % 300);
    char *p = malloc(len ? len : 1);
    for (size_t j = 0; j < len; j++) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      p[j] = (char)x;
    }
    /* a plausible trailer half the time, so decoding gets going */
    if (len >= 8 && round % 2)
      lkv_put32(p + len - 4, 1), lkv_put32(p + len - 8, 0);
    int rc = exercise(p, len, e, n, &seen);
    CHECK(rc == LKV_OK || rc == LKV_CORRUPTION);
    free(p);
  }
  lkv_block_builder_free(&bb);
  free(e);
}

static void test_parse_errors(void) {
  lkv_block b;
  const char *why = NULL;
  char p[16] = {0};
  CHECK(lkv_block_parse(&b, p, 3, &why) == LKV_CORRUPTION && why);
  lkv_put32(p + 4, 5); /* 5 restarts cannot fit in 8 bytes */
  CHECK(lkv_block_parse(&b, p, 8, &why) == LKV_CORRUPTION);
  lkv_put32(p + 4, 0); /* entries but no restart */
  CHECK(lkv_block_parse(&b, p, 8, &why) == LKV_CORRUPTION);
  lkv_put32(p + 4, 1);
  lkv_put32(p, 0); /* one restart at 0, no entries: the restart is bad */
  CHECK(lkv_block_parse(&b, p, 8, &why) == LKV_OK);
  lkv_block_cursor c;
  lkv_block_cursor_init(&c, &b);
  lkv_block_cursor_seek_first(&c);
  CHECK(!c.valid && c.code == LKV_CORRUPTION);
  lkv_block_cursor_free(&c);
}

/* ---- seek against a walk ------------------------------------------- */

static uint64_t rng = 0x9E3779B97F4A7C15ULL;
static uint64_t rnd(void) {
  rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
  return rng;
}

static int cmp_entry(const void *a, const void *b) {
  const entry *x = a, *y = b;
  lkv_slice kx = {x->key, x->klen}, ky = {y->key, y->klen};
  return lkv_icmp(kx, ky);
}

/* Where a seek must land: the first entry >= target, found by stepping
 * from the first entry (next() decodes with decode_at only). */
static void walk_to(lkv_block_cursor *c, lkv_slice target) {
  for (lkv_block_cursor_seek_first(c); c->valid; lkv_block_cursor_next(c)) {
    lkv_slice k = {c->key, c->klen};
    if (lkv_icmp(k, target) >= 0) break;
  }
}

/* The seek's fast linear scan (scan_fast) and its hand-backs to decode_at
 * must leave the cursor exactly where and as the plain walk does: random
 * blocks (shared prefixes short and long, keys past the inline buffer,
 * several versions of a key, empty values), every restart interval from
 * 1 to 32, targets at, between, before and after the keys. */
static void test_seek_matches_walk(void) {
  enum { N = 120 };
  static entry e[N];
  /* zero bytes and bytes >= 0x80 too (keys compare as unsigned bytes) */
  static const char alpha[5] = {'a', 'a', 'b', 0, (char)0xc8};
  int mismatches = 0, seeks = 0;
  for (int round = 0; round < 64; round++) {
    int n = 1 + (int)(rnd() % N);
    for (int i = 0; i < n; i++) {
      /* a long shared stem on most keys, so shared lengths vary */
      size_t ul = rnd() % 8 == 0 ? 200 + rnd() % 180 : 1 + rnd() % 40;
      for (size_t j = 0; j < ul; j++)
        e[i].key[j] = j < ul / 2 && rnd() % 4 ? 'k' : alpha[rnd() % 5];
      if (i > 0 && rnd() % 3 == 0) { /* another version of a key */
        ul = e[i - 1].klen - 8;
        memcpy(e[i].key, e[i - 1].key, ul);
      }
      lkv_put64(
          e[i].key + ul,
          lkv_tag(rnd() % 1000, rnd() % 4 ? LKV_TYPE_VALUE : LKV_TYPE_DELETE));
      e[i].klen = ul + 8;
      e[i].vlen = rnd() % 3 ? rnd() % 64 : 0;
      memset(e[i].val, 'v', e[i].vlen);
    }
    qsort(e, (size_t)n, sizeof e[0], cmp_entry);
    int m = 0; /* drop exact duplicates: a block holds each key once */
    for (int i = 0; i < n; i++)
      if (m == 0 || cmp_entry(&e[m - 1], &e[i]) != 0) e[m++] = e[i];
    n = m;
    lkv_block_builder bb;
    lkv_block_builder_init(&bb, 1 + round % 32);
    lkv_slice raw;
    build(&bb, e, n, &raw);
    lkv_block b;
    const char *why;
    CHECK(lkv_block_parse(&b, raw.p, raw.n, &why) == LKV_OK);
    lkv_block_cursor c, w;
    lkv_block_cursor_init(&c, &b);
    lkv_block_cursor_init(&w, &b);
    for (int i = 0; i < 4 * n + 2; i++) {
      char t[400];
      size_t tl;
      if (i < n) { /* each key */
        memcpy(t, e[i].key, tl = e[i].klen);
      } else if (i < 2 * n) { /* its user key at another seq */
        const entry *x = &e[i - n];
        memcpy(t, x->key, tl = x->klen);
        lkv_put64(t + tl - 8, lkv_tag(rnd() % 1000, LKV_TYPE_SEEK));
      } else if (i < 4 * n) { /* a user key a byte longer or cut short */
        const entry *x = &e[(i - 2 * n) / 2];
        size_t ul = x->klen - 8;
        memcpy(t, x->key, ul);
        if (i % 2)
          t[ul++] = (char)(rnd() % 256);
        else if (ul > 0)
          ul--;
        lkv_put64(t + ul, lkv_tag(LKV_MAX_SEQ, LKV_TYPE_SEEK));
        tl = ul + 8;
      } else { /* before everything, after everything */
        tl = 8;
        lkv_put64(t, lkv_tag(i % 2 ? 0 : LKV_MAX_SEQ, LKV_TYPE_SEEK));
        if (i % 2) {
          memset(t, 0xff, 300);
          lkv_put64(t + 300, lkv_tag(0, LKV_TYPE_SEEK));
          tl = 308;
        }
      }
      lkv_slice target = {t, tl};
      lkv_block_cursor_seek(&c, target);
      walk_to(&w, target);
      seeks++;
      int same = c.valid == w.valid && c.code == LKV_OK && w.code == LKV_OK;
      if (same && c.valid)
        same = c.klen == w.klen && memcmp(c.key, w.key, c.klen) == 0 &&
               c.val == w.val && c.vlen == w.vlen && c.cur == w.cur &&
               c.next == w.next;
      mismatches += !same;
    }
    lkv_block_cursor_free(&c);
    lkv_block_cursor_free(&w);
    lkv_block_builder_free(&bb);
  }
  printf("block: %d seeks, %d differ from a walk\n", seeks, mismatches);
  CHECK(mismatches == 0);
}

int main(void) {
  test_seek_matches_walk();
  test_roundtrip(1, 1);
  test_roundtrip(1, 200);
  test_roundtrip(2, 201);
  test_roundtrip(16, 1000);
  test_roundtrip(1000, 300);
  test_empty();
  test_parse_errors();
  test_corruption();
  TEST_MAIN_END();
}
