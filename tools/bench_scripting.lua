-- tools/bench_scripting.lua - `make bench-scripting` (issue 19): a stored
-- function's calls on lunakv against Redis running the same logic through
-- EVAL, and on a 3-node lunakv cluster the calls against plain writes.
--
--   lua5.4 bin/lunakv run tools/bench_scripting.lua [--seconds S]
--       [--connections C] [--keys K] [--rounds R] [--json]
--
-- The logic is an increment: get the key, add 1, set it, return the new
-- value (INCR_LIBRARY and REDIS_SCRIPT below, the same lines in each
-- system's Lua). Every request picks its key uniformly at random among K
-- (100,000) on both sides. Three parts, one after the other, so that no
-- two servers ever share the machine's cores; each server is stopped
-- before the next starts:
--
-- 1. One lunakv node (a cluster of one: `lunakv node PORT DIR URL URL`,
--    started by lunakv.cluster). It answers a write, a call's batch
--    included, only after the fdatasync that covers the write's log entry:
--    the commit needs a majority of the voters' durable indexes, and with
--    one voter that is the node's own fdatasync (docs/replication.md, "The
--    commit path"; one fdatasync covers every entry written since the
--    last: group commit). The run shows the node's fdatasync count (/stats,
--    rlog.syncs) per workload. PUT /functions/bench loads the library,
--    then POST /call/incr {"key": K} for S seconds at C connections, then
--    POST /set (8-byte values) for S seconds on the same node for
--    reference. The load generator is the C one of `lunakv bench --url`
--    (core.http_bench, target "call").
-- 2. redis-server (Debian's, when installed) on a free loopback port with
--    --appendonly yes --appendfsync always --save '': it writes and
--    fsyncs its append-only file before it sends the replies of each
--    pass of its event loop (group commit as well). Its load comes from
--    redis-benchmark (Redis's own tool, Debian's redis-tools), because
--    our generator speaks HTTP, not RESP: -c C -r K, EVAL REDIS_SCRIPT 1
--    key:__rand_int__, with -n sized from short probes to last about S
--    seconds. Without redis-server or redis-benchmark, lunakv runs alone.
-- 3. Three lunakv nodes (lunakv.cluster): the library, then /call and
--    /set to the leader, S seconds each.
--
-- Parts 1 and 2 run R times (--rounds, 5), alternating, each round with
-- a new node and a new redis-server: this machine's disk and cores have
-- moods that last seconds to minutes (one node's fdatasync took 130 us on
-- average in one 8 s run and 230 us in the next), and one run each side
-- compared whatever mood each met. Each side's figure is its median
-- round (by ops/s), and the goal's ratio the median of the rounds' own
-- ratios (a round's two runs are a minute apart at most).
--
-- Printed: ops/s, p50 and p99 of each, the ratios lunakv /call / Redis
-- EVAL (issue 19's goal: at least 1.0; every round's too) and 3-node
-- /call / /set (goal: at least 0.8), and whether each goal is met; --json
-- prints one object.
-- Everything started is stopped at the end, on an error too, and the one
-- temporary directory holding all data is removed. A make target's
-- script, not part of the installed module.

local core = require "lunakv.core"
local cjson = require "cjson"
local procs = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./")
  .. "procs.lua")

local M = {}
local shell_quote, which, wait_for = procs.shell_quote, procs.which,
  procs.wait_for

-- The increment, once per system. The lunakv library is what
-- docs/functions.md shows; Redis's Lua gets false, not nil, for a missing
-- key, which `or` treats alike.
local INCR_LIBRARY = [[
lunakv.register("incr", function(tx, args)
  local v = tonumber(tx:get(args.key) or "0") + 1
  tx:set(args.key, tostring(v))
  return v
end)
]]
local REDIS_SCRIPT = "local v = tonumber(redis.call('GET', KEYS[1]) or '0')"
  .. " + 1 redis.call('SET', KEYS[1], tostring(v)) return v"

local GOAL_VS_REDIS = 1.0 -- lunakv /call ops/s over Redis EVAL's, 1 node
local GOAL_VS_SET = 0.8   -- /call ops/s over /set's, 3 nodes
local SET_VALUE_SIZE = 8  -- about what a counter holds
local REDIS_PROBE_N = 2000

local function log(fmt, ...)
  io.stderr:write("bench-scripting: ", string.format(fmt, ...), "\n")
  io.stderr:flush()
end

-- {======================================================================
-- lunakv
-- =======================================================================

-- Start n nodes under dir with lunakv.cluster (quiet: stdout may carry
-- JSON), on random consecutive ports; a port taken by something else is
-- tried again elsewhere. Returns the leader's URL. The caller stops the
-- nodes with cluster.down { dir = dir } whether this returns or raises
-- (down of a directory without a record does nothing).
local function lunakv_up(n, dir)
  local cluster = require "lunakv.cluster"
  for _ = 1, 5 do
    local base = math.random(20000, 31000)
    local ok, why = cluster.up { n = n, base_port = base, dir = dir,
      quiet = true }
    if ok then
      local st = cjson.decode(select(2, core.http_request("GET",
        "http://127.0.0.1:" .. base .. "/status", nil, nil, 5000)))
      log("lunakv: %d node%s on %s, leader %s", n, n == 1 and "" or "s",
        n == 1 and ("port " .. base) or string.format("ports %d..%d", base,
          base + n - 1), tostring(st.leader))
      return st.leader
    end
    if not tostring(why):find("already in use", 1, true) then
      error("lunakv: " .. tostring(why), 0)
    end
  end
  error("lunakv: no free ports after 5 tries", 0)
end

local function lunakv_down(dir)
  local ok, why = require("lunakv.cluster").down { dir = dir, quiet = true }
  if not ok and not tostring(why):find("no cluster recorded", 1, true) then
    error("lunakv: " .. tostring(why), 0)
  end
end

local function load_library(url)
  local status, body = core.http_request("PUT", url .. "/functions/bench",
    INCR_LIBRARY, nil, 10000)
  if status ~= 200 then
    error(string.format("lunakv: PUT /functions/bench: HTTP %d: %s", status,
      body), 0)
  end
end

-- The leader's fdatasync count on its replication log.
local function syncs(url)
  local status, body = core.http_request("GET", url .. "/stats", nil, nil,
    5000)
  if status ~= 200 then return nil end
  local ok, doc = pcall(cjson.decode, body)
  return ok and type(doc.rlog) == "table" and doc.rlog.syncs or nil
end

-- One workload on url: "call" (/call/incr) or "set" (/set). Returns the
-- generator's result plus syncs (the fdatasyncs meanwhile).
local function drive(url, what, o)
  log("lunakv: %s, %d connections, %g s", what == "call" and "/call/incr"
    or "/set", o.connections, o.seconds)
  local s0 = syncs(url)
  local spec = { url = url, connections = o.connections,
    seconds = o.seconds, write_pct = 100, key_space = o.keys,
    sequential = false, seed = math.random(1, 1 << 30) }
  if what == "call" then
    spec.target, spec.fn = "call", "incr"
  else
    spec.value_size = SET_VALUE_SIZE
  end
  local r = core.http_bench(spec)
  local s1 = syncs(url)
  r.syncs = s0 and s1 and (s1 - s0) or nil
  if r.errors > 0 then
    log("lunakv: %s: %d of %d requests failed; the first: %s", what,
      r.errors, r.ops, tostring(r.first_error))
  end
  if r.errors == r.ops then
    error("lunakv: every request of " .. what .. " failed: "
      .. tostring(r.first_error), 0)
  end
  return r
end

-- }======================================================================

-- {======================================================================
-- Redis
-- =======================================================================

-- The output of a command line (stdout and stderr), and whether it
-- exited 0.
local function run(cmd)
  local f = assert(io.popen(cmd .. " 2>&1", "r"))
  local out = f:read("a")
  local ok = f:close()
  return out, ok == true
end

local function redis_cli(r, args)
  return run(shell_quote(r.cli) .. " -h 127.0.0.1 -p " .. r.port .. " "
    .. args)
end

-- Start redis-server into r (r.pid as soon as it is spawned, so that the
-- caller stops it also when this raises) and wait until it answers.
local function redis_up(r, dir)
  assert(core.mkdir(dir))
  for _ = 1, 5 do
    r.port = procs.free_ports(1)[1]
    r.log = dir .. "/redis.log"
    r.pid = core.spawn({ r.server, "--port", tostring(r.port),
      "--bind", "127.0.0.1", "--dir", dir, "--appendonly", "yes",
      "--appendfsync", "always", "--save", "", "--daemonize", "no",
      "--logfile", "" }, r.log)
    local died = false
    wait_for("redis-server", 20, function()
      if not procs.alive(r) then
        died = true
        return true
      end
      local out = redis_cli(r, "ping")
      return out:find("PONG", 1, true) ~= nil, out
    end)
    if not died then
      local cfg = redis_cli(r, "config get appendfsync")
      r.appendfsync = cfg:match("appendfsync%s+(%S+)")
      r.version = (redis_cli(r, "info server")):match("redis_version:(%S+)")
      log("redis %s: port %d, appendfsync %s (%s)", tostring(r.version),
        r.port, tostring(r.appendfsync), r.server)
      return
    end
    local t = require("lunakv.cluster").tail(r.log, 10)
    if not t:find("Address already in use", 1, true) then
      error("redis-server exited at start; its log:\n" .. t, 0)
    end
  end
  error("redis-server: no free port after 5 tries", 0)
end

-- The fields of one CSV line of redis-benchmark: each is quoted, and
-- the first (the command) holds commas but no quote (REDIS_SCRIPT has
-- none).
local function csv_fields(line)
  local t = {}
  for f in line:gmatch('"([^"]*)"') do t[#t + 1] = f end
  return t
end

-- One redis-benchmark run of n requests. Returns { ops_per_sec, p50_us,
-- p99_us, requests, seconds, errors }.
local function redis_bench(r, o, n)
  local cmd = table.concat({ shell_quote(r.benchmark), "-h", "127.0.0.1",
    "-p", tostring(r.port), "-c", tostring(o.connections), "-n",
    tostring(n), "-r", tostring(o.keys), "--csv", "EVAL",
    shell_quote(REDIS_SCRIPT), "1", "key:__rand_int__" }, " ")
  local e0 = tonumber((redis_cli(r, "info stats")):match(
    "total_error_replies:(%d+)")) or 0
  local out, ok = run(cmd)
  local e1 = tonumber((redis_cli(r, "info stats")):match(
    "total_error_replies:(%d+)")) or 0
  local header, row
  for line in out:gmatch("[^\r\n]+") do
    local f = csv_fields(line)
    if f[1] == "test" then
      header = f
    elseif header and not row and #f == #header then
      row = f
    end
  end
  if not ok or not row or e1 > e0 then
    error(string.format("redis-benchmark failed (%d error replies): %s\n%s",
      e1 - e0, cmd, out), 0)
  end
  local v = {}
  for i, name in ipairs(header) do v[name] = tonumber(row[i]) end
  if not (v.rps and v.p50_latency_ms and v.p99_latency_ms) then
    error("redis-benchmark: no rps, p50 or p99 in its CSV:\n" .. out, 0)
  end
  return { ops_per_sec = v.rps, p50_us = v.p50_latency_ms * 1000,
    p99_us = v.p99_latency_ms * 1000, requests = n,
    seconds = n / v.rps, errors = 0, command = cmd }
end

-- Probe with a few thousand requests, then about a second's worth, and
-- size the measured run from the last probe's rate to last o.seconds.
local function redis_drive(r, o)
  local n, rate = REDIS_PROBE_N, nil
  for _ = 1, 3 do
    local p = redis_bench(r, o, n)
    rate = p.ops_per_sec
    if p.seconds >= 0.5 then break end
    n = math.max(n, math.ceil(rate))
  end
  n = math.max(REDIS_PROBE_N, math.ceil(rate * o.seconds))
  log("redis: EVAL, %d connections, %d requests (about %g s at %d/s)",
    o.connections, n, o.seconds, math.floor(rate))
  local res = redis_bench(r, o, n)
  log("redis: %s", res.command)
  return res
end

-- }======================================================================

-- {======================================================================
-- The run and the report
-- =======================================================================

local function ratio(a, b)
  if not a or not b or b.ops_per_sec <= 0 then return nil end
  return a.ops_per_sec / b.ops_per_sec
end

-- The figures and goals, as --json prints them and the table shows them.
local function summary(o, res)
  local vs_redis = res.vs_redis or ratio(res.one and res.one.call, res.redis)
  local vs_set = ratio(res.three and res.three.call,
    res.three and res.three.set)
  local function goal(r, needed)
    local g = { ratio = r, goal = needed }
    if r then g.met = r >= needed end
    return g
  end
  return {
    connections = o.connections, seconds = o.seconds, keys = o.keys,
    key_choice = "uniform random", set_value_size = SET_VALUE_SIZE,
    machine = require("lunakv.bench").machine(),
    lunakv_library = INCR_LIBRARY, redis_script = REDIS_SCRIPT,
    load_start = res.load_start, load_end = res.load_end,
    redis = res.redis_info, rounds = res.rounds,
    round_ratios = res.round_ratios, results = { one_node = res.one,
      redis_eval = res.redis, three_nodes = res.three },
    goals = { call_vs_redis_eval = goal(vs_redis, GOAL_VS_REDIS),
      call_vs_set_3_nodes = goal(vs_set, GOAL_VS_SET) },
  }
end

local function text_report(o, s, res)
  local bench = require "lunakv.bench"
  local m = s.machine
  local out = {}
  local function p(fmt, ...) out[#out + 1] = string.format(fmt, ...) end
  p("")
  p("scripting on 127.0.0.1: %d connections, %s keys chosen uniformly at "
    .. "random, %g s per workload; %d cores, %s", o.connections,
    bench.commas(o.keys), o.seconds, m.cores, m.cpu)
  p("load average (1 min) at the start %s, at the end %s", s.load_start,
    s.load_end)
  p("lunakv answers after the fdatasync of its log entry (group commit; "
    .. "docs/replication.md)")
  if res.redis_info then
    p("redis %s: appendfsync %s, answers after the fsync of its AOF "
      .. "(group commit); load from redis-benchmark", res.redis_info.version,
      res.redis_info.appendfsync)
  else
    p("redis: not installed (Debian: apt-get install redis-server "
      .. "redis-tools): lunakv only")
  end
  p("")
  -- ops/fdatasync: the leader's group commit (a stream of calls runs one
  -- call per commit, docs/functions.md)
  local rows = { { "nodes", "workload", "ops/s", "p50 ms", "p99 ms",
    "errors", "ops/fdatasync" } }
  local function row(nodes, name, r)
    if not r then return end
    rows[#rows + 1] = { nodes, name, bench.commas(r.ops_per_sec),
      string.format("%.2f", r.p50_us / 1000),
      string.format("%.2f", r.p99_us / 1000), bench.commas(r.errors),
      r.syncs and r.syncs > 0
        and string.format("%.1f", (r.ops - r.errors) / r.syncs) or "-" }
  end
  row("1", "lunakv /call/incr", res.one and res.one.call)
  row("1", string.format("lunakv /set (%d B)", SET_VALUE_SIZE),
    res.one and res.one.set)
  row("1", "redis EVAL incr", res.redis)
  row("3", "lunakv /call/incr", res.three and res.three.call)
  row("3", string.format("lunakv /set (%d B)", SET_VALUE_SIZE),
    res.three and res.three.set)
  p("%s", bench.columns(rows))
  if res.round_ratios and #res.round_ratios > 1 then
    local t = {}
    for i, x in ipairs(res.round_ratios) do
      t[i] = string.format("%.2f", x)
    end
    p("1 node: medians of %d rounds; /call / EVAL per round: %s", #res.rounds,
      table.concat(t, " "))
  end
  p("")
  local goals = { { "goal", "ratio", "needed", "met" } }
  local function goal(name, g)
    goals[#goals + 1] = { name, g.ratio and string.format("%.2fx", g.ratio)
      or "-", string.format(">= %.1fx", g.goal),
      g.ratio and (g.met and "yes" or "NO") or "not measured" }
  end
  goal("1 node: lunakv /call / redis EVAL", s.goals.call_vs_redis_eval)
  goal("3 nodes: /call / /set", s.goals.call_vs_set_3_nodes)
  p("%s", bench.columns(goals))
  io.stdout:write(table.concat(out, "\n"), "\n")
end

-- The round whose pick(round) is the median (the lower of the middle two
-- when even), and the median of values.
local function median_round(rounds, pick)
  local sorted = {}
  for i, x in ipairs(rounds) do sorted[i] = x end
  table.sort(sorted, function(a, b) return pick(a) < pick(b) end)
  return sorted[(#sorted + 1) // 2]
end

local function median(values)
  local t = {}
  for i, x in ipairs(values) do t[i] = x end
  table.sort(t)
  if #t == 0 then return nil end
  return #t % 2 == 1 and t[(#t + 1) // 2] or (t[#t // 2] + t[#t // 2 + 1]) / 2
end

function M.main(argv)
  local o = procs.parse_args(argv or {}, { { "seconds", 10, "S" },
    { "connections", 32, "C", whole = true },
    { "keys", 100000, "K", whole = true },
    { "rounds", 5, "R", whole = true } })
  local base = os.tmpname()
  os.remove(base)
  assert(core.mkdir(base))
  local r = { server = which("redis-server"),
    benchmark = which("redis-benchmark"), cli = which("redis-cli") }
  local res, up = { load_start = procs.loadavg() }, {}

  local ok, err = pcall(function()
    local url
    local have_redis = r.server and r.benchmark and r.cli
    if not have_redis then
      log("redis-server or redis-benchmark is not installed (Debian: "
        .. "apt-get install redis-server redis-tools): lunakv only")
    end
    res.rounds, res.round_ratios = {}, {}
    for i = 1, o.rounds do
      local round = {}
      log("round %d of %d", i, o.rounds)
      up.one = base .. "/one" .. i
      url = lunakv_up(1, up.one)
      load_library(url)
      round.one = { call = drive(url, "call", o), set = drive(url, "set", o) }
      lunakv_down(up.one) -- stopped before Redis runs: they never share
      up.one = nil -- the cores
      if have_redis then
        redis_up(r, base .. "/redis" .. i)
        round.redis = redis_drive(r, o)
        res.redis_info = { version = r.version, appendfsync = r.appendfsync,
          server = r.server, command = round.redis.command }
        round.redis.command = nil
        procs.stop({ r })
        r.pid = nil
        round.ratio = ratio(round.one.call, round.redis)
        res.round_ratios[#res.round_ratios + 1] = round.ratio
      end
      res.rounds[i] = round
    end
    res.one = {
      call = median_round(res.rounds, function(x)
        return x.one.call.ops_per_sec
      end).one.call,
      set = median_round(res.rounds, function(x)
        return x.one.set.ops_per_sec
      end).one.set }
    if have_redis then
      res.redis = median_round(res.rounds, function(x)
        return x.redis.ops_per_sec
      end).redis
      res.vs_redis = median(res.round_ratios)
    end

    up.three = base .. "/three"
    url = lunakv_up(3, up.three)
    load_library(url)
    res.three = { call = drive(url, "call", o), set = drive(url, "set", o) }
    up.three = nil
    lunakv_down(base .. "/three")
  end)
  -- every path comes here, the failed ones too
  procs.stop({ r })
  for _, dir in pairs(up) do pcall(lunakv_down, dir) end
  os.execute("rm -rf -- " .. shell_quote(base))
  if not ok then
    io.stderr:write(tostring(err), "\n")
    return 1
  end
  res.load_end = procs.loadavg()
  local s = summary(o, res)
  if o.json then
    io.stdout:write(cjson.encode(s), "\n")
  else
    text_report(o, s, res)
  end
  return 0
end

-- }======================================================================

math.randomseed(os.time())
os.exit(M.main({ ... }), true)
