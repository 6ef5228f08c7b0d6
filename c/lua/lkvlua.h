/* lkvlua.h - what the binding's files share (c/lua/): each file registers
 * its classes and functions into the module table luaopen_lunakv_core
 * builds. */
#ifndef LKVLUA_H
#define LKVLUA_H

#include <lua.h>

#include "lunakv.h"

#define FAULTENV_MT "lunakv.faultenv"

/* Register the "lunakv.faultenv" class and core.fault_env into the table
 * on top of the stack (lunakv_faultenv.c). */
void lkvlua_faultenv_register(lua_State *L);
/* The env of the fault env userdata at idx (raises when it is not one). */
const lkv_env *lkvlua_faultenv_env(lua_State *L, int idx);

/* lunakv_options.c: set core.options_schema and core.defaults in the table
 * on top of the stack. */
void lkvlua_options_register(lua_State *L);
/* Read the options table at arg (names of lkv_options_schema, and env, a
 * fault env) into *o, raising an argument error for an unknown name or a
 * value of the wrong type; ranges are left to the engine's check. Strings
 * stay borrowed from the table, which must outlive their use. */
void lkvlua_engine_options(lua_State *L, int arg, lkv_options *o);
/* Read the fields of table t that lkvnet_options_schema names into *o
 * (absent ones keep their value), raising an argument error for a value
 * of the wrong type or out of its range. Strings stay borrowed. */
struct lkvnet_options;
void lkvlua_node_options(lua_State *L, int t, struct lkvnet_options *o);

#endif
