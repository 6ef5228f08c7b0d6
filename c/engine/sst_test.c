/* sst_test.c - SSTables end to end: build ~100k internal keys (versions,
 * tombstones, binary keys, empty values), reopen, look up every version
 * with and without the block cache, iterate, seek; then damage files
 * (data, filter, index, footer, truncation) and check that every error is
 * LKV_CORRUPTION naming the file, and no lookup ever returns a wrong value. */
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "table.h"
#include "test.h"

/* ---- the model: what the table must contain ---------------------------- */

typedef struct ent {
  uint32_t koff, klen; /* internal key in arena */
  uint64_t seq;
  int type;
} ent;

typedef struct model {
  char *arena;
  size_t used, cap;
  ent *e;
  size_t n;
} model;

static uint64_t rng = 0x2545f4914f6cdd1dULL;
static uint64_t next_rand(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

static lkv_slice ikey(const model *m, size_t i) {
  lkv_slice s = {m->arena + m->e[i].koff, m->e[i].klen};
  return s;
}

static lkv_slice ukey(const model *m, size_t i) {
  return lkv_ikey_user(ikey(m, i));
}

/* The value of a version is a function of its seq, so checks need no
 * stored copy: empty, short, or (rarely) larger than a block. */
static size_t value_len(uint64_t seq) {
  if (seq % 13 == 0) return 0;
  if (seq % 997 == 1) return 9000 + (size_t)(seq % 5000);
  return 5 + (size_t)(seq % 60);
}

static void fill_value(uint64_t seq, char *p) {
  size_t n = value_len(seq);
  for (size_t j = 0; j < n; j++) p[j] = (char)(seq * 31 + j * 7);
}

static int value_ok(uint64_t seq, const char *p, size_t n) {
  if (n != value_len(seq)) return 0;
  for (size_t j = 0; j < n; j++)
    if (p[j] != (char)(seq * 31 + j * 7)) return 0;
  return 1;
}

static const model *sort_model;
static int cmp_ent(const void *a, const void *b) {
  const ent *x = a, *y = b;
  lkv_slice ka = {sort_model->arena + x->koff, x->klen};
  lkv_slice kb = {sort_model->arena + y->koff, y->klen};
  return lkv_icmp(ka, kb);
}

static void add_key(model *m, const char *u, size_t un, uint64_t seq,
                    int type) {
  if (m->used + un + 8 > m->cap) {
    m->cap = m->cap * 2 + un + 8;
    m->arena = realloc(m->arena, m->cap);
  }
  memcpy(m->arena + m->used, u, un);
  lkv_put64(m->arena + m->used + un, lkv_tag(seq, type));
  m->e[m->n].koff = (uint32_t)m->used;
  m->e[m->n].klen = (uint32_t)(un + 8);
  m->e[m->n].seq = seq;
  m->e[m->n].type = type;
  m->n++;
  m->used += un + 8;
}

/* User key u: the empty key, binary keys with zero bytes, long keys, and
 * mostly printable ones. 1 in 5 has several versions; 1 in 11 versions is
 * a tombstone. Sequence numbers are a shuffle of 1..n. */
static void make_model(model *m, unsigned nusers) {
  memset(m, 0, sizeof *m);
  size_t maxn = (size_t)nusers * 4;
  m->e = malloc(maxn * sizeof *m->e);
  uint64_t *seqs = malloc(maxn * sizeof *seqs);
  for (size_t i = 0; i < maxn; i++) seqs[i] = i + 1;
  for (size_t i = maxn - 1; i > 0; i--) {
    size_t j = (size_t)(next_rand() % (i + 1));
    uint64_t t = seqs[i];
    seqs[i] = seqs[j];
    seqs[j] = t;
  }
  size_t si = 0;
  char u[400];
  for (unsigned i = 0; i < nusers; i++) {
    size_t un;
    if (i == 0) {
      un = 0;
    } else if (i % 10 == 3) {
      u[0] = 0;
      u[1] = (char)(i >> 24);
      u[2] = (char)(i >> 16);
      u[3] = 0;
      u[4] = (char)(i >> 8);
      u[5] = (char)i;
      u[6] = 0;
      un = 7;
    } else if (i % 1000 == 7) {
      un = (size_t)snprintf(u, sizeof u, "long%u", i);
      memset(u + un, 'z', 300);
      un += 300;
    } else {
      un = (size_t)snprintf(u, sizeof u, "user%07u", i);
    }
    int nv = i % 5 == 0 ? 2 + (int)(i % 3) : 1;
    for (int v = 0; v < nv; v++) {
      uint64_t seq = seqs[si++];
      add_key(m, u, un, seq, seq % 11 == 0 ? LKV_TYPE_DELETE : LKV_TYPE_VALUE);
    }
  }
  free(seqs);
  sort_model = m;
  qsort(m->e, m->n, sizeof *m->e, cmp_ent);
}

static void free_model(model *m) {
  free(m->arena);
  free(m->e);
}

/* ---- files ------------------------------------------------------------- */

static char dir[256];

static void path_of(char *buf, const char *name) {
  snprintf(buf, 512, "%s/%s", dir, name);
}

static lkv_table_opts default_opts(void) {
  lkv_table_opts o = {10, 0, 0, 16, 4096, NULL};
  return o;
}

static uint64_t build_table(const char *name, const model *m,
                            const lkv_table_opts *o) {
  char path[512];
  path_of(path, name);
  lkv_table_builder *b;
  lkv_err err;
  CHECK_OK(lkv_tb_new(path, o, &b, &err), &err);
  char *v = malloc(20000);
  uint64_t last_size = 0;
  for (size_t i = 0; i < m->n; i++) {
    size_t vn = m->e[i].type == LKV_TYPE_VALUE ? value_len(m->e[i].seq) : 0;
    if (vn) fill_value(m->e[i].seq, v);
    lkv_slice vs = {v, vn};
    CHECK_OK(lkv_tb_add(b, ikey(m, i), vs, &err), &err);
    uint64_t sz = lkv_tb_size(b);
    CHECK(sz >= last_size);
    last_size = sz;
  }
  CHECK(lkv_tb_entries(b) == m->n);
  uint64_t size = 0;
  CHECK_OK(lkv_tb_finish(b, &size, &err), &err);
  CHECK(size >= last_size);
  struct stat st;
  CHECK(stat(path, &st) == 0 && (uint64_t)st.st_size == size);
  free(v);
  return size;
}

static void copy_file(const char *from, const char *to) {
  char a[512], b[512];
  path_of(a, from);
  path_of(b, to);
  FILE *in = fopen(a, "rb"), *out = fopen(b, "wb");
  char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, in)) > 0) fwrite(buf, 1, n, out);
  fclose(in);
  fclose(out);
}

static void flip_byte(const char *name, uint64_t off) {
  char p[512];
  path_of(p, name);
  int fd = open(p, O_RDWR);
  unsigned char c;
  CHECK(pread(fd, &c, 1, (off_t)off) == 1);
  c ^= 0x5a;
  CHECK(pwrite(fd, &c, 1, (off_t)off) == 1);
  close(fd);
}

static void truncate_file(const char *name, uint64_t size) {
  char p[512];
  path_of(p, name);
  CHECK(truncate(p, (off_t)size) == 0);
}

static uint64_t footer_u64(const char *name, int field) {
  char p[512], f[56];
  path_of(p, name);
  int fd = open(p, O_RDONLY);
  off_t end = lseek(fd, 0, SEEK_END);
  CHECK(pread(fd, f, 56, end - 56) == 56);
  close(fd);
  return lkv_get64(f + 8 * field);
}

/* Every reading test runs twice: with pread (and the cache it is given),
 * then with the file mapped. */
static int use_mmap;

static int open_table(const char *name, lkv_cache *cache,
                      lkv_table_counters *cnt, lkv_table **t, lkv_err *err) {
  char path[512];
  path_of(path, name);
  memset(err, 0, sizeof *err);
  return lkv_table_open(NULL, path, 12, cache, cnt, use_mmap, t, err);
}

/* ---- lookups against the model ----------------------------------------- */

static lkv_slice target(char *buf, lkv_slice uk, uint64_t at) {
  memcpy(buf, uk.p, uk.n);
  lkv_put64(buf + uk.n, lkv_tag(at, LKV_TYPE_SEEK));
  lkv_slice s = {buf, uk.n + 8};
  return s;
}

/* What get(uk, at) must answer, for the user key's versions
 * m->e[first..end) (newest first): the index of the answer, or -1. */
static long expect(const model *m, size_t first, size_t end, uint64_t at) {
  for (size_t j = first; j < end; j++)
    if (m->e[j].seq <= at) return (long)j;
  return -1;
}

typedef struct get_stats {
  unsigned long gets, ok, corrupt, wrong;
} get_stats;

/* One lookup. strict: anything but the model's answer is a failure;
 * otherwise LKV_CORRUPTION is allowed (a damaged table) but a wrong answer
 * never is. */
static void check_get(lkv_table *t, const model *m, size_t first, size_t end,
                      uint64_t at, lkv_buf *val, int strict, get_stats *gs,
                      const char *name) {
  char tb[512];
  lkv_err err;
  err.code = 0;
  int type = -1;
  long want = expect(m, first, end, at);
  int rc = lkv_table_get(t, target(tb, ukey(m, first), at), &type, val, &err);
  gs->gets++;
  if (rc == LKV_CORRUPTION && !strict) {
    gs->corrupt++;
    CHECK(strstr(err.msg, "corrupt") != NULL);
    CHECK(strstr(err.msg, name) != NULL);
    CHECK(strstr(err.msg, "offset") != NULL);
    return;
  }
  int good;
  if (want < 0) {
    good = rc == LKV_NOTFOUND;
  } else {
    const ent *e = &m->e[want];
    good =
        rc == LKV_OK && type == e->type &&
        (e->type == LKV_TYPE_DELETE || value_ok(e->seq, val->data, val->len));
  }
  if (good) {
    gs->ok++;
  } else {
    gs->wrong++;
    if (gs->wrong < 5)
      fprintf(stderr, "wrong answer: entry %zu at %llu: rc %d type %d (%s)\n",
              first, (unsigned long long)at, rc, type, err.code ? err.msg : "");
  }
}

/* Every user key at: the newest, each version's seq, just below it, 0. */
static void check_all_gets(lkv_table *t, const model *m, int strict,
                           get_stats *gs, const char *name) {
  lkv_buf val = {0};
  for (size_t i = 0; i < m->n;) {
    size_t end = i + 1;
    lkv_slice u = ukey(m, i);
    while (end < m->n) {
      lkv_slice v = ukey(m, end);
      if (lkv_ucmp(u.p, u.n, v.p, v.n) != 0) break;
      end++;
    }
    check_get(t, m, i, end, LKV_MAX_SEQ, &val, strict, gs, name);
    check_get(t, m, i, end, 0, &val, strict, gs, name);
    for (size_t j = i; j < end; j++) {
      check_get(t, m, i, end, m->e[j].seq, &val, strict, gs, name);
      check_get(t, m, i, end, m->e[j].seq - 1, &val, strict, gs, name);
    }
    i = end;
  }
  lkv_buf_free(&val);
}

static void check_misses(lkv_table *t, unsigned n, lkv_table_counters *cnt) {
  lkv_buf val = {0};
  char u[64], tb[128];
  lkv_counter_totals t0 = {0}, t1 = {0};
  if (cnt) lkv_table_counters_total(cnt, &t0);
  uint64_t neg0 = t0.bloom_negatives;
  uint64_t checks0 = t0.bloom_checks;
  for (unsigned i = 0; i < n; i++) {
    lkv_slice us = {u, (size_t)snprintf(u, sizeof u, "miss%07u", i)};
    int type;
    lkv_err err;
    CHECK(lkv_table_get(t, target(tb, us, LKV_MAX_SEQ), &type, &val, &err) ==
          LKV_NOTFOUND);
  }
  if (cnt) {
    lkv_table_counters_total(cnt, &t1);
    uint64_t checks = t1.bloom_checks - checks0;
    uint64_t neg = t1.bloom_negatives - neg0;
    printf("sst: %u misses: %llu bloom negatives (%.2f%% passed the filter)\n",
           n, (unsigned long long)neg, 100.0 * (double)(n - neg) / n);
    CHECK(checks == n);
    CHECK(neg >= n * 97ull / 100);
  }
  lkv_buf_free(&val);
}

/* The iterator yields exactly the model's entries, in order. Returns the
 * iterator's status. */
static int check_iteration(lkv_table *t, const model *m, int strict) {
  lkv_iiter *it = lkv_table_iter(t);
  size_t i = 0;
  unsigned long bad = 0;
  for (it->ops->seek_first(it); it->ops->valid(it); it->ops->next(it), i++) {
    lkv_slice k = it->ops->key(it), v = it->ops->value(it);
    if (i >= m->n) {
      bad++;
      break;
    }
    lkv_slice want = ikey(m, i);
    const ent *e = &m->e[i];
    if (lkv_icmp(k, want) != 0 ||
        (e->type == LKV_TYPE_VALUE ? !value_ok(e->seq, v.p, v.n) : v.n != 0))
      bad++;
  }
  lkv_err err;
  int rc = it->ops->status(it, &err);
  if (strict) {
    CHECK(rc == LKV_OK);
    CHECK(i == m->n);
  } else if (rc) {
    CHECK(rc == LKV_CORRUPTION && strstr(err.msg, "corrupt"));
  } else {
    CHECK(i == m->n); /* no error: then every entry was seen */
  }
  CHECK(bad == 0);
  if (strict) { /* the same entries backward */
    size_t j = m->n;
    for (it->ops->seek_last(it); it->ops->valid(it); it->ops->prev(it)) {
      CHECK(j > 0);
      if (j == 0) break;
      j--;
      CHECK(lkv_icmp(it->ops->key(it), ikey(m, j)) == 0);
    }
    CHECK(j == 0);
    CHECK(it->ops->status(it, NULL) == LKV_OK);
  }
  it->ops->destroy(it);
  return rc;
}

/* Seek to random targets; compare with a lower bound in the model. */
static void check_seeks(lkv_table *t, const model *m, int n) {
  lkv_iiter *it = lkv_table_iter(t);
  char tb[512];
  for (int r = 0; r < n; r++) {
    size_t i = (size_t)(next_rand() % m->n);
    lkv_slice tg;
    if (r % 3 == 0) {
      char u[64];
      lkv_slice us = {u,
                      (size_t)snprintf(u, sizeof u, "user%07u5", (unsigned)i)};
      tg = target(tb, us, next_rand() % (m->n + 10));
    } else {
      tg = target(tb, ukey(m, i), next_rand() % (m->n + 10));
    }
    size_t lo = 0, hi = m->n;
    while (lo < hi) {
      size_t mid = (lo + hi) / 2;
      if (lkv_icmp(ikey(m, mid), tg) < 0)
        lo = mid + 1;
      else
        hi = mid;
    }
    it->ops->seek(it, tg);
    if (lo == m->n) {
      CHECK(!it->ops->valid(it));
      continue;
    }
    CHECK(it->ops->valid(it));
    if (!it->ops->valid(it)) continue;
    CHECK(lkv_icmp(it->ops->key(it), ikey(m, lo)) == 0);
    /* and the walk goes on from there */
    for (int s = 1; s < 5 && lo + (size_t)s < m->n; s++) {
      it->ops->next(it);
      CHECK(it->ops->valid(it) &&
            lkv_icmp(it->ops->key(it), ikey(m, lo + (size_t)s)) == 0);
    }
    /* and back, past where the seek landed (across block starts) */
    it->ops->seek(it, tg);
    for (int s = 1; s < 40; s++) {
      it->ops->prev(it);
      if (lo < (size_t)s) {
        CHECK(!it->ops->valid(it));
        break;
      }
      CHECK(it->ops->valid(it) &&
            lkv_icmp(it->ops->key(it), ikey(m, lo - (size_t)s)) == 0);
    }
  }
  /* past the end */
  char hb[16] = "\xff\xff\xff\xff";
  lkv_slice hs = {hb, 12};
  lkv_put64(hb + 4, 0);
  it->ops->seek(it, hs);
  CHECK(!it->ops->valid(it));
  CHECK(it->ops->status(it, NULL) == LKV_OK);
  it->ops->destroy(it);
}

static double now_sec(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- the tests ---------------------------------------------------------- */

static model big;

/* The big table (000012.sst, written by test_big_table) opened with cnt
 * zeroed; NULL, the failure counted, when it does not open. */
static lkv_table *open_big(lkv_cache *cache, lkv_table_counters *cnt) {
  lkv_table *t;
  lkv_err err;
  memset(cnt, 0, sizeof *cnt);
  CHECK_OK(open_table("000012.sst", cache, cnt, &t, &err), &err);
  return t;
}

static void test_big_table(void) {
  lkv_table_opts o = default_opts();
  double t0 = now_sec();
  uint64_t size = build_table("000012.sst", &big, &o);
  printf("sst: built %zu entries, %llu bytes in %.3f s\n", big.n,
         (unsigned long long)size, now_sec() - t0);

  for (int with_cache = 0; with_cache < 2; with_cache++) {
    lkv_cache *cache = with_cache ? lkv_cache_new(8 << 20) : NULL;
    lkv_table_counters cnt;
    lkv_table *t = open_big(cache, &cnt);
    if (!t) return;
    CHECK(lkv_table_entries(t) == big.n);
    CHECK(lkv_table_file_size(t) == size);
    get_stats gs = {0, 0, 0, 0};
    t0 = now_sec();
    check_all_gets(t, &big, 1, &gs, "000012.sst");
    double dt = now_sec() - t0;
    lkv_counter_totals tot;
    lkv_table_counters_total(&cnt, &tot);
    printf(
        "sst: %lu gets (%s cache) in %.3f s: %.2f us/get; %llu block "
        "reads, %llu cache hits\n",
        gs.gets, with_cache ? "with" : "no", dt, dt * 1e6 / (double)gs.gets,
        (unsigned long long)tot.block_reads,
        (unsigned long long)tot.cache_hits);
    CHECK(gs.wrong == 0 && gs.ok == gs.gets);
    CHECK(tot.bloom_checks == gs.gets);
    /* present keys never fail the filter */
    CHECK(tot.bloom_negatives == 0);
    if (with_cache && !use_mmap) {
      CHECK(tot.cache_hits > 0);
      CHECK(tot.block_reads + tot.cache_hits <= gs.gets);
      CHECK(lkv_cache_usage(cache) > 0);
    } else {
      CHECK(tot.cache_hits == 0);
      CHECK(tot.block_reads <= gs.gets && tot.block_reads > gs.gets / 2);
    }
    check_misses(t, 100000, &cnt);
    CHECK(check_iteration(t, &big, 1) == LKV_OK);
    check_seeks(t, &big, 3000);
    lkv_table_close(t);
    lkv_cache_free(cache);
  }
}

/* Other shapes: tiny blocks (a block per entry or two, separators between
 * versions of one key), restart every entry, one huge block, hashes given. */
static void test_shapes(void) {
  model m;
  make_model(&m, 3000);
  lkv_table_opts shapes[] = {
      {10, 0, 0, 1, 1, NULL},        {10, 0, 0, 1, 64, NULL},
      {10, 0, 0, 3, 200, NULL},      {6, 2, 4096, 16, 4096, NULL},
      {10, 0, 0, 16, 1 << 20, NULL}, {1, 0, 0, 128, 32768, NULL},
  };
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
    build_table("000020.sst", &m, &shapes[s]);
    lkv_cache *cache = s % 2 ? lkv_cache_new(64 << 10) : NULL;
    lkv_table *t;
    lkv_err err;
    CHECK_OK(open_table("000020.sst", cache, NULL, &t, &err), &err);
    if (!t) continue;
    get_stats gs = {0, 0, 0, 0};
    check_all_gets(t, &m, 1, &gs, "000020.sst");
    CHECK(gs.wrong == 0);
    check_misses(t, 1000, NULL);
    check_iteration(t, &m, 1);
    check_seeks(t, &m, 500);
    lkv_table_close(t);
    lkv_cache_free(cache);
  }
  free_model(&m);
}

static void test_empty_table(void) {
  model m;
  memset(&m, 0, sizeof m);
  lkv_table_opts o = default_opts();
  uint64_t size = build_table("000021.sst", &m, &o);
  CHECK(size > 56);
  lkv_table *t;
  lkv_err err;
  CHECK_OK(open_table("000021.sst", NULL, NULL, &t, &err), &err);
  if (!t) return;
  CHECK(lkv_table_entries(t) == 0);
  lkv_buf val = {0};
  char tb[64];
  int type;
  lkv_slice u = {"a", 1};
  CHECK(lkv_table_get(t, target(tb, u, 5), &type, &val, &err) == LKV_NOTFOUND);
  lkv_iiter *it = lkv_table_iter(t);
  it->ops->seek_first(it);
  CHECK(!it->ops->valid(it));
  it->ops->seek(it, target(tb, u, 5));
  CHECK(!it->ops->valid(it));
  CHECK(it->ops->status(it, NULL) == LKV_OK);
  it->ops->destroy(it);
  lkv_table_close(t);
  lkv_buf_free(&val);
}

static void test_builder_errors(void) {
  char path[512];
  path_of(path, "000030.sst");
  lkv_table_opts o = default_opts();
  lkv_table_builder *b;
  lkv_err err;
  CHECK_OK(lkv_tb_new(path, &o, &b, &err), &err);
  char k1[16] = "bbb", k0[16] = "aaa";
  lkv_put64(k1 + 3, lkv_tag(5, LKV_TYPE_VALUE));
  lkv_put64(k0 + 3, lkv_tag(9, LKV_TYPE_VALUE));
  lkv_slice s1 = {k1, 11}, s0 = {k0, 11}, v = {"v", 1}, shortk = {"abc", 3};
  CHECK_OK(lkv_tb_add(b, s1, v, &err), &err);
  CHECK(lkv_tb_add(b, s0, v, &err) == LKV_INVALID); /* out of order */
  CHECK(lkv_tb_add(b, s1, v, &err) == LKV_INVALID); /* duplicate */
  CHECK(lkv_tb_add(b, shortk, v, &err) == LKV_INVALID);
  CHECK(lkv_tb_entries(b) == 1);
  lkv_tb_abandon(b); /* removes the file */
  CHECK(access(path, F_OK) != 0);

  o.restart_interval = 0;
  CHECK(lkv_tb_new(path, &o, &b, &err) == LKV_INVALID);
  o = default_opts();
  char bad[600];
  snprintf(bad, sizeof bad, "%s/no/such/dir/000031.sst", dir);
  CHECK(lkv_tb_new(bad, &o, &b, &err) == LKV_IOERROR);
  /* a missing table */
  lkv_table *t;
  CHECK(open_table("000099.sst", NULL, NULL, &t, &err) == LKV_IOERROR);
}

/* A write that fails (here: the file size limit, EFBIG) makes the builder
 * fail for good, and finish removes the half-written file. */
static void test_write_failure(void) {
  char path[512];
  path_of(path, "000050.sst");
  struct rlimit old, small;
  getrlimit(RLIMIT_FSIZE, &old);
  small = old;
  small.rlim_cur = 300 * 1024;
  void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
  CHECK(setrlimit(RLIMIT_FSIZE, &small) == 0);
  lkv_table_opts o = default_opts();
  lkv_table_builder *b;
  lkv_err err;
  CHECK_OK(lkv_tb_new(path, &o, &b, &err), &err);
  char v[1000];
  memset(v, 'v', sizeof v);
  int rc = LKV_OK, adds = 0;
  for (unsigned i = 0; i < 1000 && rc == LKV_OK; i++, adds++) {
    char k[32];
    int n = snprintf(k, sizeof k, "key%06u", i);
    lkv_put64(k + n, lkv_tag(i + 1, LKV_TYPE_VALUE));
    lkv_slice ks = {k, (size_t)n + 8}, vs = {v, sizeof v};
    rc = lkv_tb_add(b, ks, vs, &err);
  }
  CHECK(rc == LKV_IOERROR);
  CHECK(strstr(err.msg, "000050.sst") != NULL);
  printf("sst: write failure after %d adds -> %s\n", adds, err.msg);
  char k[32] = "zzz";
  lkv_put64(k + 3, 1);
  lkv_slice ks = {k, 11}, vs = {v, 1};
  CHECK(lkv_tb_add(b, ks, vs, &err) == LKV_IOERROR); /* sticky */
  uint64_t size = 0;
  CHECK(lkv_tb_finish(b, &size, &err) == LKV_IOERROR);
  CHECK(access(path, F_OK) != 0); /* removed */
  CHECK(setrlimit(RLIMIT_FSIZE, &old) == 0);
  signal(SIGXFSZ, prev);
}

/* Damage one byte, reopen: open fails with corruption, or it succeeds and
 * every lookup either answers right or reports corruption. */
static void expect_open_corrupt(const char *name, const char *what) {
  lkv_table *t = NULL;
  lkv_err err;
  int rc = open_table(name, NULL, NULL, &t, &err);
  CHECK(rc == LKV_CORRUPTION);
  CHECK(strstr(err.msg, "corrupt") != NULL);
  CHECK(strstr(err.msg, name) != NULL);
  CHECK(strstr(err.msg, "offset") != NULL);
  if (rc != LKV_CORRUPTION)
    fprintf(stderr, "%s: open gave %d (%s)\n", what, rc, err.msg);
  else if (strcmp(what, "quiet"))
    printf("sst: %s -> %s\n", what, err.msg);
  lkv_table_close(t);
}

static void test_corruption(void) {
  const char *name = "000013.sst";
  uint64_t foff = footer_u64("000012.sst", 0),
           fsize = footer_u64("000012.sst", 1);
  uint64_t ioff = footer_u64("000012.sst", 2);
  uint64_t isize = footer_u64("000012.sst", 3);
  struct stat st;
  char p[512];
  path_of(p, "000012.sst");
  stat(p, &st);
  uint64_t fsz = (uint64_t)st.st_size;
  CHECK(ioff == foff + fsize + 5 && ioff + isize + 5 + 56 == fsz);

  /* a data block: open works, lookups in that block fail, others work */
  for (int with_cache = 0; with_cache < 2; with_cache++) {
    copy_file("000012.sst", name);
    flip_byte(name, 100);
    lkv_cache *cache = with_cache ? lkv_cache_new(1 << 20) : NULL;
    lkv_table *t;
    lkv_err err;
    CHECK_OK(open_table(name, cache, NULL, &t, &err), &err);
    if (!t) return;
    get_stats gs = {0, 0, 0, 0};
    check_all_gets(t, &big, 0, &gs, name);
    printf(
        "sst: data byte flipped: %lu gets, %lu corruption, %lu right, "
        "%lu wrong\n",
        gs.gets, gs.corrupt, gs.ok, gs.wrong);
    CHECK(gs.wrong == 0);
    CHECK(gs.corrupt > 0 && gs.corrupt < 2000);
    /* the damaged block is not cached: a second try fails again */
    lkv_buf val = {0};
    int type;
    char tb[512];
    err.msg[0] = 0;
    CHECK(lkv_table_get(t, target(tb, ukey(&big, 0), LKV_MAX_SEQ), &type, &val,
                        &err) == LKV_CORRUPTION);
    printf("sst: %s\n", err.msg);
    CHECK(strstr(err.msg, "000013.sst offset 0: block checksum mismatch"));
    lkv_buf_free(&val);
    CHECK(check_iteration(t, &big, 0) == LKV_CORRUPTION);
    lkv_table_close(t);
    lkv_cache_free(cache);
  }
  /* a block in the middle; the iterator stops there with the error */
  copy_file("000012.sst", name);
  flip_byte(name, foff / 2);
  {
    lkv_table *t;
    lkv_err err;
    CHECK_OK(open_table(name, NULL, NULL, &t, &err), &err);
    get_stats gs = {0, 0, 0, 0};
    check_all_gets(t, &big, 0, &gs, name);
    CHECK(gs.wrong == 0 && gs.corrupt > 0);
    CHECK(check_iteration(t, &big, 0) == LKV_CORRUPTION);
    lkv_table_close(t);
  }

  /* filter, index, footer, each byte of the footer: open refuses. A
   * second flip of the same byte restores the file. */
  copy_file("000012.sst", name);
  struct {
    uint64_t off;
    const char *what;
  } flips[] = {
      {foff + fsize / 2, "filter byte flipped"},
      {foff + fsize + 2, "filter crc flipped"},
      {ioff + isize / 3, "index byte flipped"},
      {ioff + isize, "index type flipped"},
  };
  for (size_t i = 0; i < sizeof flips / sizeof flips[0]; i++) {
    flip_byte(name, flips[i].off);
    expect_open_corrupt(name, flips[i].what);
    flip_byte(name, flips[i].off);
  }
  for (uint64_t off = fsz - 56; off < fsz; off++) {
    flip_byte(name, off);
    expect_open_corrupt(name, off == fsz - 56 + 40   ? "footer version flipped"
                              : off == fsz - 1       ? "footer magic flipped"
                              : off == fsz - 56 + 45 ? "footer crc flipped"
                              : off == fsz - 56      ? "footer handle flipped"
                                                     : "quiet");
    flip_byte(name, off);
  }
  {
    lkv_table *t;
    lkv_err err;
    CHECK_OK(open_table(name, NULL, NULL, &t, &err), &err); /* restored */
    lkv_table_close(t);
  }
  /* truncations */
  uint64_t cuts[] = {0,    1,    55,       56,       57,     fsz / 2,
                     foff, ioff, fsz - 57, fsz - 56, fsz - 1};
  for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
    copy_file("000012.sst", name);
    truncate_file(name, cuts[i]);
    expect_open_corrupt(name, i == 0   ? "truncated to 0"
                              : i == 5 ? "truncated to half"
                                       : "quiet");
  }
  /* a table that shrinks after open: reads past the end are corruption
   * (mapped, they would be SIGBUS: the documented price of mmap_reads) */
  copy_file("000012.sst", name);
  if (!use_mmap) {
    lkv_table *t;
    lkv_err err;
    CHECK_OK(open_table(name, NULL, NULL, &t, &err), &err);
    truncate_file(name, foff / 2);
    get_stats gs = {0, 0, 0, 0};
    check_all_gets(t, &big, 0, &gs, name);
    CHECK(gs.wrong == 0 && gs.corrupt > 0);
    lkv_buf val = {0};
    int type;
    char tb[512];
    CHECK(lkv_table_get(t, target(tb, ukey(&big, big.n - 1), LKV_MAX_SEQ),
                        &type, &val, &err) == LKV_CORRUPTION);
    printf("sst: shrunk after open -> %s\n", err.msg);
    lkv_buf_free(&val);
    lkv_table_close(t);
  }
  path_of(p, name);
  unlink(p);
}

/* Many single-byte flips all over a small table: never a crash, never a
 * wrong answer (ASan/valgrind watch the reads). */
static void test_flip_everywhere(void) {
  model m;
  make_model(&m, 400);
  lkv_table_opts o = {10, 0, 0, 4, 512, NULL};
  uint64_t size = build_table("000040.sst", &m, &o);
  unsigned opened = 0, refused = 0;
  for (uint64_t off = 0; off < size; off += 1 + off / 97) {
    copy_file("000040.sst", "000041.sst");
    flip_byte("000041.sst", off);
    lkv_table *t = NULL;
    lkv_err err;
    lkv_cache *cache = off % 2 ? lkv_cache_new(4096) : NULL;
    int rc = open_table("000041.sst", cache, NULL, &t, &err);
    if (rc) {
      lkv_cache_free(cache);
      CHECK(rc == LKV_CORRUPTION && strstr(err.msg, "corrupt") &&
            strstr(err.msg, "000041.sst"));
      refused++;
      continue;
    }
    opened++;
    get_stats gs = {0, 0, 0, 0};
    check_all_gets(t, &m, 0, &gs, "000041.sst");
    CHECK(gs.wrong == 0);
    check_iteration(t, &m, 0);
    lkv_table_close(t);
    lkv_cache_free(cache);
  }
  printf(
      "sst: byte flips over a %llu-byte table: %u opened (lookups right "
      "or corruption), %u refused at open\n",
      (unsigned long long)size, opened, refused);
  free_model(&m);
}

/* Readers share one table and one cache from several threads. */
typedef struct thread_arg {
  lkv_table *t;
  int id;
  unsigned long wrong;
} thread_arg;

static void *reader(void *p) {
  thread_arg *a = p;
  lkv_buf val = {0};
  char tb[512];
  uint64_t x = 0x9e3779b97f4a7c15ULL * (uint64_t)(a->id + 1);
  for (int r = 0; r < 20000; r++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    size_t i = (size_t)(x % big.n);
    while (i > 0) { /* back up to the newest version of the key */
      lkv_slice u = ukey(&big, i), v = ukey(&big, i - 1);
      if (lkv_ucmp(u.p, u.n, v.p, v.n) != 0) break;
      i--;
    }
    int type;
    lkv_err err;
    int rc = lkv_table_get(a->t, target(tb, ukey(&big, i), LKV_MAX_SEQ), &type,
                           &val, &err);
    const ent *e = &big.e[i];
    if (rc != LKV_OK || type != e->type ||
        (type == LKV_TYPE_VALUE && !value_ok(e->seq, val.data, val.len)))
      a->wrong++;
  }
  lkv_buf_free(&val);
  return NULL;
}

static void test_threads(void) {
  lkv_cache *cache = lkv_cache_new(256 << 10); /* small: constant eviction */
  lkv_table_counters cnt;
  lkv_table *t = open_big(cache, &cnt);
  if (!t) return;
  pthread_t th[4];
  thread_arg a[4];
  for (int i = 0; i < 4; i++) {
    a[i] = (thread_arg){t, i, 0};
    pthread_create(&th[i], NULL, reader, &a[i]);
  }
  for (int i = 0; i < 4; i++) {
    pthread_join(th[i], NULL);
    CHECK(a[i].wrong == 0);
  }
  lkv_counter_totals tot; /* the four threads' stripes add up */
  lkv_table_counters_total(&cnt, &tot);
  CHECK(tot.bloom_checks == 80000);
  lkv_table_close(t);
  lkv_cache_free(cache);
}

static void remove_dir(void) {
  DIR *d = opendir(dir);
  struct dirent *de;
  char p[512];
  while (d && (de = readdir(d)) != NULL) {
    if (de->d_name[0] == '.') continue;
    path_of(p, de->d_name);
    unlink(p);
  }
  if (d) closedir(d);
  rmdir(dir);
}

int main(void) {
  snprintf(dir, sizeof dir, "/tmp/lkv_sst_test.XXXXXX");
  if (mkdtemp(dir) == NULL) {
    perror("mkdtemp");
    return 1;
  }
  make_model(&big, 80000);
  test_builder_errors();
  test_write_failure();
  for (use_mmap = 0; use_mmap < 2; use_mmap++) {
    printf("sst: reading with %s\n", use_mmap ? "mmap" : "pread");
    test_big_table();
    test_shapes();
    test_empty_table();
    test_corruption();
    test_flip_everywhere();
    test_threads();
  }
  free_model(&big);
  remove_dir();
  TEST_MAIN_END();
}
