/* vset.h - the version set (LevelDB's VersionSet): the current version,
 * the MANIFEST that records it (log and apply), the file-number and
 * sequence counters the MANIFEST persists, and the choice of the next
 * compaction. Executing a compaction is compact.c's; which memtables a
 * new version replaces is the db's (lkv_db_log_and_apply).
 *
 * Locking: the vset has no lock of its own. Fields marked (mu) are
 * guarded by the db's mutex, which the functions below take as a
 * REQUIRES; last_seq is atomic. Version changes are serialised by the
 * db's manifest_mu (see db_impl.h). */
#ifndef LKV_VSET_H
#define LKV_VSET_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "dbformat.h"
#include "lunakv.h"
#include "manifest.h"
#include "version.h"

typedef struct lkv_vset {
  const lkv_options *o; /* the db's, read only */
  const char *dir;
  const char *log_file_name; /* recorded in the MANIFEST */
  lkv_files files;           /* the table cache and the dead files */
  lkv_version *current;      /* (mu) */
  uint64_t next_file;        /* (mu) the next file number to hand out */
  /* The newest visible sequence number. The write leader publishes it
   * (release) after its group is in the memtable; readers load it
   * (acquire) without mu. */
  _Atomic uint64_t last_seq;
  /* The compaction choice: where each level last compacted (the next
   * starts after it, round robin over the key space) and a table out of
   * allowed seeks (referenced), to push down when no level is over its
   * budget. (mu) */
  int compact_ptr_len[LKV_MAX_LEVELS];
  char *compact_ptr[LKV_MAX_LEVELS];
  lkv_fmeta *seek_file;
  int seek_level;
} lkv_vset;

/* An empty set (no version yet) for the db at dir; o and the names must
 * outlive it. files.tc is the owner's to set. */
void lkv_vset_init(lkv_vset *vs, const lkv_options *o, const char *dir,
                   const char *log_file_name);
/* Drop the current version and the seek candidate, delete the files that
 * were the last to hold, free the table cache. REQUIRES: nothing else
 * holds a version or a table. */
void lkv_vset_destroy(lkv_vset *vs);

static inline uint64_t lkv_vset_last_seq(const lkv_vset *vs) {
  return atomic_load_explicit(&vs->last_seq, memory_order_acquire);
}
static inline void lkv_vset_set_last_seq(lkv_vset *vs, uint64_t seq) {
  atomic_store_explicit(&vs->last_seq, seq, memory_order_release);
}
/* A file number for a new table or log. REQUIRES: mu held. */
static inline uint64_t lkv_vset_new_file(lkv_vset *vs) {
  return vs->next_file++;
}

/* The MANIFEST's tables, each opened and checked against it (present,
 * the size it records), become the current version. At open, before any
 * other thread runs. */
int lkv_vset_load(lkv_vset *vs, const lkv_manifest *m, lkv_err *err);

/* Apply e (its wal_number and wal_start set) to the current version,
 * write the MANIFEST for the result and make it current; the files e
 * deletes are marked obsolete (deleted with their last reference). mu is
 * let go while the MANIFEST is written. On success *old is the version
 * replaced, for the caller to unref once mu is released (its last files
 * may go with it). On failure *maybe_committed (may be NULL) says the new
 * MANIFEST may be the one on disk (its directory sync failed): the files
 * it adds must not be deleted. REQUIRES: manifest_mu and *mu held; *mu is
 * held again on return. */
int lkv_vset_log_and_apply(lkv_vset *vs, lkv_edit *e, pthread_mutex_t *mu,
                           lkv_version **old, int *maybe_committed,
                           lkv_err *err);

/* ---- choosing compactions -------------------------------------------- */

/* The inputs of one compaction and where its output goes. */
typedef struct lkv_compaction {
  int level; /* inputs come from level and level + 1 */
  int out_level;
  int full;    /* every table, into out_level */
  int trivial; /* one table, nothing below it: move, do not rewrite */
  int seek;    /* chosen for a table out of allowed seeks */
  int n;
  lkv_fmeta **in; /* referenced */
  int *in_level;
  lkv_version *v;        /* the version the inputs were picked from */
  lkv_fmeta *stale_seek; /* a spent seek candidate, released with c */
} lkv_compaction;

/* Is a compaction due? REQUIRES: mu held. */
int lkv_vset_compact_needed(const lkv_vset *vs);
/* Choose the next compaction from the current version into c: the level
 * most over its budget, else the seek candidate; with full, every table.
 * LKV_NOTFOUND when nothing is due, LKV_NOMEM. c is to be freed with
 * lkv_compaction_free in every case. REQUIRES: mu held. */
int lkv_vset_pick_compaction(lkv_vset *vs, lkv_compaction *c, int full);
/* Drop c's references (it may hold the last one of a file, whose
 * deletion is queued for the janitor). */
void lkv_compaction_free(lkv_compaction *c);
/* The seek candidate when it has left the current version (compacted
 * meanwhile), taken out of the set: the caller unrefs it after letting
 * go of mu. NULL when there is none or it is still live. REQUIRES: mu. */
lkv_fmeta *lkv_vset_take_stale_seek(lkv_vset *vs);
/* Make f (at level) the seek candidate unless there is one already;
 * 1 when it became it. REQUIRES: mu held, f listed in a version held. */
int lkv_vset_offer_seek(lkv_vset *vs, lkv_fmeta *f, int level);
/* A table moved or written down must not overlap more than this of the
 * level below its new level, or the compaction that later pushes it
 * further gets huge. */
uint64_t lkv_vset_max_grandparent_bytes(const lkv_vset *vs);
/* The level a new table with user keys [lo, hi] can go to directly: L0 if
 * it overlaps anything there, else as deep as L2 while nothing it
 * overlaps sits in the way (LevelDB's trick: sequential loads skip the
 * L0 -> L1 rewrite). REQUIRES: mu held, and no compaction running (its
 * outputs are not in the version yet). */
int lkv_vset_flush_level(const lkv_vset *vs, lkv_slice lo, lkv_slice hi);

#endif
