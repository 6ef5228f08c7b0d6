/* hist.h - latency percentiles, read one way everywhere: the nearest rank,
 * i.e. the p-th percentile of n samples is the ceil(p/100 * n)-th smallest.
 *
 * Two ways to keep the samples, for two kinds of run:
 *  - whole (lkv_pct_*): the caller stores every timed sample in an array,
 *    sorts it once, then reads exact percentiles. For runs that time a
 *    bounded number of operations.
 *  - in a log-linear histogram (lkv_hist_*): fixed memory however many
 *    samples go in, percentiles within 0.4%, the minimum and maximum
 *    exact. Threads may each fill their own and merge them at the end.
 *
 * Values are whatever unit the caller records (ns, us); an lkv_hist counts
 * unsigned integers, so record in the finest unit needed.
 * Thread safety: none inside; an lkv_hist or an array belongs to one
 * thread at a time. */
#ifndef LKV_HIST_H
#define LKV_HIST_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* The 1-based nearest rank of the p-th percentile (0 < p <= 100) among n
 * samples, in 1 .. n; 0 when n is 0. A product p/100 * n that lands within
 * 1e-9 above an integer counts as that integer (floating-point noise). */
uint64_t lkv_pct_rank(uint64_t n, double p);

/* ---- samples kept whole ---------------------------------------------- */

/* Sort v ascending, once, before reading percentiles with lkv_pct_sorted. */
void lkv_pct_sort(double *v, size_t n);

/* The p-th percentile of v[0 .. n) sorted ascending: v[rank - 1], exact;
 * p = 100 gives the maximum. 0 when n is 0. */
double lkv_pct_sorted(const double *v, size_t n, double p);

/* ---- the log-linear histogram ---------------------------------------- */

/* One bucket per value under 256; above that, each power of 2 is split in
 * 128 equal buckets, so a bucket is at most 1/128 of its values wide and a
 * percentile read from it (the bucket's middle) is within 0.4% of the
 * exact one. 58 KiB of counters cover every uint64_t. */
#define LKV_HIST_BUCKETS ((size_t)58 * 128)

typedef struct lkv_hist {
  uint64_t *counts; /* LKV_HIST_BUCKETS counters */
  uint64_t n;       /* samples added */
  uint64_t min;     /* exact (0 while n is 0) */
  uint64_t max;     /* exact (0 while n is 0) */
} lkv_hist;

/* LKV_OK, or LKV_NOMEM (then *h is zeroed; lkv_hist_free is still safe). */
int lkv_hist_init(lkv_hist *h);

void lkv_hist_add(lkv_hist *h, uint64_t v);

/* Add every sample of src to dst (per-thread histograms, merged once the
 * threads are done). src is unchanged. */
void lkv_hist_merge(lkv_hist *dst, const lkv_hist *src);

/* The nearest-rank p-th percentile (0 < p <= 100): the middle of the
 * bucket holding that rank, kept within [min, max]; the first and last
 * ranks are the exact min and max. 0 when empty. */
double lkv_hist_pct(const lkv_hist *h, double p);

void lkv_hist_free(lkv_hist *h);

#endif
