/* lunakv_iter.c - the class "lunakv.iter" and the scans (db:scan,
 * db:rscan and a snapshot's), which run on an iterator of their own. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lauxlib.h"
#include "lkvlua.h"
#include "lua.h"
#include "lunakv.h"

struct LIter {
  Child c;
  lkv_iter *it; /* NULL once closed */
  int started;  /* scan: the first step reads where the seek landed */
  int done;     /* scan: ran to its end (closed by us, not by the user) */
};

static void iter_free_handle(Child *c) {
  LIter *p = (LIter *)c;
  lkv_iter_free(p->it);
  p->it = NULL;
}

static LIter *toiter(lua_State *L) {
  LIter *p = (LIter *)checkself(L, SELF_MT, ITER_MT);
  if (p->it == NULL) closed_error(L, &p->c, "iter");
  return p;
}

/* {======================================================================
** Scans
** ======================================================================= */

/* Push a new open iterator at `at`, owned by the db at dbidx. */
LIter *lkvlua_newiter(lua_State *L, LDb *d, int dbidx, uint64_t at) {
  LIter *p = (LIter *)lkvlua_newchild(L, sizeof *p, ITER_MT, dbidx, d); /* +1 */
  lkv_iter *it = NULL;
  lkv_err err;
  int rc;
  err.msg[0] = '\0';
  rc = lkv_iter_new(d->db, at, &it, &err);
  if (rc != LKV_OK) raise_err(L, rc, &err);
  p->it = it;
  lkvlua_child_link(d, &p->c, iter_free_handle);
  return p;
}

/* A scan has run out (or failed): free the iterator, raise its error. */
static int scan_finish(lua_State *L, LIter *p) {
  lkv_err err;
  int rc;
  err.msg[0] = '\0';
  rc = lkv_iter_status(p->it, &err);
  p->done = 1;
  lkvlua_child_close(&p->c);
  if (rc != LKV_OK) return raise_err(L, rc, &err);
  lua_pushnil(L);
  return 1;
}

/* The generic-for step of a scan. Upvalues: the iterator, the bound where
 * the scan ends (a string, or nil for an open end) and whether it runs
 * downward (rscan: the bound is lo) or upward (scan: the bound is hi). */
static int scan_step(lua_State *L) {
  LIter *p = (LIter *)lua_touserdata(L, lua_upvalueindex(1));
  int down = lua_toboolean(L, lua_upvalueindex(3));
  size_t klen, vlen, blen;
  const char *key, *val, *bound;
  if (p->it == NULL) {
    if (p->done) return 0;
    return closed_error(L, &p->c, "iter");
  }
  /* the iterator is also the loop's fourth value: if the caller moved it
   * past the end through its methods, do not step an invalid iterator */
  if (!p->started)
    p->started = 1;
  else if (lkv_iter_valid(p->it)) {
    if (down)
      lkv_iter_prev(p->it);
    else
      lkv_iter_next(p->it);
  }
  if (!lkv_iter_valid(p->it)) return scan_finish(L, p);
  key = lkv_iter_key(p->it, &klen);
  bound = lua_tolstring(L, lua_upvalueindex(2), &blen);
  if (bound != NULL) {
    int c = lkv_key_compare(key, klen, bound, blen);
    if (down ? c < 0 : c > 0) return scan_finish(L, p);
  }
  val = lkv_iter_value(p->it, &vlen);
  lua_pushlstring(L, key, klen); /* +1 */
  lua_pushlstring(L, val, vlen); /* +1 */
  return 2;
}

/* The last key <= hi, or the last key when hi is NULL (LevelDB's
 * SeekForPrev): where a downward scan starts. */
static void seek_at_or_before(lkv_iter *it, const char *hi, size_t hilen) {
  size_t klen;
  const char *k;
  if (hi == NULL) {
    lkv_iter_seek_last(it);
    return;
  }
  lkv_iter_seek(it, hi, hilen); /* the first key >= hi */
  if (!lkv_iter_valid(it)) {    /* every key is below hi */
    lkv_iter_seek_last(it);
    return;
  }
  k = lkv_iter_key(it, &klen);
  if (lkv_key_compare(k, klen, hi, hilen) > 0) lkv_iter_prev(it); /* past hi */
}

/* lo at arg 2, hi at arg 3; upward from lo (scan) or downward from hi
 * (rscan). Returns step, nil, nil, iter: the fourth value is the generic
 * for's to-be-closed variable, so `break` or an error in the loop body
 * frees the engine iterator at once. */
int lkvlua_scan(lua_State *L, LDb *d, int dbidx, uint64_t at, int down) {
  size_t lolen = 0, hilen = 0;
  const char *lo = optbytes(L, 2, &lolen);
  const char *hi = optbytes(L, 3, &hilen);
  int end = down ? 2 : 3; /* the argument holding the bound that ends it */
  LIter *p;
  p = lkvlua_newiter(L, d, dbidx, at); /* +1 iter */
  if (down)
    seek_at_or_before(p->it, hi, hilen);
  else if (lo != NULL)
    lkv_iter_seek(p->it, lo, lolen);
  else
    lkv_iter_seek_first(p->it);
  lua_pushvalue(L, -1); /* +1 iter (upvalue 1) */
  if (lua_isnoneornil(L, end))
    lua_pushnil(L);
  else
    lua_pushvalue(L, end);           /* +1 bound (upvalue 2) */
  lua_pushboolean(L, down);          /* +1 direction (upvalue 3) */
  lua_pushcclosure(L, scan_step, 3); /* -3 +1 step */
  lua_pushnil(L);                    /* +1 state */
  lua_pushnil(L);                    /* +1 control */
  lua_pushvalue(L, -4);              /* +1 closing value: the iter */
  return 4;
}

/* }====================================================================== */

/* {======================================================================
** lunakv.iter
** ======================================================================= */

/* After a move: an iterator that stopped on an error raises it. Returns
 * whether it is positioned on a key. */
static int iter_moved(lua_State *L, LIter *p) {
  lkv_err err;
  int rc;
  if (lkv_iter_valid(p->it)) {
    lua_pushboolean(L, 1);
    return 1;
  }
  err.msg[0] = '\0';
  rc = lkv_iter_status(p->it, &err);
  if (rc != LKV_OK) return raise_err(L, rc, &err);
  lua_pushboolean(L, 0);
  return 1;
}

static int iter_seek(lua_State *L) {
  LIter *p = toiter(L);
  size_t klen;
  const char *key = checkbytes(L, 2, &klen);
  lkv_iter_seek(p->it, key, klen);
  return iter_moved(L, p);
}

static int iter_seek_first(lua_State *L) {
  LIter *p = toiter(L);
  lkv_iter_seek_first(p->it);
  return iter_moved(L, p);
}

/* next() and prev(): one step from a valid position. */
static int iter_step(lua_State *L, void (*step)(lkv_iter *), const char *name) {
  LIter *p = toiter(L);
  if (!lkv_iter_valid(p->it))
    return luaL_error(L,
                      "lunakv: iter:%s() needs a valid iterator "
                      "(seek first, and stop when valid() is false)",
                      name);
  step(p->it);
  return iter_moved(L, p);
}

static int iter_next(lua_State *L) {
  return iter_step(L, lkv_iter_next, "next");
}
static int iter_prev(lua_State *L) {
  return iter_step(L, lkv_iter_prev, "prev");
}

static int iter_seek_last(lua_State *L) {
  LIter *p = toiter(L);
  lkv_iter_seek_last(p->it);
  return iter_moved(L, p);
}

static int iter_valid(lua_State *L) {
  LIter *p = toiter(L);
  lua_pushboolean(L, lkv_iter_valid(p->it));
  return 1;
}

/* key() and value(): the current entry's bytes, or nil when the iterator
 * is not valid. */
static inline int iter_bytes(lua_State *L,
                             const char *(*get)(const lkv_iter *, size_t *)) {
  LIter *p = toiter(L);
  size_t len;
  const char *b;
  if (!lkv_iter_valid(p->it)) {
    lua_pushnil(L);
    return 1;
  }
  b = get(p->it, &len);
  lua_pushlstring(L, b, len);
  return 1;
}

static int iter_key(lua_State *L) { return iter_bytes(L, lkv_iter_key); }
static int iter_value(lua_State *L) { return iter_bytes(L, lkv_iter_value); }

static int iter_tostring(lua_State *L) {
  LIter *p = (LIter *)checkself(L, SELF_MT, ITER_MT);
  const char *state = p->it == NULL           ? "closed"
                      : lkv_iter_valid(p->it) ? "valid"
                                              : "not valid";
  lua_pushfstring(L, "lunakv.iter (%s)", state);
  return 1;
}

/* }====================================================================== */

static const luaL_Reg iter_methods[] = {
    {"seek", iter_seek},
    {"seek_first", iter_seek_first},
    {"seek_last", iter_seek_last},
    {"next", iter_next},
    {"prev", iter_prev},
    {"valid", iter_valid},
    {"key", iter_key},
    {"value", iter_value},
    {"close", lkvlua_child_close_method},
    {NULL, NULL},
};

void lkvlua_iter_register(lua_State *L) {
  lkvlua_newclass(L, ITER_MT, lkvlua_child_close_method, iter_tostring,
                  iter_methods, NULL);
}
