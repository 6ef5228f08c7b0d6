/* memtable.h - the in-memory sorted table of recent writes: a skiplist of
 * internal keys over an arena, keeping every version.
 *
 * Thread safety: one writer at a time (the db's write leader), any number
 * of concurrent readers without locks: a node is fully written before it
 * is linked with a release store, readers follow links with acquire loads.
 * The memtable is reference counted; the last unref frees the arena.
 *
 * A Bloom filter over the user keys (bloom.h's live filter) answers most
 * lookups of keys the memtable does not hold without walking the
 * skiplist: the usual case once the data outgrows the memtable. */
#ifndef LKV_MEMTABLE_H
#define LKV_MEMTABLE_H

#include <stddef.h>
#include <stdint.h>

#include "dbformat.h"
#include "iter.h"
#include "lunakv.h"

typedef struct lkv_mem lkv_mem;

/* refs = 1; NULL when out of memory. limit: the bytes at which the db
 * freezes it (max_memtable_size), which sizes its filter. */
lkv_mem *lkv_mem_new(size_t limit);
void lkv_mem_ref(lkv_mem *m);
void lkv_mem_unref(lkv_mem *m);

/* REQUIRES: external serialisation of writers. LKV_NOMEM on failure. */
int lkv_mem_add(lkv_mem *m, uint64_t seq, int type, const char *key,
                size_t klen, const char *val, size_t vlen);

/* Newest entry for ukey with seq <= at. LKV_OK with *type (value copied
 * into val when LKV_TYPE_VALUE), LKV_NOTFOUND, or LKV_NOMEM. hash is
 * lkv_bloom_hash(ukey, klen), computed once by a caller that asks several
 * memtables and tables. A writer's entry is found once its add has
 * returned and the caller has seen that (the db: through last_seq). */
int lkv_mem_get(lkv_mem *m, const char *ukey, size_t klen, uint64_t hash,
                uint64_t at, int *type, lkv_buf *val);

/* The filter's answer, which lkv_mem_get asks first: 0 when no entry for
 * the user key with this hash was added, 1 when one may have been. */
int lkv_mem_may_hold(const lkv_mem *m, uint64_t hash);

size_t lkv_mem_usage(const lkv_mem *m);     /* arena bytes */
uint64_t lkv_mem_entries(const lkv_mem *m); /* versions stored */

/* Iterator over every entry; holds a reference to m. NULL on NOMEM. */
lkv_iiter *lkv_mem_iter(lkv_mem *m);

/* The number of the WAL file that holds this memtable's writes. */
/* The log that holds this memtable's writes, and the sequence number
 * that log starts at (its first record's). */
uint64_t lkv_mem_wal_number(const lkv_mem *m);
uint64_t lkv_mem_wal_start(const lkv_mem *m);
void lkv_mem_set_wal(lkv_mem *m, uint64_t number, uint64_t start_seq);

#endif
