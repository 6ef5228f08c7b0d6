/* memberconf.c - node URLs and the kept configuration with them
 * (memberconf.h has the format). Pure: calls only lkvnet_node_id_of. */
#include "memberconf.h"

#include <stdio.h>
#include <string.h>

#include "coding.h"
#include "err.h"
#include "node.h"

static int bad(char *why, size_t n, const char *msg) {
  if (why != NULL && n > 0) snprintf(why, n, "%s", msg);
  return -1;
}

static int lower(int c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

int lkvnet_url_normalize(const char *url, size_t len, char *out, char *why,
                         size_t whylen) {
  size_t i = 7, o = 7, hs, port_digits = 0;
  unsigned long port = 0;
  while (len > 0 && url[len - 1] == '/') len--;
  if (len < 8 || lower(url[0]) != 'h' || lower(url[1]) != 't' ||
      lower(url[2]) != 't' || lower(url[3]) != 'p' || url[4] != ':' ||
      url[5] != '/' || url[6] != '/')
    return bad(why, whylen, "not a node URL (expected http://HOST:PORT)");
  if (len > LKVNET_URL_MAX)
    return bad(why, whylen, "a node URL is at most 200 bytes");
  memcpy(out, "http://", 7);
  hs = i;
  if (url[i] == '[') { /* an IPv6 address */
    out[o++] = url[i++];
    while (i < len && url[i] != ']') {
      int c = lower((unsigned char)url[i]);
      if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || c == ':' ||
            c == '.'))
        return bad(why, whylen, "a bad character in the URL's IPv6 host");
      out[o++] = (char)c;
      i++;
    }
    if (i == len || i == hs + 1)
      return bad(why, whylen, "an unterminated or empty IPv6 host");
    out[o++] = url[i++];
  } else {
    while (i < len && url[i] != ':') {
      int c = lower((unsigned char)url[i]);
      if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || c == '.' ||
            c == '-' || c == '_'))
        return bad(why, whylen,
                   c == '/' || c == '?' || c == '#' || c == '@'
                       ? "a node URL has no path, query or user"
                       : "a bad character in the URL's host");
      out[o++] = (char)c;
      i++;
    }
    if (i == hs) return bad(why, whylen, "the URL has no host");
  }
  if (i < len) {
    if (url[i] != ':') return bad(why, whylen, "garbage after the URL's host");
    out[o++] = url[i++];
    for (; i < len; i++, port_digits++) {
      if (url[i] < '0' || url[i] > '9')
        return bad(why, whylen, "the URL's port is not a number");
      if (port_digits == 0 && url[i] == '0')
        return bad(why, whylen, "the URL's port is 0 or has a leading zero");
      port = port * 10 + (unsigned long)(url[i] - '0');
      if (port > 65535) return bad(why, whylen, "the URL's port is over 65535");
      out[o++] = url[i];
    }
    if (port_digits == 0) return bad(why, whylen, "the URL's port is empty");
  }
  out[o] = '\0';
  return 0;
}

static size_t members(const lkvnet_raft_conf *c) {
  return c->n_voters + c->n_learners;
}

static uint64_t member_id(const lkvnet_raft_conf *c, size_t i) {
  return i < c->n_voters ? c->voters[i] : c->learners[i - c->n_voters];
}

size_t lkvnet_keptconf_encode(const lkvnet_keptconf *k, unsigned char *out) {
  size_t i, n = 3, m = members(&k->conf);
  out[0] = LKVNET_KEPTCONF_VERSION;
  out[1] = (unsigned char)k->conf.n_voters;
  out[2] = (unsigned char)k->conf.n_learners;
  for (i = 0; i < m; i++, n += 8) lkv_put64(out + n, member_id(&k->conf, i));
  for (i = 0; i < m; i++) {
    size_t l = strlen(k->urls[i]);
    out[n++] = (unsigned char)l;
    memcpy(out + n, k->urls[i], l);
    n += l;
  }
  return n;
}

int lkvnet_keptconf_decode(const unsigned char *b, size_t n, lkvnet_keptconf *k,
                           lkv_err *err) {
  size_t i, j, m, off, nv, nl;
  int v2 = n > 0 && b[0] == LKVNET_KEPTCONF_VERSION;
  memset(k, 0, sizeof *k);
  off = v2 ? 1 : 0;
  if (n < off + 2)
    return lkv_seterr(err, LKV_CORRUPTION,
                      "the kept configuration is %zu bytes", n);
  nv = b[off];
  nl = b[off + 1];
  m = nv + nl;
  off += 2;
  if (m > LKVNET_RAFT_MAX_MEMBERS || n < off + 8 * m ||
      (!v2 && n != off + 8 * m))
    return lkv_seterr(err, LKV_CORRUPTION,
                      "the kept configuration is %zu bytes for %zu voters "
                      "and %zu learners",
                      n, nv, nl);
  for (i = 0; i < m; i++, off += 8) {
    uint64_t id = lkv_get64(b + off);
    if (id == LKVNET_RAFT_NONE)
      return lkv_seterr(err, LKV_CORRUPTION,
                        "the kept configuration names node id 0");
    for (j = 0; j < i; j++)
      if (member_id(&k->conf, j) == id)
        return lkv_seterr(err, LKV_CORRUPTION,
                          "the kept configuration names %016llx twice",
                          (unsigned long long)id);
    if (i < nv)
      k->conf.voters[k->conf.n_voters++] = id;
    else
      k->conf.learners[k->conf.n_learners++] = id;
  }
  for (i = 0; v2 && i < m; i++) {
    size_t l;
    char why[120];
    if (off >= n || (l = b[off]) > n - off - 1)
      return lkv_seterr(err, LKV_CORRUPTION,
                        "the kept configuration ends inside member %zu's URL",
                        i + 1);
    off++;
    if (l > 0 &&
        (l > LKVNET_URL_MAX ||
         lkvnet_url_normalize((const char *)b + off, l, k->urls[i], why,
                              sizeof why) != 0 ||
         strlen(k->urls[i]) != l || memcmp(k->urls[i], b + off, l) != 0 ||
         lkvnet_node_id_of(k->urls[i]) != member_id(&k->conf, i)))
      return lkv_seterr(err, LKV_CORRUPTION,
                        "the kept configuration's URL of member %zu is not "
                        "that member's",
                        i + 1);
    off += l;
  }
  if (off != n)
    return lkv_seterr(err, LKV_CORRUPTION,
                      "the kept configuration has %zu bytes past its end",
                      n - off);
  return LKV_OK;
}
