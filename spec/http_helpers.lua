-- spec/http_helpers.lua - what the HTTP specs share on top of
-- spec/helpers.lua: requests from Lua (luasocket, Debian lua-socket), JSON
-- (lua-cjson), and real `bin/lunakv node` processes on 127.0.0.1 with
-- random high ports (a bind failure is retried on another port).

local h = require "spec.helpers"
local socket = require "socket"
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

-- Keys and values the HTTP API must keep byte for byte, { key, value }
-- each: UTF-8, what JSON escapes, a 0 byte, control bytes, an empty key
-- and an empty value; then a spec's own pairs, more.
function M.awkward_pairs(more)
  local t = {
    { "héllo wörld", "ünïcödé ✓" },
    { "quote\"back\\slash/", "new\nline\ttab\r" },
    { "zero\0byte", "v\0w" },
    { "", "empty key" },
    { "empty value", "" },
    { "\1\2\31", "control \127" },
  }
  for _, p in ipairs(more or {}) do t[#t + 1] = p end
  return t
end

-- Requests every node refuses, { method, path, body, status, words of
-- the error } each, from a node whose --max-body-bytes is 1024; then a
-- spec's own, more.
function M.bad_requests(more)
  local t = {
    { "POST", "/set", "{not json", 400, "malformed JSON" },
    { "POST", "/set", "", 400, "empty body" },
    { "POST", "/set", "[]", 400, "expected a JSON object" },
    { "POST", "/set", '{"key": "a", "value": "b",}', 400, "malformed JSON" },
    { "POST", "/set", '{"value": "b"}', 400, 'missing member "key"' },
    { "POST", "/set", '{"key": "a"}', 400, 'missing member "value"' },
    { "POST", "/set", '{"key": 1, "value": "b"}', 400, "must be a string, not a number" },
    { "POST", "/set", '{"key": "a", "value": null}', 400, "not null" },
    { "POST", "/delete", '{"key": true}', 400, "not a boolean" },
    { "POST", "/delete", "{}", 400, 'missing member "key"' },
    { "GET", "/get", nil, 400, 'missing query parameter "key"' },
    { "PUT", "/kv/%FF%FFlunakv/applied_index", "x", 400, "reserved" },
    { "GET", "/nowhere", nil, 404, "no route GET /nowhere" },
    { "POST", "/", "{}", 404, "no route" },
    { "GET", "/set", nil, 405, "not allowed on /set (use POST)" },
    { "PUT", "/get", "x", 405, "use GET" },
    { "POST", "/kv/a", "x", 405, "use GET, PUT or DELETE" },
    { "POST", "/set", '{"key": "a", "value": "' .. ("x"):rep(2000) .. '"}',
      413, "limit is 1024" },
  }
  for _, r in ipairs(more or {}) do t[#t + 1] = r end
  return t
end

-- Send r (a row of M.bad_requests) to node and check the refusal: its
-- status, a JSON body with ok false, and an error holding its words.
-- where, when given, heads the failure messages.
function M.assert_refused(node, r, where)
  local luassert = require "luassert"
  local code, doc, text = M.json_request(r[1], node.url .. r[2], r[3])
  local what = (where or "") .. r[1] .. " " .. r[2] .. " " ..
    tostring(r[3]):sub(1, 60)
  luassert.equal(r[4], code, what .. " -> " .. tostring(text))
  luassert.is_table(doc, what .. ": not JSON: " .. tostring(text))
  luassert.is_false(doc.ok, what)
  luassert.matches(r[5], doc.error, 1, true)
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

-- ---- a node on a fault env ----------------------------------------------
-- A `lunakv node` whose whole data dir (engine, replication log, term
-- file) goes through core.fault_env(): the script builds the env, arms it
-- from its first argument, hands it to core.serve as the engine's `env`,
-- and after the node has stopped reports what the rule matched and
-- applies a power loss when its second argument names a mode. The rest
-- are `lunakv node`'s arguments.
local RUNNER = [==[
local core = require "lunakv.core"
local fault, loss = arg[1], arg[2]
local fe = core.fault_env()
if fault ~= "-" then -- "KIND NTH ERRNO [PATH_PART [sticky]]"
  local w = {}
  for x in fault:gmatch("%S+") do w[#w + 1] = x end
  fe:fail(w[1], math.tointeger(tonumber(w[2])), w[3], w[4],
    { sticky = w[5] == "sticky" })
end
local serve = core.serve
core.serve = function(dir, opts)
  opts.engine = opts.engine or {}
  opts.engine.env = fe
  local ok, err = pcall(serve, dir, opts)
  io.stderr:write(string.format("fault env: %d matching call(s), %d failed\n",
    fe:seen(), fe:fired()))
  if loss ~= "-" then
    fe:power_loss(loss, 7)
    io.stderr:write("fault env: power loss (" .. loss .. ")\n")
  end
  if not ok then error(err, 0) end
  return true
end
local argv = { "node" }
for i = 3, #arg do argv[#argv + 1] = arg[i] end
os.exit(require("lunakv.cli").main(argv), true)
]==]

-- The command words that start a node: bin/lunakv node, or the fault-env
-- script when fault (its first argument: "-" or "KIND NTH ERRNO
-- [PATH_PART [sticky]]") or loss (a power loss mode at exit) is given.
local function node_program(fault, loss)
  if not fault and not loss then return { h.lua, h.quote(h.bin), "node" } end
  local path = h.tmpdir() .. "/fault_node.lua"
  h.write_file(path, h.prelude .. RUNNER)
  return { h.lua, h.quote(path), h.quote(fault or "-"), h.quote(loss or "-") }
end
M.node_program = node_program

-- Start a node. spec: { dir = DATA_DIR (default a tmpdir), leader = "self"
-- or a URL, others = { extra node URLs }, args = { extra flags },
-- port = fixed port, env = { NAME = value }, ulimit_n = the node's limit
-- of open files, fault = a fault env rule, loss = a power loss mode at
-- exit (node_program) }. Returns node { url, port, dir, pid, log = stderr
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
    local argv = node_program(spec.fault, spec.loss)
    for _, a in ipairs { port, h.quote(dir), h.quote(leader),
                         h.quote(table.concat(nodes, ",")),
                         table.concat(spec.args or {}, " ") } do
      argv[#argv + 1] = a
    end
    local cmd = node_command(argv, spec.env, spec.ulimit_n)
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

-- How long a node may take to stop after SIGTERM: it answers what is in
-- flight (a write waits at most its --write-timeout-ms) and closes.
M.STOP_TIMEOUT = 15

-- Stop a process with sig (default TERM) and reap it. One that has not
-- exited STOP_TIMEOUT s after TERM is killed, reaped, and then the test
-- fails: a node must stop on SIGTERM. Returns ok, "exit"/"signal", code.
local function stop_pid(node, sig)
  sig = sig or "TERM"
  if sig ~= "NONE" then h.kill(node.pid, sig) end
  local hung = false
  if sig ~= "KILL" then
    hung = not pcall(h.wait_until, function() return not alive(node.pid) end,
      M.STOP_TIMEOUT)
    if hung then h.kill(node.pid, "KILL") end
  end
  local a, b, c = h.wait(node.pid)
  node.pid = nil
  if hung then
    error(string.format("node %s did not stop within %d s of %s: %s",
      tostring(node.url), M.STOP_TIMEOUT,
      sig == "NONE" and "being told to" or "SIG" .. sig,
      M.read_log(node.log or ""):sub(-2000)), 0)
  end
  return a, b, c
end

-- Stop a node with sig (default TERM) and reap it; returns how it ended:
-- ok, "exit"/"signal", code. Raises when it hangs (stop_pid).
function M.stop_node(node, sig)
  if not node.pid then return nil end
  return stop_pid(node, sig)
end

-- Wait for a node already told to stop (a signal sent earlier) to exit
-- by itself, and reap it: ok, "exit"/"signal", code, as stop_node. A
-- second signal would race the node's own exit, which may be past the
-- point where it handles one.
function M.wait_exit(node)
  if not node.pid then return nil end
  return stop_pid(node, "NONE")
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

-- Spawn member node without waiting for it (through the fault env when
-- node.fault or node.loss is set: node_program).
local function spawn_member(node)
  local envs = {}
  for k, v in pairs(node.env or {}) do
    envs[#envs + 1] = k .. "=" .. h.quote(v)
  end
  table.sort(envs)
  local words = { #envs > 0 and ("env " .. table.concat(envs, " ")) or "" }
  for _, w in ipairs(node_program(node.fault, node.loss)) do
    words[#words + 1] = w
  end
  for _, w in ipairs { node.port, h.quote(node.dir), h.quote(node.leader),
                       h.quote(table.concat(node.urls, ",")),
                       table.concat(node.args or {}, " ") } do
    words[#words + 1] = w
  end
  local pid, p = h.spawn(table.concat(words, " "))
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
-- not exited STOP_TIMEOUT s after TERM is killed, and then this raises:
-- the test fails. Returns how it ended: ok, "exit"/"signal", code.
function M.stop_member(node, sig)
  if not node.pid then return nil end
  return stop_pid(node, sig)
end

-- kill -9 a member (and reap it).
function M.kill_member(node)
  return M.stop_member(node, "KILL")
end

-- Stop every running member of nodes (TERM, then KILL when stuck). Every
-- member is stopped and reaped; then the first that hung fails the test.
function M.stop_cluster(nodes, sig)
  if not nodes then return end
  for _, node in ipairs(nodes) do
    if node.pid then h.kill(node.pid, sig or "TERM") end
  end
  local first
  for _, node in ipairs(nodes) do
    if node.pid then
      local ok, err = pcall(M.stop_member, node, sig)
      if not ok then first = first or err end
    end
  end
  if first then error(first, 0) end
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

-- SIGSTOP every running member of nodes but leader: a leader cut off
-- from its followers. Returns them, for M.resume_all, which a test calls
-- whatever happened meanwhile (a paused node ignores SIGTERM).
function M.pause_followers(nodes, leader)
  local paused = {}
  for _, n in ipairs(nodes) do
    if n ~= leader and running(n) then
      h.kill(n.pid, "STOP")
      paused[#paused + 1] = n
    end
  end
  return paused
end

-- SIGCONT every node of list (M.pause_followers).
function M.resume_all(list)
  for _, n in ipairs(list) do h.kill(n.pid, "CONT") end
end

-- Wait until a running member leads (its /status role "leader") and
-- lists every other running member as "up"; nodes.leader is then that
-- member (the nodes elect their leader: the first URL only campaigns
-- first on a fresh cluster). Returns it.
function M.wait_ready(nodes, timeout)
  local last
  return h.wait_until(function()
    for _, leader in ipairs(nodes) do
      if running(leader) then
        local code, st = M.json_request("GET", leader.url .. "/status")
        if code == 200 and type(st) == "table" and st.role == "leader" then
          last = st
          local state = {}
          for _, f in ipairs(st.followers or {}) do state[f.url] = f.state end
          local all = true
          for _, node in ipairs(nodes) do
            if node ~= leader and running(node) and state[node.url] ~= "up" then
              all = false
            end
          end
          if all then
            nodes.leader = leader
            return leader
          end
        end
      end
    end
    return false
  end, timeout or 20, function()
    return "leader /status: " .. (last and cjson.encode(last) or "none")
  end)
end

-- Wait until some running member of nodes other than `except` leads;
-- returns it (and sets nodes.leader).
function M.wait_leader(nodes, timeout, except)
  return h.wait_until(function()
    for _, n in ipairs(nodes) do
      if n ~= except and running(n) then
        local code, st = M.json_request("GET", n.url .. "/status")
        if code == 200 and type(st) == "table" and st.role == "leader" then
          nodes.leader = n
          return n
        end
      end
    end
    return false
  end, timeout or 20)
end

-- Send a write with send() (a function returning json_request's code,
-- doc, text) until it is acknowledged, within timeout s (default 15):
-- while a leader is elected the answer is a 503 (no leader, outcome
-- unknown), never a wrong success or another error. what names the write
-- in the failures. Returns the acknowledging answer's doc, and how many
-- answers before it said "outcome unknown" (tries that may still apply).
function M.until_acked(what, send, timeout)
  local luassert = require "luassert"
  local last, acked, unknown = nil, nil, 0
  h.wait_until(function()
    local code, doc, text = send()
    last = tostring(code) .. " " .. tostring(text)
    if code == 200 then
      luassert.is_true(doc.ok, what .. ": " .. last)
      acked = doc
      return true
    end
    luassert.equal(503, code, what .. " during an election: " .. last)
    if tostring(text):find("outcome unknown", 1, true) then
      unknown = unknown + 1
    end
    return false
  end, timeout or 15, function() return what .. ": " .. last end)
  return acked, unknown
end

-- Wait until every running member of nodes has applied what the leader
-- (nodes.leader) has committed.
function M.converged(nodes, timeout)
  h.wait_until(function()
    local want = M.status(nodes.leader).commit_index
    for _, n in ipairs(nodes) do
      if running(n) and M.status(n).applied_index < want then
        return false
      end
    end
    return true
  end, timeout or 15, function() return "replicas converge" end)
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

-- ---- a request sent now, its answer read later -------------------------
-- For a request that waits in a node (for a commit, a leader, a resume)
-- while the test pauses, kills or watches nodes.

-- Send method path to node (body: JSON text, optional; headers: more
-- request headers) on a connection of its own (Connection: close), and
-- return the connection without reading the answer: M.read_answer reads
-- it. nil and the error when the connection cannot be made, and then
-- nothing was sent. timeout: seconds any one socket operation may take
-- (default 20).
function M.send_later(node, method, path, body, headers, timeout)
  local c = assert(socket.tcp())
  c:settimeout(timeout or 20)
  local ok, err = c:connect("127.0.0.1", node.port)
  if not ok then
    c:close()
    return nil, err
  end
  local lines = { method .. " " .. path .. " HTTP/1.1", "Host: x",
                  "Connection: close" }
  if body then
    lines[#lines + 1] = "Content-Type: application/json"
    lines[#lines + 1] = "Content-Length: " .. #body
  end
  for k, v in pairs(headers or {}) do lines[#lines + 1] = k .. ": " .. v end
  -- a failed send is seen by the read: the request may or may not have
  -- arrived whole
  c:send(table.concat(lines, "\r\n") .. "\r\n\r\n" .. (body or ""))
  return c
end

-- The answer on a connection of M.send_later, which is then closed:
-- status, body decoded as JSON (nil when it is not), the whole answer's
-- text. nil and the error when no whole answer came (the connection
-- broke, or a socket operation timed out).
function M.read_answer(c)
  local text, err = c:receive("*a")
  c:close()
  local code = text and tonumber(text:match("^HTTP/1%.%d (%d%d%d)"))
  local body = text and text:match("\r\n\r\n(.*)$")
  if not code or not body then
    return nil, "no answer: " .. tostring(err) .. " " .. tostring(text)
  end
  local okj, doc = pcall(cjson.decode, body)
  return code, okj and doc or nil, text
end

-- ---- hand-built replication traffic --------------------------------------
-- A log frame (docs/replication.md, "The log file"): what /append and
-- /snapshot bodies are made of. op: 1 set (default), 2 delete, 3 no-op,
-- 4 configuration change (value only); prev_term: the term of the entry
-- before it (default 0).
local crc_table = {}
for i = 0, 255 do
  local c = i
  for _ = 1, 8 do c = (c & 1) ~= 0 and ((c >> 1) ~ 0x82F63B78) or (c >> 1) end
  crc_table[i] = c
end
local function crc32c(s)
  local c = 0xFFFFFFFF
  for i = 1, #s do c = crc_table[(c ~ s:byte(i)) & 0xFF] ~ (c >> 8) end
  return c ~ 0xFFFFFFFF
end

function M.frame(term, index, key, value, op, prev_term)
  op = op or 1
  key = (op == 3 or op == 4) and "" or (key or "")
  value = (op == 1 or op == 4) and (value or "") or ""
  local payload = string.pack("<I8I8BI4I4I8", term, index, op, #key, #value,
    prev_term or 0) .. key .. value
  local len = string.pack("<I4", #payload)
  return len .. string.pack("<I4", crc32c(len .. payload)) .. payload
end

-- A number as a query parameter: JSON gives integers back as floats.
local function qnum(v)
  if type(v) == "number" and v == math.floor(v) then
    return string.format("%d", v)
  end
  return tostring(v)
end

-- POST an internal route (/append or /snapshot) with query q (a table,
-- in the order given as { {name, value}, ... }) and a body of frames.
function M.internal(node, route, q, body, token)
  local parts = {}
  for _, kv in ipairs(q) do parts[#parts + 1] = kv[1] .. "=" .. qnum(kv[2]) end
  local hdrs = { ["content-type"] = "application/octet-stream" }
  if token then hdrs["x-lunakv-token"] = token end
  return M.json_call("POST", node.url .. route .. "?" .. table.concat(parts, "&"),
    body or "", hdrs)
end

-- The entries of node's log from index from (GET /sync), as a table by
-- index.
function M.log_entries(node, from, token)
  local code, doc, text = M.json_call("GET", node.url .. "/sync?from_index="
    .. qnum(from or 1), nil, token and { ["x-lunakv-token"] = token } or nil)
  assert(code == 200, "/sync: " .. tostring(code) .. " " .. tostring(text))
  local by = {}
  for _, e in ipairs(doc.entries) do by[e.index] = e end
  return by, doc
end

-- A sample of node's /metrics: the value of the line starting with name
-- and then labels (exactly as printed, e.g. '{route="/get",code="200"}';
-- "" for none), 0 when absent.
function M.metric(node, name, labels)
  local code, text = M.request("GET", node.url .. "/metrics")
  assert(code == 200, "/metrics: " .. tostring(code))
  local line = name .. (labels or "") .. " "
  for l in text:gmatch("[^\n]+") do
    if l:sub(1, #line) == line then return tonumber(l:sub(#line + 1)) end
  end
  return 0
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
