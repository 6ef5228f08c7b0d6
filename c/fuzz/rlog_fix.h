/* rlog_fix.h - shared by fuzz_rlog and fuzz_frames: the invariants every
 * decoded replication-log entry must hold, a reference encoder and frame
 * check written from docs/replication.md alone (both versions), and a
 * custom mutator that repairs checksums (and, some of the time, lengths,
 * indexes and the chain) after libFuzzer's own mutation, so inputs get
 * past the CRC-32C checks into the code behind them. The input stays the
 * literal file or body: a crash reproduces without the mutator. */
#ifndef LKV_FUZZ_RLOG_FIX_H
#define LKV_FUZZ_RLOG_FIX_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rlog.h"

size_t LLVMFuzzerMutate(uint8_t *data, size_t size, size_t max_size);
size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size,
                               unsigned int seed);

/* The format's numbers, spelled out here rather than taken from rlog.h:
 * a version 1 payload's fixed part (term 8, index 8, op 1, klen 4, vlen
 * 4) and version 2's (the same, then prev_term 8). */
#define FZ_FIXED_V1 25u
#define FZ_FIXED_V2 33u
#define FZ_OP_CONF 4
#define FZ_OP_BATCH 5
/* ops 4 and 5 (version 2 only) carry data and no key */
#define FZ_DATA_OP(op) ((op) == FZ_OP_CONF || (op) == FZ_OP_BATCH)

/* An entry as the log format allows it. */
static void fz_check_entry(const lkvnet_entry *e) {
  int keyless = e->op == LKVNET_OP_NOOP || FZ_DATA_OP(e->op);
  if (e->op != LKVNET_OP_SET && e->op != LKVNET_OP_DELETE &&
      e->op != LKVNET_OP_NOOP && !FZ_DATA_OP(e->op))
    abort();
  if (e->op != LKVNET_OP_SET && !FZ_DATA_OP(e->op) &&
      (e->vlen != 0 || e->val != NULL))
    abort();
  if (keyless && e->klen != 0) abort();
  if (e->klen > LKV_MAX_KEY_BYTES || e->vlen > LKV_MAX_VALUE_BYTES) abort();
  if (e->key == NULL || (e->vlen != 0 && e->val == NULL)) abort();
  if (e->prev_term > e->term) abort();
}

static uint32_t fz_crc_table[256];

static uint32_t fz_crc32c(uint32_t crc, const uint8_t *p, size_t n) {
  if (fz_crc_table[1] == 0)
    for (uint32_t i = 0; i < 256; i++) {
      uint32_t c = i;
      for (int j = 0; j < 8; j++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      fz_crc_table[i] = c;
    }
  crc = ~crc;
  while (n--) crc = fz_crc_table[(crc ^ *p++) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

static uint32_t fz_get32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
         (uint32_t)p[3] << 24;
}
static uint64_t fz_get64(const uint8_t *p) {
  return (uint64_t)fz_get32(p) | (uint64_t)fz_get32(p + 4) << 32;
}
static void fz_put32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void fz_put64(uint8_t *p, uint64_t v) {
  fz_put32(p, (uint32_t)v);
  fz_put32(p + 4, (uint32_t)(v >> 32));
}

/* The reference encoder: e as a frame of version 1 (fixed FZ_FIXED_V1,
 * no chain, no configuration changes) or 2 (FZ_FIXED_V2, after an entry
 * of term prev), into a malloc'd buffer (*n bytes). */
static uint8_t *fz_encode(const lkvnet_entry *e, uint32_t fixed, uint64_t prev,
                          size_t *n) {
  size_t klen = e->op == LKVNET_OP_NOOP || FZ_DATA_OP(e->op) ? 0 : e->klen;
  size_t vlen = e->op == LKVNET_OP_SET || FZ_DATA_OP(e->op) ? e->vlen : 0;
  size_t len = fixed + klen + vlen;
  uint8_t *p = malloc(8 + len);
  if (p == NULL) abort();
  fz_put32(p, (uint32_t)len);
  fz_put64(p + 8, e->term);
  fz_put64(p + 16, e->index);
  p[24] = (uint8_t)e->op;
  fz_put32(p + 25, (uint32_t)klen);
  fz_put32(p + 29, (uint32_t)vlen);
  if (fixed == FZ_FIXED_V2) fz_put64(p + 33, prev);
  if (klen) memcpy(p + 8 + fixed, e->key, klen);
  if (vlen) memcpy(p + 8 + fixed + klen, e->val, vlen);
  fz_put32(p + 4, fz_crc32c(fz_crc32c(0, p, 4), p + 8, len));
  *n = 8 + len;
  return p;
}

/* Whether d[o..n) starts with a valid frame of the layout `fixed`: a
 * length from fixed up to what the file holds, a matching checksum, and
 * fields that agree (docs/replication.md, "Reading at start-up"). */
static int fz_valid_frame_at(const uint8_t *d, size_t n, size_t o,
                             uint32_t fixed) {
  if (o > n || n - o < 8 + fixed) return 0;
  uint32_t len = fz_get32(d + o);
  const uint8_t *p = d + o + 8;
  if (len < fixed || len > n - o - 8 ||
      len > fixed + LKV_MAX_KEY_BYTES + LKV_MAX_VALUE_BYTES)
    return 0;
  if (fz_crc32c(fz_crc32c(0, d + o, 4), p, len) != fz_get32(d + o + 4))
    return 0;
  uint32_t klen = fz_get32(p + 17), vlen = fz_get32(p + 21);
  int op = p[16];
  if ((uint64_t)klen + vlen + fixed != len || klen > LKV_MAX_KEY_BYTES ||
      vlen > LKV_MAX_VALUE_BYTES)
    return 0;
  if (op < LKVNET_OP_SET || op > (fixed == FZ_FIXED_V1 ? 3 : FZ_OP_BATCH))
    return 0;
  if (op != LKVNET_OP_SET && !FZ_DATA_OP(op) && vlen != 0) return 0;
  if ((op == LKVNET_OP_NOOP || FZ_DATA_OP(op)) && klen != 0) return 0;
  if (fixed == FZ_FIXED_V2 && fz_get64(p + 25) > fz_get64(p)) return 0;
  return 1;
}

/* e, decoded from the (version 2) frame at buf[o .. end), borrows only
 * that frame, and re-encodes to exactly its bytes, with rlog's encoder
 * and with the reference one. */
static void fz_check_frame(const unsigned char *buf, size_t o, size_t end,
                           const lkvnet_entry *e) {
  const unsigned char *key = (const unsigned char *)e->key;
  const unsigned char *val = (const unsigned char *)e->val;
  size_t rn;
  fz_check_entry(e);
  if (!fz_valid_frame_at(buf, end, o, FZ_FIXED_V2)) abort();
  if (end - o != lkvnet_rlog_frame_size(e)) abort();
  if (key < buf + o + LKVNET_RLOG_FRAME_SIZE || key > buf + end ||
      e->klen > (size_t)(buf + end - key))
    abort();
  if (val != NULL && (val < buf + o + LKVNET_RLOG_FRAME_SIZE ||
                      val > buf + end || e->vlen > (size_t)(buf + end - val)))
    abort();
  unsigned char *enc = malloc(end - o);
  if (enc == NULL) abort();
  lkvnet_rlog_encode_after(enc, e, e->prev_term);
  if (memcmp(enc, buf + o, end - o) != 0) abort();
  free(enc);
  uint8_t *ref = fz_encode(e, FZ_FIXED_V2, e->prev_term, &rn);
  if (rn != end - o || memcmp(ref, buf + o, rn) != 0) abort();
  free(ref);
}

/* Repair the frames from offset o of d[0..n): with bit 1 of how, klen/vlen
 * to agree with the length; bit 2, indexes to run on from next_index,
 * terms not to go down and (version 2) each prev_term to name the term
 * before; bit 4, checksums (the header's too when hdr). A file whose
 * header says version 1 is repaired in that layout. */
static void fz_fix(uint8_t *d, size_t n, size_t o, int hdr, unsigned how) {
  uint64_t next = 1, term = 0;
  uint32_t fixed = FZ_FIXED_V2;
  if (hdr && n >= LKVNET_RLOG_HEADER_SIZE) {
    next = fz_get64(d + 16) + 1;
    term = fz_get64(d + 24);
    if (fz_get32(d + 8) == 1) fixed = FZ_FIXED_V1;
    if (how & 4) fz_put32(d + 32, fz_crc32c(0, d, 32));
  } else if (o <= n && n - o >= LKVNET_RLOG_FRAME_SIZE + 33) {
    next = fz_get64(d + o + 16); /* a body starts wherever it likes */
    term = fz_get64(d + o + 8 + 25);
  }
  while (o <= n && n - o >= LKVNET_RLOG_FRAME_SIZE) {
    uint32_t plen = fz_get32(d + o);
    uint8_t *p = d + o + LKVNET_RLOG_FRAME_SIZE;
    if (plen > n - o - LKVNET_RLOG_FRAME_SIZE) break;
    if (plen >= fixed) {
      if (how & 1) {
        uint32_t room = plen - fixed;
        uint32_t klen = fz_get32(p + 17);
        if (p[16] == LKVNET_OP_NOOP || FZ_DATA_OP(p[16]))
          klen = 0;
        else if (p[16] == LKVNET_OP_DELETE)
          klen = room;
        else if (klen > room)
          klen = room;
        fz_put32(p + 17, klen);
        fz_put32(p + 21, room - klen);
      }
      if (how & 2) {
        if (fz_get64(p) < term) fz_put64(p, term);
        fz_put64(p + 8, next);
        if (fixed == FZ_FIXED_V2) fz_put64(p + 25, term);
      }
      term = fz_get64(p);
      next = fz_get64(p + 8) + 1;
    }
    if (how & 4)
      fz_put32(d + o + 4, fz_crc32c(fz_crc32c(0, d + o, 4), p, plen));
    o += LKVNET_RLOG_FRAME_SIZE + plen;
  }
}

/* libFuzzer's mutation, then a repair; hdr: the input is a whole file. */
static size_t fz_mutate(uint8_t *data, size_t size, size_t max_size,
                        unsigned int seed, int hdr) {
  size = LLVMFuzzerMutate(data, size, max_size);
  /* crc fixed 7 times in 8; lengths and indexes each half the time */
  unsigned how = (seed & 7) ? 4 : 0;
  if (seed & 8) how |= 1;
  if (seed & 16) how |= 2;
  fz_fix(data, size, hdr ? LKVNET_RLOG_HEADER_SIZE : 0, hdr, how);
  return size;
}

#endif
