/* raftnode.c - the node as the driver of the Raft core (raft.h, "The
 * driver contract"): opening it over the term file and the log, the Ready
 * cycle (install, write the entries, persist the hard state, send, apply,
 * release reads), the log's durability reported to it, and the clients'
 * writes (proposals) and consistent reads (ReadIndex) handed to it.
 * Everything that steps or ticks the core elsewhere wakes this file's
 * cycle through the loop (lkvnet_node_wake); server.c runs it. Runs on
 * the event loop's thread; the node's state is node.h. */
#include <stdlib.h>
#include <string.h>

#include "coding.h"
#include "err.h"
#include "hardstate.h"
#include "json.h"
#include "memberconf.h"
#include "node.h"
#include "rlog.h"

/* {======================================================================
** Opening
** ======================================================================= */

/* The configuration the engine keeps (LKVNET_CONF_KEY), its members'
 * URLs learned; the founding voters (every node of NODE_URLS) when it has
 * none yet, and none for a node that joins (--join). */
static int load_conf(lkvnet_server *s, lkv_err *err) {
  size_t i;
  lkvnet_keptconf k;
  lkv_err e;
  int rc = lkv_db_get(s->db, LKVNET_CONF_KEY, sizeof LKVNET_CONF_KEY - 1,
                      LKV_SEQ_LATEST, &s->getbuf, err);
  memset(&s->conf, 0, sizeof s->conf);
  if (rc == LKV_NOTFOUND) {
    for (i = 0; !s->joining && i < s->nnodes && i < LKVNET_RAFT_MAX_MEMBERS;
         i++)
      s->conf.voters[s->conf.n_voters++] = s->node_ids[i];
    return LKV_OK;
  }
  if (rc != LKV_OK) return rc;
  if ((rc = lkvnet_keptconf_decode((const unsigned char *)s->getbuf.data,
                                   s->getbuf.len, &k, &e)) != LKV_OK)
    return lkv_seterr(err, rc, "%s/db: %s", s->data_dir, e.msg);
  s->conf = k.conf;
  for (i = 0; i < k.conf.n_voters + k.conf.n_learners; i++)
    if (k.urls[i][0] != '\0') (void)lkvnet_node_peer_learn(s, k.urls[i]);
  return LKV_OK;
}

/* The join mark (hardstate.h): a node that joins (--join) over a fresh
 * directory - an empty log, no term file, nothing applied: the only
 * state it could have been given is none - writes it before anything
 * else, since its URL may have been a voter's whose directory was lost,
 * and that voter's votes are in no term file now; a node that finds it
 * carries on with the unfinished join. Without --join the mark is an
 * error: nothing would finish the join. */
static int join_mark_open(lkvnet_server *s, const lkvnet_rlog_stats *rs,
                          lkv_err *err) {
  int present, rc;
  if ((rc = lkvnet_joinmark_get(s->data_dir, s->env, &present, err)) != LKV_OK)
    return rc;
  if (!present && s->joining && rs->last_index == 0 && rs->base_index == 0 &&
      s->term == 0 && s->vote == 0 && s->applied_index == 0 &&
      !s->needs_snapshot) {
    if ((rc = lkvnet_joinmark_set(s->data_dir, s->env, err)) != LKV_OK)
      return rc;
    present = 1;
  }
  if (present && !s->joining)
    return lkv_seterr(err, LKV_INVALID,
                      "%s/%s: this node's --join has not finished (it "
                      "has not caught up with the cluster that added it): "
                      "start it with --join URL again",
                      s->data_dir, LKVNET_JOIN_MARK_FILE);
  s->join_unfinished = present;
  return LKV_OK;
}

int lkvnet_node_raft_open(lkvnet_server *s, lkv_err *err) {
  size_t i;
  int rc;
  lkvnet_rlog_stats rs;
  if ((s->node_ids = calloc(s->nnodes, sizeof *s->node_ids)) == NULL)
    return lkv_seterr(err, LKV_NOMEM, "node ids");
  s->id = lkvnet_node_id_of(s->my_url);
  for (i = 0; i < s->nnodes; i++) {
    size_t j;
    s->node_ids[i] = lkvnet_node_id_of(s->nodes[i]);
    for (j = 0; j < i; j++)
      if (s->node_ids[j] == s->node_ids[i])
        return lkv_seterr(err, LKV_INVALID, "NODE_URLS names %s twice",
                          s->nodes[i]);
  }
  if ((rc = lkvnet_hardstate_open(s->data_dir, s->env, &s->hs, &s->term,
                                  &s->vote, err)) != LKV_OK)
    return rc;
  lkvnet_rlog_stats_get(s->rlog, &rs);
  if (rs.last_term > s->term) {
    /* a log written before the term file kept up (a fixed leader's
     * follower): no term below the log's, and no vote in it */
    s->term = rs.last_term;
    s->vote = 0;
  }
  if ((rc = join_mark_open(s, &rs, err)) != LKV_OK) return rc;
  if ((rc = lkvnet_node_peers_open(s, err)) != LKV_OK) return rc;
  if ((rc = load_conf(s, err)) != LKV_OK) return rc;
  if ((rc = lkvnet_node_raft_new(s, err)) != LKV_OK) return rc;
  lkvnet_node_peers_sync(s);
  if (s->joining && !s->join_unfinished) {
    /* a member restarted with --join asks nothing (members.c) */
    lkvnet_raft_status st;
    lkvnet_raft_status_get(s->raft, &st);
    if (st.voter || st.learner) s->join_phase = LKVNET_JOIN_DONE;
  }
  /* a node alone needs nobody's vote: lead at once, after a restart too */
  if (lkvnet_node_may_campaign(s) && s->conf.n_voters == 1 &&
      s->conf.voters[0] == s->id)
    lkvnet_raft_campaign(s->raft);
  return LKV_OK;
}

/* }====================================================================== */

/* {======================================================================
** The Ready cycle
** ======================================================================= */

static const char *url_of(lkvnet_server *s, uint64_t id) {
  return lkvnet_node_url_of(s, id);
}

/* The followers' progress is the leader's view: a node that stops
 * leading forgets it, so nothing (log compaction, /status) reads a stale
 * match_index, and ends its snapshot streams (at a term the followers
 * left, they would only load them). */
static void forget_progress(lkvnet_server *s) {
  size_t i;
  for (i = 0; i < s->npeers; i++) {
    s->peers[i].match_index = 0;
    s->peers[i].next_index = 0;
  }
  lkvnet_node_snapshots_stop(s);
}

/* A store of the term file failed; the next Ready retries it. A disk
 * that keeps failing would otherwise log a line per Ready (ten a second
 * from heartbeats alone): one line when it starts, then one per
 * HS_LOG_EVERY seconds with the count, and one when a store succeeds. */
#define HS_LOG_EVERY 10.0
static void hs_store_failed(lkvnet_server *s, uint64_t term,
                            const lkv_err *err) {
  double now = lkvnet_node_now();
  s->hs_failures++;
  s->hs_run++;
  s->hs_unlogged++;
  if (s->hs_logged != 0 && now - s->hs_logged < HS_LOG_EVERY) return;
  if (s->hs_run == 1)
    lkvnet_node_log(s,
                    "cannot persist term %llu and vote: %s; no message "
                    "leaves until it is stored (retried at every step, "
                    "one line per %.0f s while it fails)",
                    (unsigned long long)term, err->msg, HS_LOG_EVERY);
  else
    lkvnet_node_log(s,
                    "cannot persist term %llu and vote: %s (%llu failed "
                    "tries in the last %.0f s)",
                    (unsigned long long)term, err->msg,
                    (unsigned long long)s->hs_unlogged, now - s->hs_logged);
  s->hs_logged = now;
  s->hs_unlogged = 0;
}

/* The role and the leader: routing, /status, and the writes a deposed
 * leader leaves behind. */
static void soft_state(lkvnet_server *s, const lkvnet_raft_ready *rd) {
  int was_leader = s->leader;
  if (rd->role == s->role && rd->leader == s->leader_id) return;
  s->role = rd->role;
  s->leader = rd->role == LKVNET_RAFT_LEADER;
  /* a new term's log may hold entries it never proposed: calls wait for
   * a whole apply before it starts again (funcs.c) */
  lkvnet_overlay_reset(&s->ovl, 0);
  if (rd->leader != s->leader_id) {
    s->leader_id = rd->leader;
    s->leader_url = url_of(s, rd->leader);
    if (s->leader_url != NULL)
      lkvnet_node_log(s, "leader: %s (term %llu)%s", s->leader_url,
                      (unsigned long long)rd->hs.term,
                      s->leader ? ", this node" : "");
    else
      lkvnet_node_log(s, "no leader (term %llu, %s)",
                      (unsigned long long)rd->hs.term,
                      lkvnet_raft_role_name(rd->role));
  }
  if (was_leader && !s->leader) {
    lkvnet_node_pending_unknown(s, "this node stopped leading");
    forget_progress(s);
  }
  if (s->transfer_to != LKVNET_RAFT_NONE && !s->leader &&
      rd->leader != LKVNET_RAFT_NONE) {
    /* handed over (or lost otherwise): the transfer's request learns who
     * leads now */
    lkvnet_jbuf b;
    const char *u = url_of(s, rd->leader);
    memset(&b, 0, sizeof b);
    lkvnet_jbuf_lit(&b, rd->leader == s->transfer_to
                            ? "{\"ok\": true, \"leader\": "
                            : "{\"ok\": false, \"error\": \"another node "
                              "was elected\", \"leader\": ");
    if (u != NULL)
      lkvnet_jbuf_str(&b, u, strlen(u));
    else
      lkvnet_jbuf_lit(&b, "null");
    lkvnet_jbuf_lit(&b, "}");
    lkvnet_node_held_json(&s->transfer_h,
                          rd->leader == s->transfer_to ? 200 : 503, &b);
    if (rd->leader != s->transfer_to)
      lkvnet_node_log(s, "leadership transfer: another node leads");
    s->transfer_to = LKVNET_RAFT_NONE;
  }
}

/* The log refused entry index (err): every write at or past it is
 * answered 500, and the node goes quiet once this Ready is done
 * (s->log_failed; log_recover). Not in this node's log, the entry may
 * still be in the followers' (the messages of this Ready carry it), and
 * two of them are a majority: the outcome is unknown, as docs/http_api.md
 * says of every 500 from the log. */
static void write_failed(lkvnet_server *s, uint64_t index, const lkv_err *err) {
  lkvnet_pending *p;
  lkvnet_node_log(s, "cannot append index %llu: %s", (unsigned long long)index,
                  err->msg);
  for (p = s->head; p != NULL; p = p->next)
    if (p->index >= index)
      lkvnet_node_held_error(&p->h, 500,
                             "the replication log failed: %s; index %llu "
                             "is not in this node's log (outcome unknown: "
                             "the followers may still commit it)",
                             err->msg, (unsigned long long)p->index);
  lkvnet_node_log_failed(s);
}

void lkvnet_node_log_failed(lkvnet_server *s) {
  s->log_failed = 1;
  lkvnet_overlay_reset(&s->ovl, 0);
  if (s->leader) {
    s->leader = 0;
    s->role = LKVNET_RAFT_FOLLOWER;
    s->leader_id = LKVNET_RAFT_NONE;
    s->leader_url = NULL;
    forget_progress(s);
  }
  /* quiet, it commits nothing more itself: whatever it still holds is
   * the next leader's to commit, or not */
  lkvnet_node_pending_unknown(s, "this node's log failed");
}

/* Contract b: write the entries, cutting a conflicting suffix first. */
static void write_entries(lkvnet_server *s, const lkvnet_raft_entry *ents,
                          size_t n) {
  size_t i;
  lkv_err err;
  err.msg[0] = '\0';
  if (n == 0) return;
  if (ents[0].index <= lkvnet_rlog_last_index(s->rlog)) {
    lkvnet_node_log(s, "log conflict at index %llu: cutting %llu entries",
                    (unsigned long long)ents[0].index,
                    (unsigned long long)(lkvnet_rlog_last_index(s->rlog) -
                                         ents[0].index + 1));
    if (lkvnet_rlog_truncate(s->rlog, ents[0].index - 1, &err) != LKV_OK) {
      write_failed(s, ents[0].index, &err);
      return;
    }
  }
  if (n > s->append_cap) {
    lkvnet_entry *ne = realloc(s->append_buf, n * sizeof *ne);
    if (ne == NULL) {
      lkv_seterr(&err, LKV_NOMEM, "the entries of a Ready");
      write_failed(s, ents[0].index, &err);
      return;
    }
    s->append_buf = ne;
    s->append_cap = n;
  }
  for (i = 0; i < n; i++) {
    const lkvnet_raft_entry *re = &ents[i];
    lkvnet_entry *e = &s->append_buf[i];
    memset(e, 0, sizeof *e);
    e->term = re->term;
    e->index = re->index;
    if (re->type == LKVNET_RAFT_ENTRY_NOOP) {
      e->op = LKVNET_OP_NOOP;
    } else if (re->type == LKVNET_RAFT_ENTRY_CONF) {
      /* the core's payload as it is; the member it adds is where its
       * context says (this node may have to send to it from now on) */
      e->op = LKVNET_OP_CONF;
      e->val = (const char *)re->data;
      e->vlen = re->len;
      lkvnet_node_learn_conf_entry(s, re->index, re->data, re->len);
    } else if (re->type != LKVNET_RAFT_ENTRY_NORMAL ||
               lkvnet_node_cmd_decode(re->data, re->len, &e->op, &e->key,
                                      &e->klen, &e->val, &e->vlen) != 0) {
      lkv_seterr(&err, LKV_INVALID, "not an entry this node can keep");
      write_failed(s, re->index, &err);
      return;
    }
  }
  /* one write for the whole Ready (all or none of it) */
  if (lkvnet_rlog_append_entries(s->rlog, s->append_buf, n, &err) != LKV_OK) {
    /* not written: it never becomes durable here, so it is never
     * acknowledged or counted from this node */
    write_failed(s, ents[0].index, &err);
    return;
  }
}

/* Contract d, with two filters. A node whose engine is partial (an
 * unfinished install) must never lead, so its own vote requests are
 * dropped, as a network may drop them: it stays a (pre-)candidate that
 * nobody hears, and follows the next leader that reaches it. Its core's
 * acknowledgements go too: opened over a log cut at index B, the core
 * acknowledges B to any leader, which then never sends below B + 1; a
 * leader that never compacted could then neither offer its whole log
 * (the rebuild, follow.c) nor send a snapshot. The node takes no entries
 * meanwhile (follow.c refuses them), so nothing is lost with them. A
 * node whose join is unfinished asks for no vote either (it is not
 * ticked, and drops the requests that would make it campaign: follow.c,
 * so this is the second line); its acknowledgements are of what its log
 * holds, and go. */
static void send_msgs(lkvnet_server *s, const lkvnet_raft_msg *msgs, size_t n) {
  size_t i, j = 0;
  lkvnet_raft_msg *keep;
  if (n == 0) return;
  if (lkvnet_node_may_campaign(s)) {
    lkvnet_node_send(s, msgs, n);
    return;
  }
  if ((keep = malloc(n * sizeof *keep)) == NULL) return;
  for (i = 0; i < n; i++)
    if (msgs[i].type != LKVNET_RAFT_MSG_VOTE &&
        msgs[i].type != LKVNET_RAFT_MSG_PREVOTE &&
        !(s->needs_snapshot && msgs[i].type == LKVNET_RAFT_MSG_APP_RESP &&
          !msgs[i].reject))
      keep[j++] = msgs[i];
  lkvnet_node_send(s, keep, j);
  free(keep);
}

/* After a failed append the core believes entries written that are not,
 * and a core opened over a log takes all of it as durable: so the node
 * stays quiet (no Ready taken, nothing stepped or ticked: as if cut off)
 * until its log is whole and durable again, then reopens the core over
 * it, as after a restart (its hard state is on disk). A stuck log never
 * is: the node stays quiet until it is restarted. 1 while quiet. */
static int log_recover(lkvnet_server *s) {
  lkv_err err;
  if (!s->log_failed) return 0;
  if (lkvnet_rlog_error(s->rlog, &err) != LKV_OK ||
      lkvnet_rlog_durable_index(s->rlog) < lkvnet_rlog_last_index(s->rlog))
    return 1; /* the syncer's next report tries again */
  s->log_failed = 0;
  err.msg[0] = '\0';
  lkvnet_raft_free(s->raft);
  s->raft = NULL;
  if (lkvnet_node_raft_new(s, &err) != LKV_OK) {
    lkvnet_node_log(s, "cannot reopen the Raft core: %s", err.msg);
    abort();
  }
  lkvnet_node_log(s, "the log is whole again: rejoining (term %llu)",
                  (unsigned long long)s->term);
  s->role = LKVNET_RAFT_FOLLOWER;
  s->leader_id = LKVNET_RAFT_NONE;
  s->leader_url = NULL;
  if (lkvnet_node_may_campaign(s) && s->conf.n_voters == 1 &&
      s->conf.voters[0] == s->id)
    lkvnet_raft_campaign(s->raft);
  return 0;
}

void lkvnet_node_raft_run(lkvnet_server *s) {
  size_t i;
  if (log_recover(s)) return;
  lkvnet_node_snapshot_reports(s);
  while (!s->log_failed && lkvnet_raft_has_ready(s->raft)) {
    lkvnet_raft_ready rd;
    int hs_ok = 1, install_failed = 0, synced = 0, own;
    lkvnet_raft_ready_get(s->raft, &rd);
    s->in_ready = 1;
    soft_state(s, &rd);
    if (rd.has_snapshot && s->install_stepped &&
        lkvnet_node_install_finish(s, rd.snap_index, rd.snap_term,
                                   &rd.snap_conf, 1) != 0) {
      /* the core takes the install as done, and this Ready's messages
       * acknowledge it: none leaves, and the node goes quiet as after a
       * failed log write (log_recover reopens the core over the log as
       * it is, the install mark still in the engine, and the leader
       * sends the snapshot again). The end is not due any more: ending
       * it without the rewrite would call the engine whole over a log
       * that never restarted after the snapshot. */
      s->install_stepped = 0;
      install_failed = 1;
      lkvnet_node_log_failed(s);
    }
    /* a leader alone in its cluster, and a follower, overlap their
     * fdatasync with nothing this loop would do meanwhile: done here, in
     * this pass, it costs less than the syncer's (the wake-ups both ways,
     * and each answer a loop iteration later); the Ready after it
     * commits, applies and answers (the leader) or acknowledges (the
     * follower). A leader with followers leaves it to the syncer, and
     * goes on with their answers meanwhile. */
    own = !s->log_failed &&
          ((s->leader && s->conf.n_voters + s->conf.n_learners == 1) ||
           s->role == LKVNET_RAFT_FOLLOWER);
    lkvnet_rlog_set_owner_syncs(s->rlog, own);
    if (!install_failed) write_entries(s, rd.entries, rd.n_entries);
    if (own && rd.n_entries > 0) synced = lkvnet_rlog_sync_here(s->rlog) == 1;
    /* s->term and s->vote are what the term file holds: not only when
     * this Ready changed them, but while they differ from the core's (a
     * store failed in an earlier Ready, whose hard state the core takes
     * as written once advanced), store them, Ready after Ready */
    if (rd.hs.term != s->term || rd.hs.vote != s->vote) {
      lkv_err err;
      err.msg[0] = '\0';
      if (lkvnet_hardstate_store(s->hs, rd.hs.term, rd.hs.vote, &err) !=
          LKV_OK) {
        /* every message carries the term (a vote, an answer): none
         * leaves until it is durable (as if lost) */
        hs_store_failed(s, rd.hs.term, &err);
        hs_ok = 0;
      } else {
        if (s->hs_run != 0)
          lkvnet_node_log(s,
                          "persisted term %llu and vote after %llu failed "
                          "tries",
                          (unsigned long long)rd.hs.term,
                          (unsigned long long)s->hs_run);
        s->hs_run = s->hs_unlogged = 0;
        s->hs_logged = 0;
        s->term = rd.hs.term;
        s->vote = rd.hs.vote;
      }
    }
    if (!install_failed && rd.hs.commit > s->commit_index)
      s->commit_index = rd.hs.commit;
    if (hs_ok && !install_failed) send_msgs(s, rd.msgs, rd.n_msgs);
    if (!s->needs_snapshot)
      lkvnet_node_apply_entries(s, rd.committed, rd.n_committed);
    for (i = 0; i < rd.n_reads; i++)
      lkvnet_node_read_released(s, rd.reads[i].ctx, rd.reads[i].index,
                                rd.reads[i].ok && !install_failed);
    lkvnet_raft_advance(s->raft);
    s->in_ready = 0;
    if (synced) lkvnet_node_raft_durable(s);
    lkvnet_node_snapshot_reports(s); /* a stream this Ready's sends ended */
  }
  if (s->install_stepped) {
    /* the core needed no install: its log already holds the snapshot's
     * entry; the engine holds the state at that index */
    (void)lkvnet_node_install_finish(s, s->install_index, s->install_term,
                                     &s->install_conf, 0);
  }
  lkvnet_node_serve_waiters(s);
  lkvnet_node_peers_sync(s);
  if (s->leader) {
    /* the followers' progress, for log compaction and /status */
    lkvnet_raft_status st;
    lkvnet_raft_status_get(s->raft, &st);
    for (i = 0; i < st.n_progress; i++) {
      lkvnet_peer *p = lkvnet_node_peer_by_id(s, st.progress[i].id);
      if (p == NULL) continue;
      p->match_index = st.progress[i].match;
      p->next_index = st.progress[i].next;
    }
  }
  lkvnet_node_parked_poll(s); /* a leader may be known now */
}

void lkvnet_node_raft_durable(lkvnet_server *s) {
  uint64_t d = lkvnet_rlog_durable_index(s->rlog), t;
  lkvnet_rlog_stats rs;
  if (d == 0) return;
  lkvnet_rlog_stats_get(s->rlog, &rs);
  if (d == rs.base_index)
    t = rs.base_term;
  else if (lkvnet_rlog_term_at(s->rlog, d, &t) != LKV_OK)
    return;
  lkvnet_raft_durable(s->raft, d, t);
}

/* }====================================================================== */

/* {======================================================================
** Clients' writes and consistent reads
** ======================================================================= */

int lkvnet_node_write_check(lkvnet_server *s, lkvnet_req *req, int route,
                            double start) {
  lkv_err err;
  if (s->draining) {
    lkvnet_node_reply_error(s, req, route, start, 503,
                            "the node is shutting down");
    return 0;
  }
  if (s->apply_err.code != LKV_OK) {
    lkvnet_node_reply_error(s, req, route, start, 500, "writes are stopped: %s",
                            s->apply_err.msg);
    return 0;
  }
  err.code = LKV_OK;
  err.msg[0] = '\0';
  if (s->log_failed && log_recover(s) == 0)
    lkvnet_node_raft_run(s); /* a node alone leads again at once */
  if (lkvnet_rlog_error(s->rlog, &err) != LKV_OK) {
    /* sticky: nothing written now could become durable */
    lkvnet_node_reply_error(s, req, route, start, 500,
                            "the replication log failed: %s", err.msg);
    return 0;
  }
  return 1;
}

void lkvnet_node_write_begin(lkvnet_server *s, lkvnet_req *req, int route,
                             double start, int op, const char *key, size_t klen,
                             const char *val, size_t vlen) {
  unsigned char *cmd;
  size_t n;
  if (!lkvnet_node_write_check(s, req, route, start)) return;
  if (lkvnet_node_is_reserved(key, klen)) {
    lkvnet_node_reply_error(
        s, req, route, start, 400,
        "keys starting with \\xff\\xfflunakv/ are reserved");
    return;
  }
  if (klen > LKV_MAX_KEY_BYTES) {
    lkvnet_node_reply_error(s, req, route, start, 413,
                            "key is %zu bytes; the limit is %u", klen,
                            (unsigned)LKV_MAX_KEY_BYTES);
    return;
  }
  if (vlen > LKV_MAX_VALUE_BYTES) {
    lkvnet_node_reply_error(s, req, route, start, 413,
                            "value is %zu bytes; the limit is %u", vlen,
                            (unsigned)LKV_MAX_VALUE_BYTES);
    return;
  }
  n = lkvnet_node_cmd_size(klen, vlen);
  if ((cmd = malloc(n)) == NULL) {
    lkvnet_node_reply_error(s, req, route, start, 500, "out of memory");
    return;
  }
  lkvnet_node_cmd_encode(cmd, op, key, klen, val, vlen);
  (void)lkvnet_node_propose(s, req, route, start, cmd, n, klen + vlen);
  free(cmd);
}

/* The writes of a command just proposed at index, for the calls that run
 * before it applies (overlay.c); and the last index that wrote a stored
 * library, whose apply the calls wait for (they run the libraries the
 * engine holds). The command was checked by whoever built it. */
static void overlay_note(lkvnet_server *s, uint64_t index,
                         const unsigned char *cmd, size_t n) {
  const char *key, *val;
  size_t klen, vlen, off = 4, i, count;
  lkvnet_fn_write w;
  int op;
  if (lkvnet_node_cmd_decode(cmd, n, &op, &key, &klen, &val, &vlen) != 0)
    return;
  if (op != LKVNET_OP_BATCH) {
    w.op = op == LKVNET_OP_SET ? LKVNET_FN_SET : LKVNET_FN_DELETE;
    w.key = key;
    w.klen = klen;
    w.val = val;
    w.vlen = vlen;
    lkvnet_overlay_add(&s->ovl, index, &w, 1);
    return;
  }
  count = vlen >= 4 ? lkv_get32((const unsigned char *)val) : 0;
  for (i = 0; i < count && lkvnet_node_batch_next((const unsigned char *)val,
                                                  vlen, &off, &w) == 0;
       i++) {
    if (lkvnet_node_is_library_key(w.key, w.klen)) s->lib_index = index;
    lkvnet_overlay_add(&s->ovl, index, &w, 1);
  }
}

lkvnet_pending *lkvnet_node_propose(lkvnet_server *s, lkvnet_req *req,
                                    int route, double start,
                                    const unsigned char *cmd, size_t n,
                                    size_t bytes) {
  uint64_t index, term;
  lkv_err err;
  int rc;
  if (s->log_failed) {
    /* a write of the log failed a moment ago: not leading until the log
     * is whole and durable again (log_recover) */
    lkvnet_node_reply_no_leader(s, req, route, start);
    return NULL;
  }
  if (lkvnet_node_apply_too_far_behind(s)) {
    /* the engine has not kept up (or refuses): more writes would only
     * wait in memory for an apply that is already far behind */
    s->apply_lag_refusals++;
    lkvnet_req_add_header(req, "Retry-After", "1");
    lkvnet_node_reply_error(
        s, req, route, start, 503,
        "%llu committed entries wait for the engine "
        "(flushing or compacting); refusing writes "
        "until it catches up",
        (unsigned long long)(s->commit_index - s->applied_index));
    return NULL;
  }
  if (s->pending_bytes + bytes + LKVNET_PENDING_OVERHEAD > s->max_uncommitted) {
    /* without a majority every refused write would still sit in memory
     * (it is in the log and may commit later): past this, refuse them
     * before they are written */
    lkvnet_node_reply_error(s, req, route, start, 503,
                            "%zu bytes of writes are waiting "
                            "for a majority; refusing more until it is back",
                            s->pending_bytes);
    return NULL;
  }
  err.msg[0] = '\0';
  rc = lkvnet_raft_propose(s->raft, cmd, n, &index, &term, &err);
  if (rc == LKV_BUSY) {
    /* not the leader after all, or a transfer runs: nothing was written;
     * it goes again once a leader is usable */
    lkvnet_node_park(s, req, route, start);
    return NULL;
  }
  if (rc != LKV_OK) {
    lkvnet_node_reply_error(s, req, route, start,
                            lkvnet_node_http_status_of(rc), "%s", err.msg);
    return NULL;
  }
  overlay_note(s, index, cmd, n);
  if (lkvnet_node_pending_push(s, index, term,
                               bytes + LKVNET_PENDING_OVERHEAD) != 0) {
    /* proposed but untracked: its fate cannot be told to the client */
    lkvnet_node_reply_error(s, req, route, start, 503,
                            "outcome unknown: out of memory tracking index "
                            "%llu",
                            (unsigned long long)index);
    lkvnet_node_wake(s);
    return NULL;
  }
  lkvnet_node_hold(s, &s->tail->h, req, route, start,
                   start + s->write_timeout_ms / 1000.0);
  lkvnet_node_wake(s);
  return s->tail;
}

int lkvnet_node_transfer_begin(lkvnet_server *s, lkvnet_req *req, double start,
                               const char *url, size_t len) {
  uint64_t target = LKVNET_RAFT_NONE;
  lkvnet_raft_status st;
  lkv_err err;
  size_t i;
  if (s->log_failed) {
    if (req) lkvnet_node_reply_no_leader(s, req, LKVNET_ROUTE_TRANSFER, start);
    return -1;
  }
  lkvnet_raft_status_get(s->raft, &st);
  if (url != NULL) {
    char u[512];
    if (len >= sizeof u || memchr(url, '\0', len) != NULL) {
      if (req)
        lkvnet_node_reply_error(s, req, LKVNET_ROUTE_TRANSFER, start, 400,
                                "node_url is not a node URL");
      return -1;
    }
    memcpy(u, url, len);
    u[len] = '\0';
    target = lkvnet_node_id_of(u);
    if (!lkvnet_raft_conf_is_voter(&st.conf, target)) {
      if (req)
        lkvnet_node_reply_error(s, req, LKVNET_ROUTE_TRANSFER, start, 400,
                                "%s is not a voter of this cluster", u);
      return -1;
    }
    if (target == s->id) {
      if (req) {
        lkvnet_jbuf b;
        memset(&b, 0, sizeof b);
        lkvnet_jbuf_lit(&b, "{\"ok\": true, \"leader\": ");
        lkvnet_jbuf_str(&b, s->my_url, strlen(s->my_url));
        lkvnet_jbuf_lit(&b, "}");
        lkvnet_node_reply_json(s, req, LKVNET_ROUTE_TRANSFER, start, 200, &b);
      }
      return -1; /* it leads already: nothing to do */
    }
  } else {
    /* the most caught-up other voter the transport reaches: it needs
     * the least to catch up */
    uint64_t best = 0;
    for (i = 0; i < st.n_progress; i++) {
      lkvnet_peer *p = lkvnet_node_peer_by_id(s, st.progress[i].id);
      if (p != NULL && p->state == LKVNET_PEER_UP && st.progress[i].voter &&
          st.progress[i].recent_active &&
          (target == LKVNET_RAFT_NONE || st.progress[i].match > best)) {
        target = st.progress[i].id;
        best = st.progress[i].match;
      }
    }
    if (target == LKVNET_RAFT_NONE) return -1;
  }
  if (s->transfer_to != LKVNET_RAFT_NONE) {
    if (req)
      lkvnet_node_reply_error(s, req, LKVNET_ROUTE_TRANSFER, start, 409,
                              "a leadership transfer is under way");
    return -1;
  }
  err.msg[0] = '\0';
  if (lkvnet_raft_transfer(s->raft, target, &err) != LKV_OK) {
    if (req)
      lkvnet_node_reply_error(s, req, LKVNET_ROUTE_TRANSFER, start, 409,
                              "cannot transfer the leadership now: %s",
                              err.msg[0] ? err.msg : "busy");
    return -1;
  }
  s->transfer_to = target;
  /* the core abandons a transfer after an election timeout; a node that
   * is stopping waits at most a second or ten heartbeats for it: a
   * target that went down meanwhile must not hold the stop */
  s->transfer_deadline = 2.0 * s->election_ms / 1000.0;
  if (req == NULL) {
    double quick = 10.0 * s->heartbeat_ms / 1000.0;
    if (quick < 1.0) quick = 1.0;
    if (quick < s->transfer_deadline) s->transfer_deadline = quick;
  }
  s->transfer_deadline += lkvnet_node_now();
  if (req)
    lkvnet_node_hold(s, &s->transfer_h, req, LKVNET_ROUTE_TRANSFER, start,
                     s->transfer_deadline);
  lkvnet_node_log(s, "leadership transfer to %s", url_of(s, target));
  lkvnet_node_wake(s);
  return 0;
}

void lkvnet_node_transfer_poll(lkvnet_server *s) {
  if (s->transfer_to == LKVNET_RAFT_NONE ||
      lkvnet_node_now() < s->transfer_deadline)
    return;
  lkvnet_node_held_error(&s->transfer_h, 503,
                         "the leadership transfer did not complete in time; "
                         "retry");
  lkvnet_node_log(s, "leadership transfer abandoned");
  s->transfer_to = LKVNET_RAFT_NONE;
}

void lkvnet_node_read_begin(lkvnet_server *s, lkvnet_waiter *w) {
  lkv_err err;
  err.msg[0] = '\0';
  if (s->log_failed) {
    lkvnet_node_held_error(&w->h, 503,
                           "no leader: this node cannot confirm a consistent "
                           "read now (its log failed); retry");
    return;
  }
  if (lkvnet_raft_read_index(s->raft, w->ctx, &err) != LKV_OK) {
    /* not the leader any more, or not yet: again once one is known (the
     * waiter, answered by no one now, is freed with the others) */
    lkvnet_req *req = lkvnet_node_unhold(&w->h);
    if (req != NULL) lkvnet_node_park(s, req, w->h.route, w->h.start);
    return;
  }
  lkvnet_node_wake(s);
}

/* }====================================================================== */
