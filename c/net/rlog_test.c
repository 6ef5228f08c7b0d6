/* rlog_test.c - the replication log (rlog.c): append and replay with
 * binary keys and large values, the byte format of docs/replication.md,
 * term_at, reading and decoding ranges of frames, a follower's
 * append_entry, truncate, rewrite (compaction), torn and corrupt tails, the
 * term file, and the syncer under concurrent appends, truncates and
 * rewrites, a failed write, and compaction in the background. Each test
 * runs in its own directory under /tmp. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "faultenv.h"
#include "err.h"
#include "rlog.h"
#include "rng.h"
#include "test.h"

/* {======================================================================
** Helpers: directories, files, recorded entries
** ======================================================================= */

static int make_dir(char *tmpl) {
  if (mkdtemp(tmpl) == NULL) {
    perror("mkdtemp");
    lkv_test_failures++;
    return -1;
  }
  return 0;
}

static void rmrf(const char *d) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
  if (system(cmd) != 0) fprintf(stderr, "cleanup of %s failed\n", d);
}

static void log_path(char *out, size_t n, const char *dir, const char *name) {
  snprintf(out, n, "%s/%s", dir, name);
}

static long long file_size(const char *path) {
  struct stat st;
  if (stat(path, &st) != 0) return -1;
  return (long long)st.st_size;
}

static int exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

static void flip_byte(const char *path, long long off) {
  int fd = open(path, O_RDWR);
  unsigned char b;
  CHECK(fd >= 0);
  if (fd < 0) return;
  CHECK(pread(fd, &b, 1, (off_t)off) == 1);
  b ^= 0x20;
  CHECK(pwrite(fd, &b, 1, (off_t)off) == 1);
  close(fd);
}

static void chop(const char *path, long long by) {
  CHECK(truncate(path, (off_t)(file_size(path) - by)) == 0);
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* Poll until the durable index reaches idx (at most ~20 s). */
static int wait_durable(lkvnet_rlog *r, uint64_t idx) {
  int i;
  for (i = 0; i < 20000; i++) {
    if (lkvnet_rlog_durable_index(r) >= idx) return 1;
    sleep_ms(1);
  }
  fprintf(stderr, "durable index stuck at %llu, want %llu\n",
          (unsigned long long)lkvnet_rlog_durable_index(r),
          (unsigned long long)idx);
  return 0;
}

/* Entries the replay callback saw, with copies of their bytes. */
typedef struct Recs {
  lkvnet_entry *v;
  size_t n, cap;
} Recs;

static int record(void *ctx, const lkvnet_entry *e, lkv_err *err) {
  Recs *rs = ctx;
  lkvnet_entry c = *e;
  char *k = malloc(e->klen + 1), *val = malloc(e->vlen + 1);
  (void)err;
  if (rs->n == rs->cap) {
    size_t nc = rs->cap ? rs->cap * 2 : 64;
    lkvnet_entry *nv = realloc(rs->v, nc * sizeof *nv);
    if (nv == NULL) abort();
    rs->v = nv;
    rs->cap = nc;
  }
  if (k == NULL || val == NULL) abort();
  if (e->klen) memcpy(k, e->key, e->klen);
  if (e->vlen) memcpy(val, e->val, e->vlen);
  k[e->klen] = '\0'; /* the checks read keys as strings */
  val[e->vlen] = '\0';
  c.key = k;
  c.val = val;
  rs->v[rs->n++] = c;
  return LKV_OK;
}

static void recs_free(Recs *rs) {
  size_t i;
  for (i = 0; i < rs->n; i++) {
    free((char *)rs->v[i].key);
    free((char *)rs->v[i].val);
  }
  free(rs->v);
  memset(rs, 0, sizeof *rs);
}

/* a equals b: term, index, op and the key and value bytes. */
static int same_entry(const lkvnet_entry *a, const lkvnet_entry *b) {
  int ok = a->term == b->term && a->index == b->index && a->op == b->op &&
           a->klen == b->klen && a->vlen == b->vlen &&
           (a->klen == 0 || memcmp(a->key, b->key, a->klen) == 0) &&
           (a->vlen == 0 || memcmp(a->val, b->val, a->vlen) == 0);
  if (!ok)
    fprintf(stderr, "entry differs: (t%llu i%llu op%d k%zu v%zu) vs "
            "(t%llu i%llu op%d k%zu v%zu)\n", (unsigned long long)a->term,
            (unsigned long long)a->index, a->op, a->klen, a->vlen,
            (unsigned long long)b->term, (unsigned long long)b->index, b->op,
            b->klen, b->vlen);
  return ok;
}

static lkvnet_rlog *open_log(const char *dir, Recs *rs) {
  lkvnet_rlog *r = NULL;
  lkv_err err = {0};
  CHECK_OK(lkvnet_rlog_open(dir, NULL, -1, rs ? record : NULL, rs, &r, &err), &err);
  return r;
}

static void close_log(lkvnet_rlog *r) {
  lkv_err err = {0};
  if (r != NULL) CHECK_OK(lkvnet_rlog_close(r, &err), &err);
}

/* Append and return the index (0 on failure). */
static uint64_t app(lkvnet_rlog *r, uint64_t term, int op, const char *k,
                    size_t kl, const char *v, size_t vl) {
  uint64_t idx = 0;
  lkv_err err = {0};
  CHECK_OK(lkvnet_rlog_append(r, term, op, k, kl, v, vl, &idx, &err), &err);
  return idx;
}

static lkvnet_entry mk(uint64_t term, uint64_t index, int op, const char *k,
                       size_t kl, const char *v, size_t vl) {
  lkvnet_entry e;
  e.term = term;
  e.index = index;
  e.op = op;
  e.key = k;
  e.klen = kl;
  e.val = v;
  e.vlen = vl;
  return e;
}

/* A reference CRC-32C, bitwise, independent of rlog.c's table. */
static uint32_t ref_crc(uint32_t crc, const unsigned char *p, size_t n) {
  int j;
  crc = ~crc;
  while (n--) {
    crc ^= *p++;
    for (j = 0; j < 8; j++) crc = (crc & 1) ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
  }
  return ~crc;
}

static uint32_t le32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
         (uint32_t)p[3] << 24;
}
static uint64_t le64(const unsigned char *p) {
  return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

/* }====================================================================== */

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
  CHECK(file_size(path) == LKVNET_RLOG_HEADER_SIZE);
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
    unsigned char h[LKVNET_RLOG_HEADER_SIZE + 8 + 32];
    int fd = open(path, O_RDONLY);
    CHECK(fd >= 0 && read(fd, h, sizeof h) == (ssize_t)sizeof h);
    if (fd >= 0) close(fd);
    CHECK(memcmp(h, "LUNAKVRL", 8) == 0);
    CHECK(le32(h + 8) == 1 && le32(h + 12) == 0);
    CHECK(le64(h + 16) == 0 && le64(h + 24) == 0);
    CHECK(le32(h + 32) == ref_crc(0, h, 32) && le32(h + 36) == 0);
    /* the first frame: length 25 + 3 + 4, crc of length then payload */
    {
      const unsigned char *f = h + 40;
      CHECK(le32(f) == 32);
      CHECK(le32(f + 4) == ref_crc(ref_crc(0, f, 4), f + 8, 32));
      CHECK(le64(f + 8) == 1 && le64(f + 16) == 1 && f[24] == 1);
      CHECK(le32(f + 25) == 3 && le32(f + 29) == 4);
      CHECK(memcmp(f + 33, k1, 3) == 0 && memcmp(f + 36, v1, 4) == 0);
    }
  }
  /* the worked example: set "a" = "hi", term 1, index 1: 36 bytes */
  {
    static const unsigned char ex[] = {
        0x1c, 0, 0, 0, 0, 0, 0, 0, /* length 28, crc below */
        1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1,
        1, 0, 0, 0, 2, 0, 0, 0, 'a', 'h', 'i'};
    unsigned char got[36], exp[36];
    lkvnet_entry e = mk(1, 1, LKVNET_OP_SET, "a", 1, "hi", 2);
    CHECK(lkvnet_rlog_frame_size(&e) == 36);
    memcpy(exp, ex, 36);
    {
      uint32_t c = ref_crc(ref_crc(0, exp, 4), exp + 8, 28);
      exp[4] = (unsigned char)c;
      exp[5] = (unsigned char)(c >> 8);
      exp[6] = (unsigned char)(c >> 16);
      exp[7] = (unsigned char)(c >> 24);
    }
    lkvnet_rlog_encode(got, &e);
    CHECK(memcmp(got, exp, 36) == 0);
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
  close_log(r);
  recs_free(&rs);
  r = open_log(dir, &rs);
  CHECK(rs.n == 7 && rs.n > 6 && rs.v[6].index == 7 && rs.v[6].term == 3);
  close_log(r);
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
  static const size_t maxes[] = {0, 1, 60, 100, 136, 137, 300, 500, 1000,
                                 100000};
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
    want[i] = mk(1 + i / 7, i + 1, i % 5 == 4 ? LKVNET_OP_DELETE : LKVNET_OP_SET,
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
  log_path(path, sizeof path, dir, LKVNET_RLOG_FILE);
  r = open_log(dir, NULL);
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
  CHECK(file_size(path) > sz);
  lkvnet_rlog_stats_get(r, &st);
  CHECK(st.last_index == 6 && st.last_term == 3);
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
  log_path(path, sizeof path, dir, LKVNET_RLOG_FILE);
  r = open_log(dir, NULL);
  if (r == NULL) goto out;
  sizes[0] = file_size(path);
  for (i = 1; i <= 10; i++) {
    snprintf(k, sizeof k, "old%llu", (unsigned long long)i);
    CHECK(app(r, 1, LKVNET_OP_SET, k, strlen(k), "old-value", 9) == i);
    sizes[i] = file_size(path);
  }
  CHECK(wait_durable(r, 10));
  CHECK_OK(lkvnet_rlog_truncate(r, 10, &err), &err); /* at last: nothing */
  CHECK(file_size(path) == sizes[10]);

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
  close_log(r);
  recs_free(&rs);
  r = open_log(dir, &rs);
  CHECK(rs.n == 1 && rs.n > 0 && rs.v[0].index == 1 && rs.v[0].term == 4);
  close_log(r);
out:
  recs_free(&rs);
  rmrf(dir);
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
  log_path(path, sizeof path, dir, LKVNET_RLOG_FILE);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  r = open_log(dir, NULL);
  if (r == NULL) goto out;
  for (i = 1; i <= 100; i++) {
    snprintf(k, sizeof k, "key%03llu", (unsigned long long)i);
    CHECK(app(r, i <= 50 ? 1 : 3, LKVNET_OP_SET, k, 6, k, 6) == i);
  }
  CHECK(wait_durable(r, 100));
  CHECK(lkvnet_rlog_term_at(r, 60, &t60) == LKV_OK && t60 == 3);
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
    expect_size = LKVNET_RLOG_HEADER_SIZE + 40 * (long long)lkvnet_rlog_frame_size(&w);
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
  if (r != NULL) {
    lkvnet_rlog_stats_get(r, &st);
    CHECK(st.base_index == 500 && st.last_index == 501);
  }
  close_log(r);
  CHECK(!exists(tmp));
out:
  recs_free(&rs);
  rmrf(dir);
}

/* 7. torn and corrupt tails are cut; a damaged header fails the open */
static void test_torn_tail(void) {
  char dir[] = "/tmp/lkv_rlog_test_XXXXXX", path[512], k[16];
  static const long long header_spots[] = {0, 3, 7, 8, 11, 12, 15, 16, 23,
                                           24, 31, 32, 35};
  lkvnet_rlog *r;
  lkvnet_rlog_stats st;
  lkv_err err = {0};
  Recs rs = {0};
  long long full, f5, hs;
  uint64_t i;
  size_t s;
  if (make_dir(dir) != 0) return;
  log_path(path, sizeof path, dir, LKVNET_RLOG_FILE);
  r = open_log(dir, NULL);
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
  r = open_log(dir, &rs);
  if (r == NULL) goto out;
  CHECK(rs.n == 4 && rs.n > 0 && rs.v[rs.n - 1].index == 4);
  lkvnet_rlog_stats_get(r, &st);
  CHECK(st.dropped_bytes == (uint64_t)(f5 - 3) && st.dropped_why[0] != '\0');
  CHECK(st.last_index == 4 && st.durable_index == 4);
  CHECK(file_size(path) == full - f5);
  CHECK(app(r, 2, LKVNET_OP_SET, "key5", 4, "some value bytes", 16) == 5);
  close_log(r);
  recs_free(&rs);
  r = open_log(dir, &rs);
  CHECK(rs.n == 5 && rs.n > 4 && rs.v[4].term == 2);
  if (r != NULL) {
    lkvnet_rlog_stats_get(r, &st);
    CHECK(st.dropped_bytes == 0);
  }
  close_log(r);
  recs_free(&rs);
  CHECK(file_size(path) == full);

  /* chopped inside the last frame's 8-byte header */
  chop(path, f5 - 3);
  r = open_log(dir, &rs);
  CHECK(rs.n == 4);
  if (r != NULL) {
    lkvnet_rlog_stats_get(r, &st);
    CHECK(st.dropped_bytes == 3 && st.last_index == 4);
    CHECK(app(r, 2, LKVNET_OP_SET, "key5", 4, "some value bytes", 16) == 5);
  }
  close_log(r);
  recs_free(&rs);
  CHECK(file_size(path) == full);

  /* a flipped byte in the last frame's payload, then in its length */
  flip_byte(path, full - 5);
  r = open_log(dir, &rs);
  CHECK(rs.n == 4);
  if (r != NULL) {
    lkvnet_rlog_stats_get(r, &st);
    CHECK(st.dropped_bytes == (uint64_t)f5 && st.dropped_why[0] != '\0');
    CHECK(file_size(path) == full - f5);
    CHECK(app(r, 2, LKVNET_OP_SET, "key5", 4, "some value bytes", 16) == 5);
  }
  close_log(r);
  recs_free(&rs);
  flip_byte(path, full - f5 + 1); /* length field: 0x20 << 8 more bytes */
  r = open_log(dir, &rs);
  CHECK(rs.n == 4);
  if (r != NULL) {
    lkvnet_rlog_stats_get(r, &st);
    CHECK(st.dropped_bytes == (uint64_t)f5);
    CHECK(app(r, 2, LKVNET_OP_SET, "key5", 4, "some value bytes", 16) == 5);
  }
  close_log(r);
  recs_free(&rs);
  CHECK(file_size(path) == full);

  /* garbage after the last frame (e.g. zeros from a preallocation) */
  {
    int fd = open(path, O_WRONLY | O_APPEND);
    static const char zeros[100];
    CHECK(fd >= 0 && write(fd, zeros, sizeof zeros) == (ssize_t)sizeof zeros);
    if (fd >= 0) close(fd);
  }
  r = open_log(dir, &rs);
  CHECK(rs.n == 5);
  if (r != NULL) {
    lkvnet_rlog_stats_get(r, &st);
    CHECK(st.dropped_bytes == 100 && st.last_index == 5);
  }
  close_log(r);
  recs_free(&rs);
  CHECK(file_size(path) == full);

  /* any flipped byte of the checksummed header fails the open */
  for (s = 0; s < sizeof header_spots / sizeof header_spots[0]; s++) {
    int rc;
    r = NULL;
    flip_byte(path, header_spots[s]);
    err.code = LKV_OK;
    err.msg[0] = '\0';
    rc = lkvnet_rlog_open(dir, NULL, -1, record, &rs, &r, &err);
    if (rc != LKV_CORRUPTION)
      fprintf(stderr, "header byte %lld flipped: open -> %d\n",
              header_spots[s], rc);
    CHECK(rc == LKV_CORRUPTION && r == NULL && err.msg[0] != '\0');
    CHECK(rs.n == 0);
    if (r != NULL) close_log(r);
    recs_free(&rs);
    flip_byte(path, header_spots[s]); /* undo */
    CHECK(file_size(path) == full); /* a failed open cuts nothing */
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
      CHECK(lkvnet_rlog_open(dir2, NULL, -1, NULL, NULL, &r, &err) == LKV_CORRUPTION);
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
      CHECK_OK(lkvnet_rlog_compact_begin(r, base, t, last > base + 5
                                         ? last - 5 : base, NULL, NULL, &err),
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

/* 11. compaction in the background: the owner goes on appending,
 * reading and cutting entries past the stable index while the copier is
 * held in prepare; a second compaction is refused; the outcome is polled
 * once; the cut log and the appended entries survive a reopen. The prepare
 * waits for a release that comes only after lkvnet_rlog_compact_begin
 * has returned and the appends are made: a compaction that ran on the
 * caller's thread would time out here (and fail the checks) instead. */
typedef struct Gate {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int open, entered, timed_out, fail;
} Gate;

static void gate_open(Gate *g);

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

static void gate_init(Gate *g) {
  memset(g, 0, sizeof *g);
  pthread_mutex_init(&g->mu, NULL);
  pthread_cond_init(&g->cv, NULL);
}

static void gate_open(Gate *g) {
  pthread_mutex_lock(&g->mu);
  g->open = 1;
  pthread_cond_broadcast(&g->cv);
  pthread_mutex_unlock(&g->mu);
}

static void gate_destroy(Gate *g) {
  pthread_mutex_destroy(&g->mu);
  pthread_cond_destroy(&g->cv);
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
  log_path(path, sizeof path, dir, LKVNET_RLOG_FILE);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  gate_init(&g);
  r = open_log(dir, NULL);
  if (r == NULL) goto out;
  for (i = 1; i <= 100; i++) {
    snprintf(k, sizeof k, "key%03llu", (unsigned long long)i);
    CHECK(app(r, i <= 50 ? 1 : 3, LKVNET_OP_SET, k, 6, k, 6) == i);
  }
  CHECK(wait_durable(r, 100));
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
  for (i = 61; buf && lkvnet_rlog_decode(buf, len, &off, &e, why,
                                         sizeof why) == 1; i++)
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
    CHECK(rs.v[i].index == 61 + i &&
          rs.v[i].term == (i < 40 ? 3u : i < 50 ? 4u : 5u));
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
  lkvnet_rlog_stats_get(r, &st);
  CHECK(st.base_index == 100 && st.last_index == 105);

  /* a failed prepare leaves the log as it was; the next one may try */
  gate_destroy(&g);
  gate_init(&g);
  g.open = 1;
  g.fail = 1;
  CHECK_OK(lkvnet_rlog_compact_begin(r, 103, 5, 105, gate_prepare, &g, &err),
           &err);
  err.msg[0] = '\0';
  CHECK(poll_until_done(r, &err) == LKVNET_COMPACT_FAILED);
  CHECK(strstr(err.msg, "the engine refused") != NULL);
  CHECK(!exists(tmp));
  lkvnet_rlog_stats_get(r, &st);
  CHECK(st.base_index == 100 && st.last_index == 105);
  CHECK(lkvnet_rlog_error(r, &err) == LKV_OK);
  g.fail = 0;
  /* cut everything: the log continues after its base */
  CHECK_OK(lkvnet_rlog_compact_begin(r, 105, 5, 105, gate_prepare, &g, &err),
           &err);
  CHECK(poll_until_done(r, &err) == LKVNET_COMPACT_DONE);
  CHECK(file_size(path) == LKVNET_RLOG_HEADER_SIZE);
  CHECK(app(r, 6, LKVNET_OP_SET, "k", 1, "v", 1) == 106);

  /* close while the copier is held: close waits, the cut is kept */
  gate_destroy(&g);
  gate_init(&g);
  CHECK_OK(lkvnet_rlog_compact_begin(r, 105, 5, 106, gate_prepare, &g, &err),
           &err);
  {
    pthread_t th;
    CHECK(pthread_create(&th, NULL, gate_open_later, &g) ==
          0);
    close_log(r);
    pthread_join(th, NULL);
  }
  CHECK(g.timed_out == 0);
  recs_free(&rs);
  r = open_log(dir, &rs);
  CHECK(rs.n == 1 && rs.v != NULL && rs.v[0].index == 106);
  if (r != NULL) {
    lkvnet_rlog_stats_get(r, &st);
    CHECK(st.base_index == 105 && st.last_index == 106);
  }
  close_log(r);
  CHECK(!exists(tmp));
out:
  gate_destroy(&g);
  recs_free(&rs);
  rmrf(dir);
}

/* 10. a failed write(2) (the file size limit, mid-frame) is cut back out:
 * no partial frame, the index is not used up, the log reopens cleanly;
 * and, by the stickiness rule (rlog.h), the failure is that append's
 * only: the log is not stuck and the next append takes the same index */
static void test_write_failure(void) {
  char dir[] = "/tmp/lkv_rlog_test_XXXXXX", path[512];
  static char val[4096];
  lkvnet_rlog *r;
  lkv_err err = {0};
  Recs rs = {0};
  struct rlimit old, lim;
  long long sz;
  uint64_t idx = 0;
  int rc;
  if (make_dir(dir) != 0) return;
  log_path(path, sizeof path, dir, LKVNET_RLOG_FILE);
  r = open_log(dir, NULL);
  if (r == NULL) goto out;
  CHECK(app(r, 1, LKVNET_OP_SET, "a", 1, "1", 1) == 1);
  CHECK(app(r, 1, LKVNET_OP_SET, "b", 1, "2", 1) == 2);
  sz = file_size(path);
  signal(SIGXFSZ, SIG_IGN);
  CHECK(getrlimit(RLIMIT_FSIZE, &old) == 0);
  lim = old;
  lim.rlim_cur = (rlim_t)sz + 100; /* the next frame stops half-way */
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
      rc = lkvnet_rlog_append(r, term, LKVNET_OP_SET, k, strlen(k), v, vl,
                              &got, &err);
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
  if (rc == LKV_OK) m->term_acked = 1;
  else saw_failure(m, rc, &err);
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
  if (rc == LKV_OK) m->term_acked = 2;
  else saw_failure(m, rc, &err);
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
      fprintf(stderr, "%s: the log mixes entries of different states\n",
              what);
      bad++;
    }
  }
  if (st.base_index < m->min_base || st.last_index < m->acked) {
    fprintf(stderr, "%s: log holds (%llu, %llu]; durable was %llu, base at "
            "least %llu\n", what, (unsigned long long)st.base_index,
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
      fprintf(stderr, "%s: entry %llu holds serial %u (%s; durable %llu, "
              "current %u)\n", what, (unsigned long long)e->index, serial,
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
  log_path(path, sizeof path, dir, LKVNET_RLOG_FILE);
  memset(val, 'v', sizeof val);
  r = open_log(dir, NULL);
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
      lkv_faultenv_fail(f, kinds[k].op, nth, kinds[k].err, dir,
                        kinds[k].flags);
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
  snprintf(what, sizeof what, "power loss at call %llu of %llu (mode %d, "
           "seed %llu)", (unsigned long long)at, (unsigned long long)total,
           mode, (unsigned long long)seed);
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
  test_append_replay();
  test_term_at();
  test_read_decode();
  test_append_entry();
  test_truncate();
  test_rewrite();
  test_torn_tail();
  test_term_file();
  test_concurrency();
  test_write_failure();
  test_compact_background();
  test_fault_walk();
  test_power_loss();
  test_read_failure();
  test_open_syncs();
  TEST_MAIN_END();
}
