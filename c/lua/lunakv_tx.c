/* lunakv_tx.c - the "tx" a stored function receives (tx:get, tx:set,
 * tx:delete, tx:scan) and the call's writes it collects: an ordered list
 * (what the caller commits) and a sorted index of the newest write per key
 * (what tx:get and tx:scan overlay on the backend's reads). Called by
 * lunakv_funcs.c and lunakv_sandbox.c only; runs inside the sandbox,
 * under its pcall, so every error raises in the sandbox and the Call
 * struct owns the malloc'd memory. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lauxlib.h"
#include "lua.h"
#include "lunakv_funcs.h"
#include "lunakv_funcs_impl.h"

/* {======================================================================
** The call's writes: in order, plus an index of the newest per key
** ======================================================================= */

/* The position of key in c->sorted, or where it would go (*found 0). */
static size_t sorted_find(const Call *c, const char *k, size_t klen,
                          int *found) {
  size_t lo = 0, hi = c->nsorted;
  *found = 0;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    const lkvf_write *w = &c->w[c->sorted[mid]];
    int cmp = lkv_key_compare(w->key, w->klen, k, klen);
    if (cmp == 0) {
      *found = 1;
      return mid;
    }
    if (cmp < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

/* The newest write of the first key > after (or >= from, when after is
 * NULL), or NULL. */
static const lkvf_write *sorted_next(const Call *c, const char *from,
                                     size_t fromlen, const char *after,
                                     size_t afterlen) {
  int found;
  size_t i;
  if (after != NULL) {
    i = sorted_find(c, after, afterlen, &found);
    if (found) i++;
  } else if (from != NULL)
    i = sorted_find(c, from, fromlen, &found);
  else
    i = 0;
  return i < c->nsorted ? &c->w[c->sorted[i]] : NULL;
}

/* Record a write; raises (in the sandbox) on a limit or out of memory. */
static void add_write(lua_State *L, Call *c, int op, const char *k, size_t klen,
                      const char *v, size_t vlen) {
  lkvf_library *lib = c->lib;
  size_t bytes = sizeof(lkvf_write) + sizeof(size_t) + klen + vlen;
  size_t pos;
  int found;
  char *p;
  if (c->nw >= c->lim->max_writes) {
    lib->hit = HIT_WRITES;
    luaL_error(L, "SCRIPT_MAX_WRITES limit reached (%I writes)",
               (lua_Integer)c->lim->max_writes);
  }
  if (bytes > lib->limit || lib->used + lib->extra > lib->limit - bytes) {
    lib->hit = HIT_MEMORY;
    luaL_error(L, "SCRIPT_MAX_MEMORY limit reached");
  }
  if (c->nw == c->capw) {
    size_t cap = c->capw ? c->capw * 2 : 16;
    lkvf_write *w = (lkvf_write *)realloc(c->w, cap * sizeof *w);
    size_t *s;
    if (w == NULL) luaL_error(L, "out of memory");
    c->w = w;
    s = (size_t *)realloc(c->sorted, cap * sizeof *s);
    if (s == NULL) luaL_error(L, "out of memory");
    c->sorted = s;
    c->capw = c->capsorted = cap;
  }
  p = (char *)malloc(klen + vlen + 1);
  if (p == NULL) luaL_error(L, "out of memory");
  memcpy(p, k, klen);
  if (vlen) memcpy(p + klen, v, vlen);
  c->w[c->nw].op = op;
  c->w[c->nw].key = p;
  c->w[c->nw].klen = klen;
  c->w[c->nw].val = op == LKVF_SET ? p + klen : NULL;
  c->w[c->nw].vlen = op == LKVF_SET ? vlen : 0;
  pos = sorted_find(c, k, klen, &found);
  if (!found) {
    memmove(c->sorted + pos + 1, c->sorted + pos,
            (c->nsorted - pos) * sizeof *c->sorted);
    c->nsorted++;
  }
  c->sorted[pos] = c->nw++;
  lib->extra += bytes;
}

void lkvf_tx_free_writes(Call *c) {
  size_t i;
  for (i = 0; i < c->nw; i++) free(c->w[i].key);
  free(c->w);
  free(c->sorted);
  c->w = NULL;
  c->sorted = NULL;
  c->nw = c->capw = c->nsorted = c->capsorted = 0;
}

/* }====================================================================== */

/* {======================================================================
** tx: get, set, delete, scan
** ======================================================================= */

static Call *totx(lua_State *L) {
  Call **pc = (Call **)luaL_checkudata(L, 1, TX_MT);
  if (*pc == NULL) luaL_error(L, "tx is closed (its call has returned)");
  return *pc;
}

static const char *txkey(lua_State *L, int arg, size_t *len) {
  const char *k;
  luaL_argexpected(L, lua_type(L, arg) == LUA_TSTRING, arg, "string");
  k = lua_tolstring(L, arg, len);
  luaL_argcheck(L, *len <= LKV_MAX_KEY_BYTES, arg, "key too long");
  if (lkvf_reserved(k, *len))
    luaL_argerror(L, arg, "keys starting with \\xff\\xfflunakv/ are reserved");
  return k;
}

/* A backend failure: kept on the call (a pcall in the script does not
 * make the call succeed), then raised. */
static int backend_error(lua_State *L, Call *c, int rc, lkv_err *err) {
  c->brc = rc;
  err->msg[LKV_ERR_MSG_LEN - 1] = '\0';
  c->berr = *err;
  return luaL_error(L, "lunakv: %s", err->msg[0] ? err->msg : lkv_strerror(rc));
}

static int tx_get(lua_State *L) {
  Call *c = totx(L);
  size_t klen;
  const char *k = txkey(L, 2, &klen);
  int found, rc;
  size_t i;
  lkv_err err;
  lkvf_charge(L, c->lib, LKVF_COST_GET);
  i = sorted_find(c, k, klen, &found);
  if (found) {
    const lkvf_write *w = &c->w[c->sorted[i]];
    if (w->op == LKVF_SET)
      lua_pushlstring(L, w->val, w->vlen);
    else
      lua_pushnil(L);
    return 1;
  }
  err.msg[0] = '\0';
  rc = c->be->get(c->be->arg, k, klen, &c->getbuf, &err);
  if (rc == LKV_NOTFOUND) {
    lua_pushnil(L);
    return 1;
  }
  if (rc != LKV_OK) return backend_error(L, c, rc, &err);
  lua_pushlstring(L, c->getbuf.data, c->getbuf.len);
  return 1;
}

static int tx_write(lua_State *L, int op) {
  Call *c = totx(L);
  size_t klen, vlen = 0;
  const char *k = txkey(L, 2, &klen), *v = NULL;
  if (op == LKVF_SET) {
    luaL_argexpected(L, lua_type(L, 3) == LUA_TSTRING, 3, "string");
    v = lua_tolstring(L, 3, &vlen);
    luaL_argcheck(L, vlen <= LKV_MAX_VALUE_BYTES, 3, "value too long");
  }
  if (c->read_only)
    return luaL_error(L, "function '%s' is read_only: it may not write",
                      c->fname);
  lkvf_charge(L, c->lib, LKVF_COST_WRITE);
  add_write(L, c, op, k, klen, v, vlen);
  return 0;
}

static int tx_set(lua_State *L) { return tx_write(L, LKVF_SET); }
static int tx_delete(lua_State *L) { return tx_write(L, LKVF_DELETE); }

static void cursor_close(Cursor *cu);

void lkvf_tx_close_cursors(Call *c) {
  while (c->cursors != NULL) cursor_close(c->cursors);
}

static void cursor_close(Cursor *cu) {
  Call *c = cu->call;
  if (c == NULL) return;
  if (cu->bc != NULL) c->be->scan_close(cu->bc);
  cu->bc = NULL;
  if (cu->prev)
    cu->prev->next = cu->next;
  else
    c->cursors = cu->next;
  if (cu->next) cu->next->prev = cu->prev;
  c->ncursors--;
  free(cu->last);
  free(cu->lo);
  free(cu->hi);
  cu->last = cu->lo = cu->hi = NULL;
  cu->call = NULL;
}

static int cursor_gc(lua_State *L) {
  cursor_close((Cursor *)luaL_checkudata(L, 1, CURSOR_MT));
  return 0;
}

static int remember_last(lua_State *L, Cursor *cu, const char *k, size_t n) {
  char *p = (char *)realloc(cu->last, n ? n : 1);
  if (p == NULL) return luaL_error(L, "out of memory");
  memcpy(p, k, n);
  cu->last = p;
  cu->lastlen = n;
  return 0;
}

/* The generic-for step: merge the backend's rows with the call's own
 * writes (a write to a key shadows the backend's row; a delete hides
 * it), reserved keys left out. Upvalue 1: the cursor. */
static int cursor_step(lua_State *L) {
  Cursor *cu = (Cursor *)lua_touserdata(L, lua_upvalueindex(1));
  Call *c = cu->call;
  lkv_err err;
  int rc;
  if (c == NULL) return 0; /* ran out, broken off, or its call returned */
  for (;;) {
    const lkvf_write *ow;
    int take_own;
    if (cu->limit != 0 && cu->count >= cu->limit) break;
    while (!cu->have_row && cu->bc != NULL) {
      lkvf_charge(L, c->lib, LKVF_COST_ROW);
      err.msg[0] = '\0';
      rc = c->be->scan_next(cu->bc, &cu->bk, &cu->bklen, &cu->bv, &cu->bvlen,
                            &err);
      if (rc == LKV_NOTFOUND) {
        c->be->scan_close(cu->bc);
        cu->bc = NULL;
      } else if (rc != LKV_OK) {
        cursor_close(cu);
        return backend_error(L, c, rc, &err);
      } else if (!lkvf_reserved(cu->bk, cu->bklen) &&
                 (cu->last == NULL ||
                  lkv_key_compare(cu->bk, cu->bklen, cu->last, cu->lastlen) >
                      0))
        cu->have_row = 1;
    }
    ow = sorted_next(c, cu->lo, cu->lolen, cu->last, cu->lastlen);
    if (ow != NULL && cu->hi != NULL &&
        lkv_key_compare(ow->key, ow->klen, cu->hi, cu->hilen) > 0)
      ow = NULL;
    if (ow == NULL && !cu->have_row) break;
    take_own = ow != NULL &&
               (!cu->have_row ||
                lkv_key_compare(ow->key, ow->klen, cu->bk, cu->bklen) <= 0);
    if (take_own) {
      if (cu->have_row &&
          lkv_key_compare(ow->key, ow->klen, cu->bk, cu->bklen) == 0)
        cu->have_row = 0; /* shadowed */
      remember_last(L, cu, ow->key, ow->klen);
      if (ow->op == LKVF_DELETE) continue;
      cu->count++;
      lua_pushlstring(L, ow->key, ow->klen);
      lua_pushlstring(L, ow->val, ow->vlen);
      return 2;
    }
    cu->have_row = 0;
    /* push before remembering: the row is borrowed until the next step */
    lua_pushlstring(L, cu->bk, cu->bklen);
    lua_pushlstring(L, cu->bv, cu->bvlen);
    remember_last(L, cu, cu->bk, cu->bklen);
    cu->count++;
    return 2;
  }
  cursor_close(cu);
  return 0;
}

/* tx:scan([lo [, hi [, limit]]]) -> step, nil, nil, cursor: lo and hi
 * inclusive, as db:scan; the cursor is the loop's to-be-closed value. */
static int tx_scan(lua_State *L) {
  Call *c = totx(L);
  size_t lolen = 0, hilen = 0;
  const char *lo = NULL, *hi = NULL;
  uint64_t limit = 0, ask;
  Cursor *cu;
  lkv_err err;
  int rc;
  if (!lua_isnoneornil(L, 2)) {
    luaL_argexpected(L, lua_type(L, 2) == LUA_TSTRING, 2, "string or nil");
    lo = lua_tolstring(L, 2, &lolen);
  }
  if (!lua_isnoneornil(L, 3)) {
    luaL_argexpected(L, lua_type(L, 3) == LUA_TSTRING, 3, "string or nil");
    hi = lua_tolstring(L, 3, &hilen);
  }
  if (!lua_isnoneornil(L, 4)) {
    lua_Integer n = luaL_checkinteger(L, 4);
    luaL_argcheck(L, n > 0, 4, "limit must be > 0");
    limit = (uint64_t)n;
  }
  lkvf_charge(L, c->lib, LKVF_COST_SCAN);
  if (c->ncursors >= LKVF_MAX_OPEN_SCANS) {
    /* scans dropped without running out are closed by their __gc:
     * collect once before refusing */
    lua_gc(L, LUA_GCCOLLECT);
    if (c->ncursors >= LKVF_MAX_OPEN_SCANS)
      return luaL_error(L, "too many open scans (at most %d per call)",
                        LKVF_MAX_OPEN_SCANS);
  }
  cu = (Cursor *)lua_newuserdatauv(L, sizeof *cu, 0); /* +1, closed */
  memset(cu, 0, sizeof *cu);
  luaL_setmetatable(L, CURSOR_MT);
  if ((lo && (cu->lo = lkvf_dupbytes(lo, lolen)) == NULL) ||
      (hi && (cu->hi = lkvf_dupbytes(hi, hilen)) == NULL)) {
    free(cu->lo);
    cu->lo = NULL;
    return luaL_error(L, "out of memory");
  }
  cu->lolen = lolen;
  cu->hilen = hilen;
  cu->limit = limit;
  /* linked before the backend opens: the call closes it whatever happens */
  cu->call = c;
  cu->next = c->cursors;
  if (c->cursors) c->cursors->prev = cu;
  c->cursors = cu;
  c->ncursors++;
  /* the hint counts rows the backend returns: the call's own deletes
   * may hide some, and so do reserved keys, which the backend returns
   * and the step skips; when the range reaches them no bound holds */
  ask = limit ? limit + (uint64_t)c->nsorted : 0;
  if (hi == NULL || lkv_key_compare(hi, hilen, LKVF_RESERVED_PREFIX,
                                    sizeof LKVF_RESERVED_PREFIX - 1) >= 0)
    ask = 0;
  err.msg[0] = '\0';
  rc = c->be->scan_open(c->be->arg, lo, lolen, hi, hilen, ask, &cu->bc, &err);
  if (rc != LKV_OK) {
    cu->bc = NULL;
    cursor_close(cu);
    return backend_error(L, c, rc, &err);
  }
  lua_pushvalue(L, -1);
  lua_pushcclosure(L, cursor_step, 1); /* +1 step */
  lua_insert(L, -2);                   /* step, cursor */
  lua_pushnil(L);
  lua_insert(L, -2);
  lua_pushnil(L);
  lua_insert(L, -2); /* step, nil, nil, cursor */
  return 4;
}

static int tx_tostring(lua_State *L) {
  Call **pc = (Call **)luaL_checkudata(L, 1, TX_MT);
  lua_pushstring(L, *pc ? "lunakv.tx" : "lunakv.tx (closed)");
  return 1;
}

void lkvf_tx_register(lua_State *L) {
  static const luaL_Reg methods[] = {{"get", tx_get},
                                     {"set", tx_set},
                                     {"delete", tx_delete},
                                     {"scan", tx_scan},
                                     {NULL, NULL}};
  Call **pc;
  luaL_newmetatable(L, TX_MT);
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, tx_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "__metatable"); /* scripts cannot swap the methods */
  lua_pop(L, 1);
  luaL_newmetatable(L, CURSOR_MT);
  lua_pushcfunction(L, cursor_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, cursor_gc);
  lua_setfield(L, -2, "__close");
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "__metatable");
  lua_pop(L, 1);
  pc = (Call **)lua_newuserdatauv(L, sizeof *pc, 0);
  *pc = NULL;
  luaL_setmetatable(L, TX_MT);
  lua_setfield(L, LUA_REGISTRYINDEX, REG_TX);
}

/* }====================================================================== */
