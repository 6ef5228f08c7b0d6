/* compact.c - leveled compaction in a background thread: the version set
 * chooses (vset.c), this file executes. A chosen table with nothing below
 * it moves down a level in the MANIFEST alone; otherwise the inputs are
 * merged into new tables at the output level.
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

/* Move the single input one level down: a manifest change, no I/O on the
 * table itself. */
static int move(lkv_db *db, lkv_compaction *c, lkv_err *err) {
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
static int finish_output(lkv_db *db, const lkv_compaction *c, lkv_edit *e,
                         lkv_table_builder *b, const char *path,
                         uint64_t number, const lkv_buf *smallest,
                         const lkv_buf *largest, uint64_t *out_bytes,
                         lkv_err *err) {
  lkv_slice s = {smallest->data, smallest->len},
            l = {largest->data, largest->len};
  lkv_fmeta *f = NULL;
  int rc = lkv_finish_table(&db->vs.files, b, path, number, s, l, &f, err);
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
static int run(lkv_db *db, lkv_compaction *c, lkv_err *err) {
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
  char path[4096];
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
        while (gpi < ngp &&
               lkv_ucmp(u.p, u.n, gp[gpi]->largest,
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
          cut = size >= db->o.table_size ||
                gp_bytes > lkv_vset_max_grandparent_bytes(&db->vs) ||
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
        number = lkv_vset_new_file(&db->vs);
        pthread_mutex_unlock(&db->mu);
        if ((rc = lkv_tcache_path(db->vs.files.tc, number, path, sizeof path,
                                  err)))
          break;
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
            (!db->manual_compact &&
             (db->bg_error || !lkv_vset_compact_needed(&db->vs))))) {
      lkv_fmeta *f = lkv_vset_take_stale_seek(&db->vs);
      if (f) { /* compacted meanwhile */
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
    lkv_compaction c;
    int rc = lkv_vset_pick_compaction(&db->vs, &c, full);
    if (c.seek) atomic_fetch_add(&db->seek_compactions, 1);
    lkv_err err = {0};
    if (rc == LKV_NOMEM) lkv_seterr(&err, rc, "compaction setup");
    db->compacting = 1;
    pthread_mutex_unlock(&db->mu);
    if (rc == LKV_OK && c.trivial)
      rc = move(db, &c, &err);
    else if (rc == LKV_OK && c.n > 0)
      rc = run(db, &c, &err);
    if (rc == LKV_NOTFOUND) rc = LKV_OK;
    lkv_compaction_free(&c);
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
