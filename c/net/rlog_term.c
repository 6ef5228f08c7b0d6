/* rlog_term.c - the node's Raft hard state in DATA_DIR/term: the current
 * term and the vote (lkvnet_hardstate_load, lkvnet_hardstate_store;
 * node.h), replaced whole by a rename, through the lkv_env given (NULL =
 * POSIX). Version 2 (28 bytes: magic "LUNAKVT2", term 8, vote 8, crc32c
 * of the first 24 bytes 4) adds the vote; version 1 (20 bytes: magic
 * "LUNAKVTM", term 8, crc32c 4), written before elections existed, is
 * still read, as vote 0 (no vote), and lkvnet_term_load/_store (rlog.h)
 * keep reading and writing it for the log's own tests. Also the join
 * mark, DATA_DIR/joining (hardstate.h): whether that record of votes can
 * be trusted. Calls no other rlog file. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>

#include "coding.h"
#include "crc32c.h"
#include "hardstate.h"
#include "rlog_impl.h"

/* {======================================================================
** The current term: DATA_DIR/term
** ======================================================================= */

#define TERM_FILE "term"
#define TERM_MAGIC "LUNAKVTM"
#define TERM_SIZE 20u /* magic 8, term 8, crc32c of the first 16 bytes 4 */

/* Replace DATA_DIR/term by the n bytes at b: written aside, fsync'ed,
 * renamed, the directory fsync'ed (an error there is an error: the old
 * file could come back after a crash, with an older term or vote). */
static int replace_file(const char *dir, const lkv_env *env,
                        const unsigned char *b, size_t n, lkv_err *err) {
  char path[4096 + 8], tmp[4096 + 16];
  const char *what;
  int fd, e;
  env = env_or_posix(env);
  snprintf(path, sizeof path, "%s/%s", dir, TERM_FILE);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  if ((e = env->open(env, tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644, &fd)) != 0)
    return ioerr(err, e, "create", tmp);
  if ((e = pwrite_all(env, fd, b, n, 0)) != 0) {
    what = "write";
  } else if ((e = f_sync(env, fd)) != 0) {
    what = "fdatasync";
  } else {
    e = env->close(env, fd);
    fd = -1;
    what = "close";
  }
  if (e != 0) {
    int rc = ioerr(err, e, what, tmp);
    f_close(env, fd);
    (void)env->unlink(env, tmp);
    return rc;
  }
  if ((e = env->rename(env, tmp, path)) != 0) {
    int rc = ioerr(err, e, "rename", tmp);
    (void)env->unlink(env, tmp);
    return rc;
  }
  /* the term counts once its name survives a crash */
  if ((e = env->sync_dir(env, dir)) != 0)
    return ioerr(err, e, "fsync directory", dir);
  return LKV_OK;
}

int lkvnet_term_store(const char *dir, const lkv_env *env, uint64_t term,
                      lkv_err *err) {
  unsigned char b[TERM_SIZE];
  memcpy(b, TERM_MAGIC, 8);
  lkv_put64(b + 8, term);
  lkv_put32(b + 16, lkv_crc32c(b, 16));
  return replace_file(dir, env, b, sizeof b, err);
}

#define HS_MAGIC "LUNAKVT2"
#define HS_SIZE 28u /* magic 8, term 8, vote 8, crc32c of the first 24 4 */

int lkvnet_hardstate_store(const char *dir, const lkv_env *env, uint64_t term,
                           uint64_t vote, lkv_err *err) {
  unsigned char b[HS_SIZE];
  memcpy(b, HS_MAGIC, 8);
  lkv_put64(b + 8, term);
  lkv_put64(b + 16, vote);
  lkv_put32(b + 24, lkv_crc32c(b, 24));
  return replace_file(dir, env, b, sizeof b, err);
}

int lkvnet_hardstate_load(const char *dir, const lkv_env *env, uint64_t *term,
                          uint64_t *vote, lkv_err *err) {
  char path[4096 + 8];
  unsigned char b[HS_SIZE + 1];
  long long n;
  int fd, e;
  env = env_or_posix(env);
  *term = *vote = 0;
  snprintf(path, sizeof path, "%s/%s", dir, TERM_FILE);
  if ((e = env->open(env, path, O_RDONLY, 0, &fd)) != 0) {
    if (e == ENOENT) return LKV_OK;
    return ioerr(err, e, "open", path);
  }
  n = env->pread(env, fd, b, sizeof b, 0);
  f_close(env, fd);
  if (n < 0) return ioerr(err, (int)-n, "read", path);
  if (n == (long long)HS_SIZE && memcmp(b, HS_MAGIC, 8) == 0 &&
      lkv_get32(b + 24) == lkv_crc32c(b, 24)) {
    *term = lkv_get64(b + 8);
    *vote = lkv_get64(b + 16);
    return LKV_OK;
  }
  if (n == (long long)TERM_SIZE && memcmp(b, TERM_MAGIC, 8) == 0 &&
      lkv_get32(b + 16) == lkv_crc32c(b, 16)) {
    *term = lkv_get64(b + 8); /* version 1: no vote was ever kept */
    return LKV_OK;
  }
  return lkv_seterr(err, LKV_CORRUPTION,
                    "%s: not a valid term file (%lld bytes)", path, n);
}

int lkvnet_term_load(const char *dir, const lkv_env *env, uint64_t *term,
                     lkv_err *err) {
  uint64_t vote;
  return lkvnet_hardstate_load(dir, env, term, &vote, err);
}

/* }====================================================================== */

/* {======================================================================
** The join mark: DATA_DIR/joining
** ======================================================================= */

/* What the mark holds, for whoever finds it: its presence is what counts. */
#define JOIN_MARK_TEXT                                                      \
  "lunakv: this node joined a cluster (--join) with a fresh directory and " \
  "has not caught up yet: it grants no vote until it has\n"

int lkvnet_joinmark_get(const char *dir, const lkv_env *env, int *present,
                        lkv_err *err) {
  char path[4096 + 16];
  lkv_env_info st;
  int e;
  env = env_or_posix(env);
  snprintf(path, sizeof path, "%s/%s", dir, LKVNET_JOIN_MARK_FILE);
  *present = 0;
  if ((e = env->stat(env, path, &st)) == 0) {
    *present = 1;
    return LKV_OK;
  }
  return e == ENOENT ? LKV_OK : ioerr(err, e, "stat", path);
}

int lkvnet_joinmark_set(const char *dir, const lkv_env *env, lkv_err *err) {
  char path[4096 + 16];
  const char *what = "write";
  int fd, e;
  env = env_or_posix(env);
  snprintf(path, sizeof path, "%s/%s", dir, LKVNET_JOIN_MARK_FILE);
  if ((e = env->open(env, path, O_WRONLY | O_CREAT | O_TRUNC, 0644, &fd)) != 0)
    return ioerr(err, e, "create", path);
  if ((e = pwrite_all(env, fd, JOIN_MARK_TEXT, sizeof JOIN_MARK_TEXT - 1, 0)) ==
      0) {
    what = "fsync";
    if ((e = env->sync(env, fd, 0)) == 0) {
      what = "close";
      e = env->close(env, fd);
      fd = -1;
    }
  }
  f_close(env, fd);
  if (e != 0) return ioerr(err, e, what, path);
  /* the mark counts once its name survives a crash */
  e = env->sync_dir(env, dir);
  return e != 0 ? ioerr(err, e, "fsync directory", dir) : LKV_OK;
}

int lkvnet_joinmark_clear(const char *dir, const lkv_env *env, lkv_err *err) {
  char path[4096 + 16];
  int e;
  env = env_or_posix(env);
  snprintf(path, sizeof path, "%s/%s", dir, LKVNET_JOIN_MARK_FILE);
  if ((e = env->unlink(env, path)) != 0 && e != ENOENT)
    return ioerr(err, e, "remove", path);
  e = env->sync_dir(env, dir);
  return e != 0 ? ioerr(err, e, "fsync directory", dir) : LKV_OK;
}

/* }====================================================================== */
