/* memtable.c - skiplist memtable over an arena (see memtable.h).
 *
 * Each write is one arena allocation: the node (lengths, height and
 * `height` next pointers) followed by the internal key (user key + 8-byte
 * tag) and the value. Nothing is freed until the whole arena goes. */
#include "memtable.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "bloom.h"
#include "table.h"

/* 12 levels with branching 4 index 4^12 = 16M entries without degrading. */
#define MAX_HEIGHT 12
#define ARENA_BLOCK (256 * 1024)

/* 8 bytes of header: the key is found after the next pointers rather
 * than through a pointer of its own, so a 4 MiB memtable holds ~5% more
 * small entries (fewer flushes, fewer L0 tables to compact). */
typedef struct node {
  uint32_t vlen;
  uint32_t kh; /* internal key length (low 24 bits: keys are <= 64 KiB) and
                * height (high 8) */
  _Atomic(struct node *) next[]; /* `height` entries, then key, value */
} node;

static inline uint32_t node_klen(const node *x) { return x->kh & 0xffffffu; }

/* The internal key, then the value right after it. */
static inline const char *node_key(const node *x) {
  return (const char *)&x->next[x->kh >> 24];
}

typedef struct arena_block {
  struct arena_block *prev;
  max_align_t data[];
} arena_block;

struct lkv_mem {
  atomic_int refs;
  atomic_int height; /* current max height; readers may see a stale one */
  uint64_t rnd;
  node *head;
  arena_block *blocks;
  char *ptr; /* bump pointer in the current block */
  size_t left;
  atomic_size_t usage;
  atomic_uint_fast64_t entries;
  uint64_t wal_number, wal_start;
  lkv_live_bloom filter;
  /* The writer's last insertion point per level: a key that lands right
   * after the previous one (sequential loads) is linked without a search
   * from the top. Used by the single writer only. */
  node *splice[MAX_HEIGHT];
};

static void *arena_alloc(lkv_mem *m, size_t n) {
  n = (n + 7) & ~(size_t)7; /* nodes hold pointers: keep 8-byte alignment */
  if (n > m->left) {
    /* a big entry gets its own block so the current one is not wasted */
    size_t bsize = n > ARENA_BLOCK / 4 ? n : ARENA_BLOCK;
    arena_block *b = malloc(sizeof *b + bsize);
    if (b == NULL) return NULL;
    b->prev = m->blocks;
    m->blocks = b;
    if (bsize != ARENA_BLOCK) {
      atomic_fetch_add_explicit(&m->usage, n, memory_order_relaxed);
      return b->data;
    }
    m->ptr = (char *)b->data;
    m->left = bsize;
  }
  /* usage counts bytes handed out, not blocks, so a tiny memtable limit
   * (the seed's 4 KiB) still means a few writes, not one block */
  atomic_fetch_add_explicit(&m->usage, n, memory_order_relaxed);
  void *p = m->ptr;
  m->ptr += n;
  m->left -= n;
  return p;
}

/* Filter bytes per byte of memtable limit: 1/32 gives 8 bits per key to
 * the smallest entries (a node of ~32 bytes) and ~35 to the seed's 16-byte
 * keys with 100-byte values, 128 KiB for a 4 MiB memtable. */
#define FILTER_SHARE 32

lkv_mem *lkv_mem_new(size_t limit) {
  lkv_mem *m = calloc(1, sizeof *m);
  if (m == NULL) return NULL;
  if (lkv_live_bloom_init(&m->filter, limit / FILTER_SHARE)) {
    free(m);
    return NULL;
  }
  atomic_init(&m->refs, 1);
  atomic_init(&m->height, 1);
  m->rnd = 0x2545F4914F6CDD1DULL;
  m->head = arena_alloc(m, sizeof(node) + MAX_HEIGHT * sizeof(node *));
  if (m->head == NULL) {
    lkv_live_bloom_free(&m->filter);
    free(m);
    return NULL;
  }
  m->head->vlen = 0;
  m->head->kh = (uint32_t)MAX_HEIGHT << 24;
  for (int i = 0; i < MAX_HEIGHT; i++) {
    atomic_init(&m->head->next[i], NULL);
    m->splice[i] = m->head;
  }
  return m;
}

void lkv_mem_ref(lkv_mem *m) {
  atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
}

void lkv_mem_unref(lkv_mem *m) {
  if (m == NULL) return;
  if (atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) != 1) return;
  arena_block *b = m->blocks;
  while (b) {
    arena_block *p = b->prev;
    free(b);
    b = p;
  }
  lkv_live_bloom_free(&m->filter);
  free(m);
}

static int random_height(lkv_mem *m) {
  int h = 1;
  while (h < MAX_HEIGHT) {
    m->rnd ^= m->rnd << 13; /* xorshift64: cheap and good enough here */
    m->rnd ^= m->rnd >> 7;
    m->rnd ^= m->rnd << 17;
    if ((m->rnd & 3) != 0) break;
    h++;
  }
  return h;
}

/* Compare node x's internal key with (ukey, tag): <0, 0, >0. */
static inline int cmp_node(const node *x, const char *ukey, size_t klen,
                           uint64_t tag) {
  const char *k = node_key(x);
  uint32_t kl = node_klen(x);
  int r = lkv_ucmp(k, kl - LKV_TAG_BYTES, ukey, klen);
  if (r) return r;
  uint64_t t = lkv_get64(k + kl - LKV_TAG_BYTES);
  return t > tag ? -1 : t < tag; /* higher tag (newer) sorts first */
}

/* First node >= (ukey, tag); fills prev[] when not NULL. */
static node *find_ge(lkv_mem *m, const char *ukey, size_t klen, uint64_t tag,
                     node **prev) {
  node *x = m->head;
  int level = atomic_load_explicit(&m->height, memory_order_relaxed) - 1;
  for (;;) {
    node *nx = atomic_load_explicit(&x->next[level], memory_order_acquire);
    if (level > 0) {
      /* where the search goes if nx is not before the key: fetched while
       * nx is compared, so the two cache misses overlap */
      node *dn =
          atomic_load_explicit(&x->next[level - 1], memory_order_relaxed);
      if (dn != nx && dn != NULL) __builtin_prefetch(dn);
    }
    if (nx != NULL && cmp_node(nx, ukey, klen, tag) < 0) {
      x = nx;
    } else {
      if (prev) prev[level] = x;
      if (level == 0) return nx;
      level--;
    }
  }
}

int lkv_mem_add(lkv_mem *m, uint64_t seq, int type, const char *key,
                size_t klen, const char *val, size_t vlen) {
  int h = random_height(m);
  size_t ik = klen + LKV_TAG_BYTES;
  node *x =
      arena_alloc(m, sizeof(node) + (size_t)h * sizeof(node *) + ik + vlen);
  if (x == NULL) return LKV_NOMEM;
  char *kp = (char *)&x->next[h];
  if (klen) memcpy(kp, key, klen);
  uint64_t tag = lkv_tag(seq, type);
  lkv_put64(kp + klen, tag);
  if (vlen) memcpy(kp + ik, val, vlen);
  x->kh = (uint32_t)ik | ((uint32_t)h << 24);
  x->vlen = (uint32_t)vlen;
  /* set before the db publishes this write's sequence number, which a
   * reader loads before it asks the filter */
  lkv_live_bloom_add(&m->filter, lkv_bloom_hash(key, klen));

  node *prev[MAX_HEIGHT];
  int cur = atomic_load_explicit(&m->height, memory_order_relaxed);
  /* the remembered splice is right when, on every level the new node
   * uses, it sorts before the key and its successor does not */
  int lo = h < cur ? h : cur, ok = m->splice[0] != NULL;
  for (int i = 0; ok && i < lo; i++) {
    node *p = m->splice[i];
    node *nx = atomic_load_explicit(&p->next[i], memory_order_relaxed);
    ok = (p == m->head || cmp_node(p, key, klen, tag) < 0) &&
         (nx == NULL || cmp_node(nx, key, klen, tag) > 0);
    prev[i] = p;
  }
  if (!ok) find_ge(m, key, klen, tag, prev);
  if (h > cur) {
    for (int i = cur; i < h; i++) prev[i] = m->head;
    /* readers seeing the new height before the links just find NULL from
     * head at those levels and drop down: harmless */
    atomic_store_explicit(&m->height, h, memory_order_relaxed);
  }
  for (int i = 0; i < h; i++) {
    atomic_init(&x->next[i],
                atomic_load_explicit(&prev[i]->next[i], memory_order_relaxed));
    /* release: x is complete before any reader can reach it */
    atomic_store_explicit(&prev[i]->next[i], x, memory_order_release);
    m->splice[i] = x;
  }
  if (!ok) /* a full search found the insertion point on every level */
    for (int i = h; i < cur; i++) m->splice[i] = prev[i];
  atomic_fetch_add_explicit(&m->entries, 1, memory_order_relaxed);
  return LKV_OK;
}

int lkv_mem_may_hold(const lkv_mem *m, uint64_t hash) {
  return lkv_live_bloom_may_contain(&m->filter, hash);
}

int lkv_mem_get(lkv_mem *m, const char *ukey, size_t klen, uint64_t hash,
                uint64_t at, int *type, lkv_buf *val) {
  if (!lkv_mem_may_hold(m, hash)) return LKV_NOTFOUND;
  node *x = find_ge(m, ukey, klen, lkv_tag(at, LKV_TYPE_SEEK), NULL);
  if (x == NULL) return LKV_NOTFOUND;
  const char *k = node_key(x);
  uint32_t kl = node_klen(x);
  if (lkv_ucmp(k, kl - LKV_TAG_BYTES, ukey, klen) != 0) return LKV_NOTFOUND;
  *type = (int)(lkv_get64(k + kl - LKV_TAG_BYTES) & 0xff);
  if (*type == LKV_TYPE_VALUE) return lkv_buf_set(val, k + kl, x->vlen);
  return LKV_OK;
}

size_t lkv_mem_usage(const lkv_mem *m) {
  return atomic_load_explicit(&((lkv_mem *)m)->usage, memory_order_relaxed);
}

uint64_t lkv_mem_entries(const lkv_mem *m) {
  return atomic_load_explicit(&((lkv_mem *)m)->entries, memory_order_relaxed);
}

uint64_t lkv_mem_wal_number(const lkv_mem *m) { return m->wal_number; }
uint64_t lkv_mem_wal_start(const lkv_mem *m) { return m->wal_start; }
void lkv_mem_set_wal(lkv_mem *m, uint64_t number, uint64_t start_seq) {
  m->wal_number = number;
  m->wal_start = start_seq;
}

/* ---- iterator -------------------------------------------------------- */

typedef struct mem_iter {
  lkv_iiter base;
  lkv_mem *m;
  node *x;
} mem_iter;

static void mi_seek_first(lkv_iiter *it) {
  mem_iter *mi = (mem_iter *)it;
  mi->x = atomic_load_explicit(&mi->m->head->next[0], memory_order_acquire);
}

static void mi_seek(lkv_iiter *it, lkv_slice target) {
  mem_iter *mi = (mem_iter *)it;
  mi->x = find_ge(mi->m, target.p, target.n - LKV_TAG_BYTES,
                  lkv_ikey_tag(target), NULL);
}

static void mi_next(lkv_iiter *it) {
  mem_iter *mi = (mem_iter *)it;
  if (mi->x)
    mi->x = atomic_load_explicit(&mi->x->next[0], memory_order_acquire);
}

/* The skiplist links only forward, so a step back is a search from the
 * head, O(log n): the predecessor is what find_ge leaves in prev[0]. */
static void mi_prev(lkv_iiter *it) {
  mem_iter *mi = (mem_iter *)it;
  if (mi->x == NULL) return;
  const char *k = node_key(mi->x);
  uint32_t kl = node_klen(mi->x);
  node *prev[MAX_HEIGHT];
  find_ge(mi->m, k, kl - LKV_TAG_BYTES, lkv_get64(k + kl - LKV_TAG_BYTES),
          prev);
  mi->x = prev[0] == mi->m->head ? NULL : prev[0];
}

/* The last node: follow each level to its end, then go down. */
static void mi_seek_last(lkv_iiter *it) {
  mem_iter *mi = (mem_iter *)it;
  node *x = mi->m->head;
  for (int level =
           atomic_load_explicit(&mi->m->height, memory_order_relaxed) - 1;
       level >= 0; level--) {
    node *nx;
    while ((nx = atomic_load_explicit(&x->next[level], memory_order_acquire)))
      x = nx;
  }
  mi->x = x == mi->m->head ? NULL : x;
}

static int mi_valid(const lkv_iiter *it) {
  return ((const mem_iter *)it)->x != NULL;
}

static lkv_slice mi_key(const lkv_iiter *it) {
  const node *x = ((const mem_iter *)it)->x;
  lkv_slice s = {node_key(x), node_klen(x)};
  return s;
}

static lkv_slice mi_value(const lkv_iiter *it) {
  const node *x = ((const mem_iter *)it)->x;
  lkv_slice s = {node_key(x) + node_klen(x), x->vlen};
  return s;
}

static int mi_status(const lkv_iiter *it, lkv_err *err) {
  (void)it;
  (void)err;
  return LKV_OK;
}

static void mi_destroy(lkv_iiter *it) {
  mem_iter *mi = (mem_iter *)it;
  lkv_mem_unref(mi->m);
  free(mi);
}

static const lkv_iiter_ops mem_iter_ops = {
    mi_seek_first, mi_seek,   mi_next,    mi_valid,     mi_key,
    mi_value,      mi_status, mi_destroy, mi_seek_last, mi_prev};

lkv_iiter *lkv_mem_iter(lkv_mem *m) {
  mem_iter *mi = calloc(1, sizeof *mi);
  if (mi == NULL) return NULL;
  mi->base.ops = &mem_iter_ops;
  mi->m = m;
  lkv_mem_ref(m);
  return &mi->base;
}
