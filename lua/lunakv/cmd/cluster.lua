-- lunakv.cmd.cluster - `lunakv cluster up [N] | status | down | add |
-- remove URL`: the actions,
-- their arguments and help; the work (processes, cluster.json, waiting
-- for agreement) is lunakv.cluster.

local M = {}

M.summary = "Start, inspect or stop local nodes: cluster up [N] | status "
  .. "| down | add | remove URL."
M.description = "Run a cluster of `lunakv node` processes on 127.0.0.1: "
  .. "`cluster up [N]` starts N\n(default 3) and waits until they agree "
  .. "on a leader, `cluster status` prints\nroles, indexes and lag, "
  .. "`cluster down` stops them, `cluster add` starts one\nmore node that "
  .. "joins (POST /add_node) and waits until it is a voter,\n`cluster "
  .. "remove URL` takes a node out (POST /remove_node) and stops it. State "
  .. "is\nkept in DIR/cluster.json."

local MAX_NODES = 64
local MAX_TIMEOUT = 86400

-- c: the `cluster` command's parser; h: { help_flag = f(p),
-- config_options = f(p) } from lunakv.cli (our --help and -c/-s flags).
function M.add_to_parser(c, h)
  c:command_target("action"):require_command(true)
  local function sub(name, summary)
    local s = c:command(name, summary):summary(summary):add_help(false)
    if h and h.help_flag then h.help_flag(s) end
    s:option("--dir", "The cluster's directory: data, logs and "
      .. "cluster.json (default ./cluster).")
      :argname("<dir>")
    return s
  end
  local up = sub("up", "Start N local nodes and wait until they agree on "
    .. "a leader.")
  local config = require "lunakv.config"
  up:argument("n", "How many nodes (default 3; 1 to " .. MAX_NODES .. ").")
    :args("?"):argname("<n>"):convert(config.int_arg("N", 1, MAX_NODES))
  up:option("--base-port", "Port of the first node; the others follow "
    .. "(default 8000; 1 to 65535, and the last node's port too).")
    :argname("<port>"):convert(config.int_arg("--base-port", 1, 65535))
  up:option("--token", "Shared secret for the cluster-internal routes, "
    .. "given to every node as CLUSTER_TOKEN (default: CLUSTER_TOKEN "
    .. "from .env or the environment, which the nodes read themselves).")
    :argname("<token>")
  up:option("--timeout", "Seconds to wait for the nodes (default "
    .. require("lunakv.cluster").UP_TIMEOUT .. "; > 0 and <= "
    .. MAX_TIMEOUT .. ").")
    :argname("<s>"):convert(config.seconds_arg("--timeout", MAX_TIMEOUT))
  if h and h.config_options then h.config_options(up) end
  sub("status", "Print every recorded node's role, indexes and lag.")
  sub("down", "Stop every recorded node (SIGTERM, SIGKILL after 10 s), "
    .. "also one restarted by hand; keep cluster.json while any still "
    .. "answers.")
  local function token_opt(s)
    s:option("--token", "The cluster token, when the nodes need one "
      .. "(default: CLUSTER_TOKEN from the environment).")
      :argname("<token>")
  end
  local add = sub("add", "Start one more node that joins the cluster, and "
    .. "wait until it is a voter.")
  add:option("--port", "Its port (default: one past the highest "
    .. "recorded).")
    :argname("<port>"):convert(config.int_arg("--port", 1, 65535))
  add:option("--timeout", "Seconds to wait for it to become a voter "
    .. "(default 60; > 0 and <= " .. MAX_TIMEOUT .. ").")
    :argname("<s>"):convert(config.seconds_arg("--timeout", MAX_TIMEOUT))
  token_opt(add)
  local rm = sub("remove", "Take a node out of the cluster (it need not "
    .. "be recorded); a recorded one is then stopped.")
  rm:argument("url", "The node's URL, e.g. http://127.0.0.1:8002.")
    :argname("<url>")
  token_opt(rm)
end

-- `lunakv cluster ACTION`: true, or nil and a message, or 2 and a message
-- (usage).
function M.run(args)
  local cluster = require "lunakv.cluster"
  if args.action == "up" then return cluster.up(args) end
  if args.action == "status" then return cluster.status(args) end
  if args.action == "down" then return cluster.down(args) end
  if args.action == "add" then return cluster.add(args) end
  if args.action == "remove" then return cluster.remove(args) end
  return 2, "cluster: expected up, status, down, add or remove"
end

return M
