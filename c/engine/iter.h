/* iter.h - the internal iterator: one interface over memtables, SST blocks,
 * whole tables, levels and their merge. Keys are internal keys (see
 * dbformat.h) in internal-key order; every version of a key is visited.
 *
 * Contract: key/value slices are borrowed until the next move or destroy.
 * Moving an iterator that is not valid is a no-op. After an I/O or
 * corruption error the iterator is not valid and status() returns the
 * error. An iterator is used by one thread. */
#ifndef LKV_ITER_H
#define LKV_ITER_H

#include "dbformat.h"
#include "lunakv.h"

typedef struct lkv_iiter lkv_iiter;

typedef struct lkv_iiter_ops {
  void (*seek_first)(lkv_iiter *it);
  /* first entry whose internal key is >= target */
  void (*seek)(lkv_iiter *it, lkv_slice target);
  void (*next)(lkv_iiter *it);
  int (*valid)(const lkv_iiter *it);
  lkv_slice (*key)(const lkv_iiter *it);
  lkv_slice (*value)(const lkv_iiter *it);
  int (*status)(const lkv_iiter *it, lkv_err *err);
  void (*destroy)(lkv_iiter *it);
  void (*seek_last)(lkv_iiter *it);
  /* the entry before the current one (not valid before the first) */
  void (*prev)(lkv_iiter *it);
} lkv_iiter_ops;

struct lkv_iiter {
  const lkv_iiter_ops *ops;
};

/* A merge of n child iterators (owned: destroyed with the merge). Equal
 * internal keys cannot occur (sequence numbers are unique). */
lkv_iiter *lkv_merge_iter_new(lkv_iiter **children, int n);

#endif
