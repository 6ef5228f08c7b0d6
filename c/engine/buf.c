/* buf.c - lkv_buf, the caller-owned growable byte buffer of lunakv.h. */
#include <stdlib.h>
#include <string.h>

#include "table.h"

int lkv_buf_reserve(lkv_buf *b, size_t n) {
  if (b->cap >= n) return LKV_OK;
  size_t cap = b->cap ? b->cap : 64;
  while (cap < n) cap = cap * 2 > cap ? cap * 2 : n;
  char *p = realloc(b->data, cap);
  if (p == NULL) return LKV_NOMEM;
  b->data = p;
  b->cap = cap;
  return LKV_OK;
}

int lkv_buf_set(lkv_buf *b, const char *p, size_t n) {
  /* reserve at least 1 so an empty value still has a non-NULL data */
  if (lkv_buf_reserve(b, n ? n : 1)) return LKV_NOMEM;
  if (n) memcpy(b->data, p, n);
  b->len = n;
  return LKV_OK;
}

void lkv_buf_free(lkv_buf *b) {
  if (b == NULL) return;
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}
