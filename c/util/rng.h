/* rng.h - splitmix64 (Steele, Lea and Flood, 2014), the one generator of
 * every room: a 64-bit state, a full period of 2^64, any seed good (0
 * included), fast enough to draw a key per operation of a benchmark. Not
 * for secrets. Header-only so a hot loop pays no call. */
#ifndef LKV_RNG_H
#define LKV_RNG_H

#include <stdint.h>

/* Advance *state and return the next 64 random bits. The same seed gives
 * the same sequence on every platform. */
static inline uint64_t lkv_splitmix64(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* The first output for seed x: a stateless mix that spreads nearby inputs
 * (seed + thread number, say) over all 64 bits. */
static inline uint64_t lkv_mix64(uint64_t x) { return lkv_splitmix64(&x); }

#endif
