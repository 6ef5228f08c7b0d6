/* faultenv.c - the fault-injecting, power-losing lkv_env (faultenv.h).
 *
 * Bookkeeping, all under one mutex:
 *  - fds[fd]: the path and open flags of each descriptor the env opened;
 *  - a `fnode` per file (device, inode) changed since its last sync: the
 *    size it had then, the old bytes of every overwrite below that size
 *    (an undo list, oldest first), and a descriptor of our own, so the
 *    file can be rolled back whatever its name has become;
 *  - a `dirop` per directory change since that directory's last sync
 *    (create, rename, unlink), in order, with the hidden copy of a file
 *    a rename replaced or an unlink removed.
 * A power loss undoes the directory changes newest first (all of them, or
 * all but a random prefix: a journal keeps metadata in order), then rolls
 * each changed file back. */
#include "faultenv.h"

#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "env.h"
#include "err.h"
#include "rng.h"

#define HIDDEN_PREFIX ".faultenv."

typedef struct undo {
  uint64_t off;
  size_t n;
  char *bytes; /* what [off, off+n) held before */
} undo;

typedef struct fnode {
  dev_t dev;
  ino_t ino;
  int fd;          /* ours, O_RDWR, for the roll-back */
  uint64_t synced; /* the size at the last sync */
  undo *u;
  size_t nu, capu;
  struct fnode *next;
} fnode;

enum { OP_CREATE, OP_RENAME, OP_UNLINK, OP_MKDIR };

typedef struct dirop {
  int kind;
  dev_t ddev; /* the directory it happened in */
  ino_t dino;
  char *a, *b;  /* create a; rename a -> b; unlink a */
  char *backup; /* the replaced or removed file, under a hidden name */
} dirop;

typedef struct fdinfo {
  char *path; /* NULL: not ours */
  int append;
} fdinfo;

struct lkv_faultenv {
  lkv_env env; /* first: the env's functions find f through it */
  pthread_mutex_t mu;
  fdinfo *fds;
  int nfds;
  fnode *files;
  dirop *ops;
  size_t nops, capops;
  uint64_t hidden_seq;
  int crashed;
  /* the rule */
  int rule_op;
  uint64_t rule_nth, rule_seen, rule_fired;
  char fired_path[4096]; /* the path of the first call the rule failed */
  void *bt[32]; /* its stack, with FAULT_BT set (for a test's report) */
  int nbt;
  int rule_errno, rule_flags;
  char *rule_match;
  uint64_t calls[LKV_FOP_COUNT];
  lkv_faultenv_hook hook;
  void *hook_ctx;
};

#define FE(e) ((lkv_faultenv *)(e))

static const char *const op_names[LKV_FOP_COUNT] = {
    "open",    "create",   "close", "read",   "write",  "sync",
    "size",    "truncate", "stat",  "rename", "unlink", "mkdir",
    "listdir", "syncdir",  "lock",  "mmap"};

const char *lkv_fault_op_name(int op) {
  if (op == LKV_FOP_ANY) return "any";
  return op >= 0 && op < LKV_FOP_COUNT ? op_names[op] : NULL;
}

int lkv_fault_op_parse(const char *name) {
  if (strcmp(name, "any") == 0) return LKV_FOP_ANY;
  for (int i = 0; i < LKV_FOP_COUNT; i++)
    if (strcmp(name, op_names[i]) == 0) return i;
  return -1;
}

/* ==== the rule ========================================================= */

static const char *fd_path(lkv_faultenv *f, int fd);

/* Run the hook, count the call, and say whether the rule fails it (its
 * errno, else 0). The call is on path, or on descriptor fd when path is
 * NULL. Returns with f->mu held: the caller unlocks. */
static int enter(lkv_faultenv *f, int op, const char *path, int fd) {
  pthread_mutex_lock(&f->mu);
  if (path == NULL) path = fd_path(f, fd);
  if (f->hook) { /* outside the lock: the hook may wait for another call */
    lkv_faultenv_hook fn = f->hook;
    void *ctx = f->hook_ctx;
    char copy[4096];
    snprintf(copy, sizeof copy, "%s", path ? path : "");
    pthread_mutex_unlock(&f->mu);
    fn(ctx, op, copy);
    pthread_mutex_lock(&f->mu);
    if (fd >= 0) path = fd_path(f, fd);
  }
  f->calls[op]++;
  if (f->rule_errno == 0 || (f->rule_op != LKV_FOP_ANY && f->rule_op != op))
    return 0;
  if (f->rule_match && (path == NULL || strstr(path, f->rule_match) == NULL))
    return 0;
  f->rule_seen++;
  if (f->rule_nth == 0 || f->rule_seen < f->rule_nth) return 0;
  if (f->rule_seen > f->rule_nth && !(f->rule_flags & LKV_FAULT_STICKY))
    return 0;
  if (f->rule_fired++ == 0) {
    snprintf(f->fired_path, sizeof f->fired_path, "%s", path ? path : "");
    f->nbt = getenv("FAULT_BT") ? backtrace(f->bt, 32) : 0;
  }

  return f->rule_errno;
}

static int mutating(int op) {
  return op == LKV_FOP_WRITE || op == LKV_FOP_SYNC || op == LKV_FOP_TRUNCATE ||
         op == LKV_FOP_RENAME || op == LKV_FOP_UNLINK || op == LKV_FOP_MKDIR ||
         op == LKV_FOP_SYNCDIR;
}

/* enter(), then the crash: a dead machine changes nothing. */
static int enter_op(lkv_faultenv *f, int op, const char *path, int fd) {
  int e = enter(f, op, path, fd);
  if (e == 0 && f->crashed && mutating(op)) e = EIO;
  return e;
}

/* ==== descriptors and files ============================================= */

static const char *fd_path(lkv_faultenv *f, int fd) {
  return fd >= 0 && fd < f->nfds ? f->fds[fd].path : NULL;
}

static int fd_remember(lkv_faultenv *f, int fd, const char *path, int append) {
  if (fd >= f->nfds) {
    int n = f->nfds ? f->nfds : 64;
    while (n <= fd) n *= 2;
    fdinfo *p = realloc(f->fds, (size_t)n * sizeof *p);
    if (p == NULL) return ENOMEM;
    memset(p + f->nfds, 0, (size_t)(n - f->nfds) * sizeof *p);
    f->fds = p;
    f->nfds = n;
  }
  free(f->fds[fd].path);
  f->fds[fd].path = strdup(path);
  f->fds[fd].append = append;
  return f->fds[fd].path ? 0 : ENOMEM;
}

static void fd_forget(lkv_faultenv *f, int fd) {
  if (fd >= 0 && fd < f->nfds) {
    free(f->fds[fd].path);
    f->fds[fd].path = NULL;
  }
}

static fnode *node_find(lkv_faultenv *f, dev_t dev, ino_t ino, fnode ***link) {
  fnode **pp = &f->files;
  for (; *pp; pp = &(*pp)->next)
    if ((*pp)->dev == dev && (*pp)->ino == ino) break;
  if (link) *link = pp;
  return *pp;
}

static void node_free(fnode *n) {
  for (size_t i = 0; i < n->nu; i++) free(n->u[i].bytes);
  free(n->u);
  if (n->fd >= 0) close(n->fd);
  free(n);
}

/* The file behind fd, about to change: its node (made now, with its
 * current size as the synced one, if it has none: a file unchanged since
 * its last sync, or since the env began, is durable as it is). */
static fnode *node_for(lkv_faultenv *f, int fd, int *e) {
  struct stat st;
  if (fstat(fd, &st) < 0) {
    *e = errno;
    return NULL;
  }
  fnode *n = node_find(f, st.st_dev, st.st_ino, NULL);
  if (n) return n;
  n = calloc(1, sizeof *n);
  char proc[64];
  snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
  if (n == NULL || (n->fd = open(proc, O_RDWR | O_CLOEXEC)) < 0) {
    *e = n ? errno : ENOMEM;
    free(n);
    return NULL;
  }
  n->dev = st.st_dev;
  n->ino = st.st_ino;
  n->synced = (uint64_t)st.st_size;
  n->next = f->files;
  f->files = n;
  return n;
}

/* Save what [off, off + len) holds below the synced size before it is
 * overwritten or cut. */
static int save_undo(fnode *n, uint64_t off, uint64_t len) {
  if (off >= n->synced || len == 0) return 0;
  if (len > n->synced - off) len = n->synced - off;
  if (n->nu == n->capu) {
    size_t cap = n->capu ? n->capu * 2 : 8;
    undo *p = realloc(n->u, cap * sizeof *p);
    if (p == NULL) return ENOMEM;
    n->u = p;
    n->capu = cap;
  }
  char *b = malloc((size_t)len);
  if (b == NULL) return ENOMEM;
  ssize_t r = pread(n->fd, b, (size_t)len, (off_t)off);
  if (r < 0) {
    free(b);
    return errno;
  }
  n->u[n->nu].off = off;
  n->u[n->nu].n = (size_t)r;
  n->u[n->nu].bytes = b;
  n->nu++;
  return 0;
}

/* fd's file is durable now: forget its node. */
static void node_synced(lkv_faultenv *f, int fd) {
  struct stat st;
  fnode **pp;
  if (fstat(fd, &st) == 0 && node_find(f, st.st_dev, st.st_ino, &pp)) {
    fnode *n = *pp;
    *pp = n->next;
    node_free(n);
  }
}

/* ==== directory changes ================================================= */

static int parent_of(const char *path, dev_t *dev, ino_t *ino) {
  char dir[4096];
  const char *slash = strrchr(path, '/');
  if (slash == NULL) {
    snprintf(dir, sizeof dir, ".");
  } else if (slash == path) {
    snprintf(dir, sizeof dir, "/");
  } else {
    size_t n = (size_t)(slash - path);
    if (n >= sizeof dir) return ENAMETOOLONG;
    memcpy(dir, path, n);
    dir[n] = '\0';
  }
  struct stat st;
  if (stat(dir, &st) < 0) return errno;
  *dev = st.st_dev;
  *ino = st.st_ino;
  return 0;
}

static int add_op(lkv_faultenv *f, int kind, const char *a, const char *b,
                  char *backup) {
  dirop o = {kind, 0, 0, NULL, NULL, backup};
  int e = parent_of(b ? b : a, &o.ddev, &o.dino);
  if (e) return e;
  if (f->nops == f->capops) {
    size_t cap = f->capops ? f->capops * 2 : 16;
    dirop *p = realloc(f->ops, cap * sizeof *p);
    if (p == NULL) return ENOMEM;
    f->ops = p;
    f->capops = cap;
  }
  o.a = strdup(a);
  o.b = b ? strdup(b) : NULL;
  if (o.a == NULL || (b && o.b == NULL)) {
    free(o.a);
    free(o.b);
    return ENOMEM;
  }
  f->ops[f->nops++] = o;
  return 0;
}

static void op_free(dirop *o) {
  free(o->a);
  free(o->b);
  free(o->backup);
}

/* A hidden name beside path for a copy of the file it names. */
static char *hidden_name(lkv_faultenv *f, const char *path) {
  const char *slash = strrchr(path, '/');
  size_t dl = slash ? (size_t)(slash - path) + 1 : 0;
  char *h = malloc(dl + sizeof HIDDEN_PREFIX + 24);
  if (h == NULL) return NULL;
  memcpy(h, path, dl);
  sprintf(h + dl, HIDDEN_PREFIX "%llu", (unsigned long long)++f->hidden_seq);
  return h;
}

/* ==== the env's functions =============================================== */

static int fe_open(const lkv_env *env, const char *path, int flags, int mode,
                   int *fd) {
  lkv_faultenv *f = FE(env);
  int writes = (flags & (O_WRONLY | O_RDWR)) != 0;
  int e = enter(f, flags & O_CREAT ? LKV_FOP_CREATE : LKV_FOP_OPEN, path, -1);
  if (e == 0 && f->crashed && (writes || (flags & (O_CREAT | O_TRUNC))))
    e = EIO;
  if (e) {
    pthread_mutex_unlock(&f->mu);
    return e;
  }
  struct stat st;
  int existed = stat(path, &st) == 0;
  if (existed && (flags & O_TRUNC) && writes && st.st_size > 0) {
    /* the cut must be undoable: note the old bytes through a descriptor
     * opened before the cut */
    int tfd = open(path, O_RDONLY | O_CLOEXEC);
    fnode *n = tfd >= 0 ? node_for(f, tfd, &e) : NULL;
    if (tfd < 0) e = errno;
    if (n) e = save_undo(n, 0, n->synced);
    if (tfd >= 0) close(tfd);
    if (e) {
      pthread_mutex_unlock(&f->mu);
      return e;
    }
  }
  e = lkv_env_posix()->open(lkv_env_posix(), path, flags, mode, fd);
  if (e == 0 && !existed && (flags & O_CREAT))
    e = add_op(f, OP_CREATE, path, NULL, NULL);
  if (e == 0) e = fd_remember(f, *fd, path, (flags & O_APPEND) != 0);
  if (e && *fd >= 0) {
    close(*fd);
    *fd = -1;
  }
  pthread_mutex_unlock(&f->mu);
  return e;
}

static int fe_close(const lkv_env *env, int fd) {
  lkv_faultenv *f = FE(env);
  int e = enter(f, LKV_FOP_CLOSE, NULL, fd);
  fd_forget(f, fd);
  /* the descriptor goes even when the close "fails", as on Linux */
  close(fd);
  pthread_mutex_unlock(&f->mu);
  return e;
}

static long long fe_pread(const lkv_env *env, int fd, void *buf, size_t n,
                          uint64_t off) {
  lkv_faultenv *f = FE(env);
  int e = enter(f, LKV_FOP_READ, NULL, fd);
  pthread_mutex_unlock(&f->mu);
  if (e) return -(long long)e;
  return lkv_env_posix()->pread(lkv_env_posix(), fd, buf, n, off);
}

/* A write of n bytes at off (append: at the end). REQUIRES: f->mu */
static long long do_write(lkv_faultenv *f, int fd, const void *buf, size_t n,
                          int positioned, uint64_t off, int fail) {
  int e = 0;
  fnode *node = node_for(f, fd, &e);
  if (node == NULL) return -(long long)e;
  if (!positioned) {
    if (fd < f->nfds && f->fds[fd].append) {
      struct stat st;
      if (fstat(fd, &st) < 0) return -(long long)errno;
      off = (uint64_t)st.st_size;
    } else {
      off_t cur = lseek(fd, 0, SEEK_CUR);
      if (cur < 0) return -(long long)errno;
      off = (uint64_t)cur;
    }
  }
  if (fail && !(f->rule_flags & LKV_FAULT_SHORT)) return -(long long)fail;
  if (fail) n /= 2; /* half lands, then the error */
  if ((e = save_undo(node, off, n))) return -(long long)e;
  const lkv_env *px = lkv_env_posix();
  long long w =
      positioned ? px->pwrite(px, fd, buf, n, off) : px->write(px, fd, buf, n);
  if (fail) return -(long long)fail;
  return w;
}

static long long fe_write(const lkv_env *env, int fd, const void *buf,
                          size_t n) {
  lkv_faultenv *f = FE(env);
  int e = enter_op(f, LKV_FOP_WRITE, NULL, fd);
  long long w =
      e && f->crashed ? -(long long)e : do_write(f, fd, buf, n, 0, 0, e);
  pthread_mutex_unlock(&f->mu);
  return w;
}

static long long fe_pwrite(const lkv_env *env, int fd, const void *buf,
                           size_t n, uint64_t off) {
  lkv_faultenv *f = FE(env);
  int e = enter_op(f, LKV_FOP_WRITE, NULL, fd);
  long long w =
      e && f->crashed ? -(long long)e : do_write(f, fd, buf, n, 1, off, e);
  pthread_mutex_unlock(&f->mu);
  return w;
}

static int fe_sync(const lkv_env *env, int fd, int data_only) {
  lkv_faultenv *f = FE(env);
  int e = enter_op(f, LKV_FOP_SYNC, NULL, fd);
  if (e == 0) e = lkv_env_posix()->sync(lkv_env_posix(), fd, data_only);
  if (e == 0) node_synced(f, fd);
  pthread_mutex_unlock(&f->mu);
  return e;
}

static int fe_size(const lkv_env *env, int fd, uint64_t *size) {
  lkv_faultenv *f = FE(env);
  int e = enter(f, LKV_FOP_SIZE, NULL, fd);
  pthread_mutex_unlock(&f->mu);
  return e ? e : lkv_env_posix()->size(lkv_env_posix(), fd, size);
}

static int fe_truncate(const lkv_env *env, int fd, uint64_t size) {
  lkv_faultenv *f = FE(env);
  int e = enter_op(f, LKV_FOP_TRUNCATE, NULL, fd);
  fnode *n = e ? NULL : node_for(f, fd, &e);
  if (n) e = save_undo(n, size, n->synced > size ? n->synced - size : 0);
  if (e == 0) e = lkv_env_posix()->truncate(lkv_env_posix(), fd, size);
  pthread_mutex_unlock(&f->mu);
  return e;
}

static int fe_stat(const lkv_env *env, const char *path, lkv_env_info *st) {
  lkv_faultenv *f = FE(env);
  int e = enter(f, LKV_FOP_STAT, path, -1);
  pthread_mutex_unlock(&f->mu);
  return e ? e : lkv_env_posix()->stat(lkv_env_posix(), path, st);
}

static int fe_rename(const lkv_env *env, const char *from, const char *to) {
  lkv_faultenv *f = FE(env);
  int e = enter_op(f, LKV_FOP_RENAME, from, -1);
  char *backup = NULL;
  if (e == 0 && access(to, F_OK) == 0) { /* keep what `to` names now */
    if ((backup = hidden_name(f, to)) == NULL)
      e = ENOMEM;
    else if (link(to, backup) < 0)
      e = errno;
  }
  if (e == 0 && (e = lkv_env_posix()->rename(lkv_env_posix(), from, to)) == 0) {
    if ((e = add_op(f, OP_RENAME, from, to, backup)) == 0) backup = NULL;
  }
  if (backup) {
    unlink(backup);
    free(backup);
  }
  pthread_mutex_unlock(&f->mu);
  return e;
}

static int fe_unlink(const lkv_env *env, const char *path) {
  lkv_faultenv *f = FE(env);
  int e = enter_op(f, LKV_FOP_UNLINK, path, -1);
  char *backup = NULL;
  /* the file lives on under a hidden name until the directory is synced */
  if (e == 0 && (backup = hidden_name(f, path)) == NULL) e = ENOMEM;
  if (e == 0 && rename(path, backup) < 0) e = errno;
  if (e == 0 && (e = add_op(f, OP_UNLINK, path, NULL, backup)) == 0)
    backup = NULL;
  free(backup);
  pthread_mutex_unlock(&f->mu);
  return e;
}

static int fe_mkdir(const lkv_env *env, const char *path) {
  lkv_faultenv *f = FE(env);
  int e = enter_op(f, LKV_FOP_MKDIR, path, -1);
  if (e == 0) e = lkv_env_posix()->mkdir(lkv_env_posix(), path);
  /* a new directory is a change of its parent, lost with everything in it
   * unless the parent is synced */
  if (e == 0) e = add_op(f, OP_MKDIR, path, NULL, NULL);
  pthread_mutex_unlock(&f->mu);
  return e;
}

typedef struct list_ctx {
  lkv_env_dir_fn fn;
  void *arg;
} list_ctx;

static int list_one(void *arg, const char *name) {
  list_ctx *c = arg;
  if (strncmp(name, HIDDEN_PREFIX, sizeof HIDDEN_PREFIX - 1) == 0) return 0;
  return c->fn(c->arg, name);
}

static int fe_list_dir(const lkv_env *env, const char *dir, lkv_env_dir_fn fn,
                       void *arg) {
  lkv_faultenv *f = FE(env);
  int e = enter(f, LKV_FOP_LISTDIR, dir, -1);
  pthread_mutex_unlock(&f->mu);
  list_ctx c = {fn, arg};
  return e ? e : lkv_env_posix()->list_dir(lkv_env_posix(), dir, list_one, &c);
}

static int fe_sync_dir(const lkv_env *env, const char *dir) {
  lkv_faultenv *f = FE(env);
  int e = enter_op(f, LKV_FOP_SYNCDIR, dir, -1);
  struct stat st;
  if (e == 0) e = lkv_env_posix()->sync_dir(lkv_env_posix(), dir);
  if (e == 0 && stat(dir, &st) < 0) e = errno;
  if (e == 0) { /* its changes are durable: drop them, and the copies */
    size_t k = 0;
    for (size_t i = 0; i < f->nops; i++) {
      dirop *o = &f->ops[i];
      if (o->ddev == st.st_dev && o->dino == st.st_ino) {
        if (o->backup) unlink(o->backup);
        op_free(o);
      } else {
        f->ops[k++] = *o;
      }
    }
    f->nops = k;
  }
  pthread_mutex_unlock(&f->mu);
  return e;
}

static int fe_lock(const lkv_env *env, const char *path, int exclusive,
                   int *fd) {
  lkv_faultenv *f = FE(env);
  int e = enter(f, LKV_FOP_LOCK, path, -1);
  pthread_mutex_unlock(&f->mu);
  return e ? e : lkv_env_posix()->lock(lkv_env_posix(), path, exclusive, fd);
}

static int fe_unlock(const lkv_env *env, int fd) {
  (void)env;
  return lkv_env_posix()->unlock(lkv_env_posix(), fd);
}

static int fe_mmap(const lkv_env *env, int fd, size_t size, const void **addr) {
  lkv_faultenv *f = FE(env);
  int e = enter(f, LKV_FOP_MMAP, NULL, fd);
  pthread_mutex_unlock(&f->mu);
  return e ? e : lkv_env_posix()->mmap(lkv_env_posix(), fd, size, addr);
}

static void fe_munmap(const lkv_env *env, const void *addr, size_t size) {
  (void)env;
  lkv_env_posix()->munmap(lkv_env_posix(), addr, size);
}

/* ==== life, rules, power loss =========================================== */

lkv_faultenv *lkv_faultenv_new(void) {
  lkv_faultenv *f = calloc(1, sizeof *f);
  if (f == NULL) return NULL;
  lkv_env e = {fe_open,     fe_close,    fe_pread,  fe_write,
               fe_pwrite,   fe_sync,     fe_size,   fe_truncate,
               fe_stat,     fe_rename,   fe_unlink, fe_mkdir,
               fe_list_dir, fe_sync_dir, fe_lock,   fe_unlock,
               fe_mmap,     fe_munmap,   f};
  f->env = e;
  pthread_mutex_init(&f->mu, NULL);
  return f;
}

const lkv_env *lkv_faultenv_env(lkv_faultenv *f) { return &f->env; }

/* Forget every change (what is on disk is durable from now). mu held */
static void forget_all(lkv_faultenv *f) {
  while (f->files) {
    fnode *n = f->files;
    f->files = n->next;
    node_free(n);
  }
  for (size_t i = 0; i < f->nops; i++) {
    if (f->ops[i].backup) unlink(f->ops[i].backup);
    op_free(&f->ops[i]);
  }
  f->nops = 0;
}

void lkv_faultenv_free(lkv_faultenv *f) {
  if (f == NULL) return;
  forget_all(f);
  for (int i = 0; i < f->nfds; i++) free(f->fds[i].path);
  free(f->fds);
  free(f->ops);
  free(f->rule_match);
  pthread_mutex_destroy(&f->mu);
  free(f);
}

void lkv_faultenv_fail(lkv_faultenv *f, int op, uint64_t nth, int errnum,
                       const char *match, int flags) {
  pthread_mutex_lock(&f->mu);
  free(f->rule_match);
  f->rule_match = match ? strdup(match) : NULL;
  f->rule_op = op;
  f->rule_nth = nth;
  f->rule_errno = errnum ? errnum : EIO;
  f->rule_flags = flags;
  f->rule_seen = f->rule_fired = 0;
  f->fired_path[0] = '\0';
  f->nbt = 0;
  pthread_mutex_unlock(&f->mu);
}

void lkv_faultenv_clear(lkv_faultenv *f) {
  pthread_mutex_lock(&f->mu);
  f->rule_errno = 0;
  pthread_mutex_unlock(&f->mu);
}

/* One of f's counters, read under its lock. */
static uint64_t read_locked(lkv_faultenv *f, const uint64_t *counter) {
  pthread_mutex_lock(&f->mu);
  uint64_t n = *counter;
  pthread_mutex_unlock(&f->mu);
  return n;
}

uint64_t lkv_faultenv_seen(lkv_faultenv *f) {
  return read_locked(f, &f->rule_seen);
}

void lkv_faultenv_fired_path(lkv_faultenv *f, char *buf, size_t n) {
  pthread_mutex_lock(&f->mu);
  snprintf(buf, n, "%s", f->fired_path);
  pthread_mutex_unlock(&f->mu);
}

uint64_t lkv_faultenv_fired(lkv_faultenv *f) {
  return read_locked(f, &f->rule_fired);
}

uint64_t lkv_faultenv_calls(lkv_faultenv *f, int op) {
  uint64_t n = 0;
  pthread_mutex_lock(&f->mu);
  for (int i = 0; i < LKV_FOP_COUNT; i++)
    if (op == LKV_FOP_ANY || op == i) n += f->calls[i];
  pthread_mutex_unlock(&f->mu);
  return n;
}

void lkv_faultenv_set_hook(lkv_faultenv *f, lkv_faultenv_hook fn, void *ctx) {
  pthread_mutex_lock(&f->mu);
  f->hook = fn;
  f->hook_ctx = ctx;
  pthread_mutex_unlock(&f->mu);
}

void lkv_faultenv_crash(lkv_faultenv *f) {
  pthread_mutex_lock(&f->mu);
  f->crashed = 1;
  pthread_mutex_unlock(&f->mu);
}

uint64_t lkv_faultenv_unsynced_bytes(lkv_faultenv *f) {
  uint64_t n = 0;
  pthread_mutex_lock(&f->mu);
  for (fnode *x = f->files; x; x = x->next) {
    struct stat st;
    if (fstat(x->fd, &st) == 0 && (uint64_t)st.st_size > x->synced)
      n += (uint64_t)st.st_size - x->synced;
    for (size_t i = 0; i < x->nu; i++) n += x->u[i].n;
  }
  pthread_mutex_unlock(&f->mu);
  return n;
}

int lkv_faultenv_writeback(lkv_faultenv *f, const char *path) {
  struct stat st;
  fnode **pp;
  int e = 0;
  pthread_mutex_lock(&f->mu);
  if (stat(path, &st) < 0) {
    e = errno;
  } else {
    if (node_find(f, st.st_dev, st.st_ino, &pp)) {
      fnode *n = *pp;
      *pp = n->next;
      node_free(n);
    }
    size_t k = 0; /* its creation is durable too */
    for (size_t i = 0; i < f->nops; i++) {
      dirop *o = &f->ops[i];
      if (o->kind == OP_CREATE && strcmp(o->a, path) == 0)
        op_free(o);
      else
        f->ops[k++] = *o;
    }
    f->nops = k;
  }
  pthread_mutex_unlock(&f->mu);
  return e;
}

static uint64_t next_rand(uint64_t *s) { return lkv_splitmix64(s); }

/* [0, n] */
static uint64_t rand_upto(uint64_t *s, uint64_t n) {
  return n == UINT64_MAX ? next_rand(s) : next_rand(s) % (n + 1);
}

static int remove_tree(const char *path, const struct stat *st, int flag,
                       struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path) < 0 ? errno : 0;
}

static int undo_op(const dirop *o) {
  switch (o->kind) {
    case OP_CREATE: return unlink(o->a) < 0 && errno != ENOENT ? errno : 0;
    case OP_MKDIR: /* the directory never reached the disk, nor its files */
      return nftw(o->a, remove_tree, 16, FTW_DEPTH | FTW_PHYS) < 0 &&
                     errno != ENOENT
                 ? errno
                 : 0;
    case OP_RENAME:
      if (rename(o->b, o->a) < 0) return errno;
      return o->backup && rename(o->backup, o->b) < 0 ? errno : 0;
    default: /* OP_UNLINK */ return rename(o->backup, o->a) < 0 ? errno : 0;
  }
}

static int roll_back_file(fnode *n, lkv_loss_mode mode, uint64_t *seed) {
  if (mode == LKV_LOSS_RANDOM) mode = (lkv_loss_mode)(next_rand(seed) % 3);
  /* overwrites of synced bytes, newest first: each lands or not */
  for (size_t i = n->nu; i-- > 0;) {
    const undo *u = &n->u[i];
    if (mode != LKV_LOSS_DROP && next_rand(seed) % 2) continue;
    if (pwrite(n->fd, u->bytes, u->n, (off_t)u->off) != (ssize_t)u->n)
      return EIO;
  }
  struct stat st;
  if (fstat(n->fd, &st) < 0) return errno;
  uint64_t size = (uint64_t)st.st_size, keep = n->synced;
  if (size > n->synced && mode != LKV_LOSS_DROP) {
    keep += rand_upto(seed, size - n->synced);
    if (mode == LKV_LOSS_TORN && keep < size) {
      char junk[512];
      uint64_t g =
          1 + rand_upto(
                  seed,
                  (size - keep < sizeof junk ? size - keep : sizeof junk) - 1);
      for (size_t i = 0; i < g; i++) junk[i] = (char)next_rand(seed);
      if (pwrite(n->fd, junk, (size_t)g, (off_t)keep) != (ssize_t)g) return EIO;
      keep += g;
    }
  }
  if (keep < size || n->synced > size)
    if (ftruncate(n->fd, (off_t)keep) < 0) return errno;
  return 0;
}

int lkv_faultenv_power_loss(lkv_faultenv *f, lkv_loss_mode mode, uint64_t seed,
                            lkv_err *err) {
  int e = 0;
  uint64_t s = seed;
  pthread_mutex_lock(&f->mu);
  /* directory changes: a journal keeps a prefix of them, in order */
  size_t keep = mode == LKV_LOSS_DROP ? 0 : (size_t)rand_upto(&s, f->nops);
  for (size_t i = f->nops; i-- > keep && e == 0;) e = undo_op(&f->ops[i]);
  for (fnode *n = f->files; n && e == 0; n = n->next)
    e = roll_back_file(n, mode, &s);
  forget_all(f); /* the kept changes' hidden copies go too */
  f->crashed = 0;
  f->rule_errno = 0;
  pthread_mutex_unlock(&f->mu);
  if (e) {
    errno = e;
    return lkv_seterrno(err, "power loss", "(fault env)");
  }
  return LKV_OK;
}

void lkv_faultenv_print_stack(lkv_faultenv *f) {
  pthread_mutex_lock(&f->mu);
  if (f->nbt > 0) {
    fprintf(stderr, "the failed call's stack (addr2line -f -e <binary>):\n");
    backtrace_symbols_fd(f->bt, f->nbt, 2);
  }
  pthread_mutex_unlock(&f->mu);
}
