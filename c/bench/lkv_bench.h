/* lkv_bench.h - what lkv_bench's files share: its settings and command
 * line (cmdline.c), the two engines behind one interface (engines.c), the
 * results and their report (report.c). The workloads run in lkv_bench.c,
 * with the vocabulary of workload.h. See c/bench/README.md. */
#ifndef LKV_BENCH_H
#define LKV_BENCH_H

#include <leveldb/c.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "lunakv.h"
#include "workload.h"

/* ---- settings shared by both engines ---------------------------------- */

#define WRITE_BUFFER_BYTES ((size_t)4 << 20) /* memtable / write buffer */
#define BLOCK_CACHE_BYTES ((size_t)8 << 20)
#define BLOOM_BITS_PER_KEY 10
#define SEEK_NEXTS 10     /* seekrandom: nexts after each seek */
#define LAT_EVERY 8       /* time every 8th operation */
#define QUIET_POLL_MS 100 /* settle: poll interval */
#define QUIET_POLLS 10    /* ... this many unchanged polls = quiet */
#define SETTLE_MAX_S 600  /* ... give up (with a warning) after this */

enum { SYS_LUNAKV, SYS_LEVELDB, NSYS };
extern const char *const sys_name[NSYS];

#define MAX_WL 64

typedef struct wl_t {
  int kind;
  int threads;
  char label[32]; /* as given on the command line */
} wl_t;

typedef struct bench_config {
  uint64_t num;
  uint64_t reads;  /* operations of a read workload (all threads); 0 = num */
  uint64_t writes; /* operations of overwrite (db_bench's --writes); 0 = num */
  size_t key_size;
  size_t value_size;
  int threads; /* threads of a read workload without a digit suffix */
  int repeat;
  const char *json;
  char dir[PATH_MAX];
  int dir_made; /* we created it: remove it at the end */
  int use_sys[NSYS];
  int order[NSYS]; /* systems in --systems order */
  int nsys;
  wl_t wl[MAX_WL];
  int nwl;
  int wa_write_bytes; /* 1: /proc/self/io write_bytes, 0: wchar */
  int missing_above;  /* readmissing keys above the range, not inside it */
  int mmap_reads;     /* lunakv's mmap_reads option */
} bench_config;

extern bench_config cfg; /* set by parse_args, read-only after */

/* cmdline.c: fill cfg from the command line; exits on a bad one. */
void parse_args(int argc, char **argv);

/* ---- small helpers (lkv_bench.c) ---------------------------------------- */

/* Print "lkv_bench: ..." on stderr and exit 2. */
_Noreturn void die(const char *fmt, ...);
/* Print on stderr, at once. */
void progress(const char *fmt, ...);
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t sz);
/* Operations of a fill phase of kind (see lkv_bench.c). */
uint64_t fill_ops(int kind);

/* Inline: the latency samples read it around the operation they time. */
static inline uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- /proc/self/io and the file system (engines.c) ---------------------- */

typedef struct iostat {
  uint64_t wchar, write_bytes, cancelled;
} iostat;

void read_io(iostat *s);
uint64_t io_written(const iostat *a, const iostat *b);
/* Sum of the sizes of the regular files under dir. */
uint64_t dir_bytes(const char *dir);
void rm_tree(const char *dir);
/* Does write_bytes in /proc/self/io see buffered writes here? Sets
 * cfg.wa_write_bytes. */
void probe_io_accounting(void);

/* ---- one engine behind one interface (engines.c) ------------------------ */

typedef struct bdb {
  int sys;
  char dir[PATH_MAX + 128];
  lkv_db *lkv;
  leveldb_t *ldb;
  leveldb_options_t *lopt;
  leveldb_cache_t *lcache;
  leveldb_filterpolicy_t *lfilter;
  leveldb_writeoptions_t *lwopt;
  leveldb_readoptions_t *lropt;
  char err[LKV_ERR_MSG_LEN + 64];
  double ldb_level_mib[LKV_MAX_LEVELS]; /* written before LevelDB's last open */
} bdb;

/* 0, or -1 with the reason in b->err. */
int bdb_open(bdb *b);
int bdb_is_open(const bdb *b);
int bdb_close(bdb *b);
int bdb_put(bdb *b, const char *k, size_t kn, const char *v, size_t vn);

/* Per-thread read state. */
typedef struct rdctx {
  lkv_buf buf;
  lkv_err e;
  char err[LKV_ERR_MSG_LEN + 64];
} rdctx;

/* 1 found, 0 absent, -1 error (r->err). When expect is not NULL, *wrong
 * is set if the value is not value_size bytes equal to expect. */
int bdb_get(bdb *b, rdctx *r, const char *k, size_t kn, const char *expect,
            int *wrong);
/* MiB of table bytes each level received since b was first opened. */
void level_written_mib(bdb *b, double mib[LKV_MAX_LEVELS]);
/* Tables per level, as each engine reports them, on the progress line. */
void print_levels(bdb *b);
/* Make everything written so far durable in tables and let background
 * work finish; *secs: how long it took. 0, or -1 with b->err. */
int bdb_settle(bdb *b, double *secs);

/* An iterator of either engine. The steps are inline: readseq and
 * seekrandom time them one by one. */
typedef struct bit {
  int sys;
  lkv_iter *li;
  leveldb_iterator_t *di;
} bit;

/* 0, or -1 with the reason in err. */
int bit_new(bdb *b, bit *it, char *err, size_t n);
/* 0, or -1 with the error that stopped the iteration in err. */
int bit_status(const bit *it, char *err, size_t n);
void bit_free(bit *it);

static inline void bit_seek_first(bit *it) {
  if (it->sys == SYS_LUNAKV)
    lkv_iter_seek_first(it->li);
  else
    leveldb_iter_seek_to_first(it->di);
}

static inline void bit_seek(bit *it, const char *k, size_t kn) {
  if (it->sys == SYS_LUNAKV)
    lkv_iter_seek(it->li, k, kn);
  else
    leveldb_iter_seek(it->di, k, kn);
}

static inline int bit_valid(const bit *it) {
  return it->sys == SYS_LUNAKV ? lkv_iter_valid(it->li) != 0
                               : leveldb_iter_valid(it->di) != 0;
}

static inline void bit_next(bit *it) {
  if (it->sys == SYS_LUNAKV)
    lkv_iter_next(it->li);
  else
    leveldb_iter_next(it->di);
}

static inline const char *bit_key(const bit *it, size_t *n) {
  return it->sys == SYS_LUNAKV ? lkv_iter_key(it->li, n)
                               : leveldb_iter_key(it->di, n);
}

static inline const char *bit_value(const bit *it, size_t *n) {
  return it->sys == SYS_LUNAKV ? lkv_iter_value(it->li, n)
                               : leveldb_iter_value(it->di, n);
}

/* ---- results (lkv_bench.c) and their report (report.c) ------------------ */

typedef struct result {
  int valid;
  int threads;
  uint64_t ops;
  double secs;
  double ops_per_sec;
  double p50_us, p99_us;
  /* fills only */
  int has_wa;
  double write_amp; /* io bytes written (phase + settle) / user bytes */
  double engine_wa; /* lunakv's own counters over the phase; <0 = none */
  uint64_t disk_bytes;
  uint64_t written;
  uint64_t user_bytes;
  double settle_secs;
  /* reads */
  uint64_t expected, found, wrong, misordered;
  double writer_ops_per_sec; /* readwhilewriting: the writer's puts/s */
} result;

/* The result of run rep (0-based) of system sys on workload w. */
result *res_at(int rep, int sys, int w);

/* A line for the report's notes (a repeated one is dropped). */
void add_note(const char *fmt, ...);
void print_header(int argc, char **argv);
void print_tables(void);
/* Append one JSON object per (system, workload) to cfg.json. */
void write_json(void);

#endif
