-- lunakv.bench.report - what the bench prints: the machine it ran on,
-- numbers as a reader takes them in (1,234,567; three figures of
-- latency), text columns, the progress bar, and the results of a run as
-- a table with its footnotes or as one JSON object.

local M = {}

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

-- The median of a list of numbers (nil for none).
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
M.median, M.percentile = median, percentile

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

-- A Lua row's ops/s over its bare loop's (nil when there is none), from
-- the same medians the row prints.
local function of_bare(r)
  local b = r.bare_ops_per_sec
  return b and b > 0 and r.ops_per_sec / b or nil
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

-- A latency in microseconds as milliseconds, three figures or so.
local function ms(us)
  return figure(us / 1000)
end

-- {======================================================================
-- The local bench's report (lunakv.bench: run, rows, notes)
-- =======================================================================

-- The header of the text report: what runs, where, with which settings.
function M.header(run)
  local lunakv = require "lunakv"
  local machine, opts, info = run.machine, run.opts, run.info
  local ram = machine.ram_bytes and string.format(", %.1f GiB RAM",
    machine.ram_bytes / 2 ^ 30) or ""
  local out = {
    string.format("%s bench (%s)", lunakv._VERSION, _VERSION),
    string.format("machine   %d cores, %s%s%s", machine.cores,
      machine.cpu, machine.kernel and (", " .. machine.kernel) or "", ram),
    string.format("data dir  %s%s", run.base,
      run.temporary and " (temporary, removed at the end)" or ""),
    string.format("config    %s; %s", info and info.file or "no .env file",
      config_line(opts, info)),
    string.format("data      %s ops per workload, %d B keys, %d B values"
      .. "%s", commas(run.num), run.key_size, run.value_size,
      run.repeats > 1
        and (", medians of " .. run.repeats .. " runs (one process "
          .. "each)") or ""),
    "",
  }
  io.stdout:write(table.concat(out, "\n"), "\n")
  io.stdout:flush()
end

-- The results as one JSON object on stdout (--json).
function M.json(run, rows, notes)
  local cjson = require "cjson"
  local lunakv = require "lunakv"
  local info = run.info
  local results = {}
  for _, row in ipairs(rows) do
    for _, l in ipairs(run.layers) do
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
  local engine_opts = {}
  for k, v in pairs(run.opts) do engine_opts[k] = v end
  engine_opts.data_dir = nil
  local doc = {
    version = lunakv.version, lua = _VERSION, machine = run.machine,
    dir = run.base, temporary_dir = run.temporary,
    config = { file = info and info.file or cjson.null,
      options = engine_opts, sources = sources },
    num = run.num, key_size = run.key_size, value_size = run.value_size,
    sample_every = require("lunakv.bench.workloads").SAMPLE_EVERY,
    ["repeat"] = run.repeats, results = results, notes = notes,
  }
  if #notes == 0 then doc.notes = cjson.empty_array or nil end
  io.stdout:write(cjson.encode(doc), "\n")
end

-- The text table: one line per workload, a column pair per layer.
local function results_table(run, rows)
  local layers = run.layers
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
  return columns(lines)
end

-- The footnotes under the table: what "of bare" compares with, the
-- smaller size of a sync fill, and the time each fill took to settle.
local function footnotes(run, rows)
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
  for _, w in ipairs(run.plan) do
    if w.def.fill == "sync" then
      fs[#fs + 1] = string.format("%s ran %s ops (N/100)", w.name,
        commas(math.max(1, run.num // 100)))
    end
  end
  local settles = {}
  for _, row in ipairs(rows) do
    for _, l in ipairs(run.layers) do
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
  return fs
end

local function print_notes(notes)
  if #notes > 0 then
    io.stdout:write("\nnotes:\n")
    for _, n in ipairs(notes) do io.stdout:write("  ", n, "\n") end
  end
end

-- The results as text: the table, its footnotes, the notes.
function M.text(run, rows, notes)
  io.stdout:write(results_table(run, rows), "\n")
  local fs = footnotes(run, rows)
  if #fs > 0 then io.stdout:write("\n", table.concat(fs, "\n"), "\n") end
  print_notes(notes)
end

-- }======================================================================

-- {======================================================================
-- Over HTTP (lunakv.bench.http: run, results, notes)
-- =======================================================================

-- The header of the text report over HTTP: the load and its target.
function M.http_header(run)
  local machine = run.machine
  local what = string.format("%s%s, %d connections, %d B keys, %d B values, "
    .. "%s per workload", run.urls[1],
    #run.read_urls > 1 and string.format(" (reads: %d nodes)",
      #run.read_urls) or "",
    run.conns, run.key_size, run.value_size,
    run.num and (commas(run.num) .. " ops" .. (run.seconds and (" or "
      .. run.seconds .. " s") or "")) or (run.seconds .. " s"))
  io.stdout:write(string.format("lunakv bench --url (%s, target %s%s)\n",
    _VERSION, run.target, run.fn and (", function " .. run.fn) or ""))
  io.stdout:write(string.format("machine   %d cores, %s%s\n", machine.cores,
    machine.cpu, machine.kernel and (", " .. machine.kernel) or ""))
  io.stdout:write("load      ", what, "\n\n")
  io.stdout:flush()
end

function M.http_json(run, results, notes)
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
    version = require("lunakv").version, lua = _VERSION,
    machine = run.machine, target = run.target, ["function"] = run.fn,
    urls = run.urls,
    read_urls = run.read_urls, connections = run.conns,
    key_size = run.key_size, value_size = run.value_size, keys = run.keys,
    num = run.num, seconds = run.seconds, consistent = run.consistent,
    results = out, notes = #notes > 0 and notes or nil,
  }, "\n")
end

function M.http_text(results, notes)
  local lines = { { "workload", "ops", "errors", "ops/s", "p50 ms",
    "p90 ms", "p99 ms", "max ms" } }
  for _, r in ipairs(results) do
    lines[#lines + 1] = { r.workload, commas(r.ops), commas(r.errors),
      commas(r.ops_per_sec), ms(r.p50_us), ms(r.p90_us), ms(r.p99_us),
      ms(r.max_us) }
  end
  io.stdout:write(columns(lines), "\n")
  print_notes(notes)
end

-- }======================================================================

return M
