/* lunakv_nodefuncs.c - the HTTP node's stored functions: the hooks of
 * lkvnet.h (lkvnet_functions) filled with the runtime of lunakv_funcs.h,
 * so that c/net runs libraries without knowing Lua (docs/functions.md,
 * "On a node").
 *
 * The runtime is built from the libraries the node's engine stores, at
 * the first use after start and after every change the node reports
 * (changed(): an applied library entry, a snapshot install): every node
 * compiles the same source, and a library's in-memory globals start
 * afresh then. Calls read through one engine snapshot (on a leader, with
 * the writes it proposed and has not applied above it) and return their
 * writes; the node commits them. Everything runs on the node's loop
 * thread (the Lua thread that called core.serve), one hook at a time. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lauxlib.h"
#include "lkvlua.h"
#include "lkvnet.h"
#include "lua.h"
#include "lunakv.h"
#include "lunakv_funcs.h"
#include "lunakv_funcs_impl.h"

#define NODEFUNCS_MT "lunakv.nodefuncs"

/* the hooks' state (a userdata on the stack of core.serve) */
typedef struct NodeFuncs {
  lkvf_runtime *rt; /* NULL: build at the next use */
  char *cpath;      /* where the sandboxes find cjson */
  lkvf_limits lim;  /* the node's SCRIPT_MAX_* */
  lkv_buf getbuf;
} NodeFuncs;

/* {======================================================================
** JSON text, malloc'd
** ======================================================================= */

typedef struct Buf {
  char *p;
  size_t len, cap;
  int failed;
} Buf;

static void put(Buf *b, const char *s, size_t n) {
  if (b->failed) return;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    char *np;
    while (cap < b->len + n + 1) cap *= 2;
    if ((np = realloc(b->p, cap)) == NULL) {
      b->failed = 1;
      return;
    }
    b->p = np;
    b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void lit(Buf *b, const char *s) { put(b, s, strlen(s)); }

/* a JSON string (the bytes as they are, but for what must be escaped) */
static void str(Buf *b, const char *s) {
  lit(b, "\"");
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    char esc[8];
    if (c == '"' || c == '\\') {
      esc[0] = '\\';
      esc[1] = (char)c;
      put(b, esc, 2);
    } else if (c < 0x20) {
      snprintf(esc, sizeof esc, "\\u%04x", c);
      put(b, esc, 6);
    } else {
      put(b, (const char *)&c, 1);
    }
  }
  lit(b, "\"");
}

/* }====================================================================== */

static void fail(lkvnet_fn_answer *a, int status, const char *msg) {
  size_t n = strlen(msg);
  a->status = status;
  if (n >= sizeof a->error) n = sizeof a->error - 1; /* cut, never overrun */
  memcpy(a->error, msg, n);
  a->error[n] = '\0';
}

/* An lkvf_error as an answer: the script's or the caller's fault is a
 * 4xx (a limit names itself), the process's a 500. */
static void fail_funcs(lkvnet_fn_answer *a, const lkvf_error *e) {
  int status = 500;
  switch (e->code) {
    case LKVF_SCRIPT:
    case LKVF_BADARG: status = 400; break;
    case LKVF_UNKNOWN: status = 404; break;
    case LKVF_LIMIT:
      status = 400;
      a->limit = e->limit;
      break;
    default: break;
  }
  fail(a, status, e->msg);
}

/* The runtime over what db stores now: NULL after filling a 500 in a. */
static lkvf_runtime *runtime(NodeFuncs *f, lkv_db *db, lkvnet_fn_answer *a) {
  char msg[LKVF_MSG_LEN + LKVF_NAME_MAX + 96];
  if (f->rt != NULL) return f->rt;
  if ((f->rt = lkvf_runtime_new(f->cpath)) == NULL) {
    if (a) fail(a, 500, "out of memory: function runtime");
    return NULL;
  }
  if (lkvlua_funcs_fill(f->rt, db, &f->getbuf, msg, sizeof msg) != 0) {
    lkvf_runtime_free(f->rt);
    f->rt = NULL;
    if (a) fail(a, 500, msg);
    return NULL;
  }
  return f->rt;
}

/* {======================================================================
** The hooks
** ======================================================================= */

static void h_load(void *ctx, lkv_db *db, const char *name, size_t nlen,
                   const char *src, size_t slen, lkvnet_fn_answer *a) {
  NodeFuncs *f = ctx;
  lkvf_runtime *rt;
  lkvf_library *lib;
  lkvf_error e;
  char text[LKVF_LIMITS_TEXT_MAX];
  Buf b;
  size_t i;
  if (lkvf_check_name("library", name, nlen, &e) != LKVF_OK) {
    fail_funcs(a, &e);
    return;
  }
  if ((rt = runtime(f, db, a)) == NULL) return;
  /* compiled and run to see that it loads (and clashes with no other
   * library's names); installed by every node once its entry applies */
  if (lkvf_library_prepare(rt, name, nlen, src, slen, &f->lim, &lib, &e) !=
      LKVF_OK) {
    fail_funcs(a, &e);
    return;
  }
  memset(&b, 0, sizeof b);
  lit(&b, "[");
  for (i = 0; i < lib->nfuncs; i++) {
    if (i) lit(&b, ", ");
    str(&b, lib->funcs[i]);
  }
  lit(&b, "]");
  lkvf_library_discard(lib);
  a->limits_len = lkvf_limits_format(&f->lim, text);
  a->limits = malloc(a->limits_len + 1);
  if (b.failed || a->limits == NULL) {
    free(b.p);
    fail(a, 500, "out of memory");
    return;
  }
  memcpy(a->limits, text, a->limits_len + 1);
  a->json = b.p;
  a->json_len = b.len;
  a->status = 200;
}

static void h_list(void *ctx, lkv_db *db, lkvnet_fn_answer *a) {
  NodeFuncs *f = ctx;
  lkvf_runtime *rt = runtime(f, db, a);
  lkvf_library_info info;
  size_t i, j, n;
  Buf b;
  int first;
  if (rt == NULL) return;
  memset(&b, 0, sizeof b);
  lit(&b, "{\"libraries\": [");
  n = lkvf_library_count(rt);
  for (i = 0; i < n; i++) {
    lkvf_library_at(rt, i, &info);
    lit(&b, i ? ", {\"name\": " : "{\"name\": ");
    str(&b, info.name);
    lit(&b, ", \"functions\": [");
    for (j = 0; j < info.nfuncs; j++) {
      if (j) lit(&b, ", ");
      str(&b, info.funcs[j]);
    }
    lit(&b, "], \"read_only\": [");
    for (j = 0, first = 1; j < info.nfuncs; j++)
      if (info.read_only[j]) {
        if (!first) lit(&b, ", ");
        str(&b, info.funcs[j]);
        first = 0;
      }
    lit(&b, "]");
    if (info.error != NULL) {
      lit(&b, ", \"error\": ");
      str(&b, info.error);
    }
    lit(&b, "}");
  }
  lit(&b, "]}");
  if (b.failed) {
    free(b.p);
    fail(a, 500, "out of memory");
    return;
  }
  a->json = b.p;
  a->json_len = b.len;
  a->status = 200;
}

/* {======================================================================
** A leader's reads: the overlay above the engine
** ======================================================================= */

/* What a read-write call reads on a leader: the writes it proposed and
 * has not applied (lkvnet_overlay) above one engine snapshot. Together
 * they are the state with the whole log applied (lkvnet.h). */
typedef struct OvlBackend {
  lkvf_backend engine;
  const lkvnet_overlay *ov;
} OvlBackend;

typedef struct OvlScan {
  OvlBackend *be;
  void *cur; /* the engine's cursor */
  lkvnet_overlay_pos pos;
  char *hi; /* inclusive bound, malloc'd; NULL: open */
  size_t hilen;
  /* the next row of each side, looked at and not yet returned */
  int e_have, e_done, o_have, o_done, o_deleted;
  const char *ek, *ev, *ok, *ov;
  size_t ekl, evl, okl, ovl;
} OvlScan;

static int ovl_get(void *arg, const char *k, size_t klen, lkv_buf *val,
                   lkv_err *err) {
  OvlBackend *be = arg;
  const char *v;
  size_t vlen;
  int r = lkvnet_overlay_get(be->ov, k, klen, &v, &vlen);
  if (r < 0) return be->engine.get(be->engine.arg, k, klen, val, err);
  if (r == 0) return LKV_NOTFOUND;
  if (vlen + 1 > val->cap) {
    char *np = realloc(val->data, vlen + 1);
    if (np == NULL) return lkv_seterr(err, LKV_NOMEM, "a call's read");
    val->data = np;
    val->cap = vlen + 1;
  }
  if (vlen) memcpy(val->data, v, vlen);
  val->len = vlen;
  return LKV_OK;
}

static int ovl_scan_open(void *arg, const char *lo, size_t lolen,
                         const char *hi, size_t hilen, uint64_t limit,
                         void **cursor, lkv_err *err) {
  OvlBackend *be = arg;
  OvlScan *sc = calloc(1, sizeof *sc);
  int rc;
  if (sc == NULL || (hi != NULL && (sc->hi = malloc(hilen + 1)) == NULL)) {
    free(sc);
    return lkv_seterr(err, LKV_NOMEM, "scan of a stored function");
  }
  if (hi != NULL) memcpy(sc->hi, hi, hilen);
  sc->hilen = hilen;
  sc->be = be;
  /* a deletion above may hide any number of the engine's rows: no bound */
  rc = be->engine.scan_open(be->engine.arg, lo, lolen, hi, hilen,
                            lkvnet_overlay_empty(be->ov) ? limit : 0, &sc->cur,
                            err);
  if (rc != LKV_OK) {
    free(sc->hi);
    free(sc);
    return rc;
  }
  lkvnet_overlay_seek(be->ov, lo, lolen, &sc->pos);
  *cursor = sc;
  return LKV_OK;
}

/* The smaller key of the two sides' next rows; the overlay's when both
 * have it (newer); its deletions hide the engine's row and are skipped. */
static int ovl_scan_next(void *cursor, const char **k, size_t *klen,
                         const char **v, size_t *vlen, lkv_err *err) {
  OvlScan *sc = cursor;
  for (;;) {
    int c;
    if (!sc->e_have && !sc->e_done) {
      int rc = sc->be->engine.scan_next(sc->cur, &sc->ek, &sc->ekl, &sc->ev,
                                        &sc->evl, err);
      if (rc == LKV_OK)
        sc->e_have = 1;
      else if (rc == LKV_NOTFOUND)
        sc->e_done = 1;
      else
        return rc;
    }
    if (!sc->o_have && !sc->o_done) {
      if (lkvnet_overlay_next(sc->be->ov, &sc->pos, &sc->ok, &sc->okl, &sc->ov,
                              &sc->ovl, &sc->o_deleted) &&
          (sc->hi == NULL ||
           lkv_key_compare(sc->ok, sc->okl, sc->hi, sc->hilen) <= 0))
        sc->o_have = 1;
      else
        sc->o_done = 1;
    }
    if (!sc->e_have && !sc->o_have) return LKV_NOTFOUND;
    c = !sc->o_have   ? -1
        : !sc->e_have ? 1
                      : lkv_key_compare(sc->ek, sc->ekl, sc->ok, sc->okl);
    if (c < 0) {
      sc->e_have = 0;
      *k = sc->ek;
      *klen = sc->ekl;
      *v = sc->ev;
      *vlen = sc->evl;
      return LKV_OK;
    }
    if (c == 0) sc->e_have = 0;
    sc->o_have = 0;
    if (sc->o_deleted) continue;
    *k = sc->ok;
    *klen = sc->okl;
    *v = sc->ov;
    *vlen = sc->ovl;
    return LKV_OK;
  }
}

static void ovl_scan_close(void *cursor) {
  OvlScan *sc = cursor;
  sc->be->engine.scan_close(sc->cur);
  free(sc->hi);
  free(sc);
}

/* }====================================================================== */

static int h_kind(void *ctx, lkv_db *db, const char *name, size_t nlen) {
  NodeFuncs *f = ctx;
  lkvf_runtime *rt = runtime(f, db, NULL);
  return rt == NULL ? -1 : lkvf_function_read_only(rt, name, nlen);
}

static void h_call(void *ctx, lkv_db *db, const lkvnet_overlay *ov,
                   const char *name, size_t nlen, const char *args, size_t alen,
                   lkvnet_fn_answer *a) {
  NodeFuncs *f = ctx;
  lkvf_runtime *rt = runtime(f, db, a);
  lkv_snapshot *snap = NULL;
  lkvf_result *res;
  lkvf_backend be;
  OvlBackend obe;
  lkvf_error e;
  lkv_err err;
  void *arg[2];
  size_t i;
  int rc;
  if (rt == NULL) return;
  if ((res = calloc(1, sizeof *res)) == NULL) {
    fail(a, 500, "out of memory");
    return;
  }
  err.msg[0] = '\0';
  if (lkv_snapshot_new(db, &snap, &err) != LKV_OK) {
    free(res);
    fail(a, 500, err.msg);
    return;
  }
  lkvlua_funcs_backend(&be, arg, db, snap);
  if (ov != NULL && !lkvnet_overlay_empty(ov)) {
    obe.engine = be;
    obe.ov = ov;
    be.arg = &obe;
    be.get = ovl_get;
    be.scan_open = ovl_scan_open;
    be.scan_next = ovl_scan_next;
    be.scan_close = ovl_scan_close;
  }
  rc = lkvf_call(rt, name, nlen, args, alen, &be, &f->lim, res, &e);
  lkv_snapshot_release(snap);
  if (rc != LKVF_OK) {
    free(res);
    fail_funcs(a, &e);
    return;
  }
  if (res->nwrites > 0 &&
      (a->writes = calloc(res->nwrites, sizeof *a->writes)) == NULL) {
    lkvf_result_free(res);
    free(res);
    fail(a, 500, "out of memory");
    return;
  }
  for (i = 0; i < res->nwrites; i++) {
    const lkvf_write *w = &res->writes[i];
    a->writes[i].op = w->op == LKVF_SET ? LKVNET_FN_SET : LKVNET_FN_DELETE;
    a->writes[i].key = w->key;
    a->writes[i].klen = w->klen;
    a->writes[i].val = w->val;
    a->writes[i].vlen = w->op == LKVF_SET ? w->vlen : 0;
  }
  a->nwrites = res->nwrites;
  a->json = res->json;
  a->json_len = res->json_len;
  a->priv = res; /* owns the writes' bytes and the json */
  a->status = 200;
}

static void h_changed(void *ctx) {
  NodeFuncs *f = ctx;
  if (f->rt != NULL) lkvf_runtime_free(f->rt);
  f->rt = NULL;
}

static void h_answer_free(void *ctx, lkvnet_fn_answer *a) {
  (void)ctx;
  if (a->priv != NULL) {
    lkvf_result_free(a->priv); /* frees the json too */
    free(a->priv);
  } else {
    free(a->json);
  }
  free(a->limits);
  free(a->writes);
  memset(a, 0, sizeof *a);
}

/* }====================================================================== */

static int nodefuncs_gc(lua_State *L) {
  NodeFuncs *f = luaL_checkudata(L, 1, NODEFUNCS_MT);
  h_changed(f);
  free(f->cpath);
  f->cpath = NULL;
  lkv_buf_free(&f->getbuf);
  return 0;
}

void lkvlua_nodefuncs_push(lua_State *L, int t, struct lkvnet_functions *out) {
  size_t n, i;
  const lkv_option_spec *schema = lkvf_limits_schema(&n);
  NodeFuncs *f;
  lkv_err err;
  const char *cpath;
  f = lua_newuserdatauv(L, sizeof *f, 0); /* +1 */
  memset(f, 0, sizeof *f);
  if (luaL_newmetatable(L, NODEFUNCS_MT)) { /* +1 */
    lua_pushcfunction(L, nodefuncs_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2); /* -1 */
  lkvf_limits_init(&f->lim);
  for (i = 0; i < n; i++) {
    if (lua_getfield(L, t, schema[i].name) != LUA_TNIL) { /* +1 */
      int isint;
      lua_Integer v = lua_tointegerx(L, -1, &isint);
      if (!isint) opterror(L, t, schema[i].name, "must be an integer");
      if (v < (lua_Integer)schema[i].min || v > (lua_Integer)schema[i].max)
        opterror(L, t, schema[i].name,
                 lua_pushfstring(L, "must be from %I to %I",
                                 (lua_Integer)schema[i].min,
                                 (lua_Integer)schema[i].max));
      lkv_option_set(&schema[i], &f->lim, (uint64_t)v);
    }
    lua_pop(L, 1); /* -1 */
  }
  err.msg[0] = '\0';
  if (lkv_schema_check(schema, n, &f->lim, &err) != LKV_OK)
    luaL_argerror(L, t, err.msg);
  lua_getglobal(L, "package");  /* +1 */
  lua_getfield(L, -1, "cpath"); /* +1 */
  cpath = lua_tostring(L, -1);
  if (cpath != NULL && (f->cpath = strdup(cpath)) == NULL)
    luaL_error(L, "lunakv: out of memory");
  lua_pop(L, 2); /* -2 */
  memset(out, 0, sizeof *out);
  out->ctx = f;
  out->load = h_load;
  out->list = h_list;
  out->kind = h_kind;
  out->call = h_call;
  out->changed = h_changed;
  out->answer_free = h_answer_free;
}
