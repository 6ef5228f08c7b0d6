/* twolevel.h - the two-level iterator: an index of n sorted entries, each
 * opening a data iterator over its own run of keys, walked as one
 * iterator. A table is its block index over data blocks (sst_read.c); a
 * level is its file list over tables (version.c). The runs must be
 * disjoint and in index order.
 *
 * Errors are sticky: once a data iterator fails (or cannot be opened),
 * the two-level iterator is not valid, every move is a no-op and status
 * returns that error. The lkv_iiter contract holds (iter.h). */
#ifndef LKV_TWOLEVEL_H
#define LKV_TWOLEVEL_H

#include <stddef.h>

#include "dbformat.h"
#include "iter.h"
#include "lunakv.h"

typedef struct lkv_twolevel_index {
  /* The first of the n entries whose run may hold a key >= target (the
   * first whose last key is >= target); n when none does. */
  size_t (*find)(void *arg, size_t n, lkv_slice target);
  /* A data iterator over entry i, not positioned yet. prev, when not
   * NULL, is a data iterator this index opened before, with no error and
   * no longer used: the function reuses it or destroys it. An entry whose
   * data cannot be read gives an iterator that is not valid and reports
   * the error; NULL only when out of memory. */
  lkv_iiter *(*open)(void *arg, size_t i, lkv_iiter *prev);
  /* When not NULL, a data iterator that is left (no entry is open) is
   * kept for the next open instead of destroyed, after park let go of
   * what it holds. A table parks its block iterator: its buffers outlive
   * the block. */
  void (*park)(lkv_iiter *d);
  const char *what; /* names the iterator in an out-of-memory error */
} lkv_twolevel_index;

/* A seek whose target falls in the entry already open seeks inside it
 * rather than opening it again (a level: the table stays pinned). Without
 * it every seek opens its entry afresh (a table: the block is loaded
 * again, through the cache, and counted as a read). */
#define LKV_TWOLEVEL_KEEP_ON_SEEK 1
/* The data iterators are two-level iterators themselves (a level over
 * tables): they are called directly rather than through their ops, so
 * the two depths share no indirect call (twolevel.c says why). */
#define LKV_TWOLEVEL_OUTER 2

/* A two-level iterator over the n entries of ix (arg is passed to its
 * functions and must outlive the iterator). done(done_a, done_b), when
 * done is not NULL, is called once the iterator is destroyed: it lets go
 * of what kept the index alive (a table cache pin). NULL when out of
 * memory (done is not called). */
lkv_iiter *lkv_twolevel_new(const lkv_twolevel_index *ix, void *arg, size_t n,
                            int flags, void (*done)(void *, void *),
                            void *done_a, void *done_b);

/* An iterator that is never valid and whose status is rc with err's
 * message: what an entry that cannot be opened reads as. NULL when out of
 * memory. */
lkv_iiter *lkv_error_iter_new(int rc, const lkv_err *err);

#endif
