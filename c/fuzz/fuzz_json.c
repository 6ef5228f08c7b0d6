/* fuzz_json.c - libFuzzer target: the HTTP body reader over arbitrary
 * bytes either rejects them with a message or yields members whose
 * strings are valid UTF-8; writing every string member back out and
 * parsing that again must give the same strings (round trip). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
  lkvnet_json_object o;
  char err[LKVNET_JSON_ERR_LEN];
  memset(&o, 0, sizeof o);
  if (lkvnet_json_parse_object((const char *)data, n, &o, err) != 0) {
    if (err[0] == '\0') abort(); /* a rejection always says why */
    lkvnet_json_free(&o);
    return 0;
  }
  lkvnet_jbuf b;
  memset(&b, 0, sizeof b);
  lkvnet_jbuf_lit(&b, "{");
  int first = 1;
  for (size_t i = 0; i < o.n; i++) {
    const lkvnet_json_member *m = &o.m[i];
    if (!lkvnet_utf8_valid(m->name, m->name_len)) abort();
    if (m->type != LKVNET_JSON_STRING) continue;
    if (!lkvnet_utf8_valid(m->str, m->len)) abort();
    if (!first) lkvnet_jbuf_lit(&b, ",");
    first = 0;
    lkvnet_jbuf_str(&b, m->name, m->name_len);
    lkvnet_jbuf_lit(&b, ":");
    lkvnet_jbuf_str(&b, m->str, m->len);
  }
  lkvnet_jbuf_lit(&b, "}");
  lkvnet_json_object o2;
  memset(&o2, 0, sizeof o2);
  if (lkvnet_json_parse_object(b.data, b.len, &o2, err) != 0) abort();
  for (size_t i = 0; i < o.n; i++) {
    const lkvnet_json_member *m = &o.m[i];
    if (m->type != LKVNET_JSON_STRING) continue;
    const lkvnet_json_member *m2 = lkvnet_json_get(&o2, m->name);
    /* names may hold \0: lkvnet_json_get matches by C string, so only
     * check members whose name has none */
    if (memchr(m->name, 0, m->name_len)) continue;
    if (m2 == NULL || m2->len != m->len || memcmp(m2->str, m->str, m->len) != 0)
      abort();
  }
  lkvnet_json_free(&o2);
  lkvnet_jbuf_free(&b);
  lkvnet_json_free(&o);
  return 0;
}
