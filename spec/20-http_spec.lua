-- spec/20-http_spec.lua - `lunakv node` over HTTP: every route and every
-- documented status (docs/http_api.md; 409, 410, 500 and the 503s too,
-- each provoked), awkward keys and values, binary values through /kv, and
-- the replication log across restarts and kill -9 (docs/replication.md).
-- Real node processes on 127.0.0.1; the 500s through a fault env.

local h = require "spec.helpers"
local hh = require "spec.http_helpers"
local cjson = hh.json

local socket = require "socket"

local node
local more = {} -- other nodes a test started

local function post(path, body) return hh.json_request("POST", node.url .. path, body) end
local function get(path) return hh.json_request("GET", node.url .. path) end

after_each(function()
  if node and node.pid then hh.stop_node(node, "KILL") end
  for i = #more, 1, -1 do
    if more[i].pid then hh.stop_node(more[i], "KILL") end
    more[i] = nil
  end
  node = nil
  h.cleanup()
end)

-- Nothing listens there (port 1 is privileged and unused on test hosts).
local DEAD = "http://127.0.0.1:1"

-- An error answer: code, {"ok": false, "error": ...} naming `want`.
local function refused(code, doc, text, want_code, want, what)
  assert.equal(want_code, code, what .. " -> " .. tostring(text))
  assert.is_table(doc, what .. ": not JSON: " .. tostring(text))
  assert.is_false(doc.ok, what)
  assert.matches(want, doc.error, 1, true)
end

  -- A leader whose followers die keeps leading until CheckQuorum steps
  -- it down, one election timeout later: made long here, so that the
  -- writes it takes meanwhile can be watched.
  local function lonely_leader(args)
    local all = { "--election-timeout-ms", "60000" }
    for _, a in ipairs(args) do all[#all + 1] = a end
    -- the followers first: with this timeout, the hinted first node's
    -- first campaign must reach them
    local c = hh.start_cluster { n = 3, args = all, down = { 1 },
                                 ready = false }
    hh.start_member(c[1])
    local leader = hh.wait_ready(c)
    for _, n in ipairs(c) do
      if n ~= leader then
        hh.kill_member(n)
        more[#more + 1] = n
      end
    end
    return leader
  end

-- A raw keep-alive connection: send a request, read its response.
local function raw_connect(port)
  local c = assert(socket.tcp())
  c:settimeout(20)
  assert(c:connect("127.0.0.1", port))
  return c
end

local function raw_send(c, method, path, body)
  body = body or ""
  assert(c:send(string.format("%s %s HTTP/1.1\r\nHost: x\r\n"
    .. "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
    method, path, #body, body)))
end

local function raw_read(c)
  local line = assert(c:receive("*l"))
  local code = tonumber(line:match("^HTTP/1%.%d (%d%d%d)"))
  local len = 0
  while true do
    local l = assert(c:receive("*l"))
    if l == "" then break end
    local n = l:lower():match("^content%-length:%s*(%d+)")
    if n then len = tonumber(n) end
  end
  local body = len > 0 and assert(c:receive(len)) or ""
  local okj, doc = pcall(cjson.decode, body)
  return code, okj and doc or nil, body
end

describe("lunakv node #http", function()
  describe("POST /set, GET /get, POST /delete", function()
    it("writes, reads and deletes a key, with the log index in each reply", function()
      node = hh.start_node()
      local code, doc = hh.set(node, "greeting", "hello world")
      assert.equal(200, code)
      -- index 1 is the leader's no-op (every term starts with one)
      assert.same({ ok = true, index = 2 }, doc)
      code, doc = hh.get(node, "greeting")
      assert.equal(200, code)
      assert.same({ key = "greeting", value = "hello world" }, doc)
      code, doc = post("/delete", '{"key": "greeting"}')
      assert.equal(200, code)
      assert.same({ ok = true, index = 3 }, doc)
      code, doc = hh.get(node, "greeting")
      assert.equal(200, code)
      assert.equal(cjson.null, doc.value)
      code, doc = hh.get(node, "never-set")
      assert.equal(200, code)
      assert.equal(cjson.null, doc.value)
    end)

    it("keeps unicode and awkward characters in keys and values", function()
      node = hh.start_node()
      local cases = hh.awkward_pairs {
        { "emoji 😀", "🎉 party" },
        { "a&b=c?d#e%f+g h", "plus+space %20" },
      }
      for _, c in ipairs(cases) do
        local code, doc = hh.set(node, c[1], c[2])
        assert.equal(200, code, tostring(doc and doc.error))
      end
      for _, c in ipairs(cases) do
        local code, doc = hh.get(node, c[1])
        assert.equal(200, code)
        assert.equal(c[1], doc.key)
        assert.equal(c[2], doc.value)
      end
      -- escapes written by hand: \u00e9, a surrogate pair, \/ and \u0000
      local code = post("/set",
        '{"key": "esc\\u00e9\\uD83D\\uDE00\\/", "value": "\\u0000\\b\\f"}')
      assert.equal(200, code)
      local _, doc = hh.get(node, "escé😀/")
      assert.equal("\0\b\f", doc.value)
    end)
  end)

  describe("GET /scan", function()
    it("lists [start, end] in order with a limit and says when there is more", function()
      node = hh.start_node()
      for i = 1, 12 do hh.set(node, string.format("k%02d", i), "v" .. i) end
      hh.set(node, "z", "last")
      local code, doc = get("/scan?start=k03&end=k07")
      assert.equal(200, code)
      assert.equal(5, #doc.items)
      assert.same({ key = "k03", value = "v3" }, doc.items[1])
      assert.same({ key = "k07", value = "v7" }, doc.items[5])
      assert.is_false(doc.more)
      code, doc = get("/scan?start=k01&limit=3")
      assert.equal(200, code)
      assert.equal(3, #doc.items)
      assert.is_true(doc.more)
      code, doc = get("/scan?start=k11&limit=3")
      assert.equal(200, code)
      assert.equal(3, #doc.items) -- k11, k12, z
      assert.is_false(doc.more)
      code, doc = get("/scan")
      assert.equal(200, code)
      assert.equal(13, #doc.items) -- the internal applied-index key is hidden
      assert.equal("z", doc.items[13].key)
      code, doc = get("/scan?limit=1000") -- the largest limit is taken
      assert.equal(200, code)
      assert.equal(13, #doc.items)
      assert.is_false(doc.more)
      -- start above end: an empty range, as in db:scan and the shell
      code, doc = get("/scan?start=z&end=a")
      assert.equal(200, code)
      assert.same({}, doc.items)
      assert.is_false(doc.more)
    end)

    it("returns non-UTF-8 bytes as base64 with an encoding field", function()
      node = hh.start_node()
      local code = hh.request("PUT", node.url .. "/kv/bin", "\255\0\1")
      assert.equal(200, code)
      local _, doc = get("/scan?start=bin&end=bin")
      assert.same({ { key = "bin", value = "/wAB", value_encoding = "base64" } },
        doc.items)
      _, doc = hh.get(node, "bin")
      assert.same({ key = "bin", value = "/wAB", value_encoding = "base64" }, doc)
    end)
  end)

  describe("PUT, GET, DELETE /kv/{key}", function()
    it("stores raw binary values under URL-decoded keys", function()
      node = hh.start_node()
      local bytes = {}
      for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
      local value = table.concat(bytes):rep(64)
      local path = node.url .. "/kv/" .. hh.urlencode("dir/fïle\0x")
      local code, body = hh.request("PUT", path, value)
      assert.equal(200, code)
      assert.same({ ok = true, index = 2 }, cjson.decode(body))
      local hdrs
      code, body, hdrs = hh.request("GET", path)
      assert.equal(200, code)
      assert.equal("application/octet-stream", hdrs["content-type"])
      assert.equal(value, body)
      -- the same key through the JSON route
      local _, doc = hh.get(node, "dir/fïle\0x")
      assert.equal("dir/fïle\0x", doc.key)
      code = hh.request("DELETE", path)
      assert.equal(200, code)
      code, body = hh.request("GET", path)
      assert.equal(404, code)
      assert.same({ ok = false, error = "key not found" }, cjson.decode(body))
    end)
  end)

  describe("GET /status, /stats, /health, /metrics", function()
    it("report role, indexes, engine stats and Prometheus counters", function()
      node = hh.start_node()
      hh.set(node, "a", "1")
      local code, doc = get("/health")
      assert.equal(200, code)
      assert.same({ ok = true, role = "leader", leader = node.url }, doc)
      doc = hh.status(node)
      assert.equal(node.url, doc.leader)
      assert.equal(node.url, doc.my_url)
      assert.equal("leader", doc.role)
      assert.equal(1, doc.term)
      assert.equal(node.url, doc.vote)
      assert.same({ node.url }, doc.voters)
      assert.same({}, doc.learners)
      assert.equal(2, doc.commit_index) -- the no-op and the write
      assert.equal(2, doc.last_index)
      assert.same({ node.url }, doc.nodes)
      code, doc = get("/stats")
      assert.equal(200, code)
      assert.is_number(doc.seq)
      assert.is_number(doc.memtable_keys)
      assert.equal(7, #doc.sstables_per_level)
      assert.equal(2, doc.rlog.last_index)
      local text, hdrs
      code, text, hdrs = hh.request("GET", node.url .. "/metrics")
      assert.equal(200, code)
      assert.matches("^text/plain", hdrs["content-type"])
      assert.matches('lunakv_http_requests_total{route="/set",code="200"} 1',
        text, 1, true)
      assert.matches('lunakv_http_request_duration_seconds_count{route="/set"} 1',
        text, 1, true)
      assert.matches("lunakv_commit_index 2", text, 1, true)
      assert.matches("lunakv_raft_elections_won_total 1", text, 1, true)
      assert.matches("lunakv_raft_is_leader 1", text, 1, true)
      assert.matches("lunakv_engine_seq %d+", text)
    end)
  end)

  describe("bad input", function()
    it("gets its 4xx with a JSON error naming the problem, and writes nothing", function()
      node = hh.start_node { args = { "--max-body-bytes", "1024" } }
      local cases = hh.bad_requests {
        { "POST", "/set", '{"key": "a", "value": "b"} x', 400, "trailing" },
        { "POST", "/set", '{"key": "\\uD800", "value": "b"}', 400, "surrogate" },
        { "POST", "/set", '{"key": "\255", "value": "b"}', 400, "UTF-8" },
        { "POST", "/set", '{"key": "a", "value": ["b"]}', 400, "not an array" },
        { "POST", "/set", '{"key": "a", "key": "b", "value": "c"}', 400, "duplicate" },
        { "GET", "/scan?limit=0", nil, 400, "limit must be" },
        { "GET", "/scan?limit=1001", nil, 400, "limit must be" },
        { "GET", "/scan?limit=ten", nil, 400, "limit must be" },
        { "PUT", "/kv/big", ("x"):rep(1025), 413, "limit is 1024" },
      }
      for _, c in ipairs(cases) do hh.assert_refused(node, c) end
      local st = hh.status(node)
      assert.equal(1, st.last_index) -- the leader's no-op only
      local _, doc = get("/scan")
      assert.same({}, doc.items)
      local code, _, hdrs = hh.request("GET", node.url .. "/set")
      assert.equal(405, code)
      assert.equal("POST", hdrs.allow)
    end)

    it("answers a body over the default 4 MiB limit with 413", function()
      node = hh.start_node()
      local big = ("v"):rep(4 * 1024 * 1024 + 1)
      local code, doc = hh.json_request("PUT", node.url .. "/kv/big", big)
      assert.equal(413, code)
      assert.matches("limit is 4194304", doc.error, 1, true)
      code = hh.request("PUT", node.url .. "/kv/big", ("v"):rep(4 * 1024 * 1024))
      assert.equal(200, code)
      assert.equal(2, hh.status(node).last_index)
    end)

    it("answers a far larger body with 413 too (refused by evhttp)", function()
      node = hh.start_node { args = { "--max-body-bytes", "1024" } }
      local code = hh.request("PUT", node.url .. "/kv/huge", ("v"):rep(3 * 1024 * 1024))
      assert.equal(413, code)
      assert.equal(1, hh.status(node).last_index)
    end)
  end)

  describe("a node that does not lead", function()
    it("answers writes 503 no leader (Retry-After) when no leader can be "
      .. "elected, and serves reads", function()
      -- two voters, one of them dead: no majority, no leader, ever
      node = hh.start_node { others = { DEAD } }
      local role = hh.status(node).role
      assert.is_true(role == "candidate" or role == "follower", role)
      for _, w in ipairs {
        { "POST", "/set", '{"key": "a", "value": "b"}' },
        { "POST", "/delete", '{"key": "a"}' },
        { "PUT", "/kv/a", "b" },
        { "DELETE", "/kv/a" },
        { "GET", "/get?key=a&consistent=true" },
        { "GET", "/scan?consistent=true" },
        { "GET", "/kv/a?consistent=true" },
      } do
        local code, text, hdrs = hh.request(w[1], node.url .. w[2], w[3])
        local doc = cjson.decode(text)
        assert.equal(503, code)
        assert.is_false(doc.ok)
        assert.equal("no leader", doc.error)
        assert.equal("1", hdrs["retry-after"])
      end
      assert.equal(0, hh.status(node).last_index)
      local code, doc = hh.get(node, "a")
      assert.equal(200, code)
      assert.equal(cjson.null, doc.value)
    end)

    it("answers 503 to a request forwarded twice instead of forwarding it "
      .. "again, and parks a once-forwarded one while it knows no leader",
      function()
      node = hh.start_node { others = { DEAD } }
      -- forwarded by two nodes already (the leader moved twice): no third
      -- hop, whatever this node knows
      local code, doc, text = hh.json_call("POST", node.url .. "/set",
        '{"key": "a", "value": "b"}',
        { ["x-lunakv-forwarded-by"] = DEAD .. ", http://127.0.0.1:2" })
      refused(code, doc, text, 503, "not the leader", "a twice marked request")
      -- forwarded once, here where no leader is known: it waits an election
      -- timeout (1 s) for one, then fails as an unforwarded one does
      local t0 = socket.gettime()
      code, doc, text = hh.json_call("POST", node.url .. "/set",
        '{"key": "a", "value": "b"}', { ["x-lunakv-forwarded-by"] = DEAD })
      refused(code, doc, text, 503, "no leader", "a marked request")
      assert.is_true(socket.gettime() - t0 >= 0.9, "it did not wait")
      assert.equal(0, hh.status(node).last_index)
    end)

    it("a leader without a majority answers 503, never success", function()
      node = lonely_leader { "--write-timeout-ms", "200" }
      local code, doc = hh.set(node, "a", "b")
      assert.equal(503, code)
      assert.matches("outcome unknown", doc.error, 1, true)
      local st = hh.status(node)
      assert.equal(2, st.last_index)   -- the term's no-op and the write ...
      assert.equal(1, st.commit_index) -- ... the write not committed
      local _
      _, doc = hh.get(node, "a")
      assert.equal(cjson.null, doc.value)
    end)

    it("refuses writes past --max-uncommitted-bytes without writing them",
       function()
      node = lonely_leader { "--write-timeout-ms", "200",
                             "--max-uncommitted-bytes", "1000" }
      local code = hh.set(node, "a", ("x"):rep(600))
      assert.equal(503, code) -- no quorum, but held: 601 bytes + 160
      local doc
      code, doc = hh.set(node, "b", ("y"):rep(600))
      assert.equal(503, code)
      assert.matches("761 bytes of writes are waiting for a majority",
        doc.error, 1, true)
      assert.equal(2, hh.status(node).last_index) -- the no-op and "a" only
    end)

    it("counts each held write's bookkeeping against the bound: tiny "
      .. "writes are bounded too", function()
      node = lonely_leader { "--write-timeout-ms", "100",
                             "--max-uncommitted-bytes", "1000" }
      -- 1 byte of key each, 161 bytes counted: the seventh is refused
      for _ = 1, 6 do
        local code, doc = hh.set(node, "k", "")
        assert.equal(503, code)
        assert.matches("outcome unknown", doc.error, 1, true)
      end
      local code, doc = hh.set(node, "k", "")
      assert.equal(503, code)
      assert.matches("966 bytes of writes are waiting for a majority",
        doc.error, 1, true)
      assert.equal(7, hh.status(node).last_index) -- the no-op and six
    end)
  end)

  describe("the replication log", function()
    it("survives a clean restart with the data", function()
      node = hh.start_node()
      for i = 1, 20 do hh.set(node, "k" .. i, "v" .. i) end
      hh.request("DELETE", node.url .. "/kv/k3")
      local ok, how, code = hh.stop_node(node, "TERM")
      assert.is_true(ok, how .. " " .. tostring(code))
      assert.matches("received SIGTERM", h.read_file(node.log), 1, true)
      local size = h.file_size(node.dir .. "/replication.log")
      assert.is_true(size > 40)
      node = hh.restart(node)
      -- the restarted node leads a new term, whose no-op is index 23
      local st = h.wait_until(function()
        local x = hh.status(node)
        return x.commit_index == 23 and x
      end, 10)
      assert.equal(23, st.last_index)
      assert.equal(2, st.term)
      assert.equal("v20", select(2, hh.get(node, "k20")).value)
      assert.equal(cjson.null, select(2, hh.get(node, "k3")).value)
      local code2, doc = hh.set(node, "after", "restart")
      assert.equal(200, code2)
      assert.equal(24, doc.index)
    end)

    it("keeps every acknowledged write through kill -9 #crash", function()
      node = hh.start_node()
      local acked = {}
      for i = 1, 200 do
        local code, doc = hh.set(node, "key" .. i, ("x"):rep(i))
        if code == 200 then acked[#acked + 1] = { i, doc.index } end
      end
      assert.equal(200, #acked)
      hh.stop_node(node, "KILL")
      node = hh.restart(node)
      assert.equal(202, hh.status(node).last_index) -- two no-ops
      for _, a in ipairs(acked) do
        local _, doc = hh.get(node, "key" .. a[1])
        assert.equal(("x"):rep(a[1]), doc.value)
      end
    end)

    it("replays the log into an engine that lost its data", function()
      node = hh.start_node()
      for i = 1, 10 do hh.set(node, "r" .. i, tostring(i)) end
      hh.stop_node(node, "TERM")
      h.rm_rf(node.dir .. "/db") -- the log is the durable record
      node = hh.restart(node)
      -- the engine started from nothing (a single node may have applied
      -- its new term's no-op, and all before it, by the time it says so)
      assert.matches("applied 0 %-> %d+", h.read_file(node.log))
      -- the new term's no-op commits, and everything before it with it
      hh.wait_value(node, "r7", "7")
      assert.equal(12, hh.status(node).applied_index)
    end)

    it("cuts a torn tail at start-up and keeps what precedes it", function()
      node = hh.start_node()
      for i = 1, 5 do hh.set(node, "t" .. i, "v") end
      hh.stop_node(node, "TERM")
      local path = node.dir .. "/replication.log"
      local good = h.file_size(path)
      local f = assert(io.open(path, "ab"))
      f:write("\40\0\0\0garbage") -- a frame header promising more bytes
      f:close()
      node = hh.restart(node)
      assert.matches("cut 11 byte", h.read_file(node.log), 1, true)
      -- cut back to what was good, then the new term's no-op (41 bytes:
      -- length and checksum 8, the version 2 payload's fixed 33) and
      -- the MiB of zeros written ahead of it
      assert.equal(good + 41 + 1048576, h.file_size(path))
      -- 6 entries survive (the first no-op, 5 writes), and the new term's
      -- no-op is 7
      assert.equal(7, hh.status(node).last_index)
      assert.equal(8, select(2, hh.set(node, "t6", "v")).index)
    end)
  end)

  describe("the internal routes", function()
    it("answers a malformed /raft body 400 and steps nothing", function()
      node = hh.start_node()
      hh.set(node, "a", "1")
      for _, body in ipairs { "x", "\255\0\0\0", ("\0"):rep(9) } do
        local code, doc, text = hh.json_call("POST", node.url .. "/raft",
          body, { ["content-type"] = "application/octet-stream" })
        refused(code, doc, text, 400, "bad message", "/raft " .. #body)
      end
      local st = hh.status(node)
      assert.equal("leader", st.role)
      assert.equal(1, st.term)
      assert.equal("1", select(2, hh.get(node, "a")).value)
    end)

    it("answers /sync 410 for entries compacted into a snapshot", function()
      node = hh.start_node { args = { "-s", "LOG_COMPACTION_THRESHOLD=5" } }
      for i = 1, 12 do assert.equal(200, (hh.set(node, "k" .. i, "v"))) end
      local st = h.wait_until(function()
        local s = hh.status(node)
        return s.base_index > 0 and s
      end, 20, function() return hh.read_log(node.log) end)
      local code, doc, text = hh.json_request("GET", node.url ..
        "/sync?from_index=1")
      refused(code, doc, text, 410, "compacted into a snapshot", "/sync")
      assert.equal(st.base_index, doc.base_index)
      code, doc = hh.json_request("GET", node.url ..
        string.format("/sync?from_index=%d", st.base_index + 1))
      assert.equal(200, code)
      assert.equal(st.base_index + 1, doc.entries[1].index)
    end)
  end)

  describe("a failing replication log (through a fault env)", function()
    it("answers 500 when the log's fdatasync fails, and every write after it, "
      .. "applying none", function()
      -- the log's second fdatasync: the first is its header's, at start
      node = hh.start_node { fault = "sync 2 EIO replication.log" }
      local code, doc, text = hh.set(node, "a", "1")
      refused(code, doc, text, 500, "the replication log failed: io error: "
        .. "fdatasync", "the write whose sync failed")
      assert.matches("replication.log", doc.error, 1, true)
      -- sticky: nothing later is written or acknowledged
      for i, w in ipairs {
        { "POST", "/set", '{"key": "b", "value": "2"}' },
        { "POST", "/delete", '{"key": "a"}' },
        { "PUT", "/kv/c", "3" },
      } do
        code, doc, text = hh.json_request(w[1], node.url .. w[2], w[3])
        refused(code, doc, text, 500, "fdatasync", "write " .. i .. " after it")
      end
      local st = hh.status(node)
      assert.equal(0, st.commit_index)
      assert.equal(0, st.applied_index)
      assert.equal(0, st.durable_index)
      for _, k in ipairs { "a", "b", "c" } do
        assert.equal(cjson.null, select(2, hh.get(node, k)).value)
      end
      assert.equal(200, (hh.request("GET", node.url .. "/health")))
    end)

    it("answers 500 for a write the log could not write, and takes the next "
      .. "(a failed write is not sticky)", function()
      -- the log's fourth write: the first is its header's, at start,
      -- the second the MiB of zeros written ahead with it
      -- (docs/replication.md, "Space written ahead"), the third the
      -- first term's no-op
      node = hh.start_node { fault = "write 4 ENOSPC replication.log" }
      local code, doc, text = hh.set(node, "a", "1")
      refused(code, doc, text, 500, "io error: write", "the failed write")
      assert.matches("No space left on device", doc.error, 1, true)
      -- the node rejoins once its log is durable again (a moment: until
      -- then 503 "no leader", nothing written)
      h.wait_until(function()
        code, doc, text = hh.set(node, "b", "2")
        assert.is_true(code == 200 or (code == 503 and doc.error == "no leader"),
          text)
        return code == 200
      end, 10)
      -- index 2 was not used up: the core, reopened over the log as it
      -- is, leads a new term whose no-op takes it
      assert.same({ ok = true, index = 3 }, doc)
      assert.equal(cjson.null, select(2, hh.get(node, "a")).value)
      assert.equal("2", select(2, hh.get(node, "b")).value)
    end)
  end)

  describe("stopping", function()
    it("answers 503 \"shutting down\" to a write that arrives while it "
      .. "drains, and answers the write in flight", function()
      node = lonely_leader { "--write-timeout-ms", "4000" }
      local idle = raw_connect(node.port)
      raw_send(idle, "GET", "/health")
      assert.equal(200, (raw_read(idle)))
      -- a write that waits for a majority that never comes
      local held = raw_connect(node.port)
      raw_send(held, "POST", "/set", '{"key": "held", "value": "1"}')
      h.wait_until(function()
        return hh.metric(node, "lunakv_rlog_last_index") >= 2 -- no-op, held
      end, 10)
      h.kill(node.pid, "TERM")
      h.wait_until(function()
        return hh.read_log(node.log):find("received SIGTERM", 1, true)
      end, 10, function() return hh.read_log(node.log) end)
      -- the listener is gone; a connection already open is still served
      raw_send(idle, "POST", "/set", '{"key": "late", "value": "1"}')
      local code, doc, text = raw_read(idle)
      refused(code, doc, text, 503, "the node is shutting down", "a late write")
      code, doc, text = raw_read(held)
      refused(code, doc, text, 503, "outcome unknown", "the write in flight")
      idle:close()
      held:close()
      -- it stops by itself once both are answered
      local ok, how, exit = hh.wait_exit(node)
      assert.is_true(ok, tostring(how) .. " " .. tostring(exit))
    end)
  end)

  describe("start-up", function()
    it("listens on port 0 and logs the port it got", function()
      local dir = h.tmpdir()
      local pid, p = h.spawn(table.concat({ h.lua, h.quote(h.bin), "node", "0",
        h.quote(dir .. "/n"), "http://127.0.0.1:1", "http://127.0.0.1:1" }, " "))
      local port = h.wait_until(function()
        return hh.read_log(p.err):match("listening on 127%.0%.0%.1:(%d+)")
      end, 20, function() return hh.read_log(p.err) end)
      node = { pid = pid, url = "http://127.0.0.1:" .. port }
      assert.equal(200, (hh.request("GET", node.url .. "/health")))
      assert.equal("leader", hh.status(node).role)
    end)

    it("refuses arguments that name no node of its own", function()
      local code, _, err = h.run(table.concat({ h.lua, h.quote(h.bin), "node",
        "8123", "/tmp/x", "http://127.0.0.1:8000", "http://127.0.0.1:8000" }, " "))
      assert.equal(1, code)
      assert.matches("no URL in NODE_URLS has port 8123", err, 1, true)
      code, _, err = h.run(table.concat({ h.lua, h.quote(h.bin), "node",
        "8000", "/tmp/x", "http://127.0.0.1:9000", "http://127.0.0.1:8000" }, " "))
      assert.equal(1, code)
      assert.matches("is not one of NODE_URLS", err, 1, true)
      -- one node per machine, all on port 8000: --host says which is this
      code, _, err = h.run(table.concat({ h.lua, h.quote(h.bin), "node",
        "8000", "/tmp/x", "http://10.0.0.1:8000",
        "http://10.0.0.1:8000,http://10.0.0.2:8000" }, " "))
      assert.equal(1, code)
      assert.matches("several NODE_URLS have port 8000; say which is this "
        .. "node with --host", err, 1, true)
    end)
  end)
end)
