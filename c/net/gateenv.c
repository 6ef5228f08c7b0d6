/* gateenv.c - the test hook LUNAKV_TEST_ENGINE_GATE=PATH (spec/34): the
 * node's engine gets an env that passes every call to the POSIX one,
 * except that creating a table file (NNNNNN.sst) waits while PATH
 * exists. A flush then cannot finish, frozen memtables pile up, and the
 * engine reaches the point where a write would wait for its background
 * threads: the case the node must survive without blocking its loop
 * (apply.c, LKV_WRITE_NO_STALL). Only the engine's files go through it;
 * the replication log keeps the node's own env. */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "node.h"

static const char *gate_path;
static lkv_env gate_env;

static int ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && memcmp(s + n - k, suffix, k) == 0;
}

static int gate_open(const lkv_env *env, const char *path, int flags, int mode,
                     int *fd) {
  const lkv_env *posix = lkv_env_posix();
  (void)env;
  if ((flags & O_CREAT) && ends_with(path, ".sst")) {
    struct timespec ts = {0, 10 * 1000 * 1000};
    while (access(gate_path, F_OK) == 0) nanosleep(&ts, NULL);
  }
  return posix->open(posix, path, flags, mode, fd);
}

const lkv_env *lkvnet_gate_env(const char *path) {
  if (path == NULL || path[0] == '\0') return NULL;
  if ((gate_path = strdup(path)) == NULL) return NULL;
  gate_env = *lkv_env_posix();
  gate_env.open = gate_open;
  return &gate_env;
}
