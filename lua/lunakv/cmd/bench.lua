-- lunakv.cmd.bench - `lunakv bench`: its options, their ranges, and the
-- checks that need several of them at once, so that every mistake in the
-- options is a usage error before anything runs; lunakv.bench then runs
-- the workloads (lunakv.bench.http with --url).

local config = require "lunakv.config"
local workloads = require "lunakv.bench.workloads"

local M = {}

M.summary = "Measure the engine (C loop) and the Lua binding (Lua loop)."
M.description = "Run benchmark workloads and print ops/s and p50/p99 "
  .. "latency per workload,\nfor the engine's own loop in C and for a "
  .. "plain Lua loop calling db:set/db:get."

-- The engine's settings come from the settings layers (the bench's
-- databases are opened with them).
M.settings = true

local LIMITS = workloads.LIMITS
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
    .. "seed's " .. workloads.DEFAULT_WORKLOADS .. "; db_bench's: "
    .. workloads.DB_BENCH_WORKLOADS:gsub(",", ", ") .. ", or \"all\"). A read workload may end "
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
  -- over HTTP (lunakv.bench.http)
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
  c:option("--target", "HTTP: what the URLs are: lunakv (default), etcd "
    .. "(its v3 JSON gateway: /v3/kv/put, /v3/kv/range), or call (lunakv "
    .. "nodes whose writes are POST /call/NAME {\"key\": K}, NAME from "
    .. "--function; reads as lunakv).")
    :argname("<lunakv|etcd|call>"):choices { "lunakv", "etcd", "call" }
  c:option("--function", "HTTP, with --target call: the stored function "
    .. "each write calls (loaded beforehand: PUT /functions/LIBRARY).")
    :argname("<name>")
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

-- nil, or the usage error when n distinct keys (counted by the option
-- opt) cannot be written in key_size decimal digits.
local function key_space_error(opt, n, key_size)
  if n > 10 ^ key_size then
    return string.format("%s %d needs keys longer than %d bytes", opt, n,
      key_size)
  end
end

local function split_urls(text)
  local remote = require "lunakv.remote"
  local urls = {}
  for _, u in ipairs(workloads.comma_list(text)) do
    local base, why = remote.base_url(u)
    if not base then return nil, "--url: " .. why end
    urls[#urls + 1] = base
  end
  if #urls == 0 then return nil, "--url: no URL given" end
  return urls
end

-- The options of a local run, checked together. Returns what
-- lunakv.bench.run_local needs (plan, layers, num, key_size, value_size),
-- or nil and the message of a usage error.
local function local_setup(args, opts)
  for _, o in ipairs { "connections", "seconds", "keys", "read_from",
    "target", "function", "timeout_ms" } do
    if args[o] ~= nil then
      return nil, "--" .. o:gsub("_", "-") .. " is an option of bench --url"
    end
  end
  if args.consistent then
    return nil, "--consistent is an option of bench --url"
  end
  local err = check_mode_ranges(args, false)
  if err then return nil, err end
  local plan
  plan, err = workloads.parse_workloads(args.workloads
    or workloads.DEFAULT_WORKLOADS)
  if not plan then return nil, "--workloads: " .. err end
  local layers = {}
  for l in (args.layers or "c,lua"):gmatch("[^,%s]+") do
    l = l:lower()
    if l ~= "c" and l ~= "lua" then
      return nil, "--layers: expected c, lua or c,lua, got '" .. l .. "'"
    end
    layers[#layers + 1] = l
  end
  if #layers == 0 then return nil, "--layers: no layer given" end
  local num = args.num or opts.benchmark_n or 100000
  local key_size = args.key_size or 16
  local value_size = args.value_size or 100
  err = key_space_error("--num", num, key_size)
  if err then return nil, err end
  return { plan = plan, layers = layers, num = num, key_size = key_size,
    value_size = value_size }
end

-- The options of a run over HTTP, checked together. Returns what
-- lunakv.bench.http.run needs, or nil and the message of a usage error.
local function http_setup(args)
  local urls, why = split_urls(args.url)
  if not urls then return nil, why end
  why = check_mode_ranges(args, true)
  if why then return nil, why end
  local plan
  plan, why = workloads.parse_http_workloads(args.workloads
    or workloads.HTTP_DEFAULT_WORKLOADS)
  if not plan then return nil, "--workloads: " .. why end
  if args.layers or args["repeat"] or args.dir then
    return nil, "--layers, --repeat and --dir do not apply to bench --url"
  end
  -- a forgotten or impossible --function is a usage error here, not a
  -- run of 404s; the name rule is the node's (and core.http_bench's):
  -- 1 to 64 bytes of [A-Za-z0-9_.-], which also keep the path unescaped
  local target, fn = args.target or "lunakv", args["function"]
  if target == "call" and not fn then
    return nil, "--target call needs --function NAME"
  end
  if fn and target ~= "call" then
    return nil, "--function needs --target call"
  end
  if fn and (#fn > 64 or not fn:match("^[%w_.-]+$")) then
    return nil, string.format("--function: '%s' is not 1 to 64 bytes of "
      .. "[A-Za-z0-9_.-]", fn)
  end
  local seconds, num = args.seconds, args.num
  if not seconds and not num then seconds = 5 end
  local keys = args.keys or 1000000
  local key_size = args.key_size or 16
  why = key_space_error("--keys", keys, key_size)
  if why then return nil, why end
  return { urls = urls, plan = plan, target = target, fn = fn,
    conns = args.connections or 32, seconds = seconds, num = num,
    keys = keys, key_size = key_size, value_size = args.value_size or 100,
    consistent = args.consistent or false,
    read_urls = args.read_from == "first" and { urls[1] } or urls }
end

-- Returns true, or nil and a message, or 2 (lunakv.cli's EXIT_USAGE) and
-- a message.
function M.run(args, opts, info)
  if args.url then
    local setup, why = http_setup(args)
    if not setup then return 2, why end
    return require("lunakv.bench.http").run(setup, args)
  end
  local setup, why = local_setup(args, opts)
  if not setup then return 2, why end
  return require("lunakv.bench").run_local(setup, args, opts, info)
end

return M
