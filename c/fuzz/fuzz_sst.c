/* fuzz_sst.c - libFuzzer target: opening and reading an SSTable made of
 * arbitrary bytes either fails with a clean error or serves lookups and
 * full scans both ways without crashing or reading out of bounds, read
 * with pread and through a mapping (mmap_reads). */
#include <stdint.h>

#include "fuzz_util.h"
#include "table.h"

static void read_table(const char *path, int use_mmap) {
  lkv_table *t = NULL;
  lkv_err err;
  if (lkv_table_open(NULL, path, 1, NULL, NULL, use_mmap, &t, &err) != LKV_OK)
    return;
  lkv_iiter *it = lkv_table_iter(t);
  lkv_buf val = {0};
  int steps = 0;
  if (it) {
    for (it->ops->seek_first(it); it->ops->valid(it) && steps < 10000;
         it->ops->next(it), steps++) {
      lkv_slice k = it->ops->key(it);
      int type;
      /* look every key up again: it must be found or be an error */
      if (k.n >= LKV_TAG_BYTES) lkv_table_get(t, k, &type, &val, &err);
    }
    it->ops->status(it, &err);
    it->ops->destroy(it);
  }
  /* and backward, on a fresh iterator (prev re-scans inside a block) */
  if ((it = lkv_table_iter(t)) != NULL) {
    steps = 0;
    for (it->ops->seek_last(it); it->ops->valid(it) && steps < 10000;
         it->ops->prev(it), steps++)
      (void)it->ops->key(it);
    it->ops->status(it, &err);
    it->ops->destroy(it);
  }
  char probe[16] = "probe-key\0\0\0\0\0\0";
  lkv_put64(probe + 8, lkv_tag(LKV_MAX_SEQ, LKV_TYPE_SEEK));
  lkv_slice target = {probe, 16};
  int type;
  lkv_table_get(t, target, &type, &val, &err);
  lkv_buf_free(&val);
  lkv_table_close(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
  const char *path = fuzz_file("000001.sst", data, n);
  read_table(path, 0);
  read_table(path, 1);
  return 0;
}
