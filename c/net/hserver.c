/* hserver.c - the node's HTTP/1.1 server (docs/http_api.md,
 * "Connections"), on raw non-blocking sockets under the node's event
 * loop, and hreq.h's requests over it.
 *
 * Why not evhttp: per request it asks the kernel how much to read
 * (ioctl FIONREAD), arms and disarms the write event (two epoll_ctl),
 * mallocs every header and formats the status line with printf; that
 * was a fifth of the loop thread's CPU for a small write. Here each
 * connection's descriptor is registered once (EV_READ, persistent), a
 * read() fills one buffer that the parser (hparse.c) reads in place, a
 * request points into that buffer, and the answer goes out with one
 * writev() in the iteration that makes it; the write event is armed only
 * when the socket is full.
 *
 * What a connection promises: a deadline for each request to arrive
 * whole (read_timeout_ms, from its first byte, or from the accept for a
 * connection's first request), one for keep-alive connections that sit
 * idle (idle_timeout_ms), one for an answer the client does not take
 * (the larger of the two), never one for a request the node holds; a
 * cap on open connections past which the node stops accepting; a pause
 * when accept() fails (EMFILE, ENFILE, ...) instead of retrying it in a
 * loop. One request at a time per connection: pipelined requests wait
 * in the buffer, in order. A request refused before it reaches a route
 * (malformed, head too large, body over the cap, an HTTP version other
 * than 1.x) gets a JSON error and the connection closes once the answer
 * is out (the rest of a refused body is read and dropped first, so the
 * client sees the answer rather than a reset).
 *
 * Each connection is in one list per phase; a phase's deadline is the
 * same for all, so each list is in deadline order and the tick looks at
 * its heads only. Runs on the event loop's thread. */
#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "err.h"
#include "hparse.h"
#include "hreq.h"
#include "json.h"
#include "node.h"
#include "raft.h"

#define TICK_MS 50          /* how often the deadlines are checked */
#define BACKOFF_MIN 0.1     /* the first pause after accept() failed, s */
#define BACKOFF_MAX 1.0     /* the longest pause, s */
#define LOG_EVERY 10.0      /* a still failing accept(): one line per, s */
#define FULL_LOG_EVERY 60.0 /* at the cap: one line per, s */
#define READ_MIN 16384      /* the least room a read() is given */
#define KEEP_BUF 65536      /* a larger buffer is freed once idle */
#define LINGER_MAX 65536    /* dropped after a refusal, at least */
/* A request head: the longest target is a 64 KiB key, percent-encoded */
#define MAX_HEAD (3 * 65536 + 16384)

typedef struct lkvnet_conn hconn;

struct lkvnet_req {
  hconn *c;
  lkvnet_hhead h;
  char *path, *query; /* in the buffer, NUL-terminated */
  char *target;       /* made on demand (lkvnet_req_target) */
  char *body;
  size_t body_len;
  char *oh; /* the answer's headers so far ("Name: value\r\n"...) */
  size_t oh_len, oh_cap;
};

struct lkvnet_conn {
  lkvnet_server *s;
  evutil_socket_t fd;
  struct event *rev, *wev;
  char *in; /* what was read and not yet consumed */
  size_t in_len, in_cap;
  size_t scan; /* lkvnet_hparse_scan's place in the head being read */
  /* the request being read: its head (0 until whole), its body's mode
   * and length, chunked decoding's progress */
  size_t head_len;
  int chunked, continued;
  uint64_t body_need;
  lkvnet_hchunk ck;
  size_t ck_used, ck_made;
  const char *head_base; /* c->in when the head was parsed into req.h */
  uint64_t discard;      /* bytes of a refused body still to drop */
  char *out;             /* answer bytes the socket did not take yet */
  size_t out_len, out_off, out_cap;
  int phase;          /* LKVNET_CONN_* */
  double since;       /* when the phase began */
  int busy;           /* a route has the request: answered by lkvnet_req_send */
  int closing;        /* close once the answer is out */
  int dead;           /* closed while busy: freed by lkvnet_req_send */
  int in_loop;        /* process() is running: it takes the next request */
  int read_off;       /* the read event is not armed (buffer full, or EOF) */
  uint64_t raft_from; /* the node whose Raft messages came here last */
  hconn *prev, *next; /* in s->conns.lists[phase] */
  lkvnet_req req;
};

static void on_read(evutil_socket_t fd, short what, void *arg);
static void on_write(evutil_socket_t fd, short what, void *arg);
static void process(hconn *c);

/* {======================================================================
** Lists
** ======================================================================= */

static void list_remove(lkvnet_conns *cs, hconn *c) {
  lkvnet_conn_list *l = &cs->lists[c->phase];
  if (c->prev)
    c->prev->next = c->next;
  else
    l->head = c->next;
  if (c->next)
    c->next->prev = c->prev;
  else
    l->tail = c->prev;
  c->prev = c->next = NULL;
}

static void list_append(lkvnet_conns *cs, hconn *c, int phase, double now) {
  lkvnet_conn_list *l = &cs->lists[phase];
  c->phase = phase;
  c->since = now;
  c->prev = l->tail;
  c->next = NULL;
  if (l->tail)
    l->tail->next = c;
  else
    l->head = c;
  l->tail = c;
}

static void move(hconn *c, int phase) {
  if (c->phase == phase) return;
  list_remove(&c->s->conns, c);
  list_append(&c->s->conns, c, phase, lkvnet_node_now());
}

/* }====================================================================== */

/* {======================================================================
** The listener: the cap and the pause after a failed accept()
** ======================================================================= */

static void listener_update(lkvnet_server *s) {
  lkvnet_conns *cs = &s->conns;
  int want = !cs->full && !cs->paused && !s->draining;
  if (cs->listener == NULL || want == cs->accepting) return;
  if (want ? evconnlistener_enable(cs->listener) == 0
           : evconnlistener_disable(cs->listener) == 0)
    cs->accepting = want;
}

static void conn_free(hconn *c) {
  free(c->req.target);
  free(c->req.oh);
  free(c->in);
  free(c->out);
  free(c);
}

/* Close c's socket now. A connection whose request a route holds stays
 * (dead) until that route answers, and one that process() is working on
 * until it returns; every other is freed. A leader's
 * messages arrive on connections it opened; when one ends its process
 * may be gone (a kill closes every socket at once), and its followers
 * can campaign now rather than after a silent election timeout. */
static void conn_close(hconn *c) {
  lkvnet_server *s = c->s;
  lkvnet_conns *cs = &s->conns;
  uint64_t from = c->raft_from;
  if (c->fd < 0) return;
  event_free(c->rev);
  event_free(c->wev);
  c->rev = c->wev = NULL;
  evutil_closesocket(c->fd);
  c->fd = -1;
  list_remove(cs, c);
  cs->open--;
  if (cs->full && cs->open < s->max_conns) {
    cs->full = 0;
    listener_update(s);
  }
  c->dead = 1;
  if (!c->busy && !c->in_loop) conn_free(c);
  if (from != 0 && !s->draining && s->raft != NULL) {
    lkvnet_raft_report_leader_gone(s->raft, from);
    lkvnet_node_wake(s);
  }
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd,
                      struct sockaddr *sa, int salen, void *arg) {
  lkvnet_server *s = arg;
  lkvnet_conns *cs = &s->conns;
  double now = lkvnet_node_now();
  int one = 1;
  hconn *c;
  (void)l;
  (void)sa;
  (void)salen;
  cs->backoff = 0; /* accept() works: the next failure pauses briefly */
  if ((c = calloc(1, sizeof *c)) == NULL) {
    evutil_closesocket(fd);
    return;
  }
  c->s = s;
  c->fd = fd;
  c->req.c = c;
  /* answers are one write each; Nagle would only hold back the rest of
   * one the socket could not take whole */
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  c->rev = event_new(s->base, fd, EV_READ | EV_PERSIST, on_read, c);
  c->wev = event_new(s->base, fd, EV_WRITE | EV_PERSIST, on_write, c);
  if (c->rev == NULL || c->wev == NULL || event_add(c->rev, NULL) != 0) {
    if (c->rev) event_free(c->rev);
    if (c->wev) event_free(c->wev);
    evutil_closesocket(fd);
    free(c);
    return;
  }
  /* the deadline runs from accept */
  list_append(cs, c, LKVNET_CONN_READING, now);
  cs->open++;
  if (cs->open >= s->max_conns) {
    /* the ones past the cap wait in the kernel's listen queue (as Go's
     * LimitListener and nginx's worker_connections do), and are
     * accepted as connections close */
    cs->full = 1;
    listener_update(s);
    if (now - cs->full_logged >= FULL_LOG_EVERY || cs->full_logged == 0) {
      cs->full_logged = now;
      lkvnet_node_log(s,
                      "%zu connections open (the cap, --max-connections):"
                      " not accepting more until one closes",
                      cs->open);
    }
  }
}

/* accept() failed with something other than EAGAIN, EINTR or
 * ECONNABORTED: most often no descriptor is left (EMFILE, ENFILE). The
 * listening socket stays readable, so retrying at once only spins: pause
 * 100 ms, doubling to 1 s while it goes on. One log line when it starts,
 * then at most one per LOG_EVERY seconds however often it fails, and one
 * when it has stopped failing for that long (on_tick). */
static void on_accept_error(struct evconnlistener *l, void *arg) {
  int e = EVUTIL_SOCKET_ERROR();
  lkvnet_server *s = arg;
  lkvnet_conns *cs = &s->conns;
  double now = lkvnet_node_now();
  struct timeval tv;
  (void)l;
  cs->accept_errors++;
  if (cs->accept_failures++ == 0) cs->failing_since = now;
  cs->last_failure = now;
  cs->unlogged++;
  if (cs->last_log == 0 || now - cs->last_log >= LOG_EVERY) {
    if (cs->unlogged == 1)
      lkvnet_node_log(s,
                      "accept() failed: %s; not accepting connections for "
                      "%.0f ms, then for up to %.0f ms at a time while it "
                      "fails (ulimit -n: the open files limit)",
                      strerror(e), BACKOFF_MIN * 1000, BACKOFF_MAX * 1000);
    else
      lkvnet_node_log(
          s, "accept() failed %llu times in the last %.0f s: %s",
          (unsigned long long)cs->unlogged,
          cs->last_log == 0 ? now - cs->failing_since : now - cs->last_log,
          strerror(e));
    cs->last_log = now;
    cs->unlogged = 0;
  }
  cs->backoff = cs->backoff <= 0 ? BACKOFF_MIN : cs->backoff * 2;
  if (cs->backoff > BACKOFF_MAX) cs->backoff = BACKOFF_MAX;
  cs->paused = 1;
  listener_update(s);
  tv.tv_sec = (time_t)cs->backoff;
  tv.tv_usec = (suseconds_t)((cs->backoff - (double)tv.tv_sec) * 1e6);
  evtimer_add(cs->retry_ev, &tv);
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
** Writing
** ======================================================================= */

/* Read again: reading stops while an answer waits for the socket (a
 * client that sends and does not read gets no further), and while a held
 * request's buffer may not move. A pipelined request may be waiting. */
static void resume_reading(hconn *c) {
  if (c->read_off) {
    c->read_off = 0;
    event_add(c->rev, NULL);
  }
  if (c->in_len > 0 && !c->in_loop) event_active(c->rev, EV_READ, 1);
}

/* After the answer is out: close (after a refusal, half-close and drop
 * what the client still sends, so it reads the answer rather than a
 * reset), or wait for the next request. */
static void written(hconn *c) {
  if (c->closing) {
    if (c->discard > 0) {
      shutdown(c->fd, SHUT_WR);
      return;
    }
    conn_close(c);
    return;
  }
  if (!c->busy) {
    move(c, c->in_len > 0 ? LKVNET_CONN_READING : LKVNET_CONN_IDLE);
    resume_reading(c);
  }
}

/* Write a[0..na) then b[0..nb) after whatever waits; what the socket does
 * not take is kept and goes out when it is writable. -1 when the
 * connection broke (closed here) or memory ran out. */
static int conn_write(hconn *c, const char *a, size_t na, const char *b,
                      size_t nb) {
  size_t done = 0, left;
  if (c->out_len == c->out_off) {
    struct iovec v[2];
    ssize_t w;
    v[0].iov_base = (void *)(uintptr_t)a;
    v[0].iov_len = na;
    v[1].iov_base = (void *)(uintptr_t)b;
    v[1].iov_len = nb;
    do w = writev(c->fd, v, nb > 0 ? 2 : 1);
    while (w < 0 && errno == EINTR);
    if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
      conn_close(c);
      return -1;
    }
    done = w > 0 ? (size_t)w : 0;
    if (done == na + nb) return 0;
    c->out_len = c->out_off = 0;
  }
  left = na + nb - done;
  if (c->out_len + left > c->out_cap) {
    size_t cap = c->out_cap ? c->out_cap : 4096;
    char *n;
    while (cap < c->out_len + left) cap *= 2;
    if ((n = realloc(c->out, cap)) == NULL) {
      conn_close(c);
      return -1;
    }
    c->out = n;
    c->out_cap = cap;
  }
  if (done < na) {
    memcpy(c->out + c->out_len, a + done, na - done);
    c->out_len += na - done;
    done = na;
  }
  if (nb > done - na) {
    memcpy(c->out + c->out_len, b + (done - na), nb - (done - na));
    c->out_len += nb - (done - na);
  }
  event_add(c->wev, NULL);
  return 0;
}

static void on_write(evutil_socket_t fd, short what, void *arg) {
  hconn *c = arg;
  ssize_t w;
  (void)what;
  do w = write(fd, c->out + c->out_off, c->out_len - c->out_off);
  while (w < 0 && errno == EINTR);
  if (w < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK) conn_close(c);
    return;
  }
  c->out_off += (size_t)w;
  if (c->phase == LKVNET_CONN_WRITING && w > 0) {
    /* progress: the backstop starts again (at the list's tail, which
     * keeps the list in deadline order) */
    list_remove(&c->s->conns, c);
    list_append(&c->s->conns, c, LKVNET_CONN_WRITING, lkvnet_node_now());
  }
  if (c->out_off < c->out_len) return;
  c->out_off = c->out_len = 0;
  event_del(c->wev);
  if (c->out_cap > KEEP_BUF) {
    free(c->out);
    c->out = NULL;
    c->out_cap = 0;
  }
  written(c);
}

static int waiting_output(const hconn *c) { return c->out_len > c->out_off; }

/* }====================================================================== */

/* {======================================================================
** Requests
** ======================================================================= */

/* Drop the request just answered from the buffer; the next one may be
 * there already (pipelined). */
static void request_done(hconn *c, size_t used) {
  lkvnet_req *r = &c->req;
  free(r->target);
  r->target = NULL;
  r->oh_len = 0;
  c->busy = 0;
  c->head_len = 0;
  c->chunked = c->continued = 0;
  c->body_need = 0;
  c->ck_used = c->ck_made = 0;
  if (used < c->in_len) memmove(c->in, c->in + used, c->in_len - used);
  c->in_len -= used;
  c->scan = 0;
  if (c->in_len == 0 && c->in_cap > KEEP_BUF) {
    free(c->in);
    c->in = NULL;
    c->in_cap = 0;
  }
}

static int http_status_line(char *buf, size_t cap, int minor, int code) {
  return snprintf(buf, cap, "HTTP/1.%d %d %s\r\n", minor, code,
                  lkvnet_http_reason(code));
}

/* Refuse what cannot reach a route: a JSON error, then the connection
 * closes (after dropping the rest of a refused body, discard bytes). */
static void refuse(hconn *c, int code, const char *why, uint64_t discard) {
  char head[512], body[320];
  int hn, bn;
  /* why is one of the parser's fixed reasons: no quote or backslash */
  bn = snprintf(body, sizeof body, "{\"ok\": false, \"error\": \"%s\"}\n", why);
  if (bn < 0 || (size_t)bn >= sizeof body) bn = (int)sizeof body - 1;
  hn = http_status_line(head, sizeof head, 1, code);
  hn += snprintf(head + hn, sizeof head - (size_t)hn,
                 "Content-Type: application/json\r\nContent-Length: "
                 "%d\r\nConnection: close\r\n\r\n",
                 bn);
  c->closing = 1;
  /* what the client sent past the refused part is read and dropped, up
   * to the rest of a refused body or LINGER_MAX, until it closes, or
   * for the read timeout */
  c->discard = discard > LINGER_MAX ? discard : LINGER_MAX;
  c->in_len = 0;
  move(c, LKVNET_CONN_READING);
  if (conn_write(c, head, (size_t)hn, body, (size_t)bn) != 0) return;
  if (!waiting_output(c)) written(c);
}

/* The body limit: bodies up to twice the routes' limit (at least 1 MiB
 * over it) reach the routes, which answer 413 with the route's name;
 * past that, refused here without reading them (docs/http_api.md,
 * "Limits"). Raft and snapshot bodies are bounded the same way. */
static uint64_t body_cap(const lkvnet_server *s) {
  return (uint64_t)s->max_body +
         (s->max_body > (1u << 20) ? s->max_body : (1u << 20));
}

/* Make the buffer hold at least want bytes. */
static int reserve(hconn *c, size_t want) {
  size_t cap;
  char *n;
  if (want <= c->in_cap) return 0;
  cap = c->in_cap ? c->in_cap : READ_MIN;
  while (cap < want) cap *= 2;
  if ((n = realloc(c->in, cap)) == NULL) return -1;
  c->in = n;
  c->in_cap = cap;
  return 0;
}

/* The whole request is in: fill c->req and hand it to the routes. */
static void dispatch(hconn *c) {
  lkvnet_req *r = &c->req;
  const char *why = NULL;
  size_t i;
  char *t, *q;
  /* the head's pointers are into the buffer as it was parsed: parsed
   * again only when the buffer moved since (grown for a body) */
  if (c->head_base != c->in)
    lkvnet_hparse_head(c->in, c->head_len, MAX_HEAD, &r->h, &why);
  for (i = 0; i < r->h.nfields; i++) {
    ((char *)r->h.fields[i].value)[r->h.fields[i].value_len] = '\0';
  }
  t = (char *)r->h.target;
  t[r->h.target_len] = '\0';
  /* absolute-form (RFC 9112 3.2.2, what a client sends through a proxy):
   * the path starts after the authority */
  if (strncasecmp(t, "http://", 7) == 0 || strncasecmp(t, "https://", 8) == 0) {
    char *sl = strchr(t + (t[4] == ':' ? 7 : 8), '/');
    t = sl != NULL ? sl : t + r->h.target_len;
  }
  q = memchr(t, '?', (size_t)(r->h.target + r->h.target_len - t));
  if (q != NULL) *q++ = '\0';
  r->path = t;
  r->query = q;
  /* a chunked body is decoded in place by now: body_need is its length */
  r->body = c->in + c->head_len;
  r->body_len = (size_t)c->body_need;
  c->busy = 1;
  if (!r->h.keep_alive) c->closing = 1;
  move(c, LKVNET_CONN_HANDLING);
  c->s->dispatch(c->s, r, lkvnet_node_now()); /* routes.c */
}

/* Take what the buffer holds: the next request's head, its body, and
 * dispatch it; then the next, while no route holds one. */
static void process(hconn *c) {
  lkvnet_server *s = c->s;
  c->in_loop = 1;
  while (!c->dead && !c->busy && !c->closing && !waiting_output(c) &&
         c->in_len > 0) {
    if (c->head_len == 0) {
      const char *why = NULL;
      int rc = lkvnet_hparse_scan(c->in, c->in_len, MAX_HEAD, &c->scan, &why);
      if (rc == 0) break;
      if (rc != 1) {
        refuse(c, rc, why ? why : "malformed request", 0);
        break;
      }
      rc = lkvnet_hparse_head(c->in, c->in_len, MAX_HEAD, &c->req.h, &why);
      if (rc != 1) {
        refuse(c, rc, why ? why : "malformed request", 0);
        break;
      }
      c->head_len = c->req.h.head_len;
      c->head_base = c->in;
      c->chunked = c->req.h.chunked;
      c->body_need = c->req.h.content_length;
      if (!c->chunked && c->body_need > body_cap(s)) {
        size_t here = c->in_len - c->head_len;
        refuse(c, 413, "the request body is over the node's limit",
               c->body_need > here ? c->body_need - here : 0);
        break;
      }
      if (c->chunked) lkvnet_hchunk_init(&c->ck);
      if (reserve(c, c->head_len + (c->chunked ? 0 : (size_t)c->body_need) +
                         1) != 0) {
        refuse(c, 500, "out of memory", 0);
        break;
      }
      c->continued = !c->req.h.expect_continue;
    }
    if (c->chunked) {
      size_t used, made;
      const char *why = NULL;
      char *at = c->in + c->head_len;
      int rc = lkvnet_hchunk_feed(
          &c->ck, at + c->ck_used, c->in_len - c->head_len - c->ck_used,
          at + c->ck_made, &used, &made, body_cap(s), &why);
      c->ck_used += used;
      c->ck_made += made;
      if (rc != 0 && rc != 1) {
        refuse(c, rc, why ? why : "malformed chunked body", 0);
        break;
      }
      if (rc == 0) goto more;
      /* the request's bytes: the head, then the decoded body; what
       * follows the chunked encoding moves down behind it */
      memmove(at + c->ck_made, at + c->ck_used,
              c->in_len - c->head_len - c->ck_used);
      c->in_len -= c->ck_used - c->ck_made;
      c->body_need = c->ck_made;
      c->chunked = 0;
    } else if (c->in_len - c->head_len < c->body_need) {
      goto more;
    }
    dispatch(c);
    continue;
  more:
    /* a client that waits for "100 Continue" before its body */
    if (!c->continued) {
      static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
      c->continued = 1;
      if (conn_write(c, cont, sizeof cont - 1, NULL, 0) != 0) break;
    }
    break;
  }
  c->in_loop = 0;
  if (c->dead && !c->busy) conn_free(c);
}

static void on_read(evutil_socket_t fd, short what, void *arg) {
  hconn *c = arg;
  ssize_t n;
  (void)what;
  if (c->discard > 0 || (c->closing && !c->busy)) {
    /* a refused body, dropped; or bytes after a last request */
    char sink[16384];
    do n = read(fd, sink, sizeof sink);
    while (n < 0 && errno == EINTR);
    if (n > 0) {
      c->discard = (uint64_t)n >= c->discard ? 0 : c->discard - (uint64_t)n;
      if (c->discard == 0 && !waiting_output(c)) conn_close(c);
    } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
      conn_close(c);
    }
    return;
  }
  if (waiting_output(c)) {
    /* the client does not take its answers: read no more of its
     * requests until it does (written() reads again) */
    event_del(c->rev);
    c->read_off = 1;
    return;
  }
  if (c->in_cap - c->in_len < READ_MIN / 4) {
    if (c->busy) {
      /* a held request points into the buffer: it may not move; read
       * again once it is answered */
      event_del(c->rev);
      c->read_off = 1;
      return;
    }
    if (reserve(c, c->in_len + READ_MIN) != 0) {
      conn_close(c);
      return;
    }
  }
  do n = read(fd, c->in + c->in_len, c->in_cap - c->in_len - 1);
  while (n < 0 && errno == EINTR);
  if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
    if (c->busy) {
      /* the client is gone (or half-closed): its answer may still go */
      event_del(c->rev);
      c->read_off = 1;
      c->closing = 1;
    } else {
      conn_close(c);
    }
    return;
  }
  if (n > 0) {
    if (c->phase == LKVNET_CONN_IDLE) move(c, LKVNET_CONN_READING);
    c->in_len += (size_t)n;
  }
  /* also when made active with nothing new: a pipelined request waits */
  if (!c->busy) process(c);
}

/* }====================================================================== */

/* {======================================================================
** hreq.h over this server
** ======================================================================= */

int lkvnet_req_method(const lkvnet_req *r) { return r->h.method; }

const char *lkvnet_req_method_name(const lkvnet_req *r) {
  static char name[16];
  size_t n =
      r->h.method_len < sizeof name - 1 ? r->h.method_len : sizeof name - 1;
  memcpy(name, r->h.method_str, n);
  name[n] = '\0';
  return name;
}

const char *lkvnet_req_target(const lkvnet_req *r) {
  lkvnet_req *w = (lkvnet_req *)(uintptr_t)r;
  if (w->target == NULL) {
    size_t p = strlen(r->path), q = r->query ? strlen(r->query) : 0;
    if ((w->target = malloc(p + q + 2)) == NULL) return r->path;
    memcpy(w->target, r->path, p);
    if (r->query) {
      w->target[p] = '?';
      memcpy(w->target + p + 1, r->query, q);
      p += q + 1;
    }
    w->target[p] = '\0';
  }
  return w->target;
}

const char *lkvnet_req_path(const lkvnet_req *r) { return r->path; }

const char *lkvnet_req_query(const lkvnet_req *r) { return r->query; }

const char *lkvnet_req_body(lkvnet_req *r, size_t *n) {
  *n = r->body_len;
  return r->body_len ? r->body : "";
}

size_t lkvnet_req_body_len(const lkvnet_req *r) { return r->body_len; }

const char *lkvnet_req_header(const lkvnet_req *r, const char *name) {
  size_t n;
  return lkvnet_hhead_find(&r->h, name, &n);
}

int lkvnet_req_add_header(lkvnet_req *r, const char *name, const char *value) {
  size_t nn = strlen(name), vn = strlen(value), need = nn + vn + 4;
  if (strpbrk(value, "\r\n") != NULL) return -1; /* no header injection */
  if (r->oh_len + need > r->oh_cap) {
    size_t cap = r->oh_cap ? r->oh_cap * 2 : 256;
    char *n;
    while (cap < r->oh_len + need) cap *= 2;
    if ((n = realloc(r->oh, cap)) == NULL) return -1;
    r->oh = n;
    r->oh_cap = cap;
  }
  memcpy(r->oh + r->oh_len, name, nn);
  memcpy(r->oh + r->oh_len + nn, ": ", 2);
  memcpy(r->oh + r->oh_len + nn + 2, value, vn);
  memcpy(r->oh + r->oh_len + nn + 2 + vn, "\r\n", 2);
  r->oh_len += need;
  return 0;
}

/* Digits of v at the end of buf (no printf: this is every answer). */
static char *put_u64(char *end, uint64_t v) {
  do *--end = (char)('0' + v % 10);
  while ((v /= 10) != 0);
  return end;
}

int lkvnet_req_send(lkvnet_req *r, int code, const char *ctype,
                    const char *body, size_t n) {
  hconn *c = r->c;
  size_t used = c->head_len + r->body_len;
  char stack[512], *head = stack, *p, num[24], *d;
  size_t hn, cl, rl = 0, tl = strlen(ctype), want;
  const char *reason = lkvnet_http_reason(code);
  int head_only = r->h.method == LKVNET_HTTP_HEAD, rc;
  if (c->dead) {
    /* the client went away while the node held its request */
    c->busy = 0;
    if (!c->in_loop) conn_free(c);
    return code;
  }
  rl = strlen(reason);
  d = put_u64(num + sizeof num, n);
  cl = (size_t)(num + sizeof num - d);
  want = 64 + rl + tl + cl + r->oh_len + 32;
  if (want > sizeof stack && (head = malloc(want)) == NULL) {
    c->busy = 0; /* nothing can be said: the connection goes */
    conn_close(c);
    return 500;
  }
  p = head;
  memcpy(p, r->h.minor ? "HTTP/1.1 " : "HTTP/1.0 ", 9);
  p += 9;
  p[0] = (char)('0' + code / 100 % 10);
  p[1] = (char)('0' + code / 10 % 10);
  p[2] = (char)('0' + code % 10);
  p[3] = ' ';
  p += 4;
#define PUT(s, len) (memcpy(p, (s), (len)), p += (len))
  PUT(reason, rl);
  PUT("\r\nContent-Type: ", 16);
  PUT(ctype, tl);
  PUT("\r\nContent-Length: ", 18);
  PUT(d, cl);
  PUT("\r\n", 2);
  if (r->oh_len) PUT(r->oh, r->oh_len);
  if (c->closing || c->s->draining) {
    c->closing = 1;
    PUT("Connection: close\r\n", 19);
  } else if (r->h.minor == 0) {
    PUT("Connection: keep-alive\r\n", 24);
  }
  PUT("\r\n", 2);
#undef PUT
  hn = (size_t)(p - head);
  /* written before the request's bytes go: a body may point into them */
  rc = conn_write(c, head, hn, head_only ? NULL : body, head_only ? 0 : n);
  if (head != stack) free(head);
  if (rc != 0) { /* closed: the connection is dead, and busy no more */
    c->busy = 0;
    if (!c->in_loop) conn_free(c);
    return code;
  }
  request_done(c, used);
  if (waiting_output(c))
    move(c, LKVNET_CONN_WRITING); /* on_write goes on once it is out */
  else
    written(c); /* c may be gone after this */
  return code;
}

/* }====================================================================== */

void lkvnet_node_conns_raft_from(lkvnet_server *s, lkvnet_req *req,
                                 uint64_t from) {
  (void)s;
  req->c->raft_from = from;
}

size_t lkvnet_node_conns_answering(lkvnet_server *s) {
  size_t n = 0;
  const hconn *c;
  for (c = s->conns.lists[LKVNET_CONN_HANDLING].head; c != NULL; c = c->next)
    n++;
  for (c = s->conns.lists[LKVNET_CONN_WRITING].head; c != NULL; c = c->next)
    n++;
  return n;
}

/* {======================================================================
** Deadlines, set-up and tear-down
** ======================================================================= */

/* Close the connections at the head of list phase that are past limit
 * seconds in it. */
static void expire(lkvnet_server *s, int phase, double limit, double now,
                   uint64_t *counter) {
  hconn *c;
  while ((c = s->conns.lists[phase].head) != NULL && now - c->since >= limit) {
    if (counter != NULL) (*counter)++;
    conn_close(c);
  }
}

static void on_tick(evutil_socket_t fd, short what, void *arg) {
  lkvnet_server *s = arg;
  lkvnet_conns *cs = &s->conns;
  double now = lkvnet_node_now();
  int backstop = s->read_timeout_ms > s->idle_timeout_ms ? s->read_timeout_ms
                                                         : s->idle_timeout_ms;
  (void)fd;
  (void)what;
  expire(s, LKVNET_CONN_READING, s->read_timeout_ms / 1000.0, now,
         &cs->read_timeouts);
  expire(s, LKVNET_CONN_IDLE, s->idle_timeout_ms / 1000.0, now,
         &cs->idle_timeouts);
  /* an answer the client does not take: the socket has not moved for
   * the longer of the two (on_write restarts the clock on progress) */
  expire(s, LKVNET_CONN_WRITING, backstop / 1000.0, now, NULL);
  if (cs->accept_failures > 0 && now - cs->last_failure >= LOG_EVERY) {
    lkvnet_node_log(s,
                    "accept() has not failed for %.0f s (it failed %llu "
                    "times in %.1f s before)",
                    LOG_EVERY, (unsigned long long)cs->accept_failures,
                    cs->last_failure - cs->failing_since);
    cs->accept_failures = cs->unlogged = 0;
    cs->last_log = 0; /* a new run of failures is logged at once */
  }
}

int lkvnet_node_conns_open(lkvnet_server *s, const char *host, int port,
                           lkv_err *err) {
  lkvnet_conns *cs = &s->conns;
  struct addrinfo hints, *ai = NULL;
  char ps[16];
  int e;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_ADDRCONFIG;
  snprintf(ps, sizeof ps, "%d", port);
  if ((e = getaddrinfo(host, ps, &hints, &ai)) != 0)
    return lkv_seterr(err, LKV_IOERROR, "cannot listen on %s:%d: %s", host,
                      port, gai_strerror(e));
  /* 511 waiting connections, as Redis and nginx: past the cap, clients
   * wait there (and a burst of connects is not refused) */
  cs->listener =
      evconnlistener_new_bind(s->base, on_accept, s,
                              LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
                                  LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_DISABLED,
                              511, ai->ai_addr, (int)ai->ai_addrlen);
  e = errno;
  freeaddrinfo(ai);
  if (cs->listener == NULL)
    return lkv_seterr(err, LKV_IOERROR, "cannot listen on %s:%d: %s", host,
                      port, strerror(e));
  evconnlistener_set_error_cb(cs->listener, on_accept_error);
  {
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    evutil_socket_t fd = evconnlistener_get_fd(cs->listener);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
      if (ss.ss_family == AF_INET)
        s->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
      else if (ss.ss_family == AF_INET6)
        s->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
  }
  cs->retry_ev = evtimer_new(s->base, on_retry, s);
  cs->tick_ev = event_new(s->base, -1, EV_PERSIST, on_tick, s);
  if (cs->retry_ev == NULL || cs->tick_ev == NULL)
    return lkv_seterr(err, LKV_NOMEM, "connection events");
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
  listener_update(s);
  return event_add(s->conns.tick_ev, &tv);
}

void lkvnet_node_conns_stop_accepting(lkvnet_server *s) {
  lkvnet_conns *cs = &s->conns;
  if (cs->listener != NULL) {
    evconnlistener_free(cs->listener);
    cs->listener = NULL;
    cs->accepting = 0;
  }
}

void lkvnet_node_conns_close(lkvnet_server *s) {
  lkvnet_conns *cs = &s->conns;
  int p;
  lkvnet_node_conns_stop_accepting(s);
  for (p = 0; p < LKVNET_NCONN_PHASES; p++)
    while (cs->lists[p].head != NULL) {
      hconn *c = cs->lists[p].head;
      int busy = c->busy;
      conn_close(c);
      /* a request still held is never answered now */
      if (busy) conn_free(c);
    }
  if (cs->retry_ev) event_free(cs->retry_ev);
  if (cs->tick_ev) event_free(cs->tick_ev);
  cs->retry_ev = cs->tick_ev = NULL;
}

/* }====================================================================== */
