/* fuzz_wal.c - libFuzzer target: WAL replay over arbitrary bytes must
 * stop cleanly at the first bad record, never crash or read out of
 * bounds, and hand the callback only records that decode. */
#include <stdint.h>

#include "batch.h"
#include "fuzz_util.h"
#include "wal.h"

static int visit(void *ctx, uint64_t seq, int type, const char *key,
                 size_t klen, const char *val, size_t vlen) {
  (void)ctx;
  (void)seq;
  (void)type;
  (void)key;
  (void)klen;
  (void)val;
  (void)vlen;
  return 0;
}

static int record(void *ctx, const char *rec, size_t n, lkv_err *err) {
  (void)ctx;
  (void)err;
  return lkv_batch_iterate(rec, n, visit, NULL) ? LKV_CORRUPTION : LKV_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
  const char *path = fuzz_file("wal.log.000001", data, n);
  uint64_t end, dropped;
  char why[128];
  lkv_err err;
  if (lkv_wal_replay(NULL, path, record, NULL, &end, &dropped, why, sizeof why,
                     &err) == LKV_OK &&
      end + dropped != n)
    abort(); /* the prefix and the dropped tail must cover the file */
  return 0;
}
