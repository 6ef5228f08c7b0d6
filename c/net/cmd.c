/* cmd.c - the data of a NORMAL log entry (docs/replication.md, "The log
 * file"): a client's command (op set, delete or batch, the key, the
 * value) and a stored function's batch of writes inside it. Encoding and
 * decoding only: the proposer (raftnode.c, funcs.c), the apply
 * (apply.c) and the core's storage (raftstore.c) all use it, so it calls
 * none of them. */
#include <stdint.h>
#include <string.h>

#include "coding.h"
#include "node.h"

size_t lkvnet_node_cmd_size(size_t klen, size_t vlen) {
  return 5 + klen + vlen;
}

void lkvnet_node_cmd_encode(unsigned char *dst, int op, const char *key,
                            size_t klen, const char *val, size_t vlen) {
  dst[0] = (unsigned char)op;
  lkv_put32(dst + 1, (uint32_t)klen);
  if (klen) memcpy(dst + 5, key, klen);
  if (vlen) memcpy(dst + 5 + klen, val, vlen);
}

int lkvnet_node_cmd_decode(const unsigned char *d, size_t n, int *op,
                           const char **key, size_t *klen, const char **val,
                           size_t *vlen) {
  if (n < 5) return -1;
  *op = d[0];
  *klen = lkv_get32(d + 1);
  if (*klen > n - 5) return -1;
  *key = (const char *)d + 5;
  *val = (const char *)d + 5 + *klen;
  *vlen = n - 5 - *klen;
  if (*op == LKVNET_OP_SET) return 0;
  if (*op == LKVNET_OP_DELETE && *vlen == 0) return 0;
  if (*op == LKVNET_OP_BATCH && *klen == 0) return 0;
  return -1;
}

size_t lkvnet_node_batch_size(const lkvnet_fn_write *w, size_t n) {
  size_t i, len = 4;
  for (i = 0; i < n; i++)
    len += 9 + w[i].klen + (w[i].op == LKVNET_FN_SET ? w[i].vlen : 0);
  return len;
}

void lkvnet_node_batch_encode(unsigned char *dst, const lkvnet_fn_write *w,
                              size_t n) {
  size_t i, off = 4;
  lkv_put32(dst, (uint32_t)n);
  for (i = 0; i < n; i++) {
    size_t vlen = w[i].op == LKVNET_FN_SET ? w[i].vlen : 0;
    dst[off] = (unsigned char)w[i].op;
    lkv_put32(dst + off + 1, (uint32_t)w[i].klen);
    lkv_put32(dst + off + 5, (uint32_t)vlen);
    off += 9;
    if (w[i].klen) memcpy(dst + off, w[i].key, w[i].klen);
    off += w[i].klen;
    if (vlen) memcpy(dst + off, w[i].val, vlen);
    off += vlen;
  }
}

int lkvnet_node_batch_next(const unsigned char *d, size_t n, size_t *off,
                           lkvnet_fn_write *w) {
  size_t o = *off;
  uint32_t kl, vl;
  if (n - o < 9) return -1;
  w->op = d[o];
  kl = lkv_get32(d + o + 1);
  vl = lkv_get32(d + o + 5);
  o += 9;
  if ((w->op != LKVNET_FN_SET && w->op != LKVNET_FN_DELETE) ||
      (w->op == LKVNET_FN_DELETE && vl != 0) || kl > n - o || vl > n - o - kl)
    return -1;
  w->key = (const char *)d + o;
  w->klen = kl;
  w->val = (const char *)d + o + kl;
  w->vlen = vl;
  *off = o + kl + vl;
  return 0;
}
