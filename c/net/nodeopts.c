/* nodeopts.c - the node's options schema (lkvnet.h): the settings of
 * lkvnet_options with their defaults, ranges and documentation, in the
 * engine's schema format (lunakv.h). lkvnet_options_init and
 * lkvnet_server_open's check read it, and so does the Lua binding's
 * core.serve; the numbers themselves are lkvnet.h's constants. The
 * cluster's topology (data_dir, my_url, leader_url, nodes) is given, not
 * set, and stays out. */
#include <stddef.h>
#include <stdint.h>

#include "lkvnet.h"

static const lkv_option_spec node_schema[] = {
    {.name = "host",
     .offset = offsetof(lkvnet_options, host),
     .type = LKV_OPT_STRING,
     .dflt_str = "127.0.0.1",
     .doc = "address to listen on"},
    {.name = "port",
     .offset = offsetof(lkvnet_options, port),
     .type = LKV_OPT_INT,
     .min = 0,
     .max = 65535,
     .dflt = 0,
     .doc = "port to listen on (0: any free port)"},
    {.name = "max_body_bytes",
     .offset = offsetof(lkvnet_options, max_body_bytes),
     .type = LKV_OPT_SIZE,
     .min = LKVNET_MIN_MAX_BODY,
     .max = LKVNET_MAX_MAX_BODY,
     .dflt = LKVNET_DEFAULT_MAX_BODY,
     .doc = "largest request body accepted (413 past it)"},
    {.name = "write_timeout_ms",
     .offset = offsetof(lkvnet_options, write_timeout_ms),
     .type = LKV_OPT_INT,
     .min = LKVNET_MIN_WRITE_TIMEOUT_MS,
     .max = LKVNET_MAX_WRITE_TIMEOUT_MS,
     .dflt = LKVNET_DEFAULT_WRITE_TIMEOUT_MS,
     .doc = "a write not committed by then is answered 503"},
    {.name = "heartbeat_ms",
     .offset = offsetof(lkvnet_options, heartbeat_ms),
     .env = "HEARTBEAT_MS",
     .type = LKV_OPT_INT,
     .min = LKVNET_MIN_HEARTBEAT_MS,
     .max = LKVNET_MAX_HEARTBEAT_MS,
     .dflt = LKVNET_DEFAULT_HEARTBEAT_MS,
     .doc = "the Raft tick: how often a leader heartbeats each follower"},
    {.name = "election_timeout_ms",
     .offset = offsetof(lkvnet_options, election_timeout_ms),
     .env = "ELECTION_TIMEOUT_MS",
     .type = LKV_OPT_INT,
     .min = LKVNET_MIN_ELECTION_TIMEOUT_MS,
     .max = LKVNET_MAX_ELECTION_TIMEOUT_MS,
     .dflt = LKVNET_DEFAULT_ELECTION_TIMEOUT_MS,
     .doc = "a follower hearing no leader this long (up to twice, at random) "
            "starts an election; at least 2 heartbeats"},
    {.name = "log_compaction_threshold",
     .offset = offsetof(lkvnet_options, log_compaction_threshold),
     .env = "LOG_COMPACTION_THRESHOLD",
     .type = LKV_OPT_U64,
     .min = 0,
     .max = UINT64_MAX,
     .dflt = LKVNET_DEFAULT_LOG_COMPACTION,
     .doc = "applied log entries kept before the log is cut (0: never)"},
    {.name = "token",
     .offset = offsetof(lkvnet_options, token),
     .env = "CLUSTER_TOKEN",
     .type = LKV_OPT_STRING,
     .dflt_str = "",
     .doc = "shared secret of the internal routes (empty: none)"},
    {.name = "max_uncommitted_bytes",
     .offset = offsetof(lkvnet_options, max_uncommitted_bytes),
     .type = LKV_OPT_SIZE,
     .min = LKVNET_MIN_MAX_UNCOMMITTED,
     .max = LKVNET_MAX_MAX_UNCOMMITTED,
     .dflt = LKVNET_MAX_UNCOMMITTED_BYTES,
     .doc = "uncommitted key and value bytes a leader holds before 503"},
    {.name = "read_timeout_ms",
     .offset = offsetof(lkvnet_options, read_timeout_ms),
     .type = LKV_OPT_INT,
     .min = LKVNET_MIN_READ_TIMEOUT_MS,
     .max = LKVNET_MAX_READ_TIMEOUT_MS,
     .dflt = LKVNET_DEFAULT_READ_TIMEOUT_MS,
     .doc = "a request not whole by then is dropped with its connection"},
    {.name = "idle_timeout_ms",
     .offset = offsetof(lkvnet_options, idle_timeout_ms),
     .type = LKV_OPT_INT,
     .min = LKVNET_MIN_IDLE_TIMEOUT_MS,
     .max = LKVNET_MAX_IDLE_TIMEOUT_MS,
     .dflt = LKVNET_DEFAULT_IDLE_TIMEOUT_MS,
     .doc = "a keep-alive connection idle this long is closed"},
    {.name = "max_connections",
     .offset = offsetof(lkvnet_options, max_connections),
     .type = LKV_OPT_INT,
     .min = LKVNET_MIN_MAX_CONNECTIONS,
     .max = LKVNET_MAX_MAX_CONNECTIONS,
     .dflt = LKVNET_DEFAULT_MAX_CONNECTIONS,
     .doc = "open client connections before the node stops accepting"},
};

const lkv_option_spec *lkvnet_options_schema(size_t *n) {
  if (n) *n = sizeof node_schema / sizeof node_schema[0];
  return node_schema;
}
