/* memtable_test.c - the skiplist keeps internal-key order whatever the
 * insertion pattern: ascending runs (the remembered splice), descending
 * runs and random keys interleaved (the splice must be refused and a full
 * search done), several versions of a key, and point reads at a seq.
 * Readers racing the writer find every entry whose add they have seen
 * finish, through the filter, and a memtable filled far past its limit
 * (a saturated filter) still answers right. */
#include "memtable.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bloom.h"
#include "table.h"
#include "test.h"

/* lkv_mem_get with the hash computed here */
static int get(lkv_mem *m, const char *k, uint64_t at, int *type, lkv_buf *v) {
  return lkv_mem_get(m, k, strlen(k), lkv_bloom_hash(k, strlen(k)), at, type,
                     v);
}

/* ---- readers racing the writer -------------------------------------- */

#define RACE_KEYS 200000

typedef struct race {
  lkv_mem *m;
  atomic_int published; /* entries whose add has returned (release) */
  atomic_int misses;    /* published entries a reader did not find */
  atomic_int checks;
} race;

static void race_key(char *k, int i) {
  snprintf(k, 32, "r%09d", i * 7919 % RACE_KEYS);
}

static void *race_reader(void *arg) {
  race *r = arg;
  lkv_buf v = {0};
  char k[32];
  uint64_t x = 88172645463325252ULL;
  int seen;
  do {
    seen = atomic_load_explicit(&r->published, memory_order_acquire);
    if (seen == 0) continue;
    for (int j = 0; j < 64; j++) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      /* mostly the newest entries: the ones a stale filter would lose */
      int i = j & 1 ? seen - 1 - (int)(x % 64 < (uint64_t)seen ? x % 64 : 0)
                    : (int)(x % (uint64_t)seen);
      int type;
      race_key(k, i);
      if (get(r->m, k, LKV_MAX_SEQ, &type, &v) != LKV_OK || v.len != 4 ||
          memcmp(v.data, k + 6, 4) != 0)
        atomic_fetch_add(&r->misses, 1);
      atomic_fetch_add_explicit(&r->checks, 1, memory_order_relaxed);
    }
  } while (seen < RACE_KEYS);
  lkv_buf_free(&v);
  return NULL;
}

static void test_race(void) {
  race r = {.m = lkv_mem_new(4 << 20)};
  atomic_init(&r.published, 0);
  atomic_init(&r.misses, 0);
  atomic_init(&r.checks, 0);
  pthread_t th[2];
  for (int t = 0; t < 2; t++)
    CHECK(pthread_create(&th[t], NULL, race_reader, &r) == 0);
  char k[32];
  for (int i = 0; i < RACE_KEYS; i++) {
    race_key(k, i);
    CHECK(lkv_mem_add(r.m, (uint64_t)i + 1, LKV_TYPE_VALUE, k, strlen(k), k + 6,
                      4) == LKV_OK);
    atomic_store_explicit(&r.published, i + 1, memory_order_release);
  }
  for (int t = 0; t < 2; t++) pthread_join(th[t], NULL);
  printf("memtable race: %d reads, %d misses\n", atomic_load(&r.checks),
         atomic_load(&r.misses));
  CHECK(atomic_load(&r.misses) == 0);
  CHECK(atomic_load(&r.checks) > 0);
  lkv_mem_unref(r.m);
}

/* The filter is sized by the limit; 20x past it, nearly every bit is set
 * and lookups fall through to the skiplist: slower, never wrong. */
static void test_overfull(void) {
  lkv_mem *m = lkv_mem_new(4096);
  char k[32];
  lkv_buf v = {0};
  int type;
  for (int i = 0; i < 2000; i++) {
    snprintf(k, sizeof k, "o%05d", i);
    CHECK(lkv_mem_add(m, (uint64_t)i + 1, LKV_TYPE_VALUE, k, strlen(k), k, 6) ==
          LKV_OK);
  }
  CHECK(lkv_mem_usage(m) > 20 * 4096);
  for (int i = 0; i < 2000; i++) {
    snprintf(k, sizeof k, "o%05d", i);
    CHECK(get(m, k, LKV_MAX_SEQ, &type, &v) == LKV_OK && v.len == 6 &&
          memcmp(v.data, k, 6) == 0);
    snprintf(k, sizeof k, "p%05d", i);
    CHECK(get(m, k, LKV_MAX_SEQ, &type, &v) == LKV_NOTFOUND);
  }
  lkv_buf_free(&v);
  lkv_mem_unref(m);
}

int main(void) {
  test_race();
  test_overfull();
  lkv_mem *m = lkv_mem_new(4 << 20);
  char k[32];
  uint64_t seq = 1;
  const int n = 3000;
  /* ascending, then descending, then pseudo-random over the same space,
   * each key written once per pass: three versions per key */
  for (int i = 0; i < n; i++, seq++) {
    snprintf(k, sizeof k, "k%06d", i);
    CHECK(lkv_mem_add(m, seq, LKV_TYPE_VALUE, k, strlen(k), "a", 1) == LKV_OK);
  }
  for (int i = n - 1; i >= 0; i--, seq++) {
    snprintf(k, sizeof k, "k%06d", i);
    CHECK(lkv_mem_add(m, seq, LKV_TYPE_VALUE, k, strlen(k), "b", 1) == LKV_OK);
  }
  for (int j = 0; j < n; j++, seq++) {
    int i = (int)(((long long)j * 7919 + 13) % n);
    snprintf(k, sizeof k, "k%06d", i);
    CHECK(lkv_mem_add(m, seq, LKV_TYPE_VALUE, k, strlen(k), "c", 1) == LKV_OK);
  }
  CHECK(lkv_mem_entries(m) == (uint64_t)(3 * n));

  /* a full walk is in internal-key order: keys ascending, versions newest
   * first, and every one of the 3n entries is there */
  lkv_iiter *it = lkv_mem_iter(m);
  int count = 0, bad = 0;
  char prev[128];
  size_t prevn = 0;
  for (it->ops->seek_first(it); it->ops->valid(it); it->ops->next(it)) {
    lkv_slice key = it->ops->key(it);
    if (count > 0) {
      lkv_slice p = {prev, prevn};
      if (lkv_icmp(p, key) >= 0) bad++;
    }
    memcpy(prev, key.p, key.n);
    prevn = key.n;
    count++;
  }
  CHECK(count == 3 * n);
  CHECK(bad == 0);
  it->ops->destroy(it);

  /* reads at a seq see the pass that was current then */
  lkv_buf v = {0};
  int type;
  for (int i = 0; i < n; i += 37) {
    snprintf(k, sizeof k, "k%06d", i);
    CHECK(get(m, k, LKV_MAX_SEQ, &type, &v) == LKV_OK && v.len == 1 &&
          v.data[0] == 'c');
    CHECK(get(m, k, (uint64_t)n, &type, &v) == LKV_OK && v.data[0] == 'a');
    CHECK(get(m, k, (uint64_t)(2 * n), &type, &v) == LKV_OK &&
          v.data[0] == 'b');
  }
  CHECK(get(m, "k999999", LKV_MAX_SEQ, &type, &v) == LKV_NOTFOUND);
  /* the filter lkv_mem_get asks first: it passes every key added and
   * turns away nearly every other one (3k keys in a 128 KiB filter) */
  int held = 0, absent_passed = 0;
  for (int i = 0; i < n; i++) {
    snprintf(k, sizeof k, "k%06d", i);
    held += lkv_mem_may_hold(m, lkv_bloom_hash(k, strlen(k)));
    snprintf(k, sizeof k, "absent%06d", i);
    absent_passed += lkv_mem_may_hold(m, lkv_bloom_hash(k, strlen(k)));
  }
  CHECK(held == n);
  CHECK(absent_passed < n / 100);
  CHECK(get(m, "k000001", 0, &type, &v) == LKV_NOTFOUND);
  lkv_buf_free(&v);
  lkv_mem_unref(m);
  TEST_MAIN_END();
}
