/* fuzz_util.h - shared by the fuzz targets: the input as a file in a
 * private temporary directory (the readers under test take paths). */
#ifndef LKV_FUZZ_UTIL_H
#define LKV_FUZZ_UTIL_H

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char fuzz_dir[64];

/* Write data to fuzz_dir/name and return the path (static storage). */
static const char *fuzz_file(const char *name, const uint8_t *data, size_t n) {
  static char path[256];
  if (fuzz_dir[0] == '\0') {
    snprintf(fuzz_dir, sizeof fuzz_dir, "/tmp/lkv_fuzz_XXXXXX");
    if (mkdtemp(fuzz_dir) == NULL) abort();
  }
  snprintf(path, sizeof path, "%s/%s", fuzz_dir, name);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) abort();
  if (n && write(fd, data, n) != (ssize_t)n) abort();
  close(fd);
  return path;
}

#endif
