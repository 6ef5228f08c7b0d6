-- spec/21-client_spec.lua - the client side of the node: core.http_request
-- and core.http_bench (c/net/loadgen.c) against a real node, the process
-- control functions orchestration uses (core.spawn, core.kill,
-- core.pid_alive), `lunakv shell --url` and `lunakv bench --url` end to
-- end. Timing is never asserted: figures only have to be there.

local h = require "spec.helpers"
local hh = require "spec.http_helpers"
local core = require "lunakv.core"
local cjson = require "cjson"

local LUNAKV = h.lunakv_cmd

-- A port nothing listens on: a node's, after the node stopped.
local function dead_url()
  local n = hh.start_node()
  hh.stop_node(n, "KILL")
  return n.url
end

local function wait_dead(pid)
  h.wait_until(function() return not core.pid_alive(pid) end, 10)
end

-- The node of the running describe block: with_node() starts it before the
-- block's tests and stops it after them.
local node
local function with_node()
  setup(function() node = hh.start_node() end)
  teardown(function()
    if node then hh.stop_node(node, "KILL") end
    node = nil
    h.cleanup()
  end)
end

-- fn(...) raises an error that holds msg (plain text).
local function assert_raises(msg, fn, ...)
  local err = h.error_of(fn, ...)
  assert.is_string(err, msg)
  assert.matches(msg, err, 1, true)
end

describe("core.http_request #http", function()
  with_node()

  it("returns the status and the body of any answer", function()
    local status, body = core.http_request("GET", node.url .. "/health")
    assert.equal(200, status)
    assert.same({ ok = true, role = "leader" },
      { ok = cjson.decode(body).ok, role = cjson.decode(body).role })
    status, body = core.http_request("POST", node.url .. "/set", "{bad")
    assert.equal(400, status)
    assert.matches("malformed JSON", body)
    status = core.http_request("GET", node.url .. "/nowhere")
    assert.equal(404, status)
  end)

  it("sends a body and headers, and is binary safe both ways", function()
    local status, body = core.http_request("POST", node.url .. "/set",
      cjson.encode { key = "k1", value = "v1" },
      { ["Content-Type"] = "application/json" })
    assert.equal(200, status)
    assert.is_true(cjson.decode(body).ok)
    local value = "a\0b\255\1" .. string.rep("z", 70000)
    status = core.http_request("PUT", node.url .. "/kv/bin%00key", value)
    assert.equal(200, status)
    status, body = core.http_request("get", node.url .. "/kv/bin%00key")
    assert.equal(200, status)
    assert.equal(value, body)
    status, body = core.http_request("GET", node.url .. "/get?key=k1", nil,
      nil, 5000)
    assert.equal(200, status)
    assert.equal("v1", cjson.decode(body).value)
  end)

  it("raises a clear error when the connection is refused", function()
    local url = dead_url()
    local err = h.error_of(core.http_request, "GET", url .. "/health")
    assert.matches("lunakv: io error: cannot connect to " .. url:gsub("%p", "%%%0")
      .. ": connection refused", err)
  end)

  it("raises when no answer comes in time", function()
    -- a listening socket that is never served: the connect succeeds (the
    -- kernel's backlog), the answer never comes
    local socket = require "socket"
    local srv = assert(socket.bind("127.0.0.1", 0))
    local _, port = srv:getsockname()
    local ok, err = pcall(core.http_request, "GET",
      "http://127.0.0.1:" .. port .. "/x", nil, nil, 200)
    srv:close()
    assert.is_false(ok)
    assert.matches("no answer from http://127.0.0.1:" .. port
      .. "/x within 200 ms", err)
  end)

  it("refuses bad arguments with clear errors", function()
    for _, case in ipairs {
      { { "FOO", node.url }, "unsupported HTTP method 'FOO'" },
      { { "GET", "ftp://x/" }, "not an http:// URL" },
      { { "GET", "http://" }, "expected http://HOST:PORT" },
      { { "GET", node.url, 5 }, "bad argument #3" },
      { { "GET", node.url, nil, "x" }, "bad argument #4" },
      { { "GET", node.url, nil, { 1 } }, "headers must map names to strings" },
      { { "GET", node.url, nil, { ["a b"] = "x" } }, "bad request header" },
      { { "GET", node.url, nil, { X = "a\r\nb" } }, "bad request header" },
      { { "GET", node.url, nil, nil, 0 }, "bad argument #5" },
    } do
      assert_raises(case[2], core.http_request, table.unpack(case[1], 1, 5))
    end
  end)
end)

describe("core.http_bench #http", function()
  with_node()

  it("runs N writes, then reads of what it wrote, with percentiles", function()
    local r = core.http_bench { url = node.url, ops = 300, connections = 4,
      key_space = 100, value_size = 50 }
    assert.equal(300, r.ops)
    assert.equal(300, r.writes)
    assert.equal(0, r.errors)
    assert.is_nil(r.first_error)
    assert.is_true(r.ops_per_sec > 0 and r.seconds > 0)
    assert.is_true(r.p50_us > 0 and r.p50_us <= r.p90_us
      and r.p90_us <= r.p99_us and r.p99_us <= r.max_us)
    -- sequential writes covered keys 0 .. 99: every read finds its key
    local code, doc = hh.get(node, string.format("%016d", 99))
    assert.equal(200, code)
    assert.equal(50, #doc.value)
    r = core.http_bench { urls = { node.url, node.url }, ops = 200,
      connections = 3, write_pct = 0, key_space = 100 }
    assert.equal(200, r.reads)
    assert.equal(0, r.errors)
  end)

  it("stops after a duration", function()
    local r = core.http_bench { url = node.url, seconds = 0.3, connections = 2,
      write_pct = 50 }
    assert.is_true(r.ops > 0)
    assert.equal(r.ops, r.reads + r.writes)
    assert.is_true(r.seconds >= 0.25)
  end)

  it("counts non-2xx answers as errors and keeps the first", function()
    -- the etcd gateway's routes do not exist on a lunakv node
    local r = core.http_bench { url = node.url, ops = 20, connections = 2,
      target = "etcd" }
    assert.equal(20, r.errors)
    assert.matches("^HTTP 404 from http://127.0.0.1:%d+: ", r.first_error)
  end)

  it("calls a stored function for each write with target call", function()
    local code = hh.json_request("PUT", node.url .. "/functions/benchincr",
      'lunakv.register("bincr", function(tx, args) '
      .. 'local v = tonumber(tx:get(args.key) or "0") + 1 '
      .. 'tx:set(args.key, tostring(v)) return v end)')
    assert.equal(200, code)
    -- keys no other test of this node writes (they hold values, not
    -- numbers)
    local from = 9000000000000000
    local r = core.http_bench { url = node.url, ops = 300, connections = 4,
      key_space = 10, key_offset = from, target = "call", fn = "bincr" }
    assert.same({ 300, 300, 0 }, { r.ops, r.writes, r.errors }, r.first_error)
    -- each call of the 300 incremented its key once, none twice or lost
    local sum = 0
    for k = from, from + 9 do
      local c, doc = hh.get(node, string.format("%016d", k))
      assert.equal(200, c)
      sum = sum + tonumber(doc.value)
    end
    assert.equal(300, sum)
    -- reads of a mixed load are /get, as for target lunakv
    r = core.http_bench { url = node.url, ops = 100, connections = 2,
      write_pct = 50, key_space = 10, key_offset = from, target = "call",
      fn = "bincr" }
    assert.equal(0, r.errors)
    assert.is_true(r.reads > 0 and r.writes > 0)
    -- a function the node does not know: every call is a 404
    r = core.http_bench { url = node.url, ops = 20, connections = 2,
      target = "call", fn = "nope" }
    assert.equal(20, r.errors)
    assert.matches("^HTTP 404 from http://127.0.0.1:%d+: ", r.first_error)
  end)

  it("raises when nothing can connect, and on bad options", function()
    local url = dead_url()
    assert.matches("cannot connect to .*connection refused",
      h.error_of(core.http_bench, { url = url, seconds = 5 }))
    for _, case in ipairs {
      { { url = node.url, secs = 1 }, "unknown option 'secs'" },
      { { url = node.url }, "give 'ops' or 'seconds'" },
      { { ops = 1 }, "'url' or 'urls' is required" },
      { { url = node.url, ops = 1, connections = 0 }, "option 'connections'" },
      { { url = node.url, ops = 1, write_pct = 101 }, "option 'write_pct'" },
      { { url = node.url, ops = 1, target = "redis" }, "option 'target'" },
      { { url = "ftp://x", ops = 1 }, "not an http:// URL" },
      { { url = node.url, ops = 1, key_size = 2, key_space = 1000 },
        "do not fit in 2 digits" },
    } do
      assert_raises(case[2], core.http_bench, case[1])
    end
  end)
end)

describe("core.spawn, core.kill, core.pid_alive", function()
  local dir, pids
  before_each(function()
    dir = h.tmpdir()
    pids = {}
  end)
  after_each(function()
    for _, pid in ipairs(pids) do
      core.kill(pid, "KILL")
      wait_dead(pid)
    end
    h.cleanup()
  end)
  local function spawn(argv, env)
    local pid = core.spawn(argv, dir .. "/log", env)
    pids[#pids + 1] = pid
    return pid
  end

  it("runs a program in the background with its output in the log", function()
    local pid = spawn { "sh", "-c", "echo out; echo err >&2; cat; echo \"$FOO\"" }
    wait_dead(pid) -- stdin is /dev/null: cat ends at once
    assert.equal("out\nerr\n\n", h.read_file(dir .. "/log"))
    pid = spawn({ "sh", "-c", "echo \"$FOO\"" }, { FOO = "bar=baz" })
    wait_dead(pid)
    assert.equal("out\nerr\n\nbar=baz\n", h.read_file(dir .. "/log"),
      "the log is appended to")
  end)

  it("gives the child its own session and no inherited descriptors", function()
    local keep = assert(io.open(dir .. "/open-file", "w")) -- an extra fd here
    local pid = spawn { "sh", "-c", "ls /proc/$$/fd; exec sleep 30" }
    keep:close()
    h.wait_until(function() return h.read_file(dir .. "/log") ~= "" end, 10)
    local fds = {}
    for fd in h.read_file(dir .. "/log"):gmatch("%d+") do fds[#fds + 1] = fd end
    table.sort(fds)
    assert.same({ "0", "1", "2" }, fds)
    local stat = h.read_file("/proc/" .. pid .. "/stat")
    local session = stat:match("^%d+ %b() %a %d+ %d+ (%d+)")
    assert.equal(tostring(pid), session)
  end)

  it("keeps the log and /dev/null apart when its own stdin/stdout are closed",
    function()
    -- open() hands out 0 and 1 then: the child's dup2s must not clobber
    -- one with the other (the log would get nothing)
    local script = h.prelude .. string.format([[
      local core = require "lunakv.core"
      local pid = core.spawn({ "sh", "-c", "echo out; echo err >&2; cat" },
        %q)
      while core.pid_alive(pid) do core.sleep(0.01) end
    ]], dir .. "/log")
    local f = dir .. "/closed.lua"
    h.write_file(f, script)
    local code, _, err = h.run(h.lua .. " " .. h.quote(f) .. " <&- >&-")
    assert.equal(0, code, err)
    assert.equal("out\nerr\n", h.read_file(dir .. "/log"))
  end)

  it("tells the working directory from the kernel, not $PWD", function()
    local code, out, err = h.run("cd / && PWD=/nonexistent " .. h.lua
      .. " -e " .. h.quote(h.prelude
        .. "io.write(require('lunakv.core').getcwd())"))
    assert.equal(0, code, err)
    assert.equal("/", out)
    local _, here = h.run("pwd -P")
    assert.equal(here:gsub("\n$", ""), core.getcwd())
  end)

  it("kills, and sees a process die", function()
    local pid = spawn { "sleep", "30" }
    assert.is_true(core.pid_alive(pid))
    assert.is_true(core.kill(pid, 0))
    assert.is_true(core.kill(pid, "SIGterm"))
    wait_dead(pid)
    local ok, msg = core.kill(pid, "TERM")
    assert.is_nil(ok)
    assert.equal("no such process", msg)
    assert.is_false(core.pid_alive(pid))
  end)

  it("treats a zombie that is not its child as dead", function()
    -- sh starts sleep 0.1 in the background and stops for 30 s without
    -- reaping it: once it exits, that grandchild is a zombie
    local sh = spawn { "sh", "-c", "sleep 0.1 & echo $!; exec sleep 30" }
    h.wait_until(function() return h.read_file(dir .. "/log") ~= "" end, 10)
    local child = tonumber(h.read_file(dir .. "/log"):match("%d+"))
    h.wait_until(function()
      local st = h.read_file("/proc/" .. child .. "/stat")
      return st:match("^%d+ %b() (%a)") == "Z"
    end, 10)
    assert.is_false(core.pid_alive(child))
    assert.is_true(core.pid_alive(sh))
  end)

  it("reports what cannot run, and refuses bad arguments", function()
    assert.matches("lunakv: cannot run 'no%-such%-program%-xyz': no such file "
      .. "or directory",
      h.error_of(core.spawn, { "no-such-program-xyz" }, dir .. "/log"))
    assert.matches("cannot open log file " .. dir .. "/no/such/log",
      h.error_of(core.spawn, { "true" }, dir .. "/no/such/log"), 1, true)
    for _, case in ipairs {
      { core.spawn, { {}, "x" }, "argv must hold the program" },
      { core.spawn, { { 1 }, "x" }, "argv[1] must be a string" },
      { core.spawn, { { "" }, "x" }, "non-empty" },
      { core.spawn, { { "true" }, "x", { ["A=B"] = "c" } }, "env names" },
      { core.kill, { 0, "TERM" }, "process id must be a positive integer" },
      { core.kill, { -1, "TERM" }, "process id must be a positive integer" },
      { core.kill, { 1, "BOGUS" }, "unknown signal 'BOGUS'" },
      { core.kill, { 1, 999 }, "signal number out of range" },
      { core.pid_alive, { 0 }, "process id must be a positive integer" },
    } do
      assert_raises(case[3], case[1], table.unpack(case[2], 1, 3))
    end
  end)
end)

describe("lunakv shell --url #http", function()
  with_node()
  local function shell(input, url)
    local f = os.tmpname()
    h.write_file(f, input)
    local code, out, err = h.run(LUNAKV .. " shell --url "
      .. h.quote(url or node.url) .. " < " .. h.quote(f))
    os.remove(f)
    return code, out, err
  end

  it("runs SET, GET, DELETE, SCAN and COUNT against the node", function()
    local code, out, err = shell(table.concat({
      "SET s1 one", "SET s2 two words", 'SET s3 "\\x00\\xff"', "GET s1",
      "GET s2", "GET s3", "GET missing", "DELETE s1", "GET s1",
      "SCAN s1 s9", "SCAN s - LIMIT 1", "COUNT s1 s9",
      "=db:get('s2')", "" }, "\n"))
    assert.equal("", err)
    assert.equal(0, code)
    local lines = {}
    for l in out:gmatch("([^\n]*)\n") do lines[#lines + 1] = l end
    assert.matches("^%d+$", lines[1])
    assert.equal(tonumber(lines[1]) + 1, tonumber(lines[2]))
    assert.same({ "one", "two words", '"\\0\\xff"', "(nil)" },
      { lines[4], lines[5], lines[6], lines[7] })
    assert.matches("^%d+$", lines[8])
    assert.same({ "(nil)", "s2\ttwo words", 's3\t"\\0\\xff"',
      "s2\ttwo words", "(more)", "2", '"two words"' },
      { table.unpack(lines, 9, 15) })
    -- the node has them
    local _, doc = hh.get(node, "s2")
    assert.equal("two words", doc.value)
  end)

  it("prints the node's STATUS and STATS", function()
    local code, out = shell("STATUS\nSTATS\n")
    assert.equal(0, code)
    assert.matches("\nrole +leader\n", out)
    assert.matches("\nleader +" .. node.url:gsub("%p", "%%%0") .. "\n", out)
    assert.matches("\ncommit_index +%d+\n", out)
    assert.matches("\nnode +" .. node.url:gsub("%p", "%%%0") .. "\n", out)
    assert.matches("\nsstable_count +%d+\n", out)
    assert.matches("\nrlog%.last_index +%d+\n", out)
  end)

  it("prints a node's refusal and a command without a route, and goes on", function()
    local code, out, err = shell(table.concat({
      'SET "\\xff\\xfflunakv/x" 1', "SNAPSHOT", "BATCH", "FLUSH",
      "GET k AT_SEQ 1", "SET after ok", "GET after", "" }, "\n"))
    assert.equal(1, code)
    assert.matches("lunakv: " .. node.url:gsub("%p", "%%%0")
      .. " answered 400: keys starting with", err)
    assert.matches("lunakv: SNAPSHOT is not available over HTTP", err, 1, true)
    assert.matches("lunakv: BATCH is not available over HTTP", err, 1, true)
    assert.matches("lunakv: FLUSH is not available over HTTP", err, 1, true)
    assert.matches("not available over HTTP", err)
    assert.matches("lunakv: 5 command%(s%) failed", err)
    assert.matches("\nok\n$", out)
  end)

  it("fails at once when the node cannot be reached", function()
    local url = dead_url()
    local code, out, err = shell("GET a\n", url)
    assert.equal(1, code)
    assert.equal("", out)
    assert.matches("^lunakv: cannot reach the node: io error: cannot connect "
      .. "to " .. url:gsub("%p", "%%%0") .. ": connection refused\n$", err)
    h.assert_exit(2, "give a data directory or %-%-url, not both",
      h.run(LUNAKV .. " shell /tmp/x --url " .. h.quote(url)))
    h.assert_exit(1, "not a node URL", h.run(LUNAKV .. " shell --url ftp://x"))
  end)
end)

describe("lunakv bench --url #http", function()
  with_node()

  it("prints ops/s and p50/p99 per workload", function()
    local code, out, err = h.run(LUNAKV .. " bench --url " .. h.quote(node.url)
      .. " -n 200 --connections 4 -q")
    assert.equal("", err)
    assert.equal(0, code)
    assert.matches("workload +ops +errors +ops/s +p50 ms +p90 ms +p99 ms", out)
    assert.matches("\nwrite +200 +0 +[%d,]+ +[%d.]+ +[%d.]+ +[%d.]+", out)
    assert.matches("\nread +200 +0 +[%d,]+ +[%d.]+ +[%d.]+ +[%d.]+", out)
  end)

  it("prints one JSON object with --json", function()
    local code, out = h.run(LUNAKV .. " bench --url " .. h.quote(node.url)
      .. "," .. h.quote(node.url) .. " -n 100 --connections 2 -w mix30 --json")
    assert.equal(0, code)
    local doc = cjson.decode(out)
    assert.equal(2, #doc.read_urls)
    assert.equal(1, #doc.results)
    local r = doc.results[1]
    assert.same({ "mix30", 30, 100, 0 }, { r.workload, r.write_pct, r.ops,
      r.errors })
    assert.is_true(r.ops_per_sec > 0 and r.p99_us >= r.p50_us)
  end)

  it("calls a stored function with --target call --function", function()
    local code = hh.json_request("PUT", node.url .. "/functions/cliincr",
      'lunakv.register("cincr", function(tx, args) '
      .. 'tx:set(args.key, "1") return 1 end)')
    assert.equal(200, code)
    local out, err
    code, out, err = h.run(LUNAKV .. " bench --url " .. h.quote(node.url)
      .. " -w write -n 50 --connections 2 --target call --function cincr --json")
    assert.equal(0, code, err)
    local doc = cjson.decode(out)
    assert.same({ "call", "cincr" }, { doc.target, doc["function"] })
    assert.same({ 50, 0 }, { doc.results[1].ops, doc.results[1].errors })
    code, out = h.run(LUNAKV .. " bench --url " .. h.quote(node.url)
      .. " -w write -n 10 --connections 2 --target call --function cincr -q")
    assert.equal(0, code)
    assert.matches("target call, function cincr", out, 1, true)
  end)

  it("refuses bad input", function()
    local url = dead_url()
    h.assert_exit(1, "cannot connect to .*: connection refused",
      h.run(LUNAKV .. " bench --url " .. h.quote(url)))
    h.assert_exit(2, "unknown HTTP workload 'nope'", h.run(LUNAKV
      .. " bench --url " .. h.quote(node.url) .. " -w writes,nope"))
    h.assert_exit(2, "%-%-connections is an option of bench %-%-url",
      h.run(LUNAKV .. " bench --connections 4 -n 10"))
  end)

  it("fails, naming the limit, with more connections than descriptors", function()
    local code, _, err = h.run("ulimit -n 100 && " .. LUNAKV .. " bench --url "
      .. h.quote(node.url) .. " --connections 50 -n 10 -q")
    assert.equal(1, code)
    assert.matches("lunakv: workload write: invalid argument: 50 connections "
      .. "need as many file descriptors; the limit is 100 open files %(ulimit "
      .. "%-n%).*use at most 36 connections", err)
  end)
end)
