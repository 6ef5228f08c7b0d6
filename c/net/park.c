/* park.c - requests that wait for a leader (docs/http_api.md, "While
 * there is no leader"). A write or a consistent read that reaches a node
 * knowing no leader (an election runs), or a leader handing its
 * leadership over (a transfer refuses proposals until the target leads),
 * waits here instead of failing at once: up to an election timeout from
 * its arrival. As soon as a leader is known (this node, free to propose
 * again, or a peer to forward to) every parked request goes through the
 * routes again from the top, with its first arrival time; past its
 * deadline it is answered 503 "no leader" with Retry-After, as before.
 * A planned transfer, and most failovers, then cost clients some
 * milliseconds of latency rather than an error each (etcd's server
 * likewise waits for a leader before it fails a proposal).
 *
 * Nothing parked has been proposed or forwarded: its body is still in
 * its request, so dispatching it again is the same as its first try.
 * Runs on the event loop's thread. */
#include <stdlib.h>

#include "node.h"

/* the most requests parked at once; past it, 503 at once */
#define PARK_MAX 4096

typedef struct lkvnet_parked {
  lkvnet_held h;
  struct lkvnet_parked *next;
} lkvnet_parked;

void lkvnet_node_park(lkvnet_server *s, lkvnet_req *req, int route,
                      double start) {
  lkvnet_parked *p;
  double deadline = start + s->election_ms / 1000.0;
  if (s->draining || s->log_failed || s->nparked >= PARK_MAX ||
      lkvnet_node_now() >= deadline || (p = calloc(1, sizeof *p)) == NULL) {
    lkvnet_node_reply_no_leader(s, req, route, start);
    return;
  }
  lkvnet_node_hold(s, &p->h, req, route, start, deadline);
  if (s->parked_tail)
    s->parked_tail->next = p;
  else
    s->parked = p;
  s->parked_tail = p;
  s->nparked++;
  s->parked_total++;
}

/* A leader to send requests to: this node, proposing (no transfer runs),
 * or a known peer. */
static int leader_usable(const lkvnet_server *s) {
  if (s->leader) return s->transfer_to == LKVNET_RAFT_NONE && !s->log_failed;
  return s->leader_id != LKVNET_RAFT_NONE && s->leader_id != s->id &&
         lkvnet_node_peer_by_id((lkvnet_server *)s, s->leader_id) != NULL;
}

void lkvnet_node_parked_poll(lkvnet_server *s) {
  lkvnet_parked *p, *next, *keep = NULL, *keep_tail = NULL;
  int go;
  double t;
  if (s->parked == NULL) return;
  go = leader_usable(s);
  t = lkvnet_node_now();
  p = s->parked;
  /* detach the list first: a request dispatched again may park again */
  s->parked = s->parked_tail = NULL;
  s->nparked = 0;
  for (; p != NULL; p = next) {
    next = p->next;
    p->next = NULL;
    if (p->h.req != NULL && !go && t < p->h.deadline) {
      if (keep_tail)
        keep_tail->next = p;
      else
        keep = p;
      keep_tail = p;
      s->nparked++;
      continue;
    }
    if (p->h.req != NULL) {
      lkvnet_req *req = lkvnet_node_unhold(&p->h);
      if (go)
        s->dispatch(s, req, p->h.start);
      else
        lkvnet_node_reply_no_leader(s, req, p->h.route, p->h.start);
    }
    free(p);
  }
  /* the kept ones go before any parked again meanwhile: arrival order */
  if (keep_tail) {
    keep_tail->next = s->parked;
    if (s->parked == NULL) s->parked_tail = keep_tail;
    s->parked = keep;
  }
}

void lkvnet_node_parked_free(lkvnet_server *s) {
  lkvnet_parked *p, *next;
  for (p = s->parked; p != NULL; p = next) {
    next = p->next;
    lkvnet_node_held_error(&p->h, 503, "the node is shutting down");
    free(p);
  }
  s->parked = s->parked_tail = NULL;
  s->nparked = 0;
}
