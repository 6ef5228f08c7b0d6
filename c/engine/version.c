/* version.c - table files, versions (immutable file sets per level),
 * edits between them, and reads through a version (version.h). */
#include "version.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "twolevel.h"

/* ---- file metas ------------------------------------------------------ */

lkv_fmeta *lkv_fmeta_new(lkv_files *fs, uint64_t number, uint64_t size,
                         lkv_slice smallest, lkv_slice largest) {
  lkv_fmeta *f = calloc(1, sizeof *f);
  if (f == NULL) return NULL;
  f->smallest = malloc(smallest.n);
  f->largest = malloc(largest.n);
  if (f->smallest == NULL || f->largest == NULL) {
    free(f->smallest);
    free(f->largest);
    free(f);
    return NULL;
  }
  memcpy(f->smallest, smallest.p, smallest.n);
  memcpy(f->largest, largest.p, largest.n);
  f->smallest_len = smallest.n;
  f->largest_len = largest.n;
  atomic_init(&f->refs, 1);
  atomic_init(&f->obsolete, 0);
  f->number = number;
  f->size = size;
  f->files = fs;
  atomic_init(&f->allowed_seeks, lkv_fmeta_seek_budget(size));
  return f;
}

/* LevelDB's budget: one wasted lookup costs about what compacting 16 KiB
 * does, so a table that keeps costing seeks is worth rewriting. */
int lkv_fmeta_seek_budget(uint64_t size) {
  uint64_t seeks = size / 16384;
  return seeks < 100 ? 100 : seeks > (1u << 30) ? (1 << 30) : (int)seeks;
}

void lkv_fmeta_ref(lkv_fmeta *f) {
  atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed);
}

static void fmeta_free(lkv_fmeta *f) {
  if (f->table) lkv_tcache_close_kept(f->files->tc, f->table);
  free(f->smallest);
  free(f->largest);
  free(f);
}

/* The last reference frees the meta; a file that left the current version
 * goes to the janitor, which closes and deletes it, so a reader still on
 * an old version (or an iterator) never loses a file under it, and the
 * read that drops the last reference pays for neither. */
void lkv_fmeta_unref(lkv_fmeta *f) {
  if (f == NULL) return;
  if (atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) != 1) return;
  if (!atomic_load(&f->obsolete)) {
    fmeta_free(f);
    return;
  }
  lkv_files *fs = f->files;
  pthread_mutex_lock(&fs->mu);
  f->next_dead = fs->dead;
  fs->dead = f;
  pthread_cond_signal(&fs->cv);
  pthread_mutex_unlock(&fs->mu);
}

/* ---- the dead files and their janitor -------------------------------- */

void lkv_files_init(lkv_files *fs) {
  memset(fs, 0, sizeof *fs);
  pthread_mutex_init(&fs->mu, NULL);
  pthread_cond_init(&fs->cv, NULL);
}

void lkv_files_destroy(lkv_files *fs) {
  pthread_mutex_destroy(&fs->mu);
  pthread_cond_destroy(&fs->cv);
}

void lkv_files_bury(lkv_files *fs) {
  pthread_mutex_lock(&fs->mu);
  lkv_fmeta *f = fs->dead;
  fs->dead = NULL;
  pthread_mutex_unlock(&fs->mu);
  while (f) {
    lkv_fmeta *next = f->next_dead;
    uint64_t number = f->number;
    fmeta_free(f);
    lkv_tcache_delete(fs->tc, number);
    f = next;
  }
}

void *lkv_files_janitor(void *arg) {
  lkv_files *fs = arg;
  pthread_mutex_lock(&fs->mu);
  for (;;) {
    while (fs->dead == NULL && !fs->stop) pthread_cond_wait(&fs->cv, &fs->mu);
    if (fs->dead == NULL) break;
    pthread_mutex_unlock(&fs->mu);
    lkv_files_bury(fs);
    pthread_mutex_lock(&fs->mu);
  }
  pthread_mutex_unlock(&fs->mu);
  return NULL;
}

void lkv_files_stop(lkv_files *fs) {
  pthread_mutex_lock(&fs->mu);
  fs->stop = 1;
  pthread_cond_signal(&fs->cv);
  pthread_mutex_unlock(&fs->mu);
}

/* ---- open tables ----------------------------------------------------- */

void lkv_fmeta_keep_table(lkv_fmeta *f, lkv_table *t) {
  lkv_tcache *tc = f->files->tc;
  if (lkv_tcache_try_keep(tc))
    f->table = t;
  else
    lkv_tcache_insert(tc, f->number, t);
}

int lkv_fmeta_pin(lkv_fmeta *f, lkv_table **t, lkv_cache_handle **h,
                  lkv_err *err) {
  if (f->table) { /* kept open for its life by f */
    *t = f->table;
    *h = NULL;
    return LKV_OK;
  }
  return lkv_tcache_get(f->files->tc, f->number, t, h, err);
}

void lkv_fmeta_unpin(lkv_fmeta *f, lkv_cache_handle *h) {
  if (h) lkv_tcache_release(f->files->tc, h);
}

static void unpin_done(void *f, void *h) { lkv_fmeta_unpin(f, h); }

lkv_iiter *lkv_fmeta_iter(lkv_fmeta *f) {
  lkv_table *t;
  lkv_cache_handle *h; /* NULL: f keeps the table open itself */
  lkv_err err = {0};
  int rc = lkv_fmeta_pin(f, &t, &h, &err);
  if (rc) return lkv_error_iter_new(rc, &err);
  lkv_iiter *it = lkv_table_iter_pinned(t, h ? unpin_done : NULL, f, h);
  if (it == NULL) lkv_fmeta_unpin(f, h);
  return it;
}

/* ---- versions -------------------------------------------------------- */

lkv_version *lkv_version_new(void) {
  lkv_version *v = calloc(1, sizeof *v);
  if (v) atomic_init(&v->refs, 1);
  return v;
}

void lkv_version_ref(lkv_version *v) {
  atomic_fetch_add_explicit(&v->refs, 1, memory_order_relaxed);
}

void lkv_version_unref(lkv_version *v) {
  if (v == NULL) return;
  if (atomic_fetch_sub_explicit(&v->refs, 1, memory_order_acq_rel) != 1) return;
  for (int l = 0; l < LKV_MAX_LEVELS; l++) {
    for (int i = 0; i < v->n[l]; i++) lkv_fmeta_unref(v->files[l][i]);
    free(v->files[l]);
  }
  free(v);
}

int lkv_version_count(const lkv_version *v) {
  int n = 0;
  for (int l = 0; l < LKV_MAX_LEVELS; l++) n += v->n[l];
  return n;
}

uint64_t lkv_version_level_bytes(const lkv_version *v, int level) {
  uint64_t b = 0;
  for (int i = 0; i < v->n[level]; i++) b += v->files[level][i]->size;
  return b;
}

/* ---- edits ----------------------------------------------------------- */

int lkv_edit_add(lkv_edit *e, int level, lkv_fmeta *f) {
  if (e->nadd == e->cap_add) {
    int cap = e->cap_add ? e->cap_add * 2 : 16;
    lkv_fmeta **a = realloc(e->add, (size_t)cap * sizeof *a);
    if (a == NULL) return LKV_NOMEM;
    e->add = a;
    int *l = realloc(e->add_level, (size_t)cap * sizeof *l);
    if (l == NULL) return LKV_NOMEM;
    e->add_level = l;
    e->cap_add = cap;
  }
  e->add[e->nadd] = f;
  e->add_level[e->nadd++] = level;
  return LKV_OK;
}

int lkv_edit_del(lkv_edit *e, int level, uint64_t number) {
  if (e->ndel == e->cap_del) {
    int cap = e->cap_del ? e->cap_del * 2 : 16;
    uint64_t *d = realloc(e->del, (size_t)cap * sizeof *d);
    if (d == NULL) return LKV_NOMEM;
    e->del = d;
    int *l = realloc(e->del_level, (size_t)cap * sizeof *l);
    if (l == NULL) return LKV_NOMEM;
    e->del_level = l;
    e->cap_del = cap;
  }
  e->del[e->ndel] = number;
  e->del_level[e->ndel++] = level;
  return LKV_OK;
}

void lkv_edit_free(lkv_edit *e) {
  for (int i = 0; i < e->nadd; i++) lkv_fmeta_unref(e->add[i]);
  free(e->add);
  free(e->add_level);
  free(e->del);
  free(e->del_level);
  memset(e, 0, sizeof *e);
}

static int deleted(const lkv_edit *e, int level, uint64_t number) {
  for (int i = 0; i < e->ndel; i++)
    if (e->del[i] == number && e->del_level[i] == level) return 1;
  return 0;
}

static int cmp_newest_first(const void *a, const void *b) {
  const lkv_fmeta *x = *(lkv_fmeta *const *)a, *y = *(lkv_fmeta *const *)b;
  return x->number < y->number ? 1 : x->number > y->number ? -1 : 0;
}

static int cmp_smallest(const void *a, const void *b) {
  const lkv_fmeta *x = *(lkv_fmeta *const *)a, *y = *(lkv_fmeta *const *)b;
  lkv_slice sx = {x->smallest, x->smallest_len},
            sy = {y->smallest, y->smallest_len};
  return lkv_icmp(sx, sy);
}

lkv_version *lkv_version_apply(const lkv_version *base, const lkv_edit *e) {
  lkv_version *v = lkv_version_new();
  if (v == NULL) return NULL;
  for (int l = 0; l < LKV_MAX_LEVELS; l++) {
    int cap = (base ? base->n[l] : 0);
    for (int i = 0; i < e->nadd; i++) cap += e->add_level[i] == l;
    if (cap == 0) continue;
    v->files[l] = malloc((size_t)cap * sizeof(lkv_fmeta *));
    if (v->files[l] == NULL) {
      lkv_version_unref(v);
      return NULL;
    }
    for (int i = 0; base && i < base->n[l]; i++) {
      lkv_fmeta *f = base->files[l][i];
      if (deleted(e, l, f->number)) continue;
      lkv_fmeta_ref(f);
      v->files[l][v->n[l]++] = f;
    }
    for (int i = 0; i < e->nadd; i++) {
      if (e->add_level[i] != l) continue;
      lkv_fmeta_ref(e->add[i]);
      v->files[l][v->n[l]++] = e->add[i];
    }
    qsort(v->files[l], (size_t)v->n[l], sizeof(lkv_fmeta *),
          l == 0 ? cmp_newest_first : cmp_smallest);
  }
  return v;
}

/* ---- lookups --------------------------------------------------------- */

static int ukey_before_file(const char *k, size_t kn, const lkv_fmeta *f) {
  return lkv_ucmp(k, kn, f->smallest, f->smallest_len - LKV_TAG_BYTES) < 0;
}

static int ukey_after_file(const char *k, size_t kn, const lkv_fmeta *f) {
  return lkv_ucmp(k, kn, f->largest, f->largest_len - LKV_TAG_BYTES) > 0;
}

/* Index of the first file in a sorted level whose largest user key >= k. */
static int find_file(lkv_fmeta *const *files, int n, const char *k, size_t kn) {
  int lo = 0, hi = n;
  while (lo < hi) {
    int mid = lo + (hi - lo) / 2;
    if (ukey_after_file(k, kn, files[mid]))
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

static int table_get(lkv_fmeta *f, lkv_slice target, uint64_t hash, int *type,
                     lkv_buf *val, lkv_err *err) {
  lkv_table *t;
  lkv_cache_handle *h;
  int rc = lkv_fmeta_pin(f, &t, &h, err);
  if (rc) return rc;
  rc = lkv_table_get_hashed(t, target, hash, type, val, err);
  lkv_fmeta_unpin(f, h);
  return rc;
}

/* The table of `level` whose range covers ukey (at L0, the newest one
 * at index >= *from, which is advanced past it), or NULL. */
static lkv_fmeta *covering(const lkv_version *v, int level, const char *k,
                           size_t kn, int *from) {
  if (level == 0) {
    for (int i = *from; i < v->n[0];
         i++) { /* L0 ranges overlap: newest first */
      lkv_fmeta *f = v->files[0][i];
      if (ukey_before_file(k, kn, f) || ukey_after_file(k, kn, f)) continue;
      *from = i + 1;
      return f;
    }
    *from = v->n[0];
    return NULL;
  }
  int i = find_file(v->files[level], v->n[level], k, kn);
  if (i >= v->n[level] || ukey_before_file(k, kn, v->files[level][i]))
    return NULL;
  return v->files[level][i];
}

int lkv_version_get(lkv_version *v, lkv_slice target, uint64_t hash, int *type,
                    lkv_buf *val, lkv_seek_charge *charge, lkv_err *err) {
  const char *k = target.p;
  size_t kn = target.n - LKV_TAG_BYTES;
  lkv_fmeta *first = NULL;
  int first_level = 0;
  charge->f = NULL;
  for (int l = 0; l < LKV_MAX_LEVELS; l++) {
    int from = 0;
    lkv_fmeta *f;
    while ((f = covering(v, l, k, kn, &from)) != NULL) {
      if (first == NULL) {
        first = f;
        first_level = l;
      } else if (charge->f == NULL) {
        charge->f =
            first; /* a second table was needed: the first cost a seek */
        charge->level = first_level;
      }
      int rc = table_get(f, target, hash, type, val, err);
      if (rc != LKV_NOTFOUND) return rc;
      if (l > 0) break;
    }
  }
  return LKV_NOTFOUND;
}

int lkv_version_sample(const lkv_version *v, const char *ukey, size_t klen,
                       lkv_seek_charge *charge) {
  int matches = 0;
  charge->f = NULL;
  for (int l = 0; l < LKV_MAX_LEVELS; l++) {
    int from = 0;
    lkv_fmeta *f;
    while ((f = covering(v, l, ukey, klen, &from)) != NULL) {
      if (++matches == 1) {
        charge->f = f;
        charge->level = l;
      } else {
        return 1;
      }
      if (l > 0) break;
    }
  }
  charge->f = NULL;
  return 0;
}

int lkv_version_deeper_overlaps(const lkv_version *v, int level,
                                const char *ukey, size_t klen) {
  for (int l = level + 1; l < LKV_MAX_LEVELS; l++) {
    int i = find_file(v->files[l], v->n[l], ukey, klen);
    if (i < v->n[l] && !ukey_before_file(ukey, klen, v->files[l][i])) return 1;
  }
  return 0;
}

/* A level iterator is a two-level iterator (twolevel.h) over the sorted,
 * disjoint tables of one level >= 1, with one table open at a time: a seek
 * searches the file list and touches one table, not all of them, and a
 * seek that stays in the open table keeps it (and its pin). */
static size_t level_find(void *arg, size_t n, lkv_slice target) {
  lkv_fmeta *const *files = arg;
  size_t lo = 0, hi = n; /* the first file whose largest key >= target */
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    lkv_slice l = {files[mid]->largest, files[mid]->largest_len};
    if (lkv_icmp(l, target) < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

static lkv_iiter *level_open(void *arg, size_t i, lkv_iiter *prev) {
  lkv_fmeta *const *files = arg;
  if (prev) prev->ops->destroy(prev); /* unpins its table first */
  return lkv_fmeta_iter(files[i]);
}

static const lkv_twolevel_index level_index = {level_find, level_open, NULL,
                                               "level iterator"};

lkv_iiter *lkv_level_iter_new(lkv_fmeta *const *files, int n) {
  /* the files array is read, never written, through arg */
  return lkv_twolevel_new(&level_index, (void *)files, (size_t)n,
                          LKV_TWOLEVEL_KEEP_ON_SEEK | LKV_TWOLEVEL_OUTER, NULL,
                          NULL, NULL);
}

uint64_t lkv_version_overlap_bytes(const lkv_version *v, int level,
                                   lkv_slice lo, lkv_slice hi, int *any) {
  uint64_t b = 0;
  *any = 0;
  for (int i = 0; i < v->n[level]; i++) {
    const lkv_fmeta *f = v->files[level][i];
    if (ukey_after_file(lo.p, lo.n, f) || ukey_before_file(hi.p, hi.n, f))
      continue;
    *any = 1;
    b += f->size;
  }
  return b;
}

int lkv_version_add_iters(lkv_version *v, lkv_iiter **its, int *n) {
  for (int i = 0; i < v->n[0]; i++) { /* L0 tables overlap: one each */
    lkv_iiter *it = lkv_fmeta_iter(v->files[0][i]);
    if (it == NULL) return LKV_NOMEM;
    its[(*n)++] = it;
  }
  for (int l = 1; l < LKV_MAX_LEVELS; l++) {
    if (v->n[l] == 0) continue;
    lkv_iiter *it = lkv_level_iter_new(v->files[l], v->n[l]);
    if (it == NULL) return LKV_NOMEM;
    its[(*n)++] = it;
  }
  return LKV_OK;
}
