/* builder.h - a table file from sorted entries, ready for a version: the
 * file written and synced (sst_build.c), opened through the table cache
 * and described by a new file meta. Flushes, recovery and compactions all
 * make their tables here. */
#ifndef LKV_BUILDER_H
#define LKV_BUILDER_H

#include <stdint.h>

#include "iter.h"
#include "lunakv.h"
#include "table.h"
#include "version.h"

/* Write table `number` of fs from it, every entry from where it stands.
 * *out gets a new file meta (refs 1) or NULL when the input was empty;
 * the file is removed on failure. */
int lkv_build_table(lkv_files *fs, const lkv_table_opts *o, lkv_iiter *it,
                    uint64_t number, lkv_fmeta **out, lkv_err *err);
/* Finish builder b (frees it) writing table `number` at path, open the
 * table and make its file meta (refs 1) with the given internal-key
 * range; the file is removed on failure. */
int lkv_finish_table(lkv_files *fs, lkv_table_builder *b, const char *path,
                     uint64_t number, lkv_slice smallest, lkv_slice largest,
                     lkv_fmeta **out, lkv_err *err);

#endif
