/* block.c - building and reading SSTable blocks (see block.h and
 * sst_format.md). Every decode is bounds-checked: bad bytes become
 * LKV_CORRUPTION, never a read outside the block. */
#include "block.h"

#include <stdlib.h>
#include <string.h>

#include "coding.h"
#include "err.h"
#include "table.h" /* lkv_buf_reserve */

/* Blocks address their bytes with u32 offsets. */
#define MAX_BLOCK_BYTES ((size_t)UINT32_MAX - 16)

/* ==== building ========================================================== */

/* The first index in [from, lim) where a and b differ, or lim. */
static inline size_t mismatch_from(const char *a, const char *b, size_t from,
                                   size_t lim) {
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && \
    __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  for (; from + 8 <= lim; from += 8) {
    uint64_t x, y;
    memcpy(&x, a + from, 8);
    memcpy(&y, b + from, 8);
    if (x != y) return from + (size_t)__builtin_ctzll(x ^ y) / 8;
  }
#endif
  while (from < lim && a[from] == b[from]) from++;
  return from;
}

void lkv_block_builder_init(lkv_block_builder *bb, int restart_interval) {
  memset(bb, 0, sizeof *bb);
  bb->interval = restart_interval >= 1 ? restart_interval : 1;
}

void lkv_block_builder_free(lkv_block_builder *bb) {
  lkv_buf_free(&bb->buf);
  lkv_buf_free(&bb->last);
  free(bb->restarts);
  bb->restarts = NULL;
  bb->nrestarts = bb->restarts_cap = 0;
}

void lkv_block_builder_reset(lkv_block_builder *bb) {
  bb->buf.len = 0;
  bb->nrestarts = 0;
  bb->since_restart = 0;
  bb->entries = 0;
}

size_t lkv_block_builder_size(const lkv_block_builder *bb) {
  return bb->buf.len + 4 * bb->nrestarts + 4;
}

int lkv_block_builder_add(lkv_block_builder *bb, lkv_slice key,
                          lkv_slice value) {
  size_t shared = 0;
  int restart = bb->entries == 0 || bb->since_restart >= bb->interval;
  if (!restart)
    shared = mismatch_from(key.p, bb->last.data, 0,
                           key.n < bb->last.len ? key.n : bb->last.len);
  size_t unshared = key.n - shared;
  /* Reserve everything first so a failure leaves the builder unchanged. */
  size_t need = bb->buf.len + 30 + unshared + value.n; /* 3 varints */
  if (lkv_buf_reserve(&bb->buf, need)) return LKV_NOMEM;
  if (lkv_buf_reserve(&bb->last, key.n ? key.n : 1)) return LKV_NOMEM;
  if (restart && bb->nrestarts == bb->restarts_cap) {
    size_t cap = bb->restarts_cap ? bb->restarts_cap * 2 : 16;
    uint32_t *r = realloc(bb->restarts, cap * sizeof *r);
    if (r == NULL) return LKV_NOMEM;
    bb->restarts = r;
    bb->restarts_cap = cap;
  }
  if (restart) {
    bb->restarts[bb->nrestarts++] = (uint32_t)bb->buf.len;
    bb->since_restart = 0;
  }
  char *p = bb->buf.data + bb->buf.len;
  p = lkv_putv(p, shared);
  p = lkv_putv(p, unshared);
  p = lkv_putv(p, value.n);
  memcpy(p, key.p + shared, unshared);
  p += unshared;
  if (value.n) memcpy(p, value.p, value.n);
  p += value.n;
  bb->buf.len = (size_t)(p - bb->buf.data);
  /* Only the differing suffix changes in the last key. */
  memcpy(bb->last.data + shared, key.p + shared, unshared);
  bb->last.len = key.n;
  bb->since_restart++;
  bb->entries++;
  return LKV_OK;
}

int lkv_block_builder_finish(lkv_block_builder *bb, lkv_slice *out) {
  size_t n = lkv_block_builder_size(bb);
  if (lkv_buf_reserve(&bb->buf, n)) return LKV_NOMEM;
  char *p = bb->buf.data + bb->buf.len;
  for (size_t i = 0; i < bb->nrestarts; i++, p += 4)
    lkv_put32(p, bb->restarts[i]);
  lkv_put32(p, (uint32_t)bb->nrestarts);
  bb->buf.len = n;
  out->p = bb->buf.data;
  out->n = n;
  return LKV_OK;
}

/* ==== reading =========================================================== */

int lkv_block_parse(lkv_block *b, const char *p, size_t n, const char **why) {
  memset(b, 0, sizeof *b);
  if (n < 4) {
    *why = "block shorter than its trailer";
    return LKV_CORRUPTION;
  }
  if (n > MAX_BLOCK_BYTES) {
    *why = "block too large";
    return LKV_CORRUPTION;
  }
  uint32_t count = lkv_get32(p + n - 4);
  if (count > (n - 4) / 4) {
    *why = "restart count exceeds block size";
    return LKV_CORRUPTION;
  }
  size_t size = n - 4 - (size_t)count * 4;
  if (count == 0 && size != 0) {
    *why = "entries without restart points";
    return LKV_CORRUPTION;
  }
  b->data = p;
  b->size = (uint32_t)size;
  b->nrestarts = count;
  b->restarts = p + size;
  return LKV_OK;
}

/* A reset that also gives the cursor its own small key buffer. */
void lkv_block_cursor_init(lkv_block_cursor *c, const lkv_block *b) {
  lkv_block_cursor_reset(c, b);
  c->bad_off = 0;
  c->next = 0;
  c->key = c->small;
  c->kcap = sizeof c->small;
  c->val = NULL;
  c->vlen = 0;
}

void lkv_block_cursor_reset(lkv_block_cursor *c, const lkv_block *b) {
  c->b = *b;
  c->valid = 0;
  c->code = LKV_OK;
  c->why = NULL;
  c->klen = 0;
}

void lkv_block_cursor_free(lkv_block_cursor *c) {
  if (c->key != c->small) free(c->key);
  c->key = c->small;
  c->kcap = sizeof c->small;
  c->valid = 0;
}

static void fail(lkv_block_cursor *c, int code, const char *why, uint32_t off) {
  c->valid = 0;
  c->code = code;
  c->why = why;
  c->bad_off = off;
}

/* Reads the three varint lengths of an entry. Most are under 128 and take
 * one byte each, so that case skips the general decoder. */
static inline const char *entry_header(const char *p, const char *end,
                                       uint32_t *shared, uint32_t *unshared,
                                       uint32_t *vlen) {
  if (end - p >= 3) {
    unsigned char a = (unsigned char)p[0], b = (unsigned char)p[1],
                  d = (unsigned char)p[2];
    if ((a | b | d) < 0x80) {
      *shared = a;
      *unshared = b;
      *vlen = d;
      return p + 3;
    }
  }
  if ((p = lkv_getv32(p, end, shared)) == NULL) return NULL;
  if ((p = lkv_getv32(p, end, unshared)) == NULL) return NULL;
  return lkv_getv32(p, end, vlen);
}

/* Between restarts the new part of a key is usually a few bytes plus the
 * 8-byte tag. When that part is at most 16 bytes and both the block (from
 * p, its first byte) and the key buffer have room for 16, it is copied as
 * one fixed 16-byte move (no length-dependent branch); the bytes past it
 * are overwritten or ignored. */
static inline int fixed_copy_fits(size_t shared, size_t unshared, const char *p,
                                  const char *end, size_t kcap) {
  return unshared <= 16 && end - p >= 16 && shared + 16 <= kcap;
}

/* Decode the entry at off on top of the current key (klen 0 at a restart,
 * so an entry there claiming a shared prefix is caught). Past the last
 * entry the cursor becomes invalid without error. */
static void decode_at(lkv_block_cursor *c, uint32_t off) {
  if (off >= c->b.size) {
    c->valid = 0;
    return;
  }
  const char *end = c->b.data + c->b.size;
  const char *why = NULL;
  uint32_t shared, unshared, vlen;
  const char *p = entry_header(c->b.data + off, end, &shared, &unshared, &vlen);
  if (p == NULL)
    why = "bad entry header";
  else if (shared > c->klen)
    why = "shared prefix longer than previous key";
  else if ((uint64_t)unshared + vlen > (uint64_t)(end - p))
    why = "entry overruns block";
  else if ((size_t)shared + unshared < LKV_TAG_BYTES)
    why = "key shorter than its tag";
  if (why) {
    fail(c, LKV_CORRUPTION, why, off);
    return;
  }
  size_t klen = (size_t)shared + unshared;
  if (klen > c->kcap) {
    size_t cap = c->kcap * 2 > klen ? c->kcap * 2 : klen;
    char *k = malloc(cap);
    if (k == NULL) {
      fail(c, LKV_NOMEM, "out of memory", off);
      return;
    }
    memcpy(k, c->key, shared);
    if (c->key != c->small) free(c->key);
    c->key = k;
    c->kcap = cap;
  }
  if (fixed_copy_fits(shared, unshared, p, end, c->kcap)) {
    memcpy(c->key + shared, p, 16);
  } else if (unshared <= 16) {
    for (uint32_t j = 0; j < unshared; j++) c->key[shared + j] = p[j];
  } else {
    memcpy(c->key + shared, p, unshared);
  }
  c->klen = klen;
  c->val = p + unshared;
  c->vlen = vlen;
  c->cur = off;
  c->next = (uint32_t)(c->val + vlen - c->b.data);
  c->valid = 1;
}

static void seek_restart(lkv_block_cursor *c, uint32_t i) {
  uint32_t off = lkv_get32(c->b.restarts + 4 * (size_t)i);
  if (off >= c->b.size) {
    fail(c, LKV_CORRUPTION, "restart offset outside block", off);
    return;
  }
  c->klen = 0;
  decode_at(c, off);
}

void lkv_block_cursor_seek_first(lkv_block_cursor *c) {
  if (c->code) return;
  if (c->b.nrestarts == 0) {
    c->valid = 0;
    return;
  }
  seek_restart(c, 0);
}

/* The key stored at restart i, read in place (restart entries carry the
 * whole key). 0 on success. */
static int restart_key(lkv_block_cursor *c, uint32_t i, lkv_slice *key) {
  uint32_t off = lkv_get32(c->b.restarts + 4 * (size_t)i);
  if (off >= c->b.size) {
    fail(c, LKV_CORRUPTION, "restart offset outside block", off);
    return -1;
  }
  const char *end = c->b.data + c->b.size;
  uint32_t shared, unshared, vlen;
  const char *p = entry_header(c->b.data + off, end, &shared, &unshared, &vlen);
  if (p == NULL || shared != 0 || unshared > (size_t)(end - p) ||
      unshared < LKV_TAG_BYTES) {
    fail(c, LKV_CORRUPTION, "bad restart entry", off);
    return -1;
  }
  key->p = p;
  key->n = unshared;
  return 0;
}

/* The linear part of a seek, for the common entry: one-byte lengths and a
 * new key part of at most 16 bytes (decode_at's fixed copy). The cursor's
 * state lives in locals here: stores through c->key may alias *c, so
 * decode_at must reload its fields after every copy. Starts after the
 * current entry, which is < target. Returns 1 when it stopped on the
 * first entry >= target or ran off the block; 0 with the cursor on the
 * last entry it passed (< target) when the next one needs decode_at.
 *
 * Each key is compared with the target from where the two are known to
 * agree: if the previous key shares m bytes with the target's user key
 * and the new key keeps `shared` bytes of the previous one, their first
 * min(m, shared) bytes are the target's. The outcome is lkv_icmp's
 * (bytewise user keys, then tags), whatever order the block is in; for
 * keys that share long prefixes it is usually one byte compared. */
static int scan_fast(lkv_block_cursor *c, lkv_slice target) {
  const char *data = c->b.data;
  /* in a local: stores through key may alias *c, and would make the
   * compiler reload c->b.size on every entry */
  const uint32_t size = c->b.size;
  char *key = c->key;
  size_t klen = c->klen, kcap = c->kcap;
  uint32_t cur = c->cur, next = c->next, vlen = (uint32_t)c->vlen;
  const char *val = c->val;
  const char *t = target.p;
  size_t tn = target.n - LKV_TAG_BYTES, kn = klen - LKV_TAG_BYTES;
  uint64_t ttag = lkv_get64(t + tn);
  size_t m = mismatch_from(key, t, 0, kn < tn ? kn : tn);
  int found = 0;
  /* kcap >= sizeof c->small: the key buffer has room for a 16-byte copy
   * after any shared prefix up to kcap - 16 */
  size_t kroom = kcap - 16;
  /* an entry starting at or before `last` has its 3-byte header and the
   * 16 bytes the fixed copy reads inside the block */
  uint32_t last = size >= 19 ? size - 19 : 0;
  while (size >= 19 && next <= last) {
    const char *p = data + next;
    unsigned a = (unsigned char)p[0], b = (unsigned char)p[1],
             d = (unsigned char)p[2];
    /* decode_at's checks for one-byte lengths and fixed_copy_fits, the
     * block's room for the copy being given by `last` (b <= 16 also
     * makes b a one-byte length) */
    size_t amax = klen < kroom ? klen : kroom;
    if ((a | d) >= 0x80 || b > 16 || a > amax || a + b < LKV_TAG_BYTES ||
        next + 3 + b + d > size)
      break;
    memcpy(key + a, p + 3, 16);
    klen = a + b;
    val = p + 3 + b;
    vlen = d;
    cur = next;
    next += 3 + b + d;
    kn = klen - LKV_TAG_BYTES;
    size_t lim = kn < tn ? kn : tn, q = a < m ? a : m;
    m = mismatch_from(key, t, q < lim ? q : lim, lim);
    int cmp;
    if (m < lim) {
      cmp = (unsigned char)key[m] < (unsigned char)t[m] ? -1 : 1;
    } else if (kn != tn) {
      cmp = kn < tn ? -1 : 1;
    } else { /* one user key: the newer version (larger tag) sorts first */
      uint64_t tag = lkv_get64(key + kn);
      cmp = tag > ttag ? -1 : tag < ttag;
    }
    if (cmp >= 0) {
      found = 1;
      break;
    }
  }
  /* the last entry decoded, as decode_at would leave it (c->key already
   * holds its bytes) */
  c->klen = klen;
  c->val = val;
  c->vlen = vlen;
  c->cur = cur;
  c->next = next;
  if (!found && next >= size) { /* past the last entry */
    c->valid = 0;
    return 1;
  }
  return found;
}

void lkv_block_cursor_seek(lkv_block_cursor *c, lkv_slice target) {
  if (c->code) return;
  if (c->b.nrestarts == 0) {
    c->valid = 0;
    return;
  }
  /* Find the last restart whose key is < target; the answer is in the run
   * that starts there (or is the very first entry). */
  uint32_t lo = 0, hi = c->b.nrestarts - 1;
  while (lo < hi) {
    uint32_t mid = lo + (hi - lo + 1) / 2;
    lkv_slice k;
    if (restart_key(c, mid, &k)) return;
    if (lkv_icmp(k, target) < 0)
      lo = mid;
    else
      hi = mid - 1;
  }
  seek_restart(c, lo);
  /* restart lo > 0 was found < target above: no need to ask again */
  int less = lo > 0;
  while (c->valid) {
    lkv_slice k = {c->key, c->klen};
    if (!less && lkv_icmp(k, target) >= 0) break;
    less = 0;
    if (scan_fast(c, target)) break;
    decode_at(c, c->next);
  }
}

void lkv_block_cursor_next(lkv_block_cursor *c) {
  if (c->valid) decode_at(c, c->next);
}

/* Decode forward from restart i up to the entry that ends at `end` (the
 * block's end, or the entry the cursor was on). */
static void scan_to(lkv_block_cursor *c, uint32_t i, uint32_t end) {
  seek_restart(c, i);
  while (c->valid && c->next < end) decode_at(c, c->next);
  if (c->valid && c->next != end)
    fail(c, LKV_CORRUPTION, "entries do not end where the next one starts",
         c->cur);
}

void lkv_block_cursor_seek_last(lkv_block_cursor *c) {
  if (c->code) return;
  if (c->b.nrestarts == 0) {
    c->valid = 0;
    return;
  }
  scan_to(c, c->b.nrestarts - 1, c->b.size);
}

void lkv_block_cursor_prev(lkv_block_cursor *c) {
  if (!c->valid) return;
  uint32_t target = c->cur;
  /* the last restart before the current entry: offsets increase */
  uint32_t lo = 0,
           hi = c->b.nrestarts; /* answer in [lo, hi): first >= target */
  while (lo < hi) {
    uint32_t mid = lo + (hi - lo) / 2;
    if (lkv_get32(c->b.restarts + 4 * (size_t)mid) < target)
      lo = mid + 1;
    else
      hi = mid;
  }
  if (lo == 0) { /* the current entry is the first */
    c->valid = 0;
    return;
  }
  scan_to(c, lo - 1, target);
}

/* ==== lkv_iiter over one block ========================================= */

typedef struct block_iter {
  lkv_iiter base;
  lkv_block_cursor c;
  uint64_t off;
  char name[64];
} block_iter;

static void bi_seek_first(lkv_iiter *it) {
  lkv_block_cursor_seek_first(&((block_iter *)it)->c);
}

static void bi_seek(lkv_iiter *it, lkv_slice target) {
  block_iter *bi = (block_iter *)it;
  if (target.n < LKV_TAG_BYTES) { /* not an internal key: sorts first */
    lkv_block_cursor_seek_first(&bi->c);
    return;
  }
  lkv_block_cursor_seek(&bi->c, target);
}

static void bi_next(lkv_iiter *it) {
  lkv_block_cursor_next(&((block_iter *)it)->c);
}

static void bi_seek_last(lkv_iiter *it) {
  lkv_block_cursor_seek_last(&((block_iter *)it)->c);
}

static void bi_prev(lkv_iiter *it) {
  lkv_block_cursor_prev(&((block_iter *)it)->c);
}

static int bi_valid(const lkv_iiter *it) {
  return ((const block_iter *)it)->c.valid;
}

static lkv_slice bi_key(const lkv_iiter *it) {
  const block_iter *bi = (const block_iter *)it;
  lkv_slice s = {bi->c.key, bi->c.klen};
  return s;
}

static lkv_slice bi_value(const lkv_iiter *it) {
  const block_iter *bi = (const block_iter *)it;
  lkv_slice s = {bi->c.val, bi->c.vlen};
  return s;
}

static int bi_status(const lkv_iiter *it, lkv_err *err) {
  const block_iter *bi = (const block_iter *)it;
  if (bi->c.code == LKV_OK) return LKV_OK;
  if (bi->c.code == LKV_NOMEM)
    return lkv_seterr(err, LKV_NOMEM, "reading block of %s", bi->name);
  return lkv_seterr(err, bi->c.code, "%s offset %llu: %s (entry at byte %u)",
                    bi->name, (unsigned long long)bi->off, bi->c.why,
                    (unsigned)bi->c.bad_off);
}

static void bi_destroy(lkv_iiter *it) {
  block_iter *bi = (block_iter *)it;
  lkv_block_cursor_free(&bi->c);
  free(bi);
}

static const lkv_iiter_ops block_iter_ops = {
    bi_seek_first, bi_seek,   bi_next,    bi_valid,     bi_key,
    bi_value,      bi_status, bi_destroy, bi_seek_last, bi_prev};

lkv_iiter *lkv_block_iter_new(const lkv_block *b, const char *name,
                              uint64_t off) {
  block_iter *bi = malloc(sizeof *bi);
  if (bi == NULL) return NULL;
  bi->base.ops = &block_iter_ops;
  lkv_block_cursor_init(&bi->c, b);
  bi->off = off;
  if (name == NULL) name = "block";
  size_t n = strlen(name);
  if (n >= sizeof bi->name) n = sizeof bi->name - 1;
  memcpy(bi->name, name, n);
  bi->name[n] = '\0';
  return &bi->base;
}
