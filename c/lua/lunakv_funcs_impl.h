/* lunakv_funcs_impl.h - what the stored-function runtime's three files
 * share: lunakv_funcs.c (limits, libraries, calls) calls
 * lunakv_sandbox.c (a library's lua_State: what a script can reach, the
 * allocator and the hook that hold it to its limits, lunakv.register)
 * and lunakv_tx.c (the tx object a function receives, and the call's
 * writes); lunakv_sandbox.c calls lunakv_tx.c (the tx class, when a
 * sandbox is built). Never the other way. Not an interface: callers use
 * lunakv_funcs.h. */
#ifndef LUNAKV_FUNCS_IMPL_H
#define LUNAKV_FUNCS_IMPL_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lauxlib.h"
#include "lua.h"
#include "lunakv_funcs.h"

#define TX_MT "lunakv.tx"
#define CURSOR_MT "lunakv.tx_scan"
#define REG_FUNCS "lunakv.funcs"   /* registry: name -> function */
#define REG_ENCODE "lunakv.encode" /* registry: the private cjson.encode */
#define REG_DECODE "lunakv.decode" /* registry: the private cjson.decode */
#define REG_TX "lunakv.the_tx"     /* registry: the one tx userdata */

typedef struct Call Call;

struct lkvf_library {
  char *name, *source;
  size_t nlen, slen;
  lkvf_limits lim; /* what it loaded under: a restart loads under these */
  char *error;     /* a library kept though it failed to load: why (L is
                      NULL, no functions) */
  lua_State *L;
  size_t used;  /* bytes the allocator handed out and not freed */
  size_t extra; /* bytes of the running call's pending writes */
  size_t limit; /* what used + extra may reach */
  int hit;      /* the limit that stopped the current run (HIT_*) */
  struct {      /* the last growth refused, while Lua may retry it */
    void *ptr;
    size_t osize, nsize;
    int valid, hit_before;
  } refused;
  int spent;      /* the instruction budget is spent: the hook fires at
                     every instruction from then on */
  int64_t budget; /* instructions of the run not yet handed to the hook
                     (it fires every HOOK_CHUNK), less what was charged */
  int loading;    /* lunakv.register is allowed */
  Call *call;     /* the running call, or NULL */
  char **funcs;   /* registered names (malloc'd) */
  int *read_only;
  size_t nfuncs, capfuncs;
};

enum { HIT_NONE, HIT_INSTRUCTIONS, HIT_MEMORY, HIT_WRITES };

/* The count hook fires every HOOK_CHUNK instructions (fewer for the last
 * chunk of the budget), so a charge is checked against the budget as it
 * stood at the last firing: at most HOOK_CHUNK instructions early. */
#define HOOK_CHUNK 1000

struct lkvf_runtime {
  lkvf_library **libs; /* sorted by name */
  size_t n, cap;
  char *cpath;
};

typedef struct Cursor Cursor;

struct Call {
  lkvf_library *lib;
  const lkvf_backend *be;
  const lkvf_limits *lim;
  const char *fname;
  size_t fnlen;
  const char *args;
  size_t args_len;
  int read_only;
  int stage; /* where an error came from: STAGE_* */
  lkvf_write *w;
  size_t nw, capw;
  size_t *sorted; /* indexes into w: the newest write of each key, by key */
  size_t nsorted, capsorted;
  Cursor *cursors; /* open scans */
  size_t ncursors; /* how many: at most LKVF_MAX_OPEN_SCANS */
  lkv_buf getbuf;
  int brc; /* a backend read failed: its code, kept even if caught */
  lkv_err berr;
  char *json; /* the encoded result */
  size_t json_len;
};

enum { STAGE_ARGS, STAGE_RUN, STAGE_RESULT };

/* the scan state of tx:scan, a userdata of the sandbox */
struct Cursor {
  Call *call; /* NULL once closed */
  Cursor *prev, *next;
  void *bc;       /* the backend's cursor, NULL after its end */
  int have_row;   /* the backend's current row is unconsumed */
  const char *bk; /* that row, borrowed */
  const char *bv;
  size_t bklen, bvlen;
  char *last; /* the last key returned (malloc'd), NULL before the first */
  size_t lastlen;
  char *lo, *hi; /* bounds (malloc'd); NULL: open */
  size_t lolen, hilen;
  uint64_t limit, count;
};

/* Keys of the node and the runtime: scripts neither read nor write them. */
static inline int lkvf_reserved(const char *k, size_t n) {
  size_t pn = sizeof LKVF_RESERVED_PREFIX - 1;
  return n >= pn && memcmp(k, LKVF_RESERVED_PREFIX, pn) == 0;
}

static inline char *lkvf_dupbytes(const char *s, size_t n) {
  char *p = (char *)malloc(n ? n : 1);
  if (p != NULL && n) memcpy(p, s, n);
  return p;
}

/* e's code and message, no limit and no backend code; returns code. */
static inline int lkvf_seterr(lkvf_error *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline int lkvf_seterr(lkvf_error *e, int code, const char *fmt, ...) {
  va_list ap;
  e->code = code;
  e->limit = NULL;
  e->backend_code = 0;
  va_start(ap, fmt);
  vsnprintf(e->msg, sizeof e->msg, fmt, ap);
  va_end(ap);
  return code;
}

/* Charge `cost` instructions of the running budget for work a C function
 * does without running Lua instructions (moving table elements, a tx
 * operation); when the budget cannot pay, the instruction limit is hit
 * and raised here (and the hook fires at the next instruction, so a
 * pcall cannot catch its way past it). Between runs (disarmed) it
 * charges nothing. */
static inline void lkvf_charge(lua_State *L, lkvf_library *lib, uint64_t cost) {
  if (lib->budget < 0) return; /* disarmed */
  if (!lib->spent && cost <= (uint64_t)lib->budget) {
    lib->budget -= (int64_t)cost;
    return;
  }
  lib->spent = 1;
  lib->budget = 0;
  if (lib->hit == HIT_NONE) lib->hit = HIT_INSTRUCTIONS;
  lua_sethook(L, lua_gethook(L), LUA_MASKCOUNT, 1);
  luaL_error(L, "SCRIPT_MAX_INSTRUCTIONS limit reached");
}

/* lunakv_sandbox.c: the lua_Alloc of a library's state, ud the
 * lkvf_library: counts lib->used and refuses growth past lib->limit. */
void *lkvf_sandbox_alloc(void *ud, void *ptr, size_t osize, size_t nsize);
/* lunakv_sandbox.c: build the sandbox in a new state, arg 1 the cpath (a
 * string, or nil). Run under lua_pcall. */
int lkvf_sandbox_init(lua_State *L);
/* lunakv_sandbox.c: before a run, the limits of *lim and the hook. */
void lkvf_sandbox_arm(lkvf_library *lib, const lkvf_limits *lim);
/* lunakv_sandbox.c: after a run, no hook and no limit to growth. */
void lkvf_sandbox_disarm(lkvf_library *lib);

/* lunakv_tx.c: the tx and scan classes and the tx userdata, in the
 * registry of a new sandbox (under pcall: may raise). */
void lkvf_tx_register(lua_State *L);
/* lunakv_tx.c: close the call's open scans, their backend cursors too. */
void lkvf_tx_close_cursors(Call *c);
/* lunakv_tx.c: free the call's writes and their index. */
void lkvf_tx_free_writes(Call *c);

#endif
