/* members.c - membership changes as the node does them (docs/replication.md,
 * "Membership"; docs/http_api.md): POST /add_node and POST /remove_node
 * on the leader (single-server changes through the log: the core's
 * lkvnet_raft_propose_conf), a new node's promotion from learner to voter
 * once it is caught up, --join (a new node asking a member to add it; a
 * fresh one whose URL is a member already asking to remove it first),
 * and the probe by which a member that hears no leader learns whether it
 * still is one. Runs on the event loop's thread; the node's state is
 * node.h. */
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "hardstate.h"
#include "json.h"
#include "memberconf.h"
#include "node.h"
#include "rlog.h"

/* {======================================================================
** POST /add_node, POST /remove_node
** ======================================================================= */

/* A CONF entry's context: the URL of the node it is about, then every
 * member's (peers.c), so whoever reads it knows them all. */
#define CTX_MAX ((LKVNET_RAFT_MAX_MEMBERS + 1) * (LKVNET_URL_MAX + 1) + 1)

/* node_url of the body, normalised into url; 0, or -1 once answered 400. */
static int body_url(lkvnet_server *s, lkvnet_req *req, int route, double start,
                    char *url) {
  size_t n;
  const char *body = lkvnet_req_body(req, &n);
  lkvnet_json_object o;
  const lkvnet_json_member *m;
  char jerr[LKVNET_JSON_ERR_LEN], why[120];
  int rc = -1;
  memset(&o, 0, sizeof o);
  if (body == NULL)
    lkvnet_node_reply_error(s, req, route, start, 500,
                            "out of memory reading the body");
  else if (lkvnet_json_parse_object(body, n, &o, jerr) != 0)
    lkvnet_node_reply_error(s, req, route, start, 400, "malformed JSON: %s",
                            jerr);
  else if ((m = lkvnet_json_get(&o, "node_url")) == NULL)
    lkvnet_node_reply_error(s, req, route, start, 400,
                            "missing member \"node_url\"");
  else if (m->type != LKVNET_JSON_STRING)
    lkvnet_node_reply_error(s, req, route, start, 400,
                            "member \"node_url\" must be a string, not %s",
                            lkvnet_json_type_name(m->type));
  else if (memchr(m->str, '\0', m->len) != NULL ||
           lkvnet_url_normalize(m->str, m->len, url, why, sizeof why) != 0)
    lkvnet_node_reply_error(s, req, route, start, 400, "node_url: %s",
                            memchr(m->str, '\0', m->len) ? "a zero byte" : why);
  else
    rc = 0;
  lkvnet_json_free(&o);
  return rc;
}

/* Whether the voters of c other than id (the one to be removed) hold a
 * majority of themselves that answers: this node (it leads), and each
 * other whose last /raft request was answered within an election
 * timeout (every heartbeat asks one). A change takes effect when it is
 * appended: with the others away, the removal could not commit, nor
 * anything after it, until enough of them came back, and a wiped voter
 * that asks to remove its URL (--join) would have turned a cluster that
 * still commits into one that cannot (etcd's strict reconfiguration
 * check). *left: the voters left; *up: how many of them answer. */
static int removal_keeps_majority(lkvnet_server *s, const lkvnet_raft_conf *c,
                                  uint64_t id, int *left, int *up) {
  double now = lkvnet_node_now(), et = s->election_ms / 1000.0;
  size_t i;
  *left = *up = 0;
  for (i = 0; i < c->n_voters; i++) {
    lkvnet_peer *p;
    if (c->voters[i] == id) continue;
    (*left)++;
    if (c->voters[i] == s->id)
      (*up)++;
    else if ((p = lkvnet_node_peer_by_id(s, c->voters[i])) != NULL &&
             p->last_contact > 0 && now - p->last_contact <= et)
      (*up)++;
  }
  return *up >= *left / 2 + 1;
}

void lkvnet_node_route_members(lkvnet_server *s, lkvnet_req *req, int route,
                               double start) {
  char url[LKVNET_URL_MAX + 1], ctx[CTX_MAX];
  lkvnet_raft_status st;
  uint64_t id, index, term;
  size_t n;
  int add = route == LKVNET_ROUTE_ADD_NODE, voter, learner, rc, left, up;
  lkv_err err;
  if (body_url(s, req, route, start, url) != 0) return;
  if (s->draining) {
    lkvnet_node_reply_error(s, req, route, start, 503,
                            "the node is shutting down");
    return;
  }
  if (s->log_failed) {
    lkvnet_node_reply_no_leader(s, req, route, start);
    return;
  }
  lkvnet_raft_status_get(s->raft, &st);
  if (st.role != LKVNET_RAFT_LEADER) {
    lkvnet_node_reply_no_leader(s, req, route, start);
    return;
  }
  id = lkvnet_node_id_of(url);
  voter = lkvnet_raft_conf_is_voter(&st.conf, id);
  learner = lkvnet_raft_conf_is_learner(&st.conf, id);
  /* what the request itself gets wrong (400) before what the cluster's
   * state refuses now (409) */
  if (!add && !voter && !learner) {
    lkvnet_node_reply_error(s, req, route, start, 400,
                            "%s is not a member of this cluster", url);
    return;
  }
  if (add && (voter || learner)) {
    lkvnet_node_reply_error(s, req, route, start, 409,
                            "%s is already a member (a %s)", url,
                            voter ? "voter" : "learner");
    return;
  }
  if (!add && voter && st.conf.n_voters == 1) {
    lkvnet_node_reply_error(s, req, route, start, 409,
                            "%s is the last voter: a cluster needs one", url);
    return;
  }
  if (!add && voter && !removal_keeps_majority(s, &st.conf, id, &left, &up)) {
    lkvnet_node_reply_error(s, req, route, start, 409,
                            "%s cannot be removed now: of the %d voters left, "
                            "%d answer (this node included), not a majority: "
                            "the cluster could commit nothing until more come "
                            "back",
                            url, left, up);
    return;
  }
  if (add && st.conf.n_voters + st.conf.n_learners >= LKVNET_RAFT_MAX_MEMBERS) {
    lkvnet_node_reply_error(s, req, route, start, 409,
                            "the cluster has %d members already, the most it "
                            "can have",
                            LKVNET_RAFT_MAX_MEMBERS);
    return;
  }
  if (st.pending_conf_index != 0 || s->conf_index != 0) {
    lkvnet_node_reply_error(
        s, req, route, start, 409,
        "a configuration change is pending (index %llu); "
        "one change at a time: retry once it is done",
        (unsigned long long)(st.pending_conf_index ? st.pending_conf_index
                                                   : s->conf_index));
    return;
  }
  if (st.transferee != LKVNET_RAFT_NONE) {
    lkvnet_node_reply_error(s, req, route, start, 409,
                            "a leadership transfer is under way; retry");
    return;
  }
  /* the leader sends to the new member as soon as the entry is appended:
   * it needs the URL first */
  if (add && lkvnet_node_peer_learn(s, url) == NULL) {
    lkvnet_node_reply_error(s, req, route, start, 503,
                            "no room to keep %s's connection", url);
    return;
  }
  err.msg[0] = '\0';
  n = lkvnet_node_conf_ctx(s, url, &st.conf, ctx, sizeof ctx);
  rc = lkvnet_raft_propose_conf(
      s->raft, add ? LKVNET_RAFT_CONF_ADD_LEARNER : LKVNET_RAFT_CONF_REMOVE, id,
      ctx, n, &index, &term, &err);
  if (rc != LKV_OK) {
    /* LKV_BUSY: this term's first entry is not committed yet (a new
     * leader), or the core stopped leading meanwhile */
    lkvnet_node_reply_error(s, req, route, start,
                            rc == LKV_BUSY      ? 409
                            : rc == LKV_INVALID ? 400
                                                : 500,
                            "cannot change the configuration now: %s; retry",
                            err.msg);
    return;
  }
  s->conf_index = index;
  s->conf_term = term;
  lkvnet_node_hold(s, &s->conf_h, req, route, start,
                   start + s->write_timeout_ms / 1000.0);
  lkvnet_node_log(s, "configuration change at index %llu: %s %s%s",
                  (unsigned long long)index, add ? "adding" : "removing", url,
                  add ? " as a learner" : "");
  lkvnet_node_wake(s);
}

/* }====================================================================== */

/* {======================================================================
** Promotion, probes, --join: every 50 ms
** ======================================================================= */

/* On the leader: a learner whose match is within LKVNET_PROMOTE_MAX_LAG
 * entries of the leader's last index, and past the entry that added it,
 * that is being replicated to (not probed, not waiting for a snapshot)
 * and answered within an election timeout, becomes a voter; one change
 * at a time. (A node that joined over a fresh directory votes in nothing
 * until its log holds that entry: made a voter sooner, it would be one
 * that cannot vote, and a voter less for the next election.) */
static void promote(lkvnet_server *s, const lkvnet_raft_status *st) {
  size_t i;
  for (i = 0; i < st->n_progress; i++) {
    const lkvnet_raft_progress *p = &st->progress[i];
    const lkvnet_peer *peer;
    const char *url;
    char ctx[CTX_MAX];
    uint64_t index, term;
    lkv_err err;
    if (p->voter || !lkvnet_raft_conf_is_learner(&st->conf, p->id) ||
        p->state != LKVNET_RAFT_REPLICATE || !p->recent_active ||
        p->match == 0 || p->match + LKVNET_PROMOTE_MAX_LAG < st->last_index)
      continue;
    if ((peer = lkvnet_node_peer_by_id(s, p->id)) != NULL &&
        p->match < peer->added_index)
      continue; /* its log lacks the entry that added it */
    url = lkvnet_node_url_of(s, p->id);
    err.msg[0] = '\0';
    if (lkvnet_raft_propose_conf(
            s->raft, LKVNET_RAFT_CONF_ADD_VOTER, p->id, ctx,
            lkvnet_node_conf_ctx(s, url, &st->conf, ctx, sizeof ctx), &index,
            &term, &err) != LKV_OK)
      return; /* busy (a new term's first entry): the next poll retries */
    lkvnet_node_log(s,
                    "configuration change at index %llu: promoting %s to "
                    "voter (match %llu of %llu)",
                    (unsigned long long)index, url ? url : "?",
                    (unsigned long long)p->match,
                    (unsigned long long)st->last_index);
    lkvnet_node_wake(s);
    return;
  }
}

/* A member by its own configuration that has heard no leader for two
 * election timeouts asks the others (an empty POST /raft) once per
 * election timeout: a leader that no longer counts it (it was removed
 * while away, or never added) says so, and it stops taking part. */
static void probe(lkvnet_server *s, const lkvnet_raft_status *st, double now) {
  double et = s->election_ms / 1000.0;
  size_t i;
  if (s->leader || s->not_member || !(st->voter || st->learner)) return;
  if (s->leader_heard == 0) s->leader_heard = now;
  if (now - s->leader_heard < 2 * et || now < s->probe_at) return;
  s->probe_at = now + et;
  for (i = 0; i < s->npeers; i++)
    if (s->peers[i].member) lkvnet_node_probe(s, &s->peers[i]);
}

/* --join, as a sequence of requests to join_url (any member: a follower
 * forwards), each retried once a second until join_deadline:
 *
 *   ADD      POST /add_node of this node's URL. 200: added (as a learner,
 *            at the answer's index); a fresh node then CATCHUP, any other
 *            DONE. 409 "already a member": a restarted member's answer
 *            (DONE); but a fresh node's URL that the cluster counts is a
 *            member whose directory is gone, with the votes it gave: the
 *            node is not that member, and asks to REMOVE it first.
 *   REMOVE   POST /remove_node of this node's URL. 200, or 400 "not a
 *            member" (an earlier try's answer was lost): ADD again. 409
 *            "the last voter" or "not a majority": refused; said in
 *            /health and /status, and asked again until the deadline (a
 *            voter coming back may change the answer); past it the node
 *            stops asking, and stays refused.
 *   CATCHUP  a fresh node waits until its log holds the entry that added
 *            it (join_caught_up): then its join mark goes, and it takes
 *            part (DONE).
 *   DONE     told since that it is no member (removed): ADD again.
 *
 * Past the deadline without an answer that settles it, the node stops
 * (lkvnet_server_run returns join_err), as before. */

static const char *const join_routes[] = {"/add_node", "/remove_node"};

/* The entry index of a change's 200 answer ({"ok": true, "index": N,
 * "term": T, ...}), 0 when it has none; its term in *term (0: none). */
static uint64_t answer_index(const char *body, size_t n, uint64_t *term) {
  lkvnet_json_object o;
  char jerr[LKVNET_JSON_ERR_LEN];
  uint64_t index = 0;
  memset(&o, 0, sizeof o);
  *term = 0;
  if (lkvnet_json_parse_object(body, n, &o, jerr) != 0 ||
      lkvnet_json_u64(&o, "index", &index) != 0)
    index = 0;
  else if (lkvnet_json_u64(&o, "term", term) != 0)
    *term = 0;
  lkvnet_json_free(&o);
  return index;
}

/* Whether a fresh node has caught up through the entry that added it,
 * (join_index, join_term), committed: applied; or held by its log, durable
 * (the same index and term: the same entry, and the log before it, by
 * Raft's log matching); or covered by the snapshot its log starts after. */
static int join_caught_up(lkvnet_server *s) {
  uint64_t t;
  if (s->needs_snapshot) return 0;
  if (s->applied_index >= s->join_index ||
      lkvnet_rlog_base_index(s->rlog) >= s->join_index)
    return 1;
  return s->join_term != 0 &&
         lkvnet_rlog_durable_index(s->rlog) >= s->join_index &&
         lkvnet_rlog_term_at(s->rlog, s->join_index, &t) == LKV_OK &&
         t == s->join_term;
}

/* Whether an answer's n bytes at body (not NUL-terminated) hold text. */
static int has(const char *body, size_t n, const char *text) {
  return memmem(body, n, text, strlen(text)) != NULL;
}

/* Ask from the start (ADD), until a new deadline. */
static void join_again(lkvnet_server *s, double now) {
  s->join_phase = LKVNET_JOIN_ADD;
  s->join_index = s->join_term = 0;
  s->join_next = now;
  s->join_deadline = now + LKVNET_JOIN_TIMEOUT_MS / 1000.0;
}

static void on_join_reply(struct evhttp_request *r, void *arg) {
  lkvnet_server *s = arg;
  int code = r ? evhttp_request_get_response_code(r) : 0;
  struct evbuffer *in = r ? evhttp_request_get_input_buffer(r) : NULL;
  size_t n = in ? evbuffer_get_length(in) : 0;
  const char *body = n ? (const char *)evbuffer_pullup(in, -1) : "";
  int shown, removing;
  double now = lkvnet_node_now();
  s->join_inflight = 0;
  if (body == NULL) body = "", n = 0;
  while (n > 0 && (body[n - 1] == '\n' || body[n - 1] == '\r')) n--;
  if (code == 0) body = "(no answer)", n = strlen(body);
  shown = (int)(n < 300 ? n : 300);
  removing = s->join_phase == LKVNET_JOIN_REMOVE;
  if (!removing && code == 200 && s->join_unfinished) {
    if ((s->join_index = answer_index(body, n, &s->join_term)) != 0) {
      s->join_phase = LKVNET_JOIN_CATCHUP;
      s->join_added = now;
      s->join_err.msg[0] = '\0';
      lkvnet_node_log(s,
                      "joined the cluster through %s at index %llu (a "
                      "learner): catching up; this node votes in no "
                      "election until its log holds that entry",
                      s->join_url, (unsigned long long)s->join_index);
      return;
    }
  } else if (!removing &&
             (code == 200 ||
              (code == 409 && has(body, n, "is already a member")))) {
    if (!s->join_unfinished) {
      s->join_phase = LKVNET_JOIN_DONE;
      lkvnet_node_log(s, "joined the cluster through %s: %.*s", s->join_url,
                      shown, body);
      return;
    }
    /* a fresh node: that member is not this one */
    s->join_phase = LKVNET_JOIN_REMOVE;
    s->join_next = now;
    s->join_err.msg[0] = '\0';
    lkvnet_node_log(s,
                    "%s answers that %s is already a member, but this "
                    "node's directory began empty: that member's data and "
                    "votes are lost, and this node is not it; asking to "
                    "remove it first, then to be added again (%.*s)",
                    s->join_url, s->my_url, shown, body);
    return;
  } else if (removing && (code == 200 ||
                          (code == 400 && has(body, n, "is not a member")))) {
    s->join_phase = LKVNET_JOIN_ADD;
    s->join_next = now;
    s->join_refused = 0;
    s->join_err.msg[0] = '\0';
    lkvnet_node_log(s,
                    "removed %s from the cluster (%.*s); asking to be added "
                    "again",
                    s->my_url, shown, body);
    return;
  } else if (removing && code == 409 &&
             (has(body, n, "the last voter") ||
              has(body, n, "not a majority"))) {
    if (!s->join_refused)
      lkvnet_node_log(s,
                      "the cluster refuses to remove %s: %.*s; this node "
                      "does not serve, and asks again once a second for "
                      "at most %.0f s more",
                      s->my_url, shown, body, s->join_deadline - now);
    s->join_refused = 1;
    lkv_seterr(&s->join_refusal, LKV_BUSY, "HTTP 409 %.*s",
               (int)(n < 200 ? n : 200), body);
  }
  s->join_next = now + 1.0;
  snprintf(s->join_err.msg, sizeof s->join_err.msg, "HTTP %d %.*s", code,
           (int)(n < 200 ? n : 200), body);
  lkvnet_node_log(s, "asking %s to %s %s: %s; retrying", s->join_url,
                  removing ? "remove" : "add", s->my_url, s->join_err.msg);
}

/* A fresh node caught up through the entry that added it: its join mark
 * goes (a failure is retried a second later), and it takes part. */
static void join_finish(lkvnet_server *s, double now) {
  lkv_err err;
  if (now < s->join_next) return;
  err.msg[0] = '\0';
  if (lkvnet_joinmark_clear(s->data_dir, s->env, &err) != LKV_OK) {
    s->join_next = now + 1.0;
    lkvnet_node_log(s, "cannot remove the join mark: %s; retrying", err.msg);
    return;
  }
  s->join_unfinished = 0;
  s->join_phase = LKVNET_JOIN_DONE;
  lkvnet_node_log(s,
                  "caught up through index %llu, the entry that added this "
                  "node: the join is done (log through %llu, applied %llu); "
                  "it takes part in elections now",
                  (unsigned long long)s->join_index,
                  (unsigned long long)lkvnet_rlog_durable_index(s->rlog),
                  (unsigned long long)s->applied_index);
}

static void join_poll(lkvnet_server *s, const lkvnet_raft_status *st,
                      double now) {
  struct evhttp_request *r;
  struct evkeyvalq *h;
  lkvnet_jbuf b;
  char uri[16];
  if (s->join_url == NULL) return;
  if (s->join_phase == LKVNET_JOIN_DONE) {
    /* removed since (or its configuration is stale): ask again */
    if (s->not_member) join_again(s, now);
    return;
  }
  if (s->join_phase == LKVNET_JOIN_CATCHUP) {
    /* told it is no member well after it was added: removed again. (A
     * leader's answer to a message sent before the add can arrive after
     * the add's answer; the next append clears that.) */
    if (s->not_member && now - s->join_added > s->election_ms / 1000.0) {
      lkvnet_node_log(s, "removed while catching up: asking again");
      join_again(s, now);
    } else if (!s->not_member && join_caught_up(s) &&
               (st->voter || st->learner)) {
      join_finish(s, now);
    }
    return;
  }
  if (s->join_inflight || now < s->join_next) return;
  if (!s->join_unfinished && (st->voter || st->learner) && !s->not_member) {
    s->join_phase = LKVNET_JOIN_DONE; /* a member already (a restart) */
    return;
  }
  if (now >= s->join_deadline) {
    if (s->join_refused) {
      /* refused: it stays up to say so, and asks no more */
      s->join_next = now + 1e9;
      lkvnet_node_log(s,
                      "stopped asking to remove %s (%d s): the cluster "
                      "refuses (%s); restart this node with --join to ask "
                      "again",
                      s->my_url, LKVNET_JOIN_TIMEOUT_MS / 1000,
                      s->join_refusal.msg);
      return;
    }
    s->join_phase = LKVNET_JOIN_DONE;
    lkv_seterr(&s->join_err, LKV_IOERROR,
               "could not join the cluster through %s within %d s (last "
               "answer: %.150s)",
               s->join_url, LKVNET_JOIN_TIMEOUT_MS / 1000,
               s->join_err.msg[0] ? s->join_err.msg : "none");
    lkvnet_node_log(s, "%s", s->join_err.msg);
    event_base_loopexit(s->base, NULL);
    return;
  }
  if ((r = evhttp_request_new(on_join_reply, s)) == NULL) return;
  h = evhttp_request_get_output_headers(r);
  evhttp_add_header(h, "Host", s->join_hostport);
  evhttp_add_header(h, "Content-Type", "application/json");
  if (s->token != NULL) evhttp_add_header(h, LKVNET_TOKEN_HEADER, s->token);
  memset(&b, 0, sizeof b);
  lkvnet_jbuf_lit(&b, "{\"node_url\": ");
  lkvnet_jbuf_str(&b, s->my_url, strlen(s->my_url));
  lkvnet_jbuf_lit(&b, "}");
  evbuffer_add(evhttp_request_get_output_buffer(r), b.data, b.len);
  lkvnet_jbuf_free(&b);
  snprintf(uri, sizeof uri, "%s",
           join_routes[s->join_phase == LKVNET_JOIN_REMOVE]);
  s->join_inflight = 1;
  if (evhttp_make_request(s->join_conn, r, EVHTTP_REQ_POST, uri) != 0) {
    s->join_inflight = 0; /* no callback will come (libevent 2.1) */
    evhttp_request_free(r);
    s->join_next = now + 1.0;
  }
}

static const char *join_state(const lkvnet_server *s) {
  if (s->join_url == NULL || s->join_phase == LKVNET_JOIN_DONE) return NULL;
  if (s->join_refused) return "refused";
  switch (s->join_phase) {
    case LKVNET_JOIN_ADD: return "adding";
    case LKVNET_JOIN_REMOVE: return "removing";
    default: return "catching up";
  }
}

void lkvnet_node_put_join(lkvnet_server *s, lkvnet_jbuf *b) {
  const char *state = join_state(s);
  if (state == NULL) return;
  lkvnet_jbuf_lit(b, "\"join\": {\"state\": \"");
  lkvnet_jbuf_lit(b, state);
  lkvnet_jbuf_lit(b, "\", \"fresh\": ");
  lkvnet_jbuf_lit(b, s->join_unfinished ? "true" : "false");
  if (s->join_phase == LKVNET_JOIN_CATCHUP) {
    lkvnet_jbuf_lit(b, ", \"index\": ");
    lkvnet_jbuf_u64(b, s->join_index);
  }
  if (s->join_refused) {
    lkvnet_jbuf_lit(b, ", \"refusal\": ");
    lkvnet_jbuf_str(b, s->join_refusal.msg, strlen(s->join_refusal.msg));
  }
  if (s->join_err.msg[0] != '\0') {
    lkvnet_jbuf_lit(b, ", \"last_error\": ");
    lkvnet_jbuf_str(b, s->join_err.msg, strlen(s->join_err.msg));
  }
  lkvnet_jbuf_lit(b, "}, ");
}

int lkvnet_node_join_why(lkvnet_server *s, char *why, size_t n) {
  const char *state = join_state(s);
  if (state == NULL) return 0;
  if (s->join_refused)
    snprintf(why, n,
             "cannot join: the cluster counts %s as a member already, "
             "whose data this node does not have, and refuses to remove "
             "it (%s)",
             s->my_url, s->join_refusal.msg);
  else if (s->join_phase == LKVNET_JOIN_CATCHUP)
    snprintf(why, n,
             "not a member yet: joining the cluster, catching up to index "
             "%llu (its log durable through %llu)",
             (unsigned long long)s->join_index,
             (unsigned long long)lkvnet_rlog_durable_index(s->rlog));
  else
    snprintf(why, n, "not a member yet: joining the cluster (%s %s)", state,
             s->my_url);
  return 1;
}

int lkvnet_node_join_open(lkvnet_server *s, const char *url, lkv_err *err) {
  char u[LKVNET_URL_MAX + 1], why[120];
  if (lkvnet_url_normalize(url, strlen(url), u, why, sizeof why) != 0)
    return lkv_seterr(err, LKV_INVALID, "--join %s: %s", url, why);
  if ((s->join_url = strdup(u)) == NULL)
    return lkv_seterr(err, LKV_NOMEM, "join");
  if ((s->join_conn = lkvnet_node_connect_url(s, u, &s->join_hostport, err)) ==
      NULL)
    return err ? err->code : LKV_INVALID;
  /* a little longer than the add itself may take (the write timeout) */
  evhttp_connection_set_timeout(s->join_conn,
                                (s->write_timeout_ms + 999) / 1000 + 2);
  s->join_phase = LKVNET_JOIN_ADD;
  s->join_deadline = lkvnet_node_now() + LKVNET_JOIN_TIMEOUT_MS / 1000.0;
  return LKV_OK;
}

void lkvnet_node_members_poll(lkvnet_server *s) {
  lkvnet_raft_status st;
  double now = lkvnet_node_now();
  if (s->conf_index != 0 && now >= s->conf_h.deadline) {
    lkvnet_node_held_error(&s->conf_h, 503,
                           "outcome unknown: the configuration change at "
                           "index %llu was not applied within %d ms; it may "
                           "still take effect",
                           (unsigned long long)s->conf_index,
                           s->write_timeout_ms);
    s->conf_index = 0;
  }
  if (s->log_failed) return;
  lkvnet_raft_status_get(s->raft, &st);
  if (s->leader && !s->draining && st.pending_conf_index == 0 &&
      st.transferee == LKVNET_RAFT_NONE && st.conf.n_learners > 0)
    promote(s, &st);
  probe(s, &st, now);
  join_poll(s, &st, now);
}

/* }====================================================================== */
