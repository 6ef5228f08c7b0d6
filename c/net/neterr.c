/* neterr.c - lkvnet_seterr (see neterr.h). */
#include "neterr.h"

#include <stdarg.h>
#include <stdio.h>

int lkvnet_seterr(lkv_err *err, int code, const char *fmt, ...) {
  if (err != NULL) {
    va_list ap;
    int k;
    err->code = code;
    k = snprintf(err->msg, sizeof err->msg, "%s: ", lkv_strerror(code));
    if (k < 0 || (size_t)k >= sizeof err->msg) k = 0;
    va_start(ap, fmt);
    vsnprintf(err->msg + k, sizeof err->msg - (size_t)k, fmt, ap);
    va_end(ap);
  }
  return code;
}
