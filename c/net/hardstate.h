/* hardstate.h - Raft's hard state on disk: the current term and the vote
 * in DATA_DIR/term (rlog_term.c; the format is described there). The
 * node's driver (raftnode.c) opens it at start and stores it, durably,
 * before any message that depends on it leaves the node.
 *
 * Thread safety: a handle belongs to one thread at a time (the node's
 * loop); lkvnet_hardstate_load only reads and may run anywhere. */
#ifndef LKVNET_HARDSTATE_H
#define LKVNET_HARDSTATE_H

#include <stdint.h>

#include "lunakv.h"

typedef struct lkvnet_hardstate lkvnet_hardstate;

/* term and vote as the file holds them; 0 and 0 when it does not exist.
 * A version-1 file (the term alone) reads as vote 0. LKV_CORRUPTION for
 * anything else (a version-3 file whose two slots both fail their checks,
 * or whose slots have the same generation). Reads only. */
int lkvnet_hardstate_load(const char *dir, const lkv_env *env, uint64_t *term,
                          uint64_t *vote, lkv_err *err);

/* Load as above and keep the file open for stores: *hs is the caller's to
 * free with lkvnet_hardstate_close, and borrows env (kept alive by the
 * caller until then). What was read is made durable first (the file
 * fdatasync'ed, the directory fsync'ed): a process that died before a
 * store's fdatasync returned leaves its state in the page cache, where
 * this read finds it, and the node must not act on a state a power loss
 * could still undo. On failure *hs is NULL, and a corrupt file is left
 * as it was. */
int lkvnet_hardstate_open(const char *dir, const lkv_env *env,
                          lkvnet_hardstate **hs, uint64_t *term, uint64_t *vote,
                          lkv_err *err);

/* Store term and vote durably: on a version-3 file one pwrite over the
 * slot that does not hold the last state known durable, then one
 * fdatasync. The first store of a fresh node, or over a version-1/2 file,
 * writes a whole version-3 file aside, fdatasyncs it, renames it over and
 * fsyncs the directory. Every failure is returned, and the state must not
 * be used then (a crash could bring back the older term or vote, and a
 * node could vote twice in one term); the caller retries with the state
 * it wants, and the retry never touches the slot of the last state
 * stored. */
int lkvnet_hardstate_store(lkvnet_hardstate *hs, uint64_t term, uint64_t vote,
                           lkv_err *err);

/* Close the file and free hs (NULL: nothing). */
void lkvnet_hardstate_close(lkvnet_hardstate *hs);

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
