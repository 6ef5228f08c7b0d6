/* rlog.h - the replication log: a persistent, CRC-framed, append-only log
 * of (term, index, operation) entries in DATA_DIR/replication.log. The
 * byte format is docs/replication.md ("The log file"); the constants below
 * change with that page.
 *
 * Threads: the owner (the event loop) calls every function but
 * lkvnet_rlog_durable_index, which any thread may call. A helper thread
 * ("the syncer") runs fdatasync whenever appended entries are not yet
 * durable; entries appended while a sync runs share the next one (group
 * commit). After every sync it writes one byte to notify_fd (non-blocking;
 * a full pipe already means "look again"), so the loop never waits on a
 * disk flush. A compaction started with lkvnet_rlog_compact_begin runs on
 * a thread of its own and on the syncer, and reports through notify_fd
 * the same way (see there).
 *
 * Memory: the log keeps 16 bytes per entry it holds (the offset of its
 * frame and its term: what term_at and read look up without reading the
 * file), so about 16 MB per million entries. A compacted log holds the
 * entries since the last cut; with compaction off it grows with every
 * write (docs/replication.md, "Log compaction").
 *
 * Files: every call on a file or directory (the log, its replay at open,
 * truncate, rewrite and compaction, the syncer's fdatasync, the term
 * file) goes through the lkv_env given to lkvnet_rlog_open and the term
 * functions (lunakv.h; NULL = lkv_env_posix()), so tests can fail any of
 * them and simulate a power loss (c/engine/faultenv.h).
 *
 * Errors: lkv_err and the LKV_* codes of the engine's public header.
 * The stickiness rule: a failure is sticky - every later append, truncate,
 * rewrite and compaction fails with it, and nothing more becomes durable,
 * until the log is closed and opened again - exactly when the file may no
 * longer hold what the log says it holds:
 *  - a failed fdatasync of the log (the syncer's, a truncate's, or a
 *    compaction's last one): after a failed fsync nothing about the file
 *    can be trusted;
 *  - a failed cut-back of a failed append, or of its sync (the file may
 *    end in half a frame);
 *  - a failed rename or directory sync after a rewrite or compaction has
 *    switched to its new file (a crash may bring the old one back).
 * Everything else fails only its own call and leaves the log as it was:
 * a failed append write, cut back out of the file (no partial frame, its
 * index not used up: the next append may succeed); a failed truncate (the
 * file is left whole); a rewrite or compaction that fails before its
 * switch (the old file keeps the name, the new one is removed); and
 * refusals (LKV_INVALID, LKV_TOOBIG, LKV_NOMEM). lkvnet_rlog_error says
 * whether the log is stuck.
 */
#ifndef LKVNET_RLOG_H
#define LKVNET_RLOG_H

#include <stddef.h>
#include <stdint.h>

#include "lunakv.h"

#define LKVNET_RLOG_FILE "replication.log"
#define LKVNET_RLOG_MAGIC "LUNAKVRL" /* 8 bytes, no NUL */
/* Version 2 chains each frame to the one before it (prev_term, below);
 * version 1 logs, without the chain, are still read, and rewritten as
 * version 2 by the open that reads them. */
#define LKVNET_RLOG_VERSION 2u
#define LKVNET_RLOG_VERSION_V1 1u
#define LKVNET_RLOG_HEADER_SIZE                                        \
  40u                             /* magic 8, version 4, flags 4,      \
                                     base_index 8, base_term 8, crc 4, \
                                     zero 4 */
#define LKVNET_RLOG_FRAME_SIZE 8u /* length 4, crc32c 4 */
#define LKVNET_RLOG_FIXED_PAYLOAD               \
  33u /* term 8, index 8, op 1, klen 4, vlen 4, \
         prev_term 8 (key and value follow) */
#define LKVNET_RLOG_FIXED_PAYLOAD_V1 25u /* version 1: no prev_term */
/* Space the log writes ahead of its frames, as zeros (lkvnet_rlog_set_
 * prealloc): a MiB, about 15,000 small entries. */
#define LKVNET_RLOG_PREALLOC (1u << 20)

/* NOOP: what a leader appends when its term starts, so entries of
 * earlier terms commit through an entry of its own (Raft, section 5.4.2);
 * applying it moves only the applied index. */
enum { LKVNET_OP_SET = 1, LKVNET_OP_DELETE = 2, LKVNET_OP_NOOP = 3 };
/* A Raft configuration change: the value is its payload, opaque to the
 * log (the Raft core encodes it); no key (klen 0). Version 2 logs only. */
#define LKVNET_OP_CONF 4
/* A batch of sets and deletes applied as one engine batch (a stored
 * function's writes, a library's keys): no key (klen 0); the value is
 * the writes, encoded by the node (cmd.c, lkvnet_node_batch_*), opaque
 * to the log. Version 2 logs only. */
#define LKVNET_OP_BATCH 5

typedef struct lkvnet_entry {
  uint64_t term, index;
  int op;          /* LKVNET_OP_* */
  const char *key; /* borrowed */
  size_t klen;
  const char *val; /* borrowed; NULL/0 for a delete and a no-op */
  size_t vlen;
  /* The term of the entry before this one (the header's base_term for
   * the first): the chain that lets open tell a log from a mix of two.
   * Set by decode and the replay at open; encode, append and
   * append_entry never read it (the log writes its own last term). */
  uint64_t prev_term;
} lkvnet_entry;

typedef struct lkvnet_rlog lkvnet_rlog;

/* Called by open for every valid entry, in index order; the entry's bytes
 * are borrowed for the call. A non-zero return stops the open with it. */
typedef int (*lkvnet_rlog_replay_fn)(void *ctx, const lkvnet_entry *e,
                                     lkv_err *err);

typedef struct lkvnet_rlog_stats {
  uint64_t base_index; /* entries <= this are behind a snapshot */
  uint64_t base_term;
  uint64_t last_index, last_term;
  uint64_t durable_index; /* fdatasync'ed through this index */
  uint64_t appends, syncs, bytes;
  uint64_t size;  /* header and frames: where the next frame goes */
  uint64_t alloc; /* the file's length: size, then zeros written ahead */
  uint64_t dropped_bytes;            /* cut at open: a torn tail */
  char dropped_why[LKV_ERR_MSG_LEN]; /* "" or what was cut and why */
} lkvnet_rlog_stats;

/* Open or create dir/replication.log through env (NULL: POSIX), replay
 * every valid entry through fn (may be NULL), cut a torn tail (reported
 * in the stats), make what is left durable, and start the syncer. A new
 * log's header is written aside, synced and renamed into place, then the
 * directory synced. A version 1 log is read (without the chain) and then
 * rewritten as version 2 the same way (any failure of that fails the
 * open). LKV_CORRUPTION, naming the file and offset, and nothing cut: a
 * bad header; a valid record out of index order, or (version 2) whose
 * prev_term is not the term of the record before it; a bad record with a
 * valid one anywhere after it (damage in the middle, not a torn tail). A
 * failed read fails with LKV_IOERROR (never taken for a torn tail:
 * nothing is cut). On success *out owns the file until
 * lkvnet_rlog_close; env must outlive it. */
int lkvnet_rlog_open(const char *dir, const lkv_env *env, int notify_fd,
                     lkvnet_rlog_replay_fn fn, void *ctx, lkvnet_rlog **out,
                     lkv_err *err);

/* Append one entry with the given term (at least last_term; else
 * LKV_INVALID) and index last_index + 1 (returned in *index); its frame
 * names last_term as its prev_term. The bytes
 * reach the OS (one pwrite) before it returns; they are durable once
 * lkvnet_rlog_durable_index() >= *index. LKV_TOOBIG for a key or value
 * over the engine's limits. LKV_IOERROR when the write fails: the file is
 * cut back so it never holds a partial record, and the failure is this
 * append's only (not sticky) unless the cut fails too (sticky); the
 * sticky failure, when there is one. */
int lkvnet_rlog_append(lkvnet_rlog *r, uint64_t term, int op, const char *key,
                       size_t klen, const char *val, size_t vlen,
                       uint64_t *index, lkv_err *err);

/* Append e as it is (a follower copying the leader's entries): e->index
 * must be last_index + 1, e->term at least last_term and e->op an
 * LKVNET_OP_*, else LKV_INVALID and nothing is written. The frame names
 * last_term as its prev_term, whatever e->prev_term says. */
int lkvnet_rlog_append_entry(lkvnet_rlog *r, const lkvnet_entry *e,
                             lkv_err *err);

/* Append es[0..n) as lkvnet_rlog_append_entry would one by one (each
 * checked against the one before it), with one write: all of them, or
 * none (any check failing: LKV_INVALID; a failed write is cut back as
 * an append's). */
int lkvnet_rlog_append_entries(lkvnet_rlog *r, const lkvnet_entry *es, size_t n,
                               lkv_err *err);

/* Sync what is appended on the caller's (the owner's) thread, now,
 * instead of waiting for the syncer: 1 when the durable index moved to
 * the last index; 0 when it was left to the syncer (it is syncing, or
 * paused, a compaction is under way, the log is stuck, or nothing waits);
 * -1 when the fdatasync failed, which is then sticky and told through
 * notify_fd as the syncer's failure would be. For a node whose entries
 * wait for no one else's log (a single node): the wait, the syncer's
 * wake-up and the notify cost more than the fdatasync they overlap. */
int lkvnet_rlog_sync_here(lkvnet_rlog *r);

/* on: appends from now on leave the syncer asleep, for the owner calls
 * lkvnet_rlog_sync_here after each (which wakes the syncer when it does
 * not sync itself); else the syncer could start on them first, and the
 * owner's sync would then wait for it. off (the default): the syncer
 * wakes at every append. Owner thread only. */
void lkvnet_rlog_set_owner_syncs(lkvnet_rlog *r, int on);

/* The term of the entry at index into *term: LKV_OK; LKV_NOTFOUND when
 * index is past the last entry or behind base_index (compacted away;
 * base_index itself answers base_term). */
int lkvnet_rlog_term_at(lkvnet_rlog *r, uint64_t index, uint64_t *term);

/* Drop every entry after index (base_index <= index <= last_index): a
 * follower whose tail conflicts with the leader's log. The durable index
 * comes down with it. The cut is fdatasync'ed before this returns (on the
 * caller's thread), so nothing appended after it can sit on disk beside
 * what it cut. A failed cut (LKV_IOERROR) leaves the log whole and is not
 * sticky; a failed sync of it is. */
int lkvnet_rlog_truncate(lkvnet_rlog *r, uint64_t index, lkv_err *err);

/* Rewrite the file so it starts after (base_index, base_term): entries
 * up to base_index are dropped (they are in a snapshot of the engine),
 * later ones kept. When the log holds base_index, base_term must be its
 * term (the chain starts there), else LKV_INVALID and nothing changes. With
 * base_index past last_index the log becomes empty and continues from
 * base_index + 1 (a follower that installed a snapshot). An empty log
 * (truncated to its base) may also restart after a lower base_index, 0
 * included (a follower that rebuilds from a leader's whole log); a log
 * with entries refuses that with LKV_INVALID. The new file is
 * written aside, fsync'ed and renamed over the old one, and the directory
 * synced, so a crash leaves one or the other. A failure before the rename
 * leaves the log as it was (not sticky); a failed directory sync after it is
 * sticky. */
int lkvnet_rlog_rewrite(lkvnet_rlog *r, uint64_t base_index, uint64_t base_term,
                        lkv_err *err);

/* ---- compaction in the background ------------------------------------ */

/* Runs on the compaction's thread before anything is rewritten: what must
 * be durable before entries up to base_index leave the log (the node
 * syncs its engine, which holds them). Non-zero fails the compaction with
 * err; the log is left as it was. */
typedef int (*lkvnet_rlog_prepare_fn)(void *ctx, lkv_err *err);

/* lkvnet_rlog_rewrite(base_index, base_term) without blocking the owner.
 * A thread of the log's own runs prepare, writes the entries
 * (base_index, stable_index] to DIR/replication.log.tmp after a new
 * header and fdatasyncs them, then notifies. lkvnet_rlog_compact_poll
 * then copies, on the owner's thread, what was appended past stable_index
 * meanwhile (a copy within the page cache, no sync) and switches appends
 * to the new file; the syncer fdatasyncs it, renames it over the old one
 * and syncs the directory, and only then counts anything appended after
 * the switch as durable. A crash at any point leaves the old file or the
 * new one under the name, either with every entry that was durable.
 *
 * While it runs, appends, reads and term_at go on as usual, base_index
 * moves at the switch, and lkvnet_rlog_truncate may cut entries past
 * stable_index; a truncate at or before it, lkvnet_rlog_rewrite and
 * lkvnet_rlog_close first wait for the compaction to finish
 * (lkvnet_rlog_compact_wait). REQUIRES: base_index <= stable_index <=
 * last_index, and no entry up to stable_index will be cut (the node
 * passes its applied index). LKV_BUSY when a compaction runs already,
 * LKV_INVALID for bad indexes or a base_term that is not the term of the
 * entry at base_index, LKV_IOERROR when the thread cannot start;
 * nothing has started then. */
int lkvnet_rlog_compact_begin(lkvnet_rlog *r, uint64_t base_index,
                              uint64_t base_term, uint64_t stable_index,
                              lkvnet_rlog_prepare_fn prepare, void *ctx,
                              lkv_err *err);

enum {
  LKVNET_COMPACT_IDLE,    /* none running, nothing to report */
  LKVNET_COMPACT_RUNNING, /* still going */
  LKVNET_COMPACT_DONE,    /* finished: the log starts after its base index */
  LKVNET_COMPACT_FAILED   /* gave up (err): see lkvnet_rlog_compact_poll */
};

/* Move a compaction on; the owner calls this whenever notify_fd fires (and
 * may at any time). Returns RUNNING while it goes on; DONE or FAILED once
 * each, when it ends; IDLE otherwise. A failure before the switch leaves
 * the log as it was (a new compaction may be tried); one after it (the
 * new file could not be synced or renamed) is sticky, as a failed sync. */
int lkvnet_rlog_compact_poll(lkvnet_rlog *r, lkv_err *err);

/* Finish a running compaction, waiting for its disk work: for the rare
 * paths that rewrite the log themselves (a snapshot install). Its outcome
 * is still reported by the next lkvnet_rlog_compact_poll. */
void lkvnet_rlog_compact_wait(lkvnet_rlog *r);

/* 1 from lkvnet_rlog_compact_begin until the compaction has ended. */
int lkvnet_rlog_compacting(lkvnet_rlog *r);

/* The frames of entries from .. (at most max_bytes of them, but at least
 * one) exactly as the file holds them, into a malloc'd *buf the caller
 * frees; *to receives the last index read. from past last_index reads
 * nothing (*len 0, *to from - 1); from behind base_index is
 * LKV_NOTFOUND. */
int lkvnet_rlog_read(lkvnet_rlog *r, uint64_t from, size_t max_bytes,
                     unsigned char **buf, size_t *len, uint64_t *to,
                     lkv_err *err);

/* ---- frames in memory: what /append and /snapshot bodies carry ------- */

/* Bytes one entry takes as a frame (version 2). */
size_t lkvnet_rlog_frame_size(const lkvnet_entry *e);
/* Encode e at dst (lkvnet_rlog_frame_size(e) bytes) as a frame that
 * follows an entry of term prev_term (e->prev_term is not read). */
void lkvnet_rlog_encode_after(unsigned char *dst, const lkvnet_entry *e,
                              uint64_t prev_term);
/* The same with prev_term 0: a frame outside any log (the snapshot
 * stream's pairs). */
void lkvnet_rlog_encode(unsigned char *dst, const lkvnet_entry *e);
/* Decode the version 2 frame at buf + *off into *e (borrowing buf; its
 * prev_term too) and advance *off: 1 for an entry, 0 at the end of buf,
 * -1 for a bad frame (why says what and where). The checks are the file
 * reader's for one frame: length, checksum, fields (prev_term at most
 * term); how frames chain is the caller's to check. */
int lkvnet_rlog_decode(const unsigned char *buf, size_t len, size_t *off,
                       lkvnet_entry *e, char *why, size_t whylen);

/* ---- the node's current term (DATA_DIR/term) ------------------------- */

/* Raft's currentTerm must survive restarts. Both go through env (NULL:
 * POSIX). 0 when the file is absent; LKV_CORRUPTION when it is damaged;
 * LKV_IOERROR when it cannot be read. */
int lkvnet_term_load(const char *dir, const lkv_env *env, uint64_t *term,
                     lkv_err *err);
/* Written aside, fsync'ed, renamed, the directory synced: a crash leaves
 * the old or new term. LKV_IOERROR when any step fails (the term must
 * then not be used: it may not survive a crash). */
int lkvnet_term_store(const char *dir, const lkv_env *env, uint64_t term,
                      lkv_err *err);

/* The log's first and last index bounds, for the owner thread only (no
 * lock: only the owner moves them): the hot paths' cheap reads, where
 * lkvnet_rlog_stats_get copies everything under the lock. */
uint64_t lkvnet_rlog_base_index(const lkvnet_rlog *r);
uint64_t lkvnet_rlog_last_index(const lkvnet_rlog *r);

/* The highest index known durable. Any thread. */
uint64_t lkvnet_rlog_durable_index(lkvnet_rlog *r);

/* The sticky failure (LKV_OK when none), copied into err. */
int lkvnet_rlog_error(lkvnet_rlog *r, lkv_err *err);

void lkvnet_rlog_stats_get(lkvnet_rlog *r, lkvnet_rlog_stats *out);

/* How many bytes of zeros the log keeps written ahead of its frames
 * (LKVNET_RLOG_PREALLOC from open, which makes a new log with them; 0:
 * none, the file ends at its last frame). An append that finds no room
 * writes size + bytes of them; a compaction's copier writes them after
 * the kept entries, off the loop.
 * The fdatasync of frames written into that space need not update the
 * file's length: one write to the device and its flush, not two (about
 * 125 against 195 us per sync on this project's test machines). Zeros
 * after the last frame are not damage: open keeps them, and a clean
 * close cuts them. Owner thread. */
void lkvnet_rlog_set_prealloc(lkvnet_rlog *r, uint64_t bytes);

/* Finish a running compaction, stop the syncer, cut the zeros written
 * ahead, sync what is left, close the file and free r. Returns the sticky
 * failure when the log is stuck (what was not synced may be lost), else the
 * final sync's or the close's failure, if any (r is freed either way). */
int lkvnet_rlog_close(lkvnet_rlog *r, lkv_err *err);

#endif
