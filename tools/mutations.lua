-- tools/mutations.lua - the named mutations `make mutate` applies (see
-- tools/mutate.lua): each breaks one guarantee the docs state, and names
-- the test that must then fail. `from` must occur exactly once in `file`
-- (else the row is reported stale: mend it with the code). Tests run in
-- the scratch copy's root and build what they need.

local t = dofile("tools/mutation_tests.lua")
local ctest, spec, crash, asan_spec = t.ctest, t.spec, t.crash, t.asan_spec

return {
  -- ---- the write path ------------------------------------------------
  { name = "batch: sequence visible before its memtable inserts",
    file = "c/engine/write.c",
    from = "    rc = wal_commit(db, w, last, first_seq, group, &lerr);\n",
    to = "    rc = wal_commit(db, w, last, first_seq, group, &lerr);\n" ..
      "    lkv_vset_set_last_seq(&db->vs, seq - 1);\n",
    test = ctest("lifecycle_test") },
  { name = "SYNC=always: no fdatasync before the write returns",
    file = "c/engine/write.c",
    from = "    rc = lkv_wal_sync(db->wal, err);\n    atomic_fetch_add(&db->wal_syncs, 1);",
    to = "    rc = lkv_wal_write_out(db->wal, err);\n    atomic_fetch_add(&db->wal_syncs, 1);",
    test = ctest("fault_test") },
  { name = "SYNC=batch: the log never written out by count",
    file = "c/engine/write.c",
    from = "db->o.sync == LKV_SYNC_NONE ||\n" ..
      "             db->unwritten >= db->o.wal_buffer_size",
    to = "db->o.sync == LKV_SYNC_NONE",
    test = spec("03-recovery_spec.lua", "sync=batch writer") },
  { name = "group commit: every writer commits alone",
    file = "c/engine/write.c",
    from = "for (lkv_writer *x = w->next; x && !x->force_flush",
    to = "for (lkv_writer *x = NULL; x && !x->force_flush",
    test = ctest("db_test") },
  -- the write then waits for a flush the test holds back: a timeout
  { name = "engine: a no-stall write waits for the background threads",
    file = "c/engine/write.c",
    from = "      if (no_stall) {",
    to = "      if (0) {",
    test = ctest("db_test"), timeout = 60 },
  { name = "replay: a later log applied over an earlier log's lost tail",
    file = "c/engine/recover.c",
    from = "  if (rc->next && seq != rc->next) return LKV_NOTFOUND;",
    to = "  if (0) return LKV_NOTFOUND;",
    test = spec("15-faults_spec.lua", "over a hole") },
  { name = "memtable switch: a failed write-out keeps a closed log (the old UAF)",
    file = "c/engine/write.c",
    from = "    if (w) {\n      lkv_wal_close(w, NULL);\n      lkv_db_remove_file(db, name);\n    }",
    to = "    lkv_wal_close(db->wal, NULL);\n    if (w) lkv_wal_close(w, NULL);\n" ..
      "    db->wal = w;",
    test = ctest("fault_test") },
  { name = "WAL reopen: the cut of a torn tail not synced",
    file = "c/engine/wal.c",
    from = "== LKV_OK)\n    rc = lkv_env_fdatasync(env, fd, path, err);",
    to = "== LKV_OK)\n    rc = LKV_OK;",
    test = spec("15-faults_spec.lua", "torn log tail") },
  { name = "WAL reopen: appends after lost writes instead of a fresh log",
    file = "c/engine/recover.c",
    from = "strcmp(base, db->log_file_name) == 0 &&\n" ..
      "             rctx.next == last_seq + 1) {",
    to = "strcmp(base, db->log_file_name) == 0) {",
    test = crash("power 1500 seed 13") },
  { name = "WAL reopen under SYNC=always: its directory entry not synced",
    file = "c/engine/recover.c",
    from = "    if (rc == LKV_OK && db->o.sync == LKV_SYNC_ALWAYS)\n" ..
      "      rc = lkv_env_sync_dir(db->env, db->dir, err);",
    to = "    if (0)\n      rc = lkv_env_sync_dir(db->env, db->dir, err);",
    test = spec("15-faults_spec.lua", "earlier open created") },
  { name = "new log under SYNC=always: its directory entry not synced",
    file = "c/engine/write.c",
    from = "  if (rc == LKV_OK && db->o.sync == LKV_SYNC_ALWAYS &&\n",
    to = "  if (rc == LKV_OK && 0 &&\n",
    test = crash("power 1000 seed 13") },
  -- (skipping a bad record is no longer a single point of failure: the
  -- sequence chain stops the replay at the record after it)
  { name = "open: a new database's directory not synced into its parent",
    file = "c/engine/env.c",
    from = "        if ((rc = ENV(e)->sync_dir(ENV(e), parent)))\n" ..
      "          return ioerr(err, rc, \"fsync\", parent);",
    to = "        (void)parent;",
    test = spec("15-faults_spec.lua", "new directory") },
  { name = "WAL replay: a record's checksum not checked",
    file = "c/engine/wal.c",
    from = "    if (lkv_crc32c(buf + pos + 4, 4 + (size_t)n) != lkv_get32(buf + pos)) {",
    to = "    if (0) {",
    test = spec("04-corruption_spec.lua") },
  -- ---- flush, compaction, MANIFEST ----------------------------------
  { name = "table: not fsynced before the MANIFEST names it",
    file = "c/engine/sst_build.c",
    from = "  return lkv_env_fsync(b->o.env, b->fd, b->path, &b->err);",
    to = "  return LKV_OK;",
    test = ctest("fault_test") },
  { name = "MANIFEST: temp file not fsynced before the rename",
    file = "c/engine/manifest.c",
    from = "    rc = lkv_env_fsync(env, fd, tmp, err);",
    to = "    rc = LKV_OK;",
    test = ctest("fault_test") },
  { name = "MANIFEST: directory not synced after the rename",
    file = "c/engine/manifest.c",
    from = "      return lkv_env_sync_dir(env, dir, err);",
    to = "      return LKV_OK;",
    test = ctest("fault_test") },
  { name = "flush: logs deleted before the MANIFEST drops them",
    file = "c/engine/flush.c",
    from = "    if (rc == LKV_OK) rc = lkv_db_log_and_apply(db, &e, k, NULL, &err);",
    to = "    for (int i = 0; i < k; i++) {\n      char nm[256];\n" ..
      "      wal_name(db, wals[i], nm, sizeof nm);\n      lkv_db_remove_file(db, nm);\n    }\n" ..
      "    if (rc == LKV_OK) rc = lkv_db_log_and_apply(db, &e, k, NULL, &err);",
    test = ctest("fault_test") },
  { name = "open: a table's size read for the message after it is closed",
    file = "c/engine/vset.c",
    from = "      lkv_table_close(t);\n      rc = lkv_seterr(err, LKV_CORRUPTION,\n" ..
      "                      \"%s: size %llu differs from the %llu bytes in MANIFEST\",\n" ..
      "                      name, (unsigned long long)size,",
    to = "      lkv_table_close(t);\n      rc = lkv_seterr(err, LKV_CORRUPTION,\n" ..
      "                      \"%s: size %llu differs from the %llu bytes in MANIFEST\",\n" ..
      "                      name, (unsigned long long)lkv_table_file_size(t),",
    test = asan_spec("15-faults_spec.lua", "real size") },
  { name = "compaction: outputs deleted though the MANIFEST on disk may name them",
    file = "c/engine/compact.c",
    from = "  } else if (!maybe_committed) {",
    to = "  } else {",
    test = ctest("fault_test") },
  { name = "compaction: ignores live snapshots",
    file = "c/engine/compact.c",
    from = "uint64_t smallest_snap = lkv_db_oldest_snapshot(db);",
    to = "uint64_t smallest_snap = lkv_db_seq(db);",
    test = spec("08-compaction_spec.lua", "snapshot") },
  { name = "compaction: drops a tombstone while a deeper level holds the key",
    file = "c/engine/compact.c",
    from = "!lkv_version_deeper_overlaps(c->v, c->out_level, u.p, u.n)",
    to = "1",
    test = ctest("compact_test") },
  -- ---- open, close, lifetime ----------------------------------------
  { name = "close: frees the db under calls in flight",
    file = "c/engine/db.c",
    from = "  drain_calls(db);\n  if (db->threads_started)",
    to = "  (void)drain_calls;\n  if (db->threads_started)",
    test = ctest("lifecycle_test") },
  { name = "dead tables deleted on the reader's thread",
    file = "c/engine/version.c",
    from = "  fs->dead = f;\n  pthread_cond_signal(&fs->cv);\n  pthread_mutex_unlock(&fs->mu);\n}",
    -- the janitor is not woken: the reader buries them itself, every
    -- time (woken too, it raced the reader and sometimes won under load)
    to = "  fs->dead = f;\n  pthread_mutex_unlock(&fs->mu);\n  lkv_files_bury(fs);\n}",
    test = ctest("lifecycle_test") },
  { name = "open: the WAL name from the option, not the MANIFEST",
    file = "c/engine/recover.c",
    from = "  if (m->wal_name) {\n",
    to = "  snprintf(base, n, \"%s\", db->log_file_name);\n  return LKV_OK;\n" ..
      "  if (m->wal_name) {\n",
    test = spec("15-faults_spec.lua", "WAL name") },
  { name = "open: adopts a directory that is not a database",
    file = "c/engine/recover.c",
    from = "static int check_fresh(lkv_db *db, const dir_scan *sc, lkv_err *err) {\n",
    to = "static int check_fresh(lkv_db *db, const dir_scan *sc, lkv_err *err) {\n" ..
      "  if (db) return LKV_OK;\n",
    test = spec("15-faults_spec.lua", "opening a directory") },
  { name = "read_only: writes are let through",
    file = "c/engine/write.c",
    from = "  if (db->o.read_only)\n    return lkv_seterr(err, LKV_INVALID, \"%s is open read-only\", db->dir);",
    to = "",
    test = spec("15-faults_spec.lua", "read_only") },
  -- ---- failures that must be heard ----------------------------------
  { name = "table open: any failure retried without O_NOATIME, unheard",
    file = "c/engine/env.c",
    from = "  if (rc == EPERM) rc = ENV(e)->open(",
    to = "  if (rc) rc = ENV(e)->open(",
    test = spec("15-faults_spec.lua", "open of .sst") },
  { name = "close: a failed flush or compaction goes unreported",
    file = "c/engine/db.c",
    from = "  if (rc == LKV_OK && db->bg_error) {",
    to = "  if (0 && db->bg_error) {",
    test = ctest("fault_test") },
}
