/* batch.h - the encoding of a write batch, which is also the payload of a
 * WAL record (wal_format.md):
 *   seq u64 | count u32 | count x (type u8, varint klen, key,
 *                                  [varint vlen, value when type = value])
 * seq is the first operation's sequence number; operation i gets seq + i. */
#ifndef LKV_BATCH_H
#define LKV_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "lunakv.h"

#define LKV_BATCH_HEADER 12

struct lkv_batch {
  char *rep; /* LKV_BATCH_HEADER bytes, then the operations */
  size_t len, cap;
  uint32_t count;
  uint64_t user_bytes; /* key + value bytes, for write amplification */
};

/* Bytes one encoded operation can take, at most. */
static inline size_t lkv_batch_op_max(size_t klen, size_t vlen) {
  return 1 + 10 + klen + 10 + vlen;
}

/* LKV_OK when an operation's key and value are within lunakv.h's limits,
 * else LKV_TOOBIG naming the one over. Every way into the write path
 * checks here: an operation put into a batch, a single set or delete. */
static inline int lkv_batch_check_sizes(size_t klen, size_t vlen,
                                        lkv_err *err) {
  if (klen > LKV_MAX_KEY_BYTES)
    return lkv_seterr(err, LKV_TOOBIG, "key of %zu bytes (limit %u)", klen,
                      LKV_MAX_KEY_BYTES);
  if (vlen > LKV_MAX_VALUE_BYTES)
    return lkv_seterr(err, LKV_TOOBIG, "value of %zu bytes (limit %u)", vlen,
                      LKV_MAX_VALUE_BYTES);
  return LKV_OK;
}

/* Encode one operation at p (room for lkv_batch_op_max); returns its end. */
char *lkv_batch_encode_op(char *p, int type, const void *key, size_t klen,
                          const void *val, size_t vlen);

/* Encode one operation into rep (growing it). */
int lkv_batch_put(lkv_batch *b, int type, const void *key, size_t klen,
                  const void *val, size_t vlen, lkv_err *err);

/* Walk the operations of an encoded batch. fn returning non-zero stops.
 * LKV_CORRUPTION when the encoding is damaged (nothing after the damage
 * is visited, but earlier operations were: callers validate first with
 * fn == NULL when they need all-or-nothing). */
typedef int (*lkv_batch_fn)(void *ctx, uint64_t seq, int type, const char *key,
                            size_t klen, const char *val, size_t vlen);
int lkv_batch_iterate(const char *rep, size_t n, lkv_batch_fn fn, void *ctx);
/* The same, numbering the operations from seq instead of rep's own field
 * (the write path assigns sequence numbers after the batch is built). */
int lkv_batch_iterate_seq(const char *rep, size_t n, uint64_t seq,
                          lkv_batch_fn fn, void *ctx);

#endif
