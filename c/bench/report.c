/* report.c - lkv_bench's report: the header naming the machine and the
 * settings, the tables of medians, the notes, and the --json lines. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
#include <leveldb/c.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "lkv_bench.h"
#include "lunakv.h"

static char notes[64][200];
static int nnotes;

void add_note(const char *fmt, ...) {
  va_list ap;
  if (nnotes >= 64) return;
  va_start(ap, fmt);
  vsnprintf(notes[nnotes], sizeof notes[0], fmt, ap);
  va_end(ap);
  for (int i = 0; i < nnotes; i++)
    if (strcmp(notes[i], notes[nnotes]) == 0) return; /* said already */
  nnotes++;
}

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

void print_header(int argc, char **argv) {
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
  printf("data:      num=%" PRIu64
         " keys, key %zu B (zero-padded decimal), "
         "value %zu B (random bytes), %.1f MiB raw\n",
         cfg.num, cfg.key_size, cfg.value_size, (double)raw / 1048576.0);
  printf("reads:     %" PRIu64
         " ops per read workload (split over its "
         "threads); seekrandom = seek + %d nexts;\n"
         "           readmissing keys %s\n",
         cfg.reads ? cfg.reads : cfg.num, SEEK_NEXTS,
         cfg.missing_above
             ? "above the key range (index + 10*num)"
             : "inside the key range (last byte '.'): Bloom filters decide");
  if (cfg.writes)
    printf("writes:    overwrite does %" PRIu64
           " ops (%.2f passes over the "
           "keys, each in a new random order)\n",
           cfg.writes, (double)cfg.writes / (double)cfg.num);
  printf(
      "settings:  no compression, write buffer/memtable %zu MiB, Bloom %d "
      "bits/key, block cache %zu MiB,\n"
      "           WAL on without fsync (leveldb sync=false, lunakv "
      "LKV_SYNC_NONE), block size 4 KiB,\n"
      "           max_open_files default; other options engine defaults\n",
      WRITE_BUFFER_BYTES >> 20, BLOOM_BITS_PER_KEY, BLOCK_CACHE_BYTES >> 20);
  printf("table reads: leveldb mmap (its default on 64-bit), lunakv %s\n",
         cfg.mmap_reads ? "mmap (mmap_reads=1; its default is pread: "
                          "--mmap-reads=0)"
                        : "pread + block cache (its default)");
  printf(
      "settle:    after each fill: lunakv lkv_db_flush, leveldb "
      "close+reopen; then wait until no bytes are written for %.1f s\n",
      QUIET_POLLS * QUIET_POLL_MS / 1000.0);
  printf(
      "write amp: bytes written by the process during the fill and its "
      "settle (%s) / user bytes (key+value)\n",
      cfg.wa_write_bytes ? "/proc/self/io write_bytes"
                         : "/proc/self/io wchar: write_bytes unavailable");
  printf(
      "latency:   every %dth op timed with clock_gettime(MONOTONIC); "
      "p50/p99 in microseconds\n",
      LAT_EVERY);
  printf("dir:       %s (%s)\n", cfg.dir, fs_name(cfg.dir));
  printf(
      "repeat:    %d (each figure is the median over the runs; system "
      "order alternates per run)\n\n",
      cfg.repeat);
  fflush(stdout);
}

static void fmt_lat(char *d, size_t n, const result *r, int ok) {
  if (ok)
    snprintf(d, n, "%.1f/%.1f", r->p50_us, r->p99_us);
  else
    snprintf(d, n, "-");
}

void print_tables(void) {
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
    if (lkvwl_is_fill(cfg.wl[w].kind)) any_fill = 1;
    snprintf(a, sizeof a, ok[0] ? "%.0f" : "-", m[0].ops_per_sec);
    snprintf(b, sizeof b, ok[1] ? "%.0f" : "-", m[1].ops_per_sec);
    if (ok[0] && ok[1] && m[1].ops_per_sec > 0)
      snprintf(r, sizeof r, "%.2f", m[0].ops_per_sec / m[1].ops_per_sec);
    else
      snprintf(r, sizeof r, "-");
    fmt_lat(la, sizeof la, &m[0], ok[0]);
    fmt_lat(lb, sizeof lb, &m[1], ok[1]);
    printf("%-16s %7d %13s %14s %7s %18s %18s\n", lkvwl_name(cfg.wl[w].kind),
           cfg.wl[w].threads, a, b, r, la, lb);
  }
  if (any_fill) {
    printf("\n%-12s %9s %10s %11s %13s %14s %10s %15s\n", "phase", "user MiB",
           "lunakv WA", "leveldb WA", "lunakv MiB", "leveldb MiB", "engine WA",
           "settle s l/L");
    for (int w = 0; w < cfg.nwl; w++) {
      char a[32], b[32], da[32], db[32], ew[32], st[48];
      if (!lkvwl_is_fill(cfg.wl[w].kind)) continue;
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
             lkvwl_name(cfg.wl[w].kind), (double)user / 1048576.0, a, b, da, db,
             ew, st);
    }
    printf(
        "(WA: bytes written (%s) / user bytes over the phase and its "
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

void write_json(void) {
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
              "\"num\":%" PRIu64
              ",\"key_size\":%zu,\"value_size\":%zu,"
              "\"runs\":%d,\"ops_per_sec\":%.1f,\"p50_us\":%.2f,"
              "\"p99_us\":%.2f",
              sys_name[s], lkvwl_name(cfg.wl[w].kind), cfg.wl[w].threads,
              cfg.num, cfg.key_size, cfg.value_size, n, m.ops_per_sec, m.p50_us,
              m.p99_us);
      if (m.has_wa) {
        fprintf(f, ",\"write_amp\":%.3f,\"disk_bytes\":%" PRIu64, m.write_amp,
                m.disk_bytes);
        if (m.engine_wa >= 0)
          fprintf(f, ",\"engine_write_amp\":%.3f", m.engine_wa);
      } else {
        fprintf(f, ",\"found\":%" PRIu64 ",\"expected\":%" PRIu64, m.found,
                m.expected);
        if (cfg.wl[w].kind == LKVWL_READWHILEWRITING)
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
