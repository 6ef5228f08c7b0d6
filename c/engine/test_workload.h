/* test_workload.h - a deterministic random workload and the check that a
 * database holds exactly what it should after a crash, shared by
 * fault_test.c (every injected fault) and c/crash/crashtest.c (SIGKILL
 * and simulated power loss, after RocksDB's db_crashtest).
 *
 * Operation j of a run is a function of (seed, j): a set, a delete, a
 * batch of both, a flush, a compaction, a sync, or a snapshot that a later
 * operation reads back. A value names the operation and key that wrote it
 * ("<j>:<k>:" then filler derived from both), so the state of the key
 * space is an array of operation numbers, and one scan of the database
 * says which operation wrote each value: nothing is ever read that was not
 * written.
 *
 * The check after a crash: writes are applied in order by one thread, so
 * what survives must be the state after some prefix of the operations
 * (never a hole, never half a batch), and that prefix must reach every
 * operation acknowledged as durable. wl_verify finds the prefix. */
#ifndef LKV_TEST_WORKLOAD_H
#define LKV_TEST_WORKLOAD_H

#include <inttypes.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "faultenv.h"
#include "lunakv.h"
#include "rng.h"

#define WL_KEYS 400 /* the key space */
#define WL_MAX_BATCH 6
#define WL_RECENT 4096 /* writes remembered for the SYNC=batch bound */

enum {
  WL_SET,
  WL_DEL,
  WL_BATCH,
  WL_FLUSH,
  WL_COMPACT,
  WL_SYNC,
  WL_SNAP,
  WL_SNAPREAD
};

typedef struct wl_write {
  int key;
  int del;
} wl_write;

typedef struct wl_op {
  int kind;
  int n; /* writes (set, delete, batch) */
  wl_write w[WL_MAX_BATCH];
} wl_op;

static uint64_t wl_mix(uint64_t x) { return lkv_mix64(x); }

/* Operation j (from 1) of the run with this seed. */
static void wl_gen(uint64_t seed, uint64_t j, wl_op *op) {
  uint64_t r = wl_mix(seed * 0x100000001b3ull ^ wl_mix(j));
  int pick = (int)(r % 1000);
  memset(op, 0, sizeof *op);
  r = wl_mix(r);
  if (pick < 600) {
    op->kind = WL_SET;
  } else if (pick < 750) {
    op->kind = WL_DEL;
  } else if (pick < 930) {
    op->kind = WL_BATCH;
  } else if (pick < 945) {
    op->kind = WL_FLUSH;
  } else if (pick < 950) {
    op->kind = WL_COMPACT;
  } else if (pick < 970) {
    op->kind = WL_SYNC;
  } else if (pick < 985) {
    op->kind = WL_SNAP;
  } else {
    op->kind = WL_SNAPREAD;
  }
  if (op->kind == WL_SET || op->kind == WL_DEL) {
    op->n = 1;
    op->w[0].key = (int)(r % WL_KEYS);
    op->w[0].del = op->kind == WL_DEL;
  } else if (op->kind == WL_BATCH) {
    op->n = 2 + (int)(r % (WL_MAX_BATCH - 1));
    for (int i = 0; i < op->n; i++) {
      r = wl_mix(r);
      op->w[i].key = (int)(r % WL_KEYS);
      op->w[i].del = r % 5 == 0;
    }
  }
}

static void wl_key(int k, char *buf, size_t *n) {
  *n = (size_t)snprintf(buf, 32, "key%05d", k);
}

/* The value operation j writes to key k: "<j>:<k>:" and filler of a
 * length from 0 to 299 bytes. */
static size_t wl_value(uint64_t j, int k, char *buf) {
  int n = snprintf(buf, 64, "%" PRIu64 ":%d:", j, k);
  uint64_t h = wl_mix(j * 7919 + (uint64_t)k);
  size_t len = (size_t)n + (size_t)(h % 300);
  for (size_t i = (size_t)n; i < len; i++) {
    h = wl_mix(h);
    buf[i] = (char)('a' + h % 26);
  }
  return len;
}

/* The operation that wrote value v of key k, or 0 when v is not a value
 * any operation of the workload writes to k. */
static uint64_t wl_decode(int k, const char *v, size_t n) {
  char expect[512];
  uint64_t j = 0;
  size_t i = 0;
  while (i < n && v[i] >= '0' && v[i] <= '9')
    j = j * 10 + (uint64_t)(v[i++] - '0');
  if (j == 0 || n > sizeof expect) return 0;
  if (wl_value(j, k, expect) != n || memcmp(expect, v, n) != 0) return 0;
  return j;
}

/* The state of the key space: state[k] is the operation whose value key k
 * holds, 0 when absent. */
typedef struct wl_state {
  uint64_t k[WL_KEYS];
} wl_state;

static void wl_apply(wl_state *s, uint64_t j, const wl_op *op) {
  for (int i = 0; i < op->n; i++) s->k[op->w[i].key] = op->w[i].del ? 0 : j;
}

/* Read the whole database through an iterator (and each key with a get,
 * which must agree). Returns 0; WL_IOERR when a read failed (an error, as
 * an I/O fault may give); WL_WRONG when a read answered wrong. why[] says
 * what. */
enum { WL_IOERR = 1, WL_WRONG = 2 };

static int wl_read(lkv_db *db, uint64_t at, wl_state *out, char *why,
                   size_t wn) {
  lkv_iter *it = NULL;
  lkv_err err = {0};
  memset(out, 0, sizeof *out);
  if (lkv_iter_new(db, at, &it, &err)) {
    snprintf(why, wn, "iterator: %s", err.msg);
    return WL_IOERR;
  }
  int rc = 0;
  for (lkv_iter_seek_first(it); lkv_iter_valid(it); lkv_iter_next(it)) {
    size_t kn, vn;
    const char *kp = lkv_iter_key(it, &kn), *vp = lkv_iter_value(it, &vn);
    int k = -1;
    if (kn == 8 && memcmp(kp, "key", 3) == 0) k = atoi(kp + 3);
    uint64_t j = k >= 0 && k < WL_KEYS ? wl_decode(k, vp, vn) : 0;
    if (j == 0) {
      snprintf(why, wn, "a key or value never written: %.*s = %.40s", (int)kn,
               kp, vp);
      rc = WL_WRONG;
      break;
    }
    out->k[k] = j;
  }
  if (rc == 0 && lkv_iter_status(it, &err)) {
    snprintf(why, wn, "iteration: %s", err.msg);
    rc = WL_IOERR;
  }
  lkv_iter_free(it);
  lkv_buf b = {0};
  for (int k = 0; rc == 0 && k < WL_KEYS; k++) {
    char key[32];
    size_t kn;
    wl_key(k, key, &kn);
    int g = lkv_db_get(db, key, kn, at, &b, &err);
    uint64_t j = g == LKV_OK ? wl_decode(k, b.data, b.len) : 0;
    if (g != LKV_OK && g != LKV_NOTFOUND) {
      snprintf(why, wn, "get %s: %s", key, err.msg);
      rc = WL_IOERR;
    } else if (j != out->k[k]) {
      snprintf(why, wn, "get %s: op %" PRIu64 " where the scan saw op %" PRIu64,
               key, j, out->k[k]);
      rc = WL_WRONG;
    }
  }
  lkv_buf_free(&b);
  return rc;
}

/* After a crash: db must hold the state `base` (the state before operation
 * first) with operations first .. j applied, for some j in
 * [min_done, max_done] (min_done may be first - 1: none). On success
 * *done = j and *base becomes that state. Returns 0, or -1 with why. */
static int wl_verify(lkv_db *db, uint64_t seed, wl_state *base, uint64_t first,
                     uint64_t min_done, uint64_t max_done, uint64_t *done,
                     char *why, size_t wn) {
  wl_state got, s = *base;
  if (wl_read(db, LKV_SEQ_LATEST, &got, why, wn)) return -1;
  int mism = 0;
  int64_t any_prefix = -1; /* the last prefix that matched, whatever min */
  for (int k = 0; k < WL_KEYS; k++) mism += s.k[k] != got.k[k];
  for (uint64_t j = first - 1;; j++) {
    if (j >= first) {
      wl_op op;
      wl_gen(seed, j, &op);
      for (int i = 0; i < op.n; i++) {
        int k = op.w[i].key;
        mism -= s.k[k] != got.k[k];
        s.k[k] = op.w[i].del ? 0 : j;
        mism += s.k[k] != got.k[k];
      }
    }
    if (mism == 0) any_prefix = (int64_t)j;
    if (mism == 0 && j >= min_done) {
      *done = j;
      *base = s;
      return 0;
    }
    if (j >= max_done) break;
  }
  int k0 = -1;
  s = *base;
  for (uint64_t j = first; j <= min_done; j++) {
    wl_op op;
    wl_gen(seed, j, &op);
    wl_apply(&s, j, &op);
  }
  int nbad = 0;
  for (int k = 0; k < WL_KEYS; k++)
    if (s.k[k] != got.k[k]) {
      if (k0 < 0) k0 = k;
      nbad++;
    }
  char pre[64] = "none";
  if (any_prefix >= 0) snprintf(pre, sizeof pre, "%" PRId64, any_prefix);
  snprintf(
      why, wn,
      "no prefix of operations %" PRIu64 "..%" PRIu64 " that reaches %" PRIu64
      " matches: %d keys differ, e.g. key%05d holds op %" PRIu64 ", op %" PRIu64
      " expected; the longest prefix that matches ends at %s",
      first, max_done, min_done, nbad, k0, k0 >= 0 ? got.k[k0] : 0,
      k0 >= 0 ? s.k[k0] : 0, pre);
  return -1;
}

/* Runs operations on an open db and keeps track of what was acknowledged
 * and what is durable. */
typedef struct wl_run {
  lkv_db *db;
  uint64_t seed;
  lkv_sync_mode sync;
  int wal_buffer_size;
  uint64_t next;              /* the next operation to run */
  uint64_t acked;             /* the last operation that succeeded */
  uint64_t durable;           /* ... and the last one known durable on disk */
  uint64_t writes_since_out;  /* writes since the last sync, flush or
                                 compaction (batch mode keeps up to
                                 wal_buffer_size - 1 of them in memory) */
  uint64_t recent[WL_RECENT]; /* the operations of the last writes */
  wl_state state;             /* after operation acked */
  lkv_snapshot *snap;
  wl_state snap_state;
  char why[512]; /* what stopped the run */
  int failed_op; /* 1: an operation returned an error (the run stops) */
  int read_errs; /* snapshot reads that answered with an I/O error (the
                    run goes on: a failed read changes nothing) */
  int bad;       /* 1: a read returned something wrong */
} wl_run;

static void wl_snap_drop(wl_run *r) {
  lkv_snapshot_release(r->snap);
  r->snap = NULL;
}

/* Run operation r->next. Returns 0 when it succeeded; -1 when it failed
 * (r->failed_op, r->why) or a read was wrong (r->bad). */
static int wl_step(wl_run *r) {
  uint64_t j = r->next;
  wl_op op;
  lkv_err err = {0};
  int rc = LKV_OK;
  wl_gen(r->seed, j, &op);
  char key[32], val[512];
  size_t kn, vn;
  switch (op.kind) {
    case WL_SET:
    case WL_DEL:
      wl_key(op.w[0].key, key, &kn);
      if (op.kind == WL_SET) {
        vn = wl_value(j, op.w[0].key, val);
        rc = lkv_db_set(r->db, key, kn, val, vn, NULL, &err);
      } else {
        rc = lkv_db_delete(r->db, key, kn, NULL, &err);
      }
      break;
    case WL_BATCH: {
      lkv_batch *b = lkv_batch_new();
      for (int i = 0; b && i < op.n && rc == LKV_OK; i++) {
        wl_key(op.w[i].key, key, &kn);
        if (op.w[i].del) {
          rc = lkv_batch_delete(b, key, kn, &err);
        } else {
          vn = wl_value(j, op.w[i].key, val);
          rc = lkv_batch_set(b, key, kn, val, vn, &err);
        }
      }
      if (b == NULL) rc = LKV_NOMEM;
      if (rc == LKV_OK) rc = lkv_db_write(r->db, b, NULL, &err);
      lkv_batch_free(b);
      break;
    }
    case WL_FLUSH: rc = lkv_db_flush(r->db, &err); break;
    case WL_COMPACT: rc = lkv_db_compact(r->db, &err); break;
    case WL_SYNC: rc = lkv_db_sync(r->db, &err); break;
    case WL_SNAP:
      wl_snap_drop(r);
      rc = lkv_snapshot_new(r->db, &r->snap, &err);
      if (rc == LKV_OK) r->snap_state = r->state;
      break;
    case WL_SNAPREAD:
      if (r->snap) {
        wl_state got;
        char why[400];
        int rr =
            wl_read(r->db, lkv_snapshot_seq(r->snap), &got, why, sizeof why);
        if (rr == WL_IOERR) r->read_errs++;
        if (rr == WL_WRONG) { /* an I/O error reading is allowed; this is not */
          snprintf(r->why, sizeof r->why, "snapshot read: %s", why);
          r->bad = 1;
          return -1;
        } else if (rr == 0 && memcmp(&got, &r->snap_state, sizeof got) != 0) {
          snprintf(r->why, sizeof r->why,
                   "snapshot read at op %" PRIu64
                   " differs from the state it pinned",
                   j);
          r->bad = 1;
          return -1;
        }
      }
      break;
  }
  if (rc != LKV_OK) {
    snprintf(r->why, sizeof r->why, "op %" PRIu64 " (kind %d): %s", j, op.kind,
             err.msg);
    r->failed_op = 1;
    return -1;
  }
  r->next = j + 1;
  r->acked = j;
  wl_apply(&r->state, j, &op);
  if (op.n) r->recent[r->writes_since_out++ % WL_RECENT] = j;
  if (op.kind == WL_FLUSH || op.kind == WL_COMPACT || op.kind == WL_SYNC ||
      (op.n && r->sync == LKV_SYNC_ALWAYS))
    r->durable = j;
  if (op.kind == WL_FLUSH || op.kind == WL_COMPACT || op.kind == WL_SYNC)
    r->writes_since_out = 0;
  return 0;
}

/* The last operation a killed process must keep: every acknowledged one,
 * but for SYNC=batch, whose last wal_buffer_size - 1 writes since the
 * last explicit write-out may still have been in the process. (The
 * engine writes out every wal_buffer_size writes counted from its own
 * last write-out, which this does not track: so only the bound.) */
static uint64_t wl_kill_safe(const wl_run *r) {
  if (r->sync != LKV_SYNC_BATCH) return r->acked;
  uint64_t may_lose = (uint64_t)r->wal_buffer_size - 1;
  if (may_lose > r->writes_since_out) may_lose = r->writes_since_out;
  if (may_lose == 0) return r->acked;
  if (may_lose > WL_RECENT) may_lose = WL_RECENT; /* (never, in practice) */
  /* the operation before the oldest write that may be lost */
  return r->recent[(r->writes_since_out - may_lose) % WL_RECENT] - 1;
}

/* The options of a small, busy database: memtables of a few KiB, tables
 * of a few, so that a few hundred operations flush and compact often. */
static void wl_options(lkv_options *o, uint64_t seed, const lkv_env *env) {
  lkv_options_init(o);
  uint64_t r = wl_mix(seed ^ 0xabcdef);
  o->max_memtable_size = 2048 + (size_t)(r % 8192);
  o->table_size = 4096;
  o->block_size = 512;
  o->level1_max_bytes = 16384;
  o->level_multiplier = 4;
  o->max_l0_files = 2;
  o->l0_slowdown_files = 3;
  o->l0_stop_files = 4;
  o->block_cache_bytes = (r >> 8) % 2 ? 65536 : 0;
  o->mmap_reads = (int)((r >> 9) % 2);
  o->sync = (lkv_sync_mode)((r >> 10) % 3);
  o->wal_buffer_size = 1 + (int)((r >> 12) % 8);
  o->env = env;
}

/* A run that starts at operation `first` on a database holding `base`. */
static void wl_run_init(wl_run *r, uint64_t seed, const lkv_options *o,
                        uint64_t first, const wl_state *base) {
  memset(r, 0, sizeof *r);
  r->seed = seed;
  r->sync = o->sync;
  r->wal_buffer_size = o->wal_buffer_size;
  r->next = first;
  r->acked = r->durable = first - 1;
  r->state = *base;
}

/* ==== power-loss cycles ================================================= */

typedef struct wl_power_stats {
  uint64_t cycles;  /* completed */
  uint64_t mid_op;  /* ... stopped inside a call (else between two) */
  uint64_t lost;    /* acknowledged operations lost (never durable ones) */
  uint64_t survive; /* operations the database holds at the end */
} wl_power_stats;

typedef struct wl_crash_at {
  lkv_faultenv *fe;
  atomic_long left; /* calls until the machine stops; < 0: off */
} wl_crash_at;

static void wl_crash_hook(void *ctx, int op, const char *path) {
  wl_crash_at *c = ctx;
  (void)op;
  (void)path;
  if (atomic_fetch_sub(&c->left, 1) == 1) lkv_faultenv_crash(c->fe);
}

/* Cycles on one database in dir, through a fault env: open with options
 * drawn per cycle (sync mode, memtable size, mmap...), run 20-320
 * operations while the machine stops at a random call within about 2,000
 * (in any thread: a flush or a compaction may be half done), close,
 * simulate the power loss in a random mode, reopen, and check the
 * database holds a prefix of the operations reaching every one
 * acknowledged as durable (a sync, a flush, a compaction, or any write
 * under SYNC=always) and nothing else. Returns 0, or -1 with why. */
typedef struct wl_copy_ctx {
  const char *from, *to;
} wl_copy_ctx;

static int wl_copy_one(void *arg, const char *name) {
  wl_copy_ctx *c = arg;
  char a[1024], b[1024], buf[65536];
  snprintf(a, sizeof a, "%s/%s", c->from, name);
  snprintf(b, sizeof b, "%s/%s", c->to, name);
  FILE *in = fopen(a, "rb"), *out = in ? fopen(b, "wb") : NULL;
  size_t n;
  while (in && out && (n = fread(buf, 1, sizeof buf, in)) > 0)
    fwrite(buf, 1, n, out);
  if (in) fclose(in);
  if (out) fclose(out);
  return 0;
}

static int wl_remove_one(void *arg, const char *name) {
  char p[1024];
  snprintf(p, sizeof p, "%s/%s", (const char *)arg, name);
  unlink(p);
  return 0;
}

/* Copy dir's files to dir.lost, in this process (no fork). */
static void wl_copy_dir(const char *dir) {
  char to[1024];
  snprintf(to, sizeof to, "%s.lost", dir);
  wl_copy_ctx c = {dir, to};
  lkv_env_info st;
  const lkv_env *px = lkv_env_posix();
  if (px->stat(px, to, &st) == 0) px->list_dir(px, to, wl_remove_one, to);
  px->mkdir(px, to);
  px->list_dir(px, dir, wl_copy_one, &c);
}

static int wl_power_cycles(const char *dir, uint64_t seed, int cycles,
                           wl_power_stats *st, char *why, size_t wn) {
  int keep = getenv("WL_KEEP") != NULL;
  lkv_err err = {0};
  lkv_faultenv *fe = lkv_faultenv_new();
  wl_crash_at ca = {fe, -1};
  wl_state base;
  int rc = 0;
  memset(&base, 0, sizeof base);
  memset(st, 0, sizeof *st);
  lkv_faultenv_set_hook(fe, wl_crash_hook, &ca);
  uint64_t first = 1;
  for (int c = 0; c < cycles && rc == 0; c++) {
    uint64_t r = wl_mix(seed * 31 + (uint64_t)c);
    lkv_options o;
    wl_options(&o, r, lkv_faultenv_env(fe));
    wl_run run;
    wl_run_init(&run, seed, &o, first, &base);
    if (lkv_db_open(dir, &o, &run.db, &err)) {
      snprintf(why, wn, "power cycle %d: open failed: %s", c, err.msg);
      rc = -1;
      break;
    }
    atomic_store(&ca.left, (long)(1 + (r >> 16) % 2000));
    uint64_t ops = 20 + (r >> 32) % 300;
    while (run.next < first + ops && wl_step(&run) == 0) {
    }
    int mid = atomic_load(&ca.left) <= 0;
    if (!mid)
      lkv_faultenv_crash(fe); /* between calls */
    else
      st->mid_op++;
    atomic_store(&ca.left, -1);
    wl_snap_drop(&run);
    lkv_db_close(run.db, NULL); /* fails: the machine is off */
    if (run.bad) {
      snprintf(why, wn, "power cycle %d: %s", c, run.why);
      rc = -1;
      break;
    }
    lkv_loss_mode mode = (lkv_loss_mode)((r >> 40) % 4);
    if (lkv_faultenv_power_loss(fe, mode, r, &err)) {
      snprintf(why, wn, "power cycle %d: %s", c, err.msg);
      rc = -1;
      break;
    }
    lkv_db *db = NULL;
    o.env = lkv_faultenv_env(fe);
    if (keep) wl_copy_dir(dir); /* debugging: the files as the loss left them */
    if (lkv_db_open(dir, &o, &db, &err)) {
      snprintf(why, wn, "power cycle %d (loss mode %d): reopen failed: %s", c,
               mode, err.msg);
      rc = -1;
      break;
    }
    uint64_t done = 0;
    char vwhy[512];
    if (wl_verify(db, seed, &base, first, run.durable, run.next, &done, vwhy,
                  sizeof vwhy)) {
      char kinds[128] = "";
      for (uint64_t j = first; j < run.next && j < first + 40; j++) {
        wl_op op;
        wl_gen(seed, j, &op);
        size_t kl = strlen(kinds);
        snprintf(kinds + kl, sizeof kinds - kl, "%s%d", kl ? "," : "", op.kind);
      }
      snprintf(
          why, wn,
          "power cycle %d (loss mode %d, sync %d, %s): %s (durable %" PRIu64
          ", acked %" PRIu64 "; op kinds from %" PRIu64 ": %s)",
          c, mode, o.sync, mid ? "mid-call" : "between", vwhy, run.durable,
          run.acked, first, kinds);
      rc = -1;
    } else {
      st->lost += run.acked - done;
      first = done + 1;
      st->cycles++;
    }
    if (lkv_db_close(db, &err) && rc == 0) {
      snprintf(why, wn, "power cycle %d: close failed: %s", c, err.msg);
      rc = -1;
    }
  }
  st->survive = first - 1;
  lkv_faultenv_free(fe);
  return rc;
}

#endif
