/* fuzz_frames.c - libFuzzer target: lkvnet_rlog_decode over arbitrary
 * bytes as an /append body (frames back to back, no header). Every entry
 * it returns holds the format's invariants, borrows only its own frame and
 * re-encodes to the same bytes; a rejection says why and where; the loop
 * always ends (the offset only moves forward). */
#include <stdint.h>
#include <stdlib.h>

#include "rlog_fix.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
  size_t off = 0;
  for (;;) {
    lkvnet_entry e;
    char why[128];
    size_t o = off;
    why[0] = '\0';
    int rc = lkvnet_rlog_decode(data, n, &off, &e, why, sizeof why);
    if (rc == 0) {
      if (off != n) abort(); /* "the end" only at the end */
      break;
    }
    if (rc == -1) {
      if (off != o || why[0] == '\0') abort();
      break;
    }
    if (rc != 1 || off <= o || off > n) abort();
    fz_check_frame(data, o, off, &e);
  }
  return 0;
}

size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size,
                               unsigned int seed) {
  return fz_mutate(data, size, max_size, seed, 0);
}
