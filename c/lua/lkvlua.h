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

#endif
