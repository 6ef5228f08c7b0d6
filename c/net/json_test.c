/* json_test.c - the HTTP bodies' JSON reader and writer (json.c): the
 * grammar, every escape, surrogate pairs, UTF-8 checks, nesting bounds and
 * the writer's escaping, as tables of cases. */
#include "json.h"

#include <string.h>

#include "test.h"

static int parses(const char *text) {
  lkvnet_json_object o;
  char err[LKVNET_JSON_ERR_LEN];
  int rc;
  memset(&o, 0, sizeof o);
  rc = lkvnet_json_parse_object(text, strlen(text), &o, err);
  lkvnet_json_free(&o);
  return rc == 0;
}

/* The decoded string member "s" of text equals want[0 .. wlen). */
static int decodes(const char *text, const char *want, size_t wlen) {
  lkvnet_json_object o;
  char err[LKVNET_JSON_ERR_LEN];
  const lkvnet_json_member *m;
  int ok;
  memset(&o, 0, sizeof o);
  if (lkvnet_json_parse_object(text, strlen(text), &o, err) != 0) {
    fprintf(stderr, "parse %s: %s\n", text, err);
    return 0;
  }
  m = lkvnet_json_get(&o, "s");
  ok = m && m->type == LKVNET_JSON_STRING && m->len == wlen &&
       memcmp(m->str, want, wlen) == 0;
  lkvnet_json_free(&o);
  return ok;
}

static void test_good(void) {
  static const char *const good[] = {
      "{}",
      " { } ",
      "{\"a\":\"b\"}",
      "{\"a\":1,\"b\":-0.5e+10,\"c\":true,"
      "\"d\":false,\"e\":null,\"f\":[1,[2,{}]],\"g\":{\"h\":[]}}",
      "\n\t{\"k\" : \"v\" }\r\n",
      "{\"n\":0}",
      "{\"n\":1E5}",
      "{\"n\":-0}",
  };
  size_t i;
  for (i = 0; i < sizeof good / sizeof good[0]; i++) {
    if (!parses(good[i])) fprintf(stderr, "rejected: %s\n", good[i]);
    CHECK(parses(good[i]));
  }
}

static void test_bad(void) {
  static const char *const bad[] = {
      "",
      " ",
      "[]",
      "\"s\"",
      "1",
      "null",
      "{",
      "{\"a\"}",
      "{\"a\":}",
      "{\"a\":1,}",
      "{,}",
      "{'a':1}",
      "{\"a\":01}",
      "{\"a\":1.}",
      "{\"a\":.5}",
      "{\"a\":1e}",
      "{\"a\":+1}",
      "{\"a\":NaN}",
      "{\"a\":tru}",
      "{\"a\":nul}",
      "{\"a\":\"x}",
      "{\"a\":\"\\x\"}",
      "{\"a\":\"\\u12\"}",
      "{\"a\":\"\\uZZZZ\"}",
      "{\"a\":\"\\uD800\"}",
      "{\"a\":\"\\uDC00\"}",
      "{\"a\":\"\\uD800\\u0041\"}",
      "{\"a\":\"tab\there\"}",
      "{\"a\":\"nl\nhere\"}",
      "{} x",
      "{}{}",
      "{\"a\":1 \"b\":2}",
      "{\"a\":[1,2}",
      "{\"a\":{\"b\":1]}",
      "{\"a\":\"\xff\"}",
      "{\"a\":\"\xc0\xaf\"}",
      "{\"a\":\"\xed\xa0\x80\"}",
      "{\"a\":\"\xf4\x90\x80\x80\"}",
      "{\"a\":\"\xe2\x82\"}",
      "{\"a\":1,\"a\":2}",
      "/* c */{}",
      "{\"a\":1}//",
  };
  size_t i;
  for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    if (parses(bad[i])) fprintf(stderr, "accepted: %s\n", bad[i]);
    CHECK(!parses(bad[i]));
  }
}

static void test_depth(void) {
  char deep[2 * LKVNET_JSON_MAX_DEPTH + 64];
  size_t n = 0, i, d;
  for (d = LKVNET_JSON_MAX_DEPTH - 1; d <= LKVNET_JSON_MAX_DEPTH + 1; d++) {
    n = 0;
    memcpy(deep + n, "{\"a\":", 5);
    n += 5;
    for (i = 0; i < d; i++) deep[n++] = '[';
    for (i = 0; i < d; i++) deep[n++] = ']';
    deep[n++] = '}';
    deep[n] = '\0';
    CHECK(parses(deep) == (d <= LKVNET_JSON_MAX_DEPTH - 1));
  }
  {
    /* very deep input must fail cleanly, not overflow the stack */
    static char huge[200001];
    memcpy(huge, "{\"a\":", 5);
    memset(huge + 5, '[', sizeof huge - 6);
    huge[sizeof huge - 1] = '\0';
    CHECK(!parses(huge));
  }
}

static void test_escapes(void) {
  CHECK(decodes("{\"s\":\"\"}", "", 0));
  CHECK(decodes("{\"s\":\"a\\\"b\\\\c\\/d\"}", "a\"b\\c/d", 7));
  CHECK(decodes("{\"s\":\"\\b\\f\\n\\r\\t\"}", "\b\f\n\r\t", 5));
  CHECK(decodes("{\"s\":\"\\u0000x\"}", "\0x", 2));
  CHECK(decodes("{\"s\":\"\\u00e9\\u00E9\"}", "\xc3\xa9\xc3\xa9", 4));
  CHECK(decodes("{\"s\":\"\\u20ac\"}", "\xe2\x82\xac", 3));
  CHECK(decodes("{\"s\":\"\\uD83D\\uDE00\"}", "\xf0\x9f\x98\x80", 4));
  CHECK(decodes("{\"s\":\"\\udbff\\udfff\"}", "\xf4\x8f\xbf\xbf", 4));
  CHECK(decodes("{\"s\":\"h\xc3\xa9 \xf0\x9f\x98\x80\"}",
                "h\xc3\xa9 \xf0\x9f\x98\x80", 8));
}

static void test_members(void) {
  lkvnet_json_object o;
  char err[LKVNET_JSON_ERR_LEN];
  const char *t = "{\"key\":\"k\",\"value\":12,\"x\":{\"y\":\"z\"}}";
  memset(&o, 0, sizeof o);
  CHECK(lkvnet_json_parse_object(t, strlen(t), &o, err) == 0);
  CHECK(o.n == 3);
  CHECK(lkvnet_json_get(&o, "key")->type == LKVNET_JSON_STRING);
  CHECK(lkvnet_json_get(&o, "value")->type == LKVNET_JSON_NUMBER);
  CHECK(lkvnet_json_get(&o, "x")->type == LKVNET_JSON_OBJECT);
  CHECK(lkvnet_json_get(&o, "y") == NULL);
  lkvnet_json_free(&o);
  t = "{\"a\":1,\"a\":2}";
  CHECK(lkvnet_json_parse_object(t, strlen(t), &o, err) != 0);
  CHECK(strstr(err, "duplicate") != NULL);
  t = "{\"a\" 1}";
  CHECK(lkvnet_json_parse_object(t, strlen(t), &o, err) != 0);
  CHECK(strncmp(err, "byte 5:", 7) == 0);
  lkvnet_json_free(&o);
}

static void test_utf8(void) {
  CHECK(lkvnet_utf8_valid("", 0));
  CHECK(lkvnet_utf8_valid("abc\0d", 5));
  CHECK(lkvnet_utf8_valid("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9));
  CHECK(!lkvnet_utf8_valid("\xff", 1));
  CHECK(!lkvnet_utf8_valid("\xc3", 1));
  CHECK(!lkvnet_utf8_valid("\xc1\xbf", 2));
  CHECK(!lkvnet_utf8_valid("\xe0\x80\xaf", 3));
  CHECK(!lkvnet_utf8_valid("\xed\xb0\x80", 3));
  CHECK(!lkvnet_utf8_valid("\xf8\x88\x80\x80\x80", 5));
}

static void test_writer(void) {
  lkvnet_jbuf b;
  const char *want;
  memset(&b, 0, sizeof b);
  lkvnet_jbuf_str(&b, "a\"\\\n\r\t\b\f\x01\x1f\0z\xc3\xa9", 14);
  want = "\"a\\\"\\\\\\n\\r\\t\\b\\f\\u0001\\u001f\\u0000z\xc3\xa9\"";
  CHECK(!b.failed && b.len == strlen(want) && memcmp(b.data, want, b.len) == 0);
  b.len = 0;
  lkvnet_jbuf_u64(&b, 18446744073709551615ull);
  CHECK(b.len == 20 && memcmp(b.data, "18446744073709551615", 20) == 0);
  b.len = 0;
  lkvnet_jbuf_u64(&b, 0);
  lkvnet_jbuf_u64(&b, 7);
  lkvnet_jbuf_u64(&b, 1020);
  CHECK(b.len == 6 && memcmp(b.data, "071020", 6) == 0);
  b.len = 0;
  lkvnet_jbuf_base64(&b,
                     "\0\xff\x10"
                     "ab",
                     5);
  CHECK(b.len == 8 && memcmp(b.data, "AP8QYWI=", 8) == 0);
  b.len = 0;
  lkvnet_jbuf_base64(&b, "a", 1);
  CHECK(b.len == 4 && memcmp(b.data, "YQ==", 4) == 0);
  lkvnet_jbuf_free(&b);
  /* what the writer makes, the reader reads back */
  {
    lkvnet_json_object o;
    char err[LKVNET_JSON_ERR_LEN];
    const char raw[] = "x\0\x7f\"\\\x01 \xf0\x9f\x98\x80";
    memset(&o, 0, sizeof o);
    lkvnet_jbuf_lit(&b, "{\"s\":");
    lkvnet_jbuf_str(&b, raw, sizeof raw - 1);
    lkvnet_jbuf_lit(&b, "}");
    CHECK(lkvnet_json_parse_object(b.data, b.len, &o, err) == 0);
    CHECK(o.n == 1 && o.m[0].len == sizeof raw - 1 &&
          memcmp(o.m[0].str, raw, sizeof raw - 1) == 0);
    lkvnet_json_free(&o);
    lkvnet_jbuf_free(&b);
  }
}

int main(void) {
  test_good();
  test_bad();
  test_depth();
  test_escapes();
  test_members();
  test_utf8();
  test_writer();
  TEST_MAIN_END();
}
