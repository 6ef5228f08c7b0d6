/* lunakv_options.c - the options schema at the Lua boundary:
 * core.options_schema (every setting: the engine's, the node's and the
 * few only Lua reads), core.defaults, and the two readers that turn an
 * options table into lkv_options (core.open, core.serve's engine) and
 * lkvnet_options (core.serve). lunakv.config builds its .env checks from
 * core.options_schema, so the ranges here are the C ones. */
#include <lauxlib.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>

#include "lkvlua.h"
#include "lkvnet.h"
#include "lunakv_funcs.h"

/* Settings no C struct holds: read by lunakv.config and the Lua commands
 * alone, listed here so that core.options_schema names every key a .env
 * may hold. offset is unused: nothing is stored in C. */
static const lkv_option_spec lua_schema[] = {
    {.name = "tombstone_value",
     .env = "TOMBSTONE_VALUE",
     .type = LKV_OPT_STRING,
     .dflt_str = "__TOMBSTONE__",
     .doc = "ignored: deletes are a record type, never a magic value"},
    {.name = "benchmark_n",
     .env = "BENCHMARK_N",
     .type = LKV_OPT_U64,
     .min = 1,
     .max = (uint64_t)1 << 40,
     .dflt = 100000,
     .doc = "operations per workload of lunakv bench"},
    {.name = "data_dir",
     .env = "DATA_DIR",
     .type = LKV_OPT_STRING,
     .dflt_str = "data",
     .doc = "the directory lunakv and lunakv shell open by default"},
};

static void *field_of(const lkv_option_spec *s, void *base) {
  return (char *)base + s->offset;
}

/* The largest value Lua can give a number option. */
static lua_Integer lua_max(const lkv_option_spec *s) {
  return s->max > (uint64_t)LUA_MAXINTEGER ? LUA_MAXINTEGER
                                           : (lua_Integer)s->max;
}

/* "must be \"none\", \"batch\" or \"always\"" (pushed, and returned). */
static const char *choices_error(lua_State *L, const lkv_option_spec *s) {
  luaL_Buffer b;
  size_t i;
  luaL_buffinit(L, &b);
  luaL_addstring(&b, "must be ");
  for (i = 0; s->choices[i] != NULL; i++) {
    if (i > 0) luaL_addstring(&b, s->choices[i + 1] == NULL ? " or " : ", ");
    luaL_addchar(&b, '"');
    luaL_addstring(&b, s->choices[i]);
    luaL_addchar(&b, '"');
  }
  luaL_pushresult(&b); /* +1 */
  return lua_tostring(L, -1);
}

/* Store the value on top of the stack into option s of the struct at base;
 * raise an argument error for arg naming it when the value has the wrong
 * type or cannot fit the field. Ranges are the engine's check (lkv_db_open),
 * or lunakv.config's before it. A string stays borrowed from the table. */
static void set_from_lua(lua_State *L, int arg, const lkv_option_spec *s,
                         void *base) {
  switch (s->type) {
    case LKV_OPT_ENUM: {
      size_t i;
      const char *v = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
      for (i = 0; s->choices[i] != NULL; i++)
        if (strcmp(v, s->choices[i]) == 0) break;
      if (lua_type(L, -1) != LUA_TSTRING || s->choices[i] == NULL)
        opterror(L, arg, s->name, choices_error(L, s));
      lkv_option_set(s, base, i);
      break;
    }
    case LKV_OPT_BOOL:
      if (lua_type(L, -1) != LUA_TBOOLEAN)
        opterror(L, arg, s->name, "must be true or false");
      lkv_option_set(s, base, (uint64_t)lua_toboolean(L, -1));
      break;
    case LKV_OPT_STRING:
    case LKV_OPT_FILENAME: {
      size_t len;
      const char *v;
      if (lua_type(L, -1) != LUA_TSTRING)
        opterror(L, arg, s->name, "must be a string");
      v = lua_tolstring(L, -1, &len);
      if (strlen(v) != len || (s->type == LKV_OPT_FILENAME && len == 0))
        opterror(L, arg, s->name,
                 s->type == LKV_OPT_FILENAME
                     ? "must be a non-empty name without zero bytes"
                     : "must not hold zero bytes");
      *(const char **)field_of(s, base) = v;
      break;
    }
    default: {
      int isint;
      lua_Integer n = lua_tointegerx(L, -1, &isint);
      if (!isint || lua_type(L, -1) != LUA_TNUMBER)
        opterror(L, arg, s->name, "must be an integer");
      if (n < 0) opterror(L, arg, s->name, "must be >= 0");
      if ((s->type == LKV_OPT_INT && n > INT_MAX) ||
          (s->type == LKV_OPT_SIZE && (uint64_t)n > SIZE_MAX))
        opterror(L, arg, s->name, "is too large");
      lkv_option_set(s, base, (uint64_t)n);
      break;
    }
  }
}

void lkvlua_engine_options(lua_State *L, int arg, lkv_options *o) {
  size_t n, i;
  const lkv_option_spec *schema = lkv_options_schema(&n);
  lua_pushnil(L);                 /* +1 first key */
  while (lua_next(L, arg) != 0) { /* -1 +2 key, value */
    const char *key;
    if (lua_type(L, -2) != LUA_TSTRING)
      luaL_argerror(L, arg, "option names must be strings");
    key = lua_tostring(L, -2);
    for (i = 0; i < n; i++)
      if (strcmp(key, schema[i].name) == 0) break;
    if (i < n) {
      set_from_lua(L, arg, &schema[i], o);
    } else if (strcmp(key, "env") == 0) {
      /* a fault env (core.fault_env); the caller keeps it alive */
      if (luaL_testudata(L, -1, FAULTENV_MT) == NULL)
        opterror(L, arg, key, "must be a fault env (core.fault_env())");
      o->env = lkvlua_faultenv_env(L, lua_gettop(L));
    } else {
      opterror(L, arg, key, "is unknown");
    }
    lua_pop(L, 1); /* -1 value; keep the key for lua_next */
  }
}

void lkvlua_node_options(lua_State *L, int t, lkvnet_options *o) {
  size_t n, i;
  const lkv_option_spec *schema = lkvnet_options_schema(&n);
  for (i = 0; i < n; i++) {
    const lkv_option_spec *s = &schema[i];
    if (lua_getfield(L, t, s->name) == LUA_TNIL) { /* +1 */
      /* absent: the default stays */
    } else if (s->type == LKV_OPT_STRING) {
      set_from_lua(L, t, s, o);
    } else {
      int isint;
      lua_Integer v = lua_tointegerx(L, -1, &isint);
      if (!isint) opterror(L, t, s->name, "must be an integer");
      if (v < (lua_Integer)s->min || v > lua_max(s))
        opterror(L, t, s->name,
                 lua_pushfstring(L, "must be from %I to %I",
                                 (lua_Integer)s->min, lua_max(s)));
      lkv_option_set(s, o, (uint64_t)v);
    }
    lua_pop(L, 1); /* -1 */
  }
}

/* {======================================================================
** core.options_schema and core.defaults
** ======================================================================= */

static void push_default(lua_State *L, const lkv_option_spec *s) {
  switch (s->type) {
    case LKV_OPT_BOOL: lua_pushboolean(L, s->dflt != 0); break;
    case LKV_OPT_ENUM: lua_pushstring(L, s->choices[s->dflt]); break;
    case LKV_OPT_STRING:
    case LKV_OPT_FILENAME: lua_pushstring(L, s->dflt_str); break;
    default: lua_pushinteger(L, (lua_Integer)s->dflt); break;
  }
}

static const char *type_name(lkv_option_type t) {
  switch (t) {
    case LKV_OPT_BOOL: return "boolean";
    case LKV_OPT_ENUM: return "enum";
    case LKV_OPT_STRING: return "string";
    case LKV_OPT_FILENAME: return "filename";
    default: return "integer";
  }
}

/* Append one {name=, env=, type=, default=, min=, max=, values=,
 * at_least=, doc=, room=} per row of schema to the array on top. */
static void push_rows(lua_State *L, const lkv_option_spec *schema, size_t n,
                      const char *room) {
  size_t i;
  for (i = 0; i < n; i++) {
    const lkv_option_spec *s = &schema[i];
    lua_createtable(L, 0, 10); /* +1 row */
    lua_pushstring(L, s->name);
    lua_setfield(L, -2, "name");
    if (s->env != NULL) {
      lua_pushstring(L, s->env);
      lua_setfield(L, -2, "env");
    }
    lua_pushstring(L, type_name(s->type));
    lua_setfield(L, -2, "type");
    push_default(L, s);
    lua_setfield(L, -2, "default");
    if (s->type != LKV_OPT_BOOL && s->type != LKV_OPT_ENUM &&
        s->type != LKV_OPT_STRING) { /* numbers; a file name's length */
      lua_pushinteger(L, (lua_Integer)s->min);
      lua_setfield(L, -2, "min");
      lua_pushinteger(L, lua_max(s));
      lua_setfield(L, -2, "max");
    }
    if (s->type == LKV_OPT_ENUM) {
      lua_Integer k;
      lua_newtable(L); /* +1 values */
      for (k = 0; s->choices[k] != NULL; k++) {
        lua_pushstring(L, s->choices[k]);
        lua_rawseti(L, -2, k + 1);
      }
      lua_setfield(L, -2, "values"); /* -1 */
    }
    if (s->at_least != NULL) {
      lua_pushstring(L, s->at_least);
      lua_setfield(L, -2, "at_least");
    }
    lua_pushstring(L, s->doc);
    lua_setfield(L, -2, "doc");
    lua_pushstring(L, room);
    lua_setfield(L, -2, "room");
    lua_rawseti(L, -2, (lua_Integer)luaL_len(L, -2) + 1); /* -1 row */
  }
}

/* core.defaults() -> the engine's default options, as core.open reads them. */
static int core_defaults(lua_State *L) {
  size_t n, i;
  const lkv_option_spec *schema = lkv_options_schema(&n);
  lua_createtable(L, 0, (int)n);
  for (i = 0; i < n; i++) {
    push_default(L, &schema[i]);
    lua_setfield(L, -2, schema[i].name);
  }
  return 1;
}

void lkvlua_options_register(lua_State *L) {
  size_t n;
  const lkv_option_spec *schema;
  lua_newtable(L); /* +1 core.options_schema */
  schema = lkv_options_schema(&n);
  push_rows(L, schema, n, "engine");
  schema = lkvnet_options_schema(&n);
  push_rows(L, schema, n, "node");
  schema = lkvf_limits_schema(&n); /* SCRIPT_MAX_*: what `lunakv node` runs
                                      stored functions under */
  push_rows(L, schema, n, "node");
  push_rows(L, lua_schema, sizeof lua_schema / sizeof lua_schema[0], "lua");
  lua_setfield(L, -2, "options_schema"); /* -1 */
  lua_pushcfunction(L, core_defaults);
  lua_setfield(L, -2, "defaults");
}

/* }====================================================================== */
