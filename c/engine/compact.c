/* compact.c - leveled compaction in a background thread.
 *
 * L0 holds flushed tables whose ranges overlap. When L0 reaches
 * max_l0_files, all of L0 merges with the L1 tables it overlaps into new
 * L1 tables. Level n (n >= 1) may hold level1_max_bytes * multiplier^(n-1)
 * bytes; an overflowing level pushes one table (round robin over its key
 * space) into the next level, merged with what it overlaps there. With no
 * level over budget, a table that reads keep looking past (out of its
 * allowed seeks, see lkv_db_charge_seek) is pushed down the same way. A
 * full compaction (lkv_db_compact) is the same merge over every table.
 *
 * The merge drops a version when a newer version of the same key is
 * visible to every reader (seq <= oldest snapshot), and drops a tombstone
 * visible to every reader when no deeper level can hold the key. The
 * manifest write is the commit point: a crash before it leaves the old
 * tables live (the new ones are orphans removed at open), after it the new. */
#include <stdlib.h>
#include <string.h>

#include "builder.h"
#include "db_impl.h"
#include "env.h"
#include "err.h"

uint64_t lkv_level_max_bytes(const lkv_db *db, int level) {
  uint64_t b = db->o.level1_max_bytes;
  for (int l = 1; l < level; l++) b *= (uint64_t)db->o.level_multiplier;
  return b;
}

/* The level most over its budget (score > 1), or -1. (mu) */
static int pick_level(lkv_db *db, double *score_out) {
  const lkv_version *v = db->current;
  double best = 0;
  int level = -1;
  if (v->n[0] >= db->o.max_l0_files) {
    best = (double)v->n[0] / db->o.max_l0_files;
    level = 0;
  }
  /* the last level has nowhere to go */
  for (int l = 1; l < LKV_MAX_LEVELS - 1; l++) {
    double s = (double)lkv_version_level_bytes(v, l) / (double)lkv_level_max_bytes(db, l);
    if (s > 1.0 && s > best) {
      best = s;
      level = l;
    }
  }
  if (score_out) *score_out = best;
  return level;
}

/* Is db->seek_file still in the current version at its level? (mu) */
static int seek_file_live(const lkv_db *db) {
  const lkv_version *v = db->current;
  int l = db->seek_level;
  for (int i = 0; db->seek_file && i < v->n[l]; i++)
    if (v->files[l][i] == db->seek_file) return 1;
  return 0;
}

/* Take the seek candidate's reference out of the db. (mu) The caller
 * drops it after unlocking: if a compaction already removed the table,
 * this is its last reference, and the unref deletes the file, which must
 * not happen under mu. */
static lkv_fmeta *take_seek_file(lkv_db *db) {
  lkv_fmeta *f = db->seek_file;
  db->seek_file = NULL;
  return f;
}

int lkv_compact_needed(lkv_db *db) {
  if (pick_level(db, NULL) >= 0) return 1;
  return db->seek_file != NULL && seek_file_live(db);
}

/* A table moved down must not overlap too much of the level below its
 * new level, or the compaction that later pushes it further gets huge. */
static uint64_t max_grandparent_bytes(const lkv_db *db) {
  return 10 * (uint64_t)db->o.table_size;
}

int lkv_flush_level(lkv_db *db, lkv_slice lo, lkv_slice hi) {
  const lkv_version *v = db->current;
  int level = 0, any;
  if (db->compacting) return 0; /* its outputs are not in the version yet */
  lkv_version_overlap_bytes(v, 0, lo, hi, &any);
  if (any) return 0;
  while (level < 2) {
    lkv_version_overlap_bytes(v, level + 1, lo, hi, &any);
    if (any) break;
    if (level + 2 < LKV_MAX_LEVELS &&
        lkv_version_overlap_bytes(v, level + 2, lo, hi, &any) > max_grandparent_bytes(db))
      break;
    level++;
  }
  return level;
}

typedef struct compaction {
  int level;        /* inputs come from level and level + 1 */
  int out_level;
  int full;         /* every table, into out_level */
  int trivial;      /* one table, nothing below it: move, do not rewrite */
  int n;
  lkv_fmeta **in;   /* referenced */
  int *in_level;
  lkv_version *v;   /* the version the inputs were picked from */
  lkv_fmeta *stale_seek; /* a spent seek candidate, released with c */
} compaction;

static int add_input(compaction *c, lkv_fmeta *f, int level) {
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

static void free_compaction(compaction *c) {
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
static void expand(const lkv_db *db, const lkv_version *v, int level, int *a,
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
  uint64_t limit = 25 * (uint64_t)db->o.table_size;
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

/* Choose the inputs. (mu) */
static int setup(lkv_db *db, compaction *c, int full) {
  lkv_version *v = db->current;
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
    while (out < LKV_MAX_LEVELS - 1 && lkv_level_max_bytes(db, out) < total) out++;
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
  int level = pick_level(db, NULL);
  lkv_fmeta *seek = NULL;
  if (level < 0 && db->seek_file && seek_file_live(db)) {
    level = db->seek_level;
    seek = db->seek_file; /* the version holds it */
    atomic_fetch_add(&db->seek_compactions, 1);
  }
  if (db->seek_file && (seek || !seek_file_live(db))) c->stale_seek = take_seek_file(db);
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
      while (v->files[level][pick] != seek) pick++; /* seek_file_live: present */
    } else if (db->compact_ptr[level]) {
      /* round robin: the first table after where this level last compacted */
      for (pick = 0; pick < v->n[level]; pick++) {
        lkv_fmeta *f = v->files[level][pick];
        lkv_slice l = user_of(f->largest, f->largest_len);
        if (lkv_ucmp(l.p, l.n, db->compact_ptr[level],
                     (size_t)db->compact_ptr_len[level]) > 0)
          break;
      }
      if (pick == v->n[level]) pick = 0;
    }
    int a0 = pick, b0 = pick + 1;
    expand(db, v, level, &a0, &b0);
    for (int i = a0; i < b0; i++)
      if (add_input(c, v->files[level][i], level)) return LKV_NOMEM;
    lo = user_of(v->files[level][a0]->smallest, v->files[level][a0]->smallest_len);
    hi = user_of(v->files[level][b0 - 1]->largest, v->files[level][b0 - 1]->largest_len);
    char *p = malloc(hi.n ? hi.n : 1);
    if (p) {
      if (hi.n) memcpy(p, hi.p, hi.n);
      free(db->compact_ptr[level]);
      db->compact_ptr[level] = p;
      db->compact_ptr_len[level] = (int)hi.n;
    }
  }
  int nl = level + 1, a1, b1;
  span(v, nl, lo, hi, &a1, &b1); /* the same set expand() kept unchanged */
  for (int i = a1; i < b1; i++)
    if (add_input(c, v->files[nl][i], nl)) return LKV_NOMEM;
  if (c->n == 1) {
    int any;
    uint64_t gp = nl + 1 < LKV_MAX_LEVELS
                      ? lkv_version_overlap_bytes(v, nl + 1, lo, hi, &any) : 0;
    c->trivial = gp <= max_grandparent_bytes(db);
  }
  return LKV_OK;
}

/* Move the single input one level down: a manifest change, no I/O on the
 * table itself. */
static int move(lkv_db *db, compaction *c, lkv_err *err) {
  lkv_edit e = {0};
  int rc = LKV_OK;
  /* a fresh seek budget at its new level, as a rewritten table gets */
  atomic_store(&c->in[0]->allowed_seeks, lkv_fmeta_seek_budget(c->in[0]->size));
  lkv_fmeta_ref(c->in[0]);
  if (lkv_edit_add(&e, c->out_level, c->in[0]) ||
      lkv_edit_del(&e, c->in_level[0], c->in[0]->number))
    rc = lkv_seterr(err, LKV_NOMEM, "compaction");
  if (rc == LKV_OK) {
    pthread_mutex_lock(&db->manifest_mu);
    rc = lkv_db_log_and_apply(db, &e, 0, NULL, err);
    pthread_mutex_unlock(&db->manifest_mu);
  }
  lkv_edit_free(&e);
  if (rc == LKV_OK) atomic_fetch_add(&db->compactions, 1);
  return rc;
}

/* Close one output table and add it to the edit at the output level. */
static int finish_output(lkv_db *db, const compaction *c, lkv_edit *e,
                         lkv_table_builder *b, const char *path, uint64_t number,
                         const lkv_buf *smallest, const lkv_buf *largest,
                         uint64_t *out_bytes, lkv_err *err) {
  lkv_slice s = {smallest->data, smallest->len}, l = {largest->data, largest->len};
  lkv_fmeta *f = NULL;
  int rc = lkv_finish_table(&db->files, b, path, number, s, l, &f, err);
  if (rc) return rc;
  *out_bytes += f->size;
  if (lkv_edit_add(e, c->out_level, f)) {
    atomic_store(&f->obsolete, 1); /* never installed: remove the file */
    lkv_fmeta_unref(f);
    return lkv_seterr(err, LKV_NOMEM, "compaction");
  }
  return LKV_OK;
}

/* An output table that has reached this size is cut where a grandparent
 * table ends, when it can be: a table that ends where the tables below it
 * end is later merged down with whole tables only, not with one more it
 * shares a boundary with (RocksDB's dynamic output file size). The more
 * grandparent ends the output has already passed, the likelier another
 * comes before the full size, so the threshold rises with them: from half
 * the table size to nine tenths. */
static uint64_t aligned_cut_bytes(const lkv_db *db, int bounds_passed) {
  int pct = 50 + (bounds_passed < 8 ? bounds_passed * 5 : 40);
  return db->o.table_size / 100 * (uint64_t)pct;
}

/* Merge the inputs into new tables at out_level and install them. */
static int run(lkv_db *db, compaction *c, lkv_err *err) {
  lkv_edit e = {0};
  lkv_iiter **kids = calloc((size_t)(c->n ? c->n : 1), sizeof *kids);
  lkv_iiter *m = NULL;
  lkv_table_builder *b = NULL;
  lkv_buf cur = {0}, smallest = {0}, largest = {0};
  uint64_t number = 0, in_bytes = 0, out_bytes = 0;
  int rc = kids ? LKV_OK : lkv_seterr(err, LKV_NOMEM, "compaction");
  int nk = 0;
  for (int i = 0; rc == LKV_OK && i < c->n; i++) {
    in_bytes += c->in[i]->size;
    if ((kids[nk] = lkv_fmeta_iter(c->in[i])) == NULL)
      rc = lkv_seterr(err, LKV_NOMEM, "compaction");
    else
      nk++;
  }
  if (rc == LKV_OK) {
    m = lkv_merge_iter_new(kids, nk);
    nk = 0;
    if (m == NULL) rc = lkv_seterr(err, LKV_NOMEM, "compaction");
  }
  for (int i = 0; i < nk; i++) kids[i]->ops->destroy(kids[i]);
  free(kids);

  pthread_mutex_lock(&db->mu);
  uint64_t smallest_snap = lkv_db_oldest_snapshot(db);
  pthread_mutex_unlock(&db->mu);
  lkv_table_opts to = lkv_db_table_opts(db);

  int have_cur = 0;
  uint64_t last_seq_for_key = UINT64_MAX;
  /* Grandparents: the tables one level below the output. An output table
   * is cut early once its range covers too many of their bytes, so the
   * compaction that later pushes it down stays small (LevelDB's rule). */
  int gl = c->out_level + 1;
  lkv_fmeta *const *gp = gl < LKV_MAX_LEVELS ? c->v->files[gl] : NULL;
  int ngp = gl < LKV_MAX_LEVELS ? c->v->n[gl] : 0, gpi = 0;
  uint64_t gp_bytes = 0;
  int gp_seen = 0, gp_bounds = 0; /* grandparent ends the output has passed */
  char name[64], path[4096];
  if (m) m->ops->seek_first(m);
  while (rc == LKV_OK && m->ops->valid(m)) {
    lkv_slice k = m->ops->key(m);
    lkv_slice u = lkv_ikey_user(k);
    uint64_t tag = lkv_ikey_tag(k), seq = tag >> 8;
    int type = (int)(tag & 0xff);
    int new_key = !have_cur || lkv_ucmp(u.p, u.n, cur.data, cur.len) != 0;
    if (new_key) {
      if (lkv_buf_set(&cur, u.p, u.n)) {
        rc = lkv_seterr(err, LKV_NOMEM, "compaction");
        break;
      }
      have_cur = 1;
      last_seq_for_key = UINT64_MAX;
      /* check for shutdown between keys: an abandoned compaction is free */
      pthread_mutex_lock(&db->mu);
      int stop = db->shutting_down;
      pthread_mutex_unlock(&db->mu);
      if (stop) {
        rc = LKV_CLOSED;
        break;
      }
    }
    int drop = 0;
    if (last_seq_for_key <= smallest_snap) {
      drop = 1; /* a newer version of this key is visible to every reader */
    } else if (type == LKV_TYPE_DELETE && seq <= smallest_snap &&
               !lkv_version_deeper_overlaps(c->v, c->out_level, u.p, u.n)) {
      drop = 1; /* nothing below can hold an older value it would hide */
    }
    last_seq_for_key = seq;
    if (!drop) {
      int cut = 0;
      if (new_key) {
        int crossed = 0;
        while (gpi < ngp && lkv_ucmp(u.p, u.n, gp[gpi]->largest,
                                     gp[gpi]->largest_len - LKV_TAG_BYTES) > 0) {
          if (gp_seen) {
            gp_bytes += gp[gpi]->size;
            crossed++;
          }
          gpi++;
        }
        gp_seen = 1;
        if (b) {
          uint64_t size = lkv_tb_size(b);
          /* cut tables only between user keys, so levels never overlap */
          cut = size >= db->o.table_size || gp_bytes > max_grandparent_bytes(db) ||
                (crossed && size >= aligned_cut_bytes(db, gp_bounds));
          gp_bounds += crossed;
        }
      }
      if (cut) {
        rc = finish_output(db, c, &e, b, path, number, &smallest, &largest,
                           &out_bytes, err);
        b = NULL;
        gp_bytes = 0;
        gp_bounds = 0;
        if (rc) break;
      }
      if (b == NULL) {
        pthread_mutex_lock(&db->mu);
        number = db->next_file++;
        pthread_mutex_unlock(&db->mu);
        lkv_table_file_name(number, name, sizeof name);
        if ((rc = lkv_env_path(path, sizeof path, db->dir, name, err))) break;
        if ((rc = lkv_tb_new(path, &to, &b, err))) break;
        if (lkv_buf_set(&smallest, k.p, k.n)) {
          rc = lkv_seterr(err, LKV_NOMEM, "compaction");
          break;
        }
      }
      if ((rc = lkv_tb_add(b, k, m->ops->value(m), err))) break;
      if (lkv_buf_set(&largest, k.p, k.n)) {
        rc = lkv_seterr(err, LKV_NOMEM, "compaction");
        break;
      }
    }
    m->ops->next(m);
  }
  if (rc == LKV_OK && m) rc = m->ops->status(m, err);
  if (rc == LKV_OK && b) {
    rc = finish_output(db, c, &e, b, path, number, &smallest, &largest,
                       &out_bytes, err);
    b = NULL;
  }
  if (b) lkv_tb_abandon(b);
  if (m) m->ops->destroy(m);
  lkv_buf_free(&cur);
  lkv_buf_free(&smallest);
  lkv_buf_free(&largest);

  for (int i = 0; rc == LKV_OK && i < c->n; i++)
    if (lkv_edit_del(&e, c->in_level[i], c->in[i]->number))
      rc = lkv_seterr(err, LKV_NOMEM, "compaction");
  int maybe_committed = 0;
  if (rc == LKV_OK) {
    pthread_mutex_lock(&db->manifest_mu);
    rc = lkv_db_log_and_apply(db, &e, 0, &maybe_committed, err);
    pthread_mutex_unlock(&db->manifest_mu);
  }
  if (rc == LKV_OK) {
    atomic_fetch_add(&db->compactions, 1);
    atomic_fetch_add(&db->comp_read, in_bytes);
    atomic_fetch_add(&db->comp_written, out_bytes);
    atomic_fetch_add(&db->level_written[c->out_level], out_bytes);
  } else if (!maybe_committed) {
    /* outputs never made it into a version: remove their files (unless
     * the MANIFEST on disk may list them: then open sorts it out) */
    for (int i = 0; i < e.nadd; i++) atomic_store(&e.add[i]->obsolete, 1);
  }
  lkv_edit_free(&e);
  return rc;
}

void *lkv_compact_thread(void *arg) {
  lkv_db *db = arg;
  pthread_mutex_lock(&db->mu);
  for (;;) {
    while (!db->shutting_down &&
           (db->flush_placing ||
            (!db->manual_compact && (db->bg_error || !lkv_compact_needed(db))))) {
      if (db->seek_file && !seek_file_live(db)) { /* moved on meanwhile */
        lkv_fmeta *f = take_seek_file(db);
        pthread_mutex_unlock(&db->mu);
        lkv_fmeta_unref(f);
        pthread_mutex_lock(&db->mu);
        continue;
      }
      pthread_cond_wait(&db->compact_cv, &db->mu);
    }
    if (db->shutting_down) break;
    int full = db->manual_compact;
    db->manual_compact = 0;
    compaction c;
    int rc = setup(db, &c, full);
    lkv_err err = {0};
    if (rc == LKV_NOMEM) lkv_seterr(&err, rc, "compaction setup");
    db->compacting = 1;
    pthread_mutex_unlock(&db->mu);
    if (rc == LKV_OK && c.trivial) rc = move(db, &c, &err);
    else if (rc == LKV_OK && c.n > 0) rc = run(db, &c, &err);
    if (rc == LKV_NOTFOUND) rc = LKV_OK;
    free_compaction(&c);
    pthread_mutex_lock(&db->mu);
    db->compacting = 0;
    if (full) {
      db->manual_rc = rc;
      if (rc) db->manual_err = err;
      db->manual_done++;
    }
    if (rc && rc != LKV_CLOSED) lkv_db_set_bg_error(db, rc, &err);
    pthread_cond_broadcast(&db->done_cv);
  }
  pthread_mutex_unlock(&db->mu);
  return NULL;
}
