/* conns.c - the node's client connections (docs/http_api.md,
 * "Connections"): a deadline for each request to arrive whole
 * (read_timeout_ms, from its first byte, or from the accept for a
 * connection's first request), one for keep-alive connections that sit
 * idle (idle_timeout_ms), a cap on open connections past which the node
 * stops accepting, and a pause when accept() fails (EMFILE, ENFILE, ...)
 * instead of retrying it in a loop.
 *
 * libevent 2.1 (Debian 12) gives none of this: evhttp_set_max_connections
 * came in 2.2; evhttp_set_timeout is a timeout per read, which a client
 * sending a byte every few seconds never trips, and the same for idle
 * and busy connections; and an evconnlistener without an error callback
 * logs and retries a failing accept() at once, for as long as it fails.
 * So this file follows every connection through the hooks 2.1 has:
 *
 *   evhttp_set_bevcb     called once per accepted connection, before
 *                        evhttp builds it: counted (the cap), and put in
 *                        the NEW list with the bufferevent made for it;
 *   resolve_ev           activated from there, runs once evhttp has set
 *                        the connection up (in the same loop iteration,
 *                        before any of its I/O): the bufferevent's
 *                        callback argument is then its evhttp_connection,
 *                        which gets our close callback;
 *   an input evbuffer callback   an idle connection's next request begins;
 *   lkvnet_node_conns_request    (lkvnet_node_on_request) the request is whole;
 *   evhttp_request_set_on_complete_cb   its reply is written: idle again;
 *   evhttp_connection_set_closecb       gone, whoever closed it.
 *
 * Each connection is in one list per phase; a phase's deadline is the
 * same for all, so each list is in deadline order and the tick looks at
 * its heads only. A connection in HANDLING (a request the node holds or
 * answers) is never closed from here. Runs on the event loop's thread. */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>

#include "err.h"
#include "node.h"

#define TICK_MS 50          /* how often the deadlines are checked */
#define BACKOFF_MIN 0.1     /* the first pause after accept() failed, s */
#define BACKOFF_MAX 1.0     /* the longest pause, s */
#define LOG_EVERY 10.0      /* a still failing accept(): one line per, s */
#define FULL_LOG_EVERY 60.0 /* at the cap: one line per, s */

struct lkvnet_conn {
  lkvnet_server *s;
  struct bufferevent *bev;
  struct evhttp_connection *evcon; /* NULL while NEW */
  struct evbuffer_cb_entry *input_cb;
  evutil_socket_t fd;
  int phase;                       /* LKVNET_CONN_* */
  double since;                    /* when the phase began */
  uint64_t raft_from;              /* the node whose Raft messages came
                                      here last (0: none) */
  struct lkvnet_conn *prev, *next; /* in s->conns.lists[phase] */
};

/* {======================================================================
** Lists and the fd table
** ======================================================================= */

static void list_remove(lkvnet_conns *c, lkvnet_conn *cn) {
  lkvnet_conn_list *l = &c->lists[cn->phase];
  if (cn->prev)
    cn->prev->next = cn->next;
  else
    l->head = cn->next;
  if (cn->next)
    cn->next->prev = cn->prev;
  else
    l->tail = cn->prev;
  cn->prev = cn->next = NULL;
}

static void list_append(lkvnet_conns *c, lkvnet_conn *cn, int phase,
                        double now) {
  lkvnet_conn_list *l = &c->lists[phase];
  cn->phase = phase;
  cn->since = now;
  cn->prev = l->tail;
  cn->next = NULL;
  if (l->tail)
    l->tail->next = cn;
  else
    l->head = cn;
  l->tail = cn;
}

static void move(lkvnet_conns *c, lkvnet_conn *cn, int phase, double now) {
  list_remove(c, cn);
  list_append(c, cn, phase, now);
}

/* The fd table finds a connection's lkvnet_conn from evhttp's objects
 * (which have no user pointer); fds of open connections are distinct and
 * small. 0, or -1 when out of memory. */
static int by_fd_put(lkvnet_conns *c, lkvnet_conn *cn) {
  size_t fd = (size_t)cn->fd;
  if (cn->fd < 0) return -1;
  if (fd >= c->by_fd_cap) {
    size_t nc = c->by_fd_cap ? c->by_fd_cap : 256;
    lkvnet_conn **n;
    while (nc <= fd) nc *= 2;
    if ((n = realloc(c->by_fd, nc * sizeof *n)) == NULL) return -1;
    memset(n + c->by_fd_cap, 0, (nc - c->by_fd_cap) * sizeof *n);
    c->by_fd = n;
    c->by_fd_cap = nc;
  }
  c->by_fd[fd] = cn;
  return 0;
}

static lkvnet_conn *by_evcon(lkvnet_conns *c, struct evhttp_connection *evcon) {
  struct bufferevent *bev;
  evutil_socket_t fd;
  lkvnet_conn *cn;
  if (evcon == NULL || (bev = evhttp_connection_get_bufferevent(evcon)) == NULL)
    return NULL;
  fd = bufferevent_getfd(bev);
  if (fd < 0 || (size_t)fd >= c->by_fd_cap) return NULL;
  cn = c->by_fd[fd];
  return cn != NULL && cn->evcon == evcon ? cn : NULL;
}

/* }====================================================================== */

/* {======================================================================
** The listener: the cap and the pause after a failed accept()
** ======================================================================= */

/* Enable or disable accepting as the cap and the pause say. */
static void listener_update(lkvnet_server *s) {
  lkvnet_conns *c = &s->conns;
  int want = !c->full && !c->paused;
  struct evconnlistener *l;
  if (s->draining || want == c->accepting) return; /* no listener left */
  l = evhttp_bound_socket_get_listener(s->sock);
  if (want ? evconnlistener_enable(l) == 0 : evconnlistener_disable(l) == 0)
    c->accepting = want;
}

/* A connection closed: room under the cap again. */
static void conn_forget(lkvnet_server *s, lkvnet_conn *cn) {
  lkvnet_conns *c = &s->conns;
  if (cn->input_cb != NULL)
    evbuffer_remove_cb_entry(bufferevent_get_input(cn->bev), cn->input_cb);
  if (cn->fd >= 0 && (size_t)cn->fd < c->by_fd_cap && c->by_fd[cn->fd] == cn)
    c->by_fd[cn->fd] = NULL;
  list_remove(c, cn);
  free(cn);
  c->open--;
  if (c->full && c->open < s->max_conns) {
    c->full = 0;
    listener_update(s);
  }
}

static void on_input(struct evbuffer *buf, const struct evbuffer_cb_info *info,
                     void *arg);

/* Closed by the peer, or by evhttp on an error: never by expire (which
 * clears this callback first). A leader's messages arrive on
 * connections it opened; when one ends that way its process may be
 * gone (a kill closes every socket at once), and its followers can
 * campaign now rather than after a silent election timeout. */
static void on_close(struct evhttp_connection *evcon, void *arg) {
  lkvnet_conn *cn = arg;
  lkvnet_server *s = cn->s;
  uint64_t from = cn->raft_from;
  (void)evcon;
  conn_forget(s, cn);
  if (from != 0 && !s->draining && s->raft != NULL) {
    lkvnet_raft_report_leader_gone(s->raft, from);
    lkvnet_node_wake(s);
  }
}

/* evhttp_set_bevcb: a connection was accepted; evhttp builds it on the
 * bufferevent returned (made as evhttp makes its own: no fd yet, no
 * options, evhttp closes the fd). Returning NULL lets evhttp make one:
 * that connection goes untracked, which only costs it the deadlines. */
static struct bufferevent *on_accept(struct event_base *base, void *arg) {
  lkvnet_server *s = arg;
  lkvnet_conns *c = &s->conns;
  struct bufferevent *bev = bufferevent_socket_new(base, -1, 0);
  double now = lkvnet_node_now();
  lkvnet_conn *cn;
  c->backoff = 0; /* accept() works: the next failure pauses briefly */
  if (bev == NULL || (cn = calloc(1, sizeof *cn)) == NULL) return bev;
  cn->s = s;
  cn->bev = bev;
  cn->fd = -1;
  list_append(c, cn, LKVNET_CONN_NEW, now);
  c->open++;
  event_active(c->resolve_ev, EV_TIMEOUT, 0);
  if (c->open >= s->max_conns) {
    /* the ones past the cap wait in the kernel's listen queue (as Go's
     * LimitListener and nginx's worker_connections do), and are
     * accepted as connections close */
    c->full = 1;
    listener_update(s);
    if (now - c->full_logged >= FULL_LOG_EVERY || c->full_logged == 0) {
      c->full_logged = now;
      lkvnet_node_log(s,
                      "%zu connections open (the cap, --max-connections):"
                      " not accepting more until one closes",
                      c->open);
    }
  }
  return bev;
}

/* resolve_ev: the connections accepted in this loop iteration are set
 * up. evhttp has given each bufferevent its callbacks with the
 * evhttp_connection as their argument. evhttp may also have dropped one
 * already (out of memory while setting it up): bufferevent_free has then
 * cleared the callbacks, and the memory stays until a finalizer that
 * libevent 2.1 queues behind this event, which was activated first. */
static void on_resolve(evutil_socket_t fd, short what, void *arg) {
  lkvnet_server *s = arg;
  lkvnet_conns *c = &s->conns;
  lkvnet_conn *cn;
  (void)fd;
  (void)what;
  while ((cn = c->lists[LKVNET_CONN_NEW].head) != NULL) {
    void *evcon = NULL;
    bufferevent_getcb(cn->bev, NULL, NULL, NULL, &evcon);
    if (evcon == NULL) {
      cn->bev = NULL;
      conn_forget(s, cn);
      continue;
    }
    cn->evcon = evcon;
    cn->fd = bufferevent_getfd(cn->bev);
    evhttp_connection_set_closecb(cn->evcon, on_close, cn);
    if (by_fd_put(c, cn) != 0) {
      /* unfindable from its requests: never timed out (HANDLING), but
       * still counted until it closes */
      move(c, cn, LKVNET_CONN_HANDLING, cn->since);
      continue;
    }
    cn->input_cb =
        evbuffer_add_cb(bufferevent_get_input(cn->bev), on_input, cn);
    /* the deadline runs from accept */
    move(c, cn, LKVNET_CONN_READING, cn->since);
  }
}

/* Which server a listener belongs to: evhttp_bind_listener made the
 * listener's argument the evhttp, so the error callback cannot be given
 * ours; the conns tick, a timer of the same (per-server) event base, has
 * it as its argument. */
static void on_tick(evutil_socket_t fd, short what, void *arg);

static int find_server(const struct event_base *base, const struct event *ev,
                       void *arg) {
  (void)base;
  if (event_get_callback(ev) != on_tick) return 0;
  *(lkvnet_server **)arg = event_get_callback_arg(ev);
  return 1;
}

/* accept() failed with something other than EAGAIN, EINTR or
 * ECONNABORTED: most often no descriptor is left (EMFILE, ENFILE). The
 * listening socket stays readable, so retrying at once only spins (and
 * libevent would log each try): pause 100 ms, doubling to 1 s while it
 * goes on. One log line when it starts, then at most one per LOG_EVERY
 * seconds however often it fails, and one when it has stopped failing
 * for that long (on_tick). */
static void on_accept_error(struct evconnlistener *l, void *arg) {
  int e = EVUTIL_SOCKET_ERROR();
  lkvnet_server *s = NULL;
  lkvnet_conns *c;
  double now = lkvnet_node_now();
  struct timeval tv;
  (void)arg;
  event_base_foreach_event(evconnlistener_get_base(l), find_server, &s);
  if (s == NULL) { /* not running: nothing will resume it, so do not stop */
    return;
  }
  c = &s->conns;
  c->accept_errors++;
  if (c->accept_failures++ == 0) c->failing_since = now;
  c->last_failure = now;
  c->unlogged++;
  if (c->last_log == 0 || now - c->last_log >= LOG_EVERY) {
    if (c->unlogged == 1)
      lkvnet_node_log(s,
                      "accept() failed: %s; not accepting connections for "
                      "%.0f ms, then for up to %.0f ms at a time while it "
                      "fails (ulimit -n: the open files limit)",
                      strerror(e), BACKOFF_MIN * 1000, BACKOFF_MAX * 1000);
    else
      lkvnet_node_log(
          s, "accept() failed %llu times in the last %.0f s: %s",
          (unsigned long long)c->unlogged,
          c->last_log == 0 ? now - c->failing_since : now - c->last_log,
          strerror(e));
    c->last_log = now;
    c->unlogged = 0;
  }
  c->backoff = c->backoff <= 0 ? BACKOFF_MIN : c->backoff * 2;
  if (c->backoff > BACKOFF_MAX) c->backoff = BACKOFF_MAX;
  c->paused = 1;
  listener_update(s);
  tv.tv_sec = (time_t)c->backoff;
  tv.tv_usec = (suseconds_t)((c->backoff - (double)tv.tv_sec) * 1e6);
  evtimer_add(c->retry_ev, &tv);
}

static void on_retry(evutil_socket_t fd, short what, void *arg) {
  lkvnet_server *s = arg;
  (void)fd;
  (void)what;
  s->conns.paused = 0;
  listener_update(s);
}

/* }====================================================================== */

/* {======================================================================
** Phases: reading, handling, idle
** ======================================================================= */

/* The input callback: bytes came in. On an idle connection, that is the
 * next request beginning: its deadline starts. */
static void on_input(struct evbuffer *buf, const struct evbuffer_cb_info *info,
                     void *arg) {
  lkvnet_conn *cn = arg;
  (void)buf;
  if (info->n_added > 0 && cn->phase == LKVNET_CONN_IDLE)
    move(&cn->s->conns, cn, LKVNET_CONN_READING, lkvnet_node_now());
}

/* The reply is written; evhttp reads the connection's next request,
 * which may be there already (pipelined): then it has begun. */
static void on_reply_sent(struct evhttp_request *req, void *arg) {
  lkvnet_server *s = arg;
  lkvnet_conn *cn = by_evcon(&s->conns, evhttp_request_get_connection(req));
  if (cn != NULL)
    move(&s->conns, cn,
         evbuffer_get_length(bufferevent_get_input(cn->bev)) > 0
             ? LKVNET_CONN_READING
             : LKVNET_CONN_IDLE,
         lkvnet_node_now());
}

/* An lkvnet_req is an evhttp_request (hreq_ev.c). */
void lkvnet_node_conns_request(lkvnet_server *s, lkvnet_req *r) {
  struct evhttp_request *req = (struct evhttp_request *)r;
  lkvnet_conn *cn = by_evcon(&s->conns, evhttp_request_get_connection(req));
  if (cn == NULL) return;
  move(&s->conns, cn, LKVNET_CONN_HANDLING, lkvnet_node_now());
  evhttp_request_set_on_complete_cb(req, on_reply_sent, s);
}

void lkvnet_node_conns_raft_from(lkvnet_server *s, lkvnet_req *r,
                                 uint64_t from) {
  struct evhttp_request *req = (struct evhttp_request *)r;
  lkvnet_conn *cn = by_evcon(&s->conns, evhttp_request_get_connection(req));
  if (cn != NULL) cn->raft_from = from;
}

size_t lkvnet_node_conns_answering(lkvnet_server *s) {
  size_t n = 0;
  const lkvnet_conn *cn;
  for (cn = s->conns.lists[LKVNET_CONN_HANDLING].head; cn != NULL;
       cn = cn->next)
    n++;
  return n;
}

/* Close the connections at the head of list phase that are past limit
 * seconds in it; the lkvnet_conn goes first, so evhttp's close callback
 * (now cleared) cannot meet it. */
static void expire(lkvnet_server *s, int phase, double limit, double now,
                   uint64_t *counter) {
  lkvnet_conns *c = &s->conns;
  lkvnet_conn *cn;
  while ((cn = c->lists[phase].head) != NULL && now - cn->since >= limit) {
    struct evhttp_connection *evcon = cn->evcon;
    evhttp_connection_set_closecb(evcon, NULL, NULL);
    conn_forget(s, cn);
    (*counter)++;
    evhttp_connection_free(evcon);
  }
}

static void on_tick(evutil_socket_t fd, short what, void *arg) {
  lkvnet_server *s = arg;
  double now = lkvnet_node_now();
  (void)fd;
  (void)what;
  expire(s, LKVNET_CONN_READING, s->read_timeout_ms / 1000.0, now,
         &s->conns.read_timeouts);
  expire(s, LKVNET_CONN_IDLE, s->idle_timeout_ms / 1000.0, now,
         &s->conns.idle_timeouts);
  if (s->conns.accept_failures > 0 &&
      now - s->conns.last_failure >= LOG_EVERY) {
    lkvnet_conns *c = &s->conns;
    lkvnet_node_log(s,
                    "accept() has not failed for %.0f s (it failed %llu "
                    "times in %.1f s before)",
                    LOG_EVERY, (unsigned long long)c->accept_failures,
                    c->last_failure - c->failing_since);
    c->accept_failures = c->unlogged = 0;
    c->last_log = 0; /* a new run of failures is logged at once */
  }
}

/* }====================================================================== */

/* {======================================================================
** Set-up and tear-down
** ======================================================================= */

int lkvnet_node_conns_open(lkvnet_server *s, lkv_err *err) {
  lkvnet_conns *c = &s->conns;
  struct evconnlistener *l = evhttp_bound_socket_get_listener(s->sock);
  int backstop = s->read_timeout_ms > s->idle_timeout_ms ? s->read_timeout_ms
                                                         : s->idle_timeout_ms;
  struct timeval tv;
  c->resolve_ev = event_new(s->base, -1, 0, on_resolve, s);
  c->retry_ev = evtimer_new(s->base, on_retry, s);
  c->tick_ev = event_new(s->base, -1, EV_PERSIST, on_tick, s);
  if (c->resolve_ev == NULL || c->retry_ev == NULL || c->tick_ev == NULL)
    return lkv_seterr(err, LKV_NOMEM, "connection events");
  c->accepting = 1;
  evhttp_set_bevcb(s->http, on_accept, s);
  evconnlistener_set_error_cb(l, on_accept_error);
  /* evhttp's own timeout, per read and per write, is only the backstop
   * for a reply the client does not take: the deadlines above end every
   * other wait first */
  tv.tv_sec = backstop / 1000;
  tv.tv_usec = (suseconds_t)(backstop % 1000) * 1000;
  evhttp_set_timeout_tv(s->http, &tv);
  return LKV_OK;
}

int lkvnet_node_conns_start(lkvnet_server *s) {
  struct timeval tv = {0, TICK_MS * 1000};
  struct rlimit rl;
  /* as nginx warns: the cap cannot be reached */
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
      (rlim_t)s->max_conns > rl.rlim_cur)
    lkvnet_node_log(s,
                    "%zu connections allowed (--max-connections) but only "
                    "%llu open files (ulimit -n): descriptors run out first",
                    s->max_conns, (unsigned long long)rl.rlim_cur);
  return event_add(s->conns.tick_ev, &tv);
}

void lkvnet_node_conns_close(lkvnet_server *s) {
  lkvnet_conns *c = &s->conns;
  if (c->resolve_ev != NULL) on_resolve(-1, 0, s); /* all get on_close */
}

void lkvnet_node_conns_free(lkvnet_server *s) {
  lkvnet_conns *c = &s->conns;
  int p;
  /* evhttp_free closed every connection through on_close; anything left
   * was never set up, and its bufferevent went with evhttp */
  for (p = 0; p < LKVNET_NCONN_PHASES; p++)
    while (c->lists[p].head != NULL) {
      lkvnet_conn *cn = c->lists[p].head;
      cn->input_cb = NULL;
      list_remove(c, cn);
      free(cn);
    }
  free(c->by_fd);
  c->by_fd = NULL;
  c->by_fd_cap = 0;
  if (c->resolve_ev) event_free(c->resolve_ev);
  if (c->retry_ev) event_free(c->retry_ev);
  if (c->tick_ev) event_free(c->tick_ev);
  c->resolve_ev = c->retry_ev = c->tick_ev = NULL;
}

/* }====================================================================== */
