/* builder.c - tables from sorted entries (builder.h). */
#include "builder.h"

#include "err.h"
#include "tcache.h"

int lkv_finish_table(lkv_files *fs, lkv_table_builder *b, const char *path,
                     uint64_t number, lkv_slice smallest, lkv_slice largest,
                     lkv_fmeta **out, lkv_err *err) {
  uint64_t size = 0;
  lkv_table *t = NULL;
  *out = NULL;
  int rc = lkv_tb_finish(b, &size, err);
  if (rc == LKV_OK) rc = lkv_tcache_open(fs->tc, number, &t, err);
  if (rc == LKV_OK) {
    *out = lkv_fmeta_new(fs, number, size, smallest, largest);
    if (*out == NULL) {
      lkv_table_close(t);
      rc = lkv_seterr(err, LKV_NOMEM, "table %s", path);
    } else {
      lkv_fmeta_keep_table(*out, t);
    }
  }
  if (rc) lkv_tcache_remove_file(fs->tc, number);
  return rc;
}

int lkv_build_table(lkv_files *fs, const lkv_table_opts *o, lkv_iiter *it,
                    uint64_t number, lkv_fmeta **out, lkv_err *err) {
  char name[64], path[4096];
  lkv_table_builder *b = NULL;
  lkv_buf smallest = {0}, largest = {0};
  int rc;
  *out = NULL;
  lkv_table_file_name(number, name, sizeof name);
  if ((rc = lkv_tcache_path(fs->tc, number, path, sizeof path, err))) return rc;
  if ((rc = lkv_tb_new(path, o, &b, err))) return rc;
  for (; it->ops->valid(it); it->ops->next(it)) {
    lkv_slice k = it->ops->key(it);
    if (lkv_tb_entries(b) == 0 && lkv_buf_set(&smallest, k.p, k.n)) {
      rc = lkv_seterr(err, LKV_NOMEM, "building %s", name);
      break;
    }
    if ((rc = lkv_tb_add(b, k, it->ops->value(it), err))) break;
    if (lkv_buf_set(&largest, k.p, k.n)) {
      rc = lkv_seterr(err, LKV_NOMEM, "building %s", name);
      break;
    }
  }
  if (rc == LKV_OK) rc = it->ops->status(it, err);
  if (rc || lkv_tb_entries(b) == 0) {
    lkv_tb_abandon(b);
  } else {
    lkv_slice s = {smallest.data, smallest.len},
              l = {largest.data, largest.len};
    rc = lkv_finish_table(fs, b, path, number, s, l, out, err);
  }
  lkv_buf_free(&smallest);
  lkv_buf_free(&largest);
  return rc;
}
