/* server.c - the HTTP node's life (lkvnet.h): options, open (the engine,
 * the replication log, the listening socket, the cluster), the loop's
 * events (the syncer's reports, the 50 ms tick, the signals that begin a
 * drain), and close. A request's way in is routes.c; the commit path is
 * apply.c with repl.c (the leader) and follow.c (a follower); node.h
 * holds the state they share and lists who calls whom. Everything here
 * runs on the event loop's thread; the only other threads are the
 * replication log's syncer, which reports through a pipe, and a log
 * compaction's (rlog.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/http.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "err.h"
#include "lkvnet.h"
#include "node.h"
#include "rlog.h"

/* {======================================================================
** The loop's events: the syncer's reports, the tick, the signals
** ======================================================================= */

/* The syncer made more of the log durable (or failed). */
static void on_notify(evutil_socket_t fd, short what, void *arg) {
  lkvnet_server *s = arg;
  char drain[64];
  lkv_err err;
  (void)what;
  while (read(fd, drain, sizeof drain) > 0) {
  }
  lkvnet_node_compaction_poll(s);
  if (lkvnet_rlog_error(s->rlog, &err) != LKV_OK && !s->log_failed) {
    /* sticky: nothing more becomes durable here, so this node could
     * never commit again; leading on, heartbeating, it would keep the
     * others from electing one that can. It goes quiet (log_recover
     * keeps it so until a restart) and the others elect a leader. Its
     * writes past the durable index are answered 500 (they may still
     * be committed: the followers hold them), the rest 503, both
     * "outcome unknown". */
    lkvnet_pending *p;
    uint64_t durable = lkvnet_rlog_durable_index(s->rlog);
    for (p = s->head; p != NULL; p = p->next)
      if (p->index > durable)
        lkvnet_node_held_error(&p->h, 500,
                               "the replication log failed: %s; index %llu "
                               "is not durable in this node's log (outcome "
                               "unknown: the followers may still commit it)",
                               err.msg, (unsigned long long)p->index);
    lkvnet_node_log(s, "the replication log failed: %s; quiet until restarted",
                    err.msg);
    lkvnet_node_log_failed(s);
  }
  lkvnet_node_raft_durable(s);
  lkvnet_node_raft_run(s);
}

/* The driver's wake-up (lkvnet_node_wake): a Ready may be waiting. */
static void on_ready(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  lkvnet_node_raft_run(arg);
}

/* One Raft tick (every heartbeat_ms). */
static void on_raft_tick(evutil_socket_t fd, short what, void *arg) {
  lkvnet_server *s = arg;
  (void)fd;
  (void)what;
  /* a node a leader does not count as a member takes no part: it never
   * times out into an election (it still answers a leader, which clears
   * that); nor does a node whose join is unfinished (members.c) */
  if (!s->log_failed && !s->not_member && !s->join_unfinished)
    lkvnet_raft_tick(s->raft);
  if (s->hinted && !s->log_failed) {
    /* LEADER_URL's node on a fresh cluster (term 0: no election has
     * ever been won or even begun): campaign at every tick until the
     * others are up to grant it, rather than wait a whole election
     * timeout after a first try that found them still starting. Only
     * pre-votes go out (no term moves) until it can win. */
    lkvnet_raft_status st;
    lkvnet_raft_status_get(s->raft, &st);
    if (st.term == 0 && st.leader == LKVNET_RAFT_NONE && !s->needs_snapshot)
      lkvnet_raft_campaign(s->raft);
    else
      s->hinted = 0;
  }
  lkvnet_node_raft_run(s);
}

/* A drain ends once every request held is answered and every answer is
 * written out (the loop writes them: stopping it first would drop them
 * unsent), or DRAIN_FLUSH_S after the last answer for a client that does
 * not read its own. */
#define DRAIN_FLUSH_S 5.0

static void drain_step(lkvnet_server *s) {
  double t;
  if (!s->draining || s->waiting > 0) return;
  /* a leader hands over before it goes, so the others need not wait an
   * election timeout (it gives up at the transfer's deadline) */
  if (s->transfer_to != LKVNET_RAFT_NONE && s->leader) return;
  t = lkvnet_node_now();
  if (s->drained_at == 0) s->drained_at = t;
  if (lkvnet_node_conns_answering(s) == 0 || t - s->drained_at >= DRAIN_FLUSH_S)
    event_base_loopexit(s->base, NULL);
}

/* Every 50 ms: answer what missed its deadline; finish a drain. */
static void on_tick(evutil_socket_t fd, short what, void *arg) {
  lkvnet_server *s = arg;
  double t = lkvnet_node_now();
  lkvnet_pending *p;
  lkvnet_waiter *w;
  (void)fd;
  (void)what;
  for (p = s->head; p != NULL && s->waiting > 0; p = p->next) {
    if (p->h.req == NULL || t < p->h.deadline) continue;
    if (s->leader && p->term == s->term && p->index <= s->commit_index)
      /* the leader of the write's term holds the write at its index, and
       * committed is written (a majority holds it, no later leader can
       * cut it); only the engine has not taken it yet (apply.c) */
      lkvnet_node_held_error(
          &p->h, 503,
          "written, not yet applied: index %llu is committed but the engine "
          "has not applied it within %d ms (it is flushing or compacting); "
          "it becomes visible once applied: do not retry",
          (unsigned long long)p->index, s->write_timeout_ms);
    else
      lkvnet_node_held_error(
          &p->h, 503,
          "outcome unknown: index %llu was not committed within %d ms (no "
          "majority, or a new leader); it may still be written later",
          (unsigned long long)p->index, s->write_timeout_ms);
  }
  for (w = s->waiters; w != NULL; w = w->next) {
    if (w->h.req == NULL || t < w->h.deadline) continue;
    if (w->h.route == LKVNET_ROUTE_CALL)
      /* a waiting call has not run, or wrote nothing: nothing of it is
       * in the log */
      lkvnet_node_held_error(&w->h, 503,
                             "the call was not answered within %d ms (the "
                             "log was not applied, or no leadership was "
                             "confirmed); nothing was written; retry",
                             s->write_timeout_ms);
    else
      lkvnet_node_held_error(&w->h, 503,
                             "consistent read: not confirmed and applied "
                             "within %d ms",
                             s->write_timeout_ms);
  }
  lkvnet_node_serve_waiters(s);   /* frees the answered */
  lkvnet_node_compaction_poll(s); /* what a truncate or an install finished */
  lkvnet_node_transfer_poll(s);
  lkvnet_node_parked_poll(s);
  lkvnet_node_forward_poll(s);
  lkvnet_node_members_poll(s);
  drain_step(s);
}

static void on_signal(evutil_socket_t sig, short what, void *arg) {
  lkvnet_server *s = arg;
  (void)what;
  if (s->draining) return;
  s->draining = 1;
  lkvnet_node_log(s, "received %s: stopping (%zu request(s) in flight)",
                  sig == SIGTERM ? "SIGTERM" : "SIGINT", s->waiting);
  lkvnet_node_conns_stop_accepting(s);
  if (s->leader && s->transfer_to == LKVNET_RAFT_NONE &&
      lkvnet_node_transfer_begin(s, NULL, 0, NULL, 0) == 0)
    lkvnet_node_log(s, "handing the leadership over before stopping");
  drain_step(s);
}

/* }====================================================================== */

/* {======================================================================
** Open, run, close
** ======================================================================= */

void lkvnet_options_init(lkvnet_options *o) {
  size_t n;
  const lkv_option_spec *schema = lkvnet_options_schema(&n);
  memset(o, 0, sizeof *o);
  lkv_schema_defaults(schema, n, o);
  lkv_options_init(&o->engine);
}

/* Every setting within its range (lkvnet_options_schema), checked before
 * anything is opened: a value the node cannot run with is the caller's
 * mistake, named, never a crash or a silent default. */
static int check_options(const lkvnet_options *o, lkv_err *err) {
  size_t n;
  const lkv_option_spec *schema = lkvnet_options_schema(&n);
  if (o->data_dir == NULL || o->data_dir[0] == '\0')
    return lkv_seterr(err, LKV_INVALID, "option data_dir is missing");
  if (o->host == NULL)
    return lkv_seterr(err, LKV_INVALID, "option host is missing");
  return lkv_schema_check(schema, n, o, err);
}

/* Start-up: the core reads the log through its storage callbacks
 * (raftstore.c) and releases what is committed past the applied index;
 * nothing is kept from the replay. */
static int replay_entry(void *ctx, const lkvnet_entry *e, lkv_err *err) {
  (void)ctx;
  (void)e;
  (void)err;
  return LKV_OK;
}

static char *dupstr(const char *p) { return p ? strdup(p) : NULL; }

/* DATA_DIR through the env: made when missing, and then its parent
 * synced, so the new directory (and the log inside it) survives a crash. */
static int make_data_dir(const lkv_env *env, const char *dir, lkv_err *err) {
  char parent[4096];
  const char *slash;
  lkv_env_info st;
  int e = env->mkdir(env, dir);
  if (e == EEXIST) {
    if ((e = env->stat(env, dir, &st)) != 0)
      return lkv_seterr(err, LKV_IOERROR, "stat %s: %s", dir, strerror(e));
    if (!st.is_dir)
      return lkv_seterr(err, LKV_INVALID,
                        "%s exists and is not a "
                        "directory",
                        dir);
    return LKV_OK;
  }
  if (e != 0)
    return lkv_seterr(err, LKV_IOERROR, "mkdir %s: %s", dir, strerror(e));
  slash = strrchr(dir, '/');
  while (slash != NULL && slash > dir && slash[1] == '\0') /* "a/b/" */
    slash = memrchr(dir, '/', (size_t)(slash - dir));
  if (slash == NULL)
    snprintf(parent, sizeof parent, ".");
  else if (slash == dir)
    snprintf(parent, sizeof parent, "/");
  else
    snprintf(parent, sizeof parent, "%.*s", (int)(slash - dir), dir);
  if ((e = env->sync_dir(env, parent)) != 0)
    return lkv_seterr(err, LKV_IOERROR, "fsync directory %s: %s", parent,
                      strerror(e));
  return LKV_OK;
}

/* The node's loop. evhttp (the node's outgoing connections) turns a
 * connection's read and write interest
 * off and on around every request: about four epoll_ctl calls per
 * request on the plain epoll backend. With the changelist, the changes
 * made in one pass of the loop reach the kernel once, at its end, and a
 * change undone in the same pass not at all. (libevent warns that the
 * changelist misbehaves with dup()ed descriptors: the node makes none.) */
static struct event_base *base_new(void) {
  struct event_config *cfg = event_config_new();
  struct event_base *b;
  if (cfg == NULL) return NULL;
  event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
  b = event_base_new_with_config(cfg);
  event_config_free(cfg);
  return b;
}

int lkvnet_server_open(const lkvnet_options *o, lkvnet_server **out,
                       lkv_err *err) {
  lkvnet_server *s;
  lkv_options eo = o->engine;
  char dbdir[4096];
  lkv_err e;
  int rc = LKV_OK;
  size_t i;
  uint64_t replayed_from;
  lkvnet_rlog_stats rs;
  *out = NULL;
  e.code = LKV_OK;
  e.msg[0] = '\0';
  if ((rc = check_options(o, err)) != LKV_OK) return rc;
  if ((s = calloc(1, sizeof *s)) == NULL)
    return lkv_seterr(err, LKV_NOMEM, "server");
  s->pipefd[0] = s->pipefd[1] = -1;
  s->env = o->engine.env != NULL ? o->engine.env : lkv_env_posix();
  s->max_body = o->max_body_bytes;
  s->write_timeout_ms = o->write_timeout_ms;
  s->log = o->log;
  s->log_ctx = o->log_ctx;
  if (o->functions != NULL) {
    s->fns = *o->functions;
    s->has_fns = 1;
  }
  s->heartbeat_ms = o->heartbeat_ms;
  s->election_ms = o->election_timeout_ms;
  s->compaction_threshold = o->log_compaction_threshold;
  s->max_uncommitted = o->max_uncommitted_bytes;
  s->read_timeout_ms = o->read_timeout_ms;
  s->idle_timeout_ms = o->idle_timeout_ms;
  s->max_conns = (size_t)o->max_connections;
  if (o->token != NULL && o->token[0] != '\0' &&
      (s->token = strdup(o->token)) == NULL) {
    rc = lkv_seterr(&e, LKV_NOMEM, "server");
    goto fail;
  }
  {
    /* the test hook of compaction_prepare, read once (spec/24) */
    const char *gate = getenv("LUNAKV_TEST_COMPACTION_GATE");
    const char *delay = getenv("LUNAKV_TEST_INSTALL_DELAY_MS");
    /* spec/35: the apply bound reached in a few hundred writes */
    const char *lag = getenv("LUNAKV_TEST_MAX_APPLY_LAG");
    if (delay != NULL) s->test_install_delay_ms = atoi(delay);
    s->max_apply_lag = LKVNET_MAX_APPLY_LAG;
    if (lag != NULL && atoi(lag) > 0) s->max_apply_lag = (uint64_t)atoi(lag);
    if (gate != NULL && gate[0] != '\0' &&
        (s->test_gate = strdup(gate)) == NULL) {
      rc = lkv_seterr(&e, LKV_NOMEM, "server");
      goto fail;
    }
  }
  s->data_dir = dupstr(o->data_dir);
  s->host = dupstr(o->host);
  s->nnodes = o->nodes ? o->nnodes : 0;
  if (s->nnodes > LKVNET_MAX_NODES) {
    rc = lkv_seterr(&e, LKV_INVALID, "%zu nodes; a cluster has at most %d",
                    s->nnodes, LKVNET_MAX_NODES);
    s->nnodes = 0;
    goto fail;
  }
  s->nodes = calloc(s->nnodes ? s->nnodes : 1, sizeof *s->nodes);
  if (s->data_dir == NULL || s->host == NULL || s->nodes == NULL) {
    rc = lkv_seterr(&e, LKV_NOMEM, "server");
    goto fail;
  }
  for (i = 0; i < s->nnodes; i++)
    if ((s->nodes[i] = dupstr(o->nodes[i])) == NULL) {
      rc = lkv_seterr(&e, LKV_NOMEM, "server");
      goto fail;
    }

  /* the engine; its WAL need not sync: the log is the durable record */
  if ((rc = make_data_dir(s->env, s->data_dir, &e)) != LKV_OK) goto fail;
  if ((size_t)snprintf(dbdir, sizeof dbdir, "%s/db", s->data_dir) >=
      sizeof dbdir) {
    rc = lkv_seterr(&e, LKV_INVALID, "data directory path is too long");
    goto fail;
  }
  eo.sync = LKV_SYNC_NONE;
  if (eo.env == NULL) { /* the test hook of gateenv.c, read once */
    const char *gate = getenv("LUNAKV_TEST_ENGINE_GATE");
    if (gate != NULL) eo.env = lkvnet_gate_env(gate);
  }
  if ((rc = lkv_db_open(dbdir, &eo, &s->db, &e)) != LKV_OK) goto fail;
  if ((s->batch = lkv_batch_new()) == NULL) {
    rc = lkv_seterr(&e, LKV_NOMEM, "batch");
    goto fail;
  }
  rc = lkv_db_get(s->db, LKVNET_APPLIED_KEY, sizeof LKVNET_APPLIED_KEY - 1,
                  LKV_SEQ_LATEST, &s->getbuf, &e);
  if (rc == LKV_OK && s->getbuf.len == 8) {
    for (i = 0; i < 8; i++)
      s->applied_index |= (uint64_t)(unsigned char)s->getbuf.data[i] << (8 * i);
  } else if (rc != LKV_NOTFOUND) {
    if (rc == LKV_OK)
      rc = lkv_seterr(&e, LKV_CORRUPTION,
                      "%s: the applied index is "
                      "%zu bytes, not 8",
                      dbdir, s->getbuf.len);
    goto fail;
  }
  rc = lkv_db_get(s->db, LKVNET_INSTALL_KEY, sizeof LKVNET_INSTALL_KEY - 1,
                  LKV_SEQ_LATEST, &s->getbuf, &e);
  if (rc == LKV_OK) {
    s->needs_snapshot = 1; /* an install broke off: the engine is partial */
    s->applied_index = 0;
  } else if (rc != LKV_NOTFOUND) {
    goto fail;
  }
  rc = LKV_OK;
  s->commit_index = s->applied_index;
  replayed_from = s->applied_index;

  /* the log, and the pipe its syncer reports through */
  if (pipe2(s->pipefd, O_NONBLOCK | O_CLOEXEC) != 0) {
    rc = lkv_seterr(&e, LKV_IOERROR, "pipe: %s", strerror(errno));
    goto fail;
  }
  if ((rc = lkvnet_rlog_open(s->data_dir, s->env, s->pipefd[1], replay_entry, s,
                             &s->rlog, &e)) != LKV_OK)
    goto fail;
  lkvnet_rlog_stats_get(s->rlog, &rs);
  if (rs.last_index < s->applied_index) {
    rc = lkv_seterr(&e, LKV_CORRUPTION,
                    "%s/%s ends at index %llu but "
                    "the engine has applied up to %llu",
                    s->data_dir, LKVNET_RLOG_FILE,
                    (unsigned long long)rs.last_index,
                    (unsigned long long)s->applied_index);
    goto fail;
  }

  /* the loop and the listening socket */
  if ((s->base = base_new()) == NULL) {
    rc = lkv_seterr(&e, LKV_NOMEM, "event loop");
    goto fail;
  }
  s->dispatch = lkvnet_node_dispatch;
  if ((rc = lkvnet_node_conns_open(s, s->host, o->port, &e)) != LKV_OK)
    goto fail;
  if (o->my_url != NULL) {
    s->my_url = dupstr(o->my_url);
  } else {
    char u[512];
    snprintf(u, sizeof u,
             strchr(s->host, ':') ? "http://[%s]:%d" : "http://%s:%d", s->host,
             s->port);
    s->my_url = dupstr(u);
  }
  s->hint_url = dupstr(o->leader_url ? o->leader_url : s->my_url);
  if (s->my_url == NULL || s->hint_url == NULL) {
    rc = lkv_seterr(&e, LKV_NOMEM, "server");
    goto fail;
  }
  if (s->nnodes == 0) {
    free(s->nodes);
    if ((s->nodes = calloc(1, sizeof *s->nodes)) == NULL ||
        (s->nodes[0] = dupstr(s->my_url)) == NULL) {
      rc = lkv_seterr(&e, LKV_NOMEM, "server");
      goto fail;
    }
    s->nnodes = 1;
  }
  {
    /* the voters are NODE_URLS and this node's own URL */
    int listed = 0;
    for (i = 0; i < s->nnodes; i++)
      listed |= lkvnet_node_id_of(s->nodes[i]) == lkvnet_node_id_of(s->my_url);
    if (!listed) {
      char **n = realloc(s->nodes, (s->nnodes + 1) * sizeof *n);
      if (n == NULL || (n[s->nnodes] = dupstr(s->my_url)) == NULL) {
        if (n != NULL) s->nodes = n;
        rc = lkv_seterr(&e, LKV_NOMEM, "server");
        goto fail;
      }
      s->nodes = n;
      s->nnodes++;
    }
  }
  s->election_ms = s->election_ms < 2 * s->heartbeat_ms ? 2 * s->heartbeat_ms
                                                        : s->election_ms;
  s->notify_ev =
      event_new(s->base, s->pipefd[0], EV_READ | EV_PERSIST, on_notify, s);
  s->tick_ev = event_new(s->base, -1, EV_PERSIST, on_tick, s);
  s->raft_tick_ev = event_new(s->base, -1, EV_PERSIST, on_raft_tick, s);
  s->ready_ev = event_new(s->base, -1, 0, on_ready, s);
  if (s->notify_ev == NULL || s->tick_ev == NULL || s->raft_tick_ev == NULL ||
      s->ready_ev == NULL) {
    rc = lkv_seterr(&e, LKV_NOMEM, "events");
    goto fail;
  }
  s->joining = o->join_url != NULL;
  if (s->joining && (rc = lkvnet_node_join_open(s, o->join_url, &e)) != LKV_OK)
    goto fail;
  if ((rc = lkvnet_node_raft_open(s, &e)) != LKV_OK) goto fail;
  s->hinted = !s->joining && strcmp(s->hint_url, s->my_url) == 0;
  /* what the log holds past the engine and is known committed (a node
   * alone: all of it, once durable) applies as the core releases it */
  lkvnet_node_raft_durable(s);
  lkvnet_node_raft_run(s);
  if (s->needs_snapshot)
    lkvnet_node_log(s,
                    "the engine holds an unfinished snapshot install: "
                    "waiting for the leader to send a new one");
  if (s->apply_err.code != LKV_OK) {
    e = s->apply_err;
    rc = e.code;
    goto fail;
  }
  if (rs.dropped_bytes)
    lkvnet_node_log(s, "replication log: cut %llu byte(s) at open (%s)",
                    (unsigned long long)rs.dropped_bytes, rs.dropped_why);
  lkvnet_node_log(
      s,
      "replication log: %llu entries (last index %llu); term %llu; "
      "applied %llu -> %llu",
      (unsigned long long)(rs.last_index - rs.base_index),
      (unsigned long long)rs.last_index, (unsigned long long)s->term,
      (unsigned long long)replayed_from, (unsigned long long)s->applied_index);
  *out = s;
  return LKV_OK;
fail:
  if (err != NULL) *err = e;
  lkvnet_server_close(s, NULL);
  return rc;
}

int lkvnet_server_port(const lkvnet_server *s) { return s->port; }

const char *lkvnet_server_url(const lkvnet_server *s) { return s->my_url; }

int lkvnet_server_run(lkvnet_server *s, lkv_err *err) {
  struct timeval tick = {0, 50 * 1000}, rtick;
  struct sigaction ign, old_pipe;
  int rc = LKV_OK;
  memset(&ign, 0, sizeof ign);
  ign.sa_handler = SIG_IGN;
  sigaction(SIGPIPE, &ign, &old_pipe);
  rtick.tv_sec = s->heartbeat_ms / 1000;
  rtick.tv_usec = (s->heartbeat_ms % 1000) * 1000;
  s->sigterm_ev = evsignal_new(s->base, SIGTERM, on_signal, s);
  s->sigint_ev = evsignal_new(s->base, SIGINT, on_signal, s);
  if (s->sigterm_ev == NULL || s->sigint_ev == NULL ||
      event_add(s->sigterm_ev, NULL) != 0 ||
      event_add(s->sigint_ev, NULL) != 0 ||
      event_add(s->notify_ev, NULL) != 0 || event_add(s->tick_ev, &tick) != 0 ||
      event_add(s->raft_tick_ev, &rtick) != 0 ||
      lkvnet_node_conns_start(s) != 0) {
    rc = lkv_seterr(err, LKV_IOERROR, "cannot register the loop's events");
  } else {
    lkvnet_node_log(s,
                    "listening on %s:%d as %s (%zu node(s); term %llu; "
                    "heartbeat %d ms, election timeout %d ms%s)",
                    s->host, s->port, s->my_url, s->nnodes,
                    (unsigned long long)s->term, s->heartbeat_ms,
                    s->election_ms, s->hinted ? "; the hinted leader" : "");
    if (event_base_dispatch(s->base) < 0)
      rc = lkv_seterr(err, LKV_IOERROR, "the event loop failed");
    else if (s->join_err.code != LKV_OK) {
      rc = s->join_err.code;
      if (err) *err = s->join_err;
    }
  }
  /* the signal events restore the previous handlers when freed */
  if (s->sigterm_ev) event_free(s->sigterm_ev);
  if (s->sigint_ev) event_free(s->sigint_ev);
  s->sigterm_ev = s->sigint_ev = NULL;
  sigaction(SIGPIPE, &old_pipe, NULL);
  return rc;
}

int lkvnet_server_close(lkvnet_server *s, lkv_err *err) {
  int rc = LKV_OK;
  lkv_err e;
  size_t i;
  lkvnet_pending *p;
  lkvnet_waiter *w;
  if (s == NULL) return LKV_OK;
  /* answer anything still waiting (a loop that failed, not a drain) */
  for (p = s->head; p != NULL; p = p->next)
    lkvnet_node_held_error(&p->h, 503, "the node is shutting down");
  lkvnet_node_held_error(&s->conf_h, 503, "the node is shutting down");
  while ((w = s->waiters) != NULL) {
    lkvnet_node_held_error(&w->h, 503, "the node is shutting down");
    s->waiters = w->next;
    free(w->key);
    free(w);
  }
  lkvnet_node_parked_free(s);
  lkvnet_node_forward_free(s);
  if (s->raft) lkvnet_raft_free(s->raft);
  s->raft = NULL;
  lkvnet_hardstate_close(s->hs);
  s->hs = NULL;
  free(s->node_ids);
  free(s->scratch);
  for (i = 0; i < s->npeers; i++) {
    lkvnet_peer *pe = &s->peers[i];
    if (pe->conn) evhttp_connection_free(pe->conn);
    if (pe->snap_conn) evhttp_connection_free(pe->snap_conn);
    if (pe->snap) lkv_iter_free(pe->snap);
    lkvnet_node_outbox_free(pe);
    free(pe->url);
    free(pe->hostport);
  }
  free(s->peers);
  for (i = 0; i < s->nfwd; i++)
    if (s->fwd[i]) evhttp_connection_free(s->fwd[i]);
  if (s->join_conn) evhttp_connection_free(s->join_conn);
  free(s->join_url);
  free(s->join_hostport);
  free(s->token);
  free(s->test_gate);
  free(s->install_last);
  /* the listener first: closing connections must not enable it again */
  s->draining = 1;
  lkvnet_node_conns_close(s);
  if (s->notify_ev) event_free(s->notify_ev);
  if (s->tick_ev) event_free(s->tick_ev);
  if (s->raft_tick_ev) event_free(s->raft_tick_ev);
  if (s->ready_ev) event_free(s->ready_ev);
  if (s->apply_ev) event_free(s->apply_ev);
  if (s->rlog && lkvnet_rlog_close(s->rlog, &e) != LKV_OK && rc == LKV_OK) {
    rc = e.code;
    if (err) *err = e;
  }
  while ((p = s->head) != NULL) {
    s->head = p->next;
    lkvnet_node_pending_free(s, p);
  }
  if (s->pipefd[0] >= 0) close(s->pipefd[0]);
  if (s->pipefd[1] >= 0) close(s->pipefd[1]);
  if (s->batch) lkv_batch_free(s->batch);
  lkv_buf_free(&s->getbuf);
  free(s->append_buf);
  lkvnet_overlay_reset(&s->ovl, 0);
  if (s->db && lkv_db_close(s->db, &e) != LKV_OK && rc == LKV_OK) {
    rc = e.code;
    if (err) *err = e;
  }
  /* the signal events go last: while they exist libevent's handler takes
   * a second SIGTERM (or SIGINT) and nothing runs it, so a node that is
   * closing its log and engine finishes that, rather than dying half way
   * by the signal's default action */
  if (s->sigterm_ev) event_free(s->sigterm_ev);
  if (s->sigint_ev) event_free(s->sigint_ev);
  if (s->base) event_base_free(s->base);
  for (i = 0; i < s->nnodes; i++) free(s->nodes[i]);
  free(s->nodes);
  free(s->data_dir);
  free(s->host);
  free(s->my_url);
  free(s->hint_url);
  free(s);
  return rc;
}

/* }====================================================================== */
