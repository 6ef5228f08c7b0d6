/* bloom.c - Bloom filters over user keys (see bloom.h, sst_format.md):
 * one 64-bit hash per key; its high half picks a 64-byte block of the
 * filter and all k probes of the key fall inside that block (a "blocked"
 * Bloom filter). A query then costs one cache miss instead of k, for a
 * false-positive rate a little above the classic layout's (about 1.1%
 * instead of 0.85% at 10 bits per key). */
#include "bloom.h"

#include <stdatomic.h>
#include <stdlib.h>

#include "coding.h"

#define K_MAX 30

/* Largest filter: 2^29 bytes keeps every bit index below 2^32, which the
 * probe's multiply-shift reduction relies on. */
#define MAX_FILTER_BYTES ((size_t)1 << 29)

static inline uint64_t rotl(uint64_t x, int r) {
  return (x << r) | (x >> (64 - r));
}

/* Odd 64-bit constants with well-spread bits (golden ratio and friends). */
#define M1 0x9e3779b97f4a7c15ULL
#define M2 0xbf58476d1ce4e5b9ULL
#define M3 0x94d049bb133111ebULL

/* Folds one 8-byte word into the state: multiply spreads low bits up, the
 * rotation brings high bits back down before the next multiply. */
static inline uint64_t absorb(uint64_t h, uint64_t w) {
  w *= M2;
  w = rotl(w, 31);
  w *= M1;
  h ^= w;
  return rotl(h, 29) * M1 + M3;
}

/* Final avalanche, so that keys differing in one bit (the common case:
 * "user1" vs "user2") differ in about half the output bits. */
static inline uint64_t finish(uint64_t h) {
  h ^= h >> 31;
  h *= M2;
  h ^= h >> 29;
  h *= M3;
  h ^= h >> 32;
  return h;
}

uint64_t lkv_bloom_hash(const char *key, size_t n) {
  uint64_t h = M3 ^ ((uint64_t)n * M1);
  while (n >= 8) {
    h = absorb(h, lkv_get64(key));
    key += 8;
    n -= 8;
  }
  if (n > 0) {
    /* Tail bytes little-endian; the length already went into the seed, so
     * "a" and "a\0" still hash apart. */
    uint64_t w = 0;
    for (size_t i = 0; i < n; i++)
      w |= (uint64_t)(unsigned char)key[i] << (8 * i);
    h = absorb(h, w);
  }
  return finish(h);
}

int lkv_bloom_k(int bits_per_key, int hash_functions) {
  int k = hash_functions > 0 ? hash_functions
                             : (int)((double)bits_per_key * 0.69 + 0.5);
  if (k < 1) k = 1;
  if (k > K_MAX) k = K_MAX;
  return k;
}

#define BLOCK_BYTES 64
#define BLOCK_BITS 512

size_t lkv_bloom_filter_size(size_t nkeys, int bits_per_key, size_t min_bits) {
  size_t bpk = bits_per_key > 0 ? (size_t)bits_per_key : 1;
  size_t bits = nkeys > (SIZE_MAX / 8) / bpk ? SIZE_MAX / 8 : nkeys * bpk;
  if (bits < min_bits) bits = min_bits;
  if (bits > SIZE_MAX - BLOCK_BITS) bits = SIZE_MAX - BLOCK_BITS;
  size_t bytes = (bits + BLOCK_BITS - 1) / BLOCK_BITS * BLOCK_BYTES;
  if (bytes < BLOCK_BYTES) bytes = BLOCK_BYTES;
  if (bytes > MAX_FILTER_BYTES) bytes = MAX_FILTER_BYTES;
  return bytes + 1;
}

/* Index in [0, n) of a 32-bit value: the high half of x * n is uniform
 * and needs no division. */
static inline uint32_t reduce(uint32_t x, uint64_t n) {
  return (uint32_t)(((uint64_t)x * n) >> 32);
}

/* Probe j of a key is bit (h + j * delta) mod 512 of its block; delta is a
 * rotation of h, forced odd so the k probes are distinct. */
#define PROBES(hash, body)                        \
  do {                                            \
    uint32_t h_ = (uint32_t)(hash);               \
    uint32_t d_ = ((h_ >> 17) | (h_ << 15)) | 1u; \
    for (int j_ = 0; j_ < k; j_++) {              \
      uint32_t bit = h_ & (BLOCK_BITS - 1);       \
      body;                                       \
      h_ += d_;                                   \
    }                                             \
  } while (0)

void lkv_bloom_build(const uint64_t *hashes, size_t nkeys, int bits_per_key,
                     int hash_functions, size_t min_bits, char *out) {
  size_t bytes = lkv_bloom_filter_size(nkeys, bits_per_key, min_bits) - 1;
  uint64_t nblocks = bytes / BLOCK_BYTES;
  int k = lkv_bloom_k(bits_per_key, hash_functions);
  unsigned char *bits = (unsigned char *)out;
  for (size_t i = 0; i < bytes; i++) bits[i] = 0;
  for (size_t i = 0; i < nkeys; i++) {
    unsigned char *blk =
        bits +
        (size_t)reduce((uint32_t)(hashes[i] >> 32), nblocks) * BLOCK_BYTES;
    PROBES(hashes[i], blk[bit >> 3] |= (unsigned char)(1u << (bit & 7)));
  }
  out[bytes] = (char)k;
}

int lkv_bloom_may_contain(const char *filter, size_t n, uint64_t hash) {
  if (filter == NULL || n < 2 || n - 1 > MAX_FILTER_BYTES ||
      (n - 1) % BLOCK_BYTES != 0)
    return 1;
  const unsigned char *bits = (const unsigned char *)filter;
  int k = bits[n - 1];
  if (k < 1 || k > K_MAX) return 1;
  const unsigned char *blk =
      bits + (size_t)reduce((uint32_t)(hash >> 32), (n - 1) / BLOCK_BYTES) *
                 BLOCK_BYTES;
  PROBES(hash, if ((blk[bit >> 3] & (1u << (bit & 7))) == 0) return 0);
  return 1;
}

/* ---- live filters ---------------------------------------------------- */

/* A live filter's number of probes: it is sized to about 8 bits per key
 * for the smallest entries a memtable holds, far more for typical ones, so
 * 6 probes sit near the optimum for the first and cost little for the
 * rest. */
#define LIVE_K 6
#define WORDS_PER_BLOCK (BLOCK_BYTES / 8)

int lkv_live_bloom_init(lkv_live_bloom *f, size_t bytes) {
  uint64_t nblocks = (bytes + BLOCK_BYTES - 1) / BLOCK_BYTES;
  if (nblocks == 0) nblocks = 1;
  if (nblocks > MAX_FILTER_BYTES / BLOCK_BYTES)
    nblocks = MAX_FILTER_BYTES / BLOCK_BYTES;
  /* calloc: a big filter comes as fresh zero pages, touched only where
   * keys land */
  f->words = calloc((size_t)nblocks * WORDS_PER_BLOCK, sizeof *f->words);
  f->nblocks = f->words ? nblocks : 0;
  return f->words ? 0 : -1;
}

void lkv_live_bloom_free(lkv_live_bloom *f) {
  free(f->words);
  f->words = NULL;
  f->nblocks = 0;
}

static inline _Atomic uint64_t *live_block(const lkv_live_bloom *f,
                                           uint64_t hash) {
  return f->words +
         (size_t)reduce((uint32_t)(hash >> 32), f->nblocks) * WORDS_PER_BLOCK;
}

void lkv_live_bloom_add(lkv_live_bloom *f, uint64_t hash) {
  _Atomic uint64_t *blk = live_block(f, hash);
  int k = LIVE_K;
  /* one writer: a load and a store per probe, no read-modify-write */
  PROBES(hash, {
    _Atomic uint64_t *w = &blk[bit >> 6];
    uint64_t old = atomic_load_explicit(w, memory_order_relaxed);
    atomic_store_explicit(w, old | (uint64_t)1 << (bit & 63),
                          memory_order_relaxed);
  });
}

int lkv_live_bloom_may_contain(const lkv_live_bloom *f, uint64_t hash) {
  _Atomic uint64_t *blk = live_block(f, hash);
  int k = LIVE_K;
  PROBES(hash, {
    uint64_t w = atomic_load_explicit(&blk[bit >> 6], memory_order_relaxed);
    if ((w >> (bit & 63) & 1) == 0) return 0;
  });
  return 1;
}
