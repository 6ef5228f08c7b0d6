/* cache.c - the block cache of cache.h: LKV_CACHE_SHARDS independently
 * locked LRU shards, each a chained hash table plus a list of its unpinned
 * entries. */
#include "cache.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define SHARD_BITS LKV_CACHE_SHARD_BITS
#define NSHARDS LKV_CACHE_SHARDS

struct lkv_cache_handle {
  uint64_t file, off;
  void *value;
  size_t charge;
  void (*free_fn)(void *value);
  struct lkv_cache_handle *chain;       /* next in the hash bucket */
  struct lkv_cache_handle *prev, *next; /* LRU list, when unpinned */
  uint32_t hash;
  /* Pins held by callers, plus one while the entry is in the table. An
   * entry sits on the LRU list exactly when refs == 1 and it is in the
   * table, so eviction never has to skip pinned entries. */
  uint32_t refs;
  int in_table;
};

/* Aligned so two threads working in neighbouring shards do not share a
 * cache line. */
typedef struct shard {
  _Alignas(64) pthread_mutex_t mu;
  size_t capacity;
  /* charges of entries in the table: written under mu, read without it by
   * lkv_cache_admit (a stale value changes one admission decision) */
  atomic_size_t usage;
  struct lkv_cache_handle **buckets;
  size_t nbuckets, count;      /* nbuckets is a power of two */
  struct lkv_cache_handle lru; /* sentinel: lru.next is the oldest */
} shard;

struct lkv_cache {
  shard shards[NSHARDS];
  /* The admission filter (lkv_cache_admit): a direct-mapped table of the
   * hashes of recently missed blocks. Racy by design: a lost update only
   * changes one admission decision. */
  size_t nghosts;
  _Atomic uint64_t *ghosts;
  /* Entries in the table per hash slot, so that most misses (the usual
   * outcome when the data is many times the cache) are answered without
   * taking a shard lock or touching a bucket. Updated under the shard
   * lock, read without it: a lookup racing an insert may miss the new
   * entry, which a cache may always do. */
  size_t npresent; /* a power of two */
  _Atomic uint32_t *present;
};

static _Atomic uint32_t *presence(lkv_cache *c, uint32_t hash) {
  return &c->present[hash & (c->npresent - 1)];
}

/* Blocks sit at offsets that differ in their low bits and files are small
 * consecutive numbers, so both are mixed through a multiply-xorshift. */
static uint32_t hash_key(uint64_t file, uint64_t off) {
  uint64_t h = off * 0x9e3779b97f4a7c15ULL ^ file * 0xc2b2ae3d27d4eb4fULL;
  h ^= h >> 29;
  h *= 0xbf58476d1ce4e5b9ULL;
  h ^= h >> 32;
  return (uint32_t)h;
}

static shard *shard_of(lkv_cache *c, uint32_t hash) {
  return &c->shards[hash >> (32 - SHARD_BITS)];
}

/* Free a cache lkv_cache_new could not finish: its first n shards are
 * set up (and hold nothing yet). */
static void cache_unbuild(lkv_cache *c, int n) {
  for (int j = 0; j < n; j++) {
    pthread_mutex_destroy(&c->shards[j].mu);
    free(c->shards[j].buckets);
  }
  free(c->ghosts);
  free(c->present);
  free(c);
}

lkv_cache *lkv_cache_new(size_t capacity_bytes) {
  lkv_cache *c = aligned_alloc(64, sizeof *c);
  if (c == NULL) return NULL;
  memset(c, 0, sizeof *c);
  /* rounded down, so the shards together never exceed the capacity (a
   * bound callers rely on, e.g. open files) */
  size_t per = capacity_bytes / NSHARDS;
  for (int i = 0; i < NSHARDS; i++) {
    shard *s = &c->shards[i];
    s->capacity = per;
    s->nbuckets = 16;
    s->buckets = calloc(s->nbuckets, sizeof *s->buckets);
    if (s->buckets == NULL || pthread_mutex_init(&s->mu, NULL) != 0) {
      free(s->buckets);
      cache_unbuild(c, i);
      return NULL;
    }
    s->lru.prev = s->lru.next = &s->lru;
  }
  /* about half as many ghosts as blocks fit: 2Q's recommended A1out size */
  c->nghosts = capacity_bytes / 8192 + 64;
  c->ghosts = calloc(c->nghosts, sizeof *c->ghosts);
  /* about 8 slots per 4 KiB entry the capacity can hold */
  c->npresent = 1024;
  while (c->npresent < capacity_bytes / 512 && c->npresent < (1u << 20))
    c->npresent *= 2;
  c->present = calloc(c->npresent, sizeof *c->present);
  if (c->ghosts == NULL || c->present == NULL) {
    cache_unbuild(c, NSHARDS);
    return NULL;
  }
  return c;
}

static size_t usage_of(shard *s) {
  return atomic_load_explicit(&s->usage, memory_order_relaxed);
}

/* (mu held: no other writer, so a load and a store, not an atomic add) */
static void charge_usage(shard *s, size_t add, size_t sub) {
  atomic_store_explicit(&s->usage, usage_of(s) + add - sub,
                        memory_order_relaxed);
}

int lkv_cache_admit(lkv_cache *c, uint64_t file, uint64_t off, size_t charge) {
  /* With room, an insert evicts nothing: there is no resident block for
   * the filter to protect. */
  shard *s = shard_of(c, hash_key(file, off));
  if (usage_of(s) + charge <= s->capacity) return 1;
  uint64_t h = off * 0x9e3779b97f4a7c15ULL ^ (file + 1) * 0xc2b2ae3d27d4eb4fULL;
  h ^= h >> 31;
  h |= 1; /* 0 marks an empty slot */
  _Atomic uint64_t *slot = &c->ghosts[h % c->nghosts];
  if (atomic_load_explicit(slot, memory_order_relaxed) == h) {
    atomic_store_explicit(slot, 0, memory_order_relaxed);
    return 1;
  }
  atomic_store_explicit(slot, h, memory_order_relaxed);
  return 0;
}

/* ---- LRU list and table (shard lock held) ----------------------------- */

static void lru_remove(struct lkv_cache_handle *e) {
  e->prev->next = e->next;
  e->next->prev = e->prev;
  e->prev = e->next = NULL;
}

static void lru_append(shard *s, struct lkv_cache_handle *e) {
  e->next = &s->lru;
  e->prev = s->lru.prev;
  e->prev->next = e;
  s->lru.prev = e;
}

static struct lkv_cache_handle **find(shard *s, uint64_t file, uint64_t off,
                                      uint32_t hash) {
  struct lkv_cache_handle **pp = &s->buckets[hash & (s->nbuckets - 1)];
  while (*pp &&
         ((*pp)->hash != hash || (*pp)->file != file || (*pp)->off != off))
    pp = &(*pp)->chain;
  return pp;
}

/* Doubling keeps chains about one entry long. A failed allocation just
 * leaves longer chains. */
static void grow(shard *s) {
  size_t n = s->nbuckets * 2;
  struct lkv_cache_handle **b = calloc(n, sizeof *b);
  if (b == NULL) return;
  for (size_t i = 0; i < s->nbuckets; i++) {
    struct lkv_cache_handle *e = s->buckets[i];
    while (e) {
      struct lkv_cache_handle *next = e->chain;
      struct lkv_cache_handle **pp = &b[e->hash & (n - 1)];
      e->chain = *pp;
      *pp = e;
      e = next;
    }
  }
  free(s->buckets);
  s->buckets = b;
  s->nbuckets = n;
}

static void unref(shard *s, struct lkv_cache_handle *e) {
  if (--e->refs == 0) {
    e->free_fn(e->value);
    free(e);
  } else if (e->refs == 1 && e->in_table) {
    lru_append(s, e);
  }
}

/* Take e out of the table (found at *pp); freed now if unpinned, else on
 * its last release. */
static void detach(lkv_cache *c, shard *s, struct lkv_cache_handle **pp) {
  struct lkv_cache_handle *e = *pp;
  *pp = e->chain;
  e->chain = NULL;
  e->in_table = 0;
  s->count--;
  atomic_fetch_sub_explicit(presence(c, e->hash), 1, memory_order_relaxed);
  charge_usage(s, 0, e->charge);
  if (e->refs == 1) lru_remove(e);
  unref(s, e);
}

static void evict(lkv_cache *c, shard *s) {
  while (usage_of(s) > s->capacity && s->lru.next != &s->lru) {
    struct lkv_cache_handle *old = s->lru.next;
    detach(c, s, find(s, old->file, old->off, old->hash));
  }
}

/* ---- the interface ----------------------------------------------------- */

lkv_cache_handle *lkv_cache_lookup(lkv_cache *c, uint64_t file, uint64_t off) {
  uint32_t h = hash_key(file, off);
  if (atomic_load_explicit(presence(c, h), memory_order_relaxed) == 0)
    return NULL;
  shard *s = shard_of(c, h);
  pthread_mutex_lock(&s->mu);
  struct lkv_cache_handle *e = *find(s, file, off, h);
  if (e) {
    if (e->refs == 1) lru_remove(e);
    e->refs++;
  }
  pthread_mutex_unlock(&s->mu);
  return e;
}

lkv_cache_handle *lkv_cache_insert(lkv_cache *c, uint64_t file, uint64_t off,
                                   void *value, size_t charge,
                                   void (*free_fn)(void *value)) {
  struct lkv_cache_handle *e = malloc(sizeof *e);
  if (e == NULL) {
    free_fn(value);
    return NULL;
  }
  e->file = file;
  e->off = off;
  e->value = value;
  e->charge = charge;
  e->free_fn = free_fn;
  e->chain = e->prev = e->next = NULL;
  e->hash = hash_key(file, off);
  e->refs = 1; /* the caller's pin */
  e->in_table = 0;
  shard *s = shard_of(c, e->hash);
  pthread_mutex_lock(&s->mu);
  /* Capacity 0 stores nothing: the handle lives only until released. */
  if (s->capacity > 0) {
    struct lkv_cache_handle **pp = find(s, file, off, e->hash);
    if (*pp) detach(c, s, pp);
    pp = find(s, file, off, e->hash);
    e->chain = *pp;
    *pp = e;
    e->refs++;
    e->in_table = 1;
    s->count++;
    atomic_fetch_add_explicit(presence(c, e->hash), 1, memory_order_relaxed);
    charge_usage(s, charge, 0);
    evict(c, s);
    if (s->count > s->nbuckets) grow(s);
  }
  pthread_mutex_unlock(&s->mu);
  return e;
}

void *lkv_cache_value(lkv_cache_handle *h) { return h->value; }

void lkv_cache_release(lkv_cache *c, lkv_cache_handle *h) {
  shard *s = shard_of(c, h->hash);
  pthread_mutex_lock(&s->mu);
  unref(s, h);
  /* An entry pinned while the shard was over capacity is evicted now that
   * it is unpinned. */
  evict(c, s);
  pthread_mutex_unlock(&s->mu);
}

void lkv_cache_erase_file(lkv_cache *c, uint64_t file) {
  for (int i = 0; i < NSHARDS; i++) {
    shard *s = &c->shards[i];
    pthread_mutex_lock(&s->mu);
    for (size_t b = 0; b < s->nbuckets; b++) {
      struct lkv_cache_handle **pp = &s->buckets[b];
      while (*pp) {
        if ((*pp)->file == file)
          detach(c, s, pp); /* *pp is now the next entry */
        else
          pp = &(*pp)->chain;
      }
    }
    pthread_mutex_unlock(&s->mu);
  }
}

size_t lkv_cache_usage(lkv_cache *c) {
  size_t total = 0;
  for (int i = 0; i < NSHARDS; i++) {
    shard *s = &c->shards[i];
    pthread_mutex_lock(&s->mu);
    total += usage_of(s);
    pthread_mutex_unlock(&s->mu);
  }
  return total;
}

void lkv_cache_free(lkv_cache *c) {
  if (c == NULL) return;
  free(c->ghosts);
  free(c->present);
  for (int i = 0; i < NSHARDS; i++) {
    shard *s = &c->shards[i];
    for (size_t b = 0; b < s->nbuckets; b++) {
      struct lkv_cache_handle *e = s->buckets[b];
      while (e) {
        struct lkv_cache_handle *next = e->chain;
        e->free_fn(e->value);
        free(e);
        e = next;
      }
    }
    free(s->buckets);
    pthread_mutex_destroy(&s->mu);
  }
  free(c);
}
