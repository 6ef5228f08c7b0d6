/* write.c - the write path: a queue of writers whose leader commits a
 * group with one WAL write and, under SYNC=always, one fdatasync; the
 * memtable switch with its new log; and the requests that ride the same
 * queue (lkv_db_flush, lkv_db_sync). */
#include <fcntl.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "batch.h"
#include "coding.h"
#include "db_impl.h"
#include "env.h"
#include "err.h"

struct lkv_writer {
  const char *rep; /* encoded batch (batch.h); its seq field is ignored */
  size_t len;
  uint32_t count;
  uint64_t user_bytes;
  int force_flush; /* no data: freeze the memtable (lkv_db_flush) */
  int sync_wal;    /* no data: make the WALs durable (lkv_db_sync) */
  int no_stall;    /* LKV_WRITE_NO_STALL: LKV_BUSY instead of waiting */
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

/* (see db_impl.h) With SYNC=always the marker and the directory entry
 * are durable before any write is acknowledged from the log: a synced
 * record in a file whose name a power cut takes away is lost all the
 * same. */
int lkv_db_create_wal(lkv_db *db, const char *path, uint64_t start_seq,
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
  uint64_t number = lkv_vset_new_file(&db->vs);
  lkv_wal *w = NULL;
  lkv_mem *m = lkv_mem_new(db->o.max_memtable_size);
  int rc = m ? LKV_OK : lkv_seterr(err, LKV_NOMEM, "new memtable");
  lkv_db_log_name(db->log_file_name, number, name, sizeof name);
  if (rc == LKV_OK) rc = lkv_db_path(db, name, path, sizeof path, err);
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
  if (rc == LKV_OK) rc = lkv_db_create_wal(db, path, start, &w, err);
  if (rc) {
    /* the old log stays the db's (close writes what it can); the new one,
     * empty and never used, goes */
    lkv_mem_unref(m);
    if (w) {
      lkv_wal_close(w, NULL);
      lkv_db_remove_file(db, name);
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
static int make_room(lkv_db *db, int force, int no_stall, lkv_err *err) {
  int allow_delay = !force && !no_stall;
  for (;;) {
    if (db->bg_error) return lkv_errcopy(err, &db->bg_err);
    if (db->shutting_down) return lkv_seterr(err, LKV_CLOSED, "db is closing");
    int l0 = db->vs.current->n[0];
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
      uint64_t t0;
      if (no_stall) {
        atomic_fetch_add(&db->stall_refusals, 1);
        return lkv_seterr(err, LKV_BUSY,
                          "the write would wait for a flush or a compaction "
                          "(%d frozen memtables, %d level-0 tables)",
                          db->nimm, l0);
      }
      t0 = lkv_env_now_micros();
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
  } else if (db->o.sync == LKV_SYNC_NONE ||
             db->unwritten >= db->o.wal_buffer_size) {
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
    lkv_db_log_name(db->log_file_name, wals[i], name, sizeof name);
    rc = lkv_db_path(db, name, path, sizeof path, err);
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
  int rc =
      w->sync_wal ? LKV_OK : make_room(db, w->force_flush, w->no_stall, &lerr);
  lkv_writer *last = w;
  uint64_t first_seq = lkv_vset_last_seq(&db->vs) + 1, seq = first_seq;
  int group = 0;
  if (rc == LKV_OK && !w->force_flush && !w->sync_wal) {
    /* bound the group so a small write does not wait behind a huge one */
    size_t bytes = w->len,
           limit = w->len <= 128 * 1024 ? w->len + 128 * 1024 : 1 << 20;
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
    lkv_mem *mem =
        db->mem; /* only a leader switches it: stable while we work */
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
      lkv_vset_set_last_seq(&db->vs, seq - 1);
    }
  } else if (rc == LKV_OK && w->force_flush) {
    w->last_seq = lkv_vset_last_seq(&db->vs);
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
      if (x->waiting)
        pthread_cond_signal(&x->cv); /* it is: it queued behind us */
    }
    if (x == last) break;
  }
  if (db->wq_head && db->wq_head->waiting)
    pthread_cond_signal(&db->wq_head->cv);
  pthread_mutex_unlock(&db->mu);
  if (w->waiting) pthread_cond_destroy(&w->cv);
  return rc ? lkv_errcopy(err, &lerr) : LKV_OK;
}

int lkv_db_write(lkv_db *db, const lkv_batch *b, uint64_t *last_seq,
                 lkv_err *err) {
  return lkv_db_write_opt(db, b, 0, last_seq, err);
}

int lkv_db_write_opt(lkv_db *db, const lkv_batch *b, int flags,
                     uint64_t *last_seq, lkv_err *err) {
  if (!lkv_db_check(db, err)) return LKV_INVALID;
  if ((flags & ~LKV_WRITE_NO_STALL) != 0)
    return lkv_seterr(err, LKV_INVALID, "unknown write flags 0x%x",
                      (unsigned)flags);
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
  w.no_stall = (flags & LKV_WRITE_NO_STALL) != 0;
  int rc = db_write(db, &w, err);
  if (rc == LKV_OK && last_seq) *last_seq = w.last_seq;
  return rc;
}

/* A one-operation batch encoded on the stack when it is small. */
static int write_one(lkv_db *db, int type, const void *key, size_t klen,
                     const void *val, size_t vlen, uint64_t *seq,
                     lkv_err *err) {
  if (!lkv_db_check(db, err)) return LKV_INVALID;
  int rc = lkv_batch_check_sizes(klen, vlen, err);
  if (rc != LKV_OK) return rc;
  if ((klen && key == NULL) || (vlen && val == NULL))
    return lkv_seterr(err, LKV_INVALID, "NULL key or value with a length");
  char stack[512];
  size_t need = LKV_BATCH_HEADER + lkv_batch_op_max(klen, vlen);
  char *rep = need <= sizeof stack ? stack : malloc(need);
  if (rep == NULL)
    return lkv_seterr(err, LKV_NOMEM, "write of %zu bytes", need);
  lkv_put64(rep, 0);
  lkv_put32(rep + 8, 1);
  char *p =
      lkv_batch_encode_op(rep + LKV_BATCH_HEADER, type, key, klen, val, vlen);
  lkv_writer w;
  writer_init(&w);
  w.rep = rep;
  w.len = (size_t)(p - rep);
  w.count = 1;
  w.user_bytes = klen + vlen;
  rc = db_write(db, &w, err);
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

int lkv_db_flush(lkv_db *db, lkv_err *err) {
  if (!lkv_db_check(db, err)) return LKV_INVALID;
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
  rc = db->bg_error   ? lkv_errcopy(err, &db->bg_err)
       : db->nimm > 0 ? lkv_seterr(err, LKV_CLOSED, "db closed during a flush")
                      : LKV_OK;
  pthread_mutex_unlock(&db->mu);
  lkv_db_call_end(db);
  return rc;
}

int lkv_db_sync(lkv_db *db, lkv_err *err) {
  if (!lkv_db_check(db, err)) return LKV_INVALID;
  lkv_writer w;
  writer_init(&w);
  w.sync_wal = 1;
  return db_write(db, &w, err);
}
