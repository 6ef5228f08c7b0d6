/* coding.h - every byte encoding lunakv writes: little-endian fixed
 * integers and LEB128 varints. All on-disk formats (the engine's files and
 * the node's replication log) are built from these. */
#ifndef LKV_CODING_H
#define LKV_CODING_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* The fixed-width helpers take void pointers: the engine builds its
 * records in char buffers, the replication log in unsigned char ones. */
static inline void lkv_put32(void *p, uint32_t v) {
  unsigned char *u = (unsigned char *)p;
  u[0] = (unsigned char)v;
  u[1] = (unsigned char)(v >> 8);
  u[2] = (unsigned char)(v >> 16);
  u[3] = (unsigned char)(v >> 24);
}

static inline void lkv_put64(void *p, uint64_t v) {
  lkv_put32(p, (uint32_t)v);
  lkv_put32((unsigned char *)p + 4, (uint32_t)(v >> 32));
}

static inline uint32_t lkv_get32(const void *p) {
  const unsigned char *u = (const unsigned char *)p;
  return (uint32_t)u[0] | ((uint32_t)u[1] << 8) | ((uint32_t)u[2] << 16) |
         ((uint32_t)u[3] << 24);
}

static inline uint64_t lkv_get64(const void *p) {
  return (uint64_t)lkv_get32(p) |
         ((uint64_t)lkv_get32((const unsigned char *)p + 4) << 32);
}

/* Writes v as a varint at p (room for 10 bytes needed); returns the end. */
static inline char *lkv_putv(char *p, uint64_t v) {
  unsigned char *u = (unsigned char *)p;
  while (v >= 0x80) {
    *u++ = (unsigned char)(v | 0x80);
    v >>= 7;
  }
  *u++ = (unsigned char)v;
  return (char *)u;
}

/* Reads a varint from [p, end). Returns the byte after it, or NULL when it
 * is truncated or longer than 64 bits: callers treat NULL as corruption. */
static inline const char *lkv_getv(const char *p, const char *end,
                                   uint64_t *v) {
  uint64_t r = 0;
  for (int shift = 0; shift <= 63 && p < end; shift += 7) {
    uint64_t b = (unsigned char)*p++;
    r |= (b & 0x7f) << shift;
    if (b < 0x80) {
      *v = r;
      return p;
    }
  }
  return NULL;
}

static inline const char *lkv_getv32(const char *p, const char *end,
                                     uint32_t *v) {
  if (p < end && (unsigned char)*p < 0x80) {
    *v = (unsigned char)*p;
    return p + 1;
  }
  uint64_t w;
  p = lkv_getv(p, end, &w);
  if (p == NULL || w > UINT32_MAX) return NULL;
  *v = (uint32_t)w;
  return p;
}

#endif
