-- lunakv.bench.runner - running the plan: the C layer (core.bench on real
-- pthreads, polled for progress), the Lua layer (the plain loops of
-- lunakv.bench.workloads), one layer over the whole plan with its fills
-- and loads, and a repetition in a new process (--repeat).

local workloads = require "lunakv.bench.workloads"
local report = require "lunakv.bench.report"

local M = {}

local WORKLOADS = workloads.WORKLOADS
local progress_meter = report.progress_meter
local percentile = report.percentile
local permutation, lua_loop = workloads.permutation, workloads.lua_loop

local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

local function remove_tree(path)
  os.execute("rm -rf -- " .. shell_quote(path) .. " 2>/dev/null")
end

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

-- The Lua layer: the workload's plain loop, timed from inside (one op in
-- 8), after a bare loop of the same shape to compare it with.
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
function M.combine(runs)
  if #runs == 1 then return runs[1] end
  if runs[1].skipped then return runs[1] end
  local r = copy(runs[1])
  for _, f in ipairs { "ops_per_sec", "p50_us", "p99_us", "p999_us",
    "max_us", "seconds", "settle_s", "bare_ops_per_sec" } do
    local xs = {}
    for _, x in ipairs(runs) do xs[#xs + 1] = x[f] end
    if #xs > 0 then r[f] = report.median(xs) end
  end
  r.runs = #runs
  return r
end

-- What should have been found, and was it?
function M.check(w, r)
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

-- One repetition of a --repeat run, in a new `lunakv bench` process with
-- the same settings and --json: its per-layer results, by plan index.
-- A Lua loop's speed here drifts in phases of seconds and differs from
-- process to process, so repetitions in new processes sample more of it
-- than repetitions inside one.
local function run_child(args, layers, ctx)
  local cjson = require "cjson"
  local interp, bin = require("lunakv.cluster").self_command()
  local cmd = { interp, bin, "bench", "--json", "--quiet", "--repeat", "1",
    "-w", args.workloads or workloads.DEFAULT_WORKLOADS,
    "-n", tostring(ctx.num),
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

-- Run the plan on every layer, args["repeat"] times (each in a new
-- process when more than once), and collect per_layer[layer][i]: the
-- results of workload i, one per repetition. The databases live under
-- ctx.base, which is removed at the end when ctx.temporary, also when a
-- run fails (the failure is raised again afterwards).
function M.measure(args, plan, layers, ctx)
  local per_layer = {}
  for _, l in ipairs(layers) do per_layer[l] = {} end
  local repeats = args["repeat"] or 1
  local ok, e = pcall(function()
    for rep = 1, repeats do
      -- alternate the layer order so machine drift falls on both
      local order = {}
      for i = 1, #layers do
        order[i] = layers[rep % 2 == 1 and i or #layers + 1 - i]
      end
      local res
      if repeats > 1 then
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
  if ctx.temporary then remove_tree(ctx.base) end
  if not ok then error(e, 0) end
  return per_layer
end

return M
