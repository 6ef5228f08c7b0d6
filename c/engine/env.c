/* env.c - the POSIX lkv_env, and the engine's calls through any env with
 * uniform error messages (see env.h). */
#include "env.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "err.h"

/* ==== the POSIX env ==================================================== */

static int px_open(const lkv_env *e, const char *path, int flags, int mode,
                   int *fd) {
  (void)e;
  do *fd = open(path, flags | O_CLOEXEC, mode);
  while (*fd < 0 && errno == EINTR);
  return *fd < 0 ? errno : 0;
}

static int px_close(const lkv_env *e, int fd) {
  (void)e;
  /* Linux frees the descriptor even when close fails: never retry */
  return close(fd) < 0 && errno != EINTR ? errno : 0;
}

/* A read's or write's result as the env returns it: the byte count, or
 * -errno. The call is retried while a signal interrupts it
 * (TEMP_FAILURE_RETRY), so errno is still the call's own here. */
static long long px_count(ssize_t r) {
  return r < 0 ? -(long long)errno : (long long)r;
}

static long long px_pread(const lkv_env *e, int fd, void *buf, size_t n,
                          uint64_t off) {
  (void)e;
  return px_count(TEMP_FAILURE_RETRY(pread(fd, buf, n, (off_t)off)));
}

static long long px_write(const lkv_env *e, int fd, const void *buf, size_t n) {
  (void)e;
  return px_count(TEMP_FAILURE_RETRY(write(fd, buf, n)));
}

static long long px_pwrite(const lkv_env *e, int fd, const void *buf, size_t n,
                           uint64_t off) {
  (void)e;
  return px_count(TEMP_FAILURE_RETRY(pwrite(fd, buf, n, (off_t)off)));
}

static int px_sync(const lkv_env *e, int fd, int data_only) {
  (void)e;
  return (data_only ? fdatasync(fd) : fsync(fd)) < 0 ? errno : 0;
}

static int px_size(const lkv_env *e, int fd, uint64_t *size) {
  (void)e;
  struct stat st;
  if (fstat(fd, &st) < 0) return errno;
  *size = (uint64_t)st.st_size;
  return 0;
}

static int px_truncate(const lkv_env *e, int fd, uint64_t size) {
  (void)e;
  return ftruncate(fd, (off_t)size) < 0 ? errno : 0;
}

static int px_stat(const lkv_env *e, const char *path, lkv_env_info *out) {
  (void)e;
  struct stat st;
  if (stat(path, &st) < 0) return errno;
  out->size = (uint64_t)st.st_size;
  out->is_dir = S_ISDIR(st.st_mode);
  return 0;
}

static int px_rename(const lkv_env *e, const char *from, const char *to) {
  (void)e;
  return rename(from, to) < 0 ? errno : 0;
}

static int px_unlink(const lkv_env *e, const char *path) {
  (void)e;
  return unlink(path) < 0 ? errno : 0;
}

static int px_mkdir(const lkv_env *e, const char *path) {
  (void)e;
  return mkdir(path, 0755) < 0 ? errno : 0;
}

static int px_list_dir(const lkv_env *e, const char *dir, lkv_env_dir_fn fn,
                       void *arg) {
  (void)e;
  DIR *d = opendir(dir);
  if (d == NULL) return errno;
  struct dirent *de;
  errno = 0;
  while ((de = readdir(d)) != NULL) {
    if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
    if (fn(arg, de->d_name)) break;
    errno = 0;
  }
  int rc = de == NULL ? errno : 0;
  closedir(d);
  return rc;
}

static int px_sync_dir(const lkv_env *e, const char *dir) {
  int fd, rc = px_open(e, dir, O_RDONLY | O_DIRECTORY, 0, &fd);
  if (rc) return rc;
  rc = px_sync(e, fd, 0);
  close(fd);
  return rc;
}

static int px_lock(const lkv_env *e, const char *path, int exclusive, int *fd) {
  int rc = px_open(e, path, exclusive ? O_RDWR | O_CREAT : O_RDONLY, 0644, fd);
  if (rc) return rc;
  /* flock locks belong to the open file description, so a second open in
   * the same process conflicts too (fcntl locks would not). */
  if (flock(*fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) < 0) {
    rc = errno;
    close(*fd);
    *fd = -1;
  }
  return rc;
}

static int px_unlock(const lkv_env *e, int fd) {
  (void)e;
  flock(fd, LOCK_UN);
  return close(fd) < 0 ? errno : 0;
}

static int px_mmap(const lkv_env *e, int fd, size_t size, const void **addr) {
  (void)e;
  void *m = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
  if (m == MAP_FAILED) return errno;
  *addr = m;
  return 0;
}

static void px_munmap(const lkv_env *e, const void *addr, size_t size) {
  (void)e;
  munmap((void *)addr, size);
}

static const lkv_env posix_env = {
    px_open,   px_close, px_pread,    px_write,    px_pwrite,
    px_sync,   px_size,  px_truncate, px_stat,     px_rename,
    px_unlink, px_mkdir, px_list_dir, px_sync_dir, px_lock,
    px_unlock, px_mmap,  px_munmap,   NULL};

const lkv_env *lkv_env_posix(void) { return &posix_env; }

/* ==== the engine's calls: one wording for every failure ================= */

#define ENV(e) ((e) ? (e) : &posix_env)

static int ioerr(lkv_err *err, int e, const char *what, const char *path) {
  errno = e;
  return lkv_seterrno(err, what, path);
}

int lkv_env_open(const lkv_env *e, const char *path, int flags, int mode,
                 int *fd, lkv_err *err) {
  *fd = -1;
  int rc = ENV(e)->open(ENV(e), path, flags | O_CLOEXEC, mode, fd);
  if (rc) {
    *fd = -1;
    return ioerr(err, rc, "open", path);
  }
  return LKV_OK;
}

int lkv_env_open_noatime(const lkv_env *e, const char *path, int *fd,
                         lkv_err *err) {
  *fd = -1;
  int rc = ENV(e)->open(ENV(e), path, O_RDONLY | O_NOATIME | O_CLOEXEC, 0, fd);
  if (rc == EPERM) rc = ENV(e)->open(ENV(e), path, O_RDONLY | O_CLOEXEC, 0, fd);
  if (rc) {
    *fd = -1;
    return ioerr(err, rc, "open", path);
  }
  return LKV_OK;
}

int lkv_env_close(const lkv_env *e, int fd, const char *path, lkv_err *err) {
  if (fd < 0) return LKV_OK;
  int rc = ENV(e)->close(ENV(e), fd);
  return rc ? ioerr(err, rc, "close", path) : LKV_OK;
}

int lkv_env_write(const lkv_env *e, int fd, const void *buf, size_t n,
                  const char *path, lkv_err *err) {
  const char *p = buf;
  while (n > 0) {
    long long w = ENV(e)->write(ENV(e), fd, p, n);
    if (w < 0) return ioerr(err, (int)-w, "write", path);
    if (w == 0) return ioerr(err, EIO, "write", path); /* no progress */
    p += w;
    n -= (size_t)w;
  }
  return LKV_OK;
}

int lkv_env_pwrite(const lkv_env *e, int fd, const void *buf, size_t n,
                   uint64_t off, const char *path, lkv_err *err) {
  const char *p = buf;
  while (n > 0) {
    long long w = ENV(e)->pwrite(ENV(e), fd, p, n, off);
    if (w < 0) return ioerr(err, (int)-w, "write", path);
    if (w == 0) return ioerr(err, EIO, "write", path);
    p += w;
    n -= (size_t)w;
    off += (uint64_t)w;
  }
  return LKV_OK;
}

int lkv_env_pread(const lkv_env *e, int fd, void *buf, size_t n, uint64_t off,
                  const char *path, lkv_err *err) {
  char *p = buf;
  while (n > 0) {
    long long r = ENV(e)->pread(ENV(e), fd, p, n, off);
    if (r < 0) return ioerr(err, (int)-r, "read", path);
    if (r == 0)
      return lkv_seterr(err, LKV_CORRUPTION,
                        "%s offset %llu: truncated (file ends early)", path,
                        (unsigned long long)off);
    p += r;
    n -= (size_t)r;
    off += (uint64_t)r;
  }
  return LKV_OK;
}

int lkv_env_fsync(const lkv_env *e, int fd, const char *path, lkv_err *err) {
  int rc = ENV(e)->sync(ENV(e), fd, 0);
  return rc ? ioerr(err, rc, "fsync", path) : LKV_OK;
}

int lkv_env_fdatasync(const lkv_env *e, int fd, const char *path,
                      lkv_err *err) {
  int rc = ENV(e)->sync(ENV(e), fd, 1);
  return rc ? ioerr(err, rc, "fdatasync", path) : LKV_OK;
}

int lkv_env_file_size(const lkv_env *e, int fd, const char *path,
                      uint64_t *size, lkv_err *err) {
  int rc = ENV(e)->size(ENV(e), fd, size);
  return rc ? ioerr(err, rc, "stat", path) : LKV_OK;
}

int lkv_env_truncate(const lkv_env *e, int fd, uint64_t size, const char *path,
                     lkv_err *err) {
  int rc = ENV(e)->truncate(ENV(e), fd, size);
  return rc ? ioerr(err, rc, "truncate", path) : LKV_OK;
}

int lkv_env_stat(const lkv_env *e, const char *path, lkv_env_info *st,
                 lkv_err *err) {
  int rc = ENV(e)->stat(ENV(e), path, st);
  if (rc == ENOENT) return LKV_NOTFOUND;
  return rc ? ioerr(err, rc, "stat", path) : LKV_OK;
}

int lkv_env_rename(const lkv_env *e, const char *from, const char *to,
                   lkv_err *err) {
  int rc = ENV(e)->rename(ENV(e), from, to);
  return rc ? ioerr(err, rc, "rename", from) : LKV_OK;
}

int lkv_env_unlink(const lkv_env *e, const char *path, lkv_err *err) {
  int rc = ENV(e)->unlink(ENV(e), path);
  return rc && rc != ENOENT ? ioerr(err, rc, "unlink", path) : LKV_OK;
}

int lkv_env_sync_dir(const lkv_env *e, const char *dir, lkv_err *err) {
  int rc = ENV(e)->sync_dir(ENV(e), dir);
  return rc ? ioerr(err, rc, "fsync", dir) : LKV_OK;
}

int lkv_env_mkdirs(const lkv_env *e, const char *dir, lkv_err *err) {
  char buf[4096];
  size_t n = strlen(dir);
  if (n == 0 || n >= sizeof buf)
    return lkv_seterr(err, LKV_INVALID, "bad directory name '%s'", dir);
  memcpy(buf, dir, n + 1);
  size_t parent_end = 0; /* buf[0 .. parent_end) names the parent; 0: "." */
  for (size_t i = 1; i <= n; i++) {
    if (buf[i] == '/' || buf[i] == '\0') {
      char c = buf[i];
      buf[i] = '\0';
      int rc = ENV(e)->mkdir(ENV(e), buf);
      if (rc && rc != EEXIST) return ioerr(err, rc, "mkdir", buf);
      if (rc == 0) {
        /* a directory created is durable only once its parent is synced:
         * a power cut could otherwise take the whole database with it */
        char parent[4096];
        if (parent_end == 0) {
          snprintf(parent, sizeof parent, "%s", buf[0] == '/' ? "/" : ".");
        } else {
          memcpy(parent, buf, parent_end);
          parent[parent_end] = '\0';
        }
        if ((rc = ENV(e)->sync_dir(ENV(e), parent)))
          return ioerr(err, rc, "fsync", parent);
      }
      buf[i] = c;
      if (c == '/') parent_end = i;
    }
  }
  lkv_env_info st;
  int rc = ENV(e)->stat(ENV(e), dir, &st);
  if (rc) return ioerr(err, rc, "stat", dir);
  if (!st.is_dir)
    return lkv_seterr(err, LKV_INVALID, "%s exists and is not a directory",
                      dir);
  return LKV_OK;
}

int lkv_env_list_dir(const lkv_env *e, const char *dir, lkv_env_dir_fn fn,
                     void *arg, lkv_err *err) {
  int rc = ENV(e)->list_dir(ENV(e), dir, fn, arg);
  return rc ? ioerr(err, rc, "opendir", dir) : LKV_OK;
}

int lkv_env_lock(const lkv_env *e, const char *dir, int exclusive, int *fd,
                 lkv_err *err) {
  char path[4096];
  *fd = -1;
  int rc = lkv_env_path(path, sizeof path, dir, "LOCK", err);
  if (rc) return rc;
  rc = ENV(e)->lock(ENV(e), path, exclusive, fd);
  if (rc == EWOULDBLOCK) {
    *fd = -1;
    return lkv_seterr(err, LKV_BUSY,
                      exclusive ? "%s is locked: the database is already "
                                  "open (in this or another process)"
                                : "%s is locked: the database is open for "
                                  "writing (in this or another process)",
                      path);
  }
  if (rc && !exclusive && (rc == ENOENT || rc == EACCES || rc == EPERM)) {
    *fd = -1;
    return LKV_OK;
  }
  if (rc) {
    *fd = -1;
    return ioerr(err, rc, "lock", path);
  }
  return LKV_OK;
}

void lkv_env_unlock(const lkv_env *e, int fd) {
  if (fd >= 0) ENV(e)->unlock(ENV(e), fd);
}

const void *lkv_env_mmap(const lkv_env *e, int fd, size_t size) {
  const void *addr = NULL;
  return ENV(e)->mmap(ENV(e), fd, size, &addr) == 0 ? addr : NULL;
}

void lkv_env_munmap(const lkv_env *e, const void *addr, size_t size) {
  if (addr) ENV(e)->munmap(ENV(e), addr, size);
}

int lkv_env_path(char *buf, size_t n, const char *dir, const char *name,
                 lkv_err *err) {
  int w = snprintf(buf, n, "%s/%s", dir, name);
  if (w < 0 || (size_t)w >= n)
    return lkv_seterr(err, LKV_INVALID, "path too long: %s/%s", dir, name);
  return LKV_OK;
}

uint64_t lkv_env_now_micros(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

_Thread_local unsigned lkv_stripe_of_thread LKV_TLS_FAST = UINT32_MAX;

unsigned lkv_thread_stripe_assign(void) {
  static atomic_uint next;
  lkv_stripe_of_thread =
      atomic_fetch_add_explicit(&next, 1, memory_order_relaxed) %
      LKV_THREAD_STRIPES;
  return lkv_stripe_of_thread;
}
