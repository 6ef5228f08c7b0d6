-- lunakv.cmd.node - `lunakv node PORT DATA_DIR LEADER_URL NODE_URLS` (or
-- `lunakv node PORT DATA_DIR --join URL`): the seed's positional arguments
-- and the server's flags, checked where they are parsed; lunakv.node turns
-- them into the server's options and runs it.

local config = require("lunakv.config")

local M = {}

M.summary = "Run an HTTP node: lunakv node PORT DATA_DIR LEADER_URL "
  .. "NODE_URLS (or --join URL)."
M.description = "Run an HTTP node (the seed's arguments) until SIGTERM or "
  .. "SIGINT. The nodes of\nNODE_URLS elect a leader (Raft); LEADER_URL is a "
  .. "hint: on a fresh cluster that\nnode campaigns first. With --join URL "
  .. "instead, a new node asks the running\ncluster at URL (any member) to "
  .. "add it: it joins as a learner, catches up,\nand the leader makes it a "
  .. "voter. Routes are in docs/http_api.md. Examples:\n"
  .. "  lunakv node 8000 data/node0 http://localhost:8000 "
  .. "http://localhost:8000\n"
  .. "  lunakv node 8003 data/node3 --join http://localhost:8000"

-- The engine's settings come from the settings layers, as for a shell.
M.settings = true

-- The numeric flags: flag, argname, help. Their ranges and defaults are
-- the node's schema rows (core.options_schema, room "node": the C server
-- checks the same rows), checked here, where the flags are parsed, so
-- that a bad value is a usage error before anything starts.
local FLAGS = {
  { "--max-body-bytes", "<n>", "Largest request body accepted" },
  { "--write-timeout-ms", "<ms>",
    "A write not committed by then is answered 503" },
  { "--heartbeat-ms", "<ms>",
    "The Raft tick: how often a leader heartbeats each follower "
    .. "(default: HEARTBEAT_MS)" },
  { "--election-timeout-ms", "<ms>",
    "A follower that hears no leader this long (up to twice that, at "
    .. "random) starts an election; at least 2 heartbeats (default: "
    .. "ELECTION_TIMEOUT_MS)" },
  { "--max-uncommitted-bytes", "<n>",
    "Key and value bytes of writes a leader holds while they wait for a "
    .. "majority before it refuses new ones with 503" },
  { "--read-timeout-ms", "<ms>",
    "A request (line, headers and body) not whole this long after its "
    .. "first byte, or after the connection was accepted, is dropped with "
    .. "its connection" },
  { "--idle-timeout-ms", "<ms>",
    "A keep-alive connection with no request for this long is closed" },
  { "--max-connections", "<n>",
    "Open client connections; past this the node accepts no more until "
    .. "one closes (they wait in the listen queue)" },
}

-- flag, argname, smallest, largest, default, help: FLAGS with the
-- schema's numbers.
local function numeric_flags()
  local rows = {}
  for _, r in ipairs(require("lunakv.core").options_schema) do
    if r.room == "node" then rows[r.name] = r end
  end
  local out = {}
  for _, f in ipairs(FLAGS) do
    local flag, argname, help = table.unpack(f)
    local r = assert(rows[flag:gsub("^%-%-", ""):gsub("%-", "_")],
      flag .. " is not in the node's schema")
    out[#out + 1] = { flag, argname, r.min, r.max, r.default, help }
  end
  return out
end
M.NUMERIC = numeric_flags()

function M.add_to_parser(p)
  p:argument("port", "Port to listen on (0: any free port, printed at "
    .. "start).")
    :argname("<port>"):convert(config.int_arg("PORT", 0, 65535))
  p:argument("data_dir", "The node's directory: db/ and replication.log.")
    :argname("<data_dir>")
  p:argument("leader_url", "A hint: the node that campaigns first on a "
    .. "fresh cluster (e.g. http://localhost:8000); afterwards the nodes "
    .. "elect whoever is fit. Not with --join.")
    :argname("<leader_url>"):args("?")
  p:argument("node_urls", "Every node's URL, comma-separated (this node's "
    .. "is the one with PORT). Not with --join.")
    :argname("<node_urls>"):args("?")
  p:option("--join", "Join the running cluster that the node at this URL "
    .. "is a member of (POST /add_node, retried for up to "
    .. "60 s): the new node starts with no configuration of its own, "
    .. "catches up as a learner, and becomes a voter once caught up. A "
    .. "restart with --join of a node that is a member asks nothing.")
    :argname("<url>")
  p:option("--host", "Listen on this address instead of the host of this "
    .. "node's URL (0.0.0.0 listens on every interface).")
    :argname("<addr>")
  p:option("--token", "Shared secret the nodes send each other on "
    .. "/raft, /snapshot and /sync (default: CLUSTER_TOKEN; empty: none). "
    .. "Prefer CLUSTER_TOKEN: a flag shows in ps.")
    :argname("<secret>")
  for _, f in ipairs(M.NUMERIC) do
    local flag, argname, lo, hi, default, help = table.unpack(f)
    p:option(flag, string.format("%s (from %d to %d; default %d).", help, lo,
      hi, default))
      :argname(argname):convert(config.int_arg(flag, lo, hi))
  end
end

-- Returns true after a clean stop, or nil and a message.
function M.run(args, opts)
  return require("lunakv.node").main(args, opts)
end

return M
