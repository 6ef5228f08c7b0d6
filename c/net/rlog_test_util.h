/* rlog_test_util.h - what the replication log's tests share
 * (rlog_test.c, rlog_compact_test.c, rlog_fault_test.c): scratch
 * directories and files, a log opened with a replay recorder, appends that
 * check themselves, a reference CRC-32C and version 1 frames built by
 * hand, and a gate that holds a thread of the log until the test opens
 * it. Everything is static inline: each test program uses a
 * part of it. */
#ifndef LKVNET_RLOG_TEST_UTIL_H
#define LKVNET_RLOG_TEST_UTIL_H

#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "rlog.h"
#include "test.h"

static inline int make_dir(char *tmpl) {
  if (mkdtemp(tmpl) == NULL) {
    perror("mkdtemp");
    lkv_test_failures++;
    return -1;
  }
  return 0;
}

static inline void log_path(char *out, size_t n, const char *dir,
                            const char *name) {
  snprintf(out, n, "%s/%s", dir, name);
}

static inline long long file_size(const char *path) {
  struct stat st;
  if (stat(path, &st) != 0) return -1;
  return (long long)st.st_size;
}

static inline int exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

static inline void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* Poll until the durable index reaches idx (at most ~20 s). */
static inline int wait_durable(lkvnet_rlog *r, uint64_t idx) {
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

static inline int record(void *ctx, const lkvnet_entry *e, lkv_err *err) {
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

static inline void recs_free(Recs *rs) {
  size_t i;
  for (i = 0; i < rs->n; i++) {
    free((char *)rs->v[i].key);
    free((char *)rs->v[i].val);
  }
  free(rs->v);
  memset(rs, 0, sizeof *rs);
}

static inline lkvnet_rlog *open_log(const char *dir, Recs *rs) {
  lkvnet_rlog *r = NULL;
  lkv_err err = {0};
  CHECK_OK(lkvnet_rlog_open(dir, NULL, -1, rs ? record : NULL, rs, &r, &err),
           &err);
  return r;
}

/* A log opened in the new scratch directory dir, nothing to replay, with
 * its file's name in path (n bytes). */
static inline lkvnet_rlog *open_new_log(const char *dir, char *path, size_t n) {
  log_path(path, n, dir, LKVNET_RLOG_FILE);
  return open_log(dir, NULL);
}

static inline void close_log(lkvnet_rlog *r) {
  lkv_err err = {0};
  if (r != NULL) CHECK_OK(lkvnet_rlog_close(r, &err), &err);
}

/* Append and return the index (0 on failure). */
static inline uint64_t app(lkvnet_rlog *r, uint64_t term, int op, const char *k,
                           size_t kl, const char *v, size_t vl) {
  uint64_t idx = 0;
  lkv_err err = {0};
  CHECK_OK(lkvnet_rlog_append(r, term, op, k, kl, v, vl, &idx, &err), &err);
  return idx;
}

static inline lkvnet_entry mk(uint64_t term, uint64_t index, int op,
                              const char *k, size_t kl, const char *v,
                              size_t vl) {
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

/* A reference CRC-32C, bitwise, independent of c/util's table-driven one. */
static inline uint32_t ref_crc(uint32_t crc, const unsigned char *p, size_t n) {
  int j;
  crc = ~crc;
  while (n--) {
    crc ^= *p++;
    for (j = 0; j < 8; j++)
      crc = (crc & 1) ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
  }
  return ~crc;
}

/* A version 1 frame (docs/replication.md: no prev_term) of e at p. */
static inline size_t v1_frame(unsigned char *p, const lkvnet_entry *e) {
  size_t len = 25 + e->klen + e->vlen, i;
  uint32_t c;
  for (i = 0; i < 4; i++) p[i] = (unsigned char)(len >> (8 * i));
  for (i = 0; i < 8; i++) {
    p[8 + i] = (unsigned char)(e->term >> (8 * i));
    p[16 + i] = (unsigned char)(e->index >> (8 * i));
  }
  p[24] = (unsigned char)e->op;
  for (i = 0; i < 4; i++) {
    p[25 + i] = (unsigned char)(e->klen >> (8 * i));
    p[29 + i] = (unsigned char)(e->vlen >> (8 * i));
  }
  if (e->klen) memcpy(p + 33, e->key, e->klen);
  if (e->vlen) memcpy(p + 33 + e->klen, e->val, e->vlen);
  c = ref_crc(ref_crc(0, p, 4), p + 8, len);
  for (i = 0; i < 4; i++) p[4 + i] = (unsigned char)(c >> (8 * i));
  return 8 + len;
}

/* A version 1 header with base (base, bterm) at h. */
static inline void v1_header(unsigned char *h, uint64_t base, uint64_t bterm) {
  size_t i;
  uint32_t c;
  memset(h, 0, LKVNET_RLOG_HEADER_SIZE);
  memcpy(h, "LUNAKVRL", 8);
  h[8] = 1;
  for (i = 0; i < 8; i++) {
    h[16 + i] = (unsigned char)(base >> (8 * i));
    h[24 + i] = (unsigned char)(bterm >> (8 * i));
  }
  c = ref_crc(0, h, 32);
  for (i = 0; i < 4; i++) h[32 + i] = (unsigned char)(c >> (8 * i));
}

/* A gate a thread of the log waits at (a compaction's prepare, a hooked
 * fsync) until the test opens it. */
typedef struct Gate {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int open, entered, timed_out, fail;
} Gate;

static inline void gate_init(Gate *g) {
  memset(g, 0, sizeof *g);
  pthread_mutex_init(&g->mu, NULL);
  pthread_cond_init(&g->cv, NULL);
}

static inline void gate_open(Gate *g) {
  pthread_mutex_lock(&g->mu);
  g->open = 1;
  pthread_cond_broadcast(&g->cv);
  pthread_mutex_unlock(&g->mu);
}

static inline void gate_destroy(Gate *g) {
  pthread_mutex_destroy(&g->mu);
  pthread_cond_destroy(&g->cv);
}

/* {======================================================================
** Helpers: damaged files, entries compared, the format's checksum
** ======================================================================= */

static inline void flip_byte(const char *path, long long off) {
  int fd = open(path, O_RDWR);
  unsigned char b;
  CHECK(fd >= 0);
  if (fd < 0) return;
  CHECK(pread(fd, &b, 1, (off_t)off) == 1);
  b ^= 0x20;
  CHECK(pwrite(fd, &b, 1, (off_t)off) == 1);
  close(fd);
}

static inline void chop(const char *path, long long by) {
  CHECK(truncate(path, (off_t)(file_size(path) - by)) == 0);
}

/* The log in dir reopened: the replay must give n entries, and *st holds
 * the log's stats when it opened. */
static inline lkvnet_rlog *reopen(const char *dir, Recs *rs, size_t n,
                                  lkvnet_rlog_stats *st) {
  lkvnet_rlog *r = open_log(dir, rs);
  CHECK(rs->n == n);
  if (r != NULL) lkvnet_rlog_stats_get(r, st);
  return r;
}

/* Close the log r and reopen it: the replay gives n entries, the last at
 * index n in term; then close it again. */
static inline void check_reopened(lkvnet_rlog *r, const char *dir, Recs *rs,
                                  uint64_t n, uint64_t term) {
  close_log(r);
  recs_free(rs);
  r = open_log(dir, rs);
  CHECK(rs->n == n && n > 0 && rs->v[n - 1].index == n &&
        rs->v[n - 1].term == term);
  close_log(r);
}

/* The torn-tail test's last entry appended again, in term 2, where a cut
 * tail left its index free. */
static inline void reappend_key5(lkvnet_rlog *r) {
  if (r != NULL)
    CHECK(app(r, 2, LKVNET_OP_SET, "key5", 4, "some value bytes", 16) == 5);
}

/* Close the log and its replay; the file is whole again (full bytes). */
static inline void close_full(lkvnet_rlog *r, Recs *rs, const char *path,
                              long long full) {
  close_log(r);
  recs_free(rs);
  CHECK(file_size(path) == full);
}

/* a equals b: term, index, op and the key and value bytes. */
static inline int same_entry(const lkvnet_entry *a, const lkvnet_entry *b) {
  int ok = a->term == b->term && a->index == b->index && a->op == b->op &&
           a->klen == b->klen && a->vlen == b->vlen &&
           (a->klen == 0 || memcmp(a->key, b->key, a->klen) == 0) &&
           (a->vlen == 0 || memcmp(a->val, b->val, a->vlen) == 0);
  if (!ok)
    fprintf(stderr,
            "entry differs: (t%llu i%llu op%d k%zu v%zu) vs "
            "(t%llu i%llu op%d k%zu v%zu)\n",
            (unsigned long long)a->term, (unsigned long long)a->index, a->op,
            a->klen, a->vlen, (unsigned long long)b->term,
            (unsigned long long)b->index, b->op, b->klen, b->vlen);
  return ok;
}

/* The whole file at path, malloc'd (*n bytes); NULL when unreadable. */
static inline unsigned char *slurp(const char *path, size_t *n) {
  long long sz = file_size(path);
  unsigned char *b;
  int fd;
  *n = 0;
  if (sz < 0 || (b = malloc((size_t)sz + 1)) == NULL) return NULL;
  fd = open(path, O_RDONLY);
  if (fd < 0 || read(fd, b, (size_t)sz) != (ssize_t)sz) {
    if (fd >= 0) close(fd);
    free(b);
    return NULL;
  }
  close(fd);
  *n = (size_t)sz;
  return b;
}

/* dir/replication.log made of the n bytes at p. */
static inline void put_log(const char *dir, const unsigned char *p, size_t n) {
  char path[512];
  int fd;
  log_path(path, sizeof path, dir, LKVNET_RLOG_FILE);
  fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  CHECK(fd >= 0 && write(fd, p, n) == (ssize_t)n);
  if (fd >= 0) close(fd);
}

/* Opening dir must fail with LKV_CORRUPTION naming the file and `what`,
 * and leave the file byte for byte as the n bytes at want. */
static inline void open_refused(const char *dir, const unsigned char *want,
                                size_t n, const char *what) {
  char path[512];
  lkvnet_rlog *r = NULL;
  lkv_err err = {0};
  unsigned char *now;
  size_t m;
  int rc = lkvnet_rlog_open(dir, NULL, -1, NULL, NULL, &r, &err);
  log_path(path, sizeof path, dir, LKVNET_RLOG_FILE);
  if (rc != LKV_CORRUPTION || strstr(err.msg, what) == NULL)
    fprintf(stderr, "open -> %d (%s), want corruption with \"%s\"\n", rc,
            err.msg, what);
  CHECK(rc == LKV_CORRUPTION && r == NULL);
  CHECK(strstr(err.msg, path) != NULL && strstr(err.msg, what) != NULL);
  if (r != NULL) close_log(r);
  now = slurp(path, &m);
  CHECK(now != NULL && m == n && memcmp(now, want, n) == 0); /* untouched */
  free(now);
}

static inline uint32_t le32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
         (uint32_t)p[3] << 24;
}
static inline uint64_t le64(const unsigned char *p) {
  return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

/* }====================================================================== */

#endif
