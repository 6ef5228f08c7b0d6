-- tools/bench_failover.lua - `make bench-failover`: how long writes fail
-- when the leader of a 3-node lunakv cluster is killed with SIGKILL, and
-- what a planned leadership transfer (POST /transfer_leader) costs.
--
--   lua5.4 bin/lunakv run tools/bench_failover.lua [--kills N]
--       [--transfers N] [--clients C] [--retry-ms MS] [--timeout-ms MS]
--       [--election-timeout-ms MS] [--heartbeat-ms MS]
--
-- Method. Three `lunakv node` processes on 127.0.0.1 (free ports, default
-- settings: HEARTBEAT_MS 100, ELECTION_TIMEOUT_MS 1000), data in one
-- temporary directory; --election-timeout-ms and --heartbeat-ms, when
-- given, go to every node, to see what other settings would give. C client processes (this same script with
-- --client) write continuously, each write a POST /set to the next node
-- in turn (a follower forwards it to the leader), and log one line per
-- write: when it was sent, when it ended, and how (the HTTP status, or
-- why there was none), on the machine's monotonic clock, which every
-- process shares. A client that cannot connect to a node (the one just
-- killed) tries the next at once and leaves that node out for a second,
-- as a client with a list of endpoints does; a refused connection is
-- therefore not a failed write, but an answer other than 200, or none
-- within --timeout-ms, is. After a failed write the client waits
-- --retry-ms before the next.
--
-- Each kill: SIGKILL the leader, wait until a survivor leads and the
-- clients have written through it, restart the killed node on its data,
-- and wait until all three agree on the leader and the restarted node has
-- applied everything the leader had committed when it came back. Each
-- transfer: POST /transfer_leader to the leader naming a follower, while
-- the clients write. Afterwards the client logs are read and, per kill:
-- the failure window (the first write after the kill that failed, from
-- when it was sent or the kill if later, to the first success sent after
-- the kill) and kill -> first success; per transfer: the failed writes
-- and the longest time without a successful write from the request to
-- 0.5 s after its answer.
--
-- Everything started is stopped at the end, on an error too. A make
-- target's script, not part of the installed module.

local core = require "lunakv.core"
local procs = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./")
  .. "procs.lua")
local cjson = require "cjson"

local M = {}
local shell_quote, free_ports = procs.shell_quote, procs.free_ports
local loadavg = procs.loadavg

local function log(fmt, ...)
  io.stderr:write("bench-failover: ", string.format(fmt, ...), "\n")
  io.stderr:flush()
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

-- {======================================================================
-- The client (--client): one write loop, logging every write
-- =======================================================================

-- Log lines: "SENT ENDED OUTCOME" with SENT and ENDED on core.clock() and
-- OUTCOME the HTTP status (when it is not 200, with the error up to its
-- first colon, spaces made _, and the port of the node that answered:
-- 503:no_leader@20991) or a word (timeout, error, refused). The loop ends when
-- the stop file exists or after max_seconds (a bound in case the parent
-- died without stopping it).
local function client_main(id, urls_csv, out_path, stop_path, o)
  local urls = {}
  for u in urls_csv:gmatch("[^,]+") do urls[#urls + 1] = u end
  local out = assert(io.open(out_path, "wb"))
  local skip_until = {}
  local next_url, n = 1, 0
  local deadline = core.clock() + o.max_seconds
  local hdrs = { ["content-type"] = "application/json" }
  while core.clock() < deadline do
    -- every 32 writes: stopping is checked often enough, and seldom
    -- enough not to be what the loop spends its time on
    if n % 32 == 0 and exists(stop_path) then break end
    n = n + 1
    local body = cjson.encode { key = string.format("c%d-%08d", id, n % 100000),
      value = string.format("v%d", n) }
    local sent, ended, outcome
    sent = core.clock()
    -- a refused connection moves on to the next node; one try per node
    for _ = 1, #urls do
      local i = next_url
      next_url = next_url % #urls + 1
      if (skip_until[i] or 0) <= core.clock() then
        local ok, status, answer = pcall(core.http_request, "POST",
          urls[i] .. "/set", body, hdrs, o.timeout_ms)
        if ok then
          outcome = tostring(status)
          if status ~= 200 then
            -- why, and from whom, for the report: "503:no_leader@20991"
            local dok, doc = pcall(cjson.decode, answer or "")
            local why = dok and type(doc) == "table"
              and type(doc.error) == "string" and doc.error or "?"
            why = why:match("^[^:]*"):sub(1, 30):gsub("%s", "_")
            outcome = string.format("%s:%s@%s", outcome, why,
              urls[i]:match("(%d+)$"))
          end
          break
        end
        local msg = tostring(status)
        if msg:find("connection refused", 1, true) then
          skip_until[i] = core.clock() + 1
        else
          outcome = msg:find("timed out", 1, true) and "timeout" or "error"
          break
        end
      end
    end
    ended = core.clock()
    outcome = outcome or "refused" -- every node refused the connection
    out:write(string.format("%.6f %.6f %s\n", sent, ended, outcome))
    if outcome ~= "200" then core.sleep(o.retry_ms / 1000) end
  end
  out:close()
  return 0
end

-- }======================================================================

-- {======================================================================
-- The cluster: three nodes we start, kill and restart ourselves
-- =======================================================================

-- GET url/path as JSON, or nil (never raises).
local function get_json(url, path)
  local ok, status, body = pcall(core.http_request, "GET", url .. path,
    nil, nil, 1000)
  if not ok or status ~= 200 then return nil end
  local dok, doc = pcall(cjson.decode, body)
  return dok and type(doc) == "table" and doc or nil
end

local alive = procs.alive

local function wait_for(what, timeout, fn, every)
  local deadline = core.clock() + timeout
  while true do
    local r = fn()
    if r then return r end
    if core.clock() > deadline then
      error(string.format("lunakv: %s not within %g s", what, timeout), 0)
    end
    core.sleep(every or 0.02)
  end
end

local function spawn_node(c, node)
  local argv = { c.interp, c.bin, "node", tostring(node.port), node.dir,
    c.urls[1], table.concat(c.urls, ",") }
  for _, a in ipairs(c.node_args) do argv[#argv + 1] = a end
  local f = io.open(node.log, "ab")
  if f then
    f:write(os.date("!%Y-%m-%dT%H:%M:%SZ"), " bench-failover: starting ",
      node.url, "\n")
    f:close()
  end
  node.pid = core.spawn(argv, node.log)
end

-- The node that leads, as its own /status says and every other running
-- node agrees (same leader URL and term), or nil.
local function agreed_leader(c)
  local leader, term
  for _, node in ipairs(c.nodes) do
    if alive(node) then
      local st = get_json(node.url, "/status")
      if not st or type(st.leader) ~= "string" then return nil end
      if leader and (st.leader ~= leader or st.term ~= term) then
        return nil
      end
      leader, term = st.leader, st.term
    end
  end
  for _, node in ipairs(c.nodes) do
    if node.url == leader and alive(node) then return node end
  end
  return nil
end

-- Wait until every node runs, they agree on a leader, the leader sees
-- every follower "up", and each has applied what the leader had
-- committed when this began. Returns the leader.
local function wait_converged(c, timeout)
  local leader = wait_for("an agreed leader", timeout, function()
    return agreed_leader(c)
  end)
  local target = (get_json(leader.url, "/status") or {}).commit_index or 0
  return wait_for("convergence", timeout, function()
    local l = agreed_leader(c)
    if not l then return nil end
    local st = get_json(l.url, "/status")
    if not st or st.role ~= "leader" then return nil end
    local up = 0
    for _, f in ipairs(st.followers or {}) do
      if f.state == "up" then up = up + 1 end
    end
    if up < #c.nodes - 1 then return nil end
    for _, node in ipairs(c.nodes) do
      if not alive(node) then return nil end
      local ns = get_json(node.url, "/status")
      if not ns or (ns.applied_index or -1) < target then return nil end
    end
    return l
  end)
end

local function start_cluster(c)
  for _ = 1, 5 do
    local ports = free_ports(3)
    c.urls, c.nodes = {}, {}
    for i = 1, 3 do
      c.urls[i] = "http://127.0.0.1:" .. ports[i]
      c.nodes[i] = { url = c.urls[i], port = ports[i],
        dir = c.base .. "/node" .. i, log = c.base .. "/node" .. i .. ".log" }
    end
    for _, node in ipairs(c.nodes) do spawn_node(c, node) end
    local ok, err = pcall(wait_converged, c, 20)
    if ok then return err end
    local taken = false
    for _, node in ipairs(c.nodes) do
      local cl = require("lunakv.cluster")
      if cl.tail(node.log, 50):find("cannot listen", 1, true) then
        taken = true
      end
    end
    M.stop_nodes(c)
    if not taken then error(err, 0) end
    log("a port was taken: starting again on others")
  end
  error("lunakv: no free ports after 5 tries", 0)
end

-- Stop every process we started: SIGTERM, SIGKILL after 10 s.
function M.stop_nodes(c)
  local all = {}
  for _, node in ipairs(c.nodes or {}) do all[#all + 1] = node end
  for _, cl in ipairs(c.clients or {}) do all[#all + 1] = cl end
  procs.stop(all)
end

-- }======================================================================

-- {======================================================================
-- The analysis of the client logs
-- =======================================================================

-- "503:no_leader x40, error x2": the outcomes counted in why, most first.
local function outcomes(why)
  local list = {}
  for o, n in pairs(why) do list[#list + 1] = { o, n } end
  table.sort(list, function(a, b)
    return a[2] > b[2] or (a[2] == b[2] and a[1] < b[1])
  end)
  for i, x in ipairs(list) do list[i] = x[1] .. " x" .. x[2] end
  return table.concat(list, ", ")
end

local function read_writes(c)
  local all = {}
  for _, cl in ipairs(c.clients) do
    local f = io.open(cl.out, "rb")
    if f then
      for line in f:lines() do
        local s, e, o = line:match("^(%S+) (%S+) (%S+)$")
        if s then
          all[#all + 1] = { sent = tonumber(s), ended = tonumber(e),
            ok = o == "200", outcome = o }
        end
      end
      f:close()
    end
  end
  table.sort(all, function(a, b) return a.sent < b.sent end)
  return all
end

-- A kill at t (next: when the node came back, bounding the search):
-- window (first failed write -> first success), kill -> first success,
-- and how many writes failed in between.
local function kill_figures(writes, t)
  local first_fail, first_ok, errors, why = nil, nil, 0, {}
  for _, w in ipairs(writes) do
    if w.ended >= t then
      if not w.ok and (not first_ok or w.sent < first_ok) then
        first_fail = first_fail or math.max(w.sent, t)
        errors = errors + 1
        why[w.outcome] = (why[w.outcome] or 0) + 1
      elseif w.ok and w.sent >= t then
        first_ok = first_ok and math.min(first_ok, w.ended) or w.ended
      end
    end
  end
  if not first_ok then return nil end
  return { window = first_fail and (first_ok - first_fail) or 0,
    to_success = first_ok - t, errors = errors, why = outcomes(why) }
end

-- A transfer from t0 to t1: failed writes ending in [t0, t1 + 0.5] and
-- the longest time without a success ending in it (from the last success
-- before t0).
local function transfer_figures(writes, t0, t1)
  local ends, errors, last_before, why = {}, 0, nil, {}
  for _, w in ipairs(writes) do
    if w.ended >= t0 and w.ended <= t1 + 0.5 then
      if w.ok then
        ends[#ends + 1] = w.ended
      else
        errors = errors + 1
        why[w.outcome] = (why[w.outcome] or 0) + 1
      end
    elseif w.ok and w.ended < t0 then
      last_before = math.max(last_before or w.ended, w.ended)
    end
  end
  table.sort(ends)
  local gap, prev = 0, last_before or t0
  for _, e in ipairs(ends) do
    gap = math.max(gap, e - prev)
    prev = e
  end
  gap = math.max(gap, t1 + 0.5 - prev)
  return { errors = errors, pause = gap, why = outcomes(why) }
end

-- bench.columns of rows, each line followed by the free text in tail
-- (the outcomes: wider than a column may be).
local function columns_with(bench, rows, tail)
  local lines, i = {}, 0
  for line in (bench.columns(rows) .. "\n"):gmatch("([^\n]*)\n") do
    i = i + 1
    lines[i] = tail[i] and (line .. "  " .. tail[i]) or line
  end
  return table.concat(lines, "\n")
end

local function median(xs)
  local s = {}
  for i, x in ipairs(xs) do s[i] = x end
  table.sort(s)
  local n = #s
  if n == 0 then return 0 end
  if n % 2 == 1 then return s[(n + 1) // 2] end
  return (s[n // 2] + s[n // 2 + 1]) / 2
end

local function maximum(xs)
  local m = 0
  for _, x in ipairs(xs) do m = math.max(m, x) end
  return m
end

-- }======================================================================

-- {======================================================================
-- The run
-- =======================================================================

local function parse_args(argv)
  local o = { kills = 20, transfers = 10, clients = 2, retry_ms = 50,
    timeout_ms = 2000, max_seconds = 3600 }
  local i = 1
  local flags = { ["--kills"] = "kills", ["--transfers"] = "transfers",
    ["--clients"] = "clients", ["--retry-ms"] = "retry_ms",
    ["--timeout-ms"] = "timeout_ms",
    ["--election-timeout-ms"] = "election_timeout_ms",
    ["--heartbeat-ms"] = "heartbeat_ms" }
  while argv[i] do
    local a = argv[i]
    if a == "--client" then -- internal: ID URLS OUT STOP
      o.client = { math.tointeger(tonumber(argv[i + 1])), argv[i + 2],
        argv[i + 3], argv[i + 4] }
      if not (o.client[1] and o.client[4]) then
        error("lunakv: --client needs ID URLS OUT STOP", 0)
      end
      i = i + 4
    elseif flags[a] then
      local v = math.tointeger(tonumber(argv[i + 1]))
      local min = (a == "--kills" or a == "--transfers") and 0 or 1
      if not v or v < min or v > 100000 then
        error(string.format("lunakv: %s needs an integer %d..100000, got "
          .. "'%s'", a, min, tostring(argv[i + 1])), 0)
      end
      o[flags[a]] = v
      i = i + 1
    else
      error("lunakv: unknown argument '" .. a .. "' (--kills N, "
        .. "--transfers N, --clients C, --retry-ms MS, --timeout-ms MS, "
        .. "--election-timeout-ms MS, --heartbeat-ms MS)", 0)
    end
    i = i + 1
  end
  return o
end

local function start_clients(c, o)
  c.clients = {}
  c.stop_file = c.base .. "/stop-clients"
  for id = 1, o.clients do
    local cl = { out = string.format("%s/client%d.out", c.base, id),
      log = string.format("%s/client%d.log", c.base, id) }
    cl.pid = core.spawn({ c.interp, c.bin, "run", c.script, "--client",
      tostring(id), table.concat(c.urls, ","), cl.out, c.stop_file,
      "--retry-ms", tostring(o.retry_ms), "--timeout-ms",
      tostring(o.timeout_ms) }, cl.log)
    c.clients[id] = cl
  end
end

local function stop_clients(c)
  local f = assert(io.open(c.stop_file, "wb"))
  f:close()
  for _, cl in ipairs(c.clients) do
    local d = core.clock() + 10
    while alive(cl) and core.clock() < d do core.sleep(0.05) end
  end
end

-- Has any client logged a success sent after t? (The logs are read as
-- they grow: a line may be cut; only whole ones count.)
local function success_since(c, t)
  for _, cl in ipairs(c.clients) do
    local f = io.open(cl.out, "rb")
    if f then
      local size = f:seek("end")
      f:seek("set", math.max(0, size - 4096))
      local tail = f:read("a") or ""
      f:close()
      for s, o in tail:gmatch("\n(%S+) %S+ (%S+)\n") do
        if o == "200" and tonumber(s) >= t then return true end
      end
    end
  end
  return false
end

local function run(c, o, res)
  log("3 nodes in %s", c.base)
  local leader = start_cluster(c)
  log("nodes %s; leader %s", table.concat(c.urls, " "), leader.url)
  start_clients(c, o)
  wait_for("the clients' first success", 20, function()
    return success_since(c, 0)
  end)
  for k = 1, o.kills do
    core.sleep(1) -- steady writing before the kill
    leader = wait_converged(c, 60)
    local t = core.clock()
    core.kill(leader.pid, "KILL")
    local victim = leader
    while alive(victim) do core.sleep(0.005) end
    -- when a survivor first says it leads (polled every few ms): splits
    -- the window into the election and what follows it
    local t_elected = wait_for("a survivor that leads", 30, function()
      for _, node in ipairs(c.nodes) do
        if node ~= victim then
          local st = get_json(node.url, "/status")
          if st and st.role == "leader" then return core.clock() end
        end
      end
      return nil
    end, 0.005)
    local new = wait_for("a new leader", 30, function()
      local l = agreed_leader(c)
      return l and l ~= victim and l
    end)
    wait_for("writes through the new leader", 30, function()
      return success_since(c, t)
    end)
    core.sleep(0.5)
    res.kills[k] = { t = t, victim = victim.url, new = new.url,
      elected = t_elected - t }
    spawn_node(c, victim)
    log("kill %d/%d: %s killed, %s leads (%.2f s); restarted", k, o.kills,
      victim.url, new.url, core.clock() - t)
  end
  for k = 1, o.transfers do
    core.sleep(1)
    leader = wait_converged(c, 60)
    local to
    for _, node in ipairs(c.nodes) do
      if node ~= leader then to = node end
    end
    local t0 = core.clock()
    local ok, status, body = pcall(core.http_request, "POST",
      leader.url .. "/transfer_leader", cjson.encode { node_url = to.url },
      { ["content-type"] = "application/json" }, 10000)
    local t1 = core.clock()
    res.transfers[k] = { t0 = t0, t1 = t1, from = leader.url, to = to.url,
      status = ok and status or tostring(status),
      body = ok and body or nil }
    log("transfer %d/%d: %s -> %s: %s in %.0f ms", k, o.transfers,
      leader.url, to.url, ok and tostring(status) or tostring(status),
      (t1 - t0) * 1000)
    core.sleep(0.6) -- the analysis looks 0.5 s past the answer
  end
  core.sleep(0.5)
  stop_clients(c)
end

local function report(c, o, res)
  local bench = require "lunakv.bench"
  local m = bench.machine()
  local writes = read_writes(c)
  local ok_lat = {}
  for _, w in ipairs(writes) do
    if w.ok then ok_lat[#ok_lat + 1] = w.ended - w.sent end
  end
  local out = {}
  local function p(fmt, ...) out[#out + 1] = string.format(fmt, ...) end
  local settings = "default settings (HEARTBEAT_MS 100, "
    .. "ELECTION_TIMEOUT_MS 1000)"
  if #c.node_args > 0 then
    settings = "nodes given " .. table.concat(c.node_args, " ")
  end
  p("3 nodes on 127.0.0.1, %s; %d client loop(s), retry after %d ms, "
    .. "write timeout %d ms; %d cores, %s", settings, o.clients, o.retry_ms,
    o.timeout_ms, m.cores, m.cpu)
  p("load average (1 min) at the start %s, at the end %s", res.load_start,
    loadavg())
  p("%d writes logged, %d ok; successful write median %.2f ms", #writes,
    #ok_lat, median(ok_lat) * 1000)
  p("")
  if #res.kills > 0 then
    local rows = { { "kill", "killed", "new leader", "failed writes",
      "window s", "kill->ok s", "kill->leader s" } }
    local tail = { "failures (status:error@port)" }
    local win, tos, els = {}, {}, {}
    for k, kill in ipairs(res.kills) do
      local f = kill_figures(writes, kill.t)
      if f then
        win[#win + 1], tos[#tos + 1] = f.window, f.to_success
        els[#els + 1] = kill.elected
        rows[#rows + 1] = { tostring(k), kill.victim, kill.new,
          tostring(f.errors), string.format("%.3f", f.window),
          string.format("%.3f", f.to_success),
          string.format("%.3f", kill.elected) }
        tail[#rows] = f.why
      else
        rows[#rows + 1] = { tostring(k), kill.victim, kill.new, "?",
          "no success", "", string.format("%.3f", kill.elected) }
      end
    end
    p("%s", columns_with(bench, rows, tail))
    p("")
    p("failover (%d kills): window median %.3f s, worst %.3f s; "
      .. "kill -> first success median %.3f s, worst %.3f s", #win,
      median(win), maximum(win), median(tos), maximum(tos))
    p("kill -> a survivor leads (its /status, polled every 5 ms): median "
      .. "%.3f s, worst %.3f s", median(els), maximum(els))
    res.failover = { window_median = median(win), window_worst = maximum(win),
      to_success_median = median(tos), to_success_worst = maximum(tos),
      elected_median = median(els), elected_worst = maximum(els) }
    p("")
  end
  if #res.transfers > 0 then
    local rows = { { "transfer", "from", "to", "answer", "took ms",
      "failed writes", "pause ms" } }
    local tail = { "failures (status:error@port)" }
    local errs, pauses = 0, {}
    for k, t in ipairs(res.transfers) do
      local f = transfer_figures(writes, t.t0, t.t1)
      errs = errs + f.errors
      pauses[#pauses + 1] = f.pause
      rows[#rows + 1] = { tostring(k), t.from, t.to, tostring(t.status),
        string.format("%.0f", (t.t1 - t.t0) * 1000), tostring(f.errors),
        string.format("%.0f", f.pause * 1000) }
      tail[#rows] = f.why
    end
    p("%s", columns_with(bench, rows, tail))
    p("")
    p("transfers (%d): failed writes %d; pause median %.0f ms, worst %.0f ms",
      #res.transfers, errs, median(pauses) * 1000, maximum(pauses) * 1000)
  end
  io.stdout:write(table.concat(out, "\n"), "\n")
end

function M.main(argv)
  local o = parse_args(argv or {})
  if o.client then
    return client_main(o.client[1], o.client[2], o.client[3], o.client[4], o)
  end
  local c = { script = require("lunakv.cluster").absolute(
    assert(_G.arg and _G.arg[0], "no script path")) }
  c.interp, c.bin = require("lunakv.cluster").self_command()
  -- the node checks the values (ranges, at least two heartbeats per
  -- election timeout) and refuses to start on bad ones
  c.node_args = {}
  if o.heartbeat_ms then
    table.insert(c.node_args, "--heartbeat-ms")
    table.insert(c.node_args, tostring(o.heartbeat_ms))
  end
  if o.election_timeout_ms then
    table.insert(c.node_args, "--election-timeout-ms")
    table.insert(c.node_args, tostring(o.election_timeout_ms))
  end
  c.base = os.tmpname()
  os.remove(c.base)
  assert(core.mkdir(c.base))
  local res = { kills = {}, transfers = {}, load_start = loadavg() }
  local ok, err = pcall(run, c, o, res)
  if not ok and c.stop_file then pcall(stop_clients, c) end
  local rok, rerr = true, nil
  if ok then rok, rerr = pcall(report, c, o, res) end
  -- every path comes here, the failed ones too
  M.stop_nodes(c)
  if not ok or not rok then
    io.stderr:write(tostring(err or rerr), "\n")
    for _, node in ipairs(c.nodes or {}) do
      io.stderr:write("-- ", node.log, ":\n",
        require("lunakv.cluster").tail(node.log, 15), "\n")
    end
  end
  os.execute("rm -rf -- " .. shell_quote(c.base))
  return (ok and rok) and 0 or 1
end

-- }======================================================================

os.exit(M.main({ ... }), true)
