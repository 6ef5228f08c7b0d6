/* rlog_term.c - the node's Raft hard state in DATA_DIR/term: the current
 * term and the vote (hardstate.h), through the lkv_env given (NULL =
 * POSIX). Calls no other rlog file. Little-endian throughout.
 *
 * Version 3, 1024 bytes, two slots, each alone in a 512-byte sector:
 *
 *   offset 0    slot 0: magic "LUNAKVT3" 8 | generation 8 | term 8 |
 *                       vote 8 | crc32c of the 32 bytes before it 4
 *   offset 36   zeros to 512
 *   offset 512  slot 1, as slot 0
 *   offset 548  zeros to 1024
 *
 * The hard state is the valid slot (magic and crc) with the higher
 * generation. A store overwrites the other slot, never the one holding
 * the last state known durable, with a generation past every one written
 * or tried, then fdatasyncs: one pwrite and one fdatasync, no rename, and
 * as the file's size never changes the fdatasync writes no metadata. A
 * crash mid-store leaves the old slot whole and the new one either whole
 * (its generation wins) or failing its check: then it is ignored, as its
 * fdatasync never returned and nothing that depended on it left the node.
 * Both slots failing, or two valid slots of one generation (no store
 * makes them), is corruption: the node does not start.
 *
 * Version 2 (28 bytes: magic "LUNAKVT2", term 8, vote 8, crc32c of the
 * first 24 bytes 4) and version 1 (20 bytes: magic "LUNAKVTM", term 8,
 * crc32c 4, written before elections existed; read as vote 0) are still
 * read. The first store over one of them, or a fresh node's, writes the
 * whole version-3 file aside, fdatasyncs it, renames it over and fsyncs
 * the directory; later stores keep that file open, which the node's open
 * makes durable first (lkvnet_hardstate_open). lkvnet_term_load and
 * _store (rlog.h) keep reading and writing version 1, whole, for the
 * log's own tests.
 *
 * Also the join mark, DATA_DIR/joining (hardstate.h): whether the record
 * of votes can be trusted (a fresh node joining may hold the URL of a
 * voter whose directory was lost). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
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
 * file could come back after a crash, with an older term or vote). With
 * keep_fd, the new file stays open for writing there. */
static int replace_file(const char *dir, const lkv_env *env,
                        const unsigned char *b, size_t n, int *keep_fd,
                        lkv_err *err) {
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
  } else if (keep_fd == NULL) {
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
    f_close(env, fd);
    (void)env->unlink(env, tmp);
    return rc;
  }
  /* the term counts once its name survives a crash */
  if ((e = env->sync_dir(env, dir)) != 0) {
    f_close(env, fd);
    return ioerr(err, e, "fsync directory", dir);
  }
  if (keep_fd != NULL) *keep_fd = fd;
  return LKV_OK;
}

int lkvnet_term_store(const char *dir, const lkv_env *env, uint64_t term,
                      lkv_err *err) {
  unsigned char b[TERM_SIZE];
  memcpy(b, TERM_MAGIC, 8);
  lkv_put64(b + 8, term);
  lkv_put32(b + 16, lkv_crc32c(b, 16));
  return replace_file(dir, env, b, sizeof b, NULL, err);
}

#define HS_MAGIC "LUNAKVT2"
#define HS_SIZE 28u /* magic 8, term 8, vote 8, crc32c of the first 24 4 */

#define HS3_MAGIC "LUNAKVT3"
#define HS3_SECTOR 512u /* a slot's own sector: slot i at i * 512 */
#define HS3_SLOT 36u    /* magic 8, generation 8, term 8, vote 8, crc 4 */
#define HS3_SIZE (2 * HS3_SECTOR)

struct lkvnet_hardstate {
  const lkv_env *env;
  char *dir;
  char path[4096 + 8];
  int fd;         /* the version-3 file, open; -1 until a store makes it */
  int durable;    /* the slot holding the last state known durable (with
                     fd >= 0) */
  uint64_t tried; /* the highest generation written or tried */
};

/* What a term file holds. */
typedef struct hs_read {
  uint64_t term, vote;
  int version;  /* 0: no file */
  int slot;     /* version 3: the slot it is in */
  uint64_t gen; /* version 3: that slot's generation */
} hs_read;

static void slot_put(unsigned char *p, uint64_t gen, uint64_t term,
                     uint64_t vote) {
  memcpy(p, HS3_MAGIC, 8);
  lkv_put64(p + 8, gen);
  lkv_put64(p + 16, term);
  lkv_put64(p + 24, vote);
  lkv_put32(p + 32, lkv_crc32c(p, 32));
}

/* 1 when the slot at p passes its checks. */
static int slot_valid(const unsigned char *p) {
  return memcmp(p, HS3_MAGIC, 8) == 0 && lkv_get32(p + 32) == lkv_crc32c(p, 32);
}

/* The n bytes read from path (n < 0: -errno of the read) as a term file
 * of any version. */
static int parse(const char *path, const unsigned char *b, long long n,
                 hs_read *r, lkv_err *err) {
  memset(r, 0, sizeof *r);
  if (n < 0) return ioerr(err, (int)-n, "read", path);
  if (n == (long long)HS3_SIZE) {
    const unsigned char *s0 = b, *s1 = b + HS3_SECTOR;
    int ok0 = slot_valid(s0), ok1 = slot_valid(s1), pick;
    if (!ok0 && !ok1)
      return lkv_seterr(err, LKV_CORRUPTION,
                        "%s: not a valid term file (version 3: neither "
                        "slot passes its checksum)",
                        path);
    if (ok0 && ok1 && lkv_get64(s0 + 8) == lkv_get64(s1 + 8))
      return lkv_seterr(err, LKV_CORRUPTION,
                        "%s: not a valid term file (version 3: both slots "
                        "have generation %llu)",
                        path, (unsigned long long)lkv_get64(s0 + 8));
    /* a slot failing its check was being written when the machine
     * stopped: the other one holds the last state stored */
    pick = !ok0 || (ok1 && lkv_get64(s1 + 8) > lkv_get64(s0 + 8));
    b += (size_t)pick * HS3_SECTOR;
    r->version = 3;
    r->slot = pick;
    r->gen = lkv_get64(b + 8);
    r->term = lkv_get64(b + 16);
    r->vote = lkv_get64(b + 24);
    return LKV_OK;
  }
  if (n == (long long)HS_SIZE && memcmp(b, HS_MAGIC, 8) == 0 &&
      lkv_get32(b + 24) == lkv_crc32c(b, 24)) {
    r->version = 2;
    r->term = lkv_get64(b + 8);
    r->vote = lkv_get64(b + 16);
    return LKV_OK;
  }
  if (n == (long long)TERM_SIZE && memcmp(b, TERM_MAGIC, 8) == 0 &&
      lkv_get32(b + 16) == lkv_crc32c(b, 16)) {
    r->version = 1;
    r->term = lkv_get64(b + 8); /* no vote was ever kept */
    return LKV_OK;
  }
  return lkv_seterr(err, LKV_CORRUPTION,
                    "%s: not a valid term file (%lld bytes)", path, n);
}

/* Read the file at path, opened with flags: r->version 0 when there is
 * none. *fd, when given, is left open on success (-1: no file). */
static int read_file(const lkv_env *env, const char *path, int flags, int *fd,
                     hs_read *r, lkv_err *err) {
  unsigned char b[HS3_SIZE + 1];
  long long n;
  int f, e, rc;
  memset(r, 0, sizeof *r);
  if (fd != NULL) *fd = -1;
  if ((e = env->open(env, path, flags, 0, &f)) != 0) {
    if (e == ENOENT) return LKV_OK;
    return ioerr(err, e, "open", path);
  }
  n = env->pread(env, f, b, sizeof b, 0);
  rc = parse(path, b, n, r, err);
  if (rc != LKV_OK || fd == NULL)
    f_close(env, f);
  else
    *fd = f;
  return rc;
}

int lkvnet_hardstate_load(const char *dir, const lkv_env *env, uint64_t *term,
                          uint64_t *vote, lkv_err *err) {
  char path[4096 + 8];
  hs_read r;
  int rc;
  *term = *vote = 0;
  snprintf(path, sizeof path, "%s/%s", dir, TERM_FILE);
  rc = read_file(env_or_posix(env), path, O_RDONLY, NULL, &r, err);
  if (rc != LKV_OK) return rc;
  *term = r.term;
  *vote = r.vote;
  return LKV_OK;
}

int lkvnet_hardstate_open(const char *dir, const lkv_env *env,
                          lkvnet_hardstate **out, uint64_t *term,
                          uint64_t *vote, lkv_err *err) {
  lkvnet_hardstate *hs;
  hs_read r;
  int rc, e;
  *out = NULL;
  *term = *vote = 0;
  if ((hs = calloc(1, sizeof *hs)) == NULL || (hs->dir = strdup(dir)) == NULL) {
    free(hs);
    return lkv_seterr(err, LKV_NOMEM, "term file");
  }
  hs->env = env_or_posix(env);
  snprintf(hs->path, sizeof hs->path, "%s/%s", dir, TERM_FILE);
  rc = read_file(hs->env, hs->path, O_RDWR, &hs->fd, &r, err);
  if (rc != LKV_OK) {
    lkvnet_hardstate_close(hs);
    return rc;
  }
  /* What was read may be in the page cache alone: a process that died
   * before a store's fdatasync (or the directory's fsync after the
   * rename) returned leaves it there, and this read finds it. The node
   * acts on it from now on, so a power loss must not undo it now. */
  if (r.version == 3 && (e = f_sync(hs->env, hs->fd)) != 0) {
    rc = ioerr(err, e, "fdatasync", hs->path);
  } else if (r.version != 0 && (e = hs->env->sync_dir(hs->env, dir)) != 0) {
    rc = ioerr(err, e, "fsync directory", dir);
  }
  if (rc != LKV_OK) {
    lkvnet_hardstate_close(hs);
    return rc;
  }
  if (r.version != 3) {
    /* the first store writes a version-3 file whole */
    f_close(hs->env, hs->fd);
    hs->fd = -1;
  }
  hs->durable = r.slot;
  hs->tried = r.gen;
  *term = r.term;
  *vote = r.vote;
  *out = hs;
  return LKV_OK;
}

int lkvnet_hardstate_store(lkvnet_hardstate *hs, uint64_t term, uint64_t vote,
                           lkv_err *err) {
  const lkv_env *env = hs->env;
  unsigned char b[HS3_SIZE];
  /* every write, a failed one too, takes a generation never used: what a
   * failed call wrote may still reach the disk, and must never tie with
   * or outrank a later store, whichever slot it lands in */
  uint64_t gen = ++hs->tried;
  int slot, e;
  if (hs->fd < 0) {
    memset(b, 0, sizeof b);
    slot_put(b, gen, term, vote); /* slot 1: invalid until a store */
    e = replace_file(hs->dir, env, b, sizeof b, &hs->fd, err);
    if (e == LKV_OK) hs->durable = 0;
    return e;
  }
  /* the slot that is not the last state known durable: a failed store
   * is retried into the slot it failed in, never over that state */
  slot = 1 - hs->durable;
  slot_put(b, gen, term, vote);
  if ((e = pwrite_all(env, hs->fd, b, HS3_SLOT, (uint64_t)slot * HS3_SECTOR)))
    return ioerr(err, e, "write", hs->path);
  if ((e = f_sync(env, hs->fd)) != 0)
    return ioerr(err, e, "fdatasync", hs->path);
  hs->durable = slot;
  return LKV_OK;
}

void lkvnet_hardstate_close(lkvnet_hardstate *hs) {
  if (hs == NULL) return;
  f_close(hs->env, hs->fd);
  free(hs->dir);
  free(hs);
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
