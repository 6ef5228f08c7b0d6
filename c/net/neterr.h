/* neterr.h - filling an lkv_err from the net room, which sees only the
 * engine's public header: the same "kind: detail" sentences as the engine. */
#ifndef LKVNET_NETERR_H
#define LKVNET_NETERR_H

#include "lunakv.h"

/* Format the message into err (when not NULL) and return code. */
int lkvnet_seterr(lkv_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
