/* rlog_fix.h - shared by fuzz_rlog and fuzz_frames: the invariants every
 * decoded replication-log entry must hold, and a custom mutator that
 * repairs checksums (and, some of the time, lengths and indexes) after
 * libFuzzer's own mutation, so inputs get past the CRC-32C checks into the
 * code behind them. The input stays the literal file or body: a crash
 * reproduces without the mutator. Format: docs/replication.md. */
#ifndef LKV_FUZZ_RLOG_FIX_H
#define LKV_FUZZ_RLOG_FIX_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rlog.h"

size_t LLVMFuzzerMutate(uint8_t *data, size_t size, size_t max_size);
size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size,
                               unsigned int seed);

/* An entry as the log format allows it. */
static void fz_check_entry(const lkvnet_entry *e) {
  if (e->op != LKVNET_OP_SET && e->op != LKVNET_OP_DELETE &&
      e->op != LKVNET_OP_NOOP)
    abort();
  if (e->op != LKVNET_OP_SET && (e->vlen != 0 || e->val != NULL)) abort();
  if (e->op == LKVNET_OP_NOOP && e->klen != 0) abort();
  if (e->klen > LKV_MAX_KEY_BYTES || e->vlen > LKV_MAX_VALUE_BYTES) abort();
  if (e->key == NULL || (e->vlen != 0 && e->val == NULL)) abort();
}

/* e, decoded from the frame at buf[o .. end), borrows only that frame,
 * and re-encodes to exactly its bytes. */
static void fz_check_frame(const unsigned char *buf, size_t o, size_t end,
                           const lkvnet_entry *e) {
  const unsigned char *key = (const unsigned char *)e->key;
  const unsigned char *val = (const unsigned char *)e->val;
  fz_check_entry(e);
  if (end - o != lkvnet_rlog_frame_size(e)) abort();
  if (key < buf + o + LKVNET_RLOG_FRAME_SIZE || key > buf + end ||
      e->klen > (size_t)(buf + end - key))
    abort();
  if (val != NULL && (val < buf + o + LKVNET_RLOG_FRAME_SIZE ||
                      val > buf + end || e->vlen > (size_t)(buf + end - val)))
    abort();
  unsigned char *enc = malloc(end - o);
  if (enc == NULL) abort();
  lkvnet_rlog_encode(enc, e);
  if (memcmp(enc, buf + o, end - o) != 0) abort();
  free(enc);
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

/* Repair the frames from offset o of d[0..n): with bit 1 of how, klen/vlen
 * to agree with the length; bit 2, indexes to run on from next_index and
 * terms not to go down; bit 4, checksums (the header's too when hdr). */
static void fz_fix(uint8_t *d, size_t n, size_t o, int hdr, unsigned how) {
  uint64_t next = 1, term = 0;
  if (hdr && n >= LKVNET_RLOG_HEADER_SIZE) {
    next = fz_get64(d + 16) + 1;
    term = fz_get64(d + 24);
    if (how & 4) fz_put32(d + 32, fz_crc32c(0, d, 32));
  } else if (o <= n && n - o >= LKVNET_RLOG_FRAME_SIZE + 16) {
    next = fz_get64(d + o + 16); /* a body starts wherever it likes */
  }
  while (o <= n && n - o >= LKVNET_RLOG_FRAME_SIZE) {
    uint32_t plen = fz_get32(d + o);
    uint8_t *p = d + o + LKVNET_RLOG_FRAME_SIZE;
    if (plen > n - o - LKVNET_RLOG_FRAME_SIZE) break;
    if (plen >= LKVNET_RLOG_FIXED_PAYLOAD) {
      if (how & 1) {
        uint32_t room = plen - LKVNET_RLOG_FIXED_PAYLOAD;
        uint32_t klen = fz_get32(p + 17);
        if (p[16] == LKVNET_OP_NOOP)
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
