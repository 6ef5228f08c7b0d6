/* lunakv_options.c - the engine's options as Lua tables: what core.open
 * and core.serve's engine table read (lkvlua_readopts), and
 * core.defaults. */
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "lauxlib.h"
#include "lua.h"

#include "lkvlua.h"
#include "lunakv.h"

/* {======================================================================
** Options
** ======================================================================= */

enum { OPT_SIZE, OPT_INT, OPT_U64 };

static const struct {
  const char *name;
  int kind;
  size_t offset;
} optfields[] = {
    {"max_memtable_size", OPT_SIZE, offsetof(lkv_options, max_memtable_size)},
    {"max_l0_files", OPT_INT, offsetof(lkv_options, max_l0_files)},
    {"l0_slowdown_files", OPT_INT, offsetof(lkv_options, l0_slowdown_files)},
    {"l0_stop_files", OPT_INT, offsetof(lkv_options, l0_stop_files)},
    {"bloom_bits_per_key", OPT_INT, offsetof(lkv_options, bloom_bits_per_key)},
    {"bloom_hash_functions", OPT_INT,
     offsetof(lkv_options, bloom_hash_functions)},
    {"bloom_min_bits", OPT_SIZE, offsetof(lkv_options, bloom_min_bits)},
    {"sparse_index_n", OPT_INT, offsetof(lkv_options, sparse_index_n)},
    {"block_size", OPT_SIZE, offsetof(lkv_options, block_size)},
    {"table_size", OPT_SIZE, offsetof(lkv_options, table_size)},
    {"level1_max_bytes", OPT_U64, offsetof(lkv_options, level1_max_bytes)},
    {"level_multiplier", OPT_INT, offsetof(lkv_options, level_multiplier)},
    {"block_cache_bytes", OPT_SIZE, offsetof(lkv_options, block_cache_bytes)},
    {"max_open_files", OPT_INT, offsetof(lkv_options, max_open_files)},
    {"wal_buffer_size", OPT_INT, offsetof(lkv_options, wal_buffer_size)},
};

#define NOPTFIELDS (sizeof optfields / sizeof optfields[0])

static const char *const syncnames[] = {"none", "batch", "always", NULL};

/* Read the options table at arg into *o. The Lua facade has already
 * checked them with friendlier messages; this is the last line. The key
 * and value stay on the stack while read, so log_file_name may point into
 * the table's string until lkv_db_open copies it. */
void lkvlua_readopts(lua_State *L, int arg, lkv_options *o) {
  lua_pushnil(L); /* +1 first key */
  while (lua_next(L, arg) != 0) { /* -1 +2 key, value */
    const char *key;
    size_t i;
    if (lua_type(L, -2) != LUA_TSTRING)
      luaL_argerror(L, arg, "option names must be strings");
    key = lua_tostring(L, -2);
    if (strcmp(key, "sync") == 0) {
      if (lua_type(L, -1) != LUA_TSTRING)
        opterror(L, arg, key, "must be \"none\", \"batch\" or \"always\"");
      for (i = 0; syncnames[i] != NULL; i++)
        if (strcmp(lua_tostring(L, -1), syncnames[i]) == 0) break;
      if (syncnames[i] == NULL)
        opterror(L, arg, key, "must be \"none\", \"batch\" or \"always\"");
      o->sync = (lkv_sync_mode)i;
    } else if (strcmp(key, "mmap_reads") == 0 || strcmp(key, "read_only") == 0) {
      if (lua_type(L, -1) != LUA_TBOOLEAN)
        opterror(L, arg, key, "must be true or false");
      if (key[0] == 'm')
        o->mmap_reads = lua_toboolean(L, -1);
      else
        o->read_only = lua_toboolean(L, -1);
    } else if (strcmp(key, "env") == 0) {
      /* a fault env (core.fault_env); the caller keeps it alive */
      if (luaL_testudata(L, -1, FAULTENV_MT) == NULL)
        opterror(L, arg, key, "must be a fault env (core.fault_env())");
      o->env = lkvlua_faultenv_env(L, lua_gettop(L));
    } else if (strcmp(key, "log_file_name") == 0) {
      size_t len;
      const char *s;
      if (lua_type(L, -1) != LUA_TSTRING)
        opterror(L, arg, key, "must be a string");
      s = lua_tolstring(L, -1, &len);
      if (len == 0 || strlen(s) != len)
        opterror(L, arg, key, "must be a non-empty name without zero bytes");
      o->log_file_name = s;
    } else {
      int isint;
      lua_Integer n;
      char *field;
      for (i = 0; i < NOPTFIELDS; i++)
        if (strcmp(key, optfields[i].name) == 0) break;
      if (i == NOPTFIELDS) opterror(L, arg, key, "is unknown");
      n = lua_tointegerx(L, -1, &isint);
      if (!isint || lua_type(L, -1) != LUA_TNUMBER)
        opterror(L, arg, key, "must be an integer");
      if (n < 0) opterror(L, arg, key, "must be >= 0");
      field = (char *)o + optfields[i].offset;
      switch (optfields[i].kind) {
      case OPT_INT:
        if (n > INT_MAX) opterror(L, arg, key, "is too large");
        *(int *)(void *)field = (int)n;
        break;
      case OPT_SIZE:
        if ((uint64_t)n > SIZE_MAX) opterror(L, arg, key, "is too large");
        *(size_t *)(void *)field = (size_t)n;
        break;
      default:
        *(uint64_t *)(void *)field = (uint64_t)n;
        break;
      }
    }
    lua_pop(L, 1); /* -1 value; keep the key for lua_next */
  }
}

/* core.defaults() -> the engine's default options, as core.open reads them. */
static int core_defaults(lua_State *L) {
  lkv_options o;
  size_t i;
  lkv_options_init(&o);
  lua_createtable(L, 0, (int)NOPTFIELDS + 3);
  for (i = 0; i < NOPTFIELDS; i++) {
    const char *field = (const char *)&o + optfields[i].offset;
    lua_Integer n;
    switch (optfields[i].kind) {
    case OPT_INT:
      n = *(const int *)(const void *)field;
      break;
    case OPT_SIZE:
      n = (lua_Integer) * (const size_t *)(const void *)field;
      break;
    default:
      n = (lua_Integer) * (const uint64_t *)(const void *)field;
      break;
    }
    lua_pushinteger(L, n);
    lua_setfield(L, -2, optfields[i].name);
  }
  lua_pushstring(L, (unsigned)o.sync < 3 ? syncnames[o.sync] : "batch");
  lua_setfield(L, -2, "sync");
  lua_pushstring(L, o.log_file_name != NULL ? o.log_file_name : "wal.log");
  lua_setfield(L, -2, "log_file_name");
  lua_pushboolean(L, o.mmap_reads);
  lua_setfield(L, -2, "mmap_reads");
  return 1;
}

/* }====================================================================== */

static const luaL_Reg options_funcs[] = {
    {"defaults", core_defaults},
    {NULL, NULL},
};

void lkvlua_options_register(lua_State *L) {
  luaL_setfuncs(L, options_funcs, 0);
}
