/* lunakv_core.c - the Lua 5.4 binding of lunakv.h: the module "lunakv.core".
 *
 * Shaped like Lua's liolib.c: one userdata type per engine handle
 * ("lunakv.db", "lunakv.snapshot", "lunakv.iter", "lunakv.batch", and
 * "lunakv.bench" for benchmark jobs), each
 * created already closed before the handle is acquired, one accessor per
 * type that raises on a closed handle, an idempotent close shared by
 * close(), __close and __gc, and __tostring showing the state.
 *
 * Errors raise (STYLE.md, "At the Lua boundary: raise"): bad arguments are
 * argument errors; engine failures raise "lunakv: <kind>: <detail>" with the
 * engine's own sentence; closed handles raise "lunakv: <type> is closed".
 * No error is ever raised while this file holds C memory or an engine
 * handle that no userdata owns.
 *
 * Lifetime: a child (snapshot, iterator, batch) holds its db userdata in
 * user value 1, so the db block outlives it whatever the collection order.
 * The db keeps its open children on an intrusive list; db:close() closes
 * them first, since lkv_db_close refuses while iterators or snapshots live.
 *
 * Beside the engine: core.serve (an HTTP node, lkvnet.h), the HTTP client
 * core.http_request / core.http_bench (httpc.h), and the few process
 * functions orchestration needs (core.spawn, kill, pid_alive, sleep,
 * mkdir, getcwd), so `lunakv cluster` runs no shell strings.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lauxlib.h"
#include "lua.h"

#include "lkvlua.h"
#include "lunakv.h"
#include "httpc.h"
#include "lkvnet.h"

/* The one exported symbol (-fvisibility=hidden hides everything else). */
__attribute__((visibility("default"))) int luaopen_lunakv_core(lua_State *L);

#define DB_MT "lunakv.db"
#define SNAP_MT "lunakv.snapshot"
#define ITER_MT "lunakv.iter"
#define BATCH_MT "lunakv.batch"
#define BENCH_MT "lunakv.bench"
#define BOX_MT "lunakv.box" /* private: malloc'd scratch freed by __gc */

/* A get keeps its value buffer for the next get unless it grew past this:
 * one huge value must not pin its size for the life of the db. */
#define GETBUF_KEEP_BYTES ((size_t)1 << 20)

/* {======================================================================
** Handles and their lists
** ======================================================================= */

typedef struct LDb LDb;
typedef struct Child Child;

/* The common head of every child userdata. */
struct Child {
  Child *prev, *next;         /* on owner->children while open */
  LDb *owner;                 /* the db block; alive through user value 1 */
  void (*release)(Child *c);  /* frees the engine handle; NULL = closed */
};

struct LDb {
  lkv_db *db;       /* NULL once closed */
  lkv_buf getbuf;   /* reused by every get, freed at close */
  Child *children;  /* open snapshots, iterators and batches */
};

typedef struct LSnap {
  Child c;
  lkv_snapshot *snap; /* NULL once released */
  uint64_t seq;       /* kept after release: s.seq stays readable */
} LSnap;

typedef struct LIter {
  Child c;
  lkv_iter *it; /* NULL once closed */
  int started;  /* scan: the first step reads where the seek landed */
  int done;     /* scan: ran to its end (closed by us, not by the user) */
} LIter;

typedef struct LBatch {
  Child c;
  lkv_batch *b; /* NULL once closed */
} LBatch;

static void child_link(LDb *d, Child *c, void (*release)(Child *)) {
  c->release = release;
  c->prev = NULL;
  c->next = d->children;
  if (d->children != NULL) d->children->prev = c;
  d->children = c;
}

/* Unlink and free the engine handle; a no-op on a closed child. */
static void child_close(Child *c) {
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

static void snap_free_handle(Child *c) {
  LSnap *s = (LSnap *)c;
  lkv_snapshot_release(s->snap);
  s->snap = NULL;
}

static void iter_free_handle(Child *c) {
  LIter *p = (LIter *)c;
  lkv_iter_free(p->it);
  p->it = NULL;
}

static void batch_free_handle(Child *c) {
  LBatch *b = (LBatch *)c;
  lkv_batch_free(b->b);
  b->b = NULL;
}

/* Push a new, closed child of the db at stack index dbidx. */
static void *newchild(lua_State *L, size_t size, const char *mt, int dbidx,
                      LDb *d) {
  Child *c = (Child *)lua_newuserdatauv(L, size, 1); /* +1 child */
  memset(c, 0, size);
  c->owner = d;
  luaL_setmetatable(L, mt);
  lua_pushvalue(L, dbidx); /* +1 db */
  lua_setiuservalue(L, -2, 1); /* -1: the child keeps its db alive */
  return c;
}

/* }====================================================================== */

/* {======================================================================
** Errors and arguments
** ======================================================================= */

/* Raise the engine's sentence. err lives on the caller's C stack; luaL_error
 * copies it into a Lua string before it jumps. */
static int raise_err(lua_State *L, int rc, lkv_err *err) {
  err->msg[LKV_ERR_MSG_LEN - 1] = '\0';
  return luaL_error(L, "lunakv: %s",
                    err->msg[0] != '\0' ? err->msg : lkv_strerror(rc));
}

static int closed_error(lua_State *L, const Child *c, const char *what) {
  if (c->owner == NULL || c->owner->db == NULL)
    return luaL_error(L, "lunakv: db is closed");
  return luaL_error(L, "lunakv: %s is closed", what);
}

/* Keys and values are strings only: a number is refused, not coerced. */
static const char *checkbytes(lua_State *L, int arg, size_t *len) {
  luaL_argexpected(L, lua_type(L, arg) == LUA_TSTRING, arg, "string");
  return lua_tolstring(L, arg, len);
}

/* An optional range bound: NULL when nil or absent (an open end). */
static const char *optbytes(lua_State *L, int arg, size_t *len) {
  if (lua_isnoneornil(L, arg)) return NULL;
  return checkbytes(L, arg, len);
}

/* An optional sequence number: nil or absent reads the newest version. */
static uint64_t optseq(lua_State *L, int arg) {
  lua_Integer n;
  if (lua_isnoneornil(L, arg)) return LKV_SEQ_LATEST;
  n = luaL_checkinteger(L, arg);
  luaL_argcheck(L, n >= 0, arg, "sequence number must be >= 0");
  return (uint64_t)n;
}

/* }====================================================================== */

/* {======================================================================
** Accessors: one per type, each raising on a closed handle
** ======================================================================= */

/* Every method and metamethod of a class has the class metatable as
 * upvalue 1 (snapshot __index: upvalue 2). Comparing against it is
 * luaL_checkudata without the registry lookup by name, which costs more
 * than an engine get from the memtable. */
#define SELF_MT lua_upvalueindex(1)

static void *checkself(lua_State *L, int mtidx, const char *tname) {
  void *p = lua_touserdata(L, 1);
  if (p == NULL || !lua_getmetatable(L, 1)) /* +1 mt, when it has one */
    luaL_typeerror(L, 1, tname);
  if (!lua_rawequal(L, -1, mtidx)) luaL_typeerror(L, 1, tname);
  lua_pop(L, 1); /* -1 mt */
  return p;
}

static LDb *todb(lua_State *L) {
  LDb *d = (LDb *)checkself(L, SELF_MT, DB_MT);
  if (d->db == NULL) luaL_error(L, "lunakv: db is closed");
  return d;
}

static LSnap *tosnap(lua_State *L) {
  LSnap *s = (LSnap *)checkself(L, SELF_MT, SNAP_MT);
  if (s->snap == NULL) closed_error(L, &s->c, "snapshot");
  return s;
}

static LIter *toiter(lua_State *L) {
  LIter *p = (LIter *)checkself(L, SELF_MT, ITER_MT);
  if (p->it == NULL) closed_error(L, &p->c, "iter");
  return p;
}

static LBatch *tobatch(lua_State *L) {
  LBatch *b = (LBatch *)checkself(L, SELF_MT, BATCH_MT);
  if (b->b == NULL) closed_error(L, &b->c, "batch");
  return b;
}

/* }====================================================================== */

/* {======================================================================
** Reads shared by db and snapshot
** ======================================================================= */

/* key at arg 2; pushes the value or nil. */
static int do_get(lua_State *L, LDb *d, uint64_t at) {
  size_t klen;
  const char *key = checkbytes(L, 2, &klen);
  lkv_err err;
  int rc;
  err.msg[0] = '\0';
  rc = lkv_db_get(d->db, key, klen, at, &d->getbuf, &err);
  if (rc == LKV_OK) {
    lua_pushlstring(L, d->getbuf.data, d->getbuf.len); /* +1 copy */
    if (d->getbuf.cap > GETBUF_KEEP_BYTES) lkv_buf_free(&d->getbuf);
    return 1;
  }
  if (rc == LKV_NOTFOUND) {
    lua_pushnil(L);
    return 1;
  }
  return raise_err(L, rc, &err);
}

/* Push a new open iterator at `at`, owned by the db at dbidx. */
static LIter *newiter(lua_State *L, LDb *d, int dbidx, uint64_t at) {
  LIter *p = (LIter *)newchild(L, sizeof *p, ITER_MT, dbidx, d); /* +1 */
  lkv_iter *it = NULL;
  lkv_err err;
  int rc;
  err.msg[0] = '\0';
  rc = lkv_iter_new(d->db, at, &it, &err);
  if (rc != LKV_OK) raise_err(L, rc, &err);
  p->it = it;
  child_link(d, &p->c, iter_free_handle);
  return p;
}

/* A scan has run out (or failed): free the iterator, raise its error. */
static int scan_finish(lua_State *L, LIter *p) {
  lkv_err err;
  int rc;
  err.msg[0] = '\0';
  rc = lkv_iter_status(p->it, &err);
  p->done = 1;
  child_close(&p->c);
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
  if (!lkv_iter_valid(it)) { /* every key is below hi */
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
static int do_scan(lua_State *L, LDb *d, int dbidx, uint64_t at, int down) {
  size_t lolen = 0, hilen = 0;
  const char *lo = optbytes(L, 2, &lolen);
  const char *hi = optbytes(L, 3, &hilen);
  int end = down ? 2 : 3; /* the argument holding the bound that ends it */
  LIter *p;
  p = newiter(L, d, dbidx, at); /* +1 iter */
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
    lua_pushvalue(L, end);             /* +1 bound (upvalue 2) */
  lua_pushboolean(L, down);            /* +1 direction (upvalue 3) */
  lua_pushcclosure(L, scan_step, 3);   /* -3 +1 step */
  lua_pushnil(L);                      /* +1 state */
  lua_pushnil(L);                      /* +1 control */
  lua_pushvalue(L, -4);                /* +1 closing value: the iter */
  return 4;
}

/* }====================================================================== */

/* {======================================================================
** lunakv.db
** ======================================================================= */

static int db_set(lua_State *L) {
  LDb *d = todb(L);
  size_t klen, vlen;
  const char *key = checkbytes(L, 2, &klen);
  const char *val = checkbytes(L, 3, &vlen);
  uint64_t seq = 0;
  lkv_err err;
  int rc;
  err.msg[0] = '\0';
  rc = lkv_db_set(d->db, key, klen, val, vlen, &seq, &err);
  if (rc != LKV_OK) return raise_err(L, rc, &err);
  lua_pushinteger(L, (lua_Integer)seq);
  return 1;
}

static int db_get(lua_State *L) {
  LDb *d = todb(L);
  return do_get(L, d, optseq(L, 3));
}

static int db_delete(lua_State *L) {
  LDb *d = todb(L);
  size_t klen;
  const char *key = checkbytes(L, 2, &klen);
  uint64_t seq = 0;
  lkv_err err;
  int rc;
  err.msg[0] = '\0';
  rc = lkv_db_delete(d->db, key, klen, &seq, &err);
  if (rc != LKV_OK) return raise_err(L, rc, &err);
  lua_pushinteger(L, (lua_Integer)seq);
  return 1;
}

static int db_scan(lua_State *L) {
  LDb *d = todb(L);
  return do_scan(L, d, 1, optseq(L, 4), 0);
}

static int db_rscan(lua_State *L) {
  LDb *d = todb(L);
  return do_scan(L, d, 1, optseq(L, 4), 1);
}

static int db_iter(lua_State *L) {
  LDb *d = todb(L);
  newiter(L, d, 1, optseq(L, 2));
  return 1;
}

static int db_snapshot(lua_State *L) {
  LDb *d = todb(L);
  LSnap *s = (LSnap *)newchild(L, sizeof *s, SNAP_MT, 1, d); /* +1 */
  lkv_snapshot *snap = NULL;
  lkv_err err;
  int rc;
  err.msg[0] = '\0';
  rc = lkv_snapshot_new(d->db, &snap, &err);
  if (rc != LKV_OK) return raise_err(L, rc, &err);
  s->snap = snap;
  s->seq = lkv_snapshot_seq(snap);
  child_link(d, &s->c, snap_free_handle);
  return 1;
}

static int db_batch(lua_State *L) {
  LDb *d = todb(L);
  LBatch *b = (LBatch *)newchild(L, sizeof *b, BATCH_MT, 1, d); /* +1 */
  b->b = lkv_batch_new();
  if (b->b == NULL) return luaL_error(L, "lunakv: out of memory: new batch");
  child_link(d, &b->c, batch_free_handle);
  return 1;
}

static int db_last_seq(lua_State *L) {
  LDb *d = todb(L);
  lua_pushinteger(L, (lua_Integer)lkv_db_last_seq(d->db));
  return 1;
}

static int db_flush(lua_State *L) {
  LDb *d = todb(L);
  lkv_err err;
  int rc;
  err.msg[0] = '\0';
  rc = lkv_db_flush(d->db, &err);
  if (rc != LKV_OK) return raise_err(L, rc, &err);
  return 0;
}

/* db:sync(): every write so far durable (one fdatasync), whatever SYNC. */
static int db_sync(lua_State *L) {
  LDb *d = todb(L);
  lkv_err err;
  int rc;
  err.msg[0] = '\0';
  rc = lkv_db_sync(d->db, &err);
  if (rc != LKV_OK) return raise_err(L, rc, &err);
  return 0;
}

static int db_compact(lua_State *L) {
  LDb *d = todb(L);
  lkv_err err;
  int rc;
  err.msg[0] = '\0';
  rc = lkv_db_compact(d->db, &err);
  if (rc != LKV_OK) return raise_err(L, rc, &err);
  return 0;
}

static void setint(lua_State *L, const char *name, uint64_t v) {
  lua_pushinteger(L, (lua_Integer)v);
  lua_setfield(L, -2, name);
}

/* t[name] = { v[0], ..., v[LKV_MAX_LEVELS-1] }: index 1 is L0. */
static void setlevels(lua_State *L, const char *name, const uint64_t *v) {
  int i;
  lua_createtable(L, LKV_MAX_LEVELS, 0); /* +1 */
  for (i = 0; i < LKV_MAX_LEVELS; i++) {
    lua_pushinteger(L, (lua_Integer)v[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, name); /* -1 */
}

static int db_stats(lua_State *L) {
  LDb *d = todb(L);
  lkv_stats st;
  memset(&st, 0, sizeof st);
  lkv_db_stats(d->db, &st);
  lua_createtable(L, 0, 35);
  setint(L, "seq", st.seq);
  setint(L, "sstable_count", st.sstable_count);
  setlevels(L, "sstables_per_level", st.sstables_per_level);
  setlevels(L, "bytes_per_level", st.bytes_per_level);
  setint(L, "total_size_bytes", st.total_size_bytes);
  setint(L, "memtable_size_bytes", st.memtable_size_bytes);
  setint(L, "memtable_keys", st.memtable_keys);
  setint(L, "imm_memtables", st.imm_memtables);
  setint(L, "wal_size_bytes", st.wal_size_bytes);
  setint(L, "bytes_written_user", st.bytes_written_user);
  setint(L, "bytes_written_disk", st.bytes_written_disk);
  setint(L, "bytes_written_wal", st.bytes_written_wal);
  lua_pushnumber(L, (lua_Number)st.write_amplification);
  lua_setfield(L, -2, "write_amplification");
  setint(L, "flushes", st.flushes);
  setint(L, "compactions", st.compactions);
  setint(L, "seek_compactions", st.seek_compactions);
  setint(L, "compaction_pending", st.compaction_pending);
  setint(L, "compaction_bytes_read", st.compaction_bytes_read);
  setint(L, "compaction_bytes_written", st.compaction_bytes_written);
  setlevels(L, "bytes_written_per_level", st.bytes_written_per_level);
  setint(L, "stall_slowdowns", st.stall_slowdowns);
  setint(L, "stall_stops", st.stall_stops);
  setint(L, "stall_micros", st.stall_micros);
  setint(L, "bloom_checks", st.bloom_checks);
  setint(L, "bloom_negatives", st.bloom_negatives);
  setint(L, "block_reads", st.block_reads);
  setint(L, "block_cache_hits", st.block_cache_hits);
  setint(L, "block_cache_bytes", st.block_cache_bytes);
  setint(L, "live_snapshots", st.live_snapshots);
  setint(L, "live_iterators", st.live_iterators);
  setint(L, "wal_syncs", st.wal_syncs);
  setint(L, "wal_dropped_bytes", st.wal_dropped_bytes);
  if (st.recovery_msg[0] != '\0') {
    st.recovery_msg[LKV_ERR_MSG_LEN - 1] = '\0';
    lua_pushstring(L, st.recovery_msg);
    lua_setfield(L, -2, "recovery");
  }
  if (st.bg_error != LKV_OK) {
    st.bg_error_msg[LKV_ERR_MSG_LEN - 1] = '\0';
    lua_pushstring(L, st.bg_error_msg[0] != '\0' ? st.bg_error_msg
                                                 : lkv_strerror(st.bg_error));
    lua_setfield(L, -2, "bg_error");
  }
  return 1;
}

/* db:tables() gathers the engine's callbacks into malloc'd scratch owned by
 * a "lunakv.box" userdata (the callback may not call Lua: an error there
 * would jump out of the engine), then builds the Lua tables from it. If
 * building raises, the box's __gc frees the scratch. */
typedef struct Box {
  char *p;
  size_t len, cap;
  int oom;
} Box;

typedef struct TableRec {
  int level;
  uint64_t number, size;
  size_t smallest_len, largest_len;
} TableRec;

static int box_gc(lua_State *L) {
  Box *b = (Box *)luaL_checkudata(L, 1, BOX_MT);
  free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
  return 0;
}

static void box_put(Box *b, const void *src, size_t n) {
  size_t cap;
  char *p;
  if (b->oom || n == 0) return;
  if (b->cap - b->len < n) {
    cap = b->cap ? b->cap : 256;
    while (cap - b->len < n) {
      if (cap > SIZE_MAX / 2) {
        b->oom = 1;
        return;
      }
      cap *= 2;
    }
    p = (char *)realloc(b->p, cap);
    if (p == NULL) {
      b->oom = 1;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, src, n);
  b->len += n;
}

static void tables_cb(void *ctx, int level, uint64_t number, uint64_t size,
                      const char *smallest, size_t smallest_len,
                      const char *largest, size_t largest_len) {
  Box *b = (Box *)ctx;
  TableRec r;
  memset(&r, 0, sizeof r);
  r.level = level;
  r.number = number;
  r.size = size;
  r.smallest_len = smallest_len;
  r.largest_len = largest_len;
  box_put(b, &r, sizeof r);
  box_put(b, smallest, smallest_len);
  box_put(b, largest, largest_len);
}

static int db_tables(lua_State *L) {
  LDb *d = todb(L);
  Box *b = (Box *)lua_newuserdatauv(L, sizeof *b, 0); /* +1 box */
  size_t off = 0;
  int n = 0;
  memset(b, 0, sizeof *b);
  luaL_setmetatable(L, BOX_MT);
  lkv_db_tables(d->db, tables_cb, b);
  if (b->oom) {
    free(b->p);
    b->p = NULL;
    return luaL_error(L, "lunakv: out of memory: listing tables");
  }
  lua_newtable(L); /* +1 result */
  while (off < b->len) {
    TableRec r;
    memcpy(&r, b->p + off, sizeof r);
    off += sizeof r;
    lua_createtable(L, 0, 5); /* +1 entry */
    lua_pushinteger(L, r.level);
    lua_setfield(L, -2, "level");
    lua_pushinteger(L, (lua_Integer)r.number);
    lua_setfield(L, -2, "number");
    lua_pushinteger(L, (lua_Integer)r.size);
    lua_setfield(L, -2, "size");
    lua_pushlstring(L, b->p + off, r.smallest_len);
    lua_setfield(L, -2, "smallest");
    off += r.smallest_len;
    lua_pushlstring(L, b->p + off, r.largest_len);
    lua_setfield(L, -2, "largest");
    off += r.largest_len;
    lua_rawseti(L, -2, ++n); /* -1 entry */
  }
  free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
  return 1;
}

/* Close the children, then the db. LKV_BUSY leaves the db open (the engine
 * still saw live handles); any other result frees it. */
static int db_shutdown(LDb *d, lkv_err *err) {
  int rc;
  if (d->db == NULL) return LKV_OK;
  while (d->children != NULL) child_close(d->children);
  rc = lkv_db_close(d->db, err);
  if (rc == LKV_BUSY) return rc;
  d->db = NULL;
  lkv_buf_free(&d->getbuf);
  return rc;
}

static int db_close(lua_State *L) {
  LDb *d = (LDb *)checkself(L, SELF_MT, DB_MT);
  lkv_err err;
  int rc;
  err.msg[0] = '\0';
  rc = db_shutdown(d, &err);
  if (rc != LKV_OK) return raise_err(L, rc, &err);
  return 0;
}

/* __gc and __close. __gc is called with the object alone and must not
 * raise; __close(db, nil) ends a scope normally and reports a failed close
 * (a lost final WAL write must not pass silently); __close(db, errobj)
 * runs while an error unwinds, and keeps that error. */
static int db_gc(lua_State *L) {
  LDb *d = (LDb *)checkself(L, SELF_MT, DB_MT);
  lkv_err err;
  int rc;
  err.msg[0] = '\0';
  rc = db_shutdown(d, &err);
  if (rc != LKV_OK && lua_gettop(L) >= 2 && lua_isnil(L, 2))
    return raise_err(L, rc, &err);
  return 0;
}

static int db_tostring(lua_State *L) {
  LDb *d = (LDb *)checkself(L, SELF_MT, DB_MT);
  const char *dir;
  lua_getiuservalue(L, 1, 1); /* +1 dir */
  dir = lua_tostring(L, -1);
  lua_pushfstring(L, "lunakv.db (%s, %s)", dir ? dir : "?",
                  d->db != NULL ? "open" : "closed");
  return 1;
}

/* }====================================================================== */

/* {======================================================================
** lunakv.snapshot
** ======================================================================= */

static int snap_get(lua_State *L) {
  LSnap *s = tosnap(L);
  return do_get(L, s->c.owner, s->seq);
}

static int snap_scan_dir(lua_State *L, int down) {
  LSnap *s = tosnap(L);
  int dbidx;
  lua_settop(L, 3);
  lua_getiuservalue(L, 1, 1); /* +1 db */
  dbidx = lua_gettop(L);
  return do_scan(L, s->c.owner, dbidx, s->seq, down);
}

static int snap_scan(lua_State *L) { return snap_scan_dir(L, 0); }
static int snap_rscan(lua_State *L) { return snap_scan_dir(L, 1); }

static int snap_iter(lua_State *L) {
  LSnap *s = tosnap(L);
  lua_getiuservalue(L, 1, 1); /* +1 db */
  newiter(L, s->c.owner, lua_gettop(L), s->seq);
  return 1;
}

static int snap_release(lua_State *L) {
  LSnap *s = (LSnap *)checkself(L, SELF_MT, SNAP_MT);
  child_close(&s->c);
  return 0;
}

/* s.seq reads the pinned sequence number; other keys are methods. */
static int snap_index(lua_State *L) {
  LSnap *s = (LSnap *)checkself(L, lua_upvalueindex(2), SNAP_MT);
  size_t len;
  const char *k;
  if (lua_type(L, 2) == LUA_TSTRING) {
    k = lua_tolstring(L, 2, &len);
    if (len == 3 && memcmp(k, "seq", 3) == 0) {
      lua_pushinteger(L, (lua_Integer)s->seq);
      return 1;
    }
  }
  lua_pushvalue(L, 2);
  lua_rawget(L, lua_upvalueindex(1)); /* methods[k] */
  return 1;
}

static int snap_tostring(lua_State *L) {
  LSnap *s = (LSnap *)checkself(L, SELF_MT, SNAP_MT);
  if (s->snap == NULL)
    lua_pushfstring(L, "lunakv.snapshot (seq %I, closed)", (lua_Integer)s->seq);
  else
    lua_pushfstring(L, "lunakv.snapshot (seq %I)", (lua_Integer)s->seq);
  return 1;
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
    return luaL_error(L, "lunakv: iter:%s() needs a valid iterator "
                         "(seek first, and stop when valid() is false)", name);
  step(p->it);
  return iter_moved(L, p);
}

static int iter_next(lua_State *L) { return iter_step(L, lkv_iter_next, "next"); }
static int iter_prev(lua_State *L) { return iter_step(L, lkv_iter_prev, "prev"); }

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

static int iter_key(lua_State *L) {
  LIter *p = toiter(L);
  size_t len;
  const char *k;
  if (!lkv_iter_valid(p->it)) {
    lua_pushnil(L);
    return 1;
  }
  k = lkv_iter_key(p->it, &len);
  lua_pushlstring(L, k, len);
  return 1;
}

static int iter_value(lua_State *L) {
  LIter *p = toiter(L);
  size_t len;
  const char *v;
  if (!lkv_iter_valid(p->it)) {
    lua_pushnil(L);
    return 1;
  }
  v = lkv_iter_value(p->it, &len);
  lua_pushlstring(L, v, len);
  return 1;
}

/* close(), __close and __gc. */
static int iter_close(lua_State *L) {
  LIter *p = (LIter *)checkself(L, SELF_MT, ITER_MT);
  child_close(&p->c);
  return 0;
}

static int iter_tostring(lua_State *L) {
  LIter *p = (LIter *)checkself(L, SELF_MT, ITER_MT);
  const char *state = p->it == NULL            ? "closed"
                      : lkv_iter_valid(p->it) ? "valid"
                                              : "not valid";
  lua_pushfstring(L, "lunakv.iter (%s)", state);
  return 1;
}

/* }====================================================================== */

/* {======================================================================
** lunakv.batch
** ======================================================================= */

static int batch_set(lua_State *L) {
  LBatch *b = tobatch(L);
  size_t klen, vlen;
  const char *key = checkbytes(L, 2, &klen);
  const char *val = checkbytes(L, 3, &vlen);
  lkv_err err;
  int rc;
  err.msg[0] = '\0';
  rc = lkv_batch_set(b->b, key, klen, val, vlen, &err);
  if (rc != LKV_OK) return raise_err(L, rc, &err);
  lua_settop(L, 1);
  return 1; /* the batch, for chaining */
}

static int batch_delete(lua_State *L) {
  LBatch *b = tobatch(L);
  size_t klen;
  const char *key = checkbytes(L, 2, &klen);
  lkv_err err;
  int rc;
  err.msg[0] = '\0';
  rc = lkv_batch_delete(b->b, key, klen, &err);
  if (rc != LKV_OK) return raise_err(L, rc, &err);
  lua_settop(L, 1);
  return 1;
}

static int batch_count(lua_State *L) {
  LBatch *b = tobatch(L);
  lua_pushinteger(L, (lua_Integer)lkv_batch_count(b->b));
  return 1;
}

static int batch_clear(lua_State *L) {
  LBatch *b = tobatch(L);
  lkv_batch_clear(b->b);
  return 0;
}

/* Apply atomically; on success the batch is emptied for reuse, on failure
 * it is left as it was so the caller may retry. */
static int batch_commit(lua_State *L) {
  LBatch *b = tobatch(L);
  uint64_t seq = 0;
  lkv_err err;
  int rc;
  err.msg[0] = '\0';
  /* an open batch has an open db: db:close() closes its batches */
  rc = lkv_db_write(b->c.owner->db, b->b, &seq, &err);
  if (rc != LKV_OK) return raise_err(L, rc, &err);
  lkv_batch_clear(b->b);
  lua_pushinteger(L, (lua_Integer)seq);
  return 1;
}

/* close(), __close and __gc. */
static int batch_close(lua_State *L) {
  LBatch *b = (LBatch *)checkself(L, SELF_MT, BATCH_MT);
  child_close(&b->c);
  return 0;
}

static int batch_tostring(lua_State *L) {
  LBatch *b = (LBatch *)checkself(L, SELF_MT, BATCH_MT);
  if (b->b == NULL)
    lua_pushliteral(L, "lunakv.batch (closed)");
  else
    lua_pushfstring(L, "lunakv.batch (%I ops)",
                    (lua_Integer)lkv_batch_count(b->b));
  return 1;
}

/* }====================================================================== */

/* {======================================================================
** Benchmark jobs and process helpers: core.bench, core.clock, core.ncpu,
** core.isatty, core.interrupts
**
** core.bench(db, spec) runs one named workload against db on `threads`
** real pthreads and returns a "lunakv.bench" job at once; the Lua thread
** polls it with job:wait(timeout) (to draw progress) and reads job:result().
** The workers call only the engine (no Lua), record their first error in
** the job, and count finished operations in an atomic the Lua thread
** reads. A job is a child of its db: db:close() stops and joins it first,
** so no worker ever runs against a closed db. All job memory hangs off the
** userdata, so raising with a job alive leaks nothing (__gc joins, frees).
** ======================================================================= */

#define BENCH_MAX_THREADS 256
#define BENCH_MAX_KEY 1024
#define BENCH_MAX_VALUE ((size_t)1 << 20)
#define BENCH_SEEK_NEXTS 0 /* seekrandom reads the entry it lands on */
#define BENCH_COUNT_EVERY 1024 /* ops between updates of the shared count */

enum {
  BK_FILLSEQ,
  BK_FILLRANDOM,
  BK_OVERWRITE,
  BK_READRANDOM,
  BK_READMISSING,
  BK_READSEQ,
  BK_SEEKRANDOM,
  BK_WRITES,
  BK_READS,
  BK_MISSES
};

static const char *const bench_kinds[] = {
    "fillseq",    "fillrandom", "overwrite", "readrandom", "readmissing",
    "readseq",    "seekrandom", "writes",    "reads",      "misses", NULL};

typedef struct BJob BJob;

typedef struct BWorker {
  BJob *job;
  pthread_t tid;
  uint64_t from, to;   /* operation indexes [from, to) */
  uint64_t found;      /* reads that found their key */
  uint64_t done;       /* operations finished */
  uint64_t rng;        /* splitmix64 state */
  double *samples;     /* latencies in µs: a slice of job->samples */
  size_t nsamples;
  lkv_iter *it;        /* readseq, seekrandom: created before the start */
} BWorker;

struct BJob {
  lkv_db *db;
  int kind;
  uint64_t num, ops;
  size_t key_size, value_size;
  int threads, started; /* threads asked for / created */
  unsigned sample_every;
  uint64_t seed;
  char *value;          /* value_size random bytes */
  uint64_t *perm;       /* fillrandom, overwrite: key order */
  double *samples;      /* every worker's samples, one block */
  size_t nsamples_max;
  BWorker *w;
  pthread_mutex_t mu;
  pthread_cond_t cv;    /* signalled on go and when the last worker ends */
  int go;               /* guarded by mu: 0 wait, 1 run, -1 give up */
  int running;          /* guarded by mu: workers not yet finished */
  int rc;               /* guarded by mu: first failure, LKV_OK if none */
  lkv_err err;          /* guarded by mu */
  double t_start, t_end;/* t_end written by the last worker, under mu */
  atomic_int stop;
  atomic_uint_fast64_t progress;
};

typedef struct LJob {
  Child c;
  BJob *job; /* NULL once closed */
} LJob;

static double mono_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* Key i: the decimal i, zero-padded to ks bytes (lkv_bench's keys). */
static void bench_key(char *buf, size_t ks, uint64_t i) {
  size_t p = ks;
  while (p > 0) {
    buf[--p] = (char)('0' + i % 10);
    i /= 10;
  }
}

/* A key never written: key i with its last byte '.', which sorts between
 * key i-1 and key i, inside every table's key range (the Bloom filter,
 * not the range check, has to reject it). */
static void bench_missing(char *buf, size_t ks, uint64_t i) {
  bench_key(buf, ks, i);
  buf[ks - 1] = '.';
}

static void bench_fail(BJob *j, int rc, const lkv_err *err) {
  pthread_mutex_lock(&j->mu);
  if (j->rc == LKV_OK) {
    j->rc = rc;
    j->err = *err;
  }
  pthread_mutex_unlock(&j->mu);
  atomic_store(&j->stop, 1);
}

/* One operation of worker w, index i. Returns LKV_OK or a failure. */
static int bench_op(BWorker *w, uint64_t i, char *key, lkv_buf *buf,
                    lkv_err *err) {
  BJob *j = w->job;
  size_t ks = j->key_size, len;
  int rc;
  switch (j->kind) {
  case BK_FILLSEQ:
  case BK_WRITES:
    bench_key(key, ks, i % j->num);
    return lkv_db_set(j->db, key, ks, j->value, j->value_size, NULL, err);
  case BK_FILLRANDOM:
  case BK_OVERWRITE:
    bench_key(key, ks, j->perm[i % j->num]);
    return lkv_db_set(j->db, key, ks, j->value, j->value_size, NULL, err);
  case BK_READRANDOM:
  case BK_READS:
    bench_key(key, ks,
              j->kind == BK_READS ? i % j->num : splitmix64(&w->rng) % j->num);
    break;
  case BK_READMISSING:
  case BK_MISSES:
    bench_missing(key, ks,
                  j->kind == BK_MISSES ? i % j->num
                                       : splitmix64(&w->rng) % j->num);
    break;
  case BK_READSEQ:
    if (!lkv_iter_valid(w->it)) {
      if ((rc = lkv_iter_status(w->it, err)) != LKV_OK) return rc;
      lkv_iter_seek_first(w->it); /* wrap around */
      if (!lkv_iter_valid(w->it)) return lkv_iter_status(w->it, err);
    }
    (void)lkv_iter_key(w->it, &len);
    (void)lkv_iter_value(w->it, &len);
    w->found++;
    lkv_iter_next(w->it);
    return LKV_OK;
  case BK_SEEKRANDOM:
    bench_key(key, ks, splitmix64(&w->rng) % j->num);
    lkv_iter_seek(w->it, key, ks);
    if (lkv_iter_valid(w->it)) {
      (void)lkv_iter_key(w->it, &len);
      (void)lkv_iter_value(w->it, &len);
      w->found++;
      return LKV_OK;
    }
    return lkv_iter_status(w->it, err);
  default:
    return LKV_INVALID;
  }
  rc = lkv_db_get(j->db, key, ks, LKV_SEQ_LATEST, buf, err);
  if (rc == LKV_OK) w->found++;
  return rc == LKV_NOTFOUND ? LKV_OK : rc;
}

static void *bench_worker(void *arg) {
  BWorker *w = (BWorker *)arg;
  BJob *j = w->job;
  char key[BENCH_MAX_KEY];
  lkv_buf buf = {NULL, 0, 0};
  lkv_err err;
  uint64_t i, n = 0, reported = 0;
  int rc = LKV_OK, go;
  err.msg[0] = '\0';
  if (j->kind == BK_READSEQ || j->kind == BK_SEEKRANDOM) {
    rc = lkv_iter_new(j->db, LKV_SEQ_LATEST, &w->it, &err);
    if (rc == LKV_OK && j->kind == BK_READSEQ) lkv_iter_seek_first(w->it);
  }
  if (rc != LKV_OK) bench_fail(j, rc, &err);
  pthread_mutex_lock(&j->mu);
  while (j->go == 0) pthread_cond_wait(&j->cv, &j->mu);
  go = j->go;
  pthread_mutex_unlock(&j->mu);
  for (i = w->from; go > 0 && rc == LKV_OK && i < w->to; i++) {
    if (n - reported >= BENCH_COUNT_EVERY) {
      atomic_fetch_add_explicit(&j->progress, n - reported,
                                memory_order_relaxed);
      reported = n;
      if (atomic_load_explicit(&j->stop, memory_order_relaxed)) break;
    }
    if (n % j->sample_every == 0 && w->nsamples < j->nsamples_max) {
      double t0 = mono_seconds();
      rc = bench_op(w, i, key, &buf, &err);
      w->samples[w->nsamples++] = (mono_seconds() - t0) * 1e6;
    } else {
      rc = bench_op(w, i, key, &buf, &err);
    }
    n++;
  }
  if (rc != LKV_OK) bench_fail(j, rc, &err);
  atomic_fetch_add_explicit(&j->progress, n - reported, memory_order_relaxed);
  w->done = n;
  if (w->it != NULL) {
    lkv_iter_free(w->it);
    w->it = NULL;
  }
  lkv_buf_free(&buf);
  pthread_mutex_lock(&j->mu);
  if (--j->running == 0) {
    j->t_end = mono_seconds();
    pthread_cond_broadcast(&j->cv);
  }
  pthread_mutex_unlock(&j->mu);
  return NULL;
}

static void bench_free(BJob *j) {
  if (j == NULL) return;
  free(j->value);
  free(j->perm);
  free(j->samples);
  free(j->w);
  pthread_cond_destroy(&j->cv);
  pthread_mutex_destroy(&j->mu);
  free(j);
}

/* Stop the workers, wait for them, free everything. Lua thread only. */
static void bench_stop(BJob *j) {
  int t;
  atomic_store(&j->stop, 1);
  pthread_mutex_lock(&j->mu);
  if (j->go == 0) j->go = -1;
  pthread_cond_broadcast(&j->cv);
  pthread_mutex_unlock(&j->mu);
  for (t = 0; t < j->started; t++) pthread_join(j->w[t].tid, NULL);
  bench_free(j);
}

static void job_free_handle(Child *c) {
  LJob *p = (LJob *)c;
  bench_stop(p->job);
  p->job = NULL;
}

/* The workload's fields, checked before anything is allocated. */
typedef struct BSpec {
  int kind, threads;
  lua_Integer num, ops, key_size, value_size, seed, sample_every;
} BSpec;

static lua_Integer specint(lua_State *L, int t, const char *name,
                           lua_Integer dflt, lua_Integer lo, lua_Integer hi) {
  lua_Integer n;
  int isint;
  if (lua_getfield(L, t, name) == LUA_TNIL) { /* +1 */
    lua_pop(L, 1);
    return dflt;
  }
  n = lua_tointegerx(L, -1, &isint);
  if (!isint || n < lo || n > hi)
    luaL_error(L, "bad spec field '%s' to 'bench' (an integer from %I to %I "
                  "expected)", name, (lua_Integer)lo, (lua_Integer)hi);
  lua_pop(L, 1); /* -1 */
  return n;
}

static void readspec(lua_State *L, int t, BSpec *s) {
  lua_Integer maxnum = 1;
  int i;
  const char *kind;
  luaL_checktype(L, t, LUA_TTABLE);
  lua_getfield(L, t, "kind"); /* +1 */
  kind = lua_tostring(L, -1);
  for (i = 0; kind != NULL && bench_kinds[i] != NULL; i++)
    if (strcmp(kind, bench_kinds[i]) == 0) break;
  if (kind == NULL || bench_kinds[i] == NULL)
    luaL_error(L, "bad spec field 'kind' to 'bench' (a workload name "
                  "expected, got %s)", kind ? kind : luaL_typename(L, -1));
  s->kind = i;
  lua_pop(L, 1); /* -1 */
  s->num = specint(L, t, "num", 100000, 1, (lua_Integer)1 << 40);
  s->ops = specint(L, t, "ops", s->num, 0, (lua_Integer)1 << 40);
  s->key_size = specint(L, t, "key_size", 16, 1, BENCH_MAX_KEY);
  s->value_size = specint(L, t, "value_size", 100, 0, BENCH_MAX_VALUE);
  s->threads = (int)specint(L, t, "threads", 1, 1, BENCH_MAX_THREADS);
  s->seed = specint(L, t, "seed", 1, LUA_MININTEGER, LUA_MAXINTEGER);
  s->sample_every = specint(L, t, "sample_every", 8, 1, 1 << 20);
  /* every key index must fit in key_size decimal digits */
  for (i = 0; i < s->key_size && maxnum <= s->num; i++) maxnum *= 10;
  if (maxnum < s->num)
    luaL_error(L, "bad spec to 'bench' (num %I needs keys longer than %I "
                  "bytes)", s->num, s->key_size);
}

/* Allocate the job for spec s; NULL when out of memory. */
static BJob *bench_new(lkv_db *db, const BSpec *s) {
  BJob *j = (BJob *)calloc(1, sizeof *j);
  uint64_t ops = (uint64_t)s->ops, per, i, k, r;
  size_t b;
  int t;
  if (j == NULL) return NULL;
  pthread_mutex_init(&j->mu, NULL);
  pthread_cond_init(&j->cv, NULL);
  atomic_init(&j->stop, 0);
  atomic_init(&j->progress, 0);
  j->db = db;
  j->kind = s->kind;
  j->num = (uint64_t)s->num;
  j->ops = ops;
  j->key_size = (size_t)s->key_size;
  j->value_size = (size_t)s->value_size;
  j->threads = s->threads;
  j->sample_every = (unsigned)s->sample_every;
  j->seed = (uint64_t)s->seed;
  j->rc = LKV_OK;
  j->w = (BWorker *)calloc((size_t)s->threads, sizeof *j->w);
  j->value = (char *)malloc(j->value_size + 1);
  per = ops / (uint64_t)s->threads + 1;
  j->nsamples_max = (size_t)(per / j->sample_every + 1);
  j->samples = (double *)malloc((size_t)s->threads * j->nsamples_max *
                                sizeof *j->samples);
  if (j->w == NULL || j->value == NULL || j->samples == NULL) goto oom;
  r = j->seed ^ 0x5eed;
  for (b = 0; b < j->value_size; b++)
    j->value[b] = (char)(' ' + splitmix64(&r) % 95); /* printable */
  if (j->kind == BK_FILLRANDOM || j->kind == BK_OVERWRITE) {
    j->perm = (uint64_t *)malloc(j->num * sizeof *j->perm);
    if (j->perm == NULL) goto oom;
    for (i = 0; i < j->num; i++) j->perm[i] = i;
    r = j->seed + (j->kind == BK_OVERWRITE ? 0x0e5 : 0);
    for (i = j->num - 1; i > 0; i--) { /* Fisher-Yates */
      uint64_t tmp;
      k = splitmix64(&r) % (i + 1);
      tmp = j->perm[i];
      j->perm[i] = j->perm[k];
      j->perm[k] = tmp;
    }
  }
  for (t = 0; t < s->threads; t++) {
    BWorker *w = &j->w[t];
    w->job = j;
    w->from = ops * (uint64_t)t / (uint64_t)s->threads;
    w->to = ops * (uint64_t)(t + 1) / (uint64_t)s->threads;
    w->rng = j->seed * 0x100000001b3ull + (uint64_t)t + 1;
    w->samples = j->samples + (size_t)t * j->nsamples_max;
  }
  return j;
oom:
  bench_free(j);
  return NULL;
}

/* core.bench(db, spec) -> job, its workers already running. */
static int core_bench(lua_State *L) {
  LDb *d = (LDb *)luaL_checkudata(L, 1, DB_MT);
  BSpec s;
  LJob *p;
  int t, rc = 0;
  if (d->db == NULL) return luaL_error(L, "lunakv: db is closed");
  readspec(L, 2, &s);
  p = (LJob *)newchild(L, sizeof *p, BENCH_MT, 1, d); /* +1 job, closed */
  p->job = bench_new(d->db, &s);
  if (p->job == NULL) return luaL_error(L, "lunakv: out of memory: bench");
  child_link(d, &p->c, job_free_handle);
  for (t = 0; t < s.threads; t++) {
    rc = pthread_create(&p->job->w[t].tid, NULL, bench_worker, &p->job->w[t]);
    if (rc != 0) break;
    p->job->started++;
  }
  pthread_mutex_lock(&p->job->mu);
  p->job->running = p->job->started;
  p->job->go = rc == 0 ? 1 : -1;
  p->job->t_start = mono_seconds();
  pthread_cond_broadcast(&p->job->cv);
  pthread_mutex_unlock(&p->job->mu);
  if (rc != 0) {
    child_close(&p->c); /* joins the started workers, frees the job */
    return luaL_error(L, "lunakv: io error: bench: cannot start thread %d: %s",
                      t + 1, strerror(rc));
  }
  return 1;
}

static LJob *tojob(lua_State *L) {
  LJob *p = (LJob *)checkself(L, SELF_MT, BENCH_MT);
  if (p->job == NULL) closed_error(L, &p->c, "bench");
  return p;
}

/* job:wait([seconds]) -> done, ops finished so far. Without a timeout it
 * returns when every worker has ended. */
static int job_wait(lua_State *L) {
  LJob *p = tojob(L);
  BJob *j = p->job;
  int done;
  if (lua_isnoneornil(L, 2)) {
    pthread_mutex_lock(&j->mu);
    while (j->running > 0) pthread_cond_wait(&j->cv, &j->mu);
    pthread_mutex_unlock(&j->mu);
  } else {
    lua_Number secs = luaL_checknumber(L, 2);
    struct timespec ts;
    luaL_argcheck(L, secs >= 0, 2, "timeout must be >= 0");
    clock_gettime(CLOCK_REALTIME, &ts);
    if (secs > 1e6) secs = 1e6;
    ts.tv_sec += (time_t)secs;
    ts.tv_nsec += (long)((secs - (lua_Number)(time_t)secs) * 1e9);
    if (ts.tv_nsec >= 1000000000L) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&j->mu);
    while (j->running > 0)
      if (pthread_cond_timedwait(&j->cv, &j->mu, &ts) != 0) break;
    pthread_mutex_unlock(&j->mu);
  }
  pthread_mutex_lock(&j->mu);
  done = j->running == 0;
  pthread_mutex_unlock(&j->mu);
  lua_pushboolean(L, done);
  lua_pushinteger(L, (lua_Integer)atomic_load(&j->progress));
  return 2;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Sorted samples -> the p-th percentile (0 < p < 100), nearest rank. */
static double percentile(const double *v, size_t n, double p) {
  size_t k;
  if (n == 0) return 0;
  k = (size_t)(p / 100.0 * (double)n + 0.999999);
  if (k < 1) k = 1;
  if (k > n) k = n;
  return v[k - 1];
}

static void setnum(lua_State *L, const char *name, double v) {
  lua_pushnumber(L, (lua_Number)v);
  lua_setfield(L, -2, name);
}

/* job:result() -> { kind, threads, ops, found, seconds, ops_per_sec,
 * p50_us, p99_us, p999_us, max_us }, once done. Raises the first engine
 * failure of any worker. */
static int job_result(lua_State *L) {
  LJob *p = tojob(L);
  BJob *j = p->job;
  lkv_err err;
  uint64_t ops = 0, found = 0;
  size_t n = 0;
  int t, running, rc;
  double secs;
  pthread_mutex_lock(&j->mu);
  running = j->running;
  rc = j->rc;
  err = j->err;
  pthread_mutex_unlock(&j->mu);
  if (running > 0) return luaL_error(L, "lunakv: bench: still running");
  if (rc != LKV_OK) return raise_err(L, rc, &err);
  /* gather every worker's samples at the front of the block */
  for (t = 0; t < j->started; t++) {
    BWorker *w = &j->w[t];
    memmove(j->samples + n, w->samples, w->nsamples * sizeof *j->samples);
    w->samples = j->samples + n;
    n += w->nsamples;
    ops += w->done;
    found += w->found;
  }
  qsort(j->samples, n, sizeof *j->samples, cmp_double);
  secs = j->t_end - j->t_start;
  lua_createtable(L, 0, 12);
  lua_pushstring(L, bench_kinds[j->kind]);
  lua_setfield(L, -2, "kind");
  setint(L, "threads", (uint64_t)j->started);
  setint(L, "ops", ops);
  setint(L, "found", found);
  setint(L, "samples", (uint64_t)n);
  setnum(L, "seconds", secs);
  setnum(L, "ops_per_sec", secs > 0 ? (double)ops / secs : 0);
  setnum(L, "p50_us", percentile(j->samples, n, 50));
  setnum(L, "p99_us", percentile(j->samples, n, 99));
  setnum(L, "p999_us", percentile(j->samples, n, 99.9));
  setnum(L, "max_us", n ? j->samples[n - 1] : 0);
  return 1;
}

/* close(), __close and __gc: stop the workers, join them, free. */
static int job_close(lua_State *L) {
  LJob *p = (LJob *)checkself(L, SELF_MT, BENCH_MT);
  child_close(&p->c);
  return 0;
}

static int job_tostring(lua_State *L) {
  LJob *p = (LJob *)checkself(L, SELF_MT, BENCH_MT);
  if (p->job == NULL)
    lua_pushliteral(L, "lunakv.bench (closed)");
  else
    lua_pushfstring(L, "lunakv.bench (%s, %d threads)",
                    bench_kinds[p->job->kind], p->job->threads);
  return 1;
}

/* core.clock() -> seconds on the monotonic clock, as a float. */
static int core_clock(lua_State *L) {
  lua_pushnumber(L, (lua_Number)mono_seconds());
  return 1;
}

/* core.ncpu() -> online processors. */
static int core_ncpu(lua_State *L) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  lua_pushinteger(L, n > 0 ? (lua_Integer)n : 1);
  return 1;
}

/* core.isatty(fd) -> whether file descriptor fd (0 stdin, 1 stdout, 2
 * stderr) is a terminal: the shell prompts and edits lines only then. */
static int core_isatty(lua_State *L) {
  lua_Integer fd = luaL_checkinteger(L, 1);
  luaL_argcheck(L, fd >= 0 && fd <= INT_MAX, 1, "file descriptor expected");
  lua_pushboolean(L, isatty((int)fd) == 1);
  return 1;
}

/* core.interrupts(on) -> whether it was on. While on, Ctrl-C (SIGINT)
 * raises "interrupted!" in the running Lua code at its next step, like
 * lua.c's handler, but stays armed: a second Ctrl-C is another error, not
 * the death of the process (and of the writes a db still buffers). The
 * shell turns it on around its loop. Signals are process-wide, so this is
 * the one piece of global state in the binding; it names the Lua thread
 * that installed it, and a SIGINT delivered to any other thread (an engine
 * thread) is passed on to that one, so no Lua call ever runs elsewhere. */
static lua_State *volatile sigint_L = NULL;
static pthread_t sigint_thread;
static struct sigaction sigint_old;

static void sigint_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  luaL_error(L, "interrupted!");
}

static void sigint_handler(int sig) {
  lua_State *L = sigint_L;
  if (L == NULL) return;
  if (!pthread_equal(pthread_self(), sigint_thread)) {
    pthread_kill(sigint_thread, sig);
    return;
  }
  /* lua_sethook is the one Lua call that is safe in a signal handler */
  lua_sethook(L, sigint_hook,
              LUA_MASKCALL | LUA_MASKRET | LUA_MASKLINE | LUA_MASKCOUNT, 1);
}

static int core_interrupts(lua_State *L) {
  int on = lua_toboolean(L, 1);
  int was = sigint_L != NULL;
  if (on && !was) {
    struct sigaction sa;
    lua_State *main;
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD); /* +1 */
    main = lua_tothread(L, -1);
    lua_pop(L, 1); /* -1 */
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = sigint_handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART; /* a read at the prompt goes on */
    sigint_thread = pthread_self();
    sigint_L = main;
    if (sigaction(SIGINT, &sa, &sigint_old) != 0) {
      sigint_L = NULL;
      return luaL_error(L, "lunakv: io error: sigaction: %s",
                        strerror(errno));
    }
  } else if (!on && was) {
    sigaction(SIGINT, &sigint_old, NULL);
    sigint_L = NULL;
  }
  lua_pushboolean(L, was);
  return 1;
}

/* }====================================================================== */

/* {======================================================================
** The module
** ======================================================================= */

static int opterror(lua_State *L, int arg, const char *key, const char *what) {
  return luaL_argerror(L, arg,
                       lua_pushfstring(L, "option '%s' %s", key, what));
}

/* core.open(dir [, opts]) -> db */
static int core_open(lua_State *L) {
  size_t dlen;
  const char *dir = checkbytes(L, 1, &dlen);
  lkv_options o;
  LDb *d;
  lkv_db *db = NULL;
  lkv_err err;
  int rc;
  luaL_argcheck(L, dlen > 0 && strlen(dir) == dlen, 1,
                "directory must be a non-empty path without zero bytes");
  lkv_options_init(&o);
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    lkvlua_engine_options(L, 2, &o);
  }
  d = (LDb *)lua_newuserdatauv(L, sizeof *d, 2); /* +1 db, closed */
  memset(d, 0, sizeof *d);
  luaL_setmetatable(L, DB_MT);
  lua_pushvalue(L, 1);         /* +1 dir */
  lua_setiuservalue(L, -2, 1); /* -1: shown by __tostring */
  if (o.env != NULL) {         /* the db's file system lives as long as it */
    lua_getfield(L, 2, "env"); /* +1 */
    lua_setiuservalue(L, -2, 2); /* -1 */
  }
  err.msg[0] = '\0';
  rc = lkv_db_open(dir, &o, &db, &err);
  if (rc != LKV_OK) return raise_err(L, rc, &err);
  d->db = db;
  return 1;
}

/* {======================================================================
** The HTTP node (lkvnet.h)
** ======================================================================= */

#define SERVE_MAX_NODES 64

/* A string field of the table at t, or NULL when absent. Borrowed: the
 * string stays in the table, which stays on the stack for the call. */
static const char *optstring(lua_State *L, int t, const char *name) {
  const char *s = NULL;
  int ty = lua_getfield(L, t, name); /* +1 */
  if (ty == LUA_TSTRING) {
    size_t n;
    s = lua_tolstring(L, -1, &n);
    if (strlen(s) != n) opterror(L, t, name, "must not hold zero bytes");
  } else if (ty != LUA_TNIL) {
    opterror(L, t, name, "must be a string");
  }
  lua_pop(L, 1); /* -1: the table keeps the string alive */
  return s;
}

static lua_Integer optinteger(lua_State *L, int t, const char *name,
                              lua_Integer dflt, lua_Integer lo,
                              lua_Integer hi) {
  lua_Integer n = dflt;
  int isint, ty = lua_getfield(L, t, name); /* +1 */
  if (ty != LUA_TNIL) {
    n = lua_tointegerx(L, -1, &isint);
    if (!isint) opterror(L, t, name, "must be an integer");
    if (n < lo || n > hi)
      opterror(L, t, name, lua_pushfstring(L, "must be from %I to %I", lo, hi));
  }
  lua_pop(L, 1); /* -1 */
  return n;
}

/* core.serve(dir, opts) -> true, once SIGTERM or SIGINT has stopped the
 * node cleanly. opts: host, port, my_url, leader_url, nodes (array of
 * URLs), max_body_bytes, write_timeout_ms, heartbeat_ms,
 * log_compaction_threshold, token, max_uncommitted_bytes,
 * read_timeout_ms, idle_timeout_ms, max_connections (ranges:
 * lkvnet_options_schema; outside one is an argument error), engine
 * (core.open's options; its env, a core.fault_env(), serves the log and
 * the term file as well, and is kept alive while the node runs).
 * Raises "lunakv: <kind>: ..." when the node cannot start or fails. The
 * loop runs in C on this thread; no Lua runs until it returns, and every C
 * resource is released before anything is raised. */
static int core_serve(lua_State *L) {
  size_t dlen, i, n = 0;
  const char *dir = checkbytes(L, 1, &dlen);
  const char *nodes[SERVE_MAX_NODES];
  lkvnet_options o;
  lkvnet_server *srv = NULL;
  lkv_err err;
  int rc;
  luaL_argcheck(L, dlen > 0 && strlen(dir) == dlen, 1,
                "directory must be a non-empty path without zero bytes");
  luaL_checktype(L, 2, LUA_TTABLE);
  lkvnet_options_init(&o);
  o.data_dir = dir;
  lkvlua_node_options(L, 2, &o);
  o.my_url = optstring(L, 2, "my_url");
  o.leader_url = optstring(L, 2, "leader_url");
  if (lua_getfield(L, 2, "nodes") != LUA_TNIL) { /* +1 nodes */
    luaL_argcheck(L, lua_istable(L, -1), 2, "option 'nodes' must be a table");
    n = (size_t)luaL_len(L, -1);
    luaL_argcheck(L, n <= SERVE_MAX_NODES, 2, "option 'nodes': too many");
    for (i = 0; i < n; i++) {
      lua_geti(L, -1, (lua_Integer)i + 1); /* +1 url */
      if (lua_type(L, -1) != LUA_TSTRING)
        opterror(L, 2, "nodes", "must hold URL strings");
      nodes[i] = lua_tostring(L, -1);
      lua_pop(L, 1); /* -1: the nodes table keeps it */
    }
    o.nodes = nodes;
    o.nnodes = n;
  }
  lua_pop(L, 1); /* -1 nodes (kept alive by opts) */
  if (lua_getfield(L, 2, "engine") != LUA_TNIL) { /* +1 engine opts */
    luaL_argcheck(L, lua_istable(L, -1), 2, "option 'engine' must be a table");
    lkvlua_engine_options(L, lua_gettop(L), &o.engine);
    /* a fault env (core.fault_env) is the file system of the whole data
     * dir: the db, the replication log, the term file. Its userdata stays
     * on the stack until the node has closed, so no change to the table
     * can let it be collected under the running node. */
    lua_getfield(L, -1, "env"); /* +1 env (or nil) */
  }
  /* engine opts stay on the stack: log_file_name may point into them */
  err.msg[0] = '\0';
  rc = lkvnet_server_open(&o, &srv, &err);
  if (rc != LKV_OK) return raise_err(L, rc, &err);
  rc = lkvnet_server_run(srv, &err);
  if (rc != LKV_OK) {
    lkv_err e2;
    lkvnet_server_close(srv, &e2);
    return raise_err(L, rc, &err);
  }
  rc = lkvnet_server_close(srv, &err);
  if (rc != LKV_OK) return raise_err(L, rc, &err);
  lua_pushboolean(L, 1);
  return 1;
}

/* }====================================================================== */

/* {======================================================================
** The HTTP client (httpc.h) and process control for orchestration
** ======================================================================= */

/* libevent writes with writev(), which raises SIGPIPE when a node resets
 * the connection; a client must see that as a failed request, not die.
 * The disposition is restored after each call, as lkvnet_server_run does. */
typedef struct PipeGuard {
  struct sigaction old;
  int set;
} PipeGuard;

static void pipe_ignore(PipeGuard *g) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = SIG_IGN;
  sigemptyset(&sa.sa_mask);
  g->set = sigaction(SIGPIPE, &sa, &g->old) == 0;
}

static void pipe_restore(PipeGuard *g) {
  if (g->set) sigaction(SIGPIPE, &g->old, NULL);
}

/* core.http_request(method, url [, body [, headers [, timeout_ms]]])
 *   -> status, body
 * One blocking request (httpc.h). headers: { name = value, ... }. Any HTTP
 * answer returns (4xx and 5xx included: the caller reads the status); a
 * transport failure raises "lunakv: io error: cannot connect to URL:
 * connection refused" and the like. */
static int core_http_request(lua_State *L) {
  const char *method = luaL_checkstring(L, 1);
  const char *url = luaL_checkstring(L, 2);
  size_t blen = 0, nh = 0;
  const char *body = NULL;
  lkvnet_header hs[LKVNET_HTTPC_MAX_HEADERS];
  lua_Integer timeout = luaL_optinteger(L, 5, 10000);
  lkvnet_response r;
  lkv_err err;
  PipeGuard g;
  int rc;
  if (!lua_isnoneornil(L, 3)) body = checkbytes(L, 3, &blen);
  if (!lua_isnoneornil(L, 4)) {
    luaL_checktype(L, 4, LUA_TTABLE);
    lua_pushnil(L); /* +1 first key */
    while (lua_next(L, 4) != 0) { /* +1 value */
      if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
        return luaL_argerror(L, 4, "headers must map names to strings");
      luaL_argcheck(L, nh < LKVNET_HTTPC_MAX_HEADERS, 4, "too many headers");
      /* borrowed: the headers table keeps both strings for the call */
      hs[nh].name = lua_tostring(L, -2);
      hs[nh].value = lua_tostring(L, -1);
      nh++;
      lua_pop(L, 1); /* -1 value */
    }
  }
  luaL_argcheck(L, timeout > 0 && timeout <= 24 * 3600 * 1000, 5,
                "timeout must be 1 .. 86400000 ms");
  err.msg[0] = '\0';
  pipe_ignore(&g);
  rc = lkvnet_http_request(method, url, hs, nh, body, blen, (int)timeout, &r,
                           &err);
  pipe_restore(&g);
  if (rc != LKV_OK) return raise_err(L, rc, &err);
  lua_pushinteger(L, r.status);              /* +1 */
  if (!lua_checkstack(L, 1)) {
    lkvnet_response_free(&r);
    return luaL_error(L, "lunakv: out of memory: Lua stack");
  }
  /* lua_pushlstring may raise on out-of-memory; the body would leak, so
   * copy it through a box (freed by __gc) */
  {
    Box *bx = (Box *)lua_newuserdatauv(L, sizeof *bx, 0); /* +1 box */
    memset(bx, 0, sizeof *bx);
    luaL_setmetatable(L, BOX_MT);
    bx->p = r.body;
    bx->len = r.body_len;
    lua_pushlstring(L, r.body, r.body_len); /* +1 body */
    free(bx->p);                            /* copied: free it now */
    bx->p = NULL;
    lua_remove(L, -2); /* -1 box */
  }
  return 2;
}

static const char *const bench_keys[] = {
    "url", "urls", "connections", "ops", "seconds", "write_pct", "key_size",
    "value_size", "key_space", "key_offset", "sequential", "consistent",
    "seed", "timeout_ms", "target", NULL};

static int optbool(lua_State *L, int t, const char *name, int dflt) {
  int v = dflt, ty = lua_getfield(L, t, name); /* +1 */
  if (ty == LUA_TBOOLEAN)
    v = lua_toboolean(L, -1);
  else if (ty != LUA_TNIL)
    opterror(L, t, name, "must be a boolean");
  lua_pop(L, 1); /* -1 */
  return v;
}

#define BENCH_MAX_URLS 64

/* core.http_bench(opts) -> result. The load generator of httpc.h, run on
 * this thread until done (no Lua runs meanwhile). opts: url (string) or
 * urls (array), connections (32), ops and/or seconds (one is needed),
 * write_pct (0 .. 100, 100), key_size (16), value_size (100), key_space
 * (100000), key_offset (0), sequential (true: writes take keys in
 * order), consistent (false), seed (1), timeout_ms (10000), target
 * ("lunakv" or "etcd"). result: ops, writes, reads, errors,
 * transport_errors, seconds, ops_per_sec (successful requests per
 * second), p50_us, p90_us, p99_us, max_us (over successful requests) and
 * first_error when any failed. Raises when every request fails to
 * connect. */
static int core_http_bench(lua_State *L) {
  static const char *const targets[] = {"lunakv", "etcd", NULL};
  lkvnet_bench_spec s;
  lkvnet_bench_result r;
  const char *urls[BENCH_MAX_URLS];
  size_t nurls = 0, i;
  lkv_err err;
  PipeGuard g;
  int rc;
  luaL_checktype(L, 1, LUA_TTABLE);
  lkvnet_bench_spec_init(&s);
  /* every key must be known: a typo must not silently use a default */
  lua_pushnil(L); /* +1 */
  while (lua_next(L, 1) != 0) { /* +1 value */
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
    int known = 0;
    for (i = 0; bench_keys[i] != NULL; i++)
      if (strcmp(k, bench_keys[i]) == 0) known = 1;
    if (!known)
      return luaL_argerror(
          L, 1, lua_pushfstring(L, "unknown option '%s'", luaL_tolstring(L, -2, NULL)));
    lua_pop(L, 1); /* -1 value */
  }
  if (optstring(L, 1, "url") != NULL) urls[nurls++] = optstring(L, 1, "url");
  if (lua_getfield(L, 1, "urls") != LUA_TNIL) { /* +1 urls */
    size_t n;
    luaL_argcheck(L, lua_istable(L, -1), 1, "option 'urls' must be a table");
    n = (size_t)luaL_len(L, -1);
    for (i = 0; i < n; i++) {
      luaL_argcheck(L, nurls < BENCH_MAX_URLS, 1, "option 'urls': too many");
      lua_geti(L, -1, (lua_Integer)i + 1); /* +1 */
      if (lua_type(L, -1) != LUA_TSTRING)
        opterror(L, 1, "urls", "must hold URL strings");
      urls[nurls++] = lua_tostring(L, -1);
      lua_pop(L, 1); /* -1: the urls table keeps it */
    }
  }
  lua_pop(L, 1); /* -1 urls (kept alive by opts) */
  luaL_argcheck(L, nurls > 0, 1, "option 'url' or 'urls' is required");
  s.urls = urls;
  s.nurls = nurls;
  s.connections = (int)optinteger(L, 1, "connections", 32, 1,
                                  LKVNET_BENCH_MAX_CONNECTIONS);
  s.ops = (uint64_t)optinteger(L, 1, "ops", 0, 0, LUA_MAXINTEGER);
  if (lua_getfield(L, 1, "seconds") != LUA_TNIL) { /* +1 */
    int isnum;
    lua_Number secs = lua_tonumberx(L, -1, &isnum);
    if (!isnum || !(secs > 0 && secs <= 86400))
      opterror(L, 1, "seconds", "must be a number from 0 to 86400");
    s.duration_ms = (int)(secs * 1000 + 0.5);
    if (s.duration_ms < 1) s.duration_ms = 1;
  }
  lua_pop(L, 1); /* -1 */
  if (s.ops == 0 && s.duration_ms == 0)
    return luaL_argerror(L, 1, "give 'ops' or 'seconds'");
  s.write_pct = (int)optinteger(L, 1, "write_pct", 100, 0, 100);
  s.key_size = (size_t)optinteger(L, 1, "key_size", 16, 1, 40);
  s.value_size = (size_t)optinteger(L, 1, "value_size", 100, 0,
                                    (lua_Integer)LKV_MAX_VALUE_BYTES / 2);
  s.key_space = (uint64_t)optinteger(L, 1, "key_space", 100000, 1,
                                     LUA_MAXINTEGER);
  s.key_offset = (uint64_t)optinteger(L, 1, "key_offset", 0, 0,
                                      LUA_MAXINTEGER);
  s.sequential = optbool(L, 1, "sequential", 1);
  s.consistent = optbool(L, 1, "consistent", 0);
  s.seed = (uint64_t)optinteger(L, 1, "seed", 1, 0, LUA_MAXINTEGER);
  s.timeout_ms = (int)optinteger(L, 1, "timeout_ms", 10000, 1,
                                 24 * 3600 * 1000);
  lua_getfield(L, 1, "target"); /* +1 */
  if (!lua_isnil(L, -1)) {
    const char *t = lua_tostring(L, -1);
    for (i = 0; t != NULL && targets[i] != NULL; i++)
      if (strcmp(t, targets[i]) == 0) break;
    if (t == NULL || targets[i] == NULL)
      opterror(L, 1, "target", "must be \"lunakv\" or \"etcd\"");
    s.target = i == 1 ? LKVNET_TARGET_ETCD : LKVNET_TARGET_LUNAKV;
  }
  lua_pop(L, 1); /* -1 */
  err.msg[0] = '\0';
  pipe_ignore(&g);
  rc = lkvnet_bench_run(&s, &r, &err);
  pipe_restore(&g);
  if (rc != LKV_OK) return raise_err(L, rc, &err);
  lua_createtable(L, 0, 14); /* +1 result */
  setint(L, "ops", r.ops);
  setint(L, "writes", r.writes);
  setint(L, "reads", r.reads);
  setint(L, "errors", r.errors);
  setint(L, "transport_errors", r.transport_errors);
  setnum(L, "seconds", r.seconds);
  setnum(L, "ops_per_sec", r.ops_per_sec);
  setnum(L, "p50_us", r.p50_us);
  setnum(L, "p90_us", r.p90_us);
  setnum(L, "p99_us", r.p99_us);
  setnum(L, "max_us", r.max_us);
  if (r.first_error[0] != '\0') {
    lua_pushstring(L, r.first_error);
    lua_setfield(L, -2, "first_error");
  }
  return 1;
}

/* strerror(e) with a lower-case first letter, the way lunakv's sentences
 * read ("no such file or directory"). */
static const char *lowerror(int e, char *buf, size_t n) {
  snprintf(buf, n, "%s", strerror(e));
  if (buf[0] >= 'A' && buf[0] <= 'Z' && !(buf[1] >= 'A' && buf[1] <= 'Z'))
    buf[0] = (char)(buf[0] - 'A' + 'a');
  return buf;
}

/* Return nil, message, errno for a call that failed with errno e, the way
 * Lua's io library does. The message is lowerror's, after "what: " unless
 * what is NULL (what may be a string on the stack: the three values are
 * pushed above it). */
static int push_oserror(lua_State *L, int e, const char *what) {
  char eb[128];
  lua_pushnil(L);
  if (what != NULL)
    lua_pushfstring(L, "%s: %s", what, lowerror(e, eb, sizeof eb));
  else
    lua_pushstring(L, lowerror(e, eb, sizeof eb));
  lua_pushinteger(L, e);
  return 3;
}

#define SPAWN_MAX_ARGS 4096

/* Close every descriptor from lo up, but keep. close_range is one system
 * call (Linux 5.9+); older kernels get the loop. Async-signal-safe: it
 * runs between fork and exec. */
static void close_from(int lo, int keep) {
#ifdef SYS_close_range
  if (keep >= lo) {
    if ((keep == lo || syscall(SYS_close_range, lo, keep - 1, 0) == 0) &&
        syscall(SYS_close_range, keep + 1, ~0U, 0) == 0)
      return;
  } else if (syscall(SYS_close_range, lo, ~0U, 0) == 0) {
    return;
  }
#endif
  {
    long max = sysconf(_SC_OPEN_MAX);
    int fd;
    if (max < 0 || max > 65536) max = 65536;
    for (fd = lo; fd < max; fd++)
      if (fd != keep) close(fd);
  }
}

/* fd, moved to a number above 2 (close-on-exec) when it is 0, 1 or 2:
 * with this process's stdin or stdout closed, open() hands those out, and
 * the child's dup2 onto 0, 1 and 2 would clobber one descriptor with
 * another (or, dup2(1, 1), keep close-on-exec and lose its stdout).
 * A negative fd passes through; on failure -1 with errno. */
static int fd_above_stdio(int fd) {
  int nfd, e;
  if (fd < 0 || fd > 2) return fd;
  nfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  e = errno;
  close(fd);
  errno = e;
  return nfd;
}

/* core.spawn(argv, log_path [, env]) -> pid. Start argv[1] (searched in
 * PATH) with
 * arguments argv[2..] in the background: its own session (setsid, so a
 * Ctrl-C at the terminal or the end of the spawning process does not reach
 * it), stdin from /dev/null, stdout and stderr appended to log_path, no
 * other descriptor inherited, default signal dispositions and mask. An
 * exec failure is reported here ("lunakv: cannot run 'x': no such file or
 * directory"), through a close-on-exec pipe, not discovered later. The
 * child is ours to reap: core.pid_alive does it. env: { NAME = value }
 * set in the child over this process's environment (a secret passed this
 * way does not show in ps, as an argument would). */
static int core_spawn(lua_State *L) {
  const char *logpath = luaL_checkstring(L, 2);
  char **argv, **envp = NULL;
  size_t n, i;
  int logfd, nullfd, p[2], e = 0;
  ssize_t got;
  pid_t pid;
  char eb[128];
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 3); /* env (or nil) at 3: what is pushed below goes above */
  n = (size_t)luaL_len(L, 1);
  luaL_argcheck(L, n >= 1 && n <= SPAWN_MAX_ARGS, 1,
                "argv must hold the program and its arguments");
  /* a userdata, so an error below frees it with the GC */
  argv = (char **)lua_newuserdatauv(L, (n + 1) * sizeof *argv, 0); /* +1 */
  for (i = 0; i < n; i++) {
    size_t len;
    lua_geti(L, 1, (lua_Integer)i + 1); /* +1 */
    if (lua_type(L, -1) != LUA_TSTRING)
      return luaL_argerror(
          L, 1, lua_pushfstring(L, "argv[%d] must be a string", (int)i + 1));
    argv[i] = (char *)lua_tolstring(L, -1, &len);
    if (strlen(argv[i]) != len || (i == 0 && len == 0))
      return luaL_argerror(
          L, 1, lua_pushfstring(L, "argv[%d] must be a non-empty string "
                                   "without zero bytes", (int)i + 1));
    lua_pop(L, 1); /* -1: the argv table keeps it */
  }
  argv[n] = NULL;
  if (!lua_isnoneornil(L, 3)) {
    extern char **environ;
    size_t ne = 0, nx = 0, k;
    int strs;
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_pushnil(L); /* +1 */
    while (lua_next(L, 3) != 0) { /* +1 value */
      size_t kl, vl;
      const char *kk, *vv;
      if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
        return luaL_argerror(L, 3, "env must map names to strings");
      kk = lua_tolstring(L, -2, &kl);
      vv = lua_tolstring(L, -1, &vl);
      if (kl == 0 || strlen(kk) != kl || strchr(kk, '=') != NULL ||
          strlen(vv) != vl)
        return luaL_argerror(L, 3, "env names must be non-empty without '=' "
                                   "and no zero bytes in names or values");
      nx++;
      lua_pop(L, 1); /* -1 value */
    }
    while (environ[ne] != NULL) ne++;
    envp = (char **)lua_newuserdatauv(L, (ne + nx + 1) * sizeof *envp,
                                      0); /* +1 */
    lua_createtable(L, (int)nx, 0); /* +1: keeps the NAME=value strings */
    strs = lua_gettop(L);
    n = 0;
    for (k = 0; k < ne; k++) { /* the inherited ones not overridden */
      const char *eq = strchr(environ[k], '=');
      int over = 0;
      if (eq != NULL) {
        lua_pushlstring(L, environ[k], (size_t)(eq - environ[k])); /* +1 */
        over = lua_rawget(L, 3) != LUA_TNIL; /* -1 +1 */
        lua_pop(L, 1);                       /* -1 */
      }
      if (!over) envp[n++] = environ[k];
    }
    lua_pushnil(L); /* +1 */
    while (lua_next(L, 3) != 0) { /* +1 value */
      const char *kv = lua_pushfstring(L, "%s=%s", lua_tostring(L, -2),
                                       lua_tostring(L, -1)); /* +1 */
      lua_rawseti(L, strs, (lua_Integer)n + 1); /* -1: kept alive */
      envp[n++] = (char *)kv;
      lua_pop(L, 1); /* -1 value */
    }
    envp[n] = NULL;
  }
  logfd = fd_above_stdio(
      open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
  if (logfd < 0)
    return luaL_error(L, "lunakv: io error: cannot open log file %s: %s",
                      logpath, lowerror(errno, eb, sizeof eb));
  nullfd = fd_above_stdio(open("/dev/null", O_RDONLY | O_CLOEXEC));
  p[0] = p[1] = -1;
  if (nullfd < 0 || pipe2(p, O_CLOEXEC) != 0 ||
      (p[0] = fd_above_stdio(p[0])) < 0 || (p[1] = fd_above_stdio(p[1])) < 0) {
    e = errno;
    close(logfd);
    if (nullfd >= 0) close(nullfd);
    if (p[0] >= 0) close(p[0]);
    if (p[1] >= 0) close(p[1]);
    return luaL_error(L, "lunakv: io error: spawn: %s",
                      lowerror(e, eb, sizeof eb));
  }
  pid = fork();
  if (pid == 0) {
    /* the child: async-signal-safe calls only until exec */
    struct sigaction sa;
    sigset_t all;
    int sig;
    close(p[0]);
    setsid();
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    for (sig = 1; sig < NSIG; sig++) sigaction(sig, &sa, NULL);
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    if (dup2(nullfd, 0) < 0 || dup2(logfd, 1) < 0 || dup2(logfd, 2) < 0) {
      e = errno;
    } else {
      close_from(3, p[1]);
      if (envp != NULL)
        execvpe(argv[0], argv, envp);
      else
        execvp(argv[0], argv);
      e = errno;
    }
    while (write(p[1], &e, sizeof e) < 0 && errno == EINTR) {
    }
    _exit(127);
  }
  e = errno;
  close(p[1]);
  close(logfd);
  close(nullfd);
  if (pid < 0) {
    close(p[0]);
    return luaL_error(L, "lunakv: io error: fork: %s",
                      lowerror(e, eb, sizeof eb));
  }
  /* the pipe closes at a successful exec (EOF) or carries the errno */
  do {
    got = read(p[0], &e, sizeof e);
  } while (got < 0 && errno == EINTR);
  close(p[0]);
  if (got == (ssize_t)sizeof e) {
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
    return luaL_error(L, "lunakv: cannot run '%s': %s", argv[0],
                      lowerror(e, eb, sizeof eb));
  }
  lua_pushinteger(L, (lua_Integer)pid);
  return 1;
}

static const struct {
  const char *name;
  int sig;
} signames[] = {
    {"TERM", SIGTERM}, {"KILL", SIGKILL}, {"INT", SIGINT},
    {"HUP", SIGHUP},   {"QUIT", SIGQUIT}, {"STOP", SIGSTOP},
    {"CONT", SIGCONT}, {"USR1", SIGUSR1}, {"USR2", SIGUSR2},
};

static pid_t checkpid(lua_State *L, int arg) {
  lua_Integer pid = luaL_checkinteger(L, arg);
  /* 0 and negative numbers name process groups to kill(2): refused, a
   * slip there would signal far more than one process */
  luaL_argcheck(L, pid > 0 && pid <= INT_MAX, arg,
                "process id must be a positive integer");
  return (pid_t)pid;
}

/* core.kill(pid, sig) -> true, or nil, message, errno. sig: a name
 * ("TERM", "SIGKILL", any case) or a number (0 checks existence). */
static int core_kill(lua_State *L) {
  pid_t pid = checkpid(L, 1);
  int sig = -1;
  if (lua_type(L, 2) == LUA_TNUMBER) {
    lua_Integer n = luaL_checkinteger(L, 2);
    luaL_argcheck(L, n >= 0 && n < NSIG, 2, "signal number out of range");
    sig = (int)n;
  } else {
    const char *s = luaL_checkstring(L, 2);
    size_t i;
    if (strncasecmp(s, "SIG", 3) == 0) s += 3;
    for (i = 0; i < sizeof signames / sizeof signames[0]; i++)
      if (strcasecmp(s, signames[i].name) == 0) sig = signames[i].sig;
    if (sig < 0)
      return luaL_argerror(
          L, 2, lua_pushfstring(L, "unknown signal '%s' (TERM, KILL, INT, "
                                   "HUP, QUIT, STOP, CONT, USR1, USR2 or a "
                                   "number)", lua_tostring(L, 2)));
  }
  if (kill(pid, sig) != 0) return push_oserror(L, errno, NULL);
  lua_pushboolean(L, 1);
  return 1;
}

/* core.pid_alive(pid) -> whether the process runs. A zombie (exited, not
 * yet reaped) is not alive; a child of ours is reaped here (waitpid
 * WNOHANG), which also keeps zombies from piling up while we poll. */
static int core_pid_alive(lua_State *L) {
  pid_t pid = checkpid(L, 1);
  int st, alive;
  pid_t r;
  do {
    r = waitpid(pid, &st, WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == pid) {
    alive = 0; /* it had exited; reaped now */
  } else if (r == 0) {
    alive = 1; /* our child, running */
  } else if (kill(pid, 0) != 0 && errno != EPERM) {
    alive = 0;
  } else {
    /* someone else's process (its parent reaps it): read its state */
    char path[64], buf[512];
    ssize_t got;
    int fd;
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    alive = 1;
    if (fd >= 0) {
      got = read(fd, buf, sizeof buf - 1);
      close(fd);
      if (got > 0) {
        char *rp;
        buf[got] = '\0';
        rp = strrchr(buf, ')'); /* the name may hold anything but ends so */
        if (rp != NULL && rp[1] == ' ' && (rp[2] == 'Z' || rp[2] == 'X'))
          alive = 0;
      }
    }
  }
  lua_pushboolean(L, alive);
  return 1;
}

/* core.mkdir(path) -> true, or nil, message, errno. One level, mode 0755;
 * an existing directory is a success (orchestration re-runs). */
static int core_mkdir(lua_State *L) {
  size_t n;
  const char *path = luaL_checklstring(L, 1, &n);
  struct stat st;
  luaL_argcheck(L, n > 0 && strlen(path) == n, 1,
                "path must be non-empty, without zero bytes");
  if (mkdir(path, 0755) != 0 &&
      !(errno == EEXIST && stat(path, &st) == 0 && S_ISDIR(st.st_mode))) {
    int e = errno;
    return push_oserror(L, e,
                        lua_pushfstring(L, "cannot create directory %s", path));
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* core.getcwd() -> the absolute path of the working directory (the
 * kernel's, not $PWD, which a parent may have left stale), or nil,
 * message, errno. */
static int core_getcwd(lua_State *L) {
  char buf[PATH_MAX];
  if (getcwd(buf, sizeof buf) == NULL)
    return push_oserror(L, errno, "cannot read the working directory");
  lua_pushstring(L, buf);
  return 1;
}

/* core.sleep(seconds): Lua has no sleep of its own; polling loops with a
 * deadline (cluster up, the specs) use this rather than os.execute. */
static int core_sleep(lua_State *L) {
  lua_Number secs = luaL_checknumber(L, 1);
  struct timespec ts;
  luaL_argcheck(L, secs >= 0 && secs <= 86400, 1, "seconds must be 0 .. 86400");
  ts.tv_sec = (time_t)secs;
  ts.tv_nsec = (long)((secs - (lua_Number)ts.tv_sec) * 1e9);
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
  return 0;
}

/* }====================================================================== */

static const luaL_Reg db_methods[] = {
    {"set", db_set},
    {"get", db_get},
    {"delete", db_delete},
    {"scan", db_scan},
    {"rscan", db_rscan},
    {"iter", db_iter},
    {"snapshot", db_snapshot},
    {"batch", db_batch},
    {"last_seq", db_last_seq},
    {"stats", db_stats},
    {"tables", db_tables},
    {"flush", db_flush},
    {"sync", db_sync},
    {"compact", db_compact},
    {"close", db_close},
    {NULL, NULL},
};

static const luaL_Reg db_meta[] = {
    {"__gc", db_gc},
    {"__close", db_gc},
    {"__tostring", db_tostring},
    {NULL, NULL},
};

static const luaL_Reg snap_methods[] = {
    {"get", snap_get},
    {"scan", snap_scan},
    {"rscan", snap_rscan},
    {"iter", snap_iter},
    {"release", snap_release},
    {"close", snap_release},
    {NULL, NULL},
};

static const luaL_Reg snap_meta[] = {
    {"__gc", snap_release},
    {"__close", snap_release},
    {"__tostring", snap_tostring},
    {NULL, NULL},
};

static const luaL_Reg iter_methods[] = {
    {"seek", iter_seek},
    {"seek_first", iter_seek_first},
    {"seek_last", iter_seek_last},
    {"next", iter_next},
    {"prev", iter_prev},
    {"valid", iter_valid},
    {"key", iter_key},
    {"value", iter_value},
    {"close", iter_close},
    {NULL, NULL},
};

static const luaL_Reg iter_meta[] = {
    {"__gc", iter_close},
    {"__close", iter_close},
    {"__tostring", iter_tostring},
    {NULL, NULL},
};

static const luaL_Reg batch_methods[] = {
    {"set", batch_set},
    {"delete", batch_delete},
    {"count", batch_count},
    {"clear", batch_clear},
    {"commit", batch_commit},
    {"close", batch_close},
    {NULL, NULL},
};

static const luaL_Reg batch_meta[] = {
    {"__gc", batch_close},
    {"__close", batch_close},
    {"__tostring", batch_tostring},
    {NULL, NULL},
};

static const luaL_Reg job_methods[] = {
    {"wait", job_wait},
    {"result", job_result},
    {"close", job_close},
    {NULL, NULL},
};

static const luaL_Reg job_meta[] = {
    {"__gc", job_close},
    {"__close", job_close},
    {"__tostring", job_tostring},
    {NULL, NULL},
};

static const luaL_Reg box_meta[] = {
    {"__gc", box_gc},
    {"__close", box_gc},
    {NULL, NULL},
};

static const luaL_Reg core_funcs[] = {
    {"open", core_open},
    {"bench", core_bench},
    {"clock", core_clock},
    {"ncpu", core_ncpu},
    {"isatty", core_isatty},
    {"interrupts", core_interrupts},
    {"serve", core_serve},
    {"http_request", core_http_request},
    {"http_bench", core_http_bench},
    {"spawn", core_spawn},
    {"kill", core_kill},
    {"pid_alive", core_pid_alive},
    {"sleep", core_sleep},
    {"mkdir", core_mkdir},
    {"getcwd", core_getcwd},
    {NULL, NULL},
};

/* Create metatable `name` with its metamethods and, unless indexf is given,
 * __index = the methods table. Methods and metamethods get the metatable as
 * upvalue 1 (SELF_MT); indexf, when given, is a C function with upvalues
 * methods table, metatable. */
static void newclass(lua_State *L, const char *name, const luaL_Reg *meta,
                     const luaL_Reg *methods, lua_CFunction indexf) {
  luaL_newmetatable(L, name); /* +1 mt */
  lua_pushvalue(L, -1);       /* +1 mt (upvalue) */
  luaL_setfuncs(L, meta, 1);  /* -1 */
  if (methods != NULL) {
    lua_newtable(L);            /* +1 methods */
    lua_pushvalue(L, -2);       /* +1 mt (upvalue) */
    luaL_setfuncs(L, methods, 1); /* -1 */
    if (indexf != NULL) {
      lua_pushvalue(L, -2);                /* +1 mt */
      lua_pushcclosure(L, indexf, 2);      /* -2 +1 __index */
    }
    lua_setfield(L, -2, "__index"); /* -1 */
  }
  lua_pop(L, 1); /* -1 mt */
}

__attribute__((visibility("default"))) int luaopen_lunakv_core(lua_State *L) {
  newclass(L, DB_MT, db_meta, db_methods, NULL);
  newclass(L, SNAP_MT, snap_meta, snap_methods, snap_index);
  newclass(L, ITER_MT, iter_meta, iter_methods, NULL);
  newclass(L, BATCH_MT, batch_meta, batch_methods, NULL);
  newclass(L, BENCH_MT, job_meta, job_methods, NULL);
  newclass(L, BOX_MT, box_meta, NULL, NULL);
  luaL_newlib(L, core_funcs);
  lkvlua_faultenv_register(L);
  lkvlua_options_register(L);
  lua_pushliteral(L, LKV_VERSION);
  lua_setfield(L, -2, "version");
  lua_pushinteger(L, (lua_Integer)LKV_MAX_KEY_BYTES);
  lua_setfield(L, -2, "max_key_bytes");
  lua_pushinteger(L, (lua_Integer)LKV_MAX_VALUE_BYTES);
  lua_setfield(L, -2, "max_value_bytes");
  lua_pushinteger(L, LKV_MAX_LEVELS);
  lua_setfield(L, -2, "max_levels");
  return 1;
}

/* }====================================================================== */
