/* err.h - filling an lkv_err: a code plus one sentence, no allocation. */
#ifndef LKV_ERR_H
#define LKV_ERR_H

#include "lunakv.h"

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
