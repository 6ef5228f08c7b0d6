/* lunakv_db.c - the classes "lunakv.db", "lunakv.snapshot" and
 * "lunakv.batch", and core.open. The db's stored functions (put_library,
 * delete_library, libraries, call, call_json) over lunakv_funcs.c are in
 * lunakv_dbfuncs.c, which adds them to the db's methods. Scans and
 * iterators are in lunakv_iter.c, the options core.open reads in
 * lunakv_options.c.
 *
 * Shaped like Lua's liolib.c: each userdata is created already closed
 * before the handle is acquired, one accessor per type raises on a closed
 * handle, an idempotent close is shared by close(), __close and __gc, and
 * __tostring shows the state. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lauxlib.h"
#include "lkvlua.h"
#include "lua.h"
#include "lunakv.h"
#include "lunakv_funcs.h"

/* A get keeps its value buffer for the next get unless it grew past this:
 * one huge value must not pin its size for the life of the db. */
#define GETBUF_KEEP_BYTES ((size_t)1 << 20)

/* {======================================================================
** Handles
** ======================================================================= */

typedef struct LSnap {
  Child c;
  lkv_snapshot *snap; /* NULL once released */
  uint64_t seq;       /* kept after release: s.seq stays readable */
} LSnap;

typedef struct LBatch {
  Child c;
  lkv_batch *b; /* NULL once closed */
} LBatch;

static void snap_free_handle(Child *c) {
  LSnap *s = (LSnap *)c;
  lkv_snapshot_release(s->snap);
  s->snap = NULL;
}

static void batch_free_handle(Child *c) {
  LBatch *b = (LBatch *)c;
  lkv_batch_free(b->b);
  b->b = NULL;
}

static LSnap *tosnap(lua_State *L) {
  LSnap *s = (LSnap *)checkself(L, SELF_MT, SNAP_MT);
  if (s->snap == NULL) closed_error(L, &s->c, "snapshot");
  return s;
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
  return lkvlua_scan(L, d, 1, optseq(L, 4), 0);
}

static int db_rscan(lua_State *L) {
  LDb *d = todb(L);
  return lkvlua_scan(L, d, 1, optseq(L, 4), 1);
}

static int db_iter(lua_State *L) {
  LDb *d = todb(L);
  lkvlua_newiter(L, d, 1, optseq(L, 2));
  return 1;
}

static int db_snapshot(lua_State *L) {
  LDb *d = todb(L);
  LSnap *s = (LSnap *)lkvlua_newchild(L, sizeof *s, SNAP_MT, 1, d); /* +1 */
  lkv_snapshot *snap = NULL;
  lkv_err err;
  int rc;
  err.msg[0] = '\0';
  rc = lkv_snapshot_new(d->db, &snap, &err);
  if (rc != LKV_OK) return raise_err(L, rc, &err);
  s->snap = snap;
  s->seq = lkv_snapshot_seq(snap);
  lkvlua_child_link(d, &s->c, snap_free_handle);
  return 1;
}

static int db_batch(lua_State *L) {
  LDb *d = todb(L);
  LBatch *b = (LBatch *)lkvlua_newchild(L, sizeof *b, BATCH_MT, 1, d); /* +1 */
  b->b = lkv_batch_new();
  if (b->b == NULL) return luaL_error(L, "lunakv: out of memory: new batch");
  lkvlua_child_link(d, &b->c, batch_free_handle);
  return 1;
}

static int db_last_seq(lua_State *L) {
  LDb *d = todb(L);
  lua_pushinteger(L, (lua_Integer)lkv_db_last_seq(d->db));
  return 1;
}

/* A method that runs one engine call on the whole db and returns nothing
 * but its failure, raised. */
static int db_run(lua_State *L, int (*call)(lkv_db *, lkv_err *)) {
  LDb *d = todb(L);
  lkv_err err;
  int rc;
  err.msg[0] = '\0';
  rc = call(d->db, &err);
  if (rc != LKV_OK) return raise_err(L, rc, &err);
  return 0;
}

static int db_flush(lua_State *L) { return db_run(L, lkv_db_flush); }

/* db:sync(): every write so far durable (one fdatasync), whatever SYNC. */
static int db_sync(lua_State *L) { return db_run(L, lkv_db_sync); }

static int db_compact(lua_State *L) { return db_run(L, lkv_db_compact); }

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
  setint(L, "stall_refusals", st.stall_refusals);
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
typedef struct TableRec {
  int level;
  uint64_t number, size;
  size_t smallest_len, largest_len;
} TableRec;

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
  while (d->children != NULL) lkvlua_child_close(d->children);
  rc = lkv_db_close(d->db, err);
  if (rc == LKV_BUSY) return rc;
  d->db = NULL;
  lkvf_runtime_free(d->funcs);
  d->funcs = NULL;
  lkv_buf_free(&d->getbuf);
  return rc;
}

/* Shut the db at arg 1 down; a failure is raised when report is set. */
static int db_end(lua_State *L, int report) {
  LDb *d = (LDb *)checkself(L, SELF_MT, DB_MT);
  lkv_err err;
  int rc;
  err.msg[0] = '\0';
  rc = db_shutdown(d, &err);
  if (rc != LKV_OK && report) return raise_err(L, rc, &err);
  return 0;
}

static int db_close(lua_State *L) { return db_end(L, 1); }

/* __gc and __close. __gc is called with the object alone and must not
 * raise; __close(db, nil) ends a scope normally and reports a failed close
 * (a lost final WAL write must not pass silently); __close(db, errobj)
 * runs while an error unwinds, and keeps that error. */
static int db_gc(lua_State *L) {
  return db_end(L, lua_gettop(L) >= 2 && lua_isnil(L, 2));
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
  lua_pushvalue(L, 1);           /* +1 dir */
  lua_setiuservalue(L, -2, 1);   /* -1: shown by __tostring */
  if (o.env != NULL) {           /* the db's file system lives as long as it */
    lua_getfield(L, 2, "env");   /* +1 */
    lua_setiuservalue(L, -2, 2); /* -1 */
  }
  err.msg[0] = '\0';
  rc = lkv_db_open(dir, &o, &db, &err);
  if (rc != LKV_OK) return raise_err(L, rc, &err);
  d->db = db;
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
  return lkvlua_scan(L, s->c.owner, dbidx, s->seq, down);
}

static int snap_scan(lua_State *L) { return snap_scan_dir(L, 0); }
static int snap_rscan(lua_State *L) { return snap_scan_dir(L, 1); }

static int snap_iter(lua_State *L) {
  LSnap *s = tosnap(L);
  lua_getiuservalue(L, 1, 1); /* +1 db */
  lkvlua_newiter(L, s->c.owner, lua_gettop(L), s->seq);
  return 1;
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
    /* put_library, delete_library, libraries, call and call_json:
     * lkvlua_dbfuncs_register adds them (lunakv_dbfuncs.c) */
    {NULL, NULL},
};

static const luaL_Reg snap_methods[] = {
    {"get", snap_get},
    {"scan", snap_scan},
    {"rscan", snap_rscan},
    {"iter", snap_iter},
    {"release", lkvlua_child_close_method},
    {"close", lkvlua_child_close_method},
    {NULL, NULL},
};

static const luaL_Reg batch_methods[] = {
    {"set", batch_set},
    {"delete", batch_delete},
    {"count", batch_count},
    {"clear", batch_clear},
    {"commit", batch_commit},
    {"close", lkvlua_child_close_method},
    {NULL, NULL},
};

static const luaL_Reg db_funcs[] = {
    {"open", core_open},
    {NULL, NULL},
};

void lkvlua_db_register(lua_State *L) {
  lkvlua_newclass(L, DB_MT, db_gc, db_tostring, db_methods, NULL);
  lkvlua_newclass(L, SNAP_MT, lkvlua_child_close_method, snap_tostring,
                  snap_methods, snap_index);
  lkvlua_newclass(L, BATCH_MT, lkvlua_child_close_method, batch_tostring,
                  batch_methods, NULL);
  luaL_setfuncs(L, db_funcs, 0);
}
