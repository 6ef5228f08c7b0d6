/* dbformat.h - internal keys: how the engine orders versions of a key.
 *
 * An internal key is the user key followed by an 8-byte little-endian tag
 * (seq << 8 | type). Internal keys sort by user key ascending (bytewise,
 * shorter first on a common prefix), then by tag descending: the newest
 * version of a key comes first, so a reader looking for "newest with
 * seq <= at" seeks to (key, at, LKV_TYPE_SEEK) and takes the first entry
 * with the same user key. Sequence numbers are 56 bits. */
#ifndef LKV_DBFORMAT_H
#define LKV_DBFORMAT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "coding.h"

typedef struct lkv_slice {
  const char *p;
  size_t n;
} lkv_slice;

enum {
  LKV_TYPE_DELETE = 0, /* a tombstone: the key is deleted as of its seq */
  LKV_TYPE_VALUE = 1,
  /* the highest type: (key, seq, LKV_TYPE_SEEK) sorts before every entry
   * of key with that seq, so a seek lands on the newest visible one */
  LKV_TYPE_SEEK = LKV_TYPE_VALUE
};

#define LKV_TAG_BYTES 8
#define LKV_MAX_SEQ ((((uint64_t)1) << 56) - 1)

static inline uint64_t lkv_tag(uint64_t seq, int type) {
  return (seq << 8) | (uint64_t)type;
}

static inline lkv_slice lkv_ikey_user(lkv_slice ikey) {
  lkv_slice u = {ikey.p, ikey.n - LKV_TAG_BYTES};
  return u;
}

static inline uint64_t lkv_ikey_tag(lkv_slice ikey) {
  return lkv_get64(ikey.p + ikey.n - LKV_TAG_BYTES);
}

/* The comparisons run inside every search loop; a call per comparison
 * (GCC declines to inline them in block.c, with its many call sites)
 * costs as much as the comparison. */
#if defined(__GNUC__)
#define LKV_HOT_INLINE static inline __attribute__((always_inline))
#else
#define LKV_HOT_INLINE static inline
#endif

/* Bytewise order. Keys are mostly short, and every search (memtable,
 * index, block scan) compares them constantly: up to 64 bytes are
 * compared 8 at a time inline, which beats a memcmp call there; longer
 * keys go to memcmp, which is faster over long runs. */
LKV_HOT_INLINE int lkv_ucmp(const char *a, size_t an, const char *b,
                            size_t bn) {
  size_t m = an < bn ? an : bn;
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && \
    __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  if (m <= 64) {
    size_t i = 0;
    for (; i + 8 <= m; i += 8) {
      uint64_t x, y;
      memcpy(&x, a + i, 8);
      memcpy(&y, b + i, 8);
      if (x != y) {
        x = __builtin_bswap64(x); /* big-endian order = bytewise order */
        y = __builtin_bswap64(y);
        return x < y ? -1 : 1;
      }
    }
    for (; i < m; i++) {
      unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
      if (x != y) return x < y ? -1 : 1;
    }
    return an < bn ? -1 : an > bn;
  }
#endif
  int r = m ? memcmp(a, b, m) : 0;
  if (r) return r;
  return an < bn ? -1 : an > bn;
}

/* REQUIRES: a.n, b.n >= LKV_TAG_BYTES */
LKV_HOT_INLINE int lkv_icmp(lkv_slice a, lkv_slice b) {
  int r = lkv_ucmp(a.p, a.n - LKV_TAG_BYTES, b.p, b.n - LKV_TAG_BYTES);
  if (r) return r;
  uint64_t ta = lkv_ikey_tag(a), tb = lkv_ikey_tag(b);
  return ta > tb ? -1 : ta < tb;
}

#endif
