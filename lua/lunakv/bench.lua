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
-- The pieces: lunakv.bench.workloads (the names, ranges and Lua loops),
-- lunakv.bench.runner (the two layers and repetitions),
-- lunakv.bench.report (what is printed), lunakv.bench.http (--url: running
-- nodes driven over HTTP) and lunakv.cmd.bench (the options). This file
-- runs a local bench from its steps, and gathers what scripts and specs
-- use from the pieces.

local workloads = require "lunakv.bench.workloads"
local report = require "lunakv.bench.report"
local runner = require "lunakv.bench.runner"

local M = {}

M.WORKLOADS, M.LIMITS, M.LUA_OPS =
  workloads.WORKLOADS, workloads.LIMITS, workloads.LUA_OPS
M.DEFAULT_WORKLOADS, M.DB_BENCH_WORKLOADS, M.HTTP_DEFAULT_WORKLOADS =
  workloads.DEFAULT_WORKLOADS, workloads.DB_BENCH_WORKLOADS,
  workloads.HTTP_DEFAULT_WORKLOADS
M.parse_workloads = workloads.parse_workloads
M.parse_http_workloads = workloads.parse_http_workloads
M.plain_loop, M.lua_loop_source = workloads.plain_loop,
  workloads.lua_loop_source
M.machine, M.commas, M.columns = report.machine, report.commas,
  report.columns
M.progress_meter = report.progress_meter
M.settle = runner.settle

-- One row per workload: each layer's repetitions combined (medians), and
-- a note for each layer that found keys it should not have, or missed
-- some it should have found.
local function tabulate(run, per_layer)
  local rows, notes = {}, {}
  for i, w in ipairs(run.plan) do
    local row = { workload = w.name, threads = w.threads, def = w.def }
    for _, l in ipairs(run.layers) do
      local r = runner.combine(per_layer[l][i])
      row[l] = r
      local n = runner.check(w, r)
      if n then notes[#notes + 1] = (l == "c" and "C: " or "Lua: ") .. n end
    end
    rows[#rows + 1] = row
  end
  return rows, notes
end

-- `lunakv bench` on databases of its own. setup: what lunakv.cmd.bench
-- made of the options (plan, layers, num, key_size, value_size); args:
-- the options as parsed; opts, info: the settings and their sources.
-- Returns true; raises "lunakv: ..." when a run fails.
function M.run_local(setup, args, opts, info)
  local core = require "lunakv.core"
  local run = {
    plan = setup.plan, layers = setup.layers, num = setup.num,
    key_size = setup.key_size, value_size = setup.value_size,
    opts = opts, info = info, seed = args.seed or 1,
    repeats = args["repeat"] or 1, base = args.dir,
    temporary = args.dir == nil,
    progress = not args.quiet and (args.progress or core.isatty(2)),
    counter = 0, -- databases opened so far (for unique names)
  }
  if run.temporary then run.base = require("lunakv.tmpdir")("lunakv-bench") end
  run.machine = report.machine()
  if not args.json then report.header(run) end
  local per_layer = runner.measure(args, run.plan, run.layers, run)
  local rows, notes = tabulate(run, per_layer)
  if args.json then
    report.json(run, rows, notes)
  else
    report.text(run, rows, notes)
  end
  return true
end

return M
