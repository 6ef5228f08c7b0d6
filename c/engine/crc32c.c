/* crc32c.c - CRC-32C: hardware (SSE4.2 crc32 instruction) when present,
 * else a slicing-by-one table. Both give identical results; the choice is
 * made once, on first use. */
#include "crc32c.h"

#include <pthread.h>
#include <string.h>

static uint32_t table[256];
static int use_hw;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void init_table(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
    table[i] = c;
  }
}

static uint32_t extend_table(uint32_t crc, const unsigned char *p, size_t n) {
  crc = ~crc;
  while (n--) crc = table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
  return ~crc;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target("sse4.2"))) static uint32_t
extend_hw(uint32_t crc, const unsigned char *p, size_t n) {
  uint64_t c = ~crc;
  while (n >= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    c = __builtin_ia32_crc32di(c, w);
    p += 8; n -= 8;
  }
  uint32_t c32 = (uint32_t)c;
  while (n--) c32 = __builtin_ia32_crc32qi(c32, *p++);
  return ~c32;
}
static int have_hw(void) { return __builtin_cpu_supports("sse4.2"); }
#else
static uint32_t extend_hw(uint32_t crc, const unsigned char *p, size_t n) {
  return extend_table(crc, p, n);
}
static int have_hw(void) { return 0; }
#endif

static void choose(void) {
  init_table();
  use_hw = have_hw();
}

uint32_t lkv_crc32c_extend(uint32_t crc, const void *data, size_t n) {
  pthread_once(&once, choose);
  return use_hw ? extend_hw(crc, data, n) : extend_table(crc, data, n);
}
