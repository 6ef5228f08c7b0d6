/* hardstate.h - Raft's hard state on disk: the current term and the vote
 * in DATA_DIR/term (rlog_term.c; the format is described there). The
 * node's driver (raftnode.c) loads it at open and stores it, durably,
 * before any message that depends on it leaves the node. */
#ifndef LKVNET_HARDSTATE_H
#define LKVNET_HARDSTATE_H

#include <stdint.h>

#include "lunakv.h"

/* term and vote; 0 and 0 when the file does not exist. A version-1 file
 * (the term alone) reads as vote 0. LKV_CORRUPTION for anything else. */
int lkvnet_hardstate_load(const char *dir, const lkv_env *env, uint64_t *term,
                          uint64_t *vote, lkv_err *err);
/* Written aside, fsync'ed, renamed over the old one, the directory
 * fsync'ed; every failure is returned (a crash could otherwise bring back
 * an older term or vote, and a node could vote twice in one term). */
int lkvnet_hardstate_store(const char *dir, const lkv_env *env, uint64_t term,
                           uint64_t vote, lkv_err *err);

#endif
