/* rlog_compact.c - the replication log's compaction in the background
 * (lkvnet_rlog_compact_begin and the rest, rlog.h): a copier thread
 * writes the kept entries to replication.log.tmp, the owner switches
 * appends to it, and the syncer (rlog.c) makes it durable and names it
 * (lkvnet_rlog_compact_rename). Calls only rlog_frame.c and the helpers
 * of rlog_impl.h, never back into rlog.c. Lock order: only r->mu. */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rlog_impl.h"

/* {======================================================================
** Compaction in the background
** ======================================================================= */

/* Copy n bytes at from in src to to in dst, a MiB at a time (a log may be
 * far larger than what is worth holding in memory at once). */
static int copy_range(lkvnet_rlog *r, int src, uint64_t from, int dst,
                      uint64_t to, uint64_t n, const char *tmp, lkv_err *err) {
  size_t cap = n < (1u << 20) ? (size_t)n : (1u << 20);
  char *buf;
  int e;
  if (n == 0) return LKV_OK;
  if ((buf = malloc(cap)) == NULL)
    return lkv_seterr(err, LKV_NOMEM, "compacting %s", r->path);
  while (n > 0) {
    size_t k = n < cap ? (size_t)n : cap;
    if ((e = pread_all(r->env, src, buf, k, from)) != 0) {
      free(buf);
      return ioerr(err, e, "read", r->path);
    }
    if ((e = pwrite_all(r->env, dst, buf, k, to)) != 0) {
      free(buf);
      return ioerr(err, e, "write", tmp);
    }
    from += k;
    to += k;
    n -= k;
  }
  free(buf);
  return LKV_OK;
}

static void tmp_path(const lkvnet_rlog *r, char *out, size_t n) {
  snprintf(out, n, "%s.tmp", r->path);
}

static void drop_tmp(lkvnet_rlog *r) {
  char tmp[4096 + 16];
  tmp_path(r, tmp, sizeof tmp);
  (void)r->env->unlink(r->env, tmp);
}

/* The copier thread: prepare (the engine's sync), then the new file's
 * header and the entries (cp_base, cp_stable], fdatasync'ed. Those bytes
 * of the old file are never cut or rewritten while it reads them. */
static void *copier_main(void *arg) {
  lkvnet_rlog *r = arg;
  const lkv_env *env = r->env;
  char tmp[4096 + 16];
  unsigned char h[LKVNET_RLOG_HEADER_SIZE];
  lkv_err e;
  int rc = LKV_OK, fd = -1, ec;
  e.code = LKV_OK;
  e.msg[0] = '\0';
  tmp_path(r, tmp, sizeof tmp);
  if (r->cp_prepare != NULL) rc = r->cp_prepare(r->cp_ctx, &e);
  if (rc == LKV_OK &&
      (ec = env->open(env, tmp, O_RDWR | O_CREAT | O_TRUNC, 0644, &fd)) != 0) {
    fd = -1;
    rc = ioerr(&e, ec, "create", tmp);
  }
  if (rc == LKV_OK) {
    lkvnet_rlog_encode_header(h, r->cp_base, r->cp_base_term);
    if ((ec = pwrite_all(env, fd, h, sizeof h, 0)) != 0)
      rc = ioerr(&e, ec, "write", tmp);
  }
  if (rc == LKV_OK)
    rc = copy_range(r, r->cp_srcfd, r->cp_from_off, fd, LKVNET_RLOG_HEADER_SIZE,
                    r->cp_stable_off - r->cp_from_off, tmp, &e);
  /* the space the appends after the switch go to, written here off the
   * loop (rlog.h, lkvnet_rlog_set_prealloc) */
  if (rc == LKV_OK && (ec = zero_fill(env, fd,
                                      LKVNET_RLOG_HEADER_SIZE +
                                          (r->cp_stable_off - r->cp_from_off),
                                      r->cp_alloc)) != 0)
    rc = ioerr(&e, ec, "write", tmp);
  if (rc == LKV_OK && (ec = f_sync(env, fd)) != 0)
    rc = ioerr(&e, ec, "fdatasync", tmp);
  if (rc != LKV_OK && fd >= 0) {
    f_close(env, fd);
    (void)env->unlink(env, tmp);
    fd = -1;
  }
  if (rc != LKV_OK && e.code == LKV_OK) e.code = rc;
  pthread_mutex_lock(&r->mu);
  r->cp_fd = fd;
  r->cp_err = e;
  r->cp_state = rc == LKV_OK ? CP_COPIED : CP_COPY_FAILED;
  pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
  notify(r);
  return NULL;
}

int lkvnet_rlog_compact_begin(lkvnet_rlog *r, uint64_t base_index,
                              uint64_t base_term, uint64_t stable_index,
                              lkvnet_rlog_prepare_fn prepare, void *ctx,
                              lkv_err *err) {
  uint64_t last = r->base_index + r->nents;
  int rc;
  if (lkvnet_rlog_compacting(r))
    return lkv_seterr(err, LKV_BUSY, "%s: a compaction is running", r->path);
  if ((rc = sticky_error(r, err)) != LKV_OK) return rc;
  if (base_index < r->base_index || base_index > stable_index ||
      stable_index > last)
    return lkv_seterr(err, LKV_INVALID,
                      "cannot compact %s at %llu "
                      "(stable %llu): it holds %llu .. %llu",
                      r->path, (unsigned long long)base_index,
                      (unsigned long long)stable_index,
                      (unsigned long long)r->base_index + 1,
                      (unsigned long long)last);
  if ((rc = lkvnet_rlog_check_base(r, base_index, base_term, err)) != LKV_OK)
    return rc;
  r->cp_base = base_index;
  r->cp_base_term = base_term;
  r->cp_stable = stable_index;
  r->cp_from_off =
      base_index < last ? r->ents[base_index - r->base_index].off : r->size;
  r->cp_stable_off =
      stable_index < last ? r->ents[stable_index - r->base_index].off : r->size;
  r->cp_alloc = r->prealloc > 0
                    ? LKVNET_RLOG_HEADER_SIZE +
                          (r->cp_stable_off - r->cp_from_off) + r->prealloc
                    : 0;
  r->cp_srcfd = r->fd;
  r->cp_prepare = prepare;
  r->cp_ctx = ctx;
  r->cp_report = LKVNET_COMPACT_IDLE;
  pthread_mutex_lock(&r->mu);
  r->cp_state = CP_COPYING;
  pthread_mutex_unlock(&r->mu);
  if (pthread_create(&r->cp_thread, NULL, copier_main, r) != 0) {
    pthread_mutex_lock(&r->mu);
    r->cp_state = CP_IDLE;
    pthread_mutex_unlock(&r->mu);
    return lkv_seterr(err, LKV_IOERROR,
                      "%s: cannot start the "
                      "compaction thread",
                      r->path);
  }
  return LKV_OK;
}

/* The owner's part, once the copier is done: append what was written
 * past cp_stable meanwhile (still only in the page cache, as appends are)
 * and make the new file the one appends go to. From here until the syncer
 * has renamed it, nothing new counts as durable: a crash would leave the
 * old file under the name. Returns LKV_OK, or a failure that left the old
 * file in place (the new one removed). */
static int compact_switch(lkvnet_rlog *r, lkv_err *err) {
  char tmp[4096 + 16];
  uint64_t last = r->base_index + r->nents, tail = r->size - r->cp_stable_off;
  uint64_t newsize = LKVNET_RLOG_HEADER_SIZE + (r->size - r->cp_from_off);
  size_t keep = (size_t)(last > r->cp_base ? last - r->cp_base : 0), i;
  int rc;
  tmp_path(r, tmp, sizeof tmp);
  rc = copy_range(r, r->fd, r->cp_stable_off, r->cp_fd,
                  LKVNET_RLOG_HEADER_SIZE + (r->cp_stable_off - r->cp_from_off),
                  tail, tmp, err);
  if (rc != LKV_OK) {
    f_close(r->env, r->cp_fd);
    r->cp_fd = -1;
    (void)r->env->unlink(r->env, tmp);
    return rc;
  }
  for (i = 0; i < keep; i++) {
    r->ents[i].off = r->ents[r->nents - keep + i].off - r->cp_from_off +
                     LKVNET_RLOG_HEADER_SIZE;
    r->ents[i].term = r->ents[r->nents - keep + i].term;
  }
  r->nents = keep;
  r->size = newsize;
  r->alloc = r->cp_alloc > newsize ? r->cp_alloc : newsize;
  pthread_mutex_lock(&r->mu);
  r->cp_oldfd = r->fd;
  r->fd = r->cp_fd;
  r->cp_fd = -1;
  r->base_index = r->cp_base;
  r->base_term = r->cp_base_term;
  if (keep == 0) {
    r->last_index = r->cp_base;
    r->last_term = r->cp_base_term;
  }
  /* a sync of the old file still running proves nothing now */
  r->gen++;
  r->cp_state = CP_RENAMING;
  pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
  return LKV_OK;
}

/* One step for the owner: COPIED -> switch, COPY_FAILED or RENAMED ->
 * IDLE with the outcome in cp_report. Returns the state it left. */
static int compact_step(lkvnet_rlog *r) {
  int st;
  lkv_err e;
  pthread_mutex_lock(&r->mu);
  st = r->cp_state;
  e = r->cp_err;
  pthread_mutex_unlock(&r->mu);
  if (st == CP_COPIED || st == CP_COPY_FAILED) {
    pthread_join(r->cp_thread, NULL);
    if (st == CP_COPIED) {
      e.code = LKV_OK;
      e.msg[0] = '\0';
      /* a stuck log switches to nothing: the copy is dropped */
      if (sticky_error(r, &e) != LKV_OK) {
        f_close(r->env, r->cp_fd);
        r->cp_fd = -1;
        drop_tmp(r);
      } else if (compact_switch(r, &e) == LKV_OK) {
        return CP_RENAMING;
      }
    }
    pthread_mutex_lock(&r->mu);
    r->cp_state = st = CP_IDLE;
    pthread_mutex_unlock(&r->mu);
    r->cp_report = LKVNET_COMPACT_FAILED;
    r->cp_report_err = e;
  } else if (st == CP_RENAMED) {
    pthread_mutex_lock(&r->mu);
    r->cp_state = st = CP_IDLE;
    pthread_mutex_unlock(&r->mu);
    r->cp_report =
        e.code == LKV_OK ? LKVNET_COMPACT_DONE : LKVNET_COMPACT_FAILED;
    r->cp_report_err = e;
  }
  return st;
}

int lkvnet_rlog_compact_poll(lkvnet_rlog *r, lkv_err *err) {
  int st = compact_step(r), rep = r->cp_report;
  if (st != CP_IDLE) return LKVNET_COMPACT_RUNNING;
  r->cp_report = LKVNET_COMPACT_IDLE;
  if (rep == LKVNET_COMPACT_FAILED && err != NULL) *err = r->cp_report_err;
  return rep;
}

static void compact_finish(lkvnet_rlog *r) {
  for (;;) {
    int st;
    pthread_mutex_lock(&r->mu);
    while (r->cp_state == CP_COPYING || r->cp_state == CP_RENAMING)
      pthread_cond_wait(&r->cv, &r->mu);
    st = r->cp_state;
    pthread_mutex_unlock(&r->mu);
    if (st == CP_IDLE) return;
    compact_step(r);
  }
}

void lkvnet_rlog_compact_wait(lkvnet_rlog *r) { compact_finish(r); }

int lkvnet_rlog_compacting(lkvnet_rlog *r) {
  int st;
  pthread_mutex_lock(&r->mu);
  st = r->cp_state;
  pthread_mutex_unlock(&r->mu);
  return st != CP_IDLE;
}

/* The syncer's part (called with mu held, returns with it held): make the
 * new file durable, name it, sync the directory, close the old file (no
 * sync of it can be running: this is the syncer). Only then is what was
 * appended to the new file durable. A failure here is sticky: the name
 * holds the old file, which lacks what was appended since the switch. */
void lkvnet_rlog_compact_rename(lkvnet_rlog *r) {
  const lkv_env *env = r->env;
  char tmp[4096 + 16];
  uint64_t target = r->last_index, gen = r->gen;
  int fd = r->fd, oldfd = r->cp_oldfd, ec;
  lkv_err e;
  e.code = LKV_OK;
  e.msg[0] = '\0';
  if (r->sticky.code != LKV_OK) {
    /* stuck since the switch: the old file keeps the name, and nothing
     * appended since counts as durable */
    e = r->sticky;
    fd = -1;
  }
  r->busy = 1;
  pthread_mutex_unlock(&r->mu);
  tmp_path(r, tmp, sizeof tmp);
  if (fd >= 0) {
    if ((ec = f_sync(env, fd)) != 0)
      ioerr(&e, ec, "fdatasync", tmp);
    else if ((ec = env->rename(env, tmp, r->path)) != 0)
      ioerr(&e, ec, "rename", tmp);
    else if ((ec = env->sync_dir(env, r->dir)) != 0)
      ioerr(&e, ec, "fsync directory", r->dir);
  }
  f_close(env, oldfd);
  pthread_mutex_lock(&r->mu);
  r->busy = 0;
  r->cp_oldfd = -1;
  if (e.code == LKV_OK) {
    if (gen == r->gen && target > r->durable_index) r->durable_index = target;
    r->syncs++;
  } else if (r->sticky.code == LKV_OK) {
    r->sticky = e;
  }
  r->cp_err = e;
  r->cp_state = CP_RENAMED;
  pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
  notify(r);
  pthread_mutex_lock(&r->mu);
}

/* }====================================================================== */
