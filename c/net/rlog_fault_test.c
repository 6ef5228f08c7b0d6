/* rlog_fault_test.c - the replication log (rlog.c) when the file system
 * fails: a failed write(2) cut back out (test 10), every call kind failed
 * in turn through a workload (12), power losses at every call (13), a
 * read that fails at open (14), what a stopped process left unsynced
 * (15), power losses after a conflict cut (20), a version 1 log's
 * upgrade failing (22), and the join mark's set and clear (23). The helpers are
 * rlog_test_util.h; scratch directories are on tmpfs when there is one. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "faultenv.h"
#include "hardstate.h"
#include "rlog.h"
#include "rlog_test_util.h"
#include "rng.h"
#include "test.h"

/* 10. a failed write(2) (the file size limit, mid-frame; with space
 * written ahead, mid-zeros) is cut back out: no partial frame, no zeros
 * ahead, the index is not used up, the log reopens cleanly; and, by the
 * stickiness rule (rlog.h), the failure is that append's only: the log
 * is not stuck and the next append takes the same index */
static void test_write_failure(uint64_t prealloc) {
  char dir[] = "/tmp/lkv_rlog_test_XXXXXX", path[512];
  /* more than the space a new log is made with: the frame must grow it */
  static char val[LKVNET_RLOG_PREALLOC + 4096];
  lkvnet_rlog *r;
  lkv_err err = {0};
  Recs rs = {0};
  struct rlimit old, lim;
  long long sz;
  uint64_t idx = 0;
  int rc;
  if (make_dir(dir) != 0) return;
  r = open_new_log(dir, path, sizeof path);
  if (r == NULL) goto out;
  lkvnet_rlog_set_prealloc(r, prealloc);
  CHECK(app(r, 1, LKVNET_OP_SET, "a", 1, "1", 1) == 1);
  CHECK(app(r, 1, LKVNET_OP_SET, "b", 1, "2", 1) == 2);
  {
    lkvnet_rlog_stats st;
    lkvnet_rlog_stats_get(r, &st);
    sz = (long long)st.size;
    /* made with its space ahead, which the two frames went into */
    CHECK(file_size(path) == LKVNET_RLOG_HEADER_SIZE + LKVNET_RLOG_PREALLOC);
  }
  signal(SIGXFSZ, SIG_IGN);
  CHECK(getrlimit(RLIMIT_FSIZE, &old) == 0);
  lim = old;
  /* the next frame, or the zeros before it, stop half-way */
  lim.rlim_cur = (rlim_t)file_size(path) + 100;
  CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0);
  rc = lkvnet_rlog_append(r, 1, LKVNET_OP_SET, "c", 1, val, sizeof val, &idx,
                          &err);
  CHECK(setrlimit(RLIMIT_FSIZE, &old) == 0);
  signal(SIGXFSZ, SIG_DFL);
  CHECK(rc == LKV_IOERROR && strstr(err.msg, "write") != NULL);
  CHECK(file_size(path) == sz); /* cut back: no partial frame */
  {
    uint64_t t;
    CHECK(lkvnet_rlog_term_at(r, 3, &t) == LKV_NOTFOUND);
  }
  CHECK(lkvnet_rlog_error(r, &err) == LKV_OK); /* not sticky */
  CHECK(app(r, 1, LKVNET_OP_SET, "c", 1, "3", 1) == 3);
  {
    /* the log's idea of its file is the file: zeros ahead written again */
    lkvnet_rlog_stats st;
    lkvnet_rlog_stats_get(r, &st);
    CHECK(file_size(path) == (long long)st.alloc);
    CHECK(st.alloc == st.size + prealloc);
  }
  CHECK(wait_durable(r, 3));
  close_log(r);
  r = open_log(dir, &rs);
  CHECK(rs.n == 3);
  if (r != NULL) {
    lkvnet_rlog_stats st;
    lkvnet_rlog_stats_get(r, &st);
    CHECK(st.dropped_bytes == 0 && st.last_index == 3);
  }
  close_log(r);
out:
  recs_free(&rs);
  rmrf(dir);
}

/* {======================================================================
** Faults through the env (c/engine/faultenv.h): every call kind failed in
** turn through a workload that takes every path of the log, and power
** losses at random calls. The rule checked after each: every failure is
** an error (never a crash), the stickiness rule of rlog.h holds, and a
** reopen without faults holds every entry the log called durable and
** nothing that was never appended.
** ======================================================================= */

/* Scratch space: tmpfs when there is one (the walk syncs thousands of
 * times), else /tmp. */
static int make_fault_dir(char *out, size_t n) {
  snprintf(out, n, "%s/lkv_rlog_fault_XXXXXX",
           access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
  return make_dir(out);
}

#define FMAX 256 /* indexes the workload reaches, with room */
#define FVER 8   /* versions one index may have (cuts and rewrites) */

/* What the workload did: for each index, the versions ever appended there
 * (a serial, in the key and value) and the one the log holds now; the
 * highest index the log called durable (lowered by a cut as the log's
 * own durable index is); the lowest base a durable compaction or rewrite
 * promised; the terms stored. */
#define FSTATES 8 /* states of the whole log kept (before each cut) */

typedef struct Model {
  unsigned ver[FMAX][FVER];
  int nver[FMAX];
  unsigned cur[FMAX];
  unsigned states[FSTATES][FMAX]; /* cur before each cut or rewrite */
  int nstates;
  uint64_t acked, min_base;
  unsigned serial;
  uint64_t term_acked, term_tried;
  int failures, crashed;
} Model;

static void fkey(char *k, size_t n, uint64_t index, unsigned serial) {
  snprintf(k, n, "k%llu-%u", (unsigned long long)index, serial);
}

/* The value of a serial: its bytes say which it is. */
static size_t fval(char *v, size_t n, unsigned serial) {
  size_t len = 1 + serial % 97, i;
  if (len > n) len = n;
  for (i = 0; i < len; i++) v[i] = (char)('a' + (serial + i) % 26);
  return len;
}

static void model_put(Model *m, uint64_t index, unsigned serial) {
  if (index >= FMAX) return;
  if (m->nver[index] < FVER) m->ver[index][m->nver[index]++] = serial;
  m->cur[index] = serial;
}

/* The log as it is now is one a reopen may find a prefix of. */
static void model_state(Model *m) {
  if (m->nstates < FSTATES) {
    memcpy(m->states[m->nstates], m->cur, sizeof m->cur);
    m->nstates++;
  } else {
    CHECK(0); /* the workload outgrew FSTATES */
  }
}

static void model_saw_durable(Model *m, lkvnet_rlog *r) {
  uint64_t d = lkvnet_rlog_durable_index(r);
  if (d > m->acked) m->acked = d;
}

/* Wait until idx is durable or the log is stuck (a failure seen), at most
 * ~10 s. */
static void wait_synced(Model *m, lkvnet_rlog *r, uint64_t idx) {
  int i;
  for (i = 0; i < 10000; i++) {
    lkv_err err = {0};
    if (lkvnet_rlog_durable_index(r) >= idx) return;
    if (lkvnet_rlog_error(r, &err) != LKV_OK) {
      m->failures++;
      CHECK(err.code == LKV_IOERROR && err.msg[0] != '\0');
      return;
    }
    sleep_ms(1);
  }
  fprintf(stderr, "neither durable nor stuck: durable %llu, want %llu\n",
          (unsigned long long)lkvnet_rlog_durable_index(r),
          (unsigned long long)idx);
  CHECK(0);
}

/* A failed call: an error with a message, and the stickiness rule. */
static void saw_failure(Model *m, int rc, const lkv_err *err) {
  m->failures++;
  CHECK(rc != LKV_OK && err->code == rc && err->msg[0] != '\0');
}

/* n entries of term t through append (or append_entry when follower). */
static void f_append(Model *m, lkvnet_rlog *r, uint64_t term, int n,
                     int follower) {
  int i;
  for (i = 0; i < n; i++) {
    char k[48], v[128];
    unsigned serial = ++m->serial;
    uint64_t index = lkvnet_rlog_last_index(r) + 1, got = 0;
    size_t vl = fval(v, sizeof v, serial);
    lkv_err err = {0};
    int stuck = lkvnet_rlog_error(r, NULL) != LKV_OK, rc;
    fkey(k, sizeof k, index, serial);
    if (follower) {
      lkvnet_entry e = mk(term, index, LKVNET_OP_SET, k, strlen(k), v, vl);
      rc = lkvnet_rlog_append_entry(r, &e, &err);
      got = index;
    } else {
      rc = lkvnet_rlog_append(r, term, LKVNET_OP_SET, k, strlen(k), v, vl, &got,
                              &err);
    }
    if (rc == LKV_OK) {
      CHECK(!stuck && got == index); /* a stuck log takes nothing */
      model_put(m, index, serial);
    } else {
      saw_failure(m, rc, &err);
      /* the rule: a failed append leaves the log as it was, stuck or not;
       * a log that was stuck stays stuck with the same failure */
      CHECK(lkvnet_rlog_last_index(r) == index - 1);
      if (stuck) CHECK(lkvnet_rlog_error(r, NULL) != LKV_OK);
    }
  }
}

/* Poll a compaction to its end: DONE or FAILED (never stuck running). */
static int f_compact_end(lkvnet_rlog *r, lkv_err *err) {
  int i, st = LKVNET_COMPACT_RUNNING;
  for (i = 0; i < 10000 && st == LKVNET_COMPACT_RUNNING; i++) {
    st = lkvnet_rlog_compact_poll(r, err);
    if (st == LKVNET_COMPACT_RUNNING) sleep_ms(1);
  }
  CHECK(st == LKVNET_COMPACT_DONE || st == LKVNET_COMPACT_FAILED);
  return st;
}

/* The workload: the term file, a new log, appends and group commit, a
 * follower's conflict cut, a compaction in the background with appends
 * meanwhile, a snapshot install's rewrite, close, then a reopen (header,
 * replay), appends and close again. Every step runs whatever the ones
 * before did; its failures are checked, never fatal. */
static void f_workload(Model *m, const char *dir, const lkv_env *env) {
  lkvnet_rlog *r = NULL;
  lkv_err err = {0};
  uint64_t t, base;
  int rc, pass;
  m->term_tried = 1;
  rc = lkvnet_term_store(dir, env, 1, &err);
  if (rc == LKV_OK)
    m->term_acked = 1;
  else
    saw_failure(m, rc, &err);
  for (pass = 0; pass < 2; pass++) {
    r = NULL;
    err.code = LKV_OK;
    err.msg[0] = '\0';
    rc = lkvnet_rlog_open(dir, env, -1, NULL, NULL, &r, &err);
    if (rc != LKV_OK) {
      saw_failure(m, rc, &err);
      CHECK(r == NULL);
      continue;
    }
    if (pass == 1) {
      /* the reopen: appends after what was there */
      f_append(m, r, 4, 5, 0);
      wait_synced(m, r, lkvnet_rlog_last_index(r));
      model_saw_durable(m, r);
      rc = lkvnet_rlog_close(r, &err);
      if (rc != LKV_OK) saw_failure(m, rc, &err);
      continue;
    }
    /* appends, group commit */
    f_append(m, r, 1, 30, 0);
    wait_synced(m, r, lkvnet_rlog_last_index(r));
    model_saw_durable(m, r);
    /* a follower's conflict: cut after 25, the leader's entries instead */
    if (lkvnet_rlog_last_index(r) > 25) {
      if (m->acked > 25) m->acked = 25;
      model_state(m);
      rc = lkvnet_rlog_truncate(r, 25, &err);
      if (rc != LKV_OK) saw_failure(m, rc, &err);
    }
    f_append(m, r, 2, 10, 1);
    wait_synced(m, r, lkvnet_rlog_last_index(r));
    model_saw_durable(m, r);
    /* a compaction in the background, appends while it runs */
    base = lkvnet_rlog_last_index(r) > 20 ? 20 : lkvnet_rlog_base_index(r);
    if (lkvnet_rlog_term_at(r, base, &t) == LKV_OK &&
        (rc = lkvnet_rlog_compact_begin(r, base, t, lkvnet_rlog_last_index(r),
                                        NULL, NULL, &err)) == LKV_OK) {
      f_append(m, r, 2, 5, 0);
      if (f_compact_end(r, &err) == LKVNET_COMPACT_DONE) {
        if (base > m->min_base) m->min_base = base;
      } else {
        saw_failure(m, err.code, &err);
      }
    } else if (rc != LKV_OK) {
      saw_failure(m, rc, &err); /* only when stuck: the indexes are good */
      CHECK(lkvnet_rlog_error(r, NULL) != LKV_OK);
    }
    wait_synced(m, r, lkvnet_rlog_last_index(r));
    model_saw_durable(m, r);
    /* a snapshot install: the log restarts after an index past its end */
    base = lkvnet_rlog_last_index(r) + 7;
    model_state(m);
    rc = lkvnet_rlog_rewrite(r, base, 3, &err);
    if (rc == LKV_OK) {
      if (base > m->min_base) m->min_base = base;
      if (base > m->acked) m->acked = base; /* a snapshot covers the rest */
      CHECK(lkvnet_rlog_last_index(r) == base);
    } else {
      saw_failure(m, rc, &err);
    }
    f_append(m, r, 3, 6, 1);
    wait_synced(m, r, lkvnet_rlog_last_index(r));
    model_saw_durable(m, r);
    rc = lkvnet_rlog_close(r, &err);
    if (rc != LKV_OK) saw_failure(m, rc, &err);
  }
  m->term_tried = 2;
  rc = lkvnet_term_store(dir, env, 2, &err);
  if (rc == LKV_OK)
    m->term_acked = 2;
  else
    saw_failure(m, rc, &err);
}

/* Reopen dir with the plain file system and check it against m. */
static void f_check(const Model *m, const char *dir, const char *what) {
  lkvnet_rlog *r = NULL;
  lkvnet_rlog_stats st;
  lkv_err err = {0};
  Recs rs = {0};
  uint64_t t = 0;
  size_t i;
  int bad = 0;
  CHECK_OK(lkvnet_term_load(dir, NULL, &t, &err), &err);
  if (t < m->term_acked || t > m->term_tried) {
    fprintf(stderr, "%s: term %llu, stored %llu, tried %llu\n", what,
            (unsigned long long)t, (unsigned long long)m->term_acked,
            (unsigned long long)m->term_tried);
    bad++;
  }
  err.code = LKV_OK;
  err.msg[0] = '\0';
  if (lkvnet_rlog_open(dir, NULL, -1, record, &rs, &r, &err) != LKV_OK) {
    fprintf(stderr, "%s: reopen failed: %s\n", what, err.msg);
    recs_free(&rs);
    CHECK(0);
    return;
  }
  lkvnet_rlog_stats_get(r, &st);
  {
    /* what it holds is a prefix of one state the log was in: never old
     * entries after new ones, or new after old */
    int sidx, fits = 0;
    for (sidx = -1; sidx < m->nstates && !fits; sidx++) {
      const unsigned *state = sidx < 0 ? m->cur : m->states[sidx];
      fits = 1;
      for (i = 0; i < rs.n && fits; i++) {
        unsigned serial = 0;
        if (rs.v[i].index >= FMAX ||
            sscanf(rs.v[i].key, "k%*u-%u", &serial) != 1 ||
            state[rs.v[i].index] != serial)
          fits = 0;
      }
    }
    if (!fits) {
      fprintf(stderr, "%s: the log mixes entries of different states\n", what);
      bad++;
    }
  }
  if (st.base_index < m->min_base || st.last_index < m->acked) {
    fprintf(stderr,
            "%s: log holds (%llu, %llu]; durable was %llu, base at "
            "least %llu\n",
            what, (unsigned long long)st.base_index,
            (unsigned long long)st.last_index, (unsigned long long)m->acked,
            (unsigned long long)m->min_base);
    bad++;
  }
  for (i = 0; i < rs.n; i++) {
    const lkvnet_entry *e = &rs.v[i];
    unsigned serial = 0;
    char k[48], v[128];
    int j, known = 0;
    size_t vl;
    if (e->index >= FMAX || e->klen >= sizeof k ||
        sscanf(e->key, "k%*u-%u", &serial) != 1) {
      bad++;
      continue;
    }
    fkey(k, sizeof k, e->index, serial);
    vl = fval(v, sizeof v, serial);
    if (e->klen != strlen(k) || memcmp(e->key, k, e->klen) != 0 ||
        e->vlen != vl || memcmp(e->val, v, vl) != 0) {
      fprintf(stderr, "%s: entry %llu is not what any append wrote\n", what,
              (unsigned long long)e->index);
      bad++;
      continue;
    }
    for (j = 0; j < m->nver[e->index]; j++)
      if (m->ver[e->index][j] == serial) known = 1;
    if (!known || (e->index <= m->acked && serial != m->cur[e->index])) {
      fprintf(stderr,
              "%s: entry %llu holds serial %u (%s; durable %llu, "
              "current %u)\n",
              what, (unsigned long long)e->index, serial,
              known ? "an old version" : "never appended there",
              (unsigned long long)m->acked, m->cur[e->index]);
      bad++;
    }
  }
  close_log(r);
  recs_free(&rs);
  if (bad) fprintf(stderr, "%s: %d problem(s)\n", what, bad);
  CHECK(bad == 0);
}

/* 14. a read that fails at open, past the first chunk of a large log,
 * fails the open (LKV_IOERROR) and cuts nothing: it is not a torn tail */
static void test_read_failure(void) {
  char dir[256], path[512];
  static char val[100 * 1024];
  lkv_faultenv *f = lkv_faultenv_new();
  lkvnet_rlog *r = NULL;
  lkv_err err = {0};
  Recs rs = {0};
  long long sz;
  int i, rc;
  if (f == NULL || make_fault_dir(dir, sizeof dir) != 0) {
    lkv_faultenv_free(f);
    return;
  }
  memset(val, 'v', sizeof val);
  r = open_new_log(dir, path, sizeof path);
  for (i = 1; r != NULL && i <= 40; i++) /* 4 MiB: several chunks */
    CHECK(app(r, 1, LKVNET_OP_SET, "k", 1, val, sizeof val) == (uint64_t)i);
  close_log(r);
  sz = file_size(path);
  CHECK(sz > 3 * 1024 * 1024);
  for (i = 1; i <= 20; i++) {
    r = NULL;
    lkv_faultenv_fail(f, LKV_FOP_READ, (uint64_t)i, EIO, LKVNET_RLOG_FILE, 0);
    rc = lkvnet_rlog_open(dir, lkv_faultenv_env(f), -1, NULL, NULL, &r, &err);
    if (lkv_faultenv_fired(f) == 0) { /* past the open's last read */
      CHECK_OK(rc, &err);
      close_log(r);
      break;
    }
    CHECK(rc == LKV_IOERROR && r == NULL && strstr(err.msg, "read") != NULL);
    if (r != NULL) close_log(r);
    CHECK(file_size(path) == sz); /* nothing cut */
  }
  CHECK(i > 3); /* the open read the log in several chunks */
  lkv_faultenv_clear(f);
  r = open_log(dir, &rs);
  CHECK(rs.n == 40);
  close_log(r);
  recs_free(&rs);
  lkv_faultenv_free(f);
  rmrf(dir);
}

/* The hook of test 15: every fsync waits at the gate (appends then all
 * land before the syncer's first, failing, sync). */
static void sync_gate_hook(void *ctx, int op, const char *path) {
  Gate *g = ctx;
  (void)path;
  if (op != LKV_FOP_SYNC) return;
  pthread_mutex_lock(&g->mu);
  while (!g->open) pthread_cond_wait(&g->cv, &g->mu);
  pthread_mutex_unlock(&g->mu);
}

/* 15. what a process that stopped (here: a log stuck on a failed sync)
 * left unsynced is synced by the next open before the log calls it
 * durable: a power loss after that open keeps it */
static void test_open_syncs(void) {
  char dir[256];
  lkv_faultenv *f = lkv_faultenv_new();
  const lkv_env *env = f != NULL ? lkv_faultenv_env(f) : NULL;
  lkvnet_rlog *r = NULL;
  lkv_err err = {0};
  Recs rs = {0};
  Gate gate;
  int i;
  if (f == NULL || make_fault_dir(dir, sizeof dir) != 0) {
    lkv_faultenv_free(f);
    return;
  }
  gate_init(&gate);
  CHECK_OK(lkvnet_rlog_open(dir, env, -1, NULL, NULL, &r, &err), &err);
  lkv_faultenv_fail(f, LKV_FOP_SYNC, 1, EIO, LKVNET_RLOG_FILE,
                    LKV_FAULT_STICKY);
  /* the syncer may wake after the first append: its failing sync would
   * then refuse the later ones, so every sync waits for the fifth */
  lkv_faultenv_set_hook(f, sync_gate_hook, &gate);
  for (i = 1; r != NULL && i <= 5; i++)
    CHECK(app(r, 1, LKVNET_OP_SET, "k", 1, "v", 1) == (uint64_t)i);
  gate_open(&gate);
  for (i = 0; r != NULL && i < 10000 && lkvnet_rlog_error(r, NULL) == LKV_OK;
       i++)
    sleep_ms(1);
  CHECK(r != NULL && lkvnet_rlog_durable_index(r) == 0);
  if (r != NULL) CHECK(lkvnet_rlog_close(r, &err) == LKV_IOERROR);
  CHECK(lkv_faultenv_unsynced_bytes(f) > 0);
  lkv_faultenv_set_hook(f, NULL, NULL);
  lkv_faultenv_clear(f);
  r = NULL;
  CHECK_OK(lkvnet_rlog_open(dir, env, -1, NULL, NULL, &r, &err), &err);
  CHECK(r != NULL && lkvnet_rlog_durable_index(r) == 5);
  lkv_faultenv_crash(f); /* the machine stops: no close can sync them */
  if (r != NULL) (void)lkvnet_rlog_close(r, &err);
  CHECK_OK(lkv_faultenv_power_loss(f, LKV_LOSS_DROP, 1, &err), &err);
  r = open_log(dir, &rs);
  CHECK(rs.n == 5);
  close_log(r);
  recs_free(&rs);
  lkv_faultenv_free(f);
  gate_destroy(&gate);
  rmrf(dir);
}

/* One run of test 20: entries 1..10 of term 1 durable, a conflict cut
 * after 5, entries 6..14 of term 2 appended (every frame the same size,
 * so old and new frames line up) and never synced, then the power goes
 * (mode, seed). The log that comes back must open and hold 1..5 and then
 * only new entries: the cut was durable when truncate returned, so no old
 * entry past it can return, alone or ahead of new ones. Returns 0 when it
 * held. */
static int cut_then_power_loss(int mode, uint64_t seed) {
  char dir[256], k[16], v[16];
  lkv_faultenv *f = lkv_faultenv_new();
  const lkv_env *env = f != NULL ? lkv_faultenv_env(f) : NULL;
  lkvnet_rlog *r = NULL;
  lkv_err err = {0};
  Recs rs = {0};
  Gate gate;
  uint64_t i;
  int bad = 0;
  if (f == NULL || make_fault_dir(dir, sizeof dir) != 0) {
    lkv_faultenv_free(f);
    return 1;
  }
  gate_init(&gate);
  CHECK_OK(lkvnet_rlog_open(dir, env, -1, NULL, NULL, &r, &err), &err);
  for (i = 1; r != NULL && i <= 10; i++) {
    snprintf(k, sizeof k, "key%04llu", (unsigned long long)i);
    snprintf(v, sizeof v, "old-val%04llu", (unsigned long long)i);
    CHECK(app(r, 1, LKVNET_OP_SET, k, 7, v, 11) == i);
  }
  if (r != NULL) {
    CHECK(wait_durable(r, 10));
    CHECK_OK(lkvnet_rlog_truncate(r, 5, &err), &err);
    /* from here nothing more is synced: the syncer waits at the gate */
    lkv_faultenv_set_hook(f, sync_gate_hook, &gate);
    for (i = 6; i <= 14; i++) {
      lkvnet_entry e;
      snprintf(k, sizeof k, "key%04llu", (unsigned long long)i);
      snprintf(v, sizeof v, "new-val%04llu", (unsigned long long)i);
      e = mk(2, i, LKVNET_OP_SET, k, 7, v, 11);
      CHECK_OK(lkvnet_rlog_append_entry(r, &e, &err), &err);
    }
    lkv_faultenv_crash(f); /* the machine stops; the syncer's sync fails */
    gate_open(&gate);
    (void)lkvnet_rlog_close(r, &err);
  }
  lkv_faultenv_set_hook(f, NULL, NULL);
  CHECK_OK(lkv_faultenv_power_loss(f, (lkv_loss_mode)mode, seed, &err), &err);
  r = NULL;
  err.msg[0] = '\0';
  if (lkvnet_rlog_open(dir, NULL, -1, record, &rs, &r, &err) != LKV_OK) {
    fprintf(stderr, "cut, power loss (mode %d, seed %llu): reopen: %s\n", mode,
            (unsigned long long)seed, err.msg);
    bad++;
  } else {
    if (rs.n < 5) bad++;
    for (i = 0; i < rs.n; i++) {
      const lkvnet_entry *e = &rs.v[i];
      int want_old = i < 5;
      if (e->index != i + 1 || e->vlen != 11 ||
          memcmp(e->val, want_old ? "old" : "new", 3) != 0 ||
          e->term != (want_old ? 1u : 2u)) {
        fprintf(stderr,
                "cut, power loss (mode %d, seed %llu): entry %llu of term "
                "%llu holds %.11s\n",
                mode, (unsigned long long)seed, (unsigned long long)e->index,
                (unsigned long long)e->term, e->val);
        bad++;
      }
    }
    close_log(r);
  }
  recs_free(&rs);
  gate_destroy(&gate);
  lkv_faultenv_free(f);
  rmrf(dir);
  return bad;
}

/* 20. a conflict cut is durable before truncate returns: power losses
 * after the cut and the new entries written over the cut region (every
 * kind of loss that keeps part of what was written, 24 seeds each) bring
 * back neither the cut entries nor a mix of old and new ones (which the
 * chain would refuse at open). */
static void test_cut_power_loss(void) {
  int mode, bad = 0;
  uint64_t seed;
  for (mode = LKV_LOSS_PARTIAL; mode <= LKV_LOSS_RANDOM; mode++)
    for (seed = 1; seed <= 24; seed++)
      bad += cut_then_power_loss(mode, seed) != 0;
  CHECK(bad == 0);
}

/* 22. a version 1 log's rewrite as version 2 at open, failed at each of
 * its calls in turn (create, write, fdatasync, rename, directory sync) or
 * cut short by a power loss there: the open fails (an io error, never a
 * log half upgraded), and a later open without faults finds every entry,
 * in version 2 */
static void test_v1_upgrade_faults(void) {
  static const int ops[] = {LKV_FOP_CREATE, LKV_FOP_WRITE, LKV_FOP_SYNC,
                            LKV_FOP_RENAME, LKV_FOP_SYNCDIR};
  unsigned char buf[2048];
  size_t n = LKVNET_RLOG_HEADER_SIZE, k;
  uint64_t i;
  int runs = 0;
  v1_header(buf, 0, 0);
  for (i = 1; i <= 20; i++) {
    char key[16];
    lkvnet_entry e;
    snprintf(key, sizeof key, "v1-%llu", (unsigned long long)i);
    e = mk(1 + i / 8, i, LKVNET_OP_SET, key, strlen(key), "val", 3);
    n += v1_frame(buf + n, &e);
  }
  for (k = 0; k < 2 * sizeof ops / sizeof ops[0]; k++) {
    int op = ops[k % (sizeof ops / sizeof ops[0])], loss = k >= 5;
    char dir[256], path[512];
    lkv_faultenv *f = lkv_faultenv_new();
    lkvnet_rlog *r = NULL;
    lkv_err err = {0};
    Recs rs = {0};
    int fd, rc;
    if (f == NULL || make_fault_dir(dir, sizeof dir) != 0) {
      lkv_faultenv_free(f);
      CHECK(0);
      return;
    }
    log_path(path, sizeof path, dir, LKVNET_RLOG_FILE);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0 && write(fd, buf, n) == (ssize_t)n && fsync(fd) == 0);
    if (fd >= 0) close(fd);
    /* the upgrade's calls, and only theirs: the open's own sync of the
     * version 1 file comes first, so its nth sync is the second */
    lkv_faultenv_fail(f, op, op == LKV_FOP_SYNC ? 2 : 1, EIO, dir, 0);
    rc = lkvnet_rlog_open(dir, lkv_faultenv_env(f), -1, NULL, NULL, &r, &err);
    if (lkv_faultenv_fired(f) != 1) fprintf(stderr, "op %d: not hit\n", op);
    CHECK(lkv_faultenv_fired(f) == 1);
    CHECK(rc == LKV_IOERROR && r == NULL && err.msg[0] != '\0');
    if (r != NULL) close_log(r);
    if (loss) {
      lkv_faultenv_crash(f);
      CHECK_OK(lkv_faultenv_power_loss(f, LKV_LOSS_RANDOM, k, &err), &err);
    }
    lkv_faultenv_clear(f);
    r = open_log(dir, &rs);
    CHECK(rs.n == 20 && rs.v != NULL && rs.v[19].index == 20);
    close_log(r);
    {
      unsigned char h[12];
      fd = open(path, O_RDONLY);
      CHECK(fd >= 0 && read(fd, h, sizeof h) == (ssize_t)sizeof h && h[8] == 2);
      if (fd >= 0) close(fd);
    }
    recs_free(&rs);
    lkv_faultenv_free(f);
    rmrf(dir);
    runs++;
  }
  CHECK(runs == 10);
}

/* 23. the join mark (hardstate.h): its set, and its clear, with each of
 * their calls failed in turn, then the power lost (everything not synced
 * gone): a set that returned LKV_OK left a mark that is there after the
 * loss, a clear that did left none; a failed call says so (an io error
 * with a message), never LKV_OK */
static void test_join_mark_faults(void) {
  int clear, op, runs = 0;
  for (clear = 0; clear < 2; clear++) {
    for (op = 0; op < LKV_FOP_COUNT; op++) {
      uint64_t nth;
      for (nth = 1;; nth++) {
        char dir[256];
        lkv_faultenv *f = lkv_faultenv_new();
        const lkv_env *env = f ? lkv_faultenv_env(f) : NULL;
        lkv_err err = {0};
        int present = -1, rc, fired;
        if (f == NULL || make_fault_dir(dir, sizeof dir) != 0) {
          lkv_faultenv_free(f);
          CHECK(0);
          return;
        }
        if (clear) CHECK_OK(lkvnet_joinmark_set(dir, env, &err), &err);
        lkv_faultenv_fail(f, op, nth, EIO, NULL, 0);
        rc = clear ? lkvnet_joinmark_clear(dir, env, &err)
                   : lkvnet_joinmark_set(dir, env, &err);
        fired = lkv_faultenv_fired(f) > 0;
        if (!fired) CHECK(rc == LKV_OK);
        if (rc != LKV_OK) CHECK(rc == LKV_IOERROR && err.msg[0] != '\0');
        lkv_faultenv_crash(f);
        CHECK_OK(lkv_faultenv_power_loss(f, LKV_LOSS_DROP, nth, &err), &err);
        CHECK_OK(lkvnet_joinmark_get(dir, NULL, &present, &err), &err);
        if (rc == LKV_OK && present != !clear)
          fprintf(stderr,
                  "join mark %s, %s call %llu failed: %s after a "
                  "power loss\n",
                  clear ? "clear" : "set", lkv_fault_op_name(op),
                  (unsigned long long)nth, present ? "there" : "gone");
        if (rc == LKV_OK) CHECK(present == !clear);
        lkv_faultenv_free(f);
        rmrf(dir);
        runs++;
        if (!fired) break; /* past the calls of this kind */
      }
    }
  }
  CHECK(runs > 2 * LKV_FOP_COUNT);
  printf("rlog: join mark, %d runs\n", runs);
}

/* 12. every call kind failed in turn: the nth call of the kind (n = 1, 2,
 * ... until the workload makes fewer) fails once with EIO (writes: with
 * ENOSPC, half of them landing). */
static void test_fault_walk(void) {
  static const struct {
    int op, err, flags;
  } kinds[] = {
      {LKV_FOP_OPEN, EIO, 0},     {LKV_FOP_CREATE, EIO, 0},
      {LKV_FOP_CLOSE, EIO, 0},    {LKV_FOP_READ, EIO, 0},
      {LKV_FOP_WRITE, EIO, 0},    {LKV_FOP_WRITE, ENOSPC, LKV_FAULT_SHORT},
      {LKV_FOP_SYNC, EIO, 0},     {LKV_FOP_SIZE, EIO, 0},
      {LKV_FOP_TRUNCATE, EIO, 0}, {LKV_FOP_RENAME, EIO, 0},
      {LKV_FOP_UNLINK, EIO, 0},   {LKV_FOP_SYNCDIR, EIO, 0},
  };
  size_t k;
  int runs = 0, fired = 0;
  for (k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
    uint64_t nth;
    for (nth = 1; nth < 1000; nth++) {
      char dir[256], what[96];
      lkv_faultenv *f = lkv_faultenv_new();
      Model *m = calloc(1, sizeof *m);
      uint64_t hit;
      if (f == NULL || m == NULL || make_fault_dir(dir, sizeof dir) != 0) {
        CHECK(0);
        lkv_faultenv_free(f);
        free(m);
        return;
      }
      lkv_faultenv_fail(f, kinds[k].op, nth, kinds[k].err, dir, kinds[k].flags);
      f_workload(m, dir, lkv_faultenv_env(f));
      hit = lkv_faultenv_fired(f);
      snprintf(what, sizeof what, "%s #%llu%s", lkv_fault_op_name(kinds[k].op),
               (unsigned long long)nth,
               kinds[k].flags & LKV_FAULT_SHORT ? " (short)" : "");
      /* a fault never goes unreported; but a close of a descriptor whose
       * file is synced and replaced (the old log after a rewrite or a
       * compaction) loses nothing, and the log does not report it */
      if (hit && m->failures == 0 && kinds[k].op != LKV_FOP_CLOSE) {
        fprintf(stderr, "%s: the fault went unreported\n", what);
        CHECK(0);
      }
      f_check(m, dir, what);
      runs++;
      fired += hit > 0;
      lkv_faultenv_free(f);
      free(m);
      rmrf(dir);
      if (hit == 0) break; /* past the workload's last call of the kind */
    }
  }
  printf("rlog: fault walk: %d runs, %d with a fault\n", runs, fired);
}

/* The hook of the power-loss loop: the machine stops at the nth call. */
typedef struct Stop {
  lkv_faultenv *f;
  pthread_mutex_t mu;
  uint64_t calls, at;
} Stop;

static void stop_hook(void *ctx, int op, const char *path) {
  Stop *st = ctx;
  int now;
  (void)op;
  (void)path;
  pthread_mutex_lock(&st->mu);
  now = ++st->calls == st->at;
  pthread_mutex_unlock(&st->mu);
  if (now) lkv_faultenv_crash(st->f);
}

/* One power loss: the workload runs until the machine stops at call `at`
 * (every change after it fails), the files are rolled back as a power
 * loss in `mode` could leave them, and a reopen must hold what the log
 * called durable. */
static void power_loss_at(uint64_t at, uint64_t total, int mode,
                          uint64_t seed) {
  char dir[256], what[96];
  lkv_faultenv *f = lkv_faultenv_new();
  Model *m = calloc(1, sizeof *m);
  Stop st;
  lkv_err err = {0};
  if (f == NULL || m == NULL || make_fault_dir(dir, sizeof dir) != 0) {
    CHECK(0);
    lkv_faultenv_free(f);
    free(m);
    return;
  }
  memset(&st, 0, sizeof st);
  st.f = f;
  st.at = at;
  pthread_mutex_init(&st.mu, NULL);
  lkv_faultenv_set_hook(f, stop_hook, &st);
  f_workload(m, dir, lkv_faultenv_env(f));
  lkv_faultenv_set_hook(f, NULL, NULL);
  CHECK_OK(lkv_faultenv_power_loss(f, (lkv_loss_mode)mode, seed, &err), &err);
  snprintf(what, sizeof what,
           "power loss at call %llu of %llu (mode %d, "
           "seed %llu)",
           (unsigned long long)at, (unsigned long long)total, mode,
           (unsigned long long)seed);
  f_check(m, dir, what);
  pthread_mutex_destroy(&st.mu);
  lkv_faultenv_free(f);
  free(m);
  rmrf(dir);
}

/* 13. power losses: at every call of the workload in turn, once losing
 * everything unsynced and once keeping a random part of it (partial,
 * torn or either), then LKV_RLOG_POWER_CYCLES more at random calls
 * (default 0; the crash test's habit: more cycles, more confidence). */
static void test_power_loss(void) {
  const char *env_n = getenv("LKV_RLOG_POWER_CYCLES");
  int extra = env_n != NULL ? atoi(env_n) : 0, c, runs = 0;
  uint64_t total = 0, at, seed = 0x5eed;
  if (lkv_test_failures > 0) {
    /* a log already found broken may never sync again once the machine
     * stops: each cycle would wait out its deadlines */
    fprintf(stderr, "rlog: power losses skipped: earlier checks failed\n");
    return;
  }
  /* a clean run first: how many calls the workload makes */
  {
    char dir[256];
    lkv_faultenv *f = lkv_faultenv_new();
    Model *m = calloc(1, sizeof *m);
    if (f != NULL && m != NULL && make_fault_dir(dir, sizeof dir) == 0) {
      lkv_err err = {0};
      f_workload(m, dir, lkv_faultenv_env(f));
      total = lkv_faultenv_calls(f, LKV_FOP_ANY);
      CHECK(m->failures == 0);
      /* and the power goes once all is done: the term and the log's
       * last state must have been made durable, names included */
      CHECK_OK(lkv_faultenv_power_loss(f, LKV_LOSS_DROP, 1, &err), &err);
      f_check(m, dir, "clean run, then a power loss");
      rmrf(dir);
    }
    lkv_faultenv_free(f);
    free(m);
  }
  CHECK(total > 50);
  for (at = 1; at <= total; at++) {
    power_loss_at(at, total, LKV_LOSS_DROP, at);
    power_loss_at(at, total, 1 + (int)(at % 3), at);
    runs += 2;
  }
  for (c = 0; c < extra && total > 0; c++) {
    uint64_t z = lkv_splitmix64(&seed);
    power_loss_at(1 + z % total, total, (int)((z >> 40) % 4), z);
    runs++;
  }
  printf("rlog: %d power losses (%llu calls in the workload)\n", runs,
         (unsigned long long)total);
}

int main(void) {
  test_write_failure(0);
  test_write_failure(256);
  test_fault_walk();
  test_power_loss();
  test_read_failure();
  test_open_syncs();
  test_cut_power_loss();
  test_v1_upgrade_faults();
  test_join_mark_faults();
  TEST_MAIN_END();
}
