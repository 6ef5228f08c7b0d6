/* json.c - the strict JSON reader and writer of the HTTP bodies; the
 * contract is in json.h. A recursive descent over the bytes with an
 * explicit depth bound, so a hostile body cannot exhaust the stack. */
#include "json.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* {======================================================================
** UTF-8
** ======================================================================= */

/* Length of the valid UTF-8 sequence at s[0 .. n), or 0 when invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
  unsigned c = s[0];
  if (c < 0x80) return 1;
  if (c < 0xC2) return 0; /* continuation byte or overlong 2-byte lead */
  if (c < 0xE0) return (n >= 2 && (s[1] & 0xC0) == 0x80) ? 2 : 0;
  if (c < 0xF0) {
    if (n < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80) return 0;
    if (c == 0xE0 && s[1] < 0xA0) return 0;  /* overlong */
    if (c == 0xED && s[1] >= 0xA0) return 0; /* UTF-16 surrogate */
    return 3;
  }
  if (c < 0xF5) {
    if (n < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 ||
        (s[3] & 0xC0) != 0x80)
      return 0;
    if (c == 0xF0 && s[1] < 0x90) return 0;  /* overlong */
    if (c == 0xF4 && s[1] >= 0x90) return 0; /* over U+10FFFF */
    return 4;
  }
  return 0;
}

int lkvnet_utf8_valid(const char *s, size_t n) {
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0;
  while (i < n) {
    size_t k;
    if (p[i] < 0x80) {
      i++;
      continue;
    }
    k = utf8_seq(p + i, n - i);
    if (k == 0) return 0;
    i += k;
  }
  return 1;
}

/* }====================================================================== */

/* {======================================================================
** Reader
** ======================================================================= */

typedef struct Parser {
  const unsigned char *s;
  size_t n, pos;
  char *err; /* LKVNET_JSON_ERR_LEN bytes */
  /* scratch for decoding strings; reused, grown as needed */
  char *tmp;
  size_t tlen, tcap;
} Parser;

static int fail(Parser *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int fail(Parser *p, const char *fmt, ...) {
  va_list ap;
  int k = snprintf(p->err, LKVNET_JSON_ERR_LEN, "byte %zu: ", p->pos);
  if (k < 0 || k >= LKVNET_JSON_ERR_LEN) k = 0;
  va_start(ap, fmt);
  vsnprintf(p->err + k, (size_t)(LKVNET_JSON_ERR_LEN - k), fmt, ap);
  va_end(ap);
  return -1;
}

static void skip_ws(Parser *p) {
  while (p->pos < p->n) {
    unsigned char c = p->s[p->pos];
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
    p->pos++;
  }
}

static int tmp_put(Parser *p, const void *b, size_t k) {
  if (p->tlen + k + 1 > p->tcap) {
    size_t cap = p->tcap ? p->tcap : 64;
    char *t;
    while (cap < p->tlen + k + 1) cap *= 2;
    t = realloc(p->tmp, cap);
    if (t == NULL) return fail(p, "out of memory");
    p->tmp = t;
    p->tcap = cap;
  }
  memcpy(p->tmp + p->tlen, b, k);
  p->tlen += k;
  p->tmp[p->tlen] = '\0';
  return 0;
}

static int hex4(Parser *p, unsigned *out) {
  unsigned v = 0;
  size_t i;
  if (p->n - p->pos < 4) return fail(p, "truncated \\u escape");
  for (i = 0; i < 4; i++) {
    unsigned char c = p->s[p->pos + i];
    v <<= 4;
    if (c >= '0' && c <= '9')
      v |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f')
      v |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F')
      v |= (unsigned)(c - 'A' + 10);
    else
      return fail(p, "bad hex digit in \\u escape");
  }
  p->pos += 4;
  *out = v;
  return 0;
}

static int put_utf8(Parser *p, unsigned cp) {
  unsigned char b[4];
  size_t k;
  if (cp < 0x80) {
    b[0] = (unsigned char)cp;
    k = 1;
  } else if (cp < 0x800) {
    b[0] = (unsigned char)(0xC0 | (cp >> 6));
    b[1] = (unsigned char)(0x80 | (cp & 0x3F));
    k = 2;
  } else if (cp < 0x10000) {
    b[0] = (unsigned char)(0xE0 | (cp >> 12));
    b[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    b[2] = (unsigned char)(0x80 | (cp & 0x3F));
    k = 3;
  } else {
    b[0] = (unsigned char)(0xF0 | (cp >> 18));
    b[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    b[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    b[3] = (unsigned char)(0x80 | (cp & 0x3F));
    k = 4;
  }
  return tmp_put(p, b, k);
}

/* A string at p->pos (which holds '"'), decoded into p->tmp[0 .. tlen). */
static int parse_string(Parser *p) {
  p->tlen = 0;
  if (tmp_put(p, "", 0) < 0) return -1;
  p->pos++; /* the opening quote */
  for (;;) {
    unsigned char c;
    size_t start = p->pos;
    /* copy the run of plain bytes in one go */
    while (p->pos < p->n) {
      c = p->s[p->pos];
      if (c == '"' || c == '\\' || c < 0x20 || c >= 0x80) break;
      p->pos++;
    }
    if (p->pos > start && tmp_put(p, p->s + start, p->pos - start) < 0)
      return -1;
    if (p->pos >= p->n) return fail(p, "unterminated string");
    c = p->s[p->pos];
    if (c == '"') {
      p->pos++;
      return 0;
    }
    if (c < 0x20) return fail(p, "unescaped control character in a string");
    if (c >= 0x80) {
      size_t k = utf8_seq(p->s + p->pos, p->n - p->pos);
      if (k == 0) return fail(p, "invalid UTF-8 in a string");
      if (tmp_put(p, p->s + p->pos, k) < 0) return -1;
      p->pos += k;
      continue;
    }
    /* a backslash escape */
    p->pos++;
    if (p->pos >= p->n) return fail(p, "unterminated string");
    c = p->s[p->pos++];
    switch (c) {
      case '"':
      case '\\':
      case '/':
        if (tmp_put(p, &c, 1) < 0) return -1;
        break;
      case 'b':
        if (tmp_put(p, "\b", 1) < 0) return -1;
        break;
      case 'f':
        if (tmp_put(p, "\f", 1) < 0) return -1;
        break;
      case 'n':
        if (tmp_put(p, "\n", 1) < 0) return -1;
        break;
      case 'r':
        if (tmp_put(p, "\r", 1) < 0) return -1;
        break;
      case 't':
        if (tmp_put(p, "\t", 1) < 0) return -1;
        break;
      case 'u': {
        unsigned cp, lo;
        if (hex4(p, &cp) < 0) return -1;
        if (cp >= 0xDC00 && cp <= 0xDFFF)
          return fail(p, "lone low surrogate \\u%04X", cp);
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          if (p->n - p->pos < 2 || p->s[p->pos] != '\\' ||
              p->s[p->pos + 1] != 'u')
            return fail(p, "high surrogate \\u%04X without its low half", cp);
          p->pos += 2;
          if (hex4(p, &lo) < 0) return -1;
          if (lo < 0xDC00 || lo > 0xDFFF)
            return fail(p, "high surrogate \\u%04X followed by \\u%04X", cp,
                        lo);
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        if (put_utf8(p, cp) < 0) return -1;
        break;
      }
      default:
        p->pos--;
        return fail(p, "invalid escape '\\%c'",
                    c >= 0x20 && c < 0x7F ? c : '?');
    }
  }
}

static int parse_number(Parser *p) {
  size_t d;
  if (p->s[p->pos] == '-') p->pos++;
  if (p->pos >= p->n) return fail(p, "truncated number");
  if (p->s[p->pos] == '0') {
    p->pos++;
  } else if (p->s[p->pos] >= '1' && p->s[p->pos] <= '9') {
    while (p->pos < p->n && p->s[p->pos] >= '0' && p->s[p->pos] <= '9')
      p->pos++;
  } else {
    return fail(p, "expected a digit");
  }
  if (p->pos < p->n && p->s[p->pos] == '.') {
    p->pos++;
    d = p->pos;
    while (p->pos < p->n && p->s[p->pos] >= '0' && p->s[p->pos] <= '9')
      p->pos++;
    if (p->pos == d) return fail(p, "expected a digit after '.'");
  }
  if (p->pos < p->n && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
    p->pos++;
    if (p->pos < p->n && (p->s[p->pos] == '+' || p->s[p->pos] == '-')) p->pos++;
    d = p->pos;
    while (p->pos < p->n && p->s[p->pos] >= '0' && p->s[p->pos] <= '9')
      p->pos++;
    if (p->pos == d) return fail(p, "expected a digit in the exponent");
  }
  return 0;
}

static int literal(Parser *p, const char *word) {
  size_t k = strlen(word);
  if (p->n - p->pos < k || memcmp(p->s + p->pos, word, k) != 0)
    return fail(p, "invalid literal (expected %s)", word);
  p->pos += k;
  return 0;
}

static int parse_value(Parser *p, int depth, lkvnet_json_type *type);

/* An array or object at p->pos; the string of each member name and value
 * lands in p->tmp and is dropped (nested values are checked, not kept). */
static int parse_container(Parser *p, int depth, int is_object) {
  char close = is_object ? '}' : ']';
  lkvnet_json_type t;
  if (depth > LKVNET_JSON_MAX_DEPTH)
    return fail(p, "nesting deeper than %d", LKVNET_JSON_MAX_DEPTH);
  p->pos++;
  skip_ws(p);
  if (p->pos < p->n && p->s[p->pos] == close) {
    p->pos++;
    return 0;
  }
  for (;;) {
    skip_ws(p);
    if (is_object) {
      if (p->pos >= p->n || p->s[p->pos] != '"')
        return fail(p, "expected a member name (a string)");
      if (parse_string(p) < 0) return -1;
      skip_ws(p);
      if (p->pos >= p->n || p->s[p->pos] != ':')
        return fail(p, "expected ':' after a member name");
      p->pos++;
    }
    if (parse_value(p, depth + 1, &t) < 0) return -1;
    skip_ws(p);
    if (p->pos >= p->n) return fail(p, "unexpected end of input");
    if (p->s[p->pos] == ',') {
      p->pos++;
      continue;
    }
    if (p->s[p->pos] == close) {
      p->pos++;
      return 0;
    }
    return fail(p, "expected ',' or '%c'", close);
  }
}

/* Any value; a string's bytes are left in p->tmp. */
static int parse_value(Parser *p, int depth, lkvnet_json_type *type) {
  skip_ws(p);
  if (p->pos >= p->n) return fail(p, "unexpected end of input");
  switch (p->s[p->pos]) {
    case '"': *type = LKVNET_JSON_STRING; return parse_string(p);
    case '{': *type = LKVNET_JSON_OBJECT; return parse_container(p, depth, 1);
    case '[': *type = LKVNET_JSON_ARRAY; return parse_container(p, depth, 0);
    case 't': *type = LKVNET_JSON_BOOL; return literal(p, "true");
    case 'f': *type = LKVNET_JSON_BOOL; return literal(p, "false");
    case 'n': *type = LKVNET_JSON_NULL; return literal(p, "null");
    default:
      if (p->s[p->pos] == '-' || (p->s[p->pos] >= '0' && p->s[p->pos] <= '9')) {
        *type = LKVNET_JSON_NUMBER;
        return parse_number(p);
      }
      return fail(
          p, "unexpected character '%c'",
          p->s[p->pos] >= 0x20 && p->s[p->pos] < 0x7F ? p->s[p->pos] : '?');
  }
}

static char *dup_bytes(const char *s, size_t n) {
  char *d = malloc(n + 1);
  if (d == NULL) return NULL;
  if (n) memcpy(d, s, n);
  d[n] = '\0';
  return d;
}

static int add_member(Parser *p, lkvnet_json_object *o, char *name,
                      size_t nlen) {
  if (o->n == o->cap) {
    size_t cap = o->cap ? o->cap * 2 : 4;
    lkvnet_json_member *m = realloc(o->m, cap * sizeof *m);
    if (m == NULL) {
      free(name);
      return fail(p, "out of memory");
    }
    o->m = m;
    o->cap = cap;
  }
  memset(&o->m[o->n], 0, sizeof o->m[o->n]);
  o->m[o->n].name = name;
  o->m[o->n].name_len = nlen;
  o->n++;
  return 0;
}

static int parse_top(Parser *p, lkvnet_json_object *o) {
  skip_ws(p);
  if (p->pos >= p->n) return fail(p, "empty body (expected a JSON object)");
  if (p->s[p->pos] != '{') return fail(p, "expected a JSON object");
  p->pos++;
  skip_ws(p);
  if (p->pos < p->n && p->s[p->pos] == '}') {
    p->pos++;
  } else {
    for (;;) {
      lkvnet_json_member *m;
      char *name;
      size_t nlen, vstart;
      skip_ws(p);
      if (p->pos >= p->n || p->s[p->pos] != '"')
        return fail(p, "expected a member name (a string)");
      if (parse_string(p) < 0) return -1;
      nlen = p->tlen;
      if (lkvnet_json_get(o, p->tmp) != NULL &&
          lkvnet_json_get(o, p->tmp)->name_len == nlen)
        return fail(p, "duplicate member \"%.40s\"", p->tmp);
      if ((name = dup_bytes(p->tmp, nlen)) == NULL)
        return fail(p, "out of memory");
      if (add_member(p, o, name, nlen) < 0) return -1;
      skip_ws(p);
      if (p->pos >= p->n || p->s[p->pos] != ':')
        return fail(p, "expected ':' after a member name");
      p->pos++;
      m = &o->m[o->n - 1];
      skip_ws(p);
      vstart = p->pos;
      if (parse_value(p, 2, &m->type) < 0) return -1; /* top object = 1 */
      if (m->type == LKVNET_JSON_STRING) {
        if ((m->str = dup_bytes(p->tmp, p->tlen)) == NULL)
          return fail(p, "out of memory");
        m->len = p->tlen;
      } else if (m->type == LKVNET_JSON_NUMBER || m->type == LKVNET_JSON_BOOL) {
        /* the literal's text, for lkvnet_json_u64 and lkvnet_json_true */
        if ((m->str = dup_bytes((const char *)p->s + vstart,
                                p->pos - vstart)) == NULL)
          return fail(p, "out of memory");
        m->len = p->pos - vstart;
      }
      skip_ws(p);
      if (p->pos >= p->n) return fail(p, "unexpected end of input");
      if (p->s[p->pos] == ',') {
        p->pos++;
        continue;
      }
      if (p->s[p->pos] == '}') {
        p->pos++;
        break;
      }
      return fail(p, "expected ',' or '}'");
    }
  }
  skip_ws(p);
  if (p->pos != p->n) return fail(p, "trailing characters after the object");
  return 0;
}

int lkvnet_json_parse_object(const char *text, size_t len,
                             lkvnet_json_object *out,
                             char err[LKVNET_JSON_ERR_LEN]) {
  Parser p;
  int rc;
  memset(&p, 0, sizeof p);
  p.s = (const unsigned char *)text;
  p.n = len;
  p.err = err;
  err[0] = '\0';
  rc = parse_top(&p, out);
  free(p.tmp);
  if (rc < 0) lkvnet_json_free(out);
  return rc;
}

const lkvnet_json_member *lkvnet_json_get(const lkvnet_json_object *o,
                                          const char *name) {
  size_t i, k = strlen(name);
  for (i = 0; i < o->n; i++)
    if (o->m[i].name_len == k && memcmp(o->m[i].name, name, k) == 0)
      return &o->m[i];
  return NULL;
}

const char *lkvnet_json_type_name(lkvnet_json_type t) {
  switch (t) {
    case LKVNET_JSON_NULL: return "null";
    case LKVNET_JSON_BOOL: return "a boolean";
    case LKVNET_JSON_NUMBER: return "a number";
    case LKVNET_JSON_STRING: return "a string";
    case LKVNET_JSON_ARRAY: return "an array";
    default: return "an object";
  }
}

void lkvnet_json_free(lkvnet_json_object *o) {
  size_t i;
  for (i = 0; i < o->n; i++) {
    free(o->m[i].name);
    free(o->m[i].str);
  }
  free(o->m);
  memset(o, 0, sizeof *o);
}

/* }====================================================================== */

/* {======================================================================
** Writer
** ======================================================================= */

static int jbuf_reserve(lkvnet_jbuf *b, size_t n) {
  if (b->failed) return -1;
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    char *d;
    while (cap < b->len + n) cap *= 2;
    d = realloc(b->data, cap);
    if (d == NULL) {
      b->failed = 1;
      return -1;
    }
    b->data = d;
    b->cap = cap;
  }
  return 0;
}

void lkvnet_jbuf_raw(lkvnet_jbuf *b, const char *s, size_t n) {
  if (n == 0 || jbuf_reserve(b, n) < 0) return;
  memcpy(b->data + b->len, s, n);
  b->len += n;
}

void lkvnet_jbuf_lit(lkvnet_jbuf *b, const char *s) {
  lkvnet_jbuf_raw(b, s, strlen(s));
}

void lkvnet_jbuf_str(lkvnet_jbuf *b, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  size_t i, start = 0;
  lkvnet_jbuf_raw(b, "\"", 1);
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    const char *esc = NULL;
    char u[6];
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    lkvnet_jbuf_raw(b, s + start, i - start);
    start = i + 1;
    switch (c) {
      case '"': esc = "\\\""; break;
      case '\\': esc = "\\\\"; break;
      case '\n': esc = "\\n"; break;
      case '\r': esc = "\\r"; break;
      case '\t': esc = "\\t"; break;
      case '\b': esc = "\\b"; break;
      case '\f': esc = "\\f"; break;
      default:
        u[0] = '\\';
        u[1] = 'u';
        u[2] = '0';
        u[3] = '0';
        u[4] = hex[c >> 4];
        u[5] = hex[c & 15];
        lkvnet_jbuf_raw(b, u, 6);
        continue;
    }
    lkvnet_jbuf_lit(b, esc);
  }
  lkvnet_jbuf_raw(b, s + start, n - start);
  lkvnet_jbuf_raw(b, "\"", 1);
}

void lkvnet_jbuf_u64(lkvnet_jbuf *b, uint64_t v) {
  /* by hand: every answer carries an index, and snprintf's format
   * machinery cost about 1% of a node's loop under load */
  char t[24], *p = t + sizeof t;
  do {
    *--p = (char)('0' + v % 10);
    v /= 10;
  } while (v != 0);
  lkvnet_jbuf_raw(b, p, (size_t)(t + sizeof t - p));
}

void lkvnet_jbuf_double(lkvnet_jbuf *b, double v) {
  char t[40];
  int k;
  if (!isfinite(v)) v = 0;
  k = snprintf(t, sizeof t, "%.17g", v);
  lkvnet_jbuf_raw(b, t, (size_t)k);
}

void lkvnet_jbuf_base64(lkvnet_jbuf *b, const char *s, size_t n) {
  static const char a[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const unsigned char *p = (const unsigned char *)s;
  size_t i;
  char q[4];
  for (i = 0; i + 2 < n; i += 3) {
    unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8 | p[i + 2];
    q[0] = a[v >> 18];
    q[1] = a[(v >> 12) & 63];
    q[2] = a[(v >> 6) & 63];
    q[3] = a[v & 63];
    lkvnet_jbuf_raw(b, q, 4);
  }
  if (i < n) {
    unsigned v =
        (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0);
    q[0] = a[v >> 18];
    q[1] = a[(v >> 12) & 63];
    q[2] = i + 1 < n ? a[(v >> 6) & 63] : '=';
    q[3] = '=';
    lkvnet_jbuf_raw(b, q, 4);
  }
}

void lkvnet_jbuf_free(lkvnet_jbuf *b) {
  free(b->data);
  memset(b, 0, sizeof *b);
}

/* }====================================================================== */

int lkvnet_json_u64(const lkvnet_json_object *o, const char *name,
                    uint64_t *out) {
  const lkvnet_json_member *m = lkvnet_json_get(o, name);
  uint64_t v = 0;
  size_t i;
  if (m == NULL || m->type != LKVNET_JSON_NUMBER || m->len == 0) return -1;
  for (i = 0; i < m->len; i++) {
    unsigned d = (unsigned char)m->str[i] - '0';
    if (d > 9 || v > (UINT64_MAX - d) / 10) return -1;
    v = v * 10 + d;
  }
  *out = v;
  return 0;
}

int lkvnet_json_true(const lkvnet_json_object *o, const char *name) {
  const lkvnet_json_member *m = lkvnet_json_get(o, name);
  return m != NULL && m->type == LKVNET_JSON_BOOL && m->str != NULL &&
         m->str[0] == 't';
}
