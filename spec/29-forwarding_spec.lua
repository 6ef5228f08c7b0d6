-- spec/29-forwarding_spec.lua - what a follower does with the writes it
-- passes to the leader (c/net/forward.c; docs/replication.md,
-- "Forwarding"), with real `lunakv node` processes on 127.0.0.1: past
-- 64 MiB of bodies waiting for a paused leader it refuses more (503,
-- Retry-After) and keeps serving, and none of the refused writes is ever
-- written; a request that reaches a node which no longer leads goes one
-- hop further, and one marked with two hops already is refused (503 "not
-- the leader") and never written.

local h = require "spec.helpers"
local hh = require "spec.http_helpers"
local cjson = hh.json
local socket = require "socket"

local nodes -- the cluster of the running test; stopped in after_each

after_each(function()
  local ok, err = pcall(hh.stop_cluster, nodes)
  nodes = nil
  h.cleanup()
  if not ok then error(err, 0) end
end)

-- A 3-node cluster with an election timeout of ms (long: a paused node
-- deposes nobody meanwhile) and the flags of more; returns its leader and
-- the two followers, once both name it. Node 1, the hinted first
-- candidate, starts once the others listen: with such a timeout a first
-- campaign that reached nobody would cost a whole timeout.
local function start_patient_cluster(ms, more)
  local args = { "--election-timeout-ms", tostring(ms) }
  for _, a in ipairs(more or {}) do args[#args + 1] = a end
  local c = hh.start_cluster { n = 3, args = args, down = { 1 }, ready = false }
  nodes = c
  hh.start_member(c[1])
  local leader = hh.wait_ready(c)
  local rest = {}
  for _, n in ipairs(c) do
    if n ~= leader then
      rest[#rest + 1] = n
      h.wait_until(function() return hh.status(n).leader == leader.url end, 10)
    end
  end
  return leader, rest[1], rest[2]
end

-- The Retry-After header of an answer's whole text (hh.read_answer).
local function retry_after(text)
  return tostring(text):match("\r\n[Rr]etry%-[Aa]fter: *([^\r\n]*)")
end

-- The value of key through the leader (a consistent read): cjson.null
-- when absent.
local function committed_value(node, key)
  local code, doc, text = hh.consistent_get(node, key)
  assert.equal(200, code, "consistent /get " .. key .. ": "
    .. tostring(text):sub(1, 200))
  return doc.value
end

describe("forwarding #cluster", function()
  it("refuses writes past 64 MiB of forwarded bodies waiting for a paused "
    .. "leader (503, Retry-After), keeps serving, never writes them, and "
    .. "forwards again once the leader answers",
    function()
    -- the bound is forward.c's FWD_BYTES_MAX; bodies of exactly the
    -- default body limit (--max-body-bytes, 4 MiB): 16 of them fill it to
    -- the byte, so the 17th and every one after it is refused, whatever
    -- order the follower reads them in. Each is a small /set padded with
    -- JSON whitespace: the bound counts body bytes, and the leader then
    -- commits 16 small entries, not 64 MiB.
    local BODY, BOUND, N = 4 * 1024 * 1024, 64 * 1024 * 1024, 20
    local FIT = BOUND // BODY
    -- the paused leader stays the leader the follower knows (30 s), and
    -- what waits for it outlives the test (forward deadline 22 s)
    local leader, f = start_patient_cluster(30000,
      { "--write-timeout-ms", "20000" })
    local function key(i) return string.format("big%02d", i) end
    local function body(i)
      local json = cjson.encode { key = key(i), value = "v" .. i }
      return json:sub(1, -2) .. (" "):rep(BODY - #json) .. "}"
    end
    local conns, answers, refused = {}, {}, {}
    h.kill(leader.pid, "STOP")
    local ok, err = pcall(function()
      for i = 1, N do
        conns[i] = assert(hh.send_later(f, "POST", "/set", body(i), nil, 60))
        collectgarbage() -- one body in memory at a time
      end
      -- the refusals come at once, while the others wait
      local nrefused = 0
      h.wait_until(function()
        local pending = {}
        for i = 1, N do
          if conns[i] then pending[#pending + 1] = conns[i] end
        end
        local ready = socket.select(pending, nil, 0.2)
        for i = 1, N do
          if conns[i] and ready[conns[i]] then
            answers[i] = { hh.read_answer(conns[i]) }
            conns[i] = nil
            nrefused = nrefused + 1
          end
        end
        return nrefused >= N - FIT
      end, 10, function()
        return nrefused .. " of " .. (N - FIT) .. " refusals came"
      end)
      local want = "^(%d+) bytes of forwarded requests wait for the leader "
        .. leader.url:gsub("%p", "%%%0") .. "; nothing was sent, retry$"
      for i, a in pairs(answers) do
        local code, doc, text = a[1], a[2], a[3]
        local what = key(i) .. ": " .. tostring(text):sub(1, 300)
        assert.equal(503, code, what)
        assert.is_table(doc, what)
        assert.is_false(doc.ok, what)
        -- what waits when it is refused: the 16 bodies that fit
        assert.equal(tostring(FIT * BODY), doc.error:match(want), what)
        assert.equal("1", retry_after(text), what)
        refused[i] = true
      end
      -- past the bound any body is refused, a small one too, while the
      -- follower goes on serving what it can answer alone
      local code, doc, text, hdrs = hh.set(f, "small", "v")
      assert.equal(503, code, text)
      assert.equal(tostring(FIT * BODY), doc.error:match(want), text)
      assert.equal("1", hdrs["retry-after"])
      local hc, hdoc = hh.json_request("GET", f.url .. "/health")
      assert.equal(200, hc)
      assert.equal(leader.url, hdoc.leader)
      assert.equal(200, (hh.get(f, "small")))
    end)
    h.kill(leader.pid, "CONT")
    if not ok then
      for _, c in pairs(conns) do c:close() end
      error(err, 0)
    end
    -- the leader resumed: every write that was let through is written
    for i = 1, N do
      if conns[i] then
        local code, doc, text = hh.read_answer(conns[i])
        conns[i] = nil
        assert.equal(200, code, key(i) .. ": " .. tostring(text):sub(1, 300))
        assert.is_true(doc.ok)
      end
    end
    for i = 1, N do
      local v = committed_value(leader, key(i))
      assert.equal(refused[i] and cjson.null or "v" .. i, v, key(i))
    end
    assert.equal(cjson.null, committed_value(f, "small"))
    -- answered, they no longer count: the follower forwards again
    local code, _, text = hh.set(f, "after", "v")
    assert.equal(200, code, text)
  end)

  it("forwards a request once more from a node that was its leader, and "
    .. "refuses one marked twice (503 not the leader), writing nothing",
    function()
    local leader, f = start_patient_cluster(10000)
    local mark = "X-Lunakv-Forwarded-By"
    -- marked once (as if another node had forwarded it here): this
    -- follower knows the leader, the second hop goes there
    local code, doc, text = hh.json_call("POST", f.url .. "/set",
      '{"key": "hop2", "value": "v2"}', { [mark] = "http://127.0.0.1:1" })
    assert.equal(200, code, text)
    assert.is_true(doc.ok)
    -- marked twice: no third hop, though the leader is known and up
    local last = hh.status(leader).last_index
    local hdrs
    code, doc, text, hdrs = hh.json_call("POST", f.url .. "/set",
      '{"key": "hop3", "value": "v3"}',
      { [mark] = "http://127.0.0.1:1, http://127.0.0.1:2" })
    assert.equal(503, code, text)
    assert.equal("not the leader: this node does not lead (any more); retry",
      doc.error)
    assert.equal("1", hdrs["retry-after"])
    code, doc, text = hh.json_call("PUT", f.url .. "/kv/hop3", "v3",
      { [mark] = "http://127.0.0.1:1, http://127.0.0.1:2" })
    assert.equal(503, code, text)
    assert.matches("not the leader", doc.error, 1, true)
    assert.equal("v2", committed_value(f, "hop2"))
    assert.equal(cjson.null, committed_value(f, "hop3"))
    assert.equal(last, hh.status(leader).last_index, "nothing was proposed")
  end)

  it("sends a request on from a leader that handed over while it was on "
    .. "its way (two hops, two URLs in its mark), and refuses a third hop",
    function()
    -- the leader hands over to m, paused meanwhile: the transfer waits
    -- for it, and the leader parks what reaches it until m leads
    local leader, f, m = start_patient_cluster(10000)
    hh.wait_caught_up(m, leader)
    local transfer, a, b
    h.kill(m.pid, "STOP")
    local ok, err = pcall(function()
      transfer = assert(hh.send_later(leader, "POST", "/transfer_leader",
        cjson.encode { node_url = m.url }))
      h.wait_until(function()
        return hh.read_log(leader.log):find("leadership transfer to "
          .. m.url, 1, true)
      end, 10, function() return hh.read_log(leader.log) end)
      -- a client's write to f: f forwards it to the leader, which parks it
      a = assert(hh.send_later(f, "POST", "/set",
        '{"key": "two", "value": "hops"}'))
      -- one forwarded to f already: f adds its URL, a second mark
      b = assert(hh.send_later(f, "POST", "/set",
        '{"key": "three", "value": "hops"}',
        { ["X-Lunakv-Forwarded-By"] = "http://127.0.0.1:1" }))
      h.wait_until(function()
        return hh.metric(leader, "lunakv_requests_parked") == 2
      end, 10, function() return "2 requests parked on the leader" end)
    end)
    h.kill(m.pid, "CONT")
    if not ok then
      for _, c in ipairs { transfer, a, b } do c:close() end
      error(err, 0)
    end
    local code, doc, text = hh.read_answer(transfer)
    assert.equal(200, code, text)
    assert.equal(m.url, doc.leader)
    -- marked by f, the old leader sent it on to m: written
    code, doc, text = hh.read_answer(a)
    assert.equal(200, code, text)
    assert.is_true(doc.ok)
    -- marked by another node and f: the old leader did not send it on
    code, doc, text = hh.read_answer(b)
    assert.equal(503, code, text)
    assert.equal("not the leader: this node does not lead (any more); retry",
      doc.error)
    assert.equal("1", retry_after(text), text)
    assert.equal("hops", committed_value(m, "two"))
    assert.equal(cjson.null, committed_value(m, "three"))
  end)
end)
