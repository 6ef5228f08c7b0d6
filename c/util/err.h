/* err.h - the error vocabulary of every room: an LKV_* kind plus one
 * sentence, filled without allocation. The kinds, lkv_err and
 * lkv_strerror are the errors section of the public API (lunakv.h includes
 * this file there); lkv_seterr and its kin are for lunakv's own code. */
#ifndef LKV_ERR_H
#define LKV_ERR_H

enum {
  LKV_OK = 0,
  LKV_NOTFOUND = 1,   /* key absent (never carries a message) */
  LKV_CORRUPTION = 2, /* bytes on disk fail a checksum or do not parse */
  LKV_IOERROR = 3,    /* a system call failed */
  LKV_INVALID = 4,    /* bad argument or option */
  LKV_BUSY = 5,       /* LOCK held by another open, or handles still open */
  LKV_CLOSED = 6,     /* the db is closed or closing */
  LKV_NOMEM = 7,      /* allocation failed */
  LKV_TOOBIG = 8      /* key or value over the documented limit */
};

#define LKV_ERR_MSG_LEN 256

typedef struct lkv_err {
  int code;                  /* the LKV_* kind */
  char msg[LKV_ERR_MSG_LEN]; /* "corruption: 000012.sst offset 4096: ..." */
} lkv_err;

/* The kind's name: "ok", "not found", "corruption", "io error", "invalid
 * argument", "busy", "closed", "out of memory", "too big". Static storage.
 * Exported like every LKV_API function of lunakv.h, whose macro this leaf
 * cannot see. */
#if defined(__GNUC__)
__attribute__((visibility("default")))
#endif
const char *
lkv_strerror(int code);

/* Format the message into err (when not NULL) and return code, so callers
 * write `return lkv_seterr(err, LKV_INVALID, "...", ...)`. The message is
 * prefixed with the kind: "corruption: ...". */
int lkv_seterr(lkv_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* LKV_IOERROR with "<what> <path>: <strerror(errno)>". Reads errno. */
int lkv_seterrno(lkv_err *err, const char *what, const char *path);

/* Copy src into dst (both may be NULL) and return src's code. */
int lkv_errcopy(lkv_err *dst, const lkv_err *src);

#endif
