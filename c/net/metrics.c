/* metrics.c - what the node says about itself (docs/http_api.md, "Node
 * state"): /status (its role and its followers' progress), /stats (the
 * engine's and the log's counters), /health, and /metrics in
 * Prometheus' text format. Runs on the event loop's thread; the node's
 * state is node.h. */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "json.h"
#include "node.h"
#include "rlog.h"

static const char *const route_names[LKVNET_NROUTES] = {"/set",
                                                        "/delete",
                                                        "/get",
                                                        "/scan",
                                                        "/status",
                                                        "/stats",
                                                        "/health",
                                                        "/metrics",
                                                        "/kv",
                                                        "/raft",
                                                        "/snapshot",
                                                        "/sync",
                                                        "/transfer_leader",
                                                        "/add_node",
                                                        "/remove_node",
                                                        "/functions",
                                                        "/call",
                                                        "other"};

static const char *const peer_states[] = {"unknown", "up", "down"};
_Static_assert(sizeof peer_states / sizeof *peer_states == LKVNET_PEER_DOWN + 1,
               "a name for every peer state of node.h");

static void jfield(lkvnet_jbuf *b, const char *name, uint64_t v) {
  lkvnet_jbuf_lit(b, ", \"");
  lkvnet_jbuf_lit(b, name);
  lkvnet_jbuf_lit(b, "\": ");
  lkvnet_jbuf_u64(b, v);
}

/* A node's URL, or its id in hex for a member this node has no URL of,
 * or null for nobody. */
static void put_url(lkvnet_server *s, lkvnet_jbuf *b, uint64_t id) {
  const char *u = lkvnet_node_url_of(s, id);
  char hex[24];
  if (id == LKVNET_RAFT_NONE) {
    lkvnet_jbuf_lit(b, "null");
    return;
  }
  if (u == NULL) {
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)id);
    u = hex;
  }
  lkvnet_jbuf_str(b, u, strlen(u));
}

/* leader, follower, candidate (pre-candidates too: they campaign), or
 * learner (a non-voting member). A node quiet after its log failed is
 * no leader, whatever its core (frozen, not told) still says. */
static const char *role_name(const lkvnet_server *s,
                             const lkvnet_raft_status *st) {
  if (st->learner) return "learner";
  if (s->log_failed) return "follower";
  if (st->role == LKVNET_RAFT_LEADER) return "leader";
  if (st->role == LKVNET_RAFT_CANDIDATE || st->role == LKVNET_RAFT_PRECANDIDATE)
    return "candidate";
  return "follower";
}

void lkvnet_node_route_status(lkvnet_server *s, lkvnet_req *req, double start) {
  lkvnet_jbuf b;
  lkvnet_rlog_stats rs;
  lkvnet_raft_status st;
  size_t i;
  lkvnet_rlog_stats_get(s->rlog, &rs);
  memset(&b, 0, sizeof b);
  lkvnet_raft_status_get(s->raft, &st);
  lkvnet_jbuf_lit(&b, "{\"leader\": ");
  put_url(s, &b, s->leader_id);
  lkvnet_jbuf_lit(&b, ", \"term\": ");
  lkvnet_jbuf_u64(&b, s->term);
  lkvnet_jbuf_lit(&b, ", \"vote\": ");
  put_url(s, &b, s->vote);
  {
    char hex[24];
    snprintf(hex, sizeof hex, "%llx", (unsigned long long)s->id);
    lkvnet_jbuf_lit(&b, ", \"id\": ");
    lkvnet_jbuf_str(&b, hex, strlen(hex));
  }
  lkvnet_jbuf_lit(&b, ", \"my_url\": ");
  lkvnet_jbuf_str(&b, s->my_url, strlen(s->my_url));
  lkvnet_jbuf_lit(&b, ", \"role\": \"");
  lkvnet_jbuf_lit(&b, role_name(s, &st));
  lkvnet_jbuf_lit(&b, "\", \"member\": ");
  lkvnet_jbuf_lit(&b, lkvnet_node_is_member(s) ? "true, " : "false, ");
  lkvnet_node_put_join(s, &b);
  lkvnet_node_put_members(s, &b, &st.conf);
  lkvnet_jbuf_lit(&b, ", \"commit_index\": ");
  lkvnet_jbuf_u64(&b, s->commit_index);
  lkvnet_jbuf_lit(&b, ", \"last_index\": ");
  lkvnet_jbuf_u64(&b, rs.last_index);
  lkvnet_jbuf_lit(&b, ", \"applied_index\": ");
  lkvnet_jbuf_u64(&b, s->applied_index);
  lkvnet_jbuf_lit(&b, ", \"apply_waiting\": ");
  lkvnet_jbuf_u64(
      &b, s->apply_hi > s->applied_index ? s->apply_hi - s->applied_index : 0);
  lkvnet_jbuf_lit(&b, ", \"durable_index\": ");
  lkvnet_jbuf_u64(&b, rs.durable_index);
  lkvnet_jbuf_lit(&b, ", \"base_index\": ");
  lkvnet_jbuf_u64(&b, rs.base_index);
  lkvnet_jbuf_lit(&b, ", \"nodes\": [");
  for (i = 0; i < s->nnodes; i++) {
    if (i) lkvnet_jbuf_lit(&b, ", ");
    lkvnet_jbuf_str(&b, s->nodes[i], strlen(s->nodes[i]));
  }
  lkvnet_jbuf_lit(&b, "]");
  if (s->leader) {
    double t = lkvnet_node_now();
    size_t nf = 0;
    lkvnet_jbuf_lit(&b, ", \"followers\": [");
    for (i = 0; i < s->npeers; i++) {
      lkvnet_peer *p = &s->peers[i];
      if (!p->member) continue; /* a node heard from, not a member */
      lkvnet_jbuf_lit(&b, nf++ ? ", {\"url\": " : "{\"url\": ");
      lkvnet_jbuf_str(&b, p->url, strlen(p->url));
      lkvnet_jbuf_lit(&b, ", \"state\": \"");
      lkvnet_jbuf_lit(&b, p->snap ? "snapshot" : peer_states[p->state]);
      lkvnet_jbuf_lit(&b, "\"");
      jfield(&b, "match_index", p->match_index);
      jfield(&b, "next_index", p->next_index);
      jfield(&b, "lag",
             rs.last_index - (p->match_index < rs.last_index ? p->match_index
                                                             : rs.last_index));
      jfield(
          &b, "last_contact_ms",
          p->last_contact > 0 ? (uint64_t)((t - p->last_contact) * 1000) : 0);
      jfield(&b, "snapshots_sent", p->snapshots_sent);
      if (p->last_error[0] != '\0') { /* the last failure, even if up now */
        lkvnet_jbuf_lit(&b, ", \"error\": ");
        lkvnet_jbuf_str(&b, p->last_error, strlen(p->last_error));
      }
      lkvnet_jbuf_lit(&b, "}");
    }
    lkvnet_jbuf_lit(&b, "]");
  } else if (s->needs_snapshot) {
    lkvnet_jbuf_lit(&b, ", \"needs_snapshot\": true");
  }
  lkvnet_jbuf_lit(&b, "}");
  lkvnet_node_reply_json(s, req, LKVNET_ROUTE_STATUS, start, 200, &b);
}

static void jlevels(lkvnet_jbuf *b, const char *name, const uint64_t *v) {
  int i;
  lkvnet_jbuf_lit(b, ", \"");
  lkvnet_jbuf_lit(b, name);
  lkvnet_jbuf_lit(b, "\": [");
  for (i = 0; i < LKV_MAX_LEVELS; i++) {
    if (i) lkvnet_jbuf_lit(b, ", ");
    lkvnet_jbuf_u64(b, v[i]);
  }
  lkvnet_jbuf_lit(b, "]");
}

void lkvnet_node_route_stats(lkvnet_server *s, lkvnet_req *req, double start) {
  lkv_stats st;
  lkvnet_rlog_stats rs;
  lkvnet_jbuf b;
  lkv_db_stats(s->db, &st);
  lkvnet_rlog_stats_get(s->rlog, &rs);
  memset(&b, 0, sizeof b);
  lkvnet_jbuf_lit(&b, "{\"seq\": ");
  lkvnet_jbuf_u64(&b, st.seq);
  jfield(&b, "sstable_count", st.sstable_count);
  jlevels(&b, "sstables_per_level", st.sstables_per_level);
  jlevels(&b, "bytes_per_level", st.bytes_per_level);
  jfield(&b, "total_size_bytes", st.total_size_bytes);
  jfield(&b, "memtable_size_bytes", st.memtable_size_bytes);
  jfield(&b, "memtable_keys", st.memtable_keys);
  jfield(&b, "imm_memtables", st.imm_memtables);
  jfield(&b, "wal_size_bytes", st.wal_size_bytes);
  jfield(&b, "bytes_written_user", st.bytes_written_user);
  jfield(&b, "bytes_written_disk", st.bytes_written_disk);
  jfield(&b, "bytes_written_wal", st.bytes_written_wal);
  lkvnet_jbuf_lit(&b, ", \"write_amplification\": ");
  lkvnet_jbuf_double(&b, st.write_amplification);
  jfield(&b, "flushes", st.flushes);
  jfield(&b, "compactions", st.compactions);
  jfield(&b, "compaction_bytes_read", st.compaction_bytes_read);
  jfield(&b, "compaction_bytes_written", st.compaction_bytes_written);
  jlevels(&b, "bytes_written_per_level", st.bytes_written_per_level);
  jfield(&b, "stall_slowdowns", st.stall_slowdowns);
  jfield(&b, "stall_stops", st.stall_stops);
  jfield(&b, "stall_micros", st.stall_micros);
  jfield(&b, "stall_refusals", st.stall_refusals);
  jfield(&b, "bloom_checks", st.bloom_checks);
  jfield(&b, "bloom_negatives", st.bloom_negatives);
  jfield(&b, "block_reads", st.block_reads);
  jfield(&b, "block_cache_hits", st.block_cache_hits);
  jfield(&b, "block_cache_bytes", st.block_cache_bytes);
  jfield(&b, "live_snapshots", st.live_snapshots);
  jfield(&b, "live_iterators", st.live_iterators);
  jfield(&b, "wal_syncs", st.wal_syncs);
  jfield(&b, "wal_dropped_bytes", st.wal_dropped_bytes);
  lkvnet_jbuf_lit(&b, ", \"recovery\": ");
  lkvnet_jbuf_str(&b, st.recovery_msg, strlen(st.recovery_msg));
  lkvnet_jbuf_lit(&b, ", \"bg_error\": ");
  lkvnet_jbuf_str(&b, st.bg_error_msg, strlen(st.bg_error_msg));
  lkvnet_jbuf_lit(&b, ", \"rlog\": {\"last_index\": ");
  lkvnet_jbuf_u64(&b, rs.last_index);
  jfield(&b, "last_term", rs.last_term);
  jfield(&b, "durable_index", rs.durable_index);
  jfield(&b, "appends", rs.appends);
  jfield(&b, "syncs", rs.syncs);
  jfield(&b, "bytes", rs.bytes);
  jfield(&b, "dropped_bytes", rs.dropped_bytes);
  lkvnet_jbuf_lit(&b, "}}");
  lkvnet_node_reply_json(s, req, LKVNET_ROUTE_STATS, start, 200, &b);
}

void lkvnet_node_route_health(lkvnet_server *s, lkvnet_req *req, double start) {
  lkvnet_jbuf b;
  lkvnet_raft_status st;
  int member = lkvnet_node_is_member(s);
  char why[LKVNET_JOIN_WHY_LEN];
  lkvnet_raft_status_get(s->raft, &st);
  memset(&b, 0, sizeof b);
  /* a node the cluster does not count serves nothing worth reading:
   * unhealthy, so a load balancer or an operator notices; one whose join
   * is unfinished says where it stands */
  if (member) {
    lkvnet_jbuf_lit(&b, "{\"ok\": true, \"role\": \"");
  } else {
    lkvnet_jbuf_lit(&b, "{\"ok\": false, \"error\": ");
    if (lkvnet_node_join_why(s, why, sizeof why))
      lkvnet_jbuf_str(&b, why, strlen(why));
    else
      lkvnet_jbuf_lit(&b, "\"not a member of the cluster\"");
    lkvnet_jbuf_lit(&b, ", \"member\": false, ");
    lkvnet_node_put_join(s, &b);
    lkvnet_jbuf_lit(&b, "\"role\": \"");
  }
  lkvnet_jbuf_lit(&b, role_name(s, &st));
  lkvnet_jbuf_lit(&b, "\", \"leader\": ");
  put_url(s, &b, s->leader_id);
  lkvnet_jbuf_lit(&b, "}");
  lkvnet_node_reply_json(s, req, LKVNET_ROUTE_HEALTH, start, member ? 200 : 503,
                         &b);
}

static void mline(lkvnet_jbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void mline(lkvnet_jbuf *b, const char *fmt, ...) {
  char line[256];
  va_list ap;
  int k;
  va_start(ap, fmt);
  k = vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (k > 0)
    lkvnet_jbuf_raw(b, line,
                    (size_t)k < sizeof line ? (size_t)k : sizeof line - 1);
}

/* One per-follower counter family: lunakv_replication_<name>_total
 * {follower="url"}, read from the uint64_t at `field` in each lkvnet_peer. */
static void peer_counters(lkvnet_jbuf *b, const lkvnet_server *s,
                          const char *name, const char *help, size_t field) {
  size_t i;
  mline(b,
        "# HELP lunakv_replication_%s_total %s\n"
        "# TYPE lunakv_replication_%s_total counter\n",
        name, help, name);
  for (i = 0; i < s->npeers; i++)
    mline(b, "lunakv_replication_%s_total{follower=\"%s\"} %llu\n", name,
          s->peers[i].url,
          (unsigned long long)*(const uint64_t *)((const char *)&s->peers[i] +
                                                  field));
}

void lkvnet_node_route_metrics(lkvnet_server *s, lkvnet_req *req,
                               double start) {
  lkvnet_jbuf b;
  lkv_stats st;
  lkvnet_rlog_stats rs;
  int r;
  size_t i;
  memset(&b, 0, sizeof b);
  /* count this request first so a scrape sees itself */
  lkv_db_stats(s->db, &st);
  lkvnet_rlog_stats_get(s->rlog, &rs);
  mline(&b,
        "# HELP lunakv_http_requests_total HTTP requests answered, by "
        "route and status.\n# TYPE lunakv_http_requests_total counter\n");
  for (r = 0; r < LKVNET_NROUTES; r++)
    for (i = 0; i <= LKVNET_NSTATUS; i++)
      if (s->requests[r][i])
        mline(&b,
              "lunakv_http_requests_total{route=\"%s\",code=\"%s%d\"} "
              "%llu\n",
              route_names[r], i < LKVNET_NSTATUS ? "" : "other",
              i < LKVNET_NSTATUS ? lkvnet_node_status_codes[i] : 0,
              (unsigned long long)s->requests[r][i]);
  mline(&b,
        "# HELP lunakv_http_request_duration_seconds Time from request "
        "to reply (writes include the commit).\n"
        "# TYPE lunakv_http_request_duration_seconds histogram\n");
  for (r = 0; r < LKVNET_NROUTES; r++) {
    if (s->lat_count[r] == 0) continue;
    for (i = 0; i < LKVNET_NBUCKETS; i++)
      mline(&b,
            "lunakv_http_request_duration_seconds_bucket{route=\"%s\","
            "le=\"%g\"} %llu\n",
            route_names[r], lkvnet_node_latency_buckets[i],
            (unsigned long long)s->hist[r][i]);
    mline(&b,
          "lunakv_http_request_duration_seconds_bucket{route=\"%s\","
          "le=\"+Inf\"} %llu\n",
          route_names[r], (unsigned long long)s->lat_count[r]);
    mline(&b, "lunakv_http_request_duration_seconds_sum{route=\"%s\"} %.9f\n",
          route_names[r], s->lat_sum[r]);
    mline(&b,
          "lunakv_http_request_duration_seconds_count{route=\"%s\"} "
          "%llu\n",
          route_names[r], (unsigned long long)s->lat_count[r]);
  }
#define GAUGE(name, help, v)                                   \
  mline(&b,                                                    \
        "# HELP lunakv_" name " " help "\n# TYPE lunakv_" name \
        " gauge\nlunakv_" name " %llu\n",                      \
        (unsigned long long)(v))
#define COUNTER(name, help, v)                                 \
  mline(&b,                                                    \
        "# HELP lunakv_" name " " help "\n# TYPE lunakv_" name \
        " counter\nlunakv_" name " %llu\n",                    \
        (unsigned long long)(v))
  GAUGE("rlog_last_index", "Last index in the replication log.", rs.last_index);
  GAUGE("rlog_durable_index", "Last index fdatasync'ed.", rs.durable_index);
  GAUGE("commit_index", "Last index durable on a majority.", s->commit_index);
  GAUGE("applied_index", "Last index applied to the engine.", s->applied_index);
  COUNTER("apply_deferrals_total",
          "Times applying waited (without blocking) for the engine's "
          "flushes or compactions.",
          s->apply_deferrals);
  COUNTER("apply_lag_refusals_total",
          "Writes refused while committed entries waited for the engine.",
          s->apply_lag_refusals);
  COUNTER("snapshot_install_busy_total",
          "Snapshot chunks refused (503) because the engine was busy.",
          s->install_busy);
  COUNTER("apply_lag_drops_total",
          "Appends a follower did not take while committed entries waited "
          "for its engine.",
          s->apply_lag_drops);
  GAUGE("requests_parked", "Writes and consistent reads waiting for a leader.",
        s->nparked);
  COUNTER("requests_parked_total",
          "Writes and consistent reads that waited for a leader (none known, "
          "or a hand-over) instead of failing at once.",
          s->parked_total);
  GAUGE("rlog_base_index",
        "Entries up to this index are compacted into "
        "the engine.",
        rs.base_index);
  GAUGE("term", "The node's current term.", s->term);
  {
    lkvnet_raft_status rst;
    lkvnet_raft_status_get(s->raft, &rst);
    GAUGE("raft_is_leader", "1 when this node leads.", s->leader);
    COUNTER("raft_elections_started_total",
            "Elections this node started (became candidate).",
            rst.counters.elections_started);
    COUNTER("raft_elections_won_total", "Elections this node won.",
            rst.counters.elections_won);
    COUNTER("raft_prevote_rounds_total", "Pre-Vote rounds this node started.",
            rst.counters.prevote_rounds);
    COUNTER("raft_leader_changes_total",
            "A different leader seen (or this node became it).",
            rst.counters.leader_changes);
    COUNTER("raft_read_index_rounds_total",
            "Heartbeat rounds confirming consistent reads.",
            rst.counters.read_index_rounds);
    COUNTER("raft_leader_gone_total",
            "Leaders forgotten when their connection closed (a campaign "
            "soon, not after a whole election timeout).",
            rst.counters.leader_gone_reports);
    COUNTER("raft_quorum_lost_total",
            "Step-downs of a leader that lost touch with a majority.",
            rst.counters.quorum_lost);
  }
  GAUGE("join_unfinished",
        "1 while this node's join (--join over a fresh directory) has not "
        "caught up: it grants no vote.",
        s->join_unfinished);
  COUNTER("join_votes_dropped_total",
          "Vote, pre-vote and hand-over requests dropped while this node's "
          "join was unfinished.",
          s->join_votes_dropped);
  COUNTER("rlog_compactions_total", "Log compactions.", s->compactions);
  COUNTER("term_store_failures_total",
          "Failed writes of the term file (term and vote); no message "
          "leaves until one succeeds.",
          s->hs_failures);
  GAUGE("http_connections_open", "Client connections open.", s->conns.open);
  mline(&b,
        "# HELP lunakv_http_connections_closed_total Client connections "
        "the node closed, by reason.\n"
        "# TYPE lunakv_http_connections_closed_total counter\n");
  mline(&b,
        "lunakv_http_connections_closed_total{reason=\"read_timeout\"} "
        "%llu\n",
        (unsigned long long)s->conns.read_timeouts);
  mline(&b,
        "lunakv_http_connections_closed_total{reason=\"idle_timeout\"} "
        "%llu\n",
        (unsigned long long)s->conns.idle_timeouts);
  COUNTER("http_accept_errors_total",
          "accept() calls that failed (each "
          "pauses accepting).",
          s->conns.accept_errors);
  if (s->npeers > 0) {
    mline(&b,
          "# HELP lunakv_replication_lag_entries Entries in the "
          "leader's log that a follower does not hold yet.\n"
          "# TYPE lunakv_replication_lag_entries gauge\n");
    for (i = 0; i < s->npeers; i++)
      mline(&b, "lunakv_replication_lag_entries{follower=\"%s\"} %llu\n",
            s->peers[i].url,
            (unsigned long long)(rs.last_index > s->peers[i].match_index
                                     ? rs.last_index - s->peers[i].match_index
                                     : 0));
    mline(&b,
          "# HELP lunakv_replication_follower_up 1 when the follower "
          "answered its last request.\n"
          "# TYPE lunakv_replication_follower_up gauge\n");
    for (i = 0; i < s->npeers; i++)
      mline(&b, "lunakv_replication_follower_up{follower=\"%s\"} %d\n",
            s->peers[i].url, s->peers[i].state == LKVNET_PEER_UP);
    /* appends per entry sent: how much the batching saves */
    peer_counters(&b, s, "entries_sent", "Entries sent to a follower.",
                  offsetof(lkvnet_peer, entries_sent));
    peer_counters(&b, s, "appends", "Append messages sent to a follower.",
                  offsetof(lkvnet_peer, appends));
    peer_counters(&b, s, "dropped",
                  "Message batches to a node dropped: too much waiting, or its "
                  "request failed.",
                  offsetof(lkvnet_peer, dropped));
    peer_counters(&b, s, "failures",
                  "Requests to a follower that got no "
                  "usable answer.",
                  offsetof(lkvnet_peer, failures));
  }
  COUNTER("rlog_syncs_total", "fdatasync calls on the replication log.",
          rs.syncs);
  COUNTER("rlog_bytes_total", "Bytes appended to the replication log.",
          rs.bytes);
  GAUGE("engine_seq", "Engine sequence number.", st.seq);
  GAUGE("engine_sstables", "Live SSTables.", st.sstable_count);
  GAUGE("engine_total_size_bytes", "Bytes in live SSTables.",
        st.total_size_bytes);
  GAUGE("engine_memtable_size_bytes", "Bytes in memtables.",
        st.memtable_size_bytes);
  COUNTER("engine_bytes_written_user_total", "Key and value bytes written.",
          st.bytes_written_user);
  COUNTER("engine_bytes_written_disk_total", "SSTable bytes written.",
          st.bytes_written_disk);
  COUNTER("engine_flushes_total", "Memtable flushes.", st.flushes);
  COUNTER("engine_compactions_total", "Compactions.", st.compactions);
  COUNTER("engine_stall_micros_total", "Time writers waited.", st.stall_micros);
  COUNTER("engine_stall_refusals_total",
          "Writes the node put off instead of waiting for the engine.",
          st.stall_refusals);
  COUNTER("engine_block_reads_total", "Data blocks read.", st.block_reads);
  COUNTER("engine_block_cache_hits_total", "Block cache hits.",
          st.block_cache_hits);
  COUNTER("engine_bloom_negatives_total", "Lookups a Bloom filter spared.",
          st.bloom_negatives);
#undef GAUGE
#undef COUNTER
  if (b.failed) {
    lkvnet_jbuf_free(&b);
    lkvnet_node_reply_error(s, req, LKVNET_ROUTE_METRICS, start, 500,
                            "out of memory");
    return;
  }
  lkvnet_node_reply(s, req, LKVNET_ROUTE_METRICS, start, 200,
                    "text/plain; version=0.0.4", b.data, b.len);
  lkvnet_jbuf_free(&b);
}
