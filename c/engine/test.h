/* test.h - a tiny check harness for the C unit tests (<unit>_test.c).
 * CHECK prints file:line and the expression and fails the test program. */
#ifndef LKV_TEST_H
#define LKV_TEST_H

#include <stdio.h>
#include <stdlib.h>

static int lkv_test_failures;

#include "lunakv.h"
static inline const char *lkv_test_msg(const lkv_err *e) {
  return e ? e->msg : "";
}

#define CHECK(e)                                                            \
  do {                                                                      \
    if (!(e)) {                                                             \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #e); \
      lkv_test_failures++;                                                  \
    }                                                                       \
  } while (0)

/* CHECK_OK(call) for functions returning an lkv code with an lkv_err. */
#define CHECK_OK(call, errp)                                               \
  do {                                                                     \
    int rc_ = (call);                                                      \
    if (rc_ != 0) {                                                        \
      fprintf(stderr, "%s:%d: %s -> %d (%s)\n", __FILE__, __LINE__, #call, \
              rc_, lkv_test_msg(errp));                                    \
      lkv_test_failures++;                                                 \
    }                                                                      \
  } while (0)

/* Remove a scratch directory and everything in it; a failure is only
 * reported (the test's verdict does not depend on its cleanup). */
static inline void rmrf(const char *d) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
  if (system(cmd) != 0) fprintf(stderr, "cleanup of %s failed\n", d);
}

/* Make the directory from the template d (mkdtemp) and open a db in it;
 * NULL, with the failure counted, when either fails. */
static inline lkv_db *open_fresh(char *d, const lkv_options *o) {
  if (mkdtemp(d) == NULL) {
    perror("mkdtemp");
    CHECK(0);
    return NULL;
  }
  lkv_db *db = NULL;
  lkv_err err = {0};
  CHECK_OK(lkv_db_open(d, o, &db, &err), &err);
  return db;
}

#define TEST_MAIN_END()                                           \
  do {                                                            \
    if (lkv_test_failures) {                                      \
      fprintf(stderr, "%d check(s) failed\n", lkv_test_failures); \
      return 1;                                                   \
    }                                                             \
    printf("ok\n");                                               \
    return 0;                                                     \
  } while (0)

#endif
