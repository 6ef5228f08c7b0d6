/* lunakv_funcs.c - the stored-function runtime (lunakv_funcs.h): one
 * sandboxed lua_State per library, with a counting allocator (the memory
 * limit) and a count hook (the instruction budget); calls run a registered
 * function with a "tx" object that reads through the caller's backend and
 * collects the writes the caller will commit.
 *
 * Why a lua_State per library and not an environment table per library
 * in one state: the string metatable, the string table behind it and the
 * collector are per state, so a separate state is the only way a library
 * cannot change what another one sees, and a per-state allocator is the
 * only exact measure of one library's memory.
 *
 * Every step that runs Lua or may allocate in a sandbox runs under
 * lua_pcall: a raise (script error, limit, out of memory) never jumps over
 * C frames that hold malloc'd memory. Malloc'd scratch of a call (its
 * writes, the sorted index, open cursors) lives in the Call struct on the
 * C stack and is freed after the pcall returns. */
#include "lunakv_funcs.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lauxlib.h"
#include "lkvlua.h"
#include "lua.h"
#include "lualib.h"
#include "lunakv_funcs_impl.h"

/* {======================================================================
** Limits
** ======================================================================= */

static const lkv_option_spec limits_schema[] = {
    {"script_max_instructions", "SCRIPT_MAX_INSTRUCTIONS", LKV_OPT_U64,
     offsetof(lkvf_limits, max_instructions), 1000, INT_MAX,
     SCRIPT_MAX_INSTRUCTIONS_DEFAULT, NULL, NULL, NULL,
     "Lua VM instructions one stored-function call may run"},
    {"script_max_memory", "SCRIPT_MAX_MEMORY", LKV_OPT_U64,
     offsetof(lkvf_limits, max_memory), 1u << 20, (uint64_t)1 << 40,
     SCRIPT_MAX_MEMORY_DEFAULT, NULL, NULL, NULL,
     "bytes a library's Lua state plus a call's pending writes may hold"},
    {"script_max_writes", "SCRIPT_MAX_WRITES", LKV_OPT_U64,
     offsetof(lkvf_limits, max_writes), 1, 1000000, SCRIPT_MAX_WRITES_DEFAULT,
     NULL, NULL, NULL, "tx:set and tx:delete calls one call may make"},
};

const lkv_option_spec *lkvf_limits_schema(size_t *n) {
  *n = sizeof limits_schema / sizeof limits_schema[0];
  return limits_schema;
}

void lkvf_limits_init(lkvf_limits *l) {
  memset(l, 0, sizeof *l);
  lkv_schema_defaults(limits_schema,
                      sizeof limits_schema / sizeof limits_schema[0], l);
}

/* The load limits as text: the two a load runs under (writes are per
 * call). */
size_t lkvf_limits_format(const lkvf_limits *l,
                          char buf[LKVF_LIMITS_TEXT_MAX]) {
  int n = snprintf(buf, LKVF_LIMITS_TEXT_MAX,
                   "script_max_instructions=%llu script_max_memory=%llu",
                   (unsigned long long)l->max_instructions,
                   (unsigned long long)l->max_memory);
  return n < 0 ? 0 : (size_t)n;
}

static int seterr(lkvf_error *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

int lkvf_limits_parse(const char *text, size_t len, lkvf_limits *l,
                      lkvf_error *e) {
  size_t n, i, at = 0;
  const lkv_option_spec *schema = lkvf_limits_schema(&n);
  lkv_err err;
  lkvf_limits_init(l);
  while (at < len) {
    size_t ws = at, nl, vs;
    unsigned long long v = 0;
    while (at < len && text[at] != '=' && text[at] != ' ') at++;
    nl = at - ws;
    if (at == len || text[at] != '=' || nl == 0)
      return seterr(e, LKVF_BADARG, "bad limits text '%.*s'", (int)len, text);
    vs = ++at;
    while (at < len && text[at] >= '0' && text[at] <= '9' &&
           v <= (ULLONG_MAX - 9) / 10)
      v = v * 10 + (unsigned long long)(text[at++] - '0');
    if (at == vs || (at < len && text[at] != ' '))
      return seterr(e, LKVF_BADARG, "bad limits text '%.*s'", (int)len, text);
    for (i = 0; i < n; i++)
      if (strlen(schema[i].name) == nl &&
          memcmp(schema[i].name, text + ws, nl) == 0)
        break;
    if (i == n)
      return seterr(e, LKVF_BADARG, "unknown limit '%.*s'", (int)nl, text + ws);
    lkv_option_set(&schema[i], l, (uint64_t)v);
    while (at < len && text[at] == ' ') at++;
  }
  err.msg[0] = '\0';
  if (lkv_schema_check(schema, n, l, &err) != LKV_OK)
    return seterr(e, LKVF_BADARG, "%s", err.msg);
  return LKVF_OK;
}

/* }====================================================================== */

/* {======================================================================
** Errors and names
** ======================================================================= */

static const char *hit_name(int hit) {
  switch (hit) {
    case HIT_INSTRUCTIONS: return "SCRIPT_MAX_INSTRUCTIONS";
    case HIT_MEMORY: return "SCRIPT_MAX_MEMORY";
    case HIT_WRITES: return "SCRIPT_MAX_WRITES";
    default: return NULL;
  }
}

static int seterr(lkvf_error *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int seterr(lkvf_error *e, int code, const char *fmt, ...) {
  va_list ap;
  e->code = code;
  e->limit = NULL;
  e->backend_code = 0;
  va_start(ap, fmt);
  vsnprintf(e->msg, sizeof e->msg, fmt, ap);
  va_end(ap);
  return code;
}

int lkvf_check_name(const char *what, const char *name, size_t len,
                    lkvf_error *e) {
  size_t i;
  if (name == NULL || len == 0 || len > LKVF_NAME_MAX)
    return seterr(e, LKVF_BADARG, "%s name must be 1 to %d bytes", what,
                  LKVF_NAME_MAX);
  for (i = 0; i < len; i++) {
    unsigned char c = (unsigned char)name[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-'))
      return seterr(e, LKVF_BADARG,
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
static void *lalloc(void *ud, void *ptr, size_t osize, size_t nsize) {
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

static void arm(lkvf_library *lib, const lkvf_limits *lim) {
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

static void disarm(lkvf_library *lib) {
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
static int sandbox_init(lua_State *L) {
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

static void lib_free(lkvf_library *lib) {
  size_t i;
  if (lib == NULL) return;
  if (lib->L != NULL) lua_close(lib->L);
  for (i = 0; i < lib->nfuncs; i++) free(lib->funcs[i]);
  free(lib->funcs);
  free(lib->read_only);
  free(lib->name);
  free(lib->source);
  free(lib->error);
  free(lib);
}

/* The message of a failed pcall at the top of L, into e. */
static int pcall_error(lkvf_library *lib, int status, int code,
                       const char *what, lkvf_error *e) {
  const char *msg =
      lua_type(lib->L, -1) == LUA_TSTRING ? lua_tostring(lib->L, -1) : NULL;
  if (lib->hit != HIT_NONE) {
    /* the limit's own message carries the line it stopped at; a memory
     * error ("not enough memory") or one the script caught does not */
    if (msg != NULL && strstr(msg, hit_name(lib->hit)) != NULL)
      seterr(e, LKVF_LIMIT, "%s: %s", what, msg);
    else
      seterr(e, LKVF_LIMIT, "%s: %s limit reached", what, hit_name(lib->hit));
    e->limit = hit_name(lib->hit);
    return LKVF_LIMIT;
  }
  if (status == LUA_ERRMEM)
    return seterr(e, LKVF_NOMEM, "%s: out of memory", what);
  if (msg != NULL) return seterr(e, code, "%s: %s", what, msg);
  return seterr(e, code, "%s: error object is a %s value", what,
                luaL_typename(lib->L, -1));
}

/* A new library state from lib->name and lib->source, its top level run. */
static int lib_build(lkvf_runtime *rt, lkvf_library *lib,
                     const lkvf_limits *lim, lkvf_error *e) {
  char chunk[LKVF_NAME_MAX + 2], what[LKVF_NAME_MAX + 32];
  int st;
  lib->used = lib->extra = 0;
  lib->budget = -1;
  lib->limit = (size_t)lim->max_memory;
  lib->L = lua_newstate(lalloc, lib);
  if (lib->L == NULL)
    return seterr(e, LKVF_NOMEM, "library '%s': out of memory", lib->name);
  lua_pushcfunction(lib->L, sandbox_init);
  if (rt->cpath != NULL)
    lua_pushstring(lib->L, rt->cpath);
  else
    lua_pushnil(lib->L);
  st = lua_pcall(lib->L, 1, 0, 0);
  /* the sandbox itself failing (cjson not found, no memory) */
  snprintf(what, sizeof what, "library '%s': sandbox", lib->name);
  if (st != LUA_OK) return pcall_error(lib, st, LKVF_SCRIPT, what, e);
  /* "=name": messages read "name:LINE: ..." */
  snprintf(chunk, sizeof chunk, "=%s", lib->name);
  arm(lib, lim);
  st = luaL_loadbufferx(lib->L, lib->source, lib->slen, chunk, "t");
  if (st == LUA_OK) {
    lib->loading = 1;
    st = lua_pcall(lib->L, 0, 0, 0);
    lib->loading = 0;
  }
  if (st != LUA_OK) {
    snprintf(what, sizeof what, "library '%s'", lib->name);
    pcall_error(lib, st, LKVF_SCRIPT, what, e);
    disarm(lib);
    return e->code;
  }
  disarm(lib);
  if (lib->nfuncs == 0)
    return seterr(e, LKVF_BADARG,
                  "library '%s' registers no function (call "
                  "lunakv.register(name, fn))",
                  lib->name);
  lua_gc(lib->L, LUA_GCCOLLECT);
  return LKVF_OK;
}

/* }====================================================================== */

/* {======================================================================
** The runtime
** ======================================================================= */

lkvf_runtime *lkvf_runtime_new(const char *cjson_cpath) {
  lkvf_runtime *rt = (lkvf_runtime *)calloc(1, sizeof *rt);
  if (rt == NULL) return NULL;
  if (cjson_cpath != NULL && (rt->cpath = strdup(cjson_cpath)) == NULL) {
    free(rt);
    return NULL;
  }
  return rt;
}

void lkvf_runtime_free(lkvf_runtime *rt) {
  size_t i;
  if (rt == NULL) return;
  for (i = 0; i < rt->n; i++) lib_free(rt->libs[i]);
  free(rt->libs);
  free(rt->cpath);
  free(rt);
}

/* The index of library name, or -(insertion point) - 1. */
static long find_lib(const lkvf_runtime *rt, const char *name, size_t nlen) {
  size_t lo = 0, hi = rt->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c =
        lkv_key_compare(rt->libs[mid]->name, rt->libs[mid]->nlen, name, nlen);
    if (c == 0) return (long)mid;
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return -(long)lo - 1;
}

static lkvf_library *find_func(const lkvf_runtime *rt, const char *name,
                               size_t nlen, int *ro) {
  size_t i, j;
  for (i = 0; i < rt->n; i++)
    for (j = 0; j < rt->libs[i]->nfuncs; j++)
      if (strlen(rt->libs[i]->funcs[j]) == nlen &&
          memcmp(rt->libs[i]->funcs[j], name, nlen) == 0) {
        if (ro != NULL) *ro = rt->libs[i]->read_only[j];
        return rt->libs[i];
      }
  return NULL;
}

/* Room for one more library now, so that install cannot fail. */
static int reserve(lkvf_runtime *rt, lkvf_error *e) {
  if (rt->n == rt->cap) {
    size_t cap = rt->cap ? rt->cap * 2 : 8;
    lkvf_library **p = (lkvf_library **)realloc(rt->libs, cap * sizeof *p);
    if (p == NULL) return seterr(e, LKVF_NOMEM, "library: out of memory");
    rt->libs = p;
    rt->cap = cap;
  }
  return LKVF_OK;
}

/* A new library record with copies of name and source, or NULL. */
static lkvf_library *lib_new(const char *name, size_t nlen, const char *source,
                             size_t slen) {
  lkvf_library *lib = (lkvf_library *)calloc(1, sizeof *lib);
  if (lib == NULL || (lib->name = (char *)malloc(nlen + 1)) == NULL ||
      (lib->source = (char *)malloc(slen + 1)) == NULL) {
    lib_free(lib);
    return NULL;
  }
  memcpy(lib->name, name, nlen);
  lib->name[nlen] = '\0';
  lib->nlen = nlen;
  memcpy(lib->source, source, slen);
  lib->source[slen] = '\0';
  lib->slen = slen;
  return lib;
}

int lkvf_library_install_failed(lkvf_runtime *rt, const char *name, size_t nlen,
                                const char *source, size_t slen,
                                const char *error, lkvf_error *e) {
  lkvf_library *lib;
  if (lkvf_check_name("library", name, nlen, e) != LKVF_OK) return e->code;
  if (reserve(rt, e) != LKVF_OK) return e->code;
  lib = lib_new(name, nlen, source ? source : "", source ? slen : 0);
  if (lib == NULL || (lib->error = strdup(error)) == NULL) {
    lib_free(lib);
    return seterr(e, LKVF_NOMEM, "library: out of memory");
  }
  lkvf_limits_init(&lib->lim);
  lkvf_library_install(rt, lib);
  return LKVF_OK;
}

int lkvf_library_prepare(lkvf_runtime *rt, const char *name, size_t nlen,
                         const char *source, size_t slen,
                         const lkvf_limits *lim, lkvf_library **out,
                         lkvf_error *e) {
  lkvf_limits dflt;
  lkvf_library *lib, *other;
  size_t i;
  *out = NULL;
  if (lkvf_check_name("library", name, nlen, e) != LKVF_OK) return e->code;
  if (source == NULL) return seterr(e, LKVF_BADARG, "library source missing");
  if (lim == NULL) {
    lkvf_limits_init(&dflt);
    lim = &dflt;
  }
  if (reserve(rt, e) != LKVF_OK) return e->code;
  lib = lib_new(name, nlen, source, slen);
  if (lib == NULL) return seterr(e, LKVF_NOMEM, "library: out of memory");
  lib->lim = *lim;
  if (lib_build(rt, lib, lim, e) != LKVF_OK) {
    lib_free(lib);
    return e->code;
  }
  for (i = 0; i < lib->nfuncs; i++) {
    other = find_func(rt, lib->funcs[i], strlen(lib->funcs[i]), NULL);
    if (other != NULL && strcmp(other->name, lib->name) != 0) {
      seterr(e, LKVF_BADARG,
             "function '%s' is already registered by library '%s'",
             lib->funcs[i], other->name);
      lib_free(lib);
      return LKVF_BADARG;
    }
  }
  *out = lib;
  return LKVF_OK;
}

void lkvf_library_install(lkvf_runtime *rt, lkvf_library *lib) {
  long at = find_lib(rt, lib->name, lib->nlen);
  size_t pos;
  if (at >= 0) {
    lib_free(rt->libs[at]);
    rt->libs[at] = lib;
    return;
  }
  pos = (size_t)(-at - 1); /* rt->n < rt->cap: prepare made room */
  memmove(rt->libs + pos + 1, rt->libs + pos, (rt->n - pos) * sizeof *rt->libs);
  rt->libs[pos] = lib;
  rt->n++;
}

void lkvf_library_discard(lkvf_library *lib) { lib_free(lib); }

int lkvf_library_remove(lkvf_runtime *rt, const char *name, size_t nlen,
                        lkvf_error *e) {
  long at = find_lib(rt, name, nlen);
  if (at < 0)
    return seterr(e, LKVF_UNKNOWN, "no library '%.*s'", (int)nlen, name);
  lib_free(rt->libs[at]);
  memmove(rt->libs + at, rt->libs + at + 1,
          (rt->n - (size_t)at - 1) * sizeof *rt->libs);
  rt->n--;
  return LKVF_OK;
}

size_t lkvf_library_count(const lkvf_runtime *rt) { return rt->n; }

void lkvf_library_at(const lkvf_runtime *rt, size_t i, lkvf_library_info *out) {
  const lkvf_library *lib = rt->libs[i];
  out->name = lib->name;
  out->source = lib->source;
  out->source_len = lib->slen;
  out->memory = lib->used;
  out->nfuncs = lib->nfuncs;
  out->funcs = (const char *const *)lib->funcs;
  out->read_only = lib->read_only;
  out->error = lib->error;
  out->limits = lib->lim;
}

int lkvf_function_read_only(const lkvf_runtime *rt, const char *name,
                            size_t nlen) {
  int ro = 0;
  return find_func(rt, name, nlen, &ro) != NULL ? ro : -1;
}

/* }====================================================================== */

/* {======================================================================
** Calls
** ======================================================================= */

/* Under pcall, arg 1 the Call: decode the args, run, encode the result. */
static int call_body(lua_State *L) {
  Call *c = (Call *)lua_touserdata(L, 1);
  const char *json;
  size_t len;
  lua_settop(L, 0);
  lua_getfield(L, LUA_REGISTRYINDEX, REG_FUNCS);
  lua_pushlstring(L, c->fname, c->fnlen);
  lua_rawget(L, -2); /* 1 funcs, 2 fn */
  lua_getfield(L, LUA_REGISTRYINDEX, REG_TX);
  *(Call **)lua_touserdata(L, -1) = c; /* 3 tx */
  if (c->args != NULL) {
    c->stage = STAGE_ARGS;
    lua_getfield(L, LUA_REGISTRYINDEX, REG_DECODE);
    lua_pushlstring(L, c->args, c->args_len);
    lua_call(L, 1, 1); /* 4 args */
    lkvlua_json_ints(L, 4);
  } else
    lua_pushnil(L);
  c->stage = STAGE_RUN;
  lua_call(L, 2, 1); /* 2 result */
  c->stage = STAGE_RESULT;
  lkvlua_json_check_ints(L, -1);
  lua_getfield(L, LUA_REGISTRYINDEX, REG_ENCODE);
  lua_insert(L, -2);
  lua_call(L, 1, 1); /* the JSON */
  json = lua_tolstring(L, -1, &len);
  c->json = lkvf_dupbytes(json, len + 1);
  if (c->json == NULL) return luaL_error(L, "out of memory");
  c->json_len = len;
  return 0;
}

/* Replace lib's state by a fresh one built from its source: after a
 * runaway call, what it left behind is gone. On failure lib keeps its
 * state (collected). */
static void lib_restart(lkvf_runtime *rt, lkvf_library *lib) {
  lkvf_library *fresh = lib_new(lib->name, lib->nlen, lib->source, lib->slen),
               tmp;
  lkvf_error e;
  if (fresh != NULL) fresh->lim = lib->lim; /* as it loaded the first time */
  if (fresh == NULL || lib_build(rt, fresh, &fresh->lim, &e) != LKVF_OK) {
    lib_free(fresh);
    lua_gc(lib->L, LUA_GCCOLLECT);
    return;
  }
  tmp = *lib;
  *lib = *fresh;
  *fresh = tmp;
  lua_setallocf(lib->L, lalloc, lib);
  lua_setallocf(fresh->L, lalloc, fresh);
  lib_free(fresh);
}

int lkvf_call(lkvf_runtime *rt, const char *name, size_t nlen, const char *args,
              size_t args_len, const lkvf_backend *be, const lkvf_limits *lim,
              lkvf_result *out, lkvf_error *e) {
  lkvf_limits dflt;
  lkvf_library *lib;
  Call c;
  char where[LKVF_NAME_MAX + 64];
  int st, ro = 0, rc = LKVF_OK;
  memset(out, 0, sizeof *out);
  if (lkvf_check_name("function", name, nlen, e) != LKVF_OK) return e->code;
  lib = find_func(rt, name, nlen, &ro);
  if (lib == NULL) {
    /* it may be one of a library that did not load: say which did not */
    size_t i;
    seterr(e, LKVF_UNKNOWN, "unknown function '%.*s'", (int)nlen, name);
    for (i = 0; i < rt->n; i++)
      if (rt->libs[i]->error != NULL) {
        size_t at = strlen(e->msg);
        snprintf(e->msg + at, sizeof e->msg - at, " (not loaded: %s)",
                 rt->libs[i]->error);
        break;
      }
    return LKVF_UNKNOWN;
  }
  if (lim == NULL) {
    lkvf_limits_init(&dflt);
    lim = &dflt;
  }
  memset(&c, 0, sizeof c);
  c.lib = lib;
  c.be = be;
  c.lim = lim;
  c.fname = lib->funcs[0]; /* replaced below by the registered copy */
  {
    size_t i;
    for (i = 0; i < lib->nfuncs; i++)
      if (strlen(lib->funcs[i]) == nlen &&
          memcmp(lib->funcs[i], name, nlen) == 0)
        c.fname = lib->funcs[i];
  }
  c.fnlen = nlen;
  c.args = args;
  c.args_len = args_len;
  c.read_only = ro;
  lib->call = &c;
  arm(lib, lim);
  lua_pushcfunction(lib->L, call_body);
  lua_pushlightuserdata(lib->L, &c);
  st = lua_pcall(lib->L, 1, 0, 0);
  disarm(lib);
  /* the tx and every cursor die with the call */
  lua_getfield(lib->L, LUA_REGISTRYINDEX, REG_TX);
  *(Call **)lua_touserdata(lib->L, -1) = NULL;
  lua_pop(lib->L, 1);
  lkvf_tx_close_cursors(&c);
  lib->call = NULL;
  snprintf(where, sizeof where, "function '%s'", c.fname);
  if (lib->hit != HIT_NONE) {
    if (st == LUA_OK) lua_pushnil(lib->L); /* caught by the script */
    rc = pcall_error(lib, st, LKVF_SCRIPT, where, e);
    lua_pop(lib->L, 1);
  } else if (c.brc != LKV_OK) {
    c.berr.msg[LKV_ERR_MSG_LEN - 1] = '\0';
    rc = seterr(e, LKVF_BACKEND, "function '%s': read failed: %s", c.fname,
                c.berr.msg[0] ? c.berr.msg : lkv_strerror(c.brc));
    e->backend_code = c.brc;
    if (st != LUA_OK) lua_pop(lib->L, 1);
  } else if (st != LUA_OK) {
    /* the args and the result are the caller's and the encoder's
     * failures: the function's name says which call, the stage what */
    if (c.stage == STAGE_ARGS)
      snprintf(where, sizeof where, "function '%s': args are not JSON",
               c.fname);
    else if (c.stage == STAGE_RESULT)
      snprintf(where, sizeof where,
               "function '%s': the result cannot be encoded as JSON", c.fname);
    rc = pcall_error(lib, st, c.stage == STAGE_ARGS ? LKVF_BADARG : LKVF_SCRIPT,
                     where, e);
    lua_pop(lib->L, 1);
  }
  lkv_buf_free(&c.getbuf);
  lib->extra = 0;
  if (rc != LKVF_OK) {
    int restart = lib->hit == HIT_INSTRUCTIONS || lib->hit == HIT_MEMORY;
    lkvf_tx_free_writes(&c);
    free(c.json);
    if (restart)
      lib_restart(rt, lib);
    else
      lua_gc(lib->L, LUA_GCCOLLECT);
    return rc;
  }
  out->writes = c.w;
  out->nwrites = c.nw;
  out->json = c.json;
  out->json_len = c.json_len;
  free(c.sorted);
  return LKVF_OK;
}

void lkvf_result_free(lkvf_result *r) {
  size_t i;
  if (r == NULL) return;
  for (i = 0; i < r->nwrites; i++) free(r->writes[i].key);
  free(r->writes);
  free(r->json);
  memset(r, 0, sizeof *r);
}

/* }====================================================================== */

/* {======================================================================
** JSON numbers
** ======================================================================= */

/* cjson decodes every number as a float; a whole one that fits an
 * integer becomes one, so args.amount is 3, not 3.0, in a script and in
 * db:call's result alike (Lua's own rule: math.tointeger). The walk
 * recurses once per level: it checks its Lua stack at each level (the
 * caller's cjson may have a deeper decode limit than ours) and refuses
 * more than LKVF_JSON_MAX_DEPTH levels, cjson's own default bound. */
static void ints_in_table(lua_State *L, int idx, int depth) {
  if (depth > LKVF_JSON_MAX_DEPTH)
    luaL_error(L, "JSON nested too deeply (more than %d levels)",
               LKVF_JSON_MAX_DEPTH);
  luaL_checkstack(L, 4, "JSON nested too deeply");
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int isint = 0;
    lua_Integer n;
    if (lua_type(L, -1) == LUA_TNUMBER && !lua_isinteger(L, -1)) {
      n = lua_tointegerx(L, -1, &isint);
      if (isint) {
        lua_pushvalue(L, -2);
        lua_pushinteger(L, n);
        lua_rawset(L, idx); /* an existing key: no allocation */
      }
    } else if (lua_type(L, -1) == LUA_TTABLE)
      ints_in_table(L, lua_gettop(L), depth + 1);
    lua_pop(L, 1);
  }
}

/* cjson writes numbers with 14 significant digits: a larger integer
 * would come out rounded (2^53 + 1 as 9.007199254741e+15). Refused
 * instead, keys and values, before anything is encoded. */
static void check_int(lua_State *L, int idx) {
  lua_Integer n;
  if (!lua_isinteger(L, idx)) return;
  n = lua_tointeger(L, idx);
  if (n > LKVF_JSON_INT_MAX || n < -LKVF_JSON_INT_MAX)
    luaL_error(L,
               "integer too large for JSON: %I"
               " (JSON numbers keep 14 digits here)",
               n);
}

static void check_table(lua_State *L, int idx, int depth) {
  if (depth > LKVF_JSON_MAX_DEPTH)
    luaL_error(L, "JSON nested too deeply (more than %d levels)",
               LKVF_JSON_MAX_DEPTH);
  luaL_checkstack(L, 3, "JSON nested too deeply");
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    check_int(L, -2);
    if (lua_type(L, -1) == LUA_TTABLE)
      check_table(L, lua_gettop(L), depth + 1);
    else
      check_int(L, -1);
    lua_pop(L, 1);
  }
}

void lkvlua_json_check_ints(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  if (lua_type(L, idx) == LUA_TTABLE)
    check_table(L, idx, 1);
  else
    check_int(L, idx);
}

void lkvlua_json_ints(lua_State *L, int idx) {
  int isint = 0;
  lua_Integer n;
  idx = lua_absindex(L, idx);
  if (lua_type(L, idx) == LUA_TTABLE)
    ints_in_table(L, idx, 1);
  else if (lua_type(L, idx) == LUA_TNUMBER && !lua_isinteger(L, idx)) {
    n = lua_tointegerx(L, idx, &isint);
    if (isint) {
      lua_pushinteger(L, n);
      lua_replace(L, idx);
    }
  }
}

/* }====================================================================== */

/* {======================================================================
** core.script_limits: the schema of the limits, for Lua
** ======================================================================= */

/* core.script_limits() -> { {name=, env=, default=, min=, max=, doc=} } in
 * the order of lkvf_limits_schema: the shell and the docs show these, and
 * db:call and db:put_library take the names as options. */
static int core_script_limits(lua_State *L) {
  size_t n, i;
  const lkv_option_spec *s = lkvf_limits_schema(&n);
  lua_createtable(L, (int)n, 0);
  for (i = 0; i < n; i++) {
    lua_createtable(L, 0, 6);
    lua_pushstring(L, s[i].name);
    lua_setfield(L, -2, "name");
    lua_pushstring(L, s[i].env);
    lua_setfield(L, -2, "env");
    lua_pushinteger(L, (lua_Integer)s[i].dflt);
    lua_setfield(L, -2, "default");
    lua_pushinteger(L, (lua_Integer)s[i].min);
    lua_setfield(L, -2, "min");
    lua_pushinteger(L, (lua_Integer)s[i].max);
    lua_setfield(L, -2, "max");
    lua_pushstring(L, s[i].doc);
    lua_setfield(L, -2, "doc");
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

void lkvlua_funcs_register(lua_State *L) {
  lua_pushcfunction(L, core_script_limits);
  lua_setfield(L, -2, "script_limits");
}

/* }====================================================================== */
