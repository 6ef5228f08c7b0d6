/* lkv_bench.c - lunakv against LevelDB, same process, same workloads.
 *
 * Runs the db_bench-style workloads (fillseq, fillrandom, overwrite,
 * readrandom, readmissing, readseq, seekrandom) on lunakv and on LevelDB
 * with comparable settings, and prints throughput, sampled latency, write
 * amplification and disk usage side by side. See c/bench/README.md.
 *
 * Only the public API of each engine is used: lunakv.h and leveldb/c.h.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <leveldb/c.h>

#include "lunakv.h"

/* ---- settings shared by both engines ---------------------------------- */

#define WRITE_BUFFER_BYTES ((size_t)4 << 20) /* memtable / write buffer */
#define BLOCK_CACHE_BYTES ((size_t)8 << 20)
#define BLOOM_BITS_PER_KEY 10
#define SEEK_NEXTS 10          /* seekrandom: nexts after each seek */
#define LAT_EVERY 8            /* time every 8th operation */
#define QUIET_POLL_MS 100      /* settle: poll interval */
#define QUIET_POLLS 10         /* ... this many unchanged polls = quiet */
#define SETTLE_MAX_S 600       /* ... give up (with a warning) after this */

enum { SYS_LUNAKV, SYS_LEVELDB, NSYS };
static const char *const sys_name[NSYS] = {"lunakv", "leveldb"};

enum {
  W_FILLSEQ,
  W_FILLRANDOM,
  W_OVERWRITE,
  W_READRANDOM,
  W_READMISSING,
  W_READSEQ,
  W_SEEKRANDOM,
  W_READWHILEWRITING,
  W_NKINDS
};
static const char *const kind_name[W_NKINDS] = {
    "fillseq",     "fillrandom", "overwrite", "readrandom",
    "readmissing", "readseq",    "seekrandom", "readwhilewriting"};

static int kind_is_fill(int k) { return k <= W_OVERWRITE; }

#define DEFAULT_WORKLOADS                                                  \
  "fillseq,fillrandom,overwrite,readrandom,readrandom2,readmissing,"       \
  "readseq,seekrandom,readwhilewriting"

#define MAX_WL 64

typedef struct wl_t {
  int kind;
  int threads;
  char label[32]; /* as given on the command line */
} wl_t;

static struct {
  uint64_t num;
  uint64_t reads; /* operations of a read workload (all threads); 0 = num */
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
} cfg;

/* ---- small helpers ------------------------------------------------------ */

static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("lkv_bench: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  exit(2);
}

static void progress(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fflush(stderr);
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

static uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static uint64_t mix64(uint64_t x) { return splitmix64(&x); }

static void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) die("out of memory (%zu bytes)", n);
  return p;
}

static void *xcalloc(size_t n, size_t sz) {
  void *p = calloc(n ? n : 1, sz ? sz : 1);
  if (!p) die("out of memory");
  return p;
}

/* ---- keys and values ---------------------------------------------------- */

/* Key of index idx: the decimal number zero-padded to key_size bytes, i.e.
 * "%016llu" for the default 16 (no NUL is written). */
static void make_key(char *k, uint64_t idx) {
  size_t i = cfg.key_size;
  while (i > 0) {
    k[--i] = (char)('0' + idx % 10);
    idx /= 10;
  }
}

/* A key that never exists. Default (--missing=inside): key(idx) with its
 * last byte replaced by '.', which sorts just below key(idx) and above
 * key(idx - 1), so it falls inside the key range of some table on every
 * level and the engines have to ask their Bloom filters. --missing=above:
 * key(idx + 10 * num), above every key, so a table's key range alone
 * rules it out (much cheaper; what an "index + num*10" scheme measures). */
static void make_missing_key(char *k, uint64_t idx) {
  if (cfg.missing_above) {
    make_key(k, idx + cfg.num * 10);
  } else {
    make_key(k, idx);
    k[cfg.key_size - 1] = '.';
  }
}

static char *valbuf;
static size_t valbuf_len;

static void init_values(void) {
  uint64_t s = 0x5EEDull;
  valbuf_len = cfg.value_size + ((size_t)1 << 20);
  valbuf = xmalloc(valbuf_len + 8);
  for (size_t i = 0; i < valbuf_len; i += 8) {
    uint64_t r = splitmix64(&s);
    memcpy(valbuf + i, &r, 8);
  }
}

/* The value written for key idx by fill phase `phase`: value_size random
 * bytes, a different slice for every (key, phase), so a read can check it
 * got the newest version. */
static const char *value_for(uint64_t idx, int phase) {
  uint64_t off = mix64(idx * 0x100000001B3ull + (uint64_t)phase * 0x9E37ull) %
                 (valbuf_len - cfg.value_size + 1);
  return valbuf + off;
}

/* ---- /proc/self/io and the file system ---------------------------------- */

typedef struct iostat {
  uint64_t wchar, write_bytes, cancelled;
} iostat;

static void read_io(iostat *s) {
  char line[128];
  FILE *f = fopen("/proc/self/io", "r");
  memset(s, 0, sizeof *s);
  if (!f) return;
  while (fgets(line, sizeof line, f)) {
    unsigned long long v;
    if (sscanf(line, "wchar: %llu", &v) == 1) s->wchar = v;
    else if (sscanf(line, "write_bytes: %llu", &v) == 1) s->write_bytes = v;
    else if (sscanf(line, "cancelled_write_bytes: %llu", &v) == 1)
      s->cancelled = v;
  }
  fclose(f);
}

static uint64_t io_written(const iostat *a, const iostat *b) {
  return cfg.wa_write_bytes ? b->write_bytes - a->write_bytes
                            : b->wchar - a->wchar;
}

static uint64_t du_acc;

static int du_cb(const char *p, const struct stat *st, int type,
                 struct FTW *ftw) {
  (void)p;
  (void)ftw;
  if (type == FTW_F && S_ISREG(st->st_mode)) du_acc += (uint64_t)st->st_size;
  return 0;
}

/* Sum of the sizes of the regular files under dir. */
static uint64_t dir_bytes(const char *dir) {
  du_acc = 0;
  nftw(dir, du_cb, 32, FTW_PHYS);
  return du_acc;
}

static int rm_cb(const char *p, const struct stat *st, int type,
                 struct FTW *ftw) {
  (void)st;
  (void)type;
  (void)ftw;
  if (remove(p) != 0 && errno != ENOENT)
    progress("lkv_bench: cannot remove %s: %s\n", p, strerror(errno));
  return 0;
}

static void rm_tree(const char *dir) {
  struct stat st;
  if (lstat(dir, &st) != 0) return;
  nftw(dir, rm_cb, 32, FTW_DEPTH | FTW_PHYS);
}

/* Does write_bytes in /proc/self/io see buffered writes here? */
static void probe_io_accounting(void) {
  char path[PATH_MAX + 32];
  iostat a, b;
  size_t n = (size_t)256 << 10;
  char *buf = xcalloc(1, n);
  int fd;
  snprintf(path, sizeof path, "%s/io_probe", cfg.dir);
  read_io(&a);
  fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd >= 0) {
    ssize_t w = write(fd, buf, n);
    (void)w;
    close(fd);
  }
  read_io(&b);
  unlink(path);
  free(buf);
  cfg.wa_write_bytes = b.write_bytes - a.write_bytes >= n / 2;
}

/* ---- one engine behind one interface ------------------------------------ */

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

static void lkv_errmsg(char *dst, size_t n, const char *what, int rc,
                       const lkv_err *e) {
  snprintf(dst, n, "%s: %s%s%.*s", what, lkv_strerror(rc),
           e->msg[0] ? ": " : "", LKV_ERR_MSG_LEN, e->msg);
}

static void ldb_free_opts(bdb *b) {
  if (b->lropt) leveldb_readoptions_destroy(b->lropt);
  if (b->lwopt) leveldb_writeoptions_destroy(b->lwopt);
  if (b->lopt) leveldb_options_destroy(b->lopt);
  if (b->lfilter) leveldb_filterpolicy_destroy(b->lfilter);
  if (b->lcache) leveldb_cache_destroy(b->lcache);
  b->lropt = NULL;
  b->lwopt = NULL;
  b->lopt = NULL;
  b->lfilter = NULL;
  b->lcache = NULL;
}

static int db_open(bdb *b) {
  if (b->sys == SYS_LUNAKV) {
    lkv_options o;
    lkv_err e;
    int rc;
    memset(&e, 0, sizeof e);
    lkv_options_init(&o);
    o.max_memtable_size = WRITE_BUFFER_BYTES;
    o.bloom_bits_per_key = BLOOM_BITS_PER_KEY;
    o.block_cache_bytes = BLOCK_CACHE_BYTES;
    o.sync = LKV_SYNC_NONE; /* WAL on, write(2) per write, no fsync */
    o.mmap_reads = cfg.mmap_reads;
    rc = lkv_db_open(b->dir, &o, &b->lkv, &e);
    if (rc != LKV_OK) {
      b->lkv = NULL;
      lkv_errmsg(b->err, sizeof b->err, "lkv_db_open", rc, &e);
      return -1;
    }
    return 0;
  } else {
    char *err = NULL;
    b->lopt = leveldb_options_create();
    leveldb_options_set_create_if_missing(b->lopt, 1);
    leveldb_options_set_compression(b->lopt, leveldb_no_compression);
    leveldb_options_set_write_buffer_size(b->lopt, WRITE_BUFFER_BYTES);
    b->lcache = leveldb_cache_create_lru(BLOCK_CACHE_BYTES);
    leveldb_options_set_cache(b->lopt, b->lcache);
    b->lfilter = leveldb_filterpolicy_create_bloom(BLOOM_BITS_PER_KEY);
    leveldb_options_set_filter_policy(b->lopt, b->lfilter);
    b->lwopt = leveldb_writeoptions_create();
    leveldb_writeoptions_set_sync(b->lwopt, 0);
    b->lropt = leveldb_readoptions_create();
    b->ldb = leveldb_open(b->lopt, b->dir, &err);
    if (err) {
      snprintf(b->err, sizeof b->err, "leveldb_open: %s", err);
      leveldb_free(err);
      b->ldb = NULL;
      ldb_free_opts(b);
      return -1;
    }
    return 0;
  }
}

static int db_is_open(const bdb *b) { return b->lkv || b->ldb; }

/* LevelDB's per-level "Write(MB)" column of leveldb.stats, added to mib:
 * table bytes its flushes and compactions wrote into each level since it
 * was opened. It prints whole MiB, so each level's figure is within about
 * a MiB per open (the C API has no exact counter). */
static void ldb_add_level_mib(bdb *b, double mib[LKV_MAX_LEVELS]) {
  char *st = leveldb_property_value(b->ldb, "leveldb.stats");
  const char *p = st ? strstr(st, "----\n") : NULL;
  while (p && (p = strchr(p, '\n')) != NULL) {
    int level, files;
    double size, secs, rd, wr;
    p++;
    if (sscanf(p, "%d %d %lf %lf %lf %lf", &level, &files, &size, &secs, &rd,
               &wr) == 6 &&
        level >= 0 && level < LKV_MAX_LEVELS)
      mib[level] += wr;
  }
  if (st) leveldb_free(st);
}

/* MiB of table bytes each level received since b was first opened. */
static void level_written_mib(bdb *b, double mib[LKV_MAX_LEVELS]) {
  memset(mib, 0, LKV_MAX_LEVELS * sizeof *mib);
  if (b->sys == SYS_LUNAKV && b->lkv) {
    lkv_stats st;
    lkv_db_stats(b->lkv, &st);
    for (int l = 0; l < LKV_MAX_LEVELS; l++)
      mib[l] = (double)st.bytes_written_per_level[l] / 1048576.0;
  } else if (b->sys == SYS_LEVELDB && b->ldb) {
    memcpy(mib, b->ldb_level_mib, LKV_MAX_LEVELS * sizeof *mib);
    ldb_add_level_mib(b, mib);
  }
}

static int db_close(bdb *b) {
  int ret = 0;
  if (b->lkv) {
    lkv_err e;
    int rc;
    memset(&e, 0, sizeof e);
    rc = lkv_db_close(b->lkv, &e);
    if (rc != LKV_OK) {
      lkv_errmsg(b->err, sizeof b->err, "lkv_db_close", rc, &e);
      progress("lkv_bench: %s\n", b->err);
      ret = -1;
    }
    b->lkv = NULL;
  }
  if (b->ldb) {
    ldb_add_level_mib(b, b->ldb_level_mib); /* the counts end with the db */
    leveldb_close(b->ldb);
    b->ldb = NULL;
  }
  ldb_free_opts(b);
  return ret;
}

static int db_put(bdb *b, const char *k, size_t kn, const char *v,
                  size_t vn) {
  if (b->sys == SYS_LUNAKV) {
    lkv_err e;
    int rc;
    e.msg[0] = 0;
    rc = lkv_db_set(b->lkv, k, kn, v, vn, NULL, &e);
    if (rc != LKV_OK) {
      lkv_errmsg(b->err, sizeof b->err, "lkv_db_set", rc, &e);
      return -1;
    }
  } else {
    char *err = NULL;
    leveldb_put(b->ldb, b->lwopt, k, kn, v, vn, &err);
    if (err) {
      snprintf(b->err, sizeof b->err, "leveldb_put: %s", err);
      leveldb_free(err);
      return -1;
    }
  }
  return 0;
}

/* Per-thread read state. */
typedef struct rdctx {
  lkv_buf buf;
  lkv_err e;
  char err[LKV_ERR_MSG_LEN + 64];
} rdctx;

/* 1 found, 0 absent, -1 error (r->err). When expect is not NULL, *wrong
 * is set if the value is not value_size bytes equal to expect. */
static int db_get(bdb *b, rdctx *r, const char *k, size_t kn,
                  const char *expect, int *wrong) {
  if (b->sys == SYS_LUNAKV) {
    int rc = lkv_db_get(b->lkv, k, kn, LKV_SEQ_LATEST, &r->buf, &r->e);
    if (rc == LKV_OK) {
      if (expect && (r->buf.len != cfg.value_size ||
                     memcmp(r->buf.data, expect, cfg.value_size) != 0))
        *wrong = 1;
      return 1;
    }
    if (rc == LKV_NOTFOUND) return 0;
    lkv_errmsg(r->err, sizeof r->err, "lkv_db_get", rc, &r->e);
    return -1;
  } else {
    char *err = NULL;
    size_t vn = 0;
    char *v = leveldb_get(b->ldb, b->lropt, k, kn, &vn, &err);
    if (err) {
      snprintf(r->err, sizeof r->err, "leveldb_get: %s", err);
      leveldb_free(err);
      if (v) leveldb_free(v);
      return -1;
    }
    if (!v) return 0;
    if (expect &&
        (vn != cfg.value_size || memcmp(v, expect, cfg.value_size) != 0))
      *wrong = 1;
    leveldb_free(v);
    return 1;
  }
}

typedef struct bit {
  int sys;
  lkv_iter *li;
  leveldb_iterator_t *di;
} bit;

static int bit_new(bdb *b, bit *it, char *err, size_t n) {
  memset(it, 0, sizeof *it);
  it->sys = b->sys;
  if (b->sys == SYS_LUNAKV) {
    lkv_err e;
    int rc;
    memset(&e, 0, sizeof e);
    rc = lkv_iter_new(b->lkv, LKV_SEQ_LATEST, &it->li, &e);
    if (rc != LKV_OK) {
      it->li = NULL;
      lkv_errmsg(err, n, "lkv_iter_new", rc, &e);
      return -1;
    }
  } else {
    it->di = leveldb_create_iterator(b->ldb, b->lropt);
    if (!it->di) {
      snprintf(err, n, "leveldb_create_iterator failed");
      return -1;
    }
  }
  return 0;
}

static void bit_seek_first(bit *it) {
  if (it->sys == SYS_LUNAKV) lkv_iter_seek_first(it->li);
  else leveldb_iter_seek_to_first(it->di);
}

static void bit_seek(bit *it, const char *k, size_t kn) {
  if (it->sys == SYS_LUNAKV) lkv_iter_seek(it->li, k, kn);
  else leveldb_iter_seek(it->di, k, kn);
}

static int bit_valid(const bit *it) {
  return it->sys == SYS_LUNAKV ? lkv_iter_valid(it->li) != 0
                               : leveldb_iter_valid(it->di) != 0;
}

static void bit_next(bit *it) {
  if (it->sys == SYS_LUNAKV) lkv_iter_next(it->li);
  else leveldb_iter_next(it->di);
}

static const char *bit_key(const bit *it, size_t *n) {
  return it->sys == SYS_LUNAKV ? lkv_iter_key(it->li, n)
                               : leveldb_iter_key(it->di, n);
}

static const char *bit_value(const bit *it, size_t *n) {
  return it->sys == SYS_LUNAKV ? lkv_iter_value(it->li, n)
                               : leveldb_iter_value(it->di, n);
}

/* 0, or -1 with the error that stopped the iteration in err. */
static int bit_status(const bit *it, char *err, size_t n) {
  if (it->sys == SYS_LUNAKV) {
    lkv_err e;
    int rc;
    memset(&e, 0, sizeof e);
    rc = lkv_iter_status(it->li, &e);
    if (rc != LKV_OK) {
      lkv_errmsg(err, n, "lkv_iter_status", rc, &e);
      return -1;
    }
  } else {
    char *e = NULL;
    leveldb_iter_get_error(it->di, &e);
    if (e) {
      snprintf(err, n, "leveldb iterator: %s", e);
      leveldb_free(e);
      return -1;
    }
  }
  return 0;
}

static void bit_free(bit *it) {
  if (it->li) lkv_iter_free(it->li);
  if (it->di) leveldb_iter_destroy(it->di);
  it->li = NULL;
  it->di = NULL;
}

/* Wait until the process has written nothing (write(2) bytes and dirtied
 * page bytes) for QUIET_POLLS polls in a row and, for lunakv, no frozen
 * memtable waits. This is "background work has settled" for both engines
 * without asking either to compact. */
static void wait_quiet(bdb *b) {
  uint64_t t0 = now_ns(), last = UINT64_MAX;
  int same = 0;
  for (;;) {
    iostat s;
    uint64_t cur;
    int busy = 0;
    read_io(&s);
    cur = s.wchar + s.write_bytes;
    if (b->sys == SYS_LUNAKV) {
      lkv_stats st;
      lkv_db_stats(b->lkv, &st);
      busy = st.imm_memtables != 0;
    }
    if (cur == last && !busy) {
      if (++same >= QUIET_POLLS) return;
    } else {
      same = 0;
    }
    last = cur;
    if (now_ns() - t0 > (uint64_t)SETTLE_MAX_S * 1000000000u) {
      progress("lkv_bench: %s: still writing after %d s, not waiting longer\n",
               sys_name[b->sys], SETTLE_MAX_S);
      return;
    }
    sleep_ms(QUIET_POLL_MS);
  }
}

/* Tables per level, as each engine reports them, on the progress line:
 * after a read workload too, as reads may trigger compactions (LevelDB's
 * and lunakv's seek compaction). */
static void print_levels(bdb *b) {
  progress("  (files per level:");
  if (b->sys == SYS_LEVELDB && b->ldb) {
    for (int l = 0; l < 7; l++) {
      char prop[64], *v;
      snprintf(prop, sizeof prop, "leveldb.num-files-at-level%d", l);
      v = leveldb_property_value(b->ldb, prop);
      progress(" %s", v ? v : "?");
      if (v) leveldb_free(v);
    }
  } else if (b->sys == SYS_LUNAKV) {
    lkv_stats st;
    lkv_db_stats(b->lkv, &st);
    for (int l = 0; l < LKV_MAX_LEVELS; l++)
      progress(" %" PRIu64, st.sstables_per_level[l]);
  }
  progress(")");
}

/* Make everything written so far durable in tables and let background work
 * finish. lunakv: lkv_db_flush. LevelDB (no flush call in the C API, and
 * compact_range is not wanted): close and reopen, which writes the memtable
 * as a level-0 table. Then both wait for quiet. */
static int db_settle(bdb *b, double *secs) {
  uint64_t t0 = now_ns();
  if (b->sys == SYS_LUNAKV) {
    lkv_err e;
    int rc;
    memset(&e, 0, sizeof e);
    rc = lkv_db_flush(b->lkv, &e);
    if (rc != LKV_OK) {
      lkv_errmsg(b->err, sizeof b->err, "lkv_db_flush", rc, &e);
      return -1;
    }
  } else {
    db_close(b);
    if (db_open(b) != 0) return -1;
  }
  wait_quiet(b);
  *secs = (double)(now_ns() - t0) / 1e9;
  return 0;
}

/* ---- results ------------------------------------------------------------- */

typedef struct result {
  int valid;
  int threads;
  uint64_t ops;
  double secs;
  double ops_per_sec;
  double p50_us, p99_us;
  /* fills only */
  int has_wa;
  double write_amp;  /* io bytes written (phase + settle) / user bytes */
  double engine_wa;  /* lunakv's own counters over the phase; <0 = none */
  uint64_t disk_bytes;
  uint64_t written;
  uint64_t user_bytes;
  double settle_secs;
  /* reads */
  uint64_t expected, found, wrong, misordered;
  double writer_ops_per_sec; /* readwhilewriting: the writer's puts/s */
} result;

static result *results; /* [repeat][NSYS][nwl] */

static result *res_at(int rep, int sys, int w) {
  return &results[((size_t)rep * NSYS + (size_t)sys) * (size_t)cfg.nwl +
                  (size_t)w];
}

static char notes[64][200];
static int nnotes;

static void add_note(const char *fmt, ...) {
  va_list ap;
  if (nnotes >= 64) return;
  va_start(ap, fmt);
  vsnprintf(notes[nnotes], sizeof notes[0], fmt, ap);
  va_end(ap);
  for (int i = 0; i < nnotes; i++)
    if (strcmp(notes[i], notes[nnotes]) == 0) return; /* said already */
  nnotes++;
}

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

static void percentiles(uint32_t *lat, size_t n, double *p50, double *p99) {
  if (n == 0) {
    *p50 = *p99 = 0;
    return;
  }
  qsort(lat, n, sizeof *lat, cmp_u32);
  *p50 = lat[n / 2] / 1000.0;
  *p99 = lat[n * 99 / 100 < n ? n * 99 / 100 : n - 1] / 1000.0;
}

static uint32_t clamp_u32(uint64_t v) {
  return v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
}

/* Time operation i when it is a multiple of LAT_EVERY. */
#define SAMPLE(i, lat, nlat, stmt)                     \
  do {                                                 \
    if (((i) % LAT_EVERY) == 0) {                      \
      uint64_t t_ = now_ns();                          \
      stmt;                                            \
      (lat)[(nlat)++] = clamp_u32(now_ns() - t_);      \
    } else {                                           \
      stmt;                                            \
    }                                                  \
  } while (0)

/* ---- fill workloads ------------------------------------------------------ */

static void shuffle(uint64_t *perm, uint64_t n, uint64_t seed) {
  uint64_t s = seed;
  for (uint64_t i = 0; i < n; i++) perm[i] = i;
  for (uint64_t i = n; i > 1; i--) {
    uint64_t j = splitmix64(&s) % i;
    uint64_t t = perm[i - 1];
    perm[i - 1] = perm[j];
    perm[j] = t;
  }
}

/* Operations of a fill phase: every key once, except overwrite with
 * --writes (>= num): pass after pass over the keys, so one phase can be
 * long enough that where it ends in the compaction cycle matters less. */
static uint64_t fill_ops(int kind) {
  return kind == W_OVERWRITE && cfg.writes ? cfg.writes : cfg.num;
}

/* Write every key: in order (fillseq) or in a random permutation
 * (fillrandom, overwrite; each further overwrite pass in a new one, made
 * with the clock stopped). Then settle and measure bytes written / disk. */
static int run_fill(bdb *b, int kind, int phase, uint64_t seed, result *out,
                    int report) {
  uint64_t keys = cfg.num, i = 0;
  uint64_t n = fill_ops(kind);
  uint64_t *perm = NULL;
  uint32_t *lat = xmalloc((size_t)(n / LAT_EVERY + 1) * sizeof *lat);
  size_t nlat = 0;
  char *key = xmalloc(cfg.key_size);
  iostat io0, io1;
  lkv_stats s0, s1;
  uint64_t t0, t1, elapsed = 0;
  int rc = 0;
  double settle = 0;

  if (kind != W_FILLSEQ) {
    perm = xmalloc((size_t)keys * sizeof *perm);
    shuffle(perm, keys, seed);
  }
  double lw0[LKV_MAX_LEVELS], lw1[LKV_MAX_LEVELS];
  memset(&s0, 0, sizeof s0);
  memset(&s1, 0, sizeof s1);
  if (b->sys == SYS_LUNAKV) lkv_db_stats(b->lkv, &s0);
  level_written_mib(b, lw0);
  read_io(&io0);
  for (uint64_t pass = 0; i < n && rc == 0; pass++) {
    if (pass > 0) shuffle(perm, keys, seed + pass);
    t0 = now_ns();
    for (uint64_t j = 0; j < keys && i < n; j++, i++) {
      uint64_t idx = perm ? perm[j] : j;
      const char *v = value_for(idx, phase);
      make_key(key, idx);
      SAMPLE(i, lat, nlat,
             rc = db_put(b, key, cfg.key_size, v, cfg.value_size));
      if (rc != 0) break;
    }
    t1 = now_ns();
    elapsed += t1 - t0;
  }
  if (rc == 0) rc = db_settle(b, &settle);
  read_io(&io1);
  if (rc != 0) {
    progress("lkv_bench: %s %s: %s\n", sys_name[b->sys], kind_name[kind],
             b->err);
    add_note("%s %s failed: %s", sys_name[b->sys], kind_name[kind], b->err);
    free(perm);
    free(lat);
    free(key);
    return -1;
  }
  if (report) {
    memset(out, 0, sizeof *out);
    out->valid = 1;
    out->threads = 1;
    out->ops = n;
    out->secs = (double)elapsed / 1e9;
    out->ops_per_sec = out->secs > 0 ? (double)n / out->secs : 0;
    percentiles(lat, nlat, &out->p50_us, &out->p99_us);
    out->has_wa = 1;
    out->user_bytes = n * (uint64_t)(cfg.key_size + cfg.value_size);
    out->written = io_written(&io0, &io1);
    out->write_amp = (double)out->written / (double)out->user_bytes;
    out->disk_bytes = dir_bytes(b->dir);
    out->settle_secs = settle;
    out->engine_wa = -1;
    if (b->sys == SYS_LUNAKV) {
      lkv_db_stats(b->lkv, &s1);
      uint64_t du = s1.bytes_written_user - s0.bytes_written_user;
      uint64_t dw = (s1.bytes_written_disk - s0.bytes_written_disk) +
                    (s1.bytes_written_wal - s0.bytes_written_wal);
      if (du > 0) out->engine_wa = (double)dw / (double)du;
      if (s1.bg_error)
        add_note("lunakv background error after %s: %s", kind_name[kind],
                 s1.bg_error_msg);
    }
    progress("  %-8s %-11s %9.0f ops/s  p50 %.1f p99 %.1f us  "
             "WA %.2f  disk %.1f MiB  settle %.1f s",
             sys_name[b->sys], kind_name[kind], out->ops_per_sec,
             out->p50_us, out->p99_us, out->write_amp,
             (double)out->disk_bytes / 1048576.0, settle);
    if (b->sys == SYS_LUNAKV)
      progress("  (engine WA %.2f, stalls %" PRIu64 " us)", out->engine_wa,
               s1.stall_micros - s0.stall_micros);
    print_levels(b);
    /* where the written bytes went: compare the engines level by level */
    level_written_mib(b, lw1);
    progress("  (MiB written per level:");
    for (int l = 0; l < LKV_MAX_LEVELS; l++) progress(" %.0f", lw1[l] - lw0[l]);
    progress(")\n");
  }
  free(perm);
  free(lat);
  free(key);
  return 0;
}

/* ---- read workloads ------------------------------------------------------ */

typedef struct worker {
  bdb *b;
  int kind;
  int phase; /* the fill phase whose values the db holds */
  uint64_t ops;
  uint64_t seed;
  pthread_barrier_t *bar;
  uint64_t t0, t1;
  uint32_t *lat;
  size_t nlat;
  uint64_t done, found, wrong, misordered;
  int failed;
  char err[LKV_ERR_MSG_LEN + 64];
} worker;

static void worker_readrandom(worker *w, int missing) {
  rdctx r;
  uint64_t rng = w->seed, i;
  char *key = xmalloc(cfg.key_size);
  int rc = 0;
  memset(&r, 0, sizeof r);
  pthread_barrier_wait(w->bar);
  w->t0 = now_ns();
  for (i = 0; i < w->ops; i++) {
    uint64_t idx = splitmix64(&rng) % cfg.num;
    const char *expect = NULL;
    int wrong = 0;
    if (missing) {
      make_missing_key(key, idx);
    } else {
      make_key(key, idx);
      expect = value_for(idx, w->phase);
    }
    SAMPLE(i, w->lat, w->nlat,
           rc = db_get(w->b, &r, key, cfg.key_size, expect, &wrong));
    if (rc < 0) {
      w->failed = 1;
      snprintf(w->err, sizeof w->err, "%s", r.err);
      break;
    }
    w->found += (uint64_t)rc;
    w->wrong += (uint64_t)wrong;
  }
  w->t1 = now_ns();
  w->done = i;
  lkv_buf_free(&r.buf);
  free(key);
}

static void worker_readseq(worker *w) {
  bit it;
  uint64_t i = 0;
  char *prev = xmalloc(cfg.key_size + 1);
  size_t prevn = 0;
  int ok = bit_new(w->b, &it, w->err, sizeof w->err) == 0;
  pthread_barrier_wait(w->bar);
  w->t0 = now_ns();
  if (ok) {
    bit_seek_first(&it);
    for (i = 0; i < w->ops && bit_valid(&it); i++) {
      size_t kn, vn;
      const char *k = bit_key(&it, &kn);
      const char *v = bit_value(&it, &vn);
      (void)v;
      if (i > 0) {
        size_t m = kn < prevn ? kn : prevn;
        int c = memcmp(prev, k, m);
        if (c > 0 || (c == 0 && prevn >= kn)) w->misordered++;
      }
      if (kn <= cfg.key_size) {
        memcpy(prev, k, kn);
        prevn = kn;
      }
      w->found += vn == cfg.value_size;
      SAMPLE(i, w->lat, w->nlat, bit_next(&it));
    }
  }
  w->t1 = now_ns();
  w->done = i;
  if (ok) {
    if (bit_status(&it, w->err, sizeof w->err) != 0) w->failed = 1;
    bit_free(&it);
  } else {
    w->failed = 1;
  }
  free(prev);
}

/* Seek to key and read SEEK_NEXTS more entries; 1 if key itself was found. */
static int seek_once(bit *it, const char *key) {
  int hit = 0;
  bit_seek(it, key, cfg.key_size);
  if (bit_valid(it)) {
    size_t kn;
    const char *k = bit_key(it, &kn);
    hit = kn == cfg.key_size && memcmp(k, key, kn) == 0;
    for (int j = 0; j < SEEK_NEXTS && bit_valid(it); j++) {
      size_t vn;
      (void)bit_value(it, &vn);
      bit_next(it);
    }
  }
  return hit;
}

static void worker_seekrandom(worker *w) {
  bit it;
  uint64_t rng = w->seed, i = 0;
  char *key = xmalloc(cfg.key_size);
  int ok = bit_new(w->b, &it, w->err, sizeof w->err) == 0;
  pthread_barrier_wait(w->bar);
  w->t0 = now_ns();
  if (ok) {
    for (i = 0; i < w->ops; i++) {
      uint64_t idx = splitmix64(&rng) % cfg.num;
      int hit = 0;
      make_key(key, idx);
      SAMPLE(i, w->lat, w->nlat, hit = seek_once(&it, key));
      w->found += (uint64_t)hit;
    }
  }
  w->t1 = now_ns();
  w->done = i;
  if (ok) {
    if (bit_status(&it, w->err, sizeof w->err) != 0) w->failed = 1;
    bit_free(&it);
  } else {
    w->failed = 1;
  }
  free(key);
}

static void *worker_main(void *arg) {
  worker *w = arg;
  switch (w->kind) {
  case W_READRANDOM: worker_readrandom(w, 0); break;
  case W_READMISSING: worker_readrandom(w, 1); break;
  case W_READSEQ: worker_readseq(w); break;
  case W_SEEKRANDOM: worker_seekrandom(w); break;
  case W_READWHILEWRITING: worker_readrandom(w, 0); break;
  default: break;
  }
  return NULL;
}

/* readwhilewriting's writer (db_bench's): puts random keys, as fast as it
 * can, until the readers are done. Each put writes the value the key
 * already holds, so the readers' checks stand while the writes still
 * fill memtables and drive flushes and compactions. */
typedef struct writer {
  bdb *b;
  int phase;
  uint64_t seed;
  atomic_int stop;
  uint64_t puts, t0, t1;
  int failed;
} writer;

static void *writer_main(void *arg) {
  writer *wr = arg;
  uint64_t rng = wr->seed;
  char *key = xmalloc(cfg.key_size);
  wr->t0 = now_ns();
  while (!atomic_load_explicit(&wr->stop, memory_order_relaxed)) {
    uint64_t idx = splitmix64(&rng) % cfg.num;
    make_key(key, idx);
    if (db_put(wr->b, key, cfg.key_size, value_for(idx, wr->phase),
               cfg.value_size) != 0) {
      wr->failed = 1; /* db_put left the reason in b->err */
      break;
    }
    wr->puts++;
  }
  wr->t1 = now_ns();
  free(key);
  return NULL;
}

static int run_read(bdb *b, const wl_t *wl, int widx, int phase, int rep,
                    result *out) {
  int nt = wl->threads;
  uint64_t total = cfg.reads ? cfg.reads : cfg.num;
  worker *ws = xcalloc((size_t)nt, sizeof *ws);
  pthread_t *tids = xcalloc((size_t)nt, sizeof *tids);
  pthread_barrier_t bar;
  uint64_t tmin = UINT64_MAX, tmax = 0, done = 0, found = 0, wrong = 0,
           mis = 0, expected = 0;
  size_t nlat = 0;
  uint32_t *lat;
  int failed = 0;

  pthread_barrier_init(&bar, NULL, (unsigned)nt);
  for (int t = 0; t < nt; t++) {
    worker *w = &ws[t];
    w->b = b;
    w->kind = wl->kind;
    w->phase = phase;
    w->ops = total / (uint64_t)nt + ((uint64_t)t < total % (uint64_t)nt);
    w->seed = mix64(0xBE7Cull + (uint64_t)rep * 1000003u +
                    (uint64_t)widx * 1009u + (uint64_t)t);
    w->bar = &bar;
    w->lat = xmalloc((size_t)(w->ops / LAT_EVERY + 1) * sizeof *w->lat);
  }
  writer wr;
  pthread_t wtid;
  memset(&wr, 0, sizeof wr);
  if (wl->kind == W_READWHILEWRITING) {
    wr.b = b;
    wr.phase = phase;
    wr.seed = mix64(0x3A17E5ull + (uint64_t)rep * 7u + (uint64_t)widx);
    atomic_init(&wr.stop, 0);
    int e = pthread_create(&wtid, NULL, writer_main, &wr);
    if (e != 0) die("pthread_create: %s", strerror(e));
  }
  for (int t = 0; t < nt; t++) {
    int e = pthread_create(&tids[t], NULL, worker_main, &ws[t]);
    if (e != 0) die("pthread_create: %s", strerror(e));
  }
  for (int t = 0; t < nt; t++) pthread_join(tids[t], NULL);
  pthread_barrier_destroy(&bar);
  if (wl->kind == W_READWHILEWRITING) {
    atomic_store(&wr.stop, 1);
    pthread_join(wtid, NULL);
    if (wr.failed) {
      failed = 1;
      progress("lkv_bench: %s %s writer: %s\n", sys_name[b->sys], wl->label,
               b->err);
      add_note("%s %s writer failed: %s", sys_name[b->sys],
               kind_name[wl->kind], b->err);
    }
  }

  for (int t = 0; t < nt; t++) {
    worker *w = &ws[t];
    if (w->t0 < tmin) tmin = w->t0;
    if (w->t1 > tmax) tmax = w->t1;
    done += w->done;
    found += w->found;
    wrong += w->wrong;
    mis += w->misordered;
    nlat += w->nlat;
    if (wl->kind == W_READSEQ)
      expected += w->ops < cfg.num ? w->ops : cfg.num;
    else if (wl->kind != W_READMISSING)
      expected += w->ops;
    if (w->failed && !failed) {
      failed = 1;
      progress("lkv_bench: %s %s: %s\n", sys_name[b->sys], wl->label,
               w->err);
      add_note("%s %s (%d threads) failed: %s", sys_name[b->sys],
               kind_name[wl->kind], nt, w->err);
    }
  }
  lat = xmalloc((nlat + 1) * sizeof *lat);
  nlat = 0;
  for (int t = 0; t < nt; t++) {
    memcpy(lat + nlat, ws[t].lat, ws[t].nlat * sizeof *lat);
    nlat += ws[t].nlat;
    free(ws[t].lat);
  }
  memset(out, 0, sizeof *out);
  if (!failed) {
    out->valid = 1;
    out->threads = nt;
    out->ops = done;
    out->secs = (double)(tmax - tmin) / 1e9;
    out->ops_per_sec = out->secs > 0 ? (double)done / out->secs : 0;
    percentiles(lat, nlat, &out->p50_us, &out->p99_us);
    out->expected = expected;
    out->found = found;
    out->wrong = wrong;
    out->misordered = mis;
    if (wr.t1 > wr.t0)
      out->writer_ops_per_sec = (double)wr.puts / ((double)(wr.t1 - wr.t0) / 1e9);
    progress("  %-8s %-11s %9.0f ops/s  p50 %.1f p99 %.1f us  threads %d  "
             "found %" PRIu64 "/%" PRIu64,
             sys_name[b->sys], kind_name[wl->kind], out->ops_per_sec,
             out->p50_us, out->p99_us, nt, found, expected);
    if (wl->kind == W_READWHILEWRITING)
      progress("  writer %.0f puts/s", out->writer_ops_per_sec);
    print_levels(b);
    progress("\n");
    if (wl->kind == W_READMISSING && found > 0)
      add_note("WARNING: %s readmissing (%d threads, run %d): %" PRIu64
               " of %" PRIu64 " never-written keys were found",
               sys_name[b->sys], nt, rep + 1, found, done);
    else if (wl->kind != W_READMISSING && found != expected)
      add_note("WARNING: %s %s (%d threads, run %d): found %" PRIu64
               " of %" PRIu64 " keys",
               sys_name[b->sys], kind_name[wl->kind], nt, rep + 1, found,
               expected);
    if (wrong)
      add_note("WARNING: %s %s (%d threads, run %d): %" PRIu64
               " reads returned a wrong value",
               sys_name[b->sys], kind_name[wl->kind], nt, rep + 1, wrong);
    if (mis)
      add_note("WARNING: %s readseq (run %d): %" PRIu64
               " keys out of order",
               sys_name[b->sys], rep + 1, mis);
  }
  free(lat);
  free(ws);
  free(tids);
  return failed ? -1 : 0;
}

/* ---- one system, one repetition ------------------------------------------ */

static int fresh_db(bdb *b, int rep, const char *tag) {
  if (db_is_open(b)) db_close(b);
  if (b->dir[0]) rm_tree(b->dir);
  snprintf(b->dir, sizeof b->dir, "%s/%s-r%d-%s", cfg.dir, sys_name[b->sys],
           rep + 1, tag);
  rm_tree(b->dir);
  if (db_open(b) != 0) {
    progress("lkv_bench: %s: %s\n", sys_name[b->sys], b->err);
    add_note("%s: open failed: %s", sys_name[b->sys], b->err);
    return -1;
  }
  return 0;
}

static void run_system(int sys, int rep) {
  static const int fill_order[] = {W_FILLSEQ, W_FILLRANDOM, W_OVERWRITE};
  bdb b;
  int phase = 0, db_phase = -1, need_reads = 0;

  memset(&b, 0, sizeof b);
  b.sys = sys;
  progress("[%s, run %d/%d]\n", sys_name[sys], rep + 1, cfg.repeat);

  for (size_t f = 0; f < sizeof fill_order / sizeof fill_order[0]; f++) {
    for (int w = 0; w < cfg.nwl; w++) {
      int kind = cfg.wl[w].kind;
      if (kind != fill_order[f]) continue;
      if (kind != W_OVERWRITE || !db_is_open(&b))
        if (fresh_db(&b, rep, kind_name[kind]) != 0) goto out;
      phase++;
      if (run_fill(&b, kind, phase,
                   mix64((uint64_t)kind * 7919u + (uint64_t)rep * 104729u),
                   res_at(rep, sys, w), 1) != 0)
        goto out;
      db_phase = phase;
    }
  }
  for (int w = 0; w < cfg.nwl; w++)
    if (!kind_is_fill(cfg.wl[w].kind)) need_reads = 1;
  if (!need_reads) goto out;
  if (!db_is_open(&b)) {
    /* No fill workload asked for: load the keys untimed. */
    if (fresh_db(&b, rep, "load") != 0) goto out;
    phase++;
    progress("  %-8s (untimed load of %" PRIu64 " keys)\n", sys_name[sys],
             cfg.num);
    if (run_fill(&b, W_FILLRANDOM, phase, mix64(0x10ADull + (uint64_t)rep),
                 NULL, 0) != 0)
      goto out;
    db_phase = phase;
  }
  for (int w = 0; w < cfg.nwl; w++) {
    if (kind_is_fill(cfg.wl[w].kind)) continue;
    if (run_read(&b, &cfg.wl[w], w, db_phase, rep, res_at(rep, sys, w)) != 0)
      break;
  }
out:
  if (db_is_open(&b)) db_close(&b);
  if (b.dir[0]) rm_tree(b.dir);
}

/* ---- report -------------------------------------------------------------- */

static int cmp_dbl(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  if (n <= 0) return 0;
  qsort(v, (size_t)n, sizeof *v, cmp_dbl);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* The median over the valid repetitions of every field (each field on its
 * own). Returns 0 when no repetition is valid. */
static int summarize(int sys, int w, result *m) {
  double v[8][256];
  int n = 0;
  memset(m, 0, sizeof *m);
  for (int r = 0; r < cfg.repeat && n < 256; r++) {
    const result *x = res_at(r, sys, w);
    if (!x->valid) continue;
    if (n == 0) *m = *x;
    v[0][n] = x->ops_per_sec;
    v[1][n] = x->p50_us;
    v[2][n] = x->p99_us;
    v[3][n] = x->write_amp;
    v[4][n] = (double)x->disk_bytes;
    v[5][n] = x->engine_wa;
    v[6][n] = x->settle_secs;
    v[7][n] = x->writer_ops_per_sec;
    n++;
  }
  if (n == 0) return 0;
  m->ops_per_sec = median(v[0], n);
  m->p50_us = median(v[1], n);
  m->p99_us = median(v[2], n);
  m->write_amp = median(v[3], n);
  m->disk_bytes = (uint64_t)median(v[4], n);
  m->engine_wa = median(v[5], n);
  m->settle_secs = median(v[6], n);
  m->writer_ops_per_sec = median(v[7], n);
  return n;
}

static void cpu_model(char *dst, size_t n) {
  char line[512];
  FILE *f = fopen("/proc/cpuinfo", "r");
  snprintf(dst, n, "unknown");
  if (!f) return;
  while (fgets(line, sizeof line, f)) {
    char *c = strchr(line, ':');
    if (strncmp(line, "model name", 10) != 0 || !c) continue;
    c++;
    while (*c == ' ' || *c == '\t') c++;
    c[strcspn(c, "\n")] = 0;
    snprintf(dst, n, "%s", c);
    break;
  }
  fclose(f);
}

static const char *fs_name(const char *dir) {
  struct statfs s;
  if (statfs(dir, &s) != 0) return "?";
  switch ((unsigned long)s.f_type) {
  case 0xEF53: return "ext4";
  case 0x58465342: return "xfs";
  case 0x9123683E: return "btrfs";
  case 0x01021994: return "tmpfs";
  case 0x794C7630: return "overlayfs";
  case 0x2FC12FC1: return "zfs";
  case 0xF2F52010: return "f2fs";
  default: return "other";
  }
}

static void print_header(int argc, char **argv) {
  struct utsname u;
  char cpu[256];
  double mem = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
  uint64_t raw = cfg.num * (uint64_t)(cfg.key_size + cfg.value_size);
  cpu_model(cpu, sizeof cpu);
  if (uname(&u) != 0) memset(&u, 0, sizeof u);
  printf("lkv_bench: lunakv %s vs LevelDB %d.%d\n", LKV_VERSION,
         leveldb_major_version(), leveldb_minor_version());
  printf("command:   ");
  for (int i = 0; i < argc; i++) printf("%s%s", i ? " " : "", argv[i]);
  printf("\n");
  printf("machine:   %ld CPUs, %s, %s %s (%s), %.1f GiB RAM\n",
         sysconf(_SC_NPROCESSORS_ONLN), cpu, u.sysname, u.release, u.machine,
         mem / 1073741824.0);
  printf("data:      num=%" PRIu64 " keys, key %zu B (zero-padded decimal), "
         "value %zu B (random bytes), %.1f MiB raw\n",
         cfg.num, cfg.key_size, cfg.value_size, (double)raw / 1048576.0);
  printf("reads:     %" PRIu64 " ops per read workload (split over its "
         "threads); seekrandom = seek + %d nexts;\n"
         "           readmissing keys %s\n",
         cfg.reads ? cfg.reads : cfg.num, SEEK_NEXTS,
         cfg.missing_above
             ? "above the key range (index + 10*num)"
             : "inside the key range (last byte '.'): Bloom filters decide");
  if (cfg.writes)
    printf("writes:    overwrite does %" PRIu64 " ops (%.2f passes over the "
           "keys, each in a new random order)\n",
           cfg.writes, (double)cfg.writes / (double)cfg.num);
  printf("settings:  no compression, write buffer/memtable %zu MiB, Bloom %d "
         "bits/key, block cache %zu MiB,\n"
         "           WAL on without fsync (leveldb sync=false, lunakv "
         "LKV_SYNC_NONE), block size 4 KiB,\n"
         "           max_open_files default; other options engine defaults\n",
         WRITE_BUFFER_BYTES >> 20, BLOOM_BITS_PER_KEY, BLOCK_CACHE_BYTES >> 20);
  printf("table reads: leveldb mmap (its default on 64-bit), lunakv %s\n",
         cfg.mmap_reads ? "mmap (mmap_reads=1; its default is pread: "
                          "--mmap-reads=0)"
                        : "pread + block cache (its default)");
  printf("settle:    after each fill: lunakv lkv_db_flush, leveldb "
         "close+reopen; then wait until no bytes are written for %.1f s\n",
         QUIET_POLLS * QUIET_POLL_MS / 1000.0);
  printf("write amp: bytes written by the process during the fill and its "
         "settle (%s) / user bytes (key+value)\n",
         cfg.wa_write_bytes ? "/proc/self/io write_bytes"
                            : "/proc/self/io wchar: write_bytes unavailable");
  printf("latency:   every %dth op timed with clock_gettime(MONOTONIC); "
         "p50/p99 in microseconds\n",
         LAT_EVERY);
  printf("dir:       %s (%s)\n", cfg.dir, fs_name(cfg.dir));
  printf("repeat:    %d (each figure is the median over the runs; system "
         "order alternates per run)\n\n",
         cfg.repeat);
  fflush(stdout);
}

static void fmt_lat(char *d, size_t n, const result *r, int ok) {
  if (ok) snprintf(d, n, "%.1f/%.1f", r->p50_us, r->p99_us);
  else snprintf(d, n, "-");
}

static void print_tables(void) {
  result m[NSYS];
  int ok[NSYS];
  int any_fill = 0;

  printf("%-16s %7s %13s %14s %7s %19s %19s\n", "workload", "threads",
         "lunakv ops/s", "leveldb ops/s", "ratio", "lunakv p50/p99 \xc2\xb5s",
         "leveldb p50/p99 \xc2\xb5s");
  for (int w = 0; w < cfg.nwl; w++) {
    char a[32], b[32], r[32], la[48], lb[48];
    for (int s = 0; s < NSYS; s++)
      ok[s] = cfg.use_sys[s] && summarize(s, w, &m[s]);
    if (kind_is_fill(cfg.wl[w].kind)) any_fill = 1;
    snprintf(a, sizeof a, ok[0] ? "%.0f" : "-", m[0].ops_per_sec);
    snprintf(b, sizeof b, ok[1] ? "%.0f" : "-", m[1].ops_per_sec);
    if (ok[0] && ok[1] && m[1].ops_per_sec > 0)
      snprintf(r, sizeof r, "%.2f", m[0].ops_per_sec / m[1].ops_per_sec);
    else
      snprintf(r, sizeof r, "-");
    fmt_lat(la, sizeof la, &m[0], ok[0]);
    fmt_lat(lb, sizeof lb, &m[1], ok[1]);
    printf("%-16s %7d %13s %14s %7s %18s %18s\n", kind_name[cfg.wl[w].kind],
           cfg.wl[w].threads, a, b, r, la, lb);
  }
  if (any_fill) {
    printf("\n%-12s %9s %10s %11s %13s %14s %10s %15s\n", "phase",
           "user MiB", "lunakv WA", "leveldb WA", "lunakv MiB",
           "leveldb MiB", "engine WA", "settle s l/L");
    for (int w = 0; w < cfg.nwl; w++) {
      char a[32], b[32], da[32], db[32], ew[32], st[48];
      if (!kind_is_fill(cfg.wl[w].kind)) continue;
      for (int s = 0; s < NSYS; s++)
        ok[s] = cfg.use_sys[s] && summarize(s, w, &m[s]);
      snprintf(a, sizeof a, ok[0] ? "%.2f" : "-", m[0].write_amp);
      snprintf(b, sizeof b, ok[1] ? "%.2f" : "-", m[1].write_amp);
      snprintf(da, sizeof da, ok[0] ? "%.1f" : "-",
               (double)m[0].disk_bytes / 1048576.0);
      snprintf(db, sizeof db, ok[1] ? "%.1f" : "-",
               (double)m[1].disk_bytes / 1048576.0);
      snprintf(ew, sizeof ew, ok[0] && m[0].engine_wa >= 0 ? "%.2f" : "-",
               m[0].engine_wa);
      snprintf(st, sizeof st, "%s/%s", "-", "-");
      if (ok[0] || ok[1]) {
        char x[16], y[16];
        snprintf(x, sizeof x, ok[0] ? "%.1f" : "-", m[0].settle_secs);
        snprintf(y, sizeof y, ok[1] ? "%.1f" : "-", m[1].settle_secs);
        snprintf(st, sizeof st, "%s/%s", x, y);
      }
      uint64_t user =
          fill_ops(cfg.wl[w].kind) * (uint64_t)(cfg.key_size + cfg.value_size);
      printf("%-12s %9.1f %10s %11s %13s %14s %10s %15s\n",
             kind_name[cfg.wl[w].kind], (double)user / 1048576.0, a, b, da,
             db, ew, st);
    }
    printf("(WA: bytes written (%s) / user bytes over the phase and its "
           "settle; MiB: "
           "files in the db dir after settling;\n engine WA: lunakv's own "
           "(sstable + wal bytes) / user bytes from lkv_db_stats; settle s: "
           "lunakv/leveldb)\n",
           cfg.wa_write_bytes ? "write_bytes" : "wchar");
  }
  if (nnotes) {
    printf("\nnotes:\n");
    for (int i = 0; i < nnotes; i++) printf("  %s\n", notes[i]);
  }
  fflush(stdout);
}

static void write_json(void) {
  FILE *f = fopen(cfg.json, "a");
  if (!f) {
    progress("lkv_bench: cannot open %s: %s\n", cfg.json, strerror(errno));
    return;
  }
  for (int s = 0; s < NSYS; s++) {
    if (!cfg.use_sys[s]) continue;
    for (int w = 0; w < cfg.nwl; w++) {
      result m;
      int n = summarize(s, w, &m);
      if (!n) continue;
      fprintf(f,
              "{\"system\":\"%s\",\"workload\":\"%s\",\"threads\":%d,"
              "\"num\":%" PRIu64 ",\"key_size\":%zu,\"value_size\":%zu,"
              "\"runs\":%d,\"ops_per_sec\":%.1f,\"p50_us\":%.2f,"
              "\"p99_us\":%.2f",
              sys_name[s], kind_name[cfg.wl[w].kind], cfg.wl[w].threads,
              cfg.num, cfg.key_size, cfg.value_size, n, m.ops_per_sec,
              m.p50_us, m.p99_us);
      if (m.has_wa) {
        fprintf(f, ",\"write_amp\":%.3f,\"disk_bytes\":%" PRIu64, m.write_amp,
                m.disk_bytes);
        if (m.engine_wa >= 0)
          fprintf(f, ",\"engine_write_amp\":%.3f", m.engine_wa);
      } else {
        fprintf(f, ",\"found\":%" PRIu64 ",\"expected\":%" PRIu64, m.found,
                m.expected);
        if (cfg.wl[w].kind == W_READWHILEWRITING)
          fprintf(f, ",\"writer_ops_per_sec\":%.1f", m.writer_ops_per_sec);
      }
      /* both read through mmap unless lunakv was told otherwise */
      fprintf(f, ",\"mmap_reads\":%s",
              s != SYS_LUNAKV || cfg.mmap_reads ? "true" : "false");
      fprintf(f, "}\n");
    }
  }
  fclose(f);
}

/* ---- command line -------------------------------------------------------- */

static void usage(FILE *f) {
  fprintf(f,
          "usage: lkv_bench [--num=N] [--reads=N] [--writes=N] [--key-size=16] "
          "[--value-size=100]\n"
          "                 [--workloads=a,b,...] [--systems=lunakv,leveldb] "
          "[--threads=1]\n"
          "                 [--repeat=R] [--dir=DIR] [--json=FILE] "
          "[--missing=inside|above]\n"
          "                 [--mmap-reads=1|0]\n"
          "workloads: fillseq fillrandom overwrite readrandom readmissing "
          "readseq seekrandom\n"
          "           readwhilewriting (readrandom while one more thread "
          "overwrites keys);\n"
          "  a read workload name may end in a thread count: readrandom2 = "
          "readrandom on 2 threads\n"
          "default: --workloads=" DEFAULT_WORKLOADS "\n");
}

static uint64_t parse_u64(const char *flag, const char *v) {
  char *end;
  unsigned long long x;
  errno = 0;
  x = strtoull(v, &end, 10);
  if (errno || end == v || *end || v[0] == '-')
    die("bad value for --%s: '%s'", flag, v);
  return (uint64_t)x;
}

static void parse_workloads(const char *list) {
  char *copy = strdup(list), *save = NULL, *tok;
  if (!copy) die("out of memory");
  cfg.nwl = 0;
  for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    wl_t *w;
    size_t len = strlen(tok), base = len;
    int kind = -1, threads;
    if (!len) continue;
    if (cfg.nwl >= MAX_WL) die("too many workloads");
    while (base > 0 && tok[base - 1] >= '0' && tok[base - 1] <= '9') base--;
    for (int k = 0; k < W_NKINDS; k++)
      if (strlen(kind_name[k]) == base && strncmp(tok, kind_name[k], base) == 0)
        kind = k;
    if (kind < 0) die("unknown workload '%s'", tok);
    threads = base < len ? (int)parse_u64("workloads", tok + base)
                         : (kind_is_fill(kind) ? 1 : cfg.threads);
    if (threads < 1 || threads > 1024) die("bad thread count in '%s'", tok);
    if (kind_is_fill(kind) && threads != 1)
      die("'%s': fill workloads are single-threaded", tok);
    w = &cfg.wl[cfg.nwl++];
    w->kind = kind;
    w->threads = threads;
    snprintf(w->label, sizeof w->label, "%s", tok);
  }
  free(copy);
  if (!cfg.nwl) die("no workloads");
}

static void parse_systems(const char *list) {
  char *copy = strdup(list), *save = NULL, *tok;
  if (!copy) die("out of memory");
  memset(cfg.use_sys, 0, sizeof cfg.use_sys);
  cfg.nsys = 0;
  for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    int found = 0;
    for (int s = 0; s < NSYS; s++)
      if (strcmp(tok, sys_name[s]) == 0) {
        if (!cfg.use_sys[s]) cfg.order[cfg.nsys++] = s;
        cfg.use_sys[s] = found = 1;
      }
    if (!found) die("unknown system '%s' (lunakv, leveldb)", tok);
  }
  free(copy);
  if (!cfg.use_sys[0] && !cfg.use_sys[1]) die("no systems");
}

static void parse_args(int argc, char **argv) {
  const char *workloads = DEFAULT_WORKLOADS;
  const char *systems = "lunakv,leveldb";
  const char *dir = NULL;

  cfg.num = 1000000;
  cfg.key_size = 16;
  cfg.value_size = 100;
  cfg.threads = 1;
  cfg.repeat = 1;
  cfg.mmap_reads = 1;
  for (int i = 1; i < argc; i++) {
    char name[64], *eq;
    const char *a = argv[i], *val;
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      usage(stdout);
      exit(0);
    }
    if (strncmp(a, "--", 2) != 0 || !(eq = strchr(a, '=')) ||
        (size_t)(eq - a - 2) >= sizeof name) {
      usage(stderr);
      die("bad argument '%s' (flags are --name=value)", a);
    }
    memcpy(name, a + 2, (size_t)(eq - a - 2));
    name[eq - a - 2] = 0;
    for (char *p = name; *p; p++)
      if (*p == '_') *p = '-';
    val = eq + 1;
    if (strcmp(name, "num") == 0) cfg.num = parse_u64(name, val);
    else if (strcmp(name, "reads") == 0) cfg.reads = parse_u64(name, val);
    else if (strcmp(name, "writes") == 0) cfg.writes = parse_u64(name, val);
    else if (strcmp(name, "value-size") == 0)
      cfg.value_size = (size_t)parse_u64(name, val);
    else if (strcmp(name, "key-size") == 0)
      cfg.key_size = (size_t)parse_u64(name, val);
    else if (strcmp(name, "threads") == 0)
      cfg.threads = (int)parse_u64(name, val);
    else if (strcmp(name, "repeat") == 0)
      cfg.repeat = (int)parse_u64(name, val);
    else if (strcmp(name, "workloads") == 0 || strcmp(name, "benchmarks") == 0)
      workloads = val;
    else if (strcmp(name, "systems") == 0) systems = val;
    else if (strcmp(name, "dir") == 0 || strcmp(name, "db") == 0) dir = val;
    else if (strcmp(name, "json") == 0) cfg.json = val[0] ? val : NULL;
    else if (strcmp(name, "mmap-reads") == 0) {
      if (strcmp(val, "0") && strcmp(val, "1")) die("--mmap-reads is 0 or 1");
      cfg.mmap_reads = val[0] == '1';
    }
    else if (strcmp(name, "missing") == 0) {
      if (strcmp(val, "inside") == 0) cfg.missing_above = 0;
      else if (strcmp(val, "above") == 0) cfg.missing_above = 1;
      else die("--missing is inside or above");
    }
    else {
      usage(stderr);
      die("unknown flag --%s", name);
    }
  }
  if (cfg.num == 0) die("--num must be > 0");
  /* reads after an overwrite expect every key to hold its new value */
  if (cfg.writes && cfg.writes < cfg.num) die("--writes must be >= --num");
  if (cfg.threads < 1 || cfg.threads > 1024) die("--threads must be 1..1024");
  if (cfg.repeat < 1 || cfg.repeat > 255) die("--repeat must be 1..255");
  if (cfg.value_size > LKV_MAX_VALUE_BYTES)
    die("--value-size over %u", LKV_MAX_VALUE_BYTES);
  if (cfg.key_size < 2 || cfg.key_size > 4096) die("--key-size must be 2..4096");
  {
    /* every index in [0, num) (and [10 num, 11 num) for --missing=above)
     * must fit in key_size digits */
    size_t digits = 1;
    uint64_t top = cfg.missing_above ? cfg.num * 11 - 1 : cfg.num - 1;
    for (uint64_t x = top; x >= 10; x /= 10) digits++;
    if (digits > cfg.key_size)
      die("--key-size=%zu too small for --num=%" PRIu64, cfg.key_size,
          cfg.num);
  }
  parse_workloads(workloads);
  parse_systems(systems);

  if (dir) {
    struct stat st;
    if (strlen(dir) >= sizeof cfg.dir - 64) die("--dir too long");
    snprintf(cfg.dir, sizeof cfg.dir, "%s", dir);
    if (stat(dir, &st) != 0) {
      if (mkdir(dir, 0755) != 0) die("mkdir %s: %s", dir, strerror(errno));
      cfg.dir_made = 1;
    } else if (!S_ISDIR(st.st_mode)) {
      die("--dir %s is not a directory", dir);
    }
  } else {
    snprintf(cfg.dir, sizeof cfg.dir, "/tmp/lkv_bench_XXXXXX");
    if (!mkdtemp(cfg.dir)) die("mkdtemp: %s", strerror(errno));
    cfg.dir_made = 1;
  }
}

int main(int argc, char **argv) {
  parse_args(argc, argv);
  results = xcalloc((size_t)cfg.repeat * NSYS * (size_t)cfg.nwl,
                    sizeof *results);
  probe_io_accounting();
  init_values();
  print_header(argc, argv);

  /* Systems run in --systems order, reversed on every other repetition
   * (A B, B A, A B, ...) so slow drift of the machine hits both alike. */
  for (int rep = 0; rep < cfg.repeat; rep++)
    for (int j = 0; j < cfg.nsys; j++)
      run_system(cfg.order[rep % 2 ? cfg.nsys - 1 - j : j], rep);

  print_tables();
  if (cfg.json) write_json();
  if (cfg.dir_made) rm_tree(cfg.dir);
  free(results);
  free(valbuf);
  return 0;
}
