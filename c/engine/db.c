/* db.c - the database's entry points: open and close, point reads,
 * snapshots, compaction requests, stats and the table listing. They call
 * down into the rest (db_impl.h draws the order): the write path is
 * write.c, iterators dbiter.c, recovery recover.c, the background threads
 * flush.c and compact.c. File names and the directory layout are in
 * layout.md. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "batch.h"
#include "bloom.h"
#include "builder.h"
#include "db_impl.h"
#include "env.h"
#include "err.h"
#include "manifest.h"
#include "vset.h"

/* A point read's entry: the stripe's sv, or NULL once close has begun.
 * The stripe counts the read in flight under the same lock close takes
 * to mark it closed, so close waits for every read that got in. */
static lkv_sv *sv_acquire(lkv_db *db, unsigned s) {
  lkv_sv_stripe *st = &db->stripes[s];
  lkv_spin_lock(&st->mu);
  lkv_sv *sv = st->closed ? NULL : st->sv;
  if (sv) {
    sv->local[s].readers++;
    st->inflight++;
  }
  lkv_spin_unlock(&st->mu);
  return sv;
}

static void sv_release(lkv_db *db, lkv_sv *sv, unsigned s) {
  lkv_sv_stripe *st = &db->stripes[s];
  lkv_spin_lock(&st->mu);
  int drop = --sv->local[s].readers == 0 && sv->local[s].retired;
  st->inflight--;
  lkv_spin_unlock(&st->mu);
  if (drop) lkv_sv_unref(sv);
}

/* Close's half of sv_acquire and lkv_db_call_begin: no call gets in from
 * now, then wait for the ones inside to leave. */
static void drain_calls(lkv_db *db) {
  atomic_store(&db->shutting_down, 1);
  for (int i = 0; i < LKV_THREAD_STRIPES; i++) {
    lkv_sv_stripe *st = &db->stripes[i];
    lkv_spin_lock(&st->mu);
    st->closed = 1;
    lkv_spin_unlock(&st->mu);
  }
  for (int i = 0; i < LKV_THREAD_STRIPES; i++) {
    lkv_sv_stripe *st = &db->stripes[i];
    for (;;) {
      lkv_spin_lock(&st->mu);
      int n = st->inflight;
      lkv_spin_unlock(&st->mu);
      if (n == 0) break;
      sched_yield();
    }
  }
  while (atomic_load_explicit(&db->calls, memory_order_acquire) > 0)
    sched_yield();
}

uint64_t lkv_db_last_seq(lkv_db *db) {
  if (lkv_db_call_begin(db, NULL)) return 0;
  uint64_t seq = lkv_db_seq(db);
  lkv_db_call_end(db);
  return seq;
}

/* ---- reads ----------------------------------------------------------- */

int lkv_db_get(lkv_db *db, const void *key, size_t klen, uint64_t at,
               lkv_buf *val, lkv_err *err) {
  if (!lkv_db_check(db, err)) return LKV_INVALID;
  if (klen > LKV_MAX_KEY_BYTES)
    return lkv_seterr(err, LKV_TOOBIG, "key of %zu bytes (limit %u)", klen,
                      LKV_MAX_KEY_BYTES);
  if (val == NULL) return lkv_seterr(err, LKV_INVALID, "value buffer is NULL");
  char stack[256];
  char *ik = klen + LKV_TAG_BYTES <= sizeof stack
                 ? stack
                 : malloc(klen + LKV_TAG_BYTES);
  if (ik == NULL) return lkv_seterr(err, LKV_NOMEM, "get");
  unsigned stripe = lkv_thread_stripe();
  lkv_sv *s = sv_acquire(db, stripe);
  if (s == NULL) {
    if (ik != stack) free(ik);
    return lkv_seterr(err, LKV_CLOSED, "db is closed");
  }

  uint64_t last = lkv_db_seq(db);
  if (at > last) at = last;
  int type = LKV_TYPE_VALUE, rc;
  if (klen) memcpy(ik, key, klen);
  lkv_put64(ik + klen, lkv_tag(at, LKV_TYPE_SEEK));
  lkv_slice target = {ik, klen + LKV_TAG_BYTES};
  uint64_t hash = lkv_bloom_hash(key, klen);
  rc = lkv_mem_get(s->mem, key, klen, hash, at, &type, val);
  for (int i = 0; rc == LKV_NOTFOUND && i < s->nimm; i++)
    rc = lkv_mem_get(s->imm[i], key, klen, hash, at, &type, val);
  if (rc == LKV_NOTFOUND) {
    lkv_seek_charge c;
    rc = lkv_version_get(s->v, target, hash, &type, val, &c, err);
    if (c.f) lkv_db_charge_seek(db, &c); /* s->v keeps c.f alive */
  }
  if (rc == LKV_NOMEM) lkv_seterr(err, LKV_NOMEM, "get: value buffer");
  sv_release(db, s, stripe);
  if (ik != stack) free(ik);
  if (rc == LKV_OK && type == LKV_TYPE_DELETE) rc = LKV_NOTFOUND;
  return rc;
}

/* ---- snapshots ------------------------------------------------------- */

int lkv_snapshot_new(lkv_db *db, lkv_snapshot **out, lkv_err *err) {
  if (!lkv_db_check(db, err)) return LKV_INVALID;
  lkv_snapshot *s = calloc(1, sizeof *s);
  if (s == NULL) return lkv_seterr(err, LKV_NOMEM, "snapshot");
  int rc = lkv_db_call_begin(db, err);
  if (rc) {
    free(s);
    return rc;
  }
  pthread_mutex_lock(&db->mu);
  if (db->shutting_down) {
    pthread_mutex_unlock(&db->mu);
    lkv_db_call_end(db);
    free(s);
    return lkv_seterr(err, LKV_CLOSED, "db is closed");
  }
  s->db = db;
  s->seq = lkv_db_seq(db);
  /* sequence numbers only grow, so appending keeps the list oldest first */
  s->prev = db->snap_list.prev;
  s->next = &db->snap_list;
  s->prev->next = s;
  db->snap_list.prev = s;
  db->live_snapshots++;
  pthread_mutex_unlock(&db->mu);
  lkv_db_call_end(db);
  *out = s;
  return LKV_OK;
}

uint64_t lkv_snapshot_seq(const lkv_snapshot *s) { return s->seq; }

void lkv_snapshot_release(lkv_snapshot *s) {
  if (s == NULL) return;
  lkv_db *db = s->db;
  pthread_mutex_lock(&db->mu);
  s->prev->next = s->next;
  s->next->prev = s->prev;
  db->live_snapshots--;
  pthread_mutex_unlock(&db->mu);
  free(s);
}

/* ---- flush and compaction requests ----------------------------------- */

int lkv_db_compact(lkv_db *db, lkv_err *err) {
  int rc = lkv_db_flush(db, err);
  if (rc) return rc;
  if ((rc = lkv_db_call_begin(db, err))) return rc;
  pthread_mutex_lock(&db->mu);
  uint64_t target = db->manual_done + 1;
  db->manual_compact = 1;
  pthread_cond_signal(&db->compact_cv);
  while (db->manual_done < target && !db->bg_error && !db->shutting_down)
    pthread_cond_wait(&db->done_cv, &db->mu);
  if (db->bg_error)
    rc = lkv_errcopy(err, &db->bg_err);
  else if (db->manual_done < target)
    rc = lkv_seterr(err, LKV_CLOSED, "db closed during compaction");
  else if (db->manual_rc)
    rc = lkv_errcopy(err, &db->manual_err);
  pthread_mutex_unlock(&db->mu);
  lkv_db_call_end(db);
  return rc;
}

/* ---- stats ----------------------------------------------------------- */

static void db_stats(lkv_db *db, lkv_stats *st);

void lkv_db_stats(lkv_db *db, lkv_stats *st) {
  memset(st, 0, sizeof *st);
  if (lkv_db_call_begin(db, NULL)) {
    st->bg_error = LKV_CLOSED;
    snprintf(st->bg_error_msg, sizeof st->bg_error_msg, "closed: db is closed");
    return;
  }
  db_stats(db, st);
  lkv_db_call_end(db);
}

static void db_stats(lkv_db *db, lkv_stats *st) {
  pthread_mutex_lock(&db->mu);
  lkv_version *v = db->vs.current;
  for (int l = 0; l < LKV_MAX_LEVELS; l++) {
    st->sstables_per_level[l] = (uint64_t)v->n[l];
    st->bytes_per_level[l] = lkv_version_level_bytes(v, l);
    st->sstable_count += (uint64_t)v->n[l];
    st->total_size_bytes += st->bytes_per_level[l];
  }
  st->memtable_size_bytes = lkv_mem_usage(db->mem);
  for (int i = 0; i < db->nimm; i++)
    st->memtable_size_bytes += lkv_mem_usage(db->imm[i]);
  st->memtable_keys = lkv_mem_entries(db->mem);
  st->imm_memtables = (uint64_t)db->nimm;
  st->wal_size_bytes =
      atomic_load_explicit(&db->wal_bytes, memory_order_relaxed);
  st->live_snapshots = (uint64_t)db->live_snapshots;
  st->live_iterators = (uint64_t)db->live_iters;
  st->wal_dropped_bytes = db->wal_dropped;
  memcpy(st->recovery_msg, db->recovery_msg, sizeof st->recovery_msg);
  st->compaction_pending = db->compacting || db->manual_compact ||
                           (!db->bg_error && lkv_vset_compact_needed(&db->vs));
  st->bg_error = db->bg_error;
  if (db->bg_error)
    memcpy(st->bg_error_msg, db->bg_err.msg, sizeof st->bg_error_msg);
  pthread_mutex_unlock(&db->mu);
  st->seq = lkv_db_seq(db);
  st->bytes_written_user = atomic_load(&db->bytes_user);
  /* one set of counters, so the total and its split always agree */
  for (int l = 0; l < LKV_MAX_LEVELS; l++) {
    st->bytes_written_per_level[l] = atomic_load(&db->level_written[l]);
    st->bytes_written_disk += st->bytes_written_per_level[l];
  }
  st->bytes_written_wal = atomic_load(&db->bytes_wal);
  st->write_amplification =
      st->bytes_written_user
          ? (double)st->bytes_written_disk / (double)st->bytes_written_user
          : 0.0;
  st->flushes = atomic_load(&db->flushes);
  st->compactions = atomic_load(&db->compactions);
  st->seek_compactions = atomic_load(&db->seek_compactions);
  st->compaction_bytes_read = atomic_load(&db->comp_read);
  st->compaction_bytes_written = atomic_load(&db->comp_written);
  st->stall_slowdowns = atomic_load(&db->stall_slowdowns);
  st->stall_stops = atomic_load(&db->stall_stops);
  st->stall_micros = atomic_load(&db->stall_micros);
  st->stall_refusals = atomic_load(&db->stall_refusals);
  st->wal_syncs = atomic_load(&db->wal_syncs);
  lkv_counter_totals ct;
  lkv_table_counters_total(&db->counters, &ct);
  st->bloom_checks = ct.bloom_checks;
  st->bloom_negatives = ct.bloom_negatives;
  st->block_reads = ct.block_reads;
  st->block_cache_hits = ct.cache_hits;
  st->block_cache_bytes = db->cache ? lkv_cache_usage(db->cache) : 0;
}

int lkv_db_tables(lkv_db *db, lkv_table_fn fn, void *ctx) {
  if (lkv_db_call_begin(db, NULL)) return 0;
  lkv_sv *s = lkv_db_sv(db);
  int n = 0;
  for (int l = 0; l < LKV_MAX_LEVELS; l++)
    for (int i = 0; i < s->v->n[l]; i++, n++) {
      lkv_fmeta *f = s->v->files[l][i];
      if (fn)
        fn(ctx, l, f->number, f->size, f->smallest,
           f->smallest_len - LKV_TAG_BYTES, f->largest,
           f->largest_len - LKV_TAG_BYTES);
    }
  lkv_sv_unref(s);
  lkv_db_call_end(db);
  return n;
}

/* ---- open and close (recovery is recover.c) ---------------------------- */

static void db_free(lkv_db *db) {
  for (int i = 0; i < LKV_THREAD_STRIPES; i++) {
    lkv_sv_unref(db->stripes[i].sv);
  }
  lkv_sv_unref(db->sv);
  lkv_mem_unref(db->mem);
  for (int i = 0; i < db->nimm; i++) lkv_mem_unref(db->imm[i]);
  /* the versions, then the files they were the last to hold */
  lkv_vset_destroy(&db->vs);
  if (db->cache) lkv_cache_free(db->cache);
  lkv_env_unlock(db->env, db->lock_fd);
  pthread_mutex_destroy(&db->mu);
  pthread_mutex_destroy(&db->manifest_mu);
  pthread_cond_destroy(&db->flush_cv);
  pthread_cond_destroy(&db->compact_cv);
  pthread_cond_destroy(&db->done_cv);
  free(db->dir);
  free(db->log_file_name);
  free(db);
}

/* Stop the background threads that were started (mu not held). */
static void stop_threads(lkv_db *db, int started) {
  pthread_mutex_lock(&db->mu);
  db->shutting_down = 1;
  pthread_cond_broadcast(&db->flush_cv);
  pthread_cond_broadcast(&db->compact_cv);
  pthread_cond_broadcast(&db->done_cv);
  pthread_mutex_unlock(&db->mu);
  if (started > 0) pthread_join(db->flush_th, NULL);
  if (started > 1) pthread_join(db->compact_th, NULL);
  if (started > 2) {
    lkv_files_stop(&db->vs.files);
    pthread_join(db->janitor_th, NULL);
  }
}

int lkv_db_open(const char *dir, const lkv_options *opts, lkv_db **out,
                lkv_err *err) {
  lkv_options o;
  int rc;
  if (out) *out = NULL;
  if (dir == NULL || dir[0] == '\0' || out == NULL)
    return lkv_seterr(err, LKV_INVALID,
                      "open: directory name and out pointer are required");
  if (opts)
    o = *opts;
  else
    lkv_options_init(&o);
  if ((rc = lkv_options_check(&o, err))) return rc;
  const lkv_env *env = o.env ? o.env : lkv_env_posix();
  if (o.read_only) {
    lkv_env_info st;
    rc = lkv_env_stat(env, dir, &st, err);
    if (rc == LKV_NOTFOUND)
      return lkv_seterr(err, LKV_INVALID,
                        "%s does not exist (opening read-only)", dir);
    if (rc) return rc;
    if (!st.is_dir)
      return lkv_seterr(err, LKV_INVALID, "%s is not a directory", dir);
  } else if ((rc = lkv_env_mkdirs(env, dir, err))) {
    return rc;
  }

  /* aligned: the read stripes are cache-line aligned */
  lkv_db *db = aligned_alloc(64, sizeof *db);
  if (db == NULL) return lkv_seterr(err, LKV_NOMEM, "open %s", dir);
  memset(db, 0, sizeof *db);
  db->lock_fd = -1;
  pthread_mutex_init(&db->mu, NULL);
  pthread_mutex_init(&db->manifest_mu, NULL);
  pthread_cond_init(&db->flush_cv, NULL);
  pthread_cond_init(&db->compact_cv, NULL);
  pthread_cond_init(&db->done_cv, NULL);
  for (int i = 0; i < LKV_THREAD_STRIPES; i++)
    atomic_init(&db->stripes[i].mu.held, 0);
  db->snap_list.next = db->snap_list.prev = &db->snap_list;
  db->o = o;
  db->env = env;
  db->o.env = env;
  size_t per = o.max_memtable_size ? o.max_memtable_size : 1;
  db->max_imm = LKV_IMM_BUDGET_BYTES / per > LKV_MAX_IMM
                    ? LKV_MAX_IMM
                    : (int)(LKV_IMM_BUDGET_BYTES / per);
  if (db->max_imm < 2) db->max_imm = 2;
  db->dir = strdup(dir);
  db->log_file_name = strdup(o.log_file_name);
  db->o.log_file_name = db->log_file_name;
  lkv_vset_init(&db->vs, &db->o, db->dir, db->log_file_name);
  db->mem = lkv_mem_new(db->o.max_memtable_size);
  if (o.block_cache_bytes) db->cache = lkv_cache_new(o.block_cache_bytes);
  db->vs.files.tc = lkv_tcache_new(env, db->dir, o.max_open_files, db->cache,
                                   &db->counters, o.mmap_reads);
  if (!db->dir || !db->log_file_name || !db->mem || !db->vs.files.tc ||
      (o.block_cache_bytes && !db->cache)) {
    db_free(db);
    return lkv_seterr(err, LKV_NOMEM, "open %s", dir);
  }
  /* a directory that is someone else's is refused before LOCK is made in
   * it (recovery checks again under the lock) */
  if ((rc = lkv_db_check_dir(db, err))) {
    db_free(db);
    return rc;
  }
  if ((rc = lkv_env_lock(env, dir, !o.read_only, &db->lock_fd, err)) ||
      (rc = lkv_db_recover(db, err))) {
    if (db->wal) lkv_wal_close(db->wal, NULL);
    db_free(db);
    return rc;
  }
  if (o.read_only) {
    *out = db;
    return LKV_OK;
  }
  int started = 0;
  if (pthread_create(&db->flush_th, NULL, lkv_flush_thread, db) == 0) started++;
  if (started == 1 &&
      pthread_create(&db->compact_th, NULL, lkv_compact_thread, db) == 0)
    started++;
  if (started == 2 && pthread_create(&db->janitor_th, NULL, lkv_files_janitor,
                                     &db->vs.files) == 0)
    started++;
  if (started < 3) {
    stop_threads(db, started);
    lkv_wal_close(db->wal, NULL);
    db_free(db);
    return lkv_seterr(err, LKV_IOERROR,
                      "open %s: cannot start a background thread", dir);
  }
  db->threads_started = 1;
  /* tables may already be due for compaction (e.g. after recovery) */
  pthread_mutex_lock(&db->mu);
  pthread_cond_signal(&db->compact_cv);
  pthread_mutex_unlock(&db->mu);
  *out = db;
  return LKV_OK;
}

int lkv_db_close(lkv_db *db, lkv_err *err) {
  if (db == NULL) return LKV_OK;
  pthread_mutex_lock(&db->mu);
  if (db->live_iters || db->live_snapshots) {
    int it = db->live_iters, sn = db->live_snapshots;
    pthread_mutex_unlock(&db->mu);
    return lkv_seterr(err, LKV_BUSY,
                      "close %s: %d iterator(s) and %d snapshot(s) still open",
                      db->dir, it, sn);
  }
  /* From here no call gets in (new iterators and snapshots see
   * shutting_down under this same lock); calls already inside either
   * finish or, if they wait for background work, return LKV_CLOSED. */
  db->shutting_down = 1;
  pthread_cond_broadcast(&db->flush_cv);
  pthread_cond_broadcast(&db->compact_cv);
  pthread_cond_broadcast(&db->done_cv);
  pthread_mutex_unlock(&db->mu);
  drain_calls(db);
  if (db->threads_started) stop_threads(db, 3);
  int rc = LKV_OK;
  if (db->wal) {
    uint64_t pending = lkv_wal_pending(db->wal);
    rc = lkv_wal_close(db->wal, err); /* batch mode: the buffered writes */
    db->wal = NULL;
    if (rc == LKV_OK) atomic_fetch_add(&db->bytes_wal, pending);
  }
  /* A flush or compaction that failed, perhaps the drain of this close
   * itself, is returned here too: the caller may never write again to
   * hear of it otherwise. Nothing acknowledged depends on it (the logs
   * it would have replaced are kept and replayed at the next open). */
  if (rc == LKV_OK && db->bg_error) {
    lkv_errcopy(err, &db->bg_err);
    rc = db->bg_error;
  }
  db_free(db);
  return rc;
}
