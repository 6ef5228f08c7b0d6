/* rlog_compact_test.c - compaction of the replication log: rewrite
 * behind a snapshot and a follower's reset (test 6, rlog.c), and a
 * compaction in the background while the owner goes on appending (test
 * 11, rlog_compact.c). The helpers are rlog_test_util.h. Each test runs
 * in its own directory under /tmp. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "rlog.h"
#include "rlog_test_util.h"
#include "test.h"

/* Both tests start from a log in the new scratch directory dir holding
 * key001 .. key100, the first 50 in term 1 and the rest in term 3, all
 * durable; path gets the log file's name and tmp the name of the file a
 * compaction writes. NULL, the failure counted, when it does not open. */
static lkvnet_rlog *open_hundred(const char *dir, char *path, size_t pn,
                                 char *tmp, size_t tn) {
  lkvnet_rlog *r = open_new_log(dir, path, pn);
  char k[16];
  uint64_t i;
  snprintf(tmp, tn, "%s.tmp", path);
  if (r == NULL) return NULL;
  for (i = 1; i <= 100; i++) {
    snprintf(k, sizeof k, "key%03llu", (unsigned long long)i);
    CHECK(app(r, i <= 50 ? 1 : 3, LKVNET_OP_SET, k, 6, k, 6) == i);
  }
  CHECK(wait_durable(r, 100));
  return r;
}

/* The base and last index of the log r, when it opened. */
static void check_bounds(lkvnet_rlog *r, uint64_t base, uint64_t last) {
  lkvnet_rlog_stats st;
  if (r == NULL) return;
  lkvnet_rlog_stats_get(r, &st);
  if (st.base_index != base || st.last_index != last)
    fprintf(stderr, "log bounds %llu .. %llu, want %llu .. %llu\n",
            (unsigned long long)st.base_index,
            (unsigned long long)st.last_index, (unsigned long long)base,
            (unsigned long long)last);
  CHECK(st.base_index == base && st.last_index == last);
}

/* 6. rewrite: compaction behind a snapshot, and a follower's reset */
static void test_rewrite(void) {
  char dir[] = "/tmp/lkv_rlog_test_XXXXXX", path[512], tmp[600], k[16];
  lkvnet_rlog *r;
  lkvnet_rlog_stats st;
  lkv_err err = {0};
  Recs rs = {0};
  uint64_t i, t, t60 = 0, to;
  unsigned char *buf = NULL;
  size_t len, off, n;
  long long expect_size;
  lkvnet_entry e;
  char why[256];
  if (make_dir(dir) != 0) return;
  r = open_hundred(dir, path, sizeof path, tmp, sizeof tmp);
  if (r == NULL) goto out;
  CHECK(lkvnet_rlog_term_at(r, 60, &t60) == LKV_OK && t60 == 3);
  /* 21. a base term that is not the term of the entry at the base: the
   * first kept frame names that entry's term, and the open would refuse
   * the chain; refused, the log as it was (a base past the end, as a
   * snapshot install's, may have any term: tested below) */
  expect_size = file_size(path);
  CHECK(lkvnet_rlog_rewrite(r, 60, t60 + 1, &err) == LKV_INVALID);
  CHECK(strstr(err.msg, "that entry's term is 3") != NULL);
  CHECK(lkvnet_rlog_compact_begin(r, 60, t60 + 1, 100, NULL, NULL, &err) ==
        LKV_INVALID);
  CHECK(lkvnet_rlog_compacting(r) == 0 && !exists(tmp));
  CHECK(file_size(path) == expect_size);
  check_bounds(r, 0, 100);
  CHECK_OK(lkvnet_rlog_rewrite(r, 60, t60, &err), &err);
  CHECK(!exists(tmp));
  lkvnet_rlog_stats_get(r, &st);
  CHECK(st.base_index == 60 && st.base_term == 3);
  CHECK(st.last_index == 100 && st.last_term == 3 && st.durable_index == 100);
  CHECK(lkvnet_rlog_term_at(r, 59, &t) == LKV_NOTFOUND);
  CHECK(lkvnet_rlog_term_at(r, 1, &t) == LKV_NOTFOUND);
  CHECK(lkvnet_rlog_term_at(r, 60, &t) == LKV_OK && t == 3);
  CHECK(lkvnet_rlog_term_at(r, 61, &t) == LKV_OK && t == 3);
  CHECK(lkvnet_rlog_term_at(r, 100, &t) == LKV_OK && t == 3);
  CHECK(lkvnet_rlog_term_at(r, 101, &t) == LKV_NOTFOUND);
  /* the file holds the header and entries 61 .. 100 */
  {
    lkvnet_entry w = mk(3, 61, LKVNET_OP_SET, "key061", 6, "key061", 6);
    expect_size =
        LKVNET_RLOG_HEADER_SIZE + 40 * (long long)lkvnet_rlog_frame_size(&w);
    CHECK(file_size(path) == expect_size);
  }

  /* read from 61 works, from 60 (the base) does not */
  CHECK_OK(lkvnet_rlog_read(r, 61, SIZE_MAX, &buf, &len, &to, &err), &err);
  CHECK(to == 100);
  off = 0;
  n = 0;
  while (buf && lkvnet_rlog_decode(buf, len, &off, &e, why, sizeof why) == 1) {
    snprintf(k, sizeof k, "key%03llu", (unsigned long long)(61 + n));
    CHECK(e.index == 61 + n && e.term == 3 && e.klen == 6 &&
          memcmp(e.key, k, 6) == 0 && e.vlen == 6 && memcmp(e.val, k, 6) == 0);
    n++;
  }
  CHECK(n == 40 && off == len);
  free(buf);
  buf = NULL;
  CHECK_OK(lkvnet_rlog_read(r, 75, 1, &buf, &len, &to, &err), &err);
  CHECK(to == 75 && len > 0);
  off = 0;
  CHECK(buf && lkvnet_rlog_decode(buf, len, &off, &e, why, sizeof why) == 1 &&
        e.index == 75 && memcmp(e.key, "key075", 6) == 0);
  free(buf);
  buf = NULL;
  CHECK(lkvnet_rlog_read(r, 60, 1000, &buf, &len, &to, &err) == LKV_NOTFOUND);
  free(buf);
  buf = NULL;
  CHECK(lkvnet_rlog_read(r, 1, 1000, &buf, &len, &to, &err) == LKV_NOTFOUND);
  free(buf);
  buf = NULL;

  /* truncate within the new bounds only; rewrite never goes backwards */
  CHECK(lkvnet_rlog_truncate(r, 59, &err) == LKV_INVALID);
  CHECK(lkvnet_rlog_rewrite(r, 10, 1, &err) == LKV_INVALID);
  CHECK(file_size(path) == expect_size);

  /* appends continue at 101 */
  CHECK(app(r, 4, LKVNET_OP_SET, "key101", 6, "key101", 6) == 101);
  CHECK(wait_durable(r, 101));
  close_log(r);

  r = open_log(dir, &rs);
  if (r == NULL) goto out;
  CHECK(rs.n == 41);
  for (i = 0; i < rs.n && i < 41; i++) {
    snprintf(k, sizeof k, "key%03llu", (unsigned long long)(61 + i));
    CHECK(rs.v[i].index == 61 + i && rs.v[i].term == (i == 40 ? 4u : 3u));
    CHECK(rs.v[i].klen == 6 && memcmp(rs.v[i].key, k, 6) == 0);
  }
  lkvnet_rlog_stats_get(r, &st);
  CHECK(st.base_index == 60 && st.base_term == 3 && st.last_index == 101);
  CHECK(st.last_term == 4 && st.dropped_bytes == 0);
  CHECK(lkvnet_rlog_term_at(r, 60, &t) == LKV_OK && t == 3);
  CHECK(lkvnet_rlog_term_at(r, 59, &t) == LKV_NOTFOUND);

  /* a base past the last entry: empty, continuing after it */
  CHECK_OK(lkvnet_rlog_rewrite(r, 500, 7, &err), &err);
  CHECK(!exists(tmp));
  CHECK(file_size(path) == LKVNET_RLOG_HEADER_SIZE);
  lkvnet_rlog_stats_get(r, &st);
  CHECK(st.base_index == 500 && st.base_term == 7);
  CHECK(st.last_index == 500 && st.last_term == 7 && st.durable_index == 500);
  CHECK(lkvnet_rlog_term_at(r, 500, &t) == LKV_OK && t == 7);
  CHECK(lkvnet_rlog_term_at(r, 101, &t) == LKV_NOTFOUND);
  CHECK(lkvnet_rlog_term_at(r, 501, &t) == LKV_NOTFOUND);
  CHECK_OK(lkvnet_rlog_read(r, 501, 1000, &buf, &len, &to, &err), &err);
  CHECK(len == 0 && to == 500);
  free(buf);
  buf = NULL;
  close_log(r);
  recs_free(&rs);

  r = open_log(dir, &rs); /* the empty log survives a reopen */
  if (r == NULL) goto out;
  CHECK(rs.n == 0);
  lkvnet_rlog_stats_get(r, &st);
  CHECK(st.base_index == 500 && st.base_term == 7 && st.last_index == 500);
  CHECK(st.last_term == 7 && st.durable_index == 500);
  CHECK(app(r, 7, LKVNET_OP_SET, "after", 5, "snap", 4) == 501);
  CHECK(wait_durable(r, 501));
  close_log(r);
  r = open_log(dir, &rs);
  CHECK(rs.n == 1 && rs.n > 0 && rs.v[0].index == 501 && rs.v[0].term == 7 &&
        rs.v[0].klen == 5 && memcmp(rs.v[0].key, "after", 5) == 0);
  check_bounds(r, 500, 501);
  /* back to index 0 (a node rebuilding from a leader's whole log): only
   * once the log holds no entry, then empty from 1 on, after a reopen too */
  CHECK(lkvnet_rlog_rewrite(r, 0, 0, &err) == LKV_INVALID);
  check_bounds(r, 500, 501);
  CHECK_OK(lkvnet_rlog_truncate(r, 500, &err), &err);
  CHECK_OK(lkvnet_rlog_rewrite(r, 0, 0, &err), &err);
  CHECK(file_size(path) == LKVNET_RLOG_HEADER_SIZE);
  lkvnet_rlog_stats_get(r, &st);
  CHECK(st.base_index == 0 && st.base_term == 0 && st.last_index == 0);
  CHECK(st.last_term == 0 && st.durable_index == 0);
  CHECK(app(r, 1, LKVNET_OP_SET, "one", 3, "1", 1) == 1);
  CHECK(wait_durable(r, 1));
  close_log(r);
  recs_free(&rs);
  r = open_log(dir, &rs);
  if (r == NULL) goto out;
  CHECK(rs.n == 1 && rs.v[0].index == 1 && rs.v[0].term == 1);
  check_bounds(r, 0, 1);
  close_log(r);
  CHECK(!exists(tmp));
out:
  recs_free(&rs);
  rmrf(dir);
}

/* 11. compaction in the background: the owner goes on appending,
 * reading and cutting entries past the stable index while the copier is
 * held in prepare; a second compaction is refused; the outcome is polled
 * once; the cut log and the appended entries survive a reopen. The prepare
 * waits for a release that comes only after lkvnet_rlog_compact_begin
 * has returned and the appends are made: a compaction that ran on the
 * caller's thread would time out here (and fail the checks) instead. */
/* A thread: open the gate once the copier waits at it, and a little
 * later (the owner is in close by then). */
static void *gate_open_later(void *arg) {
  Gate *g = arg;
  int i, in = 0;
  for (i = 0; i < 10000 && !in; i++) {
    pthread_mutex_lock(&g->mu);
    in = g->entered;
    pthread_mutex_unlock(&g->mu);
    if (!in) sleep_ms(1);
  }
  sleep_ms(50);
  gate_open(g);
  return NULL;
}

static int gate_prepare(void *ctx, lkv_err *err) {
  Gate *g = ctx;
  struct timespec until;
  int fail;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += 10;
  pthread_mutex_lock(&g->mu);
  g->entered = 1;
  pthread_cond_broadcast(&g->cv);
  while (!g->open && !g->timed_out)
    if (pthread_cond_timedwait(&g->cv, &g->mu, &until) != 0) g->timed_out = 1;
  fail = g->fail;
  pthread_mutex_unlock(&g->mu);
  if (fail) return lkv_seterr(err, LKV_IOERROR, "the engine refused");
  return LKV_OK;
}

/* Poll until the compaction reports (at most ~20 s); its outcome. */
static int poll_until_done(lkvnet_rlog *r, lkv_err *err) {
  int i, rc = LKVNET_COMPACT_RUNNING;
  for (i = 0; i < 20000 && rc == LKVNET_COMPACT_RUNNING; i++) {
    rc = lkvnet_rlog_compact_poll(r, err);
    if (rc == LKVNET_COMPACT_RUNNING) sleep_ms(1);
  }
  return rc;
}

static void test_compact_background(void) {
  char dir[] = "/tmp/lkv_rlog_test_XXXXXX", path[512], tmp[600], k[16];
  lkvnet_rlog *r;
  lkvnet_rlog_stats st;
  lkv_err err = {0};
  Recs rs = {0};
  Gate g;
  uint64_t i, t, t60 = 0, to;
  unsigned char *buf = NULL;
  size_t len, off;
  lkvnet_entry e;
  char why[256];
  int entered;
  if (make_dir(dir) != 0) return;
  gate_init(&g);
  r = open_hundred(dir, path, sizeof path, tmp, sizeof tmp);
  if (r == NULL) goto out;
  CHECK(lkvnet_rlog_compact_poll(r, &err) == LKVNET_COMPACT_IDLE);
  CHECK(lkvnet_rlog_compacting(r) == 0);
  CHECK(lkvnet_rlog_term_at(r, 60, &t60) == LKV_OK && t60 == 3);
  CHECK(lkvnet_rlog_compact_begin(r, 60, t60, 101, gate_prepare, &g, &err) ==
        LKV_INVALID);
  CHECK(lkvnet_rlog_compact_begin(r, 60, t60, 59, gate_prepare, &g, &err) ==
        LKV_INVALID);
  CHECK_OK(lkvnet_rlog_compact_begin(r, 60, t60, 80, gate_prepare, &g, &err),
           &err);
  CHECK(lkvnet_rlog_compacting(r) == 1);
  CHECK(lkvnet_rlog_compact_begin(r, 70, 3, 80, gate_prepare, &g, &err) ==
        LKV_BUSY);
  /* held in prepare: the log is the old one, and it takes appends */
  for (i = 101; i <= 120; i++) {
    snprintf(k, sizeof k, "key%03llu", (unsigned long long)i);
    CHECK(app(r, 4, LKVNET_OP_SET, k, 6, k, 6) == i);
  }
  CHECK(wait_durable(r, 120));
  CHECK(lkvnet_rlog_compact_poll(r, &err) == LKVNET_COMPACT_RUNNING);
  CHECK(lkvnet_rlog_base_index(r) == 0);
  CHECK(lkvnet_rlog_term_at(r, 10, &t) == LKV_OK && t == 1);
  CHECK_OK(lkvnet_rlog_read(r, 1, SIZE_MAX, &buf, &len, &to, &err), &err);
  CHECK(to == 120);
  free(buf);
  buf = NULL;
  /* past the stable index, a follower may cut its log meanwhile */
  CHECK_OK(lkvnet_rlog_truncate(r, 110, &err), &err);
  for (i = 111; i <= 115; i++) {
    snprintf(k, sizeof k, "new%03llu", (unsigned long long)i);
    CHECK(app(r, 5, LKVNET_OP_SET, k, 6, k, 6) == i);
  }
  for (i = 0, entered = 0; i < 10000 && !entered; i++) {
    pthread_mutex_lock(&g.mu);
    entered = g.entered;
    pthread_mutex_unlock(&g.mu);
    if (!entered) sleep_ms(1);
  }
  CHECK(entered == 1);
  CHECK(lkvnet_rlog_base_index(r) == 0); /* still: it waits at the gate */
  gate_open(&g);
  CHECK(poll_until_done(r, &err) == LKVNET_COMPACT_DONE);
  CHECK(lkvnet_rlog_compact_poll(r, &err) == LKVNET_COMPACT_IDLE); /* once */
  CHECK(lkvnet_rlog_compacting(r) == 0);
  CHECK(g.timed_out == 0);
  CHECK(!exists(tmp));
  CHECK(wait_durable(r, 115));
  lkvnet_rlog_stats_get(r, &st);
  CHECK(st.base_index == 60 && st.base_term == 3);
  CHECK(st.last_index == 115 && st.last_term == 5 && st.durable_index == 115);
  CHECK(lkvnet_rlog_term_at(r, 59, &t) == LKV_NOTFOUND);
  CHECK(lkvnet_rlog_term_at(r, 60, &t) == LKV_OK && t == 3);
  CHECK(lkvnet_rlog_term_at(r, 101, &t) == LKV_OK && t == 4);
  CHECK(lkvnet_rlog_term_at(r, 111, &t) == LKV_OK && t == 5);
  CHECK(lkvnet_rlog_read(r, 60, 1000, &buf, &len, &to, &err) == LKV_NOTFOUND);
  free(buf);
  buf = NULL;
  CHECK_OK(lkvnet_rlog_read(r, 61, SIZE_MAX, &buf, &len, &to, &err), &err);
  CHECK(to == 115);
  off = 0;
  for (i = 61;
       buf && lkvnet_rlog_decode(buf, len, &off, &e, why, sizeof why) == 1; i++)
    CHECK(e.index == i && memcmp(e.key, i > 110 ? "new" : "key", 3) == 0);
  CHECK(i == 116 && off == len);
  free(buf);
  buf = NULL;
  CHECK(app(r, 5, LKVNET_OP_SET, "key116", 6, "v", 1) == 116);
  close_log(r);

  r = open_log(dir, &rs);
  if (r == NULL) goto out;
  CHECK(rs.n == 56);
  for (i = 0; i < rs.n; i++)
    CHECK(rs.v[i].index == 61 + i && rs.v[i].term == (i < 40   ? 3u
                                                      : i < 50 ? 4u
                                                               : 5u));
  lkvnet_rlog_stats_get(r, &st);
  CHECK(st.base_index == 60 && st.last_index == 116 && st.dropped_bytes == 0);

  /* a cut at or before the stable index waits for the compaction */
  gate_destroy(&g);
  gate_init(&g);
  g.open = 1;
  CHECK(lkvnet_rlog_term_at(r, 100, &t) == LKV_OK);
  CHECK_OK(lkvnet_rlog_compact_begin(r, 100, t, 110, gate_prepare, &g, &err),
           &err);
  CHECK_OK(lkvnet_rlog_truncate(r, 105, &err), &err);
  CHECK(lkvnet_rlog_compacting(r) == 0);
  CHECK(lkvnet_rlog_compact_poll(r, &err) == LKVNET_COMPACT_DONE);
  check_bounds(r, 100, 105);

  /* a failed prepare leaves the log as it was; the next one may try */
  gate_destroy(&g);
  gate_init(&g);
  g.open = 1;
  g.fail = 1;
  CHECK(lkvnet_rlog_term_at(r, 103, &t) == LKV_OK);
  CHECK_OK(lkvnet_rlog_compact_begin(r, 103, t, 105, gate_prepare, &g, &err),
           &err);
  err.msg[0] = '\0';
  CHECK(poll_until_done(r, &err) == LKVNET_COMPACT_FAILED);
  CHECK(strstr(err.msg, "the engine refused") != NULL);
  CHECK(!exists(tmp));
  check_bounds(r, 100, 105);
  CHECK(lkvnet_rlog_error(r, &err) == LKV_OK);
  g.fail = 0;
  /* cut everything: the log continues after its base */
  CHECK(lkvnet_rlog_term_at(r, 105, &t) == LKV_OK);
  CHECK_OK(lkvnet_rlog_compact_begin(r, 105, t, 105, gate_prepare, &g, &err),
           &err);
  CHECK(poll_until_done(r, &err) == LKVNET_COMPACT_DONE);
  /* the copier wrote the space ahead: the append after fits in it */
  CHECK(file_size(path) == LKVNET_RLOG_HEADER_SIZE + LKVNET_RLOG_PREALLOC);
  CHECK(app(r, 6, LKVNET_OP_SET, "k", 1, "v", 1) == 106);
  CHECK(file_size(path) == LKVNET_RLOG_HEADER_SIZE + LKVNET_RLOG_PREALLOC);

  /* close while the copier is held: close waits, the cut is kept */
  gate_destroy(&g);
  gate_init(&g);
  CHECK_OK(lkvnet_rlog_compact_begin(r, 105, t, 106, gate_prepare, &g, &err),
           &err);
  {
    pthread_t th;
    CHECK(pthread_create(&th, NULL, gate_open_later, &g) == 0);
    close_log(r);
    pthread_join(th, NULL);
  }
  CHECK(g.timed_out == 0);
  recs_free(&rs);
  r = open_log(dir, &rs);
  CHECK(rs.n == 1 && rs.v != NULL && rs.v[0].index == 106);
  check_bounds(r, 105, 106);
  close_log(r);
  CHECK(!exists(tmp));
out:
  gate_destroy(&g);
  recs_free(&rs);
  rmrf(dir);
}

int main(void) {
  test_rewrite();
  test_compact_background();
  TEST_MAIN_END();
}
