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

/* DATA_DIR/joining, the join mark (docs/replication.md, "Membership"): a
 * node that joins a cluster (--join) over a fresh directory (no log, no
 * term file) writes it before it takes part in anything, and removes it
 * once it has caught up through the entry that added it. While it is
 * there the node's term file is no record of the votes its URL gave:
 * the node grants none, and a restart carries on with the unfinished
 * join. */
#define LKVNET_JOIN_MARK_FILE "joining"
/* *present: 1 when the mark exists, else 0. */
int lkvnet_joinmark_get(const char *dir, const lkv_env *env, int *present,
                        lkv_err *err);
/* Created, fsync'ed, the directory fsync'ed: every failure is returned
 * (a crash could otherwise lose it, and the restarted node would trust a
 * term file that records no vote). */
int lkvnet_joinmark_set(const char *dir, const lkv_env *env, lkv_err *err);
/* Removed, the directory fsync'ed; no mark is no error. */
int lkvnet_joinmark_clear(const char *dir, const lkv_env *env, lkv_err *err);

#endif
