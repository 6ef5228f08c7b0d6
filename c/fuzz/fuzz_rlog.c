/* fuzz_rlog.c - libFuzzer target: the input is DATA_DIR/replication.log.
 * lkvnet_rlog_open either fails with LKV_CORRUPTION, leaving the file as it
 * was (a corrupt log is never cut), or replays entries that hold the
 * format's invariants and are exactly the file's frames (as the reference
 * encoder of rlog_fix.h writes them, in the header's version, version 2
 * chained), in index order, then cuts only a torn tail: the bytes it could
 * not read (stats.dropped_bytes), in which no valid frame starts. A
 * version 1 input is rewritten as version 2 by the open. On an opened log
 * a few appends, lkvnet_rlog_read of everything and lkvnet_rlog_decode of
 * what it read must give back the replayed entries plus the appended
 * ones; closing and opening again must replay the same and cut
 * nothing. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz_util.h"
#include "rlog_fix.h"

typedef struct Seen {
  uint64_t term, index;
  int op;
  char *key, *val;
  size_t klen, vlen;
} Seen;

typedef struct Ctx {
  const uint8_t *file; /* the file's bytes as open read them */
  size_t n;
  size_t off;     /* where the next frame starts in file */
  uint32_t fixed; /* the file's layout: FZ_FIXED_V1 or FZ_FIXED_V2 */
  size_t v2size;  /* the replayed entries' bytes as version 2 frames */
  uint64_t prev_index, prev_term;
  Seen *v;
  size_t nv, cap;
} Ctx;

static char *dup_bytes(const char *p, size_t n) {
  char *d = malloc(n ? n : 1);
  if (d == NULL) abort();
  if (n) memcpy(d, p, n);
  return d;
}

static void add_seen(Ctx *c, const lkvnet_entry *e) {
  if (c->nv == c->cap) {
    c->cap = c->cap ? c->cap * 2 : 16;
    c->v = realloc(c->v, c->cap * sizeof *c->v);
    if (c->v == NULL) abort();
  }
  Seen *s = &c->v[c->nv++];
  s->term = e->term;
  s->index = e->index;
  s->op = e->op;
  s->key = dup_bytes(e->key, e->klen);
  s->klen = e->klen;
  s->val = dup_bytes(e->val, e->vlen);
  s->vlen = e->vlen;
}

static int same(const Seen *s, const lkvnet_entry *e) {
  return s->term == e->term && s->index == e->index && s->op == e->op &&
         s->klen == e->klen && s->vlen == e->vlen &&
         (s->klen == 0 || memcmp(s->key, e->key, s->klen) == 0) &&
         (s->vlen == 0 || memcmp(s->val, e->val, s->vlen) == 0);
}

/* Each entry follows the one before (the first the header's base) and is
 * the frame at c->off of the file, byte for byte. */
static int on_entry(void *ctx, const lkvnet_entry *e, lkv_err *err) {
  Ctx *c = ctx;
  (void)err;
  fz_check_entry(e);
  if (c->prev_index == UINT64_MAX || e->index != c->prev_index + 1) abort();
  if (e->term < c->prev_term) abort();
  /* version 2 frames name the term before them; version 1 has no chain */
  if (e->prev_term != (c->fixed == FZ_FIXED_V2 ? c->prev_term : 0)) abort();
  size_t fs;
  /* reads key and value: ASan checks them */
  uint8_t *enc = fz_encode(e, c->fixed, e->prev_term, &fs);
  if (c->off > c->n || fs > c->n - c->off) abort();
  if (memcmp(enc, c->file + c->off, fs) != 0) abort();
  free(enc);
  c->off += fs;
  c->v2size += lkvnet_rlog_frame_size(e);
  c->prev_index = e->index;
  c->prev_term = e->term;
  add_seen(c, e);
  return LKV_OK;
}

static void ctx_free(Ctx *c) {
  for (size_t i = 0; i < c->nv; i++) {
    free(c->v[i].key);
    free(c->v[i].val);
  }
  free(c->v);
}

static uint8_t *slurp(const char *path, size_t *n) {
  struct stat st;
  if (stat(path, &st) != 0) abort();
  uint8_t *b = malloc((size_t)st.st_size + 1);
  int fd = open(path, O_RDONLY);
  if (b == NULL || fd < 0) abort();
  if (read(fd, b, (size_t)st.st_size + 1) != st.st_size) abort();
  close(fd);
  *n = (size_t)st.st_size;
  return b;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
  const char *path = fuzz_file(LKVNET_RLOG_FILE, data, n);
  Ctx c;
  lkvnet_rlog *r = NULL;
  lkvnet_rlog_stats st;
  lkv_err err;
  memset(&c, 0, sizeof c);
  c.file = data;
  c.n = n;
  c.off = LKVNET_RLOG_HEADER_SIZE;
  c.fixed = FZ_FIXED_V2;
  if (n >= LKVNET_RLOG_HEADER_SIZE) {
    c.prev_index = fz_get64(data + 16);
    c.prev_term = fz_get64(data + 24);
    if (fz_get32(data + 8) == 1) c.fixed = FZ_FIXED_V1;
  }
  err.code = LKV_OK;
  err.msg[0] = '\0';
  int rc = lkvnet_rlog_open(fuzz_dir, NULL, -1, on_entry, &c, &r, &err);
  if (rc != LKV_OK) {
    size_t m;
    if (rc != LKV_CORRUPTION || err.code != rc || err.msg[0] == '\0' ||
        r != NULL || n == 0)
      abort();
    uint8_t *now = slurp(path, &m); /* a corrupt log is never cut */
    if (m != n || (n && memcmp(now, data, n) != 0)) abort();
    free(now);
    ctx_free(&c);
    return 0;
  }

  /* what open kept: the header and the replayed frames; zeros to the end
   * after them are space written ahead (rlog.h), kept and not dropped */
  lkvnet_rlog_stats_get(r, &st);
  int zero_tail = 1;
  for (size_t p = c.off; p < n; p++)
    if (data[p] != 0) {
      zero_tail = 0;
      break;
    }
  if (n == 0) { /* a new log */
    if (c.nv || st.base_index || st.base_term || st.last_index ||
        st.dropped_bytes)
      abort();
  } else {
    if (st.base_index != fz_get64(data + 16) ||
        st.base_term != fz_get64(data + 24) || st.last_index != c.prev_index ||
        st.last_term != c.prev_term || st.last_index - st.base_index != c.nv ||
        c.off > n || st.dropped_bytes != (zero_tail ? 0 : n - c.off) ||
        (st.dropped_bytes != 0) != (st.dropped_why[0] != '\0'))
      abort();
    if (strstr(st.dropped_why, "lost before its sync") != NULL) {
      /* cut as a write lost before its sync (valid frames may follow):
       * a piece of the bad frame (its header when its length is
       * impossible, the rest of the file when it claims more) between
       * two 512-byte boundaries is zeros */
      size_t end = n;
      if (n - c.off >= 8) {
        uint64_t len = fz_get32(data + c.off);
        if (len < c.fixed ||
            len > c.fixed + LKV_MAX_KEY_BYTES + LKV_MAX_VALUE_BYTES)
          end = c.off + 8;
        else if (len <= n - c.off - 8)
          end = c.off + 8 + (size_t)len;
      }
      int found = 0;
      for (size_t a = c.off; a < end && !found;) {
        size_t b = (a | 511u) + 1, q = a;
        if (b > end) b = end;
        while (q < b && data[q] == 0) q++;
        found = q == b;
        a = b;
      }
      if (!found) abort();
    } else {
      /* only a torn tail was cut: no valid frame starts in it */
      for (size_t p = c.off + 1; p < n; p++)
        if (fz_valid_frame_at(data, n, p, c.fixed)) abort();
    }
  }
  if (st.durable_index != st.last_index) abort();
  struct stat fst;
  /* a version 1 log is rewritten as version 2, without the zeros */
  if (stat(path, &fst) != 0 ||
      (uint64_t)fst.st_size != (n > 0 && zero_tail && c.fixed == FZ_FIXED_V2
                                    ? n
                                    : LKVNET_RLOG_HEADER_SIZE + c.v2size))
    abort();
  uint64_t term;
  if (lkvnet_rlog_term_at(r, st.base_index, &term) != LKV_OK ||
      term != st.base_term)
    abort();
  for (size_t i = 0; i < c.nv; i++)
    if (lkvnet_rlog_term_at(r, c.v[i].index, &term) != LKV_OK ||
        term != c.v[i].term)
      abort();

  /* append a set, a delete, a no-op and a configuration change in the
   * last term */
  static const struct {
    int op;
    const char *k, *v;
  } ap[4] = {{LKVNET_OP_SET, "fz-key", "fz-value"},
             {LKVNET_OP_DELETE, "fz-key", NULL},
             {LKVNET_OP_NOOP, NULL, NULL},
             {LKVNET_OP_CONF, NULL, "fz-conf"}};
  uint64_t last = st.last_index;
  size_t body = c.v2size;
  for (int i = 0; i < 4; i++) {
    uint64_t idx = 0;
    const char *k = ap[i].k ? ap[i].k : "";
    const char *v = ap[i].v ? ap[i].v : "";
    rc = lkvnet_rlog_append(r, st.last_term, ap[i].op, k, strlen(k), v,
                            strlen(v), &idx, &err);
    if (last == UINT64_MAX) { /* no index after 2^64-1: must be refused */
      if (rc == LKV_OK) abort();
      break;
    }
    if (rc != LKV_OK || idx != last + 1) abort();
    lkvnet_entry e = {st.last_term, idx,     ap[i].op,  k,
                      strlen(k),    ap[i].v, strlen(v), 0};
    if (ap[i].op == LKVNET_OP_NOOP || ap[i].op == LKVNET_OP_CONF) e.klen = 0;
    add_seen(&c, &e);
    body += lkvnet_rlog_frame_size(&e);
    last = idx;
  }

  /* read everything back and decode it */
  unsigned char *buf = NULL;
  size_t len = 0, off = 0, i = 0;
  uint64_t to = 0;
  if (c.nv == 0) goto reopen; /* a log at the end of the index space */
  if (lkvnet_rlog_read(r, st.base_index + 1, SIZE_MAX, &buf, &len, &to, &err) !=
          LKV_OK ||
      to != last || len != body)
    abort();
  for (uint64_t chain = st.base_term;;) {
    lkvnet_entry e;
    char why[128];
    size_t o = off;
    int d = lkvnet_rlog_decode(buf, len, &off, &e, why, sizeof why);
    if (d == 0) break;
    if (d != 1 || i >= c.nv) abort();
    fz_check_frame(buf, o, off, &e);
    if (!same(&c.v[i], &e) || e.prev_term != chain) abort();
    chain = e.term;
    i++;
  }
  if (i != c.nv || off != len) abort();
  free(buf);
  /* max_bytes 0: still one whole frame */
  if (lkvnet_rlog_read(r, st.base_index + 1, 0, &buf, &len, &to, &err) !=
          LKV_OK ||
      to != st.base_index + 1)
    abort();
  off = 0;
  {
    lkvnet_entry e;
    char why[128];
    if (lkvnet_rlog_decode(buf, len, &off, &e, why, sizeof why) != 1 ||
        off != len || !same(&c.v[0], &e))
      abort();
  }
  free(buf);
reopen:
  if (lkvnet_rlog_read(r, st.base_index, SIZE_MAX, &buf, &len, &to, &err) !=
      LKV_NOTFOUND)
    abort();
  if (lkvnet_rlog_close(r, &err) != LKV_OK) abort();

  /* open again: the same entries, nothing cut */
  uint8_t *file = slurp(path, &len);
  Ctx c2;
  memset(&c2, 0, sizeof c2);
  c2.file = file;
  c2.n = len;
  c2.off = LKVNET_RLOG_HEADER_SIZE;
  c2.fixed = FZ_FIXED_V2;
  if (len < LKVNET_RLOG_HEADER_SIZE || fz_get32(file + 8) != 2) abort();
  c2.prev_index = st.base_index;
  c2.prev_term = st.base_term;
  if (lkvnet_rlog_open(fuzz_dir, NULL, -1, on_entry, &c2, &r, &err) != LKV_OK)
    abort();
  lkvnet_rlog_stats_get(r, &st);
  if (c2.nv != c.nv || st.dropped_bytes != 0 || c2.off != len) abort();
  for (i = 0; i < c.nv; i++) {
    lkvnet_entry e = {c2.v[i].term, c2.v[i].index, c2.v[i].op,   c2.v[i].key,
                      c2.v[i].klen, c2.v[i].val,   c2.v[i].vlen, 0};
    if (!same(&c.v[i], &e)) abort();
  }
  if (lkvnet_rlog_close(r, &err) != LKV_OK) abort();
  free(file);
  ctx_free(&c2);
  ctx_free(&c);
  return 0;
}

size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size,
                               unsigned int seed) {
  return fz_mutate(data, size, max_size, seed, 1);
}
