/* lunakv_dbfuncs.c - the db's stored-function methods: db:put_library,
 * db:delete_library, db:libraries, db:call and db:call_json, over the
 * stored functions' runtime (lunakv_funcs.h), with the embedded backend
 * a call reads through (one engine snapshot) and the batch its writes
 * are committed in.
 *
 * Why a file of its own: the methods are the db's, but the concept is
 * the stored functions' (docs/functions.md), and it shares nothing with
 * the rest of "lunakv.db" but the db block; lunakv_db.c holds the store
 * itself (reads, writes, snapshots, batches, stats, open and close).
 * lkvlua_dbfuncs_register adds these methods to the class lunakv_db.c
 * made, so a db still has one method table. Calls lunakv_funcs.c and
 * lunakv_sandbox.c (lkvf_check_name), never lunakv_db.c: the db's
 * accessor todb is inline in lkvlua.h, and lunakv_db.c frees the runtime
 * at close through lunakv_funcs.c itself. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lauxlib.h"
#include "lkvlua.h"
#include "lua.h"
#include "lunakv.h"
#include "lunakv_funcs.h"

/* {======================================================================
** Stored functions (lunakv_funcs.h): libraries kept under
** LKVF_LIB_PREFIX, compiled at first use, calls committed as one batch
** ======================================================================= */

/* The call's reads: one engine snapshot, pinned for the whole call. */
typedef struct EmbScan {
  lkv_iter *it;
  char *hi; /* inclusive bound, malloc'd; NULL: open */
  size_t hilen;
  int started;
} EmbScan;

static int emb_get(void *arg, const char *k, size_t klen, lkv_buf *val,
                   lkv_err *err) {
  const lkv_snapshot *s = (const lkv_snapshot *)((void **)arg)[1];
  return lkv_db_get((lkv_db *)((void **)arg)[0], k, klen, lkv_snapshot_seq(s),
                    val, err);
}

static int emb_scan_open(void *arg, const char *lo, size_t lolen,
                         const char *hi, size_t hilen, uint64_t limit,
                         void **cursor, lkv_err *err) {
  const lkv_snapshot *s = (const lkv_snapshot *)((void **)arg)[1];
  EmbScan *sc = (EmbScan *)calloc(1, sizeof *sc);
  int rc;
  (void)limit; /* rows are pulled one by one: nothing to bound */
  if (sc == NULL ||
      (hi != NULL && (sc->hi = (char *)malloc(hilen + 1)) == NULL)) {
    free(sc);
    return lkv_seterr(err, LKV_NOMEM, "scan of a stored function");
  }
  if (hi != NULL) memcpy(sc->hi, hi, hilen);
  sc->hilen = hilen;
  rc = lkv_iter_new((lkv_db *)((void **)arg)[0], lkv_snapshot_seq(s), &sc->it,
                    err);
  if (rc != LKV_OK) {
    free(sc->hi);
    free(sc);
    return rc;
  }
  if (lo != NULL)
    lkv_iter_seek(sc->it, lo, lolen);
  else
    lkv_iter_seek_first(sc->it);
  *cursor = sc;
  return LKV_OK;
}

static int emb_scan_next(void *cursor, const char **k, size_t *klen,
                         const char **v, size_t *vlen, lkv_err *err) {
  EmbScan *sc = (EmbScan *)cursor;
  if (sc->started && lkv_iter_valid(sc->it)) lkv_iter_next(sc->it);
  sc->started = 1;
  if (!lkv_iter_valid(sc->it)) {
    int rc = lkv_iter_status(sc->it, err);
    return rc != LKV_OK ? rc : LKV_NOTFOUND;
  }
  *k = lkv_iter_key(sc->it, klen);
  if (sc->hi != NULL && lkv_key_compare(*k, *klen, sc->hi, sc->hilen) > 0)
    return LKV_NOTFOUND;
  *v = lkv_iter_value(sc->it, vlen);
  return LKV_OK;
}

static void emb_scan_close(void *cursor) {
  EmbScan *sc = (EmbScan *)cursor;
  lkv_iter_free(sc->it);
  free(sc->hi);
  free(sc);
}

void lkvlua_funcs_backend(lkvf_backend *be, void *arg[2], lkv_db *db,
                          lkv_snapshot *snap) {
  arg[0] = db;
  arg[1] = snap;
  be->arg = arg;
  be->get = emb_get;
  be->scan_open = emb_scan_open;
  be->scan_next = emb_scan_next;
  be->scan_close = emb_scan_close;
}

/* Raise e's sentence (copied by luaL_error before it jumps). */
static int raise_funcs(lua_State *L, const lkvf_error *e) {
  return luaL_error(L, "lunakv: %s", e->msg);
}

/* The limits table at arg (nil: the defaults) into *lim, by the names of
 * lkvf_limits_schema; an unknown name or a value out of range raises. */
static void check_limits(lua_State *L, int arg, lkvf_limits *lim) {
  size_t n, i;
  const lkv_option_spec *schema = lkvf_limits_schema(&n);
  lkv_err err;
  lkvf_limits_init(lim);
  if (lua_isnoneornil(L, arg)) return;
  luaL_checktype(L, arg, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, arg)) {
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
    for (i = 0; i < n; i++)
      if (strcmp(schema[i].name, k) == 0) break;
    if (i == n)
      opterror(L, arg, k,
               "is unknown (valid: script_max_instructions, "
               "script_max_memory, script_max_writes)");
    if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0)
      opterror(L, arg, k, "must be a non-negative integer");
    lkv_option_set(&schema[i], lim, (uint64_t)lua_tointeger(L, -1));
    lua_pop(L, 1);
  }
  err.msg[0] = '\0';
  if (lkv_schema_check(schema, n, lim, &err) != LKV_OK)
    luaL_argerror(L, arg, err.msg);
}

static size_t libkey(char *buf, const char *name, size_t nlen) {
  size_t pn = sizeof LKVF_LIB_PREFIX - 1;
  memcpy(buf, LKVF_LIB_PREFIX, pn);
  memcpy(buf + pn, name, nlen);
  return pn + nlen;
}

/* The key of a library's load limits (LKVF_LIBLIMITS_PREFIX). */
static size_t limkey(char *buf, const char *name, size_t nlen) {
  size_t pn = sizeof LKVF_LIBLIMITS_PREFIX - 1;
  memcpy(buf, LKVF_LIBLIMITS_PREFIX, pn);
  memcpy(buf + pn, name, nlen);
  return pn + nlen;
}

/* The stored load limits of library name into *lim: the defaults when
 * none are stored (a library put before they were). LKV_OK, an engine
 * error, or LKV_CORRUPTION when the text does not parse (err says). */
static int stored_limits(lkv_db *db, lkv_buf *getbuf, const char *name,
                         size_t nlen, lkvf_limits *lim, lkv_err *err) {
  char key[sizeof LKVF_LIBLIMITS_PREFIX + LKVF_NAME_MAX];
  lkvf_error e;
  int rc =
      lkv_db_get(db, key, limkey(key, name, nlen), LKV_SEQ_LATEST, getbuf, err);
  lkvf_limits_init(lim);
  if (rc == LKV_NOTFOUND) return LKV_OK;
  if (rc != LKV_OK) return rc;
  if (lkvf_limits_parse(getbuf->data, getbuf->len, lim, &e) != LKVF_OK)
    return lkv_seterr(err, LKV_CORRUPTION, "stored limits: %s", e.msg);
  return LKV_OK;
}

int lkvlua_funcs_fill(lkvf_runtime *rt, lkv_db *db, lkv_buf *getbuf, char *msg,
                      size_t msglen) {
  size_t pn = sizeof LKVF_LIB_PREFIX - 1;
  lkv_iter *it = NULL;
  lkvf_limits lim;
  lkvf_error e;
  lkv_err err;
  int rc;
  err.msg[0] = '\0';
  msg[0] = '\0';
  rc = lkv_iter_new(db, LKV_SEQ_LATEST, &it, &err);
  if (rc != LKV_OK) {
    snprintf(msg, msglen, "lunakv: %s", err.msg);
    return -1;
  }
  for (lkv_iter_seek(it, LKVF_LIB_PREFIX, pn); lkv_iter_valid(it);
       lkv_iter_next(it)) {
    size_t klen, vlen;
    const char *k = lkv_iter_key(it, &klen), *v;
    lkvf_library *lib;
    if (klen < pn || memcmp(k, LKVF_LIB_PREFIX, pn) != 0) break;
    v = lkv_iter_value(it, &vlen);
    /* a library that does not load is kept as such: its own functions
     * are unknown (the error names it), the others work */
    err.msg[0] = '\0';
    rc = stored_limits(db, getbuf, k + pn, klen - pn, &lim, &err);
    if (rc == LKV_OK && lkvf_library_prepare(rt, k + pn, klen - pn, v, vlen,
                                             &lim, &lib, &e) == LKVF_OK)
      lkvf_library_install(rt, lib);
    else if (lkvf_library_install_failed(rt, k + pn, klen - pn, v, vlen,
                                         rc != LKV_OK ? err.msg : e.msg,
                                         &e) != LKVF_OK) {
      snprintf(msg, msglen, "lunakv: %s", e.msg);
      break;
    }
  }
  if (msg[0] == '\0' && (rc = lkv_iter_status(it, &err)) != LKV_OK)
    snprintf(msg, msglen, "lunakv: %s", err.msg);
  lkv_iter_free(it);
  return msg[0] != '\0' ? -1 : 0;
}

/* The db's runtime, created and filled from the stored libraries at the
 * first use, each under the limits it was put with. One that no longer
 * loads is kept as failed (lkvf_library_install_failed): the others
 * work, db:libraries shows its error. */
static lkvf_runtime *funcs_of(lua_State *L, LDb *d) {
  char msg[LKVF_MSG_LEN + LKVF_NAME_MAX + 96];
  lkvf_runtime *rt;
  const char *cpath;
  if (d->funcs != NULL) return d->funcs;
  /* the sandboxes find cjson where this state found it */
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "cpath");
  cpath = lua_tostring(L, -1);
  rt = lkvf_runtime_new(cpath);
  lua_pop(L, 2);
  if (rt == NULL) luaL_error(L, "lunakv: out of memory: function runtime");
  if (lkvlua_funcs_fill(rt, d->db, &d->getbuf, msg, sizeof msg) != 0) {
    lkvf_runtime_free(rt);
    return (lkvf_runtime *)(intptr_t)luaL_error(L, "%s", msg);
  }
  d->funcs = rt;
  return rt;
}

/* db:put_library(name, source [, limits]) -> { function names }: compile
 * and run it first; only a library that loads is stored and installed. */
static int db_put_library(lua_State *L) {
  LDb *d = todb(L);
  size_t nlen, slen, i;
  const char *name = checkbytes(L, 2, &nlen);
  const char *src = checkbytes(L, 3, &slen);
  char key[sizeof LKVF_LIB_PREFIX + LKVF_NAME_MAX];
  char lkey[sizeof LKVF_LIBLIMITS_PREFIX + LKVF_NAME_MAX];
  char ltext[LKVF_LIMITS_TEXT_MAX];
  lkvf_runtime *rt;
  lkvf_library *lib;
  lkvf_library_info info;
  lkv_batch *b;
  lkvf_limits lim;
  lkvf_error e;
  lkv_err err;
  int rc;
  check_limits(L, 4, &lim);
  if (lkvf_check_name("library", name, nlen, &e) != LKVF_OK)
    return luaL_argerror(L, 2, e.msg);
  rt = funcs_of(L, d);
  if (lkvf_library_prepare(rt, name, nlen, src, slen, &lim, &lib, &e) !=
      LKVF_OK)
    return raise_funcs(L, &e);
  /* the source and its load limits in one batch: a reopen loads it
   * under the same limits */
  err.msg[0] = '\0';
  b = lkv_batch_new();
  rc = b == NULL ? lkv_seterr(&err, LKV_NOMEM, "batch of a library") : LKV_OK;
  if (rc == LKV_OK)
    rc = lkv_batch_set(b, key, libkey(key, name, nlen), src, slen, &err);
  if (rc == LKV_OK)
    rc = lkv_batch_set(b, lkey, limkey(lkey, name, nlen), ltext,
                       lkvf_limits_format(&lim, ltext), &err);
  if (rc == LKV_OK) rc = lkv_db_write(d->db, b, NULL, &err);
  lkv_batch_free(b);
  if (rc != LKV_OK) {
    lkvf_library_discard(lib);
    return raise_err(L, rc, &err);
  }
  lkvf_library_install(rt, lib);
  for (i = 0; i < lkvf_library_count(rt); i++) {
    lkvf_library_at(rt, i, &info);
    if (strlen(info.name) == nlen && memcmp(info.name, name, nlen) == 0) break;
  }
  lua_createtable(L, (int)info.nfuncs, 0);
  for (i = 0; i < info.nfuncs; i++) {
    lua_pushstring(L, info.funcs[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

/* db:delete_library(name): works even when the stored library no longer
 * loads (the runtime need not be built for it). */
static int db_delete_library(lua_State *L) {
  LDb *d = todb(L);
  size_t nlen, klen;
  const char *name = checkbytes(L, 2, &nlen);
  char key[sizeof LKVF_LIB_PREFIX + LKVF_NAME_MAX];
  char lkey[sizeof LKVF_LIBLIMITS_PREFIX + LKVF_NAME_MAX];
  lkv_batch *b;
  lkvf_error e;
  lkv_err err;
  int rc;
  if (lkvf_check_name("library", name, nlen, &e) != LKVF_OK)
    return luaL_argerror(L, 2, e.msg);
  klen = libkey(key, name, nlen);
  err.msg[0] = '\0';
  rc = lkv_db_get(d->db, key, klen, LKV_SEQ_LATEST, &d->getbuf, &err);
  if (rc == LKV_NOTFOUND) return luaL_error(L, "lunakv: no library '%s'", name);
  if (rc != LKV_OK) return raise_err(L, rc, &err);
  b = lkv_batch_new();
  rc = b == NULL ? lkv_seterr(&err, LKV_NOMEM, "batch of a library") : LKV_OK;
  if (rc == LKV_OK) rc = lkv_batch_delete(b, key, klen, &err);
  if (rc == LKV_OK)
    rc = lkv_batch_delete(b, lkey, limkey(lkey, name, nlen), &err);
  if (rc == LKV_OK) rc = lkv_db_write(d->db, b, NULL, &err);
  lkv_batch_free(b);
  if (rc != LKV_OK) return raise_err(L, rc, &err);
  if (d->funcs != NULL) lkvf_library_remove(d->funcs, name, nlen, &e);
  return 0;
}

/* db:libraries() -> { {name=, functions={...}, read_only={f=true},
 * memory=bytes}, ... } sorted by name */
static int db_libraries(lua_State *L) {
  LDb *d = todb(L);
  lkvf_runtime *rt = funcs_of(L, d);
  size_t i, j, n = lkvf_library_count(rt);
  lkvf_library_info info;
  lua_createtable(L, (int)n, 0);
  for (i = 0; i < n; i++) {
    lkvf_library_at(rt, i, &info);
    lua_createtable(L, 0, 4);
    lua_pushstring(L, info.name);
    lua_setfield(L, -2, "name");
    setint(L, "memory", info.memory);
    lua_createtable(L, (int)info.nfuncs, 0);
    for (j = 0; j < info.nfuncs; j++) {
      lua_pushstring(L, info.funcs[j]);
      lua_rawseti(L, -2, (lua_Integer)j + 1);
    }
    lua_setfield(L, -2, "functions");
    lua_newtable(L);
    for (j = 0; j < info.nfuncs; j++)
      if (info.read_only[j]) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, info.funcs[j]);
      }
    lua_setfield(L, -2, "read_only");
    if (info.error != NULL) {
      lua_pushstring(L, info.error);
      lua_setfield(L, -2, "error");
    }
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

/* Run function (arg 2) with args JSON at args (NULL: nil) and commit its
 * writes in one batch; push the result JSON and the batch's last seq (nil
 * when it wrote nothing). */
static int run_call(lua_State *L, LDb *d, const char *args, size_t alen,
                    int limarg) {
  size_t nlen, i;
  const char *name = checkbytes(L, 2, &nlen);
  lkvf_runtime *rt;
  lkvf_limits lim;
  lkvf_backend be;
  lkvf_result res;
  lkvf_error e;
  lkv_snapshot *snap = NULL;
  lkv_batch *b = NULL;
  Box *box;
  int wrote;
  void *arg[2];
  lkv_err err;
  uint64_t seq = 0;
  int rc;
  check_limits(L, limarg, &lim);
  rt = funcs_of(L, d);
  /* the result JSON waits in a box while it is pushed: pushing may raise
   * (out of memory), and the box's __gc then frees it */
  box = (Box *)lua_newuserdatauv(L, sizeof *box, 0);
  memset(box, 0, sizeof *box);
  luaL_setmetatable(L, BOX_MT);
  err.msg[0] = '\0';
  rc = lkv_snapshot_new(d->db, &snap, &err);
  if (rc != LKV_OK) return raise_err(L, rc, &err);
  lkvlua_funcs_backend(&be, arg, d->db, snap);
  rc = lkvf_call(rt, name, nlen, args, alen, &be, &lim, &res, &e);
  lkv_snapshot_release(snap);
  if (rc != LKVF_OK) return raise_funcs(L, &e);
  if (res.nwrites > 0) {
    b = lkv_batch_new();
    rc = b == NULL ? lkv_seterr(&err, LKV_NOMEM, "batch of a call") : LKV_OK;
    for (i = 0; rc == LKV_OK && i < res.nwrites; i++) {
      const lkvf_write *w = &res.writes[i];
      rc = w->op == LKVF_SET
               ? lkv_batch_set(b, w->key, w->klen, w->val, w->vlen, &err)
               : lkv_batch_delete(b, w->key, w->klen, &err);
    }
    if (rc == LKV_OK) rc = lkv_db_write(d->db, b, &seq, &err);
    lkv_batch_free(b);
    if (rc != LKV_OK) {
      lkvf_result_free(&res);
      return raise_err(L, rc, &err);
    }
  }
  wrote = res.nwrites > 0;
  box->p = res.json;
  box->len = box->cap = res.json_len;
  res.json = NULL;
  lkvf_result_free(&res);
  lua_pushlstring(L, box->p, box->len);
  free(box->p);
  box->p = NULL;
  if (wrote)
    lua_pushinteger(L, (lua_Integer)seq);
  else
    lua_pushnil(L);
  return 2;
}

/* db:call_json(function [, json [, limits]]) -> result JSON, seq|nil */
static int db_call_json(lua_State *L) {
  LDb *d = todb(L);
  size_t alen = 0;
  const char *args = optbytes(L, 3, &alen);
  return run_call(L, d, args, alen, 4);
}

/* encode(value) after refusing integers cjson would round. */
static int encode_checked(lua_State *L) {
  lkvlua_json_check_ints(L, 2);
  lua_call(L, 1, 1);
  return 1;
}

/* db:call(function [, args [, limits]]) -> result, seq|nil: args and
 * the result pass through JSON (this state's cjson), exactly as over
 * HTTP; a JSON null result is nil. */
static int db_call(lua_State *L) {
  LDb *d = todb(L);
  size_t alen = 0;
  const char *args = NULL;
  lua_settop(L, 4);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "cjson");
  lua_call(L, 1, 1); /* 5 cjson */
  if (!lua_isnil(L, 3)) {
    lua_pushcfunction(L, encode_checked);
    lua_getfield(L, 5, "encode");
    lua_pushvalue(L, 3);
    if (lua_pcall(L, 2, 1, 0) != LUA_OK)
      return luaL_argerror(
          L, 3,
          lua_pushfstring(L, "cannot encode as JSON: %s", lua_tostring(L, -1)));
    args = lua_tolstring(L, -1, &alen); /* 6, anchored on the stack */
  }
  run_call(L, d, args, alen, 4); /* +2 json, seq */
  lua_getfield(L, 5, "decode");
  lua_pushvalue(L, -3);
  lua_call(L, 1, 1); /* +1 result */
  lkvlua_json_ints(L, -1);
  lua_getfield(L, 5, "null");
  if (lua_rawequal(L, -1, -2))
    lua_pushnil(L);
  else
    lua_pushvalue(L, -2);
  lua_pushvalue(L, -4); /* seq */
  return 2;
}

/* }====================================================================== */

static const luaL_Reg dbfuncs_methods[] = {
    {"put_library", db_put_library},
    {"delete_library", db_delete_library},
    {"libraries", db_libraries},
    {"call", db_call},
    {"call_json", db_call_json},
    /* the rest are db_methods (lunakv_db.c) */
    {NULL, NULL},
};

/* Into the methods table (__index) of the class "lunakv.db", which
 * lkvlua_db_register made: the methods get its metatable as upvalue 1
 * (SELF_MT), as lkvlua_newclass gives every method. */
void lkvlua_dbfuncs_register(lua_State *L) {
  luaL_getmetatable(L, DB_MT);          /* +1 mt */
  lua_getfield(L, -1, "__index");       /* +1 methods */
  lua_pushvalue(L, -2);                 /* +1 mt (upvalue) */
  luaL_setfuncs(L, dbfuncs_methods, 1); /* -1 */
  lua_pop(L, 2);                        /* -2 methods, mt */
}
