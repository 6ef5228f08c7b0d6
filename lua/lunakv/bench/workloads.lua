-- lunakv.bench.workloads - the bench's vocabulary: the named workloads
-- (the seed's and db_bench's, and over HTTP write, read and mixNN), the
-- ranges of the bench's numeric parameters, and the Lua layer's loops,
-- one plain `for` loop per workload. README.md ("Shell and bench")
-- describes every workload.

local config = require "lunakv.config"

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
M.SAMPLE_EVERY = SAMPLE_EVERY
M.HTTP_DEFAULT_WORKLOADS = "write,read" -- with --url

-- The ranges of the numeric options, { lo, hi }: the C layer's own
-- limits (core.bench: LKVWL_MAX_KEY, LKVWL_MAX_VALUE, LKVWL_MAX_THREADS
-- in c/bench/workload.h, and its num cap; core.http_bench:
-- LKVNET_BENCH_MAX_CONNECTIONS, its key and value sizes, timeout and
-- write share, in c/lua/lunakv_node.c), so
-- a value out of range is a usage error where lunakv.cmd.bench parses the
-- options rather than an error from C.
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

-- The items of a comma-separated list, trimmed, the empty ones left out.
local function comma_list(text)
  local items = {}
  for item in (text .. ","):gmatch("([^,]*),") do
    item = item:match("^%s*(.-)%s*$")
    if item ~= "" then items[#items + 1] = item end
  end
  return items
end
M.comma_list = comma_list

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
          .. "%s, got %s", item, config.int_range(r[1], r[2]), digits)
      end
    end
    list[#list + 1] = { name = item, base = base, threads = threads, def = def }
  end
  if #list == 0 then return nil, "no workloads given" end
  return list
end

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
            .. "be %s, got %s", item, config.int_range(r[1], r[2]), n)
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
function M.lua_loop(base) return compile(LOOP, base) end
M.plain_loop = function(base) return compile(PLAIN_LOOP, base) end
M.lua_loop_source = function(base)
  return (LOOP:gsub("OP", function() return LUA_OPS[base] end))
end

-- A 0-based random permutation of 0 .. n-1.
function M.permutation(n, seed)
  local p = {}
  for i = 0, n - 1 do p[i] = i end
  math.randomseed(seed)
  for i = n - 1, 1, -1 do
    local j = math.random(0, i)
    p[i], p[j] = p[j], p[i]
  end
  return p
end

return M
