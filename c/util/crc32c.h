/* crc32c.h - CRC-32C (Castagnoli), the checksum of every WAL record, SST
 * block, footer and manifest. Uses the SSE4.2 instruction when the CPU has
 * it, a table otherwise. */
#ifndef LKV_CRC32C_H
#define LKV_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Extend crc (0 to start) with n bytes. */
uint32_t lkv_crc32c_extend(uint32_t crc, const void *data, size_t n);

/* The same through the portable table code (for tests). */
uint32_t lkv_crc32c_extend_portable(uint32_t crc, const void *data, size_t n);

static inline uint32_t lkv_crc32c(const void *data, size_t n) {
  return lkv_crc32c_extend(0, data, n);
}

#endif
