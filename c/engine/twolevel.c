/* twolevel.c - the two-level iterator of twolevel.h. At most one data
 * iterator is open; every move ends by settling: stepping over runs that
 * end (forward) or begin (backward) where the iterator stands into the
 * next or previous entry, until a valid position, the end, or an error. */
#include "twolevel.h"

#include <stdlib.h>

#include "err.h"

typedef struct twolevel {
  lkv_iiter base;
  const lkv_twolevel_index *ix;
  void *arg;
  size_t n;
  size_t i; /* the entry `data` iterates; n when none */
  /* NULL, or valid: settle() leaves no invalid data iterator open, so
   * valid() needs no call. */
  lkv_iiter *data;
  lkv_iiter *parked; /* kept for the next open (ix->park), when data is NULL */
  int keep_on_seek;
  int rc; /* sticky: the first error */
  lkv_err err;
  void (*done)(void *, void *);
  void *done_a, *done_b;
} twolevel;

#define TL(it) ((twolevel *)(it))

/* The code below exists twice. A level iterator's data iterators are
 * table iterators, two-level iterators themselves. With one copy, each
 * call through a data iterator (next, valid, key...) would be made from
 * one instruction to the table's functions and to the block's in turn,
 * which indirect branch predictors guess badly: a full level scan
 * measured slower than with the hand-written iterators, whose layers each
 * had call instructions of their own. So every function takes `outer` as
 * a constant and is inlined into two sets of ops: the inner set (data
 * iterators of any kind: a table's blocks) calls through the ops; the
 * outer set (a level: LKV_TWOLEVEL_OUTER) calls an inner two-level data
 * iterator's functions directly, and anything else through its ops. */
#if defined(__GNUC__)
#define TL_INLINE static inline __attribute__((always_inline))
#else
#define TL_INLINE static inline
#endif

static const lkv_iiter_ops inner_ops;
static void inner_seek_first(lkv_iiter *it);
static void inner_seek(lkv_iiter *it, lkv_slice target);
static void inner_next(lkv_iiter *it);
static void inner_seek_last(lkv_iiter *it);
static void inner_prev(lkv_iiter *it);
static lkv_slice inner_key(const lkv_iiter *it);
static lkv_slice inner_value(const lkv_iiter *it);

/* Is data iterator d one of ours, to call directly from the outer set? */
#define DIRECT(d, outer) ((outer) && (d)->ops == &inner_ops)

TL_INLINE int d_valid(const lkv_iiter *d, int outer) {
  return DIRECT(d, outer) ? TL(d)->data != NULL : d->ops->valid(d);
}
TL_INLINE void d_seek_first(lkv_iiter *d, int outer) {
  if (DIRECT(d, outer))
    inner_seek_first(d);
  else
    d->ops->seek_first(d);
}
TL_INLINE void d_seek(lkv_iiter *d, lkv_slice target, int outer) {
  if (DIRECT(d, outer))
    inner_seek(d, target);
  else
    d->ops->seek(d, target);
}
TL_INLINE void d_seek_last(lkv_iiter *d, int outer) {
  if (DIRECT(d, outer))
    inner_seek_last(d);
  else
    d->ops->seek_last(d);
}
TL_INLINE void d_next(lkv_iiter *d, int outer) {
  if (DIRECT(d, outer))
    inner_next(d);
  else
    d->ops->next(d);
}
TL_INLINE void d_prev(lkv_iiter *d, int outer) {
  if (DIRECT(d, outer))
    inner_prev(d);
  else
    d->ops->prev(d);
}
TL_INLINE lkv_slice d_key(const lkv_iiter *d, int outer) {
  return DIRECT(d, outer) ? inner_key(d) : d->ops->key(d);
}
TL_INLINE lkv_slice d_value(const lkv_iiter *d, int outer) {
  return DIRECT(d, outer) ? inner_value(d) : d->ops->value(d);
}

/* Make entry i (n: none) the open one. Only called while there is no
 * error, and the data iterator left behind has none to report: it is
 * valid (a seek leaves it), or settle() has just asked it for its status. */
TL_INLINE void set_data(twolevel *tl, size_t i) {
  lkv_iiter *prev = tl->data ? tl->data : tl->parked;
  tl->data = tl->parked = NULL;
  tl->i = i;
  if (i >= tl->n) {
    if (prev && tl->ix->park) {
      tl->ix->park(prev);
      tl->parked = prev;
    } else if (prev) {
      prev->ops->destroy(prev);
    }
    return;
  }
  tl->data = tl->ix->open(tl->arg, i, prev);
  if (tl->data == NULL)
    tl->rc = lkv_seterr(&tl->err, LKV_NOMEM, "%s", tl->ix->what);
}

TL_INLINE void settle(twolevel *tl, int forward, int outer) {
  while (tl->data && !d_valid(tl->data, outer)) {
    int rc = tl->data->ops->status(tl->data, &tl->err);
    if (rc) {
      tl->rc = rc;
      tl->data->ops->destroy(tl->data);
      tl->data = NULL;
      return;
    }
    if (!forward && tl->i == 0) { /* before the first entry: not valid */
      set_data(tl, tl->n);
      return;
    }
    set_data(tl, forward ? tl->i + 1 : tl->i - 1);
    if (tl->data == NULL) return;
    if (forward)
      d_seek_first(tl->data, outer);
    else
      d_seek_last(tl->data, outer);
  }
}

TL_INLINE void tl_seek_first(lkv_iiter *it, int outer) {
  twolevel *tl = TL(it);
  if (tl->rc) return;
  set_data(tl, 0);
  if (tl->data) d_seek_first(tl->data, outer);
  settle(tl, 1, outer);
}

TL_INLINE void tl_seek(lkv_iiter *it, lkv_slice target, int outer) {
  twolevel *tl = TL(it);
  if (tl->rc) return;
  size_t i = tl->ix->find(tl->arg, tl->n, target);
  if (!tl->keep_on_seek || tl->data == NULL || tl->i != i) set_data(tl, i);
  if (tl->data) d_seek(tl->data, target, outer);
  settle(tl, 1, outer);
}

TL_INLINE void tl_seek_last(lkv_iiter *it, int outer) {
  twolevel *tl = TL(it);
  if (tl->rc) return;
  set_data(tl, tl->n ? tl->n - 1 : tl->n);
  if (tl->data) d_seek_last(tl->data, outer);
  settle(tl, 0, outer);
}

TL_INLINE void tl_next(lkv_iiter *it, int outer) {
  twolevel *tl = TL(it);
  if (tl->data == NULL) return;
  d_next(tl->data, outer);
  settle(tl, 1, outer);
}

TL_INLINE void tl_prev(lkv_iiter *it, int outer) {
  twolevel *tl = TL(it);
  if (tl->data == NULL) return;
  d_prev(tl->data, outer);
  settle(tl, 0, outer);
}

static int tl_valid(const lkv_iiter *it) { return TL(it)->data != NULL; }

static int tl_status(const lkv_iiter *it, lkv_err *err) {
  const twolevel *tl = (const twolevel *)it;
  if (tl->rc) return lkv_errcopy(err, &tl->err);
  return tl->data ? tl->data->ops->status(tl->data, err) : LKV_OK;
}

static void tl_destroy(lkv_iiter *it) {
  twolevel *tl = TL(it);
  if (tl->data) tl->data->ops->destroy(tl->data);
  if (tl->parked) tl->parked->ops->destroy(tl->parked);
  if (tl->done) tl->done(tl->done_a, tl->done_b);
  free(tl);
}

#define TWOLEVEL_OPS(p, outer)                                           \
  static void p##seek_first(lkv_iiter *it) { tl_seek_first(it, outer); } \
  static void p##seek(lkv_iiter *it, lkv_slice target) {                 \
    tl_seek(it, target, outer);                                          \
  }                                                                      \
  static void p##next(lkv_iiter *it) { tl_next(it, outer); }             \
  static lkv_slice p##key(const lkv_iiter *it) {                         \
    return d_key(TL(it)->data, outer);                                   \
  }                                                                      \
  static lkv_slice p##value(const lkv_iiter *it) {                       \
    return d_value(TL(it)->data, outer);                                 \
  }                                                                      \
  static void p##seek_last(lkv_iiter *it) { tl_seek_last(it, outer); }   \
  static void p##prev(lkv_iiter *it) { tl_prev(it, outer); }             \
  static const lkv_iiter_ops p##ops = {                                  \
      p##seek_first, p##seek,   p##next,    tl_valid,     p##key,        \
      p##value,      tl_status, tl_destroy, p##seek_last, p##prev}

TWOLEVEL_OPS(inner_, 0);
TWOLEVEL_OPS(outer_, 1);

lkv_iiter *lkv_twolevel_new(const lkv_twolevel_index *ix, void *arg, size_t n,
                            int flags, void (*done)(void *, void *),
                            void *done_a, void *done_b) {
  twolevel *tl = calloc(1, sizeof *tl);
  if (tl == NULL) return NULL;
  tl->base.ops = flags & LKV_TWOLEVEL_OUTER ? &outer_ops : &inner_ops;
  tl->ix = ix;
  tl->arg = arg;
  tl->n = n;
  tl->i = n;
  tl->keep_on_seek = (flags & LKV_TWOLEVEL_KEEP_ON_SEEK) != 0;
  tl->done = done;
  tl->done_a = done_a;
  tl->done_b = done_b;
  return &tl->base;
}

/* ---- the error iterator ---------------------------------------------- */

typedef struct error_iter {
  lkv_iiter base;
  lkv_err err;
} error_iter;

static void ei_move(lkv_iiter *it) { (void)it; }
static void ei_seek(lkv_iiter *it, lkv_slice target) {
  (void)it;
  (void)target;
}
static int ei_valid(const lkv_iiter *it) {
  (void)it;
  return 0;
}
static lkv_slice ei_none(const lkv_iiter *it) {
  (void)it;
  lkv_slice s = {"", 0};
  return s;
}
static int ei_status(const lkv_iiter *it, lkv_err *err) {
  return lkv_errcopy(err, &((const error_iter *)it)->err);
}
static void ei_destroy(lkv_iiter *it) { free(it); }

static const lkv_iiter_ops error_iter_ops = {
    ei_move, ei_seek,   ei_move,    ei_valid, ei_none,
    ei_none, ei_status, ei_destroy, ei_move,  ei_move};

lkv_iiter *lkv_error_iter_new(int rc, const lkv_err *err) {
  error_iter *e = calloc(1, sizeof *e);
  if (e == NULL) return NULL;
  e->base.ops = &error_iter_ops;
  if (err) e->err = *err;
  e->err.code = rc;
  return &e->base;
}
