/* peers.c - the nodes this node knows, by id and URL (docs/replication.md,
 * "Membership"): a fixed array of peer slots that never moves (requests
 * in flight point at their slot), filled from NODE_URLS at open and then
 * from whatever names a member: a configuration change's entry (its URL
 * rides in the entry's context), the URL list that comes with a
 * snapshot, the configuration kept in the engine, and the sender's URL
 * on every /raft and /snapshot request (X-Lunakv-From). Also what makes
 * a node a member: its core's configuration names it, and no leader has
 * said it does not count it (X-Lunakv-Not-Member). Calls node.c and
 * memberconf.c only. Runs on the event loop's thread; the node's state
 * is node.h. */
#include <event2/http.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "memberconf.h"
#include "node.h"

/* {======================================================================
** The slots
** ======================================================================= */

lkvnet_peer *lkvnet_node_peer_by_id(lkvnet_server *s, uint64_t id) {
  size_t i;
  for (i = 0; i < s->npeers; i++)
    if (s->peers[i].id == id) return &s->peers[i];
  return NULL;
}

/* A slot no request, stream or forwarding connection points at, for a
 * node that is no member: it may serve another node. */
static lkvnet_peer *free_slot(lkvnet_server *s) {
  size_t i, j;
  if (s->npeers < LKVNET_PEER_SLOTS) return &s->peers[s->npeers++];
  for (i = 0; i < s->npeers; i++) {
    lkvnet_peer *p = &s->peers[i];
    int used = p->member || p->id == s->leader_id || p->inflight > 0 ||
               p->snap != NULL || p->snap_inflight || p->pend != NULL;
    for (j = 0; j < s->nfwd && !used; j++)
      used = s->fwd[j] != NULL && s->fwd_peer[j] == i;
    if (used) continue;
    if (p->conn) evhttp_connection_free(p->conn);
    if (p->snap_conn) evhttp_connection_free(p->snap_conn);
    free(p->url);
    free(p->hostport);
    memset(p, 0, sizeof *p);
    return p;
  }
  return NULL;
}

lkvnet_peer *lkvnet_node_peer_learn(lkvnet_server *s, const char *url) {
  uint64_t id = lkvnet_node_id_of(url);
  lkvnet_peer *p;
  lkv_err err;
  if (id == s->id) return NULL;
  if ((p = lkvnet_node_peer_by_id(s, id)) != NULL) return p;
  if ((p = free_slot(s)) == NULL) {
    lkvnet_node_log(s, "cannot keep %s: %d other nodes known already", url,
                    LKVNET_PEER_SLOTS);
    return NULL;
  }
  err.msg[0] = '\0';
  p->s = s;
  p->id = id;
  if ((p->url = strdup(url)) == NULL ||
      (p->conn = lkvnet_node_connect_url(s, url, &p->hostport, &err)) == NULL) {
    lkvnet_node_log(s, "cannot keep %s: %s", url,
                    err.msg[0] ? err.msg : "out of memory");
    if (p->conn) evhttp_connection_free(p->conn);
    free(p->url);
    free(p->hostport);
    memset(p, 0, sizeof *p); /* id 0: an empty slot, found by nobody */
    if (p == &s->peers[s->npeers - 1]) s->npeers--;
    return NULL;
  }
  /* a silent peer is unreachable after this, not after TCP's minutes */
  evhttp_connection_set_timeout(p->conn, 2);
  return p;
}

int lkvnet_node_peers_open(lkvnet_server *s, lkv_err *err) {
  size_t i;
  if ((s->peers = calloc(LKVNET_PEER_SLOTS, sizeof *s->peers)) == NULL)
    return lkv_seterr(err, LKV_NOMEM, "peers");
  for (i = 0; i < s->nnodes; i++)
    if (s->node_ids[i] != s->id &&
        lkvnet_node_peer_learn(s, s->nodes[i]) == NULL)
      return lkv_seterr(err, LKV_INVALID, "cannot use node URL %s",
                        s->nodes[i]);
  return LKV_OK;
}

const char *lkvnet_node_url_of(lkvnet_server *s, uint64_t id) {
  lkvnet_peer *p;
  if (id == LKVNET_RAFT_NONE) return NULL;
  if (id == s->id) return s->my_url;
  p = lkvnet_node_peer_by_id(s, id);
  return p != NULL ? p->url : NULL;
}

/* }====================================================================== */

/* {======================================================================
** Learning URLs
** ======================================================================= */

void lkvnet_node_learn_url(lkvnet_server *s, const char *url, size_t len,
                           uint64_t id) {
  char u[LKVNET_URL_MAX + 1];
  if (lkvnet_url_normalize(url, len, u, NULL, 0) != 0) return;
  if (id != LKVNET_RAFT_NONE && lkvnet_node_id_of(u) != id) return;
  (void)lkvnet_node_peer_learn(s, u);
}

void lkvnet_node_learn_conf_entry(lkvnet_server *s, uint64_t index,
                                  const unsigned char *data, size_t len) {
  lkvnet_raft_confchange cc;
  const char *p, *end, *comma;
  lkvnet_peer *peer;
  if (lkvnet_raft_conf_decode(data, len, &cc, NULL) != LKV_OK) return;
  /* the context: the URL of the node the change is about, then the URLs
   * of the members before it (lkvnet_node_conf_ctx) */
  p = (const char *)cc.ctx;
  end = p + cc.ctx_len;
  for (; p < end; p = comma + 1) {
    if ((comma = memchr(p, ',', (size_t)(end - p))) == NULL) comma = end;
    if (p == (const char *)cc.ctx)
      lkvnet_node_learn_url(s, p, (size_t)(comma - p), cc.node);
    else
      lkvnet_node_learn_url(s, p, (size_t)(comma - p), LKVNET_RAFT_NONE);
  }
  if (cc.op == LKVNET_RAFT_CONF_ADD_LEARNER &&
      (peer = lkvnet_node_peer_by_id(s, cc.node)) != NULL &&
      index > peer->added_index)
    peer->added_index = index;
}

size_t lkvnet_node_conf_ctx(lkvnet_server *s, const char *url,
                            const lkvnet_raft_conf *c, char *buf, size_t n) {
  size_t l = url ? strlen(url) : 0;
  if (l + 2 >= n) return 0;
  memcpy(buf, url, l);
  buf[l] = ',';
  return l + 1 + lkvnet_node_members_list(s, c, buf + l + 1, n - l - 1);
}

void lkvnet_node_learn_members(lkvnet_server *s, const char *list) {
  while (list != NULL && *list != '\0') {
    const char *end = strchr(list, ',');
    size_t n = end ? (size_t)(end - list) : strlen(list);
    while (n > 0 && *list == ' ') list++, n--;
    lkvnet_node_learn_url(s, list, n, LKVNET_RAFT_NONE);
    list = end ? end + 1 : NULL;
  }
}

static uint64_t member_at(const lkvnet_raft_conf *c, size_t i) {
  return i < c->n_voters ? c->voters[i] : c->learners[i - c->n_voters];
}

size_t lkvnet_node_members_list(lkvnet_server *s, const lkvnet_raft_conf *c,
                                char *buf, size_t n) {
  size_t i, off = 0;
  buf[0] = '\0';
  for (i = 0; i < c->n_voters + c->n_learners; i++) {
    const char *u = lkvnet_node_url_of(s, member_at(c, i));
    size_t l;
    if (u == NULL) continue;
    l = strlen(u);
    if (off + l + 2 >= n) break;
    if (off > 0) buf[off++] = ',';
    memcpy(buf + off, u, l);
    off += l;
    buf[off] = '\0';
  }
  return off;
}

void lkvnet_node_keptconf_of(lkvnet_server *s, const lkvnet_raft_conf *c,
                             lkvnet_keptconf *k) {
  size_t i;
  memset(k, 0, sizeof *k);
  k->conf = *c;
  for (i = 0; i < c->n_voters + c->n_learners; i++) {
    const char *u = lkvnet_node_url_of(s, member_at(c, i));
    /* kept normalised: a NODE_URLS spelling the decode would refuse
     * (never the case for `lunakv node`'s) is kept as unknown */
    if (u == NULL ||
        lkvnet_url_normalize(u, strlen(u), k->urls[i], NULL, 0) != 0 ||
        lkvnet_node_id_of(k->urls[i]) != member_at(c, i))
      k->urls[i][0] = '\0';
  }
}

static void put_url(lkvnet_server *s, lkvnet_jbuf *b, uint64_t id) {
  const char *u = lkvnet_node_url_of(s, id);
  char hex[24];
  if (u == NULL) {
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)id);
    u = hex;
  }
  lkvnet_jbuf_str(b, u, strlen(u));
}

void lkvnet_node_put_members(lkvnet_server *s, lkvnet_jbuf *b,
                             const lkvnet_raft_conf *c) {
  size_t i;
  lkvnet_jbuf_lit(b, "\"voters\": [");
  for (i = 0; i < c->n_voters; i++) {
    if (i) lkvnet_jbuf_lit(b, ", ");
    put_url(s, b, c->voters[i]);
  }
  lkvnet_jbuf_lit(b, "], \"learners\": [");
  for (i = 0; i < c->n_learners; i++) {
    if (i) lkvnet_jbuf_lit(b, ", ");
    put_url(s, b, c->learners[i]);
  }
  lkvnet_jbuf_lit(b, "]");
}

/* }====================================================================== */

/* {======================================================================
** Who is a member
** ======================================================================= */

void lkvnet_node_peers_sync(lkvnet_server *s) {
  lkvnet_raft_status st;
  size_t i;
  lkvnet_raft_status_get(s->raft, &st);
  for (i = 0; i < s->npeers; i++) {
    lkvnet_peer *p = &s->peers[i];
    p->member = lkvnet_raft_conf_is_voter(&st.conf, p->id) ||
                lkvnet_raft_conf_is_learner(&st.conf, p->id);
  }
}

int lkvnet_node_is_member(lkvnet_server *s) {
  lkvnet_raft_status st;
  /* a join that is unfinished: not the member its URL may name yet */
  if (s->not_member || s->join_unfinished) return 0;
  lkvnet_raft_status_get(s->raft, &st);
  return st.voter || st.learner;
}

void lkvnet_node_raft_heard(lkvnet_server *s, lkvnet_req *req,
                            const lkvnet_raft_msg *first) {
  const char *u = lkvnet_req_header(req, LKVNET_FROM_HEADER);
  uint64_t from = first != NULL ? first->from : LKVNET_RAFT_NONE;
  char nu[LKVNET_URL_MAX + 1];
  if (u != NULL && lkvnet_url_normalize(u, strlen(u), nu, NULL, 0) == 0 &&
      (from == LKVNET_RAFT_NONE || lkvnet_node_id_of(nu) == from)) {
    from = lkvnet_node_id_of(nu);
    (void)lkvnet_node_peer_learn(s, nu);
  }
  if (first != NULL && first->to == s->id &&
      (first->type == LKVNET_RAFT_MSG_APP ||
       first->type == LKVNET_RAFT_MSG_HEARTBEAT)) {
    s->leader_heard = lkvnet_node_now();
    if (s->not_member && first->term >= s->not_member_term) {
      s->not_member = 0;
      lkvnet_node_log(s,
                      "the leader (term %llu) counts this node as a "
                      "member again",
                      (unsigned long long)first->term);
    }
  }
  if (s->leader && from != LKVNET_RAFT_NONE && from != s->id) {
    /* the leader's configuration is the newest (a change takes effect
     * when appended): a sender outside it is not a member, whatever its
     * own configuration says */
    lkvnet_raft_status st;
    lkvnet_raft_status_get(s->raft, &st);
    if (!lkvnet_raft_conf_is_voter(&st.conf, from) &&
        !lkvnet_raft_conf_is_learner(&st.conf, from)) {
      char t[24];
      snprintf(t, sizeof t, "%llu", (unsigned long long)st.term);
      lkvnet_req_add_header(req, LKVNET_NOT_MEMBER_HEADER, t);
    }
  }
}

void lkvnet_node_told_not_member(lkvnet_server *s, lkvnet_peer *p,
                                 const char *term) {
  uint64_t t = strtoull(term, NULL, 10);
  if (t < s->term) return; /* a stale leader's view */
  if (!s->not_member)
    lkvnet_node_log(s,
                    "the leader %s (term %llu) does not count this node as a "
                    "member: not taking part (no campaigning) until a leader "
                    "does",
                    p->url, (unsigned long long)t);
  s->not_member = 1;
  if (t > s->not_member_term) s->not_member_term = t;
}

/* }====================================================================== */
