/* env.h - every system call the engine makes on files goes through here,
 * so errors are worded one way and faults can be injected in tests. */
#ifndef LKV_ENV_H
#define LKV_ENV_H

#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "lunakv.h"

/* open(2) with O_CLOEXEC added. *fd = -1 on failure. */
int lkv_env_open(const char *path, int flags, int mode, int *fd, lkv_err *err);
/* Write all n bytes (retrying short writes and EINTR). */
int lkv_env_write(int fd, const void *buf, size_t n, const char *path,
                  lkv_err *err);
/* Read exactly n bytes at off. A short read (the file ends first) is
 * LKV_CORRUPTION "truncated", an error of the read LKV_IOERROR. */
int lkv_env_pread(int fd, void *buf, size_t n, uint64_t off, const char *path,
                  lkv_err *err);
int lkv_env_fsync(int fd, const char *path, lkv_err *err);     /* fsync */
int lkv_env_fdatasync(int fd, const char *path, lkv_err *err); /* fdatasync */
int lkv_env_file_size(int fd, const char *path, uint64_t *size, lkv_err *err);
int lkv_env_truncate(int fd, uint64_t size, const char *path, lkv_err *err);
int lkv_env_rename(const char *from, const char *to, lkv_err *err);
int lkv_env_unlink(const char *path, lkv_err *err); /* ENOENT is not an error */
/* fsync the directory so creations and renames in it are durable. */
int lkv_env_sync_dir(const char *dir, lkv_err *err);
/* mkdir -p for the last component (parent must exist or be creatable). */
int lkv_env_mkdirs(const char *dir, lkv_err *err);
/* Create/open dir/LOCK and take an exclusive lock on it; fails with
 * LKV_BUSY naming the lock when another open holds it, in this process or
 * another. */
int lkv_env_lock(const char *dir, int *fd, lkv_err *err);
void lkv_env_unlock(int fd);
/* Join dir and name into buf (size n); INVALID when it does not fit. */
int lkv_env_path(char *buf, size_t n, const char *dir, const char *name,
                 lkv_err *err);
uint64_t lkv_env_now_micros(void);
/* A small number naming the calling thread's stripe (0 .. 15), handed out
 * round robin on first use: per-thread slots of striped counters and
 * locks, so concurrent threads do not share a cache line. A get asks for
 * it several times, so it is inline, and the variable uses the
 * initial-exec TLS model: in a shared object (the Lua module) the default
 * model calls __tls_get_addr on every access. The price is 4 bytes of
 * the static TLS surplus that glibc keeps for dlopen'ed objects. */
#if defined(__GNUC__)
#define LKV_TLS_FAST __attribute__((tls_model("initial-exec")))
#else
#define LKV_TLS_FAST
#endif
extern _Thread_local unsigned lkv_stripe_of_thread LKV_TLS_FAST;
unsigned lkv_thread_stripe_assign(void);
static inline unsigned lkv_thread_stripe(void) {
  unsigned s = lkv_stripe_of_thread;
  return s < 16u ? s : lkv_thread_stripe_assign();
}

/* A lock for critical sections of a few instructions that threads seldom
 * meet in (the snapshot-view stripes, one per thread stripe): taking it
 * is one atomic exchange and dropping it a release store, where a pthread
 * mutex costs a call and an atomic operation each way. A waiter yields the
 * CPU, as the holder may have been preempted. */
typedef struct lkv_spin {
  atomic_int held;
} lkv_spin;

static inline void lkv_spin_lock(lkv_spin *l) {
  while (atomic_exchange_explicit(&l->held, 1, memory_order_acquire))
    while (atomic_load_explicit(&l->held, memory_order_relaxed)) sched_yield();
}

static inline void lkv_spin_unlock(lkv_spin *l) {
  atomic_store_explicit(&l->held, 0, memory_order_release);
}

#endif
