/* sst_read.c - reading an SSTable (table.h, sst_format.md): the footer,
 * filter and index are verified and kept in memory at open; point lookups
 * read at most one data block, through the block cache when there is one. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "block.h"
#include "bloom.h"
#include "crc32c.h"
#include "env.h"
#include "err.h"
#include "table.h"
#include "twolevel.h"

/* One data block as the in-memory index sees it. */
typedef struct ixent {
  const char *key; /* the index key (>= every key of the block), in t->keys */
  uint32_t klen;
  uint32_t size; /* block bytes, trailer excluded */
  uint64_t off;
} ixent;

struct lkv_table {
  const lkv_env *env;
  int fd;
  char *path;
  const char *name; /* basename of path: what error messages show */
  uint64_t number;
  lkv_cache *cache;
  lkv_table_counters *counters;
  uint64_t file_size;
  uint64_t entries;
  char *meta; /* filter + index blocks as read at open */
  const char *filter;
  size_t filter_n;
  ixent *ix;
  size_t nblocks;
  char *keys; /* the decoded index keys, back to back */
  /* The search accelerator: every index key shares its first `cp` user-key
   * bytes (the table's common prefix, e.g. the leading zeros of numeric
   * keys), and win[i] holds the next 8 bytes of index key i, big-endian,
   * zero-padded. The binary search runs on this dense array and only
   * compares whole keys among equal windows: a few cache lines per lookup
   * instead of two misses per step. */
  uint32_t cp;
  uint64_t *win;
  /* With mmap reads: the whole file mapped read-only, and one bit per data
   * block set once its checksum has passed, so a block is verified on its
   * first use after open rather than on every read. */
  const char *map;
  _Atomic uint64_t *verified;
};

/* Mappings held at once, process-wide: past this tables fall back to
 * pread (LevelDB's limit too), so a database of many thousands of tables
 * stays far from the kernel's map count limit. */
#define MMAP_LIMIT 1000
static atomic_int mmap_count;

/* Bytes [cp, cp + 8) of user key k, as a big-endian number. */
static inline uint64_t key_window(const char *k, size_t kn, uint32_t cp) {
  unsigned char b[8] = {0};
  if (kn >= (size_t)cp + 8)
    memcpy(b, k + cp, 8); /* the usual case: one load, no call */
  else if (kn > cp)
    memcpy(b, k + cp, kn - cp);
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && \
    __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  uint64_t w;
  memcpy(&w, b, 8);
  return __builtin_bswap64(w);
#else
  uint64_t w = 0;
  for (int i = 0; i < 8; i++) w = (w << 8) | b[i];
  return w;
#endif
}

/* A cached data block: the parsed view and its bytes in one allocation,
 * so a cache miss costs one malloc and the pread lands in place. */
typedef struct cblock {
  lkv_block b;
  char data[];
} cblock;

/* Bump one counter of the calling thread's stripe (no shared line). */
#define bump(c, field)                                                 \
  do {                                                                 \
    if (c)                                                             \
      atomic_fetch_add_explicit(&(c)->s[lkv_thread_stripe()].field, 1, \
                                memory_order_relaxed);                 \
  } while (0)

void lkv_table_counters_total(const lkv_table_counters *c,
                              lkv_counter_totals *out) {
  memset(out, 0, sizeof *out);
  for (int i = 0; i < LKV_THREAD_STRIPES; i++) {
    lkv_counter_stripe *p = (lkv_counter_stripe *)&c->s[i];
    out->bloom_checks +=
        atomic_load_explicit(&p->bloom_checks, memory_order_relaxed);
    out->bloom_negatives +=
        atomic_load_explicit(&p->bloom_negatives, memory_order_relaxed);
    out->block_reads +=
        atomic_load_explicit(&p->block_reads, memory_order_relaxed);
    out->cache_hits +=
        atomic_load_explicit(&p->cache_hits, memory_order_relaxed);
  }
}

static int corrupt(const lkv_table *t, uint64_t off, const char *why,
                   lkv_err *err) {
  return lkv_seterr(err, LKV_CORRUPTION, "%s offset %llu: %s", t->name,
                    (unsigned long long)off, why);
}

/* Check the trailer after the n block bytes at p (the trailer follows
 * them in memory). */
static int check_trailer(const lkv_table *t, const char *p, size_t n,
                         uint64_t off, const char *what, lkv_err *err) {
  uint32_t want = lkv_get32(p + n + 1);
  uint32_t got = lkv_crc32c(p, n + 1); /* the block bytes and type byte */
  if (got != want) {
    char why[64];
    snprintf(why, sizeof why, "%s checksum mismatch", what);
    return corrupt(t, off, why, err);
  }
  if (p[n] != LKV_BLOCK_TYPE_PLAIN) {
    char why[64];
    snprintf(why, sizeof why, "%s has unknown type %d", what,
             (unsigned char)p[n]);
    return corrupt(t, off, why, err);
  }
  return LKV_OK;
}

/* A pread whose "truncated" error names the file the way the rest of the
 * reader's corruption messages do. */
static int read_at(const lkv_table *t, char *buf, size_t n, uint64_t off,
                   lkv_err *err) {
  lkv_err e;
  int rc = lkv_env_pread(t->env, t->fd, buf, n, off, t->path, &e);
  if (rc == LKV_CORRUPTION)
    return corrupt(t, off, "truncated: file ends inside a block", err);
  if (rc) return lkv_errcopy(err, &e);
  return LKV_OK;
}

/* ==== open ============================================================= */

static void table_free(lkv_table *t) {
  if (t->map) {
    lkv_env_munmap(t->env, t->map, (size_t)t->file_size);
    atomic_fetch_sub(&mmap_count, 1);
  }
  free(t->verified);
  lkv_env_close(t->env, t->fd, t->path, NULL);
  free(t->ix);
  free(t->keys);
  free(t->win);
  free(t->meta);
  free(t->path);
  free(t);
}

/* Decode the index block into t->ix / t->keys, checking that the block
 * handles tile the data region [0, data_end) exactly and the keys
 * strictly increase: what the binary search and every later read trust. */
static int load_index(lkv_table *t, const char *p, size_t n, uint64_t ioff,
                      uint64_t data_end, lkv_err *err) {
  lkv_block blk;
  const char *why;
  if (lkv_block_parse(&blk, p, n, &why)) return corrupt(t, ioff, why, err);
  lkv_block_cursor c;
  lkv_block_cursor_init(&c, &blk);
  /* Pass 1 sizes the arrays, pass 2 fills them: no reallocation. */
  size_t count = 0, key_bytes = 0;
  for (lkv_block_cursor_seek_first(&c); c.valid; lkv_block_cursor_next(&c)) {
    count++;
    key_bytes += c.klen;
  }
  int rc = LKV_OK;
  if (c.code) {
    rc = c.code == LKV_NOMEM
             ? lkv_seterr(err, LKV_NOMEM, "reading index of %s", t->name)
             : corrupt(t, ioff, c.why, err);
    goto out;
  }
  t->ix = malloc((count ? count : 1) * sizeof *t->ix);
  t->keys = malloc(key_bytes ? key_bytes : 1);
  if (t->ix == NULL || t->keys == NULL) {
    rc = lkv_seterr(err, LKV_NOMEM, "reading index of %s", t->name);
    goto out;
  }
  uint64_t expect = 0; /* data blocks are back to back from offset 0 */
  size_t kpos = 0, i = 0;
  for (lkv_block_cursor_seek_first(&c); c.valid && i < count;
       lkv_block_cursor_next(&c), i++) {
    uint64_t off, size;
    const char *v = c.val, *vend = c.val + c.vlen;
    if ((v = lkv_getv(v, vend, &off)) == NULL ||
        (v = lkv_getv(v, vend, &size)) == NULL || v != vend) {
      rc = corrupt(t, ioff, "bad block handle in index", err);
      goto out;
    }
    if (off != expect || size > UINT32_MAX ||
        size + LKV_BLOCK_TRAILER_BYTES > data_end - off) {
      rc = corrupt(t, ioff, "index block handle outside the data region", err);
      goto out;
    }
    expect = off + size + LKV_BLOCK_TRAILER_BYTES;
    ixent *e = &t->ix[i];
    memcpy(t->keys + kpos, c.key, c.klen);
    e->key = t->keys + kpos;
    e->klen = (uint32_t)c.klen;
    e->off = off;
    e->size = (uint32_t)size;
    kpos += c.klen;
    if (i > 0) {
      lkv_slice a = {t->ix[i - 1].key, t->ix[i - 1].klen},
                b = {e->key, e->klen};
      if (lkv_icmp(a, b) >= 0) {
        rc = corrupt(t, ioff, "index keys out of order", err);
        goto out;
      }
    }
  }
  if (expect != data_end) {
    rc = corrupt(t, ioff, "index does not cover the data region", err);
    goto out;
  }
  t->nblocks = count;
  if (count > 0) {
    const ixent *a = &t->ix[0], *z = &t->ix[count - 1];
    size_t an = a->klen - LKV_TAG_BYTES, zn = z->klen - LKV_TAG_BYTES;
    uint32_t cp = 0; /* keys are sorted: the first and last bound the prefix */
    while (cp < an && cp < zn && a->key[cp] == z->key[cp]) cp++;
    t->cp = cp;
    t->win = malloc(count * sizeof *t->win);
    if (t->win == NULL) {
      rc = lkv_seterr(err, LKV_NOMEM, "reading index of %s", t->name);
      goto out;
    }
    for (size_t j = 0; j < count; j++)
      t->win[j] = key_window(t->ix[j].key, t->ix[j].klen - LKV_TAG_BYTES, cp);
  }
out:
  lkv_block_cursor_free(&c);
  return rc;
}

/* Map the file for reading, when a slot is free; a table that cannot be
 * mapped reads with pread instead, which answers the same. */
static void map_file(lkv_table *t) {
  if (t->nblocks == 0 || t->file_size > SIZE_MAX) return;
  if (atomic_fetch_add(&mmap_count, 1) >= MMAP_LIMIT) {
    atomic_fetch_sub(&mmap_count, 1);
    return;
  }
  t->verified = calloc((t->nblocks + 63) / 64, sizeof *t->verified);
  const void *m =
      t->verified ? lkv_env_mmap(t->env, t->fd, (size_t)t->file_size) : NULL;
  if (m == NULL) {
    free(t->verified);
    t->verified = NULL;
    atomic_fetch_sub(&mmap_count, 1);
    return;
  }
  t->map = m;
}

int lkv_table_open(const lkv_env *env, const char *path, uint64_t file_number,
                   lkv_cache *cache, lkv_table_counters *counters, int use_mmap,
                   lkv_table **out, lkv_err *err) {
  *out = NULL;
  lkv_table *t = calloc(1, sizeof *t);
  size_t plen = strlen(path);
  if (t == NULL || (t->path = malloc(plen + 1)) == NULL) {
    free(t);
    return lkv_seterr(err, LKV_NOMEM, "opening table %s", path);
  }
  memcpy(t->path, path, plen + 1);
  const char *slash = strrchr(t->path, '/');
  t->name = slash ? slash + 1 : t->path;
  t->number = file_number;
  t->cache = cache;
  t->counters = counters;
  /* O_NOATIME spares every read an inode update check. Only its EPERM is
   * retried without it: an EIO or an EMFILE answered by a second try
   * would be a failure no one hears of. */
  t->env = env;
  t->fd = -1;
  int rc = lkv_env_open_noatime(env, path, &t->fd, err);
  if (rc == LKV_OK)
    rc = lkv_env_file_size(env, t->fd, t->path, &t->file_size, err);
  if (rc) goto fail;

  uint64_t size = t->file_size;
  if (size < LKV_SST_FOOTER_BYTES) {
    rc = corrupt(t, 0, "file too short to hold a table footer", err);
    goto fail;
  }
  uint64_t footer_off = size - LKV_SST_FOOTER_BYTES;
  char f[LKV_SST_FOOTER_BYTES];
  if ((rc = read_at(t, f, sizeof f, footer_off, err))) goto fail;
  if (lkv_get64(f + 48) != LKV_SST_MAGIC) {
    rc = corrupt(t, footer_off, "bad table magic number", err);
    goto fail;
  }
  if (lkv_crc32c(f, 44) != lkv_get32(f + 44)) {
    rc = corrupt(t, footer_off, "footer checksum mismatch", err);
    goto fail;
  }
  uint32_t version = lkv_get32(f + 40);
  if (version != LKV_SST_VERSION) {
    char why[64];
    snprintf(why, sizeof why, "unsupported table format version %u",
             (unsigned)version);
    rc = corrupt(t, footer_off, why, err);
    goto fail;
  }
  uint64_t foff = lkv_get64(f), fsize = lkv_get64(f + 8);
  uint64_t ioff = lkv_get64(f + 16), isize = lkv_get64(f + 24);
  t->entries = lkv_get64(f + 32);
  /* Filter then index, each with its trailer, end exactly at the footer.
   * Checked before allocating: sizes come from the file. */
  const uint64_t tr = LKV_BLOCK_TRAILER_BYTES;
  if (foff > footer_off || fsize > footer_off - foff ||
      tr > footer_off - foff - fsize || ioff != foff + fsize + tr ||
      isize > footer_off - ioff || isize + tr != footer_off - ioff) {
    rc =
        corrupt(t, footer_off, "footer block handles do not fit the file", err);
    goto fail;
  }
  size_t mlen = (size_t)(footer_off - foff);
  if ((t->meta = malloc(mlen)) == NULL) {
    rc = lkv_seterr(err, LKV_NOMEM, "reading index of %s", t->name);
    goto fail;
  }
  if ((rc = read_at(t, t->meta, mlen, foff, err))) goto fail;
  const char *fp = t->meta, *ip = t->meta + (ioff - foff);
  if ((rc = check_trailer(t, fp, (size_t)fsize, foff, "filter block", err)) ||
      (rc = check_trailer(t, ip, (size_t)isize, ioff, "index block", err)))
    goto fail;
  t->filter = fp;
  t->filter_n = (size_t)fsize;
  if ((rc = load_index(t, ip, (size_t)isize, ioff, foff, err))) goto fail;
  if (use_mmap) map_file(t);
  *out = t;
  return LKV_OK;
fail:
  table_free(t);
  return rc;
}

void lkv_table_close(lkv_table *t) {
  if (t) table_free(t);
}

uint64_t lkv_table_entries(const lkv_table *t) { return t->entries; }
uint64_t lkv_table_file_size(const lkv_table *t) { return t->file_size; }

/* ==== data blocks ====================================================== */

/* A data block being read: pinned in the cache (h), in the file's
 * mapping, or held in a buffer of the caller (neither). */
typedef struct blockref {
  lkv_block b;
  lkv_cache_handle *h;
  int mapped;
} blockref;

/* Does the block sit in the caller's buffer (neither cached nor mapped)? */
static int in_buffer(const blockref *r) { return r->h == NULL && !r->mapped; }

static void release(lkv_table *t, blockref *r) {
  if (r->h) lkv_cache_release(t->cache, r->h);
  r->h = NULL;
}

static int verify_parse(const lkv_table *t, const ixent *e, const char *p,
                        lkv_block *b, lkv_err *err) {
  int rc = check_trailer(t, p, e->size, e->off, "block", err);
  if (rc) return rc;
  const char *why;
  if (lkv_block_parse(b, p, e->size, &why)) return corrupt(t, e->off, why, err);
  return LKV_OK;
}

static void free_cblock(void *p) { free(p); }

/* Make data block i readable in r. Without a cache its bytes land in
 * scratch (for a lookup, the caller's value buffer), so the common path
 * allocates nothing; with one, a miss reads straight into the new entry. */
static int load_block(lkv_table *t, size_t i, blockref *r, lkv_buf *scratch,
                      lkv_err *err) {
  const ixent *e = &t->ix[i];
  size_t n = (size_t)e->size + LKV_BLOCK_TRAILER_BYTES;
  r->h = NULL;
  r->mapped = 0;
  int rc;
  if (t->map) {
    /* The page cache is the block cache: nothing to copy or pin. */
    const char *p = t->map + e->off;
    uint64_t bit = (uint64_t)1 << (i % 64);
    _Atomic uint64_t *w = &t->verified[i / 64];
    if (t->counters) bump(t->counters, block_reads);
    if (atomic_load_explicit(w, memory_order_acquire) & bit) {
      const char *why;
      if (lkv_block_parse(&r->b, p, e->size, &why))
        return corrupt(t, e->off, why, err);
    } else {
      if ((rc = verify_parse(t, e, p, &r->b, err))) return rc;
      atomic_fetch_or_explicit(w, bit, memory_order_release);
    }
    r->mapped = 1;
    return LKV_OK;
  }
  if (t->cache) {
    r->h = lkv_cache_lookup(t->cache, t->number, e->off);
    if (r->h) {
      if (t->counters) bump(t->counters, cache_hits);
      r->b = ((cblock *)lkv_cache_value(r->h))->b;
      return LKV_OK;
    }
  }
  /* Not admitted to the cache: read into the caller's buffer (r->h stays
   * NULL, which tells the caller where the block is). */
  if (t->cache == NULL ||
      !lkv_cache_admit(t->cache, t->number, e->off, sizeof(cblock) + n)) {
    if (lkv_buf_reserve(scratch, n))
      return lkv_seterr(err, LKV_NOMEM, "reading block of %s", t->name);
    if ((rc = read_at(t, scratch->data, n, e->off, err))) return rc;
    if (t->counters) bump(t->counters, block_reads);
    return verify_parse(t, e, scratch->data, &r->b, err);
  }
  cblock *cb = malloc(sizeof *cb + n);
  if (cb == NULL)
    return lkv_seterr(err, LKV_NOMEM, "reading block of %s", t->name);
  if ((rc = read_at(t, cb->data, n, e->off, err)) == LKV_OK) {
    if (t->counters) bump(t->counters, block_reads);
    rc = verify_parse(t, e, cb->data, &cb->b, err);
  }
  if (rc) {
    free(cb);
    return rc;
  }
  r->h = lkv_cache_insert(t->cache, t->number, e->off, cb, sizeof *cb + n,
                          free_cblock);
  if (r->h == NULL)
    return lkv_seterr(err, LKV_NOMEM, "caching block of %s", t->name);
  r->b = cb->b;
  return LKV_OK;
}

/* The first block whose index key is >= target: the only block that can
 * hold the first entry >= target. nblocks when there is none. */
static size_t find_block(const lkv_table *t, lkv_slice target) {
  size_t lo = 0, hi = t->nblocks;
  if (hi == 0) return 0;
  size_t tn = target.n - LKV_TAG_BYTES;
  /* Outside the common prefix the answer is one of the two ends. */
  size_t m = tn < t->cp ? tn : t->cp;
  int c = m ? memcmp(target.p, t->ix[0].key, m) : 0;
  if (c < 0 || (c == 0 && tn < t->cp)) return 0;
  if (c > 0) return t->nblocks;
  /* A smaller window means a smaller key; equal windows need a full
   * comparison, done only inside the run of equal windows. */
  uint64_t w = key_window(target.p, tn, t->cp);
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (t->win[mid] < w)
      lo = mid + 1;
    else
      hi = mid;
  }
  hi = lo;
  while (hi < t->nblocks && t->win[hi] == w) hi++;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    lkv_slice k = {t->ix[mid].key, t->ix[mid].klen};
    if (lkv_icmp(k, target) < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

static int cursor_error(const lkv_table *t, const lkv_block_cursor *c,
                        uint64_t off, lkv_err *err) {
  if (c->code == LKV_NOMEM)
    return lkv_seterr(err, LKV_NOMEM, "reading block of %s", t->name);
  char why[96];
  snprintf(why, sizeof why, "%s (entry at byte %u of the block)", c->why,
           (unsigned)c->bad_off);
  return corrupt(t, off, why, err);
}

/* ==== point lookups ==================================================== */

int lkv_table_get(lkv_table *t, lkv_slice target, int *type, lkv_buf *val,
                  lkv_err *err) {
  /* a target too short to hold a tag is refused by the call below */
  uint64_t hash = target.n >= LKV_TAG_BYTES
                      ? lkv_bloom_hash(target.p, target.n - LKV_TAG_BYTES)
                      : 0;
  return lkv_table_get_hashed(t, target, hash, type, val, err);
}

int lkv_table_get_hashed(lkv_table *t, lkv_slice target, uint64_t hash,
                         int *type, lkv_buf *val, lkv_err *err) {
  if (target.n < LKV_TAG_BYTES)
    return lkv_seterr(err, LKV_INVALID, "lookup in %s: not an internal key",
                      t->name);
  lkv_slice uk = lkv_ikey_user(target);
  lkv_table_counters *cnt = t->counters;
  if (cnt) bump(cnt, bloom_checks);
  if (!lkv_bloom_may_contain(t->filter, t->filter_n, hash)) {
    if (cnt) bump(cnt, bloom_negatives);
    return LKV_NOTFOUND;
  }
  size_t i = find_block(t, target);
  if (i == t->nblocks) return LKV_NOTFOUND;
  blockref r;
  int rc = load_block(t, i, &r, val, err);
  if (rc) {
    val->len = 0;
    return rc;
  }
  lkv_block_cursor c;
  lkv_block_cursor_init(&c, &r.b);
  lkv_block_cursor_seek(&c, target);
  rc = LKV_NOTFOUND;
  if (c.code) {
    rc = cursor_error(t, &c, t->ix[i].off, err);
  } else if (c.valid &&
             lkv_ucmp(c.key, c.klen - LKV_TAG_BYTES, uk.p, uk.n) == 0) {
    int ty = (int)(lkv_get64(c.key + c.klen - LKV_TAG_BYTES) & 0xff);
    if (ty == LKV_TYPE_VALUE) {
      *type = ty;
      rc = LKV_OK;
      if (in_buffer(&r)) {
        /* The block sits in val itself: slide the value to the front. */
        memmove(val->data, c.val, c.vlen);
        val->len = c.vlen;
      } else if (lkv_buf_set(val, c.val, c.vlen)) {
        rc = lkv_seterr(err, LKV_NOMEM, "value from %s", t->name);
      }
    } else if (ty == LKV_TYPE_DELETE) {
      *type = ty;
      rc = LKV_OK;
      if (in_buffer(&r)) val->len = 0;
    } else {
      rc = corrupt(t, t->ix[i].off, "entry of unknown type", err);
    }
  }
  /* When the block was read into val, val holds block bytes: say so. */
  if (rc != LKV_OK && in_buffer(&r)) val->len = 0;
  lkv_block_cursor_free(&c);
  release(t, &r);
  return rc;
}

/* ==== iterating ========================================================= */

/* A table iterator is a two-level iterator (twolevel.h) over the block
 * index; its data iterators are block iterators, one reused for every
 * block the table iterator visits: its cursor's key buffer and its
 * scratch bytes outlive the blocks. The block it is on stays loaded
 * (pinned in the cache, mapped, or in scratch) until it moves to another. */
typedef struct block_iter {
  lkv_iiter base;
  lkv_table *t;
  size_t i; /* the block */
  blockref r;
  int loaded;      /* r holds block i */
  lkv_buf scratch; /* block bytes when there is no cache */
  lkv_block_cursor c;
  lkv_err err; /* err.code != 0: the block could not be loaded */
} block_iter;

#define BI(it) ((block_iter *)(it))
#define CBI(it) ((const block_iter *)(it))

static void bi_unload(block_iter *bi) {
  if (bi->loaded) release(bi->t, &bi->r);
  bi->loaded = 0;
  bi->c.valid = 0;
}

static void bi_seek_first(lkv_iiter *it) {
  if (BI(it)->loaded) lkv_block_cursor_seek_first(&BI(it)->c);
}

static void bi_seek(lkv_iiter *it, lkv_slice target) {
  block_iter *bi = BI(it);
  if (!bi->loaded) return;
  if (target.n < LKV_TAG_BYTES) /* shorter than any internal key */
    lkv_block_cursor_seek_first(&bi->c);
  else
    lkv_block_cursor_seek(&bi->c, target);
}

static void bi_next(lkv_iiter *it) {
  if (BI(it)->loaded) lkv_block_cursor_next(&BI(it)->c);
}

static void bi_seek_last(lkv_iiter *it) {
  if (BI(it)->loaded) lkv_block_cursor_seek_last(&BI(it)->c);
}

static void bi_prev(lkv_iiter *it) {
  if (BI(it)->loaded) lkv_block_cursor_prev(&BI(it)->c);
}

static int bi_valid(const lkv_iiter *it) {
  return CBI(it)->loaded && CBI(it)->c.valid;
}

static lkv_slice bi_key(const lkv_iiter *it) {
  lkv_slice s = {CBI(it)->c.key, CBI(it)->c.klen};
  return s;
}

static lkv_slice bi_value(const lkv_iiter *it) {
  lkv_slice s = {CBI(it)->c.val, CBI(it)->c.vlen};
  return s;
}

static int bi_status(const lkv_iiter *it, lkv_err *err) {
  const block_iter *bi = CBI(it);
  if (bi->err.code) return lkv_errcopy(err, &bi->err);
  if (bi->c.code) return cursor_error(bi->t, &bi->c, bi->t->ix[bi->i].off, err);
  return LKV_OK;
}

static void bi_destroy(lkv_iiter *it) {
  block_iter *bi = BI(it);
  bi_unload(bi);
  lkv_block_cursor_free(&bi->c);
  lkv_buf_free(&bi->scratch);
  free(bi);
}

static const lkv_iiter_ops block_iter_ops = {
    bi_seek_first, bi_seek,   bi_next,    bi_valid,     bi_key,
    bi_value,      bi_status, bi_destroy, bi_seek_last, bi_prev};

/* The index side: entry i is data block i. */
static size_t index_find(void *arg, size_t n, lkv_slice target) {
  (void)n;                                /* the table's nblocks */
  if (target.n < LKV_TAG_BYTES) return 0; /* before every key */
  return find_block(arg, target);
}

static lkv_iiter *index_open(void *arg, size_t i, lkv_iiter *prev) {
  lkv_table *t = arg;
  block_iter *bi = BI(prev);
  if (bi == NULL) {
    if ((bi = calloc(1, sizeof *bi)) == NULL) return NULL;
    bi->base.ops = &block_iter_ops;
    bi->t = t;
    lkv_block empty;
    memset(&empty, 0, sizeof empty);
    lkv_block_cursor_init(&bi->c, &empty);
  } else {
    bi_unload(bi);
  }
  bi->i = i;
  if (load_block(t, i, &bi->r, &bi->scratch, &bi->err) == LKV_OK) {
    bi->loaded = 1;
    lkv_block_cursor_reset(&bi->c, &bi->r.b);
  }
  return &bi->base;
}

static void index_park(lkv_iiter *d) { bi_unload(BI(d)); }

static const lkv_twolevel_index table_index = {index_find, index_open,
                                               index_park, "table iterator"};

lkv_iiter *lkv_table_iter_pinned(lkv_table *t, void (*done)(void *, void *),
                                 void *a, void *b) {
  return lkv_twolevel_new(&table_index, t, t->nblocks, 0, done, a, b);
}

lkv_iiter *lkv_table_iter(lkv_table *t) {
  return lkv_table_iter_pinned(t, NULL, NULL, NULL);
}
