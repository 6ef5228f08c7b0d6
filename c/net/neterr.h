/* neterr.h - the net room fills an lkv_err with c/util's lkv_seterr, as
 * the engine does. lkvnet_seterr is the name its files used when they kept
 * their own copy; it stays an alias until those files are next edited, so
 * that the restructuring of c/net need not touch every error line at once. */
#ifndef LKVNET_NETERR_H
#define LKVNET_NETERR_H

#include "err.h"
#include "lunakv.h"

#define lkvnet_seterr lkv_seterr

#endif
