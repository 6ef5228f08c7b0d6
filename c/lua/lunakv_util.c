/* lunakv_util.c - what several of the binding's files use and that calls
 * none of them back: the list of a db's open children, the "lunakv.box"
 * scratch userdata, and the class builder. */
#include <stdlib.h>
#include <string.h>

#include "lauxlib.h"
#include "lkvlua.h"
#include "lua.h"

/* {======================================================================
** Handles and their lists
** ======================================================================= */

void lkvlua_child_link(LDb *d, Child *c, void (*release)(Child *)) {
  c->release = release;
  c->prev = NULL;
  c->next = d->children;
  if (d->children != NULL) d->children->prev = c;
  d->children = c;
}

/* Unlink and free the engine handle; a no-op on a closed child. */
void lkvlua_child_close(Child *c) {
  void (*release)(Child *) = c->release;
  if (release == NULL) return;
  c->release = NULL;
  if (c->prev != NULL)
    c->prev->next = c->next;
  else
    c->owner->children = c->next;
  if (c->next != NULL) c->next->prev = c->prev;
  c->prev = c->next = NULL;
  release(c);
}

/* A wrong self is refused as checkself does, naming the class by its
 * metatable's __name (set by luaL_newmetatable), so one function serves
 * every class. */
int lkvlua_child_close_method(lua_State *L) {
  Child *c = (Child *)lua_touserdata(L, 1);
  if (c == NULL || !lua_getmetatable(L, 1) || !lua_rawequal(L, -1, SELF_MT)) {
    lua_getfield(L, SELF_MT, "__name");
    return luaL_typeerror(L, 1, lua_tostring(L, -1));
  }
  lua_pop(L, 1); /* -1 mt */
  lkvlua_child_close(c);
  return 0;
}

/* Push a new, closed child of the db at stack index dbidx. */
void *lkvlua_newchild(lua_State *L, size_t size, const char *mt, int dbidx,
                      LDb *d) {
  Child *c = (Child *)lua_newuserdatauv(L, size, 1); /* +1 child */
  memset(c, 0, size);
  c->owner = d;
  luaL_setmetatable(L, mt);
  lua_pushvalue(L, dbidx);     /* +1 db */
  lua_setiuservalue(L, -2, 1); /* -1: the child keeps its db alive */
  return c;
}

/* }====================================================================== */

/* {======================================================================
** The box and the classes
** ======================================================================= */

static int box_gc(lua_State *L) {
  Box *b = (Box *)luaL_checkudata(L, 1, BOX_MT);
  free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
  return 0;
}

/* Create metatable `name`: __gc and __close call close, __tostring calls
 * tostring (when not NULL) and, unless indexf is given, __index = the
 * methods table. Methods and metamethods get the metatable as upvalue 1
 * (SELF_MT); indexf, when given, is a C function with upvalues methods
 * table, metatable. */
void lkvlua_newclass(lua_State *L, const char *name, lua_CFunction close,
                     lua_CFunction tostring, const luaL_Reg *methods,
                     lua_CFunction indexf) {
  luaL_Reg meta[] = {{"__gc", close},
                     {"__close", close},
                     {"__tostring", tostring}, /* ends here when NULL */
                     {NULL, NULL}};
  if (tostring == NULL) meta[2].name = NULL;
  luaL_newmetatable(L, name); /* +1 mt */
  lua_pushvalue(L, -1);       /* +1 mt (upvalue) */
  luaL_setfuncs(L, meta, 1);  /* -1 */
  if (methods != NULL) {
    lua_newtable(L);              /* +1 methods */
    lua_pushvalue(L, -2);         /* +1 mt (upvalue) */
    luaL_setfuncs(L, methods, 1); /* -1 */
    if (indexf != NULL) {
      lua_pushvalue(L, -2);           /* +1 mt */
      lua_pushcclosure(L, indexf, 2); /* -2 +1 __index */
    }
    lua_setfield(L, -2, "__index"); /* -1 */
  }
  lua_pop(L, 1); /* -1 mt */
}

void lkvlua_util_register(lua_State *L) {
  lkvlua_newclass(L, BOX_MT, box_gc, NULL, NULL, NULL);
}

/* }====================================================================== */
