/* hparse_test.c - the HTTP/1.1 request parser (hparse.c): request lines,
 * field lines and the framing fields as tables of cases, every refusal
 * with its status, heads and chunked bodies cut at every byte, and the
 * chunked decoder in place. Every parse reads an exactly sized heap copy,
 * so a sanitizer build sees any read past the end. */
#include "hparse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

#define MAX_HEAD 8192

/* {======================================================================
** Helpers
** ======================================================================= */

/* A heap copy of s[0 .. n) with nothing after it (a NULL-safe 1 byte for
 * n == 0), so an over-read is a sanitizer error. */
static char *dup_exact(const char *s, size_t n) {
  char *b = malloc(n ? n : 1);
  if (b == NULL) abort();
  if (n) memcpy(b, s, n);
  return b;
}

/* Parse s[0 .. n) from a copy, checking it was not written to. The fields
 * of h point into the copy, which is kept until the next call. */
static int parse_n(const char *s, size_t n, size_t max_head, lkvnet_hhead *h,
                   const char **why) {
  static char *last;
  int rc;
  free(last);
  last = dup_exact(s, n);
  *why = NULL;
  rc = lkvnet_hparse_head(last, n, max_head, h, why);
  CHECK(memcmp(last, s, n) == 0);
  if (rc != 0 && rc != 1 && (*why == NULL || **why == '\0')) {
    fprintf(stderr, "status %d without a reason: %s\n", rc, s);
    CHECK(0);
  }
  return rc;
}

static int parse(const char *s, lkvnet_hhead *h) {
  const char *why;
  return parse_n(s, strlen(s), MAX_HEAD, h, &why);
}

static int str_is(const char *p, size_t n, const char *want) {
  return p != NULL && n == strlen(want) && memcmp(p, want, n) == 0;
}

/* Two parses of the same head agree, fields relative to their buffers. */
static int same_head(const lkvnet_hhead *a, const char *ab,
                     const lkvnet_hhead *b, const char *bb) {
  size_t i;
  if (a->method != b->method || a->method_len != b->method_len ||
      a->method_str - ab != b->method_str - bb ||
      a->target_len != b->target_len || a->target - ab != b->target - bb ||
      a->minor != b->minor || a->keep_alive != b->keep_alive ||
      a->expect_continue != b->expect_continue || a->chunked != b->chunked ||
      a->has_length != b->has_length ||
      a->content_length != b->content_length || a->nfields != b->nfields ||
      a->head_len != b->head_len)
    return 0;
  for (i = 0; i < a->nfields; i++) {
    const lkvnet_hfield *x = &a->fields[i], *y = &b->fields[i];
    if (x->name - ab != y->name - bb || x->name_len != y->name_len ||
        x->value - ab != y->value - bb || x->value_len != y->value_len)
      return 0;
  }
  return 1;
}

/* }====================================================================== */

/* {======================================================================
** Request heads
** ======================================================================= */

static void test_get(void) {
  static const char req[] =
      "GET /kv/a?x=1 HTTP/1.1\r\nHost: node1:8080\r\n"
      "User-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n";
  lkvnet_hhead h;
  const char *v;
  size_t n;
  CHECK(parse(req, &h) == 1);
  CHECK(h.method == LKVNET_HTTP_GET);
  CHECK(str_is(h.method_str, h.method_len, "GET"));
  CHECK(str_is(h.target, h.target_len, "/kv/a?x=1"));
  CHECK(h.minor == 1 && h.keep_alive == 1 && h.expect_continue == 0);
  CHECK(h.chunked == 0 && h.has_length == 0 && h.content_length == 0);
  CHECK(h.head_len == sizeof req - 1);
  CHECK(h.nfields == 3);
  CHECK(str_is(h.fields[0].name, h.fields[0].name_len, "Host"));
  CHECK(str_is(h.fields[0].value, h.fields[0].value_len, "node1:8080"));
  CHECK(str_is(h.fields[1].name, h.fields[1].name_len, "User-Agent"));
  CHECK(str_is(h.fields[2].value, h.fields[2].value_len, "*/*"));
  v = lkvnet_hhead_find(&h, "host", &n);
  CHECK(str_is(v, n, "node1:8080"));
  v = lkvnet_hhead_find(&h, "ACCEPT", &n);
  CHECK(str_is(v, n, "*/*"));
  CHECK(lkvnet_hhead_find(&h, "Accep", &n) == NULL);
  CHECK(lkvnet_hhead_find(&h, "Content-Length", &n) == NULL);
}

static void test_post(void) {
  static const char req[] =
      "POST /kv/a HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
      "Content-Length: 5\r\n\r\nhello";
  lkvnet_hhead h;
  CHECK(parse(req, &h) == 1);
  CHECK(h.method == LKVNET_HTTP_POST && h.has_length == 1);
  CHECK(h.content_length == 5 && h.chunked == 0);
  CHECK(h.head_len == sizeof req - 1 - 5);
  CHECK(parse("PUT /kv/a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", &h) ==
        1);
  CHECK(h.method == LKVNET_HTTP_PUT && h.chunked == 1 && h.has_length == 0);
  /* the first of two fields of a name */
  {
    const char *v;
    size_t n;
    CHECK(parse("GET / HTTP/1.1\r\nX-A: 1\r\nx-a: 2\r\n\r\n", &h) == 1);
    v = lkvnet_hhead_find(&h, "X-a", &n);
    CHECK(str_is(v, n, "1"));
  }
}

static void test_methods(void) {
  static const struct {
    const char *m;
    int want;
  } cases[] = {
      {"GET", LKVNET_HTTP_GET},        {"HEAD", LKVNET_HTTP_HEAD},
      {"POST", LKVNET_HTTP_POST},      {"PUT", LKVNET_HTTP_PUT},
      {"DELETE", LKVNET_HTTP_DELETE},  {"OPTIONS", LKVNET_HTTP_OPTIONS},
      {"PATCH", LKVNET_HTTP_PATCH},    {"PROPFIND", LKVNET_HTTP_OTHER},
      {"get", LKVNET_HTTP_OTHER},      {"GETX", LKVNET_HTTP_OTHER},
      {"PUTS", LKVNET_HTTP_OTHER},     {"X", LKVNET_HTTP_OTHER},
      {"M-SEARCH", LKVNET_HTTP_OTHER}, {"CONNECT", LKVNET_HTTP_OTHER},
      {"DELETES", LKVNET_HTTP_OTHER},  {"OPTION", LKVNET_HTTP_OTHER},
  };
  size_t i;
  for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char req[128];
    lkvnet_hhead h;
    snprintf(req, sizeof req, "%s / HTTP/1.1\r\n\r\n", cases[i].m);
    CHECK(parse(req, &h) == 1);
    if (h.method != cases[i].want) fprintf(stderr, "method %s\n", cases[i].m);
    CHECK(h.method == cases[i].want);
    CHECK(str_is(h.method_str, h.method_len, cases[i].m));
  }
}

static void test_targets(void) {
  static const char *const good[] = {
      "/", "/kv/a%20b", "http://h:1/p?q", "*", "/kv/\xc3\xa9", "/a?b=c&d=%2F#f",
  };
  size_t i;
  for (i = 0; i < sizeof good / sizeof good[0]; i++) {
    char req[128];
    lkvnet_hhead h;
    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\n\r\n", good[i]);
    CHECK(parse(req, &h) == 1);
    CHECK(str_is(h.target, h.target_len, good[i]));
  }
}

static void test_versions(void) {
  static const struct {
    const char *v;
    int rc, minor;
  } cases[] = {
      {"HTTP/1.1", 1, 1},    {"HTTP/1.0", 1, 0},    {"HTTP/1.2", 505, 0},
      {"HTTP/2.0", 505, 0},  {"HTTP/0.9", 505, 0},  {"HTTP/9.1", 505, 0},
      {"HTTP/1", 400, 0},    {"HTTP/2", 400, 0},    {"http/1.1", 400, 0},
      {"HTTP/11.1", 400, 0}, {"HTTP/1.10", 400, 0}, {"HTTP/1.1 ", 400, 0},
      {"HTTP/1.x", 400, 0},  {"HTTP/x.1", 400, 0},  {"HTTP 1.1", 400, 0},
      {"HTTP/1,1", 400, 0},  {"", 400, 0},          {"HTTP/1.1\t", 400, 0},
  };
  size_t i;
  for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char req[128];
    lkvnet_hhead h;
    int rc;
    snprintf(req, sizeof req, "GET / %s\r\nHost: h\r\n\r\n", cases[i].v);
    rc = parse(req, &h);
    if (rc != cases[i].rc)
      fprintf(stderr, "version \"%s\": %d, not %d\n", cases[i].v, rc,
              cases[i].rc);
    CHECK(rc == cases[i].rc);
    if (rc == 1) CHECK(h.minor == cases[i].minor);
  }
}

static void test_keep_alive(void) {
  static const struct {
    const char *minor, *fields;
    int keep;
  } cases[] = {
      {"1", "", 1},
      {"1", "Connection: close\r\n", 0},
      {"1", "Connection: CLOSE\r\n", 0},
      {"1", "connection: Close\r\n", 0},
      {"1", "Connection: keep-alive, Upgrade\r\n", 1},
      {"1", "Connection: Upgrade, close\r\n", 0},
      {"1", "Connection: keep-alive, close\r\n", 0},
      {"1", "Connection: ,, close ,\r\n", 0},
      {"1", "Connection: closed\r\n", 1},
      {"1", "Connection: close-ish\r\n", 1},
      {"1", "Connection: Upgrade\r\nConnection: close\r\n", 0},
      {"1", "Connection: \r\n", 1},
      {"0", "", 0},
      {"0", "Connection: keep-alive\r\n", 1},
      {"0", "Connection: Keep-Alive\r\n", 1},
      {"0", "Connection: KEEP-ALIVE\r\n", 1},
      {"0", "Connection: keep-alive, Upgrade\r\n", 1},
      {"0", "Connection: Upgrade,keep-alive\r\n", 1},
      {"0", "Connection: keep-alive\r\nConnection: close\r\n", 0},
      {"0", "Connection: close, keep-alive\r\n", 0},
      {"0", "Connection: keep-alives\r\n", 0},
      {"0", "Keep-Alive: timeout=5\r\n", 0},
  };
  size_t i;
  for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char req[256];
    lkvnet_hhead h;
    snprintf(req, sizeof req, "GET / HTTP/1.%s\r\n%s\r\n", cases[i].minor,
             cases[i].fields);
    CHECK(parse(req, &h) == 1);
    if (h.keep_alive != cases[i].keep)
      fprintf(stderr, "keep-alive of 1.%s %s", cases[i].minor, cases[i].fields);
    CHECK(h.keep_alive == cases[i].keep);
  }
}

static void test_expect(void) {
  static const struct {
    const char *minor, *fields;
    int cont;
  } cases[] = {
      {"1", "", 0},
      {"1", "Expect: 100-continue\r\n", 1},
      {"1", "expect: 100-Continue\r\n", 1},
      {"1", "Expect:   100-CONTINUE  \r\n", 1},
      {"1", "Expect: foo, 100-continue\r\n", 1},
      {"1", "Expect: 100-continued\r\n", 0},
      {"1", "Expect: 200-ok\r\n", 0},
      {"0", "Expect: 100-continue\r\n", 0},
  };
  size_t i;
  for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char req[256];
    lkvnet_hhead h;
    snprintf(req, sizeof req,
             "PUT /kv/a HTTP/1.%s\r\nContent-Length: 3\r\n%s\r\n",
             cases[i].minor, cases[i].fields);
    CHECK(parse(req, &h) == 1);
    if (h.expect_continue != cases[i].cont)
      fprintf(stderr, "expect of 1.%s %s", cases[i].minor, cases[i].fields);
    CHECK(h.expect_continue == cases[i].cont);
  }
}

static void test_values(void) {
  lkvnet_hhead h;
  CHECK(parse("GET / HTTP/1.1\r\nA:   b c \t\r\nB:\r\nC: \t \r\n"
              "D:x\r\nE: \xc3\xa9\x80\xff\r\n\r\n",
              &h) == 1);
  CHECK(h.nfields == 5);
  CHECK(str_is(h.fields[0].value, h.fields[0].value_len, "b c"));
  CHECK(h.fields[1].value_len == 0);
  CHECK(h.fields[1].value == h.fields[1].name + 2);
  CHECK(h.fields[2].value_len == 0);
  CHECK(str_is(h.fields[3].value, h.fields[3].value_len, "x"));
  CHECK(str_is(h.fields[4].value, h.fields[4].value_len, "\xc3\xa9\x80\xff"));
  /* every token character in a name */
  CHECK(parse("GET / HTTP/1.1\r\n!#$%&'*+-.^_`|~09azAZ: v\r\n\r\n", &h) == 1);
  CHECK(h.nfields == 1 && h.fields[0].name_len == 21);
}

static void test_content_length(void) {
  static const struct {
    const char *fields;
    int rc;
    uint64_t len;
  } cases[] = {
      {"Content-Length: 0\r\n", 1, 0},
      {"Content-Length: 5\r\n", 1, 5},
      {"content-length:5\r\n", 1, 5},
      {"Content-Length:  5 \r\n", 1, 5},
      {"Content-Length:\t5\t\r\n", 1, 5},
      {"Content-Length: 007\r\n", 1, 7},
      {"Content-Length: 9223372036854775807\r\n", 1, 9223372036854775807ull},
      {"Content-Length: 00000000000000000000000000001\r\n", 1, 1},
      {"Content-Length: 9223372036854775808\r\n", 400, 0},
      {"Content-Length: 18446744073709551615\r\n", 400, 0},
      {"Content-Length: 18446744073709551616\r\n", 400, 0},
      {"Content-Length: 99999999999999999999999\r\n", 400, 0},
      {"Content-Length: +5\r\n", 400, 0},
      {"Content-Length: -5\r\n", 400, 0},
      {"Content-Length: 5 5\r\n", 400, 0},
      {"Content-Length: 5,5\r\n", 400, 0},
      {"Content-Length: 5, 6\r\n", 400, 0},
      {"Content-Length: 0x5\r\n", 400, 0},
      {"Content-Length: 5a\r\n", 400, 0},
      {"Content-Length: \r\n", 400, 0},
      {"Content-Length: 5\r\nContent-Length: 5\r\n", 400, 0},
      {"Content-Length: 5\r\nContent-Length: 6\r\n", 400, 0},
      {"Content-Length: 5\r\ncontent-length: 5\r\n", 400, 0},
      {"Content-Lengths: x\r\n", 1, 0},
  };
  size_t i;
  for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char req[256];
    lkvnet_hhead h;
    int rc;
    snprintf(req, sizeof req, "POST / HTTP/1.1\r\n%s\r\n", cases[i].fields);
    rc = parse(req, &h);
    if (rc != cases[i].rc)
      fprintf(stderr, "%d, not %d: %s", rc, cases[i].rc, cases[i].fields);
    CHECK(rc == cases[i].rc);
    if (rc == 1) {
      CHECK(h.content_length == cases[i].len);
      CHECK(h.has_length == (strstr(cases[i].fields, "Lengths") == NULL));
    }
  }
}

static void test_transfer_encoding(void) {
  static const struct {
    const char *minor, *fields;
    int rc;
  } cases[] = {
      {"1", "Transfer-Encoding: chunked\r\n", 1},
      {"1", "transfer-encoding: Chunked\r\n", 1},
      {"1", "Transfer-Encoding: CHUNKED \r\n", 1},
      {"1", "Transfer-Encoding: , chunked,\r\n", 1},
      {"1", "Transfer-Encoding: gzip\r\n", 400},
      {"1", "Transfer-Encoding: identity\r\n", 400},
      {"1", "Transfer-Encoding: chunked, gzip\r\n", 400},
      {"1", "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n", 400},
      {"1", "Transfer-Encoding: chunked, chunked\r\n", 400},
      {"1", "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
       400},
      {"1", "Transfer-Encoding: chunked;q=1\r\n", 400},
      {"1", "Transfer-Encoding: chunkedx\r\n", 400},
      {"1", "Transfer-Encoding: \r\n", 400},
      {"1", "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", 400},
      {"1", "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", 400},
      {"1", "Content-Length: 5\r\nTransfer-Encoding: gzip, chunked\r\n", 400},
      {"0", "Transfer-Encoding: chunked\r\n", 400},
      {"1", "Transfer-Encoding: gzip, chunked\r\n", 501},
      {"1", "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n", 501},
      {"1", "Transfer-Encoding: identity, chunked\r\n", 501},
  };
  size_t i;
  for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char req[256];
    lkvnet_hhead h;
    int rc;
    snprintf(req, sizeof req, "POST / HTTP/1.%s\r\n%s\r\n", cases[i].minor,
             cases[i].fields);
    rc = parse(req, &h);
    if (rc != cases[i].rc)
      fprintf(stderr, "%d, not %d: %s", rc, cases[i].rc, cases[i].fields);
    CHECK(rc == cases[i].rc);
    if (rc == 1) CHECK(h.chunked == 1 && h.has_length == 0);
  }
}

/* Heads refused with 400 whatever the framing fields say. */
static void test_malformed(void) {
  static const char *const bad[] = {
      /* bare LF and bare CR */
      "GET / HTTP/1.1\nHost: a\n\n",
      "GET / HTTP/1.1\r\nHost: a\n\r\n",
      "GET / HTTP/1.1\r\nHost: a\r\n\n",
      "GET / HTTP/1.1\n\r\n",
      "\nGET / HTTP/1.1\r\n\r\n",
      "\r\n\nGET / HTTP/1.1\r\n\r\n",
      "\rGET / HTTP/1.1\r\n\r\n",
      "GET / HTTP/1.1\r\nA: b\rc\r\n\r\n",
      "GET / HTTP/1.1\r\nA: b\r\r\n\r\n",
      "GET / HTTP/1.1\r\r\n\r\n",
      "GET / HTTP/1.1\r\nA: b\r\n\r\r\n\r\n",
      /* request lines */
      "GET  / HTTP/1.1\r\n\r\n",
      "GET /  HTTP/1.1\r\n\r\n",
      " GET / HTTP/1.1\r\n\r\n",
      " / HTTP/1.1\r\n\r\n", /* an empty method */
      "GET\t/ HTTP/1.1\r\n\r\n",
      "GET /\tHTTP/1.1\r\n\r\n",
      "G@T / HTTP/1.1\r\n\r\n",
      "G(T / HTTP/1.1\r\n\r\n",
      "GET /a\x01 HTTP/1.1\r\n\r\n",
      "GET /a\x7f HTTP/1.1\r\n\r\n",
      "GET / HTTP/1.1 x\r\n\r\n",
      "GET /\r\n\r\n",
      "GET\r\n\r\n",
      "GET  HTTP/1.1\r\n\r\n",
      "/ HTTP/1.1\r\n\r\n",
      /* field lines */
      "GET / HTTP/1.1\r\nNoColon\r\n\r\n",
      "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
      "GET / HTTP/1.1\r\nHost\t: a\r\n\r\n",
      "GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n",
      "GET / HTTP/1.1\r\nA: b\r\n\tc\r\n\r\n",
      "GET / HTTP/1.1\r\n A: b\r\n\r\n",
      "GET / HTTP/1.1\r\n: b\r\n\r\n",
      "GET / HTTP/1.1\r\nA\x01: b\r\n\r\n",
      "GET / HTTP/1.1\r\nA(b): c\r\n\r\n",
      "GET / HTTP/1.1\r\nA/b: c\r\n\r\n",
      "GET / HTTP/1.1\r\n\xc3\xa9: c\r\n\r\n",
      "GET / HTTP/1.1\r\nA: b\001c\r\n\r\n",
      "GET / HTTP/1.1\r\nA: b\x7f\r\n\r\n",
      "GET / HTTP/1.1\r\nA: b\x1b[0m\r\n\r\n",
      "GET / HTTP/1.1\r\nA: b\r\n\x01\r\n\r\n",
  };
  size_t i;
  for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    lkvnet_hhead h;
    int rc = parse(bad[i], &h);
    if (rc != 400) fprintf(stderr, "%d, not 400: %s\n", rc, bad[i]);
    CHECK(rc == 400);
  }
  /* a NUL in a value (strlen would stop at it) */
  {
    static const char req[] = "GET / HTTP/1.1\r\nA: b\0c\r\n\r\n";
    lkvnet_hhead h;
    const char *why;
    CHECK(parse_n(req, sizeof req - 1, MAX_HEAD, &h, &why) == 400);
  }
}

static void test_limits(void) {
  static const char req[] = "GET /abc HTTP/1.1\r\nHost: h\r\n\r\n";
  size_t n = sizeof req - 1;
  lkvnet_hhead h;
  const char *why;
  char big[8192];
  size_t at, k;
  int rc;
  /* a head of exactly max_head bytes; one over */
  CHECK(parse_n(req, n, n, &h, &why) == 1 && h.head_len == n);
  CHECK(parse_n(req, n, n - 1, &h, &why) == 431);
  CHECK(parse_n(req, n - 1, n - 1, &h, &why) == 431);
  CHECK(parse_n(req, n - 2, n - 1, &h, &why) == 0);
  CHECK(parse_n(req, n, 0, &h, &why) == 431);
  /* a request whose head fits, with a body past max_head */
  CHECK(parse_n("POST / HTTP/1.1\r\nContent-Length: 40\r\n\r\n"
                "0123456789012345678901234567890123456789",
                79, 40, &h, &why) == 1);
  CHECK(h.head_len == 39);
  /* no end within max_head, however long the buffer */
  memset(big, 'a', sizeof big);
  memcpy(big, "GET /", 5);
  CHECK(parse_n(big, sizeof big, 100, &h, &why) == 431);
  CHECK(parse_n(big, 99, 100, &h, &why) == 0);
  CHECK(parse_n(big, 100, 100, &h, &why) == 431);
  /* LKVNET_HTTP_MAX_HEADERS fields pass, one more is 431 */
  for (k = LKVNET_HTTP_MAX_HEADERS; k <= LKVNET_HTTP_MAX_HEADERS + 1; k++) {
    size_t i;
    at = (size_t)snprintf(big, sizeof big, "GET / HTTP/1.1\r\n");
    for (i = 0; i < k; i++)
      at += (size_t)snprintf(big + at, sizeof big - at, "X-%zu: %zu\r\n", i, i);
    at += (size_t)snprintf(big + at, sizeof big - at, "\r\n");
    rc = parse_n(big, at, sizeof big, &h, &why);
    CHECK(rc == (k == LKVNET_HTTP_MAX_HEADERS ? 1 : 431));
    if (rc == 1) CHECK(h.nfields == k);
  }
}

static void test_leading_lines(void) {
  static const char req[] = "\r\n\r\nGET / HTTP/1.1\r\n\r\n";
  lkvnet_hhead h;
  const char *why;
  CHECK(parse(req, &h) == 1);
  CHECK(h.head_len == sizeof req - 1 && h.method == LKVNET_HTTP_GET);
  CHECK(h.method_str == (const char *)h.target - 4);
  CHECK(parse("\r\n", &h) == 0);
  CHECK(parse("\r", &h) == 0);
  CHECK(parse("\r\n\r\n", &h) == 0);
  CHECK(parse("\r\n\r\n\r", &h) == 0);
  CHECK(parse("", &h) == 0);
  /* empty lines count against max_head */
  CHECK(parse_n(req, sizeof req - 1, sizeof req - 2, &h, &why) == 431);
}

static void test_pipelined(void) {
  static const char two[] =
      "GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n";
  static const char body[] =
      "POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\n\r\n";
  lkvnet_hhead h;
  size_t first;
  const char *why;
  char *b = dup_exact(two, sizeof two - 1);
  CHECK(lkvnet_hparse_head(b, sizeof two - 1, MAX_HEAD, &h, &why) == 1);
  first = h.head_len;
  CHECK(first == (sizeof two - 1) / 2);
  CHECK(str_is(h.target, h.target_len, "/a"));
  CHECK(lkvnet_hparse_head(b + first, sizeof two - 1 - first, MAX_HEAD, &h,
                           &why) == 1);
  CHECK(str_is(h.target, h.target_len, "/b"));
  CHECK(h.head_len == sizeof two - 1 - first);
  free(b);
  b = dup_exact(body, sizeof body - 1);
  CHECK(lkvnet_hparse_head(b, sizeof body - 1, MAX_HEAD, &h, &why) == 1);
  CHECK(h.head_len == 39 && h.content_length == 3);
  CHECK(memcmp(b + h.head_len, "abcGET", 6) == 0);
  free(b);
}

/* Every prefix of req gives 0 until the head is there, then what the
 * whole gives; kept scans give the same answers byte by byte. */
static void check_splits(const char *req, size_t n) {
  lkvnet_hhead whole, h;
  const char *why;
  char *wb = dup_exact(req, n);
  int rc = lkvnet_hparse_head(wb, n, MAX_HEAD, &whole, &why), r;
  size_t k, scan = 0;
  int seen = 0; /* the first prefix giving a verdict */
  for (k = 0; k <= n; k++) {
    char *b = dup_exact(req, k);
    size_t s2 = 0;
    r = lkvnet_hparse_head(b, k, MAX_HEAD, &h, &why);
    if (r != 0 && r != rc) {
      fprintf(stderr, "prefix %zu of \"%s\": %d, whole %d\n", k, req, r, rc);
      CHECK(0);
    }
    if (rc == 1) {
      CHECK(r == (k >= whole.head_len ? 1 : 0));
      if (r == 1) CHECK(same_head(&h, b, &whole, wb));
    }
    if (seen) CHECK(r == rc); /* a verdict never goes back to 0 */
    if (r) seen = 1;
    /* the scan kept from the previous prefix, and a fresh one */
    {
      int a = lkvnet_hparse_scan(b, k, MAX_HEAD, &scan, &why);
      int f = lkvnet_hparse_scan(b, k, MAX_HEAD, &s2, &why);
      CHECK(a == f);
      if (a == 1) CHECK(scan == s2);
      if (a == 1 && rc == 1) CHECK(scan == whole.head_len);
      if (a == 0) CHECK(r == 0);
      if (a != 0 && a != 1) CHECK(r == a);
      if (a != 0) scan = 0; /* done with this head: start over */
    }
    free(b);
  }
  CHECK(rc == 0 || seen);
  free(wb);
}

static void test_splits(void) {
  static const char *const reqs[] = {
      "GET /kv/a HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n",
      ("\r\n\r\nPOST /kv/a HTTP/1.0\r\nConnection: keep-alive\r\n"
       "Content-Length: 12\r\nExpect: 100-continue\r\n\r\nhello world!"),
      "PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
      "GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n",
      "GET / HTTP/1.1\r\nA:\r\nB: \r\n\r\n",
      "GET / HTTP/1.1\r\nHost: a\n\r\n",
      "GET / HTTP/1.1\r\nA: b\rc\r\n\r\n",
      "GET / HTTP/2.0\r\n\r\n",
      "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
      "GET / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
      "\r\n\r",
      "\r\n\nGET",
  };
  size_t i;
  for (i = 0; i < sizeof reqs / sizeof reqs[0]; i++)
    check_splits(reqs[i], strlen(reqs[i]));
}

/* A head arriving in pieces of random sizes, the scan kept throughout. */
static void test_scan_pieces(void) {
  static const char req[] =
      "\r\nPOST /kv/k HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
      "X-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\nabc";
  size_t n = sizeof req - 1, end = n - 3;
  unsigned seed = 12345;
  int round;
  for (round = 0; round < 200; round++) {
    size_t have = 0, scan = 0;
    const char *why;
    int rc = 0;
    while (have < n) {
      seed = seed * 1103515245u + 12345u;
      have += 1 + (seed >> 16) % 9;
      if (have > n) have = n;
      rc = lkvnet_hparse_scan(req, have, MAX_HEAD, &scan, &why);
      CHECK(rc == (have >= end ? 1 : 0));
      if (rc == 1) break;
    }
    CHECK(rc == 1 && scan == end);
  }
}

static void test_reasons(void) {
  static const int codes[] = {100, 200, 204, 301, 302, 303, 304, 307, 308,
                              400, 401, 403, 404, 405, 408, 409, 411, 413,
                              414, 415, 429, 431, 500, 501, 503, 505};
  size_t i;
  for (i = 0; i < sizeof codes / sizeof codes[0]; i++)
    CHECK(strcmp(lkvnet_http_reason(codes[i]), "Unknown") != 0);
  CHECK(strcmp(lkvnet_http_reason(200), "OK") == 0);
  CHECK(strcmp(lkvnet_http_reason(404), "Not Found") == 0);
  CHECK(strcmp(lkvnet_http_reason(431), "Request Header Fields Too Large") ==
        0);
  CHECK(strcmp(lkvnet_http_reason(999), "Unknown") == 0);
  CHECK(strcmp(lkvnet_http_reason(0), "Unknown") == 0);
}

/* }====================================================================== */

/* {======================================================================
** Chunked bodies
** ======================================================================= */

/* Decode body[0 .. n) in one call, out of place: the status; the data in
 * out (room for n bytes), its length in *olen and the bytes used in *used. */
static int unchunk(const char *body, size_t n, uint64_t max_body, char *out,
                   size_t *olen, size_t *used) {
  lkvnet_hchunk c;
  const char *why = NULL;
  char *b = dup_exact(body, n);
  int rc;
  lkvnet_hchunk_init(&c);
  rc = lkvnet_hchunk_feed(&c, b, n, out, used, olen, max_body, &why);
  CHECK(*olen <= *used && *used <= n);
  CHECK(memcmp(b, body, n) == 0);
  if (rc == 0) CHECK(*used == n);
  if (rc > 1) CHECK(why != NULL && *why != '\0');
  free(b);
  return rc;
}

static int unchunk_str(const char *body, char *out, size_t *olen) {
  size_t used;
  return unchunk(body, strlen(body), UINT64_MAX, out, olen, &used);
}

static void test_chunked(void) {
  static const char body[] = "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nGET /";
  char out[256];
  size_t olen, used;
  CHECK(unchunk(body, sizeof body - 1, UINT64_MAX, out, &olen, &used) == 1);
  CHECK(olen == 11 && memcmp(out, "hello world", 11) == 0);
  CHECK(used == sizeof body - 1 - 5);
  /* no data at all; a last chunk of several zeros */
  CHECK(unchunk_str("0\r\n\r\n", out, &olen) == 1 && olen == 0);
  CHECK(unchunk_str("000\r\n\r\n", out, &olen) == 1 && olen == 0);
  /* hex digits in either case, leading zeros */
  CHECK(unchunk_str("a\r\n0123456789\r\nA\r\nabcdefghij\r\n"
                    "0000F\r\n0123456789abcde\r\n"
                    "1f\r\n0123456789abcdef0123456789abcde\r\n0\r\n\r\n",
                    out, &olen) == 1);
  CHECK(olen == 10 + 10 + 15 + 31);
  CHECK(memcmp(out + 20, "0123456789abcde0123", 19) == 0);
  /* extensions, skipped */
  CHECK(unchunk_str("5;a=b\r\nhello\r\n1 ; x ; y=\"q s;\\\"\"\r\n!\r\n"
                    "0;last\r\n\r\n",
                    out, &olen) == 1);
  CHECK(olen == 6 && memcmp(out, "hello!", 6) == 0);
  /* trailers, skipped */
  CHECK(unchunk_str("3\r\nabc\r\n0\r\nX-Sum: 1\r\nY:\r\nZ: a b \t\r\n\r\n", out,
                    &olen) == 1);
  CHECK(olen == 3);
  /* the end is exact, whatever follows */
  CHECK(unchunk("0\r\nA: b\r\n\r\n0\r\n\r\n", 16, UINT64_MAX, out, &olen,
                &used) == 1);
  CHECK(used == 11);
}

static void test_chunked_bad(void) {
  static const char *const bad[] = {
      "",                         /* (0: not an error) */
      "\r\n",                     /* no size */
      " 5\r\nhello\r\n0\r\n\r\n", /* space before the size */
      "x\r\n",                    /* not hex */
      "-1\r\n",
      "+1\r\n",
      "0x5\r\n",
      "5\nhello\r\n0\r\n\r\n",         /* bare LF after the size */
      "5\r\rhello\r\n0\r\n\r\n",       /* CR CR */
      "5 \r\nhello\r\n0\r\n\r\n",      /* BWS with no extension */
      "5 x\r\nhello\r\n0\r\n\r\n",     /* a word with no ';' */
      "5;a\x01\r\nhello\r\n0\r\n\r\n", /* control in an extension */
      "5;a\nhello\r\n0\r\n\r\n",       /* bare LF in an extension */
      "5;a\rhello\r\n0\r\n\r\n",       /* bare CR in an extension */
      "5\r\nhelloX\r\n0\r\n\r\n",      /* data longer than its size */
      "5\r\nhello\n0\r\n\r\n",         /* bare LF after the data */
      "5\r\nhello\rX0\r\n\r\n",        /* CR then not LF */
      "5\r\nhell\r\n0\r\n\r\n",        /* data shorter than its size */
      "5\r\nhello0\r\n\r\n",           /* no CRLF after the data */
      "0\r\n\n",                       /* bare LF at the end */
      "0\r\n\rX",                      /* CR then not LF at the end */
      "0\r\nA: b\n\r\n",               /* bare LF after a trailer */
      "0\r\nA: b\rX\r\n\r\n",          /* bare CR in a trailer */
      "0\r\nNoColon\r\n\r\n",          /* trailer line without a colon */
      "0\r\nA : b\r\n\r\n",            /* whitespace before the colon */
      "0\r\n: b\r\n\r\n",              /* empty name */
      "0\r\nA: b\r\n c\r\n\r\n",       /* obs-fold */
      "0\r\nA: b\r\n c: d\r\n\r\n",    /* obs-fold, or a name after SP */
      "0\r\nA: b\x01\r\n\r\n",         /* control in a trailer value */
      "10000000000000000\r\n",         /* 17 hex digits */
      "00000000000000001\r\n",         /* 17 even with leading zeros */
      "8000000000000000\r\n",          /* 2^63 */
      "ffffffffffffffff\r\n",          /* 2^64 - 1 */
  };
  size_t i;
  char out[256];
  for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    size_t olen;
    int rc = unchunk_str(bad[i], out, &olen);
    int want = i == 0 ? 0 : 400;
    if (rc != want) fprintf(stderr, "%d, not %d: \"%s\"\n", rc, want, bad[i]);
    CHECK(rc == want);
  }
  /* the largest size taken: 2^63 - 1, waiting for its data */
  {
    size_t olen;
    CHECK(unchunk_str("7fffffffffffffff\r\n", out, &olen) == 0);
    CHECK(unchunk_str("000000000000000f\r\n", out, &olen) == 0);
  }
}

static void test_chunked_bounds(void) {
  static char body[3 * LKVNET_HTTP_MAX_TRAILER];
  static char out[sizeof body];
  size_t at, olen, used, i;
  /* 413: the size says so at once, before any data arrives */
  CHECK(unchunk("a\r\n0123456789\r\n0\r\n\r\n", 20, 10, out, &olen, &used) ==
        1);
  CHECK(olen == 10);
  CHECK(unchunk("b\r\n", 3, 10, out, &olen, &used) == 413);
  CHECK(used == 0 && olen == 0);
  CHECK(unchunk("5\r\n01234\r\n6\r\n", 13, 10, out, &olen, &used) == 413);
  CHECK(olen == 5);
  CHECK(unchunk("5\r\n01234\r\n5\r\n56789\r\n1\r\n", 23, 10, out, &olen,
                &used) == 413);
  CHECK(unchunk("1\r\n", 3, 0, out, &olen, &used) == 413);
  CHECK(unchunk("0\r\n\r\n", 5, 0, out, &olen, &used) == 1);
  /* a trailer section of LKVNET_HTTP_MAX_TRAILER bytes, then one more */
  for (i = 0; i <= 1; i++) {
    size_t fill = LKVNET_HTTP_MAX_TRAILER - 4 - 2 + i; /* "A: " CRLF CRLF */
    at = (size_t)snprintf(body, sizeof body, "0\r\nA: ");
    memset(body + at, 'v', fill - 1);
    at += fill - 1;
    memcpy(body + at, "\r\n\r\n", 4);
    at += 4;
    CHECK(at - 3 == LKVNET_HTTP_MAX_TRAILER + i);
    CHECK(unchunk(body, at, UINT64_MAX, out, &olen, &used) ==
          (i == 0 ? 1 : 400));
  }
  /* many short trailer lines count too */
  at = (size_t)snprintf(body, sizeof body, "0\r\n");
  while (at < LKVNET_HTTP_MAX_TRAILER + 100) {
    memcpy(body + at, "A:\r\n", 4);
    at += 4;
  }
  memcpy(body + at, "\r\n", 2);
  CHECK(unchunk(body, at + 2, UINT64_MAX, out, &olen, &used) == 400);
  /* chunk extensions: all chunks together are bounded */
  at = 0;
  for (i = 0; at < sizeof body - 200; i++)
    at += (size_t)snprintf(body + at, sizeof body - at,
                           "1;name=%0100zu\r\nx\r\n", i);
  memcpy(body + at, "0\r\n\r\n", 5);
  CHECK(i * 106 > LKVNET_HTTP_MAX_CHUNK_EXT);
  CHECK(unchunk(body, at + 5, UINT64_MAX, out, &olen, &used) == 400);
  CHECK(olen < i);
  /* just under the bound passes */
  at = 0;
  for (i = 0; (i + 1) * 106 <= LKVNET_HTTP_MAX_CHUNK_EXT; i++)
    at += (size_t)snprintf(body + at, sizeof body - at,
                           "1;name=%0100zu\r\nx\r\n", i);
  memcpy(body + at, "0\r\n\r\n", 5);
  CHECK(unchunk(body, at + 5, UINT64_MAX, out, &olen, &used) == 1);
  CHECK(olen == i);
}

/* Decode body in place, cut into the pieces ending at cuts[0 .. ncuts)
 * (ascending offsets), as a server would: each piece is decoded where it
 * lies in buf, behind the data decoded so far. The status, the data in
 * buf[0 .. *olen), the input used in *used. */
static int unchunk_pieces(const char *body, size_t n, const size_t *cuts,
                          size_t ncuts, uint64_t max_body, char *buf,
                          size_t *olen, size_t *used) {
  lkvnet_hchunk c;
  size_t in = 0, o = 0, k;
  const char *why;
  int rc = 0;
  lkvnet_hchunk_init(&c);
  memcpy(buf, body, n);
  for (k = 0; k <= ncuts && rc == 0; k++) {
    size_t to = k < ncuts ? cuts[k] : n, u, p;
    rc = lkvnet_hchunk_feed(&c, buf + in, to - in, buf + o, &u, &p, max_body,
                            &why);
    CHECK(p <= u && u <= to - in);
    if (rc == 0) CHECK(u == to - in);
    o += p;
    in += u;
  }
  *olen = o;
  *used = in;
  return rc;
}

static void check_chunk_splits(const char *body, size_t n) {
  char whole[512], buf[512];
  size_t wlen, wused, olen, used, k, j;
  int rc = unchunk(body, n, UINT64_MAX, whole, &wlen, &wused);
  /* in place, one call */
  {
    lkvnet_hchunk c;
    const char *why;
    size_t u, p;
    char *b = dup_exact(body, n);
    lkvnet_hchunk_init(&c);
    CHECK(lkvnet_hchunk_feed(&c, b, n, b, &u, &p, UINT64_MAX, &why) == rc);
    CHECK(p == wlen && memcmp(b, whole, p) == 0);
    if (rc != 400) CHECK(u == wused);
    free(b);
  }
  for (k = 0; k <= n; k++) {
    CHECK(unchunk_pieces(body, n, &k, 1, UINT64_MAX, buf, &olen, &used) == rc);
    if (rc == 1 && (olen != wlen || memcmp(buf, whole, olen) != 0))
      fprintf(stderr, "split at %zu of \"%s\"\n", k, body);
    if (rc != 400) CHECK(olen == wlen && memcmp(buf, whole, olen) == 0);
    if (rc == 1) CHECK(used == wused);
  }
  /* byte by byte */
  {
    size_t cuts[512];
    for (j = 0; j < n; j++) cuts[j] = j;
    CHECK(unchunk_pieces(body, n, cuts, n, UINT64_MAX, buf, &olen, &used) ==
          rc);
    if (rc != 400) CHECK(olen == wlen && memcmp(buf, whole, olen) == 0);
    if (rc == 1) CHECK(used == wused);
  }
}

static void test_chunked_splits(void) {
  static const char *const bodies[] = {
      "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n",
      "5;a=b\r\nhello\r\n1 ;x\r\n!\r\n0;e\r\nT: 1\r\nU:\r\n\r\n",
      ("A\r\n0123456789\r\n1f\r\n0123456789abcdef0123456789abcde\r\n"
       "00\r\n\r\n"),
      "5\r\nhelloX\r\n0\r\n\r\n",
      "5\r\nhello\r\n0\r\nA: b\n\r\n",
  };
  size_t i;
  for (i = 0; i < sizeof bodies / sizeof bodies[0]; i++)
    check_chunk_splits(bodies[i], strlen(bodies[i]));
  /* 413 cut anywhere */
  {
    static const char b[] = "5\r\n01234\r\n6\r\n012345\r\n0\r\n\r\n";
    char buf[64];
    size_t k, olen, used;
    for (k = 0; k <= sizeof b - 1; k++) {
      CHECK(unchunk_pieces(b, sizeof b - 1, &k, 1, 10, buf, &olen, &used) ==
            413);
      CHECK(olen == 5 && used == 10);
    }
  }
}

static void test_chunked_after(void) {
  lkvnet_hchunk c;
  const char *why = NULL;
  size_t u, p;
  char out[16];
  lkvnet_hchunk_init(&c);
  CHECK(lkvnet_hchunk_feed(&c, "0\r\n\r\nabc", 8, out, &u, &p, 100, &why) == 1);
  CHECK(u == 5 && p == 0);
  /* done: nothing more is taken */
  CHECK(lkvnet_hchunk_feed(&c, "abc", 3, out, &u, &p, 100, &why) == 1);
  CHECK(u == 0 && p == 0);
  /* refused: refused again, with the same reason */
  lkvnet_hchunk_init(&c);
  CHECK(lkvnet_hchunk_feed(&c, "2\r\nab?", 6, out, &u, &p, 100, &why) == 400);
  CHECK(p == 2 && u == 5);
  {
    const char *first = why;
    why = NULL;
    CHECK(lkvnet_hchunk_feed(&c, "\r\n0\r\n\r\n", 7, out, &u, &p, 100, &why) ==
          400);
    CHECK(u == 0 && p == 0 && why == first);
  }
  /* nothing given, nothing taken */
  lkvnet_hchunk_init(&c);
  CHECK(lkvnet_hchunk_feed(&c, "", 0, out, &u, &p, 100, &why) == 0);
  CHECK(u == 0 && p == 0);
}

/* }====================================================================== */

int main(void) {
  test_get();
  test_post();
  test_methods();
  test_targets();
  test_versions();
  test_keep_alive();
  test_expect();
  test_values();
  test_content_length();
  test_transfer_encoding();
  test_malformed();
  test_limits();
  test_leading_lines();
  test_pipelined();
  test_splits();
  test_scan_pieces();
  test_reasons();
  test_chunked();
  test_chunked_bad();
  test_chunked_bounds();
  test_chunked_splits();
  test_chunked_after();
  TEST_MAIN_END();
}
