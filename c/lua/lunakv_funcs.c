/* lunakv_funcs.c - the stored-function runtime (lunakv_funcs.h): one
 * sandboxed lua_State per library (lunakv_sandbox.c), with a counting
 * allocator (the memory limit) and a count hook (the instruction budget)
 * this file arms around each run; calls run a registered function with a
 * "tx" object (lunakv_tx.c) that reads through the caller's backend and
 * collects the writes the caller will commit.
 *
 * Every step that runs Lua or may allocate in a sandbox runs under
 * lua_pcall: a raise (script error, limit, out of memory) never jumps over
 * C frames that hold malloc'd memory. Malloc'd scratch of a call (its
 * writes, the sorted index, open cursors) lives in the Call struct on the
 * C stack and is freed after the pcall returns. */
#include "lunakv_funcs.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lauxlib.h"
#include "lkvlua.h"
#include "lua.h"
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
      return lkvf_seterr(e, LKVF_BADARG, "bad limits text '%.*s'", (int)len,
                         text);
    vs = ++at;
    while (at < len && text[at] >= '0' && text[at] <= '9' &&
           v <= (ULLONG_MAX - 9) / 10)
      v = v * 10 + (unsigned long long)(text[at++] - '0');
    if (at == vs || (at < len && text[at] != ' '))
      return lkvf_seterr(e, LKVF_BADARG, "bad limits text '%.*s'", (int)len,
                         text);
    for (i = 0; i < n; i++)
      if (strlen(schema[i].name) == nl &&
          memcmp(schema[i].name, text + ws, nl) == 0)
        break;
    if (i == n)
      return lkvf_seterr(e, LKVF_BADARG, "unknown limit '%.*s'", (int)nl,
                         text + ws);
    lkv_option_set(&schema[i], l, (uint64_t)v);
    while (at < len && text[at] == ' ') at++;
  }
  err.msg[0] = '\0';
  if (lkv_schema_check(schema, n, l, &err) != LKV_OK)
    return lkvf_seterr(e, LKVF_BADARG, "%s", err.msg);
  return LKVF_OK;
}

/* }====================================================================== */

/* {======================================================================
** A library's state: built, freed, and why a run failed
** ======================================================================= */

static const char *hit_name(int hit) {
  switch (hit) {
    case HIT_INSTRUCTIONS: return "SCRIPT_MAX_INSTRUCTIONS";
    case HIT_MEMORY: return "SCRIPT_MAX_MEMORY";
    case HIT_WRITES: return "SCRIPT_MAX_WRITES";
    default: return NULL;
  }
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
      lkvf_seterr(e, LKVF_LIMIT, "%s: %s", what, msg);
    else
      lkvf_seterr(e, LKVF_LIMIT, "%s: %s limit reached", what,
                  hit_name(lib->hit));
    e->limit = hit_name(lib->hit);
    return LKVF_LIMIT;
  }
  if (status == LUA_ERRMEM)
    return lkvf_seterr(e, LKVF_NOMEM, "%s: out of memory", what);
  if (msg != NULL) return lkvf_seterr(e, code, "%s: %s", what, msg);
  return lkvf_seterr(e, code, "%s: error object is a %s value", what,
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
  lib->L = lua_newstate(lkvf_sandbox_alloc, lib);
  if (lib->L == NULL)
    return lkvf_seterr(e, LKVF_NOMEM, "library '%s': out of memory", lib->name);
  lua_pushcfunction(lib->L, lkvf_sandbox_init);
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
  lkvf_sandbox_arm(lib, lim);
  st = luaL_loadbufferx(lib->L, lib->source, lib->slen, chunk, "t");
  if (st == LUA_OK) {
    lib->loading = 1;
    st = lua_pcall(lib->L, 0, 0, 0);
    lib->loading = 0;
  }
  if (st != LUA_OK) {
    snprintf(what, sizeof what, "library '%s'", lib->name);
    pcall_error(lib, st, LKVF_SCRIPT, what, e);
    lkvf_sandbox_disarm(lib);
    return e->code;
  }
  lkvf_sandbox_disarm(lib);
  if (lib->nfuncs == 0)
    return lkvf_seterr(e, LKVF_BADARG,
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
    if (p == NULL) return lkvf_seterr(e, LKVF_NOMEM, "library: out of memory");
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
    return lkvf_seterr(e, LKVF_NOMEM, "library: out of memory");
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
  if (source == NULL)
    return lkvf_seterr(e, LKVF_BADARG, "library source missing");
  if (lim == NULL) {
    lkvf_limits_init(&dflt);
    lim = &dflt;
  }
  if (reserve(rt, e) != LKVF_OK) return e->code;
  lib = lib_new(name, nlen, source, slen);
  if (lib == NULL) return lkvf_seterr(e, LKVF_NOMEM, "library: out of memory");
  lib->lim = *lim;
  if (lib_build(rt, lib, lim, e) != LKVF_OK) {
    lib_free(lib);
    return e->code;
  }
  for (i = 0; i < lib->nfuncs; i++) {
    other = find_func(rt, lib->funcs[i], strlen(lib->funcs[i]), NULL);
    if (other != NULL && strcmp(other->name, lib->name) != 0) {
      lkvf_seterr(e, LKVF_BADARG,
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
    return lkvf_seterr(e, LKVF_UNKNOWN, "no library '%.*s'", (int)nlen, name);
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
  char digits[24]; /* an integer result's JSON: json points into it */
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
  if (lua_isinteger(L, -1)) {
    /* a counter's new value, say: written here as cjson would (the
     * check above bounds it), without its number formatting (%.14g) */
    char *p = digits + sizeof digits - 1;
    lua_Integer n = lua_tointeger(L, -1);
    uint64_t u = n < 0 ? 0 - (uint64_t)n : (uint64_t)n;
    *p = '\0'; /* copied with the digits, as a Lua string's is */
    do {
      *--p = (char)('0' + u % 10);
      u /= 10;
    } while (u != 0);
    if (n < 0) *--p = '-';
    json = p;
    len = (size_t)(digits + sizeof digits - 1 - p);
  } else {
    lua_getfield(L, LUA_REGISTRYINDEX, REG_ENCODE);
    lua_insert(L, -2);
    lua_call(L, 1, 1); /* the JSON */
    json = lua_tolstring(L, -1, &len);
  }
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
  lua_setallocf(lib->L, lkvf_sandbox_alloc, lib);
  lua_setallocf(fresh->L, lkvf_sandbox_alloc, fresh);
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
    lkvf_seterr(e, LKVF_UNKNOWN, "unknown function '%.*s'", (int)nlen, name);
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
  lkvf_sandbox_arm(lib, lim);
  lua_pushcfunction(lib->L, call_body);
  lua_pushlightuserdata(lib->L, &c);
  st = lua_pcall(lib->L, 1, 0, 0);
  lkvf_sandbox_disarm(lib);
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
    rc = lkvf_seterr(e, LKVF_BACKEND, "function '%s': read failed: %s", c.fname,
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