/* rlog_test.c - the replication log (rlog.c): append and replay with
 * binary keys and large values, the byte format of docs/replication.md,
 * term_at, reading and decoding ranges of frames, a follower's
 * append_entry, truncate, torn tails cut, the term file, and the syncer
 * under concurrent appends, truncates and rewrites. Damage in the middle,
 * the chain between frames, version 1 logs and configuration entries are
 * rlog_format_test.c, compaction rlog_compact_test.c, failures and power
 * losses rlog_fault_test.c; the tests keep their numbers across the four. Each
 * test runs in its own directory under /tmp. */
#include "rlog.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "rlog_test_util.h"
#include "test.h"

/* 1. append set/delete/noop, durable, reopen: every entry comes back */
static void test_append_replay(void) {
  char dir[] = "/tmp/lkv_rlog_test_XXXXXX", path[512];
  static const char k1[] = "a\0b", v1[] = "v\0\0x", k2[] = "\0", k3[] = "k\0";
  char k6[256], *big;
  lkvnet_entry want[6];
  lkvnet_rlog *r;
  lkvnet_rlog_stats st;
  Recs rs = {0};
  size_t i;
  const size_t MIB = 1024 * 1024;
  if (make_dir(dir) != 0) return;
  log_path(path, sizeof path, dir, LKVNET_RLOG_FILE);
  big = malloc(MIB);
  for (i = 0; i < MIB; i++) big[i] = (char)(i * 131 + (i >> 9));
  for (i = 0; i < sizeof k6; i++) k6[i] = (char)i;
  want[0] = mk(1, 1, LKVNET_OP_SET, k1, 3, v1, 4);
  want[1] = mk(1, 2, LKVNET_OP_SET, k2, 1, "", 0); /* empty value */
  want[2] = mk(1, 3, LKVNET_OP_DELETE, k3, 2, NULL, 0);
  want[3] = mk(2, 4, LKVNET_OP_NOOP, NULL, 0, NULL, 0);
  want[4] = mk(2, 5, LKVNET_OP_SET, "big", 3, big, MIB);
  want[5] = mk(2, 6, LKVNET_OP_DELETE, k6, sizeof k6, NULL, 0);

  r = open_log(dir, NULL);
  if (r == NULL) goto out;
  /* a new log: its header, then the space written ahead */
  CHECK(file_size(path) == LKVNET_RLOG_HEADER_SIZE + LKVNET_RLOG_PREALLOC);
  for (i = 0; i < 6; i++)
    CHECK(app(r, want[i].term, want[i].op, want[i].key, want[i].klen,
              want[i].val, want[i].vlen) == i + 1);
  CHECK(wait_durable(r, 6));
  lkvnet_rlog_stats_get(r, &st);
  CHECK(st.last_index == 6 && st.last_term == 2 && st.durable_index == 6);
  CHECK(st.base_index == 0 && st.appends == 6 && st.syncs >= 1);
  CHECK(st.dropped_bytes == 0);
  close_log(r);
  {
    long long sz = LKVNET_RLOG_HEADER_SIZE;
    for (i = 0; i < 6; i++) sz += (long long)lkvnet_rlog_frame_size(&want[i]);
    CHECK(file_size(path) == sz);
  }

  /* the bytes on disk are docs/replication.md's format, with a reference
   * CRC-32C (check value of "123456789" first) */
  CHECK(ref_crc(0, (const unsigned char *)"123456789", 9) == 0xE3069283u);
  {
    unsigned char h[LKVNET_RLOG_HEADER_SIZE + 8 + 40 + 8 + 36];
    int fd = open(path, O_RDONLY);
    CHECK(fd >= 0 && read(fd, h, sizeof h) == (ssize_t)sizeof h);
    if (fd >= 0) close(fd);
    CHECK(memcmp(h, "LUNAKVRL", 8) == 0);
    CHECK(le32(h + 8) == 2 && le32(h + 12) == 0);
    CHECK(le64(h + 16) == 0 && le64(h + 24) == 0);
    CHECK(le32(h + 32) == ref_crc(0, h, 32) && le32(h + 36) == 0);
    /* the first frame: length 33 + 3 + 4, crc of length then payload,
     * chained to the header's base term (0); the second chained to the
     * first's term */
    {
      const unsigned char *f = h + 40;
      CHECK(le32(f) == 40);
      CHECK(le32(f + 4) == ref_crc(ref_crc(0, f, 4), f + 8, 40));
      CHECK(le64(f + 8) == 1 && le64(f + 16) == 1 && f[24] == 1);
      CHECK(le32(f + 25) == 3 && le32(f + 29) == 4 && le64(f + 33) == 0);
      CHECK(memcmp(f + 41, k1, 3) == 0 && memcmp(f + 44, v1, 4) == 0);
      f += 48;
      CHECK(le64(f + 8) == want[1].term && le64(f + 16) == 2);
      CHECK(le64(f + 33) == want[0].term);
    }
  }
  /* the worked example: set "a" = "hi", term 1, index 1, the log's
   * first entry (after base term 0): 44 bytes */
  {
    static const unsigned char ex[] = {
        0x24, 0, 0, 0, 0, 0, 0, 0,                 /* length 36, crc below */
        1,    0, 0, 0, 0, 0, 0, 0,                 /* term 1 */
        1,    0, 0, 0, 0, 0, 0, 0,                 /* index 1 */
        1,    1, 0, 0, 0, 2, 0, 0, 0,              /* set, klen 1, vlen 2 */
        0,    0, 0, 0, 0, 0, 0, 0, 'a', 'h', 'i'}; /* prev_term 0 */
    unsigned char got[44], exp[44];
    lkvnet_entry e = mk(1, 1, LKVNET_OP_SET, "a", 1, "hi", 2);
    CHECK(lkvnet_rlog_frame_size(&e) == 44);
    memcpy(exp, ex, 44);
    {
      uint32_t c = ref_crc(ref_crc(0, exp, 4), exp + 8, 36);
      exp[4] = (unsigned char)c;
      exp[5] = (unsigned char)(c >> 8);
      exp[6] = (unsigned char)(c >> 16);
      exp[7] = (unsigned char)(c >> 24);
    }
    lkvnet_rlog_encode(got, &e);
    CHECK(memcmp(got, exp, 44) == 0);
    /* after an entry of term 7 the same frame names it */
    lkvnet_rlog_encode_after(got, &e, 7);
    CHECK(le64(got + 33) == 7 && memcmp(got + 8, exp + 8, 25) == 0);
  }

  r = open_log(dir, &rs);
  if (r == NULL) goto out;
  CHECK(rs.n == 6);
  for (i = 0; i < rs.n && i < 6; i++) CHECK(same_entry(&rs.v[i], &want[i]));
  lkvnet_rlog_stats_get(r, &st);
  CHECK(st.last_index == 6 && st.last_term == 2 && st.durable_index == 6);
  CHECK(st.dropped_bytes == 0 && st.dropped_why[0] == '\0');
  /* appends continue after a reopen */
  CHECK(app(r, 3, LKVNET_OP_SET, "x", 1, "y", 1) == 7);
  check_reopened(r, dir, &rs, 7, 3);
out:
  recs_free(&rs);
  free(big);
  rmrf(dir);
}

/* 2. term_at: base, middle, last, past last */
static void test_term_at(void) {
  char dir[] = "/tmp/lkv_rlog_test_XXXXXX";
  static const uint64_t terms[8] = {1, 1, 1, 2, 2, 2, 5, 5};
  lkvnet_rlog *r;
  uint64_t t, i;
  int round;
  if (make_dir(dir) != 0) return;
  r = open_log(dir, NULL);
  if (r == NULL) goto out;
  t = 99;
  CHECK(lkvnet_rlog_term_at(r, 0, &t) == LKV_OK && t == 0); /* empty log */
  CHECK(lkvnet_rlog_term_at(r, 1, &t) == LKV_NOTFOUND);
  for (i = 0; i < 8; i++)
    CHECK(app(r, terms[i], LKVNET_OP_SET, "k", 1, "v", 1) == i + 1);
  for (round = 0; round < 2; round++) { /* before and after a reopen */
    t = 99;
    CHECK(lkvnet_rlog_term_at(r, 0, &t) == LKV_OK && t == 0);
    CHECK(lkvnet_rlog_term_at(r, 5, &t) == LKV_OK && t == 2);
    CHECK(lkvnet_rlog_term_at(r, 3, &t) == LKV_OK && t == 1);
    CHECK(lkvnet_rlog_term_at(r, 4, &t) == LKV_OK && t == 2);
    CHECK(lkvnet_rlog_term_at(r, 8, &t) == LKV_OK && t == 5);
    CHECK(lkvnet_rlog_term_at(r, 9, &t) == LKV_NOTFOUND);
    CHECK(lkvnet_rlog_term_at(r, UINT64_MAX, &t) == LKV_NOTFOUND);
    for (i = 1; i <= 8; i++)
      CHECK(lkvnet_rlog_term_at(r, i, &t) == LKV_OK && t == terms[i - 1]);
    close_log(r);
    r = open_log(dir, NULL);
    if (r == NULL) goto out;
  }
  close_log(r);
out:
  rmrf(dir);
}

/* 3. read ranges of whole frames; decode them; damaged buffers */
#define NREAD 20
static void test_read_decode(void) {
  char dir[] = "/tmp/lkv_rlog_test_XXXXXX", why[256];
  static const size_t maxes[] = {0,   1,   60,  100,  136,
                                 137, 300, 500, 1000, 100000};
  char keys[NREAD][8], vals[NREAD][300];
  lkvnet_entry want[NREAD];
  size_t fs[NREAD], total = 0, i, m;
  lkvnet_rlog *r;
  lkv_err err = {0};
  unsigned char *buf = NULL;
  size_t len, off;
  uint64_t to;
  lkvnet_entry e;
  if (make_dir(dir) != 0) return;
  r = open_log(dir, NULL);
  if (r == NULL) goto out;
  for (i = 0; i < NREAD; i++) {
    size_t vl = (i * 37) % 300, j;
    snprintf(keys[i], sizeof keys[i], "k%02zu", i);
    for (j = 0; j < vl; j++) vals[i][j] = (char)(i + j);
    want[i] =
        mk(1 + i / 7, i + 1, i % 5 == 4 ? LKVNET_OP_DELETE : LKVNET_OP_SET,
           keys[i], 3, i % 5 == 4 ? NULL : vals[i], i % 5 == 4 ? 0 : vl);
    fs[i] = lkvnet_rlog_frame_size(&want[i]);
    total += fs[i];
    CHECK(app(r, want[i].term, want[i].op, want[i].key, want[i].klen,
              want[i].val, want[i].vlen) == i + 1);
  }

  /* at least one frame, even over max_bytes */
  CHECK_OK(lkvnet_rlog_read(r, 1, 1, &buf, &len, &to, &err), &err);
  CHECK(to == 1 && len == fs[0] && buf != NULL);
  /* the bytes are the encoding of the entry */
  if (buf != NULL && len == fs[0]) {
    unsigned char *enc = malloc(fs[0]);
    lkvnet_rlog_encode(enc, &want[0]);
    CHECK(memcmp(enc, buf, fs[0]) == 0);
    free(enc);
  }
  free(buf);
  buf = NULL;

  /* every max_bytes: whole frames, greedy, decoding to the entries */
  for (m = 0; m < sizeof maxes / sizeof maxes[0]; m++) {
    uint64_t from = 1;
    int calls = 0;
    while (from <= NREAD && calls++ < 100) {
      size_t sum = 0, n = 0;
      int rc = lkvnet_rlog_read(r, from, maxes[m], &buf, &len, &to, &err);
      CHECK(rc == LKV_OK);
      if (rc != LKV_OK) break;
      CHECK(to >= from && to <= NREAD);
      if (to < from) break;
      for (i = from - 1; i < to; i++) sum += fs[i];
      CHECK(len == sum);
      CHECK(to == from || len <= maxes[m]); /* over only for a lone frame */
      if (to < NREAD) CHECK(len + fs[to] > maxes[m]); /* the next would pass */
      off = 0;
      while (lkvnet_rlog_decode(buf, len, &off, &e, why, sizeof why) == 1) {
        CHECK(from - 1 + n < NREAD && same_entry(&e, &want[from - 1 + n]));
        n++;
      }
      CHECK(off == len && n == to - from + 1);
      free(buf);
      buf = NULL;
      from = to + 1;
    }
    CHECK(from == NREAD + 1);
  }
  /* past the end: nothing; behind the base: not found */
  CHECK_OK(lkvnet_rlog_read(r, NREAD + 1, 1000, &buf, &len, &to, &err), &err);
  CHECK(len == 0 && to == NREAD);
  free(buf);
  buf = NULL;
  CHECK_OK(lkvnet_rlog_read(r, NREAD + 5, 1000, &buf, &len, &to, &err), &err);
  CHECK(len == 0 && to == NREAD + 4);
  free(buf);
  buf = NULL;
  CHECK(lkvnet_rlog_read(r, 0, 1000, &buf, &len, &to, &err) == LKV_NOTFOUND);
  free(buf);
  buf = NULL;

  /* the whole log in one read, then damaged copies of it */
  CHECK_OK(lkvnet_rlog_read(r, 1, SIZE_MAX, &buf, &len, &to, &err), &err);
  CHECK(to == NREAD && len == total);
  if (buf != NULL && len == total) {
    unsigned char *d = malloc(len);
    size_t spots[4], s, n;
    int rc;
    /* a payload byte of frame 3, frame 3's crc, frame 3's length, the
     * last byte of the last frame */
    spots[0] = fs[0] + fs[1] + 8 + 10;
    spots[1] = fs[0] + fs[1] + 5;
    spots[2] = fs[0] + fs[1] + 1;
    spots[3] = len - 1;
    for (s = 0; s < 4; s++) {
      size_t bad_frame = s == 3 ? NREAD - 1 : 2;
      memcpy(d, buf, len);
      d[spots[s]] ^= 0x20;
      off = 0;
      n = 0;
      why[0] = '\0';
      while ((rc = lkvnet_rlog_decode(d, len, &off, &e, why, sizeof why)) == 1)
        n++;
      CHECK(rc == -1 && why[0] != '\0' && n == bad_frame);
    }
    /* truncated: in the last frame's payload, and in its frame header */
    {
      size_t cuts[3], c;
      cuts[0] = len - 1;
      cuts[1] = len - fs[NREAD - 1] + 5;
      cuts[2] = len - fs[NREAD - 1] + LKVNET_RLOG_FRAME_SIZE + 3;
      for (c = 0; c < 3; c++) {
        off = 0;
        n = 0;
        why[0] = '\0';
        while ((rc = lkvnet_rlog_decode(buf, cuts[c], &off, &e, why,
                                        sizeof why)) == 1)
          n++;
        CHECK(rc == -1 && why[0] != '\0' && n == NREAD - 1);
        CHECK(off == len - fs[NREAD - 1]); /* not advanced past a bad one */
      }
    }
    /* an empty buffer is the end */
    off = 0;
    CHECK(lkvnet_rlog_decode(buf, 0, &off, &e, why, sizeof why) == 0);
    free(d);
  }
  free(buf);
  close_log(r);
out:
  rmrf(dir);
}

/* 4. append_entry: only last + 1, never a lower term; TOOBIG writes nothing */
static void test_append_entry(void) {
  char dir[] = "/tmp/lkv_rlog_test_XXXXXX", path[512];
  lkvnet_rlog *r;
  lkvnet_rlog_stats st;
  lkv_err err = {0};
  lkvnet_entry e;
  long long sz;
  uint64_t t, idx = 0;
  Recs rs = {0};
  char *hugek;
  if (make_dir(dir) != 0) return;
  r = open_new_log(dir, path, sizeof path);
  if (r == NULL) goto out;
  CHECK(app(r, 2, LKVNET_OP_SET, "a", 1, "1", 1) == 1);
  CHECK(app(r, 2, LKVNET_OP_SET, "b", 1, "2", 1) == 2);
  CHECK(app(r, 2, LKVNET_OP_SET, "c", 1, "3", 1) == 3);

  e = mk(2, 4, LKVNET_OP_SET, "d", 1, "4", 1);
  CHECK_OK(lkvnet_rlog_append_entry(r, &e, &err), &err);
  sz = file_size(path);
  e = mk(2, 6, LKVNET_OP_SET, "gap", 3, "x", 1); /* a gap */
  CHECK(lkvnet_rlog_append_entry(r, &e, &err) == LKV_INVALID);
  e = mk(2, 4, LKVNET_OP_SET, "dup", 3, "x", 1); /* already there */
  CHECK(lkvnet_rlog_append_entry(r, &e, &err) == LKV_INVALID);
  e = mk(2, 3, LKVNET_OP_SET, "old", 3, "x", 1);
  CHECK(lkvnet_rlog_append_entry(r, &e, &err) == LKV_INVALID);
  e = mk(1, 5, LKVNET_OP_SET, "low", 3, "x", 1); /* lower term */
  CHECK(lkvnet_rlog_append_entry(r, &e, &err) == LKV_INVALID);
  CHECK(err.msg[0] != '\0');
  CHECK(file_size(path) == sz);
  CHECK(lkvnet_rlog_term_at(r, 5, &t) == LKV_NOTFOUND);
  lkvnet_rlog_stats_get(r, &st);
  CHECK(st.last_index == 4 && st.appends == 4);

  /* over the engine's limits: LKV_TOOBIG, nothing written */
  hugek = calloc(1, LKV_MAX_KEY_BYTES + 1);
  CHECK(lkvnet_rlog_append(r, 2, LKVNET_OP_SET, hugek, LKV_MAX_KEY_BYTES + 1,
                           "v", 1, &idx, &err) == LKV_TOOBIG);
  e = mk(2, 5, LKVNET_OP_DELETE, hugek, LKV_MAX_KEY_BYTES + 1, NULL, 0);
  CHECK(lkvnet_rlog_append_entry(r, &e, &err) == LKV_TOOBIG);
  free(hugek);
  CHECK(file_size(path) == sz);
  CHECK(lkvnet_rlog_error(r, &err) == LKV_OK); /* refusals are not sticky */

  /* a higher term, at last + 1; then the same term again */
  e = mk(3, 5, LKVNET_OP_NOOP, NULL, 0, NULL, 0);
  CHECK_OK(lkvnet_rlog_append_entry(r, &e, &err), &err);
  e = mk(3, 6, LKVNET_OP_DELETE, "a", 1, NULL, 0);
  CHECK_OK(lkvnet_rlog_append_entry(r, &e, &err), &err);
  lkvnet_rlog_stats_get(r, &st);
  CHECK(st.last_index == 6 && st.last_term == 3);
  CHECK(file_size(path) == (long long)st.alloc && st.alloc > st.size);
  /* append after append_entry continues the same sequence */
  CHECK(app(r, 3, LKVNET_OP_SET, "z", 1, "z", 1) == 7);
  close_log(r);

  r = open_log(dir, &rs);
  CHECK(rs.n == 7);
  if (rs.n == 7) {
    lkvnet_entry w4 = mk(2, 4, LKVNET_OP_SET, "d", 1, "4", 1);
    lkvnet_entry w5 = mk(3, 5, LKVNET_OP_NOOP, NULL, 0, NULL, 0);
    lkvnet_entry w6 = mk(3, 6, LKVNET_OP_DELETE, "a", 1, NULL, 0);
    CHECK(same_entry(&rs.v[3], &w4));
    CHECK(same_entry(&rs.v[4], &w5));
    CHECK(same_entry(&rs.v[5], &w6));
  }
  close_log(r);
out:
  recs_free(&rs);
  rmrf(dir);
}

/* 4b. append_entries: several entries with one write, each checked
 * against the one before it (a gap or a lower term anywhere: none is
 * written), their frames chained to each other's terms across the batch */
static void test_append_entries(void) {
  char dir[] = "/tmp/lkv_rlog_test_XXXXXX", path[512];
  lkvnet_rlog *r;
  lkvnet_rlog_stats st;
  lkv_err err = {0};
  lkvnet_entry es[4];
  long long sz;
  uint64_t t;
  Recs rs = {0};
  if (make_dir(dir) != 0) return;
  r = open_new_log(dir, path, sizeof path);
  if (r == NULL) goto out;
  CHECK(app(r, 1, LKVNET_OP_SET, "a", 1, "1", 1) == 1);
  sz = file_size(path);
  /* a gap inside the batch, then a lower term inside it: nothing written */
  es[0] = mk(1, 2, LKVNET_OP_SET, "b", 1, "2", 1);
  es[1] = mk(1, 4, LKVNET_OP_SET, "c", 1, "3", 1);
  CHECK(lkvnet_rlog_append_entries(r, es, 2, &err) == LKV_INVALID);
  es[1] = mk(2, 3, LKVNET_OP_NOOP, NULL, 0, NULL, 0);
  es[2] = mk(1, 4, LKVNET_OP_SET, "c", 1, "3", 1);
  CHECK(lkvnet_rlog_append_entries(r, es, 3, &err) == LKV_INVALID);
  CHECK(file_size(path) == sz);
  CHECK(lkvnet_rlog_term_at(r, 2, &t) == LKV_NOTFOUND);
  CHECK_OK(lkvnet_rlog_append_entries(r, es, 0, &err), &err);
  /* a whole batch, its terms rising inside it */
  es[2] = mk(2, 4, LKVNET_OP_SET, "c", 1, "3", 1);
  es[3] = mk(3, 5, LKVNET_OP_DELETE, "a", 1, NULL, 0);
  CHECK_OK(lkvnet_rlog_append_entries(r, es, 4, &err), &err);
  lkvnet_rlog_stats_get(r, &st);
  CHECK(st.last_index == 5 && st.last_term == 3 && st.appends == 5);
  CHECK(lkvnet_rlog_term_at(r, 3, &t) == LKV_OK && t == 2);
  CHECK(lkvnet_rlog_term_at(r, 5, &t) == LKV_OK && t == 3);
  CHECK(app(r, 3, LKVNET_OP_SET, "z", 1, "z", 1) == 6);
  close_log(r);

  /* every frame replays, in order, each chain link intact */
  r = open_log(dir, &rs);
  CHECK(rs.n == 6);
  if (rs.n == 6) {
    int i;
    for (i = 0; i < 4; i++) CHECK(same_entry(&rs.v[i + 1], &es[i]));
  }
  close_log(r);
out:
  recs_free(&rs);
  rmrf(dir);
}

/* 4c. sync_here: the owner syncs on its own thread. With owner_syncs
 * the appends leave the syncer asleep, so every sync is the owner's;
 * without, the syncer may get there first (and never syncs beside it);
 * nothing waiting is 0 */
static void test_sync_here(void) {
  char dir[] = "/tmp/lkv_rlog_test_XXXXXX", path[512];
  lkvnet_rlog *r;
  int i, here = 0;
  if (make_dir(dir) != 0) return;
  r = open_new_log(dir, path, sizeof path);
  if (r == NULL) goto out;
  lkvnet_rlog_set_owner_syncs(r, 1);
  for (i = 1; i <= 100; i++) {
    CHECK(app(r, 1, LKVNET_OP_SET, "k", 1, "v", 1) == (uint64_t)i);
    CHECK(lkvnet_rlog_sync_here(r) == 1);
    CHECK(lkvnet_rlog_durable_index(r) == (uint64_t)i);
  }
  /* appended and not synced here: still not durable a while later (once
   * the syncer, woken by the last sync's broadcast, is asleep again) */
  usleep(20000);
  CHECK(app(r, 1, LKVNET_OP_SET, "k", 1, "v", 1) == 101);
  usleep(20000);
  CHECK(lkvnet_rlog_durable_index(r) == 100);
  CHECK(lkvnet_rlog_sync_here(r) == 1);
  lkvnet_rlog_set_owner_syncs(r, 0);
  for (i = 102; i <= 300; i++) {
    int rc;
    CHECK(app(r, 1, LKVNET_OP_SET, "k", 1, "v", 1) == (uint64_t)i);
    rc = lkvnet_rlog_sync_here(r);
    CHECK(rc == 0 || rc == 1);
    /* 1: durable through the last append, at once */
    if (rc == 1) {
      CHECK(lkvnet_rlog_durable_index(r) == (uint64_t)i);
      here++;
    }
  }
  CHECK(wait_durable(r, 300));
  CHECK(lkvnet_rlog_sync_here(r) == 0); /* nothing waits */
  (void)here; /* the syncer may win every race there */
  close_log(r);
out:
  rmrf(dir);
}

/* 5. truncate: cut after k, append different entries, reopen */
static void test_truncate(void) {
  char dir[] = "/tmp/lkv_rlog_test_XXXXXX", path[512], k[16];
  long long sizes[11];
  lkvnet_rlog *r;
  lkvnet_rlog_stats st;
  lkv_err err = {0};
  Recs rs = {0};
  uint64_t i, t;
  if (make_dir(dir) != 0) return;
  r = open_new_log(dir, path, sizeof path);
  if (r == NULL) goto out;
  sizes[0] = file_size(path);
  for (i = 1; i <= 10; i++) {
    snprintf(k, sizeof k, "old%llu", (unsigned long long)i);
    CHECK(app(r, 1, LKVNET_OP_SET, k, strlen(k), "old-value", 9) == i);
    lkvnet_rlog_stats_get(r, &st);
    sizes[i] = (long long)st.size; /* the file is longer: zeros ahead */
  }
  CHECK(wait_durable(r, 10));
  CHECK_OK(lkvnet_rlog_truncate(r, 10, &err), &err); /* at last: nothing */
  /* the new log's space ahead: every append went into it */
  CHECK(file_size(path) == LKVNET_RLOG_HEADER_SIZE + LKVNET_RLOG_PREALLOC);

  CHECK_OK(lkvnet_rlog_truncate(r, 6, &err), &err);
  CHECK(lkvnet_rlog_durable_index(r) == 6);
  lkvnet_rlog_stats_get(r, &st);
  CHECK(st.last_index == 6 && st.last_term == 1 && st.durable_index == 6);
  CHECK(file_size(path) == sizes[6]);
  CHECK(lkvnet_rlog_term_at(r, 7, &t) == LKV_NOTFOUND);
  CHECK(lkvnet_rlog_term_at(r, 6, &t) == LKV_OK && t == 1);

  /* out of [base, last] */
  CHECK(lkvnet_rlog_truncate(r, 7, &err) == LKV_INVALID);
  CHECK(lkvnet_rlog_truncate(r, 100, &err) == LKV_INVALID);
  CHECK(file_size(path) == sizes[6]);

  for (i = 7; i <= 9; i++) {
    snprintf(k, sizeof k, "new%llu", (unsigned long long)i);
    CHECK(app(r, 2, LKVNET_OP_SET, k, strlen(k), "n", 1) == i);
  }
  CHECK(wait_durable(r, 9));
  CHECK(lkvnet_rlog_durable_index(r) == 9);
  close_log(r);

  r = open_log(dir, &rs);
  if (r == NULL) goto out;
  CHECK(rs.n == 9);
  for (i = 0; i < rs.n && i < 9; i++) {
    const lkvnet_entry *e = &rs.v[i];
    snprintf(k, sizeof k, "%s%llu", i < 6 ? "old" : "new",
             (unsigned long long)(i + 1));
    CHECK(e->index == i + 1 && e->term == (i < 6 ? 1u : 2u));
    CHECK(e->klen == strlen(k) && memcmp(e->key, k, e->klen) == 0);
    CHECK(i < 6 ? e->vlen == 9 : (e->vlen == 1 && e->val[0] == 'n'));
  }
  lkvnet_rlog_stats_get(r, &st);
  CHECK(st.dropped_bytes == 0 && st.last_index == 9 && st.last_term == 2);

  /* cut at the base (0): an empty log that starts again at 1 */
  CHECK_OK(lkvnet_rlog_truncate(r, 0, &err), &err);
  CHECK(lkvnet_rlog_durable_index(r) == 0);
  CHECK(file_size(path) == LKVNET_RLOG_HEADER_SIZE);
  lkvnet_rlog_stats_get(r, &st);
  CHECK(st.last_index == 0 && st.last_term == 0);
  CHECK(app(r, 4, LKVNET_OP_SET, "fresh", 5, "1", 1) == 1);
  check_reopened(r, dir, &rs, 1, 4);
out:
  recs_free(&rs);
  rmrf(dir);
}

/* 7. torn and corrupt tails are cut; a damaged header fails the open */
static void test_torn_tail(void) {
  char dir[] = "/tmp/lkv_rlog_test_XXXXXX", path[512], k[16];
  static const long long header_spots[] = {0,  3,  7,  8,  11, 12, 15,
                                           16, 23, 24, 31, 32, 35};
  lkvnet_rlog *r;
  lkvnet_rlog_stats st;
  lkv_err err = {0};
  Recs rs = {0};
  long long full, f5, hs;
  uint64_t i;
  size_t s;
  if (make_dir(dir) != 0) return;
  r = open_new_log(dir, path, sizeof path);
  if (r == NULL) goto out;
  for (i = 1; i <= 5; i++) {
    snprintf(k, sizeof k, "key%llu", (unsigned long long)i);
    CHECK(app(r, 1, LKVNET_OP_SET, k, strlen(k), "some value bytes", 16) == i);
  }
  close_log(r);
  full = file_size(path);
  {
    lkvnet_entry w = mk(1, 5, LKVNET_OP_SET, "key5", 4, "some value bytes", 16);
    f5 = (long long)lkvnet_rlog_frame_size(&w);
  }

  /* chopped in the last frame's payload */
  chop(path, 3);
  r = reopen(dir, &rs, 4, &st);
  if (r == NULL) goto out;
  CHECK(rs.n > 0 && rs.v[rs.n - 1].index == 4);
  CHECK(st.dropped_bytes == (uint64_t)(f5 - 3) && st.dropped_why[0] != '\0');
  CHECK(st.last_index == 4 && st.durable_index == 4);
  CHECK(file_size(path) == full - f5);
  reappend_key5(r);
  close_log(r);
  recs_free(&rs);
  r = reopen(dir, &rs, 5, &st);
  CHECK(rs.n > 4 && rs.v[4].term == 2);
  if (r != NULL) CHECK(st.dropped_bytes == 0);
  close_full(r, &rs, path, full);

  /* chopped inside the last frame's 8-byte header */
  chop(path, f5 - 3);
  r = reopen(dir, &rs, 4, &st);
  if (r != NULL) CHECK(st.dropped_bytes == 3 && st.last_index == 4);
  reappend_key5(r);
  close_full(r, &rs, path, full);

  /* a flipped byte in the last frame's payload, then in its length */
  flip_byte(path, full - 5);
  r = reopen(dir, &rs, 4, &st);
  if (r != NULL) {
    CHECK(st.dropped_bytes == (uint64_t)f5 && st.dropped_why[0] != '\0');
    CHECK(file_size(path) == full - f5);
  }
  reappend_key5(r);
  close_log(r);
  recs_free(&rs);
  flip_byte(path, full - f5 + 1); /* length field: 0x20 << 8 more bytes */
  r = reopen(dir, &rs, 4, &st);
  if (r != NULL) CHECK(st.dropped_bytes == (uint64_t)f5);
  reappend_key5(r);
  close_full(r, &rs, path, full);

  /* garbage after the last frame (e.g. zeros from a preallocation) */
  {
    int fd = open(path, O_WRONLY | O_APPEND);
    static const char zeros[100];
    CHECK(fd >= 0 && write(fd, zeros, sizeof zeros) == (ssize_t)sizeof zeros);
    if (fd >= 0) close(fd);
  }
  r = reopen(dir, &rs, 5, &st);
  if (r != NULL) {
    /* kept, not cut: space written ahead, which the next append uses */
    CHECK(st.dropped_bytes == 0 && st.last_index == 5);
    CHECK(st.size == (uint64_t)full && st.alloc == (uint64_t)full + 100);
    CHECK(file_size(path) == full + 100);
  }
  close_full(r, &rs, path, full); /* a clean close cuts them */

  /* zeros, then anything else: a damaged tail, cut whole */
  {
    int fd = open(path, O_WRONLY | O_APPEND);
    static const char zeros[100];
    CHECK(fd >= 0 && write(fd, zeros, sizeof zeros) == (ssize_t)sizeof zeros);
    CHECK(fd >= 0 && write(fd, "x", 1) == 1);
    if (fd >= 0) close(fd);
  }
  r = reopen(dir, &rs, 5, &st);
  if (r != NULL) CHECK(st.dropped_bytes == 101 && st.last_index == 5);
  close_full(r, &rs, path, full);

  /* any flipped byte of the checksummed header fails the open */
  for (s = 0; s < sizeof header_spots / sizeof header_spots[0]; s++) {
    int rc;
    r = NULL;
    flip_byte(path, header_spots[s]);
    err.code = LKV_OK;
    err.msg[0] = '\0';
    rc = lkvnet_rlog_open(dir, NULL, -1, record, &rs, &r, &err);
    if (rc != LKV_CORRUPTION)
      fprintf(stderr, "header byte %lld flipped: open -> %d\n", header_spots[s],
              rc);
    CHECK(rc == LKV_CORRUPTION && r == NULL && err.msg[0] != '\0');
    CHECK(rs.n == 0);
    if (r != NULL) close_log(r);
    recs_free(&rs);
    flip_byte(path, header_spots[s]); /* undo */
    CHECK(file_size(path) == full);   /* a failed open cuts nothing */
  }
  /* a header shorter than 40 bytes */
  hs = file_size(path);
  {
    char dir2[] = "/tmp/lkv_rlog_test_XXXXXX", p2[512];
    if (make_dir(dir2) == 0) {
      int fd;
      log_path(p2, sizeof p2, dir2, LKVNET_RLOG_FILE);
      fd = open(p2, O_WRONLY | O_CREAT, 0644);
      CHECK(fd >= 0 && write(fd, "LUNAKVRL\1\0", 10) == 10);
      if (fd >= 0) close(fd);
      r = NULL;
      CHECK(lkvnet_rlog_open(dir2, NULL, -1, NULL, NULL, &r, &err) ==
            LKV_CORRUPTION);
      CHECK(r == NULL);
      if (r != NULL) close_log(r);
      rmrf(dir2);
    }
  }

  /* valid frames out of index order, or a term going down: corruption,
   * not a tail to cut */
  {
    unsigned char hdr[LKVNET_RLOG_HEADER_SIZE], fr[64];
    lkvnet_entry bad[2];
    size_t b;
    int fd = open(path, O_RDONLY);
    CHECK(fd >= 0 && read(fd, hdr, sizeof hdr) == (ssize_t)sizeof hdr);
    if (fd >= 0) close(fd);
    bad[0] = mk(1, 7, LKVNET_OP_SET, "k", 1, "v", 1); /* after 5: a gap */
    bad[1] = mk(1, 6, LKVNET_OP_SET, "k", 1, "v", 1); /* term 2 -> 1 */
    for (b = 0; b < 2; b++) {
      char dir2[] = "/tmp/lkv_rlog_test_XXXXXX", p2[512], cmd[1200];
      int rc;
      if (make_dir(dir2) != 0) break;
      log_path(p2, sizeof p2, dir2, LKVNET_RLOG_FILE);
      snprintf(cmd, sizeof cmd, "cp '%s' '%s'", path, p2);
      CHECK(system(cmd) == 0);
      lkvnet_rlog_encode(fr, &bad[b]);
      fd = open(p2, O_WRONLY | O_APPEND);
      CHECK(fd >= 0 && write(fd, fr, lkvnet_rlog_frame_size(&bad[b])) ==
                           (ssize_t)lkvnet_rlog_frame_size(&bad[b]));
      if (fd >= 0) close(fd);
      r = NULL;
      rc = lkvnet_rlog_open(dir2, NULL, -1, NULL, NULL, &r, &err);
      CHECK(rc == LKV_CORRUPTION && r == NULL);
      if (r != NULL) close_log(r);
      rmrf(dir2);
    }
  }
  CHECK(file_size(path) == hs);
out:
  recs_free(&rs);
  rmrf(dir);
}

/* 7b. with space written ahead, frames written after the last sync may
 * land without the ones before them (the page cache writes back in any
 * order): zeros where a frame was, then valid frames. That is the end of
 * what was synced (never acknowledged past it), cut at start-up; damage
 * that is not zeros, with a valid frame after it, still fails the open */
static void build_lost(const char *dir, uint64_t off[6]) {
  static char big[1500];
  lkvnet_rlog *r;
  lkvnet_rlog_stats st;
  char path[512];
  uint64_t i;
  memset(big, 'v', sizeof big);
  rmrf(dir);
  CHECK(mkdir(dir, 0700) == 0);
  r = open_new_log(dir, path, sizeof path);
  if (r == NULL) return;
  for (i = 1; i <= 5; i++) {
    lkvnet_rlog_stats_get(r, &st);
    off[i - 1] = st.size;
    CHECK(app(r, 1, LKVNET_OP_SET, "k", 1, big, i == 4 ? sizeof big : 8) == i);
  }
  lkvnet_rlog_stats_get(r, &st);
  off[5] = st.size;
  close_log(r);
}

static void zero_range(const char *path, uint64_t from, uint64_t to) {
  static const char zeros[4096];
  int fd = open(path, O_RDWR);
  CHECK(fd >= 0 && to - from <= sizeof zeros);
  if (fd < 0) return;
  CHECK(pwrite(fd, zeros, (size_t)(to - from), (off_t)from) ==
        (ssize_t)(to - from));
  close(fd);
}

static void test_lost_writes(void) {
  char dir[] = "/tmp/lkv_rlog_test_XXXXXX", path[512];
  lkvnet_rlog *r;
  lkvnet_rlog_stats st;
  lkv_err err = {0};
  Recs rs = {0};
  uint64_t off[6], sector;
  if (make_dir(dir) != 0) return;
  log_path(path, sizeof path, dir, LKVNET_RLOG_FILE);

  /* entry 4 lost whole, 5 landed */
  build_lost(dir, off);
  zero_range(path, off[3], off[4]);
  r = reopen(dir, &rs, 3, &st);
  if (r != NULL) {
    CHECK(st.last_index == 3 && st.dropped_bytes == off[5] - off[3]);
    CHECK(strstr(st.dropped_why, "lost before its sync") != NULL);
    CHECK(file_size(path) == (long long)off[3]);
    CHECK(app(r, 2, LKVNET_OP_SET, "k", 1, "new", 3) == 4);
  }
  close_log(r);
  recs_free(&rs);
  r = reopen(dir, &rs, 4, &st);
  CHECK(rs.n == 4 && rs.v[3].term == 2);
  close_log(r);
  recs_free(&rs);

  /* one sector in the middle of entry 4 lost, 5 landed */
  build_lost(dir, off);
  sector = (off[3] + LKVNET_RLOG_FRAME_SIZE + 511) & ~(uint64_t)511;
  CHECK(sector + 512 <= off[4]);
  zero_range(path, sector, sector + 512);
  r = reopen(dir, &rs, 3, &st);
  if (r != NULL) CHECK(st.last_index == 3 && st.dropped_bytes > 0);
  close_log(r);
  recs_free(&rs);

  /* the same bytes damaged, not zeroed: the open fails, nothing cut */
  build_lost(dir, off);
  flip_byte(path, (long long)sector + 7);
  CHECK(lkvnet_rlog_open(dir, NULL, -1, NULL, NULL, &r, &err) ==
        LKV_CORRUPTION);
  CHECK(strstr(err.msg, "damaged in the middle") != NULL);
  CHECK(file_size(path) == (long long)off[5]);
  recs_free(&rs);
  rmrf(dir);
}

/* 8. the term file */
static void test_term_file(void) {
  char dir[] = "/tmp/lkv_rlog_test_XXXXXX", path[512], tmp[600];
  lkv_err err = {0};
  uint64_t t = 77;
  if (make_dir(dir) != 0) return;
  log_path(path, sizeof path, dir, "term");
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  CHECK_OK(lkvnet_term_load(dir, NULL, &t, &err), &err);
  CHECK(t == 0);
  CHECK_OK(lkvnet_term_store(dir, NULL, 5, &err), &err);
  CHECK_OK(lkvnet_term_load(dir, NULL, &t, &err), &err);
  CHECK(t == 5);
  CHECK_OK(lkvnet_term_store(dir, NULL, 9, &err), &err);
  CHECK_OK(lkvnet_term_load(dir, NULL, &t, &err), &err);
  CHECK(t == 9);
  CHECK_OK(lkvnet_term_store(dir, NULL, UINT64_MAX - 1, &err), &err);
  CHECK_OK(lkvnet_term_load(dir, NULL, &t, &err), &err);
  CHECK(t == UINT64_MAX - 1);
  CHECK_OK(lkvnet_term_store(dir, NULL, 9, &err), &err);
  CHECK(!exists(tmp));
  {
    long long sz = file_size(path), off;
    CHECK(sz == 20);
    for (off = 0; off < sz; off++) { /* every byte is checked */
      flip_byte(path, off);
      t = 1234;
      CHECK(lkvnet_term_load(dir, NULL, &t, &err) == LKV_CORRUPTION);
      flip_byte(path, off);
    }
    CHECK_OK(lkvnet_term_load(dir, NULL, &t, &err), &err);
    CHECK(t == 9);
    chop(path, 1); /* short */
    CHECK(lkvnet_term_load(dir, NULL, &t, &err) == LKV_CORRUPTION);
    CHECK(err.msg[0] != '\0');
  }
  /* a store over a damaged file repairs it */
  CHECK_OK(lkvnet_term_store(dir, NULL, 10, &err), &err);
  CHECK_OK(lkvnet_term_load(dir, NULL, &t, &err), &err);
  CHECK(t == 10);
  CHECK(!exists(tmp));
  rmrf(dir);
}

/* 9. the syncer under load: monotonic durable index, truncates, rewrites */
typedef struct Mon {
  lkvnet_rlog *r;
  volatile int stop; /* set by the owner after join-worthy work */
  pthread_mutex_t mu;
  int went_down;
  uint64_t polls, max_seen;
} Mon;

static void *monitor(void *p) {
  Mon *m = p;
  uint64_t prev = 0;
  for (;;) {
    uint64_t d = lkvnet_rlog_durable_index(m->r);
    int stop;
    pthread_mutex_lock(&m->mu);
    if (d < prev) m->went_down++;
    if (d > m->max_seen) m->max_seen = d;
    m->polls++;
    stop = m->stop;
    pthread_mutex_unlock(&m->mu);
    prev = d;
    if (stop) break;
  }
  return NULL;
}

static void test_concurrency(void) {
  char dir[] = "/tmp/lkv_rlog_test_XXXXXX", k[32];
  const uint64_t N = 20000;
  lkvnet_rlog *r = NULL;
  lkvnet_rlog_stats st;
  lkv_err err = {0};
  Recs rs = {0};
  Mon m;
  pthread_t th;
  int pfd[2], bad = 0;
  uint64_t i, last = 0, t, prev;
  unsigned round;
  if (make_dir(dir) != 0) return;
  CHECK(pipe(pfd) == 0);
  CHECK(fcntl(pfd[0], F_SETFL, O_NONBLOCK) == 0);
  CHECK(fcntl(pfd[1], F_SETFL, O_NONBLOCK) == 0);
  CHECK_OK(lkvnet_rlog_open(dir, NULL, pfd[1], NULL, NULL, &r, &err), &err);
  if (r == NULL) goto out;

  /* phase 1: appends only; a reader thread watches the durable index */
  memset(&m, 0, sizeof m);
  m.r = r;
  pthread_mutex_init(&m.mu, NULL);
  CHECK(pthread_create(&th, NULL, monitor, &m) == 0);
  prev = 0;
  for (i = 1; i <= N; i++) {
    uint64_t d;
    snprintf(k, sizeof k, "c%llu", (unsigned long long)i);
    CHECK(app(r, 1, LKVNET_OP_SET, k, strlen(k), k, strlen(k)) == i);
    d = lkvnet_rlog_durable_index(r);
    if (d < prev || d > i) bad++;
    prev = d;
  }
  last = N;
  CHECK(wait_durable(r, last));
  pthread_mutex_lock(&m.mu);
  m.stop = 1;
  pthread_mutex_unlock(&m.mu);
  pthread_join(th, NULL);
  pthread_mutex_destroy(&m.mu);
  CHECK(bad == 0);
  CHECK(m.went_down == 0 && m.max_seen <= last);
  lkvnet_rlog_stats_get(r, &st);
  CHECK(st.durable_index == last && st.last_index == last);
  CHECK(st.syncs >= 1 && st.syncs <= st.appends);
  printf("rlog: %llu appends, %llu syncs (group commit)\n",
         (unsigned long long)st.appends, (unsigned long long)st.syncs);
  {
    char b[512];
    CHECK(read(pfd[0], b, sizeof b) > 0); /* the syncer notified */
    while (read(pfd[0], b, sizeof b) > 0) {
    }
  }

  /* phase 2: truncates (and now and then a rewrite) while syncs run: the
   * durable index is never past the last index */
  for (round = 0; round < 400; round++) {
    unsigned j, nadd = 20 + round % 17;
    for (j = 0; j < nadd; j++) {
      snprintf(k, sizeof k, "r%u-%u", round, j);
      CHECK(app(r, 2 + round / 50, LKVNET_OP_SET, k, strlen(k), "v", 1) ==
            last + 1);
      last++;
      if (lkvnet_rlog_durable_index(r) > last) bad++;
    }
    if (round % 3 == 0) sleep_ms(1); /* let a sync start */
    {
      uint64_t cut = last - (round * 7) % (nadd + 5);
      lkvnet_rlog_stats_get(r, &st);
      if (cut < st.base_index) cut = st.base_index;
      CHECK_OK(lkvnet_rlog_truncate(r, cut, &err), &err);
      last = cut;
      if (lkvnet_rlog_durable_index(r) > last) bad++;
    }
    if (round % 25 == 3 && !lkvnet_rlog_compacting(r)) {
      /* and compactions in the background, cut into by the truncates */
      uint64_t base = last > 15 ? last - 15 : 0;
      lkvnet_rlog_stats_get(r, &st);
      if (base < st.base_index) base = st.base_index;
      CHECK(lkvnet_rlog_term_at(r, base, &t) == LKV_OK);
      CHECK_OK(
          lkvnet_rlog_compact_begin(
              r, base, t, last > base + 5 ? last - 5 : base, NULL, NULL, &err),
          &err);
    }
    if (lkvnet_rlog_compact_poll(r, &err) == LKVNET_COMPACT_FAILED) bad++;
    if (round % 50 == 49) {
      uint64_t base = last > 10 ? last - 10 : 0;
      lkvnet_rlog_stats_get(r, &st);
      if (base < st.base_index) base = st.base_index;
      CHECK(lkvnet_rlog_term_at(r, base, &t) == LKV_OK);
      CHECK_OK(lkvnet_rlog_rewrite(r, base, t, &err), &err);
      if (lkvnet_rlog_durable_index(r) > last) bad++;
    }
    {
      uint64_t d = lkvnet_rlog_durable_index(r);
      if (d > last) bad++;
    }
  }
  lkvnet_rlog_compact_wait(r);
  if (lkvnet_rlog_compact_poll(r, &err) == LKVNET_COMPACT_FAILED) bad++;
  CHECK(bad == 0);
  CHECK(wait_durable(r, last));
  CHECK(lkvnet_rlog_durable_index(r) == last);
  lkvnet_rlog_stats_get(r, &st);
  CHECK(st.last_index == last && st.durable_index == last);
  CHECK(lkvnet_rlog_error(r, &err) == LKV_OK);
  {
    uint64_t base = st.base_index;
    close_log(r);
    r = NULL;
    r = open_log(dir, &rs);
    CHECK(rs.n == last - base);
    for (i = 0; i < rs.n; i++)
      if (rs.v[i].index != base + 1 + i) bad++;
    CHECK(bad == 0);
    if (r != NULL) {
      lkvnet_rlog_stats_get(r, &st);
      CHECK(st.base_index == base && st.last_index == last);
      CHECK(st.dropped_bytes == 0);
    }
  }
  close_log(r);
  r = NULL;
out:
  if (r != NULL) close_log(r);
  recs_free(&rs);
  close(pfd[0]);
  close(pfd[1]);
  rmrf(dir);
}

int main(void) {
  test_append_replay();
  test_term_at();
  test_read_decode();
  test_append_entry();
  test_append_entries();
  test_sync_here();
  test_truncate();
  test_torn_tail();
  test_lost_writes();
  test_term_file();
  test_concurrency();
  TEST_MAIN_END();
}
