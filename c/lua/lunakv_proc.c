/* lunakv_proc.c - the process around the Lua state: the clock, the
 * processors, the terminal and Ctrl-C (core.clock, ncpu, isatty,
 * interrupts), and the few process functions orchestration needs
 * (core.spawn, kill, pid_alive, sleep, mkdir, getcwd), so `lunakv cluster`
 * runs no shell strings. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lauxlib.h"
#include "lkvlua.h"
#include "lua.h"

/* {======================================================================
** The clock, the processors, the terminal: core.clock, core.ncpu,
** core.isatty, core.interrupts
** ======================================================================= */

static double mono_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* core.clock() -> seconds on the monotonic clock, as a float. */
static int core_clock(lua_State *L) {
  lua_pushnumber(L, (lua_Number)mono_seconds());
  return 1;
}

/* core.ncpu() -> online processors. */
static int core_ncpu(lua_State *L) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  lua_pushinteger(L, n > 0 ? (lua_Integer)n : 1);
  return 1;
}

/* core.isatty(fd) -> whether file descriptor fd (0 stdin, 1 stdout, 2
 * stderr) is a terminal: the shell prompts and edits lines only then. */
static int core_isatty(lua_State *L) {
  lua_Integer fd = luaL_checkinteger(L, 1);
  luaL_argcheck(L, fd >= 0 && fd <= INT_MAX, 1, "file descriptor expected");
  lua_pushboolean(L, isatty((int)fd) == 1);
  return 1;
}

/* core.interrupts(on) -> whether it was on. While on, Ctrl-C (SIGINT)
 * raises "interrupted!" in the running Lua code at its next step, like
 * lua.c's handler, but stays armed: a second Ctrl-C is another error, not
 * the death of the process (and of the writes a db still buffers). The
 * shell turns it on around its loop. Signals are process-wide, so this is
 * the one piece of global state in the binding; it names the Lua thread
 * that installed it, and a SIGINT delivered to any other thread (an engine
 * thread) is passed on to that one, so no Lua call ever runs elsewhere. */
static lua_State *volatile sigint_L = NULL;
static pthread_t sigint_thread;
static struct sigaction sigint_old;

static void sigint_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  luaL_error(L, "interrupted!");
}

static void sigint_handler(int sig) {
  lua_State *L = sigint_L;
  if (L == NULL) return;
  if (!pthread_equal(pthread_self(), sigint_thread)) {
    pthread_kill(sigint_thread, sig);
    return;
  }
  /* lua_sethook is the one Lua call that is safe in a signal handler */
  lua_sethook(L, sigint_hook,
              LUA_MASKCALL | LUA_MASKRET | LUA_MASKLINE | LUA_MASKCOUNT, 1);
}

static int core_interrupts(lua_State *L) {
  int on = lua_toboolean(L, 1);
  int was = sigint_L != NULL;
  if (on && !was) {
    struct sigaction sa;
    lua_State *main;
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD); /* +1 */
    main = lua_tothread(L, -1);
    lua_pop(L, 1); /* -1 */
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = sigint_handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART; /* a read at the prompt goes on */
    sigint_thread = pthread_self();
    sigint_L = main;
    if (sigaction(SIGINT, &sa, &sigint_old) != 0) {
      sigint_L = NULL;
      return luaL_error(L, "lunakv: io error: sigaction: %s", strerror(errno));
    }
  } else if (!on && was) {
    sigaction(SIGINT, &sigint_old, NULL);
    sigint_L = NULL;
  }
  lua_pushboolean(L, was);
  return 1;
}

/* }====================================================================== */

/* {======================================================================
** Processes and files for orchestration: core.spawn, kill, pid_alive,
** mkdir, getcwd, sleep
** ======================================================================= */

static const char *lowerror(int e, char *buf, size_t n) {
  snprintf(buf, n, "%s", strerror(e));
  if (buf[0] >= 'A' && buf[0] <= 'Z' && !(buf[1] >= 'A' && buf[1] <= 'Z'))
    buf[0] = (char)(buf[0] - 'A' + 'a');
  return buf;
}

/* Return nil, message, errno for a call that failed with errno e, the way
 * Lua's io library does. The message is lowerror's, after "what: " unless
 * what is NULL (what may be a string on the stack: the three values are
 * pushed above it). */
static int push_oserror(lua_State *L, int e, const char *what) {
  char eb[128];
  lua_pushnil(L);
  if (what != NULL)
    lua_pushfstring(L, "%s: %s", what, lowerror(e, eb, sizeof eb));
  else
    lua_pushstring(L, lowerror(e, eb, sizeof eb));
  lua_pushinteger(L, e);
  return 3;
}

#define SPAWN_MAX_ARGS 4096

/* Close every descriptor from lo up, but keep. close_range is one system
 * call (Linux 5.9+); older kernels get the loop. Async-signal-safe: it
 * runs between fork and exec. */
static void close_from(int lo, int keep) {
#ifdef SYS_close_range
  if (keep >= lo) {
    if ((keep == lo || syscall(SYS_close_range, lo, keep - 1, 0) == 0) &&
        syscall(SYS_close_range, keep + 1, ~0U, 0) == 0)
      return;
  } else if (syscall(SYS_close_range, lo, ~0U, 0) == 0) {
    return;
  }
#endif
  {
    long max = sysconf(_SC_OPEN_MAX);
    int fd;
    if (max < 0 || max > 65536) max = 65536;
    for (fd = lo; fd < max; fd++)
      if (fd != keep) close(fd);
  }
}

/* fd, moved to a number above 2 (close-on-exec) when it is 0, 1 or 2:
 * with this process's stdin or stdout closed, open() hands those out, and
 * the child's dup2 onto 0, 1 and 2 would clobber one descriptor with
 * another (or, dup2(1, 1), keep close-on-exec and lose its stdout).
 * A negative fd passes through; on failure -1 with errno. */
static int fd_above_stdio(int fd) {
  int nfd, e;
  if (fd < 0 || fd > 2) return fd;
  nfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  e = errno;
  close(fd);
  errno = e;
  return nfd;
}

/* core.spawn(argv, log_path [, env]) -> pid. Start argv[1] (searched in
 * PATH) with
 * arguments argv[2..] in the background: its own session (setsid, so a
 * Ctrl-C at the terminal or the end of the spawning process does not reach
 * it), stdin from /dev/null, stdout and stderr appended to log_path, no
 * other descriptor inherited, default signal dispositions and mask. An
 * exec failure is reported here ("lunakv: cannot run 'x': no such file or
 * directory"), through a close-on-exec pipe, not discovered later. The
 * child is ours to reap: core.pid_alive does it. env: { NAME = value }
 * set in the child over this process's environment (a secret passed this
 * way does not show in ps, as an argument would). */
static int core_spawn(lua_State *L) {
  const char *logpath = luaL_checkstring(L, 2);
  char **argv, **envp = NULL;
  size_t n, i;
  int logfd, nullfd, p[2], e = 0;
  ssize_t got;
  pid_t pid;
  char eb[128];
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 3); /* env (or nil) at 3: what is pushed below goes above */
  n = (size_t)luaL_len(L, 1);
  luaL_argcheck(L, n >= 1 && n <= SPAWN_MAX_ARGS, 1,
                "argv must hold the program and its arguments");
  /* a userdata, so an error below frees it with the GC */
  argv = (char **)lua_newuserdatauv(L, (n + 1) * sizeof *argv, 0); /* +1 */
  for (i = 0; i < n; i++) {
    size_t len;
    lua_geti(L, 1, (lua_Integer)i + 1); /* +1 */
    if (lua_type(L, -1) != LUA_TSTRING)
      return luaL_argerror(
          L, 1, lua_pushfstring(L, "argv[%d] must be a string", (int)i + 1));
    argv[i] = (char *)lua_tolstring(L, -1, &len);
    if (strlen(argv[i]) != len || (i == 0 && len == 0))
      return luaL_argerror(
          L, 1,
          lua_pushfstring(L,
                          "argv[%d] must be a non-empty string "
                          "without zero bytes",
                          (int)i + 1));
    lua_pop(L, 1); /* -1: the argv table keeps it */
  }
  argv[n] = NULL;
  if (!lua_isnoneornil(L, 3)) {
    extern char **environ;
    size_t ne = 0, nx = 0, k;
    int strs;
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_pushnil(L);               /* +1 */
    while (lua_next(L, 3) != 0) { /* +1 value */
      size_t kl, vl;
      const char *kk, *vv;
      if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
        return luaL_argerror(L, 3, "env must map names to strings");
      kk = lua_tolstring(L, -2, &kl);
      vv = lua_tolstring(L, -1, &vl);
      if (kl == 0 || strlen(kk) != kl || strchr(kk, '=') != NULL ||
          strlen(vv) != vl)
        return luaL_argerror(L, 3,
                             "env names must be non-empty without '=' "
                             "and no zero bytes in names or values");
      nx++;
      lua_pop(L, 1); /* -1 value */
    }
    while (environ[ne] != NULL) ne++;
    envp =
        (char **)lua_newuserdatauv(L, (ne + nx + 1) * sizeof *envp, 0); /* +1 */
    lua_createtable(L, (int)nx, 0); /* +1: keeps the NAME=value strings */
    strs = lua_gettop(L);
    n = 0;
    for (k = 0; k < ne; k++) { /* the inherited ones not overridden */
      const char *eq = strchr(environ[k], '=');
      int over = 0;
      if (eq != NULL) {
        lua_pushlstring(L, environ[k], (size_t)(eq - environ[k])); /* +1 */
        over = lua_rawget(L, 3) != LUA_TNIL;                       /* -1 +1 */
        lua_pop(L, 1);                                             /* -1 */
      }
      if (!over) envp[n++] = environ[k];
    }
    lua_pushnil(L);               /* +1 */
    while (lua_next(L, 3) != 0) { /* +1 value */
      const char *kv = lua_pushfstring(L, "%s=%s", lua_tostring(L, -2),
                                       lua_tostring(L, -1)); /* +1 */
      lua_rawseti(L, strs, (lua_Integer)n + 1); /* -1: kept alive */
      envp[n++] = (char *)kv;
      lua_pop(L, 1); /* -1 value */
    }
    envp[n] = NULL;
  }
  logfd = fd_above_stdio(
      open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
  if (logfd < 0)
    return luaL_error(L, "lunakv: io error: cannot open log file %s: %s",
                      logpath, lowerror(errno, eb, sizeof eb));
  nullfd = fd_above_stdio(open("/dev/null", O_RDONLY | O_CLOEXEC));
  p[0] = p[1] = -1;
  if (nullfd < 0 || pipe2(p, O_CLOEXEC) != 0 ||
      (p[0] = fd_above_stdio(p[0])) < 0 || (p[1] = fd_above_stdio(p[1])) < 0) {
    e = errno;
    close(logfd);
    if (nullfd >= 0) close(nullfd);
    if (p[0] >= 0) close(p[0]);
    if (p[1] >= 0) close(p[1]);
    return luaL_error(L, "lunakv: io error: spawn: %s",
                      lowerror(e, eb, sizeof eb));
  }
  pid = fork();
  if (pid == 0) {
    /* the child: async-signal-safe calls only until exec */
    struct sigaction sa;
    sigset_t all;
    int sig;
    close(p[0]);
    setsid();
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    for (sig = 1; sig < NSIG; sig++) sigaction(sig, &sa, NULL);
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    if (dup2(nullfd, 0) < 0 || dup2(logfd, 1) < 0 || dup2(logfd, 2) < 0) {
      e = errno;
    } else {
      close_from(3, p[1]);
      if (envp != NULL)
        execvpe(argv[0], argv, envp);
      else
        execvp(argv[0], argv);
      e = errno;
    }
    while (write(p[1], &e, sizeof e) < 0 && errno == EINTR) {
    }
    _exit(127);
  }
  e = errno;
  close(p[1]);
  close(logfd);
  close(nullfd);
  if (pid < 0) {
    close(p[0]);
    return luaL_error(L, "lunakv: io error: fork: %s",
                      lowerror(e, eb, sizeof eb));
  }
  /* the pipe closes at a successful exec (EOF) or carries the errno */
  do {
    got = read(p[0], &e, sizeof e);
  } while (got < 0 && errno == EINTR);
  close(p[0]);
  if (got == (ssize_t)sizeof e) {
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
    return luaL_error(L, "lunakv: cannot run '%s': %s", argv[0],
                      lowerror(e, eb, sizeof eb));
  }
  lua_pushinteger(L, (lua_Integer)pid);
  return 1;
}

static const struct {
  const char *name;
  int sig;
} signames[] = {
    {"TERM", SIGTERM}, {"KILL", SIGKILL}, {"INT", SIGINT},
    {"HUP", SIGHUP},   {"QUIT", SIGQUIT}, {"STOP", SIGSTOP},
    {"CONT", SIGCONT}, {"USR1", SIGUSR1}, {"USR2", SIGUSR2},
};

static pid_t checkpid(lua_State *L, int arg) {
  lua_Integer pid = luaL_checkinteger(L, arg);
  /* 0 and negative numbers name process groups to kill(2): refused, a
   * slip there would signal far more than one process */
  luaL_argcheck(L, pid > 0 && pid <= INT_MAX, arg,
                "process id must be a positive integer");
  return (pid_t)pid;
}

/* core.kill(pid, sig) -> true, or nil, message, errno. sig: a name
 * ("TERM", "SIGKILL", any case) or a number (0 checks existence). */
static int core_kill(lua_State *L) {
  pid_t pid = checkpid(L, 1);
  int sig = -1;
  if (lua_type(L, 2) == LUA_TNUMBER) {
    lua_Integer n = luaL_checkinteger(L, 2);
    luaL_argcheck(L, n >= 0 && n < NSIG, 2, "signal number out of range");
    sig = (int)n;
  } else {
    const char *s = luaL_checkstring(L, 2);
    size_t i;
    if (strncasecmp(s, "SIG", 3) == 0) s += 3;
    for (i = 0; i < sizeof signames / sizeof signames[0]; i++)
      if (strcasecmp(s, signames[i].name) == 0) sig = signames[i].sig;
    if (sig < 0)
      return luaL_argerror(
          L, 2,
          lua_pushfstring(L,
                          "unknown signal '%s' (TERM, KILL, INT, "
                          "HUP, QUIT, STOP, CONT, USR1, USR2 or a "
                          "number)",
                          lua_tostring(L, 2)));
  }
  if (kill(pid, sig) != 0) return push_oserror(L, errno, NULL);
  lua_pushboolean(L, 1);
  return 1;
}

/* core.pid_alive(pid) -> whether the process runs. A zombie (exited, not
 * yet reaped) is not alive; a child of ours is reaped here (waitpid
 * WNOHANG), which also keeps zombies from piling up while we poll. */
static int core_pid_alive(lua_State *L) {
  pid_t pid = checkpid(L, 1);
  int st, alive;
  pid_t r;
  do {
    r = waitpid(pid, &st, WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == pid) {
    alive = 0; /* it had exited; reaped now */
  } else if (r == 0) {
    alive = 1; /* our child, running */
  } else if (kill(pid, 0) != 0 && errno != EPERM) {
    alive = 0;
  } else {
    /* someone else's process (its parent reaps it): read its state */
    char path[64], buf[512];
    ssize_t got;
    int fd;
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    alive = 1;
    if (fd >= 0) {
      got = read(fd, buf, sizeof buf - 1);
      close(fd);
      if (got > 0) {
        char *rp;
        buf[got] = '\0';
        rp = strrchr(buf, ')'); /* the name may hold anything but ends so */
        if (rp != NULL && rp[1] == ' ' && (rp[2] == 'Z' || rp[2] == 'X'))
          alive = 0;
      }
    }
  }
  lua_pushboolean(L, alive);
  return 1;
}

/* core.mkdir(path) -> true, or nil, message, errno. One level, mode 0755;
 * an existing directory is a success (orchestration re-runs). */
static int core_mkdir(lua_State *L) {
  size_t n;
  const char *path = luaL_checklstring(L, 1, &n);
  struct stat st;
  luaL_argcheck(L, n > 0 && strlen(path) == n, 1,
                "path must be non-empty, without zero bytes");
  if (mkdir(path, 0755) != 0 &&
      !(errno == EEXIST && stat(path, &st) == 0 && S_ISDIR(st.st_mode))) {
    int e = errno;
    return push_oserror(L, e,
                        lua_pushfstring(L, "cannot create directory %s", path));
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* core.getcwd() -> the absolute path of the working directory (the
 * kernel's, not $PWD, which a parent may have left stale), or nil,
 * message, errno. */
static int core_getcwd(lua_State *L) {
  char buf[PATH_MAX];
  if (getcwd(buf, sizeof buf) == NULL)
    return push_oserror(L, errno, "cannot read the working directory");
  lua_pushstring(L, buf);
  return 1;
}

/* core.sleep(seconds): Lua has no sleep of its own; polling loops with a
 * deadline (cluster up, the specs) use this rather than os.execute. */
static int core_sleep(lua_State *L) {
  lua_Number secs = luaL_checknumber(L, 1);
  struct timespec ts;
  luaL_argcheck(L, secs >= 0 && secs <= 86400, 1, "seconds must be 0 .. 86400");
  ts.tv_sec = (time_t)secs;
  ts.tv_nsec = (long)((secs - (lua_Number)ts.tv_sec) * 1e9);
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
  return 0;
}

/* }====================================================================== */

static const luaL_Reg proc_funcs[] = {
    {"clock", core_clock},
    {"ncpu", core_ncpu},
    {"isatty", core_isatty},
    {"interrupts", core_interrupts},
    {"spawn", core_spawn},
    {"kill", core_kill},
    {"pid_alive", core_pid_alive},
    {"sleep", core_sleep},
    {"mkdir", core_mkdir},
    {"getcwd", core_getcwd},
    {NULL, NULL},
};

void lkvlua_proc_register(lua_State *L) { luaL_setfuncs(L, proc_funcs, 0); }
