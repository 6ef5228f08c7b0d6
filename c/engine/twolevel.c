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
  size_t i;         /* the entry `data` iterates; n when none */
  /* NULL, or valid: settle() leaves no invalid data iterator open, so
   * valid() needs no call. */
  lkv_iiter *data;
  lkv_iiter *parked; /* kept for the next open (ix->park), when data is NULL */
  int keep_on_seek;
  int rc;            /* sticky: the first error */
  lkv_err err;
  void (*done)(void *, void *);
  void *done_a, *done_b;
} twolevel;

#define TL(it) ((twolevel *)(it))

/* Make entry i (n: none) the open one. Only called while there is no
 * error, and the data iterator left behind has none to report: it is
 * valid (a seek leaves it), or settle() has just asked it for its status. */
static void set_data(twolevel *tl, size_t i) {
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
  if (tl->data == NULL) tl->rc = lkv_seterr(&tl->err, LKV_NOMEM, "%s", tl->ix->what);
}

static void settle(twolevel *tl, int forward) {
  while (tl->data && !tl->data->ops->valid(tl->data)) {
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
      tl->data->ops->seek_first(tl->data);
    else
      tl->data->ops->seek_last(tl->data);
  }
}

static void tl_seek_first(lkv_iiter *it) {
  twolevel *tl = TL(it);
  if (tl->rc) return;
  set_data(tl, 0);
  if (tl->data) tl->data->ops->seek_first(tl->data);
  settle(tl, 1);
}

static void tl_seek(lkv_iiter *it, lkv_slice target) {
  twolevel *tl = TL(it);
  if (tl->rc) return;
  size_t i = tl->ix->find(tl->arg, tl->n, target);
  if (!tl->keep_on_seek || tl->data == NULL || tl->i != i) set_data(tl, i);
  if (tl->data) tl->data->ops->seek(tl->data, target);
  settle(tl, 1);
}

static void tl_seek_last(lkv_iiter *it) {
  twolevel *tl = TL(it);
  if (tl->rc) return;
  set_data(tl, tl->n ? tl->n - 1 : tl->n);
  if (tl->data) tl->data->ops->seek_last(tl->data);
  settle(tl, 0);
}

static void tl_next(lkv_iiter *it) {
  twolevel *tl = TL(it);
  if (tl->data == NULL) return;
  tl->data->ops->next(tl->data);
  settle(tl, 1);
}

static void tl_prev(lkv_iiter *it) {
  twolevel *tl = TL(it);
  if (tl->data == NULL) return;
  tl->data->ops->prev(tl->data);
  settle(tl, 0);
}

static int tl_valid(const lkv_iiter *it) { return TL(it)->data != NULL; }

static lkv_slice tl_key(const lkv_iiter *it) {
  const lkv_iiter *d = TL(it)->data;
  return d->ops->key(d);
}

static lkv_slice tl_value(const lkv_iiter *it) {
  const lkv_iiter *d = TL(it)->data;
  return d->ops->value(d);
}

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

static const lkv_iiter_ops twolevel_ops = {
    tl_seek_first, tl_seek,   tl_next,    tl_valid,     tl_key,
    tl_value,      tl_status, tl_destroy, tl_seek_last, tl_prev};

lkv_iiter *lkv_twolevel_new(const lkv_twolevel_index *ix, void *arg,
                            size_t n, int flags,
                            void (*done)(void *, void *), void *done_a,
                            void *done_b) {
  twolevel *tl = calloc(1, sizeof *tl);
  if (tl == NULL) return NULL;
  tl->base.ops = &twolevel_ops;
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
    ei_move,   ei_seek,   ei_move,    ei_valid, ei_none,
    ei_none,   ei_status, ei_destroy, ei_move,  ei_move};

lkv_iiter *lkv_error_iter_new(int rc, const lkv_err *err) {
  error_iter *e = calloc(1, sizeof *e);
  if (e == NULL) return NULL;
  e->base.ops = &error_iter_ops;
  if (err) e->err = *err;
  e->err.code = rc;
  return &e->base;
}
