/* lkvlua.h - what the binding's files share (c/lua/): each file registers
 * its classes and functions into the module table luaopen_lunakv_core
 * builds (lunakv_core.c).
 *
 * Calls go one way: lunakv_core.c calls each file's register function;
 * lunakv_db.c calls lunakv_iter.c, lunakv_options.c and the stored
 * functions' runtime lunakv_funcs.c (to free it at close); the db's
 * stored-function methods, lunakv_dbfuncs.c, call lunakv_funcs.c and
 * lunakv_sandbox.c (lunakv_funcs.h: plain C, no Lua in its interface, so
 * the node can use it too) and never lunakv_db.c (todb is inline below);
 * lunakv_node.c calls lunakv_options.c, which calls lunakv_faultenv.c;
 * lunakv_bench.c calls the bench's workload runner (c/bench/workload.h);
 * every file may call lunakv_util.c and the inline helpers below, which
 * call no other file of the binding.
 *
 * The helpers are inline here, not in lunakv_util.c, because db:get runs
 * through them on every call: they stay as cheap as when the binding was
 * one file. */
#ifndef LKVLUA_H
#define LKVLUA_H

#include <lauxlib.h>
#include <lua.h>
#include <stdint.h>

#include "lunakv.h"

#define DB_MT "lunakv.db"
#define SNAP_MT "lunakv.snapshot"
#define ITER_MT "lunakv.iter"
#define BATCH_MT "lunakv.batch"
#define BENCH_MT "lunakv.bench"
#define BOX_MT "lunakv.box" /* private: malloc'd scratch freed by __gc */
#define FAULTENV_MT "lunakv.faultenv"

/* {======================================================================
** Handles and their lists (lunakv_util.c)
**
** A child (snapshot, iterator, batch, bench job) holds its db userdata in
** user value 1, so the db block outlives it whatever the collection order.
** The db keeps its open children on an intrusive list; db:close() closes
** them first, since lkv_db_close refuses while iterators or snapshots live.
** ======================================================================= */

typedef struct LDb LDb;
typedef struct Child Child;

/* The common head of every child userdata. */
struct Child {
  Child *prev, *next;        /* on owner->children while open */
  LDb *owner;                /* the db block; alive through user value 1 */
  void (*release)(Child *c); /* frees the engine handle; NULL = closed */
};

struct lkvf_runtime;
struct LDb {
  lkv_db *db;                 /* NULL once closed */
  lkv_buf getbuf;             /* reused by every get, freed at close */
  Child *children;            /* open snapshots, iterators and batches */
  struct lkvf_runtime *funcs; /* stored functions, loaded at first use */
};

void lkvlua_child_link(LDb *d, Child *c, void (*release)(Child *));
/* Unlink and free the engine handle; a no-op on a closed child. */
void lkvlua_child_close(Child *c);
/* close(), __close and __gc of every child class: lkvlua_child_close on
 * the userdata at arg 1, which must be of the class (SELF_MT). */
int lkvlua_child_close_method(lua_State *L);
/* Push a new, closed child of the db at stack index dbidx. */
void *lkvlua_newchild(lua_State *L, size_t size, const char *mt, int dbidx,
                      LDb *d);

/* Malloc'd scratch owned by a "lunakv.box" userdata: what C gathers
 * before it may call Lua (an error would leak it) lives in one, and the
 * box's __gc frees it if building the Lua values raises. */
typedef struct Box {
  char *p;
  size_t len, cap;
  int oom;
} Box;

/* Create metatable `name`: __gc and __close call close, __tostring calls
 * tostring (when not NULL) and, unless indexf is given, __index = the
 * methods table. Methods and metamethods get the metatable as upvalue 1
 * (SELF_MT); indexf, when given, is a C function with upvalues methods
 * table, metatable. */
void lkvlua_newclass(lua_State *L, const char *name, lua_CFunction close,
                     lua_CFunction tostring, const luaL_Reg *methods,
                     lua_CFunction indexf);

/* }====================================================================== */

/* {======================================================================
** Registration: each registers its classes, and its functions into the
** module table on top of the stack
** ======================================================================= */

void lkvlua_util_register(lua_State *L);     /* lunakv_util.c: the box */
void lkvlua_db_register(lua_State *L);       /* lunakv_db.c */
void lkvlua_iter_register(lua_State *L);     /* lunakv_iter.c */
void lkvlua_options_register(lua_State *L);  /* lunakv_options.c */
void lkvlua_bench_register(lua_State *L);    /* lunakv_bench.c */
void lkvlua_proc_register(lua_State *L);     /* lunakv_proc.c */
void lkvlua_node_register(lua_State *L);     /* lunakv_node.c */
void lkvlua_faultenv_register(lua_State *L); /* lunakv_faultenv.c */
void lkvlua_funcs_register(lua_State *L);    /* lunakv_funcs.c */
void lkvlua_dbfuncs_register(lua_State *L);  /* lunakv_dbfuncs.c: after db */
/* lunakv_dbfuncs.c: install in rt every library db stores (one that does
 * not load as failed, lkvf_library_install_failed), each under its stored
 * limits; getbuf is scratch. 0, or -1 with "lunakv: ..." in msg. */
struct lkvf_runtime;
int lkvlua_funcs_fill(struct lkvf_runtime *rt, lkv_db *db, lkv_buf *getbuf,
                      char *msg, size_t msglen);
/* lunakv_dbfuncs.c: *be reads db through snap (arg is its storage, alive
 * while be is used). */
struct lkvf_backend;
void lkvlua_funcs_backend(struct lkvf_backend *be, void *arg[2], lkv_db *db,
                          lkv_snapshot *snap);
/* lunakv_nodefuncs.c: the node's stored-function hooks (lkvnet.h), made
 * from the SCRIPT_MAX_* options of the table at t, in a userdata pushed
 * on the stack (its __gc frees the runtime); it must stay there while
 * the node runs. Raises on a bad option. */
struct lkvnet_functions;
void lkvlua_nodefuncs_push(lua_State *L, int t, struct lkvnet_functions *out);

/* }====================================================================== */

/* {======================================================================
** What one file offers another
** ======================================================================= */

typedef struct LIter LIter;

/* lunakv_iter.c: push a new open iterator at `at`, owned by the db at
 * dbidx. */
LIter *lkvlua_newiter(lua_State *L, LDb *d, int dbidx, uint64_t at);
/* lunakv_iter.c: lo at arg 2, hi at arg 3; upward from lo (scan) or
 * downward from hi (rscan). Returns step, nil, nil, iter. */
int lkvlua_scan(lua_State *L, LDb *d, int dbidx, uint64_t at, int down);

/* lunakv_options.c: read the options table at arg (names of
 * lkv_options_schema, and env, a fault env) into *o, raising an argument
 * error for an unknown name or a value of the wrong type; ranges are left
 * to the engine's check. Strings stay borrowed from the table, which must
 * outlive their use. */
void lkvlua_engine_options(lua_State *L, int arg, lkv_options *o);
/* lunakv_options.c: read the fields of table t that lkvnet_options_schema
 * names into *o (absent ones keep their value), raising an argument error
 * for a value of the wrong type or out of its range. Strings stay
 * borrowed. */
struct lkvnet_options;
void lkvlua_node_options(lua_State *L, int t, struct lkvnet_options *o);

/* lunakv_funcs.c: make the whole floats of a value cjson decoded (at
 * idx, tables walked) integers, in place: JSON has one number type, Lua
 * two, and a count of 3 should read 3, not 3.0. */
void lkvlua_json_ints(lua_State *L, int idx);
/* lunakv_funcs.c: raise "integer too large for JSON" when the value at idx
 * (tables walked, keys too) holds an integer cjson would round. */
void lkvlua_json_check_ints(lua_State *L, int idx);

/* lunakv_faultenv.c: the env of the fault env userdata at idx (raises when
 * it is not one). */
const lkv_env *lkvlua_faultenv_env(lua_State *L, int idx);

/* }====================================================================== */

/* {======================================================================
** Errors and arguments
** ======================================================================= */

/* Raise the engine's sentence. err lives on the caller's C stack; luaL_error
 * copies it into a Lua string before it jumps. */
static inline int raise_err(lua_State *L, int rc, lkv_err *err) {
  err->msg[LKV_ERR_MSG_LEN - 1] = '\0';
  return luaL_error(L, "lunakv: %s",
                    err->msg[0] != '\0' ? err->msg : lkv_strerror(rc));
}

static inline int closed_error(lua_State *L, const Child *c, const char *what) {
  if (c->owner == NULL || c->owner->db == NULL)
    return luaL_error(L, "lunakv: db is closed");
  return luaL_error(L, "lunakv: %s is closed", what);
}

/* Keys and values are strings only: a number is refused, not coerced. */
static inline const char *checkbytes(lua_State *L, int arg, size_t *len) {
  luaL_argexpected(L, lua_type(L, arg) == LUA_TSTRING, arg, "string");
  return lua_tolstring(L, arg, len);
}

/* An optional range bound: NULL when nil or absent (an open end). */
static inline const char *optbytes(lua_State *L, int arg, size_t *len) {
  if (lua_isnoneornil(L, arg)) return NULL;
  return checkbytes(L, arg, len);
}

/* An optional sequence number: nil or absent reads the newest version. */
static inline uint64_t optseq(lua_State *L, int arg) {
  lua_Integer n;
  if (lua_isnoneornil(L, arg)) return LKV_SEQ_LATEST;
  n = luaL_checkinteger(L, arg);
  luaL_argcheck(L, n >= 0, arg, "sequence number must be >= 0");
  return (uint64_t)n;
}

static inline int opterror(lua_State *L, int arg, const char *key,
                           const char *what) {
  return luaL_argerror(L, arg, lua_pushfstring(L, "option '%s' %s", key, what));
}

/* }====================================================================== */

/* {======================================================================
** Accessors and results
** ======================================================================= */

/* Every method and metamethod of a class has the class metatable as
 * upvalue 1 (snapshot __index: upvalue 2). Comparing against it is
 * luaL_checkudata without the registry lookup by name, which costs more
 * than an engine get from the memtable. */
#define SELF_MT lua_upvalueindex(1)

static inline void *checkself(lua_State *L, int mtidx, const char *tname) {
  void *p = lua_touserdata(L, 1);
  if (p == NULL || !lua_getmetatable(L, 1)) /* +1 mt, when it has one */
    luaL_typeerror(L, 1, tname);
  if (!lua_rawequal(L, -1, mtidx)) luaL_typeerror(L, 1, tname);
  lua_pop(L, 1); /* -1 mt */
  return p;
}

/* The open db at arg 1, from a method of "lunakv.db" (lunakv_db.c and
 * lunakv_dbfuncs.c); a closed one raises. */
static inline LDb *todb(lua_State *L) {
  LDb *d = (LDb *)checkself(L, SELF_MT, DB_MT);
  if (d->db == NULL) luaL_error(L, "lunakv: db is closed");
  return d;
}

static inline void setint(lua_State *L, const char *name, uint64_t v) {
  lua_pushinteger(L, (lua_Integer)v);
  lua_setfield(L, -2, name);
}

static inline void setnum(lua_State *L, const char *name, double v) {
  lua_pushnumber(L, (lua_Number)v);
  lua_setfield(L, -2, name);
}

/* }====================================================================== */

#endif
