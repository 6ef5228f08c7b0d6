/* lunakv_bench.c - core.bench: the engine's workloads run on real threads
 * from Lua (`lunakv bench`), as jobs of the class "lunakv.bench". The
 * workloads and the threads that run them are c/bench/workload.c's; this
 * file reads the spec, owns the job, and gives its figures to Lua. */
#include <stdint.h>
#include <string.h>

#include "hist.h"
#include "lauxlib.h"
#include "lkvlua.h"
#include "lua.h"
#include "lunakv.h"
#include "workload.h"

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

typedef struct LJob {
  Child c;
  lkvwl_job *job; /* NULL once closed */
} LJob;

/* What close(), __close and __gc do to a job: stop the workers, join
 * them, free. */
static void job_free_handle(Child *c) {
  LJob *p = (LJob *)c;
  lkvwl_job_free(p->job);
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
    luaL_error(L,
               "bad spec field '%s' to 'bench' (an integer from %I to %I "
               "expected)",
               name, (lua_Integer)lo, (lua_Integer)hi);
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
  i = kind != NULL ? lkvwl_parse(kind, strlen(kind), LKVWL_IN_CORE) : -1;
  if (i < 0)
    luaL_error(L,
               "bad spec field 'kind' to 'bench' (a workload name "
               "expected, got %s)",
               kind ? kind : luaL_typename(L, -1));
  s->kind = i;
  lua_pop(L, 1); /* -1 */
  s->num = specint(L, t, "num", 100000, 1, (lua_Integer)1 << 40);
  s->ops = specint(L, t, "ops", s->num, 0, (lua_Integer)1 << 40);
  s->key_size = specint(L, t, "key_size", 16, 1, LKVWL_MAX_KEY);
  s->value_size = specint(L, t, "value_size", 100, 0, LKVWL_MAX_VALUE);
  s->threads = (int)specint(L, t, "threads", 1, 1, LKVWL_MAX_THREADS);
  s->seed = specint(L, t, "seed", 1, LUA_MININTEGER, LUA_MAXINTEGER);
  s->sample_every = specint(L, t, "sample_every", 8, 1, 1 << 20);
  /* every key index must fit in key_size decimal digits */
  for (i = 0; i < s->key_size && maxnum <= s->num; i++) maxnum *= 10;
  if (maxnum < s->num)
    luaL_error(L,
               "bad spec to 'bench' (num %I needs keys longer than %I "
               "bytes)",
               s->num, s->key_size);
}

/* core.bench(db, spec) -> job, its workers already running. */
static int core_bench(lua_State *L) {
  LDb *d = (LDb *)luaL_checkudata(L, 1, DB_MT);
  BSpec s;
  lkvwl_spec ws;
  LJob *p;
  int t, rc;
  if (d->db == NULL) return luaL_error(L, "lunakv: db is closed");
  readspec(L, 2, &s);
  ws.kind = s.kind;
  ws.threads = s.threads;
  ws.num = (uint64_t)s.num;
  ws.ops = (uint64_t)s.ops;
  ws.key_size = (size_t)s.key_size;
  ws.value_size = (size_t)s.value_size;
  ws.seed = (uint64_t)s.seed;
  ws.sample_every = (unsigned)s.sample_every;
  /* +1 job, closed */
  p = (LJob *)lkvlua_newchild(L, sizeof *p, BENCH_MT, 1, d);
  p->job = lkvwl_job_new(d->db, &ws);
  if (p->job == NULL) return luaL_error(L, "lunakv: out of memory: bench");
  lkvlua_child_link(d, &p->c, job_free_handle);
  rc = lkvwl_job_start(p->job, &t);
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
  int done;
  if (lua_isnoneornil(L, 2)) {
    done = lkvwl_job_wait(p->job, -1);
  } else {
    lua_Number secs = luaL_checknumber(L, 2);
    luaL_argcheck(L, secs >= 0, 2, "timeout must be >= 0");
    done = lkvwl_job_wait(p->job, (double)secs);
  }
  lua_pushboolean(L, done);
  lua_pushinteger(L, (lua_Integer)lkvwl_job_progress(p->job));
  return 2;
}

/* job:result() -> { kind, threads, ops, found, seconds, ops_per_sec,
 * p50_us, p99_us, p999_us, max_us }, once done. Raises the first engine
 * failure of any worker. */
static int job_result(lua_State *L) {
  LJob *p = tojob(L);
  lkvwl_result r;
  lkv_err err;
  int rc;
  if (!lkvwl_job_done(p->job, &rc, &err))
    return luaL_error(L, "lunakv: bench: still running");
  if (rc != LKV_OK) return raise_err(L, rc, &err);
  lkvwl_job_result(p->job, &r);
  lua_createtable(L, 0, 12);
  lua_pushstring(L, lkvwl_name(lkvwl_job_kind(p->job)));
  lua_setfield(L, -2, "kind");
  setint(L, "threads", (uint64_t)r.threads);
  setint(L, "ops", r.ops);
  setint(L, "found", r.found);
  setint(L, "samples", (uint64_t)r.nsamples);
  setnum(L, "seconds", r.seconds);
  setnum(L, "ops_per_sec", r.seconds > 0 ? (double)r.ops / r.seconds : 0);
  setnum(L, "p50_us", lkv_pct_sorted(r.samples, r.nsamples, 50));
  setnum(L, "p99_us", lkv_pct_sorted(r.samples, r.nsamples, 99));
  setnum(L, "p999_us", lkv_pct_sorted(r.samples, r.nsamples, 99.9));
  setnum(L, "max_us", lkv_pct_sorted(r.samples, r.nsamples, 100));
  return 1;
}

static int job_tostring(lua_State *L) {
  LJob *p = (LJob *)checkself(L, SELF_MT, BENCH_MT);
  if (p->job == NULL)
    lua_pushliteral(L, "lunakv.bench (closed)");
  else
    lua_pushfstring(L, "lunakv.bench (%s, %d threads)",
                    lkvwl_name(lkvwl_job_kind(p->job)),
                    lkvwl_job_threads(p->job));
  return 1;
}

/* }====================================================================== */

static const luaL_Reg job_methods[] = {
    {"wait", job_wait},
    {"result", job_result},
    {"close", lkvlua_child_close_method},
    {NULL, NULL},
};

static const luaL_Reg bench_funcs[] = {
    {"bench", core_bench},
    {NULL, NULL},
};

void lkvlua_bench_register(lua_State *L) {
  lkvlua_newclass(L, BENCH_MT, lkvlua_child_close_method, job_tostring,
                  job_methods, NULL);
  luaL_setfuncs(L, bench_funcs, 0);
}
