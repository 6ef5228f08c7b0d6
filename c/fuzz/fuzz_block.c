/* fuzz_block.c - libFuzzer target: a data block, built valid and then
 * damaged, is walked both ways and sought without reading outside it.
 *
 * A table's blocks sit behind a CRC, so fuzz_sst's mutations seldom reach
 * the entry decoder. Here the input drives the decoder directly: its
 * first bytes choose a restart interval and the entries (keys sharing
 * prefixes of varying length, values of varying size), a valid block is
 * built from them, and the rest of the input is a list of (offset, xor)
 * damages applied to it. The damaged block lives in a heap buffer of its
 * exact size, so ASan reports any read past it. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "block.h"
#include "coding.h"
#include "dbformat.h"

#define MAX_ENTRIES 200

typedef struct {
  char key[80];
  size_t klen;
} fkey;

/* next input byte, 0 once the input is used up */
static unsigned take(const uint8_t **p, const uint8_t *end) {
  return *p < end ? *(*p)++ : 0;
}

static void walk_and_seek(const char *blk, size_t n, const fkey *keys,
                          int nkeys) {
  lkv_block b;
  const char *why;
  if (lkv_block_parse(&b, blk, n, &why) != LKV_OK) return;
  lkv_iiter *it = lkv_block_iter_new(&b, "000001.sst", 0);
  if (it == NULL) return;
  /* seeks first, each on the cursor as the last one left it */
  for (int i = 0; i < nkeys; i++) {
    lkv_slice k = {keys[i].key, keys[i].klen};
    it->ops->seek(it, k);
    if (it->ops->valid(it)) (void)it->ops->value(it);
  }
  it->ops->destroy(it);
  int steps = 0;
  if ((it = lkv_block_iter_new(&b, "000001.sst", 0)) == NULL) return;
  for (it->ops->seek_first(it); it->ops->valid(it) && steps < 4 * MAX_ENTRIES;
       it->ops->next(it), steps++)
    (void)it->ops->key(it);
  it->ops->destroy(it);
  steps = 0;
  if ((it = lkv_block_iter_new(&b, "000001.sst", 0)) == NULL) return;
  for (it->ops->seek_last(it); it->ops->valid(it) && steps < 4 * MAX_ENTRIES;
       it->ops->prev(it), steps++)
    (void)it->ops->key(it);
  it->ops->destroy(it);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
  const uint8_t *p = data, *end = data + n;
  int interval = 1 + (int)(take(&p, end) % 32);
  int nkeys = 1 + (int)(take(&p, end) % MAX_ENTRIES);
  static fkey keys[MAX_ENTRIES];
  static char val[256];
  memset(val, 'v', sizeof val);
  /* ascending user keys: a shared stem, then a counter, then a tail whose
   * length comes from the input (so shared and unshared lengths vary);
   * every other entry is a second version of the same user key */
  for (int i = 0; i < nkeys; i++) {
    unsigned tail = take(&p, end) % 60;
    int u = i / 2;
    size_t kl = 0;
    keys[i].key[kl++] = 'k';
    keys[i].key[kl++] = (char)('a' + (u / 676) % 26);
    keys[i].key[kl++] = (char)('a' + (u / 26) % 26);
    keys[i].key[kl++] = (char)('a' + u % 26);
    if (i % 2 == 1) { /* same user key as the entry before */
      memcpy(keys[i].key, keys[i - 1].key, keys[i - 1].klen - LKV_TAG_BYTES);
      kl = keys[i - 1].klen - LKV_TAG_BYTES;
    } else {
      memset(keys[i].key + kl, 'x', tail);
      kl += tail;
    }
    uint64_t seq = (uint64_t)(MAX_ENTRIES - i % 2) * 8;
    lkv_put64(keys[i].key + kl,
              lkv_tag(seq, i % 5 == 0 ? LKV_TYPE_DELETE : LKV_TYPE_VALUE));
    keys[i].klen = kl + LKV_TAG_BYTES;
  }
  lkv_block_builder bb;
  lkv_block_builder_init(&bb, interval);
  for (int i = 0; i < nkeys; i++) {
    lkv_slice k = {keys[i].key, keys[i].klen};
    lkv_slice v = {val, take(&p, end) % sizeof val};
    if (lkv_block_builder_add(&bb, k, v) != LKV_OK) abort();
  }
  lkv_slice raw;
  if (lkv_block_builder_finish(&bb, &raw) != LKV_OK) abort();
  char *blk = malloc(raw.n ? raw.n : 1);
  if (blk == NULL) abort();
  memcpy(blk, raw.p, raw.n);
  lkv_block_builder_free(&bb);
  /* the damages: two bytes of offset, one byte to xor in */
  while (end - p >= 3 && raw.n > 0) {
    size_t off = ((size_t)p[0] | (size_t)p[1] << 8) % raw.n;
    blk[off] ^= (char)p[2];
    p += 3;
  }
  walk_and_seek(blk, raw.n, keys, nkeys);
  free(blk);
  return 0;
}
