/* lifecycle_test.c - calls racing close, stats racing writes, and who
 * deletes dead tables. The fault env's hook pauses a thread inside a
 * chosen system call, so each race is forced, not hoped for. Run under
 * ASan (make asan) and TSan (make tsan) as well. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "faultenv.h"
#include "lunakv.h"
#include "test.h"

static char dir[] = "/tmp/lkv_lifecycle_test_XXXXXX";

/* Remove what dir holds, keeping dir: each test starts from it empty. */
static void empty_dir(const char *d) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'/*", d);
  if (system(cmd) != 0) fprintf(stderr, "cleanup of %s failed\n", d);
}

static void nap_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static lkv_db *open_db(lkv_faultenv *fe, lkv_sync_mode sync) {
  lkv_options o;
  lkv_options_init(&o);
  o.block_cache_bytes = 0; /* every read of a block is a pread */
  o.max_memtable_size = 64 * 1024;
  o.sync = sync;
  o.env = fe ? lkv_faultenv_env(fe) : NULL;
  lkv_db *db = NULL;
  lkv_err err = {0};
  CHECK_OK(lkv_db_open(dir, &o, &db, &err), &err);
  return db;
}

static void fill(lkv_db *db, int n) {
  lkv_err err = {0};
  for (int i = 0; i < n; i++) {
    char k[32];
    snprintf(k, sizeof k, "key%06d", i);
    CHECK_OK(lkv_db_set(db, k, strlen(k), "some value", 10, NULL, &err), &err);
  }
}

/* ==== close waits for the calls in flight =============================== */

typedef struct pause_ctx {
  int op;            /* pause inside this kind of call ... */
  const char *match; /* ... on a path containing this */
  atomic_int armed;  /* 1: pause the next such call */
  atomic_int inside; /* a thread is paused there */
  pthread_t paused_thread;
  lkv_db *db;                /* the call stays paused until close begins */
  atomic_int saw_close;      /* it saw close begin */
  atomic_int close_returned; /* set by the closing thread */
  atomic_int left;           /* the paused call went on past the hook */
} pause_ctx;

static void pause_hook(void *ctx, int op, const char *path) {
  pause_ctx *p = ctx;
  if (op != p->op || strstr(path, p->match) == NULL) return;
  int one = 1;
  if (!atomic_compare_exchange_strong(&p->armed, &one, 0)) return;
  p->paused_thread = pthread_self();
  atomic_store(&p->inside, 1);
  /* last_seq answers 0 once close has begun (lunakv.h): hold the call
   * until then (up to 30 s), so close always finds it in flight ... */
  for (int i = 0; i < 30000 && !atomic_load(&p->saw_close); i++) {
    if (lkv_db_last_seq(p->db) == 0) atomic_store(&p->saw_close, 1);
    nap_ms(1);
  }
  /* ... then for one more second, or until close returns: a close that
   * does not wait for the call returns within that second (it has little
   * to do), one that waits cannot return before we do. The db is not
   * touched here: a close that did not wait has freed it. */
  for (int i = 0; i < 1000 && !atomic_load(&p->close_returned); i++) nap_ms(1);
  atomic_store(&p->left, 1);
}

typedef struct call_arg {
  lkv_db *db;
  int write; /* 1: a set, 0: a get */
  int rc;
} call_arg;

static void *one_call(void *p) {
  call_arg *a = p;
  lkv_err err = {0};
  lkv_buf v = {0};
  if (a->write)
    a->rc = lkv_db_set(a->db, "late", 4, "write", 5, NULL, &err);
  else
    a->rc = lkv_db_get(a->db, "key000500", 9, LKV_SEQ_LATEST, &v, &err);
  lkv_buf_free(&v);
  return NULL;
}

/* A get paused in its pread (or a set paused in its fdatasync) when close
 * is called: close must return after the call does, and the call must
 * finish with its answer. Before, close freed the db under the paused
 * call. */
static void close_waits(int write) {
  empty_dir(dir);
  lkv_err err = {0};
  lkv_faultenv *fe = lkv_faultenv_new();
  lkv_db *db = open_db(fe, write ? LKV_SYNC_ALWAYS : LKV_SYNC_NONE);
  fill(db, 1000);
  CHECK_OK(lkv_db_flush(db, &err), &err);
  CHECK_OK(lkv_db_close(db, &err), &err);
  db = open_db(fe, write ? LKV_SYNC_ALWAYS : LKV_SYNC_NONE);

  pause_ctx pc = {.op = write ? LKV_FOP_SYNC : LKV_FOP_READ,
                  .match = write ? "wal.log" : ".sst",
                  .armed = 1,
                  .db = db};
  lkv_faultenv_set_hook(fe, pause_hook, &pc);
  call_arg a = {db, write, -1};
  pthread_t th;
  pthread_create(&th, NULL, one_call, &a);
  while (!atomic_load(&pc.inside)) nap_ms(1);
  int rc = lkv_db_close(db, &err);
  /* the call left the hook before close returned: a.returned would race
   * (the thread sets it only after the engine let go of the call) */
  int returned_first = atomic_load(&pc.left);
  atomic_store(&pc.close_returned, 1);
  pthread_join(th, NULL);
  CHECK(rc == LKV_OK);
  CHECK(atomic_load(&pc.saw_close)); /* the call was in flight at close */
  CHECK(returned_first);             /* close waited for the call */
  CHECK(a.rc == LKV_OK);
  lkv_faultenv_set_hook(fe, NULL, NULL);
  if (write) { /* and the write it let finish is there */
    lkv_buf v = {0};
    db = open_db(fe, LKV_SYNC_NONE);
    CHECK(lkv_db_get(db, "late", 4, LKV_SEQ_LATEST, &v, &err) == LKV_OK);
    lkv_buf_free(&v);
    CHECK_OK(lkv_db_close(db, &err), &err);
  }
  lkv_faultenv_free(fe);
}

/* ==== stats while the write leader grows the WAL ======================== */

static void *writer(void *p) {
  lkv_db *db = p;
  fill(db, 20000);
  return NULL;
}

/* TSan reported the WAL's size read under the mutex while the leader
 * wrote it without: stats now read an atomic. */
static void stats_race(void) {
  empty_dir(dir);
  lkv_db *db = open_db(NULL, LKV_SYNC_BATCH);
  pthread_t th;
  pthread_create(&th, NULL, writer, db);
  uint64_t max_wal = 0;
  for (int i = 0; i < 2000; i++) {
    lkv_stats st;
    lkv_db_stats(db, &st);
    if (st.wal_size_bytes > max_wal) max_wal = st.wal_size_bytes;
  }
  pthread_join(th, NULL);
  lkv_stats st;
  lkv_db_stats(db, &st);
  CHECK(st.wal_size_bytes > 0 && st.seq == 20000);
  lkv_err err = {0};
  CHECK_OK(lkv_db_close(db, &err), &err);
}

/* ==== dead tables are deleted off the read path ========================= */

typedef struct unlink_watch {
  pthread_t reader;
  atomic_int sst_unlinks, by_reader;
} unlink_watch;

static void unlink_hook(void *ctx, int op, const char *path) {
  unlink_watch *w = ctx;
  if (op != LKV_FOP_UNLINK || strstr(path, ".sst") == NULL) return;
  atomic_fetch_add(&w->sst_unlinks, 1);
  if (pthread_equal(pthread_self(), w->reader))
    atomic_fetch_add(&w->by_reader, 1);
}

/* An iterator holds the old tables while a compaction replaces them; the
 * thread that frees it drops their last reference. Their files must go,
 * but not on that thread (a read must not pay for unlinks). */
static void janitor(void) {
  empty_dir(dir);
  lkv_err err = {0};
  lkv_faultenv *fe = lkv_faultenv_new();
  lkv_db *db = open_db(fe, LKV_SYNC_NONE);
  fill(db, 3000);
  CHECK_OK(lkv_db_flush(db, &err), &err);
  fill(db, 3000); /* the same keys again: a second table over the first */
  CHECK_OK(lkv_db_flush(db, &err), &err);
  unlink_watch w;
  w.reader = pthread_self();
  atomic_init(&w.sst_unlinks, 0);
  atomic_init(&w.by_reader, 0);
  lkv_iter *it = NULL;
  CHECK_OK(lkv_iter_new(db, LKV_SEQ_LATEST, &it, &err), &err);
  lkv_iter_seek_first(it);
  CHECK(lkv_iter_valid(it));
  CHECK_OK(lkv_db_compact(db, &err), &err); /* the iterator's tables die */
  lkv_faultenv_set_hook(fe, unlink_hook, &w);
  lkv_iter_free(it); /* the last reference to them */
  for (int i = 0; i < 2000 && atomic_load(&w.sst_unlinks) == 0; i++) nap_ms(1);
  CHECK(atomic_load(&w.sst_unlinks) > 0);
  CHECK(atomic_load(&w.by_reader) == 0);
  lkv_faultenv_set_hook(fe, NULL, NULL);
  CHECK_OK(lkv_db_close(db, &err), &err);
  lkv_faultenv_free(fe);
}

/* ==== a batch becomes visible all at once ============================== */

#define VIS_KEYS 8

typedef struct vis_arg {
  lkv_db *db;
  atomic_int stop;
  long reads, torn;
} vis_arg;

/* Snapshot, then read the batch's keys at it: one batch wrote them all,
 * so they must agree. A reader that sees the batch's sequence number
 * before its inserts are in the memtable sees some keys old, some new. */
static void *vis_reader(void *p) {
  vis_arg *a = p;
  lkv_buf v = {0};
  lkv_err err = {0};
  while (!atomic_load(&a->stop)) {
    lkv_snapshot *s = NULL;
    if (lkv_snapshot_new(a->db, &s, &err)) break;
    char first[32] = "";
    int agree = 1;
    for (int k = 0; k < VIS_KEYS; k++) {
      char key[16];
      snprintf(key, sizeof key, "vis%d", k);
      int rc =
          lkv_db_get(a->db, key, strlen(key), lkv_snapshot_seq(s), &v, &err);
      char got[32] = "";
      if (rc == LKV_OK) snprintf(got, sizeof got, "%.*s", (int)v.len, v.data);
      if (k == 0)
        memcpy(first, got, sizeof first);
      else if (strcmp(first, got) != 0)
        agree = 0;
    }
    lkv_snapshot_release(s);
    a->reads++;
    if (!agree) a->torn++;
  }
  lkv_buf_free(&v);
  return NULL;
}

static void batch_visibility(void) {
  empty_dir(dir);
  lkv_err err = {0};
  lkv_db *db = open_db(NULL, LKV_SYNC_NONE);
  vis_arg a[2];
  pthread_t th[2];
  for (int i = 0; i < 2; i++) {
    a[i].db = db;
    atomic_init(&a[i].stop, 0);
    a[i].reads = a[i].torn = 0;
    pthread_create(&th[i], NULL, vis_reader, &a[i]);
  }
  lkv_batch *b = lkv_batch_new();
  for (int n = 1; n <= 20000; n++) {
    char val[16];
    snprintf(val, sizeof val, "%d", n);
    lkv_batch_clear(b);
    for (int k = 0; k < VIS_KEYS; k++) {
      char key[16];
      snprintf(key, sizeof key, "vis%d", k);
      lkv_batch_set(b, key, strlen(key), val, strlen(val), &err);
    }
    CHECK_OK(lkv_db_write(db, b, NULL, &err), &err);
  }
  lkv_batch_free(b);
  long reads = 0, torn = 0;
  for (int i = 0; i < 2; i++) {
    atomic_store(&a[i].stop, 1);
    pthread_join(th[i], NULL);
    reads += a[i].reads;
    torn += a[i].torn;
  }
  printf("batch visibility: %ld snapshot reads of %d keys, %ld torn\n", reads,
         VIS_KEYS, torn);
  CHECK(reads > 1000);
  CHECK(torn == 0);
  CHECK_OK(lkv_db_close(db, &err), &err);
}

int main(void) {
  if (mkdtemp(dir) == NULL) {
    perror("mkdtemp");
    return 1;
  }
  close_waits(0);
  close_waits(1);
  stats_race();
  janitor();
  batch_visibility();
  rmrf(dir);
  TEST_MAIN_END();
}
