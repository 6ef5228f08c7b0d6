/* cache.h - the block cache: a sharded LRU of decoded data blocks, bounded
 * in bytes, keyed by (file number, block offset). Shared by every table
 * reader of a db; all functions are thread safe.
 *
 * Entries are reference counted: a lookup or insert returns a handle that
 * pins the block until lkv_cache_release; eviction only frees unpinned
 * entries (a pinned entry past capacity is freed on its last release). */
#ifndef LKV_CACHE_H
#define LKV_CACHE_H

#include <stddef.h>
#include <stdint.h>

typedef struct lkv_cache lkv_cache;
typedef struct lkv_cache_handle lkv_cache_handle;

/* Shards, each with its own lock and LRU list; an entry's shard is picked
 * by the hash of its key. A tunable of its own: it has nothing to do with
 * LKV_THREAD_STRIPES (env.h), which slots counters per thread, although
 * both happen to be 16. */
#define LKV_CACHE_SHARD_BITS 4
#define LKV_CACHE_SHARDS (1 << LKV_CACHE_SHARD_BITS)

/* The capacity is split evenly over the LKV_CACHE_SHARDS shards, rounded
 * down: the cache never holds more than capacity_bytes of unpinned
 * entries, and a capacity under LKV_CACHE_SHARDS stores nothing (every
 * lookup misses; inserted entries live while pinned). NULL when out of
 * memory. */
lkv_cache *lkv_cache_new(size_t capacity_bytes);
void lkv_cache_free(lkv_cache *c); /* REQUIRES: no handle is held */

/* A pinned handle, or NULL on a miss. */
lkv_cache_handle *lkv_cache_lookup(lkv_cache *c, uint64_t file, uint64_t off);
/* Insert value (charge bytes; freed with free_fn(value) when evicted and
 * unpinned) and return it pinned. If the key is present the new value
 * replaces it for later lookups. NULL only when out of memory (then
 * free_fn(value) has been called). */
lkv_cache_handle *lkv_cache_insert(lkv_cache *c, uint64_t file, uint64_t off,
                                   void *value, size_t charge,
                                   void (*free_fn)(void *value));
/* Should a block of `charge` bytes that just missed be inserted? Yes
 * while its shard has room for it (nothing would be evicted). Once full,
 * yes on its second miss within a short window (a 2Q-style ghost list
 * about half the cache's block count): uniform reads over data far larger
 * than the cache then stop churning it (allocating and evicting a block
 * per read), while blocks read again soon, the hot ones, still get in.
 * One-pass readers (scans, compactions) rarely admit, so they do not
 * flush a full cache. */
int lkv_cache_admit(lkv_cache *c, uint64_t file, uint64_t off, size_t charge);
void *lkv_cache_value(lkv_cache_handle *h);
void lkv_cache_release(lkv_cache *c, lkv_cache_handle *h);
/* Drop every unpinned entry of one file (called when the file is deleted). */
void lkv_cache_erase_file(lkv_cache *c, uint64_t file);
size_t lkv_cache_usage(lkv_cache *c); /* bytes charged now */

#endif
