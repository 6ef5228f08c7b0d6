/* table.h - SSTables: immutable sorted files of internal keys (the format
 * is in sst_format.md). A builder writes one; a reader answers point
 * lookups with at most one data-block read (Bloom filter first, then the
 * in-memory index picks the block) and iterates in internal-key order.
 *
 * Thread safety: a reader (lkv_table) is immutable after open (but for
 * the atomic bits of verified mapped blocks) and may be used by many
 * threads at once (lookups use pread or the mapping). A builder and an
 * iterator belong to one thread. */
#ifndef LKV_TABLE_H
#define LKV_TABLE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "cache.h"
#include "dbformat.h"
#include "env.h" /* LKV_THREAD_STRIPES */
#include "iter.h"
#include "lunakv.h"

typedef struct lkv_table_opts {
  int bloom_bits_per_key;   /* > 0 */
  int bloom_hash_functions; /* 0 = derived from bits per key */
  size_t bloom_min_bits;    /* a filter has at least this many bits */
  int restart_interval;     /* a full key every Nth entry in a block (>= 1) */
  size_t block_size;        /* target uncompressed data block size */
  const lkv_env *env;       /* the file system; NULL = POSIX */
} lkv_table_opts;

/* Counters the readers bump, striped so that threads reading at once do
 * not share a cache line: a thread bumps the stripe lkv_thread_stripe()
 * names (env.h). Owned by the db; read the sums with
 * lkv_table_counters_total. */
typedef struct lkv_counter_stripe {
  _Alignas(64) atomic_uint_fast64_t bloom_checks;
  atomic_uint_fast64_t bloom_negatives;
  atomic_uint_fast64_t block_reads;
  atomic_uint_fast64_t cache_hits;
} lkv_counter_stripe;

typedef struct lkv_table_counters {
  lkv_counter_stripe s[LKV_THREAD_STRIPES];
} lkv_table_counters;

typedef struct lkv_counter_totals {
  uint64_t bloom_checks, bloom_negatives, block_reads, cache_hits;
} lkv_counter_totals;

void lkv_table_counters_total(const lkv_table_counters *c,
                              lkv_counter_totals *out);

/* ---- building -------------------------------------------------------- */

typedef struct lkv_table_builder lkv_table_builder;

/* Create `path` (truncating) for writing. */
int lkv_tb_new(const char *path, const lkv_table_opts *o,
               lkv_table_builder **out, lkv_err *err);
/* Append one entry. REQUIRES: ikey sorts after every key added before. */
int lkv_tb_add(lkv_table_builder *b, lkv_slice ikey, lkv_slice value,
               lkv_err *err);
uint64_t lkv_tb_entries(const lkv_table_builder *b);
/* Bytes the file will have if finished now (approximately). */
uint64_t lkv_tb_size(const lkv_table_builder *b);
/* Write the filter, index and footer, fsync and close the file; frees b.
 * *file_size gets the final size. On failure the file is removed. */
int lkv_tb_finish(lkv_table_builder *b, uint64_t *file_size, lkv_err *err);
/* Close and remove the file; frees b. */
void lkv_tb_abandon(lkv_table_builder *b);

/* ---- reading --------------------------------------------------------- */

typedef struct lkv_table lkv_table;

/* Open the table at `path` (its name, e.g. "000012.sst", is used in error
 * messages), read and verify the footer, the index and the filter. Any
 * mismatch is LKV_CORRUPTION naming the file and offset. `file_number`
 * keys the block cache (may be NULL for no cache); `counters` may be NULL.
 * Both must outlive the table. With use_mmap the data blocks are read
 * through a read-only mapping of the file (while fewer than 1000 tables
 * are mapped; pread past that) instead of pread and the cache: each
 * block's checksum is still verified, once per open, on first use. */
int lkv_table_open(const lkv_env *env, const char *path, uint64_t file_number,
                   lkv_cache *cache, lkv_table_counters *counters, int use_mmap,
                   lkv_table **out, lkv_err *err);
void lkv_table_close(lkv_table *t);

/* Find the first entry with internal key >= target whose user key equals
 * target's user key (target is (ukey, at, LKV_TYPE_SEEK): the newest
 * version with seq <= at). Consults the Bloom filter first.
 * LKV_OK: *type is LKV_TYPE_VALUE (value copied into val) or
 * LKV_TYPE_DELETE. LKV_NOTFOUND: no such entry in this table. */
int lkv_table_get(lkv_table *t, lkv_slice target, int *type, lkv_buf *val,
                  lkv_err *err);
/* The same with hash = lkv_bloom_hash(target's user key), for a caller
 * that asks several tables about one key and hashes it once. */
int lkv_table_get_hashed(lkv_table *t, lkv_slice target, uint64_t hash,
                         int *type, lkv_buf *val, lkv_err *err);

/* An iterator over all entries (internal keys, every version). The table
 * must stay open until the iterator is destroyed. NULL when out of
 * memory. */
lkv_iiter *lkv_table_iter(lkv_table *t);
/* The same, calling done(a, b) once the iterator is destroyed: whatever
 * keeps t open (a table cache pin) is let go with the iterator. NULL when
 * out of memory (done is not called). */
lkv_iiter *lkv_table_iter_pinned(lkv_table *t, void (*done)(void *, void *),
                                 void *a, void *b);

uint64_t lkv_table_entries(const lkv_table *t);
uint64_t lkv_table_file_size(const lkv_table *t);

/* Grow buf to hold at least n bytes; LKV_NOMEM on failure. */
int lkv_buf_reserve(lkv_buf *b, size_t n);
int lkv_buf_set(lkv_buf *b, const char *p, size_t n);

#endif
