/* iter_test.c - a randomized model test of the public iterator in both
 * directions (seek_first/seek/next and seek_last/prev).
 *
 * A fixed universe of binary keys (the empty key, keys with 0 bytes, keys
 * that are prefixes of others, long keys) gets a random stream of sets,
 * overwrites, deletes and runs of deletes through small memtables, so the
 * versions of a key end up spread over the active and immutable memtables,
 * L0 and deeper levels. An in-memory model holds the expected map now and
 * at a few snapshots. Every view (LKV_SEQ_LATEST and each snapshot's seq)
 * is checked right after the writes, after lkv_db_flush and after
 * lkv_db_compact:
 *   (a) seek_first + next gives the model, and seek_last + prev gives
 *       exactly its reverse;
 *   (b) from seek(probe) (probes inside, between, before and after the
 *       keys) random next/prev steps, with now and then a seek_first,
 *       seek_last or seek, match the model's key and value at every step;
 *   (c) prev from the first key and next from the last make the iterator
 *       not valid; seek_last on an empty view is not valid;
 *   and lkv_iter_status is LKV_OK afterwards. An iterator opened before
 * the flush and compaction is checked after them and after later writes.
 * Then smaller scenarios: every key deleted (seek_last finds nothing, then
 * one key in the middle), a few keys with long runs of versions (one key
 * with a thousand, pinned by snapshots, across block boundaries), and
 * iterators walking both ways while writes land next to their position,
 * in their own memtable or through flushes. A fixed seed keeps it
 * deterministic; a failure prints the view, the moves and the keys. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lunakv.h"
#include "rng.h"
#include "test.h"

/* ---- deterministic PRNG (splitmix64) ----------------------------------- */

static uint64_t rng_state = 0x1f2e3d4c5b6a7988ull;

static uint64_t rnd(void) { return lkv_splitmix64(&rng_state); }

static unsigned rn(unsigned n) { return (unsigned)(rnd() % n); } /* [0, n) */

/* ---- the key universe ---------------------------------------------------- */

#define MAX_KEYS 2200
#define NRANDOM_KEYS 1700

typedef struct bytes {
  char *p;
  size_t n;
} bytes;

static bytes keys[MAX_KEYS]; /* sorted, unique */
static int nkeys;

static int ucmp(const char *a, size_t an, const char *b, size_t bn) {
  size_t m = an < bn ? an : bn;
  int r = m ? memcmp(a, b, m) : 0;
  if (r) return r;
  return an < bn ? -1 : an > bn ? 1 : 0;
}

static int bytes_cmp(const void *x, const void *y) {
  const bytes *a = x, *b = y;
  return ucmp(a->p, a->n, b->p, b->n);
}

static void add_key(const char *p, size_t n) {
  if (nkeys == MAX_KEYS) return;
  keys[nkeys].p = malloc(n ? n : 1);
  if (keys[nkeys].p == NULL) abort();
  if (n) memcpy(keys[nkeys].p, p, n);
  keys[nkeys].n = n;
  nkeys++;
}

static void make_keys(void) {
  /* fixed edge cases: empty key, prefixes, 0 bytes, 0xff runs */
  static const struct {
    const char *p;
    size_t n;
  } fixed[] = {
      {"", 0},         {"\0", 1},          {"\0\0", 2},     {"\0\1", 2},
      {"a", 1},        {"a\0", 2},         {"a\0\0", 3},    {"a\0b", 3},
      {"ab", 2},       {"abc", 3},         {"abcd", 4},     {"abd", 3},
      {"b", 1},        {"k\0ey", 4},       {"key", 3},      {"key\0", 4},
      {"user:", 5},    {"user:1", 6},      {"user:10", 7},  {"user:100", 8},
      {"\x7f", 1},     {"\x80", 1},        {"\xfe\xff", 2}, {"\xff", 1},
      {"\xff\xff", 2}, {"\xff\xff\xff", 3}};
  for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
    add_key(fixed[i].p, fixed[i].n);
  static const char alpha[] = {0x00, 0x01,       'a',        'b',       'c',
                               0x7f, (char)0x80, (char)0xfe, (char)0xff};
  char buf[400];
  for (int i = 0; i < NRANDOM_KEYS; i++) {
    size_t n;
    switch (rn(10)) {
      case 0:
      case 1:
      case 2: /* short keys over a tiny alphabet: prefixes */
        n = 1 + rn(8);
        for (size_t j = 0; j < n; j++) buf[j] = alpha[rn(sizeof alpha)];
        break;
      case 3:
      case 4:
      case 5: /* user:<n>, numbers of varied width */
        n = (size_t)snprintf(buf, sizeof buf, "user:%u", rn(100000));
        break;
      case 6: { /* an existing key plus a suffix: a prefix pair */
        const bytes *b = &keys[rn((unsigned)nkeys)];
        n = b->n < 200 ? b->n : 200;
        memcpy(buf, b->p, n);
        size_t extra = 1 + rn(4);
        for (size_t j = 0; j < extra; j++) buf[n++] = alpha[rn(sizeof alpha)];
        break;
      }
      case 7: /* now and then a long key */
        n = rn(20) == 0 ? 100 + rn(300) : 1 + rn(48);
        for (size_t j = 0; j < n; j++) buf[j] = (char)rn(256);
        break;
      default: /* random bytes */
        n = 1 + rn(24);
        for (size_t j = 0; j < n; j++) buf[j] = (char)rn(256);
        break;
    }
    add_key(buf, n);
  }
  qsort(keys, (size_t)nkeys, sizeof keys[0], bytes_cmp);
  int w = 0;
  for (int r = 0; r < nkeys; r++) {
    if (w > 0 && bytes_cmp(&keys[w - 1], &keys[r]) == 0) {
      free(keys[r].p);
      continue;
    }
    keys[w++] = keys[r];
  }
  nkeys = w;
}

/* Index of the first key >= (p, n): nkeys when none. */
static int lower_bound(const char *p, size_t n) {
  int lo = 0, hi = nkeys;
  while (lo < hi) {
    int mid = lo + (hi - lo) / 2;
    if (ucmp(keys[mid].p, keys[mid].n, p, n) < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

/* ---- values and the model ------------------------------------------------ */

/* A version of key i is (ver, len): its bytes are derived from both, so a
 * stale version never compares equal to the current one. */
typedef struct slot {
  uint32_t ver; /* 0: absent or deleted */
  uint32_t len;
} slot;

typedef struct model {
  slot s[MAX_KEYS];
} model;

static char valbuf[4096];

static const char *make_value(int i, const slot *s) {
  uint64_t x = ((uint64_t)(unsigned)i << 32) ^ s->ver ^ 0xa5a5a5a5ull;
  for (uint32_t j = 0; j < s->len; j++) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    valbuf[j] = (char)(x >> 56);
  }
  return valbuf;
}

static uint32_t value_len(void) {
  unsigned r = rn(100);
  if (r < 5) return 0;              /* empty values are values */
  if (r < 8) return 500 + rn(3000); /* a few big ones */
  return 8 + rn(90);
}

/* ---- the db ----------------------------------------------------------- */

/* Tiny memtables, tables and levels: many flushes and compactions, over
 * more tables than stay open. Tables are read through mmap here (mmap_reads):
 * the rest of the suite reads with pread, and sst_test walks a table both ways
 * in both modes. */
static lkv_options small_options(void) {
  lkv_options o;
  lkv_options_init(&o);
  o.mmap_reads = 1;
  o.max_open_files = 16; /* tables open and close (and unmap) all the time */
  o.max_memtable_size = 16 * 1024;
  o.table_size = 16 * 1024;
  o.level1_max_bytes = 64 * 1024;
  o.sync = LKV_SYNC_NONE;
  return o;
}

static uint32_t next_ver = 1;

static void do_set(lkv_db *db, model *m, int i) {
  lkv_err err = {0};
  slot s = {next_ver++, value_len()};
  const char *v = make_value(i, &s);
  CHECK_OK(lkv_db_set(db, keys[i].p, keys[i].n, v, s.len, NULL, &err), &err);
  m->s[i] = s;
}

static void do_delete(lkv_db *db, model *m, int i) {
  lkv_err err = {0};
  CHECK_OK(lkv_db_delete(db, keys[i].p, keys[i].n, NULL, &err), &err);
  m->s[i].ver = 0;
  m->s[i].len = 0;
}

/* ---- checking one view ------------------------------------------------- */

static long steps_checked;
static int walk_count = 60; /* random walks per view */
static int reported;        /* failure messages printed (capped) */

static void print_bytes(FILE *f, const char *p, size_t n) {
  fputc('"', f);
  for (size_t i = 0; i < n && i < 64; i++) {
    unsigned char c = (unsigned char)p[i];
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
      fputc(c, f);
    else
      fprintf(f, "\\x%02x", c);
  }
  if (n > 64) fprintf(f, "...(%zu bytes)", n);
  fputc('"', f);
}

/* The live key at or after i in direction dir (+1 / -1): -1 or nkeys past
 * either end. */
static int live_from(const model *m, int i, int dir) {
  while (i >= 0 && i < nkeys && m->s[i].ver == 0) i += dir;
  return i;
}

/* Compare the iterator with model position want (a key index, or -1 /
 * nkeys for "not valid"). Returns 1 when they agree. */
static int agree(lkv_iter *it, const model *m, int want, const char *view,
                 const char *what) {
  steps_checked++;
  int exp_valid = want >= 0 && want < nkeys;
  int got_valid = lkv_iter_valid(it) != 0;
  size_t kl = 0, vl = 0;
  const char *k = got_valid ? lkv_iter_key(it, &kl) : NULL;
  const char *v = got_valid ? lkv_iter_value(it, &vl) : NULL;
  int ok;
  if (exp_valid != got_valid)
    ok = 0;
  else if (!exp_valid)
    ok = 1;
  else {
    const char *ev = make_value(want, &m->s[want]);
    ok = ucmp(k, kl, keys[want].p, keys[want].n) == 0 && vl == m->s[want].len &&
         (vl == 0 || memcmp(v, ev, vl) == 0);
  }
  if (!ok) {
    lkv_test_failures++;
    if (reported++ < 20) {
      fprintf(stderr, "iter_test: %s: %s: expected ", view, what);
      if (exp_valid) {
        print_bytes(stderr, keys[want].p, keys[want].n);
        fprintf(stderr, " (value %u bytes, version %u)", m->s[want].len,
                m->s[want].ver);
      } else {
        fprintf(stderr, "not valid");
      }
      fprintf(stderr, ", got ");
      if (got_valid) {
        print_bytes(stderr, k, kl);
        int gi = lower_bound(k, kl);
        int known = gi < nkeys && ucmp(keys[gi].p, keys[gi].n, k, kl) == 0;
        fprintf(stderr, " (value %zu bytes%s)", vl,
                !known              ? ", not a key ever written"
                : m->s[gi].ver == 0 ? ", deleted in this view"
                                    : "");
      } else {
        fprintf(stderr, "not valid");
      }
      fputc('\n', stderr);
    }
  }
  return ok;
}

/* A probe for seek: a key of the universe, something between two keys, or
 * something before or after all of them. */
static int make_probe(char *buf, size_t *n) {
  int i = (int)rn((unsigned)nkeys);
  switch (rn(6)) {
    case 0:
    case 1: /* an exact key */
      memcpy(buf, keys[i].p, keys[i].n);
      *n = keys[i].n;
      break;
    case 2: /* key + "\0": just after it */
      memcpy(buf, keys[i].p, keys[i].n);
      buf[keys[i].n] = 0;
      *n = keys[i].n + 1;
      break;
    case 3: /* a truncated key: at or before it */
      *n = keys[i].n ? rn((unsigned)keys[i].n) : 0;
      memcpy(buf, keys[i].p, *n);
      break;
    case 4: /* random bytes */
      *n = rn(10);
      for (size_t j = 0; j < *n; j++) buf[j] = (char)rn(256);
      break;
    default: /* past the end */
      *n = 1 + rn(6);
      memset(buf, 0xff, *n);
      break;
  }
  return lower_bound(buf, *n);
}

/* One random move of the iterator and of the model position *pos: mostly
 * next or prev, now and then (and always when not valid) seek_first,
 * seek_last or seek. Returns the move's letter (n p F L S). */
static char random_move(lkv_iter *it, const model *m, int *pos) {
  char probe[512];
  size_t pn;
  int valid = *pos >= 0 && *pos < nkeys;
  unsigned r = rn(100);
  if (!valid || r < 4) {
    unsigned how = rn(3);
    if (how == 0) {
      lkv_iter_seek_first(it);
      *pos = live_from(m, 0, +1);
      return 'F';
    }
    if (how == 1) {
      lkv_iter_seek_last(it);
      *pos = live_from(m, nkeys - 1, -1);
      return 'L';
    }
    int at = make_probe(probe, &pn);
    lkv_iter_seek(it, probe, pn);
    *pos = live_from(m, at, +1);
    return 'S';
  }
  if (r < 52) {
    lkv_iter_next(it);
    *pos = live_from(m, *pos + 1, +1);
    return 'n';
  }
  lkv_iter_prev(it);
  *pos = live_from(m, *pos - 1, -1);
  return 'p';
}

static void check_view(lkv_iter *it, const model *m, const char *view) {
  char what[160];
  int nlive = 0, first = -1, last = -1;
  for (int i = 0; i < nkeys; i++)
    if (m->s[i].ver) {
      nlive++;
      if (first < 0) first = i;
      last = i;
    }

  /* (a) forward walk = model; reverse walk = its reverse */
  int pos = live_from(m, 0, +1), n = 0;
  lkv_iter_seek_first(it);
  for (;;) {
    snprintf(what, sizeof what, "forward walk, entry %d", n);
    if (!agree(it, m, pos, view, what)) break;
    if (pos >= nkeys) break;
    lkv_iter_next(it);
    pos = live_from(m, pos + 1, +1);
    n++;
  }
  CHECK(n == nlive || lkv_test_failures);
  pos = live_from(m, nkeys - 1, -1);
  n = 0;
  lkv_iter_seek_last(it);
  for (;;) {
    snprintf(what, sizeof what, "reverse walk, entry %d from the end", n);
    if (!agree(it, m, pos, view, what)) break;
    if (pos < 0) break;
    lkv_iter_prev(it);
    pos = live_from(m, pos - 1, -1);
    n++;
  }
  CHECK(n == nlive || lkv_test_failures);

  /* (c) the ends */
  if (nlive) {
    lkv_iter_seek_first(it);
    agree(it, m, first, view, "seek_first");
    lkv_iter_prev(it);
    agree(it, m, -1, view, "prev from the first key");
    lkv_iter_seek_last(it);
    agree(it, m, last, view, "seek_last");
    lkv_iter_next(it);
    agree(it, m, nkeys, view, "next from the last key");
    /* seek to the first key, then prev: not valid either */
    lkv_iter_seek(it, keys[first].p, keys[first].n);
    agree(it, m, first, view, "seek(first key)");
    lkv_iter_prev(it);
    agree(it, m, -1, view, "seek(first key) then prev");
    /* and out again: seek_last after falling off the front */
    lkv_iter_seek_last(it);
    agree(it, m, last, view, "seek_last after falling off the front");
    int before_last = live_from(m, last - 1, -1);
    lkv_iter_prev(it);
    agree(it, m, before_last, view, "seek_last then prev");
    if (before_last >= 0 && lkv_iter_valid(it)) {
      lkv_iter_next(it);
      agree(it, m, last, view, "seek_last, prev, next");
    }
  } else {
    lkv_iter_seek_last(it);
    agree(it, m, -1, view, "seek_last on an empty view");
    lkv_iter_seek_first(it);
    agree(it, m, nkeys, view, "seek_first on an empty view");
  }

  /* (b) random walks mixing the directions. In a view with no live key
   * every move scans over all the entries, so a few short walks there. */
  int nwalks = nlive ? walk_count : 4, nsteps = nlive ? 40 : 3;
  char probe[512];
  size_t pn;
  for (int w = 0; w < nwalks; w++) {
    int at = make_probe(probe, &pn);
    pos = live_from(m, at, +1);
    lkv_iter_seek(it, probe, pn);
    snprintf(what, sizeof what, "walk %d: seek(probe of %zu bytes)", w, pn);
    if (!agree(it, m, pos, view, what)) {
      fprintf(stderr, "  probe ");
      print_bytes(stderr, probe, pn);
      fputc('\n', stderr);
      continue;
    }
    char start[512];
    size_t startn = pn;
    memcpy(start, probe, pn);
    char trail[64];
    int tn = 0;
    for (int s = 0; s < nsteps; s++) {
      char op = random_move(it, m, &pos);
      if (tn < (int)sizeof trail - 1) trail[tn++] = op;
      trail[tn] = 0;
      snprintf(what, sizeof what,
               "walk %d from seek(probe), moves %s (n=next p=prev "
               "F=seek_first L=seek_last S=seek)",
               w, trail);
      if (!agree(it, m, pos, view, what)) {
        if (reported <= 20) {
          fprintf(stderr, "  the walk started at seek(");
          print_bytes(stderr, start, startn);
          fprintf(stderr, ")\n");
        }
        break;
      }
    }
  }

  lkv_err err = {0};
  CHECK_OK(lkv_iter_status(it, &err), &err);
}

/* Check one view through a fresh iterator. */
static void check_at(lkv_db *db, uint64_t at, const model *m, const char *phase,
                     const char *name) {
  char view[160];
  snprintf(view, sizeof view, "%s, %s", phase, name);
  lkv_iter *it = NULL;
  lkv_err err = {0};
  CHECK_OK(lkv_iter_new(db, at, &it, &err), &err);
  if (it == NULL) return;
  check_view(it, m, view);
  lkv_iter_free(it);
}

/* ---- the scenario -------------------------------------------------------- */

#define NOPS 20000
#define NSNAPS 4

static model now;
static model snapm[NSNAPS];
static lkv_snapshot *snaps[NSNAPS];
static model empty_model;

static void check_all(lkv_db *db, const char *phase) {
  char name[64];
  check_at(db, LKV_SEQ_LATEST, &now, phase, "latest");
  for (int s = 0; s < NSNAPS; s++) {
    if (snaps[s] == NULL) continue;
    snprintf(name, sizeof name, "snapshot %d (seq %llu)", s,
             (unsigned long long)lkv_snapshot_seq(snaps[s]));
    check_at(db, lkv_snapshot_seq(snaps[s]), &snapm[s], phase, name);
  }
  check_at(db, 0, &empty_model, phase, "seq 0 (empty view)");
}

/* An iterator's view stays put while writes land in the very memtable it
 * reads (big_memtable) or freeze and flush it (small memtables): walking
 * both ways between the writes, it shows its view and nothing else. The
 * writes go to keys next to the iterator's position, where a backward
 * step through the skiplist would meet them. */
static void writes_while_walking(int big_memtable) {
  char d[] = "/tmp/lkv_iter_test_writes_XXXXXX";
  lkv_options o = small_options();
  if (big_memtable) o.max_memtable_size = 8 * 1024 * 1024;
  lkv_db *db = open_fresh(d, &o);
  if (db == NULL) return;
  lkv_err err = {0};
  model *cur = calloc(1, sizeof *cur), *frozen = malloc(sizeof *frozen);
  if (cur == NULL || frozen == NULL) abort();
  for (int i = 0; i < nkeys; i++) {
    if (rn(5) < 3) do_set(db, cur, i);
    if (rn(4) == 0) do_delete(db, cur, i);
  }
  const char *view = big_memtable ? "writes into the iterator's memtable"
                                  : "writes and flushes while iterating";
  for (int round = 0; round < 3; round++) {
    lkv_iter *it = NULL;
    CHECK_OK(lkv_iter_new(db, LKV_SEQ_LATEST, &it, &err), &err);
    if (it == NULL) break;
    *frozen = *cur;
    int pos = -1; /* not valid: the first move positions it */
    char trail[64], what[160];
    int tn = 0;
    for (int step = 0; step < 1500; step++) {
      char op = random_move(it, frozen, &pos);
      if (tn == (int)sizeof trail - 1) tn = 0; /* the last moves only */
      trail[tn++] = op;
      trail[tn] = 0;
      snprintf(what, sizeof what, "round %d step %d, last moves %s", round,
               step, trail);
      if (!agree(it, frozen, pos, view, what)) break;
      /* writes around the position (or anywhere) */
      int around = pos >= 0 && pos < nkeys ? pos : (int)rn((unsigned)nkeys);
      for (int w = (int)rn(4); w > 0; w--) {
        int i = rn(3) ? around - 2 + (int)rn(5) : (int)rn((unsigned)nkeys);
        if (i < 0 || i >= nkeys) continue;
        if (rn(3) == 0)
          do_delete(db, cur, i);
        else
          do_set(db, cur, i);
      }
    }
    CHECK_OK(lkv_iter_status(it, &err), &err);
    lkv_iter_free(it);
    check_at(db, LKV_SEQ_LATEST, cur, view, "a new iterator afterwards");
  }
  lkv_stats st;
  lkv_db_stats(db, &st);
  if (!big_memtable)
    CHECK(st.flushes > 0);
  else
    CHECK(st.flushes == 0);
  CHECK_OK(lkv_db_close(db, &err), &err);
  free(cur);
  free(frozen);
  rmrf(d);
}

/* A few keys with long runs of versions: many versions of one key in one
 * memtable, and (small blocks, a big memtable) in one table, crossing
 * block boundaries, with snapshots pinning some of them. */
static void many_versions(void) {
  char d[] = "/tmp/lkv_iter_test_versions_XXXXXX";
  lkv_options o; /* default table and level sizes: one table, few blocks */
  lkv_options_init(&o);
  o.mmap_reads = 1;
  o.max_memtable_size = 512 * 1024;
  o.block_size = 1024;
  o.sync = LKV_SYNC_NONE;
  lkv_db *db = open_fresh(d, &o);
  if (db == NULL) return;
  lkv_err err = {0};
  enum { NPICK = 12, NVSNAP = 3 };
  const int pick[NPICK] = {0,
                           1,
                           2,
                           nkeys / 4,
                           nkeys / 4 + 1,
                           nkeys / 2,
                           nkeys / 2 + 1,
                           3 * nkeys / 4,
                           nkeys - 3,
                           nkeys - 2,
                           nkeys - 1,
                           nkeys / 3};
  model *cur = calloc(1, sizeof *cur);
  model *sm = calloc(NVSNAP, sizeof *sm);
  lkv_snapshot *sn[NVSNAP] = {0};
  if (cur == NULL || sm == NULL) abort();
  for (int r = 0; r < 40; r++) {
    if (r == 20) {
      CHECK_OK(lkv_snapshot_new(db, &sn[0], &err), &err);
      sm[0] = *cur;
    }
    for (int j = 0; j < NPICK; j++) {
      if (rn(8) == 0)
        do_delete(db, cur, pick[j]);
      else
        do_set(db, cur, pick[j]);
    }
  }
  /* one key, then its neighbours, a thousand times each */
  for (int r = 0; r < 1000; r++) {
    if (r == 500) {
      CHECK_OK(lkv_snapshot_new(db, &sn[1], &err), &err);
      sm[1] = *cur;
    }
    if (r % 7 == 3)
      do_delete(db, cur, pick[5]);
    else
      do_set(db, cur, pick[5]);
  }
  for (int r = 0; r < 1000; r++) {
    do_set(db, cur, pick[4]);
    do_set(db, cur, pick[6]);
  }
  for (int r = 0; r < 40; r++) {
    if (r == 30) {
      CHECK_OK(lkv_snapshot_new(db, &sn[2], &err), &err);
      sm[2] = *cur;
    }
    for (int j = 0; j < NPICK; j++) {
      if (rn(8) == 0)
        do_delete(db, cur, pick[j]);
      else
        do_set(db, cur, pick[j]);
    }
  }
  walk_count = 15; /* each step may cross a thousand versions */
  static const char *const phases[] = {"many versions, memtable",
                                       "many versions, flushed",
                                       "many versions, compacted"};
  for (int ph = 0; ph < 3; ph++) {
    if (ph == 1) CHECK_OK(lkv_db_flush(db, &err), &err);
    if (ph == 2) CHECK_OK(lkv_db_compact(db, &err), &err);
    char name[64];
    check_at(db, LKV_SEQ_LATEST, cur, phases[ph], "latest");
    for (int s = 0; s < NVSNAP; s++) {
      if (sn[s] == NULL) continue;
      snprintf(name, sizeof name, "snapshot %d (seq %llu)", s,
               (unsigned long long)lkv_snapshot_seq(sn[s]));
      check_at(db, lkv_snapshot_seq(sn[s]), &sm[s], phases[ph], name);
    }
  }
  walk_count = 60;
  for (int s = 0; s < NVSNAP; s++) lkv_snapshot_release(sn[s]);
  CHECK_OK(lkv_db_close(db, &err), &err);
  free(cur);
  free(sm);
  rmrf(d);
}

/* A db whose every key is deleted: seek_last and seek_first find nothing,
 * with the tombstones in the memtable, then in tables. */
static void all_deleted(void) {
  char d[] = "/tmp/lkv_iter_test_empty_XXXXXX";
  lkv_options o = small_options();
  lkv_db *db = open_fresh(d, &o);
  if (db == NULL) return;
  lkv_err err = {0};
  lkv_iter *it = NULL;
  /* a brand-new db */
  CHECK_OK(lkv_iter_new(db, LKV_SEQ_LATEST, &it, &err), &err);
  lkv_iter_seek_last(it);
  CHECK(!lkv_iter_valid(it));
  lkv_iter_seek_first(it);
  CHECK(!lkv_iter_valid(it));
  CHECK(lkv_iter_status(it, &err) == LKV_OK);
  lkv_iter_free(it);

  model *m = calloc(1, sizeof *m);
  if (m == NULL) abort();
  for (int i = 0; i < nkeys; i++) do_set(db, m, i);
  CHECK_OK(lkv_db_flush(db, &err), &err);
  for (int i = 0; i < nkeys; i += 2) do_delete(db, m, i);
  CHECK_OK(lkv_db_flush(db, &err), &err);
  for (int i = 1; i < nkeys; i += 2) do_delete(db, m, i); /* memtable */
  check_at(db, LKV_SEQ_LATEST, m, "all deleted", "memtable tombstones");
  CHECK_OK(lkv_db_flush(db, &err), &err);
  check_at(db, LKV_SEQ_LATEST, m, "all deleted", "flushed tombstones");
  /* one key back, in the middle: the only one either way */
  int mid = nkeys / 2;
  do_set(db, m, mid);
  walk_count = 10; /* each move steps over every tombstone */
  check_at(db, LKV_SEQ_LATEST, m, "all deleted", "one key back");
  CHECK_OK(lkv_db_compact(db, &err), &err);
  check_at(db, LKV_SEQ_LATEST, m, "all deleted", "one key, compacted");
  walk_count = 60;
  CHECK_OK(lkv_db_close(db, &err), &err);
  free(m);
  rmrf(d);
}

int main(void) {
  make_keys();
  char d[] = "/tmp/lkv_iter_test_XXXXXX";
  lkv_options o = small_options();
  lkv_db *db = open_fresh(d, &o);
  if (db == NULL) return 1;
  lkv_err err = {0};

  /* snapshots after these many operations */
  static const int snap_at[NSNAPS] = {1700, 6000, 11000, 17000};
  int ns = 0, sets = 0, dels = 0;
  for (int op = 0; op < NOPS; op++) {
    if (ns < NSNAPS && op == snap_at[ns]) {
      CHECK_OK(lkv_snapshot_new(db, &snaps[ns], &err), &err);
      snapm[ns] = now;
      ns++;
    }
    /* a fifth of the keys are hot: many versions of them */
    int i = rn(5) ? (int)rn((unsigned)nkeys)
                  : (int)(rn((unsigned)(nkeys / 5)) * 5 % (unsigned)nkeys);
    unsigned r = rn(1000);
    if (r < 2) { /* a run of deletes: long stretches of tombstones */
      int len = 20 + (int)rn(200);
      for (int j = i; j < i + len && j < nkeys; j++) {
        do_delete(db, &now, j);
        dels++;
      }
    } else if (r < 260) {
      do_delete(db, &now, i);
      dels++;
    } else {
      do_set(db, &now, i);
      sets++;
    }
  }
  /* tombstones at both ends of the key space in the newest data */
  for (int j = 0; j < 12; j++) {
    do_delete(db, &now, j);
    do_delete(db, &now, nkeys - 1 - j);
    dels += 2;
  }
  do_set(db, &now, 5); /* one key back near the front */

  lkv_stats st;
  lkv_db_stats(db, &st);
  int live = 0;
  for (int i = 0; i < nkeys; i++) live += now.s[i].ver != 0;
  char summary[256];
  int sl = snprintf(summary, sizeof summary,
                    "%d keys (%d live), %d sets, %d deletes, %d snapshots; "
                    "before the flush %llu imm memtables, tables per level",
                    nkeys, live, sets, dels, NSNAPS,
                    (unsigned long long)st.imm_memtables);
  for (int l = 0; l < LKV_MAX_LEVELS && sl > 0 && sl < (int)sizeof summary; l++)
    sl += snprintf(summary + sl, sizeof summary - (size_t)sl, " %llu",
                   (unsigned long long)st.sstables_per_level[l]);

  /* an iterator opened now must keep its view across flush and compact */
  lkv_iter *early = NULL;
  CHECK_OK(lkv_iter_new(db, LKV_SEQ_LATEST, &early, &err), &err);

  check_all(db, "after writes");
  CHECK_OK(lkv_db_flush(db, &err), &err);
  check_all(db, "after flush");
  CHECK_OK(lkv_db_compact(db, &err), &err);
  check_all(db, "after compact");
  /* writes after the early iterator do not show in it */
  for (int j = 0; j < 300; j++) {
    int i = (int)rn((unsigned)nkeys);
    if (rn(2)) {
      lkv_err e2 = {0};
      CHECK_OK(lkv_db_set(db, keys[i].p, keys[i].n, "later", 5, NULL, &e2),
               &e2);
    } else {
      lkv_err e2 = {0};
      CHECK_OK(lkv_db_delete(db, keys[i].p, keys[i].n, NULL, &e2), &e2);
    }
  }
  if (early) {
    check_view(early, &now, "iterator opened before flush and compact");
    lkv_iter_free(early);
  }

  /* release the snapshots: compaction may now drop what they pinned */
  for (int s = 0; s < NSNAPS; s++) {
    lkv_snapshot_release(snaps[s]);
    snaps[s] = NULL;
  }
  /* the "later" writes are not in the model: write every key once more
   * through it (a third of them deleted) to bring it up to date */
  for (int i = 0; i < nkeys; i++) {
    if (rn(3) == 0)
      do_delete(db, &now, i);
    else
      do_set(db, &now, i);
  }
  check_all(db, "after releasing snapshots and rewriting");
  CHECK_OK(lkv_db_compact(db, &err), &err);
  check_all(db, "after final compact");

  lkv_db_stats(db, &st);
  CHECK(st.live_iterators == 0);
  CHECK_OK(lkv_db_close(db, &err), &err);
  rmrf(d);

  all_deleted();
  many_versions();
  writes_while_walking(1);
  writes_while_walking(0);

  printf("iter_test: %s; %ld iterator positions checked against the model\n",
         summary, steps_checked);
  for (int i = 0; i < nkeys; i++) free(keys[i].p);
  TEST_MAIN_END();
}
