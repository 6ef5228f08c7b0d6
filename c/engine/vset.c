/* vset.c - the version set (vset.h): the current version and the
 * MANIFEST that records it, and the choice of the next compaction.
 *
 * The choice (LevelDB's): L0 holds flushed tables whose ranges overlap.
 * When L0 reaches max_l0_files, all of L0 merges with the L1 tables it
 * overlaps into new L1 tables. Level n (n >= 1) may hold
 * level1_max_bytes * multiplier^(n-1) bytes; an overflowing level pushes
 * one table (round robin over its key space) into the next level, merged
 * with what it overlaps there. With no level over budget, a table that
 * reads keep looking past (out of its allowed seeks, see
 * lkv_db_charge_seek) is pushed down the same way. A full compaction
 * (lkv_db_compact) is the same merge over every table. */
#include "vset.h"

#include <stdlib.h>
#include <string.h>

#include "env.h"
#include "err.h"

void lkv_vset_init(lkv_vset *vs, const lkv_options *o, const char *dir,
                   const char *log_file_name) {
  memset(vs, 0, sizeof *vs);
  vs->o = o;
  vs->dir = dir;
  vs->log_file_name = log_file_name;
  lkv_files_init(&vs->files);
  atomic_init(&vs->last_seq, 0);
}

void lkv_vset_destroy(lkv_vset *vs) {
  lkv_fmeta_unref(vs->seek_file);
  vs->seek_file = NULL;
  lkv_version_unref(vs->current);
  vs->current = NULL;
  /* the files the versions were the last to hold */
  lkv_files_bury(&vs->files);
  /* after the versions: no table is kept open any more */
  lkv_tcache_free(vs->files.tc);
  vs->files.tc = NULL;
  for (int l = 0; l < LKV_MAX_LEVELS; l++) free(vs->compact_ptr[l]);
  lkv_files_destroy(&vs->files);
}

/* ---- loading and logging versions ------------------------------------ */

int lkv_vset_load(lkv_vset *vs, const lkv_manifest *m, lkv_err *err) {
  lkv_edit e = {0};
  int rc = LKV_OK;
  for (size_t i = 0; i < m->nfiles && rc == LKV_OK; i++) {
    const lkv_mfile *mf = &m->files[i];
    char name[64], path[4096];
    lkv_table *t = NULL;
    lkv_env_info st;
    lkv_table_file_name(mf->number, name, sizeof name);
    if ((rc = lkv_env_path(path, sizeof path, vs->dir, name, err))) break;
    if ((rc = lkv_env_stat(vs->o->env, path, &st, err)) == LKV_NOTFOUND) {
      rc = lkv_seterr(err, LKV_CORRUPTION,
                      "%s/MANIFEST lists %s but the file is missing", vs->dir,
                      name);
      break;
    }
    if (rc || (rc = lkv_tcache_open(vs->files.tc, mf->number, &t, err))) break;
    uint64_t size = lkv_table_file_size(t);
    if (size != mf->size) {
      lkv_table_close(t);
      rc = lkv_seterr(err, LKV_CORRUPTION,
                      "%s: size %llu differs from the %llu bytes in MANIFEST",
                      name, (unsigned long long)size,
                      (unsigned long long)mf->size);
      break;
    }
    lkv_slice s = {mf->smallest, mf->smallest_len},
              l = {mf->largest, mf->largest_len};
    lkv_fmeta *f = lkv_fmeta_new(&vs->files, mf->number, mf->size, s, l);
    if (f == NULL) {
      lkv_table_close(t);
      rc = lkv_seterr(err, LKV_NOMEM, "loading tables");
    } else {
      lkv_fmeta_keep_table(f, t); /* verified: keep it open */
      if (lkv_edit_add(&e, mf->level, f)) {
        lkv_fmeta_unref(f);
        rc = lkv_seterr(err, LKV_NOMEM, "loading tables");
      }
    }
  }
  if (rc == LKV_OK) {
    vs->current = lkv_version_apply(NULL, &e);
    if (vs->current == NULL) rc = lkv_seterr(err, LKV_NOMEM, "loading tables");
  }
  lkv_edit_free(&e);
  return rc;
}

/* Encode the MANIFEST for version v. REQUIRES: mu held. */
static int encode_manifest(const lkv_vset *vs, const lkv_version *v,
                           uint64_t wal_number, uint64_t wal_start, char **out,
                           size_t *outlen, lkv_err *err) {
  lkv_manifest m = {0};
  int n = lkv_version_count(v);
  m.files = calloc((size_t)(n ? n : 1), sizeof *m.files);
  if (m.files == NULL)
    return lkv_seterr(err, LKV_NOMEM, "encoding the manifest");
  for (int l = 0; l < LKV_MAX_LEVELS; l++)
    for (int i = 0; i < v->n[l]; i++) {
      lkv_fmeta *f = v->files[l][i];
      lkv_mfile *mf = &m.files[m.nfiles++];
      mf->level = l;
      mf->number = f->number;
      mf->size = f->size;
      mf->smallest = f->smallest;
      mf->smallest_len = f->smallest_len;
      mf->largest = f->largest;
      mf->largest_len = f->largest_len;
    }
  m.next_file = vs->next_file;
  m.last_seq = atomic_load(&vs->last_seq);
  m.wal_number = wal_number;
  m.wal_name = vs->log_file_name;
  m.wal_name_len = strlen(vs->log_file_name);
  m.wal_start_seq = wal_start;
  int rc = lkv_manifest_encode(&m, out, outlen, err);
  free(m.files);
  return rc;
}

int lkv_vset_log_and_apply(lkv_vset *vs, lkv_edit *e, pthread_mutex_t *mu,
                           lkv_version **old, int *maybe_committed,
                           lkv_err *err) {
  char *bytes = NULL;
  size_t n = 0;
  int renamed = 0;
  *old = NULL;
  if (maybe_committed) *maybe_committed = 0;
  lkv_version *v = lkv_version_apply(vs->current, e);
  int rc =
      v ? encode_manifest(vs, v, e->wal_number, e->wal_start, &bytes, &n, err)
        : lkv_seterr(err, LKV_NOMEM, "new version");
  pthread_mutex_unlock(mu);
  if (rc == LKV_OK)
    rc = lkv_manifest_write(vs->o->env, vs->dir, bytes, n, &renamed, err);
  free(bytes);
  if (rc) {
    if (maybe_committed) *maybe_committed = renamed;
    lkv_version_unref(v);
    pthread_mutex_lock(mu);
    return rc;
  }
  pthread_mutex_lock(mu);
  *old = vs->current;
  vs->current = v;
  for (int i = 0; i < e->ndel; i++) { /* files gone from the current version */
    int moved = 0; /* a trivial move deletes and adds the same file */
    for (int j = 0; j < e->nadd && !moved; j++)
      moved = e->add[j]->number == e->del[i];
    for (int j = 0; j < (*old)->n[e->del_level[i]] && !moved; j++) {
      lkv_fmeta *f = (*old)->files[e->del_level[i]][j];
      if (f->number == e->del[i]) atomic_store(&f->obsolete, 1);
    }
  }
  return LKV_OK;
}

/* ---- choosing compactions -------------------------------------------- */

static uint64_t level_max_bytes(const lkv_vset *vs, int level) {
  uint64_t b = vs->o->level1_max_bytes;
  for (int l = 1; l < level; l++) b *= (uint64_t)vs->o->level_multiplier;
  return b;
}

/* The level most over its budget (score > 1), or -1. (mu) */
static int pick_level(const lkv_vset *vs, double *score_out) {
  const lkv_version *v = vs->current;
  double best = 0;
  int level = -1;
  if (v->n[0] >= vs->o->max_l0_files) {
    best = (double)v->n[0] / vs->o->max_l0_files;
    level = 0;
  }
  /* the last level has nowhere to go */
  for (int l = 1; l < LKV_MAX_LEVELS - 1; l++) {
    double s =
        (double)lkv_version_level_bytes(v, l) / (double)level_max_bytes(vs, l);
    if (s > 1.0 && s > best) {
      best = s;
      level = l;
    }
  }
  if (score_out) *score_out = best;
  return level;
}

/* Is the seek candidate still in the current version at its level? (mu) */
static int seek_file_live(const lkv_vset *vs) {
  const lkv_version *v = vs->current;
  int l = vs->seek_level;
  for (int i = 0; vs->seek_file && i < v->n[l]; i++)
    if (v->files[l][i] == vs->seek_file) return 1;
  return 0;
}

/* Take the seek candidate's reference out of the set. (mu) The caller
 * drops it after unlocking: if a compaction already removed the table,
 * this is its last reference, and the unref deletes the file, which must
 * not happen under mu. */
static lkv_fmeta *take_seek_file(lkv_vset *vs) {
  lkv_fmeta *f = vs->seek_file;
  vs->seek_file = NULL;
  return f;
}

lkv_fmeta *lkv_vset_take_stale_seek(lkv_vset *vs) {
  if (vs->seek_file == NULL || seek_file_live(vs)) return NULL;
  return take_seek_file(vs);
}

int lkv_vset_offer_seek(lkv_vset *vs, lkv_fmeta *f, int level) {
  if (vs->seek_file) return 0;
  lkv_fmeta_ref(f);
  vs->seek_file = f;
  vs->seek_level = level;
  return 1;
}

int lkv_vset_compact_needed(const lkv_vset *vs) {
  if (pick_level(vs, NULL) >= 0) return 1;
  return vs->seek_file != NULL && seek_file_live(vs);
}

uint64_t lkv_vset_max_grandparent_bytes(const lkv_vset *vs) {
  return 10 * (uint64_t)vs->o->table_size;
}

int lkv_vset_flush_level(const lkv_vset *vs, lkv_slice lo, lkv_slice hi) {
  const lkv_version *v = vs->current;
  int level = 0, any;
  lkv_version_overlap_bytes(v, 0, lo, hi, &any);
  if (any) return 0;
  while (level < 2) {
    lkv_version_overlap_bytes(v, level + 1, lo, hi, &any);
    if (any) break;
    if (level + 2 < LKV_MAX_LEVELS &&
        lkv_version_overlap_bytes(v, level + 2, lo, hi, &any) >
            lkv_vset_max_grandparent_bytes(vs))
      break;
    level++;
  }
  return level;
}

static int add_input(lkv_compaction *c, lkv_fmeta *f, int level) {
  lkv_fmeta **a = realloc(c->in, (size_t)(c->n + 1) * sizeof *a);
  if (a == NULL) return LKV_NOMEM;
  c->in = a;
  int *l = realloc(c->in_level, (size_t)(c->n + 1) * sizeof *l);
  if (l == NULL) return LKV_NOMEM;
  c->in_level = l;
  lkv_fmeta_ref(f);
  c->in[c->n] = f;
  c->in_level[c->n++] = level;
  return LKV_OK;
}

void lkv_compaction_free(lkv_compaction *c) {
  lkv_fmeta_unref(c->stale_seek);
  for (int i = 0; i < c->n; i++) lkv_fmeta_unref(c->in[i]);
  free(c->in);
  free(c->in_level);
  lkv_version_unref(c->v);
  memset(c, 0, sizeof *c);
}

static lkv_slice user_of(const char *ik, size_t n) {
  lkv_slice s = {ik, n - LKV_TAG_BYTES};
  return s;
}

/* [*a, *b): the tables of sorted level `level` (>= 1) whose user-key range
 * meets [lo, hi]; *a == *b when none does. */
static void span(const lkv_version *v, int level, lkv_slice lo, lkv_slice hi,
                 int *a, int *b) {
  int i = 0, n = v->n[level];
  while (i < n) {
    const lkv_fmeta *f = v->files[level][i];
    lkv_slice l = user_of(f->largest, f->largest_len);
    if (lkv_ucmp(l.p, l.n, lo.p, lo.n) >= 0) break;
    i++;
  }
  *a = i;
  while (i < n) {
    const lkv_fmeta *f = v->files[level][i];
    lkv_slice s = user_of(f->smallest, f->smallest_len);
    if (lkv_ucmp(s.p, s.n, hi.p, hi.n) > 0) break;
    i++;
  }
  *b = i;
}

static uint64_t span_bytes(const lkv_version *v, int level, int a, int b) {
  uint64_t n = 0;
  for (int i = a; i < b; i++) n += v->files[level][i]->size;
  return n;
}

/* LevelDB's expansion: the tables [*a, *b) of `level` are to be merged
 * with what they overlap one level down; take in as well every table of
 * `level` that fits in the range those lower tables cover, as long as the
 * lower set stays the same and the whole stays under 25 tables' worth.
 * The lower tables are rewritten once for more input, which is what
 * keeps write amplification down while a level below is still sparse. */
static void expand(const lkv_vset *vs, const lkv_version *v, int level, int *a,
                   int *b) {
  int nl = level + 1, a1, b1;
  const lkv_fmeta *first = v->files[level][*a], *last = v->files[level][*b - 1];
  lkv_slice lo = user_of(first->smallest, first->smallest_len);
  lkv_slice hi = user_of(last->largest, last->largest_len);
  span(v, nl, lo, hi, &a1, &b1);
  if (a1 == b1) return; /* nothing below: a move or a plain rewrite */
  const lkv_fmeta *f1 = v->files[nl][a1], *l1 = v->files[nl][b1 - 1];
  lkv_slice s1 = user_of(f1->smallest, f1->smallest_len);
  lkv_slice e1 = user_of(l1->largest, l1->largest_len);
  if (lkv_ucmp(s1.p, s1.n, lo.p, lo.n) < 0) lo = s1;
  if (lkv_ucmp(e1.p, e1.n, hi.p, hi.n) > 0) hi = e1;
  int a0, b0;
  span(v, level, lo, hi, &a0, &b0);
  if (b0 - a0 <= *b - *a) return;
  uint64_t limit = 25 * (uint64_t)vs->o->table_size;
  if (span_bytes(v, level, a0, b0) + span_bytes(v, nl, a1, b1) >= limit) return;
  /* the grown set's own range must not reach further tables below */
  const lkv_fmeta *f0 = v->files[level][a0], *l0 = v->files[level][b0 - 1];
  int a2, b2;
  span(v, nl, user_of(f0->smallest, f0->smallest_len),
       user_of(l0->largest, l0->largest_len), &a2, &b2);
  if (a2 != a1 || b2 != b1) return;
  *a = a0;
  *b = b0;
}

int lkv_vset_pick_compaction(lkv_vset *vs, lkv_compaction *c, int full) {
  lkv_version *v = vs->current;
  memset(c, 0, sizeof *c);
  c->v = v;
  lkv_version_ref(v);
  if (full) {
    /* the shallowest level that can hold everything, but never above a
     * level that already has data (it must end up holding all of it) */
    uint64_t total = 0;
    int deepest = 1;
    for (int l = 0; l < LKV_MAX_LEVELS; l++) {
      total += lkv_version_level_bytes(v, l);
      if (v->n[l] && l > deepest) deepest = l;
    }
    int out = 1;
    while (out < LKV_MAX_LEVELS - 1 && level_max_bytes(vs, out) < total) out++;
    c->out_level = out > deepest ? out : deepest;
    c->level = -1;
    c->full = 1;
    for (int l = 0; l < LKV_MAX_LEVELS; l++)
      for (int i = 0; i < v->n[l]; i++)
        if (add_input(c, v->files[l][i], l)) return LKV_NOMEM;
    return LKV_OK;
  }
  /* size first: a level over its budget hurts every read and write; a
   * table out of allowed seeks only the reads that pass through it */
  int level = pick_level(vs, NULL);
  lkv_fmeta *seek = NULL;
  if (level < 0 && vs->seek_file && seek_file_live(vs)) {
    level = vs->seek_level;
    seek = vs->seek_file; /* the version holds it */
    c->seek = 1;
  }
  if (vs->seek_file && (seek || !seek_file_live(vs)))
    c->stale_seek = take_seek_file(vs);
  if (level < 0) return LKV_NOTFOUND;
  c->level = level;
  c->out_level = level + 1;
  /* the user-key range [lo, hi] of the chosen inputs at `level` */
  lkv_slice lo = {0}, hi = {0};
  if (level == 0) { /* overlapping: all of L0 together, whatever the reason */
    for (int i = 0; i < v->n[0]; i++) {
      lkv_fmeta *f = v->files[0][i];
      lkv_slice s = user_of(f->smallest, f->smallest_len);
      lkv_slice l = user_of(f->largest, f->largest_len);
      if (i == 0 || lkv_ucmp(s.p, s.n, lo.p, lo.n) < 0) lo = s;
      if (i == 0 || lkv_ucmp(l.p, l.n, hi.p, hi.n) > 0) hi = l;
      if (add_input(c, f, 0)) return LKV_NOMEM;
    }
  } else {
    int pick = 0;
    if (seek) {
      while (v->files[level][pick] != seek)
        pick++; /* seek_file_live: present */
    } else if (vs->compact_ptr[level]) {
      /* round robin: the first table after where this level last compacted */
      for (pick = 0; pick < v->n[level]; pick++) {
        lkv_fmeta *f = v->files[level][pick];
        lkv_slice l = user_of(f->largest, f->largest_len);
        if (lkv_ucmp(l.p, l.n, vs->compact_ptr[level],
                     (size_t)vs->compact_ptr_len[level]) > 0)
          break;
      }
      if (pick == v->n[level]) pick = 0;
    }
    int a0 = pick, b0 = pick + 1;
    expand(vs, v, level, &a0, &b0);
    for (int i = a0; i < b0; i++)
      if (add_input(c, v->files[level][i], level)) return LKV_NOMEM;
    lo = user_of(v->files[level][a0]->smallest,
                 v->files[level][a0]->smallest_len);
    hi = user_of(v->files[level][b0 - 1]->largest,
                 v->files[level][b0 - 1]->largest_len);
    char *p = malloc(hi.n ? hi.n : 1);
    if (p) {
      if (hi.n) memcpy(p, hi.p, hi.n);
      free(vs->compact_ptr[level]);
      vs->compact_ptr[level] = p;
      vs->compact_ptr_len[level] = (int)hi.n;
    }
  }
  int nl = level + 1, a1, b1;
  span(v, nl, lo, hi, &a1, &b1); /* the same set expand() kept unchanged */
  for (int i = a1; i < b1; i++)
    if (add_input(c, v->files[nl][i], nl)) return LKV_NOMEM;
  if (c->n == 1) {
    int any;
    uint64_t gp = nl + 1 < LKV_MAX_LEVELS
                      ? lkv_version_overlap_bytes(v, nl + 1, lo, hi, &any)
                      : 0;
    c->trivial = gp <= lkv_vset_max_grandparent_bytes(vs);
  }
  return LKV_OK;
}
