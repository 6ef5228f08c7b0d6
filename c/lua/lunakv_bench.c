/* lunakv_bench.c - core.bench: the engine's workloads run on real threads
 * from Lua (`lunakv bench`), as jobs of the class "lunakv.bench". */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lauxlib.h"
#include "lua.h"

#include "lkvlua.h"
#include "lunakv.h"

/* {======================================================================
** Benchmark jobs: core.bench
**
** core.bench(db, spec) runs one named workload against db on `threads`
** real pthreads and returns a "lunakv.bench" job at once; the Lua thread
** polls it with job:wait(timeout) (to draw progress) and reads job:result().
** The workers call only the engine (no Lua), record their first error in
** the job, and count finished operations in an atomic the Lua thread
** reads. A job is a child of its db: db:close() stops and joins it first,
** so no worker ever runs against a closed db. All job memory hangs off the
** userdata, so raising with a job alive leaks nothing (__gc joins, frees).
** ======================================================================= */

#define BENCH_MAX_THREADS 256
#define BENCH_MAX_KEY 1024
#define BENCH_MAX_VALUE ((size_t)1 << 20)
#define BENCH_SEEK_NEXTS 0 /* seekrandom reads the entry it lands on */
#define BENCH_COUNT_EVERY 1024 /* ops between updates of the shared count */

enum {
  BK_FILLSEQ,
  BK_FILLRANDOM,
  BK_OVERWRITE,
  BK_READRANDOM,
  BK_READMISSING,
  BK_READSEQ,
  BK_SEEKRANDOM,
  BK_WRITES,
  BK_READS,
  BK_MISSES
};

static const char *const bench_kinds[] = {
    "fillseq",    "fillrandom", "overwrite", "readrandom", "readmissing",
    "readseq",    "seekrandom", "writes",    "reads",      "misses", NULL};

typedef struct BJob BJob;

typedef struct BWorker {
  BJob *job;
  pthread_t tid;
  uint64_t from, to;   /* operation indexes [from, to) */
  uint64_t found;      /* reads that found their key */
  uint64_t done;       /* operations finished */
  uint64_t rng;        /* splitmix64 state */
  double *samples;     /* latencies in µs: a slice of job->samples */
  size_t nsamples;
  lkv_iter *it;        /* readseq, seekrandom: created before the start */
} BWorker;

struct BJob {
  lkv_db *db;
  int kind;
  uint64_t num, ops;
  size_t key_size, value_size;
  int threads, started; /* threads asked for / created */
  unsigned sample_every;
  uint64_t seed;
  char *value;          /* value_size random bytes */
  uint64_t *perm;       /* fillrandom, overwrite: key order */
  double *samples;      /* every worker's samples, one block */
  size_t nsamples_max;
  BWorker *w;
  pthread_mutex_t mu;
  pthread_cond_t cv;    /* signalled on go and when the last worker ends */
  int go;               /* guarded by mu: 0 wait, 1 run, -1 give up */
  int running;          /* guarded by mu: workers not yet finished */
  int rc;               /* guarded by mu: first failure, LKV_OK if none */
  lkv_err err;          /* guarded by mu */
  double t_start, t_end;/* t_end written by the last worker, under mu */
  atomic_int stop;
  atomic_uint_fast64_t progress;
};

typedef struct LJob {
  Child c;
  BJob *job; /* NULL once closed */
} LJob;

static uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* Key i: the decimal i, zero-padded to ks bytes (lkv_bench's keys). */
static void bench_key(char *buf, size_t ks, uint64_t i) {
  size_t p = ks;
  while (p > 0) {
    buf[--p] = (char)('0' + i % 10);
    i /= 10;
  }
}

/* A key never written: key i with its last byte '.', which sorts between
 * key i-1 and key i, inside every table's key range (the Bloom filter,
 * not the range check, has to reject it). */
static void bench_missing(char *buf, size_t ks, uint64_t i) {
  bench_key(buf, ks, i);
  buf[ks - 1] = '.';
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
  case BK_FILLSEQ:
  case BK_WRITES:
    bench_key(key, ks, i % j->num);
    return lkv_db_set(j->db, key, ks, j->value, j->value_size, NULL, err);
  case BK_FILLRANDOM:
  case BK_OVERWRITE:
    bench_key(key, ks, j->perm[i % j->num]);
    return lkv_db_set(j->db, key, ks, j->value, j->value_size, NULL, err);
  case BK_READRANDOM:
  case BK_READS:
    bench_key(key, ks,
              j->kind == BK_READS ? i % j->num : splitmix64(&w->rng) % j->num);
    break;
  case BK_READMISSING:
  case BK_MISSES:
    bench_missing(key, ks,
                  j->kind == BK_MISSES ? i % j->num
                                       : splitmix64(&w->rng) % j->num);
    break;
  case BK_READSEQ:
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
  case BK_SEEKRANDOM:
    bench_key(key, ks, splitmix64(&w->rng) % j->num);
    lkv_iter_seek(w->it, key, ks);
    if (lkv_iter_valid(w->it)) {
      (void)lkv_iter_key(w->it, &len);
      (void)lkv_iter_value(w->it, &len);
      w->found++;
      return LKV_OK;
    }
    return lkv_iter_status(w->it, err);
  default:
    return LKV_INVALID;
  }
  rc = lkv_db_get(j->db, key, ks, LKV_SEQ_LATEST, buf, err);
  if (rc == LKV_OK) w->found++;
  return rc == LKV_NOTFOUND ? LKV_OK : rc;
}

static void *bench_worker(void *arg) {
  BWorker *w = (BWorker *)arg;
  BJob *j = w->job;
  char key[BENCH_MAX_KEY];
  lkv_buf buf = {NULL, 0, 0};
  lkv_err err;
  uint64_t i, n = 0, reported = 0;
  int rc = LKV_OK, go;
  err.msg[0] = '\0';
  if (j->kind == BK_READSEQ || j->kind == BK_SEEKRANDOM) {
    rc = lkv_iter_new(j->db, LKV_SEQ_LATEST, &w->it, &err);
    if (rc == LKV_OK && j->kind == BK_READSEQ) lkv_iter_seek_first(w->it);
  }
  if (rc != LKV_OK) bench_fail(j, rc, &err);
  pthread_mutex_lock(&j->mu);
  while (j->go == 0) pthread_cond_wait(&j->cv, &j->mu);
  go = j->go;
  pthread_mutex_unlock(&j->mu);
  for (i = w->from; go > 0 && rc == LKV_OK && i < w->to; i++) {
    if (n - reported >= BENCH_COUNT_EVERY) {
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

/* Stop the workers, wait for them, free everything. Lua thread only. */
static void bench_stop(BJob *j) {
  int t;
  atomic_store(&j->stop, 1);
  pthread_mutex_lock(&j->mu);
  if (j->go == 0) j->go = -1;
  pthread_cond_broadcast(&j->cv);
  pthread_mutex_unlock(&j->mu);
  for (t = 0; t < j->started; t++) pthread_join(j->w[t].tid, NULL);
  bench_free(j);
}

static void job_free_handle(Child *c) {
  LJob *p = (LJob *)c;
  bench_stop(p->job);
  p->job = NULL;
}

/* The workload's fields, checked before anything is allocated. */
typedef struct BSpec {
  int kind, threads;
  lua_Integer num, ops, key_size, value_size, seed, sample_every;
} BSpec;

static lua_Integer specint(lua_State *L, int t, const char *name,
                           lua_Integer dflt, lua_Integer lo, lua_Integer hi) {
  lua_Integer n;
  int isint;
  if (lua_getfield(L, t, name) == LUA_TNIL) { /* +1 */
    lua_pop(L, 1);
    return dflt;
  }
  n = lua_tointegerx(L, -1, &isint);
  if (!isint || n < lo || n > hi)
    luaL_error(L, "bad spec field '%s' to 'bench' (an integer from %I to %I "
                  "expected)", name, (lua_Integer)lo, (lua_Integer)hi);
  lua_pop(L, 1); /* -1 */
  return n;
}

static void readspec(lua_State *L, int t, BSpec *s) {
  lua_Integer maxnum = 1;
  int i;
  const char *kind;
  luaL_checktype(L, t, LUA_TTABLE);
  lua_getfield(L, t, "kind"); /* +1 */
  kind = lua_tostring(L, -1);
  for (i = 0; kind != NULL && bench_kinds[i] != NULL; i++)
    if (strcmp(kind, bench_kinds[i]) == 0) break;
  if (kind == NULL || bench_kinds[i] == NULL)
    luaL_error(L, "bad spec field 'kind' to 'bench' (a workload name "
                  "expected, got %s)", kind ? kind : luaL_typename(L, -1));
  s->kind = i;
  lua_pop(L, 1); /* -1 */
  s->num = specint(L, t, "num", 100000, 1, (lua_Integer)1 << 40);
  s->ops = specint(L, t, "ops", s->num, 0, (lua_Integer)1 << 40);
  s->key_size = specint(L, t, "key_size", 16, 1, BENCH_MAX_KEY);
  s->value_size = specint(L, t, "value_size", 100, 0, BENCH_MAX_VALUE);
  s->threads = (int)specint(L, t, "threads", 1, 1, BENCH_MAX_THREADS);
  s->seed = specint(L, t, "seed", 1, LUA_MININTEGER, LUA_MAXINTEGER);
  s->sample_every = specint(L, t, "sample_every", 8, 1, 1 << 20);
  /* every key index must fit in key_size decimal digits */
  for (i = 0; i < s->key_size && maxnum <= s->num; i++) maxnum *= 10;
  if (maxnum < s->num)
    luaL_error(L, "bad spec to 'bench' (num %I needs keys longer than %I "
                  "bytes)", s->num, s->key_size);
}

/* Allocate the job for spec s; NULL when out of memory. */
static BJob *bench_new(lkv_db *db, const BSpec *s) {
  BJob *j = (BJob *)calloc(1, sizeof *j);
  uint64_t ops = (uint64_t)s->ops, per, i, k, r;
  size_t b;
  int t;
  if (j == NULL) return NULL;
  pthread_mutex_init(&j->mu, NULL);
  pthread_cond_init(&j->cv, NULL);
  atomic_init(&j->stop, 0);
  atomic_init(&j->progress, 0);
  j->db = db;
  j->kind = s->kind;
  j->num = (uint64_t)s->num;
  j->ops = ops;
  j->key_size = (size_t)s->key_size;
  j->value_size = (size_t)s->value_size;
  j->threads = s->threads;
  j->sample_every = (unsigned)s->sample_every;
  j->seed = (uint64_t)s->seed;
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
    j->value[b] = (char)(' ' + splitmix64(&r) % 95); /* printable */
  if (j->kind == BK_FILLRANDOM || j->kind == BK_OVERWRITE) {
    j->perm = (uint64_t *)malloc(j->num * sizeof *j->perm);
    if (j->perm == NULL) goto oom;
    for (i = 0; i < j->num; i++) j->perm[i] = i;
    r = j->seed + (j->kind == BK_OVERWRITE ? 0x0e5 : 0);
    for (i = j->num - 1; i > 0; i--) { /* Fisher-Yates */
      uint64_t tmp;
      k = splitmix64(&r) % (i + 1);
      tmp = j->perm[i];
      j->perm[i] = j->perm[k];
      j->perm[k] = tmp;
    }
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

/* core.bench(db, spec) -> job, its workers already running. */
static int core_bench(lua_State *L) {
  LDb *d = (LDb *)luaL_checkudata(L, 1, DB_MT);
  BSpec s;
  LJob *p;
  int t, rc = 0;
  if (d->db == NULL) return luaL_error(L, "lunakv: db is closed");
  readspec(L, 2, &s);
  /* +1 job, closed */
  p = (LJob *)lkvlua_newchild(L, sizeof *p, BENCH_MT, 1, d);
  p->job = bench_new(d->db, &s);
  if (p->job == NULL) return luaL_error(L, "lunakv: out of memory: bench");
  lkvlua_child_link(d, &p->c, job_free_handle);
  for (t = 0; t < s.threads; t++) {
    rc = pthread_create(&p->job->w[t].tid, NULL, bench_worker, &p->job->w[t]);
    if (rc != 0) break;
    p->job->started++;
  }
  pthread_mutex_lock(&p->job->mu);
  p->job->running = p->job->started;
  p->job->go = rc == 0 ? 1 : -1;
  p->job->t_start = mono_seconds();
  pthread_cond_broadcast(&p->job->cv);
  pthread_mutex_unlock(&p->job->mu);
  if (rc != 0) {
    lkvlua_child_close(&p->c); /* joins the started workers, frees the job */
    return luaL_error(L, "lunakv: io error: bench: cannot start thread %d: %s",
                      t + 1, strerror(rc));
  }
  return 1;
}

static LJob *tojob(lua_State *L) {
  LJob *p = (LJob *)checkself(L, SELF_MT, BENCH_MT);
  if (p->job == NULL) closed_error(L, &p->c, "bench");
  return p;
}

/* job:wait([seconds]) -> done, ops finished so far. Without a timeout it
 * returns when every worker has ended. */
static int job_wait(lua_State *L) {
  LJob *p = tojob(L);
  BJob *j = p->job;
  int done;
  if (lua_isnoneornil(L, 2)) {
    pthread_mutex_lock(&j->mu);
    while (j->running > 0) pthread_cond_wait(&j->cv, &j->mu);
    pthread_mutex_unlock(&j->mu);
  } else {
    lua_Number secs = luaL_checknumber(L, 2);
    struct timespec ts;
    luaL_argcheck(L, secs >= 0, 2, "timeout must be >= 0");
    clock_gettime(CLOCK_REALTIME, &ts);
    if (secs > 1e6) secs = 1e6;
    ts.tv_sec += (time_t)secs;
    ts.tv_nsec += (long)((secs - (lua_Number)(time_t)secs) * 1e9);
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
  lua_pushboolean(L, done);
  lua_pushinteger(L, (lua_Integer)atomic_load(&j->progress));
  return 2;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Sorted samples -> the p-th percentile (0 < p < 100), nearest rank. */
static double percentile(const double *v, size_t n, double p) {
  size_t k;
  if (n == 0) return 0;
  k = (size_t)(p / 100.0 * (double)n + 0.999999);
  if (k < 1) k = 1;
  if (k > n) k = n;
  return v[k - 1];
}

/* job:result() -> { kind, threads, ops, found, seconds, ops_per_sec,
 * p50_us, p99_us, p999_us, max_us }, once done. Raises the first engine
 * failure of any worker. */
static int job_result(lua_State *L) {
  LJob *p = tojob(L);
  BJob *j = p->job;
  lkv_err err;
  uint64_t ops = 0, found = 0;
  size_t n = 0;
  int t, running, rc;
  double secs;
  pthread_mutex_lock(&j->mu);
  running = j->running;
  rc = j->rc;
  err = j->err;
  pthread_mutex_unlock(&j->mu);
  if (running > 0) return luaL_error(L, "lunakv: bench: still running");
  if (rc != LKV_OK) return raise_err(L, rc, &err);
  /* gather every worker's samples at the front of the block */
  for (t = 0; t < j->started; t++) {
    BWorker *w = &j->w[t];
    memmove(j->samples + n, w->samples, w->nsamples * sizeof *j->samples);
    w->samples = j->samples + n;
    n += w->nsamples;
    ops += w->done;
    found += w->found;
  }
  qsort(j->samples, n, sizeof *j->samples, cmp_double);
  secs = j->t_end - j->t_start;
  lua_createtable(L, 0, 12);
  lua_pushstring(L, bench_kinds[j->kind]);
  lua_setfield(L, -2, "kind");
  setint(L, "threads", (uint64_t)j->started);
  setint(L, "ops", ops);
  setint(L, "found", found);
  setint(L, "samples", (uint64_t)n);
  setnum(L, "seconds", secs);
  setnum(L, "ops_per_sec", secs > 0 ? (double)ops / secs : 0);
  setnum(L, "p50_us", percentile(j->samples, n, 50));
  setnum(L, "p99_us", percentile(j->samples, n, 99));
  setnum(L, "p999_us", percentile(j->samples, n, 99.9));
  setnum(L, "max_us", n ? j->samples[n - 1] : 0);
  return 1;
}

/* close(), __close and __gc: stop the workers, join them, free. */
static int job_close(lua_State *L) {
  LJob *p = (LJob *)checkself(L, SELF_MT, BENCH_MT);
  lkvlua_child_close(&p->c);
  return 0;
}

static int job_tostring(lua_State *L) {
  LJob *p = (LJob *)checkself(L, SELF_MT, BENCH_MT);
  if (p->job == NULL)
    lua_pushliteral(L, "lunakv.bench (closed)");
  else
    lua_pushfstring(L, "lunakv.bench (%s, %d threads)",
                    bench_kinds[p->job->kind], p->job->threads);
  return 1;
}

/* }====================================================================== */

static const luaL_Reg job_methods[] = {
    {"wait", job_wait},
    {"result", job_result},
    {"close", job_close},
    {NULL, NULL},
};

static const luaL_Reg job_meta[] = {
    {"__gc", job_close},
    {"__close", job_close},
    {"__tostring", job_tostring},
    {NULL, NULL},
};

static const luaL_Reg bench_funcs[] = {
    {"bench", core_bench},
    {NULL, NULL},
};

void lkvlua_bench_register(lua_State *L) {
  lkvlua_newclass(L, BENCH_MT, job_meta, job_methods, NULL);
  luaL_setfuncs(L, bench_funcs, 0);
}
