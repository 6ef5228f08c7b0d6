/* rlog.c - the replication log (rlog.h); format in docs/replication.md.
 *
 * Append writes a whole frame with write(2) from the owner's thread; the
 * syncer thread turns "written" into "durable" with fdatasync, one sync
 * for everything written since the last one. Lock order: only r->mu. */
#include "rlog.h"
#include "neterr.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct lkvnet_rlog {
  int fd;
  int notify_fd;
  char path[4096];
  uint64_t size; /* bytes in the file: header plus whole frames */
  char *scratch; /* encode buffer, owner thread only */
  size_t scratch_cap;

  pthread_mutex_t mu;
  pthread_cond_t cv;
  pthread_t syncer;
  int started, stop;
  /* guarded by mu */
  uint64_t last_index, last_term, durable_index, base_index;
  uint64_t appends, syncs, bytes;
  lkv_err sticky; /* code LKV_OK while healthy */
  uint64_t dropped_bytes;
  char dropped_why[LKV_ERR_MSG_LEN];
};

/* {======================================================================
** Helpers: errors, CRC-32C, little-endian coding
** ======================================================================= */


static int seterrno(lkv_err *err, const char *what, const char *path) {
  int e = errno;
  return lkvnet_seterr(err, LKV_IOERROR, "%s %s: %s", what, path, strerror(e));
}

/* CRC-32C (Castagnoli), reflected, bytewise table: the log is written a
 * frame at a time, so this is not on any hot loop worth lanes. */
static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void) {
  uint32_t i, j;
  for (i = 0; i < 256; i++) {
    uint32_t c = i;
    for (j = 0; j < 8; j++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    crc_table[i] = c;
  }
}

static uint32_t crc32c(uint32_t crc, const void *data, size_t n) {
  const unsigned char *p = data;
  crc = ~crc;
  while (n--) crc = crc_table[(crc ^ *p++) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

static void put32(unsigned char *p, uint32_t v) {
  p[0] = (unsigned char)v; p[1] = (unsigned char)(v >> 8);
  p[2] = (unsigned char)(v >> 16); p[3] = (unsigned char)(v >> 24);
}
static void put64(unsigned char *p, uint64_t v) {
  put32(p, (uint32_t)v);
  put32(p + 4, (uint32_t)(v >> 32));
}
static uint32_t get32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
         (uint32_t)p[3] << 24;
}
static uint64_t get64(const unsigned char *p) {
  return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static int write_all(int fd, const void *buf, size_t n) {
  const char *p = buf;
  while (n > 0) {
    ssize_t k = write(fd, p, n);
    if (k < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += k;
    n -= (size_t)k;
  }
  return 0;
}

/* }====================================================================== */

/* {======================================================================
** Open: header, replay, tail cut
** ======================================================================= */

#define MAX_PAYLOAD                                                        \
  ((uint64_t)LKVNET_RLOG_FIXED_PAYLOAD + LKV_MAX_KEY_BYTES + LKV_MAX_VALUE_BYTES)

static int write_header(lkvnet_rlog *r, lkv_err *err) {
  unsigned char h[LKVNET_RLOG_HEADER_SIZE];
  memset(h, 0, sizeof h);
  memcpy(h, LKVNET_RLOG_MAGIC, 8);
  put32(h + 8, LKVNET_RLOG_VERSION);
  put32(h + 12, 0);         /* flags */
  put64(h + 16, 0);         /* base_index: no snapshot yet */
  put64(h + 24, 0);         /* base_term */
  put32(h + 32, crc32c(0, h, 32));
  if (pwrite(r->fd, h, sizeof h, 0) != (ssize_t)sizeof h)
    return seterrno(err, "write header of", r->path);
  if (fdatasync(r->fd) != 0) return seterrno(err, "fdatasync", r->path);
  r->size = sizeof h;
  return LKV_OK;
}

static int read_header(lkvnet_rlog *r, FILE *f, lkv_err *err) {
  unsigned char h[LKVNET_RLOG_HEADER_SIZE];
  if (fread(h, 1, sizeof h, f) != sizeof h)
    return lkvnet_seterr(err, LKV_CORRUPTION, "%s offset 0: header is truncated",
                  r->path);
  if (memcmp(h, LKVNET_RLOG_MAGIC, 8) != 0)
    return lkvnet_seterr(err, LKV_CORRUPTION, "%s offset 0: bad magic (not a "
                  "lunakv replication log)", r->path);
  if (get32(h + 32) != crc32c(0, h, 32))
    return lkvnet_seterr(err, LKV_CORRUPTION, "%s offset 32: header checksum "
                  "mismatch", r->path);
  if (get32(h + 8) != LKVNET_RLOG_VERSION)
    return lkvnet_seterr(err, LKV_CORRUPTION, "%s offset 8: unsupported version %u",
                  r->path, (unsigned)get32(h + 8));
  r->base_index = get64(h + 16);
  r->last_index = r->base_index;
  r->last_term = get64(h + 24);
  r->size = sizeof h;
  return LKV_OK;
}

/* Read frames from f until the end or the first bad one. Sets r->size to
 * the end of the last good frame; *why describes a bad tail. */
static int replay(lkvnet_rlog *r, FILE *f, lkvnet_rlog_replay_fn fn,
                  void *ctx, char *why, size_t whylen, lkv_err *err) {
  unsigned char *buf = NULL;
  size_t cap = 0;
  int rc = LKV_OK;
  why[0] = '\0';
  for (;;) {
    unsigned char fr[LKVNET_RLOG_FRAME_SIZE];
    uint32_t len, crc;
    size_t got = fread(fr, 1, sizeof fr, f);
    lkvnet_entry e;
    uint32_t klen, vlen;
    if (got == 0) break; /* clean end */
    if (got < sizeof fr) {
      snprintf(why, whylen, "offset %llu: torn frame header",
               (unsigned long long)r->size);
      break;
    }
    len = get32(fr);
    crc = get32(fr + 4);
    if (len < LKVNET_RLOG_FIXED_PAYLOAD || len > MAX_PAYLOAD) {
      snprintf(why, whylen, "offset %llu: impossible record length %u",
               (unsigned long long)r->size, (unsigned)len);
      break;
    }
    if (len > cap) {
      unsigned char *nb = realloc(buf, len);
      if (nb == NULL) {
        rc = lkvnet_seterr(err, LKV_NOMEM, "%s: record of %u bytes", r->path,
                    (unsigned)len);
        break;
      }
      buf = nb;
      cap = len;
    }
    if (fread(buf, 1, len, f) != len) {
      snprintf(why, whylen, "offset %llu: torn record",
               (unsigned long long)r->size);
      break;
    }
    if (crc32c(crc32c(0, fr, 4), buf, len) != crc) {
      snprintf(why, whylen, "offset %llu: record checksum mismatch",
               (unsigned long long)r->size);
      break;
    }
    e.term = get64(buf);
    e.index = get64(buf + 8);
    e.op = buf[16];
    klen = get32(buf + 17);
    vlen = get32(buf + 21);
    if ((uint64_t)klen + vlen + LKVNET_RLOG_FIXED_PAYLOAD != len ||
        (e.op != LKVNET_OP_SET && e.op != LKVNET_OP_DELETE) ||
        (e.op == LKVNET_OP_DELETE && vlen != 0)) {
      rc = lkvnet_seterr(err, LKV_CORRUPTION, "%s offset %llu: malformed record "
                  "(checksum valid)", r->path, (unsigned long long)r->size);
      break;
    }
    if (e.index != r->last_index + 1 || e.term < r->last_term) {
      rc = lkvnet_seterr(err, LKV_CORRUPTION, "%s offset %llu: entry (term %llu, "
                  "index %llu) does not follow (term %llu, index %llu)",
                  r->path, (unsigned long long)r->size,
                  (unsigned long long)e.term, (unsigned long long)e.index,
                  (unsigned long long)r->last_term,
                  (unsigned long long)r->last_index);
      break;
    }
    e.key = (const char *)buf + LKVNET_RLOG_FIXED_PAYLOAD;
    e.klen = klen;
    e.val = vlen ? (const char *)buf + LKVNET_RLOG_FIXED_PAYLOAD + klen : NULL;
    e.vlen = vlen;
    if (fn != NULL && (rc = fn(ctx, &e, err)) != LKV_OK) break;
    r->last_index = e.index;
    r->last_term = e.term;
    r->size += LKVNET_RLOG_FRAME_SIZE + len;
  }
  free(buf);
  return rc;
}

static void *syncer_main(void *arg);

int lkvnet_rlog_open(const char *dir, int notify_fd, lkvnet_rlog_replay_fn fn,
                     void *ctx, lkvnet_rlog **out, lkv_err *err) {
  lkvnet_rlog *r;
  struct stat st;
  int rc = LKV_OK;
  *out = NULL;
  pthread_once(&crc_once, crc_init);
  if ((r = calloc(1, sizeof *r)) == NULL)
    return lkvnet_seterr(err, LKV_NOMEM, "replication log");
  r->fd = -1;
  r->notify_fd = notify_fd;
  pthread_mutex_init(&r->mu, NULL);
  pthread_cond_init(&r->cv, NULL);
  if ((size_t)snprintf(r->path, sizeof r->path, "%s/%s", dir,
                       LKVNET_RLOG_FILE) >= sizeof r->path) {
    rc = lkvnet_seterr(err, LKV_INVALID, "data directory path is too long");
    goto fail;
  }
  r->fd = open(r->path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (r->fd < 0 || fstat(r->fd, &st) != 0) {
    rc = seterrno(err, "open", r->path);
    goto fail;
  }
  if (st.st_size == 0) {
    if ((rc = write_header(r, err)) != LKV_OK) goto fail;
    {
      /* the new file's name must survive a crash too */
      int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
      }
    }
  } else {
    int fd2 = dup(r->fd);
    FILE *f = fd2 >= 0 ? fdopen(fd2, "rb") : NULL;
    if (f == NULL) {
      if (fd2 >= 0) close(fd2);
      rc = seterrno(err, "read", r->path);
      goto fail;
    }
    rc = read_header(r, f, err);
    if (rc == LKV_OK)
      rc = replay(r, f, fn, ctx, r->dropped_why, sizeof r->dropped_why, err);
    fclose(f);
    if (rc != LKV_OK) goto fail;
    if ((uint64_t)st.st_size > r->size) {
      r->dropped_bytes = (uint64_t)st.st_size - r->size;
      if (ftruncate(r->fd, (off_t)r->size) != 0) {
        rc = seterrno(err, "truncate", r->path);
        goto fail;
      }
    }
    /* what was replayed may have been only in the page cache (a killed
     * process): make it durable before anyone relies on it */
    if (fdatasync(r->fd) != 0) {
      rc = seterrno(err, "fdatasync", r->path);
      goto fail;
    }
  }
  if (lseek(r->fd, (off_t)r->size, SEEK_SET) < 0) {
    rc = seterrno(err, "seek", r->path);
    goto fail;
  }
  r->durable_index = r->last_index;
  if (pthread_create(&r->syncer, NULL, syncer_main, r) != 0) {
    rc = lkvnet_seterr(err, LKV_IOERROR, "%s: cannot start the sync thread", r->path);
    goto fail;
  }
  r->started = 1;
  *out = r;
  return LKV_OK;
fail:
  if (r->fd >= 0) close(r->fd);
  pthread_mutex_destroy(&r->mu);
  pthread_cond_destroy(&r->cv);
  free(r);
  return rc;
}

/* }====================================================================== */

/* {======================================================================
** Append and the syncer
** ======================================================================= */

int lkvnet_rlog_append(lkvnet_rlog *r, uint64_t term, int op, const char *key,
                       size_t klen, const char *val, size_t vlen,
                       uint64_t *index, lkv_err *err) {
  size_t len, total;
  unsigned char *p;
  uint64_t idx;
  pthread_mutex_lock(&r->mu);
  if (r->sticky.code != LKV_OK) {
    lkv_err copy = r->sticky;
    pthread_mutex_unlock(&r->mu);
    if (err) *err = copy;
    return copy.code;
  }
  idx = r->last_index + 1;
  pthread_mutex_unlock(&r->mu);
  if (klen > LKV_MAX_KEY_BYTES || vlen > LKV_MAX_VALUE_BYTES)
    return lkvnet_seterr(err, LKV_TOOBIG, "key of %zu or value of %zu bytes", klen,
                  vlen);
  if (op == LKVNET_OP_DELETE) vlen = 0;
  len = LKVNET_RLOG_FIXED_PAYLOAD + klen + vlen;
  total = LKVNET_RLOG_FRAME_SIZE + len;
  if (total > r->scratch_cap) {
    unsigned char *nb = realloc(r->scratch, total);
    if (nb == NULL)
      return lkvnet_seterr(err, LKV_NOMEM, "replication log record of %zu bytes",
                    total);
    r->scratch = (char *)nb;
    r->scratch_cap = total;
  }
  p = (unsigned char *)r->scratch;
  put32(p, (uint32_t)len);
  put64(p + 8, term);
  put64(p + 16, idx);
  p[24] = (unsigned char)op;
  put32(p + 25, (uint32_t)klen);
  put32(p + 29, (uint32_t)vlen);
  if (klen) memcpy(p + 8 + LKVNET_RLOG_FIXED_PAYLOAD, key, klen);
  if (vlen) memcpy(p + 8 + LKVNET_RLOG_FIXED_PAYLOAD + klen, val, vlen);
  put32(p + 4, crc32c(crc32c(0, p, 4), p + 8, len));
  if (write_all(r->fd, p, total) != 0) {
    int rc = seterrno(err, "write", r->path);
    /* never leave a partial record for a later append to follow */
    if (ftruncate(r->fd, (off_t)r->size) != 0 ||
        lseek(r->fd, (off_t)r->size, SEEK_SET) < 0) {
      pthread_mutex_lock(&r->mu);
      if (err) r->sticky = *err;
      else r->sticky.code = rc;
      pthread_mutex_unlock(&r->mu);
    }
    return rc;
  }
  r->size += total;
  pthread_mutex_lock(&r->mu);
  r->last_index = idx;
  r->last_term = term;
  r->appends++;
  r->bytes += total;
  pthread_cond_signal(&r->cv);
  pthread_mutex_unlock(&r->mu);
  *index = idx;
  return LKV_OK;
}

static void *syncer_main(void *arg) {
  lkvnet_rlog *r = arg;
  pthread_mutex_lock(&r->mu);
  for (;;) {
    uint64_t target;
    int rc, e;
    while (!r->stop && r->durable_index == r->last_index &&
           r->sticky.code == LKV_OK)
      pthread_cond_wait(&r->cv, &r->mu);
    if (r->stop || r->sticky.code != LKV_OK) break;
    target = r->last_index; /* every byte of it is already written */
    pthread_mutex_unlock(&r->mu);
    rc = fdatasync(r->fd);
    e = errno;
    pthread_mutex_lock(&r->mu);
    if (rc == 0) {
      r->durable_index = target;
      r->syncs++;
    } else {
      lkvnet_seterr(&r->sticky, LKV_IOERROR, "fdatasync %s: %s", r->path,
             strerror(e));
    }
    pthread_mutex_unlock(&r->mu);
    if (r->notify_fd >= 0) {
      char b = 1;
      ssize_t k = write(r->notify_fd, &b, 1); /* EAGAIN: already pending */
      (void)k;
    }
    pthread_mutex_lock(&r->mu);
  }
  pthread_mutex_unlock(&r->mu);
  return NULL;
}

uint64_t lkvnet_rlog_durable_index(lkvnet_rlog *r) {
  uint64_t v;
  pthread_mutex_lock(&r->mu);
  v = r->durable_index;
  pthread_mutex_unlock(&r->mu);
  return v;
}

int lkvnet_rlog_error(lkvnet_rlog *r, lkv_err *err) {
  lkv_err copy;
  pthread_mutex_lock(&r->mu);
  copy = r->sticky;
  pthread_mutex_unlock(&r->mu);
  if (err != NULL && copy.code != LKV_OK) *err = copy;
  return copy.code;
}

void lkvnet_rlog_stats_get(lkvnet_rlog *r, lkvnet_rlog_stats *out) {
  pthread_mutex_lock(&r->mu);
  out->base_index = r->base_index;
  out->last_index = r->last_index;
  out->last_term = r->last_term;
  out->durable_index = r->durable_index;
  out->appends = r->appends;
  out->syncs = r->syncs;
  out->bytes = r->bytes;
  out->dropped_bytes = r->dropped_bytes;
  memcpy(out->dropped_why, r->dropped_why, sizeof out->dropped_why);
  pthread_mutex_unlock(&r->mu);
}

int lkvnet_rlog_close(lkvnet_rlog *r, lkv_err *err) {
  int rc = LKV_OK;
  if (r == NULL) return LKV_OK;
  pthread_mutex_lock(&r->mu);
  r->stop = 1;
  pthread_cond_signal(&r->cv);
  pthread_mutex_unlock(&r->mu);
  if (r->started) pthread_join(r->syncer, NULL);
  if (r->sticky.code == LKV_OK && fdatasync(r->fd) != 0)
    rc = seterrno(err, "fdatasync", r->path);
  if (close(r->fd) != 0 && rc == LKV_OK) rc = seterrno(err, "close", r->path);
  pthread_mutex_destroy(&r->mu);
  pthread_cond_destroy(&r->cv);
  free(r->scratch);
  free(r);
  return rc;
}

/* }====================================================================== */
