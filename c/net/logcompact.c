/* logcompact.c - when the node cuts its replication log
 * (docs/replication.md, "Log compaction and snapshots"): the decision,
 * taken after each apply, the engine sync the cut waits for, and the
 * report of how a compaction ended. The cut itself is rlog_compact.c's. Runs on
 * the event loop's thread but for compaction_prepare; the node's state
 * is node.h. */
#include <stdint.h>
#include <unistd.h>

#include "node.h"
#include "rlog.h"

/* Log compaction: once LOG_COMPACTION_THRESHOLD applied entries sit
 * behind the log's start, cut them: they are in the engine, which is made
 * durable first (its WAL runs without fsync; lkv_db_sync syncs it, which
 * costs one fdatasync, not a table). A leader keeps what a live follower
 * still needs, so only a follower that was away gets a snapshot instead;
 * a follower cuts at its own applied index.
 *
 * The engine sync and the rewrite run off the loop
 * (lkvnet_rlog_compact_begin): requests, appends and heartbeats go on
 * meanwhile, and the loop's events report the outcome
 * (lkvnet_node_compaction_poll). Entries up to the applied index are
 * never cut from the log again (a follower cuts only entries it has not
 * applied), which is what the rewrite may copy while the loop appends. */
static int compaction_prepare(void *ctx, lkv_err *err) {
  /* on the compaction's thread: only the engine (thread-safe) and the
   * test hook's path, fixed at open, are touched */
  lkvnet_server *s = ctx;
  if (s->test_gate != NULL) {
    int i;
    for (i = 0; i < 6000 && access(s->test_gate, F_OK) == 0; i++)
      usleep(10 * 1000); /* 60 s at most */
  }
  return lkv_db_sync(s->db, err);
}

void lkvnet_node_maybe_compact(lkvnet_server *s) {
  uint64_t target = s->applied_index, t, base;
  size_t i;
  lkv_err err;
  if (s->compaction_threshold == 0 || s->installing ||
      lkvnet_rlog_compacting(s->rlog))
    return;
  base = lkvnet_rlog_base_index(s->rlog);
  if (target <= base || target - base < s->compaction_threshold) return;
  /* only a leader sends from its log: a follower (a former leader too)
   * owes nobody entries, and its peers' match_index is the leader's
   * view only (raftnode.c fills it while leading, zeroes it after) */
  for (i = 0; s->leader && i < s->npeers; i++) {
    const lkvnet_peer *p = &s->peers[i];
    uint64_t need;
    if (!p->member) continue; /* a former member: owed nothing */
    if (p->snap != NULL)
      /* taking a snapshot, it needs the entries after it: cut past them
       * and it needs another as soon as this one is in */
      need = p->snap_index;
    else if (p->state == LKVNET_PEER_UP)
      need = p->match_index;
    else if (lkvnet_node_now() < p->snap_hold_until)
      /* just installed one, and silent: catching up from there */
      need = p->match_index > p->snap_index ? p->match_index : p->snap_index;
    else
      continue; /* down: a snapshot later, rather than no compaction */
    if (need < target) target = need;
  }
  if (target <= base || target - base < s->compaction_threshold) return;
  err.msg[0] = '\0';
  if (lkvnet_rlog_term_at(s->rlog, target, &t) != LKV_OK) return;
  if (lkvnet_rlog_compact_begin(s->rlog, target, t, s->applied_index,
                                compaction_prepare, s, &err) != LKV_OK) {
    lkvnet_node_log(s, "log compaction at index %llu failed: %s",
                    (unsigned long long)target, err.msg);
    return;
  }
  s->compact_index = target;
  s->compact_term = t;
  lkvnet_node_log(s,
                  "log compaction: cutting the log after index %llu "
                  "(term %llu) in the background",
                  (unsigned long long)target, (unsigned long long)t);
}

/* A compaction moved on (or ended): report how it ended. */
void lkvnet_node_compaction_poll(lkvnet_server *s) {
  lkv_err err;
  err.msg[0] = '\0';
  switch (lkvnet_rlog_compact_poll(s->rlog, &err)) {
    case LKVNET_COMPACT_DONE:
      s->compactions++;
      lkvnet_node_log(s,
                      "log compacted: entries up to %llu (term %llu) are now "
                      "only in the engine",
                      (unsigned long long)s->compact_index,
                      (unsigned long long)s->compact_term);
      break;
    case LKVNET_COMPACT_FAILED:
      lkvnet_node_log(s, "log compaction at index %llu failed: %s",
                      (unsigned long long)s->compact_index, err.msg);
      break;
    default: break;
  }
}
