/* lunakv_core.c - the Lua 5.4 binding of lunakv.h: the module "lunakv.core".
 * This file only builds the module; each object has its own file:
 *
 *   lunakv_db.c        "lunakv.db", "lunakv.snapshot", "lunakv.batch",
 *                      core.open
 *   lunakv_dbfuncs.c   the db's stored-function methods (put_library,
 *                      delete_library, libraries, call, call_json)
 *   lunakv_iter.c      "lunakv.iter" and the scans
 *   lunakv_options.c   engine and node options read through their schemas,
 *                      core.options_schema, core.defaults
 *   lunakv_bench.c     "lunakv.bench" jobs, core.bench
 *   lunakv_node.c      core.serve, core.http_request, core.http_bench
 *   lunakv_proc.c      core.clock, ncpu, isatty, interrupts, spawn, kill,
 *                      pid_alive, sleep, mkdir, getcwd
 *   lunakv_faultenv.c  "lunakv.faultenv", core.fault_env
 *   lunakv_funcs.c     stored functions' runtime (lunakv_funcs.h, with
 *                      lunakv_sandbox.c and lunakv_tx.c),
 *                      core.script_limits
 *   lunakv_util.c      the child list, the scratch box, the class builder
 *   lkvlua.h           what they share, and which way their calls go
 *
 * Errors raise (STYLE.md, "At the Lua boundary: raise"): bad arguments are
 * argument errors; engine failures raise "lunakv: <kind>: <detail>" with the
 * engine's own sentence; closed handles raise "lunakv: <type> is closed".
 * No error is ever raised while the binding holds C memory or an engine
 * handle that no userdata owns.
 */
#include "lauxlib.h"
#include "lkvlua.h"
#include "lua.h"
#include "lunakv.h"

/* The one exported symbol (-fvisibility=hidden hides everything else). */
__attribute__((visibility("default"))) int luaopen_lunakv_core(lua_State *L);

__attribute__((visibility("default"))) int luaopen_lunakv_core(lua_State *L) {
  lua_newtable(L); /* +1 module; each file adds its functions */
  lkvlua_db_register(L);
  lkvlua_dbfuncs_register(L); /* into "lunakv.db": after it */
  lkvlua_iter_register(L);
  lkvlua_options_register(L);
  lkvlua_bench_register(L);
  lkvlua_util_register(L);
  lkvlua_proc_register(L);
  lkvlua_node_register(L);
  lkvlua_faultenv_register(L);
  lkvlua_funcs_register(L);
  lua_pushliteral(L, LKV_VERSION);
  lua_setfield(L, -2, "version");
  lua_pushinteger(L, (lua_Integer)LKV_MAX_KEY_BYTES);
  lua_setfield(L, -2, "max_key_bytes");
  lua_pushinteger(L, (lua_Integer)LKV_MAX_VALUE_BYTES);
  lua_setfield(L, -2, "max_value_bytes");
  lua_pushinteger(L, LKV_MAX_LEVELS);
  lua_setfield(L, -2, "max_levels");
  return 1;
}
