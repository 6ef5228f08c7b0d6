/* manifest.c - MANIFEST encoding and atomic replacement (manifest.h). */
#include "manifest.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "coding.h"
#include "crc32c.h"
#include "dbformat.h"
#include "env.h"
#include "err.h"

#define MAGIC "LKVMANI\x01"
#define VERSION 2 /* 2 added wal_name; 1 is still read */
#define HEAD 16   /* magic 8, version u32, body length u32 */
#define MAX_MANIFEST (256u << 20)

int lkv_manifest_encode(const lkv_manifest *m, char **out, size_t *outlen,
                        lkv_err *err) {
  size_t n = HEAD + 28 + 10 + m->wal_name_len + 8 + 4;
  for (size_t i = 0; i < m->nfiles; i++)
    n += 1 + 16 + 20 + m->files[i].smallest_len + m->files[i].largest_len;
  char *buf = malloc(n), *p;
  if (buf == NULL) return lkv_seterr(err, LKV_NOMEM, "encoding the manifest");
  memcpy(buf, MAGIC, 8);
  lkv_put32(buf + 8, VERSION);
  p = buf + HEAD;
  lkv_put64(p, m->next_file);
  lkv_put64(p + 8, m->last_seq);
  lkv_put64(p + 16, m->wal_number);
  lkv_put32(p + 24, (uint32_t)m->nfiles);
  p += 28;
  p = lkv_putv(p, m->wal_name_len);
  if (m->wal_name_len) memcpy(p, m->wal_name, m->wal_name_len);
  p += m->wal_name_len;
  lkv_put64(p, m->wal_start_seq);
  p += 8;
  for (size_t i = 0; i < m->nfiles; i++) {
    const lkv_mfile *f = &m->files[i];
    *p++ = (char)f->level;
    lkv_put64(p, f->number);
    lkv_put64(p + 8, f->size);
    p += 16;
    p = lkv_putv(p, f->smallest_len);
    memcpy(p, f->smallest, f->smallest_len);
    p += f->smallest_len;
    p = lkv_putv(p, f->largest_len);
    memcpy(p, f->largest, f->largest_len);
    p += f->largest_len;
  }
  lkv_put32(buf + 12, (uint32_t)(p - buf - HEAD));
  lkv_put32(p, lkv_crc32c(buf, (size_t)(p - buf)));
  p += 4;
  *out = buf;
  *outlen = (size_t)(p - buf);
  return LKV_OK;
}

int lkv_manifest_write(const lkv_env *env, const char *dir, const char *bytes,
                       size_t n, int *renamed, lkv_err *err) {
  char tmp[4096], dst[4096];
  int rc, fd = -1;
  if (renamed) *renamed = 0;
  if ((rc = lkv_env_path(tmp, sizeof tmp, dir, LKV_MANIFEST_TMP, err)) ||
      (rc = lkv_env_path(dst, sizeof dst, dir, LKV_MANIFEST_NAME, err)))
    return rc;
  if ((rc = lkv_env_open(env, tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644, &fd,
                         err)))
    return rc;
  if ((rc = lkv_env_write(env, fd, bytes, n, tmp, err)) == LKV_OK)
    rc = lkv_env_fsync(env, fd, tmp, err);
  int rc2 = lkv_env_close(env, fd, tmp, rc ? NULL : err);
  if (rc == LKV_OK) rc = rc2;
  /* rename is the commit point; the directory sync makes it durable. A
   * failed directory sync leaves the rename in an unknown state: the
   * caller must treat the new MANIFEST as neither committed nor not. */
  if (rc == LKV_OK) {
    if ((rc = lkv_env_rename(env, tmp, dst, err)) == LKV_OK) {
      if (renamed) *renamed = 1;
      return lkv_env_sync_dir(env, dir, err);
    }
  }
  lkv_env_unlink(env, tmp, NULL);
  return rc;
}

/* A file entry's bound at p: a varint length, then an internal key (at
 * least its tag). Sets *key and *len and returns the end, or NULL when it
 * does not fit before end. */
static const char *get_bound(const char *p, const char *end, const char **key,
                             size_t *len) {
  uint64_t l;
  if ((p = lkv_getv(p, end, &l)) == NULL || l > (uint64_t)(end - p) ||
      l < LKV_TAG_BYTES)
    return NULL;
  *key = p;
  *len = (size_t)l;
  return p + l;
}

#define BAD(what) \
  do {            \
    why = what;   \
    goto corrupt; \
  } while (0)

int lkv_manifest_decode(char *raw, size_t n, const char *name, lkv_manifest *m,
                        lkv_err *err) {
  const char *why = NULL;
  memset(m, 0, sizeof *m);
  m->raw = raw;
  if (n < HEAD + 28 + 4 || memcmp(raw, MAGIC, 8) != 0)
    BAD("bad magic or too short");
  uint32_t version = lkv_get32(raw + 8);
  if (version != 1 && version != VERSION) BAD("unknown format version");
  uint32_t blen = lkv_get32(raw + 12);
  if ((size_t)blen + HEAD + 4 != n)
    BAD("length mismatch (truncated or extended)");
  if (lkv_crc32c(raw, HEAD + blen) != lkv_get32(raw + HEAD + blen))
    BAD("checksum mismatch");
  const char *p = raw + HEAD, *end = raw + HEAD + blen;
  m->next_file = lkv_get64(p);
  m->last_seq = lkv_get64(p + 8);
  m->wal_number = lkv_get64(p + 16);
  uint32_t nf = lkv_get32(p + 24);
  p += 28;
  if (version >= 2) {
    uint64_t l;
    if ((p = lkv_getv(p, end, &l)) == NULL || l > (uint64_t)(end - p) ||
        l == 0 || l >= 200 || memchr(p, '/', (size_t)l) ||
        memchr(p, 0, (size_t)l))
      BAD("bad WAL name");
    m->wal_name = p;
    m->wal_name_len = (size_t)l;
    p += l;
    if (end - p < 8) BAD("WAL start truncated");
    m->wal_start_seq = lkv_get64(p);
    p += 8;
  }
  if (nf > blen / 20) BAD("file count beyond its size");
  m->files = calloc(nf ? nf : 1, sizeof *m->files);
  if (m->files == NULL) {
    lkv_manifest_free(m);
    return lkv_seterr(err, LKV_NOMEM, "reading %s", name);
  }
  for (uint32_t i = 0; i < nf; i++) {
    lkv_mfile *f = &m->files[i];
    if (end - p < 17) BAD("file entry truncated");
    f->level = (unsigned char)*p++;
    f->number = lkv_get64(p);
    f->size = lkv_get64(p + 8);
    p += 16;
    if (f->level >= LKV_MAX_LEVELS) BAD("level out of range");
    if ((p = get_bound(p, end, &f->smallest, &f->smallest_len)) == NULL)
      BAD("bad smallest key");
    if ((p = get_bound(p, end, &f->largest, &f->largest_len)) == NULL)
      BAD("bad largest key");
    m->nfiles++;
  }
  if (p != end) BAD("trailing bytes in the body");
  return LKV_OK;
corrupt:
  lkv_manifest_free(m);
  return lkv_seterr(err, LKV_CORRUPTION, "%s is damaged: %s", name, why);
}

int lkv_manifest_read(const lkv_env *env, const char *dir, lkv_manifest *m,
                      int *exists, lkv_err *err) {
  char path[4096];
  int rc, fd;
  memset(m, 0, sizeof *m);
  *exists = 0;
  if ((rc = lkv_env_path(path, sizeof path, dir, LKV_MANIFEST_NAME, err)))
    return rc;
  lkv_env_info st;
  if ((rc = lkv_env_stat(env, path, &st, err)) == LKV_NOTFOUND) return LKV_OK;
  if (rc) return rc;
  if ((rc = lkv_env_open(env, path, O_RDONLY, 0, &fd, err))) return rc;
  *exists = 1;
  uint64_t size;
  if ((rc = lkv_env_file_size(env, fd, path, &size, err))) {
    lkv_env_close(env, fd, path, NULL);
    return rc;
  }
  if (size > MAX_MANIFEST) {
    lkv_env_close(env, fd, path, NULL);
    return lkv_seterr(err, LKV_CORRUPTION,
                      "%s is damaged: %llu bytes is too big", path,
                      (unsigned long long)size);
  }
  char *raw = malloc(size ? size : 1);
  if (raw == NULL) {
    lkv_env_close(env, fd, path, NULL);
    return lkv_seterr(err, LKV_NOMEM, "reading %s", path);
  }
  rc = lkv_env_pread(env, fd, raw, (size_t)size, 0, path, err);
  lkv_env_close(env, fd, path, NULL);
  if (rc) {
    free(raw);
    return rc;
  }
  return lkv_manifest_decode(raw, (size_t)size, path, m, err);
}

void lkv_manifest_free(lkv_manifest *m) {
  free(m->files);
  free(m->raw);
  memset(m, 0, sizeof *m);
}
