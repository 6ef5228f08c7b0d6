/* wal.c - write-ahead log writer and replay (see wal.h, wal_format.md). */
#include "wal.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "coding.h"
#include "crc32c.h"
#include "env.h"
#include "err.h"

struct lkv_wal {
  const lkv_env *env;
  int fd;
  int failed;       /* a write_out failed: the file's tail is unknown */
  uint64_t written; /* bytes handed to the OS */
  char *buf;
  size_t len, cap;
  char path[];
};

static int wal_alloc(const lkv_env *env, const char *path, int fd,
                     uint64_t written, lkv_wal **out, lkv_err *err) {
  size_t pl = strlen(path) + 1;
  lkv_wal *w = calloc(1, sizeof *w + pl);
  if (w == NULL) {
    lkv_env_close(env, fd, path, NULL);
    return lkv_seterr(err, LKV_NOMEM, "wal %s", path);
  }
  memcpy(w->path, path, pl);
  w->env = env;
  w->fd = fd;
  w->written = written;
  *out = w;
  return LKV_OK;
}

int lkv_wal_create(const lkv_env *env, const char *path, lkv_wal **out,
                   lkv_err *err) {
  int fd;
  int rc = lkv_env_open(env, path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND,
                        0644, &fd, err);
  if (rc) return rc;
  return wal_alloc(env, path, fd, 0, out, err);
}

int lkv_wal_reopen(const lkv_env *env, const char *path, uint64_t valid_end,
                   lkv_wal **out, lkv_err *err) {
  int fd;
  int rc = lkv_env_open(env, path, O_WRONLY | O_APPEND, 0644, &fd, err);
  if (rc) return rc;
  uint64_t size;
  /* The cut is made durable at once: were it lost in a power cut while a
   * later log's synced records survived, replay would stop at the torn
   * tail coming back here and drop those records with it. */
  if ((rc = lkv_env_file_size(env, fd, path, &size, err)) == LKV_OK &&
      size > valid_end &&
      (rc = lkv_env_truncate(env, fd, valid_end, path, err)) == LKV_OK)
    rc = lkv_env_fdatasync(env, fd, path, err);
  if (rc) {
    lkv_env_close(env, fd, path, NULL);
    return rc;
  }
  return wal_alloc(env, path, fd, valid_end, out, err);
}

int lkv_wal_add_marker(lkv_wal *w, uint64_t seq, lkv_err *err) {
  char rec[12];
  lkv_put64(rec, seq);
  lkv_put32(rec + 8, 0);
  return lkv_wal_add2(w, rec, sizeof rec, NULL, 0, err);
}

int lkv_wal_add2(lkv_wal *w, const char *a, size_t an, const char *b, size_t bn,
                 lkv_err *err) {
  size_t n = an + bn;
  if (n > UINT32_MAX)
    return lkv_seterr(err, LKV_TOOBIG, "wal record of %zu bytes", n);
  size_t need = w->len + LKV_WAL_HEADER + n;
  if (need > w->cap) {
    size_t cap = w->cap ? w->cap : 64 * 1024;
    while (cap < need) cap *= 2;
    char *p = realloc(w->buf, cap);
    if (p == NULL) return lkv_seterr(err, LKV_NOMEM, "wal buffer %s", w->path);
    w->buf = p;
    w->cap = cap;
  }
  char *h = w->buf + w->len;
  lkv_put32(h + 4, (uint32_t)n);
  if (an) memcpy(h + LKV_WAL_HEADER, a, an);
  if (bn) memcpy(h + LKV_WAL_HEADER + an, b, bn);
  /* the crc covers the length too, so a damaged length is caught */
  lkv_put32(h, lkv_crc32c(h + 4, 4 + n));
  w->len = need;
  return LKV_OK;
}

int lkv_wal_write_out(lkv_wal *w, lkv_err *err) {
  if (w->failed)
    return lkv_seterr(err, LKV_IOERROR, "%s: an earlier write failed", w->path);
  if (w->len == 0) return LKV_OK;
  int rc = lkv_env_write(w->env, w->fd, w->buf, w->len, w->path, err);
  if (rc) {
    /* part of the buffer may be in the file: writing it again would put
     * a record after a torn copy of itself */
    w->failed = 1;
    return rc;
  }
  w->written += w->len;
  w->len = 0;
  if (w->cap > 4 * 1024 * 1024) { /* do not keep a huge value's buffer */
    free(w->buf);
    w->buf = NULL;
    w->cap = 0;
  }
  return LKV_OK;
}

int lkv_wal_sync(lkv_wal *w, lkv_err *err) {
  int rc = lkv_wal_write_out(w, err);
  if (rc == LKV_OK && (rc = lkv_env_fdatasync(w->env, w->fd, w->path, err)))
    w->failed = 1; /* after a failed fsync the page cache may have lost
                      the bytes (Linux marks them clean): never trust it */
  return rc;
}

uint64_t lkv_wal_size(const lkv_wal *w) { return w->written + w->len; }
uint64_t lkv_wal_pending(const lkv_wal *w) { return w->len; }

int lkv_wal_close(lkv_wal *w, lkv_err *err) {
  if (w == NULL) return LKV_OK;
  int rc = lkv_wal_write_out(w, err);
  int rc2 = lkv_env_close(w->env, w->fd, w->path, rc ? NULL : err);
  if (rc == LKV_OK) rc = rc2;
  free(w->buf);
  free(w);
  return rc;
}

int lkv_wal_replay(const lkv_env *env, const char *path, lkv_wal_fn fn,
                   void *ctx, uint64_t *valid_end, uint64_t *dropped, char *why,
                   size_t whylen, lkv_err *err) {
  int fd;
  *valid_end = *dropped = 0;
  if (why && whylen) why[0] = '\0';
  int rc = lkv_env_open(env, path, O_RDONLY, 0, &fd, err);
  if (rc) return rc;
  uint64_t size;
  if ((rc = lkv_env_file_size(env, fd, path, &size, err))) {
    lkv_env_close(env, fd, path, NULL);
    return rc;
  }
  /* Read in large chunks; a record may span chunks, so keep a window. */
  size_t cap = 1 << 20, have = 0, pos = 0;
  char *buf = malloc(cap);
  if (buf == NULL) {
    lkv_env_close(env, fd, path, NULL);
    return lkv_seterr(err, LKV_NOMEM, "replaying %s", path);
  }
  uint64_t off = 0;      /* file offset of buf[0] */
  uint64_t file_pos = 0; /* bytes read from the file so far */
  const char *bad = NULL;
  for (;;) {
    /* make sure the header (and then the payload) is in the window */
    size_t need = LKV_WAL_HEADER;
    if (have - pos >= LKV_WAL_HEADER) need += lkv_get32(buf + pos + 4);
    if (have - pos < need) {
      if (file_pos >= size) {
        if (have - pos > 0) bad = "torn record at the end of the log";
        break;
      }
      if (pos > 0) { /* slide the unread bytes to the front */
        memmove(buf, buf + pos, have - pos);
        have -= pos;
        off += pos;
        pos = 0;
      }
      if (need > cap) {
        if (need > (size_t)LKV_MAX_VALUE_BYTES + 2 * LKV_MAX_KEY_BYTES + 4096) {
          bad = "record length beyond any valid record";
          break;
        }
        char *p = realloc(buf, need);
        if (p == NULL) {
          rc = lkv_seterr(err, LKV_NOMEM, "replaying %s", path);
          break;
        }
        buf = p;
        cap = need;
      }
      size_t want = cap - have;
      if (want > size - file_pos) want = (size_t)(size - file_pos);
      if ((rc = lkv_env_pread(env, fd, buf + have, want, file_pos, path, err)))
        break;
      have += want;
      file_pos += want;
      continue;
    }
    uint32_t n = lkv_get32(buf + pos + 4);
    if (lkv_crc32c(buf + pos + 4, 4 + (size_t)n) != lkv_get32(buf + pos)) {
      bad = "record checksum mismatch";
      break;
    }
    if ((rc = fn(ctx, buf + pos + LKV_WAL_HEADER, n, err))) {
      if (rc == LKV_CORRUPTION) { /* a record that does not decode */
        rc = LKV_OK;
        bad = "record does not decode";
      } else if (rc == LKV_NOTFOUND) { /* the caller's: it does not follow */
        rc = LKV_OK;
        bad =
            "record's sequence number does not follow on (earlier writes "
            "were lost)";
      }
      break;
    }
    pos += LKV_WAL_HEADER + n;
    *valid_end = off + pos;
  }
  if (rc == LKV_OK && bad) {
    *dropped = size - *valid_end;
    if (why && whylen)
      snprintf(why, whylen, "%s at offset %llu (%llu bytes dropped)", bad,
               (unsigned long long)*valid_end, (unsigned long long)*dropped);
  }
  free(buf);
  lkv_env_close(env, fd, path, NULL);
  return rc;
}
