/* lunakv_funcs.h - stored Lua functions: libraries compiled into
 * sandboxes, and calls that read through a transaction backend and return
 * their writes instead of applying them (docs/functions.md).
 *
 * Two callers use this interface: the embedded db (db:call in
 * lunakv_dbfuncs.c, over an engine snapshot, committing the writes as one
 * lkv_db_write batch) and, later, the HTTP node (over its applied state,
 * committing the writes as one replication log entry). So the header is
 * plain C: no lua.h, nothing of the binding, and the runtime never writes
 * anything itself.
 *
 * Thread safety: a runtime belongs to one thread at a time, and its calls
 * run one at a time (they share the libraries' Lua states). A backend is
 * only called from inside lkvf_call, on the calling thread.
 *
 * Memory: every function that returns data gives the caller malloc'd
 * memory to release with the matching free (lkvf_result_free,
 * lkvf_library_discard); nothing is borrowed past the call unless said. */
#ifndef LUNAKV_FUNCS_H
#define LUNAKV_FUNCS_H

#include <stddef.h>
#include <stdint.h>

#include "lunakv.h"

/* The keys the node and the runtime keep for themselves (the same bytes
 * as LKVNET_RESERVED_PREFIX): scripts can neither read, write nor scan
 * them. A library is stored under LKVF_LIB_PREFIX followed by its name. */
#define LKVF_RESERVED_PREFIX "\xff\xfflunakv/"
#define LKVF_LIB_PREFIX LKVF_RESERVED_PREFIX "lib/"
/* A library's load limits, stored beside its source under this prefix and
 * its name, as lkvf_limits_format writes them: a reopen (and a restart
 * after a limit) loads it under the limits it was put with. */
#define LKVF_LIBLIMITS_PREFIX LKVF_RESERVED_PREFIX "liblimits/"

/* Library and function names: 1 to LKVF_NAME_MAX bytes of [A-Za-z0-9_.-].
 * They appear in keys, error messages and (later) URL paths. */
#define LKVF_NAME_MAX 64

/* How deeply args and results may nest (arrays and objects): cjson's
 * default decode and encode bound, kept by the runtime's own instance;
 * deeper is refused with "JSON nested too deeply". */
#define LKVF_JSON_MAX_DEPTH 1000

/* The largest integer args and results may hold, either sign: cjson
 * writes 14 significant digits, so a larger one would be rounded. It is
 * refused instead ("integer too large for JSON"). */
#define LKVF_JSON_INT_MAX 99999999999999LL

/* How many tx:scan cursors one call may hold open at once. Each holds an
 * engine iterator (a few KB of malloc'd memory outside the Lua state's
 * counted memory), so the count is bounded instead: one more raises
 * "too many open scans". A scan closes when it runs out, when its for
 * loop ends or breaks, or when the collector finds it unreachable. */
#define LKVF_MAX_OPEN_SCANS 64

/* {======================================================================
** Limits: the one place their names, defaults and ranges are written
** ======================================================================= */

/* Per call (and per library load, which runs the library's top level):
 * exceeding one ends that call with LKVF_LIMIT, nothing written. */
struct lkvf_error;

typedef struct lkvf_limits {
  uint64_t max_instructions; /* SCRIPT_MAX_INSTRUCTIONS: Lua VM
                                instructions (a count hook) */
  uint64_t max_memory;       /* SCRIPT_MAX_MEMORY: bytes of the library's
                                Lua state plus the call's pending writes */
  uint64_t max_writes;       /* SCRIPT_MAX_WRITES: tx:set and tx:delete
                                calls */
} lkvf_limits;

#define SCRIPT_MAX_INSTRUCTIONS_DEFAULT 50000000 /* ~0.1-0.5 s of Lua */

/* What a tx operation costs of SCRIPT_MAX_INSTRUCTIONS: it runs in C
 * (engine lookups, an iterator) where the count hook does not see it, and
 * costs far more than a VM instruction, so a loop of them meets the
 * budget in about the time a loop of instructions does. */
#define LKVF_COST_GET 500                     /* tx:get */
#define LKVF_COST_WRITE 100                   /* tx:set, tx:delete */
#define LKVF_COST_SCAN 5000                   /* tx:scan: opening the cursor */
#define LKVF_COST_ROW 50                      /* each row a scan steps over */
#define SCRIPT_MAX_MEMORY_DEFAULT (64u << 20) /* 64 MiB */
#define SCRIPT_MAX_WRITES_DEFAULT 10000

/* The schema of lkvf_limits, in the engine's format (lunakv.h): names
 * script_max_instructions, script_max_memory, script_max_writes, with the
 * variables SCRIPT_MAX_* for .env files. lkv_schema_defaults and
 * lkv_schema_check work on it; the node's settings can list it beside
 * lkvnet_options_schema. Static storage. */
const lkv_option_spec *lkvf_limits_schema(size_t *n);
/* Fill *l with the defaults. */
void lkvf_limits_init(lkvf_limits *l);
/* The limits a library loads under as text ("script_max_instructions=N
 * script_max_memory=N"), NUL-terminated into buf: its length. */
#define LKVF_LIMITS_TEXT_MAX 96
size_t lkvf_limits_format(const lkvf_limits *l, char buf[LKVF_LIMITS_TEXT_MAX]);
/* Parse that text into *l (names not given keep the defaults): LKVF_OK,
 * or LKVF_BADARG for an unknown name or a value out of range. */
int lkvf_limits_parse(const char *text, size_t len, lkvf_limits *l,
                      struct lkvf_error *e);

/* }====================================================================== */

/* {======================================================================
** Errors
** ======================================================================= */

enum {
  LKVF_OK = 0,
  LKVF_SCRIPT,  /* the script raised, or failed to compile, or its result
                   cannot be encoded as JSON: msg has the chunk and line */
  LKVF_UNKNOWN, /* no such function or library */
  LKVF_BADARG,  /* a bad name, args that are not JSON, a name clash */
  LKVF_LIMIT,   /* a limit was hit: limit names it */
  LKVF_BACKEND, /* the backend failed a read: backend_code is its LKV_* */
  LKVF_NOMEM    /* the process (not the script) ran out of memory */
};

#define LKVF_MSG_LEN 512

typedef struct lkvf_error {
  int code;          /* LKVF_* */
  const char *limit; /* LKVF_LIMIT: "SCRIPT_MAX_INSTRUCTIONS", ... */
  int backend_code;  /* LKVF_BACKEND: the backend's LKV_* code */
  char msg[LKVF_MSG_LEN];
} lkvf_error;

/* }====================================================================== */

/* {======================================================================
** The transaction backend: what a call reads
** ======================================================================= */

/* Every read of one call must see one consistent state (a snapshot, or
 * the node's applied state while calls run one at a time). The runtime
 * overlays the call's own writes on it and hides reserved keys. */
typedef struct lkvf_backend {
  void *arg;
  /* LKV_OK with the value in *val (the runtime owns val and frees it),
   * LKV_NOTFOUND, or another LKV_* code with err filled. */
  int (*get)(void *arg, const char *key, size_t klen, lkv_buf *val,
             lkv_err *err);
  /* A cursor over the live keys from lo up to hi inclusive, as db:scan
   * (NULL: an open end), ascending. limit (0: none) is a hint: the
   * runtime never asks for more rows than limit plus the call's own
   * writes; it passes 0 when the range reaches the reserved keys (which
   * the backend returns and the runtime skips, so no bound holds). LKV_OK
   * and *cursor, or an LKV_* code. */
  int (*scan_open)(void *arg, const char *lo, size_t lolen, const char *hi,
                   size_t hilen, uint64_t limit, void **cursor, lkv_err *err);
  /* LKV_OK with the next row (borrowed until the next scan_next or
   * scan_close of this cursor), LKV_NOTFOUND at the end, or an error. */
  int (*scan_next)(void *cursor, const char **key, size_t *klen,
                   const char **val, size_t *vlen, lkv_err *err);
  void (*scan_close)(void *cursor);
} lkvf_backend;

/* }====================================================================== */

/* {======================================================================
** The runtime and its libraries
** ======================================================================= */

typedef struct lkvf_runtime lkvf_runtime;
typedef struct lkvf_library lkvf_library; /* a compiled library */

/* A new runtime without libraries. cjson_cpath: the package.cpath the
 * sandboxes search for the cjson module (NULL: Lua's default). NULL when
 * out of memory. */
lkvf_runtime *lkvf_runtime_new(const char *cjson_cpath);
void lkvf_runtime_free(lkvf_runtime *rt);

/* LKVF_OK, or LKVF_BADARG with a sentence naming `what`. */
int lkvf_check_name(const char *what, const char *name, size_t len,
                    lkvf_error *e);

/* Compile `source` as library `name` in a new sandbox and run its top
 * level under *lim (NULL: the defaults), without installing it: *out
 * receives it, to install or discard. Fails with LKVF_BADARG for a bad
 * name, a library registering no function or a function name another
 * installed library already has (a library of the same name is about
 * to be replaced, so its names do not count); LKVF_SCRIPT for a syntax
 * or run error (with line); LKVF_LIMIT. Nothing changes on failure. */
int lkvf_library_prepare(lkvf_runtime *rt, const char *name, size_t nlen,
                         const char *source, size_t slen,
                         const lkvf_limits *lim, lkvf_library **out,
                         lkvf_error *e);
/* Install a prepared library, replacing the one of the same name; rt owns
 * it after. Cannot fail: prepare reserved its slot. REQUIRES: it is the
 * last library prepared on rt, and no other library gained one of its
 * function names since. */
void lkvf_library_install(lkvf_runtime *rt, lkvf_library *lib);
/* Install, in place of library `name`, one that failed to load (its
 * source kept as stored): it registers nothing, db:libraries-style
 * listings show `error`, and a call of an unknown function names it, so a
 * library that stops loading (a lower default limit, a cjson upgrade)
 * fails only its own functions. LKVF_OK or LKVF_NOMEM. */
int lkvf_library_install_failed(lkvf_runtime *rt, const char *name, size_t nlen,
                                const char *source, size_t slen,
                                const char *error, lkvf_error *e);
/* Free a prepared library that will not be installed. */
void lkvf_library_discard(lkvf_library *lib);
/* Drop an installed library: LKVF_OK or LKVF_UNKNOWN. */
int lkvf_library_remove(lkvf_runtime *rt, const char *name, size_t nlen,
                        lkvf_error *e);

/* A view of installed library i (0 .. count-1, sorted by name); borrowed
 * until the runtime's libraries change. */
typedef struct lkvf_library_info {
  const char *name;
  const char *source;
  size_t source_len;
  size_t memory; /* bytes its Lua state holds now */
  size_t nfuncs;
  const char *const *funcs; /* their names, in registration order */
  const int *read_only;     /* 1 for each registered read_only */
  const char *error;        /* not NULL: it failed to load, and why */
  lkvf_limits limits;       /* what it loaded (or tried to) under */
} lkvf_library_info;

size_t lkvf_library_count(const lkvf_runtime *rt);
void lkvf_library_at(const lkvf_runtime *rt, size_t i, lkvf_library_info *out);

/* Whether function `name` exists: 1 read-only, 0 read-write, -1 unknown.
 * The node runs read-only functions on followers. */
int lkvf_function_read_only(const lkvf_runtime *rt, const char *name,
                            size_t nlen);

/* }====================================================================== */

/* {======================================================================
** Calls
** ======================================================================= */

enum { LKVF_SET = 1, LKVF_DELETE = 2 };

typedef struct lkvf_write {
  int op;    /* LKVF_SET or LKVF_DELETE */
  char *key; /* both in one allocation the result owns */
  size_t klen;
  char *val; /* LKVF_SET only */
  size_t vlen;
} lkvf_write;

typedef struct lkvf_result {
  lkvf_write *writes; /* in the order the script made them: apply them in
                         this order, all or none */
  size_t nwrites;
  char *json; /* the function's first return value as JSON ("null" for
                 nil or none); NUL-terminated */
  size_t json_len;
} lkvf_result;

/* Run function `name` with args (JSON text, or NULL: nil) reading through
 * be, under *lim (NULL: the defaults). LKVF_OK fills *out (free it with
 * lkvf_result_free); on any error *out is left empty and the script's
 * writes are dropped. A call that hits SCRIPT_MAX_INSTRUCTIONS or
 * SCRIPT_MAX_MEMORY restarts its library from its source (under the
 * limits it was prepared with) afterwards, so
 * the library's memory returns to where it was after its load and no
 * half-done change to its globals survives. */
int lkvf_call(lkvf_runtime *rt, const char *name, size_t nlen, const char *args,
              size_t args_len, const lkvf_backend *be, const lkvf_limits *lim,
              lkvf_result *out, lkvf_error *e);
void lkvf_result_free(lkvf_result *r);

/* }====================================================================== */

#endif
