/* workload.c - the bench's workload vocabulary and core.bench's runner
 * (workload.h). */
#include "workload.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hist.h"
#include "lunakv.h"

/* {======================================================================
** Workload names
** ======================================================================= */

static const struct {
  const char *name;
  unsigned who; /* LKVWL_IN_* */
} kinds[LKVWL_NKINDS] = {
    {"fillseq", LKVWL_IN_LKV_BENCH | LKVWL_IN_CORE},
    {"fillrandom", LKVWL_IN_LKV_BENCH | LKVWL_IN_CORE},
    {"overwrite", LKVWL_IN_LKV_BENCH | LKVWL_IN_CORE},
    {"readrandom", LKVWL_IN_LKV_BENCH | LKVWL_IN_CORE},
    {"readmissing", LKVWL_IN_LKV_BENCH | LKVWL_IN_CORE},
    {"readseq", LKVWL_IN_LKV_BENCH | LKVWL_IN_CORE},
    {"seekrandom", LKVWL_IN_LKV_BENCH | LKVWL_IN_CORE},
    {"readwhilewriting", LKVWL_IN_LKV_BENCH},
    {"writes", LKVWL_IN_CORE},
    {"reads", LKVWL_IN_CORE},
    {"misses", LKVWL_IN_CORE},
};

const char *lkvwl_name(int kind) { return kinds[kind].name; }

int lkvwl_parse(const char *name, size_t len, unsigned who) {
  for (int k = 0; k < LKVWL_NKINDS; k++)
    if ((kinds[k].who & who) && strlen(kinds[k].name) == len &&
        strncmp(name, kinds[k].name, len) == 0)
      return k;
  return -1;
}

int lkvwl_is_fill(int kind) {
  return kind <= LKVWL_OVERWRITE || kind == LKVWL_WRITES;
}

/* }====================================================================== */

/* {======================================================================
** Key order and values
** ======================================================================= */

void lkvwl_shuffle(uint64_t *perm, uint64_t n, uint64_t seed) {
  uint64_t s = seed;
  for (uint64_t i = 0; i < n; i++) perm[i] = i;
  for (uint64_t i = n; i > 1; i--) {
    uint64_t j = lkv_splitmix64(&s) % i;
    uint64_t t = perm[i - 1];
    perm[i - 1] = perm[j];
    perm[j] = t;
  }
}

/* The values' buffer is 1 MiB longer than a value: that many offsets for
 * the slices. */
#define VALUES_SPAN ((size_t)1 << 20)

size_t lkvwl_values_bytes(size_t value_size) {
  return value_size + VALUES_SPAN + 8;
}

void lkvwl_values_init(lkvwl_values *v, char *buf, size_t value_size) {
  uint64_t s = 0x5EEDull;
  v->buf = buf;
  v->len = value_size + VALUES_SPAN;
  v->value_size = value_size;
  for (size_t i = 0; i < v->len; i += 8) {
    uint64_t r = lkv_splitmix64(&s);
    memcpy(v->buf + i, &r, 8);
  }
}

/* }====================================================================== */

/* {======================================================================
** core.bench's runner
** ======================================================================= */

#define SEEK_NEXTS 0     /* seekrandom reads the entry it lands on */
#define COUNT_EVERY 1024 /* ops between updates of the shared count */

typedef struct lkvwl_job BJob;

typedef struct BWorker {
  BJob *job;
  pthread_t tid;
  uint64_t from, to; /* operation indexes [from, to) */
  uint64_t found;    /* reads that found their key */
  uint64_t done;     /* operations finished */
  uint64_t rng;      /* splitmix64 state */
  double *samples;   /* latencies in µs: a slice of job->samples */
  size_t nsamples;
  lkv_iter *it; /* readseq, seekrandom: created before the start */
} BWorker;

struct lkvwl_job {
  lkv_db *db;
  int kind;
  uint64_t num, ops;
  size_t key_size, value_size;
  int threads, started; /* threads asked for / created */
  unsigned sample_every;
  uint64_t seed;
  char *value;     /* value_size random bytes */
  uint64_t *perm;  /* fillrandom, overwrite: key order */
  double *samples; /* every worker's samples, one block */
  size_t nsamples_max;
  BWorker *w;
  pthread_mutex_t mu;
  pthread_cond_t cv;     /* signalled on go and when the last worker ends */
  int go;                /* guarded by mu: 0 wait, 1 run, -1 give up */
  int running;           /* guarded by mu: workers not yet finished */
  int rc;                /* guarded by mu: first failure, LKV_OK if none */
  lkv_err err;           /* guarded by mu */
  double t_start, t_end; /* t_end written by the last worker, under mu */
  atomic_int stop;
  atomic_uint_fast64_t progress;
};

static double mono_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void bench_fail(BJob *j, int rc, const lkv_err *err) {
  pthread_mutex_lock(&j->mu);
  if (j->rc == LKV_OK) {
    j->rc = rc;
    j->err = *err;
  }
  pthread_mutex_unlock(&j->mu);
  atomic_store(&j->stop, 1);
}

/* One operation of worker w, index i. Returns LKV_OK or a failure. */
static int bench_op(BWorker *w, uint64_t i, char *key, lkv_buf *buf,
                    lkv_err *err) {
  BJob *j = w->job;
  size_t ks = j->key_size, len;
  int rc;
  switch (j->kind) {
    case LKVWL_FILLSEQ:
    case LKVWL_WRITES:
      lkvwl_key(key, ks, i % j->num);
      return lkv_db_set(j->db, key, ks, j->value, j->value_size, NULL, err);
    case LKVWL_FILLRANDOM:
    case LKVWL_OVERWRITE:
      lkvwl_key(key, ks, j->perm[i % j->num]);
      return lkv_db_set(j->db, key, ks, j->value, j->value_size, NULL, err);
    case LKVWL_READRANDOM:
    case LKVWL_READS:
      lkvwl_key(key, ks,
                j->kind == LKVWL_READS ? i % j->num
                                       : lkv_splitmix64(&w->rng) % j->num);
      break;
    case LKVWL_READMISSING:
    case LKVWL_MISSES:
      lkvwl_missing_key(key, ks,
                        j->kind == LKVWL_MISSES
                            ? i % j->num
                            : lkv_splitmix64(&w->rng) % j->num);
      break;
    case LKVWL_READSEQ:
      if (!lkv_iter_valid(w->it)) {
        if ((rc = lkv_iter_status(w->it, err)) != LKV_OK) return rc;
        lkv_iter_seek_first(w->it); /* wrap around */
        if (!lkv_iter_valid(w->it)) return lkv_iter_status(w->it, err);
      }
      (void)lkv_iter_key(w->it, &len);
      (void)lkv_iter_value(w->it, &len);
      w->found++;
      lkv_iter_next(w->it);
      return LKV_OK;
    case LKVWL_SEEKRANDOM:
      lkvwl_key(key, ks, lkv_splitmix64(&w->rng) % j->num);
      lkv_iter_seek(w->it, key, ks);
      if (lkv_iter_valid(w->it)) {
        (void)lkv_iter_key(w->it, &len);
        (void)lkv_iter_value(w->it, &len);
        w->found++;
        return LKV_OK;
      }
      return lkv_iter_status(w->it, err);
    default: return LKV_INVALID;
  }
  rc = lkv_db_get(j->db, key, ks, LKV_SEQ_LATEST, buf, err);
  if (rc == LKV_OK) w->found++;
  return rc == LKV_NOTFOUND ? LKV_OK : rc;
}

static void *bench_worker(void *arg) {
  BWorker *w = (BWorker *)arg;
  BJob *j = w->job;
  char key[LKVWL_MAX_KEY];
  lkv_buf buf = {NULL, 0, 0};
  lkv_err err;
  uint64_t i, n = 0, reported = 0;
  int rc = LKV_OK, go;
  err.msg[0] = '\0';
  if (j->kind == LKVWL_READSEQ || j->kind == LKVWL_SEEKRANDOM) {
    rc = lkv_iter_new(j->db, LKV_SEQ_LATEST, &w->it, &err);
    if (rc == LKV_OK && j->kind == LKVWL_READSEQ) lkv_iter_seek_first(w->it);
  }
  if (rc != LKV_OK) bench_fail(j, rc, &err);
  pthread_mutex_lock(&j->mu);
  while (j->go == 0) pthread_cond_wait(&j->cv, &j->mu);
  go = j->go;
  pthread_mutex_unlock(&j->mu);
  for (i = w->from; go > 0 && rc == LKV_OK && i < w->to; i++) {
    if (n - reported >= COUNT_EVERY) {
      atomic_fetch_add_explicit(&j->progress, n - reported,
                                memory_order_relaxed);
      reported = n;
      if (atomic_load_explicit(&j->stop, memory_order_relaxed)) break;
    }
    if (n % j->sample_every == 0 && w->nsamples < j->nsamples_max) {
      double t0 = mono_seconds();
      rc = bench_op(w, i, key, &buf, &err);
      w->samples[w->nsamples++] = (mono_seconds() - t0) * 1e6;
    } else {
      rc = bench_op(w, i, key, &buf, &err);
    }
    n++;
  }
  if (rc != LKV_OK) bench_fail(j, rc, &err);
  atomic_fetch_add_explicit(&j->progress, n - reported, memory_order_relaxed);
  w->done = n;
  if (w->it != NULL) {
    lkv_iter_free(w->it);
    w->it = NULL;
  }
  lkv_buf_free(&buf);
  pthread_mutex_lock(&j->mu);
  if (--j->running == 0) {
    j->t_end = mono_seconds();
    pthread_cond_broadcast(&j->cv);
  }
  pthread_mutex_unlock(&j->mu);
  return NULL;
}

static void bench_free(BJob *j) {
  if (j == NULL) return;
  free(j->value);
  free(j->perm);
  free(j->samples);
  free(j->w);
  pthread_cond_destroy(&j->cv);
  pthread_mutex_destroy(&j->mu);
  free(j);
}

void lkvwl_job_free(lkvwl_job *j) {
  int t;
  if (j == NULL) return;
  atomic_store(&j->stop, 1);
  pthread_mutex_lock(&j->mu);
  if (j->go == 0) j->go = -1;
  pthread_cond_broadcast(&j->cv);
  pthread_mutex_unlock(&j->mu);
  for (t = 0; t < j->started; t++) pthread_join(j->w[t].tid, NULL);
  bench_free(j);
}

lkvwl_job *lkvwl_job_new(lkv_db *db, const lkvwl_spec *s) {
  BJob *j = (BJob *)calloc(1, sizeof *j);
  uint64_t ops = s->ops, per, r;
  size_t b;
  int t;
  if (j == NULL) return NULL;
  pthread_mutex_init(&j->mu, NULL);
  pthread_cond_init(&j->cv, NULL);
  atomic_init(&j->stop, 0);
  atomic_init(&j->progress, 0);
  j->db = db;
  j->kind = s->kind;
  j->num = s->num;
  j->ops = ops;
  j->key_size = s->key_size;
  j->value_size = s->value_size;
  j->threads = s->threads;
  j->sample_every = s->sample_every;
  j->seed = s->seed;
  j->rc = LKV_OK;
  j->w = (BWorker *)calloc((size_t)s->threads, sizeof *j->w);
  j->value = (char *)malloc(j->value_size + 1);
  per = ops / (uint64_t)s->threads + 1;
  j->nsamples_max = (size_t)(per / j->sample_every + 1);
  j->samples = (double *)malloc((size_t)s->threads * j->nsamples_max *
                                sizeof *j->samples);
  if (j->w == NULL || j->value == NULL || j->samples == NULL) goto oom;
  r = j->seed ^ 0x5eed;
  for (b = 0; b < j->value_size; b++)
    j->value[b] = (char)(' ' + lkv_splitmix64(&r) % 95); /* printable */
  if (j->kind == LKVWL_FILLRANDOM || j->kind == LKVWL_OVERWRITE) {
    j->perm = (uint64_t *)malloc(j->num * sizeof *j->perm);
    if (j->perm == NULL) goto oom;
    lkvwl_shuffle(j->perm, j->num,
                  j->seed + (j->kind == LKVWL_OVERWRITE ? 0x0e5 : 0));
  }
  for (t = 0; t < s->threads; t++) {
    BWorker *w = &j->w[t];
    w->job = j;
    w->from = ops * (uint64_t)t / (uint64_t)s->threads;
    w->to = ops * (uint64_t)(t + 1) / (uint64_t)s->threads;
    w->rng = j->seed * 0x100000001b3ull + (uint64_t)t + 1;
    w->samples = j->samples + (size_t)t * j->nsamples_max;
  }
  return j;
oom:
  bench_free(j);
  return NULL;
}

int lkvwl_job_start(lkvwl_job *j, int *failed) {
  int t, rc = 0;
  for (t = 0; t < j->threads; t++) {
    rc = pthread_create(&j->w[t].tid, NULL, bench_worker, &j->w[t]);
    if (rc != 0) break;
    j->started++;
  }
  pthread_mutex_lock(&j->mu);
  j->running = j->started;
  j->go = rc == 0 ? 1 : -1;
  j->t_start = mono_seconds();
  pthread_cond_broadcast(&j->cv);
  pthread_mutex_unlock(&j->mu);
  *failed = t;
  return rc;
}

int lkvwl_job_wait(lkvwl_job *j, double secs) {
  int done;
  if (secs < 0) {
    pthread_mutex_lock(&j->mu);
    while (j->running > 0) pthread_cond_wait(&j->cv, &j->mu);
    pthread_mutex_unlock(&j->mu);
  } else {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (secs > 1e6) secs = 1e6;
    ts.tv_sec += (time_t)secs;
    ts.tv_nsec += (long)((secs - (double)(time_t)secs) * 1e9);
    if (ts.tv_nsec >= 1000000000L) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&j->mu);
    while (j->running > 0)
      if (pthread_cond_timedwait(&j->cv, &j->mu, &ts) != 0) break;
    pthread_mutex_unlock(&j->mu);
  }
  pthread_mutex_lock(&j->mu);
  done = j->running == 0;
  pthread_mutex_unlock(&j->mu);
  return done;
}

uint64_t lkvwl_job_progress(lkvwl_job *j) {
  return (uint64_t)atomic_load(&j->progress);
}

int lkvwl_job_done(lkvwl_job *j, int *rc, lkv_err *err) {
  int running;
  pthread_mutex_lock(&j->mu);
  running = j->running;
  *rc = j->rc;
  *err = j->err;
  pthread_mutex_unlock(&j->mu);
  return running == 0;
}

void lkvwl_job_result(lkvwl_job *j, lkvwl_result *r) {
  uint64_t ops = 0, found = 0;
  size_t n = 0;
  int t;
  /* gather every worker's samples at the front of the block */
  for (t = 0; t < j->started; t++) {
    BWorker *w = &j->w[t];
    memmove(j->samples + n, w->samples, w->nsamples * sizeof *j->samples);
    w->samples = j->samples + n;
    n += w->nsamples;
    ops += w->done;
    found += w->found;
  }
  lkv_pct_sort(j->samples, n);
  r->threads = j->started;
  r->ops = ops;
  r->found = found;
  r->samples = j->samples;
  r->nsamples = n;
  r->seconds = j->t_end - j->t_start;
}

int lkvwl_job_kind(const lkvwl_job *j) { return j->kind; }

int lkvwl_job_threads(const lkvwl_job *j) { return j->threads; }

/* }====================================================================== */
