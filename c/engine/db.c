/* db.c - the database: open and recovery, the write path (a queue of
 * writers whose leader commits a group with one WAL write and one sync),
 * point reads, the flush thread, snapshots, stats and close.
 * File names and the directory layout are described in layout.md. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sched.h>
#include <time.h>

#include "batch.h"
#include "bloom.h"
#include "db_impl.h"
#include "env.h"
#include "err.h"
#include "manifest.h"

struct lkv_writer {
  const char *rep; /* encoded batch (batch.h); its seq field is ignored */
  size_t len;
  uint32_t count;
  uint64_t user_bytes;
  int force_flush; /* no data: freeze the memtable (lkv_db_flush) */
  int sync_wal;    /* no data: make the WALs durable (lkv_db_sync) */
  int done;
  int rc;
  uint64_t last_seq;
  lkv_writer *next;
  /* Set up only when needed (writer_init leaves them alone): err when
   * the write fails, cv when the writer has to wait for a leader. A lone
   * writer, the common case, leads at once and never waits. */
  int waiting; /* cv is initialised (mu) */
  pthread_cond_t cv;
  lkv_err err;
};

static void writer_init(lkv_writer *w) {
  memset(w, 0, offsetof(lkv_writer, cv));
}

void lkv_options_init(lkv_options *o) {
  memset(o, 0, sizeof *o);
  o->max_memtable_size = 4u << 20;
  o->max_l0_files = 4;
  o->l0_slowdown_files = 8;
  o->l0_stop_files = 12;
  o->bloom_bits_per_key = 10;
  o->bloom_hash_functions = 0;
  o->bloom_min_bits = 0;
  o->sparse_index_n = 16;
  o->block_size = 4096;
  o->table_size = 2u << 20;
  o->level1_max_bytes = 10u << 20;
  o->level_multiplier = 10;
  o->block_cache_bytes = 8u << 20;
  o->max_open_files = 1000;
  o->mmap_reads = 0;
  o->wal_buffer_size = 100;
  o->sync = LKV_SYNC_BATCH;
  o->log_file_name = "wal.log";
}

static int check_options(const lkv_options *o, lkv_err *err) {
#define NEED(cond, what) \
  if (!(cond)) return lkv_seterr(err, LKV_INVALID, "option %s", what)
  NEED(o->max_memtable_size >= 1 && o->max_memtable_size <= (1ull << 32),
       "max_memtable_size must be 1 .. 4 GiB");
  NEED(o->max_l0_files >= 1 && o->max_l0_files <= 1000, "max_l0_files must be 1 .. 1000");
  NEED(o->l0_slowdown_files >= o->max_l0_files,
       "l0_slowdown_files must be >= max_l0_files");
  NEED(o->l0_stop_files >= o->l0_slowdown_files,
       "l0_stop_files must be >= l0_slowdown_files");
  NEED(o->bloom_bits_per_key >= 1 && o->bloom_bits_per_key <= 64,
       "bloom_bits_per_key must be 1 .. 64");
  NEED(o->bloom_hash_functions >= 0 && o->bloom_hash_functions <= 30,
       "bloom_hash_functions must be 0 (derived) .. 30");
  NEED(o->bloom_min_bits <= (1u << 30), "bloom_min_bits must be <= 2^30");
  NEED(o->sparse_index_n >= 1 && o->sparse_index_n <= 1024,
       "sparse_index_n must be 1 .. 1024");
  NEED(o->block_size >= 256 && o->block_size <= (4u << 20),
       "block_size must be 256 B .. 4 MiB");
  NEED(o->table_size >= 4096, "table_size must be >= 4096");
  NEED(o->level1_max_bytes >= 4096, "level1_max_bytes must be >= 4096");
  NEED(o->level_multiplier >= 2 && o->level_multiplier <= 100,
       "level_multiplier must be 2 .. 100");
  NEED(o->wal_buffer_size >= 1, "wal_buffer_size must be >= 1");
  NEED(o->max_open_files >= 16, "max_open_files must be >= 16");
  NEED(o->mmap_reads == 0 || o->mmap_reads == 1, "mmap_reads must be 0 or 1");
  NEED(o->read_only == 0 || o->read_only == 1, "read_only must be 0 or 1");
  NEED(o->sync == LKV_SYNC_NONE || o->sync == LKV_SYNC_BATCH ||
           o->sync == LKV_SYNC_ALWAYS,
       "sync must be none, batch or always");
  NEED(o->log_file_name && o->log_file_name[0] &&
           strchr(o->log_file_name, '/') == NULL && strlen(o->log_file_name) < 200,
       "log_file_name must be a plain file name");
#undef NEED
  return LKV_OK;
}

/* ---- names ----------------------------------------------------------- */

void lkv_db_table_name(const lkv_db *db, uint64_t number, char *buf, size_t n) {
  (void)db;
  snprintf(buf, n, "%06" PRIu64 ".sst", number);
}

static void log_name(const char *base, uint64_t number, char *buf, size_t n) {
  snprintf(buf, n, "%s.%06" PRIu64, base, number);
}

static void wal_name(const lkv_db *db, uint64_t number, char *buf, size_t n) {
  log_name(db->log_file_name, number, buf, n);
}

/* The number in digits [p, end), or 0 when they are not all digits. */
static int parse_number(const char *p, const char *end, uint64_t *number) {
  uint64_t v = 0;
  if (p == end) return 0;
  for (; p < end; p++) {
    if (*p < '0' || *p > '9' || v > UINT64_MAX / 10) return 0;
    v = v * 10 + (uint64_t)(*p - '0');
  }
  *number = v;
  return 1;
}

enum { NAME_OTHER, NAME_TABLE, NAME_LOG };

/* "NNNNNN.sst" is a table; "<base>.NNNNNN" a log, its base (borrowed from
 * name) in *base, *base_len. */
static int parse_name(const char *name, uint64_t *number, const char **base,
                      size_t *base_len) {
  size_t nl = strlen(name);
  if (nl > 4 && strcmp(name + nl - 4, ".sst") == 0)
    return parse_number(name, name + nl - 4, number) ? NAME_TABLE : NAME_OTHER;
  const char *dot = strrchr(name, '.');
  if (dot == NULL || dot == name || !parse_number(dot + 1, name + nl, number))
    return NAME_OTHER;
  *base = name;
  *base_len = (size_t)(dot - name);
  return NAME_LOG;
}

static int dir_path(const lkv_db *db, const char *name, char *buf, size_t n,
                    lkv_err *err) {
  return lkv_env_path(buf, n, db->dir, name, err);
}

/* Delete the file called name in the db's directory; best effort (what is
 * left is found and deleted again at the next open). */
static void remove_file(const lkv_db *db, const char *name) {
  char path[4096];
  if (dir_path(db, name, path, sizeof path, NULL) == LKV_OK)
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

/* ---- background errors, superversions, manifest ---------------------- */

void lkv_db_set_bg_error(lkv_db *db, int rc, const lkv_err *err) {
  if (db->bg_error || rc == LKV_OK || rc == LKV_CLOSED) return;
  db->bg_error = rc;
  if (err)
    db->bg_err = *err;
  else
    lkv_seterr(&db->bg_err, rc, "background work failed");
  pthread_cond_broadcast(&db->done_cv);
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
  s->v = db->current;
  lkv_version_ref(s->v);
  lkv_sv *old = db->sv;
  db->sv = s;
  /* publish to every stripe; a stripe's old sv is dropped now if no point
   * read uses it, else by its last reader */
  for (int i = 0; i < LKV_SV_STRIPES; i++) {
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

int lkv_db_call_begin(lkv_db *db, lkv_err *err) {
  atomic_fetch_add(&db->calls, 1);
  if (atomic_load(&db->closing)) {
    atomic_fetch_sub(&db->calls, 1);
    return lkv_seterr(err, LKV_CLOSED, "db is closed");
  }
  return LKV_OK;
}

void lkv_db_call_end(lkv_db *db) {
  atomic_fetch_sub_explicit(&db->calls, 1, memory_order_release);
}

/* Close's half of the above: no call gets in from now, then wait for the
 * ones inside to leave. */
static void drain_calls(lkv_db *db) {
  atomic_store(&db->closing, 1);
  for (int i = 0; i < LKV_SV_STRIPES; i++) {
    lkv_sv_stripe *st = &db->stripes[i];
    lkv_spin_lock(&st->mu);
    st->closed = 1;
    lkv_spin_unlock(&st->mu);
  }
  for (int i = 0; i < LKV_SV_STRIPES; i++) {
    lkv_sv_stripe *st = &db->stripes[i];
    for (;;) {
      lkv_spin_lock(&st->mu);
      int n = st->inflight;
      lkv_spin_unlock(&st->mu);
      if (n == 0) break;
      sched_yield();
    }
  }
  while (atomic_load_explicit(&db->calls, memory_order_acquire) > 0) sched_yield();
}

lkv_sv *lkv_db_sv(lkv_db *db) {
  pthread_mutex_lock(&db->mu);
  lkv_sv *s = db->sv;
  lkv_sv_ref(s);
  pthread_mutex_unlock(&db->mu);
  return s;
}

/* Encode the manifest for version v. REQUIRES: mu held. */
static int encode_manifest(lkv_db *db, const lkv_version *v, uint64_t wal_number,
                           uint64_t wal_start, char **out, size_t *outlen,
                           lkv_err *err) {
  lkv_manifest m = {0};
  int n = lkv_version_count(v);
  m.files = calloc((size_t)(n ? n : 1), sizeof *m.files);
  if (m.files == NULL) return lkv_seterr(err, LKV_NOMEM, "encoding the manifest");
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
  m.next_file = db->next_file;
  m.last_seq = atomic_load(&db->last_seq);
  m.wal_number = wal_number;
  m.wal_name = db->log_file_name;
  m.wal_name_len = strlen(db->log_file_name);
  m.wal_start_seq = wal_start;
  int rc = lkv_manifest_encode(&m, out, outlen, err);
  free(m.files);
  return rc;
}

/* The WAL number the manifest must keep: the oldest memtable's. (mu) */
int lkv_db_log_and_apply(lkv_db *db, lkv_edit *e, int drop_imm,
                         int *maybe_committed, lkv_err *err) {
  char *bytes = NULL;
  size_t n = 0;
  int renamed = 0;
  if (maybe_committed) *maybe_committed = 0;
  pthread_mutex_lock(&db->mu);
  lkv_version *v = lkv_version_apply(db->current, e);
  /* logs of the memtables this edit flushes are no longer needed */
  lkv_mem *oldest = db->nimm > drop_imm ? db->imm[drop_imm] : db->mem;
  uint64_t wal_number = lkv_mem_wal_number(oldest);
  int rc = v ? encode_manifest(db, v, wal_number, lkv_mem_wal_start(oldest), &bytes,
                               &n, err)
             : lkv_seterr(err, LKV_NOMEM, "new version");
  pthread_mutex_unlock(&db->mu);
  if (rc == LKV_OK) rc = lkv_manifest_write(db->env, db->dir, bytes, n, &renamed, err);
  free(bytes);
  if (rc) {
    if (maybe_committed) *maybe_committed = renamed;
    lkv_version_unref(v);
    return rc;
  }
  pthread_mutex_lock(&db->mu);
  lkv_version *old = db->current;
  db->current = v;
  for (int i = 0; i < e->ndel; i++) { /* files gone from the current version */
    int moved = 0; /* a trivial move deletes and adds the same file */
    for (int j = 0; j < e->nadd && !moved; j++) moved = e->add[j]->number == e->del[i];
    for (int j = 0; j < old->n[e->del_level[i]] && !moved; j++) {
      lkv_fmeta *f = old->files[e->del_level[i]][j];
      if (f->number == e->del[i]) atomic_store(&f->obsolete, 1);
    }
  }
  if (drop_imm) {
    for (int i = 0; i < drop_imm; i++) lkv_mem_unref(db->imm[i]);
    memmove(db->imm, db->imm + drop_imm,
            (size_t)(db->nimm - drop_imm) * sizeof db->imm[0]);
    db->nimm -= drop_imm;
  }
  rc = lkv_db_install_sv(db);
  if (rc) lkv_seterr(err, rc, "installing a new version");
  pthread_mutex_unlock(&db->mu);
  lkv_version_unref(old);
  return rc;
}

/* ---- building tables ------------------------------------------------- */

int lkv_db_open_table(lkv_db *db, const char *path, uint64_t number,
                      lkv_table **t, lkv_err *err) {
  return lkv_table_open(db->env, path, number, db->cache, &db->counters,
                        db->o.mmap_reads, t, err);
}

int lkv_db_finish_table(lkv_db *db, lkv_table_builder *b, const char *path,
                        uint64_t number, lkv_slice smallest, lkv_slice largest,
                        lkv_fmeta **out, lkv_err *err) {
  uint64_t size = 0;
  lkv_table *t = NULL;
  *out = NULL;
  int rc = lkv_tb_finish(b, &size, err);
  if (rc == LKV_OK)
    rc = lkv_db_open_table(db, path, number, &t, err);
  if (rc == LKV_OK) {
    *out = lkv_fmeta_new(db, number, size, smallest, largest);
    if (*out == NULL) {
      lkv_table_close(t);
      rc = lkv_seterr(err, LKV_NOMEM, "table %s", path);
    } else {
      lkv_db_table_cache_put(db, *out, t);
    }
  }
  if (rc) lkv_env_unlink(db->env, path, NULL);
  return rc;
}

int lkv_db_build_table(lkv_db *db, lkv_iiter *it, uint64_t number,
                       lkv_fmeta **out, lkv_err *err) {
  char name[64], path[4096];
  lkv_table_builder *b = NULL;
  lkv_buf smallest = {0}, largest = {0};
  int rc;
  *out = NULL;
  lkv_db_table_name(db, number, name, sizeof name);
  if ((rc = dir_path(db, name, path, sizeof path, err))) return rc;
  lkv_table_opts to = lkv_db_table_opts(db);
  if ((rc = lkv_tb_new(path, &to, &b, err))) return rc;
  for (; it->ops->valid(it); it->ops->next(it)) {
    lkv_slice k = it->ops->key(it);
    if (lkv_tb_entries(b) == 0 && lkv_buf_set(&smallest, k.p, k.n)) {
      rc = lkv_seterr(err, LKV_NOMEM, "building %s", name);
      break;
    }
    if ((rc = lkv_tb_add(b, k, it->ops->value(it), err))) break;
    if (lkv_buf_set(&largest, k.p, k.n)) {
      rc = lkv_seterr(err, LKV_NOMEM, "building %s", name);
      break;
    }
  }
  if (rc == LKV_OK) rc = it->ops->status(it, err);
  if (rc || lkv_tb_entries(b) == 0) {
    lkv_tb_abandon(b);
  } else {
    lkv_slice s = {smallest.data, smallest.len}, l = {largest.data, largest.len};
    rc = lkv_db_finish_table(db, b, path, number, s, l, out, err);
  }
  lkv_buf_free(&smallest);
  lkv_buf_free(&largest);
  return rc;
}

/* ---- the flush thread ------------------------------------------------ */

static void *flush_thread(void *arg) {
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
    uint64_t number = db->next_file++;
    pthread_mutex_unlock(&db->mu);

    lkv_err err = {0};
    lkv_fmeta *f = NULL;
    lkv_edit e = {0};
    lkv_iiter *kids[LKV_MAX_IMM], *it = NULL;
    int rc = LKV_OK, nk = 0;
    for (int i = 0; i < k && rc == LKV_OK; i++)
      if ((kids[nk] = lkv_mem_iter(ms[i])) != NULL) nk++; else rc = LKV_NOMEM;
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
      rc = lkv_db_build_table(db, it, number, &f, &err);
      it->ops->destroy(it);
    }
    pthread_mutex_lock(&db->manifest_mu);
    int level = 0;
    if (rc == LKV_OK && f) {
      lkv_slice lo = {f->smallest, f->smallest_len - LKV_TAG_BYTES};
      lkv_slice hi = {f->largest, f->largest_len - LKV_TAG_BYTES};
      pthread_mutex_lock(&db->mu);
      level = lkv_flush_level(db, lo, hi);
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
        remove_file(db, name);
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

/* ---- the write path -------------------------------------------------- */

/* A new log at path, starting at start_seq. With SYNC=always its marker
 * and directory entry are made durable before any write is acknowledged
 * from it (a synced record in a file whose name a power cut takes away is
 * lost all the same). */
static int create_wal(lkv_db *db, const char *path, uint64_t start_seq,
                      lkv_wal **w, lkv_err *err) {
  int rc = lkv_wal_create(db->env, path, w, err);
  if (rc) return rc;
  /* the log's first record says where it starts (wal_format.md) */
  rc = lkv_wal_add_marker(*w, start_seq, err);
  if (rc == LKV_OK && db->o.sync == LKV_SYNC_ALWAYS &&
      (rc = lkv_wal_sync(*w, err)) == LKV_OK)
    rc = lkv_env_sync_dir(db->env, db->dir, err);
  if (rc) {
    lkv_wal_close(*w, NULL);
    *w = NULL;
    lkv_env_unlink(db->env, path, NULL);
  }
  return rc;
}

/* Freeze the memtable and start a new one with a new WAL. (mu, leader) */
static int switch_memtable(lkv_db *db, lkv_err *err) {
  char name[256], path[4096];
  uint64_t number = db->next_file++;
  lkv_wal *w = NULL;
  lkv_mem *m = lkv_mem_new(db->o.max_memtable_size);
  int rc = m ? LKV_OK : lkv_seterr(err, LKV_NOMEM, "new memtable");
  wal_name(db, number, name, sizeof name);
  if (rc == LKV_OK) rc = dir_path(db, name, path, sizeof path, err);
  /* The old WAL is written out (not synced) before the new one takes a
   * write. A power cut may still keep the new log's first records and
   * lose the old one's tail: replay then stops at the gap in sequence
   * numbers between the two (see replay_ctx), so later writes never
   * come back without earlier ones. */
  if (rc == LKV_OK) {
    uint64_t pending = lkv_wal_pending(db->wal);
    rc = lkv_wal_write_out(db->wal, err);
    if (rc == LKV_OK) {
      atomic_fetch_add(&db->bytes_wal, pending);
      db->unwritten = 0;
    }
  }
  uint64_t start = lkv_db_seq(db) + 1; /* the leader's: stable here */
  if (rc == LKV_OK) rc = create_wal(db, path, start, &w, err);
  if (rc) {
    /* the old log stays the db's (close writes what it can); the new one,
     * empty and never used, goes */
    lkv_mem_unref(m);
    if (w) {
      lkv_wal_close(w, NULL);
      remove_file(db, name);
    }
    lkv_db_set_bg_error(db, rc, err);
    return rc;
  }
  /* its bytes are written: only the close is left, which loses nothing */
  lkv_wal_close(db->wal, NULL);
  db->wal = w;
  atomic_store(&db->wal_bytes, 0);
  db->wal_number = number;
  lkv_mem_set_wal(m, number, start);
  db->imm[db->nimm++] = db->mem;
  db->mem = m;
  rc = lkv_db_install_sv(db);
  if (rc) return lkv_seterr(err, rc, "new memtable");
  pthread_cond_signal(&db->flush_cv);
  return LKV_OK;
}

/* Make sure the active memtable has room, waiting for the background
 * threads when they are behind. (mu, leader) */
static int make_room(lkv_db *db, int force, lkv_err *err) {
  int allow_delay = !force;
  for (;;) {
    if (db->bg_error) return lkv_errcopy(err, &db->bg_err);
    if (db->shutting_down) return lkv_seterr(err, LKV_CLOSED, "db is closing");
    int l0 = db->current->n[0];
    if (allow_delay && l0 >= db->o.l0_slowdown_files) {
      /* a 1 ms pause per write lets compaction catch up smoothly instead
       * of stopping every writer at once when L0 hits the stop mark */
      uint64_t t0 = lkv_env_now_micros();
      pthread_mutex_unlock(&db->mu);
      struct timespec ts = {0, 1000000};
      nanosleep(&ts, NULL);
      pthread_mutex_lock(&db->mu);
      allow_delay = 0;
      atomic_fetch_add(&db->stall_slowdowns, 1);
      atomic_fetch_add(&db->stall_micros, lkv_env_now_micros() - t0);
    } else if (!force && lkv_mem_usage(db->mem) < db->o.max_memtable_size) {
      return LKV_OK;
    } else if (force && lkv_mem_entries(db->mem) == 0) {
      return LKV_OK;
    } else if (db->nimm >= db->max_imm || l0 >= db->o.l0_stop_files) {
      uint64_t t0 = lkv_env_now_micros();
      atomic_fetch_add(&db->stall_stops, 1);
      pthread_cond_signal(&db->compact_cv);
      pthread_cond_wait(&db->done_cv, &db->mu);
      atomic_fetch_add(&db->stall_micros, lkv_env_now_micros() - t0);
    } else {
      return switch_memtable(db, err);
    }
  }
}

typedef struct insert_ctx {
  lkv_mem *mem;
} insert_ctx;

static int insert_op(void *ctx, uint64_t seq, int type, const char *key,
                     size_t klen, const char *val, size_t vlen) {
  return lkv_mem_add(((insert_ctx *)ctx)->mem, seq, type, key, klen, val, vlen);
}

/* Write the group's records to the WAL per the sync mode. (leader, no mu) */
static int wal_commit(lkv_db *db, lkv_writer *first, lkv_writer *last,
                      uint64_t seq, int group_writes, lkv_err *err) {
  char hdr[LKV_BATCH_HEADER];
  int rc = LKV_OK;
  for (lkv_writer *w = first;; w = w->next) {
    if (w->count) {
      /* the record is the writer's batch with the assigned seq in front */
      lkv_put64(hdr, seq);
      lkv_put32(hdr + 8, w->count);
      rc = lkv_wal_add2(db->wal, hdr, sizeof hdr, w->rep + LKV_BATCH_HEADER,
                        w->len - LKV_BATCH_HEADER, err);
      if (rc) return rc;
      seq += w->count;
    }
    if (w == last) break;
  }
  uint64_t pending = lkv_wal_pending(db->wal);
  atomic_store_explicit(&db->wal_bytes, lkv_wal_size(db->wal),
                        memory_order_relaxed);
  db->unwritten += group_writes;
  if (db->o.sync == LKV_SYNC_ALWAYS) {
    rc = lkv_wal_sync(db->wal, err);
    atomic_fetch_add(&db->wal_syncs, 1);
  } else if (db->o.sync == LKV_SYNC_NONE || db->unwritten >= db->o.wal_buffer_size) {
    rc = lkv_wal_write_out(db->wal, err);
  } else {
    return LKV_OK;
  }
  if (rc == LKV_OK) {
    db->unwritten = 0;
    atomic_fetch_add(&db->bytes_wal, pending);
  }
  return rc;
}

/* Make every write so far durable: the current WAL (only a leader
 * touches it) and the WALs of frozen memtables still waiting for their
 * flush, which were closed without a sync unless SYNC=always. A WAL that
 * is gone meanwhile was flushed: its writes are in an fsync'ed table.
 * (leader, mu held; dropped while syncing) */
static int sync_wals(lkv_db *db, lkv_err *err) {
  uint64_t wals[LKV_MAX_IMM];
  int n = db->nimm, rc = LKV_OK;
  for (int i = 0; i < n; i++) wals[i] = lkv_mem_wal_number(db->imm[i]);
  pthread_mutex_unlock(&db->mu);
  for (int i = 0; i < n && rc == LKV_OK; i++) {
    char name[256], path[4096];
    int fd;
    lkv_env_info st;
    wal_name(db, wals[i], name, sizeof name);
    rc = dir_path(db, name, path, sizeof path, err);
    if (rc != LKV_OK) break;
    if ((rc = lkv_env_open(db->env, path, O_RDONLY, 0, &fd, err)) == LKV_OK) {
      rc = lkv_env_fdatasync(db->env, fd, path, err);
      lkv_env_close(db->env, fd, path, NULL);
    } else if (lkv_env_stat(db->env, path, &st, NULL) == LKV_NOTFOUND) {
      rc = LKV_OK; /* flushed meanwhile */
    }
  }
  if (rc == LKV_OK) rc = lkv_wal_sync(db->wal, err);
  /* the files' names too: a WAL created since the last sync of the dir */
  if (rc == LKV_OK) rc = lkv_env_sync_dir(db->env, db->dir, err);
  if (rc == LKV_OK) atomic_fetch_add(&db->wal_syncs, 1);
  pthread_mutex_lock(&db->mu);
  return rc;
}

static int db_write_queued(lkv_db *db, lkv_writer *w, lkv_err *err);

/* Commit one writer (a batch or a forced flush) through the queue. */
static int db_write(lkv_db *db, lkv_writer *w, lkv_err *err) {
  if (db->o.read_only)
    return lkv_seterr(err, LKV_INVALID, "%s is open read-only", db->dir);
  int rc = lkv_db_call_begin(db, err);
  if (rc) return rc;
  rc = db_write_queued(db, w, err);
  lkv_db_call_end(db);
  return rc;
}

static int db_write_queued(lkv_db *db, lkv_writer *w, lkv_err *err) {
  pthread_mutex_lock(&db->mu);
  if (db->shutting_down) {
    pthread_mutex_unlock(&db->mu);
    return lkv_seterr(err, LKV_CLOSED, "db is closed");
  }
  w->next = NULL;
  if (db->wq_tail)
    db->wq_tail->next = w;
  else
    db->wq_head = w;
  db->wq_tail = w;
  if (!w->done && w != db->wq_head) {
    pthread_cond_init(&w->cv, NULL);
    w->waiting = 1;
    while (!w->done && w != db->wq_head) pthread_cond_wait(&w->cv, &db->mu);
  }
  if (w->done) {
    pthread_mutex_unlock(&db->mu);
    if (w->waiting) pthread_cond_destroy(&w->cv);
    return w->rc ? lkv_errcopy(err, &w->err) : LKV_OK;
  }

  /* this writer leads: it commits itself and the writers queued behind */
  lkv_err lerr; /* read only when rc != 0, which sets it */
  lerr.code = LKV_OK;
  lerr.msg[0] = '\0';
  int rc = w->sync_wal ? LKV_OK : make_room(db, w->force_flush, &lerr);
  lkv_writer *last = w;
  uint64_t first_seq = atomic_load(&db->last_seq) + 1, seq = first_seq;
  int group = 0;
  if (rc == LKV_OK && !w->force_flush && !w->sync_wal) {
    /* bound the group so a small write does not wait behind a huge one */
    size_t bytes = w->len, limit = w->len <= 128 * 1024 ? w->len + 128 * 1024 : 1 << 20;
    seq += w->count;
    group = 1;
    for (lkv_writer *x = w->next; x && !x->force_flush && !x->sync_wal;
         x = x->next) {
      if (bytes + x->len > limit) break;
      bytes += x->len;
      seq += x->count;
      last = x;
      group++;
    }
    if (seq - 1 > LKV_MAX_SEQ)
      rc = lkv_seterr(&lerr, LKV_INVALID, "sequence numbers exhausted");
  }
  if (rc == LKV_OK && group) {
    lkv_mem *mem = db->mem; /* only a leader switches it: stable while we work */
    pthread_mutex_unlock(&db->mu);
    rc = wal_commit(db, w, last, first_seq, group, &lerr);
    if (rc == LKV_OK) {
      insert_ctx ic = {mem};
      uint64_t s = first_seq, user = 0;
      for (lkv_writer *x = w;; x = x->next) {
        if (x->count) {
          rc = lkv_batch_iterate_seq(x->rep, x->len, s, insert_op, &ic);
          if (rc) {
            lkv_seterr(&lerr, rc, "memtable insert");
            break;
          }
          s += x->count;
          user += x->user_bytes;
        }
        x->last_seq = s - 1;
        if (x == last) break;
      }
      atomic_fetch_add(&db->bytes_user, user);
    }
    pthread_mutex_lock(&db->mu);
    if (rc) {
      /* the WAL or memtable may hold part of the group: stop all writes */
      lkv_db_set_bg_error(db, rc, &lerr);
    } else {
      atomic_store_explicit(&db->last_seq, seq - 1, memory_order_release);
    }
  } else if (rc == LKV_OK && w->force_flush) {
    w->last_seq = atomic_load(&db->last_seq);
  } else if (rc == LKV_OK && w->sync_wal) {
    rc = sync_wals(db, &lerr);
    /* after a failed fsync the kernel may have dropped the dirty pages:
     * what was acknowledged may be gone, so nothing more is accepted */
    if (rc) lkv_db_set_bg_error(db, rc, &lerr);
  }

  /* hand results to the group and wake the next leader */
  for (;;) {
    lkv_writer *x = db->wq_head;
    db->wq_head = x->next;
    if (db->wq_head == NULL) db->wq_tail = NULL;
    x->rc = rc;
    if (rc) x->err = lerr;
    if (x != w) {
      x->done = 1;
      if (x->waiting) pthread_cond_signal(&x->cv); /* it is: it queued behind us */
    }
    if (x == last) break;
  }
  if (db->wq_head && db->wq_head->waiting) pthread_cond_signal(&db->wq_head->cv);
  pthread_mutex_unlock(&db->mu);
  if (w->waiting) pthread_cond_destroy(&w->cv);
  return rc ? lkv_errcopy(err, &lerr) : LKV_OK;
}

static lkv_db *check_db(lkv_db *db, lkv_err *err) {
  if (db == NULL) lkv_seterr(err, LKV_INVALID, "db is NULL");
  return db;
}

int lkv_db_write(lkv_db *db, const lkv_batch *b, uint64_t *last_seq,
                 lkv_err *err) {
  if (!check_db(db, err)) return LKV_INVALID;
  if (b == NULL) return lkv_seterr(err, LKV_INVALID, "batch is NULL");
  if (b->count == 0) {
    if (last_seq) *last_seq = lkv_db_seq(db);
    return LKV_OK;
  }
  lkv_writer w;
  writer_init(&w);
  w.rep = b->rep;
  w.len = b->len;
  w.count = b->count;
  w.user_bytes = b->user_bytes;
  int rc = db_write(db, &w, err);
  if (rc == LKV_OK && last_seq) *last_seq = w.last_seq;
  return rc;
}

/* A one-operation batch encoded on the stack when it is small. */
static int write_one(lkv_db *db, int type, const void *key, size_t klen,
                     const void *val, size_t vlen, uint64_t *seq, lkv_err *err) {
  if (!check_db(db, err)) return LKV_INVALID;
  if (klen > LKV_MAX_KEY_BYTES)
    return lkv_seterr(err, LKV_TOOBIG, "key of %zu bytes (limit %u)", klen,
                      LKV_MAX_KEY_BYTES);
  if (vlen > LKV_MAX_VALUE_BYTES)
    return lkv_seterr(err, LKV_TOOBIG, "value of %zu bytes (limit %u)", vlen,
                      LKV_MAX_VALUE_BYTES);
  if ((klen && key == NULL) || (vlen && val == NULL))
    return lkv_seterr(err, LKV_INVALID, "NULL key or value with a length");
  char stack[512];
  size_t need = LKV_BATCH_HEADER + lkv_batch_op_max(klen, vlen);
  char *rep = need <= sizeof stack ? stack : malloc(need);
  if (rep == NULL) return lkv_seterr(err, LKV_NOMEM, "write of %zu bytes", need);
  lkv_put64(rep, 0);
  lkv_put32(rep + 8, 1);
  char *p = lkv_batch_encode_op(rep + LKV_BATCH_HEADER, type, key, klen, val, vlen);
  lkv_writer w;
  writer_init(&w);
  w.rep = rep;
  w.len = (size_t)(p - rep);
  w.count = 1;
  w.user_bytes = klen + vlen;
  int rc = db_write(db, &w, err);
  if (rep != stack) free(rep);
  if (rc == LKV_OK && seq) *seq = w.last_seq;
  return rc;
}

int lkv_db_set(lkv_db *db, const void *key, size_t klen, const void *val,
               size_t vlen, uint64_t *seq, lkv_err *err) {
  return write_one(db, LKV_TYPE_VALUE, key, klen, val, vlen, seq, err);
}

int lkv_db_delete(lkv_db *db, const void *key, size_t klen, uint64_t *seq,
                  lkv_err *err) {
  return write_one(db, LKV_TYPE_DELETE, key, klen, NULL, 0, seq, err);
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
  if (!check_db(db, err)) return LKV_INVALID;
  if (klen > LKV_MAX_KEY_BYTES)
    return lkv_seterr(err, LKV_TOOBIG, "key of %zu bytes (limit %u)", klen,
                      LKV_MAX_KEY_BYTES);
  if (val == NULL) return lkv_seterr(err, LKV_INVALID, "value buffer is NULL");
  char stack[256];
  char *ik = klen + LKV_TAG_BYTES <= sizeof stack ? stack : malloc(klen + LKV_TAG_BYTES);
  if (ik == NULL) return lkv_seterr(err, LKV_NOMEM, "get");
  unsigned stripe = lkv_thread_stripe() % LKV_SV_STRIPES;
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
  if (!check_db(db, err)) return LKV_INVALID;
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

uint64_t lkv_db_oldest_snapshot(lkv_db *db) {
  if (db->snap_list.next != &db->snap_list) return db->snap_list.next->seq;
  return atomic_load(&db->last_seq);
}

/* ---- flush and compaction requests ----------------------------------- */

void lkv_db_charge_seek(lkv_db *db, const lkv_seek_charge *c) {
  if (c->level >= LKV_MAX_LEVELS - 1) return; /* nowhere to push it */
  /* long spent (compactions stopped by an error, say): stop counting
   * well before the int could wrap */
  if (atomic_load_explicit(&c->f->allowed_seeks, memory_order_relaxed) < -(1 << 30))
    return;
  int left = atomic_fetch_sub_explicit(&c->f->allowed_seeks, 1,
                                       memory_order_relaxed) - 1;
  /* At 0, and now and then after (the first request may have found the
   * compaction thread holding another candidate), not at every read. */
  if (left > 0 || (left < 0 && (left & 1023) != 0)) return;
  pthread_mutex_lock(&db->mu);
  if (db->seek_file == NULL && !db->shutting_down) {
    lkv_fmeta_ref(c->f);
    db->seek_file = c->f;
    db->seek_level = c->level;
    pthread_cond_signal(&db->compact_cv);
  }
  pthread_mutex_unlock(&db->mu);
}

int lkv_db_flush(lkv_db *db, lkv_err *err) {
  if (!check_db(db, err)) return LKV_INVALID;
  lkv_writer w;
  writer_init(&w);
  w.force_flush = 1;
  int rc = db_write(db, &w, err);
  if (rc) return rc;
  if ((rc = lkv_db_call_begin(db, err))) return rc;
  pthread_mutex_lock(&db->mu);
  /* batch mode may hold records in the WAL buffer of the new memtable:
   * "flushed" promises they reach an SSTable or at least the OS */
  while (db->nimm > 0 && !db->bg_error && !db->shutting_down)
    pthread_cond_wait(&db->done_cv, &db->mu);
  rc = db->bg_error          ? lkv_errcopy(err, &db->bg_err)
       : db->nimm > 0 ? lkv_seterr(err, LKV_CLOSED, "db closed during a flush")
                           : LKV_OK;
  pthread_mutex_unlock(&db->mu);
  lkv_db_call_end(db);
  return rc;
}

int lkv_db_sync(lkv_db *db, lkv_err *err) {
  if (!check_db(db, err)) return LKV_INVALID;
  lkv_writer w;
  writer_init(&w);
  w.sync_wal = 1;
  return db_write(db, &w, err);
}

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
  lkv_version *v = db->current;
  for (int l = 0; l < LKV_MAX_LEVELS; l++) {
    st->sstables_per_level[l] = (uint64_t)v->n[l];
    st->bytes_per_level[l] = lkv_version_level_bytes(v, l);
    st->sstable_count += (uint64_t)v->n[l];
    st->total_size_bytes += st->bytes_per_level[l];
  }
  st->memtable_size_bytes = lkv_mem_usage(db->mem);
  for (int i = 0; i < db->nimm; i++) st->memtable_size_bytes += lkv_mem_usage(db->imm[i]);
  st->memtable_keys = lkv_mem_entries(db->mem);
  st->imm_memtables = (uint64_t)db->nimm;
  st->wal_size_bytes = atomic_load_explicit(&db->wal_bytes, memory_order_relaxed);
  st->live_snapshots = (uint64_t)db->live_snapshots;
  st->live_iterators = (uint64_t)db->live_iters;
  st->wal_dropped_bytes = db->wal_dropped;
  memcpy(st->recovery_msg, db->recovery_msg, sizeof st->recovery_msg);
  st->compaction_pending =
      db->compacting || db->manual_compact || (!db->bg_error && lkv_compact_needed(db));
  st->bg_error = db->bg_error;
  if (db->bg_error) memcpy(st->bg_error_msg, db->bg_err.msg, sizeof st->bg_error_msg);
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

/* ---- open and recovery ----------------------------------------------- */

typedef struct replay_ctx {
  lkv_mem *mem;
  uint64_t max_seq;
  /* The chain of sequence numbers (wal_format.md): every record carries
   * the number the one before left off at. A record that does not follow
   * on ends the replay: a power cut kept a later log's records and lost
   * an earlier log's tail. */
  uint64_t next;      /* the number the next record must carry; 0: any */
  int log_start;      /* no record of the current log seen yet */
  uint64_t log_first; /* the current log's first record's number */
} replay_ctx;

static int replay_record(void *ctx, const char *rec, size_t n, lkv_err *err) {
  replay_ctx *rc = ctx;
  (void)err;
  /* validate the whole record first: a batch applies all or nothing */
  int r = lkv_batch_iterate(rec, n, NULL, NULL);
  if (r) return LKV_CORRUPTION;
  uint64_t seq = lkv_get64(rec);
  uint32_t count = lkv_get32(rec + 8);
  if (rc->next && seq != rc->next) return LKV_NOTFOUND;
  if (rc->log_start) rc->log_first = seq;
  rc->log_start = 0;
  if (count == 0) { /* a marker */
    rc->next = seq;
    return LKV_OK;
  }
  insert_ctx ic = {rc->mem};
  r = lkv_batch_iterate(rec, n, insert_op, &ic);
  if (r) return r == LKV_CORRUPTION ? LKV_CORRUPTION : LKV_NOMEM;
  if (seq + count - 1 > rc->max_seq) rc->max_seq = seq + count - 1;
  rc->next = seq + count;
  return LKV_OK;
}

/* Load the manifest's tables into db->current. */
static int load_version(lkv_db *db, const lkv_manifest *m, lkv_err *err) {
  lkv_edit e = {0};
  int rc = LKV_OK;
  for (size_t i = 0; i < m->nfiles && rc == LKV_OK; i++) {
    const lkv_mfile *mf = &m->files[i];
    char name[64], path[4096];
    lkv_table *t = NULL;
    lkv_env_info st;
    lkv_db_table_name(db, mf->number, name, sizeof name);
    if ((rc = dir_path(db, name, path, sizeof path, err))) break;
    if ((rc = lkv_env_stat(db->env, path, &st, err)) == LKV_NOTFOUND) {
      rc = lkv_seterr(err, LKV_CORRUPTION,
                      "%s/MANIFEST lists %s but the file is missing", db->dir, name);
      break;
    }
    if (rc || (rc = lkv_db_open_table(db, path, mf->number, &t, err))) break;
    uint64_t size = lkv_table_file_size(t);
    if (size != mf->size) {
      lkv_table_close(t);
      rc = lkv_seterr(err, LKV_CORRUPTION,
                      "%s: size %llu differs from the %llu bytes in MANIFEST", name,
                      (unsigned long long)size, (unsigned long long)mf->size);
      break;
    }
    lkv_slice s = {mf->smallest, mf->smallest_len}, l = {mf->largest, mf->largest_len};
    lkv_fmeta *f = lkv_fmeta_new(db, mf->number, mf->size, s, l);
    if (f == NULL) {
      lkv_table_close(t);
      rc = lkv_seterr(err, LKV_NOMEM, "loading tables");
    } else {
      lkv_db_table_cache_put(db, f, t); /* verified: keep it open */
      if (lkv_edit_add(&e, mf->level, f)) {
        lkv_fmeta_unref(f);
        rc = lkv_seterr(err, LKV_NOMEM, "loading tables");
      }
    }
  }
  if (rc == LKV_OK) {
    db->current = lkv_version_apply(NULL, &e);
    if (db->current == NULL) rc = lkv_seterr(err, LKV_NOMEM, "loading tables");
  }
  lkv_edit_free(&e);
  return rc;
}

/* A file of the directory, as open sorts it. */
typedef struct dir_entry {
  int kind; /* NAME_TABLE, NAME_LOG, NAME_OTHER */
  uint64_t number;
  size_t base_len; /* logs: the base is name[0 .. base_len) */
  char name[];
} dir_entry;

typedef struct dir_scan {
  dir_entry **e;
  size_t n, cap;
  int nomem;
} dir_scan;

static int scan_add(void *arg, const char *name) {
  dir_scan *sc = arg;
  size_t nl = strlen(name);
  if (sc->n == sc->cap) {
    size_t cap = sc->cap ? sc->cap * 2 : 32;
    dir_entry **p = realloc(sc->e, cap * sizeof *p);
    if (p == NULL) return sc->nomem = 1;
    sc->e = p;
    sc->cap = cap;
  }
  dir_entry *d = malloc(sizeof *d + nl + 1);
  if (d == NULL) return sc->nomem = 1;
  memcpy(d->name, name, nl + 1);
  const char *base = NULL;
  d->base_len = 0;
  d->kind = parse_name(d->name, &d->number, &base, &d->base_len);
  sc->e[sc->n++] = d;
  return 0;
}

static void scan_free(dir_scan *sc) {
  for (size_t i = 0; i < sc->n; i++) free(sc->e[i]);
  free(sc->e);
  memset(sc, 0, sizeof *sc);
}

static int scan_dir(lkv_db *db, dir_scan *sc, lkv_err *err) {
  memset(sc, 0, sizeof *sc);
  int rc = lkv_env_list_dir(db->env, db->dir, scan_add, sc, err);
  if (rc == LKV_OK && sc->nomem) rc = lkv_seterr(err, LKV_NOMEM, "scanning %s", db->dir);
  if (rc) scan_free(sc);
  return rc;
}

static int is_log_of(const dir_entry *d, const char *base) {
  return d->kind == NAME_LOG && strlen(base) == d->base_len &&
         memcmp(d->name, base, d->base_len) == 0;
}

/* A directory without a MANIFEST is a new database only when it holds
 * nothing but what an interrupted first open leaves (LOCK, MANIFEST.tmp,
 * an empty log): anything else is someone's data, refused untouched. */
static int check_fresh(lkv_db *db, const dir_scan *sc, lkv_err *err) {
  for (size_t i = 0; i < sc->n; i++) {
    const dir_entry *d = sc->e[i];
    if (d->kind == NAME_TABLE)
      return lkv_seterr(err, LKV_CORRUPTION,
                        "%s/MANIFEST is missing but tables exist (%s)",
                        db->dir, d->name);
    if (strcmp(d->name, "LOCK") == 0 || strcmp(d->name, LKV_MANIFEST_TMP) == 0)
      continue;
    if (is_log_of(d, db->log_file_name)) {
      char path[4096];
      lkv_env_info st;
      if (dir_path(db, d->name, path, sizeof path, NULL) == LKV_OK &&
          lkv_env_stat(db->env, path, &st, NULL) == LKV_OK && st.size == 0)
        continue;
    }
    return lkv_seterr(err, LKV_INVALID,
                      "%s is not a lunakv database: it holds %s but no "
                      "MANIFEST (open an empty or new directory)",
                      db->dir, d->name);
  }
  return LKV_OK;
}

/* The base name of the logs to replay. A version 2 MANIFEST records it;
 * a version 1 MANIFEST did not (the logs were named after the option at
 * the time), so the live logs tell: the configured name's, else the one
 * other name they carry. */
static int replay_base(lkv_db *db, const lkv_manifest *m, const dir_scan *sc,
                       char *base, size_t n, lkv_err *err) {
  if (m->wal_name) {
    snprintf(base, n, "%.*s", (int)m->wal_name_len, m->wal_name);
    return LKV_OK;
  }
  const dir_entry *found = NULL;
  for (size_t i = 0; i < sc->n; i++) {
    const dir_entry *d = sc->e[i];
    if (d->kind != NAME_LOG || d->number < m->wal_number) continue;
    if (is_log_of(d, db->log_file_name)) {
      found = NULL;
      break;
    }
    if (found && (found->base_len != d->base_len ||
                  memcmp(found->name, d->name, d->base_len) != 0))
      return lkv_seterr(err, LKV_INVALID,
                        "%s holds logs under two names (%s, %s) and its "
                        "MANIFEST does not say which is live: set "
                        "log_file_name to the one it was written with",
                        db->dir, found->name, d->name);
    found = d;
  }
  if (found)
    snprintf(base, n, "%.*s", (int)found->base_len, found->name);
  else
    snprintf(base, n, "%s", db->log_file_name);
  return LKV_OK;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* The live logs of base (numbered from the MANIFEST's wal_number), in
 * order, into *wals; deletes what no one needs (unless read-only): tables
 * the MANIFEST does not list (an interrupted flush or compaction), older
 * logs of base (already flushed) when the base is known, MANIFEST.tmp.
 * Logs under another name are left alone: they are not this database's. */
static int sort_files(lkv_db *db, const lkv_manifest *m, const dir_scan *sc,
                      const char *base, int base_known, uint64_t **wals,
                      size_t *nwals, uint64_t *max_number, lkv_err *err) {
  *nwals = 0;
  *wals = malloc((sc->n ? sc->n : 1) * sizeof **wals);
  if (*wals == NULL) return lkv_seterr(err, LKV_NOMEM, "scanning %s", db->dir);
  for (size_t i = 0; i < sc->n; i++) {
    const dir_entry *d = sc->e[i];
    int dead = strcmp(d->name, LKV_MANIFEST_TMP) == 0;
    if (d->kind == NAME_TABLE) {
      int live = 0;
      for (size_t j = 0; j < m->nfiles && !live; j++) live = m->files[j].number == d->number;
      dead = !live;
    } else if (is_log_of(d, base)) {
      if (d->number >= m->wal_number)
        (*wals)[(*nwals)++] = d->number;
      else
        dead = base_known; /* a guessed name deletes nothing */
    }
    if ((d->kind == NAME_TABLE || is_log_of(d, base)) && d->number > *max_number)
      *max_number = d->number;
    if (dead && !db->o.read_only) remove_file(db, d->name);
  }
  if (*nwals) qsort(*wals, *nwals, sizeof **wals, cmp_u64);
  return LKV_OK;
}

/* Write the replayed memtable as an L0 table, record it with a fresh log
 * number in the MANIFEST, then create that log: the MANIFEST goes first,
 * so a crash between the two leaves a log number with no file (nothing to
 * replay) rather than a log no MANIFEST knows. */
static int restart_log(lkv_db *db, lkv_err *err) {
  lkv_edit e = {0};
  int rc = LKV_OK;
  char name[256], path[4096];
  db->wal_number = db->next_file++;
  uint64_t start = lkv_db_seq(db) + 1;
  lkv_mem_set_wal(db->mem, db->wal_number, start);
  if (lkv_mem_entries(db->mem) > 0) {
    lkv_fmeta *f = NULL;
    lkv_iiter *it = lkv_mem_iter(db->mem);
    if (it == NULL) return lkv_seterr(err, LKV_NOMEM, "recovery");
    it->ops->seek_first(it);
    rc = lkv_db_build_table(db, it, db->next_file++, &f, err);
    it->ops->destroy(it);
    if (rc == LKV_OK && f) atomic_fetch_add(&db->level_written[0], f->size);
    if (rc == LKV_OK && f && lkv_edit_add(&e, 0, f)) {
      lkv_fmeta_unref(f);
      rc = lkv_seterr(err, LKV_NOMEM, "recovery");
    }
    lkv_mem *fresh = rc ? NULL : lkv_mem_new(db->o.max_memtable_size);
    if (rc == LKV_OK && fresh == NULL) rc = lkv_seterr(err, LKV_NOMEM, "recovery");
    if (rc) {
      lkv_edit_free(&e);
      return rc;
    }
    lkv_mem_set_wal(fresh, db->wal_number, start);
    lkv_mem_unref(db->mem);
    db->mem = fresh;
  }
  if ((rc = lkv_db_install_sv(db))) {
    lkv_edit_free(&e);
    return lkv_seterr(err, rc, "recovery");
  }
  pthread_mutex_lock(&db->manifest_mu);
  rc = lkv_db_log_and_apply(db, &e, 0, NULL, err); /* the new wal_number */
  pthread_mutex_unlock(&db->manifest_mu);
  lkv_edit_free(&e);
  wal_name(db, db->wal_number, name, sizeof name);
  if (rc == LKV_OK && (rc = dir_path(db, name, path, sizeof path, err)) == LKV_OK)
    rc = create_wal(db, path, start, &db->wal, err);
  return rc;
}

static int recover(lkv_db *db, lkv_err *err) {
  lkv_manifest m;
  dir_scan sc;
  int exists, rc;
  uint64_t *wals = NULL;
  size_t nwals = 0;
  char base[256];
  if ((rc = lkv_manifest_read(db->env, db->dir, &m, &exists, err))) return rc;
  if ((rc = scan_dir(db, &sc, err))) {
    lkv_manifest_free(&m);
    return rc;
  }
  if (!exists) {
    m.next_file = 1;
    m.wal_number = 0;
    if ((rc = check_fresh(db, &sc, err))) goto out;
    if (db->o.read_only) {
      rc = lkv_seterr(err, LKV_INVALID, "%s holds no lunakv database (no MANIFEST)",
                      db->dir);
      goto out;
    }
  }
  if ((rc = replay_base(db, &m, &sc, base, sizeof base, err))) goto out;
  int base_known = m.wal_name != NULL || strcmp(base, db->log_file_name) == 0;
  if ((rc = load_version(db, &m, err))) goto out;
  uint64_t max_number = 0;
  if ((rc = sort_files(db, &m, &sc, base, base_known, &wals, &nwals, &max_number,
                       err)))
    goto out;
  db->next_file = m.next_file > max_number + 1 ? m.next_file : max_number + 1;
  uint64_t last_seq = m.last_seq;

  /* the chain starts where the MANIFEST says its oldest live log does
   * (unknown for a version 1 MANIFEST) */
  replay_ctx rctx = {db->mem, 0, m.wal_start_seq, 0, 0};
  uint64_t valid_end = 0, dropped = 0;
  size_t replayed = 0;
  for (size_t i = 0; i < nwals; i++) {
    char name[256], path[4096], why[160];
    log_name(base, wals[i], name, sizeof name);
    if ((rc = dir_path(db, name, path, sizeof path, err))) goto out;
    rctx.log_start = 1;
    rc = lkv_wal_replay(db->env, path, replay_record, &rctx, &valid_end, &dropped,
                        why, sizeof why, err);
    if (rc == LKV_NOMEM) lkv_seterr(err, rc, "replaying %s", name);
    if (rc) goto out;
    replayed = i + 1;
    if (dropped) {
      /* kept for stats (the library prints nothing): later logs hold later
       * writes, so replay stops here to keep a clean prefix */
      db->wal_dropped = dropped;
      int n = snprintf(db->recovery_msg, sizeof db->recovery_msg,
                       "%.64s: %.150s; replay stopped there", name, why);
      (void)n; /* bounded by the precisions above */
      break;
    }
  }
  if (rctx.max_seq > last_seq) last_seq = rctx.max_seq;
  atomic_store(&db->last_seq, last_seq);

  if (db->o.read_only) {
    /* the replayed writes stay in memory: nothing on disk changes */
    rc = lkv_db_install_sv(db);
  } else if (replayed == 1 && nwals == 1 && m.wal_name != NULL &&
             strcmp(base, db->log_file_name) == 0 && rctx.next == last_seq + 1) {
    /* the common case: keep appending to the log, cut after its last
     * good record so new writes follow valid data. Only when the log ends
     * where the sequence numbers go on: after a crash that lost writes
     * the MANIFEST counted, new writes start past a gap, and a fresh log
     * (below) starts the chain there. */
    char name[256], path[4096];
    wal_name(db, wals[0], name, sizeof name);
    if ((rc = dir_path(db, name, path, sizeof path, err)) ||
        (rc = lkv_wal_reopen(db->env, path, valid_end, &db->wal, err)))
      goto out;
    db->wal_number = wals[0];
    atomic_store(&db->wal_bytes, valid_end);
    uint64_t start = m.wal_number == wals[0] && m.wal_start_seq ? m.wal_start_seq
                     : rctx.log_first ? rctx.log_first
                                      : last_seq + 1;
    lkv_mem_set_wal(db->mem, wals[0], start);
    rc = lkv_db_install_sv(db);
    /* The log may have been created by an earlier open in another sync
     * mode, its directory entry never synced: under SYNC=always writes
     * acknowledged in it must not vanish with it. */
    if (rc == LKV_OK && db->o.sync == LKV_SYNC_ALWAYS)
      rc = lkv_env_sync_dir(db->env, db->dir, err);
  } else {
    /* several logs (a crash with a frozen memtable), logs under another
     * name than the one configured, writes lost, or none: what was
     * replayed goes into a table and one fresh log starts; the old logs go
     * once the MANIFEST no longer needs them */
    if ((rc = restart_log(db, err))) goto out;
    /* (logs whose name was only guessed, for a version 1 MANIFEST, are
     * left in place: the new MANIFEST names others, so they are never
     * read again, and a guess must not delete what may be a user's file) */
    for (size_t i = 0; i < nwals && base_known; i++) {
      char name[256];
      log_name(base, wals[i], name, sizeof name);
      remove_file(db, name);
    }
  }
out:
  free(wals);
  scan_free(&sc);
  lkv_manifest_free(&m);
  return rc;
}

static void db_free(lkv_db *db) {
  for (int i = 0; i < LKV_SV_STRIPES; i++) {
    lkv_sv_unref(db->stripes[i].sv);
  }
  lkv_fmeta_unref(db->seek_file);
  lkv_sv_unref(db->sv);
  lkv_version_unref(db->current);
  lkv_mem_unref(db->mem);
  for (int i = 0; i < db->nimm; i++) lkv_mem_unref(db->imm[i]);
  /* the files the versions above were the last to hold */
  lkv_db_bury_dead(db);
  /* after the versions: no table is pinned any more */
  if (db->tcache) lkv_cache_free(db->tcache);
  if (db->cache) lkv_cache_free(db->cache);
  for (int l = 0; l < LKV_MAX_LEVELS; l++) free(db->compact_ptr[l]);
  lkv_env_unlock(db->env, db->lock_fd);
  pthread_mutex_destroy(&db->mu);
  pthread_mutex_destroy(&db->manifest_mu);
  pthread_mutex_destroy(&db->dead_mu);
  pthread_cond_destroy(&db->flush_cv);
  pthread_cond_destroy(&db->compact_cv);
  pthread_cond_destroy(&db->done_cv);
  pthread_cond_destroy(&db->dead_cv);
  free(db->dir);
  free(db->log_file_name);
  free(db);
}

/* Closes and deletes the table files readers let go of (see
 * lkv_fmeta_unref). */
static void *janitor_thread(void *arg) {
  lkv_db *db = arg;
  pthread_mutex_lock(&db->dead_mu);
  for (;;) {
    while (db->dead == NULL && !db->janitor_stop)
      pthread_cond_wait(&db->dead_cv, &db->dead_mu);
    if (db->dead == NULL) break;
    pthread_mutex_unlock(&db->dead_mu);
    lkv_db_bury_dead(db);
    pthread_mutex_lock(&db->dead_mu);
  }
  pthread_mutex_unlock(&db->dead_mu);
  return NULL;
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
    pthread_mutex_lock(&db->dead_mu);
    db->janitor_stop = 1;
    pthread_cond_signal(&db->dead_cv);
    pthread_mutex_unlock(&db->dead_mu);
    pthread_join(db->janitor_th, NULL);
  }
}

int lkv_db_open(const char *dir, const lkv_options *opts, lkv_db **out,
                lkv_err *err) {
  lkv_options o;
  int rc;
  if (out) *out = NULL;
  if (dir == NULL || dir[0] == '\0' || out == NULL)
    return lkv_seterr(err, LKV_INVALID, "open: directory name and out pointer are required");
  if (opts)
    o = *opts;
  else
    lkv_options_init(&o);
  if ((rc = check_options(&o, err))) return rc;
  const lkv_env *env = o.env ? o.env : lkv_env_posix();
  if (o.read_only) {
    lkv_env_info st;
    rc = lkv_env_stat(env, dir, &st, err);
    if (rc == LKV_NOTFOUND)
      return lkv_seterr(err, LKV_INVALID, "%s does not exist (opening read-only)", dir);
    if (rc) return rc;
    if (!st.is_dir) return lkv_seterr(err, LKV_INVALID, "%s is not a directory", dir);
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
  pthread_mutex_init(&db->dead_mu, NULL);
  pthread_cond_init(&db->flush_cv, NULL);
  pthread_cond_init(&db->compact_cv, NULL);
  pthread_cond_init(&db->done_cv, NULL);
  pthread_cond_init(&db->dead_cv, NULL);
  for (int i = 0; i < LKV_SV_STRIPES; i++) atomic_init(&db->stripes[i].mu.held, 0);
  db->snap_list.next = db->snap_list.prev = &db->snap_list;
  db->o = o;
  db->env = env;
  db->o.env = env;
  size_t per = o.max_memtable_size ? o.max_memtable_size : 1;
  db->max_imm = LKV_IMM_BUDGET_BYTES / per > LKV_MAX_IMM ? LKV_MAX_IMM
                                                         : (int)(LKV_IMM_BUDGET_BYTES / per);
  if (db->max_imm < 2) db->max_imm = 2;
  db->dir = strdup(dir);
  db->log_file_name = strdup(o.log_file_name);
  db->o.log_file_name = db->log_file_name;
  db->mem = lkv_mem_new(db->o.max_memtable_size);
  if (o.block_cache_bytes) db->cache = lkv_cache_new(o.block_cache_bytes);
  db->tcache = lkv_cache_new((size_t)(o.max_open_files - o.max_open_files / 2));
  if (!db->dir || !db->log_file_name || !db->mem || !db->tcache ||
      (o.block_cache_bytes && !db->cache)) {
    db_free(db);
    return lkv_seterr(err, LKV_NOMEM, "open %s", dir);
  }
  /* a directory that is someone else's is refused before LOCK is made in
   * it (recover checks again under the lock) */
  {
    lkv_env_info st;
    char mpath[4096];
    dir_scan sc;
    if ((rc = dir_path(db, LKV_MANIFEST_NAME, mpath, sizeof mpath, err)) == LKV_OK &&
        lkv_env_stat(env, mpath, &st, NULL) == LKV_NOTFOUND &&
        (rc = scan_dir(db, &sc, err)) == LKV_OK) {
      rc = check_fresh(db, &sc, err);
      scan_free(&sc);
    }
    if (rc) {
      db_free(db);
      return rc;
    }
  }
  if ((rc = lkv_env_lock(env, dir, !o.read_only, &db->lock_fd, err)) ||
      (rc = recover(db, err))) {
    if (db->wal) lkv_wal_close(db->wal, NULL);
    db_free(db);
    return rc;
  }
  if (o.read_only) {
    *out = db;
    return LKV_OK;
  }
  int started = 0;
  if (pthread_create(&db->flush_th, NULL, flush_thread, db) == 0) started++;
  if (started == 1 && pthread_create(&db->compact_th, NULL, lkv_compact_thread, db) == 0)
    started++;
  if (started == 2 && pthread_create(&db->janitor_th, NULL, janitor_thread, db) == 0)
    started++;
  if (started < 3) {
    stop_threads(db, started);
    lkv_wal_close(db->wal, NULL);
    db_free(db);
    return lkv_seterr(err, LKV_IOERROR, "open %s: cannot start a background thread", dir);
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
  atomic_store(&db->closing, 1);
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
  db_free(db);
  return rc;
}
