/* rlog.c - the replication log (rlog.h); format in docs/replication.md.
 *
 * Append writes a whole frame with write(2) from the owner's thread; the
 * syncer thread turns "written" into "durable" with fdatasync, one sync
 * for everything written since the last one. A background compaction
 * (lkvnet_rlog_compact_begin) adds a third thread for its bulk copy and
 * hands the final sync and rename to the syncer. Lock order: only r->mu. */
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

/* Where each entry's frame starts, and its term: what /append needs
 * (prev_term checks, reading a range of frames) without reading the file.
 * ents[i] is entry base_index + 1 + i. */
typedef struct Ent {
  uint64_t off, term;
} Ent;

struct lkvnet_rlog {
  int fd;
  int notify_fd;
  char dir[4096];
  char path[4096];
  uint64_t size; /* bytes in the file: header plus whole frames */
  char *scratch; /* encode buffer, owner thread only */
  size_t scratch_cap;
  Ent *ents;     /* owner thread only */
  size_t nents, ents_cap;

  pthread_mutex_t mu;
  pthread_cond_t cv;
  pthread_t syncer;
  int started, stop;
  /* guarded by mu */
  uint64_t last_index, last_term, durable_index, base_index, base_term;
  /* gen moves whenever entries are cut or the file replaced: a sync that
   * began before must not vouch for what is there now. busy: the syncer
   * is inside fdatasync (a rewrite waits for it before closing fd). */
  uint64_t gen;
  int busy, paused;
  uint64_t appends, syncs, bytes;
  lkv_err sticky; /* code LKV_OK while healthy */
  uint64_t dropped_bytes;
  char dropped_why[LKV_ERR_MSG_LEN];

  /* A background compaction (lkvnet_rlog_compact_begin). cp_state is
   * guarded by mu; it moves COPYING -> COPIED (the copier thread) ->
   * RENAMING (the owner's switch) -> RENAMED (the syncer) -> IDLE (the
   * owner), or COPYING -> COPY_FAILED -> IDLE. The other cp_ fields belong
   * to whichever thread the state names: the copier in COPYING, the owner
   * in COPIED, the syncer in RENAMING. */
  int cp_state;
  lkv_err cp_err;          /* why it failed */
  uint64_t cp_base, cp_base_term, cp_stable;
  uint64_t cp_from_off;    /* old file: the first kept frame */
  uint64_t cp_stable_off;  /* old file: the first frame past stable */
  int cp_srcfd;            /* the old file, for the copier */
  int cp_fd;               /* the new file (replication.log.tmp) */
  int cp_oldfd;            /* the old file after the switch, until renamed */
  lkvnet_rlog_prepare_fn cp_prepare;
  void *cp_ctx;
  pthread_t cp_thread;
  int cp_report;           /* LKVNET_COMPACT_DONE/FAILED not yet polled */
  lkv_err cp_report_err;
};

enum { CP_IDLE, CP_COPYING, CP_COPIED, CP_COPY_FAILED, CP_RENAMING,
       CP_RENAMED };

static void compact_finish(lkvnet_rlog *r);

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
** Frames: encode, check, decode
** ======================================================================= */

#define MAX_PAYLOAD                                                        \
  ((uint64_t)LKVNET_RLOG_FIXED_PAYLOAD + LKV_MAX_KEY_BYTES + LKV_MAX_VALUE_BYTES)

size_t lkvnet_rlog_frame_size(const lkvnet_entry *e) {
  size_t vlen = e->op == LKVNET_OP_SET ? e->vlen : 0;
  size_t klen = e->op == LKVNET_OP_NOOP ? 0 : e->klen;
  return LKVNET_RLOG_FRAME_SIZE + LKVNET_RLOG_FIXED_PAYLOAD + klen + vlen;
}

void lkvnet_rlog_encode(unsigned char *p, const lkvnet_entry *e) {
  size_t vlen = e->op == LKVNET_OP_SET ? e->vlen : 0;
  size_t klen = e->op == LKVNET_OP_NOOP ? 0 : e->klen;
  size_t len = LKVNET_RLOG_FIXED_PAYLOAD + klen + vlen;
  pthread_once(&crc_once, crc_init);
  put32(p, (uint32_t)len);
  put64(p + 8, e->term);
  put64(p + 16, e->index);
  p[24] = (unsigned char)e->op;
  put32(p + 25, (uint32_t)klen);
  put32(p + 29, (uint32_t)vlen);
  if (klen) memcpy(p + 8 + LKVNET_RLOG_FIXED_PAYLOAD, e->key, klen);
  if (vlen) memcpy(p + 8 + LKVNET_RLOG_FIXED_PAYLOAD + klen, e->val, vlen);
  put32(p + 4, crc32c(crc32c(0, p, 4), p + 8, len));
}

/* The fields of a payload whose checksum matched; -1 when they contradict
 * its length or name no operation. */
static int parse_payload(const unsigned char *buf, uint32_t len,
                         lkvnet_entry *e) {
  uint32_t klen = get32(buf + 17), vlen = get32(buf + 21);
  e->term = get64(buf);
  e->index = get64(buf + 8);
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
  pthread_once(&crc_once, crc_init);
  if (o == len) return 0;
  if (len - o < LKVNET_RLOG_FRAME_SIZE) {
    snprintf(why, whylen, "byte %zu: torn frame header", o);
    return -1;
  }
  plen = get32(buf + o);
  if (plen < LKVNET_RLOG_FIXED_PAYLOAD || plen > MAX_PAYLOAD ||
      plen > len - o - LKVNET_RLOG_FRAME_SIZE) {
    snprintf(why, whylen, "byte %zu: impossible frame length %u", o,
             (unsigned)plen);
    return -1;
  }
  if (crc32c(crc32c(0, buf + o, 4), buf + o + LKVNET_RLOG_FRAME_SIZE, plen) !=
      get32(buf + o + 4)) {
    snprintf(why, whylen, "byte %zu: frame checksum mismatch", o);
    return -1;
  }
  if (parse_payload(buf + o + LKVNET_RLOG_FRAME_SIZE, plen, e) != 0) {
    snprintf(why, whylen, "byte %zu: malformed frame (checksum valid)", o);
    return -1;
  }
  *off = o + LKVNET_RLOG_FRAME_SIZE + plen;
  return 1;
}

/* }====================================================================== */

/* {======================================================================
** Open: header, replay, tail cut
** ======================================================================= */

static int push_ent(lkvnet_rlog *r, uint64_t off, uint64_t term) {
  if (r->nents == r->ents_cap) {
    size_t nc = r->ents_cap ? r->ents_cap * 2 : 1024;
    Ent *n = realloc(r->ents, nc * sizeof *n);
    if (n == NULL) return -1;
    r->ents = n;
    r->ents_cap = nc;
  }
  r->ents[r->nents].off = off;
  r->ents[r->nents].term = term;
  r->nents++;
  return 0;
}

static void encode_header(unsigned char *h, uint64_t base_index,
                          uint64_t base_term) {
  memset(h, 0, LKVNET_RLOG_HEADER_SIZE);
  memcpy(h, LKVNET_RLOG_MAGIC, 8);
  put32(h + 8, LKVNET_RLOG_VERSION);
  put32(h + 12, 0); /* flags */
  put64(h + 16, base_index);
  put64(h + 24, base_term);
  put32(h + 32, crc32c(0, h, 32));
}

static int write_header(lkvnet_rlog *r, lkv_err *err) {
  unsigned char h[LKVNET_RLOG_HEADER_SIZE];
  encode_header(h, 0, 0);
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
  if (get32(h + 36) != 0)
    return lkvnet_seterr(err, LKV_CORRUPTION, "%s offset 36: reserved bytes "
                         "are not zero", r->path);
  if (get32(h + 8) != LKVNET_RLOG_VERSION)
    return lkvnet_seterr(err, LKV_CORRUPTION, "%s offset 8: unsupported version %u",
                  r->path, (unsigned)get32(h + 8));
  if (get32(h + 12) != 0)
    return lkvnet_seterr(err, LKV_CORRUPTION, "%s offset 12: unknown flags "
                         "0x%x", r->path, (unsigned)get32(h + 12));
  if (get64(h + 16) == UINT64_MAX) /* no entry could follow it */
    return lkvnet_seterr(err, LKV_CORRUPTION, "%s offset 16: impossible base "
                         "index", r->path);
  r->base_index = get64(h + 16);
  r->base_term = get64(h + 24);
  r->last_index = r->base_index;
  r->last_term = r->base_term;
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
    if (parse_payload(buf, len, &e) != 0) {
      rc = lkvnet_seterr(err, LKV_CORRUPTION, "%s offset %llu: malformed record "
                  "(checksum valid)", r->path, (unsigned long long)r->size);
      break;
    }
    if (r->last_index == UINT64_MAX || e.index != r->last_index + 1 ||
        e.term < r->last_term) {
      rc = lkvnet_seterr(err, LKV_CORRUPTION, "%s offset %llu: entry (term %llu, "
                  "index %llu) does not follow (term %llu, index %llu)",
                  r->path, (unsigned long long)r->size,
                  (unsigned long long)e.term, (unsigned long long)e.index,
                  (unsigned long long)r->last_term,
                  (unsigned long long)r->last_index);
      break;
    }
    if (fn != NULL && (rc = fn(ctx, &e, err)) != LKV_OK) break;
    if (push_ent(r, r->size, e.term) != 0) {
      rc = lkvnet_seterr(err, LKV_NOMEM, "%s: entry index", r->path);
      break;
    }
    r->last_index = e.index;
    r->last_term = e.term;
    r->size += LKVNET_RLOG_FRAME_SIZE + len;
  }
  free(buf);
  return rc;
}

static void *syncer_main(void *arg);

static void fsync_dir(const char *dir) {
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)fsync(dfd);
    close(dfd);
  }
}

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
  r->cp_fd = r->cp_oldfd = r->cp_srcfd = -1;
  r->notify_fd = notify_fd;
  pthread_mutex_init(&r->mu, NULL);
  pthread_cond_init(&r->cv, NULL);
  if ((size_t)snprintf(r->path, sizeof r->path, "%s/%s", dir,
                       LKVNET_RLOG_FILE) >= sizeof r->path) {
    rc = lkvnet_seterr(err, LKV_INVALID, "data directory path is too long");
    goto fail;
  }
  snprintf(r->dir, sizeof r->dir, "%s", dir);
  r->fd = open(r->path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (r->fd < 0 || fstat(r->fd, &st) != 0) {
    rc = seterrno(err, "open", r->path);
    goto fail;
  }
  if (st.st_size == 0) {
    if ((rc = write_header(r, err)) != LKV_OK) goto fail;
    fsync_dir(dir); /* the new file's name must survive a crash too */
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
  free(r->ents);
  free(r);
  return rc;
}

/* }====================================================================== */

/* {======================================================================
** Append, truncate, rewrite, read
** ======================================================================= */

static int sticky_error(lkvnet_rlog *r, lkv_err *err) {
  lkv_err copy;
  pthread_mutex_lock(&r->mu);
  copy = r->sticky;
  pthread_mutex_unlock(&r->mu);
  if (copy.code != LKV_OK && err) *err = copy;
  return copy.code;
}

static void make_sticky(lkvnet_rlog *r, int rc, const lkv_err *err) {
  pthread_mutex_lock(&r->mu);
  if (r->sticky.code == LKV_OK) {
    if (err) r->sticky = *err;
    else r->sticky.code = rc;
  }
  pthread_cond_signal(&r->cv);
  pthread_mutex_unlock(&r->mu);
}

/* Write e (whose index is last_index + 1) as one frame. */
static int append_frame(lkvnet_rlog *r, const lkvnet_entry *e, lkv_err *err) {
  size_t total = lkvnet_rlog_frame_size(e);
  int rc;
  if ((rc = sticky_error(r, err)) != LKV_OK) return rc;
  if (e->klen > LKV_MAX_KEY_BYTES || e->vlen > LKV_MAX_VALUE_BYTES)
    return lkvnet_seterr(err, LKV_TOOBIG, "key of %zu or value of %zu bytes",
                         e->klen, e->vlen);
  if (total > r->scratch_cap) {
    char *nb = realloc(r->scratch, total);
    if (nb == NULL)
      return lkvnet_seterr(err, LKV_NOMEM, "replication log record of %zu "
                           "bytes", total);
    r->scratch = nb;
    r->scratch_cap = total;
  }
  if (push_ent(r, r->size, e->term) != 0)
    return lkvnet_seterr(err, LKV_NOMEM, "replication log entry index");
  lkvnet_rlog_encode((unsigned char *)r->scratch, e);
  if (write_all(r->fd, r->scratch, total) != 0) {
    rc = seterrno(err, "write", r->path);
    r->nents--;
    /* never leave a partial record for a later append to follow */
    if (ftruncate(r->fd, (off_t)r->size) != 0 ||
        lseek(r->fd, (off_t)r->size, SEEK_SET) < 0)
      make_sticky(r, rc, err);
    return rc;
  }
  r->size += total;
  pthread_mutex_lock(&r->mu);
  r->last_index = e->index;
  r->last_term = e->term;
  r->appends++;
  r->bytes += total;
  pthread_cond_signal(&r->cv);
  pthread_mutex_unlock(&r->mu);
  return LKV_OK;
}

int lkvnet_rlog_append(lkvnet_rlog *r, uint64_t term, int op, const char *key,
                       size_t klen, const char *val, size_t vlen,
                       uint64_t *index, lkv_err *err) {
  lkvnet_entry e;
  int rc;
  uint64_t lt = r->nents ? r->ents[r->nents - 1].term : r->base_term;
  if (r->base_index + r->nents == UINT64_MAX)
    return lkvnet_seterr(err, LKV_INVALID, "the log's index is exhausted");
  if (term < lt || (op != LKVNET_OP_SET && op != LKVNET_OP_DELETE &&
                    op != LKVNET_OP_NOOP))
    return lkvnet_seterr(err, LKV_INVALID, "cannot append op %d at term "
                         "%llu after term %llu", op, (unsigned long long)term,
                         (unsigned long long)lt);
  e.term = term;
  e.index = r->base_index + r->nents + 1;
  e.op = op;
  e.key = key;
  e.klen = op == LKVNET_OP_NOOP ? 0 : klen;
  e.val = val;
  e.vlen = op == LKVNET_OP_SET ? vlen : 0;
  if ((rc = append_frame(r, &e, err)) == LKV_OK) *index = e.index;
  return rc;
}

int lkvnet_rlog_append_entry(lkvnet_rlog *r, const lkvnet_entry *e,
                             lkv_err *err) {
  uint64_t last = r->base_index + r->nents;
  uint64_t lt = r->nents ? r->ents[r->nents - 1].term : r->base_term;
  if (last == UINT64_MAX || e->index != last + 1 || e->term < lt)
    return lkvnet_seterr(err, LKV_INVALID, "entry (term %llu, index %llu) "
                         "does not follow (term %llu, index %llu)",
                         (unsigned long long)e->term,
                         (unsigned long long)e->index, (unsigned long long)lt,
                         (unsigned long long)last);
  return append_frame(r, e, err);
}

int lkvnet_rlog_term_at(lkvnet_rlog *r, uint64_t index, uint64_t *term) {
  if (index == r->base_index) {
    *term = r->base_term;
    return LKV_OK;
  }
  if (index < r->base_index || index > r->base_index + r->nents)
    return LKV_NOTFOUND;
  *term = r->ents[index - r->base_index - 1].term;
  return LKV_OK;
}

int lkvnet_rlog_truncate(lkvnet_rlog *r, uint64_t index, lkv_err *err) {
  uint64_t last, size;
  int rc;
  /* the copier reads the old file up to cp_stable: never cut under it */
  if (lkvnet_rlog_compacting(r) && index < r->cp_stable) compact_finish(r);
  last = r->base_index + r->nents;
  if ((rc = sticky_error(r, err)) != LKV_OK) return rc;
  if (index < r->base_index || index > last)
    return lkvnet_seterr(err, LKV_INVALID, "cannot cut the log after index "
                         "%llu: it holds %llu .. %llu",
                         (unsigned long long)index,
                         (unsigned long long)r->base_index + 1,
                         (unsigned long long)last);
  if (index == last) return LKV_OK;
  size = r->ents[index - r->base_index].off;
  if (ftruncate(r->fd, (off_t)size) != 0 ||
      lseek(r->fd, (off_t)size, SEEK_SET) < 0) {
    rc = seterrno(err, "truncate", r->path);
    make_sticky(r, rc, err);
    return rc;
  }
  r->size = size;
  r->nents = (size_t)(index - r->base_index);
  pthread_mutex_lock(&r->mu);
  r->last_index = index;
  r->last_term = r->nents ? r->ents[r->nents - 1].term : r->base_term;
  if (r->durable_index > index) r->durable_index = index;
  r->gen++;
  pthread_mutex_unlock(&r->mu);
  return LKV_OK;
}

static int pread_all(int fd, void *buf, size_t n, uint64_t off) {
  char *p = buf;
  while (n > 0) {
    ssize_t k = pread(fd, p, n, (off_t)off);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) {
      if (k == 0) errno = EIO; /* the file is shorter than our index says */
      return -1;
    }
    p += k;
    n -= (size_t)k;
    off += (uint64_t)k;
  }
  return 0;
}

int lkvnet_rlog_rewrite(lkvnet_rlog *r, uint64_t base_index,
                        uint64_t base_term, lkv_err *err) {
  char tmp[4096 + 16];
  unsigned char h[LKVNET_RLOG_HEADER_SIZE];
  uint64_t last, from_off;
  size_t keep = 0, i;
  int fd = -1, rc;
  char *copy = NULL;
  size_t copy_len = 0;
  compact_finish(r); /* one rewrite at a time */
  last = r->base_index + r->nents;
  from_off = r->size;
  if ((rc = sticky_error(r, err)) != LKV_OK) return rc;
  if (base_index < r->base_index || base_index == UINT64_MAX)
    return lkvnet_seterr(err, LKV_INVALID, "cannot start the log after "
                         "%llu (it starts after %llu)",
                         (unsigned long long)base_index,
                         (unsigned long long)r->base_index);
  if (base_index < last) {
    keep = (size_t)(last - base_index);
    from_off = r->ents[base_index - r->base_index].off;
  }
  copy_len = (size_t)(r->size - from_off);
  snprintf(tmp, sizeof tmp, "%s.tmp", r->path);
  encode_header(h, base_index, base_term);
  fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return seterrno(err, "create", tmp);
  if (copy_len && (copy = malloc(copy_len)) == NULL) {
    rc = lkvnet_seterr(err, LKV_NOMEM, "rewriting %s", r->path);
    goto fail;
  }
  if (copy_len && pread_all(r->fd, copy, copy_len, from_off) != 0) {
    rc = seterrno(err, "read", r->path);
    goto fail;
  }
  if (write_all(fd, h, sizeof h) != 0 ||
      (copy_len && write_all(fd, copy, copy_len) != 0)) {
    rc = seterrno(err, "write", tmp);
    goto fail;
  }
  if (fdatasync(fd) != 0) {
    rc = seterrno(err, "fdatasync", tmp);
    goto fail;
  }
  /* the syncer must not be inside fdatasync(old fd) when it closes */
  pthread_mutex_lock(&r->mu);
  r->paused = 1;
  while (r->busy) pthread_cond_wait(&r->cv, &r->mu);
  pthread_mutex_unlock(&r->mu);
  if (rename(tmp, r->path) != 0) {
    rc = seterrno(err, "rename", tmp);
    pthread_mutex_lock(&r->mu);
    r->paused = 0;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    goto fail;
  }
  fsync_dir(r->dir);
  close(r->fd);
  r->fd = fd;
  fd = -1;
  for (i = 0; i < keep; i++) {
    r->ents[i].off = r->ents[r->nents - keep + i].off - from_off +
                     LKVNET_RLOG_HEADER_SIZE;
    r->ents[i].term = r->ents[r->nents - keep + i].term;
  }
  r->nents = keep;
  r->size = LKVNET_RLOG_HEADER_SIZE + copy_len;
  (void)lseek(r->fd, (off_t)r->size, SEEK_SET);
  pthread_mutex_lock(&r->mu);
  r->base_index = base_index;
  r->base_term = base_term;
  if (keep == 0) {
    r->last_index = base_index;
    r->last_term = base_term;
  }
  r->durable_index = r->last_index; /* the new file was synced whole */
  r->gen++;
  r->paused = 0;
  pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
  free(copy);
  return LKV_OK;
fail:
  free(copy);
  if (fd >= 0) close(fd);
  unlink(tmp);
  return rc;
}

int lkvnet_rlog_read(lkvnet_rlog *r, uint64_t from, size_t max_bytes,
                     unsigned char **buf, size_t *len, uint64_t *to,
                     lkv_err *err) {
  uint64_t last = r->base_index + r->nents, end_off, start_off;
  uint64_t n = 0;
  size_t first;
  *buf = NULL;
  *len = 0;
  *to = from - 1;
  if (from <= r->base_index)
    return lkvnet_seterr(err, LKV_NOTFOUND, "index %llu is behind the "
                         "log's snapshot (base index %llu)",
                         (unsigned long long)from,
                         (unsigned long long)r->base_index);
  if (from > last) return LKV_OK;
  first = (size_t)(from - r->base_index - 1);
  start_off = r->ents[first].off;
  /* whole frames: up to the first one that would pass max_bytes */
  for (n = 1; first + n < r->nents; n++)
    if (r->ents[first + n].off - start_off > max_bytes) break;
  end_off = first + n < r->nents ? r->ents[first + n].off : r->size;
  if (n > 1 && end_off - start_off > max_bytes) {
    n--;
    end_off = r->ents[first + n].off;
  }
  if ((*buf = malloc((size_t)(end_off - start_off))) == NULL)
    return lkvnet_seterr(err, LKV_NOMEM, "reading %llu bytes of %s",
                         (unsigned long long)(end_off - start_off), r->path);
  if (pread_all(r->fd, *buf, (size_t)(end_off - start_off), start_off) != 0) {
    free(*buf);
    *buf = NULL;
    return seterrno(err, "read", r->path);
  }
  *len = (size_t)(end_off - start_off);
  *to = from + n - 1;
  return LKV_OK;
}

/* }====================================================================== */

/* {======================================================================
** Compaction in the background
** ======================================================================= */

static void notify(lkvnet_rlog *r) {
  if (r->notify_fd >= 0) {
    char b = 1;
    ssize_t k = write(r->notify_fd, &b, 1); /* EAGAIN: already pending */
    (void)k;
  }
}

static int pwrite_all(int fd, const void *buf, size_t n, uint64_t off) {
  const char *p = buf;
  while (n > 0) {
    ssize_t k = pwrite(fd, p, n, (off_t)off);
    if (k < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += k;
    n -= (size_t)k;
    off += (uint64_t)k;
  }
  return 0;
}

/* Copy n bytes at from in src to to in dst, a MiB at a time (a log may be
 * far larger than what is worth holding in memory at once). */
static int copy_range(lkvnet_rlog *r, int src, uint64_t from, int dst,
                      uint64_t to, uint64_t n, const char *tmp,
                      lkv_err *err) {
  size_t cap = n < (1u << 20) ? (size_t)n : (1u << 20);
  char *buf;
  if (n == 0) return LKV_OK;
  if ((buf = malloc(cap)) == NULL)
    return lkvnet_seterr(err, LKV_NOMEM, "compacting %s", r->path);
  while (n > 0) {
    size_t k = n < cap ? (size_t)n : cap;
    if (pread_all(src, buf, k, from) != 0) {
      free(buf);
      return seterrno(err, "read", r->path);
    }
    if (pwrite_all(dst, buf, k, to) != 0) {
      free(buf);
      return seterrno(err, "write", tmp);
    }
    from += k;
    to += k;
    n -= k;
  }
  free(buf);
  return LKV_OK;
}

static void tmp_path(const lkvnet_rlog *r, char *out, size_t n) {
  snprintf(out, n, "%s.tmp", r->path);
}

/* The copier thread: prepare (the engine's sync), then the new file's
 * header and the entries (cp_base, cp_stable], fdatasync'ed. Those bytes
 * of the old file are never cut or rewritten while it reads them. */
static void *copier_main(void *arg) {
  lkvnet_rlog *r = arg;
  char tmp[4096 + 16];
  unsigned char h[LKVNET_RLOG_HEADER_SIZE];
  lkv_err e;
  int rc = LKV_OK, fd = -1;
  e.code = LKV_OK;
  e.msg[0] = '\0';
  tmp_path(r, tmp, sizeof tmp);
  if (r->cp_prepare != NULL) rc = r->cp_prepare(r->cp_ctx, &e);
  if (rc == LKV_OK &&
      (fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0)
    rc = seterrno(&e, "create", tmp);
  if (rc == LKV_OK) {
    encode_header(h, r->cp_base, r->cp_base_term);
    if (pwrite_all(fd, h, sizeof h, 0) != 0) rc = seterrno(&e, "write", tmp);
  }
  if (rc == LKV_OK)
    rc = copy_range(r, r->cp_srcfd, r->cp_from_off, fd,
                    LKVNET_RLOG_HEADER_SIZE, r->cp_stable_off - r->cp_from_off,
                    tmp, &e);
  if (rc == LKV_OK && fdatasync(fd) != 0) rc = seterrno(&e, "fdatasync", tmp);
  if (rc != LKV_OK && fd >= 0) {
    close(fd);
    unlink(tmp);
    fd = -1;
  }
  if (rc != LKV_OK && e.code == LKV_OK) e.code = rc;
  pthread_mutex_lock(&r->mu);
  r->cp_fd = fd;
  r->cp_err = e;
  r->cp_state = rc == LKV_OK ? CP_COPIED : CP_COPY_FAILED;
  pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
  notify(r);
  return NULL;
}

int lkvnet_rlog_compact_begin(lkvnet_rlog *r, uint64_t base_index,
                              uint64_t base_term, uint64_t stable_index,
                              lkvnet_rlog_prepare_fn prepare, void *ctx,
                              lkv_err *err) {
  uint64_t last = r->base_index + r->nents;
  int rc;
  if (lkvnet_rlog_compacting(r))
    return lkvnet_seterr(err, LKV_BUSY, "%s: a compaction is running",
                         r->path);
  if ((rc = sticky_error(r, err)) != LKV_OK) return rc;
  if (base_index < r->base_index || base_index > stable_index ||
      stable_index > last)
    return lkvnet_seterr(err, LKV_INVALID, "cannot compact %s at %llu "
                         "(stable %llu): it holds %llu .. %llu", r->path,
                         (unsigned long long)base_index,
                         (unsigned long long)stable_index,
                         (unsigned long long)r->base_index + 1,
                         (unsigned long long)last);
  r->cp_base = base_index;
  r->cp_base_term = base_term;
  r->cp_stable = stable_index;
  r->cp_from_off = base_index < last ? r->ents[base_index - r->base_index].off
                                     : r->size;
  r->cp_stable_off = stable_index < last
                         ? r->ents[stable_index - r->base_index].off
                         : r->size;
  r->cp_srcfd = r->fd;
  r->cp_prepare = prepare;
  r->cp_ctx = ctx;
  r->cp_report = LKVNET_COMPACT_IDLE;
  pthread_mutex_lock(&r->mu);
  r->cp_state = CP_COPYING;
  pthread_mutex_unlock(&r->mu);
  if (pthread_create(&r->cp_thread, NULL, copier_main, r) != 0) {
    pthread_mutex_lock(&r->mu);
    r->cp_state = CP_IDLE;
    pthread_mutex_unlock(&r->mu);
    return lkvnet_seterr(err, LKV_IOERROR, "%s: cannot start the "
                         "compaction thread", r->path);
  }
  return LKV_OK;
}

/* The owner's part, once the copier is done: append what was written
 * past cp_stable meanwhile (still only in the page cache, as appends are)
 * and make the new file the one appends go to. From here until the syncer
 * has renamed it, nothing new counts as durable: a crash would leave the
 * old file under the name. Returns LKV_OK, or a failure that left the old
 * file in place (the new one removed). */
static int compact_switch(lkvnet_rlog *r, lkv_err *err) {
  char tmp[4096 + 16];
  uint64_t last = r->base_index + r->nents, tail = r->size - r->cp_stable_off;
  uint64_t newsize = LKVNET_RLOG_HEADER_SIZE + (r->size - r->cp_from_off);
  size_t keep = (size_t)(last > r->cp_base ? last - r->cp_base : 0), i;
  int rc;
  tmp_path(r, tmp, sizeof tmp);
  rc = copy_range(r, r->fd, r->cp_stable_off, r->cp_fd,
                  LKVNET_RLOG_HEADER_SIZE + (r->cp_stable_off - r->cp_from_off),
                  tail, tmp, err);
  if (rc == LKV_OK && lseek(r->cp_fd, (off_t)newsize, SEEK_SET) < 0)
    rc = seterrno(err, "seek", tmp);
  if (rc != LKV_OK) {
    close(r->cp_fd);
    r->cp_fd = -1;
    unlink(tmp);
    return rc;
  }
  for (i = 0; i < keep; i++) {
    r->ents[i].off = r->ents[r->nents - keep + i].off - r->cp_from_off +
                     LKVNET_RLOG_HEADER_SIZE;
    r->ents[i].term = r->ents[r->nents - keep + i].term;
  }
  r->nents = keep;
  r->size = newsize;
  pthread_mutex_lock(&r->mu);
  r->cp_oldfd = r->fd;
  r->fd = r->cp_fd;
  r->cp_fd = -1;
  r->base_index = r->cp_base;
  r->base_term = r->cp_base_term;
  if (keep == 0) {
    r->last_index = r->cp_base;
    r->last_term = r->cp_base_term;
  }
  /* a sync of the old file still running proves nothing now */
  r->gen++;
  r->cp_state = CP_RENAMING;
  pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
  return LKV_OK;
}

/* One step for the owner: COPIED -> switch, COPY_FAILED or RENAMED ->
 * IDLE with the outcome in cp_report. Returns the state it left. */
static int compact_step(lkvnet_rlog *r) {
  int st;
  lkv_err e;
  pthread_mutex_lock(&r->mu);
  st = r->cp_state;
  e = r->cp_err;
  pthread_mutex_unlock(&r->mu);
  if (st == CP_COPIED || st == CP_COPY_FAILED) {
    pthread_join(r->cp_thread, NULL);
    if (st == CP_COPIED) {
      e.code = LKV_OK;
      e.msg[0] = '\0';
      if (compact_switch(r, &e) == LKV_OK) return CP_RENAMING;
    }
    pthread_mutex_lock(&r->mu);
    r->cp_state = st = CP_IDLE;
    pthread_mutex_unlock(&r->mu);
    r->cp_report = LKVNET_COMPACT_FAILED;
    r->cp_report_err = e;
  } else if (st == CP_RENAMED) {
    pthread_mutex_lock(&r->mu);
    r->cp_state = st = CP_IDLE;
    pthread_mutex_unlock(&r->mu);
    r->cp_report = e.code == LKV_OK ? LKVNET_COMPACT_DONE
                                    : LKVNET_COMPACT_FAILED;
    r->cp_report_err = e;
  }
  return st;
}

int lkvnet_rlog_compact_poll(lkvnet_rlog *r, lkv_err *err) {
  int st = compact_step(r), rep = r->cp_report;
  if (st != CP_IDLE) return LKVNET_COMPACT_RUNNING;
  r->cp_report = LKVNET_COMPACT_IDLE;
  if (rep == LKVNET_COMPACT_FAILED && err != NULL) *err = r->cp_report_err;
  return rep;
}

static void compact_finish(lkvnet_rlog *r) {
  for (;;) {
    int st;
    pthread_mutex_lock(&r->mu);
    while (r->cp_state == CP_COPYING || r->cp_state == CP_RENAMING)
      pthread_cond_wait(&r->cv, &r->mu);
    st = r->cp_state;
    pthread_mutex_unlock(&r->mu);
    if (st == CP_IDLE) return;
    compact_step(r);
  }
}

void lkvnet_rlog_compact_wait(lkvnet_rlog *r) { compact_finish(r); }

int lkvnet_rlog_compacting(lkvnet_rlog *r) {
  int st;
  pthread_mutex_lock(&r->mu);
  st = r->cp_state;
  pthread_mutex_unlock(&r->mu);
  return st != CP_IDLE;
}

/* The syncer's part (called with mu held, returns with it held): make the
 * new file durable, name it, sync the directory, close the old file (no
 * sync of it can be running: this is the syncer). Only then is what was
 * appended to the new file durable. A failure here is sticky: the name
 * holds the old file, which lacks what was appended since the switch. */
static void compact_rename(lkvnet_rlog *r) {
  char tmp[4096 + 16];
  uint64_t target = r->last_index, gen = r->gen;
  int fd = r->fd, oldfd = r->cp_oldfd;
  lkv_err e;
  e.code = LKV_OK;
  e.msg[0] = '\0';
  r->busy = 1;
  pthread_mutex_unlock(&r->mu);
  tmp_path(r, tmp, sizeof tmp);
  if (fdatasync(fd) != 0) seterrno(&e, "fdatasync", tmp);
  else if (rename(tmp, r->path) != 0) seterrno(&e, "rename", tmp);
  else fsync_dir(r->dir);
  close(oldfd);
  pthread_mutex_lock(&r->mu);
  r->busy = 0;
  r->cp_oldfd = -1;
  if (e.code == LKV_OK) {
    if (gen == r->gen && target > r->durable_index) r->durable_index = target;
    r->syncs++;
  } else if (r->sticky.code == LKV_OK) {
    r->sticky = e;
  }
  r->cp_err = e;
  r->cp_state = CP_RENAMED;
  pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
  notify(r);
  pthread_mutex_lock(&r->mu);
}

/* }====================================================================== */

/* {======================================================================
** The syncer
** ======================================================================= */

static void *syncer_main(void *arg) {
  lkvnet_rlog *r = arg;
  pthread_mutex_lock(&r->mu);
  for (;;) {
    uint64_t target, gen;
    int rc, e, fd;
    while (!r->stop && r->cp_state != CP_RENAMING &&
           (r->paused || (r->durable_index == r->last_index &&
                          r->sticky.code == LKV_OK)))
      pthread_cond_wait(&r->cv, &r->mu);
    if (r->cp_state == CP_RENAMING) {
      /* a compaction's switch: nothing syncs until its file is named */
      compact_rename(r);
      continue;
    }
    if (r->stop || r->sticky.code != LKV_OK) break;
    target = r->last_index; /* every byte of it is already written */
    gen = r->gen;
    fd = r->fd;
    r->busy = 1;
    pthread_mutex_unlock(&r->mu);
    rc = fdatasync(fd);
    e = errno;
    pthread_mutex_lock(&r->mu);
    r->busy = 0;
    pthread_cond_broadcast(&r->cv);
    if (rc == 0) {
      /* entries cut (or the file replaced) meanwhile: this sync proves
       * nothing about what is there now; the loop syncs again */
      if (gen == r->gen && target > r->durable_index)
        r->durable_index = target;
      r->syncs++;
    } else {
      lkvnet_seterr(&r->sticky, LKV_IOERROR, "fdatasync %s: %s", r->path,
             strerror(e));
    }
    pthread_mutex_unlock(&r->mu);
    notify(r);
    pthread_mutex_lock(&r->mu);
  }
  pthread_mutex_unlock(&r->mu);
  return NULL;
}

uint64_t lkvnet_rlog_base_index(const lkvnet_rlog *r) { return r->base_index; }

uint64_t lkvnet_rlog_last_index(const lkvnet_rlog *r) {
  return r->base_index + r->nents;
}

uint64_t lkvnet_rlog_durable_index(lkvnet_rlog *r) {
  uint64_t v;
  pthread_mutex_lock(&r->mu);
  v = r->durable_index;
  pthread_mutex_unlock(&r->mu);
  return v;
}

int lkvnet_rlog_error(lkvnet_rlog *r, lkv_err *err) {
  return sticky_error(r, err);
}

void lkvnet_rlog_stats_get(lkvnet_rlog *r, lkvnet_rlog_stats *out) {
  pthread_mutex_lock(&r->mu);
  out->base_index = r->base_index;
  out->base_term = r->base_term;
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
  if (r->started) compact_finish(r); /* needs the syncer for its rename */
  pthread_mutex_lock(&r->mu);
  r->stop = 1;
  pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
  if (r->started) pthread_join(r->syncer, NULL);
  if (r->sticky.code == LKV_OK && fdatasync(r->fd) != 0)
    rc = seterrno(err, "fdatasync", r->path);
  if (close(r->fd) != 0 && rc == LKV_OK) rc = seterrno(err, "close", r->path);
  pthread_mutex_destroy(&r->mu);
  pthread_cond_destroy(&r->cv);
  free(r->scratch);
  free(r->ents);
  free(r);
  return rc;
}

/* }====================================================================== */

/* {======================================================================
** The current term: DATA_DIR/term
** ======================================================================= */

#define TERM_FILE "term"
#define TERM_MAGIC "LUNAKVTM"
#define TERM_SIZE 20u /* magic 8, term 8, crc32c of the first 16 bytes 4 */

int lkvnet_term_load(const char *dir, uint64_t *term, lkv_err *err) {
  char path[4096 + 8];
  unsigned char b[TERM_SIZE + 1];
  ssize_t n;
  int fd;
  pthread_once(&crc_once, crc_init);
  *term = 0;
  snprintf(path, sizeof path, "%s/%s", dir, TERM_FILE);
  if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
    if (errno == ENOENT) return LKV_OK;
    return seterrno(err, "open", path);
  }
  n = read(fd, b, sizeof b);
  close(fd);
  if (n != (ssize_t)TERM_SIZE || memcmp(b, TERM_MAGIC, 8) != 0 ||
      get32(b + 16) != crc32c(0, b, 16))
    return lkvnet_seterr(err, LKV_CORRUPTION, "%s: not a valid term file "
                         "(%zd bytes)", path, n);
  *term = get64(b + 8);
  return LKV_OK;
}

int lkvnet_term_store(const char *dir, uint64_t term, lkv_err *err) {
  char path[4096 + 8], tmp[4096 + 16];
  unsigned char b[TERM_SIZE];
  int fd;
  pthread_once(&crc_once, crc_init);
  snprintf(path, sizeof path, "%s/%s", dir, TERM_FILE);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  memcpy(b, TERM_MAGIC, 8);
  put64(b + 8, term);
  put32(b + 16, crc32c(0, b, 16));
  if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0)
    return seterrno(err, "create", tmp);
  if (write_all(fd, b, sizeof b) != 0 || fdatasync(fd) != 0) {
    int rc = seterrno(err, "write", tmp);
    close(fd);
    unlink(tmp);
    return rc;
  }
  close(fd);
  if (rename(tmp, path) != 0) return seterrno(err, "rename", tmp);
  fsync_dir(dir);
  return LKV_OK;
}

/* }====================================================================== */
