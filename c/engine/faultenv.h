/* faultenv.h - an lkv_env for tests that fails chosen calls and simulates
 * a power loss, in the manner of LevelDB's FaultInjectionTestEnv and
 * SQLite's crash VFS (src/test6.c).
 *
 * It runs over the real file system and remembers, per file, what a
 * machine that lost power now would keep:
 *  - file data up to the size it had at its last fsync/fdatasync; bytes
 *    written after that, and in-place overwrites of synced bytes (their
 *    old contents are saved first), may be lost;
 *  - creations, renames and removals of directory entries until the
 *    directory is synced (a removed or replaced file is kept under a
 *    hidden name, ".faultenv.N", which directory listings do not show);
 *    a directory made but whose parent was not synced goes with all it
 *    holds.
 * A truncation is undone as one block: a power cut cannot mix the bytes
 * before and after a cut.
 * lkv_faultenv_power_loss() rolls the files back to such a state.
 *
 * Thread safety: every function may be called from any thread; the env's
 * calls are serialised by one mutex (it is a test tool, not a fast path).
 * Linux only (it reopens files through /proc/self/fd). */
#ifndef LKV_FAULTENV_H
#define LKV_FAULTENV_H

#include <stddef.h>
#include <stdint.h>

#include "lunakv.h"

typedef struct lkv_faultenv lkv_faultenv;

/* The kinds of call a fault can be aimed at. */
typedef enum lkv_fault_op {
  LKV_FOP_OPEN,   /* an open that does not create (O_CREAT not given) */
  LKV_FOP_CREATE, /* an open with O_CREAT */
  LKV_FOP_CLOSE,
  LKV_FOP_READ,
  LKV_FOP_WRITE, /* write and pwrite */
  LKV_FOP_SYNC,  /* fsync and fdatasync of a file */
  LKV_FOP_SIZE,
  LKV_FOP_TRUNCATE,
  LKV_FOP_STAT,
  LKV_FOP_RENAME,
  LKV_FOP_UNLINK,
  LKV_FOP_MKDIR,
  LKV_FOP_LISTDIR,
  LKV_FOP_SYNCDIR,
  LKV_FOP_LOCK,
  LKV_FOP_MMAP,
  LKV_FOP_COUNT,
  LKV_FOP_ANY = LKV_FOP_COUNT /* a rule on every kind at once */
} lkv_fault_op;

/* The kind's name ("open", "write", ...), or NULL; and back (-1). */
const char *lkv_fault_op_name(int op);
int lkv_fault_op_parse(const char *name);

/* NULL when out of memory. Free it only when nothing uses its env. */
lkv_faultenv *lkv_faultenv_new(void);
/* Deletes the hidden copies it kept; the files stay as they are. */
void lkv_faultenv_free(lkv_faultenv *f);
/* The env to put in lkv_options.env (lives as long as f). */
const lkv_env *lkv_faultenv_env(lkv_faultenv *f);

#define LKV_FAULT_STICKY 1 /* the nth matching call and every later one */
#define LKV_FAULT_SHORT 2  /* writes: half the bytes land, then the error */

/* Arm the one rule: the nth call (1 = the next) of kind op whose path
 * contains `match` (NULL: any path) fails with errno value errnum (EIO,
 * ENOSPC, ...). nth = 0 only counts the matching calls (see seen). */
void lkv_faultenv_fail(lkv_faultenv *f, int op, uint64_t nth, int errnum,
                       const char *match, int flags);
void lkv_faultenv_clear(lkv_faultenv *f);     /* disarm */
uint64_t lkv_faultenv_seen(lkv_faultenv *f);  /* calls the rule matched */
uint64_t lkv_faultenv_fired(lkv_faultenv *f); /* calls it failed */
/* The path of the first call the rule failed ("" when none, or when the
 * call had no path to tell): for a test to say which file a fault hit. */
void lkv_faultenv_fired_path(lkv_faultenv *f, char *buf, size_t n);
/* With FAULT_BT set in the environment, the stack of that call is kept:
 * this prints it to stderr (nothing when none was kept). */
void lkv_faultenv_print_stack(lkv_faultenv *f);
/* Calls of kind op so far, whatever their path. */
uint64_t lkv_faultenv_calls(lkv_faultenv *f, int op);

/* Called before each call (outside the env's lock), with the call's kind
 * and path: a test can pause a thread at a chosen point. NULL removes. */
typedef void (*lkv_faultenv_hook)(void *ctx, int op, const char *path);
void lkv_faultenv_set_hook(lkv_faultenv *f, lkv_faultenv_hook fn, void *ctx);

/* The machine stops: from now every call that would change a file fails
 * with EIO (reads still work), until lkv_faultenv_power_loss. Close what
 * uses the env after this, then call power_loss before opening again. */
void lkv_faultenv_crash(lkv_faultenv *f);

typedef enum lkv_loss_mode {
  LKV_LOSS_DROP,    /* everything not synced is gone */
  LKV_LOSS_PARTIAL, /* a random prefix of each file's unsynced bytes lands,
                       and a random prefix of the directory changes */
  LKV_LOSS_TORN,    /* PARTIAL, then garbage where the next unsynced bytes
                       were (a sector written half) */
  LKV_LOSS_RANDOM   /* one of the above per file */
} lkv_loss_mode;

/* Roll every file and directory back to what a power loss now could
 * leave (the choices drawn from seed), forget the crash and the rule, and
 * start afresh: what is on disk now counts as synced. Files are changed
 * through descriptors the env keeps, so they need not be closed; the
 * state they are left in is what a reopen must cope with. */
int lkv_faultenv_power_loss(lkv_faultenv *f, lkv_loss_mode mode, uint64_t seed,
                            lkv_err *err);

/* The kernel wrote this file back on its own: its contents so far and
 * its creation count as durable, whatever happens to other files (page
 * writeback keeps no order between files). 0, or an errno value. */
int lkv_faultenv_writeback(lkv_faultenv *f, const char *path);

/* Bytes written but not yet synced, over every file (for tests that want
 * to know a loss is possible). */
uint64_t lkv_faultenv_unsynced_bytes(lkv_faultenv *f);

#endif
