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

/* The key and value bytes a frame of e holds: a no-op and a
 * configuration change have no key, only a set and a configuration
 * change a value. */
static size_t frame_klen(const lkvnet_entry *e) {
  return e->op == LKVNET_OP_NOOP || e->op == LKVNET_OP_CONF ||
                 e->op == LKVNET_OP_BATCH
             ? 0
             : e->klen;
}

static size_t frame_vlen(const lkvnet_entry *e) {
  return e->op == LKVNET_OP_SET || e->op == LKVNET_OP_CONF ||
                 e->op == LKVNET_OP_BATCH
             ? e->vlen
             : 0;
}

size_t lkvnet_rlog_frame_size(const lkvnet_entry *e) {
  return LKVNET_RLOG_FRAME_SIZE + LKVNET_RLOG_FIXED_PAYLOAD + frame_klen(e) +
         frame_vlen(e);
}

void lkvnet_rlog_encode_after(unsigned char *p, const lkvnet_entry *e,
                              uint64_t prev_term) {
  size_t klen = frame_klen(e), vlen = frame_vlen(e);
  size_t len = LKVNET_RLOG_FIXED_PAYLOAD + klen + vlen;
  lkv_put32(p, (uint32_t)len);
  lkv_put64(p + 8, e->term);
  lkv_put64(p + 16, e->index);
  p[24] = (unsigned char)e->op;
  lkv_put32(p + 25, (uint32_t)klen);
  lkv_put32(p + 29, (uint32_t)vlen);
  lkv_put64(p + 33, prev_term);
  if (klen) memcpy(p + 8 + LKVNET_RLOG_FIXED_PAYLOAD, e->key, klen);
  if (vlen) memcpy(p + 8 + LKVNET_RLOG_FIXED_PAYLOAD + klen, e->val, vlen);
  lkv_put32(p + 4, lkv_crc32c_extend(lkv_crc32c(p, 4), p + 8, len));
}

void lkvnet_rlog_encode(unsigned char *p, const lkvnet_entry *e) {
  /* a frame outside any log (the snapshot stream) follows nothing */
  lkvnet_rlog_encode_after(p, e, 0);
}

/* The fields of a payload whose checksum matched, laid out as version 2
 * (fixed LKVNET_RLOG_FIXED_PAYLOAD) or version 1 (FIXED_PAYLOAD_V1: no
 * prev_term, which reads as 0); -1 when they contradict its length, name
 * no operation, or chain to a term after their own. Reads only the fixed
 * part's bytes, so the open's scan may call it before the checksum. */
int lkvnet_rlog_parse_payload(const unsigned char *buf, uint32_t len,
                              uint32_t fixed, lkvnet_entry *e) {
  uint32_t klen = lkv_get32(buf + 17), vlen = lkv_get32(buf + 21);
  int v1 = fixed == LKVNET_RLOG_FIXED_PAYLOAD_V1;
  e->term = lkv_get64(buf);
  e->index = lkv_get64(buf + 8);
  e->op = buf[16];
  e->prev_term = v1 ? 0 : lkv_get64(buf + 25);
  if ((uint64_t)klen + vlen + fixed != len || klen > LKV_MAX_KEY_BYTES ||
      vlen > LKV_MAX_VALUE_BYTES || e->prev_term > e->term ||
      (e->op != LKVNET_OP_SET && e->op != LKVNET_OP_DELETE &&
       e->op != LKVNET_OP_NOOP &&
       ((e->op != LKVNET_OP_CONF && e->op != LKVNET_OP_BATCH) || v1)) ||
      (e->op != LKVNET_OP_SET && e->op != LKVNET_OP_CONF &&
       e->op != LKVNET_OP_BATCH && vlen != 0) ||
      ((e->op == LKVNET_OP_NOOP || e->op == LKVNET_OP_CONF ||
        e->op == LKVNET_OP_BATCH) &&
       klen != 0))
    return -1;
  e->key = (const char *)buf + fixed;
  e->klen = klen;
  e->val = vlen ? (const char *)buf + fixed + klen : NULL;
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
  if (lkvnet_rlog_parse_payload(buf + o + LKVNET_RLOG_FRAME_SIZE, plen,
                                LKVNET_RLOG_FIXED_PAYLOAD, e) != 0) {
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
