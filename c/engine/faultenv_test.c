/* faultenv_test.c - the fault env itself: what a power loss keeps and
 * drops, and how its rules fail calls. The db's tests trust it, so each
 * promise of faultenv.h is checked here against the real file system. */
#include "faultenv.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "env.h"
#include "test.h"

static char dir[] = "/tmp/lkv_faultenv_test_XXXXXX";

static void path_of(char *buf, const char *name) {
  snprintf(buf, 4096, "%s/%s", dir, name);
}

/* The file's bytes as a string ("" when empty, NULL when missing). */
static char *slurp(const char *name) {
  char p[4096];
  path_of(p, name);
  FILE *fp = fopen(p, "rb");
  if (fp == NULL) return NULL;
  static char buf[8192];
  size_t n = fread(buf, 1, sizeof buf - 1, fp);
  fclose(fp);
  buf[n] = '\0';
  return buf;
}

static int exists(const char *name) { return slurp(name) != NULL; }

static void put(const lkv_env *e, int fd, const char *s) {
  lkv_err err;
  CHECK_OK(lkv_env_write(e, fd, s, strlen(s), "f", &err), &err);
}

static int create(const lkv_env *e, const char *name, int flags) {
  char p[4096];
  int fd;
  lkv_err err;
  path_of(p, name);
  CHECK_OK(lkv_env_open(e, p, flags | O_CREAT, 0644, &fd, &err), &err);
  return fd;
}

/* A file name holding s, its data synced (its name is durable only once
 * the directory is), closed. */
static void write_synced(const lkv_env *e, const char *name, int flags,
                         const char *s) {
  lkv_err err;
  int fd = create(e, name, flags);
  put(e, fd, s);
  CHECK_OK(lkv_env_fsync(e, fd, name, &err), &err);
  lkv_env_close(e, fd, name, NULL);
}

static void loss(lkv_faultenv *f, lkv_loss_mode m, uint64_t seed) {
  lkv_err err;
  CHECK_OK(lkv_faultenv_power_loss(f, m, seed, &err), &err);
}

/* Unsynced bytes go; synced ones stay; a synced directory keeps the
 * file's name. */
static void test_data(void) {
  lkv_faultenv *f = lkv_faultenv_new();
  const lkv_env *e = lkv_faultenv_env(f);
  lkv_err err;
  int fd = create(e, "a", O_WRONLY | O_APPEND);
  put(e, fd, "synced|");
  CHECK_OK(lkv_env_fdatasync(e, fd, "a", &err), &err);
  CHECK_OK(lkv_env_sync_dir(e, dir, &err), &err);
  put(e, fd, "lost");
  CHECK(lkv_faultenv_unsynced_bytes(f) == 4);
  loss(f, LKV_LOSS_DROP, 1);
  CHECK(exists("a") && strcmp(slurp("a"), "synced|") == 0);
  /* after the loss the env starts afresh: the file is durable as it is */
  put(e, fd, "more");
  CHECK_OK(lkv_env_fsync(e, fd, "a", &err), &err);
  loss(f, LKV_LOSS_DROP, 2);
  CHECK(strcmp(slurp("a"), "synced|more") == 0);
  lkv_env_close(e, fd, "a", NULL);
  lkv_faultenv_free(f);
}

/* A file created but whose directory was never synced disappears, even
 * when its data was synced. */
static void test_create(void) {
  lkv_faultenv *f = lkv_faultenv_new();
  const lkv_env *e = lkv_faultenv_env(f);
  write_synced(e, "b", O_WRONLY, "data");
  loss(f, LKV_LOSS_DROP, 1);
  CHECK(!exists("b"));
  lkv_faultenv_free(f);
}

/* The manifest dance: write tmp, fsync, rename over the old one. Without
 * the directory sync the old file comes back; with it, the new stays. */
static void test_rename(void) {
  lkv_faultenv *f = lkv_faultenv_new();
  const lkv_env *e = lkv_faultenv_env(f);
  lkv_err err;
  char tmp[4096], dst[4096];
  path_of(tmp, "M.tmp");
  path_of(dst, "M");
  for (int synced = 0; synced < 2; synced++) {
    write_synced(e, "M", O_WRONLY | O_TRUNC, "old");
    CHECK_OK(lkv_env_sync_dir(e, dir, &err), &err);
    for (int round = 0; round < 2; round++) { /* two rewrites, one loss */
      write_synced(e, "M.tmp", O_WRONLY | O_TRUNC, round ? "new2" : "new1");
      CHECK_OK(lkv_env_rename(e, tmp, dst, &err), &err);
    }
    if (synced) CHECK_OK(lkv_env_sync_dir(e, dir, &err), &err);
    loss(f, LKV_LOSS_DROP, 3);
    CHECK(exists("M") && strcmp(slurp("M"), synced ? "new2" : "old") == 0);
    CHECK(!exists("M.tmp"));
  }
  lkv_faultenv_free(f);
}

/* An unlink not made durable is undone; one made durable stays. Hidden
 * copies never show in a listing. */
static int count_entry(void *arg, const char *name) {
  if (strcmp(name, "c") == 0 || strncmp(name, ".faultenv", 9) == 0)
    (*(int *)arg)++;
  return 0;
}

static void test_unlink(void) {
  lkv_faultenv *f = lkv_faultenv_new();
  const lkv_env *e = lkv_faultenv_env(f);
  lkv_err err;
  char p[4096];
  path_of(p, "c");
  write_synced(e, "c", O_WRONLY, "keep");
  CHECK_OK(lkv_env_sync_dir(e, dir, &err), &err);
  CHECK_OK(lkv_env_unlink(e, p, &err), &err);
  int n = 0;
  CHECK_OK(lkv_env_list_dir(e, dir, count_entry, &n, &err), &err);
  CHECK(n == 0); /* neither c nor its hidden copy */
  loss(f, LKV_LOSS_DROP, 1);
  CHECK(exists("c") && strcmp(slurp("c"), "keep") == 0);
  CHECK_OK(lkv_env_unlink(e, p, &err), &err);
  CHECK_OK(lkv_env_sync_dir(e, dir, &err), &err);
  loss(f, LKV_LOSS_DROP, 1);
  CHECK(!exists("c"));
  lkv_faultenv_free(f);
}

/* In-place overwrites of synced bytes and truncations below the synced
 * size are rolled back too (the replication log rewrites its header). */
static void test_overwrite(void) {
  lkv_faultenv *f = lkv_faultenv_new();
  const lkv_env *e = lkv_faultenv_env(f);
  lkv_err err;
  int fd = create(e, "d", O_RDWR);
  put(e, fd, "0123456789");
  CHECK_OK(lkv_env_fsync(e, fd, "d", &err), &err);
  CHECK_OK(lkv_env_sync_dir(e, dir, &err), &err);
  CHECK_OK(lkv_env_pwrite(e, fd, "ab", 2, 3, "d", &err), &err);
  CHECK_OK(lkv_env_truncate(e, fd, 6, "d", &err), &err);
  CHECK_OK(lkv_env_pwrite(e, fd, "XYZ", 3, 5, "d", &err), &err);
  CHECK(strcmp(slurp("d"), "012abXYZ") == 0);
  loss(f, LKV_LOSS_DROP, 1);
  CHECK(strcmp(slurp("d"), "0123456789") == 0);
  lkv_env_close(e, fd, "d", NULL);
  lkv_faultenv_free(f);
}

/* PARTIAL and TORN keep a prefix of the unsynced bytes (TORN adds junk
 * after it), never touching the synced ones. */
static void test_partial(void) {
  size_t min_kept = 99, max_kept = 0;
  int torn_differs = 0;
  for (uint64_t seed = 1; seed <= 40; seed++) {
    lkv_faultenv *f = lkv_faultenv_new();
    const lkv_env *e = lkv_faultenv_env(f);
    lkv_err err;
    int fd = create(e, "p", O_WRONLY | O_TRUNC);
    CHECK_OK(lkv_env_sync_dir(e, dir, &err), &err);
    put(e, fd, "SYNCED");
    CHECK_OK(lkv_env_fsync(e, fd, "p", &err), &err);
    put(e, fd, "abcdefghijklmnopqrstuvwxyz");
    lkv_loss_mode m = seed % 2 ? LKV_LOSS_PARTIAL : LKV_LOSS_TORN;
    loss(f, m, seed);
    const char *s = slurp("p");
    CHECK(s && strncmp(s, "SYNCED", 6) == 0);
    size_t n = strlen(s) - 6; /* (junk may hold a zero: then shorter) */
    if (m == LKV_LOSS_PARTIAL) {
      CHECK(strncmp(s + 6, "abcdefghijklmnopqrstuvwxyz", n) == 0);
      if (n < min_kept) min_kept = n;
      if (n > max_kept) max_kept = n;
    } else if (n > 0 && strncmp(s + 6, "abcdefghijklmnopqrstuvwxyz", n) != 0) {
      torn_differs++;
    }
    lkv_env_close(e, fd, "p", NULL);
    lkv_faultenv_free(f);
  }
  CHECK(max_kept > min_kept); /* the prefix kept is drawn, not fixed */
  CHECK(torn_differs > 0);
}

/* Rules: the nth matching call fails once (or from then on, sticky); a
 * short write lands half its bytes; a crash fails every change. */
static void test_rules(void) {
  lkv_faultenv *f = lkv_faultenv_new();
  const lkv_env *e = lkv_faultenv_env(f);
  lkv_err err;
  int fd = create(e, "r", O_WRONLY | O_TRUNC);
  lkv_faultenv_fail(f, LKV_FOP_WRITE, 2, ENOSPC, "/r", 0);
  CHECK(lkv_env_write(e, fd, "1", 1, "r", &err) == LKV_OK);
  CHECK(lkv_env_write(e, fd, "2", 1, "r", &err) == LKV_IOERROR);
  CHECK(strstr(err.msg, "No space left") != NULL);
  CHECK(lkv_env_write(e, fd, "3", 1, "r", &err) == LKV_OK);
  CHECK(lkv_faultenv_seen(f) == 3 && lkv_faultenv_fired(f) == 1);
  lkv_faultenv_fail(f, LKV_FOP_WRITE, 1, EIO, "nomatch", 0);
  CHECK(lkv_env_write(e, fd, "4", 1, "r", &err) == LKV_OK);
  lkv_faultenv_fail(f, LKV_FOP_SYNC, 1, EIO, NULL, LKV_FAULT_STICKY);
  CHECK(lkv_env_fsync(e, fd, "r", &err) == LKV_IOERROR);
  CHECK(lkv_env_fsync(e, fd, "r", &err) == LKV_IOERROR);
  lkv_faultenv_fail(f, LKV_FOP_WRITE, 1, EIO, NULL, LKV_FAULT_SHORT);
  CHECK(lkv_env_write(e, fd, "abcdef", 6, "r", &err) == LKV_IOERROR);
  CHECK(strcmp(slurp("r"), "134abc") == 0);
  lkv_faultenv_clear(f);
  lkv_faultenv_crash(f);
  CHECK(lkv_env_write(e, fd, "x", 1, "r", &err) == LKV_IOERROR);
  char p[4096];
  int rfd;
  path_of(p, "r");
  CHECK(lkv_env_open(e, p, O_RDONLY, 0, &rfd, &err) == LKV_OK); /* reads work */
  lkv_env_close(e, rfd, "r", NULL);
  CHECK(lkv_env_unlink(e, p, &err) == LKV_IOERROR);
  loss(f, LKV_LOSS_DROP, 1);
  CHECK(!exists("r")); /* never durable: its directory was not synced */
  CHECK(lkv_faultenv_calls(f, LKV_FOP_WRITE) == 6);
  CHECK(lkv_fault_op_parse("syncdir") == LKV_FOP_SYNCDIR);
  CHECK(strcmp(lkv_fault_op_name(LKV_FOP_MMAP), "mmap") == 0);
  lkv_env_close(e, fd, "r", NULL);
  lkv_faultenv_free(f);
}

int main(void) {
  if (mkdtemp(dir) == NULL) {
    perror("mkdtemp");
    return 1;
  }
  test_data();
  test_create();
  test_rename();
  test_unlink();
  test_overwrite();
  test_partial();
  test_rules();
  rmrf(dir);
  TEST_MAIN_END();
}
