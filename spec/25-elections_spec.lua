-- spec/25-elections_spec.lua - Raft elections with real `lunakv node`
-- processes on 127.0.0.1 (docs/replication.md, "Elections"; issue 18):
-- kill -9 of the leader elects a new one and writes go on on the
-- survivors; the old leader restarted rejoins and converges; five nodes
-- keep serving with two dead and refuse writes (503, never success) with
-- three dead; a leader paused (SIGSTOP) while the others elect another,
-- then resumed, never answers a stale consistent read and steps down;
-- /status says who leads, who was voted for, the voters.

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

-- Write k = v through node (forwarded when it does not lead) until it is
-- acknowledged, within timeout s: while an election runs the answer is a
-- 503 (no leader, or outcome unknown), never a wrong success.
local function set_eventually(node, k, v, timeout)
  hh.until_acked("set " .. k, function() return hh.set(node, k, v) end,
    timeout)
end

-- The running members other than `except`.
local function survivors(except)
  local out = {}
  for _, n in ipairs(nodes) do
    if n ~= except and hh.running(n) then out[#out + 1] = n end
  end
  return out
end

describe("Raft elections #cluster", function()
  it("elect a new leader when the leader is killed; writes go on on the "
    .. "survivors; the old leader rejoins and converges", function()
    nodes = hh.start_cluster { n = 3 }
    local old = hh.wait_ready(nodes)
    local st = hh.status(old)
    assert.equal("leader", st.role)
    assert.equal(old.url, st.leader)
    assert.equal(old.url, st.vote) -- a leader voted for itself
    assert.equal(3, #st.voters)
    assert.same({}, st.learners)
    for i = 1, 20 do set_eventually(old, "before" .. i, "v" .. i) end

    hh.kill_member(old)
    local rest = survivors(old)
    local new = hh.wait_leader(nodes, 20, old)
    assert.are_not.equal(old.url, new.url)
    local nst = hh.status(new)
    assert.is_true(nst.term > st.term, "a new leader has a newer term")
    -- writes through either survivor (one forwards to the other)
    for i = 1, 20 do
      set_eventually(rest[1 + i % 2], "after" .. i, "w" .. i)
    end
    for _, n in ipairs(rest) do
      local fst = hh.status(n)
      assert.equal(new.url, fst.leader)
      assert.is_true(fst.role == "leader" or fst.role == "follower", fst.role)
    end

    -- the old leader comes back as a follower and gets everything
    hh.start_member(old)
    hh.wait_ready(nodes, 30)
    assert.equal(new.url, hh.status(old).leader)
    assert.equal("follower", hh.status(old).role)
    for _, n in ipairs(nodes) do
      for i = 1, 20 do
        hh.wait_value(n, "before" .. i, "v" .. i)
        hh.wait_value(n, "after" .. i, "w" .. i)
      end
    end
    -- same log on all three (and the consistent read sees the last write)
    local ls = hh.status(nodes.leader)
    for _, n in ipairs(nodes) do hh.wait_caught_up(n, nodes.leader, 20) end
    local by = hh.log_entries(nodes.leader, 1)
    for _, n in ipairs(nodes) do
      local other = hh.log_entries(n, 1)
      for i = 1, ls.commit_index do
        assert.same(by[i], other[i], n.url .. " index " .. i)
      end
    end
    local code, doc = hh.consistent_get(old, "after20")
    assert.equal(200, code)
    assert.equal("w20", doc.value)
  end)

  it("keeps serving with 2 of 5 nodes killed and refuses writes (503) "
    .. "with 3 killed", function()
    nodes = hh.start_cluster { n = 5, args = { "--write-timeout-ms", "1500" } }
    local leader = hh.wait_ready(nodes)
    set_eventually(leader, "k0", "v0")
    -- kill the leader and one follower: three of five remain, a majority
    local victim
    for _, n in ipairs(nodes) do
      if n ~= leader then victim = n break end
    end
    hh.kill_member(leader)
    hh.kill_member(victim)
    local rest = survivors()
    assert.equal(3, #rest)
    local new = hh.wait_leader(nodes, 20)
    for i = 1, 10 do set_eventually(rest[1 + i % 3], "k" .. i, "v" .. i) end
    for _, n in ipairs(rest) do hh.wait_value(n, "k10", "v10") end

    -- one more dies: two of five cannot commit anything
    local third = rest[1] ~= new and rest[1] or rest[2]
    hh.kill_member(third)
    for i = 1, 6 do
      for _, n in ipairs(survivors()) do
        local code, doc, text = hh.set(n, "lost" .. i, "x")
        assert.equal(503, code, "a write without a majority -> "
          .. tostring(text))
        assert.is_false(doc.ok)
        assert.is_truthy(doc.error:find("no leader", 1, true)
          or doc.error:find("outcome unknown", 1, true)
          or doc.error:find("not the leader", 1, true), doc.error)
      end
    end
    for _, n in ipairs(survivors()) do
      local code, doc = hh.get(n, "lost1")
      assert.equal(200, code)
      assert.equal(cjson.null, doc.value)
    end
  end)

  it("elects at once when the leader's process dies (its connections "
    .. "close), not after a whole election timeout; a paused one waits it",
    function()
    -- a 10 s election timeout: its followers' silence alone elects no one
    -- within 10 s; a closed connection makes them campaign within 5 s
    nodes = hh.start_cluster { n = 3, args = { "--election-timeout-ms",
                                               "10000" } }
    local old = hh.wait_ready(nodes)
    set_eventually(old, "g", "1")
    for _, n in ipairs(nodes) do hh.wait_value(n, "g", "1") end
    -- paused: its sockets stay open, so no one is told; 2 s pass with
    -- the same leader
    h.kill(old.pid, "STOP")
    local ok, err = pcall(function()
      socket.sleep(2)
      for _, n in ipairs(survivors(old)) do
        local st = hh.status(n)
        assert.equal(old.url, st.leader, cjson.encode(st))
        assert.equal(0, hh.metric(n, "lunakv_raft_leader_gone_total"))
      end
    end)
    h.kill(old.pid, "CONT")
    if not ok then error(err, 0) end
    h.wait_until(function()
      for _, n in ipairs(nodes) do
        if hh.status(n).leader ~= old.url then return false end
      end
      return true
    end, 10)
    local t0 = socket.gettime()
    hh.kill_member(old)
    local new = hh.wait_leader(nodes, 20, old)
    local took = socket.gettime() - t0
    assert.is_true(took < 7, string.format("elected after %.2f s", took))
    local told = 0
    for _, n in ipairs(survivors(old)) do
      told = told + hh.metric(n, "lunakv_raft_leader_gone_total")
    end
    assert.is_true(told >= 1, "no survivor was told the leader was gone")
    set_eventually(new, "g", "2")
  end)

  it("never answers a stale consistent read from a leader paused (SIGSTOP) "
    .. "and resumed after another was elected, and steps it down", function()
    nodes = hh.start_cluster { n = 3 }
    local old = hh.wait_ready(nodes)
    set_eventually(old, "k", "v1")
    for _, n in ipairs(nodes) do hh.wait_value(n, "k", "v1") end
    local term = hh.status(old).term
    h.kill(old.pid, "STOP")
    local ok, err = pcall(function()
      local new = hh.wait_leader(nodes, 20, old)
      set_eventually(new, "k", "v2")
      -- a consistent read sent to the paused leader: it waits in the
      -- kernel, with the new leader's messages, until the resume
      local c = assert(hh.send_later(old, "GET", "/get?key=k&consistent=true"))
      h.kill(old.pid, "CONT")
      local code, doc, answer = hh.read_answer(c)
      -- never the stale v1; and not an error either: a read the deposed
      -- leader could not confirm goes on to the new leader
      assert.equal(200, code, answer)
      assert.equal("v2", doc.value, "a stale read: " .. answer)
      -- it learns the newer term and follows
      h.wait_until(function()
        local st = hh.status(old)
        return st.role == "follower" and st.leader == new.url and st.term > term
      end, 15, function() return cjson.encode(hh.status(old)) end)
      local c2, doc2 = hh.consistent_get(old, "k")
      assert.equal(200, c2)
      assert.equal("v2", doc2.value)
    end)
    if not ok then
      h.kill(old.pid, "CONT")
      error(err, 0)
    end
  end)

  it("hands the leadership over on POST /transfer_leader and on SIGTERM, "
    .. "without waiting an election timeout", function()
    -- a 30 s election timeout: an election would not finish within the
    -- waits below; only a hand-over does
    nodes = hh.start_cluster { n = 3, args = { "--election-timeout-ms", "30000" },
                               down = { 1 }, ready = false }
    hh.start_member(nodes[1])
    local first = hh.wait_ready(nodes)
    set_eventually(first, "t", "0")
    local target = first == nodes[2] and nodes[3] or nodes[2]
    -- asked of a follower (forwarded), answered once the target leads
    local other = (first ~= nodes[3] and target ~= nodes[3]) and nodes[3]
      or nodes[1]
    h.wait_until(function() return hh.status(other).leader == first.url end,
      10)
    local code, doc, text = hh.json_request("POST", other.url
      .. "/transfer_leader", cjson.encode { node_url = target.url })
    assert.equal(200, code, text)
    assert.same({ ok = true, leader = target.url }, doc)
    assert.equal("leader", hh.status(target).role)
    set_eventually(first, "t", "1") -- forwarded to the new leader
    -- bad input: 400, nothing changes
    for _, body in ipairs { "{}", '{"node_url": 5}',
                            '{"node_url": "http://127.0.0.1:1"}', "x" } do
      code, doc, text = hh.json_request("POST", target.url
        .. "/transfer_leader", body)
      assert.equal(400, code, body .. " -> " .. tostring(text))
      assert.is_false(doc.ok)
    end
    assert.equal("leader", hh.status(target).role)
    -- SIGTERM on the leader: it hands over, then stops
    local ok, how, exit = hh.stop_member(target, "TERM")
    assert.is_true(ok, tostring(how) .. " " .. tostring(exit))
    local new = hh.wait_leader(nodes, 5, target)
    assert.are_not.equal(target, new)
    set_eventually(new, "t", "2", 5)
    assert.matches("handing the leadership over before stopping",
      hh.read_log(target.log), 1, true)
  end)

  it("takes writes and consistent reads without an error through a "
    .. "leadership transfer: requests wait for the new leader instead of "
    .. "failing", function()
    -- a 30 s election timeout: only the hand-overs elect anyone here
    nodes = hh.start_cluster { n = 3, args = { "--election-timeout-ms",
                                               "30000" } }
    local leader = hh.wait_ready(nodes)
    set_eventually(leader, "x0", "0")
    local n, failed = 0, {}
    for round = 1, 3 do
      leader = hh.wait_leader(nodes, 10)
      local target = leader == nodes[1] and nodes[2] or nodes[1]
      -- the transfer runs while this loop writes: its answer is read
      -- after 0.5 s of writes through every node in turn
      local c = assert(hh.send_later(leader, "POST", "/transfer_leader",
        cjson.encode { node_url = target.url }))
      local t_end = socket.gettime() + 0.5
      while socket.gettime() < t_end do
        n = n + 1
        local node = nodes[1 + n % 3]
        local code, _, text = hh.set(node, "x" .. n, tostring(round))
        if code ~= 200 then
          failed[#failed + 1] = node.url .. ": " .. tostring(code) .. " "
            .. tostring(text)
        end
        -- and a consistent read of it through the next node
        local reader = nodes[1 + (n + 1) % 3]
        local rcode, rdoc = hh.consistent_get(reader, "x" .. n)
        if rcode ~= 200 or rdoc.value ~= tostring(round) then
          failed[#failed + 1] = reader.url .. ": read " .. tostring(rcode)
            .. " " .. cjson.encode(rdoc or {})
        end
      end
      local code, _, answer = hh.read_answer(c)
      assert.equal(200, code, answer)
      assert.equal(target.url, hh.wait_leader(nodes, 10).url)
    end
    assert.same({}, failed, n .. " writes")
    -- some of them did wait for the new leader
    local parked = 0
    for _, node in ipairs(nodes) do
      parked = parked + hh.metric(node, "lunakv_requests_parked_total")
    end
    assert.is_true(parked > 0, "no request waited for a leader")
    assert.is_true(n > 30, n .. " writes and reads")
    for i = n - 5, n do hh.wait_value(nodes[1], "x" .. i, "3") end
  end)

  it("answers 503 with Retry-After, not 500, when every forwarding "
    .. "connection waits on a former leader", function()
    -- forwarded requests wait 62 s on a paused leader; a 3 s election
    -- timeout leaves time to queue all of them before anyone campaigns
    nodes = hh.start_cluster { n = 3, args = { "--write-timeout-ms", "60000",
                                               "--election-timeout-ms", "3000" } }
    local old = hh.wait_ready(nodes)
    set_eventually(old, "k", "v0")
    local rest = survivors(old)
    local a, b = rest[1], rest[2]
    h.wait_until(function() return hh.status(a).leader == old.url end, 10)
    local socks = {}
    h.kill(old.pid, "STOP")
    local ok, err = pcall(function()
      -- fill a's forwarding slots (256, one request each) with writes
      -- that the paused leader will not answer
      local body = '{"key": "w", "value": "x"}'
      for i = 1, 256 do
        local c = assert(socket.tcp())
        c:settimeout(5)
        assert(c:connect("127.0.0.1", a.port))
        assert(c:send("POST /set HTTP/1.1\r\nHost: x\r\nContent-Type: "
          .. "application/json\r\nContent-Length: " .. #body .. "\r\n\r\n"
          .. body))
        socks[i] = c
      end
      local new = hh.wait_leader(nodes, 20, old)
      if new == a then
        local code, _, text = hh.json_request("POST", a.url
          .. "/transfer_leader", cjson.encode { node_url = b.url })
        assert.equal(200, code, text)
      end
      h.wait_until(function() return hh.status(a).leader == b.url end, 10)
      local code, text, headers = hh.request("POST", a.url .. "/set",
        '{"key": "k", "value": "v1"}',
        { ["content-type"] = "application/json" })
      assert.equal(503, code, text)
      assert.matches("no forwarding connection is free", text, 1, true)
      assert.equal("1", headers["retry-after"])
      local gc, gdoc = hh.consistent_get(b, "k")
      assert.equal(200, gc)
      assert.equal("v0", gdoc.value, "the refused write was not applied")
    end)
    h.kill(old.pid, "CONT")
    for _, c in ipairs(socks) do c:close() end
    if not ok then error(err, 0) end
    -- the former leader answers (it steps down), the slots free up, and
    -- forwarding works again
    set_eventually(a, "k", "v2", 20)
  end)

  it("bounds what waits for a paused leader: 2 requests per forwarding "
    .. "connection, each answered at its deadline", function()
    -- a 30 s election timeout: the paused leader stays the leader the
    -- follower knows; a forward's deadline is write timeout + 2 s = 2.5 s
    nodes = hh.start_cluster { n = 3, args = { "--write-timeout-ms", "500",
                                               "--election-timeout-ms", "30000" } }
    local old = hh.wait_ready(nodes)
    set_eventually(old, "k", "v0")
    local a = survivors(old)[1]
    h.wait_until(function() return hh.status(a).leader == old.url end, 10)
    local socks = {}
    h.kill(old.pid, "STOP")
    local ok, err = pcall(function()
      -- 256 forwarding connections with two requests each (one queued),
      -- then one past the bound
      local body = '{"key": "w", "value": "x"}'
      local req = "POST /set HTTP/1.1\r\nHost: x\r\nContent-Type: "
        .. "application/json\r\nContent-Length: " .. #body .. "\r\n\r\n"
        .. body
      local t0 = socket.gettime()
      for i = 1, 2 * 256 do
        local c = assert(socket.tcp())
        c:settimeout(10)
        assert(c:connect("127.0.0.1", a.port))
        assert(c:send(req))
        socks[i] = c
      end
      local code, text = hh.request("POST", a.url .. "/set", body,
        { ["content-type"] = "application/json" })
      assert.equal(503, code, text)
      assert.matches("no forwarding connection is free", text, 1, true)
      assert.is_true(socket.gettime() - t0 < 2, "the refusal waited")
      -- every one of them answered 503 by its deadline (2.5 s after it
      -- was sent), the queued ones too: not one connection timeout after
      -- another
      for i, c in ipairs(socks) do
        local line = c:receive("*l")
        assert.matches("^HTTP/1%.1 503", tostring(line), nil, false)
        assert.is_true(socket.gettime() - t0 < 4.5,
          string.format("answer %d after %.2f s", i, socket.gettime() - t0))
      end
    end)
    h.kill(old.pid, "CONT")
    for _, c in ipairs(socks) do c:close() end
    if not ok then error(err, 0) end
    set_eventually(a, "k", "v2", 20)
  end)

  it("answers 503 no leader with Retry-After while no leader is known",
    function()
    -- three voters, one of them running: it can never win an election
    nodes = hh.start_cluster { n = 3, down = { 2, 3 }, ready = false }
    local lone = nodes[1]
    local code, text, headers = hh.request("POST", lone.url .. "/set",
      '{"key": "a", "value": "b"}', { ["content-type"] = "application/json" })
    assert.equal(503, code)
    local doc = cjson.decode(text)
    assert.equal("no leader", doc.error)
    assert.equal("1", headers["retry-after"])
    local st = hh.status(lone)
    assert.equal(cjson.null, st.leader)
    assert.is_truthy(st.role == "candidate" or st.role == "follower", st.role)
    code = hh.consistent_get(lone, "a")
    assert.equal(503, code)
  end)
end)
