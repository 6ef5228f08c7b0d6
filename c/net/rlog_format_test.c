/* rlog_format_test.c - the replication log's version 2 format
 * (rlog.c, rlog_frame.c): damage in the middle of a log refused while a
 * torn tail is cut, the chain of prev_term between frames refusing a mix
 * of two logs, version 1 logs read and upgraded, configuration entries,
 * and a header whose base index leaves no room for an entry. The numbers
 * continue rlog_test.c's. Each test runs in its own directory under /tmp. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rlog.h"
#include "rlog_test_util.h"
#include "test.h"

/* Entries 1..n of dir's new log, each frame the same size (keys and
 * values of fixed width); entries after `cut` in term 2, else term 1.
 * Returns the file's bytes (*len) once closed, and each frame's offset in
 * offs[1..n] (offs[n + 1]: the end). */
static unsigned char *same_size_log(const char *dir, uint64_t n, uint64_t cut,
                                    char tag, uint64_t *offs, size_t *len) {
  char path[512], k[16], v[16];
  lkvnet_rlog *r = open_new_log(dir, path, sizeof path);
  lkvnet_rlog_stats st;
  uint64_t i;
  if (r == NULL) return NULL;
  for (i = 1; i <= n; i++) {
    lkvnet_rlog_stats_get(r, &st);
    offs[i] = st.size; /* the file is longer: zeros written ahead */
    snprintf(k, sizeof k, "key%04llu", (unsigned long long)i);
    snprintf(v, sizeof v, "%c-value%04llu", tag, (unsigned long long)i);
    CHECK(app(r, i > cut ? 2 : 1, LKVNET_OP_SET, k, 7, v, 11) == i);
  }
  close_log(r); /* cuts the zeros ahead */
  offs[n + 1] = (uint64_t)file_size(path);
  return slurp(path, len);
}

/* 16. only a torn tail is cut: a bad frame with a valid one anywhere
 * after it (a flipped byte, a damaged length) refuses the open with
 * LKV_CORRUPTION naming the file and offset, and leaves the file
 * untouched; the same damage in the last frame is cut. A hole of zeros
 * is a write lost before its sync (rlog.c, lost_write): what follows it
 * was never acknowledged, and is cut */
static void test_mid_log_damage(void) {
  char dir[] = "/tmp/lkv_rlog_test_XXXXXX", path[512], at[64];
  uint64_t offs[12];
  unsigned char *log, *bad;
  size_t len, i;
  lkvnet_rlog *r;
  lkvnet_rlog_stats st;
  Recs rs = {0};
  if (make_dir(dir) != 0) return;
  log_path(path, sizeof path, dir, LKVNET_RLOG_FILE);
  log = same_size_log(dir, 10, 10, 'a', offs, &len);
  bad = malloc(len);
  if (log == NULL || bad == NULL) goto out;
  /* a flipped byte in entry 4's value; its length, read as huge */
  for (i = 0; i < 2; i++) {
    memcpy(bad, log, len);
    if (i == 0) bad[offs[5] - 2] ^= 0x20;
    if (i == 1) bad[offs[4] + 2] ^= 0x20;
    put_log(dir, bad, len);
    snprintf(at, sizeof at, "offset %llu:", (unsigned long long)offs[4]);
    open_refused(dir, bad, len, at);
    CHECK(strstr(at, "offset") != NULL);
  }
  /* entry 4 zeroed whole (a write never written back): cut there */
  memcpy(bad, log, len);
  memset(bad + offs[4], 0, (size_t)(offs[5] - offs[4]));
  put_log(dir, bad, len);
  r = reopen(dir, &rs, 3, &st);
  if (r != NULL) CHECK(st.dropped_bytes == offs[11] - offs[4]);
  close_log(r);
  recs_free(&rs);
  CHECK(file_size(path) == (long long)offs[4]);
  /* the same in the last frame: a torn tail, cut */
  memcpy(bad, log, len);
  bad[len - 2] ^= 0x20;
  put_log(dir, bad, len);
  r = reopen(dir, &rs, 9, &st);
  if (r != NULL) CHECK(st.dropped_bytes == offs[11] - offs[10]);
  close_log(r);
  recs_free(&rs);
  CHECK(file_size(path) == (long long)offs[10]);
  /* a torn last frame, then a stray valid frame of another log after it:
   * not torn either */
  {
    unsigned char *both = malloc(len + 100);
    size_t n = (size_t)offs[10] + 20;
    if (both != NULL) {
      memcpy(both, log, n); /* entry 10 torn after 20 bytes */
      memcpy(both + n, log + offs[3], (size_t)(offs[4] - offs[3]));
      n += (size_t)(offs[4] - offs[3]);
      put_log(dir, both, n);
      snprintf(at, sizeof at, "valid frame follows at offset %llu",
               (unsigned long long)offs[10] + 20);
      open_refused(dir, both, n, at);
      free(both);
    }
  }
out:
  free(log);
  free(bad);
  recs_free(&rs);
  rmrf(dir);
}

/* 17. the chain: a log whose conflict cut was lost (old entries 1..10 of
 * term 1, and after them entries 11.. that a leader of term 2 sent once
 * 6..10 had been cut and replaced) is whole frames in index order with
 * terms going up, which only the chain tells from a real log: the open
 * refuses it. The real logs, old and new, open. */
static void test_chain_mix(void) {
  char old_dir[] = "/tmp/lkv_rlog_test_XXXXXX";
  char new_dir[] = "/tmp/lkv_rlog_test_XXXXXX";
  uint64_t oo[16], no[16];
  unsigned char *old_log = NULL, *new_log = NULL, *mix = NULL;
  size_t ol, nl, ml;
  Recs rs = {0};
  lkvnet_rlog *r;
  if (make_dir(old_dir) != 0) return;
  if (make_dir(new_dir) != 0) {
    rmrf(old_dir);
    return;
  }
  old_log = same_size_log(old_dir, 10, 10, 'o', oo, &ol);
  new_log = same_size_log(new_dir, 14, 5, 'n', no, &nl);
  if (old_log == NULL || new_log == NULL) goto out;
  CHECK(oo[11] == no[11]); /* the same sizes: frames line up */
  ml = (size_t)oo[11] + (size_t)(no[15] - no[11]);
  if ((mix = malloc(ml)) == NULL) goto out;
  memcpy(mix, old_log, (size_t)oo[11]);
  memcpy(mix + oo[11], new_log + no[11], (size_t)(no[15] - no[11]));
  put_log(old_dir, mix, ml);
  open_refused(old_dir, mix, ml, "entries of two different logs");
  /* the new log as it is opens whole */
  r = open_log(new_dir, &rs);
  CHECK(rs.n == 14 && rs.v != NULL && rs.v[13].term == 2);
  close_log(r);
out:
  free(old_log);
  free(new_log);
  free(mix);
  recs_free(&rs);
  rmrf(old_dir);
  rmrf(new_dir);
}

/* 18. a version 1 log (no chain) still opens: its entries replayed, a
 * torn tail cut, then rewritten as version 2 (a reopen reads the same);
 * damage in its middle is refused as in version 2, and so is an op that
 * version 1 never had */
static void test_v1_log(void) {
  char dir[] = "/tmp/lkv_rlog_test_XXXXXX", path[512];
  unsigned char buf[4096], *now;
  lkvnet_entry want[5];
  size_t n, i, m, mid = 0;
  long long v2size = LKVNET_RLOG_HEADER_SIZE;
  lkvnet_rlog *r;
  lkvnet_rlog_stats st;
  Recs rs = {0};
  if (make_dir(dir) != 0) return;
  log_path(path, sizeof path, dir, LKVNET_RLOG_FILE);
  want[0] = mk(3, 8, LKVNET_OP_SET, "a", 1, "one", 3);
  want[1] = mk(3, 9, LKVNET_OP_DELETE, "b", 1, NULL, 0);
  want[2] = mk(4, 10, LKVNET_OP_NOOP, NULL, 0, NULL, 0);
  want[3] = mk(4, 11, LKVNET_OP_SET, "k\0", 2, "", 0);
  want[4] = mk(5, 12, LKVNET_OP_SET, "torn", 4, "never synced", 12);
  v1_header(buf, 7, 2);
  n = LKVNET_RLOG_HEADER_SIZE;
  for (i = 0; i < 5; i++) {
    if (i == 2) mid = n;
    n += v1_frame(buf + n, &want[i]);
    if (i < 4) v2size += (long long)lkvnet_rlog_frame_size(&want[i]);
  }
  n -= 3; /* the last frame torn */
  put_log(dir, buf, n);
  r = reopen(dir, &rs, 4, &st);
  for (i = 0; i < rs.n && i < 4; i++) CHECK(same_entry(&rs.v[i], &want[i]));
  if (r != NULL) {
    CHECK(st.base_index == 7 && st.base_term == 2 && st.last_index == 11);
    CHECK(st.dropped_bytes > 0 && st.dropped_why[0] != '\0');
    CHECK(app(r, 6, LKVNET_OP_SET, "x", 1, "y", 1) == 12);
  }
  close_log(r);
  recs_free(&rs);
  {
    lkvnet_entry x = mk(6, 12, LKVNET_OP_SET, "x", 1, "y", 1);
    v2size += (long long)lkvnet_rlog_frame_size(&x);
  }
  CHECK(file_size(path) == v2size);
  now = slurp(path, &m);
  CHECK(now != NULL && m > 48 && now[8] == 2); /* version 2 now */
  /* the first frame chains to the base term */
  if (now != NULL && m > 48) {
    if (now[40 + 8 + 25] != 2)
      fprintf(stderr, "first frame's prev_term byte: %u\n", now[40 + 8 + 25]);
    CHECK(now[40 + 8 + 25] == 2 && now[40 + 8 + 26] == 0);
  }
  free(now);
  r = reopen(dir, &rs, 5, &st);
  for (i = 0; i < rs.n && i < 4; i++) CHECK(same_entry(&rs.v[i], &want[i]));
  if (r != NULL) CHECK(st.dropped_bytes == 0 && st.last_term == 6);
  close_log(r);
  recs_free(&rs);
  /* damage in the middle of a version 1 log */
  buf[mid + 10] ^= 0x20;
  put_log(dir, buf, n);
  open_refused(dir, buf, n, "valid frame follows");
  buf[mid + 10] ^= 0x20;
  /* a configuration change in a version 1 log */
  {
    lkvnet_entry c = mk(4, 10, LKVNET_OP_CONF, NULL, 0, "cfg", 3);
    m = mid + v1_frame(buf + mid, &c);
    put_log(dir, buf, m);
    open_refused(dir, buf, m, "malformed record");
  }
  rmrf(dir);
}

/* 19. a configuration change (LKVNET_OP_CONF): its value is an opaque
 * payload, it has no key (one given is not written); append, append_entry,
 * read, decode and the replay at open all carry it */
static void test_conf_entries(void) {
  char dir[] = "/tmp/lkv_rlog_test_XXXXXX", path[512], why[160];
  static const char payload[] = "voters=a,b\0learners=c";
  lkvnet_rlog *r;
  lkv_err err = {0};
  Recs rs = {0};
  unsigned char *buf = NULL;
  size_t len = 0, off = 0;
  uint64_t to = 0;
  lkvnet_entry e, c;
  if (make_dir(dir) != 0) return;
  r = open_new_log(dir, path, sizeof path);
  if (r == NULL) goto out;
  CHECK(app(r, 1, LKVNET_OP_CONF, "ignored", 7, payload, sizeof payload) == 1);
  c = mk(2, 2, LKVNET_OP_CONF, NULL, 0, "", 0); /* empty payload */
  CHECK_OK(lkvnet_rlog_append_entry(r, &c, &err), &err);
  c = mk(2, 3, 9, "k", 1, "v", 1);
  CHECK(lkvnet_rlog_append_entry(r, &c, &err) == LKV_INVALID);
  CHECK(lkvnet_rlog_last_index(r) == 2);
  CHECK_OK(lkvnet_rlog_read(r, 1, SIZE_MAX, &buf, &len, &to, &err), &err);
  CHECK(to == 2);
  CHECK(lkvnet_rlog_decode(buf, len, &off, &e, why, sizeof why) == 1);
  CHECK(e.op == LKVNET_OP_CONF && e.klen == 0 && e.vlen == sizeof payload &&
        memcmp(e.val, payload, sizeof payload) == 0 && e.prev_term == 0);
  CHECK(lkvnet_rlog_decode(buf, len, &off, &e, why, sizeof why) == 1);
  CHECK(e.op == LKVNET_OP_CONF && e.klen == 0 && e.vlen == 0 &&
        e.prev_term == 1);
  CHECK(lkvnet_rlog_decode(buf, len, &off, &e, why, sizeof why) == 0);
  free(buf);
  buf = NULL;
  close_log(r);
  r = open_log(dir, &rs);
  CHECK(rs.n == 2 && rs.v != NULL && rs.v[0].op == LKVNET_OP_CONF &&
        rs.v[0].klen == 0 && rs.v[0].vlen == sizeof payload &&
        rs.v[1].op == LKVNET_OP_CONF);
  close_log(r);
  /* a configuration change with a key is malformed */
  {
    unsigned char fr[128];
    c = mk(1, 1, LKVNET_OP_SET, "k", 1, "v", 1);
    lkvnet_rlog_encode(fr, &c);
    fr[8 + 16] = LKVNET_OP_CONF; /* klen 1 stays */
    {
      uint32_t crc = ref_crc(ref_crc(0, fr, 4), fr + 8, le32(fr));
      size_t i;
      for (i = 0; i < 4; i++) fr[4 + i] = (unsigned char)(crc >> (8 * i));
    }
    off = 0;
    CHECK(lkvnet_rlog_decode(fr, lkvnet_rlog_frame_size(&c), &off, &e, why,
                             sizeof why) == -1);
    CHECK(strstr(why, "malformed") != NULL);
  }
out:
  free(buf);
  recs_free(&rs);
  rmrf(dir);
}

/* 23. a header whose base index is 2^64-1: no entry could follow it, and
 * the next index would wrap to 0 (found by fuzz_rlog). Refused, the file
 * untouched. */
static void test_base_at_the_end(void) {
  char dir[] = "/tmp/lkv_rlog_test_XXXXXX";
  unsigned char h[LKVNET_RLOG_HEADER_SIZE];
  if (make_dir(dir) != 0) return;
  v1_header(h, UINT64_MAX, 7);
  put_log(dir, h, sizeof h);
  open_refused(dir, h, sizeof h, "impossible base index");
  rmrf(dir);
}

int main(void) {
  test_mid_log_damage();
  test_chain_mix();
  test_v1_log();
  test_conf_entries();
  test_base_at_the_end();
  TEST_MAIN_END();
}
