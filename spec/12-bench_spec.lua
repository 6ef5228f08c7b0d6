-- lunakv bench: the C workload runner (core.bench) and the shape of the
-- report, text and --json, on a small N. No timing is asserted: numbers
-- only have to be there and be positive (speed is measured, not tested).

local h = require "spec.helpers"
local core = require "lunakv.core"
local bench = require "lunakv.bench"
local cjson = require "cjson"

local lines = h.lines_of

describe("core.bench", function()
  local dir, db

  before_each(function()
    dir = h.tmpdir()
    db = h.open(dir .. "/db")
  end)
  after_each(function()
    db:close()
    h.cleanup()
  end)

  local function run(spec)
    local job = core.bench(db, spec)
    assert.matches("^lunakv.bench %(", tostring(job))
    local done, n = job:wait()
    assert.is_true(done)
    local r = job:result()
    assert.equal(r.ops, n)
    job:close()
    job:close() -- idempotent
    assert.matches("closed", tostring(job))
    return r
  end

  it("writes the keys the Lua side formats, and reads them back",
    function()
      local r = run { kind = "writes", num = 1000 }
      assert.equal("writes", r.kind)
      assert.equal(1000, r.ops)
      assert.is_true(r.ops_per_sec > 0)
      assert.is_true(r.p50_us > 0 and r.p99_us >= r.p50_us)
      assert.is_true(r.max_us >= r.p99_us)
      assert.equal(125, r.samples) -- one op in 8 is timed
      assert.is_string(db:get(string.format("%016d", 0)))
      assert.is_string(db:get(string.format("%016d", 999)))
      assert.is_nil(db:get(string.format("%016d", 1000)))
      assert.equal(100, #db:get(string.format("%016d", 7)))
      -- the missing keys of the Lua loop are absent and inside the range
      assert.is_nil(db:get(string.format("%015d.", 99)))
      assert.equal(1000, run { kind = "reads", num = 1000 }.found)
      assert.equal(0, run { kind = "misses", num = 1000 }.found)
    end)

  it("runs every workload, reads on several threads", function()
    run { kind = "fillrandom", num = 2000, value_size = 10 }
    for _, kind in ipairs { "overwrite", "fillseq" } do
      assert.equal(2000, run { kind = kind, num = 2000 }.ops)
    end
    for _, t in ipairs { 1, 3 } do
      local r = run { kind = "readrandom", num = 2000, threads = t }
      assert.equal(t, r.threads)
      assert.equal(2000, r.ops)
      assert.equal(2000, r.found)
      assert.equal(0, run { kind = "readmissing", num = 2000, threads = t }.found)
      assert.equal(2000, run { kind = "readseq", num = 2000, threads = t }.found)
      assert.equal(500, run { kind = "seekrandom", num = 2000, ops = 500,
        threads = t }.found)
      assert.equal(2000, run { kind = "reads", num = 2000, threads = t }.found)
    end
    local n = 0
    for _ in db:scan() do n = n + 1 end
    assert.equal(2000, n)
  end)

  it("checks its spec", function()
    local function err(spec) return h.error_of(core.bench, db, spec) end
    assert.matches("'kind' to 'bench' %(a workload name expected, got nope%)",
      err { kind = "nope" })
    assert.matches("'kind' .*got nil", err { num = 5 })
    assert.matches("'threads'", err { kind = "reads", threads = 0 })
    assert.matches("'num'", err { kind = "reads", num = 0 })
    assert.matches("needs keys longer than 2 bytes",
      err { kind = "writes", num = 1000, key_size = 2 })
    assert.matches("table expected", h.error_of(core.bench, db))
  end)

  it("is stopped and joined when its db closes", function()
    local job = core.bench(db, { kind = "readrandom", num = 100,
      ops = 1e9, threads = 2 })
    local done = job:wait(0.05)
    assert.is_false(done)
    db:close() -- must not hang or crash
    assert.matches("closed", tostring(job))
    assert.matches("closed", h.error_of(job.wait, job))
    db = h.open(dir .. "/db") -- for after_each
  end)

  it("reports progress while it runs and refuses result() until done",
    function()
      local job = core.bench(db, { kind = "readmissing", num = 100,
        ops = 1e9 })
      local _, n1 = job:wait(0.05)
      local _, n2 = job:wait(0.05)
      assert.is_true(n2 >= n1)
      assert.matches("still running", h.error_of(job.result, job))
      job:close()
    end)
end)

describe("core.clock and core.ncpu", function()
  it("tell the time and the processors", function()
    local a = core.clock()
    local b = core.clock()
    assert.is_true(b >= a)
    assert.is_true(core.ncpu() >= 1)
    assert.is_false(core.isatty(0) and false)
  end)
end)

describe("bench.parse_workloads", function()
  it("reads names with thread counts", function()
    local w = assert(bench.parse_workloads("writes, reads4,misses"))
    assert.equal(3, #w)
    assert.equal("reads4", w[2].name)
    assert.equal("reads", w[2].base)
    assert.equal(4, w[2].threads)
    assert.equal(1, w[1].threads)
    assert.equal(8, #assert(bench.parse_workloads("all")))
  end)

  it("names what is wrong", function()
    local _, err = bench.parse_workloads("writes,bogus")
    assert.matches("unknown workload 'bogus'", err)
    _, err = bench.parse_workloads("fillseq4")
    assert.matches("only read workloads", err)
    _, err = bench.parse_workloads(",")
    assert.matches("no workloads", err)
  end)

  it("has a Lua loop for every workload", function()
    for name in pairs(bench.WORKLOADS) do
      local base = name == "fillsync" and "fillrandom" or name
      assert.truthy(bench.LUA_OPS[base], name)
      assert.truthy(load(bench.lua_loop_source(base)), name)
    end
  end)
end)

describe("bench.progress_meter", function()
  it("draws only after its delay, and clears what it drew", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    local t = 0
    local draw, clear = bench.progress_meter(true, "writes (C)", 100,
      { out = f, after = 1, clock = function() return t end })
    draw(10)
    t = 2
    draw(50)
    clear()
    f:close()
    local s = h.read_file(path)
    os.remove(path)
    assert.matches("^\rwrites %(C%) +%[###############%.+%]  50%%  25 ops/s",
      s)
    assert.matches("\r +\r$", s)
  end)

  it("stays silent when off", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    local draw, clear = bench.progress_meter(false, "x", 10,
      { out = f, after = 0 })
    draw(5)
    clear()
    f:close()
    assert.equal("", h.read_file(path))
    os.remove(path)
  end)
end)

describe("lunakv bench", function()
  local dir
  h.tmpdir_each(function(d) dir = d end)

  local function lunakv(args)
    return h.lunakv_in(dir, "bench " .. args)
  end

  it("runs the seed's four workloads on both layers", function()
    local code, out, err = lunakv("-n 2000")
    assert.equal(0, code, err)
    assert.equal("", err) -- no progress bar when stderr is not a terminal
    local l = lines(out)
    assert.matches("^lunakv %S+ bench %(Lua 5%.4%)$", l[1])
    assert.matches("^machine +%d+ cores, .+", l[2])
    assert.matches("^data dir +/.+ %(temporary, removed at the end%)$", l[3])
    assert.matches("^config +no %.env file; .*MAX_MEMTABLE_SIZE=4194304", l[4])
    assert.matches("^data +2,000 ops per workload, 16 B keys, 100 B values$",
      l[5])
    assert.equal("", l[6])
    assert.matches("^workload +threads +C ops/s +C p50/p99 us +Lua ops/s +"
      .. "Lua p50/p99 us +of bare +Lua/C$", l[7])
    local num = "[%d,]+"
    local latency = "[%d.]+/[%d.]+"
    for i, w in ipairs { "writes", "reads", "misses" } do
      local row = l[7 + (i == 3 and 4 or i)]
      -- "of bare" is a ratio of two timings: usually below 1, but a
      -- bare loop that ran in a slow moment of a shared machine (or
      -- under make asan) can put it above: its shape only
      assert.matches("^" .. w .. " +1 +" .. num .. " +" .. latency .. " +" ..
        num .. " +" .. latency .. " +%d+%.%d%d%d +[%d.]+$", row)
    end
    -- a Lua state is one thread: reads4 has no Lua figures
    assert.matches("^reads4 +4 +" .. num .. " +" .. latency ..
      " +%- +%- +%- +%-$", l[10])
    -- what "of bare" divides by, and how fast it ran
    assert.matches("\nof bare: Lua ops/s over a bare loop's %(.-%), run just "
      .. "before each workload: [%d,]+%-[%d,]+ ops/s here\n", out)
    assert.is_nil(out:find("notes:", 1, true))
    -- the fill's flush and compactions ran before the reads, and took
    assert.matches("\nsettle after each fill %(flush %+ its compactions, not "
      .. "in ops/s%): writes C [%d.]+ s, writes Lua [%d.]+ s\n", out)
    -- the temporary directory is gone
    local tmp = l[3]:match("^data dir +(%S+)")
    assert.is_false(h.exists(tmp))
  end)

  it("prints one JSON object with --json", function()
    local code, out, err = lunakv("-n 1000 --json -w writes,readrandom2,"
      .. "readmissing,seekrandom,readseq --value-size 10 --key-size 12")
    assert.equal(0, code, err)
    local doc = cjson.decode(out)
    assert.equal(h.lunakv.version, doc.version)
    assert.equal("Lua 5.4", doc.lua)
    assert.is_true(doc.machine.cores >= 1)
    assert.is_string(doc.machine.cpu)
    assert.equal(1000, doc.num)
    assert.equal(12, doc.key_size)
    assert.equal(10, doc.value_size)
    assert.equal(8, doc.sample_every)
    assert.is_true(doc.temporary_dir)
    assert.equal("batch", doc.config.options.sync)
    assert.equal(10, #doc.results)
    local seen = {}
    for _, r in ipairs(doc.results) do
      seen[r.workload .. "/" .. r.layer] = r
      if r.workload == "readrandom2" and r.layer == "lua" then
        assert.matches("one thread", r.skipped)
      else
        assert.is_true(r.ops_per_sec > 0, r.workload)
        assert.is_true(r.p99_us >= r.p50_us, r.workload)
        assert.equal(1000, r.ops)
      end
      if r.layer == "lua" and not r.skipped then
        -- each Lua row carries the bare loop it is compared with
        assert.is_true(r.bare_ops_per_sec > 0, r.workload)
        assert.is_true(r.of_bare > 0, r.workload)
      end
    end
    assert.equal(2, seen["readrandom2/c"].threads)
    assert.equal(1000, seen["readrandom2/c"].found)
    assert.is_true(seen["writes/lua"].settle_s >= 0)
    assert.is_nil(seen["seekrandom/c"].settle_s)
    assert.equal(0, seen["readmissing/lua"].found)
    assert.equal(1000, seen["seekrandom/lua"].found)
    assert.equal(1000, seen["readseq/c"].found)
  end)

  it("runs db_bench's workloads, fillsync on N/100 keys", function()
    local code, out, err = lunakv("-n 1000 -w all --layers c --json")
    assert.equal(0, code, err)
    local doc = cjson.decode(out)
    local names = {}
    for _, r in ipairs(doc.results) do
      assert.equal("c", r.layer)
      names[#names + 1] = r.workload
      if r.workload == "fillsync" then assert.equal(10, r.ops) end
    end
    assert.same({ "fillseq", "fillrandom", "overwrite", "readrandom",
      "readmissing", "readseq", "seekrandom", "fillsync" }, names)
  end)

  it("keeps a --dir it was given, removing only its own databases",
    function()
      h.write_file(dir .. "/keep.txt", "x")
      local code, out, err = lunakv("-n 500 -w writes --layers lua --dir "
        .. h.quote(dir) .. " --repeat 2")
      assert.equal(0, code, err)
      assert.matches("data dir +" .. dir:gsub("%p", "%%%0") .. "\n", out)
      assert.matches("medians of 2 runs", out)
      assert.same({ "keep.txt" }, h.list(dir))
    end)

  it("runs each --repeat repetition in a process of its own", function()
    -- LUA_INIT runs in every lua5.4 started: each appends a line to log
    -- (not a file of a random name: under ASan, without address
    -- randomization, processes started in the same second share a seed)
    local log = h.tmpdir() .. "/log"
    local init = "local f = io.open(" .. string.format("%q", log)
      .. ", 'a') if f then f:write('x\\n') f:close() end"
    local function started() return #h.lines(log) end
    local function run(extra)
      return h.run("cd " .. h.quote(dir) .. " && LUA_INIT=" .. h.quote(init)
        .. " " .. h.lunakv_cmd .. " bench -n 300 -w writes "
        .. "--layers lua,c -s MAX_MEMTABLE_SIZE=65536 " .. extra)
    end
    local code, out, err = run("--repeat 3 --json")
    assert.equal(0, code, err)
    assert.equal(4, started()) -- this bench and three repetitions
    local doc = require("cjson").decode(out)
    assert.equal(3, doc["repeat"])
    for _, r in ipairs(doc.results) do
      assert.equal(3, r.runs, r.layer)
      assert.is_true(r.ops_per_sec > 0)
    end
    code, out, err = run("--repeat 1")
    assert.equal(0, code, err)
    assert.equal(5, started()) -- one run: no child process
    assert.matches("\nwrites +1 ", out)
    assert.not_matches("medians of", out)
  end)

  it("shows settings from .env, the environment and --set", function()
    h.write_file(dir .. "/.env", "MAX_MEMTABLE_SIZE=65536\nWAL_BUFFER_SIZE=7\n")
    local code, out, err = h.run("cd " .. h.quote(dir) .. " && SYNC=none " ..
      h.lunakv_cmd .. " bench -n 200 -w writes " ..
      "--layers c -s MAX_MEMTABLE_SIZE=4096")
    assert.equal(0, code, err)
    local config = out:match("\nconfig +([^\n]+)")
    assert.matches("^%.env;", config)
    assert.matches("MAX_MEMTABLE_SIZE=4096 %(%-%-set%)", config)
    assert.matches("WAL_BUFFER_SIZE=7 %(%.env:2%)", config)
    assert.matches("SYNC=none %(environment%)", config)
  end)

  it("refuses bad options with exit 2", function()
    for _, args in ipairs { "-w bogus", "-n 0", "-n x", "--layers go",
      "--value-size -1", "--frob", "-n 1000 --key-size 2" } do
      local code, out, err = lunakv(args)
      assert.equal(2, code, args)
      assert.equal("", out, args)
      assert.matches("^lunakv: [^\n]+\nUsage: lunakv bench", err)
    end
  end)
end)

describe("bench --target call (calls of a stored function)", function()
  -- no node is needed: each mistake is refused before any request, so
  -- the URL is one nothing listens on
  local url = "http://127.0.0.1:1"

  it("refuses a missing or impossible --function with exit 2", function()
    local long = string.rep("f", 65)
    for _, case in ipairs {
      { "--url " .. url .. " --target call", "%-%-target call needs "
        .. "%-%-function NAME" },
      { "--url " .. url .. " --function incr", "%-%-function needs "
        .. "%-%-target call" },
      { "--url " .. url .. " --target etcd --function incr",
        "%-%-function needs %-%-target call" },
      { "--url " .. url .. " --target call --function a/b", "%-%-function: "
        .. "'a/b' is not 1 to 64 bytes of %[A%-Za%-z0%-9_.%-%]" },
      { "--url " .. url .. " --target call --function " .. long,
        "%-%-function: 'f+' is not 1 to 64 bytes" },
      { "-n 10 --function incr", "%-%-function is an option of bench "
        .. "%-%-url" },
      { "--url " .. url .. " --target redis", "argument for option "
        .. "'%-%-target' must be one of 'lunakv', 'etcd', 'call'" },
    } do
      local code, out, err = h.run(h.lunakv_cmd .. " bench " .. case[1])
      assert.equal(2, code, case[1])
      assert.equal("", out, case[1])
      assert.matches("^lunakv: " .. case[2] .. "[^\n]*\nUsage: lunakv bench",
        err)
    end
  end)

  it("core.http_bench refuses a bad target or fn before sending", function()
    local function hb(o)
      o.url, o.ops = url, 1
      return h.error_of(core.http_bench, o)
    end
    for _, case in ipairs {
      { { target = "call" }, "option 'fn' is required with target \"call\"" },
      { { fn = "incr" }, "option 'fn' needs target \"call\"" },
      { { target = "etcd", fn = "incr" }, "option 'fn' needs target" },
      { { target = "call", fn = 1 }, "option 'fn' must be a string" },
      { { target = "call", fn = "" }, "the call target needs a function name" },
      { { target = "call", fn = "a b" }, "function name 'a b' is not 1 to 64 "
        .. "bytes of [A-Za-z0-9_.-]" },
      { { target = "call", fn = string.rep("f", 65) }, "is not 1 to 64 bytes" },
      { { target = "redis" }, "option 'target' must be \"lunakv\", \"etcd\" "
        .. "or \"call\"" },
    } do
      local err = hb(case[1])
      assert.is_string(err, case[2])
      assert.matches(case[2], err, 1, true)
    end
  end)
end)

describe("bench.settle", function()
  after_each(h.cleanup)

  it("returns only when nothing is flushing, compacting or due", function()
    local db = h.open(h.tmpdir() .. "/db", { max_memtable_size = 8 * 1024,
      max_l0_files = 2, table_size = 8 * 1024, level1_max_bytes = 32 * 1024,
      sync = "none" })
    local v = string.rep("s", 100)
    for i = 1, 20000 do db:set(string.format("k%06d", i * 7919 % 20000), v) end
    bench.settle(db)
    local st = db:stats()
    assert.equal(0, st.imm_memtables)
    assert.equal(0, st.compaction_pending)
    assert.equal(0, st.memtable_keys)
  end)
end)

describe("tools/plain_loops.lua", function()
  it("prints each seed-profile row as ops/s and a share of the bare loop",
    function()
      local code, out, err = h.run(h.lunakv_cmd .. " run "
        .. h.quote(h.root .. "/tools/plain_loops.lua") .. " 1")
      assert.equal(0, code, err)
      local t = lines(out)
      assert.equal(4, #t, out)
      assert.matches("^1 rounds of 100000 ops, medians %(bare loop: %d+ ops/s%)$", t[1])
      for i, name in ipairs { "writes", "reads", "misses" } do
        local ops, share = t[i + 1]:match("^" .. name .. " +(%d+) ops/s  ([%d.]+) of bare$")
        assert.is_truthy(ops, t[i + 1])
        assert.is_true(tonumber(ops) > 0 and tonumber(share) > 0)
      end
    end)
end)
