/* db_test.c - end-to-end checks of the db through the public API: writes
 * across many flushes and compactions, reopen, deletes, snapshots,
 * iterators, batches, binary keys. */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lunakv.h"
#include "test.h"

static char dir[] = "/tmp/lkv_db_test_XXXXXX";

static lkv_db *open_small(void) {
  lkv_options o;
  lkv_options_init(&o);
  o.max_memtable_size = 64 * 1024; /* many flushes */
  o.table_size = 64 * 1024;
  o.level1_max_bytes = 256 * 1024;
  o.sync = LKV_SYNC_NONE;
  lkv_db *db = NULL;
  lkv_err err = {0};
  CHECK_OK(lkv_db_open(dir, &o, &db, &err), &err);
  return db;
}

static void key_of(char *k, int i) { snprintf(k, 32, "key%08d", i); }

/* sync=always with concurrent writers: they must share fdatasyncs */
typedef struct gc_arg {
  lkv_db *db;
  int id;
} gc_arg;

static void *gc_writer(void *p) {
  gc_arg *a = p;
  lkv_err err = {0};
  char k[32];
  for (int i = 0; i < 100; i++) {
    snprintf(k, sizeof k, "gc-%d-%d", a->id, i);
    CHECK_OK(lkv_db_set(a->db, k, strlen(k), "v", 1, NULL, &err), &err);
  }
  return NULL;
}

static void group_commit(void) {
  char gdir[] = "/tmp/lkv_gc_test_XXXXXX";
  lkv_options o;
  lkv_options_init(&o);
  o.sync = LKV_SYNC_ALWAYS;
  lkv_db *db = open_fresh(gdir, &o);
  if (db == NULL) return;
  lkv_err err = {0};
  pthread_t th[8];
  gc_arg args[8];
  for (int i = 0; i < 8; i++) {
    args[i].db = db;
    args[i].id = i;
    pthread_create(&th[i], NULL, gc_writer, &args[i]);
  }
  for (int i = 0; i < 8; i++) pthread_join(th[i], NULL);
  lkv_stats st;
  lkv_db_stats(db, &st);
  printf("group commit: 800 writes, %llu fdatasyncs\n",
         (unsigned long long)st.wal_syncs);
  CHECK(st.wal_syncs < 800);
  CHECK(st.seq == 800);
  CHECK_OK(lkv_db_close(db, &err), &err);
  rmrf(gdir);
}

/* Open .sst files of this process, from /proc/self/fd. */
static int open_tables(void) {
  int n = 0;
  char link[512], target[512];
  for (int fd = 0; fd < 4096; fd++) {
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t len = readlink(link, target, sizeof target - 1);
    if (len <= 0) continue;
    target[len] = 0;
    if (len > 4 && strcmp(target + len - 4, ".sst") == 0) n++;
  }
  return n;
}

/* max_open_files bounds the open tables, however many there are. */
static void table_cache_bound(void) {
  char tdir[] = "/tmp/lkv_tc_test_XXXXXX";
  lkv_options o;
  lkv_options_init(&o);
  o.max_memtable_size = 16 * 1024;
  o.table_size = 4096;
  o.level1_max_bytes = 64 * 1024 * 1024; /* keep many small L1 tables */
  o.max_open_files = 16;
  o.sync = LKV_SYNC_NONE;
  lkv_db *db = open_fresh(tdir, &o);
  if (db == NULL) return;
  lkv_err err = {0};
  lkv_buf v = {0};
  char k[32], val[64];
  const int n = 20000;
  for (int i = 0; i < n; i++) {
    snprintf(k, sizeof k, "tc%07d", (i * 7919) % n);
    int vl = snprintf(val, sizeof val, "v%d", (i * 7919) % n);
    CHECK_OK(lkv_db_set(db, k, strlen(k), val, (size_t)vl, NULL, &err), &err);
  }
  CHECK_OK(lkv_db_compact(db, &err), &err);
  lkv_stats st;
  lkv_db_stats(db, &st);
  int wrong = 0;
  for (int i = 0; i < n; i++) {
    snprintf(k, sizeof k, "tc%07d", i);
    int vl = snprintf(val, sizeof val, "v%d", i);
    if (lkv_db_get(db, k, strlen(k), LKV_SEQ_LATEST, &v, &err) != LKV_OK ||
        v.len != (size_t)vl || memcmp(v.data, val, v.len) != 0)
      wrong++;
  }
  int fds = open_tables();
  printf("table cache: %llu tables, %d open files (max_open_files 16)\n",
         (unsigned long long)st.sstable_count, fds);
  CHECK(st.sstable_count > 40);
  CHECK(wrong == 0);
  CHECK(fds <= 16);
  CHECK_OK(lkv_db_close(db, &err), &err);
  lkv_buf_free(&v);
  rmrf(tdir);
}

typedef struct sync_arg {
  lkv_db *db;
  int rc;
} sync_arg;

static void *sync_writer(void *p) {
  sync_arg *a = p;
  lkv_err err = {0};
  char k[32];
  for (int i = 0; i < 20000 && a->rc == LKV_OK; i++) {
    snprintf(k, sizeof k, "sync-w-%05d", i);
    a->rc = lkv_db_set(a->db, k, strlen(k), "v", 1, NULL, &err);
  }
  return NULL;
}

/* Seek compaction: reads that keep looking past a table (here: the odd
 * keys' table above the even keys' one) get that table compacted away,
 * by point lookups and, through read sampling, by scans. */
static void put_range(lkv_db *db, int from, int step, int n) {
  lkv_err err = {0};
  char k[32], v[100];
  memset(v, 'x', sizeof v);
  for (int i = from; i < n; i += step) {
    key_of(k, i);
    CHECK_OK(lkv_db_set(db, k, strlen(k), v, sizeof v, NULL, &err), &err);
  }
  CHECK_OK(lkv_db_flush(db, &err), &err);
}

static void wait_levels(lkv_db *db, int level, uint64_t want) {
  lkv_stats st;
  for (int i = 0; i < 500; i++) {
    lkv_db_stats(db, &st);
    if (st.sstables_per_level[level] == want) return;
    usleep(10000);
  }
  CHECK(st.sstables_per_level[level] == want);
}

static void seek_compaction(int by_scan) {
  char sdir[] = "/tmp/lkv_seek_test_XXXXXX";
  lkv_options o;
  lkv_options_init(&o);
  o.sync = LKV_SYNC_NONE;
  lkv_db *db = open_fresh(sdir, &o);
  if (db == NULL) return;
  lkv_err err = {0};
  put_range(db, 0, 2, 2000); /* overlaps nothing: placed below L0 */
  put_range(db, 1, 2, 2000); /* covers the same range: one level above */
  lkv_stats st;
  lkv_db_stats(db, &st);
  int upper = st.sstables_per_level[0] ? 0 : 1;
  CHECK(st.sstables_per_level[upper] == 1 && st.sstable_count == 2);
  CHECK(st.seek_compactions == 0);
  if (!by_scan) {
    lkv_buf v = {0};
    char k[32];
    for (int i = 0; i < 1000; i += 2) { /* even keys: the upper table first */
      key_of(k, i);
      CHECK(lkv_db_get(db, k, strlen(k), LKV_SEQ_LATEST, &v, &err) == LKV_OK);
    }
    lkv_buf_free(&v);
  } else {
    /* about one sample per MiB read: ~400 MiB charges the upper table
     * far more than its 100 allowed seeks */
    for (int r = 0; r < 2000; r++) {
      lkv_iter *it;
      CHECK_OK(lkv_iter_new(db, LKV_SEQ_LATEST, &it, &err), &err);
      int n = 0;
      for (lkv_iter_seek_first(it); lkv_iter_valid(it); lkv_iter_next(it)) n++;
      CHECK(n == 2000);
      lkv_iter_free(it);
      lkv_db_stats(db, &st);
      if (st.seek_compactions) break;
    }
  }
  wait_levels(db, upper, 0);
  lkv_db_stats(db, &st);
  CHECK(st.seek_compactions >= 1);
  printf("seek compaction (%s): L%d emptied, %llu seek compactions\n",
         by_scan ? "scans" : "gets", upper,
         (unsigned long long)st.seek_compactions);
  CHECK_OK(lkv_db_close(db, &err), &err);
  rmrf(sdir);
}

/* LKV_WRITE_NO_STALL: an env whose table-file creations wait while the
 * gate is shut keeps every flush from finishing; once the frozen
 * memtables fill their budget a plain write would wait, and a no-stall
 * write must fail at once with LKV_BUSY, write nothing, and succeed once
 * the gate opens. */
static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static int gate_shut;
static lkv_env gate_env;

static int gated_open(const lkv_env *env, const char *path, int flags, int mode,
                      int *fd) {
  const lkv_env *px = lkv_env_posix();
  size_t n = strlen(path);
  (void)env;
  if ((flags & O_CREAT) && n > 4 && strcmp(path + n - 4, ".sst") == 0) {
    pthread_mutex_lock(&gate_mu);
    while (gate_shut) pthread_cond_wait(&gate_cv, &gate_mu);
    pthread_mutex_unlock(&gate_mu);
  }
  return px->open(px, path, flags, mode, fd);
}

static void no_stall(void) {
  char ndir[] = "/tmp/lkv_nostall_test_XXXXXX";
  lkv_options o;
  lkv_err err = {0};
  lkv_batch *b = lkv_batch_new();
  lkv_stats st;
  lkv_buf v = {0};
  char k[32], val[256];
  int i, rc = LKV_OK, busy_at = -1;
  gate_env = *lkv_env_posix();
  gate_env.open = gated_open;
  lkv_options_init(&o);
  o.max_memtable_size = 16 * 1024;
  o.sync = LKV_SYNC_NONE;
  o.env = &gate_env;
  lkv_db *db = open_fresh(ndir, &o);
  if (db == NULL || b == NULL) return;
  memset(val, 'v', sizeof val);
  CHECK(lkv_db_write_opt(db, b, 2, NULL, &err) == LKV_INVALID);
  pthread_mutex_lock(&gate_mu);
  gate_shut = 1;
  pthread_mutex_unlock(&gate_mu);
  for (i = 0; i < 100000 && rc == LKV_OK; i++) {
    snprintf(k, sizeof k, "ns%08d", i);
    lkv_batch_clear(b);
    CHECK_OK(lkv_batch_set(b, k, strlen(k), val, sizeof val, &err), &err);
    rc = lkv_db_write_opt(db, b, LKV_WRITE_NO_STALL, NULL, &err);
    if (rc != LKV_OK) busy_at = i;
  }
  CHECK(rc == LKV_BUSY);
  CHECK(strstr(err.msg, "would wait") != NULL);
  lkv_db_stats(db, &st);
  CHECK(st.stall_refusals == 1 && st.stall_stops == 0 &&
        st.stall_slowdowns == 0);
  /* refused: nothing of it is in the db */
  CHECK(lkv_db_get(db, k, strlen(k), LKV_SEQ_LATEST, &v, &err) == LKV_NOTFOUND);
  /* refused again while the gate is shut, and at once */
  CHECK(lkv_db_write_opt(db, b, LKV_WRITE_NO_STALL, NULL, &err) == LKV_BUSY);
  pthread_mutex_lock(&gate_mu);
  gate_shut = 0;
  pthread_cond_broadcast(&gate_cv);
  pthread_mutex_unlock(&gate_mu);
  for (i = 0; i < 5000; i++) { /* the flushes catch up: taken again */
    if ((rc = lkv_db_write_opt(db, b, LKV_WRITE_NO_STALL, NULL, &err)) !=
        LKV_BUSY)
      break;
    usleep(1000);
  }
  CHECK_OK(rc, &err);
  CHECK(lkv_db_get(db, k, strlen(k), LKV_SEQ_LATEST, &v, &err) == LKV_OK);
  printf(
      "no-stall write refused after %d writes, taken again after the "
      "flushes\n",
      busy_at);
  lkv_buf_free(&v);
  lkv_batch_free(b);
  CHECK_OK(lkv_db_close(db, &err), &err);
  rmrf(ndir);
}

/* lkv_key_compare is the order scans return: bytewise (unsigned), a
 * prefix before its extensions, zero bytes ordinary, past 64 bytes too. */
static void test_key_compare(void) {
  CHECK(lkv_key_compare("a", 1, "ab", 2) < 0);
  CHECK(lkv_key_compare("ab", 2, "b", 1) < 0);
  CHECK(lkv_key_compare("b", 1, "a\xff", 2) > 0);
  CHECK(lkv_key_compare("a\0", 2, "a", 1) > 0);
  CHECK(lkv_key_compare("\x80", 1, "\x7f", 1) > 0);
  CHECK(lkv_key_compare("", 0, "", 0) == 0);
  char x[100], y[100];
  memset(x, 'k', sizeof x);
  memcpy(y, x, sizeof y);
  y[90] = 'l';
  CHECK(lkv_key_compare(x, sizeof x, y, sizeof y) < 0);
  CHECK(lkv_key_compare(y, sizeof y, x, 90) > 0);
  CHECK(lkv_key_compare(x, sizeof x, x, sizeof x) == 0);
}

int main(void) {
  test_key_compare();
  if (mkdtemp(dir) == NULL) return 2;
  lkv_err err = {0};
  lkv_buf v = {0};
  char k[32], val[64];
  const int N = 50000;
  lkv_db *db = open_small();

  /* writes spanning many flushes, read back in a scrambled order */
  for (int i = 0; i < N; i++) {
    key_of(k, i);
    int n = snprintf(val, sizeof val, "value-%d", i);
    CHECK_OK(lkv_db_set(db, k, strlen(k), val, (size_t)n, NULL, &err), &err);
  }
  for (int j = 0; j < N; j++) {
    int i = (int)(((long long)j * 7919) % N);
    key_of(k, i);
    snprintf(val, sizeof val, "value-%d", i);
    int rc = lkv_db_get(db, k, strlen(k), LKV_SEQ_LATEST, &v, &err);
    CHECK(rc == LKV_OK);
    if (rc == LKV_OK)
      CHECK(v.len == strlen(val) && memcmp(v.data, val, v.len) == 0);
    if (rc != LKV_OK) {
      fprintf(stderr, "missing %s rc=%d %s\n", k, rc, err.msg);
      break;
    }
  }
  lkv_stats st;
  lkv_db_stats(db, &st);
  CHECK(st.flushes > 5);
  printf("flushes %llu compactions %llu tables %llu\n",
         (unsigned long long)st.flushes, (unsigned long long)st.compactions,
         (unsigned long long)st.sstable_count);

  /* snapshot + overwrite + delete */
  uint64_t s1 = lkv_db_last_seq(db);
  lkv_snapshot *snap = NULL;
  CHECK_OK(lkv_snapshot_new(db, &snap, &err), &err);
  CHECK_OK(lkv_db_set(db, "key00000001", 11, "new", 3, NULL, &err), &err);
  CHECK_OK(lkv_db_delete(db, "key00000002", 11, NULL, &err), &err);
  CHECK(lkv_db_get(db, "key00000002", 11, LKV_SEQ_LATEST, &v, &err) ==
        LKV_NOTFOUND);
  CHECK(lkv_db_get(db, "key00000002", 11, s1, &v, &err) == LKV_OK);
  CHECK_OK(lkv_db_compact(db, &err), &err);
  CHECK(lkv_db_get(db, "key00000001", 11, s1, &v, &err) == LKV_OK &&
        v.len == 7 && memcmp(v.data, "value-1", 7) == 0);
  CHECK(lkv_db_get(db, "key00000001", 11, LKV_SEQ_LATEST, &v, &err) == LKV_OK &&
        v.len == 3);
  CHECK(lkv_db_get(db, "key00000002", 11, lkv_snapshot_seq(snap), &v, &err) ==
        LKV_OK);
  lkv_snapshot_release(snap);

  /* iterate everything */
  lkv_iter *it = NULL;
  CHECK_OK(lkv_iter_new(db, LKV_SEQ_LATEST, &it, &err), &err);
  int count = 0;
  char prev[64] = "";
  for (lkv_iter_seek_first(it); lkv_iter_valid(it); lkv_iter_next(it)) {
    size_t kl;
    const char *kk = lkv_iter_key(it, &kl);
    CHECK(strncmp(prev, kk, kl) < 0 || count == 0);
    memcpy(prev, kk, kl);
    prev[kl] = 0;
    count++;
  }
  CHECK(lkv_iter_status(it, &err) == LKV_OK);
  CHECK(count == N - 1);
  lkv_iter_free(it);

  /* binary key with zeros, empty value */
  CHECK_OK(lkv_db_set(db, "a\0b", 3, "", 0, NULL, &err), &err);
  CHECK(lkv_db_get(db, "a\0b", 3, LKV_SEQ_LATEST, &v, &err) == LKV_OK &&
        v.len == 0);
  CHECK(lkv_db_get(db, "a\0c", 3, LKV_SEQ_LATEST, &v, &err) == LKV_NOTFOUND);

  /* batch */
  lkv_batch *b = lkv_batch_new();
  lkv_batch_set(b, "bx", 2, "1", 1, &err);
  lkv_batch_delete(b, "key00000003", 11, &err);
  uint64_t bs = 0;
  CHECK_OK(lkv_db_write(db, b, &bs, &err), &err);
  CHECK(bs == lkv_db_last_seq(db));
  lkv_batch_free(b);

  /* lkv_db_sync: durable without a flush, also while others write (the
   * writers switch memtables meanwhile, so frozen WALs get synced too) */
  {
    lkv_stats s0, s9;
    lkv_db_stats(db, &s0);
    pthread_t th;
    sync_arg sa = {db, 0};
    CHECK(pthread_create(&th, NULL, sync_writer, &sa) == 0);
    for (int i = 0; i < 50; i++) CHECK_OK(lkv_db_sync(db, &err), &err);
    pthread_join(th, NULL);
    CHECK(sa.rc == LKV_OK);
    CHECK_OK(lkv_db_sync(db, &err), &err);
    lkv_db_stats(db, &s9);
    CHECK(s9.wal_syncs == s0.wal_syncs + 51);
    CHECK(lkv_db_get(db, "sync-w-19999", 12, LKV_SEQ_LATEST, &v, &err) ==
          LKV_OK);
  }

  /* second open fails on the lock */
  lkv_db *db2 = NULL;
  CHECK(lkv_db_open(dir, NULL, &db2, &err) == LKV_BUSY &&
        strstr(err.msg, "LOCK"));

  CHECK_OK(lkv_db_close(db, &err), &err);

  /* reopen: everything is back */
  db = open_small();
  for (int i = 4; i < N; i += 97) {
    key_of(k, i);
    snprintf(val, sizeof val, "value-%d", i);
    CHECK(lkv_db_get(db, k, strlen(k), LKV_SEQ_LATEST, &v, &err) == LKV_OK &&
          v.len == strlen(val) && memcmp(v.data, val, v.len) == 0);
  }
  CHECK(lkv_db_get(db, "key00000003", 11, LKV_SEQ_LATEST, &v, &err) ==
        LKV_NOTFOUND);
  CHECK(lkv_db_get(db, "bx", 2, LKV_SEQ_LATEST, &v, &err) == LKV_OK);
  CHECK(lkv_db_get(db, "a\0b", 3, LKV_SEQ_LATEST, &v, &err) == LKV_OK &&
        v.len == 0);
  CHECK(lkv_db_last_seq(db) >= bs);
  CHECK_OK(lkv_db_close(db, &err), &err);
  lkv_buf_free(&v);
  rmrf(dir);
  group_commit();
  table_cache_bound();
  seek_compaction(0);
  seek_compaction(1);
  no_stall();
  TEST_MAIN_END();
}
