/* sst_build.c - writing an SSTable (table.h): data blocks, one Bloom
 * filter, the index and the footer, in the layout of sst_format.md. */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block.h"
#include "bloom.h"
#include "crc32c.h"
#include "env.h"
#include "err.h"
#include "table.h"

/* Blocks go to the file through this buffer: a few large write(2) calls
 * instead of one or two per 4 KiB block. */
#define WBUF_BYTES (128u * 1024u)

/* A block's restart offsets are u32, so however large block_size is set a
 * block is cut before it could outgrow them. */
#define MAX_BLOCK_BYTES ((size_t)1 << 30)

struct lkv_table_builder {
  char *path;
  const char *name; /* basename of path, for messages */
  int fd;
  lkv_table_opts o;
  lkv_block_builder data;
  lkv_block_builder index;
  char *wbuf;
  size_t wlen;
  uint64_t offset; /* file offset of the next byte (written+buffered) */
  uint64_t entries;
  uint64_t *hashes; /* one per distinct user key, for the filter */
  size_t nhashes, hashes_cap;
  /* The index entry of the last finished data block waits for the next
   * key, so that it can be a short separator rather than the full key. */
  int pending;
  uint64_t pending_off, pending_size;
  lkv_buf sep;
  int code; /* sticky failure: every later call returns it */
  lkv_err err;
};

static int fail(lkv_table_builder *b, lkv_err *err) {
  if (b->code == LKV_OK) b->code = b->err.code ? b->err.code : LKV_IOERROR;
  return lkv_errcopy(err, &b->err);
}

int lkv_tb_new(const char *path, const lkv_table_opts *o,
               lkv_table_builder **out, lkv_err *err) {
  *out = NULL;
  if (o->bloom_bits_per_key <= 0 || o->restart_interval < 1 ||
      o->block_size == 0 || o->bloom_hash_functions < 0)
    return lkv_seterr(err, LKV_INVALID,
                      "table options for %s: bloom_bits_per_key and "
                      "restart_interval must be >= 1, block_size > 0",
                      path);
  lkv_table_builder *b = calloc(1, sizeof *b);
  if (b == NULL) return lkv_seterr(err, LKV_NOMEM, "table builder %s", path);
  b->fd = -1;
  b->o = *o;
  size_t n = strlen(path);
  b->path = malloc(n + 1);
  b->wbuf = malloc(WBUF_BYTES);
  if (b->path == NULL || b->wbuf == NULL) {
    free(b->path);
    free(b->wbuf);
    free(b);
    return lkv_seterr(err, LKV_NOMEM, "table builder %s", path);
  }
  memcpy(b->path, path, n + 1);
  const char *slash = strrchr(b->path, '/');
  b->name = slash ? slash + 1 : b->path;
  lkv_block_builder_init(&b->data, o->restart_interval);
  lkv_block_builder_init(&b->index, o->restart_interval);
  int rc = lkv_env_open(o->env, path, O_WRONLY | O_CREAT | O_TRUNC, 0644,
                        &b->fd, err);
  if (rc) {
    lkv_block_builder_free(&b->data);
    lkv_block_builder_free(&b->index);
    free(b->path);
    free(b->wbuf);
    free(b);
    return rc;
  }
  *out = b;
  return LKV_OK;
}

/* ---- writing bytes ----------------------------------------------------- */

static int flush_wbuf(lkv_table_builder *b) {
  if (b->wlen == 0) return LKV_OK;
  int rc = lkv_env_write(b->o.env, b->fd, b->wbuf, b->wlen, b->path, &b->err);
  b->wlen = 0;
  return rc;
}

static int emit(lkv_table_builder *b, const char *p, size_t n) {
  if (b->wlen + n > WBUF_BYTES) {
    if (flush_wbuf(b)) return b->err.code;
    if (n >= WBUF_BYTES) { /* too big to buffer: straight to the file */
      if (lkv_env_write(b->o.env, b->fd, p, n, b->path, &b->err))
        return b->err.code;
      b->offset += n;
      return LKV_OK;
    }
  }
  memcpy(b->wbuf + b->wlen, p, n);
  b->wlen += n;
  b->offset += n;
  return LKV_OK;
}

/* Write a block and its trailer; *off and *size get its handle. */
static int write_block(lkv_table_builder *b, lkv_slice block, uint64_t *off,
                       uint64_t *size) {
  char trailer[LKV_BLOCK_TRAILER_BYTES];
  trailer[0] = LKV_BLOCK_TYPE_PLAIN;
  uint32_t crc = lkv_crc32c(block.p, block.n);
  crc = lkv_crc32c_extend(crc, trailer, 1);
  lkv_put32(trailer + 1, crc);
  *off = b->offset;
  *size = block.n;
  if (emit(b, block.p, block.n)) return b->err.code;
  return emit(b, trailer, sizeof trailer);
}

static int nomem(lkv_table_builder *b) {
  return lkv_seterr(&b->err, LKV_NOMEM, "building table %s", b->name);
}

static int finish_data_block(lkv_table_builder *b) {
  lkv_slice block;
  if (lkv_block_builder_finish(&b->data, &block)) return nomem(b);
  int rc = write_block(b, block, &b->pending_off, &b->pending_size);
  if (rc) return rc;
  b->pending = 1;
  lkv_block_builder_reset(&b->data);
  return LKV_OK;
}

/* ---- the index --------------------------------------------------------- */

/* A key k with last <= k < next that is shorter than last when one exists:
 * a shorter index key makes a smaller index and faster binary search. The
 * user key is cut after the first differing byte, that byte incremented,
 * and given the largest tag so it sorts first among its versions. Returns
 * last itself when no shortening applies (e.g. same user key). */
static lkv_slice separator(lkv_table_builder *b, lkv_slice last,
                           lkv_slice next) {
  lkv_slice ul = lkv_ikey_user(last), un = lkv_ikey_user(next);
  size_t m = ul.n < un.n ? ul.n : un.n, i = 0;
  while (i < m && ul.p[i] == un.p[i]) i++;
  if (i >= m || i + 1 >= ul.n) return last;
  unsigned char c = (unsigned char)ul.p[i];
  /* last < next, so c < un[i]; c + 1 stays below next unless it equals
   * un[i] and next ends right there. */
  if (c == 0xff || (c + 1 == (unsigned char)un.p[i] && i + 1 == un.n))
    return last;
  if (lkv_buf_reserve(&b->sep, i + 1 + LKV_TAG_BYTES)) return last;
  memcpy(b->sep.data, ul.p, i);
  b->sep.data[i] = (char)(c + 1);
  lkv_put64(b->sep.data + i + 1, lkv_tag(LKV_MAX_SEQ, LKV_TYPE_SEEK));
  lkv_slice s = {b->sep.data, i + 1 + LKV_TAG_BYTES};
  return s;
}

static int add_index_entry(lkv_table_builder *b, lkv_slice key) {
  char v[20];
  char *p = lkv_putv(v, b->pending_off);
  p = lkv_putv(p, b->pending_size);
  lkv_slice val = {v, (size_t)(p - v)};
  if (lkv_block_builder_add(&b->index, key, val)) return nomem(b);
  b->pending = 0;
  return LKV_OK;
}

/* ---- the interface ----------------------------------------------------- */

int lkv_tb_add(lkv_table_builder *b, lkv_slice ikey, lkv_slice value,
               lkv_err *err) {
  if (b->code) return lkv_errcopy(err, &b->err);
  lkv_slice last = {b->data.last.data, b->data.last.len};
  /* Argument errors leave the builder usable, so they are not sticky. */
  if (ikey.n < LKV_TAG_BYTES)
    return lkv_seterr(err, LKV_INVALID, "table %s: internal key of %zu bytes",
                      b->name, ikey.n);
  if (b->entries > 0 && lkv_icmp(ikey, last) <= 0)
    return lkv_seterr(err, LKV_INVALID, "table %s: keys added out of order",
                      b->name);
  /* Versions of a key are adjacent, so comparing with the previous key is
   * enough to give the filter each user key once. */
  lkv_slice uk = lkv_ikey_user(ikey);
  if (b->entries == 0 ||
      lkv_ucmp(uk.p, uk.n, last.p, last.n - LKV_TAG_BYTES) != 0) {
    if (b->nhashes == b->hashes_cap) {
      size_t cap = b->hashes_cap ? b->hashes_cap * 2 : 1024;
      uint64_t *h = realloc(b->hashes, cap * sizeof *h);
      if (h == NULL)
        return lkv_seterr(err, LKV_NOMEM, "building table %s", b->name);
      b->hashes = h;
      b->hashes_cap = cap;
    }
    b->hashes[b->nhashes++] = lkv_bloom_hash(uk.p, uk.n);
  }
  if (b->pending && add_index_entry(b, separator(b, last, ikey)))
    return fail(b, err);
  if (lkv_block_builder_add(&b->data, ikey, value)) {
    nomem(b);
    return fail(b, err);
  }
  b->entries++;
  size_t limit =
      b->o.block_size < MAX_BLOCK_BYTES ? b->o.block_size : MAX_BLOCK_BYTES;
  if (lkv_block_builder_size(&b->data) >= limit && finish_data_block(b))
    return fail(b, err);
  return LKV_OK;
}

uint64_t lkv_tb_entries(const lkv_table_builder *b) { return b->entries; }

uint64_t lkv_tb_size(const lkv_table_builder *b) {
  uint64_t n = b->offset;
  if (b->data.entries > 0)
    n += lkv_block_builder_size(&b->data) + LKV_BLOCK_TRAILER_BYTES;
  return n;
}

static void destroy(lkv_table_builder *b, int remove_file) {
  lkv_env_close(b->o.env, b->fd, b->path, NULL);
  if (remove_file) lkv_env_unlink(b->o.env, b->path, NULL);
  lkv_block_builder_free(&b->data);
  lkv_block_builder_free(&b->index);
  lkv_buf_free(&b->sep);
  free(b->hashes);
  free(b->wbuf);
  free(b->path);
  free(b);
}

static int write_tail(lkv_table_builder *b) {
  int rc;
  if (b->data.entries > 0 && (rc = finish_data_block(b))) return rc;
  if (b->pending) {
    /* The last block's full last key: also the table's largest key. */
    lkv_slice last = {b->data.last.data, b->data.last.len};
    if ((rc = add_index_entry(b, last))) return rc;
  }

  uint64_t foff, fsize, ioff, isize;
  size_t n = lkv_bloom_filter_size(b->nhashes, b->o.bloom_bits_per_key,
                                   b->o.bloom_min_bits);
  char *filter = malloc(n);
  if (filter == NULL) return nomem(b);
  lkv_bloom_build(b->hashes, b->nhashes, b->o.bloom_bits_per_key,
                  b->o.bloom_hash_functions, b->o.bloom_min_bits, filter);
  lkv_slice fs = {filter, n};
  rc = write_block(b, fs, &foff, &fsize);
  free(filter);
  if (rc) return rc;

  lkv_slice index;
  if (lkv_block_builder_finish(&b->index, &index)) return nomem(b);
  if ((rc = write_block(b, index, &ioff, &isize))) return rc;

  char f[LKV_SST_FOOTER_BYTES];
  lkv_put64(f + 0, foff);
  lkv_put64(f + 8, fsize);
  lkv_put64(f + 16, ioff);
  lkv_put64(f + 24, isize);
  lkv_put64(f + 32, b->entries);
  lkv_put32(f + 40, LKV_SST_VERSION);
  lkv_put32(f + 44, lkv_crc32c(f, 44));
  lkv_put64(f + 48, LKV_SST_MAGIC);
  if ((rc = emit(b, f, sizeof f))) return rc;
  if ((rc = flush_wbuf(b))) return rc;
  return lkv_env_fsync(b->o.env, b->fd, b->path, &b->err);
}

int lkv_tb_finish(lkv_table_builder *b, uint64_t *file_size, lkv_err *err) {
  int rc = b->code ? b->code : write_tail(b);
  if (rc) {
    fail(b, err);
    destroy(b, 1);
    return rc;
  }
  if (file_size) *file_size = b->offset;
  /* The data is synced; a failing close cannot lose it. */
  destroy(b, 0);
  return LKV_OK;
}

void lkv_tb_abandon(lkv_table_builder *b) {
  if (b) destroy(b, 1);
}
