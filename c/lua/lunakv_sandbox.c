/* lunakv_sandbox.c - what a stored function runs in: the lua_State of
 * one library, built by lkvf_sandbox_init with the part of Lua's standard
 * library a script may use, a private cjson and lunakv.register; its
 * counting allocator (the memory limit) and its count hook (the
 * instruction budget), armed by lunakv_funcs.c for each run; and the
 * wrapped library functions that loop in C, charged to that budget. The
 * rule for library and function names is here too, for lunakv.register
 * applies it.
 *
 * Why a file of its own: this is all a script can reach and all it may
 * spend, the one place to read when asking what a stored function can
 * do; lunakv_funcs.c (libraries and calls) only builds a state, arms and
 * disarms it. Called by lunakv_funcs.c (and by lunakv_dbfuncs.c, for
 * lkvf_check_name), never calling it back; calls lunakv_tx.c for the tx
 * class.
 *
 * Why a lua_State per library and not an environment table per library
 * in one state: the string metatable, the string table behind it and the
 * collector are per state, so a separate state is the only way a library
 * cannot change what another one sees, and a per-state allocator is the
 * only exact measure of one library's memory.
 *
 * The C functions here that a script or the build runs (the wrappers,
 * lkvf_sandbox_init, lunakv.register) run under lunakv_funcs.c's
 * lua_pcall and may raise: none holds malloc'd memory on its own frame
 * across a raise. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lauxlib.h"
#include "lua.h"
#include "lualib.h"
#include "lunakv_funcs.h"
#include "lunakv_funcs_impl.h"

/* {======================================================================
** Names
** ======================================================================= */

int lkvf_check_name(const char *what, const char *name, size_t len,
                    lkvf_error *e) {
  size_t i;
  if (name == NULL || len == 0 || len > LKVF_NAME_MAX)
    return lkvf_seterr(e, LKVF_BADARG, "%s name must be 1 to %d bytes", what,
                       LKVF_NAME_MAX);
  for (i = 0; i < len; i++) {
    unsigned char c = (unsigned char)name[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-'))
      return lkvf_seterr(e, LKVF_BADARG,
                         "%s name '%.*s' may hold only letters, digits, '_', "
                         "'.' and '-'",
                         what, (int)len, name);
  }
  return LKVF_OK;
}

/* }====================================================================== */

/* {======================================================================
** The allocator and the hook: the memory limit and the instruction budget
** ======================================================================= */

/* Lua may not be refused a shrink or a free; a growth past the limit is
 * refused. Lua then runs an emergency collection and asks again for the
 * same block: if that retry fits, nothing was raised and the hit is
 * forgotten (a call making garbage in a loop just collects it); if the
 * retry is refused too, or Lua raises without retrying, the hit stays.
 * It is remembered: a script that catches "not enough memory" with
 * pcall still ends with the limit's error. The first limit hit is the
 * one reported. */
void *lkvf_sandbox_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  lkvf_library *lib = (lkvf_library *)ud;
  int retry;
  void *p;
  if (ptr == NULL) osize = 0; /* then osize is the object's type */
  if (nsize == 0) {
    free(ptr);
    lib->used -= osize;
    return NULL;
  }
  if (nsize <= osize) {
    p = realloc(ptr, nsize);
    if (p == NULL) return NULL;
    lib->used = lib->used - osize + nsize;
    return p;
  }
  retry = lib->refused.valid && lib->refused.ptr == ptr &&
          lib->refused.osize == osize && lib->refused.nsize == nsize;
  lib->refused.valid = 0;
  if (nsize - osize > lib->limit ||
      lib->used + lib->extra > lib->limit - (nsize - osize)) {
    if (!retry) {
      lib->refused.ptr = ptr;
      lib->refused.osize = osize;
      lib->refused.nsize = nsize;
      lib->refused.hit_before = lib->hit;
      lib->refused.valid = 1;
    }
    if (lib->hit == HIT_NONE) lib->hit = HIT_MEMORY;
    return NULL;
  }
  p = realloc(ptr, nsize);
  if (p == NULL) return NULL;
  /* the emergency collection made room: no error was raised */
  if (retry) lib->hit = lib->refused.hit_before;
  lib->used = lib->used - osize + nsize;
  return p;
}

static lkvf_library *getlib(lua_State *L) {
  void *ud;
  lua_getallocf(L, &ud);
  return (lkvf_library *)ud;
}

/* Hand the hook the next chunk of the budget. */
static void schedule(lua_State *L, lkvf_library *lib) {
  int64_t n = lib->budget < HOOK_CHUNK ? lib->budget : HOOK_CHUNK;
  lib->budget -= n;
  lua_sethook(L, lua_gethook(L), LUA_MASKCOUNT, n > 0 ? (int)n : 1);
}

/* Fires every chunk; once the budget is spent it fires at every
 * instruction, so a pcall in the script cannot catch its way past it. */
static void count_hook(lua_State *L, lua_Debug *ar) {
  lkvf_library *lib = getlib(L);
  (void)ar;
  if (!lib->spent && lib->budget > 0) {
    schedule(L, lib);
    return;
  }
  /* marked before the message allocates: a refused allocation for it
   * still ends the run with the instruction limit, the one hit first */
  lib->spent = 1;
  if (lib->hit == HIT_NONE) lib->hit = HIT_INSTRUCTIONS;
  lua_sethook(L, count_hook, LUA_MASKCOUNT, 1);
  /* level 0: inside a hook that is the running Lua function itself */
  luaL_where(L, 0);
  lua_pushliteral(L, "SCRIPT_MAX_INSTRUCTIONS limit reached");
  lua_concat(L, 2);
  lua_error(L);
}

void lkvf_sandbox_arm(lkvf_library *lib, const lkvf_limits *lim) {
  /* the budget counts in an int64: the schema caps the option at
   * INT_MAX, a C caller that skipped lkv_schema_check is capped here */
  uint64_t n = lim->max_instructions;
  lib->hit = HIT_NONE;
  lib->refused.valid = 0;
  lib->spent = 0;
  lib->limit = (size_t)lim->max_memory;
  lib->budget = n > INT64_MAX / 2 ? INT64_MAX / 2 : (int64_t)n;
  lua_sethook(lib->L, count_hook, LUA_MASKCOUNT, 1);
  schedule(lib->L, lib);
}

void lkvf_sandbox_disarm(lkvf_library *lib) {
  lua_sethook(lib->L, NULL, 0, 0);
  lib->budget = -1; /* lkvf_charge charges nothing */
  /* between calls the state may keep what it holds, even when a later
   * call's limit is lower: only growth during a call is refused */
  lib->limit = SIZE_MAX / 2;
}

/* }====================================================================== */

/* {======================================================================
** The sandbox
** ======================================================================= */

static int l_register(lua_State *L);

/* setmetatable that refuses __gc: a finalizer would run at the next
 * collection, which may come after the call's budget is disarmed. */
static int l_setmetatable(lua_State *L) {
  if (lua_type(L, 2) == LUA_TTABLE) {
    lua_pushliteral(L, "__gc");
    if (lua_rawget(L, 2) != LUA_TNIL)
      return luaL_error(L, "__gc metamethods are not allowed in functions");
    lua_pop(L, 1);
  }
  lua_pushvalue(L, lua_upvalueindex(1)); /* +1 the real setmetatable */
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, 1);
  return 1;
}

/* Library functions that loop in C without running a Lua instruction,
 * so the count hook never sees them: each is charged to the budget
 * before it starts, one instruction per element it will touch. */

/* string.rep: an empty result costs nothing, however many times it is
 * repeated (Lua's own loops count times); a longer one is bounded by
 * the memory limit. Upvalue 1: the real string.rep. */
static int l_rep(lua_State *L) {
  size_t l = 0, lsep = 0;
  lua_Integer n = luaL_checkinteger(L, 2);
  luaL_checklstring(L, 1, &l);
  luaL_optlstring(L, 3, "", &lsep);
  if (n <= 0 || l + lsep == 0) {
    lua_pushliteral(L, "");
    return 1;
  }
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, 1);
  return 1;
}

/* table.move(a1, f, e, t [, a2]): charged e - f + 1. Upvalue 1: the real
 * table.move. */
static int l_move(lua_State *L) {
  lua_Integer f = luaL_checkinteger(L, 2), e = luaL_checkinteger(L, 3);
  if (e >= f)
    lkvf_charge(L, getlib(L), (uint64_t)((lua_Unsigned)e - (lua_Unsigned)f));
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  return lua_gettop(L);
}

/* table.insert and table.remove on the raw length with raw access: a
 * __len metamethod could claim any length, and each shifted element is
 * charged. Otherwise as Lua's own (same errors). */
static int l_insert(lua_State *L) {
  lua_Integer e, pos, i;
  luaL_checktype(L, 1, LUA_TTABLE);
  e = (lua_Integer)lua_rawlen(L, 1) + 1; /* first empty element */
  switch (lua_gettop(L)) {
    case 2: pos = e; break;
    case 3:
      pos = luaL_checkinteger(L, 2);
      luaL_argcheck(L, (lua_Unsigned)pos - 1u < (lua_Unsigned)e, 2,
                    "position out of bounds");
      lkvf_charge(L, getlib(L), (uint64_t)(e - pos));
      for (i = e; i > pos; i--) {
        lua_rawgeti(L, 1, i - 1);
        lua_rawseti(L, 1, i);
      }
      break;
    default: return luaL_error(L, "wrong number of arguments to 'insert'");
  }
  lua_rawseti(L, 1, pos);
  return 0;
}

static int l_remove(lua_State *L) {
  lua_Integer size, pos;
  luaL_checktype(L, 1, LUA_TTABLE);
  size = (lua_Integer)lua_rawlen(L, 1);
  pos = luaL_optinteger(L, 2, size);
  if (pos != size)
    luaL_argcheck(L, (lua_Unsigned)pos - 1u <= (lua_Unsigned)size, 2,
                  "position out of bounds");
  if (pos < size) lkvf_charge(L, getlib(L), (uint64_t)(size - pos));
  lua_rawgeti(L, 1, pos);
  for (; pos < size; pos++) {
    lua_rawgeti(L, 1, pos + 1);
    lua_rawseti(L, 1, pos);
  }
  lua_pushnil(L);
  lua_rawseti(L, 1, pos);
  return 1;
}

/* table.sort: charged n * log2(n) comparisons for the raw length n (a
 * comparison function runs Lua and is counted by the hook as well).
 * Upvalue 1: the real table.sort. */
static int l_sort(lua_State *L) {
  uint64_t n, lg = 1;
  luaL_checktype(L, 1, LUA_TTABLE);
  n = (uint64_t)lua_rawlen(L, 1);
  while (lg < 64 && ((uint64_t)1 << lg) < n) lg++;
  lkvf_charge(L, getlib(L), n * lg);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, 0);
  return 0;
}

/* t[name] = fn with the old t[name] as its upvalue (NULL fn: the plain
 * function). t at the top. */
static void wrap(lua_State *L, const char *name, lua_CFunction fn,
                 int upvalue) {
  if (upvalue) {
    lua_getfield(L, -1, name);
    lua_pushcclosure(L, fn, 1);
  } else
    lua_pushcfunction(L, fn);
  lua_setfield(L, -2, name);
}

static void nil_globals(lua_State *L, const char *const *names) {
  for (; *names != NULL; names++) {
    lua_pushnil(L);
    lua_setglobal(L, *names);
  }
}

/* Build the sandbox: arg 1 is the cpath (a string, or nil). */
int lkvf_sandbox_init(lua_State *L) {
  static const char *const drop[] = {
      "load",  "loadstring", "dofile",         "loadfile", "require",
      "print", "warn",       "collectgarbage", "package",  NULL};
  static const char *const os_keep[] = {"time", "clock", "date", NULL};
  const char *const *k;
  luaL_requiref(L, LUA_GNAME, luaopen_base, 1);
  luaL_requiref(L, LUA_LOADLIBNAME, luaopen_package, 1);
  luaL_requiref(L, LUA_STRLIBNAME, luaopen_string, 1);
  luaL_requiref(L, LUA_TABLIBNAME, luaopen_table, 1);
  luaL_requiref(L, LUA_MATHLIBNAME, luaopen_math, 1);
  luaL_requiref(L, LUA_UTF8LIBNAME, luaopen_utf8, 1);
  luaL_requiref(L, LUA_OSLIBNAME, luaopen_os, 0); /* not global: copied */
  lua_settop(L, 1);
  /* cjson through require while package is still there. Scripts get
   * encode, decode and null of one private instance (cjson.new) and
   * nothing else: the module's setters (encode_max_depth and the like)
   * would let a script recurse deep enough to overflow the C stack, and
   * each cjson.new or a kept encode buffer is malloc'd outside the
   * counted memory. The same instance encodes the runtime's args and
   * results; no script can reconfigure it. */
  /* ... and as the C module only: with Lua's default package.path a
   * cjson.lua in the working directory (./?.lua) would run in the
   * sandbox, before any limit is armed. (The preload table of a state
   * this new is empty.) */
  lua_getglobal(L, "package");
  lua_pushliteral(L, "");
  lua_setfield(L, -2, "path");
  if (!lua_isnil(L, 1)) {
    lua_pushvalue(L, 1);
    lua_setfield(L, -2, "cpath");
  }
  lua_pop(L, 1);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "cjson");
  lua_call(L, 1, 1); /* 2 the module */
  lua_getfield(L, 2, "new");
  lua_call(L, 0, 1); /* 3 the private instance */
  lua_getfield(L, 3, "encode_keep_buffer");
  lua_pushboolean(L, 0); /* each encode frees its buffer */
  lua_call(L, 1, 0);
  lua_getfield(L, 3, "encode_max_depth");
  lua_pushinteger(L, LKVF_JSON_MAX_DEPTH);
  lua_call(L, 1, 0);
  lua_getfield(L, 3, "decode_max_depth");
  lua_pushinteger(L, LKVF_JSON_MAX_DEPTH);
  lua_call(L, 1, 0);
  lua_getfield(L, 3, "encode");
  lua_setfield(L, LUA_REGISTRYINDEX, REG_ENCODE);
  lua_getfield(L, 3, "decode");
  lua_setfield(L, LUA_REGISTRYINDEX, REG_DECODE);
  lua_createtable(L, 0, 3); /* 4 the scripts' cjson */
  lua_getfield(L, 3, "encode");
  lua_setfield(L, 4, "encode");
  lua_getfield(L, 3, "decode");
  lua_setfield(L, 4, "decode");
  lua_getfield(L, 3, "null");
  lua_setfield(L, 4, "null");
  lua_setglobal(L, "cjson");
  lua_settop(L, 1);
  nil_globals(L, drop);
  lua_getglobal(L, "string");
  lua_pushnil(L);
  lua_setfield(L, -2, "dump");
  wrap(L, "rep", l_rep, 1);
  lua_pop(L, 1);
  lua_getglobal(L, "table");
  wrap(L, "move", l_move, 1);
  wrap(L, "insert", l_insert, 0);
  wrap(L, "remove", l_remove, 0);
  wrap(L, "sort", l_sort, 1);
  lua_pop(L, 1);
  /* os: the clock and calendar only */
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_getfield(L, -1, LUA_OSLIBNAME); /* +1 full os */
  lua_newtable(L);                    /* +1 sandbox os */
  for (k = os_keep; *k != NULL; k++) {
    lua_getfield(L, -2, *k);
    lua_setfield(L, -2, *k);
  }
  lua_setglobal(L, "os");
  lua_settop(L, 1);
  /* the string metatable: getmetatable("") answers false, so no script
   * can reach it to change how strings index */
  lua_pushliteral(L, "");
  lua_getmetatable(L, -1);
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "__metatable");
  lua_settop(L, 1);
  lua_getglobal(L, "setmetatable");
  lua_pushcclosure(L, l_setmetatable, 1);
  lua_setglobal(L, "setmetatable");
  lua_newtable(L); /* the lunakv table */
  lua_pushcfunction(L, l_register);
  lua_setfield(L, -2, "register");
  lua_setglobal(L, "lunakv");
  lua_newtable(L);
  lua_setfield(L, LUA_REGISTRYINDEX, REG_FUNCS);
  lkvf_tx_register(L);
  return 0;
}

/* lunakv.register(name, fn [, {read_only = true}]) */
static int l_register(lua_State *L) {
  lkvf_library *lib = getlib(L);
  size_t nlen, i;
  const char *name = luaL_checklstring(L, 1, &nlen);
  int ro = 0;
  lkvf_error e;
  char *copy;
  if (!lib->loading)
    return luaL_error(L, "lunakv.register: only while the library loads");
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (lkvf_check_name("function", name, nlen, &e) != LKVF_OK)
    return luaL_error(L, "lunakv.register: %s", e.msg);
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, 3)) {
      if (lua_type(L, -2) != LUA_TSTRING ||
          strcmp(lua_tostring(L, -2), "read_only") != 0)
        return luaL_error(L,
                          "lunakv.register: unknown option '%s' (valid: "
                          "read_only)",
                          luaL_tolstring(L, -2, NULL));
      if (lua_type(L, -1) != LUA_TBOOLEAN)
        return luaL_error(L, "lunakv.register: read_only must be a boolean");
      ro = lua_toboolean(L, -1);
      lua_pop(L, 1);
    }
  }
  for (i = 0; i < lib->nfuncs; i++)
    if (strcmp(lib->funcs[i], name) == 0)
      return luaL_error(L, "lunakv.register: function '%s' registered twice",
                        name);
  if (strlen(name) != nlen)
    return luaL_error(L, "lunakv.register: bad function name");
  lua_getfield(L, LUA_REGISTRYINDEX, REG_FUNCS);
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  lua_rawset(L, -3); /* may raise out of memory: nothing malloc'd yet */
  if (lib->nfuncs == lib->capfuncs) {
    size_t cap = lib->capfuncs ? lib->capfuncs * 2 : 8;
    char **f = (char **)realloc(lib->funcs, cap * sizeof *f);
    int *r;
    if (f == NULL) return luaL_error(L, "lunakv.register: out of memory");
    lib->funcs = f;
    r = (int *)realloc(lib->read_only, cap * sizeof *r);
    if (r == NULL) return luaL_error(L, "lunakv.register: out of memory");
    lib->read_only = r;
    lib->capfuncs = cap;
  }
  copy = strdup(name);
  if (copy == NULL) return luaL_error(L, "lunakv.register: out of memory");
  lib->funcs[lib->nfuncs] = copy;
  lib->read_only[lib->nfuncs++] = ro;
  return 0;
}

/* }====================================================================== */
