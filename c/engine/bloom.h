/* bloom.h - the Bloom filter of an SSTable, over user keys (tags stripped):
 * 64-byte blocks of bits, each key's probes inside one block, followed by
 * one byte holding the probe count k. The layout is
 * in sst_format.md. Pure functions, thread safe. */
#ifndef LKV_BLOOM_H
#define LKV_BLOOM_H

#include <stddef.h>
#include <stdint.h>

/* The 64-bit hash a filter is built from and probed with. Stable across
 * platforms and releases: it is part of the on-disk format. */
uint64_t lkv_bloom_hash(const char *key, size_t n);

/* The probe count for bits_per_key, or hash_functions when > 0; 1..30. */
int lkv_bloom_k(int bits_per_key, int hash_functions);

/* Bytes of the serialized filter for nkeys distinct keys: max(min_bits,
 * nkeys * bits_per_key) bits rounded up to whole 64-byte blocks (at least
 * one), plus the k byte. */
size_t lkv_bloom_filter_size(size_t nkeys, int bits_per_key, size_t min_bits);

/* Write the filter of nkeys key hashes into out, which has
 * lkv_bloom_filter_size(nkeys, bits_per_key, min_bits) bytes. */
void lkv_bloom_build(const uint64_t *hashes, size_t nkeys, int bits_per_key,
                     int hash_functions, size_t min_bits, char *out);

/* 0 when the key with this hash is certainly absent, 1 when it may be
 * present. A malformed filter (too short, k outside 1..30) says 1: a bad
 * filter must cost a block read, never a wrong answer. */
int lkv_bloom_may_contain(const char *filter, size_t n, uint64_t hash);

/* A filter in memory that grows while it is read: the memtable's (RocksDB's
 * memtable whole-key filtering). Same hash and block layout as a table's
 * filter, over 64-bit words. One thread adds at a time; any number query
 * at once. Both use relaxed atomics, so the caller orders them: a key's
 * bits must be set before the store that publishes the key (for the db,
 * the last sequence number), and a reader must query after loading it. */
typedef struct lkv_live_bloom {
  _Atomic uint64_t *words;
  uint64_t nblocks;
} lkv_live_bloom;

/* About `bytes` of filter, rounded up to whole 64-byte blocks (at least
 * one). 0, or -1 when out of memory. */
int lkv_live_bloom_init(lkv_live_bloom *f, size_t bytes);
void lkv_live_bloom_free(lkv_live_bloom *f);
void lkv_live_bloom_add(lkv_live_bloom *f, uint64_t hash);
int lkv_live_bloom_may_contain(const lkv_live_bloom *f, uint64_t hash);

#endif
