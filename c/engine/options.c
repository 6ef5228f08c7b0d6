/* options.c - the engine's options schema (lunakv.h, "the options
 * schema"): one row per option with its default, range and documentation,
 * and the generic readers of a schema: defaults, check, store. The Lua
 * binding exports the rows as core.options_schema, which lunakv.config
 * turns into its .env checks, so a range written here is the one a user
 * meets in .env, in lunakv.open and in a C caller's lkv_db_open. */
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "err.h"
#include "lunakv.h"

/* An ENUM field is read and written as an int. */
_Static_assert(sizeof(lkv_sync_mode) == sizeof(int),
               "lkv_sync_mode is int-sized");

static const char *const sync_names[] = {"none", "batch", "always", NULL};

/* lunakv.config lists the keys in this order (its messages, the bench
 * header). The seed's variable names are kept for two Bloom options
 * (BLOOM_FILTER_SIZE, HASH_FUNCTIONS) so a seed's .env still reads. A log
 * name stays under 200 bytes: with its ".NNNNNN" suffix it must fit the
 * engine's 256-byte file name buffers. */
static const lkv_option_spec engine_schema[] = {
    {.name = "log_file_name",
     .offset = offsetof(lkv_options, log_file_name),
     .env = "LOG_FILE_NAME",
     .type = LKV_OPT_FILENAME,
     .min = 1,
     .max = 199,
     .dflt_str = "wal.log",
     .doc = "WAL base name inside the data directory (logs are NAME.000007)"},
    {.name = "max_memtable_size",
     .offset = offsetof(lkv_options, max_memtable_size),
     .env = "MAX_MEMTABLE_SIZE",
     .type = LKV_OPT_SIZE,
     .min = 1,
     .max = 1ull << 32,
     .dflt = 4u << 20,
     .doc = "bytes in the memtable before it is frozen and flushed"},
    {.name = "max_l0_files",
     .offset = offsetof(lkv_options, max_l0_files),
     .env = "MAX_L0_FILES",
     .type = LKV_OPT_INT,
     .min = 1,
     .max = 1000,
     .dflt = 4,
     .doc = "L0 tables that trigger an L0 -> L1 compaction"},
    {.name = "l0_slowdown_files",
     .offset = offsetof(lkv_options, l0_slowdown_files),
     .env = "L0_SLOWDOWN_FILES",
     .type = LKV_OPT_INT,
     .min = 1,
     .max = INT_MAX,
     .dflt = 8,
     .at_least = "max_l0_files",
     .doc = "L0 tables at which writes are delayed"},
    {.name = "l0_stop_files",
     .offset = offsetof(lkv_options, l0_stop_files),
     .env = "L0_STOP_FILES",
     .type = LKV_OPT_INT,
     .min = 1,
     .max = INT_MAX,
     .dflt = 12,
     .at_least = "l0_slowdown_files",
     .doc = "L0 tables at which writes wait"},
    {.name = "bloom_min_bits",
     .offset = offsetof(lkv_options, bloom_min_bits),
     .env = "BLOOM_FILTER_SIZE",
     .type = LKV_OPT_SIZE,
     .min = 0,
     .max = 1u << 30,
     .dflt = 0,
     .doc = "smallest Bloom filter, in bits"},
    {.name = "bloom_hash_functions",
     .offset = offsetof(lkv_options, bloom_hash_functions),
     .env = "HASH_FUNCTIONS",
     .type = LKV_OPT_INT,
     .min = 0,
     .max = 30,
     .dflt = 0,
     .doc = "Bloom hash functions (0: derived from bits per key)"},
    {.name = "bloom_bits_per_key",
     .offset = offsetof(lkv_options, bloom_bits_per_key),
     .env = "BLOOM_BITS_PER_KEY",
     .type = LKV_OPT_INT,
     .min = 1,
     .max = 64,
     .dflt = 10,
     .doc = "Bloom filter bits per key"},
    {.name = "sparse_index_n",
     .offset = offsetof(lkv_options, sparse_index_n),
     .env = "SPARSE_INDEX_N",
     .type = LKV_OPT_INT,
     .min = 1,
     .max = 1024,
     .dflt = 16,
     .doc = "a full key every Nth entry of a data block"},
    {.name = "block_size",
     .offset = offsetof(lkv_options, block_size),
     .env = "BLOCK_SIZE",
     .type = LKV_OPT_SIZE,
     .min = 256,
     .max = 4u << 20,
     .dflt = 4096,
     .doc = "target data block size in bytes"},
    {.name = "table_size",
     .offset = offsetof(lkv_options, table_size),
     .env = "TABLE_SIZE",
     .type = LKV_OPT_SIZE,
     .min = 4096,
     .max = SIZE_MAX,
     .dflt = 2u << 20,
     .doc = "target size of a compaction output table"},
    {.name = "level1_max_bytes",
     .offset = offsetof(lkv_options, level1_max_bytes),
     .env = "LEVEL1_MAX_BYTES",
     .type = LKV_OPT_U64,
     .min = 4096,
     .max = UINT64_MAX,
     .dflt = 10u << 20,
     .doc = "L1's byte budget before it spills into L2"},
    {.name = "level_multiplier",
     .offset = offsetof(lkv_options, level_multiplier),
     .env = "LEVEL_MULTIPLIER",
     .type = LKV_OPT_INT,
     .min = 2,
     .max = 100,
     .dflt = 10,
     .doc = "level n+1 holds this many times level n"},
    {.name = "block_cache_bytes",
     .offset = offsetof(lkv_options, block_cache_bytes),
     .env = "BLOCK_CACHE_BYTES",
     .type = LKV_OPT_SIZE,
     .min = 0,
     .max = SIZE_MAX,
     .dflt = 8u << 20,
     .doc = "block cache capacity in bytes (0: none)"},
    {.name = "max_open_files",
     .offset = offsetof(lkv_options, max_open_files),
     .env = "MAX_OPEN_FILES",
     .type = LKV_OPT_INT,
     .min = 16,
     .max = INT_MAX,
     .dflt = 1000,
     .doc = "tables kept open with their index and filter"},
    {.name = "mmap_reads",
     .offset = offsetof(lkv_options, mmap_reads),
     .env = "MMAP_READS",
     .type = LKV_OPT_BOOL,
     .min = 0,
     .max = 1,
     .dflt = 0,
     .doc = "read tables through mmap, not pread + the block cache"},
    {.name = "wal_buffer_size",
     .offset = offsetof(lkv_options, wal_buffer_size),
     .env = "WAL_BUFFER_SIZE",
     .type = LKV_OPT_INT,
     .min = 1,
     .max = INT_MAX,
     .dflt = 100,
     .doc = "writes per WAL write when sync is batch"},
    {.name = "sync",
     .offset = offsetof(lkv_options, sync),
     .env = "SYNC",
     .type = LKV_OPT_ENUM,
     .min = 0,
     .max = 2,
     .dflt = LKV_SYNC_BATCH,
     .choices = sync_names,
     .doc = "durability of a write: none, batch or always"},
    /* how one open behaves, not a setting: no variable */
    {.name = "read_only",
     .offset = offsetof(lkv_options, read_only),
     .type = LKV_OPT_BOOL,
     .min = 0,
     .max = 1,
     .dflt = 0,
     .doc = "open without changing anything on disk"},
};

const lkv_option_spec *lkv_options_schema(size_t *n) {
  if (n) *n = sizeof engine_schema / sizeof engine_schema[0];
  return engine_schema;
}

void lkv_options_init(lkv_options *o) {
  memset(o, 0, sizeof *o);
  lkv_schema_defaults(engine_schema,
                      sizeof engine_schema / sizeof engine_schema[0], o);
}

int lkv_options_check(const lkv_options *o, lkv_err *err) {
  return lkv_schema_check(
      engine_schema, sizeof engine_schema / sizeof engine_schema[0], o, err);
}

/* ---- any schema ------------------------------------------------------ */

static void *field_of(const lkv_option_spec *s, void *base) {
  return (char *)base + s->offset;
}

/* The largest value the field's C type holds: a range reaching it has no
 * upper end worth printing. */
static uint64_t type_max(lkv_option_type t) {
  switch (t) {
    case LKV_OPT_SIZE: return SIZE_MAX;
    case LKV_OPT_U64: return UINT64_MAX;
    default: return INT_MAX;
  }
}

/* The value of a number, BOOL or ENUM field; *neg is set when an int
 * field holds a negative value (then the result is its magnitude). */
static uint64_t value_of(const lkv_option_spec *s, const void *base, int *neg) {
  const void *p = field_of(s, (void *)base);
  *neg = 0;
  switch (s->type) {
    case LKV_OPT_SIZE: return *(const size_t *)p;
    case LKV_OPT_U64: return *(const uint64_t *)p;
    default: {
      int v = *(const int *)p;
      if (v >= 0) return (uint64_t)v;
      *neg = 1;
      return (uint64_t) - (long long)v;
    }
  }
}

void lkv_option_set(const lkv_option_spec *s, void *base, uint64_t v) {
  void *p = field_of(s, base);
  switch (s->type) {
    case LKV_OPT_INT:
    case LKV_OPT_BOOL:
    case LKV_OPT_ENUM: *(int *)p = (int)v; break;
    case LKV_OPT_SIZE: *(size_t *)p = (size_t)v; break;
    case LKV_OPT_U64: *(uint64_t *)p = v; break;
    default: break; /* strings are set through the field itself */
  }
}

void lkv_schema_defaults(const lkv_option_spec *schema, size_t n, void *base) {
  for (size_t i = 0; i < n; i++) {
    const lkv_option_spec *s = &schema[i];
    if (s->type == LKV_OPT_STRING || s->type == LKV_OPT_FILENAME)
      *(const char **)field_of(s, base) = s->dflt_str;
    else
      lkv_option_set(s, base, s->dflt);
  }
}

/* "0 (none), 1 (batch) or 2 (always)" into buf. */
static void choices_text(const lkv_option_spec *s, char *buf, size_t n) {
  size_t k = 0, i;
  buf[0] = '\0';
  for (i = 0; s->choices[i] != NULL && k < n; i++) {
    const char *sep = i == 0 ? "" : s->choices[i + 1] == NULL ? " or " : ", ";
    int w = snprintf(buf + k, n - k, "%s%zu (%s)", sep, i, s->choices[i]);
    if (w < 0) break;
    k += (size_t)w;
  }
}

static int check_one(const lkv_option_spec *s, const void *base, lkv_err *err) {
  uint64_t v;
  int neg;
  char shown[32], why[96];
  if (s->type == LKV_OPT_STRING) return LKV_OK;
  if (s->type == LKV_OPT_FILENAME) {
    const char *name = *(const char *const *)field_of(s, (void *)base);
    size_t len;
    if (name == NULL)
      return lkv_seterr(err, LKV_INVALID, "option %s is missing", s->name);
    len = strlen(name);
    if (len >= s->min && len <= s->max && strchr(name, '/') == NULL)
      return LKV_OK;
    return lkv_seterr(err, LKV_INVALID,
                      "option %s is \"%.40s\"%s; it must be a file name of "
                      "%llu to %llu bytes without '/'",
                      s->name, name, len > 40 ? "..." : "",
                      (unsigned long long)s->min, (unsigned long long)s->max);
  }
  v = value_of(s, base, &neg);
  if (!neg && v >= s->min && v <= s->max) return LKV_OK;
  snprintf(shown, sizeof shown, "%s%llu", neg ? "-" : "",
           (unsigned long long)v);
  if (s->type == LKV_OPT_BOOL)
    snprintf(why, sizeof why, "0 or 1");
  else if (s->type == LKV_OPT_ENUM)
    choices_text(s, why, sizeof why);
  else if (s->max >= type_max(s->type))
    snprintf(why, sizeof why, ">= %llu", (unsigned long long)s->min);
  else
    snprintf(why, sizeof why, "from %llu to %llu", (unsigned long long)s->min,
             (unsigned long long)s->max);
  return lkv_seterr(err, LKV_INVALID, "option %s is %s; it must be %s", s->name,
                    shown, why);
}

static const lkv_option_spec *find(const lkv_option_spec *schema, size_t n,
                                   const char *name) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(schema[i].name, name) == 0) return &schema[i];
  return NULL;
}

int lkv_schema_check(const lkv_option_spec *schema, size_t n, const void *base,
                     lkv_err *err) {
  for (size_t i = 0; i < n; i++) {
    const lkv_option_spec *s = &schema[i], *floor;
    int rc = check_one(s, base, err), neg;
    if (rc != LKV_OK) return rc;
    if (s->at_least == NULL) continue;
    /* the floor comes earlier in the schema, so it is already in range */
    floor = find(schema, n, s->at_least);
    if (floor == NULL) continue;
    uint64_t v = value_of(s, base, &neg), lo = value_of(floor, base, &neg);
    if (v < lo)
      return lkv_seterr(
          err, LKV_INVALID, "option %s is %llu; it must be >= %s (%llu)",
          s->name, (unsigned long long)v, floor->name, (unsigned long long)lo);
  }
  return LKV_OK;
}
