/* hardstate_test.c - the term file (rlog_term.c, hardstate.h): the
 * hard state's round trip, its versions, and its corruption checks. */
#include "hardstate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rlog.h"
#include "test.h"

static void test_hardstate(void) {
  char dir[] = "/tmp/lkv_hs_test_XXXXXX", path[600];
  uint64_t t = 9, v = 9;
  lkv_err err = {0};
  FILE *f;
  long sz, i;
  if (mkdtemp(dir) == NULL) return;
  snprintf(path, sizeof path, "%s/term", dir);
  CHECK_OK(lkvnet_hardstate_load(dir, NULL, &t, &v, &err), &err);
  CHECK(t == 0 && v == 0);
  CHECK_OK(lkvnet_hardstate_store(dir, NULL, 5, 0xabcdef, &err), &err);
  CHECK_OK(lkvnet_hardstate_load(dir, NULL, &t, &v, &err), &err);
  CHECK(t == 5 && v == 0xabcdef);
  /* every byte of version 2 is checked */
  f = fopen(path, "r+b");
  fseek(f, 0, SEEK_END);
  sz = ftell(f);
  CHECK(sz == 28);
  for (i = 0; i < sz; i++) {
    int c;
    fseek(f, i, SEEK_SET);
    c = fgetc(f);
    fseek(f, i, SEEK_SET);
    fputc(c ^ 1, f);
    fflush(f);
    CHECK(lkvnet_hardstate_load(dir, NULL, &t, &v, &err) == LKV_CORRUPTION);
    fseek(f, i, SEEK_SET);
    fputc(c, f);
    fflush(f);
  }
  fclose(f);
  /* version 1 (a term alone) reads as no vote */
  CHECK_OK(lkvnet_term_store(dir, NULL, 7, &err), &err);
  CHECK_OK(lkvnet_hardstate_load(dir, NULL, &t, &v, &err), &err);
  CHECK(t == 7 && v == 0);
  unlink(path);
  rmdir(dir);
}

int main(void) {
  test_hardstate();
  TEST_MAIN_END();
}
