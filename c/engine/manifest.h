/* manifest.h - the MANIFEST file: the set of live tables (level, number,
 * size, key range), the next file number, the last sequence number and
 * the oldest WAL still needed. Rewritten whole on every change: temp file,
 * fsync, rename, directory fsync (manifest_format.md). */
#ifndef LKV_MANIFEST_H
#define LKV_MANIFEST_H

#include <stddef.h>
#include <stdint.h>

#include "lunakv.h"

#define LKV_MANIFEST_NAME "MANIFEST"
#define LKV_MANIFEST_TMP "MANIFEST.tmp"

typedef struct lkv_mfile {
  int level;
  uint64_t number;
  uint64_t size;
  const char *smallest; /* internal keys; point into the encoded bytes */
  size_t smallest_len;
  const char *largest;
  size_t largest_len;
} lkv_mfile;

typedef struct lkv_manifest {
  uint64_t next_file;  /* next file number to hand out */
  uint64_t last_seq;   /* a sequence number at least as new as any table's */
  uint64_t wal_number; /* WAL files numbered below this are obsolete */
  /* The base name of the WAL files ("wal.log": logs are wal.log.NNNNNN).
   * NULL in a version 1 MANIFEST, which did not record it. */
  const char *wal_name;
  size_t wal_name_len;
  /* The sequence number log wal_number starts at: replay checks that the
   * logs go on from it without a gap. 0 in version 1 (unknown). */
  uint64_t wal_start_seq;
  size_t nfiles;
  lkv_mfile *files;
  char *raw; /* the encoded bytes the key pointers point into */
} lkv_manifest;

/* Encode m into a malloc'd buffer (*out, *outlen). */
int lkv_manifest_encode(const lkv_manifest *m, char **out, size_t *outlen,
                        lkv_err *err);
/* Write the encoded bytes atomically as dir/MANIFEST. On failure
 * *renamed (may be NULL) tells whether the new file was already renamed
 * into place (the directory sync failed): the caller cannot know which
 * MANIFEST a crash would leave, so it must keep every file either one
 * names. */
int lkv_manifest_write(const lkv_env *env, const char *dir, const char *bytes,
                       size_t n, int *renamed, lkv_err *err);
/* Read dir/MANIFEST. *exists = 0 (and LKV_OK) when there is none. Any
 * damage is LKV_CORRUPTION naming the file. Free with lkv_manifest_free. */
int lkv_manifest_read(const lkv_env *env, const char *dir, lkv_manifest *m,
                      int *exists, lkv_err *err);
/* Decode bytes (takes ownership of raw, a malloc'd buffer). */
int lkv_manifest_decode(char *raw, size_t n, const char *name, lkv_manifest *m,
                        lkv_err *err);
void lkv_manifest_free(lkv_manifest *m);

#endif
