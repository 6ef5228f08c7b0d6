/* memberconf_test.c - node URLs and the kept configuration with them
 * (memberconf.c): URLs normalised or refused with a reason, the kept
 * configuration's round trip, version 1 read with URLs unknown, and
 * every truncation, every byte flip and every inconsistency refused or
 * decoded as something consistent (never a URL beside another node's
 * id). */
#include "memberconf.h"

#include <string.h>

#include "node.h"
#include "test.h"

static int norm(const char *u, char *out) {
  char why[120];
  return lkvnet_url_normalize(u, strlen(u), out, why, sizeof why);
}

static void test_urls(void) {
  static const char *const bad[] = {
      "",
      "http://",
      "http:/127.0.0.1:1",
      "ftp://127.0.0.1:80",
      "127.0.0.1:8000",
      "http://127.0.0.1:",
      "http://127.0.0.1:0",
      "http://127.0.0.1:08000",
      "http://127.0.0.1:65536",
      "http://127.0.0.1:80x",
      "http://127.0.0.1:8000/path",
      "http://127.0.0.1/path",
      "http://example/a/",
      "http://127.0.0.1:8000?q=1",
      "http://user@127.0.0.1:8000",
      "http://:8000",
      "http://a b:8000",
      "http://[::1",
      "http://[]:80",
      "http://[::1]x:80",
      "http://127.0.0.1:8000\"",
      "not a url",
  };
  char out[LKVNET_URL_MAX + 1], why[120], longu[300];
  size_t i;
  for (i = 0; i < sizeof bad / sizeof *bad; i++) {
    why[0] = '\0';
    if (lkvnet_url_normalize(bad[i], strlen(bad[i]), out, why, sizeof why) !=
        -1) {
      fprintf(stderr, "accepted: %s\n", bad[i]);
      CHECK(0);
    }
    CHECK(why[0] != '\0');
  }
  CHECK(norm("http://127.0.0.1:8000", out) == 0 &&
        strcmp(out, "http://127.0.0.1:8000") == 0);
  CHECK(norm("HTTP://LocalHost:8000//", out) == 0 &&
        strcmp(out, "http://localhost:8000") == 0);
  CHECK(lkvnet_node_id_of(out) == lkvnet_node_id_of("http://LOCALHOST:8000/"));
  CHECK(norm("http://[::1]:9", out) == 0 && strcmp(out, "http://[::1]:9") == 0);
  CHECK(norm("http://node-1.example_x", out) == 0 &&
        strcmp(out, "http://node-1.example_x") == 0);
  /* the length bound */
  memset(longu, 'a', sizeof longu);
  memcpy(longu, "http://", 7);
  CHECK(lkvnet_url_normalize(longu, LKVNET_URL_MAX, out, why, sizeof why) == 0);
  CHECK(lkvnet_url_normalize(longu, LKVNET_URL_MAX + 1, out, why, sizeof why) ==
        -1);
}

static void fill(lkvnet_keptconf *k) {
  static const char *const urls[] = {"http://127.0.0.1:7001",
                                     "http://127.0.0.1:7002",
                                     "http://[::1]:7003", "http://h4:7004"};
  size_t i;
  memset(k, 0, sizeof *k);
  for (i = 0; i < 4; i++) {
    uint64_t id = lkvnet_node_id_of(urls[i]);
    if (i < 3)
      k->conf.voters[k->conf.n_voters++] = id;
    else
      k->conf.learners[k->conf.n_learners++] = id;
    strcpy(k->urls[i], urls[i]);
  }
  k->urls[1][0] = '\0'; /* a member whose URL is unknown */
}

/* a decode that succeeds must give a configuration whose URLs are each
 * their member's */
static int consistent(const lkvnet_keptconf *k) {
  size_t i, m = k->conf.n_voters + k->conf.n_learners;
  for (i = 0; i < m; i++) {
    uint64_t id = i < k->conf.n_voters ? k->conf.voters[i]
                                       : k->conf.learners[i - k->conf.n_voters];
    if (id == 0) return 0;
    if (k->urls[i][0] != '\0' && lkvnet_node_id_of(k->urls[i]) != id) return 0;
  }
  return 1;
}

static void test_keptconf(void) {
  lkvnet_keptconf k, d;
  unsigned char b[LKVNET_KEPTCONF_MAX], c[LKVNET_KEPTCONF_MAX];
  size_t n, i, j;
  lkv_err err;
  fill(&k);
  n = lkvnet_keptconf_encode(&k, b);
  CHECK(b[0] == LKVNET_KEPTCONF_VERSION && b[1] == 3 && b[2] == 1);
  CHECK(n == 3 + 4 * 8 + 4 + strlen(k.urls[0]) + strlen(k.urls[2]) +
                 strlen(k.urls[3]));
  CHECK_OK(lkvnet_keptconf_decode(b, n, &d, &err), &err);
  CHECK(memcmp(&d.conf, &k.conf, sizeof k.conf) == 0);
  for (i = 0; i < 4; i++) CHECK(strcmp(d.urls[i], k.urls[i]) == 0);

  /* version 1: ids only, URLs unknown */
  c[0] = 2;
  c[1] = 1;
  for (i = 0; i < 3; i++)
    for (j = 0; j < 8; j++)
      c[2 + 8 * i + j] =
          (unsigned char)(k.conf.voters[i < 2 ? i : 0] >> (8 * j));
  for (j = 0; j < 8; j++)
    c[2 + 8 * 2 + j] = (unsigned char)(k.conf.learners[0] >> (8 * j));
  CHECK_OK(lkvnet_keptconf_decode(c, 2 + 3 * 8, &d, &err), &err);
  CHECK(d.conf.n_voters == 2 && d.conf.n_learners == 1 && d.urls[0][0] == 0 &&
        d.conf.learners[0] == k.conf.learners[0]);

  /* every truncation and every extension is refused */
  for (i = 0; i < n; i++)
    CHECK(lkvnet_keptconf_decode(b, i, &d, &err) == LKV_CORRUPTION);
  b[n] = 0;
  CHECK(lkvnet_keptconf_decode(b, n + 1, &d, &err) == LKV_CORRUPTION);

  /* every flipped bit is refused, or decodes to something consistent */
  for (i = 0; i < n; i++)
    for (j = 0; j < 8; j++) {
      int rc;
      memcpy(c, b, n);
      c[i] ^= (unsigned char)(1u << j);
      rc = lkvnet_keptconf_decode(c, n, &d, &err);
      CHECK(rc == LKV_CORRUPTION || (rc == LKV_OK && consistent(&d)));
    }

  /* a URL beside another member's id */
  fill(&k);
  strcpy(k.urls[0], k.urls[2]);
  n = lkvnet_keptconf_encode(&k, b);
  CHECK(lkvnet_keptconf_decode(b, n, &d, &err) == LKV_CORRUPTION);
  CHECK(strstr(err.msg, "member 1") != NULL);
  /* a repeated id, a zero id, too many members */
  fill(&k);
  k.conf.voters[1] = k.conf.voters[0];
  n = lkvnet_keptconf_encode(&k, b);
  CHECK(lkvnet_keptconf_decode(b, n, &d, &err) == LKV_CORRUPTION);
  fill(&k);
  k.conf.voters[1] = 0;
  n = lkvnet_keptconf_encode(&k, b);
  CHECK(lkvnet_keptconf_decode(b, n, &d, &err) == LKV_CORRUPTION);
  fill(&k);
  n = lkvnet_keptconf_encode(&k, b);
  b[1] = LKVNET_RAFT_MAX_MEMBERS;
  CHECK(lkvnet_keptconf_decode(b, n, &d, &err) == LKV_CORRUPTION);
  /* a URL that is not normalised (upper case) or not a URL */
  fill(&k);
  n = lkvnet_keptconf_encode(&k, b);
  b[3 + 4 * 8 + 1] = 'H';
  CHECK(lkvnet_keptconf_decode(b, n, &d, &err) == LKV_CORRUPTION);
  /* an empty configuration round-trips */
  memset(&k, 0, sizeof k);
  n = lkvnet_keptconf_encode(&k, b);
  CHECK(n == 3);
  CHECK_OK(lkvnet_keptconf_decode(b, n, &d, &err), &err);
  CHECK(d.conf.n_voters == 0 && d.conf.n_learners == 0);
}

int main(void) {
  test_urls();
  test_keptconf();
  TEST_MAIN_END();
}
