/* batch.c - atomic write batches (lunakv.h) and their encoding (batch.h). */
#include "batch.h"

#include <stdlib.h>
#include <string.h>

#include "coding.h"
#include "dbformat.h"
#include "err.h"

lkv_batch *lkv_batch_new(void) {
  lkv_batch *b = calloc(1, sizeof *b);
  if (b == NULL) return NULL;
  b->cap = 256;
  b->rep = malloc(b->cap);
  if (b->rep == NULL) {
    free(b);
    return NULL;
  }
  memset(b->rep, 0, LKV_BATCH_HEADER);
  b->len = LKV_BATCH_HEADER;
  return b;
}

void lkv_batch_free(lkv_batch *b) {
  if (b == NULL) return;
  free(b->rep);
  free(b);
}

void lkv_batch_clear(lkv_batch *b) {
  b->len = LKV_BATCH_HEADER;
  b->count = 0;
  b->user_bytes = 0;
  memset(b->rep, 0, LKV_BATCH_HEADER);
}

size_t lkv_batch_count(const lkv_batch *b) { return b->count; }

char *lkv_batch_encode_op(char *p, int type, const void *key, size_t klen,
                          const void *val, size_t vlen) {
  *p++ = (char)type;
  p = lkv_putv(p, klen);
  if (klen) memcpy(p, key, klen);
  p += klen;
  if (type == LKV_TYPE_VALUE) {
    p = lkv_putv(p, vlen);
    if (vlen) memcpy(p, val, vlen);
    p += vlen;
  }
  return p;
}

int lkv_batch_put(lkv_batch *b, int type, const void *key, size_t klen,
                  const void *val, size_t vlen, lkv_err *err) {
  int rc = lkv_batch_check_sizes(klen, vlen, err);
  if (rc != LKV_OK) return rc;
  size_t need = b->len + lkv_batch_op_max(klen, vlen);
  if (need > b->cap) {
    size_t cap = b->cap * 2;
    while (cap < need) cap *= 2;
    char *p = realloc(b->rep, cap);
    if (p == NULL)
      return lkv_seterr(err, LKV_NOMEM, "batch of %zu bytes", need);
    b->rep = p;
    b->cap = cap;
  }
  char *p = lkv_batch_encode_op(b->rep + b->len, type, key, klen, val, vlen);
  b->len = (size_t)(p - b->rep);
  b->count++;
  b->user_bytes += klen + vlen;
  lkv_put32(b->rep + 8, b->count);
  return LKV_OK;
}

int lkv_batch_set(lkv_batch *b, const void *key, size_t klen, const void *val,
                  size_t vlen, lkv_err *err) {
  return lkv_batch_put(b, LKV_TYPE_VALUE, key, klen, val, vlen, err);
}

int lkv_batch_delete(lkv_batch *b, const void *key, size_t klen, lkv_err *err) {
  return lkv_batch_put(b, LKV_TYPE_DELETE, key, klen, NULL, 0, err);
}

int lkv_batch_iterate(const char *rep, size_t n, lkv_batch_fn fn, void *ctx) {
  if (n < LKV_BATCH_HEADER) return LKV_CORRUPTION;
  return lkv_batch_iterate_seq(rep, n, lkv_get64(rep), fn, ctx);
}

int lkv_batch_iterate_seq(const char *rep, size_t n, uint64_t seq,
                          lkv_batch_fn fn, void *ctx) {
  if (n < LKV_BATCH_HEADER) return LKV_CORRUPTION;
  uint32_t count = lkv_get32(rep + 8);
  const char *p = rep + LKV_BATCH_HEADER, *end = rep + n;
  for (uint32_t i = 0; i < count; i++) {
    if (p >= end) return LKV_CORRUPTION;
    int type = (unsigned char)*p++;
    uint64_t klen, vlen = 0;
    if (type != LKV_TYPE_VALUE && type != LKV_TYPE_DELETE)
      return LKV_CORRUPTION;
    if ((p = lkv_getv(p, end, &klen)) == NULL || klen > LKV_MAX_KEY_BYTES ||
        klen > (uint64_t)(end - p))
      return LKV_CORRUPTION;
    const char *key = p, *val = NULL;
    p += klen;
    if (type == LKV_TYPE_VALUE) {
      if ((p = lkv_getv(p, end, &vlen)) == NULL || vlen > (uint64_t)(end - p))
        return LKV_CORRUPTION;
      val = p;
      p += vlen;
    }
    if (fn) {
      int rc = fn(ctx, seq + i, type, key, (size_t)klen, val, (size_t)vlen);
      if (rc) return rc;
    }
  }
  return p == end ? LKV_OK : LKV_CORRUPTION;
}
