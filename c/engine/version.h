/* version.h - table files (file metas), versions (immutable file sets per
 * level), the edits between them, and reads through a version: point
 * lookups, read samples and iterators (version.c). Which version is
 * current, and how it changes, is the version set's (vset.h).
 *
 * Thread safety: metas and versions are reference counted with atomics
 * and immutable once made (but for a meta's seek budget, an atomic), so
 * any thread may read a version it holds a reference on. An edit belongs
 * to one thread. */
#ifndef LKV_VERSION_H
#define LKV_VERSION_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "cache.h"
#include "dbformat.h"
#include "iter.h"
#include "lunakv.h"
#include "table.h"
#include "tcache.h"

typedef struct lkv_fmeta lkv_fmeta;

/* The table files of one db: the table cache their tables are opened
 * through, and the files no version lists any more whose last reference
 * is gone. The janitor thread closes and deletes those, so the reader
 * that drops the last reference never pays for a close and an unlink. */
typedef struct lkv_files {
  lkv_tcache *tc;
  pthread_mutex_t mu; /* guards dead and stop */
  pthread_cond_t cv;  /* the janitor waits here for dead files or stop */
  lkv_fmeta *dead;
  int stop;
} lkv_files;

void lkv_files_init(lkv_files *fs); /* tc is set by the owner */
void lkv_files_destroy(lkv_files *fs);
/* Close, evict and delete the files queued so far (the janitor's work;
 * also done at close). */
void lkv_files_bury(lkv_files *fs);
/* The janitor thread's body (arg: the lkv_files): bury files as they die
 * until lkv_files_stop, burying what is queued then. */
void *lkv_files_janitor(void *arg);
void lkv_files_stop(lkv_files *fs); /* the caller joins the thread */

/* A live table file. Shared by every version that lists it. */
struct lkv_fmeta {
  atomic_int refs;
  atomic_int obsolete; /* removed from the current version: delete at refs 0 */
  uint64_t number;
  uint64_t size;
  char *smallest; /* internal keys */
  size_t smallest_len;
  char *largest;
  size_t largest_len;
  lkv_files *files; /* where its table is opened, and where it goes to die */
  struct lkv_fmeta *next_dead; /* on files->dead, waiting for the janitor */
  /* The table kept open for f's whole life, while the table cache allows
   * (tcache.h): readers then use it directly, with no cache lookup (and
   * no shared lock) on the read path. NULL: look it up in the cache. */
  lkv_table *table; /* owned by f when set */
  /* Lookups that had to look past this table before it is compacted
   * (LevelDB's seek compaction): at 0 the table is pushed down, so
   * read-heavy loads do not pay for an L0 or an upper level forever. */
  atomic_int allowed_seeks;
};

/* The first table a read consulted in vain, to be charged a seek. */
typedef struct lkv_seek_charge {
  lkv_fmeta *f; /* NULL: nothing to charge */
  int level;
} lkv_seek_charge;

/* An immutable set of files per level. L0 is newest first; L1.. sorted by
 * smallest key and never overlapping within a level. */
typedef struct lkv_version {
  atomic_int refs;
  int n[LKV_MAX_LEVELS];
  lkv_fmeta **files[LKV_MAX_LEVELS];
} lkv_version;

/* A version change: files added and removed, and the logs the result
 * still needs. */
typedef struct lkv_edit {
  int nadd, ndel, cap_add, cap_del;
  int *add_level;
  lkv_fmeta **add; /* one reference each, released by lkv_edit_free */
  int *del_level;
  uint64_t *del;
  /* the oldest log still needed and the sequence number it starts at,
   * set by whoever logs the edit (lkv_db_log_and_apply) */
  uint64_t wal_number, wal_start;
} lkv_edit;

/* ---- file metas ------------------------------------------------------ */

/* refs = 1; NULL when out of memory. */
lkv_fmeta *lkv_fmeta_new(lkv_files *fs, uint64_t number, uint64_t size,
                         lkv_slice smallest, lkv_slice largest);
int lkv_fmeta_seek_budget(uint64_t size); /* initial allowed_seeks */
/* f's open table, from f itself or the table cache; *h (NULL when f keeps
 * the table) pins it until lkv_fmeta_unpin. */
int lkv_fmeta_pin(lkv_fmeta *f, lkv_table **t, lkv_cache_handle **h,
                  lkv_err *err);
void lkv_fmeta_unpin(lkv_fmeta *f, lkv_cache_handle *h);
/* Hand f's just opened table over: f keeps it (while the table cache
 * allows) or the table cache takes it. */
void lkv_fmeta_keep_table(lkv_fmeta *f, lkv_table *t);
/* An iterator over f's table that keeps it pinned until destroyed. An open
 * failure gives an iterator that is not valid and reports the error; NULL
 * only when out of memory. */
lkv_iiter *lkv_fmeta_iter(lkv_fmeta *f);
void lkv_fmeta_ref(lkv_fmeta *f);
/* The last reference of a file that left the current version queues it
 * for the janitor thread; any other last reference frees it at once. */
void lkv_fmeta_unref(lkv_fmeta *f);

/* ---- versions and edits ---------------------------------------------- */

lkv_version *lkv_version_new(void);
void lkv_version_ref(lkv_version *v);
void lkv_version_unref(lkv_version *v);
int lkv_edit_add(lkv_edit *e, int level, lkv_fmeta *f); /* takes f's ref */
int lkv_edit_del(lkv_edit *e, int level, uint64_t number);
void lkv_edit_free(lkv_edit *e); /* unrefs the added files */
/* A new version: base with the edit applied (the version takes its own
 * references). NULL when out of memory. */
lkv_version *lkv_version_apply(const lkv_version *base, const lkv_edit *e);
int lkv_version_count(const lkv_version *v);
uint64_t lkv_version_level_bytes(const lkv_version *v, int level);

/* ---- reads through a version ----------------------------------------- */

/* Point lookup through the tables of v (target = (ukey, at, SEEK); hash =
 * lkv_bloom_hash(ukey)). *charge names the first table consulted when a
 * second one was needed. */
int lkv_version_get(lkv_version *v, lkv_slice target, uint64_t hash, int *type,
                    lkv_buf *val, lkv_seek_charge *charge, lkv_err *err);
/* An iterator's read sample (LevelDB's RecordReadSample): when two or more
 * tables cover ukey, set *charge to the first and return 1. */
int lkv_version_sample(const lkv_version *v, const char *ukey, size_t klen,
                       lkv_seek_charge *charge);
/* Does any level deeper than `level` hold a table whose range covers ukey? */
int lkv_version_deeper_overlaps(const lkv_version *v, int level,
                                const char *ukey, size_t klen);
/* Bytes of the tables in `level` whose user-key range meets [lo, hi];
 * *any is set when at least one does. */
uint64_t lkv_version_overlap_bytes(const lkv_version *v, int level,
                                   lkv_slice lo, lkv_slice hi, int *any);
/* An iterator over the sorted, disjoint tables files[0..n) of one level
 * >= 1; the files must outlive it (hold the version). */
lkv_iiter *lkv_level_iter_new(lkv_fmeta *const *files, int n);
/* Append iterators over v to its[]: one per L0 table, one per non-empty
 * deeper level (room for lkv_version_count(v) entries is enough). */
int lkv_version_add_iters(lkv_version *v, lkv_iiter **its, int *n);

#endif
