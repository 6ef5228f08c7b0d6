/* block.h - SSTable blocks (data and index): sorted internal keys with
 * prefix compression and a restart array for binary search. The encoding
 * is in sst_format.md. A block is parsed in place, never copied. */
#ifndef LKV_BLOCK_H
#define LKV_BLOCK_H

#include <stddef.h>
#include <stdint.h>

#include "dbformat.h"
#include "iter.h"
#include "lunakv.h"

/* ---- framing in a table file (sst_format.md) ------------------------- */

/* Each block in a file is followed by a type byte (0 = stored as is) and
 * the crc32c of the block bytes and the type byte, little-endian. */
#define LKV_BLOCK_TRAILER_BYTES 5
#define LKV_BLOCK_TYPE_PLAIN 0

/* The fixed footer at the end of every table, and its markers. */
#define LKV_SST_FOOTER_BYTES 56
#define LKV_SST_VERSION 1u
#define LKV_SST_MAGIC 0x454c424154766b6cULL /* bytes "lkvTABLE" */

/* ---- building -------------------------------------------------------- */

/* Builds one block in memory. Keys must be internal keys (>= 8 bytes) added
 * in increasing internal-key order; the builder does not check. */
typedef struct lkv_block_builder {
  lkv_buf buf;        /* entries so far; the trailer is added by finish */
  uint32_t *restarts; /* offsets of the entries stored with a full key */
  size_t nrestarts, restarts_cap;
  int interval;      /* a restart every `interval` entries */
  int since_restart; /* entries added since the last restart */
  lkv_buf last;      /* the last key added (kept across reset) */
  uint64_t entries;  /* entries in the current block */
} lkv_block_builder;

void lkv_block_builder_init(lkv_block_builder *bb, int restart_interval);
void lkv_block_builder_free(lkv_block_builder *bb);
/* Start a new block (after finish). The last key stays readable. */
void lkv_block_builder_reset(lkv_block_builder *bb);
/* LKV_OK or LKV_NOMEM (the builder is then unchanged). */
int lkv_block_builder_add(lkv_block_builder *bb, lkv_slice key,
                          lkv_slice value);
/* Bytes finish would produce now (entries plus trailer). */
size_t lkv_block_builder_size(const lkv_block_builder *bb);
/* Append the restart trailer and return the whole block in *out (borrowed
 * until the next reset/free). LKV_OK or LKV_NOMEM. */
int lkv_block_builder_finish(lkv_block_builder *bb, lkv_slice *out);

/* ---- reading --------------------------------------------------------- */

/* A parsed block: pointers into bytes the caller keeps alive. */
typedef struct lkv_block {
  const char *data; /* the entries */
  uint32_t size;    /* bytes of entries (the restart array follows) */
  uint32_t nrestarts;
  const char *restarts; /* nrestarts little-endian u32 offsets */
} lkv_block;

/* Parse the trailer of the n bytes at p. LKV_OK, or LKV_CORRUPTION (no
 * message: the caller knows the file and offset) with *why set to a static
 * reason. Entries are checked as they are decoded, not here. */
int lkv_block_parse(lkv_block *b, const char *p, size_t n, const char **why);

/* A position in a block. Lives where it is declared (stack or inside an
 * iterator) and must not be copied: key may point into its own `small`.
 * Keys longer than `small` grow a heap buffer (freed by cursor_free). */
typedef struct lkv_block_cursor {
  lkv_block b;
  int valid;
  int code;         /* LKV_OK, LKV_CORRUPTION or LKV_NOMEM */
  const char *why;  /* static reason when code != LKV_OK */
  uint32_t bad_off; /* entry offset in the block where it failed */
  uint32_t cur;     /* offset of the current entry */
  uint32_t next;    /* offset of the entry after the current one */
  char *key;        /* the current key, reconstructed */
  size_t klen, kcap;
  const char *val; /* the current value, inside the block */
  size_t vlen;
  char small[240];
} lkv_block_cursor;

/* Start unpositioned on b (b's bytes must outlive the cursor's use). */
void lkv_block_cursor_init(lkv_block_cursor *c, const lkv_block *b);
/* Point an initialised cursor at another block (keeps its key buffer). */
void lkv_block_cursor_reset(lkv_block_cursor *c, const lkv_block *b);
void lkv_block_cursor_free(lkv_block_cursor *c);
void lkv_block_cursor_seek_first(lkv_block_cursor *c);
void lkv_block_cursor_seek_last(lkv_block_cursor *c);
/* The entry before the current one (REQUIRES: valid): entries only link
 * forward, so this re-scans from the restart point before it. */
void lkv_block_cursor_prev(lkv_block_cursor *c);
/* First entry with internal key >= target (REQUIRES: target.n >= 8):
 * binary search over the restart keys, then a linear scan. */
void lkv_block_cursor_seek(lkv_block_cursor *c, lkv_slice target);
void lkv_block_cursor_next(lkv_block_cursor *c); /* no-op when not valid */

/* An lkv_iiter over one block. The block's bytes must outlive it. `name`
 * and `off` (the file and the block's offset, or NULL/0) word its errors:
 * "corruption: <name> offset <off>: <why> (entry at byte <n>)". `name`
 * is copied. NULL when out of memory. */
lkv_iiter *lkv_block_iter_new(const lkv_block *b, const char *name,
                              uint64_t off);

#endif
