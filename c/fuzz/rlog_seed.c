/* rlog_seed.c WORK RLOG_CORPUS FRAMES_CORPUS - write small real
 * replication logs with lkvnet_rlog (in WORK/<name>/) and copy them into
 * RLOG_CORPUS, and their bodies (the frames after the 40-byte header, and
 * one lkvnet_rlog_read slice) into FRAMES_CORPUS: the seeds of fuzz_rlog
 * and fuzz_frames (run by `make fuzz`). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rlog.h"

static const char *work, *rlog_out, *frames_out;

static void die(const char *what, const lkv_err *err) {
  fprintf(stderr, "rlog_seed: %s: %s\n", what,
          err ? err->msg : strerror(errno));
  exit(1);
}

static void put_file(const char *dir, const char *name, const void *p,
                     size_t n) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  if (f == NULL || (n && fwrite(p, 1, n, f) != n) || fclose(f) != 0)
    die(path, NULL);
}

static unsigned char *get_file(const char *dir, size_t *n) {
  char path[4096];
  struct stat st;
  snprintf(path, sizeof path, "%s/%s", dir, LKVNET_RLOG_FILE);
  FILE *f = fopen(path, "rb");
  if (f == NULL || fstat(fileno(f), &st) != 0) die(path, NULL);
  unsigned char *b = malloc((size_t)st.st_size + 1);
  if (b == NULL || fread(b, 1, (size_t)st.st_size, f) != (size_t)st.st_size)
    die(path, NULL);
  fclose(f);
  *n = (size_t)st.st_size;
  return b;
}

static lkvnet_rlog *open_log(const char *name, char *dir, size_t dirlen) {
  lkvnet_rlog *r;
  lkv_err err;
  snprintf(dir, dirlen, "%s/%s", work, name);
  if (mkdir(dir, 0755) != 0 && errno != EEXIST) die(dir, NULL);
  if (lkvnet_rlog_open(dir, NULL, -1, NULL, NULL, &r, &err) != LKV_OK)
    die("open", &err);
  return r;
}

static void add(lkvnet_rlog *r, uint64_t term, int op, const char *k,
                size_t klen, const char *v, size_t vlen) {
  uint64_t idx;
  lkv_err err;
  if (lkvnet_rlog_append(r, term, op, k, klen, v, vlen, &idx, &err) != LKV_OK)
    die("append", &err);
}

/* The entries of a short history: two terms, every operation (a
 * configuration change too), an empty value, a binary key. */
static void history(lkvnet_rlog *r, uint64_t term) {
  char big[40];
  memset(big, 'x', sizeof big);
  add(r, term, LKVNET_OP_NOOP, NULL, 0, NULL, 0);
  add(r, term, LKVNET_OP_SET, "a", 1, "hi", 2);
  add(r, term, LKVNET_OP_SET, "b", 1, big, sizeof big);
  add(r, term, LKVNET_OP_DELETE, "a", 1, NULL, 0);
  add(r, term + 1, LKVNET_OP_NOOP, NULL, 0, NULL, 0);
  add(r, term + 1, LKVNET_OP_SET, "c", 1, "", 0);
  add(r, term + 1, LKVNET_OP_SET, "k\0\xff", 3, "v\n", 2);
  add(r, term + 1, LKVNET_OP_CONF, NULL, 0, "voters=a,b", 10);
}

/* Close r, copy its file into the rlog corpus and its body into the
 * frames corpus. Returns the file (caller frees). */
static unsigned char *finish(lkvnet_rlog *r, const char *dir, const char *name,
                             size_t *n) {
  lkv_err err;
  if (lkvnet_rlog_close(r, &err) != LKV_OK) die("close", &err);
  unsigned char *b = get_file(dir, n);
  put_file(rlog_out, name, b, *n);
  if (*n > LKVNET_RLOG_HEADER_SIZE)
    put_file(frames_out, name, b + LKVNET_RLOG_HEADER_SIZE,
             *n - LKVNET_RLOG_HEADER_SIZE);
  return b;
}

int main(int argc, char **argv) {
  char dir[4096];
  lkv_err err;
  lkvnet_rlog *r;
  size_t n;
  unsigned char *b, *slice;
  size_t slen;
  uint64_t to;
  if (argc != 4) {
    fprintf(stderr, "usage: rlog_seed WORK RLOG_CORPUS FRAMES_CORPUS\n");
    return 2;
  }
  work = argv[1];
  rlog_out = argv[2];
  frames_out = argv[3];
  if (mkdir(work, 0755) != 0 && errno != EEXIST) die(work, NULL);

  /* a new, empty log: the header alone */
  r = open_log("empty", dir, sizeof dir);
  free(finish(r, dir, "empty", &n));

  /* a short history, and one slice of it as /append would send it */
  r = open_log("basic", dir, sizeof dir);
  history(r, 1);
  if (lkvnet_rlog_read(r, 3, 64, &slice, &slen, &to, &err) != LKV_OK)
    die("read", &err);
  put_file(frames_out, "slice", slice, slen);
  free(slice);
  b = finish(r, dir, "basic", &n);

  /* the same with a torn last frame: open cuts it */
  put_file(rlog_out, "torn", b, n - 5);
  /* and with a flipped byte in its third frame's length: valid frames
   * follow, so open refuses it */
  b[LKVNET_RLOG_HEADER_SIZE +
    2 * (LKVNET_RLOG_FRAME_SIZE + LKVNET_RLOG_FIXED_PAYLOAD) + 1 + 2 + 3] ^=
      0x20;
  put_file(rlog_out, "middle", b, n);
  free(b);

  /* compacted: base index 3, then more entries */
  r = open_log("compacted", dir, sizeof dir);
  history(r, 1);
  if (lkvnet_rlog_rewrite(r, 3, 1, &err) != LKV_OK) die("rewrite", &err);
  history(r, 3);
  free(finish(r, dir, "compacted", &n));

  /* after a snapshot past the end: a header with a base and no frames */
  r = open_log("snapshot", dir, sizeof dir);
  history(r, 1);
  if (lkvnet_rlog_rewrite(r, 20, 4, &err) != LKV_OK) die("rewrite", &err);
  free(finish(r, dir, "snapshot", &n));
  return 0;
}
