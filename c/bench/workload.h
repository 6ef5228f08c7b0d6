/* workload.h - the bench's workload vocabulary, written once for the two
 * benches: lkv_bench (c/bench/lkv_bench.c, lunakv against LevelDB) and
 * core.bench (c/lua/lunakv_bench.c, `lunakv bench` from Lua).
 *
 * Workload names, the keys and values they write and read, the order a
 * fill takes the keys in, the random generator behind all of it, and
 * core.bench's runner: one workload on real threads against one lunakv
 * db. Engine-only: lunakv.h and pthreads; no Lua, no LevelDB.
 *
 * lkv_bench keeps its own loops (c/bench/lkv_bench.c): they run both
 * engines behind one interface and check what they read (values byte for
 * byte, readseq's order), which core.bench's loop does not.
 *
 * The key and random helpers are inline: they run once per operation. */
#ifndef LKV_WORKLOAD_H
#define LKV_WORKLOAD_H

#include <stddef.h>
#include <stdint.h>

#include "lunakv.h"
#include "rng.h"

/* {======================================================================
** Workload names
** ======================================================================= */

/* Every workload either bench knows. The first three are the fills, and
 * lkv_bench derives its seeds from these numbers: do not reorder. */
enum {
  LKVWL_FILLSEQ,          /* keys 0 .. num-1 in order, into a fresh db */
  LKVWL_FILLRANDOM,       /* every key once, in a random permutation */
  LKVWL_OVERWRITE,        /* every key again, in another permutation */
  LKVWL_READRANDOM,       /* get a random existing key */
  LKVWL_READMISSING,      /* get a key never written */
  LKVWL_READSEQ,          /* one step of a forward scan */
  LKVWL_SEEKRANDOM,       /* seek to a random existing key */
  LKVWL_READWHILEWRITING, /* readrandom while a writer puts (lkv_bench) */
  LKVWL_WRITES,           /* fillseq's keys, for the Lua loop's share */
  LKVWL_READS,            /* get keys 0, 1, ... in order */
  LKVWL_MISSES,           /* get missing keys in order */
  LKVWL_NKINDS
};

/* Which bench runs a workload (lkvwl_parse's `who`). */
#define LKVWL_IN_LKV_BENCH 1u
#define LKVWL_IN_CORE 2u

/* The name of kind (a static string). */
const char *lkvwl_name(int kind);
/* The kind named by the len bytes at name among those `who` runs, or -1. */
int lkvwl_parse(const char *name, size_t len, unsigned who);
/* Whether kind writes keys rather than reads them. */
int lkvwl_is_fill(int kind);

/* }====================================================================== */

/* {======================================================================
** Keys, key order and random numbers
** ======================================================================= */

/* Key i: the decimal i, zero-padded to ks bytes ("%016llu" for 16; no
 * NUL is written). The Lua loop of `lunakv bench` formats the same. */
static inline void lkvwl_key(char *buf, size_t ks, uint64_t i) {
  size_t p = ks;
  while (p > 0) {
    buf[--p] = (char)('0' + i % 10);
    i /= 10;
  }
}

/* A key never written: key i with its last byte '.', which sorts between
 * key i-1 and key i, inside every table's key range (the Bloom filter,
 * not the range check, has to reject it). */
static inline void lkvwl_missing_key(char *buf, size_t ks, uint64_t i) {
  lkvwl_key(buf, ks, i);
  buf[ks - 1] = '.';
}

/* perm[0 .. n-1] = a permutation of 0 .. n-1 drawn from seed
 * (Fisher-Yates): the order a random fill writes the keys in. */
void lkvwl_shuffle(uint64_t *perm, uint64_t n, uint64_t seed);

/* }====================================================================== */

/* {======================================================================
** Values
**
** core.bench writes one value to every key: value_size printable random
** bytes (lkvwl_job_new). lkv_bench writes a different value for every key
** and fill phase, so a read can check it got the newest version: a slice
** of a buffer of random bytes at an offset drawn from (key, phase).
** ======================================================================= */

typedef struct lkvwl_values {
  char *buf; /* len random bytes (and 8 to spare); owned by caller */
  size_t len;
  size_t value_size;
} lkvwl_values;

/* The bytes lkvwl_values_init wants at buf for values of value_size. */
size_t lkvwl_values_bytes(size_t value_size);
/* Fill buf (lkvwl_values_bytes(value_size) bytes) and describe it in v. */
void lkvwl_values_init(lkvwl_values *v, char *buf, size_t value_size);

/* The value written for key idx by fill phase `phase` (value_size bytes,
 * borrowed from v->buf). */
static inline const char *lkvwl_value_for(const lkvwl_values *v, uint64_t idx,
                                          int phase) {
  uint64_t off =
      lkv_mix64(idx * 0x100000001B3ull + (uint64_t)phase * 0x9E37ull) %
      (v->len - v->value_size + 1);
  return v->buf + off;
}

/* }====================================================================== */

/* {======================================================================
** core.bench's runner: one workload on `threads` pthreads against one db
**
** The workers call only the engine, record their first error in the job,
** and count finished operations in an atomic the caller reads while they
** run. Every function but the workers' own runs on the caller's thread.
** ======================================================================= */

#define LKVWL_MAX_THREADS 256
#define LKVWL_MAX_KEY 1024
#define LKVWL_MAX_VALUE ((size_t)1 << 20)

typedef struct lkvwl_spec {
  int kind;          /* LKVWL_*, one core.bench runs */
  int threads;       /* 1 .. LKVWL_MAX_THREADS */
  uint64_t num;      /* distinct keys, each fitting key_size digits */
  uint64_t ops;      /* operations, split over the threads */
  size_t key_size;   /* 1 .. LKVWL_MAX_KEY */
  size_t value_size; /* 0 .. LKVWL_MAX_VALUE */
  uint64_t seed;
  unsigned sample_every; /* time one operation in this many (>= 1) */
} lkvwl_spec;

typedef struct lkvwl_job lkvwl_job;

typedef struct lkvwl_result {
  int threads;           /* workers that ran */
  uint64_t ops, found;   /* operations finished; reads that found a key */
  const double *samples; /* latencies in µs, sorted; borrowed from the job */
  size_t nsamples;
  double seconds; /* from the start to the last worker's end */
} lkvwl_result;

/* A job for spec s (checked by the caller) against db, which must stay
 * open until lkvwl_job_free; its workers not yet started. NULL when out
 * of memory. */
lkvwl_job *lkvwl_job_new(lkv_db *db, const lkvwl_spec *s);
/* Start the workers. Returns 0, or pthread_create's error with *failed =
 * the index of the thread that could not start (those before it are told
 * to give up; lkvwl_job_free joins them). */
int lkvwl_job_start(lkvwl_job *j, int *failed);
/* Wait until every worker has ended, or secs have passed (secs < 0: no
 * limit). Returns whether every worker has ended. */
int lkvwl_job_wait(lkvwl_job *j, double secs);
/* Operations finished so far, by every worker. */
uint64_t lkvwl_job_progress(lkvwl_job *j);
/* Whether every worker has ended; if so, *rc is the first failure of any
 * (LKV_OK if none) and *err its sentence. */
int lkvwl_job_done(lkvwl_job *j, int *rc, lkv_err *err);
/* REQUIRES: lkvwl_job_done. The job's figures; r->samples is valid until
 * the next call or lkvwl_job_free. */
void lkvwl_job_result(lkvwl_job *j, lkvwl_result *r);
int lkvwl_job_kind(const lkvwl_job *j);
int lkvwl_job_threads(const lkvwl_job *j); /* as asked for */
/* Stop the workers, join them, free the job. NULL is a no-op. */
void lkvwl_job_free(lkvwl_job *j);

/* }====================================================================== */

#endif
