/* json.h - the strict JSON reader and writer of the HTTP bodies (net room).
 *
 * Reader: one JSON text whose top level is an object; RFC 8259 grammar,
 * nothing more (no comments, trailing commas, NaN, single quotes, leading
 * zeros). The input must be valid UTF-8 (overlong forms, surrogates and
 * code points over U+10FFFF are rejected); \uXXXX escapes decode to UTF-8,
 * a surrogate pair to one 4-byte sequence, a lone surrogate is an error.
 * Nesting is bounded by LKVNET_JSON_MAX_DEPTH. Only the top-level members
 * are kept; nested arrays and objects are checked and skipped (the HTTP
 * API wants strings only and reports any other type by name).
 *
 * Writer: a growable byte buffer; strings are escaped so the output is
 * valid JSON as long as the bytes given are valid UTF-8 (callers check
 * with lkvnet_utf8_valid and choose another encoding otherwise).
 *
 * Thread safety: none needed; every object belongs to its caller.
 */
#ifndef LKVNET_JSON_H
#define LKVNET_JSON_H

#include <stddef.h>
#include <stdint.h>

#define LKVNET_JSON_MAX_DEPTH 32 /* levels, the top object included */
#define LKVNET_JSON_ERR_LEN 128

typedef enum lkvnet_json_type {
  LKVNET_JSON_NULL,
  LKVNET_JSON_BOOL,
  LKVNET_JSON_NUMBER,
  LKVNET_JSON_STRING,
  LKVNET_JSON_ARRAY,
  LKVNET_JSON_OBJECT
} lkvnet_json_type;

/* One top-level member. name and str are decoded bytes, NUL-terminated for
 * convenience but binary safe by length (\u0000 gives an embedded zero).
 * str is set for strings, and for numbers and booleans holds the literal
 * as written ("42", "true"); NULL for null, arrays and objects. */
typedef struct lkvnet_json_member {
  char *name;
  size_t name_len;
  lkvnet_json_type type;
  char *str;
  size_t len;
} lkvnet_json_member;

typedef struct lkvnet_json_object {
  lkvnet_json_member *m;
  size_t n, cap;
} lkvnet_json_object;

/* Parse text[0 .. len) into *out (zero it first). Returns 0, or -1 with a
 * sentence in err ("byte 12: expected ':' after a member name"). On error
 * *out holds nothing the caller must free beyond lkvnet_json_free, which is
 * always safe to call. A duplicate member name is an error. */
int lkvnet_json_parse_object(const char *text, size_t len,
                             lkvnet_json_object *out,
                             char err[LKVNET_JSON_ERR_LEN]);

/* The member called name, or NULL. Borrowed from o. */
const lkvnet_json_member *lkvnet_json_get(const lkvnet_json_object *o,
                                          const char *name);

/* The member called name as an unsigned integer (digits only, no sign,
 * fraction or exponent, at most UINT64_MAX): 0, else -1. */
int lkvnet_json_u64(const lkvnet_json_object *o, const char *name,
                    uint64_t *out);

/* 1 when the member called name is the literal true. */
int lkvnet_json_true(const lkvnet_json_object *o, const char *name);

/* The type's name as an error message says it: "a string", "a number". */
const char *lkvnet_json_type_name(lkvnet_json_type t);

void lkvnet_json_free(lkvnet_json_object *o);

/* 1 when s[0 .. n) is valid UTF-8 (shortest forms, no surrogates). */
int lkvnet_utf8_valid(const char *s, size_t n);

/* ---- writer ---------------------------------------------------------- */

/* A growable buffer. Start it zeroed; free with lkvnet_jbuf_free. After an
 * allocation failure every call is a no-op and failed is set: check once
 * at the end. */
typedef struct lkvnet_jbuf {
  char *data;
  size_t len, cap;
  int failed;
} lkvnet_jbuf;

void lkvnet_jbuf_raw(lkvnet_jbuf *b, const char *s, size_t n);
void lkvnet_jbuf_lit(lkvnet_jbuf *b, const char *s); /* NUL-terminated */
/* A JSON string literal, quotes included: " \ and control characters are
 * escaped (\n \r \t \b \f, else \u00XX), everything else copied. */
void lkvnet_jbuf_str(lkvnet_jbuf *b, const char *s, size_t n);
void lkvnet_jbuf_u64(lkvnet_jbuf *b, uint64_t v);
void lkvnet_jbuf_double(lkvnet_jbuf *b, double v); /* finite, else 0 */
/* s[0 .. n) in standard base64 (RFC 4648, padded), without quotes. */
void lkvnet_jbuf_base64(lkvnet_jbuf *b, const char *s, size_t n);
void lkvnet_jbuf_free(lkvnet_jbuf *b);

#endif
