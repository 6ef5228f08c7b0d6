/* flush.c - the flush thread: frozen memtables become one table, placed
 * as deep as it can go (vset.c), and the logs that held their writes are
 * deleted once the MANIFEST no longer names them. */
#include <stdlib.h>

#include "builder.h"
#include "db_impl.h"
#include "err.h"

static void wal_name(const lkv_db *db, uint64_t number, char *buf, size_t n) {
  lkv_db_log_name(db->log_file_name, number, buf, n);
}

void *lkv_flush_thread(void *arg) {
  lkv_db *db = arg;
  pthread_mutex_lock(&db->mu);
  for (;;) {
    while (db->nimm == 0 && !db->shutting_down)
      pthread_cond_wait(&db->flush_cv, &db->mu);
    /* on shutdown, drain: cheaper than replaying the WALs at next open */
    if (db->nimm == 0 || db->bg_error) break;
    /* every memtable frozen so far goes into one table: with tiny
     * memtables this keeps the fsyncs per flush from pacing the writers */
    int k = db->nimm;
    lkv_mem *ms[LKV_MAX_IMM];
    uint64_t wals[LKV_MAX_IMM];
    for (int i = 0; i < k; i++) {
      ms[i] = db->imm[i];
      lkv_mem_ref(ms[i]);
      wals[i] = lkv_mem_wal_number(ms[i]);
    }
    uint64_t number = lkv_vset_new_file(&db->vs);
    pthread_mutex_unlock(&db->mu);

    lkv_err err = {0};
    lkv_fmeta *f = NULL;
    lkv_edit e = {0};
    lkv_iiter *kids[LKV_MAX_IMM], *it = NULL;
    int rc = LKV_OK, nk = 0;
    for (int i = 0; i < k && rc == LKV_OK; i++)
      if ((kids[nk] = lkv_mem_iter(ms[i])) != NULL)
        nk++;
      else
        rc = LKV_NOMEM;
    if (rc == LKV_OK) {
      it = k == 1 ? kids[0] : lkv_merge_iter_new(kids, nk);
      nk = 0; /* owned by `it` now, even when the merge failed */
      if (it == NULL) rc = LKV_NOMEM;
    }
    for (int i = 0; i < nk; i++) kids[i]->ops->destroy(kids[i]);
    for (int i = 0; i < k; i++) lkv_mem_unref(ms[i]);
    if (rc) lkv_seterr(&err, rc, "flush iterator");
    if (rc == LKV_OK) {
      it->ops->seek_first(it);
      lkv_table_opts to = lkv_db_table_opts(db);
      rc = lkv_build_table(&db->vs.files, &to, it, number, &f, &err);
      it->ops->destroy(it);
    }
    pthread_mutex_lock(&db->manifest_mu);
    int level = 0;
    if (rc == LKV_OK && f) {
      lkv_slice lo = {f->smallest, f->smallest_len - LKV_TAG_BYTES};
      lkv_slice hi = {f->largest, f->largest_len - LKV_TAG_BYTES};
      pthread_mutex_lock(&db->mu);
      /* a running compaction's outputs are not in the version yet */
      level = db->compacting ? 0 : lkv_vset_flush_level(&db->vs, lo, hi);
      /* hold compaction off until this table is in the version, so it
       * cannot write an overlapping table into the same level meanwhile */
      if (level > 0) db->flush_placing = 1;
      pthread_mutex_unlock(&db->mu);
      rc = lkv_edit_add(&e, level, f) ? LKV_NOMEM : LKV_OK;
      /* counted before the table goes live: a caller woken by the flush
       * sees its bytes */
      atomic_fetch_add(&db->level_written[level], f->size);
    }
    if (rc == LKV_OK) rc = lkv_db_log_and_apply(db, &e, k, NULL, &err);
    pthread_mutex_unlock(&db->manifest_mu);
    if (rc == LKV_OK) {
      for (int i = 0; i < k; i++) { /* their writes are in the table now */
        char name[256];
        wal_name(db, wals[i], name, sizeof name);
        lkv_db_remove_file(db, name);
      }
      atomic_fetch_add(&db->flushes, 1);
    } else if (f && e.nadd == 0) {
      lkv_fmeta_unref(f);
    }
    lkv_edit_free(&e);
    pthread_mutex_lock(&db->mu);
    db->flush_placing = 0;
    if (rc) lkv_db_set_bg_error(db, rc, &err);
    pthread_cond_broadcast(&db->done_cv);
    pthread_cond_signal(&db->compact_cv);
  }
  pthread_mutex_unlock(&db->mu);
  return NULL;
}
