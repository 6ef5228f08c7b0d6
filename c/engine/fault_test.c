/* fault_test.c - the db under injected faults and simulated power loss.
 *
 * walk: a fixed workload (writes, batches, deletes, flushes, compactions,
 * syncs, snapshot reads, a close and a reopen) is run once to count the
 * calls of each kind it makes; then again once per call (every one, or an
 * even sample of each kind; FAULT_WALK=all for every one), with that call
 * failing (EIO or ENOSPC, writes cut short half the time). Each time: no
 * crash (this runs under ASan and UBSan too), the failure is an error
 * (unless the allow-list below says why it is absorbed), and a clean
 * reopen afterwards holds exactly a prefix of the operations that reaches
 * every acknowledged one. FAULT_ONLY=seed:kind:n replays one case
 * (FAULT_BT=1 prints the stack of a fault that went unreported).
 *
 * power: cycles of the workload on one database, each stopped by a
 * simulated power loss at a random call (in any thread: a flush or a
 * compaction may be half done), then a reopen that must hold a prefix of
 * the operations reaching every one acknowledged as durable (a sync, a
 * flush, or any write under SYNC=always). */
#include <errno.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "faultenv.h"
#include "lunakv.h"
#include "test.h"
#include "test_workload.h"

static char dir[256];

/* A scratch directory on tmpfs when there is one: fsyncs cost nothing
 * there, and the fault env decides what a power loss keeps anyway. */
static void make_dir(void) {
  const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  snprintf(dir, sizeof dir, "%s/lkv_fault_test_XXXXXX", base);
  if (mkdtemp(dir) == NULL) {
    perror("mkdtemp");
    exit(1);
  }
}

static int open_db(lkv_faultenv *fe, uint64_t opt_seed, lkv_db **db,
                   lkv_err *err) {
  lkv_options o;
  wl_options(&o, opt_seed, lkv_faultenv_env(fe));
  return lkv_db_open(dir, &o, db, err);
}

/* ==== walk ============================================================== */

#define WALK_OPS 260

typedef struct walk_result {
  wl_run r;
  int stopped;  /* an operation, the close or the reopen failed */
  int bg_error; /* lkv_db_stats showed a background error before a close */
} walk_result;

/* After a failed operation the db must stay usable or refuse cleanly:
 * every kind of call answers (an error is fine) and none crashes. What
 * it writes is not acknowledged to the check (the run stops at the
 * failure), so these writes must fail or land after the prefix. */
static void probe(lkv_db *db) {
  lkv_err err = {0};
  lkv_buf b = {0};
  int g = lkv_db_get(db, "key00001", 8, LKV_SEQ_LATEST, &b, &err);
  CHECK(g == LKV_OK || g == LKV_NOTFOUND || err.msg[0]);
  lkv_buf_free(&b);
  lkv_stats st;
  lkv_db_stats(db, &st);
  lkv_iter *it = NULL;
  if (lkv_iter_new(db, LKV_SEQ_LATEST, &it, &err) == LKV_OK) {
    for (lkv_iter_seek_first(it); lkv_iter_valid(it); lkv_iter_next(it)) {
    }
    lkv_iter_free(it);
  }
  int rc = lkv_db_sync(db, &err);
  CHECK(rc == LKV_OK || err.msg[0]);
  rc = lkv_db_flush(db, &err);
  CHECK(rc == LKV_OK || err.msg[0]);
}

static int newest_log(void *arg, const char *name) {
  if (strncmp(name, "wal.log.", 8) == 0 && strcmp(name, (char *)arg) > 0)
    snprintf((char *)arg, 64, "%s", name);
  return 0;
}

/* Three bytes of a record that never finished at the end of the newest
 * log, as a crash mid-write leaves: the reopen must cut them (the walk
 * then fails that truncate too). */
static void torn_tail(void) {
  char name[64] = "", path[512];
  lkv_err err = {0};
  CHECK_OK(lkv_env_posix()->list_dir(lkv_env_posix(), dir, newest_log, name),
           &err);
  if (name[0] == '\0') return;
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "ab");
  if (f == NULL) return;
  fwrite("\x07\x00\x00", 1, 3, f);
  fclose(f);
}

/* The workload: open, operations 1..WALK_OPS/2, close, reopen, the rest,
 * close. Stops at the first failure. */
static void walk_once(lkv_faultenv *fe, uint64_t seed, walk_result *w) {
  lkv_err err = {0};
  lkv_options o;
  wl_options(&o, seed, NULL);
  memset(w, 0, sizeof *w);
  w->r.seed = seed;
  w->r.sync = o.sync;
  w->r.wal_buffer_size = o.wal_buffer_size;
  w->r.next = 1;
  for (int part = 0; part < 2 && !w->stopped; part++) {
    if (open_db(fe, seed, &w->r.db, &err)) {
      CHECK(err.code != LKV_OK && err.msg[0] != '\0'); /* an error, worded */
      w->stopped = 1;
      break;
    }
    uint64_t end = part == 0 ? WALK_OPS / 2 : WALK_OPS;
    while (w->r.next <= end && !w->stopped)
      if (wl_step(&w->r)) w->stopped = 1;
    CHECK(!w->r.bad);
    if (w->r.bad) fprintf(stderr, "walk: %s\n", w->r.why);
    if (w->stopped && w->r.failed_op) {
      /* the db must stay usable or refuse cleanly: more calls may fail
       * but must not crash, and a read answers or errs */
      probe(w->r.db);
    }
    wl_snap_drop(&w->r);
    /* a failed flush or compaction is answered by the background error,
     * which every later write returns and the stats show */
    lkv_stats st;
    lkv_db_stats(w->r.db, &st);
    if (st.bg_error) w->bg_error = 1;
    int crc = lkv_db_close(w->r.db, &err);
    w->r.db = NULL;
    if (crc) w->stopped = 1; /* batch mode: its buffered writes are lost */
    if (part == 0 && !w->stopped) torn_tail();
  }
}

/* After the walk's run: reopen without faults and check the prefix. */
static void walk_check(lkv_faultenv *fe, const walk_result *w,
                       const char *what) {
  lkv_err err = {0};
  lkv_db *db = NULL;
  lkv_faultenv_clear(fe);
  if (open_db(fe, w->r.seed, &db, &err)) {
    fprintf(stderr, "walk %s: reopen failed: %s\n", what, err.msg);
    CHECK(0);
    return;
  }
  uint64_t min = wl_kill_safe(&w->r);
  uint64_t done = 0;
  wl_state base;
  char why[512];
  memset(&base, 0, sizeof base);
  if (wl_verify(db, w->r.seed, &base, 1, min, w->r.next, &done, why,
                sizeof why)) {
    fprintf(stderr, "walk %s: %s (acked %llu, stopped at %s)\n", what, why,
            (unsigned long long)w->r.acked, w->r.why);
    CHECK(0);
  }
  CHECK_OK(lkv_db_close(db, &err), &err);
}

/* The faults the engine absorbs by design (layout.md, "Which failures
 * are errors"), as narrow as the walk can name them: the kind of call and
 * the name of the file it failed on. Every other fault that fires must
 * come back as an error: an operation's, the background error (which the
 * stats show and every later write and lkv_db_close return), or a read's
 * (a snapshot read may fail without stopping the run). */
static const struct absorbed {
  int op;
  const char *name; /* fnmatch(3) pattern of the file's name */
  int gone;         /* 1: only when that file is gone after the run */
  const char *why;
} absorbed[] = {
    {LKV_FOP_CLOSE, "*.sst", 0,
     "a table is read-only when open for reads, and its builder closes it "
     "only after the fsync that reports any write-back error"},
    {LKV_FOP_CLOSE, "MANIFEST", 0,
     "only ever read under this name (written as "
     "MANIFEST.tmp, whose close is an error)"},
    {LKV_FOP_CLOSE, "wal.log.*", 0,
     "a frozen log after its bytes were written out (a sync reopens it by "
     "name and fdatasyncs it, which reports a write-back error), or a log "
     "opened read-only to replay it or to sync it after the fdatasync; the "
     "active log's close at lkv_db_close is an error"},
    {LKV_FOP_UNLINK, "*.sst", 0,
     "a table no version names (compacted away, or an abandoned output): "
     "only disk space, and the next open removes it"},
    {LKV_FOP_UNLINK, "wal.log.*", 0,
     "a log whose writes are in a synced table the MANIFEST names: only "
     "disk space, and the next open removes it"},
    {LKV_FOP_UNLINK, "MANIFEST.tmp", 0,
     "the leftover of a MANIFEST write that failed, and was reported"},
    {LKV_FOP_MMAP, "*.sst", 0, "the table reads with pread instead"},
    {LKV_FOP_OPEN, "wal.log.*", 1,
     "a sync opens each frozen log to fdatasync it; one that cannot be "
     "opened and is then gone was flushed meanwhile, and its writes are in "
     "a synced table (an error here would stop every later write)"},
};

/* Whether a fault that fired and was not reported is one the engine
 * absorbs by design. */
static int absorbed_fault(lkv_faultenv *fe, int op) {
  char path[4096];
  lkv_faultenv_fired_path(fe, path, sizeof path);
  const char *slash = strrchr(path, '/');
  const char *name = slash ? slash + 1 : path;
  for (size_t i = 0; i < sizeof absorbed / sizeof absorbed[0]; i++)
    if (absorbed[i].op == op && fnmatch(absorbed[i].name, name, 0) == 0 &&
        (!absorbed[i].gone || access(path, F_OK) != 0))
      return 1;
  return 0;
}

/* A fault that fired was answered with an error, or is one absorbed by
 * design (rlog_fault_test checks the same of the replication log).
 * Returns 1 when it was absorbed. */
static int check_answered(lkv_faultenv *fe, const walk_result *w, int op,
                          uint64_t nth, const char *what) {
  if (lkv_faultenv_fired(fe) == 0 || w->stopped || w->bg_error ||
      w->r.read_errs)
    return 0;
  if (absorbed_fault(fe, op)) return 1;
  char path[4096];
  lkv_faultenv_fired_path(fe, path, sizeof path);
  fprintf(stderr,
          "walk %s (FAULT_ONLY=%llu:%s:%llu): the fault on %s went "
          "unreported\n",
          what, (unsigned long long)w->r.seed, lkv_fault_op_name(op),
          (unsigned long long)nth, path);
  lkv_faultenv_print_stack(fe); /* with FAULT_BT=1 */
  CHECK(0);
  return 0;
}

static int walk_all(void) {
  const char *v = getenv("FAULT_WALK");
  return v && strcmp(v, "all") == 0;
}

static void test_walk(uint64_t seed) {
  walk_result w;
  rmrf(dir);
  lkv_faultenv *fe = lkv_faultenv_new();
  walk_once(fe, seed, &w);
  CHECK(!w.stopped);
  if (w.stopped) fprintf(stderr, "walk: the clean run failed: %s\n", w.r.why);
  uint64_t calls[LKV_FOP_COUNT];
  for (int op = 0; op < LKV_FOP_COUNT; op++)
    calls[op] = lkv_faultenv_calls(fe, op);
  walk_check(fe, &w, "clean");
  lkv_faultenv_free(fe);

  unsigned runs = 0, failed_ops = 0, reopened = 0, absorbed_runs = 0;
  for (int op = 0; op < LKV_FOP_COUNT; op++) {
    uint64_t n = calls[op], step = walk_all() || n <= 40 ? 1 : n / 40;
    for (uint64_t i = 1; i <= n; i += step) {
      char what[96];
      rmrf(dir);
      fe = lkv_faultenv_new();
      int e = i % 2 ? EIO : ENOSPC;
      int flags = op == LKV_FOP_WRITE && i % 4 == 1 ? LKV_FAULT_SHORT : 0;
      lkv_faultenv_fail(fe, op, i, e, NULL, flags);
      walk_once(fe, seed, &w);
      snprintf(what, sizeof what, "%s #%llu of %llu", lkv_fault_op_name(op),
               (unsigned long long)i, (unsigned long long)n);
      absorbed_runs += check_answered(fe, &w, op, i, what);
      runs++;
      failed_ops += w.r.failed_op;
      walk_check(fe, &w, what);
      reopened++;
      lkv_faultenv_free(fe);
    }
  }
  printf(
      "fault walk (seed %llu): %u runs, %u with a failed operation, "
      "%u absorbed by design, %u checked reopens; calls:",
      (unsigned long long)seed, runs, failed_ops, absorbed_runs, reopened);
  for (int op = 0; op < LKV_FOP_COUNT; op++)
    printf(" %s %llu", lkv_fault_op_name(op), (unsigned long long)calls[op]);
  printf("\n");
}

/* ==== power loss ======================================================== */

static void test_power(uint64_t seed, int cycles) {
  wl_power_stats st;
  char why[1024];
  rmrf(dir);
  if (wl_power_cycles(dir, seed, cycles, &st, why, sizeof why)) {
    fprintf(stderr, "%s\n", why);
    CHECK(0);
  }
  printf(
      "power loss (seed %llu): %llu cycles, %llu stopped inside the "
      "workload's calls, %llu acknowledged but not durable operations "
      "lost, %llu operations survive\n",
      (unsigned long long)seed, (unsigned long long)st.cycles,
      (unsigned long long)st.mid_op, (unsigned long long)st.lost,
      (unsigned long long)st.survive);
}

/* FAULT_ONLY=seed:kind:n runs one case of the walk and keeps its
 * directory, for a closer look. */
static int only_one(const char *spec) {
  char kind[32];
  unsigned long long seed, n;
  if (sscanf(spec, "%llu:%31[a-z]:%llu", &seed, kind, &n) != 3) return 2;
  int op = lkv_fault_op_parse(kind);
  if (op < 0) return 2;
  walk_result w;
  lkv_faultenv *fe = lkv_faultenv_new();
  int e = n % 2 ? EIO : ENOSPC;
  int flags = op == LKV_FOP_WRITE && n % 4 == 1 ? LKV_FAULT_SHORT : 0;
  lkv_faultenv_fail(fe, op, n, e, NULL, flags);
  walk_once(fe, seed, &w);
  printf("stopped: %d, acked %llu, next %llu: %s\n", w.stopped,
         (unsigned long long)w.r.acked, (unsigned long long)w.r.next, w.r.why);
  if (check_answered(fe, &w, op, n, spec)) printf("absorbed by design\n");
  walk_check(fe, &w, spec);
  lkv_faultenv_free(fe);
  printf("directory kept: %s\n", dir);
  TEST_MAIN_END();
}

int main(int argc, char **argv) {
  make_dir();
  if (getenv("FAULT_ONLY")) return only_one(getenv("FAULT_ONLY"));
  int cycles = argc > 1 ? atoi(argv[1]) : 60;
  setvbuf(stdout, NULL, _IOLBF, 0);
  test_walk(1); /* SYNC=none, no block cache */
  test_walk(9); /* batch, mmap reads */
  test_walk(5); /* always, mmap reads */
  test_power(7, cycles);
  rmrf(dir);
  TEST_MAIN_END();
}
