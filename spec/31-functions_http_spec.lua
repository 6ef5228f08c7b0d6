-- spec/31-functions_http_spec.lua - stored functions on `lunakv node`
-- (issue 19; docs/functions.md, "On a node"; docs/http_api.md, "Stored
-- functions"), with real processes on 127.0.0.1: libraries put through
-- the replicated log and compiled by every node, calls on the leader and
-- forwarded by followers, one log entry per call, strict serializability
-- of concurrent read-modify-writes, effects (not scripts) replicated,
-- limits answered with the node still serving, libraries surviving
-- restarts and snapshot installs, read-only calls on followers.

local h = require "spec.helpers"
local hh = require "spec.http_helpers"
local cjson = hh.json

local nodes, single -- what the running test started; stopped in after_each

after_each(function()
  local ok, err = pcall(hh.stop_cluster, nodes)
  nodes = nil
  if single then pcall(hh.stop_node, single) end
  single = nil
  h.cleanup()
  if not ok then error(err, 0) end
end)

local COUNTER = [[
lunakv.register("incr", function(tx, args)
  local n = (tonumber(tx:get(args.key)) or 0) + (args.by or 1)
  tx:set(args.key, tostring(n))
  return n
end)
lunakv.register("peek", function(tx, args)
  return tx:get(args.key)
end, { read_only = true })
lunakv.register("halfway", function(tx, args)
  tx:set("half1", "x")
  tx:set("half2", "y")
  error("stopped halfway")
end)
lunakv.register("dice", function(tx, args)
  for i = 1, 20 do tx:set("dice" .. i, tostring(math.random())) end
  return true
end)
lunakv.register("spin", function(tx, args) while true do end end)
lunakv.register("hog", function(tx, args)
  tx:set("hog", "1")
  return #string.rep("x", 1 << 30)
end)
lunakv.register("echo", function(tx, args) return args end,
  { read_only = true })
lunakv.register("fn", function(tx, args) return function() end end)
]]

local function put_library(node, name, src)
  return hh.json_request("PUT", node.url .. "/functions/" .. name, src)
end

local function call(node, fn, args, query)
  return hh.json_request("POST", node.url .. "/call/" .. fn .. (query or ""),
    args ~= nil and cjson.encode(args) or nil)
end

local function last_index(node)
  return hh.status(node).last_index
end

local function follower_of(list)
  for _, n in ipairs(list) do
    if n ~= list.leader and hh.running(n) then return n end
  end
end

describe("PUT/GET/DELETE /functions #cluster", function()
  it("a library put through a follower is stored by every node, listed "
    .. "and served as source; calls run on the leader and through a "
    .. "follower (forwarded); DELETE removes it everywhere", function()
    nodes = hh.start_cluster { n = 3 }
    local leader = hh.wait_ready(nodes)
    local f = follower_of(nodes)
    local code, doc, text = put_library(f, "counter", COUNTER)
    assert.equal(200, code, text)
    assert.is_true(doc.ok)
    assert.is_number(doc.index)
    assert.equal("incr", doc.functions[1])
    hh.converged(nodes)
    for _, n in ipairs(nodes) do
      local c, list = hh.json_request("GET", n.url .. "/functions")
      assert.equal(200, c)
      assert.equal(1, #list.libraries)
      assert.equal("counter", list.libraries[1].name)
      assert.same({ "peek", "echo" }, list.libraries[1].read_only)
      local c2, lib = hh.json_request("GET", n.url .. "/functions/counter")
      assert.equal(200, c2)
      assert.equal(COUNTER, lib.source)
    end
    code, doc, text = call(leader, "incr", { key = "hits" })
    assert.equal(200, code, text)
    assert.equal(1, doc.result)
    assert.is_number(doc.index)
    code, doc, text = call(f, "incr", { key = "hits", by = 5 })
    assert.equal(200, code, text)
    assert.equal(6, doc.result)
    hh.converged(nodes)
    for _, n in ipairs(nodes) do
      local _, g = hh.get(n, "hits")
      assert.equal("6", g.value)
    end
    -- a call's writes are one log entry: a batch
    local _, sync = hh.json_request("GET", leader.url .. "/sync?from_index="
      .. string.format("%d", doc.index) .. "&limit=1")
    assert.equal("batch", sync.entries[1].op)
    -- a read-only call writes nothing: no index
    code, doc = call(f, "peek", { key = "hits" })
    assert.equal(200, code)
    assert.equal("6", doc.result)
    assert.is_nil(doc.index)
    -- deleted through a follower: gone everywhere
    code, _, text = hh.json_request("DELETE", f.url .. "/functions/counter")
    assert.equal(200, code, text)
    hh.converged(nodes)
    for _, n in ipairs(nodes) do
      local c, list = hh.json_request("GET", n.url .. "/functions")
      assert.equal(200, c)
      assert.same({}, list.libraries)
      assert.equal(404, (hh.json_request("GET", n.url .. "/functions/counter")))
    end
    code = call(leader, "incr", { key = "hits" })
    assert.equal(404, code)
  end)
end)

describe("POST /call", function()
  local node
  before_each(function()
    single = hh.start_node { leader = "self" }
    node = single
    local code, _, text = put_library(node, "counter", COUNTER)
    assert.equal(200, code, text)
  end)

  it("a function that fails halfway writes nothing: 400 with the message "
    .. "and line, no log entry", function()
    local before = last_index(node)
    local code, doc, text = call(node, "halfway", {})
    assert.equal(400, code, text)
    assert.is_false(doc.ok)
    assert.truthy(doc.error:find("counter:12: stopped halfway", 1, true), text)
    assert.equal(before, last_index(node))
    assert.equal(cjson.null, select(2, hh.get(node, "half1")).value)
    assert.equal(cjson.null, select(2, hh.get(node, "half2")).value)
  end)

  it("bad input is a 4xx and changes nothing", function()
    local before = last_index(node)
    local cases = {
      -- method, path, body, status, words
      { "PUT", "/functions/bad", 'lunakv.register("x", function() end',
        400, "bad:1:" },
      { "PUT", "/functions/bad", 'error("at load")', 400, "bad:1: at load" },
      { "PUT", "/functions/bad", "local x = 1", 400, "register" },
      { "PUT", "/functions/other", 'lunakv.register("incr", function() end)',
        400, "incr" },
      { "PUT", "/functions/b%20d", "x", 400, "library name" },
      { "PUT", "/functions/bad",
        'lunakv.register("x", function() end) while true do end',
        400, "SCRIPT_MAX_INSTRUCTIONS" },
      { "DELETE", "/functions/nope", nil, 404, "no library 'nope'" },
      { "GET", "/functions/nope", nil, 404, "no library 'nope'" },
      { "POST", "/functions/counter", "x", 405, "use GET, PUT or DELETE" },
      { "PUT", "/functions", "x", 405, "use GET" },
      { "GET", "/call/incr", nil, 405, "use POST" },
      { "POST", "/call/nope", "{}", 404, "unknown function 'nope'" },
      { "POST", "/call/no%20pe", "{}", 404, "unknown function" },
      { "POST", "/call/incr", "{bad", 400, "args are not JSON" },
      { "POST", "/call/fn", "{}", 400, "cannot be encoded as JSON" },
      { "POST", "/call/incr", "{}", 400, "function 'incr'" },
    }
    for _, c in ipairs(cases) do
      local code, doc, text = hh.json_request(c[1], node.url .. c[2], c[3])
      local what = c[1] .. " " .. c[2] .. ": " .. tostring(text)
      assert.equal(c[4], code, what)
      assert.is_false(doc.ok, what)
      assert.truthy(doc.error:find(c[5], 1, true), what)
    end
    assert.equal(before, last_index(node))
    local _, list = hh.json_request("GET", node.url .. "/functions")
    assert.equal(1, #list.libraries)
  end)

  it("any JSON body is the args; no body is nil", function()
    for _, v in ipairs { { 1, "two", { three = 3 } }, "s", 12, true } do
      local code, doc = call(node, "echo", v)
      assert.equal(200, code)
      assert.same(v, doc.result)
    end
    local code, doc, text = call(node, "echo", nil)
    assert.equal(200, code)
    assert.equal(cjson.null, doc.result, text)
  end)

  it("an infinite loop and a 1 GiB allocation end with an error naming "
    .. "the limit; nothing is written and the node keeps serving", function()
    local before = last_index(node)
    local code, doc, text = call(node, "spin", {})
    assert.equal(400, code, text)
    assert.equal("SCRIPT_MAX_INSTRUCTIONS", doc.limit)
    code, doc, text = call(node, "hog", {})
    assert.equal(400, code, text)
    assert.equal("SCRIPT_MAX_MEMORY", doc.limit)
    assert.equal(before, last_index(node))
    assert.equal(cjson.null, select(2, hh.get(node, "hog")).value)
    assert.equal(200, (hh.json_request("GET", node.url .. "/health")))
    code, doc = call(node, "incr", { key = "after" })
    assert.equal(200, code)
    assert.equal(1, doc.result)
  end)
end)

describe("stored functions' limits on a node", function()
  it("SCRIPT_MAX_WRITES from the settings bounds a call", function()
    single = hh.start_node { leader = "self",
      env = { SCRIPT_MAX_WRITES = "5" } }
    assert.equal(200, (put_library(single, "counter", COUNTER)))
    local before = last_index(single)
    local code, doc, text = call(single, "dice", {})
    assert.equal(400, code, text)
    assert.equal("SCRIPT_MAX_WRITES", doc.limit)
    assert.equal(before, last_index(single))
    assert.equal(200, (call(single, "incr", { key = "k" })))
  end)
end)

-- A client process: n calls of incr on key through url, one at a time;
-- prints "ok N" (the calls answered 200) and the first failure.
local CLIENT = [[
local http = require "socket.http"
local ltn12 = require "ltn12"
local url, n, key = arg[1], tonumber(arg[2]), arg[3]
local ok, first = 0, nil
for _ = 1, n do
  local body = '{"key": "' .. key .. '"}'
  local out = {}
  local r, code = http.request { method = "POST", url = url,
    headers = { ["content-length"] = tostring(#body) },
    source = ltn12.source.string(body), sink = ltn12.sink.table(out) }
  if r and code == 200 then ok = ok + 1
  elseif not first then first = tostring(code) .. " " .. table.concat(out) end
end
print("ok " .. ok)
if first then print(first) end
]]

-- Run a CLIENT process per { node, function name } of runs, all at once,
-- each making n calls of that function on key through its node; wait
-- for every one of them, then check that each had all n answered 200.
local function run_clients(runs, n, key)
  local dir = h.tmpdir()
  local script = dir .. "/client.lua"
  h.write_file(script, CLIENT)
  local procs = {}
  for _, r in ipairs(runs) do
    procs[#procs + 1] = { h.spawn("lua5.4 " .. script .. " " .. r[1].url
      .. "/call/" .. r[2] .. " " .. n .. " " .. key, dir) }
  end
  for _, p in ipairs(procs) do h.wait(p[1]) end
  for _, p in ipairs(procs) do
    assert.matches("^ok " .. n, h.read_file(p[2].out))
  end
end

describe("isolation #cluster", function()
  it("four clients running a read-modify-write concurrently, on the leader "
    .. "and through a follower, lose no update", function()
    nodes = hh.start_cluster { n = 3 }
    local leader = hh.wait_ready(nodes)
    local f = follower_of(nodes)
    assert.equal(200, (put_library(leader, "counter", COUNTER)))
    local N = 150
    run_clients({ { leader, "incr" }, { f, "incr" }, { leader, "incr" },
                  { f, "incr" } }, N, "c")
    hh.converged(nodes)
    for _, n in ipairs(nodes) do
      assert.equal(tostring(4 * N), select(2, hh.get(n, "c")).value)
    end
  end)

  it("concurrent calls' scans see the writes and deletions still waiting "
    .. "for their commit", function()
    -- push appends at the count of q: keys (a scan that missed a write
    -- still waiting would overwrite a key: fewer than 2N at the end);
    -- toggle moves one key between z:a and z:b (a scan that missed a
    -- deletion still waiting would see both, and raise)
    nodes = hh.start_cluster { n = 3 }
    local leader = hh.wait_ready(nodes)
    local f = follower_of(nodes)
    assert.equal(200, (put_library(leader, "queue", [[
      lunakv.register("push", function(tx)
        local n = 0
        for _ in tx:scan("q:", "q:~") do n = n + 1 end
        tx:set(string.format("q:%06d", n), "x")
        return n
      end)
      lunakv.register("toggle", function(tx)
        local seen = {}
        for k in tx:scan("z:", "z:~") do seen[#seen + 1] = k end
        assert(#seen <= 1, "two keys seen: " .. table.concat(seen, " "))
        if seen[1] == "z:a" then
          tx:delete("z:a")
          tx:set("z:b", "1")
        else
          if seen[1] then tx:delete(seen[1]) end
          tx:set("z:a", "1")
        end
        return seen[1] or "none"
      end)]])))
    local N = 100
    run_clients({ { leader, "push" }, { f, "push" }, { leader, "toggle" },
                  { f, "toggle" } }, N, "k")
    hh.converged(nodes)
    for _, n in ipairs(nodes) do
      local code, doc = hh.json_request("GET", n.url
        .. "/scan?start=q:&end=q:~&limit=1000")
      assert.equal(200, code)
      assert.equal(2 * N, #doc.items)
      code, doc = hh.json_request("GET", n.url .. "/scan?start=z:&end=z:~")
      assert.equal(200, code)
      assert.equal(1, #doc.items)
    end
  end)

  it("a read-write call that writes nothing, sent to a leader paused "
    .. "(SIGSTOP) while another was elected, never answers from the stale "
    .. "state", function()
    nodes = hh.start_cluster { n = 3 }
    local old = hh.wait_ready(nodes)
    -- a read-write function (not read_only) that happens to read only
    assert.equal(200, (put_library(old, "looker",
      'lunakv.register("look", function(tx, args) return tx:get(args.key) end)')))
    assert.equal(200, (hh.set(old, "k", "v1")))
    hh.converged(nodes)
    h.kill(old.pid, "STOP")
    local ok, err = pcall(function()
      local new = hh.wait_leader(nodes, 20, old)
      h.wait_until(function() return hh.set(new, "k", "v2") == 200 end, 15)
      -- the call waits in the paused node's socket with the new leader's
      -- messages; whichever it reads first, the answer is not v1
      local c = assert(hh.send_later(old, "POST", "/call/look",
        cjson.encode { key = "k" }))
      h.kill(old.pid, "CONT")
      local code, doc, answer = hh.read_answer(c)
      assert.equal(200, code, answer)
      assert.equal("v2", doc.result, "a stale result: " .. answer)
    end)
    h.kill(old.pid, "CONT")
    if not ok then error(err, 0) end
  end)

  it("math.random in a function leaves identical replicas (effects are "
    .. "replicated, not the script)", function()
    nodes = hh.start_cluster { n = 3 }
    local leader = hh.wait_ready(nodes)
    assert.equal(200, (put_library(leader, "counter", COUNTER)))
    for _ = 1, 3 do
      -- 20 writes, one log entry: a batch
      local before = last_index(leader)
      local code, doc, text = call(leader, "dice", {})
      assert.equal(200, code, text)
      assert.equal(before + 1, doc.index)
      local _, sync = hh.json_request("GET", leader.url .. "/sync?from_index="
        .. string.format("%d", doc.index))
      assert.equal(1, #sync.entries)
      assert.equal("batch", sync.entries[1].op)
    end
    hh.converged(nodes)
    local want
    for _, n in ipairs(nodes) do
      local code, scan = hh.json_request("GET", n.url
        .. "/scan?start=dice&end=dicf&limit=100")
      assert.equal(200, code)
      assert.equal(20, #scan.items)
      if want then assert.same(want, scan.items) else want = scan.items end
    end
  end)
end)

describe("libraries on restarts and snapshots #cluster", function()
  it("a library survives a restart of every node", function()
    nodes = hh.start_cluster { n = 3 }
    local leader = hh.wait_ready(nodes)
    assert.equal(200, (put_library(leader, "counter", COUNTER)))
    assert.equal(200, (call(leader, "incr", { key = "r" })))
    hh.converged(nodes)
    for _, n in ipairs(nodes) do hh.stop_member(n) end
    for _, n in ipairs(nodes) do hh.start_member(n) end
    hh.wait_ready(nodes)
    for _, n in ipairs(nodes) do
      local _, list = hh.json_request("GET", n.url .. "/functions")
      assert.equal("counter", list.libraries[1].name)
    end
    local code, doc, text = call(follower_of(nodes), "incr", { key = "r" })
    assert.equal(200, code, text)
    assert.equal(2, doc.result)
  end)

  it("a follower that installs a snapshot has the libraries (and not one "
    .. "deleted while it was down)", function()
    nodes = hh.start_cluster { n = 3,
      env = { LOG_COMPACTION_THRESHOLD = "5" } }
    local leader = hh.wait_ready(nodes)
    local victim = follower_of(nodes)
    assert.equal(200, (put_library(leader, "counter", COUNTER)))
    assert.equal(200, (put_library(leader, "gone",
      'lunakv.register("g", function() return 1 end)')))
    hh.converged(nodes)
    local _, had = hh.json_request("GET", victim.url .. "/functions")
    assert.equal(2, #had.libraries) -- the follower holds "gone" in its engine
    hh.stop_node(victim, "TERM")
    -- deleted while the follower is down: only the snapshot's wipe removes it
    local dcode, ddoc = hh.json_request("DELETE", leader.url
      .. "/functions/gone")
    assert.equal(200, dcode)
    for i = 1, 20 do assert.equal(200, (call(leader, "incr", { key = "s" .. i % 3 }))) end
    -- the log is cut past the deletion: the follower can only get a
    -- snapshot, which does not hold "gone"
    h.wait_until(function()
      return hh.status(leader).base_index >= ddoc.index
    end, 15, "log compaction past the deletion")
    hh.start_member(victim)
    h.wait_until(function()
      return hh.read_log(victim.log):find("snapshot installed", 1, true)
    end, 20, "the follower installs a snapshot")
    hh.converged(nodes)
    local _, list = hh.json_request("GET", victim.url .. "/functions")
    assert.equal(1, #list.libraries)
    assert.equal("counter", list.libraries[1].name)
    local code, doc, text = call(victim, "peek", { key = "s1" },
      "?consistent=false")
    assert.equal(200, code, text)
    assert.equal("7", doc.result)
  end)
end)

describe("read-only calls on followers #cluster", function()
  it("consistent=false runs on the follower over what it applied, also "
    .. "without a leader; by default it goes through the leader", function()
    nodes = hh.start_cluster { n = 3 }
    local leader = hh.wait_ready(nodes)
    local f = follower_of(nodes)
    assert.equal(200, (put_library(leader, "counter", COUNTER)))
    assert.equal(200, (call(leader, "incr", { key = "ro", by = 41 })))
    hh.converged(nodes)
    local code, doc = call(f, "peek", { key = "ro" })
    assert.equal(200, code)
    assert.equal("41", doc.result)
    -- with the other two gone no leader can exist: a local read-only
    -- call still answers, a linearizable one cannot
    for _, n in ipairs(nodes) do
      if n ~= f then hh.kill_member(n) end
    end
    code, doc = call(f, "peek", { key = "ro" }, "?consistent=false")
    assert.equal(200, code)
    assert.equal("41", doc.result)
    code = call(f, "peek", { key = "ro" })
    assert.equal(503, code)
    code = call(f, "incr", { key = "ro" }, "?consistent=false")
    assert.equal(503, code) -- read-write: always the leader's
  end)
end)

describe("the shell's FUNCTION and CALL with --url", function()
  it("load, list, call and delete a library on a node", function()
    single = hh.start_node { leader = "self" }
    local dir = h.tmpdir()
    h.write_file(dir .. "/ctr.lua", COUNTER)
    h.write_file(dir .. "/in", table.concat({
      "FUNCTION LOAD ctr " .. dir .. "/ctr.lua", "FUNCTION LIST",
      'CALL incr {"key": "a"}', 'CALL incr {"key": "a", "by": 2}',
      'CALL peek {"key": "a"}', "CALL echo", "FUNCTION DELETE ctr",
      "FUNCTION LIST", "" }, "\n"))
    local code, out, err = h.run(h.lunakv_cmd .. " shell --url "
      .. h.quote(single.url) .. " < " .. h.quote(dir .. "/in"))
    assert.equal("", err)
    assert.equal(0, code)
    assert.equal(table.concat({
      "ctr: incr, peek, halfway, dice, spin, hog, echo, fn",
      "ctr\tincr, peek (ro), halfway, dice, spin, hog, echo (ro), fn",
      "1", "3", '"3"', "null", "OK", "(empty)", "" }, "\n"), out)
    h.write_file(dir .. "/in2", "CALL nope\n")
    code, out, err = h.run(h.lunakv_cmd .. " shell --url "
      .. h.quote(single.url) .. " < " .. h.quote(dir .. "/in2"))
    assert.equal("", out)
    assert.equal(1, code)
    assert.truthy(err:find("unknown function 'nope'", 1, true), err)
  end)
end)
