/* dbstate.c - the db's shared state below its entry points: what the
 * entry points (db.c, dbiter.c), the write path (write.c), recovery
 * (recover.c) and the background threads (flush.c, compact.c) all need.
 * The call accounting close waits on, the sticky background error,
 * superversions, installing a new version with the memtables it
 * replaces, the oldest snapshot, seek charges, and the names of the
 * directory's files. Nothing here calls up into those files. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db_impl.h"
#include "env.h"
#include "err.h"

/* ---- calls in flight ------------------------------------------------- */

int lkv_db_call_begin(lkv_db *db, lkv_err *err) {
  atomic_fetch_add(&db->calls, 1);
  if (atomic_load(&db->shutting_down)) {
    atomic_fetch_sub(&db->calls, 1);
    return lkv_seterr(err, LKV_CLOSED, "db is closed");
  }
  return LKV_OK;
}

void lkv_db_call_end(lkv_db *db) {
  atomic_fetch_sub_explicit(&db->calls, 1, memory_order_release);
}

/* ---- background errors --------------------------------------------- */

void lkv_db_set_bg_error(lkv_db *db, int rc, const lkv_err *err) {
  if (db->bg_error || rc == LKV_OK || rc == LKV_CLOSED) return;
  db->bg_error = rc;
  if (err)
    db->bg_err = *err;
  else
    lkv_seterr(&db->bg_err, rc, "background work failed");
  pthread_cond_broadcast(&db->done_cv);
}

/* ---- superversions and new versions --------------------------------- */

void lkv_sv_ref(lkv_sv *s) {
  atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

void lkv_sv_unref(lkv_sv *s) {
  if (s == NULL) return;
  if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1) return;
  lkv_mem_unref(s->mem);
  for (int i = 0; i < s->nimm; i++) lkv_mem_unref(s->imm[i]);
  lkv_version_unref(s->v);
  free(s);
}

int lkv_db_install_sv(lkv_db *db) {
  lkv_sv *s = aligned_alloc(64, sizeof *s);
  if (s == NULL) return LKV_NOMEM;
  memset(s, 0, sizeof *s);
  atomic_init(&s->refs, 1);
  s->mem = db->mem;
  lkv_mem_ref(s->mem);
  for (int i = db->nimm - 1; i >= 0; i--) { /* newest first for readers */
    s->imm[s->nimm++] = db->imm[i];
    lkv_mem_ref(db->imm[i]);
  }
  s->v = db->vs.current;
  lkv_version_ref(s->v);
  lkv_sv *old = db->sv;
  db->sv = s;
  /* publish to every stripe; a stripe's old sv is dropped now if no point
   * read uses it, else by its last reader */
  for (int i = 0; i < LKV_THREAD_STRIPES; i++) {
    lkv_sv_stripe *st = &db->stripes[i];
    lkv_sv_ref(s);
    lkv_spin_lock(&st->mu);
    lkv_sv *prev = st->sv;
    st->sv = s;
    int drop = prev && prev->local[i].readers == 0;
    if (prev && !drop) prev->local[i].retired = 1;
    lkv_spin_unlock(&st->mu);
    if (drop) lkv_sv_unref(prev);
  }
  lkv_sv_unref(old);
  return LKV_OK;
}

lkv_sv *lkv_db_sv(lkv_db *db) {
  pthread_mutex_lock(&db->mu);
  lkv_sv *s = db->sv;
  lkv_sv_ref(s);
  pthread_mutex_unlock(&db->mu);
  return s;
}

int lkv_db_log_and_apply(lkv_db *db, lkv_edit *e, int drop_imm,
                         int *maybe_committed, lkv_err *err) {
  lkv_version *old = NULL;
  pthread_mutex_lock(&db->mu);
  /* logs of the memtables this edit flushes are no longer needed: the
   * MANIFEST keeps the oldest memtable's on */
  lkv_mem *oldest = db->nimm > drop_imm ? db->imm[drop_imm] : db->mem;
  e->wal_number = lkv_mem_wal_number(oldest);
  e->wal_start = lkv_mem_wal_start(oldest);
  int rc =
      lkv_vset_log_and_apply(&db->vs, e, &db->mu, &old, maybe_committed, err);
  if (rc == LKV_OK) {
    if (drop_imm) {
      for (int i = 0; i < drop_imm; i++) lkv_mem_unref(db->imm[i]);
      memmove(db->imm, db->imm + drop_imm,
              (size_t)(db->nimm - drop_imm) * sizeof db->imm[0]);
      db->nimm -= drop_imm;
    }
    rc = lkv_db_install_sv(db);
    if (rc) lkv_seterr(err, rc, "installing a new version");
  }
  pthread_mutex_unlock(&db->mu);
  lkv_version_unref(old);
  return rc;
}

/* ---- snapshots and seek charges ------------------------------------ */

uint64_t lkv_db_oldest_snapshot(lkv_db *db) {
  if (db->snap_list.next != &db->snap_list) return db->snap_list.next->seq;
  return atomic_load(&db->vs.last_seq);
}

void lkv_db_charge_seek(lkv_db *db, const lkv_seek_charge *c) {
  if (c->level >= LKV_MAX_LEVELS - 1) return; /* nowhere to push it */
  /* long spent (compactions stopped by an error, say): stop counting
   * well before the int could wrap */
  if (atomic_load_explicit(&c->f->allowed_seeks, memory_order_relaxed) <
      -(1 << 30))
    return;
  int left =
      atomic_fetch_sub_explicit(&c->f->allowed_seeks, 1, memory_order_relaxed) -
      1;
  /* At 0, and now and then after (the first request may have found the
   * compaction thread holding another candidate), not at every read. */
  if (left > 0 || (left < 0 && (left & 1023) != 0)) return;
  pthread_mutex_lock(&db->mu);
  if (!db->shutting_down && lkv_vset_offer_seek(&db->vs, c->f, c->level))
    pthread_cond_signal(&db->compact_cv);
  pthread_mutex_unlock(&db->mu);
}

/* ---- names and files ------------------------------------------------ */

void lkv_db_log_name(const char *base, uint64_t number, char *buf, size_t n) {
  snprintf(buf, n, "%s.%06" PRIu64, base, number);
}

int lkv_db_path(const lkv_db *db, const char *name, char *buf, size_t n,
                lkv_err *err) {
  return lkv_env_path(buf, n, db->dir, name, err);
}

void lkv_db_remove_file(const lkv_db *db, const char *name) {
  char path[4096];
  if (lkv_db_path(db, name, path, sizeof path, NULL) == LKV_OK)
    lkv_env_unlink(db->env, path, NULL);
}

lkv_table_opts lkv_db_table_opts(const lkv_db *db) {
  lkv_table_opts t;
  t.bloom_bits_per_key = db->o.bloom_bits_per_key;
  t.bloom_hash_functions = db->o.bloom_hash_functions;
  t.bloom_min_bits = db->o.bloom_min_bits;
  t.restart_interval = db->o.sparse_index_n;
  t.block_size = db->o.block_size;
  t.env = db->env;
  return t;
}
