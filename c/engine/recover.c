/* recover.c - opening a database's files: what the directory holds (and
 * whether it is a database at all), which logs are live and under which
 * name, the replay of their chain of sequence numbers, and the log new
 * writes go to. The steps and their crash-safety argument are in
 * layout.md, the log's format in wal_format.md. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "builder.h"
#include "coding.h"
#include "db_impl.h"
#include "env.h"
#include "err.h"
#include "manifest.h"

static int insert_op(void *ctx, uint64_t seq, int type, const char *key,
                     size_t klen, const char *val, size_t vlen) {
  return lkv_mem_add(ctx, seq, type, key, klen, val, vlen);
}

/* The number in digits [p, end), or 0 when they are not all digits. */
static int parse_number(const char *p, const char *end, uint64_t *number) {
  uint64_t v = 0;
  if (p == end) return 0;
  for (; p < end; p++) {
    if (*p < '0' || *p > '9' || v > UINT64_MAX / 10) return 0;
    v = v * 10 + (uint64_t)(*p - '0');
  }
  *number = v;
  return 1;
}

enum { NAME_OTHER, NAME_TABLE, NAME_LOG };

/* "NNNNNN.sst" is a table; "<base>.NNNNNN" a log, its base (borrowed from
 * name) in *base, *base_len. */
static int parse_name(const char *name, uint64_t *number, const char **base,
                      size_t *base_len) {
  size_t nl = strlen(name);
  if (nl > 4 && strcmp(name + nl - 4, ".sst") == 0)
    return parse_number(name, name + nl - 4, number) ? NAME_TABLE : NAME_OTHER;
  const char *dot = strrchr(name, '.');
  if (dot == NULL || dot == name || !parse_number(dot + 1, name + nl, number))
    return NAME_OTHER;
  *base = name;
  *base_len = (size_t)(dot - name);
  return NAME_LOG;
}

typedef struct replay_ctx {
  lkv_mem *mem;
  uint64_t max_seq;
  /* The chain of sequence numbers (wal_format.md): every record carries
   * the number the one before left off at. A record that does not follow
   * on ends the replay: a power cut kept a later log's records and lost
   * an earlier log's tail. */
  uint64_t next;      /* the number the next record must carry; 0: any */
  int log_start;      /* no record of the current log seen yet */
  uint64_t log_first; /* the current log's first record's number */
} replay_ctx;

static int replay_record(void *ctx, const char *rec, size_t n, lkv_err *err) {
  replay_ctx *rc = ctx;
  (void)err;
  /* validate the whole record first: a batch applies all or nothing */
  int r = lkv_batch_iterate(rec, n, NULL, NULL);
  if (r) return LKV_CORRUPTION;
  uint64_t seq = lkv_get64(rec);
  uint32_t count = lkv_get32(rec + 8);
  if (rc->next && seq != rc->next) return LKV_NOTFOUND;
  if (rc->log_start) rc->log_first = seq;
  rc->log_start = 0;
  if (count == 0) { /* a marker */
    rc->next = seq;
    return LKV_OK;
  }
  r = lkv_batch_iterate(rec, n, insert_op, rc->mem);
  if (r) return r == LKV_CORRUPTION ? LKV_CORRUPTION : LKV_NOMEM;
  if (seq + count - 1 > rc->max_seq) rc->max_seq = seq + count - 1;
  rc->next = seq + count;
  return LKV_OK;
}

/* A file of the directory, as open sorts it. */
typedef struct dir_entry {
  int kind; /* NAME_TABLE, NAME_LOG, NAME_OTHER */
  uint64_t number;
  size_t base_len; /* logs: the base is name[0 .. base_len) */
  char name[];
} dir_entry;

typedef struct dir_scan {
  dir_entry **e;
  size_t n, cap;
  int nomem;
} dir_scan;

static int scan_add(void *arg, const char *name) {
  dir_scan *sc = arg;
  size_t nl = strlen(name);
  if (sc->n == sc->cap) {
    size_t cap = sc->cap ? sc->cap * 2 : 32;
    dir_entry **p = realloc(sc->e, cap * sizeof *p);
    if (p == NULL) return sc->nomem = 1;
    sc->e = p;
    sc->cap = cap;
  }
  dir_entry *d = malloc(sizeof *d + nl + 1);
  if (d == NULL) return sc->nomem = 1;
  memcpy(d->name, name, nl + 1);
  const char *base = NULL;
  d->base_len = 0;
  d->kind = parse_name(d->name, &d->number, &base, &d->base_len);
  sc->e[sc->n++] = d;
  return 0;
}

static void scan_free(dir_scan *sc) {
  for (size_t i = 0; i < sc->n; i++) free(sc->e[i]);
  free(sc->e);
  memset(sc, 0, sizeof *sc);
}

static int scan_dir(lkv_db *db, dir_scan *sc, lkv_err *err) {
  memset(sc, 0, sizeof *sc);
  int rc = lkv_env_list_dir(db->env, db->dir, scan_add, sc, err);
  if (rc == LKV_OK && sc->nomem)
    rc = lkv_seterr(err, LKV_NOMEM, "scanning %s", db->dir);
  if (rc) scan_free(sc);
  return rc;
}

static int is_log_of(const dir_entry *d, const char *base) {
  return d->kind == NAME_LOG && strlen(base) == d->base_len &&
         memcmp(d->name, base, d->base_len) == 0;
}

/* A directory without a MANIFEST is a new database only when it holds
 * nothing but what an interrupted first open leaves (LOCK, MANIFEST.tmp,
 * an empty log): anything else is someone's data, refused untouched. */
static int check_fresh(lkv_db *db, const dir_scan *sc, lkv_err *err) {
  for (size_t i = 0; i < sc->n; i++) {
    const dir_entry *d = sc->e[i];
    if (d->kind == NAME_TABLE)
      return lkv_seterr(err, LKV_CORRUPTION,
                        "%s/MANIFEST is missing but tables exist (%s)", db->dir,
                        d->name);
    if (strcmp(d->name, "LOCK") == 0 || strcmp(d->name, LKV_MANIFEST_TMP) == 0)
      continue;
    if (is_log_of(d, db->log_file_name)) {
      char path[4096];
      lkv_env_info st;
      if (lkv_db_path(db, d->name, path, sizeof path, NULL) == LKV_OK &&
          lkv_env_stat(db->env, path, &st, NULL) == LKV_OK && st.size == 0)
        continue;
    }
    return lkv_seterr(err, LKV_INVALID,
                      "%s is not a lunakv database: it holds %s but no "
                      "MANIFEST (open an empty or new directory)",
                      db->dir, d->name);
  }
  return LKV_OK;
}

/* The base name of the logs to replay. A version 2 MANIFEST records it;
 * a version 1 MANIFEST did not (the logs were named after the option at
 * the time), so the live logs tell: the configured name's, else the one
 * other name they carry. */
static int replay_base(lkv_db *db, const lkv_manifest *m, const dir_scan *sc,
                       char *base, size_t n, lkv_err *err) {
  if (m->wal_name) {
    snprintf(base, n, "%.*s", (int)m->wal_name_len, m->wal_name);
    return LKV_OK;
  }
  const dir_entry *found = NULL;
  for (size_t i = 0; i < sc->n; i++) {
    const dir_entry *d = sc->e[i];
    if (d->kind != NAME_LOG || d->number < m->wal_number) continue;
    if (is_log_of(d, db->log_file_name)) {
      found = NULL;
      break;
    }
    if (found && (found->base_len != d->base_len ||
                  memcmp(found->name, d->name, d->base_len) != 0))
      return lkv_seterr(err, LKV_INVALID,
                        "%s holds logs under two names (%s, %s) and its "
                        "MANIFEST does not say which is live: set "
                        "log_file_name to the one it was written with",
                        db->dir, found->name, d->name);
    found = d;
  }
  if (found)
    snprintf(base, n, "%.*s", (int)found->base_len, found->name);
  else
    snprintf(base, n, "%s", db->log_file_name);
  return LKV_OK;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* The live logs of base (numbered from the MANIFEST's wal_number), in
 * order, into *wals; deletes what no one needs (unless read-only): tables
 * the MANIFEST does not list (an interrupted flush or compaction), older
 * logs of base (already flushed) when the base is known, MANIFEST.tmp.
 * Logs under another name are left alone: they are not this database's. */
static int sort_files(lkv_db *db, const lkv_manifest *m, const dir_scan *sc,
                      const char *base, int base_known, uint64_t **wals,
                      size_t *nwals, uint64_t *max_number, lkv_err *err) {
  *nwals = 0;
  *wals = malloc((sc->n ? sc->n : 1) * sizeof **wals);
  if (*wals == NULL) return lkv_seterr(err, LKV_NOMEM, "scanning %s", db->dir);
  for (size_t i = 0; i < sc->n; i++) {
    const dir_entry *d = sc->e[i];
    int dead = strcmp(d->name, LKV_MANIFEST_TMP) == 0;
    if (d->kind == NAME_TABLE) {
      int live = 0;
      for (size_t j = 0; j < m->nfiles && !live; j++)
        live = m->files[j].number == d->number;
      dead = !live;
    } else if (is_log_of(d, base)) {
      if (d->number >= m->wal_number)
        (*wals)[(*nwals)++] = d->number;
      else
        dead = base_known; /* a guessed name deletes nothing */
    }
    if ((d->kind == NAME_TABLE || is_log_of(d, base)) &&
        d->number > *max_number)
      *max_number = d->number;
    if (dead && !db->o.read_only) lkv_db_remove_file(db, d->name);
  }
  if (*nwals) qsort(*wals, *nwals, sizeof **wals, cmp_u64);
  return LKV_OK;
}

/* Write the replayed memtable as an L0 table, record it with a fresh log
 * number in the MANIFEST, then create that log: the MANIFEST goes first,
 * so a crash between the two leaves a log number with no file (nothing to
 * replay) rather than a log no MANIFEST knows. */
static int restart_log(lkv_db *db, lkv_err *err) {
  lkv_edit e = {0};
  int rc = LKV_OK;
  char name[256], path[4096];
  db->wal_number = lkv_vset_new_file(&db->vs);
  uint64_t start = lkv_db_seq(db) + 1;
  lkv_mem_set_wal(db->mem, db->wal_number, start);
  if (lkv_mem_entries(db->mem) > 0) {
    lkv_fmeta *f = NULL;
    lkv_iiter *it = lkv_mem_iter(db->mem);
    if (it == NULL) return lkv_seterr(err, LKV_NOMEM, "recovery");
    it->ops->seek_first(it);
    lkv_table_opts to = lkv_db_table_opts(db);
    rc = lkv_build_table(&db->vs.files, &to, it, lkv_vset_new_file(&db->vs), &f,
                         err);
    it->ops->destroy(it);
    if (rc == LKV_OK && f) atomic_fetch_add(&db->level_written[0], f->size);
    if (rc == LKV_OK && f && lkv_edit_add(&e, 0, f)) {
      lkv_fmeta_unref(f);
      rc = lkv_seterr(err, LKV_NOMEM, "recovery");
    }
    lkv_mem *fresh = rc ? NULL : lkv_mem_new(db->o.max_memtable_size);
    if (rc == LKV_OK && fresh == NULL)
      rc = lkv_seterr(err, LKV_NOMEM, "recovery");
    if (rc) {
      lkv_edit_free(&e);
      return rc;
    }
    lkv_mem_set_wal(fresh, db->wal_number, start);
    lkv_mem_unref(db->mem);
    db->mem = fresh;
  }
  if ((rc = lkv_db_install_sv(db))) {
    lkv_edit_free(&e);
    return lkv_seterr(err, rc, "recovery");
  }
  pthread_mutex_lock(&db->manifest_mu);
  rc = lkv_db_log_and_apply(db, &e, 0, NULL, err); /* the new wal_number */
  pthread_mutex_unlock(&db->manifest_mu);
  lkv_edit_free(&e);
  lkv_db_log_name(db->log_file_name, db->wal_number, name, sizeof name);
  if (rc == LKV_OK &&
      (rc = lkv_db_path(db, name, path, sizeof path, err)) == LKV_OK)
    rc = lkv_db_create_wal(db, path, start, &db->wal, err);
  return rc;
}

int lkv_db_recover(lkv_db *db, lkv_err *err) {
  lkv_manifest m;
  dir_scan sc;
  int exists, rc;
  uint64_t *wals = NULL;
  size_t nwals = 0;
  char base[256];
  if ((rc = lkv_manifest_read(db->env, db->dir, &m, &exists, err))) return rc;
  if ((rc = scan_dir(db, &sc, err))) {
    lkv_manifest_free(&m);
    return rc;
  }
  if (!exists) {
    m.next_file = 1;
    m.wal_number = 0;
    if ((rc = check_fresh(db, &sc, err))) goto out;
    if (db->o.read_only) {
      rc = lkv_seterr(err, LKV_INVALID,
                      "%s holds no lunakv database (no MANIFEST)", db->dir);
      goto out;
    }
  }
  if ((rc = replay_base(db, &m, &sc, base, sizeof base, err))) goto out;
  int base_known = m.wal_name != NULL || strcmp(base, db->log_file_name) == 0;
  if ((rc = lkv_vset_load(&db->vs, &m, err))) goto out;
  uint64_t max_number = 0;
  if ((rc = sort_files(db, &m, &sc, base, base_known, &wals, &nwals,
                       &max_number, err)))
    goto out;
  db->vs.next_file =
      m.next_file > max_number + 1 ? m.next_file : max_number + 1;
  uint64_t last_seq = m.last_seq;

  /* the chain starts where the MANIFEST says its oldest live log does
   * (unknown for a version 1 MANIFEST) */
  replay_ctx rctx = {db->mem, 0, m.wal_start_seq, 0, 0};
  uint64_t valid_end = 0, dropped = 0;
  size_t replayed = 0;
  for (size_t i = 0; i < nwals; i++) {
    char name[256], path[4096], why[160];
    lkv_db_log_name(base, wals[i], name, sizeof name);
    if ((rc = lkv_db_path(db, name, path, sizeof path, err))) goto out;
    rctx.log_start = 1;
    rc = lkv_wal_replay(db->env, path, replay_record, &rctx, &valid_end,
                        &dropped, why, sizeof why, err);
    if (rc == LKV_NOMEM) lkv_seterr(err, rc, "replaying %s", name);
    if (rc) goto out;
    replayed = i + 1;
    if (dropped) {
      /* kept for stats (the library prints nothing): later logs hold later
       * writes, so replay stops here to keep a clean prefix */
      db->wal_dropped = dropped;
      int n = snprintf(db->recovery_msg, sizeof db->recovery_msg,
                       "%.64s: %.150s; replay stopped there", name, why);
      (void)n; /* bounded by the precisions above */
      break;
    }
  }
  if (rctx.max_seq > last_seq) last_seq = rctx.max_seq;
  lkv_vset_set_last_seq(&db->vs, last_seq);

  if (db->o.read_only) {
    /* the replayed writes stay in memory: nothing on disk changes */
    rc = lkv_db_install_sv(db);
  } else if (replayed == 1 && nwals == 1 && m.wal_name != NULL &&
             strcmp(base, db->log_file_name) == 0 &&
             rctx.next == last_seq + 1) {
    /* the common case: keep appending to the log, cut after its last
     * good record so new writes follow valid data. Only when the log ends
     * where the sequence numbers go on: after a crash that lost writes
     * the MANIFEST counted, new writes start past a gap, and a fresh log
     * (below) starts the chain there. */
    char name[256], path[4096];
    lkv_db_log_name(db->log_file_name, wals[0], name, sizeof name);
    if ((rc = lkv_db_path(db, name, path, sizeof path, err)) ||
        (rc = lkv_wal_reopen(db->env, path, valid_end, &db->wal, err)))
      goto out;
    db->wal_number = wals[0];
    atomic_store(&db->wal_bytes, valid_end);
    uint64_t start = m.wal_number == wals[0] && m.wal_start_seq
                         ? m.wal_start_seq
                     : rctx.log_first ? rctx.log_first
                                      : last_seq + 1;
    lkv_mem_set_wal(db->mem, wals[0], start);
    rc = lkv_db_install_sv(db);
    /* The log may have been created by an earlier open in another sync
     * mode, its directory entry never synced: under SYNC=always writes
     * acknowledged in it must not vanish with it. */
    if (rc == LKV_OK && db->o.sync == LKV_SYNC_ALWAYS)
      rc = lkv_env_sync_dir(db->env, db->dir, err);
  } else {
    /* several logs (a crash with a frozen memtable), logs under another
     * name than the one configured, writes lost, or none: what was
     * replayed goes into a table and one fresh log starts; the old logs go
     * once the MANIFEST no longer needs them */
    if ((rc = restart_log(db, err))) goto out;
    /* (logs whose name was only guessed, for a version 1 MANIFEST, are
     * left in place: the new MANIFEST names others, so they are never
     * read again, and a guess must not delete what may be a user's file) */
    for (size_t i = 0; i < nwals && base_known; i++) {
      char name[256];
      lkv_db_log_name(base, wals[i], name, sizeof name);
      lkv_db_remove_file(db, name);
    }
  }
out:
  free(wals);
  scan_free(&sc);
  lkv_manifest_free(&m);
  return rc;
}

int lkv_db_check_dir(lkv_db *db, lkv_err *err) {
  char mpath[4096];
  lkv_env_info st;
  dir_scan sc;
  int rc = lkv_db_path(db, LKV_MANIFEST_NAME, mpath, sizeof mpath, err);
  if (rc == LKV_OK) rc = lkv_env_stat(db->env, mpath, &st, err);
  if (rc != LKV_NOTFOUND) return rc; /* a MANIFEST, or a stat that failed */
  /* (a failed stat read as "there is a MANIFEST" let the open go on past
   * this check with the error unheard) */
  if ((rc = scan_dir(db, &sc, err)) == LKV_OK) {
    rc = check_fresh(db, &sc, err);
    scan_free(&sc);
  }
  return rc;
}
