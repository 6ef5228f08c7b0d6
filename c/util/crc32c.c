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
/* The crc32 instruction has a latency of 3 cycles but a throughput of 1,
 * so one dependent chain runs at a third of the speed the unit allows.
 * Long inputs are cut into rounds of three SEG-byte lanes computed side by
 * side; the register update is linear, so the lanes combine as
 *   crc(c, A|B|C) = Z(Z(crc(c, A)) ^ crc(0, B)) ^ crc(0, C)
 * where Z(r) is r advanced over SEG zero bytes, read from four tables. */
#define SEG 512
#define SEG2 128 /* the tail of a 4 KiB block: rounds of 3 x 128 bytes */
static uint32_t ztab[4][256], ztab2[4][256];

__attribute__((target("sse4.2"))) static uint32_t chain(uint32_t r,
                                                        const unsigned char *p,
                                                        size_t n) {
  uint64_t c = r;
  while (n >= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    c = __builtin_ia32_crc32di(c, w);
    p += 8;
    n -= 8;
  }
  uint32_t c32 = (uint32_t)c;
  while (n--) c32 = __builtin_ia32_crc32qi(c32, *p++);
  return c32;
}

static void init_ztab(void) {
  static const unsigned char zeros[SEG];
  for (int j = 0; j < 4; j++)
    for (uint32_t v = 0; v < 256; v++) {
      ztab[j][v] = chain(v << (8 * j), zeros, SEG);
      ztab2[j][v] = chain(v << (8 * j), zeros, SEG2);
    }
}

static inline uint32_t zshift_by(uint32_t (*z)[256], uint32_t r) {
  return z[0][r & 0xff] ^ z[1][(r >> 8) & 0xff] ^ z[2][(r >> 16) & 0xff] ^
         z[3][r >> 24];
}

/* Three lanes of seg bytes each, side by side, combined (see above). */
__attribute__((target("sse4.2"))) static inline uint32_t round3(
    uint32_t r, const unsigned char *p, size_t seg, uint32_t (*z)[256]) {
  uint64_t c0 = r, c1 = 0, c2 = 0;
  for (size_t i = 0; i < seg; i += 8) {
    uint64_t a, b, c;
    memcpy(&a, p + i, 8);
    memcpy(&b, p + seg + i, 8);
    memcpy(&c, p + 2 * seg + i, 8);
    c0 = __builtin_ia32_crc32di(c0, a);
    c1 = __builtin_ia32_crc32di(c1, b);
    c2 = __builtin_ia32_crc32di(c2, c);
  }
  return zshift_by(z, zshift_by(z, (uint32_t)c0) ^ (uint32_t)c1) ^ (uint32_t)c2;
}

__attribute__((target("sse4.2"))) static uint32_t extend_hw(
    uint32_t crc, const unsigned char *p, size_t n) {
  uint32_t r = ~crc;
  for (; n >= 3 * SEG; p += 3 * SEG, n -= 3 * SEG) r = round3(r, p, SEG, ztab);
  for (; n >= 3 * SEG2; p += 3 * SEG2, n -= 3 * SEG2)
    r = round3(r, p, SEG2, ztab2);
  return ~chain(r, p, n);
}
static int have_hw(void) { return __builtin_cpu_supports("sse4.2"); }
static void init_hw(void) { init_ztab(); }
#else
static uint32_t extend_hw(uint32_t crc, const unsigned char *p, size_t n) {
  return extend_table(crc, p, n);
}
static int have_hw(void) { return 0; }
static void init_hw(void) {}
#endif

static void choose(void) {
  init_table();
  use_hw = have_hw();
  if (use_hw) init_hw();
}

uint32_t lkv_crc32c_extend_portable(uint32_t crc, const void *data, size_t n) {
  pthread_once(&once, choose);
  return extend_table(crc, data, n);
}

uint32_t lkv_crc32c_extend(uint32_t crc, const void *data, size_t n) {
  pthread_once(&once, choose);
  return use_hw ? extend_hw(crc, data, n) : extend_table(crc, data, n);
}
