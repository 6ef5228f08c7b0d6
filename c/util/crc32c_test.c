/* crc32c_test.c - the fast CRC-32C (three interleaved lanes on SSE4.2)
 * agrees with the portable table code and with the standard check value. */
#include "crc32c.h"

#include <stdlib.h>
#include <string.h>

#include "test.h"

int main(void) {
  /* the CRC-32C check value of "123456789" */
  CHECK(lkv_crc32c("123456789", 9) == 0xe3069283u);
  CHECK(lkv_crc32c_extend_portable(0, "123456789", 9) == 0xe3069283u);
  unsigned char *buf = malloc(20000);
  unsigned s = 12345;
  for (int i = 0; i < 20000; i++) {
    s = s * 1103515245u + 12345u;
    buf[i] = (unsigned char)(s >> 16);
  }
  /* every length around the lane boundaries, odd offsets, and extending
   * in two pieces */
  for (size_t n = 0; n < 20000; n += (n < 3200 ? 1 : 97)) {
    size_t off = n % 7;
    if (off + n > 20000) continue;
    uint32_t fast = lkv_crc32c(buf + off, n);
    uint32_t slow = lkv_crc32c_extend_portable(0, buf + off, n);
    CHECK(fast == slow);
    size_t cut = n / 3;
    CHECK(lkv_crc32c_extend(lkv_crc32c(buf + off, cut), buf + off + cut,
                            n - cut) == fast);
    if (fast != slow) break;
  }
  free(buf);
  TEST_MAIN_END();
}
