/* wal.h - the write-ahead log: length-framed records, each with a CRC32C
 * (format in wal_format.md). A record is one batch (batch.h), so a batch
 * is applied all or nothing on replay.
 *
 * Thread safety: a writer is used by one thread at a time (the db's write
 * leader, or the db under its mutex). */
#ifndef LKV_WAL_H
#define LKV_WAL_H

#include <stddef.h>
#include <stdint.h>

#include "lunakv.h"

#define LKV_WAL_HEADER 8 /* crc32c u32 + length u32 */

typedef struct lkv_wal lkv_wal;

/* Create path (truncating) for appending, through env (NULL: POSIX). */
int lkv_wal_create(const lkv_env *env, const char *path, lkv_wal **out,
                   lkv_err *err);
/* Open an existing log for appending after cutting it to valid_end (the
 * end of its last valid record), so new records follow valid data. */
int lkv_wal_reopen(const lkv_env *env, const char *path, uint64_t valid_end,
                   lkv_wal **out, lkv_err *err);
/* Frame and buffer one record, given in two pieces (a header and a body;
 * either may be empty), in memory: no system call. */
int lkv_wal_add2(lkv_wal *w, const char *a, size_t an, const char *b, size_t bn,
                 lkv_err *err);
/* Buffer a marker: a batch of no operations whose seq says where the log
 * goes on (wal_format.md, "Sequence numbers"). */
int lkv_wal_add_marker(lkv_wal *w, uint64_t seq, lkv_err *err);
/* Hand the buffered bytes to the OS (write(2)). */
int lkv_wal_write_out(lkv_wal *w, lkv_err *err);
/* write_out, then fdatasync. */
int lkv_wal_sync(lkv_wal *w, lkv_err *err);
uint64_t lkv_wal_size(const lkv_wal *w);    /* bytes, buffered included */
uint64_t lkv_wal_pending(const lkv_wal *w); /* bytes not yet written out */
/* write_out and close; frees w even on error. A write_out that failed
 * before leaves part of its bytes in the file: they are not written again
 * (replay cuts the torn tail), so a log never holds a record twice. */
int lkv_wal_close(lkv_wal *w, lkv_err *err);

/* Replay the log at path: fn is called with each valid record in order.
 * A torn or corrupt record ends the replay: *valid_end is the offset just
 * after the last good record and *dropped the bytes after it (0 when the
 * log ended cleanly); *why describes the bad record (may be NULL). fn
 * returning LKV_CORRUPTION (the payload does not decode) or LKV_NOTFOUND
 * (the record does not follow on from the one before) ends the replay the
 * same way; any other non-zero code stops it with that code. */
typedef int (*lkv_wal_fn)(void *ctx, const char *rec, size_t n, lkv_err *err);
int lkv_wal_replay(const lkv_env *env, const char *path, lkv_wal_fn fn,
                   void *ctx, uint64_t *valid_end, uint64_t *dropped, char *why,
                   size_t whylen, lkv_err *err);

#endif
