/* compact_test.c - compaction rules that need tables in chosen levels:
 * the test places them there itself (through the version set, as a
 * trivial move would), so the case is built, not hoped for. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "db_impl.h"
#include "test.h"

static char dir[] = "/tmp/lkv_compact_test_XXXXXX";

/* Move the one table of level `from` to level `to`. */
static void move_table(lkv_db *db, int from, int to) {
  lkv_err err = {0};
  lkv_sv *s = lkv_db_sv(db);
  CHECK(s->v->n[from] == 1);
  if (s->v->n[from] != 1) {
    lkv_sv_unref(s);
    return;
  }
  lkv_fmeta *f = s->v->files[from][0];
  lkv_edit e = {0};
  lkv_fmeta_ref(f);
  CHECK(lkv_edit_add(&e, to, f) == 0 && lkv_edit_del(&e, from, f->number) == 0);
  pthread_mutex_lock(&db->manifest_mu);
  CHECK_OK(lkv_db_log_and_apply(db, &e, 0, NULL, &err), &err);
  pthread_mutex_unlock(&db->manifest_mu);
  lkv_edit_free(&e);
  lkv_sv_unref(s);
}

static int level_of_only_table(lkv_db *db) {
  lkv_sv *s = lkv_db_sv(db);
  int level = -1, n = 0;
  for (int l = 0; l < LKV_MAX_LEVELS; l++)
    if (s->v->n[l]) {
      level = l;
      n += s->v->n[l];
    }
  lkv_sv_unref(s);
  return n == 1 ? level : -1;
}

static void put(lkv_db *db, const char *k, const char *v) {
  lkv_err err = {0};
  CHECK_OK(lkv_db_set(db, k, strlen(k), v, strlen(v), NULL, &err), &err);
}

static void settle(lkv_db *db) {
  for (int i = 0; i < 5000; i++) {
    lkv_stats st;
    lkv_db_stats(db, &st);
    if (!st.compaction_pending) return;
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
  CHECK(!"compaction did not settle");
}

/* A tombstone merged from L0 into L1 must stay while a deeper level (here
 * L6) holds an older value of its key: dropping it would bring "old" back.
 * The merge is real: an L1 table overlaps the tombstone's table, so the
 * compaction is not a trivial move. */
static void tombstone_over_deeper_value(void) {
  lkv_options o;
  lkv_options_init(&o);
  o.max_l0_files = o.l0_slowdown_files = o.l0_stop_files = 1;
  o.sync = LKV_SYNC_NONE;
  lkv_db *db = NULL;
  lkv_err err = {0};
  CHECK_OK(lkv_db_open(dir, &o, &db, &err), &err);
  put(db, "k100", "old");
  CHECK_OK(lkv_db_flush(db, &err), &err);
  int l = level_of_only_table(db);
  CHECK(l > 0);
  move_table(db, l, 6);
  put(db, "k099", "x");
  put(db, "k101", "x");
  CHECK_OK(lkv_db_flush(db, &err), &err); /* overlaps nothing above L6 */
  lkv_sv *s = lkv_db_sv(db);
  int l1 = -1;
  for (int i = 0; i < 6; i++)
    if (s->v->n[i]) l1 = i;
  lkv_sv_unref(s);
  CHECK(l1 > 0);
  move_table(db, l1, 1);
  CHECK_OK(lkv_db_delete(db, "k100", 4, NULL, &err), &err);
  put(db, "k099", "y");
  CHECK_OK(lkv_db_flush(db, &err), &err); /* overlaps L1: into L0, due */
  settle(db);
  lkv_stats st;
  lkv_db_stats(db, &st);
  CHECK(st.compactions >= 1 && st.sstables_per_level[0] == 0);
  lkv_buf v = {0};
  CHECK(lkv_db_get(db, "k100", 4, LKV_SEQ_LATEST, &v, &err) == LKV_NOTFOUND);
  CHECK(lkv_db_get(db, "k099", 4, LKV_SEQ_LATEST, &v, &err) == LKV_OK &&
        v.len == 1 && v.data[0] == 'y');
  lkv_buf_free(&v);
  CHECK_OK(lkv_db_close(db, &err), &err);
  /* and after a reopen, which reads the tables alone */
  CHECK_OK(lkv_db_open(dir, &o, &db, &err), &err);
  CHECK(lkv_db_get(db, "k100", 4, LKV_SEQ_LATEST, &v, &err) == LKV_NOTFOUND);
  lkv_buf_free(&v);
  CHECK_OK(lkv_db_close(db, &err), &err);
}

int main(void) {
  if (mkdtemp(dir) == NULL) {
    perror("mkdtemp");
    return 1;
  }
  tombstone_over_deeper_value();
  rmrf(dir);
  TEST_MAIN_END();
}
