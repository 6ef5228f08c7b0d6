/* hardstate_test.c - the term file (rlog_term.c, hardstate.h): what a
 * store costs (one pwrite, one fdatasync), what a crash before its
 * fdatasync, a torn slot, a failed fdatasync and its retry, and damage
 * to both slots leave, versions 1 and 2 read and converted, many stores
 * in a row, and what an open makes durable. Version-3 files are built
 * and read here by hand, with the log tests' reference CRC, so the
 * format is pinned by this file and not by the code under test. Crashes
 * go through the fault env (c/engine/faultenv.h). */
#include "hardstate.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "faultenv.h"
#include "rlog.h"
#include "rlog_test_util.h"
#include "test.h"

#define SECTOR 512
#define FILE3 1024

/* {======================================================================
** The format, by hand
** ======================================================================= */

static void put64(unsigned char *p, uint64_t v) {
  int i;
  for (i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void slot_make(unsigned char *p, uint64_t gen, uint64_t term,
                      uint64_t vote) {
  uint32_t c;
  int i;
  memcpy(p, "LUNAKVT3", 8);
  put64(p + 8, gen);
  put64(p + 16, term);
  put64(p + 24, vote);
  c = ref_crc(0, p, 32);
  for (i = 0; i < 4; i++) p[32 + i] = (unsigned char)(c >> (8 * i));
}

/* A slot of the file at path as a reader sees it. */
typedef struct Slot {
  int valid;
  uint64_t gen, term, vote;
} Slot;

/* Both slots of the version-3 file at path; 0 when it is not 1024 bytes. */
static int slots_read(const char *path, Slot s[2]) {
  size_t n, i;
  unsigned char *b = slurp(path, &n);
  int ok = b != NULL && n == FILE3;
  memset(s, 0, 2 * sizeof *s);
  for (i = 0; ok && i < 2; i++) {
    const unsigned char *p = b + i * SECTOR;
    s[i].valid =
        memcmp(p, "LUNAKVT3", 8) == 0 && le32(p + 32) == ref_crc(0, p, 32);
    s[i].gen = le64(p + 8);
    s[i].term = le64(p + 16);
    s[i].vote = le64(p + 24);
  }
  free(b);
  return ok;
}

/* The slot holding (term, vote), valid; -1 when none does. */
static int slot_of(const char *path, uint64_t term, uint64_t vote) {
  Slot s[2];
  int i;
  if (!slots_read(path, s)) return -1;
  for (i = 0; i < 2; i++)
    if (s[i].valid && s[i].term == term && s[i].vote == vote) return i;
  return -1;
}

static void put_file(const char *path, const unsigned char *p, size_t n) {
  FILE *f = fopen(path, "wb");
  CHECK(f != NULL && fwrite(p, 1, n, f) == n);
  if (f != NULL) fclose(f);
}

static void v2_make(unsigned char *b, uint64_t term, uint64_t vote) {
  uint32_t c;
  int i;
  memcpy(b, "LUNAKVT2", 8);
  put64(b + 8, term);
  put64(b + 16, vote);
  c = ref_crc(0, b, 24);
  for (i = 0; i < 4; i++) b[24 + i] = (unsigned char)(c >> (8 * i));
}

/* What the file in dir loads as must be (term, vote). */
static void check_load(const char *dir, uint64_t term, uint64_t vote,
                       const char *what) {
  lkv_err err = {0};
  uint64_t t = 12345, v = 12345;
  int rc = lkvnet_hardstate_load(dir, NULL, &t, &v, &err);
  if (rc != LKV_OK || t != term || v != vote)
    fprintf(stderr, "%s: load -> %d (%s) term %llu vote %llu, want %llu %llu\n",
            what, rc, err.msg, (unsigned long long)t, (unsigned long long)v,
            (unsigned long long)term, (unsigned long long)vote);
  CHECK(rc == LKV_OK && t == term && v == vote);
}

/* The file in dir opened for stores, its state checked. */
static lkvnet_hardstate *open_hs(const char *dir, const lkv_env *env,
                                 uint64_t term, uint64_t vote) {
  lkvnet_hardstate *hs = NULL;
  lkv_err err = {0};
  uint64_t t = 12345, v = 12345;
  CHECK_OK(lkvnet_hardstate_open(dir, env, &hs, &t, &v, &err), &err);
  CHECK(hs != NULL && t == term && v == vote);
  return hs;
}

static void store_ok(lkvnet_hardstate *hs, uint64_t term, uint64_t vote) {
  lkv_err err = {0};
  CHECK_OK(lkvnet_hardstate_store(hs, term, vote, &err), &err);
}

static lkv_faultenv *fault_env(void) {
  lkv_faultenv *f = lkv_faultenv_new();
  CHECK(f != NULL);
  return f;
}

/* The env's calls of every kind so far. */
typedef struct Calls {
  uint64_t n[LKV_FOP_COUNT];
} Calls;

static Calls calls_now(lkv_faultenv *f) {
  Calls c;
  int op;
  for (op = 0; op < LKV_FOP_COUNT; op++) c.n[op] = lkv_faultenv_calls(f, op);
  return c;
}

/* Since `before`: exactly `writes` writes, `syncs` syncs, `renames`
 * renames and as many directory syncs, and, renames aside, no other call
 * at all (no open, close, read, stat, truncate). */
static void check_calls(lkv_faultenv *f, const Calls *before, uint64_t writes,
                        uint64_t syncs, uint64_t renames, const char *what) {
  Calls now = calls_now(f);
  int op, bad = 0;
  for (op = 0; op < LKV_FOP_COUNT; op++) {
    uint64_t d = now.n[op] - before->n[op], want = 0;
    if (op == LKV_FOP_WRITE) want = writes;
    if (op == LKV_FOP_SYNC) want = syncs;
    if (op == LKV_FOP_RENAME || op == LKV_FOP_SYNCDIR) want = renames;
    if (renames &&
        (op == LKV_FOP_CREATE || op == LKV_FOP_CLOSE || op == LKV_FOP_UNLINK))
      continue; /* the write aside: its own open and close */
    if (d != want) {
      fprintf(stderr, "%s: %llu %s call(s), want %llu\n", what,
              (unsigned long long)d, lkv_fault_op_name(op),
              (unsigned long long)want);
      bad = 1;
    }
  }
  CHECK(!bad);
}

/* Since `before`: no call that could change a file. */
static void check_unchanged(lkv_faultenv *f, const Calls *before,
                            const char *what) {
  static const int ops[] = {LKV_FOP_CREATE,   LKV_FOP_WRITE,  LKV_FOP_SYNC,
                            LKV_FOP_TRUNCATE, LKV_FOP_RENAME, LKV_FOP_UNLINK,
                            LKV_FOP_SYNCDIR};
  Calls now = calls_now(f);
  size_t i;
  for (i = 0; i < sizeof ops / sizeof ops[0]; i++)
    if (now.n[ops[i]] != before->n[ops[i]]) {
      fprintf(stderr, "%s: a %s call\n", what, lkv_fault_op_name(ops[i]));
      CHECK(0);
    }
}

/* }====================================================================== */

/* {======================================================================
** The tests
** ======================================================================= */

/* 1. the round trip, and what the checks cover: every byte of a slot's
 * record (the sector's padding is not read), every byte of version 2;
 * version 1 reads as no vote */
static void test_round_trip(void) {
  char dir[] = "/tmp/lkv_hs_test_XXXXXX", path[600];
  unsigned char v2[28];
  lkvnet_hardstate *hs;
  lkv_err err = {0};
  uint64_t t = 9, v = 9;
  long long i;
  Slot s[2];
  if (make_dir(dir) != 0) return;
  snprintf(path, sizeof path, "%s/term", dir);
  CHECK_OK(lkvnet_hardstate_load(dir, NULL, &t, &v, &err), &err);
  CHECK(t == 0 && v == 0);
  hs = open_hs(dir, NULL, 0, 0);
  store_ok(hs, 5, 0xabcdef);
  check_load(dir, 5, 0xabcdef, "first store");
  /* a fresh node's file: slot 0 holds it, slot 1 nothing valid yet */
  CHECK(file_size(path) == FILE3);
  CHECK(slots_read(path, s) && s[0].valid && !s[1].valid);
  for (i = 0; i < 36; i++) {
    flip_byte(path, i);
    CHECK(lkvnet_hardstate_load(dir, NULL, &t, &v, &err) == LKV_CORRUPTION);
    flip_byte(path, i);
  }
  store_ok(hs, 6, 0x1234);
  check_load(dir, 6, 0x1234, "second store");
  CHECK(slots_read(path, s) && s[0].valid && s[1].valid);
  CHECK(s[1].gen > s[0].gen && s[1].term == 6 && s[0].term == 5);
  for (i = SECTOR; i < SECTOR + 36; i++) { /* the newer slot damaged */
    flip_byte(path, i);
    check_load(dir, 5, 0xabcdef, "slot 1 flipped");
    flip_byte(path, i);
  }
  for (i = 36; i < SECTOR; i++) flip_byte(path, i); /* padding: unread */
  for (i = SECTOR + 36; i < FILE3; i++) flip_byte(path, i);
  check_load(dir, 6, 0x1234, "padding flipped");
  lkvnet_hardstate_close(hs);
  /* version 2: every byte checked */
  v2_make(v2, 8, 77);
  put_file(path, v2, sizeof v2);
  check_load(dir, 8, 77, "version 2");
  for (i = 0; i < (long long)sizeof v2; i++) {
    flip_byte(path, i);
    CHECK(lkvnet_hardstate_load(dir, NULL, &t, &v, &err) == LKV_CORRUPTION);
    flip_byte(path, i);
  }
  /* version 1 (a term alone) reads as no vote */
  CHECK_OK(lkvnet_term_store(dir, NULL, 7, &err), &err);
  check_load(dir, 7, 0, "version 1");
  rmrf(dir);
}

/* 2. a store is one pwrite and one fdatasync of the file that is there,
 * nothing else (no open, no rename, no directory sync); only the fresh
 * node's first store writes the file aside and renames it */
static void test_store_cost(void) {
  char dir[] = "/tmp/lkv_hs_test_XXXXXX", path[600];
  lkv_faultenv *f = fault_env();
  lkvnet_hardstate *hs;
  struct stat st0, st;
  Calls c;
  uint64_t i;
  if (f == NULL || make_dir(dir) != 0) return;
  snprintf(path, sizeof path, "%s/term", dir);
  hs = open_hs(dir, lkv_faultenv_env(f), 0, 0);
  c = calls_now(f);
  store_ok(hs, 1, 0);
  check_calls(f, &c, 1, 1, 1, "the first store");
  CHECK(stat(path, &st0) == 0);
  for (i = 2; i < 12; i++) {
    char what[64];
    snprintf(what, sizeof what, "store %llu", (unsigned long long)i);
    c = calls_now(f);
    store_ok(hs, i, i % 3);
    check_calls(f, &c, 1, 1, 0, what);
    check_load(dir, i, i % 3, what);
  }
  /* the same file throughout, its size never changed */
  CHECK(stat(path, &st) == 0 && st.st_ino == st0.st_ino && st.st_size == FILE3);
  lkvnet_hardstate_close(hs);
  lkv_faultenv_free(f);
  rmrf(dir);
}

/* 3. many stores in a row, reopened now and then: each loads back, and
 * leaves the state before it whole in the other slot */
static void test_many_stores(void) {
  char dir[] = "/tmp/lkv_hs_test_XXXXXX", path[600];
  lkvnet_hardstate *hs;
  uint64_t i, pt = 0, pv = 0;
  if (make_dir(dir) != 0) return;
  snprintf(path, sizeof path, "%s/term", dir);
  hs = open_hs(dir, NULL, 0, 0);
  for (i = 1; i <= 300 && hs != NULL; i++) {
    uint64_t t = i / 2 + 1, v = (i * 7919) % 5; /* repeats some states */
    int now, before;
    store_ok(hs, t, v);
    check_load(dir, t, v, "many stores");
    if (i > 1) {
      Slot s[2];
      now = slot_of(path, t, v);
      before = slot_of(path, pt, pv);
      CHECK(slots_read(path, s) && now >= 0 && before >= 0);
      /* the new state in one slot, the one before it in the other */
      CHECK(now >= 0 && before >= 0 && s[now].gen > s[1 - now].gen &&
            s[1 - now].term == pt && s[1 - now].vote == pv);
    }
    pt = t;
    pv = v;
    if (i % 50 == 0) {
      lkvnet_hardstate_close(hs);
      hs = open_hs(dir, NULL, t, v);
    }
  }
  lkvnet_hardstate_close(hs);
  rmrf(dir);
}

/* 4. a crash after the pwrite and before its fdatasync: the state before
 * it (the slot written is dropped whole) or, if the write happened to
 * land, the new one; never anything else, and never a refusal to load */
static void test_crash_before_sync(void) {
  uint64_t n, seed;
  for (n = 1; n <= 4; n++) {
    for (seed = 0; seed < 8; seed++) {
      char dir[] = "/tmp/lkv_hs_test_XXXXXX";
      lkv_faultenv *f = fault_env();
      lkvnet_hardstate *hs;
      lkv_err err = {0};
      uint64_t i, t = 0, v = 0;
      int rc;
      if (f == NULL || make_dir(dir) != 0) return;
      hs = open_hs(dir, lkv_faultenv_env(f), 0, 0);
      for (i = 1; i <= n; i++) store_ok(hs, i, 100 + i);
      /* the store of n + 1 writes its slot, then the machine stops */
      lkv_faultenv_fail(f, LKV_FOP_SYNC, 1, EIO, "term", 0);
      rc = lkvnet_hardstate_store(hs, n + 1, 100 + n + 1, &err);
      CHECK(rc == LKV_IOERROR && strstr(err.msg, "fdatasync") != NULL);
      lkv_faultenv_crash(f);
      lkvnet_hardstate_close(hs);
      CHECK_OK(lkv_faultenv_power_loss(
                   f, seed == 0 ? LKV_LOSS_DROP : LKV_LOSS_PARTIAL, seed, &err),
               &err);
      CHECK_OK(lkvnet_hardstate_load(dir, NULL, &t, &v, &err), &err);
      if (seed == 0)
        CHECK(t == n && v == 100 + n);
      else
        CHECK((t == n && v == 100 + n) || (t == n + 1 && v == 100 + n + 1));
      lkv_faultenv_free(f);
      rmrf(dir);
    }
  }
}

/* 5. the newer slot torn (a byte flipped; half its record written): the
 * older state loads, and the next store goes into the torn slot, leaving
 * the older one whole */
static void test_torn_slot(void) {
  char dir[] = "/tmp/lkv_hs_test_XXXXXX", path[600];
  lkv_faultenv *f = fault_env();
  lkvnet_hardstate *hs;
  lkv_err err = {0};
  int newer, older, rc;
  if (f == NULL || make_dir(dir) != 0) return;
  snprintf(path, sizeof path, "%s/term", dir);
  hs = open_hs(dir, NULL, 0, 0);
  store_ok(hs, 3, 1);
  store_ok(hs, 4, 2);
  lkvnet_hardstate_close(hs);
  newer = slot_of(path, 4, 2);
  older = slot_of(path, 3, 1);
  CHECK(newer >= 0 && older >= 0 && newer != older);
  if (newer < 0 || older < 0) goto out;
  flip_byte(path, newer * SECTOR + 20); /* in its term */
  check_load(dir, 3, 1, "newer slot flipped");
  hs = open_hs(dir, NULL, 3, 1);
  store_ok(hs, 5, 3);
  check_load(dir, 5, 3, "store after a torn slot");
  CHECK(slot_of(path, 5, 3) == newer && slot_of(path, 3, 1) == older);
  lkvnet_hardstate_close(hs);
  /* half of a store's record reaches the disk, then its write fails */
  hs = open_hs(dir, lkv_faultenv_env(f), 5, 3);
  lkv_faultenv_fail(f, LKV_FOP_WRITE, 1, EIO, "term", LKV_FAULT_SHORT);
  rc = lkvnet_hardstate_store(hs, 6, 4, &err);
  CHECK(rc == LKV_IOERROR && strstr(err.msg, "write") != NULL);
  CHECK(lkv_faultenv_fired(f) == 1);
  CHECK(lkv_faultenv_writeback(f, path) == 0);
  lkvnet_hardstate_close(hs);
  check_load(dir, 5, 3, "half a record written");
  CHECK(slot_of(path, 5, 3) == newer);
out:
  lkv_faultenv_free(f);
  rmrf(dir);
}

/* 6. both slots damaged, or two of one generation: corruption naming the
 * file, at load and at open, and the file left as it was */
static void test_both_bad(void) {
  char dir[] = "/tmp/lkv_hs_test_XXXXXX", path[600];
  lkv_faultenv *f = fault_env();
  lkvnet_hardstate *hs;
  unsigned char b[FILE3], *now;
  lkv_err err = {0};
  uint64_t t, v;
  size_t n;
  int k;
  Calls c;
  if (f == NULL || make_dir(dir) != 0) return;
  snprintf(path, sizeof path, "%s/term", dir);
  for (k = 0; k < 4; k++) {
    memset(b, 0, sizeof b);
    slot_make(b, 7, 2, 1);
    slot_make(b + SECTOR, k == 3 ? 7 : 8, 3, 1);
    if (k == 0) { /* a magic, a generation */
      b[1] ^= 1;
      b[SECTOR + 9] ^= 1;
    } else if (k == 1) { /* both checksums */
      b[33] ^= 1;
      b[SECTOR + 35] ^= 0x80;
    } else if (k == 2) { /* never written */
      memset(b, 0, sizeof b);
    }
    put_file(path, b, sizeof b);
    err.msg[0] = '\0';
    CHECK(lkvnet_hardstate_load(dir, NULL, &t, &v, &err) == LKV_CORRUPTION);
    CHECK(strstr(err.msg, path) != NULL);
    CHECK(strstr(err.msg, k == 3 ? "generation" : "slot") != NULL);
    c = calls_now(f);
    hs = (lkvnet_hardstate *)1;
    CHECK(lkvnet_hardstate_open(dir, lkv_faultenv_env(f), &hs, &t, &v, &err) ==
          LKV_CORRUPTION);
    CHECK(hs == NULL && strstr(err.msg, path) != NULL);
    check_unchanged(f, &c, "open refused");
    now = slurp(path, &n);
    CHECK(now != NULL && n == sizeof b && memcmp(now, b, n) == 0);
    free(now);
  }
  /* a file of any other size is no version 3 */
  memset(b, 0, sizeof b);
  slot_make(b, 1, 2, 3);
  put_file(path, b, FILE3 - 1);
  CHECK(lkvnet_hardstate_load(dir, NULL, &t, &v, &err) == LKV_CORRUPTION);
  lkv_faultenv_free(f);
  rmrf(dir);
}

/* 7. a failed fdatasync, then a retry that succeeds: the retry's state
 * loads, after a power loss too, whether the failed write reached the
 * disk or not, and the slot of the last state stored is not touched */
static void test_failed_sync_retry(void) {
  int landed;
  uint64_t seed;
  for (landed = 0; landed < 2; landed++) {
    for (seed = 0; seed < 6; seed++) {
      char dir[] = "/tmp/lkv_hs_test_XXXXXX", path[600];
      lkv_faultenv *f = fault_env();
      lkvnet_hardstate *hs;
      lkv_err err = {0};
      int kept;
      if (f == NULL || make_dir(dir) != 0) return;
      snprintf(path, sizeof path, "%s/term", dir);
      hs = open_hs(dir, lkv_faultenv_env(f), 0, 0);
      store_ok(hs, 1, 1);
      store_ok(hs, 2, 2); /* both slots written */
      kept = slot_of(path, 2, 2);
      lkv_faultenv_fail(f, LKV_FOP_SYNC, 1, EIO, "term", 0);
      CHECK(lkvnet_hardstate_store(hs, 3, 3, &err) == LKV_IOERROR);
      if (landed) CHECK(lkv_faultenv_writeback(f, path) == 0);
      CHECK(slot_of(path, 2, 2) == kept);
      store_ok(hs, 4, 4);
      check_load(dir, 4, 4, "the retry");
      CHECK(kept >= 0 && slot_of(path, 2, 2) == kept);
      lkvnet_hardstate_close(hs);
      CHECK_OK(lkv_faultenv_power_loss(
                   f, seed == 0 ? LKV_LOSS_DROP : (lkv_loss_mode)(seed % 4),
                   seed, &err),
               &err);
      check_load(dir, 4, 4, "the retry after a power loss");
      /* the next store goes into the other slot, over the one kept */
      hs = open_hs(dir, lkv_faultenv_env(f), 4, 4);
      store_ok(hs, 5, 5);
      check_load(dir, 5, 5, "after the retry");
      CHECK(slot_of(path, 5, 5) == kept);
      lkvnet_hardstate_close(hs);
      lkv_faultenv_free(f);
      rmrf(dir);
    }
  }
}

/* 8. a retry that fails too, torn (half its record written): what the
 * disk can then hold is the last state stored, or the first failed
 * store's if that landed, never the state before them (the retry went
 * into the slot the first one failed in, not over the last state stored) */
static void test_torn_retry(void) {
  int how;
  uint64_t seed;
  for (how = 0; how < 2; how++) {
    for (seed = 1; seed <= 24; seed++) {
      char dir[] = "/tmp/lkv_hs_test_XXXXXX", path[600];
      lkv_faultenv *f = fault_env();
      lkvnet_hardstate *hs;
      lkv_err err = {0};
      uint64_t t = 0, v = 0;
      if (f == NULL || make_dir(dir) != 0) return;
      snprintf(path, sizeof path, "%s/term", dir);
      hs = open_hs(dir, lkv_faultenv_env(f), 0, 0);
      store_ok(hs, 1, 1);
      store_ok(hs, 2, 2);
      /* the store of 3 fails at its write (how 0) or its fdatasync */
      lkv_faultenv_fail(f, how == 0 ? LKV_FOP_WRITE : LKV_FOP_SYNC, 1, EIO,
                        "term", 0);
      CHECK(lkvnet_hardstate_store(hs, 3, 3, &err) == LKV_IOERROR);
      lkv_faultenv_fail(f, LKV_FOP_WRITE, 1, EIO, "term", LKV_FAULT_SHORT);
      CHECK(lkvnet_hardstate_store(hs, 4, 4, &err) == LKV_IOERROR);
      lkv_faultenv_crash(f);
      lkvnet_hardstate_close(hs);
      CHECK_OK(lkv_faultenv_power_loss(f, LKV_LOSS_PARTIAL, seed, &err), &err);
      CHECK_OK(lkvnet_hardstate_load(dir, NULL, &t, &v, &err), &err);
      if (!((t == 2 && v == 2) || (how == 1 && t == 3 && v == 3)))
        fprintf(stderr, "torn retry (%d, seed %llu): term %llu vote %llu\n",
                how, (unsigned long long)seed, (unsigned long long)t,
                (unsigned long long)v);
      CHECK((t == 2 && v == 2) || (how == 1 && t == 3 && v == 3));
      lkv_faultenv_free(f);
      rmrf(dir);
    }
  }
}

/* 9. versions 1 and 2 (and no file) are read, and converted by the first
 * store, once, through a write aside and a rename; a failed conversion
 * leaves the old file, and its retry converts */
static void test_convert(void) {
  int k;
  for (k = 0; k < 3; k++) {
    char dir[] = "/tmp/lkv_hs_test_XXXXXX", path[600];
    lkv_faultenv *f = fault_env();
    lkvnet_hardstate *hs;
    lkv_err err = {0};
    uint64_t t0 = k == 2 ? 0 : 7, v0 = k == 1 ? 9 : 0;
    Calls c;
    if (f == NULL || make_dir(dir) != 0) return;
    snprintf(path, sizeof path, "%s/term", dir);
    if (k == 0) CHECK_OK(lkvnet_term_store(dir, NULL, 7, &err), &err);
    if (k == 1) {
      unsigned char v2[28];
      v2_make(v2, 7, 9);
      put_file(path, v2, sizeof v2);
    }
    hs = open_hs(dir, lkv_faultenv_env(f), t0, v0);
    CHECK(k == 2 || file_size(path) == (k == 0 ? 20 : 28));
    /* the conversion's rename fails: the old file stays */
    lkv_faultenv_fail(f, LKV_FOP_RENAME, 1, EIO, "term", 0);
    CHECK(lkvnet_hardstate_store(hs, 8, 3, &err) == LKV_IOERROR);
    check_load(dir, t0, v0, "a failed conversion");
    c = calls_now(f);
    store_ok(hs, 8, 4);
    check_calls(f, &c, 1, 1, 1, "the conversion");
    check_load(dir, 8, 4, "converted");
    CHECK(file_size(path) == FILE3 && slot_of(path, 8, 4) == 0);
    c = calls_now(f);
    store_ok(hs, 9, 5);
    check_calls(f, &c, 1, 1, 0, "the store after the conversion");
    check_load(dir, 9, 5, "after the conversion");
    lkvnet_hardstate_close(hs);
    /* it survives a power loss, as the version-3 file it is now */
    CHECK_OK(lkv_faultenv_power_loss(f, LKV_LOSS_DROP, 0, &err), &err);
    check_load(dir, 9, 5, "converted, after a power loss");
    lkv_faultenv_free(f);
    rmrf(dir);
  }
}

/* 10. a process that died before a store's fdatasync returned, or
 * between the creation's rename and the directory's fsync, left a state
 * in the page cache that the next open reads: the open makes it durable
 * before the node acts on it, so a power loss after it loads it too */
static void test_open_syncs(void) {
  int k;
  for (k = 0; k < 3; k++) {
    char dir[] = "/tmp/lkv_hs_test_XXXXXX";
    lkv_faultenv *f = fault_env();
    lkvnet_hardstate *hs;
    lkv_err err = {0};
    if (f == NULL || make_dir(dir) != 0) return;
    hs = open_hs(dir, lkv_faultenv_env(f), 0, 0);
    if (k == 0) { /* the creation's directory fsync fails */
      lkv_faultenv_fail(f, LKV_FOP_SYNCDIR, 1, EIO, NULL, 0);
    } else { /* a store's fdatasync fails (k 2: of the slot 1 was in) */
      store_ok(hs, 1, 1);
      if (k == 2) store_ok(hs, 2, 2);
      lkv_faultenv_fail(f, LKV_FOP_SYNC, 1, EIO, "term", 0);
    }
    CHECK(lkvnet_hardstate_store(hs, 7, 7, &err) == LKV_IOERROR);
    lkvnet_hardstate_close(hs); /* the process dies; the machine runs on */
    hs = open_hs(dir, lkv_faultenv_env(f), 7, 7);
    lkvnet_hardstate_close(hs);
    CHECK_OK(lkv_faultenv_power_loss(f, LKV_LOSS_DROP, 0, &err), &err);
    check_load(dir, 7, 7, "read at open, then a power loss");
    lkv_faultenv_free(f);
    rmrf(dir);
  }
}

/* }====================================================================== */

static const struct {
  const char *name;
  void (*fn)(void);
} tests[] = {
    {"round_trip", test_round_trip},
    {"store_cost", test_store_cost},
    {"many_stores", test_many_stores},
    {"crash_before_sync", test_crash_before_sync},
    {"torn_slot", test_torn_slot},
    {"both_bad", test_both_bad},
    {"failed_sync_retry", test_failed_sync_retry},
    {"torn_retry", test_torn_retry},
    {"convert", test_convert},
    {"open_syncs", test_open_syncs},
};

/* hardstate_test [NAME]: every test, or those whose name contains NAME
 * (a mutation row names the one that must catch it) */
int main(int argc, char **argv) {
  size_t i, ran = 0;
  for (i = 0; i < sizeof tests / sizeof tests[0]; i++)
    if (argc < 2 || strstr(tests[i].name, argv[1]) != NULL) {
      tests[i].fn();
      ran++;
    }
  CHECK(ran > 0);
  TEST_MAIN_END();
}
