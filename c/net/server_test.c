/* server_test.c - lkvnet_server_open's option checks (lkvnet.h): every
 * numeric option outside its range is refused with LKV_INVALID naming the
 * option, before anything is created; the ends of every range open. The
 * routes are tested over HTTP by spec/20, 23 and 24. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lkvnet.h"
#include "test.h"

typedef struct Case {
  const char *name; /* as the message names it */
  size_t off;       /* the field in lkvnet_options */
  size_t size;      /* sizeof the field: an int or a size_t */
  long long lo, hi;
} Case;

/* A case for the field f of lkvnet_options, named as f. */
#define CASE(f, lo, hi) \
  { #f, offsetof(lkvnet_options, f), sizeof((lkvnet_options *)0)->f, lo, hi }

static const Case cases[] = {
    CASE(max_body_bytes, LKVNET_MIN_MAX_BODY, LKVNET_MAX_MAX_BODY),
    CASE(write_timeout_ms, LKVNET_MIN_WRITE_TIMEOUT_MS,
         LKVNET_MAX_WRITE_TIMEOUT_MS),
    CASE(heartbeat_ms, LKVNET_MIN_HEARTBEAT_MS, LKVNET_MAX_HEARTBEAT_MS),
    CASE(max_uncommitted_bytes, LKVNET_MIN_MAX_UNCOMMITTED,
         (long long)LKVNET_MAX_MAX_UNCOMMITTED),
    CASE(read_timeout_ms, LKVNET_MIN_READ_TIMEOUT_MS,
         LKVNET_MAX_READ_TIMEOUT_MS),
    CASE(idle_timeout_ms, LKVNET_MIN_IDLE_TIMEOUT_MS,
         LKVNET_MAX_IDLE_TIMEOUT_MS),
    CASE(max_connections, LKVNET_MIN_MAX_CONNECTIONS,
         LKVNET_MAX_MAX_CONNECTIONS),
    CASE(port, 0, 65535),
};

/* The case's field of o = v, cast to the field's type as a caller's
 * assignment would. */
static void set(lkvnet_options *o, const Case *c, long long v) {
  char *p = (char *)o + c->off;
  if (c->size == sizeof(size_t))
    *(size_t *)(void *)p = (size_t)v;
  else
    *(int *)(void *)p = (int)v;
}

static void quiet(void *ctx, const char *line) {
  (void)ctx;
  (void)line;
}

/* Open with o; LKV_OK closes the server again. */
static int try_open(const lkvnet_options *o, lkv_err *err) {
  lkvnet_server *s = (lkvnet_server *)(uintptr_t)1; /* must become NULL */
  int rc;
  err->code = LKV_OK;
  err->msg[0] = '\0';
  rc = lkvnet_server_open(o, &s, err);
  if (rc == LKV_OK) {
    lkv_err e2;
    CHECK(s != NULL);
    CHECK_OK(lkvnet_server_close(s, &e2), &e2);
  } else {
    CHECK(s == NULL);
  }
  return rc;
}

static void options_for(lkvnet_options *o, const char *dir) {
  lkvnet_options_init(o);
  o->data_dir = dir;
  o->port = 0;
  o->log = quiet;
}

int main(void) {
  char dir[] = "/tmp/lkv_server_test_XXXXXX", missing[600];
  lkvnet_options o;
  lkv_err err;
  size_t i;
  struct stat st;
  if (mkdtemp(dir) == NULL) {
    perror("mkdtemp");
    return 1;
  }
  /* refused values never create the data directory */
  snprintf(missing, sizeof missing, "%s/never", dir);
  for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const long long bad[] = {cases[i].lo - 1, cases[i].hi + 1, -1,
                             cases[i].lo - 1000};
    size_t j;
    for (j = 0; j < sizeof bad / sizeof bad[0]; j++) {
      if (bad[j] >= cases[i].lo && bad[j] <= cases[i].hi) continue;
      if (cases[i].size == sizeof(size_t) && bad[j] < 0)
        continue; /* a size_t cannot say it */
      options_for(&o, missing);
      set(&o, &cases[i], bad[j]);
      CHECK(try_open(&o, &err) == LKV_INVALID);
      if (strstr(err.msg, cases[i].name) == NULL ||
          strstr(err.msg, "must be from") == NULL)
        fprintf(stderr, "%s = %lld: \"%s\"\n", cases[i].name, bad[j], err.msg);
      CHECK(strstr(err.msg, cases[i].name) != NULL);
      CHECK(strstr(err.msg, "must be from") != NULL);
      CHECK(stat(missing, &st) != 0);
    }
  }
  options_for(&o, NULL);
  CHECK(try_open(&o, &err) == LKV_INVALID);
  CHECK(strstr(err.msg, "data_dir") != NULL);
  options_for(&o, missing);
  o.host = NULL;
  CHECK(try_open(&o, &err) == LKV_INVALID);
  CHECK(strstr(err.msg, "host") != NULL);

  /* the ends of every range are accepted (port 0 stands for both: a
   * fixed port could be taken) */
  for (i = 0; i < 2; i++) {
    size_t j;
    options_for(&o, dir);
    for (j = 0; j < sizeof cases / sizeof cases[0]; j++)
      if (cases[j].off != offsetof(lkvnet_options, port))
        set(&o, &cases[j], i == 0 ? cases[j].lo : cases[j].hi);
    CHECK_OK(try_open(&o, &err), &err);
  }
  rmrf(dir);
  TEST_MAIN_END();
}
