/* rlog_sync.c - durability of the replication log (rlog.h): the syncer
 * thread, which turns "written" into "durable" with one fdatasync for
 * everything appended since its last one (group commit), and the owner's
 * own syncs on its thread (lkvnet_rlog_sync_here) for a node that has
 * nothing to overlap them with. The durable index moves only here (and
 * at open and on a cut, rlog.c). Lock order: only r->mu. */
#include <pthread.h>

#include "rlog_impl.h"

/* {======================================================================
** The syncer
** ======================================================================= */

void *lkvnet_rlog_syncer_main(void *arg) {
  lkvnet_rlog *r = arg;
  pthread_mutex_lock(&r->mu);
  for (;;) {
    uint64_t target, gen;
    int rc, e, fd;
    /* stuck (sticky): nothing more is synced, but a compaction's switch
     * is still finished (as a failure) and close still stops this */
    while (!r->stop && r->cp_state != CP_RENAMING &&
           (r->paused || r->busy || r->sticky.code != LKV_OK ||
            r->durable_index == r->last_index))
      pthread_cond_wait(&r->cv, &r->mu);
    if (r->cp_state == CP_RENAMING) {
      /* a compaction's switch: nothing syncs until its file is named */
      lkvnet_rlog_compact_rename(r);
      continue;
    }
    if (r->stop) break;
    target = r->last_index; /* every byte of it is already written */
    gen = r->gen;
    fd = r->fd;
    r->busy = 1;
    pthread_mutex_unlock(&r->mu);
    rc = e = f_sync(r->env, fd);
    pthread_mutex_lock(&r->mu);
    r->busy = 0;
    pthread_cond_broadcast(&r->cv);
    if (rc == 0) {
      /* entries cut (or the file replaced) meanwhile: this sync proves
       * nothing about what is there now; the loop syncs again */
      if (gen == r->gen && target > r->durable_index) r->durable_index = target;
      r->syncs++;
    } else {
      ioerr(&r->sticky, e, "fdatasync", r->path);
    }
    pthread_mutex_unlock(&r->mu);
    notify(r);
    pthread_mutex_lock(&r->mu);
  }
  pthread_mutex_unlock(&r->mu);
  return NULL;
}

void lkvnet_rlog_set_owner_syncs(lkvnet_rlog *r, int on) {
  r->owner_syncs = on;
}

int lkvnet_rlog_sync_here(lkvnet_rlog *r) {
  uint64_t target, gen;
  int e, fd;
  pthread_mutex_lock(&r->mu);
  if (r->busy || r->paused || r->stop || r->sticky.code != LKV_OK ||
      r->cp_state != CP_IDLE || r->durable_index == r->last_index) {
    /* the syncer's, then (appends may have left it asleep) */
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    return 0;
  }
  target = r->last_index;
  gen = r->gen;
  fd = r->fd;
  r->busy = 1; /* the syncer waits meanwhile, as for its own sync */
  pthread_mutex_unlock(&r->mu);
  e = f_sync(r->env, fd);
  pthread_mutex_lock(&r->mu);
  /* no wake-up: the syncer may only be waiting for busy to clear, and
   * this sync leaves it nothing (only this thread appends); woken now,
   * it would race the owner for its next sync */
  r->busy = 0;
  if (e == 0) {
    if (gen == r->gen && target > r->durable_index) r->durable_index = target;
    r->syncs++;
  } else {
    ioerr(&r->sticky, e, "fdatasync", r->path);
  }
  pthread_mutex_unlock(&r->mu);
  if (e != 0) notify(r); /* the failure is told as the syncer tells it */
  return e == 0 ? 1 : -1;
}

uint64_t lkvnet_rlog_durable_index(lkvnet_rlog *r) {
  uint64_t v;
  pthread_mutex_lock(&r->mu);
  v = r->durable_index;
  pthread_mutex_unlock(&r->mu);
  return v;
}

/* }====================================================================== */
