-- lunakv.cluster - `lunakv cluster up|status|down`: a local cluster of
-- `lunakv node` processes on 127.0.0.1, for trying replication and for
-- benchmarks.
--
--   up [N] [--base-port P] [--dir D] [--token T]
--       start N nodes (default 3) on ports P .. P+N-1 (default 8000), the
--       first one leading; data in D/node0 .., logs in D/node0.log ..;
--       wait until every node answers /health, all name the same
--       leader and are at its term (it has reached them); record pids
--       and URLs in D/cluster.json
--   status [--dir D]   one row per recorded node: process, role, indexes, lag
--   down [--dir D]     SIGTERM every recorded node, SIGKILL after 10 s;
--                      also a node restarted by hand on a recorded URL
--                      (found by its data dir); D/cluster.json is removed
--                      only when no recorded URL answers any more
--   add [--dir D] [--port P] [--token T]
--                      start one more node (`lunakv node P D/nodeK --join
--                      URL` of a recorded member that answers), wait until
--                      the leader has made it a voter, record it
--   remove URL [--dir D] [--token T]
--                      POST /remove_node for URL to a recorded member;
--                      once it is out, stop URL's process if it is a
--                      recorded node, and drop it from the record
--
-- A script calling up or down with args.quiet gets nothing on stdout
-- (it may be printing JSON there); errors come back as return values
-- either way.
--
-- Processes are started with core.spawn (fork + exec, their own session,
-- output appended to the log) and watched with core.pid_alive / core.kill:
-- no shell strings. D/cluster.json is the only state; a pid is trusted
-- only while /proc says that process still runs with the node's data dir
-- on its command line, so a recycled pid is never signalled. The command
-- line's side (actions, arguments, help) is lunakv.cmd.cluster.

local M = {}

local UP_TIMEOUT = 20    -- seconds for every node to be healthy and agree
local DOWN_GRACE = 10    -- seconds between SIGTERM and SIGKILL
local LOG_TAIL_LINES = 20
M.UP_TIMEOUT, M.DOWN_GRACE = UP_TIMEOUT, DOWN_GRACE

-- {======================================================================
-- Files and processes
-- =======================================================================

local function core() return require "lunakv.core" end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- Write path atomically: a reader sees the old file or the new one.
local function write_file(path, data)
  local tmp = path .. ".tmp"
  local f, err = io.open(tmp, "wb")
  if not f then return nil, err end
  local ok, werr = f:write(data)
  f:close()
  if not ok then
    os.remove(tmp)
    return nil, werr
  end
  local rok, rerr = os.rename(tmp, path)
  if not rok then
    os.remove(tmp)
    return nil, rerr
  end
  return true
end

-- The last n lines of a file, as one string ("" when missing).
local function tail(path, n)
  local s = read_file(path) or ""
  local lines = {}
  for l in s:gmatch("[^\n]+") do lines[#lines + 1] = l end
  local from = math.max(1, #lines - n + 1)
  return table.concat(lines, "\n", from)
end
M.tail = tail

-- An absolute path (the nodes and cluster.json must not depend on the
-- directory a later command runs from), from the kernel's working
-- directory: $PWD is whatever the parent left, stale when it changed
-- directory without a shell to update it.
local function absolute(p)
  if p:sub(1, 1) == "/" then return p end
  local cwd = core().getcwd()
  if not cwd then return p end
  p = p:gsub("^%./", "")
  if p == "." or p == "" then return cwd end
  return (cwd == "/" and "" or cwd) .. "/" .. p
end
M.absolute = absolute

-- Is pid still the node we started? It must run, and its command line
-- must hold the node's data dir (a pid recycled by the system would not).
local function is_node(pid, node)
  if type(pid) ~= "number" or pid <= 0 or not core().pid_alive(pid) then
    return false
  end
  local cmd = read_file("/proc/" .. pid .. "/cmdline")
  if cmd == nil then return true end -- no /proc: trust the record
  for part in cmd:gmatch("[^%z]+") do
    if part == node.dir then return true end
  end
  return false
end
M.is_node = is_node

-- Processes of node that we did not start: a node killed and started
-- again by hand answers on its recorded URL under a pid the record does
-- not know. /status does not give a pid, so it is found without asking
-- the node: every open db holds a lock on its LOCK file, and
-- /proc/locks lists the holders' pids; a holder is this node when it is
-- a `lunakv node` on the node's port with the node's data dir on its
-- command line (is_node: the same test as for a recorded pid, so a node
-- of another cluster that took these ports is never touched). A node
-- started with its data dir spelled otherwise (a relative path) is not
-- found. Returns a list of pids (empty without /proc).
local function unrecorded_pids(node)
  local locks = read_file("/proc/locks") or ""
  local found, seen = {}, {}
  -- "1: FLOCK  ADVISORY  WRITE 4242 00:1f:1234567 0 EOF"; waiters for a
  -- lock ("1: -> FLOCK ...") hold nothing and do not match
  for pid in locks:gmatch("%d+:%s+%u+%s+%u+%s+%u+%s+(%d+)%s") do
    pid = math.tointeger(tonumber(pid))
    if pid and not seen[pid] and pid ~= node.pid then
      seen[pid] = true
      local cmd = read_file("/proc/" .. pid .. "/cmdline") or ""
      local args = {}
      for part in cmd:gmatch("[^%z]+") do args[part] = true end
      if args.node and args[tostring(node.port)] and is_node(pid, node) then
        found[#found + 1] = pid
      end
    end
  end
  return found
end
M.unrecorded_pids = unrecorded_pids

-- The command that runs lunakv itself: this interpreter and bin/lunakv,
-- both as this process was started. The interpreter is arg's most negative
-- entry; the script is the one bin/lunakv recorded as lunakv.entry, or,
-- when lunakv is used as a library, an arg entry named lunakv. Anything
-- else is refused: starting another script as "a node" once made it
-- spawn itself, thousands of times.
local function self_command()
  local a = _G.arg or {}
  local interp, i = nil, -1
  while a[i] ~= nil do
    interp = a[i]
    i = i - 1
  end
  local entry = package.loaded["lunakv.entry"]
  local bin = type(entry) == "table" and entry.script or nil
  if not bin then
    for j = i + 1, 0 do
      if type(a[j]) == "string" and a[j]:match("^(.-/?)lunakv$") then
        bin = a[j]
        break
      end
    end
  end
  if not bin then
    error("lunakv: cluster: cannot find the lunakv command to start nodes "
      .. "with (run it as `lunakv cluster ...`)", 0)
  end
  if bin:find("/", 1, true) then bin = absolute(bin) end
  return interp or "lua5.4", bin
end
M.self_command = self_command

-- Signal every node in the list, then wait for all to be gone: SIGTERM,
-- up to grace seconds, then SIGKILL. A pid is signalled, and waited for,
-- only while it is still that node (is_node): one that exited and whose
-- number went to another process is left alone. Returns how many needed
-- SIGKILL and the nodes still running after it.
local function stop_all(procs, grace)
  local c = core()
  local live = {}
  for _, p in ipairs(procs) do
    if is_node(p.pid, p) then
      c.kill(p.pid, "TERM")
      live[#live + 1] = p
    end
  end
  local function wait(deadline)
    while true do
      local left = {}
      for _, p in ipairs(live) do
        if is_node(p.pid, p) then left[#left + 1] = p end
      end
      live = left
      if #live == 0 or c.clock() > deadline then return end
      c.sleep(0.05)
    end
  end
  wait(c.clock() + grace)
  local killed = 0
  for _, p in ipairs(live) do
    if is_node(p.pid, p) then
      c.kill(p.pid, "KILL")
      killed = killed + 1
    end
  end
  wait(c.clock() + 5)
  return killed, live
end

local function load_record(dir)
  local path = dir .. "/cluster.json"
  local text = read_file(path)
  if not text then return nil, path end
  local ok, doc = pcall(require("cjson").decode, text)
  if not ok or type(doc) ~= "table" or type(doc.nodes) ~= "table" then
    error("lunakv: " .. path .. " is not a cluster record (malformed JSON); "
      .. "remove it if no nodes run from " .. dir, 0)
  end
  for _, n in ipairs(doc.nodes) do
    n.pid = math.tointeger(n.pid) or n.pid
    n.port = math.tointeger(n.port) or n.port
  end
  return doc, path
end

-- GET url/path decoded as JSON, or nil and why (never raises).
local function get_json(url, path, timeout_ms)
  local ok, status, body = pcall(core().http_request, "GET", url .. path,
    nil, nil, timeout_ms or 2000)
  if not ok then
    local msg = tostring(status)
    return nil, msg:sub((msg:find("lunakv: ", 1, true) or -7) + 8)
  end
  if status ~= 200 then return nil, "HTTP " .. status end
  local dok, doc = pcall(require("cjson").decode, body)
  if not dok or type(doc) ~= "table" then return nil, "not JSON" end
  for k, v in pairs(doc) do
    if math.type(v) == "float" then doc[k] = math.tointeger(v) or v end
  end
  return doc
end

-- Does something accept connections on 127.0.0.1:port? Any HTTP answer,
-- and a connection that is accepted but answers nothing, say yes; only a
-- failure to connect says no.
local function port_in_use(port)
  local ok, err = pcall(core().http_request, "GET",
    "http://127.0.0.1:" .. port .. "/health", nil, nil, 1000)
  if ok then return true end
  return not tostring(err):find("cannot connect to", 1, true)
end

-- What node.log says since our start mark (at byte offset node.log_from;
-- the log keeps every earlier run).
local function log_since_start(node)
  local f = io.open(node.log, "rb")
  if not f then return "" end
  f:seek("set", node.log_from or 0)
  local s = f:read("a") or ""
  f:close()
  return s
end

-- }======================================================================

-- {======================================================================
-- up
-- =======================================================================

-- Why a cluster cannot start here, before anything is touched: its ports
-- past 65535 (a usage error: 2, message), a cluster already running from
-- dir, or a port something else answers on (nil, message). Nothing when
-- it can start.
local function refusal(args, n, base, dir)
  if base + n - 1 > 65535 then
    return 2, string.format("--base-port must be %s for %d nodes, got '%d' "
      .. "(the last node's port would be %d)",
      require("lunakv.config").int_range(1, 65536 - n), n, base,
      base + n - 1)
  end
  local rec = load_record(dir)
  if rec then
    local live = {}
    for _, node in ipairs(rec.nodes) do
      if is_node(node.pid, node) then live[#live + 1] = tostring(node.pid) end
    end
    if #live > 0 then
      return nil, string.format("a cluster is already running from %s (pids "
        .. "%s); `lunakv cluster down --dir %s` stops it", dir,
        table.concat(live, ", "), args.dir or "cluster")
    end
  end
  -- a port that already answers would pass for our node below (another
  -- cluster on the same ports answers /health and /status just alike)
  for port = base, base + n - 1 do
    if port_in_use(port) then
      return nil, string.format("port %d is already in use (something "
        .. "accepts connections on 127.0.0.1:%d); stop it or choose another "
        .. "--base-port", port, port)
    end
  end
  return nil
end

-- What a start needs: the nodes (name, port, url, dir, log of each; pid
-- once spawned), the leader's URL (the first node's), the command that
-- runs lunakv, the flags every node gets after its positional arguments
-- (our -c and -s, as given), its environment, and the nodes started so
-- far (what a failure must stop).
local function plan(args, dir, n, base)
  local s = { args = args, dir = dir, nodes = {}, urls = {}, started = {} }
  for i = 1, n do
    local port = base + i - 1
    s.nodes[i] = { name = "node" .. (i - 1), port = port,
      url = "http://127.0.0.1:" .. port,
      dir = dir .. "/node" .. (i - 1), log = dir .. "/node" .. (i - 1) .. ".log" }
    s.urls[i] = s.nodes[i].url
  end
  s.leader = s.urls[1]
  s.interp, s.bin = self_command()
  s.flags = {}
  local cfg = args.config or args.global_config
  if cfg then
    s.flags[#s.flags + 1] = "-c"
    s.flags[#s.flags + 1] = absolute(cfg)
  end
  for _, list in ipairs { args.global_set or {}, args.set or {} } do
    for _, kv in ipairs(list) do
      s.flags[#s.flags + 1] = "-s"
      s.flags[#s.flags + 1] = kv
    end
  end
  -- the token goes through the environment (CLUSTER_TOKEN), where ps
  -- does not show it, rather than as --token
  s.env = args.token and { CLUSTER_TOKEN = args.token } or nil
  return s
end

-- The cluster.json record of the nodes in list.
local function record_of(s, list)
  local copy = {}
  for i, node in ipairs(list) do
    copy[i] = { name = node.name, port = node.port, url = node.url,
      dir = node.dir, log = node.log, pid = node.pid }
  end
  return { version = 1, dir = s.dir, leader = s.leader,
    started = os.date("!%Y-%m-%dT%H:%M:%SZ"), nodes = copy }
end

-- A start that failed: stop what was started; keep the record of what
-- would not stop, for `cluster down`; show the log of the node at fault,
-- if one is. Returns nil and the message.
local function abandon(s, msg, node)
  local _, left = stop_all(s.started, 5)
  if #left > 0 then
    write_file(s.dir .. "/cluster.json",
      require("cjson").encode(record_of(s, s.started)))
    local pids = {}
    for _, p in ipairs(left) do pids[#pids + 1] = tostring(p.pid) end
    msg = string.format("%s; pids %s did not stop: cluster.json kept "
      .. "(`lunakv cluster down --dir %s` tries again)", msg,
      table.concat(pids, ", "), s.args.dir or "cluster")
  else
    os.remove(s.dir .. "/cluster.json")
  end
  if node then
    local t = tail(node.log, LOG_TAIL_LINES)
    io.stderr:write(string.format("lunakv: the last lines of %s:\n%s\n",
      node.log, t ~= "" and t or "(empty)"))
  end
  return nil, msg
end

-- Spawn every node. Returns true, or nil and a message (abandoned).
local function start_nodes(s)
  for _, node in ipairs(s.nodes) do
    local argv = { s.interp, s.bin, "node", tostring(node.port), node.dir,
      s.leader, table.concat(s.urls, ",") }
    for _, x in ipairs(s.flags) do argv[#argv + 1] = x end
    -- a mark between runs, so the log tail shows this start only
    local f = io.open(node.log, "ab")
    if f then
      f:write(os.date("!%Y-%m-%dT%H:%M:%SZ"), " lunakv cluster: starting ",
        node.name, " (", node.url, ")\n")
      node.log_from = f:seek("end")
      f:close()
    end
    local sok, pid = pcall(core().spawn, argv, node.log, s.env)
    if not sok then
      local msg = tostring(pid)
      return abandon(s, msg:sub((msg:find("lunakv: ", 1, true) or -7) + 8))
    end
    node.pid = pid
    s.started[#s.started + 1] = node
  end
  return true
end

-- One look at a starting node: its /status once it listens, or nil and
-- why not yet; nil, why, true when it never will (it exited, or could not
-- listen). The answers must be our node's, not those of whatever else
-- took the port first: our process must say it listens there.
local function look_at(node)
  if not core().pid_alive(node.pid) then
    return nil, string.format("%s (%s) exited during start-up", node.name,
      node.url), true
  end
  local log = log_since_start(node)
  if log:find("cannot listen on", 1, true) then
    return nil, string.format("%s (%s) cannot listen on port %d",
      node.name, node.url, node.port), true
  end
  if not log:find("listening on 127.0.0.1:" .. node.port .. " as "
      .. node.url, 1, true) then
    return nil, "not listening yet"
  end
  local h, herr = get_json(node.url, "/health", 1000)
  if not h then return nil, herr end
  local st, serr = get_json(node.url, "/status", 1000)
  if st and st.my_url ~= node.url then
    return nil, string.format("/status names it '%s'", tostring(st.my_url))
  end
  return st, serr
end

-- Do the nodes agree? They do when every one answers, all name the same
-- leader and are at its term (which a follower has once the leader's
-- first /append reached it). Returns that leader's URL, or nil, why, the
-- node that holds things up, and true when that node never will.
local function agreement(nodes)
  local agreed, term
  for _, node in ipairs(nodes) do
    local st, why, fatal = look_at(node)
    if fatal then return nil, why, node, true end
    if not st then return nil, node.url .. ": " .. tostring(why), node end
    local l = type(st.leader) == "string" and st.leader or ""
    if l == "" or (agreed and l ~= agreed) then
      return nil, string.format("%s names leader '%s'%s", node.url, l,
        agreed and (", another node '" .. agreed .. "'") or ""), node
    end
    agreed = l
    if term and st.term ~= term then
      return nil, string.format("%s is at term %s, the leader at %s",
        node.url, tostring(st.term), tostring(term)), node
    end
    term = term or st.term
  end
  return agreed
end

-- Poll until the nodes agree, and are still ours once they do (none died
-- meanwhile). Returns the leader's URL, or nil and a message (abandoned).
local function wait_ready(s)
  local c = core()
  local timeout = s.args.timeout or UP_TIMEOUT
  local deadline = c.clock() + timeout
  while true do
    local leader, why, culprit, fatal = agreement(s.nodes)
    if fatal then return abandon(s, why, culprit) end
    if leader then
      for _, node in ipairs(s.nodes) do
        if not is_node(node.pid, node) then
          return abandon(s, string.format("%s (%s) exited during start-up",
            node.name, node.url), node)
        end
      end
      return leader
    end
    if c.clock() > deadline then
      return abandon(s, string.format("the cluster was not ready within "
        .. "%g s: %s", timeout, why or "?"), culprit)
    end
    c.sleep(0.05)
  end
end

local function print_started(s, leader)
  local n = #s.nodes
  io.stdout:write(string.format("cluster of %d node%s up in %s, leader %s\n",
    n, n == 1 and "" or "s", s.dir, leader))
  local lines = {}
  for _, node in ipairs(s.nodes) do
    lines[#lines + 1] = { node.url, node.url == leader and "leader"
      or "follower", "pid " .. node.pid, node.log }
  end
  io.stdout:write(require("lunakv.bench.report").columns(lines), "\n")
end

-- `cluster up`: true, or nil and a message, or 2 and a message (usage).
function M.up(args)
  local n = args.n or 3
  local base = args.base_port or 8000
  local dir = absolute(args.dir or "cluster")
  local code, why = refusal(args, n, base, dir)
  if why then return code, why end
  local ok, err = core().mkdir(dir)
  if not ok then return nil, err end
  local s = plan(args, dir, n, base)
  ok, err = start_nodes(s)
  if not ok then return nil, err end
  local record = record_of(s, s.nodes)
  local wok, werr = write_file(dir .. "/cluster.json",
    require("cjson").encode(record))
  if not wok then
    return abandon(s, "cannot write cluster.json: " .. tostring(werr))
  end
  local leader
  leader, err = wait_ready(s)
  if not leader then return nil, err end
  record.leader = leader
  write_file(dir .. "/cluster.json", require("cjson").encode(record))
  if not args.quiet then print_started(s, leader) end
  return true
end

-- }======================================================================

-- {======================================================================
-- status and down
-- =======================================================================

local function no_record(path)
  return nil, "no cluster recorded: " .. path .. " does not exist"
end

-- `cluster status`: true, or nil and a message.
function M.status(args)
  local dir = absolute(args.dir or "cluster")
  local rec, path = load_record(dir)
  if not rec then return no_record(path) end
  local rows, leader_last, followers = {}, nil, {}
  for i, node in ipairs(rec.nodes) do
    local alive = is_node(node.pid, node)
    local st, err = get_json(node.url, "/status", 2000)
    rows[i] = { node = node, alive = alive, st = st, err = err }
    if st and st.role == "leader" then
      leader_last = math.tointeger(st.last_index) or st.last_index
      -- the leader's view of its followers, when it reports one
      if type(st.followers) == "table" then
        for _, f in ipairs(st.followers) do
          if type(f) == "table" and f.url then followers[f.url] = f end
        end
      end
    end
  end
  local lines = { { "url", "pid", "state", "role", "term", "commit", "last",
    "applied", "lag" } }
  local up_count = 0
  for _, r in ipairs(rows) do
    local st = r.st
    local state = r.alive and (st and "up" or "unreachable")
      or (st and "up (not ours)" or "stopped")
    if st then up_count = up_count + 1 end
    local lag = "-"
    local f = followers[r.node.url]
    if f and f.lag ~= nil then
      lag = tostring(math.tointeger(f.lag) or f.lag)
    elseif st and leader_last and st.last_index then
      lag = tostring(leader_last - st.last_index)
    end
    lines[#lines + 1] = { r.node.url, tostring(r.node.pid), state,
      st and tostring(st.role) or "-", st and tostring(st.term or "-") or "-",
      st and tostring(st.commit_index or "-") or "-",
      st and tostring(st.last_index or "-") or "-",
      st and tostring(st.applied_index or "-") or "-", lag }
  end
  io.stdout:write(string.format("cluster in %s: %d of %d nodes answer\n", dir,
    up_count, #rows))
  io.stdout:write(require("lunakv.bench.report").columns(lines), "\n")
  return true
end

-- Does a lunakv node answer as node on its recorded URL?
local function node_answers(node)
  local st = get_json(node.url, "/status", 2000)
  return st ~= nil and st.my_url == node.url
end

-- Stop every node of the record: the processes we started, and those
-- that answer on a recorded URL after a restart by hand (unrecorded_pids).
-- The record is removed only when no recorded URL answers as its node
-- afterwards; otherwise it is kept, so that `down` can be run again once
-- the rest is stopped, and down fails naming what still answers.
function M.down(args)
  local dir = absolute(args.dir or "cluster")
  local rec, path = load_record(dir)
  if not rec then return no_record(path) end
  local procs, by_hand = {}, {}
  for _, node in ipairs(rec.nodes) do
    if is_node(node.pid, node) then
      procs[#procs + 1] = node
    elseif node_answers(node) then
      for _, pid in ipairs(unrecorded_pids(node)) do
        local p = { name = node.name, url = node.url, dir = node.dir,
          pid = pid }
        procs[#procs + 1] = p
        by_hand[#by_hand + 1] = p
      end
    end
  end
  local killed, left = stop_all(procs, DOWN_GRACE)
  if #left > 0 then
    local pids = {}
    for _, p in ipairs(left) do pids[#pids + 1] = tostring(p.pid) end
    return nil, "pids " .. table.concat(pids, ", ")
      .. " survived SIGKILL; cluster.json kept"
  end
  local stopped = #procs
  local notes = {}
  for _, p in ipairs(by_hand) do
    notes[#notes + 1] = string.format("%s restarted by hand: pid %d", p.name,
      p.pid)
  end
  if killed > 0 then
    notes[#notes + 1] = string.format("%d with SIGKILL after %d s", killed,
      DOWN_GRACE)
  end
  if not args.quiet then
    io.stdout:write(string.format("stopped %d node%s%s\n", stopped,
      stopped == 1 and "" or "s",
      #notes > 0 and (" (" .. table.concat(notes, "; ") .. ")") or ""))
  end
  local answering = {}
  for _, node in ipairs(rec.nodes) do
    if node_answers(node) then
      answering[#answering + 1] = string.format("%s (%s)", node.url,
        node.name)
    end
  end
  if #answering > 0 then
    return nil, string.format("%s still answer%s, from no process with the "
      .. "recorded data dir on its command line (started with the dir "
      .. "spelled another way? another cluster on these ports?): stop %s, "
      .. "then run `lunakv cluster down --dir %s` again; cluster.json kept",
      table.concat(answering, ", "), #answering == 1 and "s" or "",
      #answering == 1 and "it" or "them", args.dir or "cluster")
  end
  os.remove(path)
  return true
end

-- }======================================================================

-- {======================================================================
-- add and remove (POST /add_node, POST /remove_node: docs/http_api.md)
-- =======================================================================

-- POST url/route {"node_url": node_url} with the token (when given):
-- status and the decoded answer, or nil and why.
local function post_member(url, route, node_url, token, timeout_ms)
  local cjson = require "cjson"
  local hdrs = { ["Content-Type"] = "application/json" }
  if token then hdrs["X-Lunakv-Token"] = token end
  local ok, status, body = pcall(core().http_request, "POST", url .. route,
    cjson.encode { node_url = node_url }, hdrs, timeout_ms or 15000)
  if not ok then return nil, tostring(status) end
  local dok, doc = pcall(cjson.decode, body)
  return status, dok and type(doc) == "table" and doc or { error = body }
end

-- The first recorded node (not except) that answers /status, or nil.
local function live_member(rec, except)
  for _, node in ipairs(rec.nodes) do
    if node.url ~= except and get_json(node.url, "/status", 1000) then
      return node
    end
  end
end

local function token_of(args)
  local t = args.token or os.getenv("CLUSTER_TOKEN")
  if t == "" then t = nil end
  return t
end

-- `cluster add`: true, or nil and a message.
function M.add(args)
  local dir = absolute(args.dir or "cluster")
  local rec, path = load_record(dir)
  if not rec then return no_record(path) end
  local via = live_member(rec)
  if not via then return nil, "no recorded node answers: nothing to join" end
  local port, k = args.port, #rec.nodes
  if not port then
    port = 0
    for _, n in ipairs(rec.nodes) do
      if n.port >= port then port = n.port + 1 end
    end
  end
  local name = "node" .. k
  local taken = function(nm)
    for _, n in ipairs(rec.nodes) do
      if n.name == nm then return true end
    end
  end
  while taken(name) do k = k + 1; name = "node" .. k end
  if port_in_use(port) then
    return nil, "port " .. port .. " is already in use (say --port)"
  end
  local node = { name = name, port = port, url = "http://127.0.0.1:" .. port,
    dir = dir .. "/" .. name, log = dir .. "/" .. name .. ".log" }
  local interp, bin = self_command()
  local argv = { interp, bin, "node", tostring(port), node.dir, "--join",
    via.url }
  local f = io.open(node.log, "ab")
  if f then
    f:write(os.date("!%Y-%m-%dT%H:%M:%SZ"), " lunakv cluster: starting ",
      name, " (", node.url, ") to join ", via.url, "\n")
    node.log_from = f:seek("end")
    f:close()
  end
  -- the node asks with the token it reads itself (CLUSTER_TOKEN)
  local sok, pid = pcall(core().spawn, argv, node.log,
    args.token and { CLUSTER_TOKEN = args.token } or nil)
  if not sok then return nil, tostring(pid) end
  node.pid = pid
  rec.nodes[#rec.nodes + 1] = node
  local c = core()
  local deadline = c.clock() + (args.timeout or 60)
  local why = "not a member yet"
  while true do
    if not c.pid_alive(pid) then
      local t = tail(node.log, LOG_TAIL_LINES)
      return nil, string.format("%s exited before it joined:\n%s", node.url, t)
    end
    local st = get_json(node.url, "/status", 1000)
    local leader = st and type(st.leader) == "string" and st.leader
    local lst = leader and get_json(leader, "/status", 1000)
    if lst and type(lst.voters) == "table" then
      for _, v in ipairs(lst.voters) do
        if v == node.url then
          write_file(path, require("cjson").encode(rec))
          io.stdout:write(string.format("%s joined the cluster as a voter "
            .. "(pid %d, log %s)\n", node.url, pid, node.log))
          return true
        end
      end
      why = "not a voter yet"
    end
    if c.clock() > deadline then
      -- recorded all the same: it runs, and `down` must stop it
      write_file(path, require("cjson").encode(rec))
      return nil, string.format("%s did not become a voter within %g s (%s); "
        .. "it still runs (pid %d), see %s", node.url, args.timeout or 60, why,
        pid, node.log)
    end
    c.sleep(0.1)
  end
end

-- `cluster remove URL`: true, or nil and a message.
function M.remove(args)
  local dir = absolute(args.dir or "cluster")
  local rec, path = load_record(dir)
  if not rec then return no_record(path) end
  local url = args.url:gsub("/+$", "")
  local via = live_member(rec, url) or live_member(rec)
  if not via then return nil, "no recorded node answers" end
  local status, doc = post_member(via.url, "/remove_node", url,
    token_of(args))
  if not status then return nil, doc end
  if status ~= 200 then
    return nil, string.format("%s refused (HTTP %d): %s", via.url, status,
      tostring(doc.error))
  end
  io.stdout:write(string.format("removed %s at index %s; voters: %s\n", url,
    tostring(math.tointeger(doc.index) or doc.index),
    table.concat(doc.voters or {}, ", ")))
  for i, node in ipairs(rec.nodes) do
    if node.url == url then
      stop_all({ node }, DOWN_GRACE)
      table.remove(rec.nodes, i)
      write_file(path, require("cjson").encode(rec))
      io.stdout:write(string.format("stopped %s (its data stays in %s)\n",
        node.name, node.dir))
      break
    end
  end
  return true
end

-- }======================================================================

return M
