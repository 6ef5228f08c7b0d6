/* crashtest.c - lunakv's crash test, after RocksDB's db_crashtest.
 *
 *   crashtest DIR [kill CYCLES] [power CYCLES] [seed S]
 *
 * kill: a child process runs the workload of c/engine/test_workload.h
 * (sets, deletes, batches, snapshot reads through iterators and gets,
 * flushes, compactions, syncs; tiny memtables; a sync mode drawn per
 * cycle) while a second thread reads random keys and checks every value
 * is one the workload wrote. The parent kills it with SIGKILL after a
 * random 5-300 ms, reopens the database and checks it holds exactly a
 * prefix of the operations that reaches every acknowledged one (SYNC=batch
 * may lose its last wal_buffer_size - 1 writes, as documented). The child
 * reports its progress through shared memory, which outlives it.
 *
 * power: cycles through the fault env (c/engine/faultenv.h) that stop
 * the machine at a random system call and drop or tear what was not
 * synced, which SIGKILL cannot do; the check then holds every operation
 * acknowledged as durable (wl_power_cycles).
 *
 * Exit status 0 when every cycle passed; the first failure is printed. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test_workload.h"

/* What the child publishes (in memory shared with the parent). */
typedef struct shared {
  _Atomic uint64_t next;      /* the operation running or about to */
  _Atomic uint64_t kill_safe; /* every operation up to this one must survive */
  _Atomic uint64_t reads;     /* values checked by the reader thread */
  atomic_int failed;          /* 1: the child saw something wrong */
  char why[640];
} shared;

static void nap_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

typedef struct reader_arg {
  lkv_db *db;
  shared *sh;
  uint64_t seed;
  atomic_int stop;
} reader_arg;

/* Random gets while the workload runs: a value must always be one that
 * some operation up to `next` wrote to that key. */
static void *reader(void *p) {
  reader_arg *a = p;
  lkv_buf b = {0};
  lkv_err err = {0};
  uint64_t r = a->seed;
  while (!atomic_load(&a->stop)) {
    char key[32];
    size_t kn;
    r = wl_mix(r);
    int k = (int)(r % WL_KEYS);
    wl_key(k, key, &kn);
    int rc = lkv_db_get(a->db, key, kn, LKV_SEQ_LATEST, &b, &err);
    /* after the get: `next` is published before its write starts */
    uint64_t limit = atomic_load(&a->sh->next);
    if (rc == LKV_OK) {
      uint64_t j = wl_decode(k, b.data, b.len);
      if (j == 0 || j > limit) {
        snprintf(a->sh->why, sizeof a->sh->why,
                 "reader: %s holds a value no operation up to %" PRIu64
                 " wrote",
                 key, limit);
        atomic_store(&a->sh->failed, 1);
        break;
      }
    } else if (rc != LKV_NOTFOUND) {
      snprintf(a->sh->why, sizeof a->sh->why, "reader: get %s: %s", key,
               err.msg);
      atomic_store(&a->sh->failed, 1);
      break;
    }
    atomic_fetch_add(&a->sh->reads, 1);
  }
  lkv_buf_free(&b);
  return NULL;
}

/* The child: open, then operations from `first` until killed. */
static void child(const char *dir, uint64_t seed, uint64_t opt_seed,
                  uint64_t first, const wl_state *base, shared *sh) {
  lkv_options o;
  lkv_err err = {0};
  wl_options(&o, opt_seed, NULL);
  wl_run run;
  wl_run_init(&run, seed, &o, first, base);
  if (lkv_db_open(dir, &o, &run.db, &err)) {
    snprintf(sh->why, sizeof sh->why, "child: open failed: %s", err.msg);
    atomic_store(&sh->failed, 1);
    _exit(3);
  }
  reader_arg ra = {run.db, sh, opt_seed, 0};
  pthread_t th;
  if (pthread_create(&th, NULL, reader, &ra) != 0) _exit(4);
  for (;;) {
    atomic_store(&sh->next, run.next);
    if (wl_step(&run)) {
      snprintf(sh->why, sizeof sh->why, "child: %s", run.why);
      atomic_store(&sh->failed, 1);
      _exit(3);
    }
    atomic_store(&sh->kill_safe, wl_kill_safe(&run));
  }
}

static int kill_cycles(const char *dir, uint64_t seed, int cycles) {
  shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE,
                    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (sh == MAP_FAILED) {
    perror("mmap");
    return 1;
  }
  wl_state base;
  memset(&base, 0, sizeof base);
  uint64_t first = 1, lost = 0, reads = 0;
  for (int c = 0; c < cycles; c++) {
    uint64_t r = wl_mix(seed * 131 + (uint64_t)c);
    memset(sh, 0, sizeof *sh);
    atomic_store(&sh->next, first);
    atomic_store(&sh->kill_safe, first - 1);
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
      perror("fork");
      return 1;
    }
    if (pid == 0) child(dir, seed, r, first, &base, sh);
    nap_ms(5 + (long)((r >> 20) % 296));
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    if (atomic_load(&sh->failed)) {
      printf("kill cycle %d: %s\n", c, sh->why);
      return 1;
    }
    if (!WIFSIGNALED(status)) {
      printf("kill cycle %d: the child ended by itself (status %d)\n", c,
             status);
      return 1;
    }
    lkv_options o;
    lkv_err err = {0};
    lkv_db *db = NULL;
    wl_options(&o, r, NULL);
    if (lkv_db_open(dir, &o, &db, &err)) {
      printf("kill cycle %d: reopen failed: %s\n", c, err.msg);
      return 1;
    }
    uint64_t done = 0, safe = atomic_load(&sh->kill_safe),
             next = atomic_load(&sh->next);
    char why[512];
    if (wl_verify(db, seed, &base, first, safe, next, &done, why, sizeof why)) {
      printf("kill cycle %d (sync %d): %s (must survive: up to %" PRIu64 ")\n",
             c, o.sync, why, safe);
      lkv_db_close(db, NULL);
      return 1;
    }
    if (lkv_db_close(db, &err)) {
      printf("kill cycle %d: close failed: %s\n", c, err.msg);
      return 1;
    }
    lost += next > done + 1 ? next - 1 - done : 0;
    reads += atomic_load(&sh->reads);
    first = done + 1;
    if ((c + 1) % 100 == 0) printf("  kill: %d cycles\n", c + 1);
  }
  printf(
      "kill: %d SIGKILL cycles passed: 0 acknowledged writes lost beyond the "
      "sync mode's bound, 0 failed opens; %" PRIu64
      " operations survive, %" PRIu64
      " ran after the last acknowledged-safe point and were lost, %" PRIu64
      " concurrent reads checked\n",
      cycles, first - 1, lost, reads);
  munmap(sh, sizeof *sh);
  return 0;
}

static int power(const char *dir, uint64_t seed, int cycles) {
  wl_power_stats st;
  char why[1024];
  int chunk = 1000, done = 0;
  uint64_t lost = 0, mid = 0;
  /* in chunks on fresh databases, so the key space keeps turning over */
  while (done < cycles) {
    int n = cycles - done < chunk ? cycles - done : chunk;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) return 1;
    if (wl_power_cycles(dir, seed + (uint64_t)done, n, &st, why, sizeof why)) {
      printf("power: %s\n", why);
      return 1;
    }
    done += n;
    lost += st.lost;
    mid += st.mid_op;
    printf("  power: %d cycles\n", done);
  }
  printf("power: %d simulated power losses passed (%" PRIu64
         " in the middle of a "
         "call): 0 durable writes lost, 0 failed opens; %" PRIu64
         " acknowledged "
         "but not yet durable operations were lost, as the sync modes allow\n",
         cycles, mid, lost);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2 || argc % 2 != 0) {
    fprintf(stderr,
            "usage: crashtest DIR [kill CYCLES] [power CYCLES] [seed S]\n");
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  const char *dir = argv[1];
  int kills = 0, powers = 0;
  uint64_t seed = (uint64_t)time(NULL);
  for (int i = 2; i + 1 < argc; i += 2) {
    if (strcmp(argv[i], "kill") == 0)
      kills = atoi(argv[i + 1]);
    else if (strcmp(argv[i], "power") == 0)
      powers = atoi(argv[i + 1]);
    else if (strcmp(argv[i], "seed") == 0)
      seed = strtoull(argv[i + 1], NULL, 10);
    else {
      fprintf(stderr, "crashtest: unknown argument '%s'\n", argv[i]);
      return 2;
    }
  }
  printf("crashtest: %s, seed %" PRIu64 " (rerun with: seed %" PRIu64 ")\n",
         dir, seed, seed);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) return 1;
  int rc = 0;
  if (kills > 0) rc = kill_cycles(dir, seed, kills);
  if (rc == 0 && powers > 0) rc = power(dir, seed, powers);
  if (rc == 0 && system(cmd) != 0) rc = 1;
  return rc;
}
