/* rlog.c - the replication log (rlog.h); format in docs/replication.md.
 *
 * Append writes a whole frame with one pwrite from the owner's thread; the
 * syncer thread turns "written" into "durable" with fdatasync, one sync
 * for everything written since the last one. A background compaction
 * (lkvnet_rlog_compact_begin) adds a third thread for its bulk copy and
 * hands the final sync and rename to the syncer. Every call on a file or
 * a directory goes through the lkv_env the log was opened with (lunakv.h;
 * the POSIX one by default), so tests can fail any of them or lose what
 * was not synced (c/engine/faultenv.h). Lock order: only r->mu.
 *
 * The syncer thread and the owner's own syncs are rlog_sync.c, the
 * compaction in the background rlog_compact.c, the frames and the header
 * rlog_frame.c, the term file rlog_term.c; the struct and the
 * helpers they share are rlog_impl.h, which says which way calls go. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "coding.h"
#include "crc32c.h"
#include "rlog_impl.h"

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

/* A new log: a header with base 0 and the space written ahead after it
 * (so that the first appends, a new node's first acknowledgements, do not
 * wait for the zeros' sync), written aside, synced and renamed to the
 * log's name, then the directory synced. A crash at any point leaves no
 * log (a new one is made at the next start) or a whole header, never a
 * torn one that would fail every start after it. */
static int create_log(lkvnet_rlog *r, lkv_err *err) {
  const lkv_env *env = r->env;
  char tmp[4096 + 16];
  unsigned char h[LKVNET_RLOG_HEADER_SIZE];
  const char *what = "create";
  int fd = -1, e;
  snprintf(tmp, sizeof tmp, "%s.tmp", r->path);
  lkvnet_rlog_encode_header(h, 0, 0);
  if ((e = env->open(env, tmp, O_RDWR | O_CREAT | O_TRUNC, 0644, &fd)) != 0)
    return ioerr(err, e, what, tmp);
  if ((e = pwrite_all(env, fd, h, sizeof h, 0)) != 0 ||
      (e = zero_fill(env, fd, sizeof h, sizeof h + r->prealloc)) != 0) {
    what = "write";
    goto fail;
  }
  if ((e = f_sync(env, fd)) != 0) {
    what = "fdatasync";
    goto fail;
  }
  e = env->close(env, fd);
  fd = -1; /* gone, whatever close said */
  if (e != 0) {
    what = "close";
    goto fail;
  }
  if ((e = env->rename(env, tmp, r->path)) != 0) {
    what = "rename";
    goto fail;
  }
  /* until the directory is synced the name may not survive a crash:
   * nothing may be acknowledged under it before */
  if ((e = env->sync_dir(env, r->dir)) != 0)
    return ioerr(err, e, "fsync directory", r->dir);
  return LKV_OK;
fail : {
  int rc = ioerr(err, e, what, tmp);
  f_close(env, fd);
  (void)env->unlink(env, tmp);
  return rc;
}
}

/* The header at h: sets the base, and *version (1 or 2). */
static int read_header(lkvnet_rlog *r, const unsigned char *h,
                       uint32_t *version, lkv_err *err) {
  if (memcmp(h, LKVNET_RLOG_MAGIC, 8) != 0)
    return lkv_seterr(err, LKV_CORRUPTION,
                      "%s offset 0: bad magic (not a "
                      "lunakv replication log)",
                      r->path);
  if (lkv_get32(h + 32) != lkv_crc32c(h, 32))
    return lkv_seterr(err, LKV_CORRUPTION,
                      "%s offset 32: header checksum "
                      "mismatch",
                      r->path);
  if (lkv_get32(h + 36) != 0)
    return lkv_seterr(err, LKV_CORRUPTION,
                      "%s offset 36: reserved bytes "
                      "are not zero",
                      r->path);
  *version = lkv_get32(h + 8);
  if (*version != LKVNET_RLOG_VERSION && *version != LKVNET_RLOG_VERSION_V1)
    return lkv_seterr(err, LKV_CORRUPTION,
                      "%s offset 8: unsupported version %u", r->path,
                      (unsigned)lkv_get32(h + 8));
  if (lkv_get32(h + 12) != 0)
    return lkv_seterr(err, LKV_CORRUPTION,
                      "%s offset 12: unknown flags "
                      "0x%x",
                      r->path, (unsigned)lkv_get32(h + 12));
  if (lkv_get64(h + 16) == UINT64_MAX) /* no entry could follow it */
    return lkv_seterr(err, LKV_CORRUPTION,
                      "%s offset 16: impossible base "
                      "index",
                      r->path);
  r->base_index = lkv_get64(h + 16);
  r->base_term = lkv_get64(h + 24);
  r->last_index = r->base_index;
  r->last_term = r->base_term;
  r->size = LKVNET_RLOG_HEADER_SIZE;
  return LKV_OK;
}

/* The file read at open through a buffer of READ_CHUNK bytes (or one
 * frame, when larger): a pread per chunk, not two per frame. */
#define READ_CHUNK (1u << 20)

typedef struct Reader {
  const lkv_env *env;
  int fd;
  uint64_t fsize;     /* the file's size at open */
  unsigned char *buf; /* holds [at, at + len) of the file */
  size_t cap, len;
  uint64_t at;
} Reader;

/* Make bytes [off, off + n) of the file available at *p. REQUIRES: off +
 * n <= fsize. 0, or an errno value (ENOMEM included). */
static int rd_get(Reader *rd, uint64_t off, size_t n, const unsigned char **p) {
  size_t want;
  int e;
  if (off >= rd->at && off + n <= rd->at + rd->len) {
    *p = rd->buf + (off - rd->at);
    return 0;
  }
  want = n > READ_CHUNK ? n : READ_CHUNK;
  if (want > rd->fsize - off) want = (size_t)(rd->fsize - off);
  if (want > rd->cap) {
    unsigned char *nb = realloc(rd->buf, want);
    if (nb == NULL) return ENOMEM;
    rd->buf = nb;
    rd->cap = want;
  }
  rd->len = 0;
  if ((e = pread_all(rd->env, rd->fd, rd->buf, want, off)) != 0) return e;
  rd->at = off;
  rd->len = want;
  *p = rd->buf;
  return 0;
}

/* Whether a whole, valid frame starts at off: a length the payload can
 * have that fits in the file, fields that agree with it, and a matching
 * checksum (the fields first: they are cheap and rule out nearly every
 * offset). In *found; returns 0 or an errno value from the read. */
static int valid_frame_at(Reader *rd, uint64_t off, uint32_t fixed,
                          int *found) {
  const unsigned char *fr;
  uint64_t left = rd->fsize - off;
  uint32_t len;
  lkvnet_entry en;
  int e;
  *found = 0;
  if (left < LKVNET_RLOG_FRAME_SIZE + fixed) return 0;
  if ((e = rd_get(rd, off, LKVNET_RLOG_FRAME_SIZE + fixed, &fr)) != 0) return e;
  len = lkv_get32(fr);
  if (len < fixed || len > MAX_PAYLOAD || len > left - LKVNET_RLOG_FRAME_SIZE ||
      lkvnet_rlog_parse_payload(fr + LKVNET_RLOG_FRAME_SIZE, len, fixed, &en) !=
          0)
    return 0;
  if ((e = rd_get(rd, off, LKVNET_RLOG_FRAME_SIZE + (size_t)len, &fr)) != 0)
    return e;
  *found = lkv_crc32c_extend(lkv_crc32c(fr, 4), fr + LKVNET_RLOG_FRAME_SIZE,
                             len) == lkv_get32(fr + 4);
  return 0;
}

/* The replay stopped at a bad frame at r->size (why says how). It is a
 * torn tail - the end of the last writes before a crash, never synced, so
 * never acknowledged - only when no valid frame comes after it anywhere
 * in the file: a valid frame past a bad one means the damage is in the
 * middle, and cutting there would throw away entries that may have been
 * acknowledged. Then the open fails with LKV_CORRUPTION and nothing is
 * cut. Each offset is tried, as the bad frame's length cannot be
 * trusted. */
static int check_tail(lkvnet_rlog *r, Reader *rd, uint32_t fixed,
                      const char *why, lkv_err *err) {
  uint64_t off;
  for (off = r->size + 1; off < rd->fsize; off++) {
    int found, e;
    if ((e = valid_frame_at(rd, off, fixed, &found)) != 0)
      return ioerr(err, e, "read", r->path);
    if (found)
      return lkv_seterr(err, LKV_CORRUPTION,
                        "%s %s, and a valid frame follows at offset "
                        "%llu: the log is damaged in the middle, not torn "
                        "at its end (nothing cut)",
                        r->path, why, (unsigned long long)off);
  }
  return LKV_OK;
}

/* Whether bytes [off, end) of the file are all zero (in *yes); 0 or an
 * errno value. */
static int all_zero(Reader *rd, uint64_t off, uint64_t end, int *yes) {
  *yes = 1;
  while (off < end) {
    const unsigned char *p;
    size_t n = end - off < READ_CHUNK ? (size_t)(end - off) : READ_CHUNK, i;
    int e;
    if ((e = rd_get(rd, off, n, &p)) != 0) return e;
    for (i = 0; i < n; i++)
      if (p[i] != 0) {
        *yes = 0;
        return 0;
      }
    off += n;
  }
  return 0;
}

/* Zeros from off to the end of the file: space written ahead. */
static int zeros_to_end(Reader *rd, uint64_t off, int *yes) {
  return all_zero(rd, off, rd->fsize, yes);
}

/* Whether a piece of [off, off + n) between two 512-byte boundaries of
 * the file is all zeros (in *yes): a write lost before its sync, in space
 * written ahead (a sector that never left the page cache reads as the
 * zeros under it). 0 or an errno value. */
static int lost_write(Reader *rd, uint64_t off, uint64_t n, int *yes) {
  uint64_t end = off + n > rd->fsize ? rd->fsize : off + n;
  int e;
  *yes = 0;
  while (off < end && !*yes) {
    uint64_t next = (off | 511u) + 1;
    if ((e = all_zero(rd, off, next < end ? next : end, yes)) != 0) return e;
    off = next;
  }
  return 0;
}

/* Read frames from r->size (just past the header) to the end of the file,
 * the first bad one, or zeros to the end (space written ahead, not
 * damage: *zero_tail set, why empty): frames of the header's version
 * (fixed: its fixed payload size; version 1 has no chain to check). Sets
 * r->size to the end of the last good frame; *why describes a bad tail.
 * A bad frame with a piece of zeros (lost_write) is the end of what was
 * synced: frames written after it may have landed without it, never
 * acknowledged (its sync would have written it too), and the cut takes
 * them (*lost set). Any other bad tail check_tail vouches for. A failed
 * read fails the open: it is not a torn tail, and cutting there could
 * drop acknowledged entries. */
static int replay(lkvnet_rlog *r, Reader *rd, uint32_t fixed,
                  lkvnet_rlog_replay_fn fn, void *ctx, char *why, size_t whylen,
                  int *zero_tail, lkv_err *err) {
  int rc = LKV_OK, e, lost = 0;
  uint64_t extent = 0; /* the bad frame's bytes, for lost_write */
  why[0] = '\0';
  *zero_tail = 0;
  while (r->size < rd->fsize) {
    const unsigned char *fr, *buf;
    uint64_t left = rd->fsize - r->size;
    uint32_t len, crc;
    lkvnet_entry en;
    if (left < LKVNET_RLOG_FRAME_SIZE) {
      if ((e = zeros_to_end(rd, r->size, zero_tail)) != 0) {
        rc = ioerr(err, e, "read", r->path);
        break;
      }
      if (*zero_tail) break;
      snprintf(why, whylen, "offset %llu: torn frame header",
               (unsigned long long)r->size);
      extent = left;
      break;
    }
    if ((e = rd_get(rd, r->size, LKVNET_RLOG_FRAME_SIZE, &fr)) != 0) {
      rc = ioerr(err, e, "read", r->path);
      break;
    }
    len = lkv_get32(fr);
    crc = lkv_get32(fr + 4);
    if (len == 0 && crc == 0) {
      /* no frame is empty: zeros to the end are space written ahead;
       * anything else after them is a torn or damaged tail */
      if ((e = zeros_to_end(rd, r->size, zero_tail)) != 0) {
        rc = ioerr(err, e, "read", r->path);
        break;
      }
      if (*zero_tail) break;
    }
    if (len < fixed || len > MAX_PAYLOAD) {
      snprintf(why, whylen, "offset %llu: impossible record length %u",
               (unsigned long long)r->size, (unsigned)len);
      extent = LKVNET_RLOG_FRAME_SIZE;
      break;
    }
    if (left - LKVNET_RLOG_FRAME_SIZE < len) {
      snprintf(why, whylen, "offset %llu: torn record",
               (unsigned long long)r->size);
      extent = left;
      break;
    }
    /* the frame whole (its header again: the buffer may move) */
    if ((e = rd_get(rd, r->size, LKVNET_RLOG_FRAME_SIZE + (size_t)len, &fr)) !=
        0) {
      rc = ioerr(err, e, "read", r->path);
      break;
    }
    buf = fr + LKVNET_RLOG_FRAME_SIZE;
    if (lkv_crc32c_extend(lkv_crc32c(fr, 4), buf, len) != crc) {
      snprintf(why, whylen, "offset %llu: record checksum mismatch",
               (unsigned long long)r->size);
      extent = LKVNET_RLOG_FRAME_SIZE + (uint64_t)len;
      break;
    }
    if (lkvnet_rlog_parse_payload(buf, len, fixed, &en) != 0) {
      rc = lkv_seterr(err, LKV_CORRUPTION,
                      "%s offset %llu: malformed record "
                      "(checksum valid)",
                      r->path, (unsigned long long)r->size);
      break;
    }
    if (r->last_index == UINT64_MAX || en.index != r->last_index + 1 ||
        en.term < r->last_term) {
      rc = lkv_seterr(err, LKV_CORRUPTION,
                      "%s offset %llu: entry (term %llu, "
                      "index %llu) does not follow (term %llu, index %llu)",
                      r->path, (unsigned long long)r->size,
                      (unsigned long long)en.term, (unsigned long long)en.index,
                      (unsigned long long)r->last_term,
                      (unsigned long long)r->last_index);
      break;
    }
    /* The chain: each frame names the term of the one before it. A log
     * whose conflict cut was lost to a crash can bring old entries back
     * ahead of new ones, every frame whole and in index order; the new
     * entry after an old one names a term the old one does not have
     * (Raft's log matching: past the cut, no index holds the same term in
     * both logs). */
    if (fixed != LKVNET_RLOG_FIXED_PAYLOAD_V1 && en.prev_term != r->last_term) {
      rc = lkv_seterr(err, LKV_CORRUPTION,
                      "%s offset %llu: entry (term %llu, index %llu) "
                      "follows an entry of term %llu but was written after "
                      "one of term %llu: entries of two different logs",
                      r->path, (unsigned long long)r->size,
                      (unsigned long long)en.term, (unsigned long long)en.index,
                      (unsigned long long)r->last_term,
                      (unsigned long long)en.prev_term);
      break;
    }
    if (fn != NULL && (rc = fn(ctx, &en, err)) != LKV_OK) break;
    if (push_ent(r, r->size, en.term) != 0) {
      rc = lkv_seterr(err, LKV_NOMEM, "%s: entry index", r->path);
      break;
    }
    r->last_index = en.index;
    r->last_term = en.term;
    r->size += LKVNET_RLOG_FRAME_SIZE + len;
  }
  if (rc == LKV_OK && why[0] != '\0' &&
      (e = lost_write(rd, r->size, extent, &lost)) != 0)
    rc = ioerr(err, e, "read", r->path);
  if (rc == LKV_OK && why[0] != '\0') {
    if (lost) {
      size_t n = strlen(why);
      snprintf(why + n, whylen - n, " (zeros: a write lost before its sync)");
    } else {
      rc = check_tail(r, rd, fixed, why, err);
    }
  }
  return rc;
}

/* p grown to n bytes (*cap), or NULL with p freed. */
static unsigned char *realloc_or_free(unsigned char *p, size_t *cap, size_t n) {
  unsigned char *q = realloc(p, n);
  if (q == NULL) {
    free(p);
    *cap = 0;
    return NULL;
  }
  *cap = n;
  return q;
}

/* A version 1 log, replayed (its tail cut and synced): rewrite it as
 * version 2, each frame re-encoded with its chain, written aside, synced,
 * renamed over the old file and the directory synced, as a rewrite is.
 * Any failure fails the open; before the rename the old file is left as
 * it was (and read again, and upgraded, at the next open); after it, both
 * files hold the same entries, whichever a crash keeps. */
static int upgrade_v1(lkvnet_rlog *r, lkv_err *err) {
  const lkv_env *env = r->env;
  char tmp[4096 + 16];
  unsigned char h[LKVNET_RLOG_HEADER_SIZE];
  unsigned char *in = NULL, *out = NULL;
  uint64_t prev = r->base_term, woff = LKVNET_RLOG_HEADER_SIZE;
  size_t i = 0, j, cap = 0, ocap = 0;
  const char *what = "write", *where = tmp;
  int fd = -1, rc = LKV_OK, e = 0;
  snprintf(tmp, sizeof tmp, "%s.tmp", r->path);
  lkvnet_rlog_encode_header(h, r->base_index, r->base_term);
  if ((e = env->open(env, tmp, O_RDWR | O_CREAT | O_TRUNC, 0644, &fd)) != 0) {
    fd = -1;
    what = "create";
    goto fail;
  }
  if ((e = pwrite_all(env, fd, h, sizeof h, 0)) != 0) goto fail;
  /* a run of whole frames at a time: up to a MiB (or one larger frame) */
  while (i < r->nents) {
    uint64_t from = r->ents[i].off, to;
    size_t n, o, k = 0;
    j = i + 1;
    while (j < r->nents && r->ents[j].off - from <= (1u << 20)) j++;
    to = j < r->nents ? r->ents[j].off : r->size;
    n = (size_t)(to - from);
    if ((n > cap && (in = realloc_or_free(in, &cap, n)) == NULL) ||
        (n + 8 * (j - i) > ocap &&
         (out = realloc_or_free(out, &ocap, n + 8 * (j - i))) == NULL)) {
      rc = lkv_seterr(err, LKV_NOMEM, "upgrading %s", r->path);
      goto fail;
    }
    if ((e = pread_all(env, r->fd, in, n, from)) != 0) {
      what = "read";
      where = r->path;
      goto fail;
    }
    for (o = 0; o < n; i++) {
      lkvnet_entry en;
      uint32_t len = lkv_get32(in + o);
      /* replayed already: whole and well formed */
      (void)lkvnet_rlog_parse_payload(in + o + LKVNET_RLOG_FRAME_SIZE, len,
                                      LKVNET_RLOG_FIXED_PAYLOAD_V1, &en);
      lkvnet_rlog_encode_after(out + k, &en, prev);
      prev = en.term;
      k += lkvnet_rlog_frame_size(&en);
      o += LKVNET_RLOG_FRAME_SIZE + len;
    }
    if ((e = pwrite_all(env, fd, out, k, woff)) != 0) goto fail;
    woff += k;
  }
  what = "fdatasync";
  if ((e = f_sync(env, fd)) != 0) goto fail;
  what = "rename";
  if ((e = env->rename(env, tmp, r->path)) != 0) goto fail;
  free(in);
  free(out);
  f_close(env, r->fd);
  r->fd = fd;
  /* each frame grew by its prev_term's 8 bytes */
  for (i = 0; i < r->nents; i++) r->ents[i].off += 8 * (uint64_t)i;
  r->size = r->alloc = woff;
  /* the new name may not survive a crash until then; the old file under
   * it would hold the same entries, but the start must not claim more
   * than it knows */
  e = env->sync_dir(env, r->dir);
  return e != 0 ? ioerr(err, e, "fsync directory", r->dir) : LKV_OK;
fail:
  if (rc == LKV_OK) rc = ioerr(err, e, what, where);
  free(in);
  free(out);
  f_close(env, fd);
  (void)env->unlink(env, tmp);
  return rc;
}

/* An existing log: its header, its entries, the cut of a bad tail, and a
 * sync of what is left. */
static int load_log(lkvnet_rlog *r, lkvnet_rlog_replay_fn fn, void *ctx,
                    lkv_err *err) {
  const lkv_env *env = r->env;
  Reader rd;
  const unsigned char *h;
  uint32_t version = LKVNET_RLOG_VERSION;
  int rc, e, zero_tail = 0;
  memset(&rd, 0, sizeof rd);
  rd.env = env;
  rd.fd = r->fd;
  if ((e = env->size(env, r->fd, &rd.fsize)) != 0)
    return ioerr(err, e, "stat", r->path);
  if (rd.fsize == 0) {
    /* made by an older version that wrote its header in place: nothing
     * was ever appended to it */
    unsigned char hb[LKVNET_RLOG_HEADER_SIZE];
    lkvnet_rlog_encode_header(hb, 0, 0);
    if ((e = pwrite_all(env, r->fd, hb, sizeof hb, 0)) != 0)
      return ioerr(err, e, "write", r->path);
    if ((e = f_sync(env, r->fd)) != 0)
      return ioerr(err, e, "fdatasync", r->path);
    r->size = r->alloc = sizeof hb;
    return LKV_OK;
  }
  if (rd.fsize < LKVNET_RLOG_HEADER_SIZE)
    return lkv_seterr(err, LKV_CORRUPTION,
                      "%s offset 0: header is "
                      "truncated",
                      r->path);
  if ((e = rd_get(&rd, 0, LKVNET_RLOG_HEADER_SIZE, &h)) != 0) {
    rc = ioerr(err, e, "read", r->path);
  } else {
    rc = read_header(r, h, &version, err);
    if (rc == LKV_OK)
      rc = replay(
          r, &rd,
          version == LKVNET_RLOG_VERSION_V1 ? LKVNET_RLOG_FIXED_PAYLOAD_V1
                                            : LKVNET_RLOG_FIXED_PAYLOAD,
          fn, ctx, r->dropped_why, sizeof r->dropped_why, &zero_tail, err);
  }
  r->alloc = rd.fsize;
  if (rc == LKV_OK && rd.fsize > r->size && !zero_tail) {
    /* a torn tail (with any zeros written ahead after it) */
    r->dropped_bytes = rd.fsize - r->size;
    if ((e = env->truncate(env, r->fd, r->size)) != 0)
      rc = ioerr(err, e, "truncate", r->path);
    r->alloc = r->size;
  }
  free(rd.buf);
  if (rc != LKV_OK) return rc;
  /* what was replayed may have been only in the page cache (a killed
   * process), and a cut tail must stay cut: make it durable before anyone
   * relies on it */
  if ((e = f_sync(env, r->fd)) != 0) return ioerr(err, e, "fdatasync", r->path);
  /* appends, reads and rewrites know only version 2 frames */
  if (version == LKVNET_RLOG_VERSION_V1) return upgrade_v1(r, err);
  return LKV_OK;
}

int lkvnet_rlog_open(const char *dir, const lkv_env *env, int notify_fd,
                     lkvnet_rlog_replay_fn fn, void *ctx, lkvnet_rlog **out,
                     lkv_err *err) {
  lkvnet_rlog *r;
  int rc = LKV_OK, e;
  *out = NULL;
  if ((r = calloc(1, sizeof *r)) == NULL)
    return lkv_seterr(err, LKV_NOMEM, "replication log");
  r->env = env_or_posix(env);
  r->fd = -1;
  r->cp_fd = r->cp_oldfd = r->cp_srcfd = -1;
  r->notify_fd = notify_fd;
  r->prealloc = LKVNET_RLOG_PREALLOC;
  pthread_mutex_init(&r->mu, NULL);
  pthread_cond_init(&r->cv, NULL);
  if ((size_t)snprintf(r->path, sizeof r->path, "%s/%s", dir,
                       LKVNET_RLOG_FILE) >= sizeof r->path) {
    rc = lkv_seterr(err, LKV_INVALID, "data directory path is too long");
    goto fail;
  }
  snprintf(r->dir, sizeof r->dir, "%s", dir);
  e = r->env->open(r->env, r->path, O_RDWR, 0644, &r->fd);
  if (e == ENOENT) {
    if ((rc = create_log(r, err)) != LKV_OK) goto fail;
    e = r->env->open(r->env, r->path, O_RDWR, 0644, &r->fd);
    r->size = LKVNET_RLOG_HEADER_SIZE; /* synced, renamed */
    r->alloc = r->size + r->prealloc;
  } else if (e == 0) {
    if ((rc = load_log(r, fn, ctx, err)) != LKV_OK) goto fail;
  }
  if (e != 0) {
    r->fd = -1;
    rc = ioerr(err, e, "open", r->path);
    goto fail;
  }
  r->durable_index = r->last_index;
  if (pthread_create(&r->syncer, NULL, lkvnet_rlog_syncer_main, r) != 0) {
    rc = lkv_seterr(err, LKV_IOERROR, "%s: cannot start the sync thread",
                    r->path);
    goto fail;
  }
  r->started = 1;
  *out = r;
  return LKV_OK;
fail:
  f_close(r->env, r->fd);
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

/* Write es[0..n) (the first one's index is last_index + 1, each the
 * next) as consecutive frames with one pwrite: a Ready's entries cost
 * one system call, not one each. All of them are written, or none. */
static int append_frames(lkvnet_rlog *r, const lkvnet_entry *es, size_t n,
                         lkv_err *err) {
  size_t total = 0, i, off;
  uint64_t prev;
  int rc, ec = 0;
  if ((rc = sticky_error(r, err)) != LKV_OK) return rc;
  for (i = 0; i < n; i++) {
    if (es[i].klen > LKV_MAX_KEY_BYTES || es[i].vlen > LKV_MAX_VALUE_BYTES)
      return lkv_seterr(err, LKV_TOOBIG, "key of %zu or value of %zu bytes",
                        es[i].klen, es[i].vlen);
    total += lkvnet_rlog_frame_size(&es[i]);
  }
  if (total > r->scratch_cap) {
    char *nb = realloc(r->scratch, total);
    if (nb == NULL)
      return lkv_seterr(err, LKV_NOMEM,
                        "replication log record of %zu "
                        "bytes",
                        total);
    r->scratch = nb;
    r->scratch_cap = total;
  }
  /* each chained to the entry before it: its term, read before push_ent */
  prev = r->nents ? r->ents[r->nents - 1].term : r->base_term;
  for (i = 0, off = 0; i < n; i++) {
    if (push_ent(r, r->size + off, es[i].term) != 0) {
      r->nents -= i;
      return lkv_seterr(err, LKV_NOMEM, "replication log entry index");
    }
    lkvnet_rlog_encode_after((unsigned char *)r->scratch + off, &es[i], prev);
    prev = es[i].term;
    off += lkvnet_rlog_frame_size(&es[i]);
  }
  /* room first: zeros up to the frames' end and prealloc past it */
  if (r->size + total > r->alloc && r->prealloc > 0 &&
      (ec = zero_fill(r->env, r->fd, r->alloc,
                      r->size + total + r->prealloc)) == 0)
    r->alloc = r->size + total + r->prealloc;
  if (ec != 0 ||
      (ec = pwrite_all(r->env, r->fd, r->scratch, total, r->size)) != 0) {
    rc = ioerr(err, ec, "write", r->path);
    r->nents -= n;
    /* never leave a partial record for a later append to follow: cut it
     * back (durably: the syncer may have synced half a frame meanwhile),
     * and the failure is this append's alone; when the cut fails too, the
     * file's tail is unknown and every later append fails */
    r->alloc = r->size; /* what was written ahead goes too */
    if ((ec = r->env->truncate(r->env, r->fd, r->size)) != 0 ||
        (ec = f_sync(r->env, r->fd)) != 0) {
      lkv_err cut;
      ioerr(&cut, ec, "cut back", r->path);
      make_sticky(r, cut.code, &cut);
      if (err != NULL) *err = cut;
      rc = cut.code;
    }
    return rc;
  }
  r->size += total;
  if (r->alloc < r->size) r->alloc = r->size;
  pthread_mutex_lock(&r->mu);
  r->last_index = es[n - 1].index;
  r->last_term = es[n - 1].term;
  r->appends += n;
  r->bytes += total;
  if (!r->owner_syncs) pthread_cond_signal(&r->cv);
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
    return lkv_seterr(err, LKV_INVALID, "the log's index is exhausted");
  if (term < lt ||
      (op != LKVNET_OP_SET && op != LKVNET_OP_DELETE && op != LKVNET_OP_NOOP &&
       op != LKVNET_OP_CONF && op != LKVNET_OP_BATCH))
    return lkv_seterr(err, LKV_INVALID,
                      "cannot append op %d at term "
                      "%llu after term %llu",
                      op, (unsigned long long)term, (unsigned long long)lt);
  e.term = term;
  e.index = r->base_index + r->nents + 1;
  e.op = op;
  e.key = key;
  e.klen = op == LKVNET_OP_NOOP || op == LKVNET_OP_CONF || op == LKVNET_OP_BATCH
               ? 0
               : klen;
  e.val = val;
  e.vlen = op == LKVNET_OP_SET || op == LKVNET_OP_CONF || op == LKVNET_OP_BATCH
               ? vlen
               : 0;
  if ((rc = append_frames(r, &e, 1, err)) == LKV_OK) *index = e.index;
  return rc;
}

int lkvnet_rlog_append_entry(lkvnet_rlog *r, const lkvnet_entry *e,
                             lkv_err *err) {
  return lkvnet_rlog_append_entries(r, e, 1, err);
}

int lkvnet_rlog_append_entries(lkvnet_rlog *r, const lkvnet_entry *es, size_t n,
                               lkv_err *err) {
  uint64_t last = r->base_index + r->nents;
  uint64_t lt = r->nents ? r->ents[r->nents - 1].term : r->base_term;
  size_t i;
  if (n == 0) return LKV_OK;
  for (i = 0; i < n; i++) {
    const lkvnet_entry *e = &es[i];
    if (last == UINT64_MAX || e->index != last + 1 || e->term < lt)
      return lkv_seterr(err, LKV_INVALID,
                        "entry (term %llu, index %llu) "
                        "does not follow (term %llu, index %llu)",
                        (unsigned long long)e->term,
                        (unsigned long long)e->index, (unsigned long long)lt,
                        (unsigned long long)last);
    if (e->op != LKVNET_OP_SET && e->op != LKVNET_OP_DELETE &&
        e->op != LKVNET_OP_NOOP && e->op != LKVNET_OP_CONF &&
        e->op != LKVNET_OP_BATCH)
      return lkv_seterr(err, LKV_INVALID, "entry %llu: unknown op %d",
                        (unsigned long long)e->index, e->op);
    last = e->index;
    lt = e->term;
  }
  return append_frames(r, es, n, err);
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
  int rc, ec;
  /* the copier reads the old file up to cp_stable: never cut under it */
  if (lkvnet_rlog_compacting(r) && index < r->cp_stable)
    lkvnet_rlog_compact_wait(r);
  last = r->base_index + r->nents;
  if ((rc = sticky_error(r, err)) != LKV_OK) return rc;
  if (index < r->base_index || index > last)
    return lkv_seterr(err, LKV_INVALID,
                      "cannot cut the log after index "
                      "%llu: it holds %llu .. %llu",
                      (unsigned long long)index,
                      (unsigned long long)r->base_index + 1,
                      (unsigned long long)last);
  if (index == last) return LKV_OK;
  size = r->ents[index - r->base_index].off;
  /* a failed cut leaves the file as it was, and the log with it: the
   * caller may try again (not sticky) */
  if ((ec = r->env->truncate(r->env, r->fd, size)) != 0)
    return ioerr(err, ec, "truncate", r->path);
  r->size = r->alloc = size;
  r->nents = (size_t)(index - r->base_index);
  pthread_mutex_lock(&r->mu);
  r->last_index = index;
  r->last_term = r->nents ? r->ents[r->nents - 1].term : r->base_term;
  if (r->durable_index > index) r->durable_index = index;
  r->gen++;
  pthread_mutex_unlock(&r->mu);
  /* The cut is made durable before anything is appended after it: else a
   * crash could keep some of the new entries' bytes and bring back some
   * of the old ones in between, a log no leader ever sent. Conflicts are
   * rare; one fdatasync on the loop each is cheap. A failure is sticky. */
  if ((ec = f_sync(r->env, r->fd)) != 0) {
    rc = ioerr(err, ec, "fdatasync", r->path);
    make_sticky(r, rc, err);
    return rc;
  }
  return LKV_OK;
}

/* Let the syncer run again (after a rewrite paused it). */
static void unpause(lkvnet_rlog *r) {
  pthread_mutex_lock(&r->mu);
  r->paused = 0;
  pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
}

int lkvnet_rlog_rewrite(lkvnet_rlog *r, uint64_t base_index, uint64_t base_term,
                        lkv_err *err) {
  const lkv_env *env = r->env;
  char tmp[4096 + 16];
  unsigned char h[LKVNET_RLOG_HEADER_SIZE];
  uint64_t last, from_off;
  size_t keep = 0, i;
  int fd = -1, rc, e, named;
  lkv_err dirr;
  char *copy = NULL;
  size_t copy_len = 0;
  lkvnet_rlog_compact_wait(r); /* one rewrite at a time */
  last = r->base_index + r->nents;
  from_off = r->size;
  if ((rc = sticky_error(r, err)) != LKV_OK) return rc;
  /* a lower base only for an empty log (a node that rebuilds from a
   * leader's whole log): no entry would follow it */
  if ((base_index < r->base_index && r->nents != 0) || base_index == UINT64_MAX)
    return lkv_seterr(err, LKV_INVALID,
                      "cannot start the log after "
                      "%llu (it starts after %llu)",
                      (unsigned long long)base_index,
                      (unsigned long long)r->base_index);
  if (base_index >= r->base_index &&
      (rc = lkvnet_rlog_check_base(r, base_index, base_term, err)) != LKV_OK)
    return rc;
  if (base_index >= r->base_index && base_index < last) {
    keep = (size_t)(last - base_index);
    from_off = r->ents[base_index - r->base_index].off;
  }
  copy_len = (size_t)(r->size - from_off);
  snprintf(tmp, sizeof tmp, "%s.tmp", r->path);
  lkvnet_rlog_encode_header(h, base_index, base_term);
  if ((e = env->open(env, tmp, O_RDWR | O_CREAT | O_TRUNC, 0644, &fd)) != 0)
    return ioerr(err, e, "create", tmp);
  if (copy_len && (copy = malloc(copy_len)) == NULL) {
    rc = lkv_seterr(err, LKV_NOMEM, "rewriting %s", r->path);
    goto fail;
  }
  if (copy_len && (e = pread_all(env, r->fd, copy, copy_len, from_off)) != 0) {
    rc = ioerr(err, e, "read", r->path);
    goto fail;
  }
  if ((e = pwrite_all(env, fd, h, sizeof h, 0)) != 0 ||
      (copy_len && (e = pwrite_all(env, fd, copy, copy_len, sizeof h)) != 0)) {
    rc = ioerr(err, e, "write", tmp);
    goto fail;
  }
  if ((e = f_sync(env, fd)) != 0) {
    rc = ioerr(err, e, "fdatasync", tmp);
    goto fail;
  }
  /* the syncer must not be inside fdatasync(old fd) when it closes */
  pthread_mutex_lock(&r->mu);
  r->paused = 1;
  while (r->busy) pthread_cond_wait(&r->cv, &r->mu);
  pthread_mutex_unlock(&r->mu);
  if ((e = env->rename(env, tmp, r->path)) != 0) {
    rc = ioerr(err, e, "rename", tmp);
    unpause(r);
    goto fail; /* the old file keeps the name: nothing lost */
  }
  /* the name holds the new file now, whatever follows */
  named = (e = env->sync_dir(env, r->dir)) == 0;
  if (!named) rc = ioerr(&dirr, e, "fsync directory", r->dir);
  f_close(env, r->fd);
  r->fd = fd;
  fd = -1;
  for (i = 0; i < keep; i++) {
    r->ents[i].off =
        r->ents[r->nents - keep + i].off - from_off + LKVNET_RLOG_HEADER_SIZE;
    r->ents[i].term = r->ents[r->nents - keep + i].term;
  }
  r->nents = keep;
  r->size = r->alloc = LKVNET_RLOG_HEADER_SIZE + copy_len;
  pthread_mutex_lock(&r->mu);
  r->base_index = base_index;
  r->base_term = base_term;
  if (keep == 0) {
    r->last_index = base_index;
    r->last_term = base_term;
  }
  if (named) {
    r->durable_index = r->last_index; /* the new file was synced whole */
  } else {
    /* a crash may bring the old file back: sticky, as a failed sync */
    if (r->durable_index > r->last_index) r->durable_index = r->last_index;
    if (r->sticky.code == LKV_OK) r->sticky = dirr;
    if (err != NULL) *err = dirr;
  }
  r->gen++;
  r->paused = 0;
  pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
  free(copy);
  return named ? LKV_OK : rc;
fail:
  free(copy);
  f_close(env, fd);
  (void)env->unlink(env, tmp);
  return rc;
}

int lkvnet_rlog_read(lkvnet_rlog *r, uint64_t from, size_t max_bytes,
                     unsigned char **buf, size_t *len, uint64_t *to,
                     lkv_err *err) {
  uint64_t last = r->base_index + r->nents, end_off, start_off;
  uint64_t n = 0;
  size_t first;
  int e;
  *buf = NULL;
  *len = 0;
  *to = from - 1;
  if (from <= r->base_index)
    return lkv_seterr(err, LKV_NOTFOUND,
                      "index %llu is behind the "
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
    return lkv_seterr(err, LKV_NOMEM, "reading %llu bytes of %s",
                      (unsigned long long)(end_off - start_off), r->path);
  if ((e = pread_all(r->env, r->fd, *buf, (size_t)(end_off - start_off),
                     start_off)) != 0) {
    free(*buf);
    *buf = NULL;
    return ioerr(err, e, "read", r->path);
  }
  *len = (size_t)(end_off - start_off);
  *to = from + n - 1;
  return LKV_OK;
}

/* }====================================================================== */

/* {======================================================================
** Accessors, close
** ======================================================================= */

uint64_t lkvnet_rlog_base_index(const lkvnet_rlog *r) { return r->base_index; }

uint64_t lkvnet_rlog_last_index(const lkvnet_rlog *r) {
  return r->base_index + r->nents;
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
  out->size = r->size;
  out->alloc = r->alloc;
  out->dropped_bytes = r->dropped_bytes;
  memcpy(out->dropped_why, r->dropped_why, sizeof out->dropped_why);
  pthread_mutex_unlock(&r->mu);
}

void lkvnet_rlog_set_prealloc(lkvnet_rlog *r, uint64_t bytes) {
  r->prealloc = bytes;
}

int lkvnet_rlog_close(lkvnet_rlog *r, lkv_err *err) {
  int rc = LKV_OK, e;
  if (r == NULL) return LKV_OK;
  /* a compaction's rename needs the syncer: it ends first */
  if (r->started) lkvnet_rlog_compact_wait(r);
  pthread_mutex_lock(&r->mu);
  r->stop = 1;
  pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
  if (r->started) pthread_join(r->syncer, NULL);
  if (r->sticky.code != LKV_OK) { /* stuck: what was not synced may be lost */
    rc = r->sticky.code;
    if (err != NULL) *err = r->sticky;
  } else if (r->alloc > r->size &&
             (e = r->env->truncate(r->env, r->fd, r->size)) != 0) {
    /* the zeros would only be kept, as after a crash */
    rc = ioerr(err, e, "truncate", r->path);
  } else if ((e = f_sync(r->env, r->fd)) != 0) {
    rc = ioerr(err, e, "fdatasync", r->path);
  }
  if ((e = r->env->close(r->env, r->fd)) != 0 && rc == LKV_OK)
    rc = ioerr(err, e, "close", r->path);
  pthread_mutex_destroy(&r->mu);
  pthread_cond_destroy(&r->cv);
  free(r->scratch);
  free(r->ents);
  free(r);
  return rc;
}

/* }====================================================================== */
