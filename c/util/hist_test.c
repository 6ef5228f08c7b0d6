/* hist_test.c - the histogram's percentiles against the exact ones, its
 * merge against one histogram fed everything, and the nearest rank. */
#include "hist.h"

#include <stdint.h>
#include <stdlib.h>

#include "test.h"

enum { N = 200000 };
static uint64_t v[N];

/* v sorted ascending (insertion would be slow: a counting-free shell sort) */
static void sort_v(void) {
  size_t i, j;
  for (j = N / 2; j > 0; j /= 2)
    for (i = j; i < N; i++) {
      uint64_t t = v[i];
      size_t k = i;
      while (k >= j && v[k - j] > t) {
        v[k] = v[k - j];
        k -= j;
      }
      v[k] = t;
    }
}

static void test_hist(void) {
  lkv_hist h;
  uint64_t x = 12345;
  size_t i;
  static const double ps[] = {1, 50, 90, 99, 99.9, 100};
  CHECK(lkv_hist_init(&h) == LKV_OK);
  CHECK(lkv_hist_pct(&h, 50) == 0);
  for (i = 0; i < N; i++) {
    /* spread over 1 us .. 1 s, log-uniform-ish */
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    v[i] = (uint64_t)1000 << ((x >> 33) % 20);
    v[i] += (x >> 7) % v[i];
    lkv_hist_add(&h, v[i]);
  }
  sort_v();
  for (i = 0; i < sizeof ps / sizeof ps[0]; i++) {
    size_t k = (size_t)(ps[i] / 100.0 * N + 0.999999999);
    double exact = (double)v[k - 1], got = lkv_hist_pct(&h, ps[i]);
    CHECK(got >= exact * 0.99 && got <= exact * 1.01);
  }
  CHECK(h.max == v[N - 1] && lkv_hist_pct(&h, 100) <= (double)v[N - 1]);
  /* small values are exact */
  lkv_hist_free(&h);
  CHECK(lkv_hist_init(&h) == LKV_OK);
  for (i = 1; i <= 100; i++) lkv_hist_add(&h, i);
  CHECK(lkv_hist_pct(&h, 50) == 50 && lkv_hist_pct(&h, 99) == 99);
  lkv_hist_add(&h, UINT64_MAX); /* the last bucket exists */
  CHECK(lkv_hist_pct(&h, 100) == (double)UINT64_MAX);
  lkv_hist_free(&h);
}

/* Four per-thread histograms merged read the same as one fed everything;
 * empty ones merge as nothing. */
static void test_merge(void) {
  lkv_hist all, part[4], sum, empty;
  uint64_t x = 99;
  size_t i;
  static const double ps[] = {1, 25, 50, 90, 99, 99.9, 100};
  CHECK(lkv_hist_init(&all) == LKV_OK && lkv_hist_init(&sum) == LKV_OK &&
        lkv_hist_init(&empty) == LKV_OK);
  for (i = 0; i < 4; i++) CHECK(lkv_hist_init(&part[i]) == LKV_OK);
  lkv_hist_merge(&sum, &empty);
  CHECK(sum.n == 0 && sum.min == 0 && sum.max == 0);
  for (i = 0; i < N; i++) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    /* each part its own range, so min and max come from different parts */
    uint64_t s = 500 + (x >> 40) % (1000 * (i % 4 + 1)) + 777 * (i % 4);
    lkv_hist_add(&all, s);
    lkv_hist_add(&part[i % 4], s);
  }
  for (i = 0; i < 4; i++) lkv_hist_merge(&sum, &part[i]);
  lkv_hist_merge(&sum, &empty);
  CHECK(sum.n == all.n && sum.min == all.min && sum.max == all.max);
  for (i = 0; i < sizeof ps / sizeof ps[0]; i++)
    CHECK(lkv_hist_pct(&sum, ps[i]) == lkv_hist_pct(&all, ps[i]));
  lkv_hist_free(&all);
  lkv_hist_free(&sum);
  lkv_hist_free(&empty);
  for (i = 0; i < 4; i++) lkv_hist_free(&part[i]);
  lkv_hist_free(&all); /* twice is safe */
}

/* The nearest rank, and exact percentiles over samples kept whole. */
static void test_exact(void) {
  double s[100];
  size_t i;
  CHECK(lkv_pct_rank(0, 50) == 0);
  CHECK(lkv_pct_rank(1, 50) == 1 && lkv_pct_rank(1, 100) == 1);
  CHECK(lkv_pct_rank(100, 50) == 50 && lkv_pct_rank(101, 50) == 51);
  CHECK(lkv_pct_rank(100, 99) == 99 && lkv_pct_rank(1000, 99.9) == 999);
  CHECK(lkv_pct_rank(10, 0.01) == 1 && lkv_pct_rank(10, 100) == 10);
  CHECK(lkv_pct_sorted(s, 0, 50) == 0);
  for (i = 0; i < 100; i++) s[i] = (double)((i * 37) % 100) + 0.5;
  lkv_pct_sort(s, 100);
  for (i = 1; i < 100; i++) CHECK(s[i - 1] < s[i]);
  CHECK(lkv_pct_sorted(s, 100, 50) == 49.5);
  CHECK(lkv_pct_sorted(s, 100, 99) == 98.5);
  CHECK(lkv_pct_sorted(s, 100, 99.9) == 99.5);
  CHECK(lkv_pct_sorted(s, 100, 100) == 99.5);
  CHECK(lkv_pct_sorted(s, 1, 99) == 0.5);
}

int main(void) {
  test_hist();
  test_merge();
  test_exact();
  TEST_MAIN_END();
}
