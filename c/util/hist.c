/* hist.c - nearest-rank percentiles over sorted samples or a log-linear
 * histogram (see hist.h). */
#include "hist.h"

#include <stdlib.h>
#include <string.h>

uint64_t lkv_pct_rank(uint64_t n, double p) {
  uint64_t k;
  if (n == 0) return 0;
  /* ceil without a libm call; the slack below 1 absorbs the rounding of
   * p / 100 * n when the exact product is an integer */
  k = (uint64_t)(p / 100.0 * (double)n + 0.999999999);
  if (k < 1) k = 1;
  if (k > n) k = n;
  return k;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

void lkv_pct_sort(double *v, size_t n) {
  if (n > 1) qsort(v, n, sizeof *v, cmp_double);
}

double lkv_pct_sorted(const double *v, size_t n, double p) {
  if (n == 0) return 0;
  return v[lkv_pct_rank(n, p) - 1];
}

#define SUB_BITS 7
#define SUB (1u << SUB_BITS)

/* The bucket of v: values under 2 * SUB have one bucket each; above, a
 * power of 2 is split in SUB equal buckets. */
static size_t bucket_of(uint64_t v) {
  int msb, shift;
  if (v < SUB) return (size_t)v;
  msb = 63 - __builtin_clzll(v);
  shift = msb - SUB_BITS;
  return (size_t)(shift + 1) * SUB + (size_t)((v >> shift) - SUB);
}

int lkv_hist_init(lkv_hist *h) {
  memset(h, 0, sizeof *h);
  h->counts = calloc(LKV_HIST_BUCKETS, sizeof *h->counts);
  return h->counts != NULL ? LKV_OK : LKV_NOMEM;
}

void lkv_hist_add(lkv_hist *h, uint64_t v) {
  if (h->n == 0 || v < h->min) h->min = v;
  if (v > h->max) h->max = v;
  h->n++;
  h->counts[bucket_of(v)]++;
}

void lkv_hist_merge(lkv_hist *dst, const lkv_hist *src) {
  size_t i;
  if (src->n == 0) return;
  if (dst->n == 0 || src->min < dst->min) dst->min = src->min;
  if (src->max > dst->max) dst->max = src->max;
  dst->n += src->n;
  for (i = 0; i < LKV_HIST_BUCKETS; i++) dst->counts[i] += src->counts[i];
}

double lkv_hist_pct(const lkv_hist *h, double p) {
  uint64_t k, seen = 0;
  size_t i;
  if (h->n == 0 || h->counts == NULL) return 0;
  k = lkv_pct_rank(h->n, p);
  /* the ends are known exactly */
  if (k == h->n) return (double)h->max;
  if (k == 1) return (double)h->min;
  for (i = 0; i < LKV_HIST_BUCKETS; i++) {
    seen += h->counts[i];
    if (seen >= k) {
      uint64_t low, width;
      double mid;
      if (i < 2 * SUB) {
        low = i;
        width = 1;
      } else {
        int shift = (int)(i / SUB) - 1;
        low = (uint64_t)(i % SUB + SUB) << shift;
        width = (uint64_t)1 << shift;
      }
      mid = (double)low + (double)(width - 1) / 2.0;
      if (mid < (double)h->min) mid = (double)h->min;
      if (mid > (double)h->max) mid = (double)h->max;
      return mid;
    }
  }
  return (double)h->max;
}

void lkv_hist_free(lkv_hist *h) {
  free(h->counts);
  memset(h, 0, sizeof *h);
}
