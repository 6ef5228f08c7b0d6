/* tcache.h - the table cache: the open tables (fd, index, filter; see
 * table.h) of one database directory, keyed by file number, and the names
 * of their files. It knows tables and files, not versions or the db.
 *
 * A table is kept open one of two ways. While fewer than max_open_files / 2
 * are, the caller that opened it may keep it for the table's whole life
 * (the db's file metas do: their readers then skip the cache lookup and
 * its lock). Past that, tables live in an LRU of the other half of
 * max_open_files, pinned by a handle while in use and reopened on a miss.
 *
 * Thread safety: every function may be called from any thread. */
#ifndef LKV_TCACHE_H
#define LKV_TCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "cache.h"
#include "lunakv.h"
#include "table.h"

typedef struct lkv_tcache lkv_tcache;

/* A table cache for the tables of dir. Every table it opens reads its
 * blocks through `blocks` (may be NULL) and bumps `counters` (may be NULL),
 * with mmap reads when use_mmap; env, dir, blocks and counters must
 * outlive it. NULL when out of memory. */
lkv_tcache *lkv_tcache_new(const lkv_env *env, const char *dir,
                           int max_open_files, lkv_cache *blocks,
                           lkv_table_counters *counters, int use_mmap);
/* REQUIRES: no handle held and no kept table left open. */
void lkv_tcache_free(lkv_tcache *tc);

/* The file name of table `number` ("000012.sst", layout.md), and its
 * path in the cache's directory. */
void lkv_table_file_name(uint64_t number, char *buf, size_t n);
int lkv_tcache_path(const lkv_tcache *tc, uint64_t number, char *buf, size_t n,
                    lkv_err *err);

/* Open table `number` afresh (a reader the caller owns, to close with
 * lkv_table_close or hand to lkv_tcache_insert): every table reader of a
 * db is made here. */
int lkv_tcache_open(lkv_tcache *tc, uint64_t number, lkv_table **t,
                    lkv_err *err);

/* May the caller keep one more table open for the table's whole life? 1:
 * yes, and the slot counts until lkv_tcache_close_kept; 0: the limit is
 * reached, give the table to lkv_tcache_insert instead. */
int lkv_tcache_try_keep(lkv_tcache *tc);
void lkv_tcache_close_kept(lkv_tcache *tc, lkv_table *t);
/* The LRU takes t, table `number`, and closes it when it is evicted. */
void lkv_tcache_insert(lkv_tcache *tc, uint64_t number, lkv_table *t);

/* Table `number` from the LRU, opened and inserted on a miss (two threads
 * missing at once may both open it: the cache keeps one, the other closes
 * when released). *t stays open until lkv_tcache_release(*h). */
int lkv_tcache_get(lkv_tcache *tc, uint64_t number, lkv_table **t,
                   lkv_cache_handle **h, lkv_err *err);
void lkv_tcache_release(lkv_tcache *tc, lkv_cache_handle *h);

/* Delete table `number`'s file, which never got into a version (best
 * effort: what is left is deleted at the next open). */
void lkv_tcache_remove_file(lkv_tcache *tc, uint64_t number);
/* Table `number` left every version: evict it (a reader still holding a
 * handle closes it on release), delete its file (best effort: what is
 * left is deleted at the next open) and drop its cached blocks. */
void lkv_tcache_delete(lkv_tcache *tc, uint64_t number);

#endif
