/* httpresp_test.c - the reader of HTTP/1.x answers (httpresp.c): a table
 * of answers, each fed whole, cut in two at every byte, and one byte at a
 * time (what is not consumed fed again in front of the next bytes, as the
 * load generator does), must give the same verdict, status, framing and
 * kept text every way. */
#include "httpresp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

typedef struct Case {
  const char *name;
  const char *bytes;
  int want;         /* 1 complete, 0 incomplete, -1 malformed */
  int status;       /* when complete */
  int close_after;  /* when complete or incomplete */
  int at_close;     /* incomplete, but the close would complete it */
  const char *text; /* kept (want_text set) */
  size_t extra;     /* bytes after a complete answer */
} Case;

static const Case cases[] = {
    {"content-length", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 1, 200,
     0, 0, "", 0},
    {"no reason phrase", "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", 1, 200, 0,
     0, "", 0},
    {"any case, blanks around the length",
     "HTTP/1.1 201 Created\r\ncOnTeNt-LeNgTh:\t 3 \r\n\r\nabc", 1, 201, 0, 0,
     "", 0},
    {"the same length twice",
     "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", 1,
     200, 0, 0, "", 0},
    {"an error's text",
     "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 15\r\n\r\nno "
     "quorum\r\nmore",
     1, 503, 0, 0, "no quorum\r\nmore", 0},
    {"chunked",
     "HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n"
     "3\r\nabc\r\nA;name=value\r\n0123456789\r\n0\r\n\r\n",
     1, 404, 0, 0, "abc0123456789", 0},
    {"chunked, upper-case hex, a trailer",
     "HTTP/1.1 500 Oops\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n"
     "1F \r\n0123456789012345678901234567890\r\n0\r\nX-T: 1\r\nY: 2\r\n\r\n",
     1, 500, 0, 0, "0123456789012345678901234567890", 0},
    {"chunked wins over a length",
     "HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: "
     "chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
     1, 200, 0, 0, "", 0},
    {"interim answers first",
     "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\nX: y\r\n\r\n"
     "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
     1, 200, 0, 0, "", 0},
    {"Connection: close",
     "HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 2\r\n\r\nok", 1,
     200, 1, 0, "", 0},
    {"HTTP/1.0 closes", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 1,
     200, 1, 0, "", 0},
    {"HTTP/1.0 with keep-alive",
     "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
     1, 200, 0, 0, "", 0},
    {"204 and 304 have no body",
     "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", 1, 204, 0, 0, "",
     0},
    {"bytes after the answer",
     "HTTP/1.1 304 Not Modified\r\n\r\nHTTP/1.1 200 OK\r\n\r\n", 1, 304, 0, 0,
     "", 19},
    {"a body to the close", "HTTP/1.1 502 Bad Gateway\r\nX: y\r\n\r\nall of it",
     0, 502, 1, 1, "all of it", 0},
    {"a head not all there", "HTTP/1.1 200 OK\r\nContent-Le", 0, 0, 0, 0, "",
     0},
    {"a body not all there", "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nok",
     0, 200, 0, 0, "", 0},
    {"a chunk not all there",
     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", 0, 200, 0,
     0, "", 0},
    {"not HTTP", "HELLO\r\n\r\n", -1, 0, 0, 0, "", 0},
    {"HTTP/2", "HTTP/2 200 OK\r\n\r\n", -1, 0, 0, 0, "", 0},
    {"a status of letters", "HTTP/1.1 2x0 OK\r\n\r\n", -1, 0, 0, 0, "", 0},
    {"a status of four digits", "HTTP/1.1 2000 OK\r\n\r\n", -1, 0, 0, 0, "", 0},
    {"a header without a colon", "HTTP/1.1 200 OK\r\nBroken\r\n\r\n", -1, 0, 0,
     0, "", 0},
    {"a bare CR in a header", "HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n", -1, 0, 0, 0,
     "", 0},
    {"a length of letters", "HTTP/1.1 200 OK\r\nContent-Length: 1a\r\n\r\n", -1,
     0, 0, 0, "", 0},
    {"an empty length", "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n", -1, 0, 0,
     0, "", 0},
    {"a length past 64 bits",
     "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n", -1, 0,
     0, 0, "", 0},
    {"two lengths that differ",
     "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxy", -1,
     0, 0, 0, "", 0},
    {"a status below 100 is no interim answer",
     "HTTP/1.1 099 X\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", -1,
     0, 0, 0, "", 0},
    {"101 switching protocols", "HTTP/1.1 101 Switching\r\n\r\n", -1, 0, 0, 0,
     "", 0},
    {"a chunk size of letters",
     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", -1, 0, 0, 0,
     "", 0},
    {"a chunk size of 16 digits",
     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
     "1000000000000000\r\n",
     -1, 0, 0, 0, "", 0},
    {"a chunk without its CRLF",
     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXY0\r\n\r\n",
     -1, 0, 0, 0, "", 0},
};

typedef struct Outcome {
  int rc, status, close_after, at_close;
  char text[LKVNET_HTTPRESP_TEXT + 1];
  size_t extra;
} Outcome;

/* Feed a case's bytes in pieces: the first `cut` bytes, then `step` at a
 * time (0: the rest at once), carrying what the reader leaves over. */
static Outcome feed(const char *bytes, size_t len, size_t cut, size_t step) {
  static char buf[65536];
  lkvnet_httpresp r;
  Outcome o;
  size_t have = 0, pos = 0, used = 0;
  memset(&o, 0, sizeof o);
  lkvnet_httpresp_start(&r, 1);
  o.rc = 0;
  while (pos < len) {
    size_t k = pos < cut ? cut - pos : (step > 0 ? step : len - pos);
    if (k > len - pos) k = len - pos;
    memcpy(buf + have, bytes + pos, k);
    pos += k;
    have += k;
    o.rc = lkvnet_httpresp_feed(&r, buf, have, &used);
    if (o.rc != 0) break;
    memmove(buf, buf + used, have - used);
    have -= used;
    CHECK(have <= LKVNET_HTTPRESP_MAX_HEAD);
  }
  if (o.rc == 1) o.extra = have - used + (len - pos);
  o.status = r.status;
  o.close_after = r.close_after;
  o.at_close = lkvnet_httpresp_ends_at_close(&r);
  memcpy(o.text, r.text, r.text_len);
  o.text[r.text_len] = '\0';
  return o;
}

static int outcome_ok(const Case *c, const Outcome *o) {
  if (o->rc != c->want) return 0;
  if (c->want < 0) return 1;
  return o->status == c->status && o->close_after == c->close_after &&
         o->at_close == c->at_close && strcmp(o->text, c->text) == 0 &&
         o->extra == c->extra;
}

static void check_case(const Case *c, size_t cut, size_t step) {
  Outcome o = feed(c->bytes, strlen(c->bytes), cut, step);
  if (!outcome_ok(c, &o)) {
    fprintf(stderr,
            "httpresp '%s' (cut %zu, step %zu): rc %d status %d close %d "
            "at_close %d extra %zu text '%s'\n",
            c->name, cut, step, o.rc, o.status, o.close_after, o.at_close,
            o.extra, o.text);
    CHECK(0);
  }
}

static void test_cases(void) {
  size_t i, cut;
  for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const Case *c = &cases[i];
    size_t len = strlen(c->bytes);
    check_case(c, 0, 0);
    check_case(c, 0, 1);
    for (cut = 1; cut < len; cut++) check_case(c, cut, 0);
  }
}

/* Only the first LKVNET_HTTPRESP_TEXT bytes are kept, and only for an
 * error when the caller asked; a head past LKVNET_HTTPRESP_MAX_HEAD is
 * refused, whole or in pieces. */
static void test_limits(void) {
  size_t n = LKVNET_HTTPRESP_MAX_HEAD + 100, used, i;
  char *big = malloc(n);
  lkvnet_httpresp r;
  static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
  static const char bad[] =
      "HTTP/1.1 400 Bad\r\nContent-Length: 5\r\n\r\nhello";
  CHECK(big != NULL);
  if (big == NULL) return;

  lkvnet_httpresp_start(&r, 1);
  CHECK(lkvnet_httpresp_feed(&r, ok, sizeof ok - 1, &used) == 1);
  CHECK(r.text_len == 0); /* a success keeps nothing */
  lkvnet_httpresp_start(&r, 0);
  CHECK(lkvnet_httpresp_feed(&r, bad, sizeof bad - 1, &used) == 1);
  CHECK(r.status == 400 && r.text_len == 0); /* not asked */

  memcpy(big, "HTTP/1.1 500 X\r\nContent-Length: 1000\r\n\r\n", 40);
  for (i = 40; i < 1040; i++) big[i] = (char)('a' + i % 26);
  lkvnet_httpresp_start(&r, 1);
  CHECK(lkvnet_httpresp_feed(&r, big, 1040, &used) == 1 && used == 1040);
  CHECK(r.text_len == LKVNET_HTTPRESP_TEXT &&
        memcmp(r.text, big + 40, LKVNET_HTTPRESP_TEXT) == 0);

  memcpy(big, "HTTP/1.1 200 OK\r\nX: ", 20);
  memset(big + 20, 'x', n - 20);
  lkvnet_httpresp_start(&r, 1);
  CHECK(lkvnet_httpresp_feed(&r, big, LKVNET_HTTPRESP_MAX_HEAD, &used) == 0);
  CHECK(lkvnet_httpresp_feed(&r, big, LKVNET_HTTPRESP_MAX_HEAD + 1, &used) ==
        -1);
  memcpy(big + n - 4, "\r\n\r\n", 4);
  lkvnet_httpresp_start(&r, 1);
  CHECK(lkvnet_httpresp_feed(&r, big, n, &used) == -1);
  free(big);
}

/* A chunk-size or trailer line past LKVNET_HTTPRESP_MAX_HEAD is refused
 * whole as it is in pieces (found by fuzz_httpresp: whole, such a line
 * was taken, fed as it came it was refused). */
static void test_long_lines(void) {
  static const char head[] =
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
  size_t hl = sizeof head - 1, ext = LKVNET_HTTPRESP_MAX_HEAD + 10, n, k;
  char *b = malloc(hl + ext + 64);
  CHECK(b != NULL);
  if (b == NULL) return;
  for (k = 0; k < 2; k++) {
    Outcome whole, bytes;
    memcpy(b, head, hl);
    n = hl;
    if (k == 0) { /* a size line with a long extension */
      memcpy(b + n, "1;x=", 4);
      memset(b + n + 4, 'y', ext);
      n += 4 + ext;
      memcpy(b + n, "\r\nz\r\n0\r\n\r\n", 10);
      n += 10;
    } else { /* a long trailer line */
      memcpy(b + n, "0\r\nX: ", 6);
      memset(b + n + 6, 'y', ext);
      n += 6 + ext;
      memcpy(b + n, "\r\n\r\n", 4);
      n += 4;
    }
    whole = feed(b, n, 0, 0);
    bytes = feed(b, n, 0, 1);
    CHECK(whole.rc == -1);
    CHECK(bytes.rc == -1);
  }
  free(b);
}

/* Once done or refused, the reader takes nothing more (the trailer state
 * used to read on after the empty line; a refused head, to start over). */
static void test_no_more_bytes(void) {
  static const char chunked[] =
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
  static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
  lkvnet_httpresp r;
  size_t used;
  lkvnet_httpresp_start(&r, 0);
  CHECK(lkvnet_httpresp_feed(&r, chunked, sizeof chunked - 1, &used) == 1);
  CHECK(used == sizeof chunked - 1);
  CHECK(lkvnet_httpresp_feed(&r, "\r\n", 2, &used) == 1 && used == 0);
  CHECK(lkvnet_httpresp_feed(&r, ok, sizeof ok - 1, &used) == 1 && used == 0);
  lkvnet_httpresp_start(&r, 0);
  CHECK(lkvnet_httpresp_feed(&r, "HELLO\r\n\r\n", 9, &used) == -1);
  CHECK(lkvnet_httpresp_feed(&r, ok, sizeof ok - 1, &used) == -1 && used == 0);
  lkvnet_httpresp_start(&r, 0);
  CHECK(lkvnet_httpresp_feed(&r, ok, sizeof ok - 1, &used) == 1);
}

int main(void) {
  test_cases();
  test_limits();
  test_long_lines();
  test_no_more_bytes();
  TEST_MAIN_END();
}
