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
 * disk flush.
 *
 * Errors: lkv_err and the LKV_* codes of the engine's public header. A
 * failed write or sync is sticky: every later append fails with it (after
 * a failed fsync nothing about the file's contents can be trusted).
 */
#ifndef LKVNET_RLOG_H
#define LKVNET_RLOG_H

#include <stddef.h>
#include <stdint.h>

#include "lunakv.h"

#define LKVNET_RLOG_FILE "replication.log"
#define LKVNET_RLOG_MAGIC "LUNAKVRL" /* 8 bytes, no NUL */
#define LKVNET_RLOG_VERSION 1u
#define LKVNET_RLOG_HEADER_SIZE 40u  /* magic 8, version 4, flags 4,
                                        base_index 8, base_term 8, crc 4,
                                        zero 4 */
#define LKVNET_RLOG_FRAME_SIZE 8u    /* length 4, crc32c 4 */
#define LKVNET_RLOG_FIXED_PAYLOAD 25u /* term 8, index 8, op 1, klen 4,
                                         vlen 4 (key and value follow) */

enum { LKVNET_OP_SET = 1, LKVNET_OP_DELETE = 2 };

typedef struct lkvnet_entry {
  uint64_t term, index;
  int op;          /* LKVNET_OP_* */
  const char *key; /* borrowed */
  size_t klen;
  const char *val; /* borrowed; NULL/0 for a delete */
  size_t vlen;
} lkvnet_entry;

typedef struct lkvnet_rlog lkvnet_rlog;

/* Called by open for every valid entry, in index order; the entry's bytes
 * are borrowed for the call. A non-zero return stops the open with it. */
typedef int (*lkvnet_rlog_replay_fn)(void *ctx, const lkvnet_entry *e,
                                     lkv_err *err);

typedef struct lkvnet_rlog_stats {
  uint64_t base_index;    /* entries <= this are behind a snapshot (0 now) */
  uint64_t last_index, last_term;
  uint64_t durable_index; /* fdatasync'ed through this index */
  uint64_t appends, syncs, bytes;
  uint64_t dropped_bytes; /* cut at open: a torn or corrupt tail */
  char dropped_why[LKV_ERR_MSG_LEN]; /* "" or what was cut and why */
} lkvnet_rlog_stats;

/* Open or create dir/replication.log, replay every valid entry through fn
 * (may be NULL), cut a torn or corrupt tail (reported in the stats), make
 * what is left durable, and start the syncer. A bad header, or a valid
 * record out of index order, fails with LKV_CORRUPTION naming the offset.
 * On success *out owns the file until lkvnet_rlog_close. */
int lkvnet_rlog_open(const char *dir, int notify_fd, lkvnet_rlog_replay_fn fn,
                     void *ctx, lkvnet_rlog **out, lkv_err *err);

/* Append one entry with the given term and index last_index + 1 (returned
 * in *index). The bytes reach the OS (write(2)) before it returns; they
 * are durable once lkvnet_rlog_durable_index() >= *index. LKV_TOOBIG for
 * a key or value over the engine's limits; LKV_IOERROR (sticky) when the
 * write fails - the file is cut back so it never holds a partial record. */
int lkvnet_rlog_append(lkvnet_rlog *r, uint64_t term, int op, const char *key,
                       size_t klen, const char *val, size_t vlen,
                       uint64_t *index, lkv_err *err);

/* The highest index known durable. Any thread. */
uint64_t lkvnet_rlog_durable_index(lkvnet_rlog *r);

/* The sticky failure (LKV_OK when none), copied into err. */
int lkvnet_rlog_error(lkvnet_rlog *r, lkv_err *err);

void lkvnet_rlog_stats_get(lkvnet_rlog *r, lkvnet_rlog_stats *out);

/* Stop the syncer, sync what is left, close the file and free r. Returns
 * the final sync's failure, if any (r is freed either way). */
int lkvnet_rlog_close(lkvnet_rlog *r, lkv_err *err);

#endif
