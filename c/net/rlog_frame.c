/* rlog_frame.c - the replication log's bytes (rlog.h; format in
 * docs/replication.md): a frame's encoding, its check and decoding, and
 * the file's header. Touches no log and calls no other rlog file: the
 * open, the appends and the compaction (rlog.c, rlog_compact.c) call it,
 * and so does a follower checking an /append body. */
#include <stdio.h>
#include <string.h>

#include "coding.h"
#include "crc32c.h"
#include "rlog_impl.h"

/* {======================================================================
** Frames and the file's header: encode, check, decode
** ======================================================================= */

size_t lkvnet_rlog_frame_size(const lkvnet_entry *e) {
  size_t vlen = e->op == LKVNET_OP_SET ? e->vlen : 0;
  size_t klen = e->op == LKVNET_OP_NOOP ? 0 : e->klen;
  return LKVNET_RLOG_FRAME_SIZE + LKVNET_RLOG_FIXED_PAYLOAD + klen + vlen;
}

void lkvnet_rlog_encode(unsigned char *p, const lkvnet_entry *e) {
  size_t vlen = e->op == LKVNET_OP_SET ? e->vlen : 0;
  size_t klen = e->op == LKVNET_OP_NOOP ? 0 : e->klen;
  size_t len = LKVNET_RLOG_FIXED_PAYLOAD + klen + vlen;
  lkv_put32(p, (uint32_t)len);
  lkv_put64(p + 8, e->term);
  lkv_put64(p + 16, e->index);
  p[24] = (unsigned char)e->op;
  lkv_put32(p + 25, (uint32_t)klen);
  lkv_put32(p + 29, (uint32_t)vlen);
  if (klen) memcpy(p + 8 + LKVNET_RLOG_FIXED_PAYLOAD, e->key, klen);
  if (vlen) memcpy(p + 8 + LKVNET_RLOG_FIXED_PAYLOAD + klen, e->val, vlen);
  lkv_put32(p + 4, lkv_crc32c_extend(lkv_crc32c(p, 4), p + 8, len));
}

/* The fields of a payload whose checksum matched; -1 when they contradict
 * its length or name no operation. */
int lkvnet_rlog_parse_payload(const unsigned char *buf, uint32_t len,
                              lkvnet_entry *e) {
  uint32_t klen = lkv_get32(buf + 17), vlen = lkv_get32(buf + 21);
  e->term = lkv_get64(buf);
  e->index = lkv_get64(buf + 8);
  e->op = buf[16];
  if ((uint64_t)klen + vlen + LKVNET_RLOG_FIXED_PAYLOAD != len ||
      klen > LKV_MAX_KEY_BYTES || vlen > LKV_MAX_VALUE_BYTES ||
      (e->op != LKVNET_OP_SET && e->op != LKVNET_OP_DELETE &&
       e->op != LKVNET_OP_NOOP) ||
      (e->op != LKVNET_OP_SET && vlen != 0) ||
      (e->op == LKVNET_OP_NOOP && klen != 0))
    return -1;
  e->key = (const char *)buf + LKVNET_RLOG_FIXED_PAYLOAD;
  e->klen = klen;
  e->val = vlen ? (const char *)buf + LKVNET_RLOG_FIXED_PAYLOAD + klen : NULL;
  e->vlen = vlen;
  return 0;
}

int lkvnet_rlog_decode(const unsigned char *buf, size_t len, size_t *off,
                       lkvnet_entry *e, char *why, size_t whylen) {
  size_t o = *off;
  uint32_t plen;
  if (o == len) return 0;
  if (len - o < LKVNET_RLOG_FRAME_SIZE) {
    snprintf(why, whylen, "byte %zu: torn frame header", o);
    return -1;
  }
  plen = lkv_get32(buf + o);
  if (plen < LKVNET_RLOG_FIXED_PAYLOAD || plen > MAX_PAYLOAD ||
      plen > len - o - LKVNET_RLOG_FRAME_SIZE) {
    snprintf(why, whylen, "byte %zu: impossible frame length %u", o,
             (unsigned)plen);
    return -1;
  }
  if (lkv_crc32c_extend(lkv_crc32c(buf + o, 4),
                        buf + o + LKVNET_RLOG_FRAME_SIZE,
                        plen) != lkv_get32(buf + o + 4)) {
    snprintf(why, whylen, "byte %zu: frame checksum mismatch", o);
    return -1;
  }
  if (lkvnet_rlog_parse_payload(buf + o + LKVNET_RLOG_FRAME_SIZE, plen, e) !=
      0) {
    snprintf(why, whylen, "byte %zu: malformed frame (checksum valid)", o);
    return -1;
  }
  *off = o + LKVNET_RLOG_FRAME_SIZE + plen;
  return 1;
}

/* The file's header: magic, version, flags, the base (index and term) of
 * a log whose first entries were cut, and its checksum. */
void lkvnet_rlog_encode_header(unsigned char *h, uint64_t base_index,
                               uint64_t base_term) {
  memset(h, 0, LKVNET_RLOG_HEADER_SIZE);
  memcpy(h, LKVNET_RLOG_MAGIC, 8);
  lkv_put32(h + 8, LKVNET_RLOG_VERSION);
  lkv_put32(h + 12, 0); /* flags */
  lkv_put64(h + 16, base_index);
  lkv_put64(h + 24, base_term);
  lkv_put32(h + 32, lkv_crc32c(h, 32));
}

/* }====================================================================== */
