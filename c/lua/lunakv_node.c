/* lunakv_node.c - the HTTP node from Lua: core.serve (lkvnet.h), and the
 * HTTP client core.http_request and load generator core.http_bench
 * (httpc.h). Each runs its libevent loop in C on the Lua thread; no Lua
 * runs until it returns. */
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "httpc.h"
#include "lauxlib.h"
#include "lkvlua.h"
#include "lkvnet.h"
#include "lua.h"
#include "lunakv.h"

/* {======================================================================
** The HTTP node (lkvnet.h)
** ======================================================================= */

#define SERVE_MAX_NODES 64

/* A string field of the table at t, or NULL when absent. Borrowed: the
 * string stays in the table, which stays on the stack for the call. */
static const char *optstring(lua_State *L, int t, const char *name) {
  const char *s = NULL;
  int ty = lua_getfield(L, t, name); /* +1 */
  if (ty == LUA_TSTRING) {
    size_t n;
    s = lua_tolstring(L, -1, &n);
    if (strlen(s) != n) opterror(L, t, name, "must not hold zero bytes");
  } else if (ty != LUA_TNIL) {
    opterror(L, t, name, "must be a string");
  }
  lua_pop(L, 1); /* -1: the table keeps the string alive */
  return s;
}

static lua_Integer optinteger(lua_State *L, int t, const char *name,
                              lua_Integer dflt, lua_Integer lo,
                              lua_Integer hi) {
  lua_Integer n = dflt;
  int isint, ty = lua_getfield(L, t, name); /* +1 */
  if (ty != LUA_TNIL) {
    n = lua_tointegerx(L, -1, &isint);
    if (!isint) opterror(L, t, name, "must be an integer");
    if (n < lo || n > hi)
      opterror(L, t, name, lua_pushfstring(L, "must be from %I to %I", lo, hi));
  }
  lua_pop(L, 1); /* -1 */
  return n;
}

/* core.serve(dir, opts) -> true, once SIGTERM or SIGINT has stopped the
 * node cleanly. opts: host, port, my_url, leader_url, nodes (array of
 * URLs), join_url (a member to ask to add this node), max_body_bytes,
 * write_timeout_ms, heartbeat_ms, election_timeout_ms,
 * log_compaction_threshold, token, max_uncommitted_bytes,
 * read_timeout_ms, idle_timeout_ms, max_connections (ranges:
 * lkvnet_options_schema; outside one is an argument error),
 * script_max_instructions, script_max_memory, script_max_writes (the
 * stored functions' limits, lkvf_limits_schema), engine
 * (core.open's options; its env, a core.fault_env(), serves the log and
 * the term file as well, and is kept alive while the node runs).
 * Raises "lunakv: <kind>: ..." when the node cannot start or fails. The
 * loop runs in C on this thread; no Lua runs until it returns, and every C
 * resource is released before anything is raised. */
static int core_serve(lua_State *L) {
  size_t dlen, i, n = 0;
  const char *dir = checkbytes(L, 1, &dlen);
  const char *nodes[SERVE_MAX_NODES];
  lkvnet_options o;
  lkvnet_functions fns;
  lkvnet_server *srv = NULL;
  lkv_err err;
  int rc;
  luaL_argcheck(L, dlen > 0 && strlen(dir) == dlen, 1,
                "directory must be a non-empty path without zero bytes");
  luaL_checktype(L, 2, LUA_TTABLE);
  lkvnet_options_init(&o);
  o.data_dir = dir;
  lkvlua_node_options(L, 2, &o);
  o.my_url = optstring(L, 2, "my_url");
  o.leader_url = optstring(L, 2, "leader_url");
  o.join_url = optstring(L, 2, "join_url");
  if (lua_getfield(L, 2, "nodes") != LUA_TNIL) { /* +1 nodes */
    luaL_argcheck(L, lua_istable(L, -1), 2, "option 'nodes' must be a table");
    n = (size_t)luaL_len(L, -1);
    luaL_argcheck(L, n <= SERVE_MAX_NODES, 2, "option 'nodes': too many");
    for (i = 0; i < n; i++) {
      lua_geti(L, -1, (lua_Integer)i + 1); /* +1 url */
      if (lua_type(L, -1) != LUA_TSTRING)
        opterror(L, 2, "nodes", "must hold URL strings");
      nodes[i] = lua_tostring(L, -1);
      lua_pop(L, 1); /* -1: the nodes table keeps it */
    }
    o.nodes = nodes;
    o.nnodes = n;
  }
  lua_pop(L, 1); /* -1 nodes (kept alive by opts) */
  if (lua_getfield(L, 2, "engine") != LUA_TNIL) { /* +1 engine opts */
    luaL_argcheck(L, lua_istable(L, -1), 2, "option 'engine' must be a table");
    lkvlua_engine_options(L, lua_gettop(L), &o.engine);
    /* a fault env (core.fault_env) is the file system of the whole data
     * dir: the db, the replication log, the term file. Its userdata stays
     * on the stack until the node has closed, so no change to the table
     * can let it be collected under the running node. */
    lua_getfield(L, -1, "env"); /* +1 env (or nil) */
  }
  /* engine opts stay on the stack: log_file_name may point into them */
  /* the stored functions' runtime: its userdata stays on the stack too,
   * while the node runs (its __gc frees the runtime) */
  lkvlua_nodefuncs_push(L, 2, &fns);
  o.functions = &fns;
  err.msg[0] = '\0';
  rc = lkvnet_server_open(&o, &srv, &err);
  if (rc != LKV_OK) return raise_err(L, rc, &err);
  rc = lkvnet_server_run(srv, &err);
  if (rc != LKV_OK) {
    lkv_err e2;
    lkvnet_server_close(srv, &e2);
    return raise_err(L, rc, &err);
  }
  rc = lkvnet_server_close(srv, &err);
  if (rc != LKV_OK) return raise_err(L, rc, &err);
  lua_pushboolean(L, 1);
  return 1;
}

/* }====================================================================== */

/* {======================================================================
** The HTTP client (httpc.h)
** ======================================================================= */

/* libevent writes with writev(), which raises SIGPIPE when a node resets
 * the connection; a client must see that as a failed request, not die.
 * The disposition is restored after each call, as lkvnet_server_run does. */
typedef struct PipeGuard {
  struct sigaction old;
  int set;
} PipeGuard;

static void pipe_ignore(PipeGuard *g) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = SIG_IGN;
  sigemptyset(&sa.sa_mask);
  g->set = sigaction(SIGPIPE, &sa, &g->old) == 0;
}

static void pipe_restore(PipeGuard *g) {
  if (g->set) sigaction(SIGPIPE, &g->old, NULL);
}

/* core.http_request(method, url [, body [, headers [, timeout_ms]]])
 *   -> status, body
 * One blocking request (httpc.h). headers: { name = value, ... }. Any HTTP
 * answer returns (4xx and 5xx included: the caller reads the status); a
 * transport failure raises "lunakv: io error: cannot connect to URL:
 * connection refused" and the like. */
static int core_http_request(lua_State *L) {
  const char *method = luaL_checkstring(L, 1);
  const char *url = luaL_checkstring(L, 2);
  size_t blen = 0, nh = 0;
  const char *body = NULL;
  lkvnet_header hs[LKVNET_HTTPC_MAX_HEADERS];
  lua_Integer timeout = luaL_optinteger(L, 5, 10000);
  lkvnet_response r;
  lkv_err err;
  PipeGuard g;
  int rc;
  if (!lua_isnoneornil(L, 3)) body = checkbytes(L, 3, &blen);
  if (!lua_isnoneornil(L, 4)) {
    luaL_checktype(L, 4, LUA_TTABLE);
    lua_pushnil(L);               /* +1 first key */
    while (lua_next(L, 4) != 0) { /* +1 value */
      if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
        return luaL_argerror(L, 4, "headers must map names to strings");
      luaL_argcheck(L, nh < LKVNET_HTTPC_MAX_HEADERS, 4, "too many headers");
      /* borrowed: the headers table keeps both strings for the call */
      hs[nh].name = lua_tostring(L, -2);
      hs[nh].value = lua_tostring(L, -1);
      nh++;
      lua_pop(L, 1); /* -1 value */
    }
  }
  luaL_argcheck(L, timeout > 0 && timeout <= 24 * 3600 * 1000, 5,
                "timeout must be 1 .. 86400000 ms");
  err.msg[0] = '\0';
  pipe_ignore(&g);
  rc = lkvnet_http_request(method, url, hs, nh, body, blen, (int)timeout, &r,
                           &err);
  pipe_restore(&g);
  if (rc != LKV_OK) return raise_err(L, rc, &err);
  lua_pushinteger(L, r.status); /* +1 */
  if (!lua_checkstack(L, 1)) {
    lkvnet_response_free(&r);
    return luaL_error(L, "lunakv: out of memory: Lua stack");
  }
  /* lua_pushlstring may raise on out-of-memory; the body would leak, so
   * copy it through a box (freed by __gc) */
  {
    Box *bx = (Box *)lua_newuserdatauv(L, sizeof *bx, 0); /* +1 box */
    memset(bx, 0, sizeof *bx);
    luaL_setmetatable(L, BOX_MT);
    bx->p = r.body;
    bx->len = r.body_len;
    lua_pushlstring(L, r.body, r.body_len); /* +1 body */
    free(bx->p);                            /* copied: free it now */
    bx->p = NULL;
    lua_remove(L, -2); /* -1 box */
  }
  return 2;
}

static const char *const bench_keys[] = {
    "url",        "urls",       "connections", "ops",        "seconds",
    "write_pct",  "key_size",   "value_size",  "key_space",  "key_offset",
    "sequential", "consistent", "seed",        "timeout_ms", "target",
    "fn",         NULL};

static int optbool(lua_State *L, int t, const char *name, int dflt) {
  int v = dflt, ty = lua_getfield(L, t, name); /* +1 */
  if (ty == LUA_TBOOLEAN)
    v = lua_toboolean(L, -1);
  else if (ty != LUA_TNIL)
    opterror(L, t, name, "must be a boolean");
  lua_pop(L, 1); /* -1 */
  return v;
}

#define BENCH_MAX_URLS 64

/* core.http_bench(opts) -> result. The load generator of httpc.h, run on
 * this thread until done (no Lua runs meanwhile). opts: url (string) or
 * urls (array), connections (32), ops and/or seconds (one is needed),
 * write_pct (0 .. 100, 100), key_size (16), value_size (100), key_space
 * (100000), key_offset (0), sequential (true: writes take keys in
 * order), consistent (false), seed (1), timeout_ms (10000), target
 * ("lunakv", "etcd" or "call"), fn (with target "call", and only then:
 * the stored function each write calls, POST /call/{fn} {"key": K};
 * "fn" as in db:call(fn), since `function` is a Lua keyword and could
 * not be written as a bare key). result: ops, writes, reads, errors,
 * transport_errors, seconds, ops_per_sec (successful requests per
 * second), p50_us, p90_us, p99_us, max_us (over successful requests) and
 * first_error when any failed. Raises when every request fails to
 * connect. */
static int core_http_bench(lua_State *L) {
  static const char *const targets[] = {"lunakv", "etcd", "call", NULL};
  static const lkvnet_bench_target target_of[] = {
      LKVNET_TARGET_LUNAKV, LKVNET_TARGET_ETCD, LKVNET_TARGET_CALL};
  lkvnet_bench_spec s;
  lkvnet_bench_result r;
  const char *urls[BENCH_MAX_URLS];
  size_t nurls = 0, i;
  lkv_err err;
  PipeGuard g;
  int rc;
  luaL_checktype(L, 1, LUA_TTABLE);
  lkvnet_bench_spec_init(&s);
  /* every key must be known: a typo must not silently use a default */
  lua_pushnil(L);               /* +1 */
  while (lua_next(L, 1) != 0) { /* +1 value */
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
    int known = 0;
    for (i = 0; bench_keys[i] != NULL; i++)
      if (strcmp(k, bench_keys[i]) == 0) known = 1;
    if (!known)
      return luaL_argerror(L, 1,
                           lua_pushfstring(L, "unknown option '%s'",
                                           luaL_tolstring(L, -2, NULL)));
    lua_pop(L, 1); /* -1 value */
  }
  if (optstring(L, 1, "url") != NULL) urls[nurls++] = optstring(L, 1, "url");
  if (lua_getfield(L, 1, "urls") != LUA_TNIL) { /* +1 urls */
    size_t n;
    luaL_argcheck(L, lua_istable(L, -1), 1, "option 'urls' must be a table");
    n = (size_t)luaL_len(L, -1);
    for (i = 0; i < n; i++) {
      luaL_argcheck(L, nurls < BENCH_MAX_URLS, 1, "option 'urls': too many");
      lua_geti(L, -1, (lua_Integer)i + 1); /* +1 */
      if (lua_type(L, -1) != LUA_TSTRING)
        opterror(L, 1, "urls", "must hold URL strings");
      urls[nurls++] = lua_tostring(L, -1);
      lua_pop(L, 1); /* -1: the urls table keeps it */
    }
  }
  lua_pop(L, 1); /* -1 urls (kept alive by opts) */
  luaL_argcheck(L, nurls > 0, 1, "option 'url' or 'urls' is required");
  s.urls = urls;
  s.nurls = nurls;
  s.connections =
      (int)optinteger(L, 1, "connections", 32, 1, LKVNET_BENCH_MAX_CONNECTIONS);
  s.ops = (uint64_t)optinteger(L, 1, "ops", 0, 0, LUA_MAXINTEGER);
  if (lua_getfield(L, 1, "seconds") != LUA_TNIL) { /* +1 */
    int isnum;
    lua_Number secs = lua_tonumberx(L, -1, &isnum);
    if (!isnum || !(secs > 0 && secs <= 86400))
      opterror(L, 1, "seconds", "must be a number from 0 to 86400");
    s.duration_ms = (int)(secs * 1000 + 0.5);
    if (s.duration_ms < 1) s.duration_ms = 1;
  }
  lua_pop(L, 1); /* -1 */
  if (s.ops == 0 && s.duration_ms == 0)
    return luaL_argerror(L, 1, "give 'ops' or 'seconds'");
  s.write_pct = (int)optinteger(L, 1, "write_pct", 100, 0, 100);
  s.key_size = (size_t)optinteger(L, 1, "key_size", 16, 1, 40);
  s.value_size = (size_t)optinteger(L, 1, "value_size", 100, 0,
                                    (lua_Integer)LKV_MAX_VALUE_BYTES / 2);
  s.key_space =
      (uint64_t)optinteger(L, 1, "key_space", 100000, 1, LUA_MAXINTEGER);
  s.key_offset = (uint64_t)optinteger(L, 1, "key_offset", 0, 0, LUA_MAXINTEGER);
  s.sequential = optbool(L, 1, "sequential", 1);
  s.consistent = optbool(L, 1, "consistent", 0);
  s.seed = (uint64_t)optinteger(L, 1, "seed", 1, 0, LUA_MAXINTEGER);
  s.timeout_ms =
      (int)optinteger(L, 1, "timeout_ms", 10000, 1, 24 * 3600 * 1000);
  lua_getfield(L, 1, "target"); /* +1 */
  if (!lua_isnil(L, -1)) {
    const char *t = lua_tostring(L, -1);
    for (i = 0; t != NULL && targets[i] != NULL; i++)
      if (strcmp(t, targets[i]) == 0) break;
    if (t == NULL || targets[i] == NULL)
      opterror(L, 1, "target", "must be \"lunakv\", \"etcd\" or \"call\"");
    s.target = target_of[i];
  }
  lua_pop(L, 1); /* -1 */
  /* the name stays in opts, on the stack until the run is over; its
   * characters are httpc's to check (bench_check), its presence ours */
  s.function = optstring(L, 1, "fn");
  if (s.target == LKVNET_TARGET_CALL && s.function == NULL)
    opterror(L, 1, "fn", "is required with target \"call\"");
  if (s.target != LKVNET_TARGET_CALL && s.function != NULL)
    opterror(L, 1, "fn", "needs target \"call\"");
  err.msg[0] = '\0';
  pipe_ignore(&g);
  rc = lkvnet_bench_run(&s, &r, &err);
  pipe_restore(&g);
  if (rc != LKV_OK) return raise_err(L, rc, &err);
  lua_createtable(L, 0, 14); /* +1 result */
  setint(L, "ops", r.ops);
  setint(L, "writes", r.writes);
  setint(L, "reads", r.reads);
  setint(L, "errors", r.errors);
  setint(L, "transport_errors", r.transport_errors);
  setnum(L, "seconds", r.seconds);
  setnum(L, "ops_per_sec", r.ops_per_sec);
  setnum(L, "p50_us", r.p50_us);
  setnum(L, "p90_us", r.p90_us);
  setnum(L, "p99_us", r.p99_us);
  setnum(L, "max_us", r.max_us);
  if (r.first_error[0] != '\0') {
    lua_pushstring(L, r.first_error);
    lua_setfield(L, -2, "first_error");
  }
  return 1;
}

/* strerror(e) with a lower-case first letter, the way lunakv's sentences
 * read ("no such file or directory"). */
/* }====================================================================== */

static const luaL_Reg node_funcs[] = {
    {"serve", core_serve},
    {"http_request", core_http_request},
    {"http_bench", core_http_bench},
    {NULL, NULL},
};

void lkvlua_node_register(lua_State *L) { luaL_setfuncs(L, node_funcs, 0); }
