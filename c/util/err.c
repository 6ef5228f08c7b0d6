/* err.c - error kinds and message formatting (see err.h). */
#include "err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *lkv_strerror(int code) {
  switch (code) {
    case LKV_OK: return "ok";
    case LKV_NOTFOUND: return "not found";
    case LKV_CORRUPTION: return "corruption";
    case LKV_IOERROR: return "io error";
    case LKV_INVALID: return "invalid argument";
    case LKV_BUSY: return "busy";
    case LKV_CLOSED: return "closed";
    case LKV_NOMEM: return "out of memory";
    case LKV_TOOBIG: return "too big";
    default: return "unknown error";
  }
}

int lkv_seterr(lkv_err *err, int code, const char *fmt, ...) {
  if (err == NULL) return code;
  err->code = code;
  int n = snprintf(err->msg, sizeof err->msg, "%s: ", lkv_strerror(code));
  if (n < 0 || (size_t)n >= sizeof err->msg) return code;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err->msg + n, sizeof err->msg - (size_t)n, fmt, ap);
  va_end(ap);
  return code;
}

int lkv_seterrno(lkv_err *err, const char *what, const char *path) {
  int e = errno;
  if (e == ENOMEM) return lkv_seterr(err, LKV_NOMEM, "%s %s", what, path);
  return lkv_seterr(err, LKV_IOERROR, "%s %s: %s", what, path, strerror(e));
}

int lkv_errcopy(lkv_err *dst, const lkv_err *src) {
  if (src == NULL) return LKV_OK;
  if (dst != NULL && dst != src) *dst = *src;
  return src->code;
}
