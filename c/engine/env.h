/* env.h - every system call the engine makes on files goes through here,
 * so errors are worded one way and faults can be injected in tests. */
#ifndef LKV_ENV_H
#define LKV_ENV_H

#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "lunakv.h"

/* The engine's calls on an lkv_env (lunakv.h): each returns LKV_OK or an
 * LKV_* code with a sentence naming the call and the file ("write
 * 000012.sst: No space left on device"). `e` may be NULL: the POSIX env. */

/* open(2) with O_CLOEXEC added. *fd = -1 on failure. */
int lkv_env_open(const lkv_env *e, const char *path, int flags, int mode,
                 int *fd, lkv_err *err);
/* Open path read-only without access-time updates (O_NOATIME), which the
 * kernel refuses with EPERM when we do not own the file: then, and only
 * then, without it. Any other failure is the caller's error. */
int lkv_env_open_noatime(const lkv_env *e, const char *path, int *fd,
                         lkv_err *err);
/* Close fd (a close error is reported, the fd is gone either way). */
int lkv_env_close(const lkv_env *e, int fd, const char *path, lkv_err *err);
/* Write all n bytes at the file offset (retrying short writes). */
int lkv_env_write(const lkv_env *e, int fd, const void *buf, size_t n,
                  const char *path, lkv_err *err);
/* Write all n bytes at off. */
int lkv_env_pwrite(const lkv_env *e, int fd, const void *buf, size_t n,
                   uint64_t off, const char *path, lkv_err *err);
/* Read exactly n bytes at off. A short read (the file ends first) is
 * LKV_CORRUPTION "truncated", an error of the read LKV_IOERROR. */
int lkv_env_pread(const lkv_env *e, int fd, void *buf, size_t n, uint64_t off,
                  const char *path, lkv_err *err);
int lkv_env_fsync(const lkv_env *e, int fd, const char *path, lkv_err *err);
int lkv_env_fdatasync(const lkv_env *e, int fd, const char *path, lkv_err *err);
int lkv_env_file_size(const lkv_env *e, int fd, const char *path,
                      uint64_t *size, lkv_err *err);
int lkv_env_truncate(const lkv_env *e, int fd, uint64_t size, const char *path,
                     lkv_err *err);
/* stat path: LKV_NOTFOUND (no message) when it does not exist. */
int lkv_env_stat(const lkv_env *e, const char *path, lkv_env_info *st,
                 lkv_err *err);
int lkv_env_rename(const lkv_env *e, const char *from, const char *to,
                   lkv_err *err);
/* ENOENT is not an error. */
int lkv_env_unlink(const lkv_env *e, const char *path, lkv_err *err);
/* fsync the directory so creations and renames in it are durable. */
int lkv_env_sync_dir(const lkv_env *e, const char *dir, lkv_err *err);
/* mkdir -p for the last component (parent must exist or be creatable). */
int lkv_env_mkdirs(const lkv_env *e, const char *dir, lkv_err *err);
/* Call fn for each entry of dir. */
int lkv_env_list_dir(const lkv_env *e, const char *dir, lkv_env_dir_fn fn,
                     void *arg, lkv_err *err);
/* Open dir/LOCK and lock it: exclusive (creating the file) or shared.
 * Another open holding it exclusively, in this process or another, fails
 * with LKV_BUSY naming the lock. A shared lock on a LOCK that is missing
 * or cannot be opened (a read-only copy of a database) gives *fd = -1 and
 * LKV_OK: nobody can be writing there through us. */
int lkv_env_lock(const lkv_env *e, const char *dir, int exclusive, int *fd,
                 lkv_err *err);
void lkv_env_unlock(const lkv_env *e, int fd);
/* A read-only mapping of a file's first size bytes; NULL when it cannot be
 * made (the caller reads with pread instead). */
const void *lkv_env_mmap(const lkv_env *e, int fd, size_t size);
void lkv_env_munmap(const lkv_env *e, const void *addr, size_t size);
/* Join dir and name into buf (size n); INVALID when it does not fit. */
int lkv_env_path(char *buf, size_t n, const char *dir, const char *name,
                 lkv_err *err);
uint64_t lkv_env_now_micros(void);
/* A small number naming the calling thread's stripe (0 ..
 * LKV_THREAD_STRIPES - 1), handed out round robin on first use: the index
 * of per-thread slots of striped counters and locks (the table readers'
 * counters, the snapshot-view stripes), so concurrent threads do not share
 * a cache line. More stripes than cores would only spread the slots
 * thinner; fewer would make threads share them. A get asks for
 * it several times, so it is inline, and the variable uses the
 * initial-exec TLS model: in a shared object (the Lua module) the default
 * model calls __tls_get_addr on every access. The price is 4 bytes of
 * the static TLS surplus that glibc keeps for dlopen'ed objects. */
#if defined(__GNUC__)
#define LKV_TLS_FAST __attribute__((tls_model("initial-exec")))
#else
#define LKV_TLS_FAST
#endif
#define LKV_THREAD_STRIPES 16
extern _Thread_local unsigned lkv_stripe_of_thread LKV_TLS_FAST;
unsigned lkv_thread_stripe_assign(void);
static inline unsigned lkv_thread_stripe(void) {
  unsigned s = lkv_stripe_of_thread;
  return s < LKV_THREAD_STRIPES ? s : lkv_thread_stripe_assign();
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
