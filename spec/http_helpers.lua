-- spec/http_helpers.lua - what the HTTP specs share on top of
-- spec/helpers.lua: requests from Lua (luasocket, Debian lua-socket), JSON
-- (lua-cjson), and real `bin/lunakv node` processes on 127.0.0.1 with
-- random high ports (a bind failure is retried on another port).

local h = require "spec.helpers"
local http = require "socket.http"
local ltn12 = require "ltn12"
local cjson = require "cjson"

local M = { json = cjson }

http.TIMEOUT = 10

-- request(method, url [, body [, headers]]) -> status, body, headers.
-- status is nil and body the error when the connection failed.
function M.request(method, url, body, headers)
  local out = {}
  local hdrs = {}
  for k, v in pairs(headers or {}) do hdrs[k] = v end
  if body then hdrs["content-length"] = tostring(#body) end
  local ok, code, rh = http.request {
    method = method, url = url, headers = hdrs,
    source = body and ltn12.source.string(body) or nil,
    sink = ltn12.sink.table(out),
  }
  if not ok then return nil, code end
  return code, table.concat(out), rh
end

-- The same, with the body decoded as JSON (nil when it is not JSON).
function M.json_request(method, url, body)
  local code, text, hdrs = M.request(method, url, body,
    body and { ["content-type"] = "application/json" } or nil)
  local okj, doc = pcall(cjson.decode, text or "")
  return code, okj and doc or nil, text, hdrs
end

-- URL-encode every byte but unreserved ones.
function M.urlencode(s)
  return (s:gsub("[^%w%-%._~]", function(c)
    return string.format("%%%02X", c:byte())
  end))
end

-- Running (a zombie, exited but not yet reaped, is not).
local function alive(pid)
  local f = io.open("/proc/" .. pid .. "/stat", "r")
  if not f then return false end
  local st = f:read("a")
  f:close()
  return st:match("^%d+ %b() (%a)") ~= "Z"
end
M.alive = alive

-- A log file's text, "" while it does not exist yet.
function M.read_log(path)
  return h.exists(path) and h.read_file(path) or ""
end

-- Distinct random ports in 20000..32000, below Linux's ephemeral range.
-- From /dev/urandom: spec runs started in the same second share
-- math.random's seed (os.time()) and would pick the same ports.
local function pick_ports(n)
  local f = assert(io.open("/dev/urandom", "rb"))
  local ports, seen = {}, {}
  while #ports < n do
    local p = 20000 + string.unpack("<I4", f:read(4)) % 12001
    if not seen[p] then seen[p] = true; ports[#ports + 1] = p end
  end
  f:close()
  return ports
end
M.pick_ports = pick_ports

-- The command line of a node process: env NAME=value ... when env is
-- given, under `ulimit -n N` when ulimit_n is (a shell wrapper, so the
-- limit is the node's own, not the spec runner's).
local function node_command(argv, env, ulimit_n)
  local envs = {}
  for k, v in pairs(env or {}) do envs[#envs + 1] = k .. "=" .. h.quote(v) end
  table.sort(envs)
  local cmd = table.concat(argv, " ")
  if #envs > 0 then cmd = "env " .. table.concat(envs, " ") .. " " .. cmd end
  if ulimit_n then
    cmd = "sh -c " .. h.quote("ulimit -n " .. ulimit_n .. " && exec " .. cmd)
  end
  return cmd
end

-- Start a node. spec: { dir = DATA_DIR (default a tmpdir), leader = "self"
-- or a URL, others = { extra node URLs }, args = { extra flags },
-- port = fixed port, env = { NAME = value }, ulimit_n = the node's limit
-- of open files }. Returns node { url, port, dir, pid, log = stderr
-- path } once /health answers.
function M.start_node(spec)
  spec = spec or {}
  local dir = spec.dir or (h.tmpdir() .. "/node")
  for _ = 1, 20 do
    -- below Linux's ephemeral range (32768..), where client sockets live
    local port = spec.port or pick_ports(1)[1]
    local url = "http://127.0.0.1:" .. port
    local leader = (spec.leader == nil or spec.leader == "self") and url
      or spec.leader
    local nodes = { url }
    for _, u in ipairs(spec.others or {}) do nodes[#nodes + 1] = u end
    local cmd = node_command({ h.lua, h.quote(h.bin), "node", port,
      h.quote(dir), h.quote(leader), h.quote(table.concat(nodes, ",")),
      table.concat(spec.args or {}, " ") }, spec.env, spec.ulimit_n)
    local pid, p = h.spawn(cmd)
    local node = { url = url, port = port, dir = dir, pid = pid,
                   log = p.err, leader = leader }
    local up = h.wait_until(function()
      if not alive(pid) then return "dead" end
      -- until it listens, another process (a parallel run) may hold the
      -- port and answer for it
      if not M.read_log(p.err):find("listening on", 1, true) then
        return nil
      end
      local code = M.request("GET", url .. "/health")
      return code == 200 and "up" or nil
    end, 20, function() return M.read_log(p.err) end)
    if up == "up" then return node end
    h.wait(pid)
    local log = M.read_log(p.err)
    if not log:find("cannot listen", 1, true) or spec.port then
      error("node did not start: " .. log)
    end
  end
  error("no free port after 20 tries")
end

-- Stop a node with sig (default TERM) and reap it; returns how it ended:
-- ok, "exit"/"signal", code.
function M.stop_node(node, sig)
  if not node.pid then return nil end
  h.kill(node.pid, sig or "TERM")
  local a, b, c = h.wait(node.pid)
  node.pid = nil
  return a, b, c
end

-- Restart a stopped node on the same port and directory.
function M.restart(node, spec)
  spec = spec or {}
  spec.dir, spec.port = node.dir, node.port
  if node.leader ~= node.url then spec.leader = node.leader end
  return M.start_node(spec)
end

function M.status(node)
  local code, doc = M.json_request("GET", node.url .. "/status")
  assert(code == 200, "status: " .. tostring(code))
  return doc
end

function M.set(node, k, v)
  return M.json_request("POST", node.url .. "/set",
    cjson.encode { key = k, value = v })
end

function M.get(node, k)
  return M.json_request("GET", node.url .. "/get?key=" .. M.urlencode(k))
end


-- ---- clusters of nodes -------------------------------------------------
-- Several `bin/lunakv node` processes on 127.0.0.1 that share one
-- NODE_URLS list (in the same order) and one LEADER_URL (the first URL).
-- A member is { url, port, dir, pid, log, leader, urls, args, env, i }:
-- pid is nil while it is not running.

local function running(node)
  return node.pid ~= nil and alive(node.pid)
end
M.running = running

-- Spawn member node without waiting for it.
local function spawn_member(node)
  local envs = {}
  for k, v in pairs(node.env or {}) do
    envs[#envs + 1] = k .. "=" .. h.quote(v)
  end
  table.sort(envs)
  local cmd = table.concat({
    #envs > 0 and ("env " .. table.concat(envs, " ")) or "",
    h.lua, h.quote(h.bin), "node", node.port, h.quote(node.dir),
    h.quote(node.leader), h.quote(table.concat(node.urls, ",")),
    table.concat(node.args or {}, " ") }, " ")
  local pid, p = h.spawn(cmd)
  node.pid, node.log = pid, p.err
end

-- Wait until a spawned member answers /health: "up", or "dead" when the
-- process exited first (node.pid is then reaped and cleared). /health is
-- asked only once the node has logged "listening on": until then another
-- process (a parallel spec run) may hold the port and answer for it.
local function wait_health(node, timeout)
  local st = h.wait_until(function()
    if not alive(node.pid) then return "dead" end
    if not M.read_log(node.log):find("listening on", 1, true) then
      return nil
    end
    local code = M.request("GET", node.url .. "/health")
    return code == 200 and "up" or nil
  end, timeout or 20, function()
    return node.url .. " /health: " .. M.read_log(node.log)
  end)
  if st == "dead" then
    h.wait(node.pid)
    node.pid = nil
  end
  return st
end

-- Start (or restart: same port, same directory) member node and wait for
-- /health. Raises with the node's log when it does not come up.
function M.start_member(node)
  assert(not running(node), node.url .. " is already running")
  spawn_member(node)
  if wait_health(node) ~= "up" then
    error("node " .. node.url .. " did not start: " .. M.read_log(node.log))
  end
  return node
end

-- Stop member node with sig (default TERM) and reap it. A node that has
-- not exited 15 s after TERM is killed (and the test fails elsewhere).
-- Returns how it ended: ok, "exit"/"signal", code.
function M.stop_member(node, sig)
  if not node.pid then return nil end
  sig = sig or "TERM"
  h.kill(node.pid, sig)
  if sig ~= "KILL" then
    local gone = pcall(h.wait_until, function() return not alive(node.pid) end,
      15)
    if not gone then h.kill(node.pid, "KILL") end
  end
  local a, b, c = h.wait(node.pid)
  node.pid = nil
  return a, b, c
end

-- kill -9 a member (and reap it).
function M.kill_member(node)
  return M.stop_member(node, "KILL")
end

-- Stop every running member of nodes (TERM, then KILL when stuck).
function M.stop_cluster(nodes, sig)
  if not nodes then return end
  for _, node in ipairs(nodes) do
    if node.pid then h.kill(node.pid, sig or "TERM") end
  end
  for _, node in ipairs(nodes) do
    if node.pid then M.stop_member(node, sig) end
  end
end

-- start_cluster{ n = 3, args = { flags for every node }, env = { NAME =
-- value for every node }, dirs = { data dir per member } (default fresh
-- tmpdirs), down = { member numbers not to start now }, order = { member
-- numbers in start order } (default 1..n), ready = false to skip waiting
-- for the leader to see its followers up }. Every member is spawned before
-- any is waited for; when one cannot listen (its port is taken) the whole
-- cluster is stopped and started again on new ports. Returns nodes (an
-- array, nodes.leader = nodes[1]) once every started member answers
-- /health and (unless ready = false) the leader reports every started
-- follower "up".
function M.start_cluster(spec)
  spec = spec or {}
  local n = spec.n or 3
  local down = {}
  for _, i in ipairs(spec.down or {}) do down[i] = true end
  local order = spec.order
  if not order then
    order = {}
    for i = 1, n do order[i] = i end
  end
  local dirs = {}
  for i = 1, n do
    dirs[i] = (spec.dirs and spec.dirs[i]) or (h.tmpdir() .. "/node" .. i)
  end
  for _ = 1, 10 do
    local ports, urls = pick_ports(n), {}
    for i = 1, n do urls[i] = "http://127.0.0.1:" .. ports[i] end
    local nodes = {}
    for i = 1, n do
      nodes[i] = { i = i, url = urls[i], port = ports[i], dir = dirs[i],
                   leader = urls[1], urls = urls, args = spec.args or {},
                   env = spec.env }
    end
    nodes.leader = nodes[1]
    for _, i in ipairs(order) do
      if not down[i] then spawn_member(nodes[i]) end
    end
    local retry, failed = false, nil
    for _, i in ipairs(order) do
      local node = nodes[i]
      if node.pid and wait_health(node) ~= "up" then
        local log = M.read_log(node.log)
        if log:find("cannot listen", 1, true) then
          retry = true
        else
          failed = "node " .. node.url .. " did not start: " .. log
        end
        break
      end
    end
    if not retry and not failed then
      if spec.ready ~= false then
        local ok, err = pcall(M.wait_ready, nodes)
        if not ok then
          M.stop_cluster(nodes, "KILL")
          error(err, 0)
        end
      end
      return nodes
    end
    M.stop_cluster(nodes, "KILL")
    if failed then error(failed, 2) end
  end
  error("start_cluster: no free ports after 10 tries", 2)
end

-- Wait until the leader's /status lists every running follower as "up".
function M.wait_ready(nodes, timeout)
  local leader = nodes.leader or nodes[1]
  local last
  h.wait_until(function()
    local code, st = M.json_request("GET", leader.url .. "/status")
    last = st
    if code ~= 200 or type(st) ~= "table" then return false end
    if type(st.followers) ~= "table" then
      error("the leader's /status has no \"followers\" array: "
        .. cjson.encode(st), 0)
    end
    local state = {}
    for _, f in ipairs(st.followers) do state[f.url] = f.state end
    for _, node in ipairs(nodes) do
      if node ~= leader and running(node) and state[node.url] ~= "up" then
        return false
      end
    end
    return true
  end, timeout or 20, function()
    return "leader /status: " .. (last and cjson.encode(last) or "none")
  end)
end

-- json_request with extra request headers.
function M.json_call(method, url, body, headers)
  local hdrs = {}
  if body then hdrs["content-type"] = "application/json" end
  for k, v in pairs(headers or {}) do hdrs[k] = v end
  local code, text, rh = M.request(method, url, body, hdrs)
  local okj, doc = pcall(cjson.decode, text or "")
  return code, okj and doc or nil, text, rh
end

function M.delete(node, k)
  return M.json_request("POST", node.url .. "/delete",
    cjson.encode { key = k })
end

-- A read through the leader (GET /get?key=K&consistent=true).
function M.consistent_get(node, k)
  return M.json_request("GET", node.url .. "/get?key=" .. M.urlencode(k)
    .. "&consistent=true")
end

-- Poll node's local /get until key has value (cjson.null: absent).
function M.wait_value(node, k, v, timeout)
  local last
  return h.wait_until(function()
    local code, doc, text = M.get(node, k)
    last = tostring(code) .. " " .. tostring(text)
    return code == 200 and doc and doc.value == v
  end, timeout or 15, function()
    return node.url .. " /get " .. string.format("%q", k):sub(1, 80)
      .. ": " .. last:sub(1, 200)
  end)
end

-- Poll until node's log and engine have caught up with the leader as it
-- was when called: last_index >= the leader's last_index and
-- applied_index >= its commit_index. Returns node's last /status.
function M.wait_caught_up(node, leader, timeout)
  local ls = M.status(leader)
  local st
  h.wait_until(function()
    local code, doc = M.json_request("GET", node.url .. "/status")
    if code ~= 200 or type(doc) ~= "table" then return false end
    st = doc
    return (doc.last_index or -1) >= ls.last_index
      and (doc.applied_index or -1) >= ls.commit_index
  end, timeout or 20, function()
    return node.url .. " /status " .. (st and cjson.encode(st) or "none")
      .. " vs the leader's " .. cjson.encode(ls)
  end)
  return st
end

return M
