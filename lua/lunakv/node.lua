-- lunakv.node - `lunakv node PORT DATA_DIR LEADER_URL NODE_URLS`: one HTTP
-- node (the C server in c/net/, through core.serve) with the seed's
-- positional arguments; or `lunakv node PORT DATA_DIR --join URL`, a new
-- node that asks a running cluster to add it. This file turns the arguments into the server's
-- options: which URL of NODE_URLS is this node's (the one with PORT), the
-- address to listen on (that URL's host; loopback unless --host says
-- otherwise) and whether this node leads. The server logs one line per
-- notable event to stderr and returns when SIGTERM or SIGINT stops it.
-- Routes: docs/http_api.md; the replication log: docs/replication.md.
-- The command line's side (arguments, flags and their ranges) is
-- lunakv.cmd.node.

local M = {}

-- "http://Host:8000/" -> { scheme, host, port, url = "http://Host:8000" }
-- or nil, why.
local function parse_url(s)
  local scheme, rest = s:match("^(%a[%w+.-]*)://(.*)$")
  if not scheme then return nil, "not a URL (expected http://HOST:PORT)" end
  scheme = scheme:lower()
  if scheme ~= "http" then return nil, "only http:// URLs are supported" end
  rest = rest:gsub("/+$", "")
  if rest:find("/", 1, true) then return nil, "a node URL has no path" end
  local host, port = rest:match("^%[([%x:.]+)%]:(%d+)$")
  if not host then host, port = rest:match("^([^:]+):(%d+)$") end
  if not host then
    host, port = rest:match("^([^:]+)$"), "80"
    if not host then return nil, "expected http://HOST:PORT" end
  end
  port = tonumber(port)
  if port < 1 or port > 65535 then return nil, "port out of range" end
  return { scheme = scheme, host = host:lower(), port = port,
           url = scheme .. "://" .. rest }
end
M.parse_url = parse_url

local LOOPBACK = { localhost = true, ["127.0.0.1"] = true, ["::1"] = true }

-- Do two parsed URLs name the same node? (localhost = 127.0.0.1)
local function same_node(a, b)
  if a.port ~= b.port then return false end
  if a.host == b.host then return true end
  return LOOPBACK[a.host] and LOOPBACK[b.host] or false
end

local function log(fmt, ...)
  io.stderr:write(os.date("!%Y-%m-%dT%H:%M:%SZ"), " lunakv node: ",
    string.format(fmt, ...), "\n")
end

-- The numeric flags (lunakv.cmd.node has checked their ranges) that the
-- server takes as they are.
local PASSED_THROUGH = {
  "max_body_bytes", "write_timeout_ms",
  "max_uncommitted_bytes", "read_timeout_ms", "idle_timeout_ms",
  "max_connections",
}

-- The Raft timing: a flag, else the settings layers (HEARTBEAT_MS,
-- ELECTION_TIMEOUT_MS in .env or the environment), else the default.
local TIMING = { "heartbeat_ms", "election_timeout_ms" }

-- --join URL: this node's URL is http://HOST:PORT (HOST: --host, unless
-- it listens on every interface, else 127.0.0.1); it has no NODE_URLS.
local function join_options(args, port)
  if args.leader_url or args.node_urls then
    return nil, "--join takes no LEADER_URL or NODE_URLS: the new node "
      .. "learns the cluster from the node it asks"
  end
  local j, why = parse_url(args.join)
  if not j then return nil, "--join '" .. args.join .. "': " .. why end
  local host = args.host or "127.0.0.1"
  local url_host = host
  if host == "0.0.0.0" or host == "::" or host == "localhost" then
    url_host = "127.0.0.1"
  end
  if url_host:find(":", 1, true) then url_host = "[" .. url_host .. "]" end
  local opts = { host = host, port = port, join_url = j.url,
                 my_url = port ~= 0 and ("http://" .. url_host:lower() .. ":"
                   .. port) or nil }
  for _, k in ipairs(PASSED_THROUGH) do opts[k] = args[k] end
  return opts
end

-- Work out the server options from the arguments. Returns opts or nil, msg.
function M.options(args)
  local port = tonumber(args.port)
  if not port or port ~= math.floor(port) or port < 0 or port > 65535 then
    return nil, "PORT must be an integer from 0 to 65535, got '"
      .. tostring(args.port) .. "'"
  end
  if args.join then return join_options(args, port) end
  if not args.leader_url or not args.node_urls then
    return nil, "expected LEADER_URL and NODE_URLS (or --join URL)"
  end
  local leader, why = parse_url(args.leader_url)
  if not leader then
    return nil, "LEADER_URL '" .. args.leader_url .. "': " .. why
  end
  local nodes, me = {}, nil
  for u in (args.node_urls .. ","):gmatch("([^,]*),") do
    u = u:match("^%s*(.-)%s*$")
    if u ~= "" then
      local pu, err = parse_url(u)
      if not pu then return nil, "NODE_URLS entry '" .. u .. "': " .. err end
      nodes[#nodes + 1] = pu
    end
  end
  if #nodes == 0 then return nil, "NODE_URLS names no node" end
  -- this node: the URL with PORT; when several hosts share the port
  -- (one node per machine), the one whose host is --host
  local candidates = {}
  for _, n in ipairs(nodes) do
    if n.port == port then candidates[#candidates + 1] = n end
  end
  if #candidates == 1 then
    me = candidates[1]
  elseif #candidates > 1 then
    for _, n in ipairs(candidates) do
      if args.host and (n.host == args.host:lower() or
          same_node(n, { host = args.host:lower(), port = port })) then
        me = n
      end
    end
    if not me then
      return nil, "several NODE_URLS have port " .. port
        .. "; say which is this node with --host"
    end
  end
  local in_list = false
  for _, n in ipairs(nodes) do
    if same_node(n, leader) then in_list = true end
  end
  if not in_list then
    return nil, "LEADER_URL " .. leader.url .. " is not one of NODE_URLS"
  end
  if not me and port ~= 0 then
    return nil, "no URL in NODE_URLS has port " .. port
      .. " (this node's URL must be listed)"
  end
  local host = args.host
  if not host then
    host = me and me.host or "127.0.0.1"
    if host == "localhost" then host = "127.0.0.1" end
  end
  local urls = {}
  for i, n in ipairs(nodes) do urls[i] = n.url end
  local leader_url = leader.url
  if me and same_node(me, leader) then leader_url = me.url end
  local opts = {
    host = host, port = port, my_url = me and me.url or nil,
    leader_url = leader_url, nodes = urls,
  }
  for _, k in ipairs(PASSED_THROUGH) do opts[k] = args[k] end
  return opts
end

-- Run the node; returns true after a clean stop, or nil, message.
function M.main(args, settings)
  local opts, err = M.options(args)
  if not opts then return nil, err end
  local lunakv = require "lunakv"
  opts.engine = lunakv.engine_options(settings)
  opts.log_compaction_threshold = settings.log_compaction_threshold
  for _, k in ipairs(TIMING) do opts[k] = args[k] or settings[k] end
  -- the stored functions' limits (SCRIPT_MAX_*), for every call and load
  for _, k in ipairs { "script_max_instructions", "script_max_memory",
      "script_max_writes" } do
    opts[k] = settings[k]
  end
  opts.token = args.token or settings.cluster_token
  if opts.token == "" then opts.token = nil end
  if opts.port == 0 then
    -- with port 0 the server names itself after binding; a listed URL
    -- cannot know that port, so the node runs alone and leads
    opts.my_url, opts.leader_url, opts.nodes = nil, nil, nil
  end
  log("starting: data dir %s, %s, %s", args.data_dir,
    opts.my_url or ("port " .. opts.port), opts.join_url
      and ("joining the cluster of " .. opts.join_url)
      or ("leader " .. (opts.leader_url or "(this node)")))
  require("lunakv.core").serve(args.data_dir, opts)
  log("stopped cleanly")
  return true
end

return M
