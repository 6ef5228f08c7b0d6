/* db_impl.h - the db's internal state, shared by the files that carry
 * out its calls. Calls go one way, down this list (tools/callgraph.sh
 * checks that no file calls back up):
 *   db.c      the public lkv_db_* / lkv_snapshot_* entry points: open,
 *             close, reads, snapshots, stats; starts the threads
 *   dbiter.c  the public iterator        write.c    the write path
 *   recover.c what open finds on disk    flush.c    the flush thread
 *   compact.c the compaction thread, executing what the version set picks
 *   dbstate.c state all of the above share (calls, background error,
 *             superversions, version installs, names of files)
 *   vset.c    the version set: current version, MANIFEST, compaction
 *             choice; builder.c makes tables; version.c reads versions;
 *             tcache.c keeps tables open; then the tables, memtables,
 *             logs and utilities beneath.
 *
 * Lock discipline:
 *  - mu guards everything marked (mu). Never held across disk I/O except
 *    creating the next WAL file on a memtable switch.
 *  - manifest_mu serialises version changes (flush and compaction
 *    installs): taken before mu, held across the manifest write so the
 *    edit is applied to the version it was computed from.
 *  - Readers take mu only to reference the current superversion, then
 *    read without locks: memtables are lock-free for readers, tables and
 *    versions are immutable, and every one of them is reference counted.
 */
#ifndef LKV_DB_IMPL_H
#define LKV_DB_IMPL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "cache.h"
#include "dbformat.h"
#include "env.h" /* lkv_spin */
#include "err.h"
#include "iter.h"
#include "lunakv.h"
#include "memtable.h"
#include "table.h"
#include "tcache.h"
#include "version.h"
#include "vset.h"
#include "wal.h"

/* Frozen memtables that may wait for flush before writers wait: the db's
 * max_imm, between 2 and LKV_MAX_IMM, keeps them under about 16 MiB in
 * all, so tiny memtables (the seed's 4 KiB) queue up instead of making
 * every few writes wait for a flush with its fsyncs. */
#define LKV_MAX_IMM 64
#define LKV_IMM_BUDGET_BYTES (16u << 20)

/* Everything a reader needs, referenced in one step. Two kinds of
 * reference: `refs` (atomic, for long holders such as iterators, and one
 * per stripe that currently publishes this sv) and the per-stripe reader
 * counts used by point reads, which touch only their own stripe. Point
 * reads are striped by thread (lkv_thread_stripe, env.h) so that
 * concurrent readers share no cache line: each thread uses one stripe
 * (its own lock and reader count). */
typedef struct lkv_sv {
  atomic_int refs;
  lkv_mem *mem;
  int nimm;
  lkv_mem *imm[LKV_MAX_IMM]; /* newest first */
  lkv_version *v;
  struct {
    _Alignas(64) int readers; /* (the stripe's lock) */
    int retired; /* the stripe moved on; last reader drops its ref */
  } local[LKV_THREAD_STRIPES];
} lkv_sv;

typedef struct lkv_sv_stripe {
  _Alignas(64) lkv_spin mu;
  lkv_sv *sv;   /* holds one reference */
  int inflight; /* point reads of this stripe running now */
  int closed;   /* close has begun: reads refuse */
} lkv_sv_stripe;

typedef struct lkv_writer lkv_writer;

struct lkv_snapshot {
  struct lkv_db *db;
  uint64_t seq;
  struct lkv_snapshot *prev, *next;
};

struct lkv_db {
  char *dir;
  char *log_file_name; /* the base name of the logs this db writes */
  lkv_options o;
  const lkv_env *env; /* o.env, or the POSIX env */
  int lock_fd;
  /* calls in flight other than point reads (which count per stripe):
   * close waits for both to drain before it frees anything */
  atomic_int calls;

  pthread_mutex_t mu;
  pthread_mutex_t manifest_mu;
  pthread_cond_t flush_cv;   /* flush thread: a memtable is frozen (mu) */
  pthread_cond_t compact_cv; /* compaction thread: work may be due (mu) */
  pthread_cond_t done_cv;    /* waiters: a flush or compaction finished (mu) */

  /* write path (mu) */
  lkv_writer *wq_head, *wq_tail;
  lkv_mem *mem;
  int nimm;
  int max_imm;
  lkv_mem *imm[LKV_MAX_IMM]; /* oldest first */
  lkv_wal *wal;
  uint64_t wal_number;
  _Atomic uint64_t wal_bytes; /* lkv_wal_size(wal) after the last commit,
                                 for stats (the leader writes it unlocked) */
  int unwritten; /* writes buffered in the WAL since the last write_out */

  lkv_vset vs; /* the current version, file numbers, last_seq (vset.h) */
  lkv_sv *sv;  /* (mu) */
  lkv_sv_stripe stripes[LKV_THREAD_STRIPES]; /* each under its own lock */

  lkv_snapshot snap_list; /* circular sentinel; oldest first (mu) */
  int live_snapshots;     /* (mu) */
  int live_iters;         /* (mu) */

  pthread_t flush_th, compact_th, janitor_th;
  int threads_started;
  /* Set once close begins (or a failed open stops its threads): written
   * under mu, so threads waiting on its condition variables see it, and
   * read lock-free by lkv_db_call_begin, so calls refuse at once. One
   * flag: a seq_cst store here and the load after call_begin's
   * increment make close's wait for calls == 0 see every call that got
   * in. */
  atomic_int shutting_down;
  int bg_error;         /* sticky first background failure (mu) */
  lkv_err bg_err;       /* (mu) */
  int manual_compact;   /* a full compaction is requested (mu) */
  int compacting;       /* the compaction thread is busy (mu) */
  int flush_placing;    /* a flush is installing a table below L0 (mu) */
  uint64_t manual_done; /* full compactions finished (mu) */
  int manual_rc;
  lkv_err manual_err;

  lkv_cache *cache; /* data blocks */
  lkv_table_counters counters;
  uint64_t wal_dropped; /* bytes cut from the WAL at open */
  char recovery_msg[LKV_ERR_MSG_LEN];

  /* statistics (atomics: bumped without mu) */
  atomic_uint_fast64_t bytes_user, bytes_wal;
  atomic_uint_fast64_t flushes, compactions, comp_read, comp_written;
  atomic_uint_fast64_t stall_slowdowns, stall_stops, stall_micros, wal_syncs,
      stall_refusals;
  atomic_uint_fast64_t seek_compactions;
  /* table bytes flushes, recovery and compactions wrote into each level;
   * their sum is bytes_written_disk */
  atomic_uint_fast64_t level_written[LKV_MAX_LEVELS];
  atomic_uint_fast64_t iter_seeds; /* seeds iterators' read sampling */
};

/* ---- dbstate.c ------------------------------------------------------ */

/* The db a public call was given, or NULL (err set) when it is NULL. */
static inline lkv_db *lkv_db_check(lkv_db *db, lkv_err *err) {
  if (db == NULL) lkv_seterr(err, LKV_INVALID, "db is NULL");
  return db;
}
/* Every public call but a point read enters with call_begin (LKV_CLOSED
 * once close has begun) and leaves with call_end; close waits for the
 * calls inside before it frees anything. */
int lkv_db_call_begin(lkv_db *db, lkv_err *err);
void lkv_db_call_end(lkv_db *db);
/* The newest visible sequence number (lkv_db_last_seq without the call
 * accounting, for the engine's own use). */
static inline uint64_t lkv_db_seq(lkv_db *db) {
  return lkv_vset_last_seq(&db->vs);
}
void lkv_sv_ref(lkv_sv *s);
void lkv_sv_unref(lkv_sv *s);
/* The current superversion, referenced (takes mu briefly). */
lkv_sv *lkv_db_sv(lkv_db *db);
/* Rebuild db->sv from mem, imm and current. REQUIRES: mu held. */
int lkv_db_install_sv(lkv_db *db);
/* Apply the edit, write the manifest, make the result current
 * (lkv_vset_log_and_apply); the MANIFEST keeps the logs of the memtables
 * still in memory, and the drop_imm oldest frozen memtables (now in the
 * edit's table) leave the read path in the same step. On failure
 * *maybe_committed (may be NULL) says the new MANIFEST may be the one on
 * disk (its directory sync failed): the files it adds must not be
 * deleted. REQUIRES: manifest_mu held, mu not held. */
int lkv_db_log_and_apply(lkv_db *db, lkv_edit *e, int drop_imm,
                         int *maybe_committed, lkv_err *err);
void lkv_db_set_bg_error(lkv_db *db, int rc, const lkv_err *err); /* mu held */
uint64_t lkv_db_oldest_snapshot(lkv_db *db);                      /* mu held */
lkv_table_opts lkv_db_table_opts(const lkv_db *db);
/* Charge c->f one seek; when its budget runs out, make it the next
 * compaction's input. The caller holds a version listing c->f. */
void lkv_db_charge_seek(lkv_db *db, const lkv_seek_charge *c);

/* Names and files of the db's directory. */
void lkv_db_log_name(const char *base, uint64_t number, char *buf, size_t n);
int lkv_db_path(const lkv_db *db, const char *name, char *buf, size_t n,
                lkv_err *err);
/* Delete dir/name; best effort (what is left is found and deleted again at
 * the next open). */
void lkv_db_remove_file(const lkv_db *db, const char *name);

/* ---- write.c --------------------------------------------------------- */

/* Create the log at path, its first record a marker at start_seq (the
 * chain of sequence numbers, wal_format.md); the file is removed on
 * failure. */
int lkv_db_create_wal(lkv_db *db, const char *path, uint64_t start_seq,
                      lkv_wal **w, lkv_err *err);

/* ---- recover.c ----------------------------------------------------- */

/* A directory without a MANIFEST must hold nothing but what an
 * interrupted first open leaves: LKV_INVALID (or corruption, for tables)
 * otherwise, and nothing is touched. */
int lkv_db_check_dir(lkv_db *db, lkv_err *err);
/* Load the MANIFEST's tables, replay the live logs and leave db->wal and
 * db->mem ready for writes (or, read-only, only the memtable). REQUIRES:
 * the LOCK held. */
int lkv_db_recover(lkv_db *db, lkv_err *err);

/* ---- flush.c --------------------------------------------------------- */

/* The flush thread's body (arg: the db): flushes frozen memtables until
 * the db shuts down, draining them first. */
void *lkv_flush_thread(void *arg);

/* ---- compact.c ----------------------------------------------------- */

/* The compaction thread's body (arg: the db): runs what the version set
 * chooses until the db shuts down. */
void *lkv_compact_thread(void *arg);

#endif
