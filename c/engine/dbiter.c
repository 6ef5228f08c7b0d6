/* dbiter.c - the public iterator: a merge of every memtable and table of
 * one superversion, showing for each user key its newest version with
 * seq <= the iterator's sequence number, and hiding deleted keys. The
 * superversion reference keeps every file it reads alive.
 *
 * Going forward the merge sits on the entry shown. Going backward it
 * sits just before the shown key's entries (LevelDB's DBIter): a key's
 * versions come newest first, so walking back meets its newest visible
 * version last, after the merge has left the key; the key and value
 * shown are then copies (skip, val). */
#include <stdlib.h>
#include <string.h>

#include "db_impl.h"
#include "err.h"

struct lkv_iter {
  lkv_db *db;
  lkv_sv *sv;
  lkv_iiter *m; /* the merge; positioned on the current entry when valid */
  uint64_t seq;
  int valid;
  lkv_buf skip; /* user key whose older versions are hidden; backward:
                 * the key shown */
  lkv_buf val;  /* backward: the value shown */
  int reverse;
  /* Read sampling (LevelDB's): about every MiB read, ask whether the
   * key sits in two or more tables and if so charge the first a seek,
   * so scan-heavy loads also get their overlapping tables compacted. */
  uint64_t sample_left, rng;
  int rc;
  lkv_err err;
};

#define SAMPLE_BYTES (1u << 20)

/* Uniform in [0, 2 MiB): the distance to the next read sample. */
static uint64_t sample_period(lkv_iter *it) {
  uint64_t x = it->rng; /* xorshift64 */
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  it->rng = x;
  return x % (2 * SAMPLE_BYTES);
}

static void sample(lkv_iter *it, lkv_slice ukey, size_t bytes) {
  while (it->sample_left < bytes) {
    it->sample_left += sample_period(it);
    lkv_seek_charge c;
    if (lkv_version_sample(it->sv->v, ukey.p, ukey.n, &c))
      lkv_db_charge_seek(it->db, &c);
  }
  it->sample_left -= bytes;
}

static int iter_open(lkv_db *db, uint64_t at, lkv_iter **out, lkv_err *err);

int lkv_iter_new(lkv_db *db, uint64_t at, lkv_iter **out, lkv_err *err) {
  if (db == NULL || out == NULL)
    return lkv_seterr(err, LKV_INVALID, "iter: NULL argument");
  int rc = lkv_db_call_begin(db, err);
  if (rc) return rc;
  rc = iter_open(db, at, out, err);
  lkv_db_call_end(db);
  return rc;
}

static int iter_open(lkv_db *db, uint64_t at, lkv_iter **out, lkv_err *err) {
  lkv_iter *it = calloc(1, sizeof *it);
  if (it == NULL) return lkv_seterr(err, LKV_NOMEM, "iterator");
  pthread_mutex_lock(&db->mu);
  if (db->shutting_down) {
    pthread_mutex_unlock(&db->mu);
    free(it);
    return lkv_seterr(err, LKV_CLOSED, "db is closed");
  }
  it->sv = db->sv;
  lkv_sv_ref(it->sv);
  db->live_iters++;
  pthread_mutex_unlock(&db->mu);
  it->db = db;
  /* a new seed per iterator (LevelDB's too): short scans through fresh
   * iterators must not all draw the same first period */
  uint64_t z =
      atomic_fetch_add_explicit(&db->iter_seeds, 1, memory_order_relaxed) *
      0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  it->rng = (z ^ (z >> 27)) | 1;
  it->sample_left = sample_period(it);
  uint64_t last = lkv_db_seq(db);
  it->seq = at < last ? at : last;

  lkv_sv *s = it->sv;
  int n = 0, cap = 1 + s->nimm + lkv_version_count(s->v);
  lkv_iiter **kids = calloc((size_t)cap, sizeof *kids);
  int rc = kids ? LKV_OK : LKV_NOMEM;
  if (rc == LKV_OK && (kids[n] = lkv_mem_iter(s->mem)) != NULL)
    n++;
  else
    rc = LKV_NOMEM;
  for (int i = 0; rc == LKV_OK && i < s->nimm; i++)
    if ((kids[n] = lkv_mem_iter(s->imm[i])) != NULL)
      n++;
    else
      rc = LKV_NOMEM;
  if (rc == LKV_OK) rc = lkv_version_add_iters(s->v, kids, &n);
  if (rc == LKV_OK) {
    it->m =
        lkv_merge_iter_new(kids, n); /* owns the children, even on failure */
    n = 0;
    if (it->m == NULL) rc = LKV_NOMEM;
  }
  for (int i = 0; i < n; i++) kids[i]->ops->destroy(kids[i]);
  free(kids);
  if (rc) {
    lkv_iter_free(it);
    return lkv_seterr(err, rc, "iterator");
  }
  *out = it;
  return LKV_OK;
}

/* Move forward from the merge's position to the next visible entry. */
static void find_next(lkv_iter *it, int skipping) {
  lkv_iiter *m = it->m;
  it->valid = 0;
  for (; m->ops->valid(m); m->ops->next(m)) {
    lkv_slice k = m->ops->key(m);
    uint64_t tag = lkv_ikey_tag(k);
    if ((tag >> 8) > it->seq) continue; /* newer than our view */
    lkv_slice u = lkv_ikey_user(k);
    if (skipping && lkv_ucmp(u.p, u.n, it->skip.data, it->skip.len) <= 0)
      continue; /* an older version of a key already shown or deleted */
    if ((tag & 0xff) == LKV_TYPE_DELETE) {
      if (lkv_buf_set(&it->skip, u.p, u.n)) {
        it->rc = lkv_seterr(&it->err, LKV_NOMEM, "iterator");
        return;
      }
      skipping = 1;
      continue;
    }
    it->valid = 1;
    sample(it, u, k.n + m->ops->value(m).n);
    return;
  }
  int rc = m->ops->status(m, &it->err);
  if (rc) it->rc = rc;
}

/* From the merge's position, walk back to the newest visible version of
 * the previous live user key; the merge ends just before that key. */
static void find_prev(lkv_iter *it) {
  lkv_iiter *m = it->m;
  int type = LKV_TYPE_DELETE; /* nothing live found yet */
  it->valid = 0;
  for (; m->ops->valid(m); m->ops->prev(m)) {
    lkv_slice k = m->ops->key(m);
    uint64_t tag = lkv_ikey_tag(k);
    if ((tag >> 8) > it->seq) continue; /* newer than our view */
    lkv_slice u = lkv_ikey_user(k);
    if (type != LKV_TYPE_DELETE &&
        lkv_ucmp(u.p, u.n, it->skip.data, it->skip.len) < 0)
      break; /* an earlier key, and a live one is in hand */
    type = (int)(tag & 0xff);
    if (type == LKV_TYPE_DELETE) {
      it->skip.len = 0;
      it->val.len = 0;
    } else {
      lkv_slice v = m->ops->value(m);
      if (lkv_buf_set(&it->skip, u.p, u.n) || lkv_buf_set(&it->val, v.p, v.n)) {
        it->rc = lkv_seterr(&it->err, LKV_NOMEM, "iterator");
        return;
      }
      sample(it, u, k.n + v.n);
    }
  }
  int rc = m->ops->status(m, &it->err);
  if (rc) {
    it->rc = rc;
    return;
  }
  if (type == LKV_TYPE_DELETE) { /* ran off the start */
    it->skip.len = 0;
    it->reverse = 0;
    return;
  }
  it->valid = 1;
}

void lkv_iter_seek_last(lkv_iter *it) {
  if (it->rc) return;
  it->reverse = 1;
  it->m->ops->seek_last(it->m);
  find_prev(it);
}

void lkv_iter_prev(lkv_iter *it) {
  if (!it->valid) return;
  lkv_iiter *m = it->m;
  if (!it->reverse) {
    /* back out of the current key's entries, then walk on as usual */
    lkv_slice u = lkv_ikey_user(m->ops->key(m));
    if (lkv_buf_set(&it->skip, u.p, u.n)) {
      it->valid = 0;
      it->rc = lkv_seterr(&it->err, LKV_NOMEM, "iterator");
      return;
    }
    for (;;) {
      m->ops->prev(m);
      if (!m->ops->valid(m)) {
        it->valid = 0;
        it->skip.len = 0;
        int rc = m->ops->status(m, &it->err);
        if (rc) it->rc = rc;
        return;
      }
      u = lkv_ikey_user(m->ops->key(m));
      if (lkv_ucmp(u.p, u.n, it->skip.data, it->skip.len) < 0) break;
    }
    it->reverse = 1;
  }
  find_prev(it);
}

void lkv_iter_seek_first(lkv_iter *it) {
  if (it->rc) return;
  it->reverse = 0;
  it->m->ops->seek_first(it->m);
  find_next(it, 0);
}

void lkv_iter_seek(lkv_iter *it, const void *key, size_t klen) {
  if (it->rc) return;
  char stack[256];
  char *ik = klen + LKV_TAG_BYTES <= sizeof stack
                 ? stack
                 : malloc(klen + LKV_TAG_BYTES);
  if (ik == NULL) {
    it->valid = 0;
    it->rc = lkv_seterr(&it->err, LKV_NOMEM, "iterator seek");
    return;
  }
  if (klen) memcpy(ik, key, klen);
  lkv_put64(ik + klen, lkv_tag(it->seq, LKV_TYPE_SEEK));
  lkv_slice t = {ik, klen + LKV_TAG_BYTES};
  it->reverse = 0;
  it->m->ops->seek(it->m, t);
  if (ik != stack) free(ik);
  find_next(it, 0);
}

void lkv_iter_next(lkv_iter *it) {
  if (!it->valid) return;
  if (it->reverse) {
    /* the merge is just before the shown key (skip): step into its
     * entries, and the forward walk skips them */
    it->reverse = 0;
    if (it->m->ops->valid(it->m))
      it->m->ops->next(it->m);
    else
      it->m->ops->seek_first(it->m);
    find_next(it, 1);
    return;
  }
  lkv_slice u = lkv_ikey_user(it->m->ops->key(it->m));
  if (lkv_buf_set(&it->skip, u.p, u.n)) {
    it->valid = 0;
    it->rc = lkv_seterr(&it->err, LKV_NOMEM, "iterator");
    return;
  }
  it->m->ops->next(it->m);
  find_next(it, 1);
}

int lkv_iter_valid(const lkv_iter *it) { return it->valid; }

int lkv_key_compare(const void *a, size_t alen, const void *b, size_t blen) {
  return lkv_ucmp(a, alen, b, blen);
}

const char *lkv_iter_key(const lkv_iter *it, size_t *klen) {
  if (it->reverse) { /* an empty key may have left the buffer unallocated */
    *klen = it->skip.len;
    return it->skip.data ? it->skip.data : "";
  }
  lkv_slice u = lkv_ikey_user(it->m->ops->key(it->m));
  *klen = u.n;
  return u.p;
}

const char *lkv_iter_value(const lkv_iter *it, size_t *vlen) {
  if (it->reverse) {
    *vlen = it->val.len;
    return it->val.data ? it->val.data : "";
  }
  lkv_slice v = it->m->ops->value(it->m);
  *vlen = v.n;
  return v.p;
}

int lkv_iter_status(const lkv_iter *it, lkv_err *err) {
  return it->rc ? lkv_errcopy(err, &it->err) : LKV_OK;
}

void lkv_iter_free(lkv_iter *it) {
  if (it == NULL) return;
  if (it->m) it->m->ops->destroy(it->m);
  lkv_sv_unref(it->sv);
  lkv_buf_free(&it->skip);
  lkv_buf_free(&it->val);
  pthread_mutex_lock(&it->db->mu);
  it->db->live_iters--;
  pthread_mutex_unlock(&it->db->mu);
  free(it);
}
