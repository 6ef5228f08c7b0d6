/* fuzz_manifest.c - libFuzzer target: decoding a MANIFEST of arbitrary
 * bytes fails with a corruption error or yields entries that lie inside
 * the input, never a crash. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "manifest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
  char *raw = malloc(n ? n : 1);
  if (raw == NULL) return 0;
  if (n) memcpy(raw, data, n);
  lkv_manifest m;
  lkv_err err;
  if (lkv_manifest_decode(raw, n, "MANIFEST", &m, &err) == LKV_OK) {
    for (size_t i = 0; i < m.nfiles; i++) {
      const lkv_mfile *f = &m.files[i];
      if (f->smallest < m.raw || f->smallest + f->smallest_len > m.raw + n ||
          f->largest < m.raw || f->largest + f->largest_len > m.raw + n)
        abort();
    }
    lkv_manifest_free(&m);
  }
  return 0;
}
