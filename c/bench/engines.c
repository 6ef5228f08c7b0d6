/* engines.c - lkv_bench's two engines behind one interface (bdb, bit):
 * lunakv through lunakv.h, LevelDB through leveldb/c.h, opened with the
 * settings of lkv_bench.h; and what the bench reads of the machine under
 * them (/proc/self/io, the files of a db). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <leveldb/c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lkv_bench.h"
#include "lunakv.h"

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* ---- /proc/self/io and the file system ---------------------------------- */

void read_io(iostat *s) {
  char line[128];
  FILE *f = fopen("/proc/self/io", "r");
  memset(s, 0, sizeof *s);
  if (!f) return;
  while (fgets(line, sizeof line, f)) {
    unsigned long long v;
    if (sscanf(line, "wchar: %llu", &v) == 1)
      s->wchar = v;
    else if (sscanf(line, "write_bytes: %llu", &v) == 1)
      s->write_bytes = v;
    else if (sscanf(line, "cancelled_write_bytes: %llu", &v) == 1)
      s->cancelled = v;
  }
  fclose(f);
}

uint64_t io_written(const iostat *a, const iostat *b) {
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
uint64_t dir_bytes(const char *dir) {
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

void rm_tree(const char *dir) {
  struct stat st;
  if (lstat(dir, &st) != 0) return;
  nftw(dir, rm_cb, 32, FTW_DEPTH | FTW_PHYS);
}

/* Does write_bytes in /proc/self/io see buffered writes here? */
void probe_io_accounting(void) {
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

int bdb_open(bdb *b) {
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

int bdb_is_open(const bdb *b) { return b->lkv || b->ldb; }

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
void level_written_mib(bdb *b, double mib[LKV_MAX_LEVELS]) {
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

int bdb_close(bdb *b) {
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

int bdb_put(bdb *b, const char *k, size_t kn, const char *v, size_t vn) {
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
/* 1 found, 0 absent, -1 error (r->err). When expect is not NULL, *wrong
 * is set if the value is not value_size bytes equal to expect. */
int bdb_get(bdb *b, rdctx *r, const char *k, size_t kn, const char *expect,
            int *wrong) {
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

int bit_new(bdb *b, bit *it, char *err, size_t n) {
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

/* 0, or -1 with the error that stopped the iteration in err. */
int bit_status(const bit *it, char *err, size_t n) {
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

void bit_free(bit *it) {
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
void print_levels(bdb *b) {
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
int bdb_settle(bdb *b, double *secs) {
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
    bdb_close(b);
    if (bdb_open(b) != 0) return -1;
  }
  wait_quiet(b);
  *secs = (double)(now_ns() - t0) / 1e9;
  return 0;
}
