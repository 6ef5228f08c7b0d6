/* cmdline.c - lkv_bench's command line: flags into cfg (lkv_bench.h),
 * workload names through workload.h, and the directory the dbs live in.
 * README.md in this directory documents every flag. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lkv_bench.h"
#include "lunakv.h"
#include "workload.h"

#define DEFAULT_WORKLOADS                                            \
  "fillseq,fillrandom,overwrite,readrandom,readrandom2,readmissing," \
  "readseq,seekrandom,readwhilewriting"

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
  for (tok = strtok_r(copy, ",", &save); tok;
       tok = strtok_r(NULL, ",", &save)) {
    wl_t *w;
    size_t len = strlen(tok), base = len;
    int kind, threads;
    if (!len) continue;
    if (cfg.nwl >= MAX_WL) die("too many workloads");
    while (base > 0 && tok[base - 1] >= '0' && tok[base - 1] <= '9') base--;
    kind = lkvwl_parse(tok, base, LKVWL_IN_LKV_BENCH);
    if (kind < 0) die("unknown workload '%s'", tok);
    threads = base < len ? (int)parse_u64("workloads", tok + base)
                         : (lkvwl_is_fill(kind) ? 1 : cfg.threads);
    if (threads < 1 || threads > 1024) die("bad thread count in '%s'", tok);
    if (lkvwl_is_fill(kind) && threads != 1)
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
  for (tok = strtok_r(copy, ",", &save); tok;
       tok = strtok_r(NULL, ",", &save)) {
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

void parse_args(int argc, char **argv) {
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
    if (strcmp(name, "num") == 0)
      cfg.num = parse_u64(name, val);
    else if (strcmp(name, "reads") == 0)
      cfg.reads = parse_u64(name, val);
    else if (strcmp(name, "writes") == 0)
      cfg.writes = parse_u64(name, val);
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
    else if (strcmp(name, "systems") == 0)
      systems = val;
    else if (strcmp(name, "dir") == 0 || strcmp(name, "db") == 0)
      dir = val;
    else if (strcmp(name, "json") == 0)
      cfg.json = val[0] ? val : NULL;
    else if (strcmp(name, "mmap-reads") == 0) {
      if (strcmp(val, "0") && strcmp(val, "1")) die("--mmap-reads is 0 or 1");
      cfg.mmap_reads = val[0] == '1';
    } else if (strcmp(name, "missing") == 0) {
      if (strcmp(val, "inside") == 0)
        cfg.missing_above = 0;
      else if (strcmp(val, "above") == 0)
        cfg.missing_above = 1;
      else
        die("--missing is inside or above");
    } else {
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
  if (cfg.key_size < 2 || cfg.key_size > 4096)
    die("--key-size must be 2..4096");
  {
    /* every index in [0, num) (and [10 num, 11 num) for --missing=above)
     * must fit in key_size digits */
    size_t digits = 1;
    uint64_t top = cfg.missing_above ? cfg.num * 11 - 1 : cfg.num - 1;
    for (uint64_t x = top; x >= 10; x /= 10) digits++;
    if (digits > cfg.key_size)
      die("--key-size=%zu too small for --num=%" PRIu64, cfg.key_size, cfg.num);
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
