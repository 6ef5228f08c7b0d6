/* merge.c - the merging iterator: n sorted children, one sorted stream.
 * A binary heap of the valid children keyed by their current internal
 * key: a min-heap going forward, a max-heap going backward; next() (or
 * prev()) moves the top child and sifts it down. Turning around
 * re-positions every other child on the far side of the current key. */
#include <stdlib.h>

#include "err.h"
#include "iter.h"

typedef struct merge_iter {
  lkv_iiter base;
  int n;  /* children */
  int hn; /* valid children in the heap */
  lkv_iiter **kids;
  lkv_iiter **heap;
  int reverse; /* moving backward: the heap is a max-heap */
  int err_rc;  /* first child error seen, kept after that child is dropped */
  lkv_err err;
} merge_iter;

/* Does a come out of the heap before b? */
static inline int before(const merge_iter *m, lkv_iiter *a, lkv_iiter *b) {
  int c = lkv_icmp(a->ops->key(a), b->ops->key(b));
  return m->reverse ? c > 0 : c < 0;
}

static void sift_down(merge_iter *m, int i) {
  for (;;) {
    int l = 2 * i + 1, r = l + 1, s = i;
    if (l < m->hn && before(m, m->heap[l], m->heap[s])) s = l;
    if (r < m->hn && before(m, m->heap[r], m->heap[s])) s = r;
    if (s == i) return;
    lkv_iiter *t = m->heap[i];
    m->heap[i] = m->heap[s];
    m->heap[s] = t;
    i = s;
  }
}

/* A child that stopped on an error poisons the merge: silently skipping
 * its remaining keys would return a wrong (incomplete) view. */
static void note_error(merge_iter *m, lkv_iiter *c) {
  if (m->err_rc == 0) {
    int rc = c->ops->status(c, &m->err);
    if (rc) m->err_rc = rc;
  }
}

static void rebuild(merge_iter *m) {
  m->hn = 0;
  for (int i = 0; i < m->n; i++) {
    if (m->kids[i]->ops->valid(m->kids[i]))
      m->heap[m->hn++] = m->kids[i];
    else
      note_error(m, m->kids[i]);
  }
  for (int i = m->hn / 2 - 1; i >= 0; i--) sift_down(m, i);
  if (m->err_rc) m->hn = 0;
}

static void mg_seek_first(lkv_iiter *it) {
  merge_iter *m = (merge_iter *)it;
  m->reverse = 0;
  for (int i = 0; i < m->n; i++) m->kids[i]->ops->seek_first(m->kids[i]);
  rebuild(m);
}

static void mg_seek(lkv_iiter *it, lkv_slice target) {
  merge_iter *m = (merge_iter *)it;
  m->reverse = 0;
  for (int i = 0; i < m->n; i++) m->kids[i]->ops->seek(m->kids[i], target);
  rebuild(m);
}

/* Move the top child (next or prev) and restore the heap. */
static void advance_top(merge_iter *m, int forward) {
  lkv_iiter *top = m->heap[0];
  if (forward)
    top->ops->next(top);
  else
    top->ops->prev(top);
  if (!top->ops->valid(top)) {
    note_error(m, top);
    if (m->err_rc) {
      m->hn = 0;
      return;
    }
    m->heap[0] = m->heap[--m->hn];
  }
  if (m->hn > 1) sift_down(m, 0);
}

/* Turn around at the current entry: every other child goes to its first
 * entry after the current key (forward) or its last one before it
 * (backward); keys are unique, so none sits on the key itself. */
static void turn(merge_iter *m, int forward) {
  lkv_iiter *top = m->heap[0];
  lkv_slice k = top->ops->key(top); /* top does not move in the loop */
  for (int i = 0; i < m->n; i++) {
    lkv_iiter *c = m->kids[i];
    if (c == top) continue;
    c->ops->seek(c, k);
    if (forward) continue;
    if (c->ops->valid(c))
      c->ops->prev(c);
    else
      c->ops->seek_last(c);
  }
  if (forward)
    top->ops->next(top);
  else
    top->ops->prev(top);
  m->reverse = !forward;
  rebuild(m);
}

static void mg_next(lkv_iiter *it) {
  merge_iter *m = (merge_iter *)it;
  if (m->hn == 0) return;
  if (m->reverse)
    turn(m, 1);
  else
    advance_top(m, 1);
}

static void mg_prev(lkv_iiter *it) {
  merge_iter *m = (merge_iter *)it;
  if (m->hn == 0) return;
  if (!m->reverse)
    turn(m, 0);
  else
    advance_top(m, 0);
}

static void mg_seek_last(lkv_iiter *it) {
  merge_iter *m = (merge_iter *)it;
  m->reverse = 1;
  for (int i = 0; i < m->n; i++) m->kids[i]->ops->seek_last(m->kids[i]);
  rebuild(m);
}

static int mg_valid(const lkv_iiter *it) {
  return ((const merge_iter *)it)->hn > 0;
}

static lkv_slice mg_key(const lkv_iiter *it) {
  lkv_iiter *top = ((const merge_iter *)it)->heap[0];
  return top->ops->key(top);
}

static lkv_slice mg_value(const lkv_iiter *it) {
  lkv_iiter *top = ((const merge_iter *)it)->heap[0];
  return top->ops->value(top);
}

static int mg_status(const lkv_iiter *it, lkv_err *err) {
  const merge_iter *m = (const merge_iter *)it;
  if (m->err_rc) return lkv_errcopy(err, &m->err);
  return LKV_OK;
}

static void mg_destroy(lkv_iiter *it) {
  merge_iter *m = (merge_iter *)it;
  for (int i = 0; i < m->n; i++) m->kids[i]->ops->destroy(m->kids[i]);
  free(m->kids);
  free(m->heap);
  free(m);
}

static const lkv_iiter_ops merge_ops = {
    mg_seek_first, mg_seek,   mg_next,    mg_valid,     mg_key,
    mg_value,      mg_status, mg_destroy, mg_seek_last, mg_prev};

lkv_iiter *lkv_merge_iter_new(lkv_iiter **children, int n) {
  merge_iter *m = calloc(1, sizeof *m);
  if (m) {
    m->kids = malloc((size_t)(n ? n : 1) * sizeof *m->kids);
    m->heap = malloc((size_t)(n ? n : 1) * sizeof *m->heap);
  }
  if (m == NULL || m->kids == NULL || m->heap == NULL) {
    for (int i = 0; i < n; i++) children[i]->ops->destroy(children[i]);
    if (m) {
      free(m->kids);
      free(m->heap);
      free(m);
    }
    return NULL;
  }
  for (int i = 0; i < n; i++) m->kids[i] = children[i];
  m->n = n;
  m->base.ops = &merge_ops;
  return &m->base;
}
