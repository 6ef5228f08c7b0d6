/* lunakv_faultenv.c - core.fault_env(): the fault-injecting file system
 * (c/engine/faultenv.h) for Lua specs. Pass it to lunakv.open as the `env`
 * option; the db keeps it alive.
 *
 *   local fe = core.fault_env()
 *   fe:fail("write", 3, "ENOSPC", "wal.log", { sticky = true, short = true })
 *   fe:seen(); fe:fired(); fe:calls("sync"); fe:clear()
 *   fe:crash(); fe:power_loss("drop" | "partial" | "torn" | "random", seed)
 *   fe:pause("create", ".sst"); fe:wait_paused(10); ...; fe:resume()
 */
#include <errno.h>
#include <lauxlib.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "faultenv.h"
#include "lkvlua.h"

/* A pause: the nth call of kind op on a path containing match (in
 * whatever thread makes it) waits inside the hook until resumed, so a
 * spec can look at the db while, say, a compaction is in the middle of
 * its work. Guarded by mu. */
typedef struct LPause {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int op; /* -1: none armed */
  char match[256];
  long left;   /* matching calls until the one that waits */
  int waiting; /* a thread waits now */
  int release; /* resume() was called */
} LPause;

typedef struct LFault {
  lkv_faultenv *f; /* NULL once freed */
  LPause *pause;   /* malloc'd: threads may still leave it after __gc */
} LFault;

static void pause_hook(void *ctx, int op, const char *path) {
  LPause *p = (LPause *)ctx;
  pthread_mutex_lock(&p->mu);
  if (p->op == op && strstr(path, p->match) != NULL && --p->left == 0) {
    p->op = -1;
    p->waiting = 1;
    p->release = 0;
    pthread_cond_broadcast(&p->cv);
    /* never forever: a spec that fails before its resume() must not leave
     * a thread (and the close that joins it) stuck */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 30;
    while (!p->release)
      if (pthread_cond_timedwait(&p->cv, &p->mu, &ts) != 0) break;
    p->waiting = 0;
    pthread_cond_broadcast(&p->cv);
  }
  pthread_mutex_unlock(&p->mu);
}

static LFault *tofault(lua_State *L) {
  LFault *p = (LFault *)luaL_checkudata(L, 1, FAULTENV_MT);
  if (p->f == NULL) luaL_error(L, "lunakv: fault env is freed");
  return p;
}

const lkv_env *lkvlua_faultenv_env(lua_State *L, int idx) {
  LFault *p = (LFault *)luaL_checkudata(L, idx, FAULTENV_MT);
  if (p->f == NULL) luaL_error(L, "lunakv: fault env is freed");
  return lkv_faultenv_env(p->f);
}

static int checkop(lua_State *L, int arg) {
  const char *name = luaL_checkstring(L, arg);
  int op = lkv_fault_op_parse(name);
  if (op < 0)
    luaL_argerror(L, arg, lua_pushfstring(L, "unknown call kind '%s'", name));
  return op;
}

static const struct {
  const char *name;
  int value;
} errnos[] = {{"EIO", EIO},     {"ENOSPC", ENOSPC}, {"EACCES", EACCES},
              {"EROFS", EROFS}, {"EDQUOT", EDQUOT}, {"ENOMEM", ENOMEM},
              {NULL, 0}};

/* fe:fail(op, nth [, errno_name [, match [, {sticky=, short=}]]]) */
static int fault_fail(lua_State *L) {
  LFault *p = tofault(L);
  int op = checkop(L, 2), e = EIO, flags = 0;
  lua_Integer nth = luaL_checkinteger(L, 3);
  const char *en = luaL_optstring(L, 4, "EIO"),
             *match = luaL_optstring(L, 5, NULL);
  int i;
  luaL_argcheck(L, nth >= 0, 3, "must be >= 0");
  for (i = 0; errnos[i].name != NULL; i++)
    if (strcmp(en, errnos[i].name) == 0) break;
  if (errnos[i].name == NULL)
    luaL_argerror(L, 4, lua_pushfstring(L, "unknown errno name '%s'", en));
  e = errnos[i].value;
  if (!lua_isnoneornil(L, 6)) {
    luaL_checktype(L, 6, LUA_TTABLE);
    if (lua_getfield(L, 6, "sticky") != LUA_TNIL && lua_toboolean(L, -1))
      flags |= LKV_FAULT_STICKY;
    if (lua_getfield(L, 6, "short") != LUA_TNIL && lua_toboolean(L, -1))
      flags |= LKV_FAULT_SHORT;
    lua_pop(L, 2);
  }
  lkv_faultenv_fail(p->f, op, (uint64_t)nth, e, match, flags);
  return 0;
}

static int fault_clear(lua_State *L) {
  lkv_faultenv_clear(tofault(L)->f);
  return 0;
}

static int fault_seen(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)lkv_faultenv_seen(tofault(L)->f));
  return 1;
}

static int fault_fired(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)lkv_faultenv_fired(tofault(L)->f));
  return 1;
}

static int fault_calls(lua_State *L) {
  LFault *p = tofault(L);
  int op = lua_isnoneornil(L, 2) ? LKV_FOP_ANY : checkop(L, 2);
  lua_pushinteger(L, (lua_Integer)lkv_faultenv_calls(p->f, op));
  return 1;
}

static int fault_crash(lua_State *L) {
  lkv_faultenv_crash(tofault(L)->f);
  return 0;
}

static int fault_unsynced(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)lkv_faultenv_unsynced_bytes(tofault(L)->f));
  return 1;
}

/* fe:power_loss([mode [, seed]]) */
static int fault_power_loss(lua_State *L) {
  static const char *const modes[] = {"drop", "partial", "torn", "random",
                                      NULL};
  LFault *p = tofault(L);
  int mode = luaL_checkoption(L, 2, "drop", modes);
  lua_Integer seed = luaL_optinteger(L, 3, 1);
  lkv_err err;
  err.msg[0] = '\0';
  if (lkv_faultenv_power_loss(p->f, (lkv_loss_mode)mode, (uint64_t)seed, &err))
    return luaL_error(L, "lunakv: %s", err.msg);
  return 0;
}

/* fe:writeback(path): the kernel wrote that file (and its name) back. */
static int fault_writeback(lua_State *L) {
  LFault *p = tofault(L);
  const char *path = luaL_checkstring(L, 2);
  int e = lkv_faultenv_writeback(p->f, path);
  if (e) return luaL_error(L, "lunakv: writeback %s: %s", path, strerror(e));
  return 0;
}

/* fe:pause(op, match [, nth]): the nth (default 1st) such call waits. */
static int fault_pause(lua_State *L) {
  LFault *p = tofault(L);
  int op = checkop(L, 2);
  size_t ml;
  const char *match = luaL_checklstring(L, 3, &ml);
  lua_Integer nth = luaL_optinteger(L, 4, 1);
  luaL_argcheck(L, ml < sizeof p->pause->match, 3, "too long");
  luaL_argcheck(L, nth >= 1, 4, "must be >= 1");
  pthread_mutex_lock(&p->pause->mu);
  if (p->pause->waiting) {
    pthread_mutex_unlock(&p->pause->mu);
    return luaL_error(L, "lunakv: a call is paused already: resume() it first");
  }
  memcpy(p->pause->match, match, ml + 1);
  p->pause->left = (long)nth;
  p->pause->op = op;
  pthread_mutex_unlock(&p->pause->mu);
  return 0;
}

/* fe:wait_paused([timeout_s]) -> true once a call waits in the pause,
 * false when timeout_s (default 10) passed first. */
static int fault_wait_paused(lua_State *L) {
  LFault *p = tofault(L);
  double t = luaL_optnumber(L, 2, 10.0);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += (time_t)t;
  ts.tv_nsec += (long)((t - (double)(time_t)t) * 1e9);
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000L;
  }
  pthread_mutex_lock(&p->pause->mu);
  while (!p->pause->waiting)
    if (pthread_cond_timedwait(&p->pause->cv, &p->pause->mu, &ts) != 0) break;
  lua_pushboolean(L, p->pause->waiting);
  pthread_mutex_unlock(&p->pause->mu);
  return 1;
}

/* fe:resume(): the paused call goes on (and a pause not yet hit is
 * disarmed). */
static int fault_resume(lua_State *L) {
  LFault *p = tofault(L);
  pthread_mutex_lock(&p->pause->mu);
  p->pause->op = -1;
  p->pause->release = 1;
  pthread_cond_broadcast(&p->pause->cv);
  pthread_mutex_unlock(&p->pause->mu);
  return 0;
}

/* __gc: a db that uses the env holds it (user value), so it goes first;
 * its threads are gone by then. */
static int fault_gc(lua_State *L) {
  LFault *p = (LFault *)luaL_checkudata(L, 1, FAULTENV_MT);
  if (p->f) lkv_faultenv_set_hook(p->f, NULL, NULL);
  lkv_faultenv_free(p->f);
  p->f = NULL;
  if (p->pause) {
    pthread_mutex_destroy(&p->pause->mu);
    pthread_cond_destroy(&p->pause->cv);
    free(p->pause);
    p->pause = NULL;
  }
  return 0;
}

static int fault_tostring(lua_State *L) {
  LFault *p = (LFault *)luaL_checkudata(L, 1, FAULTENV_MT);
  lua_pushfstring(L, "lunakv.faultenv (%p)%s", (void *)p,
                  p->f ? "" : " (freed)");
  return 1;
}

/* core.fault_env() -> a new fault env */
static int core_fault_env(lua_State *L) {
  LFault *p = (LFault *)lua_newuserdatauv(L, sizeof *p, 0); /* +1 */
  p->f = NULL;
  p->pause = NULL;
  luaL_setmetatable(L, FAULTENV_MT);
  if ((p->pause = (LPause *)calloc(1, sizeof *p->pause)) == NULL)
    return luaL_error(L, "lunakv: out of memory: fault env");
  pthread_mutex_init(&p->pause->mu, NULL);
  pthread_cond_init(&p->pause->cv, NULL);
  p->pause->op = -1;
  if ((p->f = lkv_faultenv_new()) == NULL)
    return luaL_error(L, "lunakv: out of memory: fault env");
  lkv_faultenv_set_hook(p->f, pause_hook, p->pause);
  return 1;
}

static const luaL_Reg fault_methods[] = {{"fail", fault_fail},
                                         {"clear", fault_clear},
                                         {"seen", fault_seen},
                                         {"fired", fault_fired},
                                         {"calls", fault_calls},
                                         {"crash", fault_crash},
                                         {"power_loss", fault_power_loss},
                                         {"unsynced_bytes", fault_unsynced},
                                         {"pause", fault_pause},
                                         {"wait_paused", fault_wait_paused},
                                         {"resume", fault_resume},
                                         {"writeback", fault_writeback},
                                         {NULL, NULL}};

void lkvlua_faultenv_register(lua_State *L) {
  luaL_newmetatable(L, FAULTENV_MT); /* +1 mt */
  lua_pushcfunction(L, fault_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, fault_tostring);
  lua_setfield(L, -2, "__tostring");
  luaL_newlib(L, fault_methods);  /* +1 */
  lua_setfield(L, -2, "__index"); /* -1 */
  lua_pop(L, 1);                  /* -1 mt */
  lua_pushcfunction(L, core_fault_env);
  lua_setfield(L, -2, "fault_env");
}
