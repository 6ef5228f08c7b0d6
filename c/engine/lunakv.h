/* lunakv.h - the public C API of the lunakv storage engine.
 *
 * lunakv is an LSM-tree key-value store: a write-ahead log, a sorted
 * memtable, immutable SSTables in levels, and background flush and
 * compaction threads. This header, with the error vocabulary it includes
 * (c/util/err.h), is the whole contract; nothing else in c/engine/ is
 * installed. It needs only C11 and pthreads.
 *
 * Conventions (read once, they hold for every function below):
 *  1. Handles are opaque: lkv_db, lkv_batch, lkv_snapshot, lkv_iter.
 *  2. Keys and values are (pointer, length) pairs of arbitrary bytes,
 *     embedded zeros included. The engine never calls strlen on them and
 *     copies whatever it keeps. An empty value is a value, not a delete.
 *  3. Fallible functions return LKV_OK (0) or one LKV_* code. When the
 *     trailing `lkv_err *err` is not NULL it receives the code and a
 *     sentence saying what failed, on which object and why. No allocation
 *     happens on the failure path.
 *  4. Thread safety: every lkv_db_* function may be called from any number
 *     of threads at once, lkv_db_close included: close lets no new call
 *     in (they get LKV_CLOSED) and waits for the calls in flight to
 *     return before it frees anything. A call that starts after close has
 *     returned uses freed memory, as after any free: the caller must make
 *     that impossible. An lkv_iter or lkv_batch belongs to one thread at a
 *     time. Snapshots may be shared between threads.
 *  5. Lifetime: every iterator and snapshot must be released before the
 *     db they came from is closed (lkv_db_close refuses with LKV_BUSY
 *     otherwise).
 *  6. A failure in a background thread (flush, compaction) is kept and
 *     returned by every later write and by lkv_db_close; lkv_db_stats
 *     shows it.
 */
#ifndef LUNAKV_H
#define LUNAKV_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define LKV_API __attribute__((visibility("default")))
#else
#define LKV_API
#endif

#define LKV_VERSION "0.1.0"

/* ---- errors ---------------------------------------------------------- */

/* lkv_err, the LKV_* kinds (LKV_OK = 0, NOTFOUND, CORRUPTION, IOERROR,
 * INVALID, BUSY, CLOSED, NOMEM, TOOBIG) and lkv_strerror: every room
 * reports failures in these words, so they live in c/util/err.h. */
#include "err.h"
#ifndef LKV_ERR_H /* the C library has an err.h of its own */
#error "lunakv.h needs c/util on the include path (-Ic/util)"
#endif

/* ---- limits ---------------------------------------------------------- */

#define LKV_MAX_KEY_BYTES (64u * 1024u)           /* keys: 0 .. 64 KiB */
#define LKV_MAX_VALUE_BYTES (64u * 1024u * 1024u) /* values: 0 .. 64 MiB */
#define LKV_MAX_LEVELS 7                          /* L0 .. L6 */
#define LKV_SEQ_LATEST UINT64_MAX /* "read the newest visible version" */

/* ---- the file system ------------------------------------------------- */

/* Every system call the engine (and the node's replication log) makes on
 * files goes through an lkv_env: the POSIX one by default, a
 * fault-injecting one in tests (faultenv.h), in the manner of LevelDB's
 * Env. Paths and open flags are POSIX's. Each function returns 0 or an
 * errno value (never -1); pread and write return the bytes moved (a short
 * count is retried by the caller) or a negated errno value. All of them
 * may be called from any thread at once. `env` is the table itself, so an
 * implementation finds its state through `ctx` or a struct it is the first
 * member of. */
typedef struct lkv_env_info {
  uint64_t size;
  int is_dir;
} lkv_env_info;

/* Called once per directory entry (not "." or ".."); non-zero stops. */
typedef int (*lkv_env_dir_fn)(void *arg, const char *name);

typedef struct lkv_env lkv_env;
struct lkv_env {
  int (*open)(const lkv_env *env, const char *path, int flags, int mode,
              int *fd);
  int (*close)(const lkv_env *env, int fd);
  long long (*pread)(const lkv_env *env, int fd, void *buf, size_t n,
                     uint64_t off);
  /* At the file offset (the end with O_APPEND). */
  long long (*write)(const lkv_env *env, int fd, const void *buf, size_t n);
  long long (*pwrite)(const lkv_env *env, int fd, const void *buf, size_t n,
                      uint64_t off);
  int (*sync)(const lkv_env *env, int fd, int data_only); /* fsync/fdatasync */
  int (*size)(const lkv_env *env, int fd, uint64_t *size);
  int (*truncate)(const lkv_env *env, int fd, uint64_t size);
  int (*stat)(const lkv_env *env, const char *path, lkv_env_info *st);
  int (*rename)(const lkv_env *env, const char *from, const char *to);
  int (*unlink)(const lkv_env *env, const char *path);
  int (*mkdir)(const lkv_env *env, const char *path);
  int (*list_dir)(const lkv_env *env, const char *dir, lkv_env_dir_fn fn,
                  void *arg);
  /* fsync the directory: creations, renames and removals in it durable */
  int (*sync_dir)(const lkv_env *env, const char *dir);
  /* Open path (creating it) and take an exclusive lock on it that a second
   * lock of the same file fails with EWOULDBLOCK, in this process too;
   * exclusive = 0 takes a shared lock (read-only opens). */
  int (*lock)(const lkv_env *env, const char *path, int exclusive, int *fd);
  int (*unlock)(const lkv_env *env, int fd);
  /* A read-only shared mapping of the first `size` bytes; 0 or errno. */
  int (*mmap)(const lkv_env *env, int fd, size_t size, const void **addr);
  void (*munmap)(const lkv_env *env, const void *addr, size_t size);
  void *ctx; /* the implementation's */
};

/* The POSIX file system (static storage). */
LKV_API const lkv_env *lkv_env_posix(void);

/* ---- options --------------------------------------------------------- */

typedef enum lkv_sync_mode {
  /* Each write is handed to the OS (write(2)) before it returns: survives
   * the death of the process, not of the machine. */
  LKV_SYNC_NONE = 0,
  /* Writes are buffered in the process and written every wal_buffer_size
   * writes and before any memtable flush (the seed's behaviour): a killed
   * process may lose up to wal_buffer_size - 1 acknowledged writes. */
  LKV_SYNC_BATCH = 1,
  /* fdatasync before the write returns; concurrent writers share one
   * sync (group commit). */
  LKV_SYNC_ALWAYS = 2
} lkv_sync_mode;

typedef struct lkv_options {
  size_t max_memtable_size;  /* bytes before the memtable is frozen; 4 MiB */
  int max_l0_files;          /* L0 tables that trigger compaction; 4 */
  int l0_slowdown_files;     /* L0 tables at which writes are delayed; 8 */
  int l0_stop_files;         /* L0 tables at which writes wait; 12 */
  int bloom_bits_per_key;    /* Bloom filter bits per key; 10 */
  int bloom_hash_functions;  /* 0 = derived from bits per key (~0.69 * bpk) */
  size_t bloom_min_bits;     /* smallest filter (seed's BLOOM_FILTER_SIZE); 0 */
  int sparse_index_n;        /* a full key every Nth entry of a block; 16 */
  size_t block_size;         /* target data block size in bytes; 4096 */
  size_t table_size;         /* target SSTable size for compaction; 2 MiB */
  uint64_t level1_max_bytes; /* L1 size before it spills to L2; 10 MiB */
  int level_multiplier;      /* level n+1 holds this many times level n; 10 */
  size_t block_cache_bytes;  /* block cache capacity (0 = none); 8 MiB */
  int max_open_files;        /* tables kept open (fd, index, filter); 1000 */
  /* Read data blocks through a read-only mmap of each open table (up to
   * 1000 tables) instead of pread + the block cache; each block's checksum
   * is verified on its first read after the table opens. Faster when the
   * data sits in the page cache (no system call or copy per read), but
   * an I/O error or a table truncated by another program while open
   * kills the process with SIGBUS instead of returning LKV_IOERROR. 0 */
  int mmap_reads;
  int wal_buffer_size; /* writes per WAL write in LKV_SYNC_BATCH; 100 */
  lkv_sync_mode sync;  /* LKV_SYNC_BATCH */
  /* WAL base name for a new database; "wal.log" (copied at open). An
   * existing database keeps finding its logs under the name its MANIFEST
   * records; when this differs, open moves their data into a table and
   * names new logs with this one. */
  const char *log_file_name;
  /* Open without changing anything (RocksDB's OpenForReadOnly): a shared
   * lock instead of the exclusive one, the WALs replayed into memory but
   * never cut or rewritten, no background threads, and every write, flush
   * or compaction refused with LKV_INVALID. A directory that holds no
   * database is an error, not a new one. 0 */
  int read_only;
  const lkv_env *env; /* the file system; NULL = lkv_env_posix() */
} lkv_options;

/* Fill *o with the defaults: the schema's (lkv_options_schema), which the
 * comments above repeat. */
LKV_API void lkv_options_init(lkv_options *o);

/* LKV_OK, or LKV_INVALID naming the first option of *o outside the
 * schema's range, its value and the range: the check lkv_db_open makes
 * before it touches anything. */
LKV_API int lkv_options_check(const lkv_options *o, lkv_err *err);

/* ---- the options schema ---------------------------------------------- */

/* Every option is described once, in a table (options.c): its name, type,
 * default, range and a line of documentation. lkv_options_init and
 * lkv_options_check read it, and so do the Lua binding (core.open, and
 * core.options_schema, from which lunakv.config builds its checks) and the
 * HTTP node for its own options (lkvnet_options_schema), so a range is
 * written in one place. */
typedef enum lkv_option_type {
  LKV_OPT_INT,     /* int */
  LKV_OPT_SIZE,    /* size_t */
  LKV_OPT_U64,     /* uint64_t */
  LKV_OPT_BOOL,    /* int, 0 or 1 */
  LKV_OPT_ENUM,    /* an enum (int-sized): the index of one of choices */
  LKV_OPT_STRING,  /* const char *, any text; NULL allowed */
  LKV_OPT_FILENAME /* const char *, a file name of min .. max bytes, no '/' */
} lkv_option_type;

typedef struct lkv_option_spec {
  const char *name; /* the struct field; also the Lua option's name */
  const char *env;  /* its variable in .env and the environment; NULL:
                       none (set from Lua or C only) */
  lkv_option_type type;
  size_t offset;        /* of the field in the struct the schema describes */
  uint64_t min, max;    /* numbers: the accepted range; FILENAME: length */
  uint64_t dflt;        /* the default of a number, BOOL or ENUM */
  const char *dflt_str; /* the default of a STRING or FILENAME */
  const char *const *choices; /* ENUM: its names, NULL-terminated */
  const char *at_least;       /* another option of the same schema this one must
                                 not be below; NULL: none */
  const char *doc;            /* one line */
} lkv_option_spec;

/* The engine's options (the fields of lkv_options but env), in the order
 * the documentation lists them; *n receives their number. Static storage. */
LKV_API const lkv_option_spec *lkv_options_schema(size_t *n);

/* For any struct that schema[0 .. n) describes (lkv_options, or
 * lkvnet_options with the node's schema): set every field to its default
 * (the others are left as they are). */
LKV_API void lkv_schema_defaults(const lkv_option_spec *schema, size_t n,
                                 void *base);

/* Check every field of the struct at base against schema[0 .. n): LKV_OK,
 * or LKV_INVALID with "option NAME is VALUE; it must be from MIN to MAX"
 * (or the rule of a BOOL, ENUM, FILENAME or at_least) for the first one
 * that is not. STRING fields are not checked. */
LKV_API int lkv_schema_check(const lkv_option_spec *schema, size_t n,
                             const void *base, lkv_err *err);

/* Store v into the number, BOOL or ENUM field s names in the struct at
 * base, converted to the field's C type. REQUIRES: v fits that type (an
 * int field takes at most INT_MAX); the range is lkv_schema_check's. */
LKV_API void lkv_option_set(const lkv_option_spec *s, void *base, uint64_t v);

/* ---- the database ---------------------------------------------------- */

typedef struct lkv_db lkv_db;

/* Open (creating if needed) the database in directory `dir`, which is
 * created when missing. `o` may be NULL for defaults. Takes the LOCK file:
 * a second open of the same directory, in this process or another, fails
 * with LKV_BUSY. Replays the WAL; a torn or corrupt record ends the replay
 * and the tail is cut. A damaged manifest fails with LKV_CORRUPTION. A
 * directory with no MANIFEST that holds anything but what an interrupted
 * first open leaves is not a database: LKV_INVALID, and nothing in it is
 * touched. On success *out owns the db until lkv_db_close. */
LKV_API int lkv_db_open(const char *dir, const lkv_options *o, lkv_db **out,
                        lkv_err *err);

/* Refuse new calls, wait for the calls in flight (a call waiting for a
 * flush or compaction returns LKV_CLOSED), stop the background threads,
 * write what is buffered, release the LOCK and free the db. REQUIRES: no
 * live iterators or snapshots (else LKV_BUSY and the db stays open). The
 * handle is freed even when the final WAL write fails (the error is
 * reported). A background failure (rule 6), including one of the flush
 * this close drains, is returned too once everything is closed; the
 * writes it concerns stay in their logs for the next open. */
LKV_API int lkv_db_close(lkv_db *db, lkv_err *err);

/* Write one key. *seq (may be NULL) receives the write's sequence number.
 * Keys over LKV_MAX_KEY_BYTES or values over LKV_MAX_VALUE_BYTES fail with
 * LKV_TOOBIG. May wait while the background threads catch up. */
LKV_API int lkv_db_set(lkv_db *db, const void *key, size_t klen,
                       const void *val, size_t vlen, uint64_t *seq,
                       lkv_err *err);

/* Record a deletion (a tombstone) for key. */
LKV_API int lkv_db_delete(lkv_db *db, const void *key, size_t klen,
                          uint64_t *seq, lkv_err *err);

/* A growable byte buffer the engine fills; the caller owns it, reuses it
 * across calls, and frees it with lkv_buf_free. Start it zeroed. */
typedef struct lkv_buf {
  char *data;
  size_t len;
  size_t cap;
} lkv_buf;

LKV_API void lkv_buf_free(lkv_buf *b);

/* Read the newest version of key with sequence number <= at
 * (LKV_SEQ_LATEST: the newest). LKV_OK: the value is in val->data[0 ..
 * val->len). LKV_NOTFOUND: absent or deleted as of `at`. An `at` older
 * than every live snapshot is best effort: compaction may have dropped
 * that history. */
LKV_API int lkv_db_get(lkv_db *db, const void *key, size_t klen, uint64_t at,
                       lkv_buf *val, lkv_err *err);

/* The sequence number of the newest visible write (0 once close has
 * begun). */
LKV_API uint64_t lkv_db_last_seq(lkv_db *db);

/* ---- batches: atomic multi-key writes -------------------------------- */

typedef struct lkv_batch lkv_batch;

LKV_API lkv_batch *lkv_batch_new(void); /* NULL when out of memory */
LKV_API int lkv_batch_set(lkv_batch *b, const void *key, size_t klen,
                          const void *val, size_t vlen, lkv_err *err);
LKV_API int lkv_batch_delete(lkv_batch *b, const void *key, size_t klen,
                             lkv_err *err);
LKV_API size_t lkv_batch_count(const lkv_batch *b);
LKV_API void lkv_batch_clear(lkv_batch *b);
LKV_API void lkv_batch_free(lkv_batch *b);

/* Apply every operation of b atomically: one WAL record, consecutive
 * sequence numbers, visible to readers all at once. *last_seq receives the
 * last one. An empty batch writes nothing and returns the current seq.
 * The batch is left unchanged (clear it to reuse). */
LKV_API int lkv_db_write(lkv_db *db, const lkv_batch *b, uint64_t *last_seq,
                         lkv_err *err);

/* lkv_db_write_opt's flags. LKV_WRITE_NO_STALL: where lkv_db_write would
 * wait for the background threads (every frozen memtable still waiting
 * for its flush, or level 0 at l0_stop_files), fail at once with LKV_BUSY
 * and write nothing; and skip the 1 ms pause at l0_slowdown_files (the
 * caller paces itself). For a caller that must not block, such as an
 * event loop: it retries later. It does not avoid waiting behind another
 * thread's write in the queue. */
#define LKV_WRITE_NO_STALL 1

/* lkv_db_write with flags (0: the same as lkv_db_write); unknown flags
 * are LKV_INVALID. */
LKV_API int lkv_db_write_opt(lkv_db *db, const lkv_batch *b, int flags,
                             uint64_t *last_seq, lkv_err *err);

/* ---- snapshots ------------------------------------------------------- */

typedef struct lkv_snapshot lkv_snapshot;

/* Pin the current sequence number: every version visible at it stays
 * readable through flushes and compactions until released. */
LKV_API int lkv_snapshot_new(lkv_db *db, lkv_snapshot **out, lkv_err *err);
LKV_API uint64_t lkv_snapshot_seq(const lkv_snapshot *s);
LKV_API void lkv_snapshot_release(lkv_snapshot *s);

/* ---- iterators ------------------------------------------------------- */

typedef struct lkv_iter lkv_iter;

/* An iterator over the live keys as of sequence `at` (LKV_SEQ_LATEST:
 * now). It reads one consistent view: later writes, flushes and
 * compactions neither appear in it nor disturb it, and the files it reads
 * stay alive until it is freed. It starts unpositioned (not valid). */
LKV_API int lkv_iter_new(lkv_db *db, uint64_t at, lkv_iter **out, lkv_err *err);
LKV_API void lkv_iter_seek_first(lkv_iter *it);
/* Position at the first key >= key. */
LKV_API void lkv_iter_seek(lkv_iter *it, const void *key, size_t klen);
LKV_API void lkv_iter_next(lkv_iter *it); /* REQUIRES: valid */
/* Position at the last key; step back (REQUIRES: valid). Either direction
 * may follow the other. Going backward costs more than forward: blocks
 * and the memtable's skiplist link only forward, so each step re-scans
 * from the block's previous restart point or searches the skiplist. */
LKV_API void lkv_iter_seek_last(lkv_iter *it);
LKV_API void lkv_iter_prev(lkv_iter *it);
LKV_API int lkv_iter_valid(const lkv_iter *it);
/* Borrowed until the next move or free of the iterator. REQUIRES: valid */
LKV_API const char *lkv_iter_key(const lkv_iter *it, size_t *klen);
LKV_API const char *lkv_iter_value(const lkv_iter *it, size_t *vlen);
/* LKV_OK, or the error (e.g. corruption) that stopped the iteration. An
 * iterator that hits an error becomes invalid; check this after a loop. */
LKV_API int lkv_iter_status(const lkv_iter *it, lkv_err *err);
LKV_API void lkv_iter_free(lkv_iter *it);

/* The order keys sort in (bytewise, a shorter key before its extensions):
 * <0, 0 or >0. For callers that bound a scan themselves. */
LKV_API int lkv_key_compare(const void *a, size_t alen, const void *b,
                            size_t blen);

/* ---- maintenance ----------------------------------------------------- */

/* Return once everything written so far is in an SSTable (the WAL it came
 * from is then deleted). */
LKV_API int lkv_db_flush(lkv_db *db, lkv_err *err);

/* Return once everything written so far is durable (fdatasync of the WAL
 * files that hold writes not yet in tables), whatever the sync mode:
 * RocksDB's SyncWAL. Cheaper than a flush: no table is written. */
LKV_API int lkv_db_sync(lkv_db *db, lkv_err *err);

/* Flush, then merge every table into the last level, dropping versions
 * and tombstones no snapshot can see. Returns when done. */
LKV_API int lkv_db_compact(lkv_db *db, lkv_err *err);

typedef struct lkv_stats {
  uint64_t seq; /* newest visible sequence number */
  uint64_t sstable_count;
  uint64_t sstables_per_level[LKV_MAX_LEVELS];
  uint64_t bytes_per_level[LKV_MAX_LEVELS];
  uint64_t total_size_bytes;    /* bytes of all live SSTables */
  uint64_t memtable_size_bytes; /* active + immutable memtable */
  uint64_t memtable_keys;       /* entries (versions) in the active one */
  uint64_t imm_memtables;       /* frozen memtables waiting for flush */
  uint64_t wal_size_bytes;      /* bytes in the current WAL file */
  uint64_t bytes_written_user;  /* key + value bytes given by callers */
  uint64_t bytes_written_disk;  /* SSTable bytes written (flush+compaction) */
  uint64_t bytes_written_wal;   /* WAL bytes written */
  double write_amplification;   /* disk / user (the WAL's bytes not counted) */
  uint64_t flushes;
  uint64_t compactions;
  uint64_t seek_compactions; /* ... of them started by wasted lookups */
  int compaction_pending;    /* 1 while a compaction runs or is due */
  uint64_t compaction_bytes_read;
  uint64_t compaction_bytes_written;
  /* table bytes written into each level, by flushes and compactions
   * (LevelDB's "Write(MB)" column); a table moved down writes nothing */
  uint64_t bytes_written_per_level[LKV_MAX_LEVELS];
  uint64_t stall_slowdowns; /* writes delayed by the L0 slowdown */
  uint64_t stall_stops;     /* writes that waited for flush/compaction */
  uint64_t stall_micros;    /* total time writers spent waiting */
  uint64_t stall_refusals;  /* LKV_WRITE_NO_STALL writes refused (LKV_BUSY) */
  uint64_t bloom_checks;    /* table lookups that asked a filter */
  uint64_t bloom_negatives; /* ... and were spared a block read */
  uint64_t block_reads;     /* data blocks read from files */
  uint64_t block_cache_hits;
  uint64_t block_cache_bytes; /* bytes held in the block cache */
  uint64_t live_snapshots;
  uint64_t live_iterators;
  uint64_t wal_syncs;         /* fdatasync calls on the WAL */
  uint64_t wal_dropped_bytes; /* WAL bytes cut at open (torn/corrupt tail) */
  char recovery_msg[LKV_ERR_MSG_LEN]; /* what open cut and why, or "" */
  int bg_error;                       /* sticky background failure code, or 0 */
  char bg_error_msg[LKV_ERR_MSG_LEN];
} lkv_stats;

/* Once close has begun: all zero but bg_error = LKV_CLOSED. */
LKV_API void lkv_db_stats(lkv_db *db, lkv_stats *out);

/* Describe the live tables: calls fn once per table, level by level (L0
 * newest first), with its file number, size and user-key range (borrowed
 * for the call). Returns the number of tables (0 once close has begun).
 * For inspection and tests (e.g. "levels 1.. never overlap"). */
typedef void (*lkv_table_fn)(void *ctx, int level, uint64_t number,
                             uint64_t size, const char *smallest,
                             size_t smallest_len, const char *largest,
                             size_t largest_len);
LKV_API int lkv_db_tables(lkv_db *db, lkv_table_fn fn, void *ctx);

#ifdef __cplusplus
}
#endif
#endif /* LUNAKV_H */
