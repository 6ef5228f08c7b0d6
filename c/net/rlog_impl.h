/* rlog_impl.h - the replication log's private parts, for c/net/rlog*.c
 * only (rlog.h is the public header): the struct every rlog file works on,
 * and the small helpers more than one of them needs, static inline so
 * that they call nothing above them. Lock order: only r->mu.
 *
 * The files, and which way calls go (a file calls only the files on its
 * right; nothing calls back into rlog.c, and the helpers here call none):
 *   rlog.c          open and replay, append, truncate, rewrite, read,
 *                   close  -> rlog_sync.c (starts the syncer),
 *                   rlog_compact.c, rlog_frame.c
 *   rlog_sync.c     the syncer thread, the owner's own syncs, the durable
 *                   index  -> rlog_compact.c (the syncer's rename)
 *   rlog_compact.c  the compaction in the background  -> rlog_frame.c
 *   rlog_frame.c    the file's header and its frames: encode, check, decode
 *   rlog_term.c     the current term, DATA_DIR/term */
#ifndef LKVNET_RLOG_IMPL_H
#define LKVNET_RLOG_IMPL_H

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "rlog.h"

/* Where each entry's frame starts, and its term: what /append needs
 * (prev_term checks, reading a range of frames) without reading the file.
 * ents[i] is entry base_index + 1 + i. */
typedef struct Ent {
  uint64_t off, term;
} Ent;

struct lkvnet_rlog {
  const lkv_env *env; /* the file system (never NULL) */
  int fd;
  int notify_fd;
  char dir[4096];
  char path[4096];
  uint64_t size; /* header plus whole frames: where the next one goes */
  /* The file's length: size, then zeros written ahead (prealloc bytes at
   * a time, by an append that needs room or by a compaction's copier).
   * An fdatasync after an append that lengthened the file must write the
   * inode too, a second write and wait on the device; into space written
   * ahead it writes only the data (docs/replication.md, "Space written
   * ahead"). */
  uint64_t alloc;
  uint64_t prealloc; /* owner thread only; 0: the file is size long */
  char *scratch;     /* encode buffer, owner thread only */
  size_t scratch_cap;
  Ent *ents; /* owner thread only */
  size_t nents, ents_cap;

  pthread_mutex_t mu;
  pthread_cond_t cv;
  pthread_t syncer;
  int started, stop;
  /* guarded by mu */
  uint64_t last_index, last_term, durable_index, base_index, base_term;
  /* gen moves whenever entries are cut or the file replaced: a sync that
   * began before must not vouch for what is there now. busy: the syncer
   * is inside fdatasync (a rewrite waits for it before closing fd). */
  uint64_t gen;
  int busy, paused;
  int owner_syncs; /* owner thread only: appends leave the syncer asleep */
  uint64_t appends, syncs, bytes;
  lkv_err sticky; /* code LKV_OK while healthy */
  uint64_t dropped_bytes;
  char dropped_why[LKV_ERR_MSG_LEN];

  /* A background compaction (lkvnet_rlog_compact_begin). cp_state is
   * guarded by mu; it moves COPYING -> COPIED (the copier thread) ->
   * RENAMING (the owner's switch) -> RENAMED (the syncer) -> IDLE (the
   * owner), or COPYING -> COPY_FAILED -> IDLE. The other cp_ fields belong
   * to whichever thread the state names: the copier in COPYING, the owner
   * in COPIED, the syncer in RENAMING. */
  int cp_state;
  lkv_err cp_err; /* why it failed */
  uint64_t cp_base, cp_base_term, cp_stable;
  uint64_t cp_from_off;   /* old file: the first kept frame */
  uint64_t cp_stable_off; /* old file: the first frame past stable */
  uint64_t cp_alloc;      /* new file: zeros up to here (the copier) */
  int cp_srcfd;           /* the old file, for the copier */
  int cp_fd;              /* the new file (replication.log.tmp) */
  int cp_oldfd;           /* the old file after the switch, until renamed */
  lkvnet_rlog_prepare_fn cp_prepare;
  void *cp_ctx;
  pthread_t cp_thread;
  int cp_report; /* LKVNET_COMPACT_DONE/FAILED not yet polled */
  lkv_err cp_report_err;
};

enum {
  CP_IDLE,
  CP_COPYING,
  CP_COPIED,
  CP_COPY_FAILED,
  CP_RENAMING,
  CP_RENAMED
};

/* The most a frame's length may claim (rlog_frame.c's decode, and the
 * replay at open in rlog.c). */
#define MAX_PAYLOAD                                          \
  ((uint64_t)LKVNET_RLOG_FIXED_PAYLOAD + LKV_MAX_KEY_BYTES + \
   LKV_MAX_VALUE_BYTES)

/* {======================================================================
** Helpers: errors
** ======================================================================= */

/* The log's failures: what failed, on which file, and the errno's text. */
static inline int ioerr(lkv_err *err, int e, const char *what,
                        const char *path) {
  return lkv_seterr(err, e == ENOMEM ? LKV_NOMEM : LKV_IOERROR, "%s %s: %s",
                    what, path, strerror(e));
}

/* }====================================================================== */

/* {======================================================================
** The file system: small wrappers over the env (lunakv.h), each returning
** 0 or an errno value, so callers word the failure (ioerr)
** ======================================================================= */

static inline const lkv_env *env_or_posix(const lkv_env *env) {
  return env != NULL ? env : lkv_env_posix();
}

/* n bytes at off through the env's pwrite (is_write) or pread, retrying short
 * transfers; a call that makes no progress is EIO. Inline with is_write a
 * constant, each caller gets the one loop it asks for. */
static inline int transfer_all(const lkv_env *env, int fd, char *p, size_t n,
                               uint64_t off, int is_write) {
  while (n > 0) {
    long long k = is_write ? env->pwrite(env, fd, p, n, off)
                           : env->pread(env, fd, p, n, off);
    if (k < 0) return (int)-k;
    if (k == 0) return EIO;
    p += k;
    n -= (size_t)k;
    off += (uint64_t)k;
  }
  return 0;
}

/* n bytes at off, retrying short writes; a write that makes no progress
 * is EIO. */
static inline int pwrite_all(const lkv_env *env, int fd, const void *buf,
                             size_t n, uint64_t off) {
  return transfer_all(env, fd, (char *)buf, n, off, 1); /* only read from */
}

/* n bytes at off; a file that ends first is EIO (the log's index says the
 * bytes are there). */
static inline int pread_all(const lkv_env *env, int fd, void *buf, size_t n,
                            uint64_t off) {
  return transfer_all(env, fd, buf, n, off, 0);
}

/* Zeros over [from, to) of fd, with one write: space written ahead
 * (struct lkvnet_rlog's alloc). calloc's zeros of a MiB are fresh pages
 * from the kernel, not a memset. 0, or an errno value. */
static inline int zero_fill(const lkv_env *env, int fd, uint64_t from,
                            uint64_t to) {
  void *zeros;
  int e;
  if (from >= to) return 0;
  if ((zeros = calloc(1, (size_t)(to - from))) == NULL) return ENOMEM;
  e = pwrite_all(env, fd, zeros, (size_t)(to - from), from);
  free(zeros);
  return e;
}

static inline int f_sync(const lkv_env *env, int fd) {
  return env->sync(env, fd, 1);
}

static inline void f_close(const lkv_env *env, int fd) {
  /* Linux frees the descriptor whatever close says; what was written is
   * vouched for by the syncs, never by close */
  if (fd >= 0) (void)env->close(env, fd);
}

/* }====================================================================== */

/* {======================================================================
** Helpers: the sticky error, the owner's wake-up
** ======================================================================= */

static inline int sticky_error(lkvnet_rlog *r, lkv_err *err) {
  lkv_err copy;
  pthread_mutex_lock(&r->mu);
  copy = r->sticky;
  pthread_mutex_unlock(&r->mu);
  if (copy.code != LKV_OK && err) *err = copy;
  return copy.code;
}

static inline void make_sticky(lkvnet_rlog *r, int rc, const lkv_err *err) {
  pthread_mutex_lock(&r->mu);
  if (r->sticky.code == LKV_OK) {
    if (err)
      r->sticky = *err;
    else
      r->sticky.code = rc;
  }
  pthread_cond_signal(&r->cv);
  pthread_mutex_unlock(&r->mu);
}

/* Wake the owner's loop: one byte to notify_fd (rlog.h). */
static inline void notify(lkvnet_rlog *r) {
  if (r->notify_fd >= 0) {
    char b = 1;
    ssize_t k = write(r->notify_fd, &b, 1); /* EAGAIN: already pending */
    (void)k;
  }
}

/* A new base for the log (a rewrite's or a compaction's): when the log
 * holds base_index, base_term must be its term, as the first kept frame
 * names it (its prev_term) and open checks that chain. Past the log's end
 * (a snapshot install) any term will do. REQUIRES: base_index >=
 * r->base_index; owner thread. */
static inline int lkvnet_rlog_check_base(const lkvnet_rlog *r,
                                         uint64_t base_index,
                                         uint64_t base_term, lkv_err *err) {
  uint64_t have;
  if (base_index > r->base_index + r->nents) return LKV_OK;
  have = base_index == r->base_index
             ? r->base_term
             : r->ents[base_index - r->base_index - 1].term;
  if (have == base_term) return LKV_OK;
  return lkv_seterr(err, LKV_INVALID,
                    "%s: cannot start the log after index %llu at term %llu: "
                    "that entry's term is %llu",
                    r->path, (unsigned long long)base_index,
                    (unsigned long long)base_term, (unsigned long long)have);
}

/* }====================================================================== */

/* {======================================================================
** Calls between the files
** ======================================================================= */

/* rlog_frame.c: a payload whose checksum matched, and the file's header */
int lkvnet_rlog_parse_payload(const unsigned char *buf, uint32_t len,
                              uint32_t fixed, lkvnet_entry *e);
void lkvnet_rlog_encode_header(unsigned char *h, uint64_t base_index,
                               uint64_t base_term);

/* rlog_sync.c: the syncer thread's body (started by lkvnet_rlog_open) */
void *lkvnet_rlog_syncer_main(void *arg);

/* rlog_compact.c: the syncer's part of a compaction (CP_RENAMING) */
void lkvnet_rlog_compact_rename(lkvnet_rlog *r);

/* }====================================================================== */

#endif
