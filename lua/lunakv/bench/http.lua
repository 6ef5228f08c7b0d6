-- lunakv.bench.http - `lunakv bench --url`: running nodes driven over
-- HTTP. The load generator is C (core.http_bench: keep-alive
-- connections, one request in flight on each, one event loop), the
-- workloads are write, read and mixNN (NN% writes), and the figures are
-- ops/s and latency percentiles per workload.

local report = require "lunakv.bench.report"

local M = {}

-- Every node must answer before the clock starts: a typo in a URL is one
-- clear line, not a table of errors. Returns true, or nil and why.
local function all_answer(urls)
  local core = require "lunakv.core"
  for _, u in ipairs(urls) do
    local ok, err = pcall(core.http_request, "GET", u .. "/health", nil, nil,
      5000)
    if not ok then
      return nil, (tostring(err):gsub("^.-lunakv: ", ""))
    end
  end
  return true
end

-- Run each workload of the plan in turn. Reads pick among the keys the
-- writes before them wrote. Returns the results, or nil and a message
-- when the load generator gave up on a workload.
local function drive(run, args)
  local core = require "lunakv.core"
  local results, written = {}, 0
  for _, w in ipairs(run.plan) do
    local space = run.keys
    if w.write_pct == 0 and written > 0 then
      space = math.min(written, run.keys)
    end
    if not args.quiet and core.isatty(2) then
      io.stderr:write(string.format("running %s ...\r", w.name))
      io.stderr:flush()
    end
    local ok, r = pcall(core.http_bench, {
      urls = w.write_pct == 100 and { run.urls[1] } or run.read_urls,
      connections = run.conns, ops = run.num, seconds = run.seconds,
      write_pct = w.write_pct, key_size = run.key_size,
      value_size = run.value_size, key_space = space,
      sequential = true, consistent = run.consistent,
      seed = args.seed or 1, timeout_ms = args.timeout_ms or 10000,
      target = run.target, fn = run.fn,
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
    written = math.max(written, math.min(r.writes, run.keys))
    results[#results + 1] = r
  end
  return results
end

-- A note per workload with failed requests; and did every request fail?
local function failures(results)
  local notes, all_failed = {}, true
  for _, r in ipairs(results) do
    if r.errors < r.ops then all_failed = false end
    if r.errors > 0 then
      notes[#notes + 1] = string.format("%s: %s of %s requests failed; the "
        .. "first: %s", r.workload, report.commas(r.errors),
        report.commas(r.ops), r.first_error or "?")
    end
  end
  return notes, all_failed
end

-- run: what lunakv.cmd.bench made of the options (urls, read_urls, plan,
-- target, fn, conns, seconds, num, keys, key_size, value_size,
-- consistent); args: the options as parsed. Returns true, or nil and a
-- message.
function M.run(run, args)
  local ok, why = all_answer(run.urls)
  if not ok then return nil, why end
  run.machine = report.machine()
  if not args.json then report.http_header(run) end
  local results
  results, why = drive(run, args)
  if not results then return nil, why end
  local notes, all_failed = failures(results)
  if args.json then
    report.http_json(run, results, notes)
  else
    report.http_text(results, notes)
  end
  if all_failed then return nil, "every request failed (see the notes)" end
  return true
end

return M
