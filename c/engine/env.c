/* env.c - file system calls with uniform error messages (see env.h). */
#include "env.h"

#include <errno.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "err.h"

int lkv_env_open(const char *path, int flags, int mode, int *fd, lkv_err *err) {
  do *fd = open(path, flags | O_CLOEXEC, mode);
  while (*fd < 0 && errno == EINTR);
  return *fd < 0 ? lkv_seterrno(err, "open", path) : LKV_OK;
}

int lkv_env_write(int fd, const void *buf, size_t n, const char *path,
                  lkv_err *err) {
  const char *p = buf;
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return lkv_seterrno(err, "write", path);
    }
    p += w;
    n -= (size_t)w;
  }
  return LKV_OK;
}

int lkv_env_pread(int fd, void *buf, size_t n, uint64_t off, const char *path,
                  lkv_err *err) {
  char *p = buf;
  while (n > 0) {
    ssize_t r = pread(fd, p, n, (off_t)off);
    if (r < 0) {
      if (errno == EINTR) continue;
      return lkv_seterrno(err, "read", path);
    }
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

int lkv_env_fsync(int fd, const char *path, lkv_err *err) {
  return fsync(fd) < 0 ? lkv_seterrno(err, "fsync", path) : LKV_OK;
}

int lkv_env_fdatasync(int fd, const char *path, lkv_err *err) {
  return fdatasync(fd) < 0 ? lkv_seterrno(err, "fdatasync", path) : LKV_OK;
}

int lkv_env_file_size(int fd, const char *path, uint64_t *size, lkv_err *err) {
  struct stat st;
  if (fstat(fd, &st) < 0) return lkv_seterrno(err, "stat", path);
  *size = (uint64_t)st.st_size;
  return LKV_OK;
}

int lkv_env_truncate(int fd, uint64_t size, const char *path, lkv_err *err) {
  return ftruncate(fd, (off_t)size) < 0 ? lkv_seterrno(err, "truncate", path)
                                         : LKV_OK;
}

int lkv_env_rename(const char *from, const char *to, lkv_err *err) {
  return rename(from, to) < 0 ? lkv_seterrno(err, "rename", from) : LKV_OK;
}

int lkv_env_unlink(const char *path, lkv_err *err) {
  if (unlink(path) < 0 && errno != ENOENT) return lkv_seterrno(err, "unlink", path);
  return LKV_OK;
}

int lkv_env_sync_dir(const char *dir, lkv_err *err) {
  int fd;
  int rc = lkv_env_open(dir, O_RDONLY | O_DIRECTORY, 0, &fd, err);
  if (rc) return rc;
  rc = lkv_env_fsync(fd, dir, err);
  close(fd);
  return rc;
}

int lkv_env_mkdirs(const char *dir, lkv_err *err) {
  char buf[4096];
  size_t n = strlen(dir);
  if (n == 0 || n >= sizeof buf)
    return lkv_seterr(err, LKV_INVALID, "bad directory name '%s'", dir);
  memcpy(buf, dir, n + 1);
  for (size_t i = 1; i <= n; i++) {
    if (buf[i] == '/' || buf[i] == '\0') {
      char c = buf[i];
      buf[i] = '\0';
      if (mkdir(buf, 0755) < 0 && errno != EEXIST)
        return lkv_seterrno(err, "mkdir", buf);
      buf[i] = c;
    }
  }
  struct stat st;
  if (stat(dir, &st) < 0) return lkv_seterrno(err, "stat", dir);
  if (!S_ISDIR(st.st_mode))
    return lkv_seterr(err, LKV_INVALID, "%s exists and is not a directory", dir);
  return LKV_OK;
}

int lkv_env_lock(const char *dir, int *fd, lkv_err *err) {
  char path[4096];
  int rc = lkv_env_path(path, sizeof path, dir, "LOCK", err);
  if (rc) return rc;
  rc = lkv_env_open(path, O_RDWR | O_CREAT, 0644, fd, err);
  if (rc) return rc;
  /* flock locks belong to the open file description, so a second open in
   * the same process conflicts too (fcntl locks would not). */
  if (flock(*fd, LOCK_EX | LOCK_NB) < 0) {
    int e = errno;
    close(*fd);
    *fd = -1;
    if (e == EWOULDBLOCK)
      return lkv_seterr(err, LKV_BUSY,
                        "%s is locked: the database is already open "
                        "(in this or another process)", path);
    errno = e;
    return lkv_seterrno(err, "lock", path);
  }
  return LKV_OK;
}

void lkv_env_unlock(int fd) {
  if (fd >= 0) {
    flock(fd, LOCK_UN);
    close(fd);
  }
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
      atomic_fetch_add_explicit(&next, 1, memory_order_relaxed) % 16u;
  return lkv_stripe_of_thread;
}
