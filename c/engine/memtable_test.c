/* memtable_test.c - the skiplist keeps internal-key order whatever the
 * insertion pattern: ascending runs (the remembered splice), descending
 * runs and random keys interleaved (the splice must be refused and a full
 * search done), several versions of a key, and point reads at a seq. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "memtable.h"
#include "table.h"
#include "test.h"

int main(void) {
  lkv_mem *m = lkv_mem_new();
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
  char prev[64];
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
    CHECK(lkv_mem_get(m, k, strlen(k), LKV_MAX_SEQ, &type, &v) == LKV_OK &&
          v.len == 1 && v.data[0] == 'c');
    CHECK(lkv_mem_get(m, k, strlen(k), (uint64_t)n, &type, &v) == LKV_OK &&
          v.data[0] == 'a');
    CHECK(lkv_mem_get(m, k, strlen(k), (uint64_t)(2 * n), &type, &v) == LKV_OK &&
          v.data[0] == 'b');
  }
  CHECK(lkv_mem_get(m, "k999999", 7, LKV_MAX_SEQ, &type, &v) == LKV_NOTFOUND);
  CHECK(lkv_mem_get(m, "k000001", 7, 0, &type, &v) == LKV_NOTFOUND);
  lkv_buf_free(&v);
  lkv_mem_unref(m);
  TEST_MAIN_END();
}
