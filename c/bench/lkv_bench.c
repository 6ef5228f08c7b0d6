/* lkv_bench.c - lunakv against LevelDB, same process, same workloads.
 *
 * Runs the db_bench-style workloads (fillseq, fillrandom, overwrite,
 * readrandom, readmissing, readseq, seekrandom) on lunakv and on LevelDB
 * with comparable settings, and prints throughput, sampled latency, write
 * amplification and disk usage side by side. See c/bench/README.md.
 *
 * Only the public API of each engine is used: lunakv.h and leveldb/c.h.
 * This file runs the workloads; the engines are behind engines.c, the
 * command line is cmdline.c's, the report report.c's, and the workloads'
 * names, keys and values workload.c's.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "lkv_bench.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hist.h"
#include "lunakv.h"
#include "workload.h"

const char *const sys_name[NSYS] = {"lunakv", "leveldb"};

bench_config cfg;

/* ---- small helpers ------------------------------------------------------ */

_Noreturn void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("lkv_bench: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  exit(2);
}

void progress(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fflush(stderr);
}

void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) die("out of memory (%zu bytes)", n);
  return p;
}

void *xcalloc(size_t n, size_t sz) {
  void *p = calloc(n ? n : 1, sz ? sz : 1);
  if (!p) die("out of memory");
  return p;
}

/* ---- keys and values ---------------------------------------------------- */

/* The values the fills write (workload.h): one per key and phase. */
static lkvwl_values values;

/* A key that never exists. Default (--missing=inside): key(idx) with its
 * last byte replaced by '.', which sorts just below key(idx) and above
 * key(idx - 1), so it falls inside the key range of some table on every
 * level and the engines have to ask their Bloom filters. --missing=above:
 * key(idx + 10 * num), above every key, so a table's key range alone
 * rules it out (much cheaper; what an "index + num*10" scheme measures). */
static void make_missing_key(char *k, uint64_t idx) {
  if (cfg.missing_above) {
    lkvwl_key(k, cfg.key_size, idx + cfg.num * 10);
  } else {
    lkvwl_missing_key(k, cfg.key_size, idx);
  }
}

/* ---- results ------------------------------------------------------------- */

static result *results; /* [repeat][NSYS][nwl] */

result *res_at(int rep, int sys, int w) {
  return &results[((size_t)rep * NSYS + (size_t)sys) * (size_t)cfg.nwl +
                  (size_t)w];
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
  *p50 = lat[lkv_pct_rank(n, 50) - 1] / 1000.0;
  *p99 = lat[lkv_pct_rank(n, 99) - 1] / 1000.0;
}

static uint32_t clamp_u32(uint64_t v) {
  return v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
}

/* Time operation i when it is a multiple of LAT_EVERY. */
#define SAMPLE(i, lat, nlat, stmt)                \
  do {                                            \
    if (((i) % LAT_EVERY) == 0) {                 \
      uint64_t t_ = now_ns();                     \
      stmt;                                       \
      (lat)[(nlat)++] = clamp_u32(now_ns() - t_); \
    } else {                                      \
      stmt;                                       \
    }                                             \
  } while (0)

/* ---- fill workloads ------------------------------------------------------ */

/* Operations of a fill phase: every key once, except overwrite with
 * --writes (>= num): pass after pass over the keys, so one phase can be
 * long enough that where it ends in the compaction cycle matters less. */
uint64_t fill_ops(int kind) {
  return kind == LKVWL_OVERWRITE && cfg.writes ? cfg.writes : cfg.num;
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

  if (kind != LKVWL_FILLSEQ) {
    perm = xmalloc((size_t)keys * sizeof *perm);
    lkvwl_shuffle(perm, keys, seed);
  }
  double lw0[LKV_MAX_LEVELS], lw1[LKV_MAX_LEVELS];
  memset(&s0, 0, sizeof s0);
  memset(&s1, 0, sizeof s1);
  if (b->sys == SYS_LUNAKV) lkv_db_stats(b->lkv, &s0);
  level_written_mib(b, lw0);
  read_io(&io0);
  for (uint64_t pass = 0; i < n && rc == 0; pass++) {
    if (pass > 0) lkvwl_shuffle(perm, keys, seed + pass);
    t0 = now_ns();
    for (uint64_t j = 0; j < keys && i < n; j++, i++) {
      uint64_t idx = perm ? perm[j] : j;
      const char *v = lkvwl_value_for(&values, idx, phase);
      lkvwl_key(key, cfg.key_size, idx);
      SAMPLE(i, lat, nlat,
             rc = bdb_put(b, key, cfg.key_size, v, cfg.value_size));
      if (rc != 0) break;
    }
    t1 = now_ns();
    elapsed += t1 - t0;
  }
  if (rc == 0) rc = bdb_settle(b, &settle);
  read_io(&io1);
  if (rc != 0) {
    progress("lkv_bench: %s %s: %s\n", sys_name[b->sys], lkvwl_name(kind),
             b->err);
    add_note("%s %s failed: %s", sys_name[b->sys], lkvwl_name(kind), b->err);
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
        add_note("lunakv background error after %s: %s", lkvwl_name(kind),
                 s1.bg_error_msg);
    }
    progress(
        "  %-8s %-11s %9.0f ops/s  p50 %.1f p99 %.1f us  "
        "WA %.2f  disk %.1f MiB  settle %.1f s",
        sys_name[b->sys], lkvwl_name(kind), out->ops_per_sec, out->p50_us,
        out->p99_us, out->write_amp, (double)out->disk_bytes / 1048576.0,
        settle);
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
    uint64_t idx = lkv_splitmix64(&rng) % cfg.num;
    const char *expect = NULL;
    int wrong = 0;
    if (missing) {
      make_missing_key(key, idx);
    } else {
      lkvwl_key(key, cfg.key_size, idx);
      expect = lkvwl_value_for(&values, idx, w->phase);
    }
    SAMPLE(i, w->lat, w->nlat,
           rc = bdb_get(w->b, &r, key, cfg.key_size, expect, &wrong));
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

/* An iterating worker's end, after its timed loop: the time, the count,
 * and the iterator's status (ok: it opened; one that did not fails the
 * worker, its reason already in w->err). */
static void iter_worker_end(worker *w, bit *it, int ok, uint64_t done) {
  w->t1 = now_ns();
  w->done = done;
  if (ok) {
    if (bit_status(it, w->err, sizeof w->err) != 0) w->failed = 1;
    bit_free(it);
  } else {
    w->failed = 1;
  }
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
  iter_worker_end(w, &it, ok, i);
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
      uint64_t idx = lkv_splitmix64(&rng) % cfg.num;
      int hit = 0;
      lkvwl_key(key, cfg.key_size, idx);
      SAMPLE(i, w->lat, w->nlat, hit = seek_once(&it, key));
      w->found += (uint64_t)hit;
    }
  }
  iter_worker_end(w, &it, ok, i);
  free(key);
}

static void *worker_main(void *arg) {
  worker *w = arg;
  switch (w->kind) {
    case LKVWL_READRANDOM: worker_readrandom(w, 0); break;
    case LKVWL_READMISSING: worker_readrandom(w, 1); break;
    case LKVWL_READSEQ: worker_readseq(w); break;
    case LKVWL_SEEKRANDOM: worker_seekrandom(w); break;
    case LKVWL_READWHILEWRITING: worker_readrandom(w, 0); break;
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
    uint64_t idx = lkv_splitmix64(&rng) % cfg.num;
    lkvwl_key(key, cfg.key_size, idx);
    if (bdb_put(wr->b, key, cfg.key_size,
                lkvwl_value_for(&values, idx, wr->phase),
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
  uint64_t tmin = UINT64_MAX, tmax = 0, done = 0, found = 0, wrong = 0, mis = 0,
           expected = 0;
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
    w->seed = lkv_mix64(0xBE7Cull + (uint64_t)rep * 1000003u +
                        (uint64_t)widx * 1009u + (uint64_t)t);
    w->bar = &bar;
    w->lat = xmalloc((size_t)(w->ops / LAT_EVERY + 1) * sizeof *w->lat);
  }
  writer wr;
  pthread_t wtid;
  memset(&wr, 0, sizeof wr);
  if (wl->kind == LKVWL_READWHILEWRITING) {
    wr.b = b;
    wr.phase = phase;
    wr.seed = lkv_mix64(0x3A17E5ull + (uint64_t)rep * 7u + (uint64_t)widx);
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
  if (wl->kind == LKVWL_READWHILEWRITING) {
    atomic_store(&wr.stop, 1);
    pthread_join(wtid, NULL);
    if (wr.failed) {
      failed = 1;
      progress("lkv_bench: %s %s writer: %s\n", sys_name[b->sys], wl->label,
               b->err);
      add_note("%s %s writer failed: %s", sys_name[b->sys],
               lkvwl_name(wl->kind), b->err);
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
    if (wl->kind == LKVWL_READSEQ)
      expected += w->ops < cfg.num ? w->ops : cfg.num;
    else if (wl->kind != LKVWL_READMISSING)
      expected += w->ops;
    if (w->failed && !failed) {
      failed = 1;
      progress("lkv_bench: %s %s: %s\n", sys_name[b->sys], wl->label, w->err);
      add_note("%s %s (%d threads) failed: %s", sys_name[b->sys],
               lkvwl_name(wl->kind), nt, w->err);
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
      out->writer_ops_per_sec =
          (double)wr.puts / ((double)(wr.t1 - wr.t0) / 1e9);
    progress(
        "  %-8s %-11s %9.0f ops/s  p50 %.1f p99 %.1f us  threads %d  "
        "found %" PRIu64 "/%" PRIu64,
        sys_name[b->sys], lkvwl_name(wl->kind), out->ops_per_sec, out->p50_us,
        out->p99_us, nt, found, expected);
    if (wl->kind == LKVWL_READWHILEWRITING)
      progress("  writer %.0f puts/s", out->writer_ops_per_sec);
    print_levels(b);
    progress("\n");
    if (wl->kind == LKVWL_READMISSING && found > 0)
      add_note("WARNING: %s readmissing (%d threads, run %d): %" PRIu64
               " of %" PRIu64 " never-written keys were found",
               sys_name[b->sys], nt, rep + 1, found, done);
    else if (wl->kind != LKVWL_READMISSING && found != expected)
      add_note("WARNING: %s %s (%d threads, run %d): found %" PRIu64
               " of %" PRIu64 " keys",
               sys_name[b->sys], lkvwl_name(wl->kind), nt, rep + 1, found,
               expected);
    if (wrong)
      add_note("WARNING: %s %s (%d threads, run %d): %" PRIu64
               " reads returned a wrong value",
               sys_name[b->sys], lkvwl_name(wl->kind), nt, rep + 1, wrong);
    if (mis)
      add_note("WARNING: %s readseq (run %d): %" PRIu64 " keys out of order",
               sys_name[b->sys], rep + 1, mis);
  }
  free(lat);
  free(ws);
  free(tids);
  return failed ? -1 : 0;
}

/* ---- one system, one repetition ------------------------------------------ */

static int fresh_db(bdb *b, int rep, const char *tag) {
  if (bdb_is_open(b)) bdb_close(b);
  if (b->dir[0]) rm_tree(b->dir);
  snprintf(b->dir, sizeof b->dir, "%s/%s-r%d-%s", cfg.dir, sys_name[b->sys],
           rep + 1, tag);
  rm_tree(b->dir);
  if (bdb_open(b) != 0) {
    progress("lkv_bench: %s: %s\n", sys_name[b->sys], b->err);
    add_note("%s: open failed: %s", sys_name[b->sys], b->err);
    return -1;
  }
  return 0;
}

static void run_system(int sys, int rep) {
  static const int fill_order[] = {LKVWL_FILLSEQ, LKVWL_FILLRANDOM,
                                   LKVWL_OVERWRITE};
  bdb b;
  int phase = 0, db_phase = -1, need_reads = 0;

  memset(&b, 0, sizeof b);
  b.sys = sys;
  progress("[%s, run %d/%d]\n", sys_name[sys], rep + 1, cfg.repeat);

  for (size_t f = 0; f < sizeof fill_order / sizeof fill_order[0]; f++) {
    for (int w = 0; w < cfg.nwl; w++) {
      int kind = cfg.wl[w].kind;
      if (kind != fill_order[f]) continue;
      if (kind != LKVWL_OVERWRITE || !bdb_is_open(&b))
        if (fresh_db(&b, rep, lkvwl_name(kind)) != 0) goto out;
      phase++;
      if (run_fill(&b, kind, phase,
                   lkv_mix64((uint64_t)kind * 7919u + (uint64_t)rep * 104729u),
                   res_at(rep, sys, w), 1) != 0)
        goto out;
      db_phase = phase;
    }
  }
  for (int w = 0; w < cfg.nwl; w++)
    if (!lkvwl_is_fill(cfg.wl[w].kind)) need_reads = 1;
  if (!need_reads) goto out;
  if (!bdb_is_open(&b)) {
    /* No fill workload asked for: load the keys untimed. */
    if (fresh_db(&b, rep, "load") != 0) goto out;
    phase++;
    progress("  %-8s (untimed load of %" PRIu64 " keys)\n", sys_name[sys],
             cfg.num);
    if (run_fill(&b, LKVWL_FILLRANDOM, phase,
                 lkv_mix64(0x10ADull + (uint64_t)rep), NULL, 0) != 0)
      goto out;
    db_phase = phase;
  }
  for (int w = 0; w < cfg.nwl; w++) {
    if (lkvwl_is_fill(cfg.wl[w].kind)) continue;
    if (run_read(&b, &cfg.wl[w], w, db_phase, rep, res_at(rep, sys, w)) != 0)
      break;
  }
out:
  if (bdb_is_open(&b)) bdb_close(&b);
  if (b.dir[0]) rm_tree(b.dir);
}

int main(int argc, char **argv) {
  parse_args(argc, argv);
  results =
      xcalloc((size_t)cfg.repeat * NSYS * (size_t)cfg.nwl, sizeof *results);
  probe_io_accounting();
  lkvwl_values_init(&values, xmalloc(lkvwl_values_bytes(cfg.value_size)),
                    cfg.value_size);
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
  free(values.buf);
  return 0;
}
