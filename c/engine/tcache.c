/* tcache.c - the table cache of tcache.h: an LRU of open tables (cache.c
 * keyed by file number) plus the count of tables kept open outside it. */
#include "tcache.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "env.h"
#include "err.h"

struct lkv_tcache {
  const lkv_env *env;
  const char *dir;
  lkv_cache *lru;    /* open tables, charge 1 each */
  lkv_cache *blocks; /* the data block cache every table reads through */
  lkv_table_counters *counters;
  int use_mmap;
  int keep_limit;
  atomic_int kept; /* tables kept open by their callers */
};

lkv_tcache *lkv_tcache_new(const lkv_env *env, const char *dir,
                           int max_open_files, lkv_cache *blocks,
                           lkv_table_counters *counters, int use_mmap) {
  lkv_tcache *tc = calloc(1, sizeof *tc);
  if (tc == NULL) return NULL;
  /* Open tables: at most max_open_files / 2 kept for life, plus the LRU's
   * max_open_files - that (shard capacities round down), plus what
   * readers hold pinned for a moment. */
  tc->lru = lkv_cache_new((size_t)(max_open_files - max_open_files / 2));
  if (tc->lru == NULL) {
    free(tc);
    return NULL;
  }
  tc->env = env;
  tc->dir = dir;
  tc->blocks = blocks;
  tc->counters = counters;
  tc->use_mmap = use_mmap;
  tc->keep_limit = max_open_files / 2;
  atomic_init(&tc->kept, 0);
  return tc;
}

void lkv_tcache_free(lkv_tcache *tc) {
  if (tc == NULL) return;
  lkv_cache_free(tc->lru);
  free(tc);
}

void lkv_table_file_name(uint64_t number, char *buf, size_t n) {
  snprintf(buf, n, "%06" PRIu64 ".sst", number);
}

int lkv_tcache_path(const lkv_tcache *tc, uint64_t number, char *buf, size_t n,
                    lkv_err *err) {
  char name[64];
  lkv_table_file_name(number, name, sizeof name);
  return lkv_env_path(buf, n, tc->dir, name, err);
}

int lkv_tcache_open(lkv_tcache *tc, uint64_t number, lkv_table **t,
                    lkv_err *err) {
  char path[4096];
  int rc = lkv_tcache_path(tc, number, path, sizeof path, err);
  if (rc) return rc;
  return lkv_table_open(tc->env, path, number, tc->blocks, tc->counters,
                        tc->use_mmap, t, err);
}

int lkv_tcache_try_keep(lkv_tcache *tc) {
  if (atomic_fetch_add(&tc->kept, 1) < tc->keep_limit) return 1;
  atomic_fetch_sub(&tc->kept, 1);
  return 0;
}

void lkv_tcache_close_kept(lkv_tcache *tc, lkv_table *t) {
  lkv_table_close(t);
  atomic_fetch_sub(&tc->kept, 1);
}

static void table_free(void *t) { lkv_table_close(t); }

void lkv_tcache_insert(lkv_tcache *tc, uint64_t number, lkv_table *t) {
  lkv_cache_handle *h = lkv_cache_insert(tc->lru, number, 0, t, 1, table_free);
  if (h) lkv_cache_release(tc->lru, h); /* else insert closed it */
}

int lkv_tcache_get(lkv_tcache *tc, uint64_t number, lkv_table **t,
                   lkv_cache_handle **h, lkv_err *err) {
  *h = lkv_cache_lookup(tc->lru, number, 0);
  if (*h == NULL) {
    lkv_table *nt = NULL;
    int rc = lkv_tcache_open(tc, number, &nt, err);
    if (rc) return rc;
    *h = lkv_cache_insert(tc->lru, number, 0, nt, 1, table_free);
    if (*h == NULL) {
      char name[64];
      lkv_table_file_name(number, name, sizeof name);
      return lkv_seterr(err, LKV_NOMEM, "opening %s", name);
    }
  }
  *t = lkv_cache_value(*h);
  return LKV_OK;
}

void lkv_tcache_release(lkv_tcache *tc, lkv_cache_handle *h) {
  lkv_cache_release(tc->lru, h);
}

void lkv_tcache_remove_file(lkv_tcache *tc, uint64_t number) {
  char path[4096];
  if (lkv_tcache_path(tc, number, path, sizeof path, NULL) == LKV_OK)
    lkv_env_unlink(tc->env, path, NULL);
}

void lkv_tcache_delete(lkv_tcache *tc, uint64_t number) {
  /* an iterator may still pin the open table: it closes on release */
  lkv_cache_erase_file(tc->lru, number);
  lkv_tcache_remove_file(tc, number);
  if (tc->blocks) lkv_cache_erase_file(tc->blocks, number);
}
