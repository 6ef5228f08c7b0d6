/* bloom_test.c - Bloom filter: sizing, no false negatives, a false-positive
 * rate near 1% at 10 bits per key, and malformed filters. */
#include "bloom.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

static size_t key_of(char *buf, const char *prefix, unsigned i) {
  return (size_t)snprintf(buf, 64, "%s%u", prefix, i);
}

static void test_sizing(void) {
  CHECK(lkv_bloom_k(10, 0) == 7);
  CHECK(lkv_bloom_k(1, 0) == 1);
  CHECK(lkv_bloom_k(100, 0) == 30);
  CHECK(lkv_bloom_k(10, 3) == 3);
  CHECK(lkv_bloom_k(10, 99) == 30);
  /* whole 64-byte blocks (at least one), plus the k byte */
  CHECK(lkv_bloom_filter_size(0, 10, 0) == 65);
  CHECK(lkv_bloom_filter_size(1, 10, 0) == 65);
  CHECK(lkv_bloom_filter_size(100, 10, 0) == 129); /* 1000 bits -> 2 blocks */
  CHECK(lkv_bloom_filter_size(100, 10, 8192) == 1025);
  CHECK(lkv_bloom_filter_size(100, 10, 1025) == 193); /* rounded up */
}

static void test_hash(void) {
  /* The hash is part of the file format: it must never change. */
  CHECK(lkv_bloom_hash("", 0) != lkv_bloom_hash("\0", 1));
  CHECK(lkv_bloom_hash("a", 1) != lkv_bloom_hash("a\0", 2));
  CHECK(lkv_bloom_hash("abcdefgh", 8) != lkv_bloom_hash("abcdefgi", 8));
  CHECK(lkv_bloom_hash("lunakv", 6) == 0x1434640a287312c4ULL);
  CHECK(lkv_bloom_hash("key0000012345678901", 19) == 0x54574ee58b198b21ULL);
}

static void test_rate(int bits_per_key, double max_rate) {
  const unsigned n = 100000;
  uint64_t *h = malloc(n * sizeof *h);
  char k[64];
  for (unsigned i = 0; i < n; i++)
    h[i] = lkv_bloom_hash(k, key_of(k, "key", i));
  size_t sz = lkv_bloom_filter_size(n, bits_per_key, 0);
  char *f = malloc(sz);
  lkv_bloom_build(h, n, bits_per_key, 0, 0, f);
  unsigned fn = 0, fp = 0;
  for (unsigned i = 0; i < n; i++)
    if (!lkv_bloom_may_contain(f, sz, lkv_bloom_hash(k, key_of(k, "key", i))))
      fn++;
  for (unsigned i = 0; i < n; i++)
    if (lkv_bloom_may_contain(f, sz, lkv_bloom_hash(k, key_of(k, "absent", i))))
      fp++;
  double rate = (double)fp / n;
  printf("bloom: %d bits/key: %zu bytes for %u keys, false positives %.3f%%\n",
         bits_per_key, sz, n, rate * 100);
  CHECK(fn == 0);
  CHECK(rate < max_rate);
  free(f);
  free(h);
}

static void test_small_and_empty(void) {
  char f[65];
  size_t sz = lkv_bloom_filter_size(0, 10, 0);
  lkv_bloom_build(NULL, 0, 10, 0, 0, f);
  CHECK(sz == 65);
  CHECK(!lkv_bloom_may_contain(f, sz, lkv_bloom_hash("x", 1)));
  uint64_t h = lkv_bloom_hash("only", 4);
  lkv_bloom_build(&h, 1, 10, 0, 0, f);
  CHECK(lkv_bloom_may_contain(f, sz, h));
  /* bloom_min_bits keeps a tiny table's filter from being all ones */
  const unsigned n = 10;
  uint64_t hs[10];
  char k[64];
  for (unsigned i = 0; i < n; i++) hs[i] = lkv_bloom_hash(k, key_of(k, "k", i));
  size_t big = lkv_bloom_filter_size(n, 10, 1 << 14);
  char *bf = malloc(big);
  lkv_bloom_build(hs, n, 10, 0, 1 << 14, bf);
  unsigned fp = 0;
  for (unsigned i = 0; i < 10000; i++)
    fp += (unsigned)lkv_bloom_may_contain(bf, big,
                                          lkv_bloom_hash(k, key_of(k, "z", i)));
  CHECK(fp < 10);
  for (unsigned i = 0; i < n; i++) CHECK(lkv_bloom_may_contain(bf, big, hs[i]));
  free(bf);
}

static void test_malformed(void) {
  uint64_t h = lkv_bloom_hash("x", 1);
  char f[65];
  memset(f, 0, sizeof f);
  f[64] = 7;
  CHECK(!lkv_bloom_may_contain(f, 65, h)); /* well formed, empty */
  CHECK(lkv_bloom_may_contain(f, 9, h));   /* not whole blocks */
  CHECK(lkv_bloom_may_contain(NULL, 0, h));
  CHECK(lkv_bloom_may_contain(f, 0, h));
  CHECK(lkv_bloom_may_contain(f, 1, h)); /* only a k byte */
  f[64] = 0;
  CHECK(lkv_bloom_may_contain(f, 65, h)); /* k = 0 */
  f[64] = 31;
  CHECK(lkv_bloom_may_contain(f, 65, h)); /* k too large */
  f[64] = (char)0xff;
  CHECK(lkv_bloom_may_contain(f, 65, h));
}

/* The memtable's live filter: no false negatives, and at 8 bits per key
 * (its sizing for the smallest entries) about 2.5% false positives; a
 * filter asked for 0 bytes still has one block. */
static void test_live(void) {
  const unsigned n = 100000;
  lkv_live_bloom f;
  char k[64];
  CHECK(lkv_live_bloom_init(&f, n) == 0); /* 8 bits per key */
  CHECK(f.nblocks == (n + 63) / 64);
  for (unsigned i = 0; i < n; i++)
    lkv_live_bloom_add(&f, lkv_bloom_hash(k, key_of(k, "key", i)));
  unsigned fn = 0, fp = 0;
  for (unsigned i = 0; i < n; i++)
    fn +=
        !lkv_live_bloom_may_contain(&f, lkv_bloom_hash(k, key_of(k, "key", i)));
  for (unsigned i = 0; i < n; i++)
    fp += (unsigned)lkv_live_bloom_may_contain(
        &f, lkv_bloom_hash(k, key_of(k, "absent", i)));
  printf("live bloom: 8 bits/key, false positives %.3f%%\n", 100.0 * fp / n);
  CHECK(fn == 0);
  CHECK(fp < n / 25);
  lkv_live_bloom_free(&f);
  CHECK(f.words == NULL);

  CHECK(lkv_live_bloom_init(&f, 0) == 0);
  CHECK(f.nblocks == 1);
  CHECK(!lkv_live_bloom_may_contain(&f, lkv_bloom_hash("x", 1)));
  lkv_live_bloom_add(&f, lkv_bloom_hash("x", 1));
  CHECK(lkv_live_bloom_may_contain(&f, lkv_bloom_hash("x", 1)));
  lkv_live_bloom_free(&f);
}

int main(void) {
  test_sizing();
  test_live();
  test_hash();
  test_rate(10, 0.015); /* blocked layout: ~1.2% */
  test_rate(16, 0.004);
  test_small_and_empty();
  test_malformed();
  TEST_MAIN_END();
}
