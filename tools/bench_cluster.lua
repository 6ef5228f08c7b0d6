-- tools/bench_cluster.lua - `make bench-cluster`: a 3-node lunakv cluster and,
-- when etcd is installed (Debian etcd-server), a 3-member etcd cluster,
-- both on 127.0.0.1 with their data in one temporary directory, driven by
-- the same C load generator (core.http_bench) at the same concurrency:
-- durable quorum writes, then linearizable reads. Prints ops/s, p50 and
-- p99 for each and the ratio lunakv / etcd, then stops everything.
--
--   lua5.4 bin/lunakv run tools/bench_cluster.lua [--seconds S]
--       [--connections C] [--value-size B] [--json]
--
-- Writes go to the lunakv leader (a follower would forward them) and are
-- spread over the etcd members (as etcd's own benchmark tool does; a
-- member forwards to its leader). Reads are linearizable on both sides:
-- lunakv's /get?consistent=true and etcd's default range, spread over
-- every node.
--
-- A make target's script, not part of the installed module: it lives here
-- beside the other tools and runs only through `lunakv run`.

local core = require "lunakv.core"
local procs = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./")
  .. "procs.lua")

local M = {}
local shell_quote, which, wait_for = procs.shell_quote, procs.which,
  procs.wait_for

local function log(fmt, ...)
  io.stderr:write("bench-cluster: ", string.format(fmt, ...), "\n")
  io.stderr:flush()
end

-- {======================================================================
-- etcd
-- =======================================================================

-- Start n etcd members into the caller's list members (each { name, url,
-- pid, log, ... }), and wait until all are healthy. A member goes into the
-- list as soon as it is spawned, so the caller stops whatever was started
-- also when this raises half-way (the members run in their own sessions:
-- nothing else would ever stop them).
local function etcd_up(bin, dir, base, n, members)
  local peers, all = {}, {}
  for i = 1, n do
    local m = { name = "e" .. (i - 1), client = base + 2 * (i - 1),
      peer = base + 2 * (i - 1) + 1 }
    m.url = "http://127.0.0.1:" .. m.client
    m.peer_url = "http://127.0.0.1:" .. m.peer
    all[i] = m
    peers[i] = m.name .. "=" .. m.peer_url
  end
  local cluster = table.concat(peers, ",")
  local token = "lunakv-bench-" .. tostring(os.time())
  for _, m in ipairs(all) do
    local data = dir .. "/etcd-" .. m.name
    m.log = data .. ".log"
    m.pid = core.spawn({ bin, "--name", m.name, "--data-dir", data,
      "--listen-client-urls", m.url, "--advertise-client-urls", m.url,
      "--listen-peer-urls", m.peer_url,
      "--initial-advertise-peer-urls", m.peer_url,
      "--initial-cluster", cluster, "--initial-cluster-state", "new",
      "--initial-cluster-token", token, "--logger", "zap",
      "--log-level", "warn" }, m.log)
    members[#members + 1] = m
  end
  wait_for("etcd", 30, function()
    for _, m in ipairs(all) do -- a dead member fails at once
      if not core.pid_alive(m.pid) then
        m.pid = nil -- reaped: its pid may go to another process now
        error("lunakv: etcd member " .. m.name .. " exited; its log:\n"
          .. require("lunakv.cluster").tail(m.log, 15), 0)
      end
    end
    for _, m in ipairs(all) do
      local ok, status, body = pcall(core.http_request, "GET",
        m.url .. "/health", nil, nil, 1000)
      if not ok or status ~= 200 or not body:find('"true"', 1, true) then
        return false, m.url .. ": " .. tostring(ok and body or status)
      end
    end
    return true
  end)
  return members
end

-- }======================================================================

-- {======================================================================
-- The run
-- =======================================================================

-- Drive one system: writes, then linearizable reads of the keys written.
local function drive(name, target, write_urls, read_urls, o)
  local res = {}
  log("%s: writes, %d connections, %g s", name, o.connections, o.seconds)
  local w = core.http_bench { urls = write_urls, connections = o.connections,
    seconds = o.seconds, write_pct = 100, value_size = o.value_size,
    key_space = 10000000, target = target }
  res.write = w
  log("%s: linearizable reads", name)
  local r = core.http_bench { urls = read_urls, connections = o.connections,
    seconds = o.seconds, write_pct = 0, consistent = true,
    key_space = math.max(1, math.min(w.writes, 10000000)), target = target }
  res.read = r
  return res
end

function M.main(argv)
  local o = procs.parse_args(argv or {}, { { "seconds", 10, "S" },
    { "connections", 32, "C", whole = true },
    { "value-size", 100, "B", whole = true } })
  local base = os.tmpname()
  os.remove(base)
  assert(core.mkdir(base))
  local lk_base = math.random(20000, 25000)
  local etcd_base = lk_base + 10 -- six ports: client and peer per member
  local etcd = which("etcd")
  local cluster = require "lunakv.cluster"
  local results, members, lk_up = {}, {}, false

  local ok, err = pcall(function()
    log("lunakv: 3 nodes on ports %d..%d in %s", lk_base, lk_base + 2, base)
    -- set before: whatever up leaves running is stopped below (`down`
    -- of a directory without a record does nothing)
    lk_up = true
    -- quiet with --json: stdout is the JSON object's alone
    local up_ok, why = cluster.up { n = 3, base_port = lk_base,
      dir = base .. "/lunakv", quiet = o.json }
    if not up_ok then error("lunakv: " .. tostring(why), 0) end
    local urls = {}
    for i = 0, 2 do urls[#urls + 1] = "http://127.0.0.1:" .. (lk_base + i) end
    results.lunakv = drive("lunakv", "lunakv", { urls[1] }, urls, o)
    -- stopped before etcd runs: the two never share the machine's cores
    lk_up = false
    local down_ok, dwhy = cluster.down { dir = base .. "/lunakv",
      quiet = o.json }
    if not down_ok then error("lunakv: " .. tostring(dwhy), 0) end
    if etcd then
      log("etcd: 3 members on ports %d..%d (%s)", etcd_base, etcd_base + 5,
        etcd)
      etcd_up(etcd, base, etcd_base, 3, members)
      local eurls = {}
      for i, m in ipairs(members) do eurls[i] = m.url end
      results.etcd = drive("etcd", "etcd", eurls, eurls, o)
    else
      log("etcd is not installed (Debian: apt-get install etcd-server): "
        .. "lunakv only")
    end
  end)
  -- every path comes here, the failed ones too
  procs.stop(members)
  if lk_up then
    pcall(cluster.down, { dir = base .. "/lunakv", quiet = o.json })
  end
  os.execute("rm -rf -- " .. shell_quote(base))
  if not ok then
    io.stderr:write(tostring(err), "\n")
    return 1
  end

  local bench = require "lunakv.bench"
  if o.json then
    io.stdout:write(require("cjson").encode {
      connections = o.connections, seconds = o.seconds,
      value_size = o.value_size, machine = bench.machine(), results = results,
    }, "\n")
    return 0
  end
  local m = bench.machine()
  io.stdout:write(string.format("\n3-node clusters on 127.0.0.1, %d "
    .. "connections, %d B values, %g s per workload; %d cores, %s\n\n",
    o.connections, o.value_size, o.seconds, m.cores, m.cpu))
  local lines = { { "workload", "system", "ops/s", "p50 ms", "p99 ms",
    "errors", "lunakv/etcd" } }
  for _, wl in ipairs { "write", "read" } do
    for _, sys in ipairs { "lunakv", "etcd" } do
      local r = results[sys] and results[sys][wl]
      if r then
        local ratio = ""
        if sys == "etcd" and results.lunakv and r.ops_per_sec > 0 then
          ratio = string.format("%.2fx",
            results.lunakv[wl].ops_per_sec / r.ops_per_sec)
        end
        lines[#lines + 1] = { wl == "write" and "durable writes"
          or "linearizable reads", sys, bench.commas(r.ops_per_sec),
          string.format("%.2f", r.p50_us / 1000),
          string.format("%.2f", r.p99_us / 1000), bench.commas(r.errors),
          ratio }
      end
    end
  end
  io.stdout:write(bench.columns(lines), "\n")
  return 0
end

-- }======================================================================

math.randomseed(os.time())
os.exit(M.main({ ... }), true)
