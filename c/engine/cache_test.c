/* cache_test.c - the block cache: hits and misses, eviction by bytes in
 * LRU order, pinning, replacement, erase by file, capacity 0, and many
 * threads at once. Values are counted so every free is accounted for. */
#include "cache.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "test.h"

static atomic_int live; /* values allocated and not yet freed */

static void *val(int id) {
  int *p = malloc(sizeof *p);
  *p = id;
  atomic_fetch_add(&live, 1);
  return p;
}

static void free_val(void *p) {
  atomic_fetch_sub(&live, 1);
  free(p);
}

static int id_of(lkv_cache_handle *h) { return *(int *)lkv_cache_value(h); }

/* Insert and release at once. */
static void put(lkv_cache *c, uint64_t f, uint64_t off, int id, size_t charge) {
  lkv_cache_release(c, lkv_cache_insert(c, f, off, val(id), charge, free_val));
}

static int has(lkv_cache *c, uint64_t f, uint64_t off) {
  lkv_cache_handle *h = lkv_cache_lookup(c, f, off);
  if (h) lkv_cache_release(c, h);
  return h != NULL;
}

static void test_basic(void) {
  lkv_cache *c = lkv_cache_new(1 << 20);
  CHECK(lkv_cache_lookup(c, 1, 0) == NULL);
  lkv_cache_handle *h = lkv_cache_insert(c, 1, 0, val(10), 100, free_val);
  CHECK(h && id_of(h) == 10);
  CHECK(lkv_cache_usage(c) == 100);
  lkv_cache_handle *h2 = lkv_cache_lookup(c, 1, 0);
  CHECK(h2 && id_of(h2) == 10);
  lkv_cache_release(c, h);
  lkv_cache_release(c, h2);
  CHECK(lkv_cache_lookup(c, 1, 4096) == NULL); /* other offset */
  CHECK(lkv_cache_lookup(c, 2, 0) == NULL);    /* other file */
  for (int i = 0; i < 5000; i++)
    put(c, (uint64_t)(i % 3), (uint64_t)i * 4096, i, 10);
  for (int i = 0; i < 5000; i++) {
    h = lkv_cache_lookup(c, (uint64_t)(i % 3), (uint64_t)i * 4096);
    CHECK(h && id_of(h) == i);
    if (h) lkv_cache_release(c, h);
  }
  CHECK(lkv_cache_usage(c) == 100 + 5000 * 10);
  /* replacing: later lookups see the new value, the old one is freed */
  int before = atomic_load(&live);
  put(c, 1, 0, 11, 50);
  CHECK(atomic_load(&live) == before);
  h = lkv_cache_lookup(c, 1, 0);
  CHECK(h && id_of(h) == 11);
  lkv_cache_release(c, h);
  CHECK(lkv_cache_usage(c) == 50 + 5000 * 10);
  lkv_cache_free(c);
  CHECK(atomic_load(&live) == 0);
}

static void test_capacity_zero(void) {
  lkv_cache *c = lkv_cache_new(0);
  lkv_cache_handle *h = lkv_cache_insert(c, 1, 0, val(1), 100, free_val);
  CHECK(h && id_of(h) == 1);
  CHECK(lkv_cache_lookup(c, 1, 0) == NULL);
  CHECK(lkv_cache_usage(c) == 0);
  lkv_cache_release(c, h);
  CHECK(atomic_load(&live) == 0);
  lkv_cache_free(c);
}

/* Keys (file 9, off) sharing one shard with (9, 0), found from behaviour
 * alone: with room for one entry per shard, inserting a key of the same
 * shard pushes (9, 0) out. */
static int same_shard(uint64_t *offs, int want) {
  int n = 0;
  for (uint64_t off = 1; off < 100000 && n < want; off++) {
    lkv_cache *c = lkv_cache_new(16 * 100);
    put(c, 9, 0, 0, 100);
    put(c, 9, off, 1, 100);
    if (!has(c, 9, 0)) offs[n++] = off;
    lkv_cache_free(c);
  }
  return n;
}

static void test_lru_and_bytes(void) {
  uint64_t o[4];
  CHECK(same_shard(o, 4) == 4);
  /* Room for three 100-byte entries per shard. */
  lkv_cache *c = lkv_cache_new(16 * 300);
  put(c, 9, 0, 0, 100);
  put(c, 9, o[0], 1, 100);
  put(c, 9, o[1], 2, 100);
  CHECK(has(c, 9, 0)); /* touch: (9, o[0]) is now the oldest */
  put(c, 9, o[2], 3, 100);
  CHECK(!has(c, 9, o[0]));
  CHECK(has(c, 9, 0) && has(c, 9, o[1]) && has(c, 9, o[2]));
  /* one 250-byte entry pushes out as many as it takes */
  put(c, 9, o[3], 4, 250);
  CHECK(has(c, 9, o[3]));
  CHECK(!has(c, 9, 0) && !has(c, 9, o[1]) && !has(c, 9, o[2]));
  CHECK(lkv_cache_usage(c) == 250);
  CHECK(atomic_load(&live) == 1);
  lkv_cache_free(c);

  /* Over the whole cache: usage never passes capacity. */
  c = lkv_cache_new(64 * 1024);
  for (int i = 0; i < 20000; i++) {
    put(c, (uint64_t)i % 7, (uint64_t)i * 4096, i, 1000 + (size_t)(i % 100));
    CHECK(lkv_cache_usage(c) <= 64 * 1024 + 16);
  }
  CHECK(lkv_cache_usage(c) > 32 * 1024); /* and it is used */
  lkv_cache_free(c);
  CHECK(atomic_load(&live) == 0);
}

static void test_pinning(void) {
  uint64_t o[3];
  CHECK(same_shard(o, 3) == 3);
  lkv_cache *c = lkv_cache_new(16 * 200);
  lkv_cache_handle *pinned = lkv_cache_insert(c, 9, 0, val(0), 150, free_val);
  /* a new entry needs room; the pinned one stays */
  put(c, 9, o[0], 1, 150);
  CHECK(id_of(pinned) == 0);
  lkv_cache_handle *h = lkv_cache_lookup(c, 9, 0);
  CHECK(h == pinned);
  lkv_cache_release(c, h);
  /* pinned entries alone past capacity: both kept while pinned */
  lkv_cache_handle *p2 = lkv_cache_insert(c, 9, o[1], val(2), 150, free_val);
  CHECK(has(c, 9, 0));
  CHECK(lkv_cache_usage(c) >= 300);
  /* on release the shard is over capacity: the released one goes */
  lkv_cache_release(c, pinned);
  CHECK(!has(c, 9, 0));
  CHECK(has(c, 9, o[1]));
  lkv_cache_release(c, p2);
  CHECK(atomic_load(&live) == 1);
  /* an entry bigger than the shard lives only while pinned */
  h = lkv_cache_insert(c, 9, o[2], val(3), 10000, free_val);
  CHECK(id_of(h) == 3 && has(c, 9, o[2]));
  lkv_cache_release(c, h);
  CHECK(!has(c, 9, o[2]));
  /* a replaced entry that is pinned is freed on its release */
  h = lkv_cache_insert(c, 9, 0, val(4), 10, free_val);
  put(c, 9, 0, 5, 10);
  CHECK(id_of(h) == 4);
  lkv_cache_handle *h2 = lkv_cache_lookup(c, 9, 0);
  CHECK(h2 && id_of(h2) == 5);
  lkv_cache_release(c, h2);
  int before = atomic_load(&live);
  lkv_cache_release(c, h);
  CHECK(atomic_load(&live) == before - 1);
  lkv_cache_free(c);
  CHECK(atomic_load(&live) == 0);
}

static void test_erase_file(void) {
  lkv_cache *c = lkv_cache_new(1 << 20);
  for (int i = 0; i < 300; i++) put(c, (uint64_t)(i % 3), (uint64_t)i, i, 10);
  lkv_cache_handle *pinned = lkv_cache_lookup(c, 1, 1);
  CHECK(pinned != NULL);
  lkv_cache_erase_file(c, 1);
  CHECK(lkv_cache_usage(c) == 200 * 10);
  for (int i = 0; i < 300; i++)
    CHECK(has(c, (uint64_t)(i % 3), (uint64_t)i) == (i % 3 != 1));
  CHECK(atomic_load(&live) == 201); /* the pinned one waits for release */
  CHECK(id_of(pinned) == 1);
  lkv_cache_release(c, pinned);
  CHECK(atomic_load(&live) == 200);
  lkv_cache_free(c);
  CHECK(atomic_load(&live) == 0);
}

static lkv_cache *shared;

static void *worker(void *arg) {
  uint64_t x = (uint64_t)(uintptr_t)arg * 0x9e3779b97f4a7c15ULL + 1;
  for (int i = 0; i < 100000; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    uint64_t f = x % 4, off = (x >> 8) % 2000;
    lkv_cache_handle *h = lkv_cache_lookup(shared, f, off);
    if (h == NULL)
      h = lkv_cache_insert(shared, f, off, val((int)(f * 10000 + off)),
                           100 + (x >> 40) % 200, free_val);
    CHECK(id_of(h) == (int)(f * 10000 + off));
    if (i % 997 == 0) lkv_cache_erase_file(shared, (x >> 20) % 4);
    lkv_cache_release(shared, h);
  }
  return NULL;
}

static void test_threads(void) {
  shared = lkv_cache_new(100 * 1000);
  pthread_t th[4];
  for (int i = 0; i < 4; i++)
    pthread_create(&th[i], NULL, worker, (void *)(uintptr_t)(i + 1));
  for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
  CHECK(lkv_cache_usage(shared) <= 100 * 1000 + 16);
  lkv_cache_free(shared);
  CHECK(atomic_load(&live) == 0);
}

static void free_nothing(void *v) { (void)v; }

/* Admission: while a shard has room every block gets in (nothing is
 * evicted). Once the cache is full a block gets in on its second miss, so
 * a one-pass reader (every block missed once) is never admitted, and a
 * block read twice is. */
static void test_admission(void) {
  lkv_cache *c = lkv_cache_new(1 << 20);
  CHECK(lkv_cache_admit(c, 7, 0, 4096) == 1); /* empty: room */
  CHECK(lkv_cache_admit(c, 7, 0, 4096) == 1);
  /* fill every shard past its share (entries of 4 KiB over many keys) */
  static char v;
  for (uint64_t off = 0; off < 2048; off++) {
    lkv_cache_handle *h = lkv_cache_insert(c, 1, off, &v, 4096, free_nothing);
    CHECK(h != NULL);
    lkv_cache_release(c, h);
  }
  CHECK(lkv_cache_usage(c) > (1 << 20) - 16 * 4096);
  int admitted = 0;
  for (uint64_t off = 0; off < 100000; off += 4096)
    admitted +=
        lkv_cache_admit(c, 7, off, 4096); /* a scan: one miss per block */
  CHECK(admitted == 0);
  CHECK(lkv_cache_admit(c, 9, 4096, 4096) == 0); /* first miss */
  CHECK(lkv_cache_admit(c, 9, 4096, 4096) == 1); /* second miss: admit */
  CHECK(lkv_cache_admit(c, 9, 4096, 4096) == 0); /* the window starts over */
  lkv_cache_free(c);
}

int main(void) {
  test_admission();
  test_basic();
  test_capacity_zero();
  test_lru_and_bytes();
  test_pinning();
  test_erase_file();
  test_threads();
  TEST_MAIN_END();
}
