-- lunakv.bench - `lunakv bench`: throughput and latency of named
-- workloads, measured twice: the engine's own speed (a C loop on real
-- pthreads, core.bench) and the speed a Lua script sees (a plain Lua loop
-- calling db:set / db:get), so the cost of the binding is visible.
--
-- The default workloads are the seed's four (writes, reads, reads on 4
-- threads, misses); the db_bench ones (fillseq, fillrandom, overwrite,
-- readrandom, readmissing, readseq, seekrandom, fillsync) are chosen with
-- --workloads. README.md ("Shell and bench") describes every workload
-- and the output; `lunakv help bench` lists the options.
--
-- With --url the bench drives running nodes over HTTP instead (M.main_http):
-- the load generator is C (core.http_bench: keep-alive connections, one
-- request in flight on each, one event loop), the workloads are write,
-- read and mixNN (NN% writes), and the figures are ops/s and latency
-- percentiles per workload.

local M = {}

-- The workloads. kind: the core.bench name; fill: writes keys (a fresh db
-- unless it is an overwrite); reads: may take a thread count suffix;
-- expect: "all" (every op finds its key) or "none" (no op does).
local WORKLOADS = {
  writes = { kind = "writes", fill = "fresh",
    doc = "set key 0, 1, ..., N-1 in order (the seed's writes)" },
  reads = { kind = "reads", reads = true, expect = "all",
    doc = "get key 0, 1, ..., N-1 in order (the seed's reads)" },
  misses = { kind = "misses", reads = true, expect = "none",
    doc = "get N absent keys, each inside the key range (the seed's misses)" },
  fillseq = { kind = "fillseq", fill = "fresh",
    doc = "set every key once in key order into a fresh db" },
  fillrandom = { kind = "fillrandom", fill = "fresh",
    doc = "set every key once in random order into a fresh db" },
  overwrite = { kind = "overwrite", fill = "current",
    doc = "set every key again, in another random order" },
  fillsync = { kind = "fillrandom", fill = "sync",
    doc = "fillrandom with SYNC=always (fdatasync per write) on N/100 keys" },
  readrandom = { kind = "readrandom", reads = true, expect = "all",
    doc = "get uniformly random existing keys" },
  readmissing = { kind = "readmissing", reads = true, expect = "none",
    doc = "get random absent keys (inside the key range)" },
  readseq = { kind = "readseq", reads = true, expect = "all",
    doc = "step a forward scan from the first key, one entry per op" },
  seekrandom = { kind = "seekrandom", reads = true, expect = "all",
    doc = "seek an iterator to a random existing key and read the entry" },
}
M.WORKLOADS = WORKLOADS

M.DEFAULT_WORKLOADS = "writes,reads,reads4,misses"
M.DB_BENCH_WORKLOADS =
  "fillseq,fillrandom,overwrite,readrandom,readmissing,readseq,seekrandom,fillsync"

local SAMPLE_EVERY = 8 -- time one operation in 8 (both layers)

-- {======================================================================
-- Options
-- =======================================================================

-- The ranges of the numeric options, { lo, hi }: the C layer's own
-- limits (core.bench: BENCH_MAX_KEY, BENCH_MAX_VALUE, BENCH_MAX_THREADS
-- and its num cap; core.http_bench: LKVNET_BENCH_MAX_CONNECTIONS, its key
-- and value sizes, timeout and write share, in c/lua/lunakv_core.c), so
-- a value out of range is a usage error here rather than an error from C.
-- spec/14-option_ranges_spec.lua reads them back from the C messages.
-- key_size starts at 2: an absent key of the Lua loops is a present one
-- with its last digit replaced by '.', and needs one digit left.
local LIMITS = {
  num = { 1, 1 << 40 },
  key_size = { 2, 1024 },
  value_size = { 0, 1 << 20 },
  threads = { 1, 256 },
  ["repeat"] = { 1, math.maxinteger },
  seed = { 0, math.maxinteger },
  -- over HTTP (--url)
  connections = { 1, 4096 },
  http_key_size = { 1, 40 },
  http_value_size = { 0, 32 << 20 },
  keys = { 1, math.maxinteger },
  timeout_ms = { 1, 24 * 3600 * 1000 },
  write_pct = { 0, 100 },
  seconds = 86400,
}
M.LIMITS = LIMITS

local config = require "lunakv.config"
local int_arg, int_range = config.int_arg, config.int_range

-- "LO to HI" / ">= LO" for a help text.
local function range_note(r)
  if r[2] == math.maxinteger then return string.format(">= %d", r[1]) end
  return string.format("%d to %d", r[1], r[2])
end

-- --key-size and --value-size have one range for the local bench and
-- another with --url. The parser takes what either mode takes (it does
-- not know the mode yet); the mode then checks its own
-- (check_mode_ranges). Both say the same: "--key-size must be an integer
-- from 2 to 1024 (from 1 to 40 with --url), got '0'".
local function size_message(name, key, text)
  local a, b = LIMITS[key], LIMITS["http_" .. key]
  return string.format("%s must be %s (from %d to %d with --url), got '%s'",
    name, int_range(a[1], a[2]), b[1], b[2], text)
end

local function size_arg(name, key)
  local a, b = LIMITS[key], LIMITS["http_" .. key]
  local lo, hi = math.min(a[1], b[1]), math.max(a[2], b[2])
  local function convert(text)
    local n = config.parse_int(text, lo, hi)
    if n == nil then return nil, size_message(name, key, text) end
    return n
  end
  config.range_checked[convert] = true
  return convert
end

-- Add the bench options to its argparse command.
function M.add_to_parser(c)
  local L = LIMITS
  c:option("-w --workloads", "Comma-separated workloads (default: the "
    .. "seed's " .. M.DEFAULT_WORKLOADS .. "; db_bench's: "
    .. M.DB_BENCH_WORKLOADS:gsub(",", ", ") .. ", or \"all\"). A read workload may end "
    .. "with a thread count (" .. range_note(L.threads) .. "): readrandom4.")
    :argname("<list>")
  c:option("-n --num", "Keys and operations per workload (default "
    .. "BENCHMARK_N, 100000; " .. range_note(L.num) .. ").")
    :argname("<n>"):convert(int_arg("--num", L.num[1], L.num[2]))
  c:option("--value-size", "Value bytes (default 100; "
    .. string.format("%d to %d, with --url %d to %d).", L.value_size[1],
      L.value_size[2], L.http_value_size[1], L.http_value_size[2]))
    :argname("<bytes>"):convert(size_arg("--value-size", "value_size"))
  c:option("--key-size", "Key bytes (default 16; "
    .. string.format("%d to %d, with --url %d to %d).", L.key_size[1],
      L.key_size[2], L.http_key_size[1], L.http_key_size[2]))
    :argname("<bytes>"):convert(size_arg("--key-size", "key_size"))
  c:option("--layers", "Which loops: c, lua or c,lua (default).")
    :argname("<list>")
  c:option("--repeat", "Run everything R times, each time in a new "
    .. "process, and report medians (default 1; " .. range_note(L["repeat"])
    .. ").")
    :argname("<r>"):convert(int_arg("--repeat", L["repeat"][1],
      L["repeat"][2]))
  c:option("--dir", "Put the databases under DIR (default: a temporary "
    .. "directory, removed at the end).")
    :argname("<dir>")
  c:option("--seed", "Random seed (default 1; " .. range_note(L.seed) .. ").")
    :argname("<n>"):convert(int_arg("--seed", L.seed[1], L.seed[2]))
  c:flag("--json", "Print the results as one JSON object on stdout.")
  c:flag("--progress", "Draw the progress bar even when stderr is not a "
    .. "terminal.")
  c:flag("-q --quiet", "No progress bar.")
  -- --workload is the spelling issue 6 uses; hidden so the help lists one
  c:option("--workload"):target("workloads"):hidden(true)
  -- over HTTP (M.main_http)
  c:option("--url", "Drive running nodes over HTTP instead: a URL, or a "
    .. "comma-separated list (writes go to the first; reads to every one, "
    .. "see --read-from). Workloads are then write, read and mixNN (NN% "
    .. "writes, " .. L.write_pct[1] .. " to " .. L.write_pct[2]
    .. "); default write,read.")
    :argname("<url>")
  c:option("--connections", "HTTP: keep-alive connections, one request in "
    .. "flight on each (default 32; " .. range_note(L.connections) .. ").")
    :argname("<n>"):convert(int_arg("--connections", L.connections[1],
      L.connections[2]))
  c:option("--seconds", "HTTP: run each workload this long (default 5 "
    .. "unless --num is given; > 0 and <= " .. L.seconds .. ").")
    :argname("<s>"):convert(config.seconds_arg("--seconds", L.seconds))
  c:option("--keys", "HTTP: the key space; writes take keys 0, 1, ... in "
    .. "order, reads pick written keys at random (default 1000000; "
    .. range_note(L.keys) .. ").")
    :argname("<n>"):convert(int_arg("--keys", L.keys[1], L.keys[2]))
  c:option("--read-from", "HTTP: send reads to every URL given (all, the "
    .. "default) or to the first only.")
    :argname("<all|first>"):choices { "all", "first" }
  c:flag("--consistent", "HTTP: reads through the leader "
    .. "(/get?...&consistent=true).")
  c:option("--target", "HTTP: what the URLs are: lunakv (default) or etcd "
    .. "(its v3 JSON gateway: /v3/kv/put, /v3/kv/range).")
    :argname("<lunakv|etcd>"):choices { "lunakv", "etcd" }
  c:option("--timeout-ms", "HTTP: a request unanswered this long counts as "
    .. "an error (default 10000; " .. range_note(L.timeout_ms) .. ").")
    :argname("<ms>"):convert(int_arg("--timeout-ms", L.timeout_ms[1],
      L.timeout_ms[2]))
end

-- The options whose range depends on the mode (local, or --url): the
-- parser took either mode's range. Returns nil, or the message of a
-- usage error in the parser's words.
local function check_mode_ranges(args, http)
  for _, o in ipairs { { "key_size", "--key-size" },
    { "value_size", "--value-size" } } do
    local v = args[o[1]]
    local r = LIMITS[(http and "http_" or "") .. o[1]]
    if v ~= nil and (v < r[1] or v > r[2]) then
      return size_message(o[2], o[1], tostring(v))
    end
  end
  return nil
end

-- The items of a comma-separated list, trimmed, the empty ones left out.
local function comma_list(text)
  local items = {}
  for item in (text .. ","):gmatch("([^,]*),") do
    item = item:match("^%s*(.-)%s*$")
    if item ~= "" then items[#items + 1] = item end
  end
  return items
end

-- Parse "writes,reads4" into { {name=, base=, threads=, def=}, ... }.
-- Returns the list, or nil and a message.
function M.parse_workloads(text)
  if text == "all" then text = M.DB_BENCH_WORKLOADS end
  local list = {}
  for _, item in ipairs(comma_list(text)) do
    local base, digits = item:match("^(%a+)(%d*)$")
    local def = base and WORKLOADS[base]
    if not def then
      local names = {}
      for k in pairs(WORKLOADS) do names[#names + 1] = k end
      table.sort(names)
      return nil, string.format("unknown workload '%s' (known: %s)", item,
        table.concat(names, ", "))
    end
    if digits ~= "" and not def.reads then
      return nil, string.format("workload '%s': only read workloads take "
        .. "a thread count", item)
    end
    local r = LIMITS.threads
    local threads = 1
    if digits ~= "" then
      threads = config.parse_int(digits, r[1], r[2])
      if not threads then
        return nil, string.format("workload '%s': the thread count must be "
          .. "%s, got %s", item, int_range(r[1], r[2]), digits)
      end
    end
    list[#list + 1] = { name = item, base = base, threads = threads, def = def }
  end
  if #list == 0 then return nil, "no workloads given" end
  return list
end

-- }======================================================================

-- {======================================================================
-- Machine, directories, formatting
-- =======================================================================

local function read_text(path, max)
  local f = io.open(path, "r")
  if not f then return nil end
  local s = f:read(max or 65536)
  f:close()
  return s
end

-- { cores, cpu, kernel, ram_bytes } from /proc (unknown fields nil).
function M.machine()
  local core = require "lunakv.core"
  local m = { cores = core.ncpu() }
  local cpuinfo = read_text("/proc/cpuinfo", 1 << 20) or ""
  m.cpu = cpuinfo:match("model name%s*:%s*([^\n]+)")
    or cpuinfo:match("Model%s*:%s*([^\n]+)") or "unknown CPU"
  m.cpu = m.cpu:gsub("%s+", " "):gsub("%s+$", "")
  local rel = read_text("/proc/sys/kernel/osrelease")
  m.kernel = rel and ("Linux " .. rel:gsub("%s+$", "")) or nil
  local mem = read_text("/proc/meminfo")
  local kb = mem and mem:match("MemTotal:%s*(%d+)")
  m.ram_bytes = kb and math.tointeger(tonumber(kb) * 1024) or nil
  return m
end

local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

local function remove_tree(path)
  os.execute("rm -rf -- " .. shell_quote(path) .. " 2>/dev/null")
end

-- 1234567.8 -> "1,234,568"
local function commas(n)
  local s = string.format("%.0f", n)
  local sign, digits = s:match("^(-?)(%d+)$")
  if not digits then return s end
  digits = digits:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", "")
  return sign .. digits
end
M.commas = commas

-- A latency with three figures or so: 123, 12.3, 1.23.
local function figure(x)
  if x >= 100 then return string.format("%.0f", x) end
  if x >= 10 then return string.format("%.1f", x) end
  return string.format("%.2f", x)
end

local function lat(p50, p99)
  return figure(p50) .. "/" .. figure(p99)
end

-- Rows (arrays of cells) as text in columns, the first left-aligned.
local function columns(lines)
  local widths = {}
  for _, line in ipairs(lines) do
    for k, cell in ipairs(line) do
      widths[k] = math.max(widths[k] or 0, #cell)
    end
  end
  local out = {}
  for _, line in ipairs(lines) do
    local cells = {}
    for k, cell in ipairs(line) do
      cells[k] = string.format("%" .. (k == 1 and "-" or "") .. widths[k]
        .. "s", cell)
    end
    out[#out + 1] = table.concat(cells, "  ")
  end
  return table.concat(out, "\n")
end
M.columns = columns

local function median(xs)
  local t = {}
  for i, x in ipairs(xs) do t[i] = x end
  table.sort(t)
  local n = #t
  if n == 0 then return nil end
  if n % 2 == 1 then return t[(n + 1) // 2] end
  return (t[n // 2] + t[n // 2 + 1]) / 2
end

-- Nearest-rank percentile of sorted samples (the same rule as C's).
local function percentile(sorted, p)
  local n = #sorted
  if n == 0 then return 0 end
  local k = math.ceil(p / 100 * n - 1e-9)
  if k < 1 then k = 1 end
  if k > n then k = n end
  return sorted[k]
end

-- }======================================================================

-- {======================================================================
-- Progress bar (stderr, only for a run past one second)
-- =======================================================================

-- progress_meter(enabled, label, total [, o]) -> draw(done), clear().
-- draw is cheap to call often: it writes only once `after` seconds (o.after,
-- default 1) have passed since the meter was made. o.out (default
-- io.stderr) and o.clock (default core.clock) are for tests.
local function progress_meter(enabled, label, total, o)
  o = o or {}
  local clock = o.clock or require("lunakv.core").clock
  local out, after = o.out or io.stderr, o.after or 1
  local t0, shown = clock(), false
  local function draw(done)
    if not enabled or total == 0 then return end
    local el = clock() - t0
    if el < after then return end
    local frac = math.min(done / total, 1)
    local width = 30
    local fill = math.floor(frac * width + 0.5)
    out:write(string.format("\r%-24s [%s%s] %3d%%  %s ops/s ",
      label, string.rep("#", fill), string.rep(".", width - fill),
      math.floor(frac * 100), el > 0 and commas(done / el) or "-"))
    out:flush()
    shown = true
  end
  local function clear()
    if shown then
      out:write("\r", string.rep(" ", 79), "\r")
      out:flush()
    end
  end
  return draw, clear
end
M.progress_meter = progress_meter

-- }======================================================================

-- {======================================================================
-- The two layers
-- =======================================================================

-- The C layer: core.bench on `threads` pthreads, polled for progress.
local function run_c(db, w, spec, show_progress, label)
  local core = require "lunakv.core"
  local job <close> = core.bench(db, spec)
  local draw, clear = progress_meter(show_progress, label,
    spec.ops or spec.num)
  while true do
    local done, n = job:wait(0.1)
    if done then break end
    draw(n)
  end
  clear()
  local r = job:result()
  job:close()
  r.threads = spec.threads or 1
  r.workload = w.name
  return r
end

-- The Lua layer's loops are plain `for` loops, one per workload, built
-- from this text with OP replaced by the workload's one operation (so
-- each is the loop a user would write, with no extra call per op). Every
-- 8th op is timed; every 16384th updates the progress bar.
local LOOP = [[
local db, it, fmt, kf, mf, val, perm, random, clock, samples, tick, n, call = ...
local nm1, found, ns = n - 1, 0, 0
for i = 0, n - 1 do
  if i & 7 == 0 then
    local t0 = clock()
    OP
    ns = ns + 1
    samples[ns] = clock() - t0
    if i & 16383 == 0 then tick(i) end
  else
    OP
  end
end
return found
]]

local LUA_OPS = {
  -- The reference each Lua row is compared with: the same loop making one
  -- C call that does nothing with the key (type).
  bare = "if call(fmt(kf, i)) then found = found + 1 end",
  writes = "db:set(fmt(kf, i), val)",
  fillseq = "db:set(fmt(kf, i), val)",
  fillrandom = "db:set(fmt(kf, perm[i]), val)",
  overwrite = "db:set(fmt(kf, perm[i]), val)",
  reads = "if db:get(fmt(kf, i)) then found = found + 1 end",
  readrandom = "if db:get(fmt(kf, random(0, nm1))) then found = found + 1 end",
  misses = "if db:get(fmt(mf, i // 10)) then found = found + 1 end",
  readmissing =
    "if db:get(fmt(mf, random(0, nm1) // 10)) then found = found + 1 end",
  seekrandom = "if it:seek(fmt(kf, random(0, nm1))) then "
    .. "local k, v = it:key(), it:value(); found = found + 1 end",
  readseq = "if not it:valid() then it:seek_first() end; "
    .. "local k, v = it:key(), it:value(); it:next(); found = found + 1",
}
M.LUA_OPS = LUA_OPS

-- The same operations with nothing else in the loop (no timing inside,
-- no progress): tools/plain_loops.lua times it from outside, the way the
-- issue states the Lua goals. Same arguments as LOOP's.
local PLAIN_LOOP = [[
local db, it, fmt, kf, mf, val, perm, random, clock, samples, tick, n, call = ...
local nm1, found = n - 1, 0
for i = 0, n - 1 do
  OP
end
return found
]]

local compiled = { [LOOP] = {}, [PLAIN_LOOP] = {} }
local function compile(template, base)
  local cache = compiled[template]
  if not cache[base] then
    local code = template:gsub("OP", function() return LUA_OPS[base] end)
    cache[base] = assert(load(code, "=bench:" .. base, "t", {}))
  end
  return cache[base]
end
local function lua_loop(base) return compile(LOOP, base) end
M.plain_loop = function(base) return compile(PLAIN_LOOP, base) end
M.lua_loop_source = function(base)
  return (LOOP:gsub("OP", function() return LUA_OPS[base] end))
end

-- A 0-based random permutation of 0 .. n-1.
local function permutation(n, seed)
  local p = {}
  for i = 0, n - 1 do p[i] = i end
  math.randomseed(seed)
  for i = n - 1, 1, -1 do
    local j = math.random(0, i)
    p[i], p[j] = p[j], p[i]
  end
  return p
end

local function run_lua(db, w, spec, show_progress, label)
  local core = require "lunakv.core"
  local base = w.base == "fillsync" and "fillrandom" or w.base
  local n = spec.ops or spec.num
  local ks = spec.key_size
  local kf = "%0" .. ks .. "d"
  local mf = "%0" .. (ks - 1) .. "d."
  local val = string.rep("v", spec.value_size)
  local perm
  if base == "fillrandom" or base == "overwrite" then
    perm = permutation(n, spec.seed + (base == "overwrite" and 229 or 0))
  end
  math.randomseed(spec.seed)
  local it
  if base == "readseq" or base == "seekrandom" then
    it = db:iter()
    if base == "readseq" then it:seek_first() end
  end
  local function nothing() end
  -- The bare loop runs just before the workload: this VM's speed drifts by
  -- up to 2x over seconds, and the ratio of the two moves far less than
  -- either figure.
  local bare_n, bare = math.min(n, 100000), lua_loop("bare")
  collectgarbage()
  local t0 = core.clock()
  bare(nil, nil, string.format, kf, mf, val, nil, math.random, core.clock, {},
    nothing, bare_n, type)
  local bare_secs = core.clock() - t0
  local samples = {}
  local draw, clear = progress_meter(show_progress, label, n)
  local loop = lua_loop(base)
  collectgarbage()
  t0 = core.clock()
  local found = loop(db, it, string.format, kf, mf, val, perm, math.random,
    core.clock, samples, draw, n)
  local secs = core.clock() - t0
  clear()
  if it then it:close() end
  table.sort(samples)
  local r = {
    workload = w.name, kind = w.def.kind, threads = 1, ops = n,
    found = found, seconds = secs, samples = #samples,
    ops_per_sec = secs > 0 and n / secs or 0,
    p50_us = percentile(samples, 50) * 1e6,
    p99_us = percentile(samples, 99) * 1e6,
    p999_us = percentile(samples, 99.9) * 1e6,
    max_us = (samples[#samples] or 0) * 1e6,
    bare_ops_per_sec = bare_secs > 0 and bare_n / bare_secs or nil,
  }
  return r
end

-- A Lua row's ops/s over its bare loop's (nil when there is none), from
-- the same medians the row prints.
local function of_bare(r)
  local b = r.bare_ops_per_sec
  return b and b > 0 and r.ops_per_sec / b or nil
end

-- }======================================================================

-- {======================================================================
-- A whole run
-- =======================================================================

local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

-- After a fill the engine still has work the fill set off: its memtable
-- to flush and the compactions that follows. Like lkv_bench (and its
-- db_bench-style peers) we let that finish before the next workload, so a
-- read workload measures reads rather than reads racing the previous
-- phase's compactions for the machine's cores. The time is reported.
local SETTLE_LIMIT_S = 120

local function settle(db)
  local core = require "lunakv.core"
  local t0 = core.clock()
  db:flush()
  while core.clock() - t0 < SETTLE_LIMIT_S do
    local st = db:stats()
    if st.bg_error or (st.imm_memtables == 0 and st.compaction_pending == 0) then
      break
    end
    core.sleep(0.01)
  end
  return core.clock() - t0
end
M.settle = settle

-- Run the plan once on one layer. ctx: opts, base dir, num, sizes, seed,
-- progress, counter (for unique db names). Returns { [i] = result }.
local function run_layer(layer, plan, ctx)
  local lunakv = require "lunakv"
  local cur -- { db =, dir = } the db the reads use
  local function open(extra)
    ctx.counter = ctx.counter + 1
    local dir = string.format("%s/%s-%d", ctx.base, layer, ctx.counter)
    local o = copy(ctx.opts)
    for k, v in pairs(extra or {}) do o[k] = v end
    return { db = lunakv.open(dir, o), dir = dir }
  end
  local function drop(h)
    if h then
      h.db:close()
      remove_tree(h.dir)
    end
  end
  local function spec_for(w, ops)
    return { kind = w.def.kind, num = ctx.num, ops = ops or ctx.num,
      key_size = ctx.key_size, value_size = ctx.value_size,
      threads = w.threads, seed = ctx.seed }
  end
  -- the untimed load a read or overwrite needs when no fill came first
  local function ensure_loaded()
    if cur then return end
    cur = open()
    run_c(cur.db, { name = "load", def = WORKLOADS.fillseq },
      spec_for({ def = WORKLOADS.fillseq, threads = 1 }), ctx.progress,
      "loading keys")
    settle(cur.db) -- like a timed fill: reads must not race the load
  end
  local results = {}
  local ok, err = pcall(function()
    for i, w in ipairs(plan) do
      local label = string.format("%s (%s)", w.name, layer == "c" and "C"
        or "Lua")
      if layer == "lua" and w.threads > 1 then
        results[i] = { workload = w.name, threads = w.threads,
          skipped = "a Lua state runs on one thread" }
      else
        local run = layer == "c" and run_c or run_lua
        if w.def.fill == "sync" then
          local h = open { sync = "always" }
          local ops = math.max(1, ctx.num // 100)
          local ok2, r = pcall(run, h.db, w, spec_for(w, ops), ctx.progress,
            label)
          drop(h)
          if not ok2 then error(r, 0) end
          results[i] = r
        else
          if w.def.fill == "fresh" then
            drop(cur)
            cur = nil
            cur = open()
          elseif w.def.fill == "current" or w.def.reads then
            ensure_loaded()
          end
          results[i] = run(cur.db, w, spec_for(w), ctx.progress, label)
          if w.def.fill then results[i].settle_s = settle(cur.db) end
        end
      end
    end
  end)
  drop(cur)
  if not ok then error(err, 0) end
  return results
end

-- Median of each number across repeated results of one workload.
local function combine(runs)
  if #runs == 1 then return runs[1] end
  if runs[1].skipped then return runs[1] end
  local r = copy(runs[1])
  for _, f in ipairs { "ops_per_sec", "p50_us", "p99_us", "p999_us",
    "max_us", "seconds", "settle_s", "bare_ops_per_sec" } do
    local xs = {}
    for _, x in ipairs(runs) do xs[#xs + 1] = x[f] end
    if #xs > 0 then r[f] = median(xs) end
  end
  r.runs = #runs
  return r
end

-- What should have been found, and was it?
local function check(w, r)
  if r.skipped or not w.def.expect then return nil end
  local want = w.def.expect == "all" and r.ops or 0
  if w.def.expect == "none" and r.found > 0 then
    return string.format("%s: %d of %d absent keys were found", w.name,
      r.found, r.ops)
  elseif w.def.expect == "all" and r.found ~= want then
    return string.format("%s: found %d of %d keys", w.name, r.found, want)
  end
  return nil
end

-- The settings worth a line in the header: the main ones, and any that
-- does not come from the defaults.
local function config_line(opts, info)
  local config = require "lunakv.config"
  local parts = {}
  for _, spec in ipairs(config.schema) do
    if spec.env and opts[spec.key] ~= nil then
      local src = info and info.sources and info.sources[spec.key]
      local main = spec.key == "max_memtable_size" or spec.key == "sync"
        or spec.key == "wal_buffer_size" or spec.key == "block_cache_bytes"
        or spec.key == "bloom_bits_per_key"
      if main or (src and src ~= "default") then
        local s = spec.env .. "=" .. tostring(opts[spec.key])
        if src and src ~= "default" then s = s .. " (" .. src .. ")" end
        parts[#parts + 1] = s
      end
    end
  end
  return table.concat(parts, ", ")
end

-- One repetition of a --repeat run, in a new `lunakv bench` process with
-- the same settings and --json: its per-layer results, by plan index.
-- A Lua loop's speed here drifts in phases of seconds and differs from
-- process to process, so repetitions in new processes sample more of it
-- than repetitions inside one.
local function run_child(args, layers, ctx)
  local cjson = require "cjson"
  local interp, bin = require("lunakv.cluster").self_command()
  local cmd = { interp, bin, "bench", "--json", "--quiet", "--repeat", "1",
    "-w", args.workloads or M.DEFAULT_WORKLOADS, "-n", tostring(ctx.num),
    "--key-size", tostring(ctx.key_size), "--value-size",
    tostring(ctx.value_size), "--seed", tostring(ctx.seed),
    "--layers", table.concat(layers, ","), "--dir", ctx.base }
  if args.config then cmd[#cmd + 1] = "-c"; cmd[#cmd + 1] = args.config end
  for _, set in ipairs(args.set or {}) do
    cmd[#cmd + 1] = "-s"; cmd[#cmd + 1] = set
  end
  for i, a in ipairs(cmd) do cmd[i] = shell_quote(a) end
  local p = assert(io.popen(table.concat(cmd, " ") .. " 2>&1"))
  local out = p:read("a")
  p:close()
  local ok, doc = pcall(cjson.decode, out)
  if not ok or type(doc) ~= "table" or type(doc.results) ~= "table" then
    error("lunakv: bench: a repetition failed: " .. (out:match("[^\n]+")
      or "no output"), 0)
  end
  local by_layer, index = {}, {}
  for _, r in ipairs(doc.results) do
    index[r.layer] = (index[r.layer] or 0) + 1
    by_layer[r.layer] = by_layer[r.layer] or {}
    by_layer[r.layer][index[r.layer]] = r
  end
  return by_layer
end

-- `lunakv bench`: args from argparse, opts/info from the config layers.
-- Returns true, or nil and a message, or 2 and a message (usage).
function M.main(args, opts, info)
  local lunakv = require "lunakv"
  local core = require "lunakv.core"
  if args.url then return M.main_http(args, opts, info) end
  for _, o in ipairs { "connections", "seconds", "keys", "read_from",
    "target", "timeout_ms" } do
    if args[o] ~= nil then
      return 2, "--" .. o:gsub("_", "-") .. " is an option of bench --url"
    end
  end
  if args.consistent then return 2, "--consistent is an option of bench --url" end
  local err = check_mode_ranges(args, false)
  if err then return 2, err end
  local plan
  plan, err = M.parse_workloads(args.workloads or M.DEFAULT_WORKLOADS)
  if not plan then return 2, "--workloads: " .. err end
  local layers = {}
  for l in (args.layers or "c,lua"):gmatch("[^,%s]+") do
    l = l:lower()
    if l ~= "c" and l ~= "lua" then
      return 2, "--layers: expected c, lua or c,lua, got '" .. l .. "'"
    end
    layers[#layers + 1] = l
  end
  if #layers == 0 then return 2, "--layers: no layer given" end
  local num = args.num or opts.benchmark_n or 100000
  local key_size = args.key_size or 16
  local value_size = args.value_size or 100
  if num > 10 ^ key_size then
    return 2, string.format("--num %d needs keys longer than %d bytes", num,
      key_size)
  end
  local temporary = args.dir == nil
  local base = args.dir
  if temporary then
    base = os.tmpname()
    os.remove(base)
  end
  local show_progress = not args.quiet
    and (args.progress or core.isatty(2))
  local machine = M.machine()
  local ctx = {
    opts = opts, base = base, num = num, key_size = key_size,
    value_size = value_size, seed = args.seed or 1,
    progress = show_progress, counter = 0,
  }
  local engine_opts = copy(opts)
  engine_opts.data_dir = nil

  if not args.json then
    local ram = machine.ram_bytes and string.format(", %.1f GiB RAM",
      machine.ram_bytes / 2 ^ 30) or ""
    local out = {
      string.format("%s bench (%s)", lunakv._VERSION, _VERSION),
      string.format("machine   %d cores, %s%s%s", machine.cores,
        machine.cpu, machine.kernel and (", " .. machine.kernel) or "", ram),
      string.format("data dir  %s%s", base,
        temporary and " (temporary, removed at the end)" or ""),
      string.format("config    %s; %s", info and info.file or "no .env file",
        config_line(opts, info)),
      string.format("data      %s ops per workload, %d B keys, %d B values"
        .. "%s", commas(num), key_size, value_size,
        (args["repeat"] or 1) > 1
          and (", medians of " .. args["repeat"] .. " runs (one process "
            .. "each)") or ""),
      "",
    }
    io.stdout:write(table.concat(out, "\n"), "\n")
    io.stdout:flush()
  end

  local per_layer = {}
  for _, l in ipairs(layers) do per_layer[l] = {} end
  local ok, e = pcall(function()
    for rep = 1, args["repeat"] or 1 do
      -- alternate the layer order so machine drift falls on both
      local order = {}
      for i = 1, #layers do
        order[i] = layers[rep % 2 == 1 and i or #layers + 1 - i]
      end
      local res
      if (args["repeat"] or 1) > 1 then
        res = run_child(args, order, ctx)
      else
        res = {}
        for _, l in ipairs(order) do res[l] = run_layer(l, plan, ctx) end
      end
      for _, l in ipairs(order) do
        for i in ipairs(plan) do
          local r = res[l] and res[l][i]
          if not r then
            error("lunakv: bench: a repetition returned too few results", 0)
          end
          per_layer[l][i] = per_layer[l][i] or {}
          table.insert(per_layer[l][i], r)
        end
      end
    end
  end)
  if temporary then remove_tree(base) end
  if not ok then error(e, 0) end

  local rows, notes = {}, {}
  for i, w in ipairs(plan) do
    local row = { workload = w.name, threads = w.threads, def = w.def }
    for _, l in ipairs(layers) do
      local r = combine(per_layer[l][i])
      row[l] = r
      local n = check(w, r)
      if n then notes[#notes + 1] = (l == "c" and "C: " or "Lua: ") .. n end
    end
    rows[#rows + 1] = row
  end

  if args.json then
    local cjson = require "cjson"
    local results = {}
    for _, row in ipairs(rows) do
      for _, l in ipairs(layers) do
        local r = row[l]
        local o = { workload = row.workload, layer = l,
          threads = row.threads }
        if r.skipped then
          o.skipped = r.skipped
        else
          o.ops, o.found, o.seconds = r.ops, r.found, r.seconds
          o.ops_per_sec, o.p50_us, o.p99_us = r.ops_per_sec, r.p50_us,
            r.p99_us
          o.p999_us, o.max_us, o.runs = r.p999_us, r.max_us, r.runs or 1
          o.settle_s = r.settle_s
          o.bare_ops_per_sec, o.of_bare = r.bare_ops_per_sec, of_bare(r)
        end
        results[#results + 1] = o
      end
    end
    local sources = {}
    for k, v in pairs(info and info.sources or {}) do
      if v ~= "default" then sources[k] = v end
    end
    local doc = {
      version = lunakv.version, lua = _VERSION, machine = machine,
      dir = base, temporary_dir = temporary,
      config = { file = info and info.file or cjson.null,
        options = engine_opts, sources = sources },
      num = num, key_size = key_size, value_size = value_size,
      sample_every = SAMPLE_EVERY, ["repeat"] = args["repeat"] or 1,
      results = results, notes = notes,
    }
    if #notes == 0 then doc.notes = cjson.empty_array or nil end
    io.stdout:write(cjson.encode(doc), "\n")
    return true
  end

  -- the table
  local header = { "workload", "threads" }
  for _, l in ipairs(layers) do
    local L = l == "c" and "C" or "Lua"
    header[#header + 1] = L .. " ops/s"
    header[#header + 1] = L .. " p50/p99 us"
    if l == "lua" then header[#header + 1] = "of bare" end
  end
  if #layers == 2 then header[#header + 1] = "Lua/C" end
  local lines = { header }
  for _, row in ipairs(rows) do
    local line = { row.workload, tostring(row.threads) }
    for _, l in ipairs(layers) do
      local r = row[l]
      if r.skipped then
        line[#line + 1] = "-"
        line[#line + 1] = "-"
      else
        line[#line + 1] = commas(r.ops_per_sec)
        line[#line + 1] = lat(r.p50_us, r.p99_us)
      end
      if l == "lua" then
        local share = not r.skipped and of_bare(r)
        line[#line + 1] = share and string.format("%.3f", share) or "-"
      end
    end
    if #layers == 2 then
      local c, u = row.c, row.lua
      line[#line + 1] = (c.skipped or u.skipped or c.ops_per_sec == 0)
        and "-" or string.format("%.2f", u.ops_per_sec / c.ops_per_sec)
    end
    lines[#lines + 1] = line
  end
  io.stdout:write(columns(lines), "\n")
  local fs = {}
  local bares = {}
  for _, row in ipairs(rows) do
    local r = row.lua
    if r and r.bare_ops_per_sec then
      bares[#bares + 1] = r.bare_ops_per_sec
    end
  end
  if #bares > 0 then
    table.sort(bares)
    fs[#fs + 1] = string.format("of bare: Lua ops/s over a bare loop's (the "
      .. "same loop, its operation replaced by one C call that ignores the "
      .. "key), run just before each workload: %s-%s ops/s here",
      commas(bares[1]), commas(bares[#bares]))
  end
  for _, w in ipairs(plan) do
    if w.def.fill == "sync" then
      fs[#fs + 1] = string.format("%s ran %s ops (N/100)", w.name,
        commas(math.max(1, num // 100)))
    end
  end
  local settles = {}
  for _, row in ipairs(rows) do
    for _, l in ipairs(layers) do
      local r = row[l]
      if r.settle_s then
        settles[#settles + 1] = string.format("%s %s %.2f s", row.workload,
          l == "c" and "C" or "Lua", r.settle_s)
      end
    end
  end
  if #settles > 0 then
    fs[#fs + 1] = "settle after each fill (flush + its compactions, not "
      .. "in ops/s): " .. table.concat(settles, ", ")
  end
  if #fs > 0 then io.stdout:write("\n", table.concat(fs, "\n"), "\n") end
  if #notes > 0 then
    io.stdout:write("\nnotes:\n")
    for _, n in ipairs(notes) do io.stdout:write("  ", n, "\n") end
  end
  return true
end

-- }======================================================================

-- {======================================================================
-- Over HTTP: lunakv bench --url
-- =======================================================================

M.HTTP_DEFAULT_WORKLOADS = "write,read"

-- Parse "write,read,mix10" into { {name=, write_pct=}, ... }, or nil, why.
function M.parse_http_workloads(text)
  local list = {}
  for _, item in ipairs(comma_list(text)) do
    item = item:lower()
    local pct
    if item == "write" or item == "writes" or item == "set" then
      item, pct = "write", 100
    elseif item == "read" or item == "reads" or item == "get" then
      item, pct = "read", 0
    else
      local n = item:match("^mix(%d*)$")
      if n then
        local r = LIMITS.write_pct
        pct = n == "" and 50 or config.parse_int(n, r[1], r[2])
        if not pct then
          return nil, string.format("workload '%s': the write share NN must "
            .. "be %s, got %s", item, int_range(r[1], r[2]), n)
        end
      end
    end
    if not pct then
      return nil, string.format("unknown HTTP workload '%s' (known: "
        .. "write, read, mixNN with NN%% writes)", item)
    end
    list[#list + 1] = { name = item, write_pct = pct }
  end
  if #list == 0 then return nil, "no workloads given" end
  return list
end

local function split_urls(text)
  local remote = require "lunakv.remote"
  local urls = {}
  for _, u in ipairs(comma_list(text)) do
    local base, why = remote.base_url(u)
    if not base then return nil, "--url: " .. why end
    urls[#urls + 1] = base
  end
  if #urls == 0 then return nil, "--url: no URL given" end
  return urls
end

local function ms(us)
  return figure(us / 1000)
end

-- `lunakv bench --url URL[,URL...]`: returns true, or nil and a message,
-- or 2 and a message (usage).
function M.main_http(args, opts)
  local core = require "lunakv.core"
  local urls, why = split_urls(args.url)
  if not urls then return 2, why end
  why = check_mode_ranges(args, true)
  if why then return 2, why end
  local plan
  plan, why = M.parse_http_workloads(args.workloads
    or M.HTTP_DEFAULT_WORKLOADS)
  if not plan then return 2, "--workloads: " .. why end
  if args.layers or args["repeat"] or args.dir then
    return 2, "--layers, --repeat and --dir do not apply to bench --url"
  end
  local target = args.target or "lunakv"
  local conns = args.connections or 32
  local seconds = args.seconds
  local num = args.num
  if not seconds and not num then seconds = 5 end
  local keys = args.keys or 1000000
  local key_size = args.key_size or 16
  if keys > 10 ^ key_size then
    return 2, string.format("--keys %d needs keys longer than %d bytes",
      keys, key_size)
  end
  local read_urls = args.read_from == "first" and { urls[1] } or urls

  -- every node must answer before the clock starts: a typo in a URL is
  -- one clear line, not a table of errors
  for _, u in ipairs(urls) do
    local ok, err = pcall(core.http_request, "GET", u .. "/health", nil, nil,
      5000)
    if not ok then
      return nil, (tostring(err):gsub("^.-lunakv: ", ""))
    end
  end

  local machine = M.machine()
  local what = string.format("%s%s, %d connections, %d B keys, %d B values, "
    .. "%s per workload", urls[1],
    #read_urls > 1 and string.format(" (reads: %d nodes)", #read_urls) or "",
    conns, key_size, args.value_size or 100,
    num and (commas(num) .. " ops" .. (seconds and (" or " .. seconds
      .. " s") or "")) or (seconds .. " s"))
  if not args.json then
    io.stdout:write(string.format("lunakv bench --url (%s, target %s)\n",
      _VERSION, target))
    io.stdout:write(string.format("machine   %d cores, %s%s\n", machine.cores,
      machine.cpu, machine.kernel and (", " .. machine.kernel) or ""))
    io.stdout:write("load      ", what, "\n\n")
    io.stdout:flush()
  end

  local results, written = {}, 0
  for _, w in ipairs(plan) do
    local space = keys
    if w.write_pct == 0 and written > 0 then space = math.min(written, keys) end
    if not args.quiet and core.isatty(2) then
      io.stderr:write(string.format("running %s ...\r", w.name))
      io.stderr:flush()
    end
    local ok, r = pcall(core.http_bench, {
      urls = w.write_pct == 100 and { urls[1] } or read_urls,
      connections = conns, ops = num, seconds = seconds,
      write_pct = w.write_pct, key_size = key_size,
      value_size = args.value_size or 100, key_space = space,
      sequential = true, consistent = args.consistent or false,
      seed = args.seed or 1, timeout_ms = args.timeout_ms or 10000,
      target = target,
    })
    if not args.quiet and core.isatty(2) then
      io.stderr:write(string.rep(" ", 30), "\r")
    end
    if not ok then
      -- a run the load generator aborted (every connection failing) or
      -- refused (more connections than descriptors) measured nothing
      -- worth printing: exit 1 with its reason
      if not tostring(r):find("^lunakv: ") then error(r, 0) end
      return nil, string.format("workload %s: %s", w.name,
        (tostring(r):gsub("^lunakv: ", "")))
    end
    r.workload, r.write_pct = w.name, w.write_pct
    written = math.max(written, math.min(r.writes, keys))
    results[#results + 1] = r
  end

  local notes, all_failed = {}, true
  for _, r in ipairs(results) do
    if r.errors < r.ops then all_failed = false end
    if r.errors > 0 then
      notes[#notes + 1] = string.format("%s: %s of %s requests failed; the "
        .. "first: %s", r.workload, commas(r.errors), commas(r.ops),
        r.first_error or "?")
    end
  end

  if args.json then
    local cjson = require "cjson"
    local out = {}
    for i, r in ipairs(results) do
      out[i] = { workload = r.workload, write_pct = r.write_pct, ops = r.ops,
        writes = r.writes, reads = r.reads, errors = r.errors,
        seconds = r.seconds, ops_per_sec = r.ops_per_sec, p50_us = r.p50_us,
        p90_us = r.p90_us, p99_us = r.p99_us, max_us = r.max_us,
        first_error = r.first_error }
    end
    io.stdout:write(cjson.encode {
      version = require("lunakv").version, lua = _VERSION, machine = machine,
      target = target, urls = urls, read_urls = read_urls,
      connections = conns, key_size = key_size,
      value_size = args.value_size or 100, keys = keys, num = num,
      seconds = seconds, consistent = args.consistent or false,
      results = out, notes = #notes > 0 and notes or nil,
    }, "\n")
  else
    local lines = { { "workload", "ops", "errors", "ops/s", "p50 ms",
      "p90 ms", "p99 ms", "max ms" } }
    for _, r in ipairs(results) do
      lines[#lines + 1] = { r.workload, commas(r.ops), commas(r.errors),
        commas(r.ops_per_sec), ms(r.p50_us), ms(r.p90_us), ms(r.p99_us),
        ms(r.max_us) }
    end
    io.stdout:write(columns(lines), "\n")
    if #notes > 0 then
      io.stdout:write("\nnotes:\n")
      for _, n in ipairs(notes) do io.stdout:write("  ", n, "\n") end
    end
  end
  if all_failed then return nil, "every request failed (see the notes)" end
  return true
end

-- }======================================================================

return M
