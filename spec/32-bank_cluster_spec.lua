-- spec/32-bank_cluster_spec.lua - stored functions through failures
-- (issue 19; docs/functions.md, "On a node"; docs/http_api.md, "Stored
-- functions"), with real processes on 127.0.0.1: examples/bank.lua's
-- transfers from concurrent client processes through every node of a
-- 3-node cluster whose leader is killed (kill -9) and restarted in the
-- middle keep the total, never go negative, leave identical replicas and
-- reflect every acknowledged transfer; a call waiting for its commit when
-- its leader is deposed (CheckQuorum, the followers paused) is answered
-- 503 "outcome unknown", and the cluster serves again once they resume.

local h = require "spec.helpers"
local hh = require "spec.http_helpers"
local cjson = hh.json
local core = require "lunakv.core"
local socket = require "socket"

local nodes -- the cluster of the running test; stopped in after_each

after_each(function()
  -- resumed first: a paused node ignores SIGTERM until SIGCONT
  for _, n in ipairs(nodes or {}) do
    if n.pid then h.kill(n.pid, "CONT") end
  end
  local ok, err = pcall(hh.stop_cluster, nodes)
  nodes = nil
  h.cleanup() -- the client processes too
  if not ok then error(err, 0) end
end)

local BANK = h.read_file("examples/bank.lua")

local function call(node, fn, args, query)
  return hh.json_request("POST", node.url .. "/call/" .. fn .. (query or ""),
    args ~= nil and cjson.encode(args) or nil)
end

-- A number from JSON (cjson decodes every number as a float) as an
-- integer when it is whole; anything else as it is.
local function int(v)
  return type(v) == "number" and math.tointeger(v) or v
end

-- Open the accounts of `balances` (name -> amount) through node.
local function open_accounts(node, balances)
  for name, amount in pairs(balances) do
    local code, _, text = call(node, "open", { account = name, amount = amount })
    assert.equal(200, code, "open " .. name .. ": " .. tostring(text))
  end
end

-- What node itself has applied (consistent=false: no leader involved):
-- name -> balance for each name of `names`, and bank's total.
local function local_state(node, names)
  local out = {}
  for _, name in ipairs(names) do
    local code, doc, text = call(node, "balance", { account = name },
      "?consistent=false")
    assert.equal(200, code, node.url .. " balance " .. name .. ": "
      .. tostring(text))
    out[name] = int(doc.result)
  end
  local code, doc, text = call(node, "total", nil, "?consistent=false")
  assert.equal(200, code, node.url .. " total: " .. tostring(text))
  return out, doc.result
end

-- A client process: transfers between random accounts through random
-- nodes, one at a time, until its stop file exists (at most 120 s); each
-- one logged as a JSON line: code (the status; "refused" when the
-- connection could not be made, so nothing was sent; "broken" when no
-- whole answer came), from, to, amount, index and result of a 200, the
-- error, and sent/ended on core.clock() (the machine's monotonic clock,
-- the same in every process).
-- argv: SEED OUT STOP NACCOUNTS MAX_AMOUNT PORT...
local CLIENT = [==[
local hh = require "spec.http_helpers"
local core = require "lunakv.core"
local cjson = hh.json
local seed, out_path, stop = tonumber(arg[1]), arg[2], arg[3]
local naccounts, max_amount = tonumber(arg[4]), tonumber(arg[5])
local targets = {}
for i = 6, #arg do targets[#targets + 1] = { port = tonumber(arg[i]) } end
math.randomseed(seed)
local out = assert(io.open(out_path, "wb"))
out:setvbuf("line")
local deadline = core.clock() + 120
while core.clock() < deadline and not io.open(stop, "r") do
  local from = math.random(naccounts)
  local to = math.random(naccounts - 1)
  if to >= from then to = to + 1 end
  local r = { from = "a" .. from, to = "a" .. to,
              amount = math.random(max_amount), sent = core.clock() }
  local c, err = hh.send_later(targets[math.random(#targets)], "POST",
    "/call/transfer", cjson.encode { from = r.from, to = r.to,
                                     amount = r.amount }, nil, 15)
  if not c then
    r.code, r.error = "refused", tostring(err)
  else
    local code, doc, text = hh.read_answer(c)
    r.code = code or "broken"
    if type(doc) == "table" then
      r.index, r.result, r.error = doc.index, doc.result, doc.error
    else
      r.error = tostring(doc) .. " " .. tostring(text)
    end
  end
  r.ended = core.clock()
  out:write(cjson.encode(r), "\n")
  if r.code ~= 200 and r.code ~= 400 then core.sleep(0.02) end
end
out:close()
]==]

-- Start n clients against the members of list. Returns them: { pid, out }
-- each, and the stop file that ends them.
local function start_clients(n, list, naccounts, max_amount)
  local dir = h.tmpdir()
  local script = dir .. "/client.lua"
  h.write_file(script, h.prelude
    .. string.format("package.path = %q .. package.path\n", h.root .. "/?.lua")
    .. CLIENT)
  local seed = math.floor(socket.gettime() * 1000) % 1000000
  local clients = { stop = dir .. "/stop" }
  for i = 1, n do
    local out = dir .. "/client" .. i .. ".jsonl"
    local words = { h.lua, h.quote(script), tostring(seed * 100 + i),
                    h.quote(out), h.quote(clients.stop), tostring(naccounts),
                    tostring(max_amount) }
    for _, m in ipairs(list) do words[#words + 1] = tostring(m.port) end
    clients[i] = { pid = (h.spawn(table.concat(words, " "), dir)), out = out }
  end
  return clients
end

-- Every transfer the clients have logged so far (a torn last line left
-- out), in no particular order.
local function transfers_of(clients)
  local all = {}
  for _, c in ipairs(clients) do
    for _, l in ipairs(h.lines(c.out)) do
      local r = cjson.decode(l)
      r.code, r.index, r.amount = int(r.code), int(r.index), int(r.amount)
      if type(r.result) == "table" then
        for k, v in pairs(r.result) do r.result[k] = int(v) end
      end
      all[#all + 1] = r
    end
  end
  return all
end

-- How many transfers were acknowledged (200) among those sent after t.
local function acked_after(clients, t)
  local n = 0
  for _, r in ipairs(transfers_of(clients)) do
    if r.code == 200 and r.sent > t then n = n + 1 end
  end
  return n
end

-- Wait until at least n transfers sent after t (core.clock()) are
-- acknowledged; each poll meanwhile reads the total through the next
-- running member of list (a linearizable read-only call: a follower
-- forwards it), which must be want whenever it answers 200.
local function wait_acked(clients, t, n, list, want, what)
  local i, reads = 0, 0
  h.wait_until(function()
    i = i + 1
    local m = list[1 + i % #list]
    if hh.running(m) then
      local code, doc, text = call(m, "total")
      if code == 200 then
        reads = reads + 1
        assert.same(want, doc.result, "total through " .. m.url .. ": "
          .. tostring(text))
      end
    end
    return acked_after(clients, t) >= n and reads > 0
  end, 20, function()
    return what .. ": " .. acked_after(clients, t) .. " acknowledged"
  end)
end

local function stop_clients(clients)
  h.write_file(clients.stop, "")
  for _, c in ipairs(clients) do
    h.wait_until(function() return not hh.alive(c.pid) end, 30,
      function() return "client " .. c.out .. " does not stop" end)
    h.wait(c.pid)
  end
end

-- What a transfer's answer says was written: "acked" (200), "none" (it
-- was refused, or never reached a leader: nothing was written) or
-- "unknown" (written or not). nil and why for an answer no transfer may
-- get: a wrong success, another error.
local function outcome(r)
  if r.code == 200 then
    if math.type(r.index) ~= "integer" or type(r.result) ~= "table" then
      return nil, "a 200 without index and result"
    end
    local from, to = r.result[r.from], r.result[r.to]
    if math.type(from) ~= "integer" or from < 0 or math.type(to) ~= "integer"
      or to < r.amount then
      return nil, "a 200 with impossible balances"
    end
    return "acked"
  elseif r.code == 400 then
    -- the only refusal these arguments can get: not enough money
    if tostring(r.error):find("cannot send", 1, true) then return "none" end
    return nil, "a 400 other than 'cannot send'"
  elseif r.code == 503 then
    -- "no leader", "not the leader ... nothing was written", "not
    -- written: ... another leader's entry", a snapshot install: nothing;
    -- the leader deposed or gone while it waited: "outcome unknown"
    if tostring(r.error):find("outcome unknown", 1, true) then
      return "unknown"
    end
    return "none"
  elseif r.code == "refused" then
    return "none" -- no connection: nothing was sent
  elseif r.code == "broken" then
    return "unknown" -- sent, and the connection died (a killed node)
  end
  return nil, "an unexpected status"
end

-- Whether some subset of `unknown` (transfers whose outcome is unknown)
-- makes up `need` (account -> what the final balances hold beyond the
-- initial ones and the acknowledged transfers): then the final state is
-- the acknowledged transfers plus some of the unknown ones, each at most
-- once. bank.lua's transfer takes no id and records none, so which
-- transfers were applied cannot be read back one by one; this is the
-- exact property the balances alone give. Exhaustive up to 16 unknown
-- transfers (a run has about 6: those in flight at the kill); past that,
-- each account on its own (any subset sum of its unknown deltas).
local function explained(need, unknown, names)
  if #unknown <= 16 then
    local function try(i, rest)
      if i > #unknown then
        for _, a in ipairs(names) do
          if rest[a] ~= 0 then return false end
        end
        return true
      end
      if try(i + 1, rest) then return true end
      local t = unknown[i]
      rest[t.from], rest[t.to] = rest[t.from] + t.amount, rest[t.to] - t.amount
      local ok = try(i + 1, rest)
      rest[t.from], rest[t.to] = rest[t.from] - t.amount, rest[t.to] + t.amount
      return ok
    end
    local rest = {}
    for _, a in ipairs(names) do rest[a] = need[a] end
    return try(1, rest)
  end
  for _, a in ipairs(names) do
    local sums = { [0] = true }
    for _, t in ipairs(unknown) do
      local d = (t.from == a and -t.amount) or (t.to == a and t.amount) or 0
      if d ~= 0 then
        local more = {}
        for s in pairs(sums) do more[s + d] = true end
        for s in pairs(more) do sums[s] = true end
      end
    end
    if not sums[need[a]] then return false end
  end
  return true
end

-- The entries of node's log from index from on, every page (op and index
-- each).
local function log_from(node, from)
  local out = {}
  while true do
    local code, doc, text = hh.json_request("GET", node.url
      .. "/sync?from_index=" .. string.format("%d", from))
    assert.equal(200, code, "/sync: " .. tostring(text))
    for _, e in ipairs(doc.entries) do out[#out + 1] = e end
    if not doc.more or #doc.entries == 0 then return out end
    from = math.tointeger(doc.entries[#doc.entries].index) + 1
  end
end

describe("examples/bank.lua on a cluster #cluster", function()
  it("concurrent transfers from 6 clients through every node, with the "
    .. "leader killed (kill -9) and restarted meanwhile: the total never "
    .. "changes, no balance goes negative, every replica ends identical "
    .. "and holds exactly the acknowledged transfers (plus some of those "
    .. "of unknown outcome)", function()
    local N, CLIENTS, MAX_AMOUNT = 10, 6, 40
    nodes = hh.start_cluster { n = 3, args = { "--write-timeout-ms", "3000" } }
    local old = hh.wait_ready(nodes)
    local code, _, text = hh.json_request("PUT", old.url .. "/functions/bank",
      BANK)
    assert.equal(200, code, text)
    -- 10, 20, ..., 100: small enough against amounts up to 40 that many
    -- transfers are refused for want of money (the check a lost update
    -- would defeat)
    local initial, names, total0 = {}, {}, 0
    for i = 1, N do
      names[i] = "a" .. i
      initial[names[i]] = 10 * i
      total0 = total0 + 10 * i
    end
    open_accounts(old, initial)
    local opened = hh.status(old).last_index

    -- the total while they run: the same whenever it can be read
    local want_total = { total = total0, accounts = N }
    local clients = start_clients(CLIENTS, nodes, N, MAX_AMOUNT)
    wait_acked(clients, core.clock(), 30, nodes, want_total,
      "transfers before the kill")
    local t_kill = core.clock()
    hh.kill_member(old)
    local new = hh.wait_leader(nodes, 20, old)
    assert.are_not.equal(old, new)
    wait_acked(clients, t_kill, 30, nodes, want_total,
      "transfers after the kill")
    -- the killed node rejoins on its data while the transfers go on
    hh.start_member(old)
    hh.wait_ready(nodes, 30)
    wait_acked(clients, core.clock(), 20, nodes, want_total,
      "transfers after the restart")
    stop_clients(clients)

    -- what the clients were told
    local acked, unknown, counts, bad = {}, {}, {}, {}
    local before, after, indexes = 0, 0, {}
    for _, r in ipairs(transfers_of(clients)) do
      local o, why = outcome(r)
      if not o then
        bad[#bad + 1] = why .. ": " .. cjson.encode(r)
      else
        counts[o] = (counts[o] or 0) + 1
        if o == "acked" then
          acked[#acked + 1] = r
          if r.ended < t_kill then before = before + 1 end
          if r.sent > t_kill then after = after + 1 end
          assert.is_nil(indexes[r.index], "two transfers acknowledged at "
            .. "index " .. r.index)
          indexes[r.index] = true
        elseif o == "unknown" then
          unknown[#unknown + 1] = r
        end
      end
    end
    assert.same({}, bad)
    assert.is_true(before > 0 and after > 0, cjson.encode(counts))

    -- every node's own state, once each has applied everything
    hh.wait_ready(nodes, 30)
    hh.converged(nodes, 30)
    local want
    for _, n in ipairs(nodes) do
      local balances, total = local_state(n, names)
      assert.same(want_total, total, n.url)
      for _, name in ipairs(names) do
        assert.is_true(balances[name] >= 0, n.url .. " " .. name .. " "
          .. balances[name])
      end
      if want then assert.same(want, balances, n.url) else want = balances end
      -- and the linearizable total, through this node
      local doc = hh.until_acked("total through " .. n.url,
        function() return call(n, "total") end)
      assert.same(want_total, doc.result)
    end

    -- the acknowledged transfers, each once, plus some of the unknown
    -- ones: nothing acknowledged lost or applied twice, nothing else
    local need = {}
    for _, name in ipairs(names) do need[name] = want[name] - initial[name] end
    for _, r in ipairs(acked) do
      need[r.from], need[r.to] = need[r.from] + r.amount, need[r.to] - r.amount
    end
    assert.is_true(explained(need, unknown, names), "the final balances "
      .. cjson.encode(want) .. " are not the initial ones plus the "
      .. #acked .. " acknowledged transfers plus some of the " .. #unknown
      .. " of unknown outcome: " .. cjson.encode(need))

    -- each transfer one log entry (both balances or neither, also across
    -- the kill): after the accounts, only batches and new terms' no-ops
    local leader = hh.wait_leader(nodes, 10)
    local base = hh.status(leader).base_index
    local ops = {}
    for _, e in ipairs(log_from(leader, math.max(opened, base) + 1)) do
      ops[e.op] = (ops[e.op] or 0) + 1
    end
    if base <= opened then -- (not compacted: every acknowledged one is here)
      assert.is_true((ops.batch or 0) >= #acked, cjson.encode(ops))
    end
    ops.batch, ops.noop = nil, nil
    assert.same({}, ops)
  end)

  it("a call waiting for its commit when its leader is deposed (its "
    .. "followers paused, CheckQuorum steps it down) is answered 503 "
    .. "outcome unknown, not 200 nor 400; resumed, the cluster serves "
    .. "again", function()
    -- a 2 s election timeout: room to see the call wait in the leader's
    -- log before the step-down; a 60 s write timeout: the answer is the
    -- step-down's, not a timeout's
    nodes = hh.start_cluster { n = 3, args = { "--election-timeout-ms",
      "2000", "--write-timeout-ms", "60000" } }
    local leader = hh.wait_ready(nodes)
    assert.equal(200, (hh.json_request("PUT", leader.url .. "/functions/bank",
      BANK)))
    open_accounts(leader, { a1 = 100, a2 = 0 })
    hh.converged(nodes)
    local before = hh.status(leader)
    local paused = hh.pause_followers(nodes, leader)
    local ok, err = pcall(function()
      -- (an answer within 15 s, the socket's timeout: not the write
      -- timeout's)
      local c = assert(hh.send_later(leader, "POST", "/call/transfer",
        cjson.encode { from = "a1", to = "a2", amount = 5 }, nil, 15))
      -- it ran and its entry waits in the leader's log for a majority
      h.wait_until(function()
        return hh.status(leader).last_index == before.last_index + 1
      end, 10, function() return cjson.encode(hh.status(leader)) end)
      local code, doc, answer = hh.read_answer(c)
      assert.equal(503, code, answer or doc) -- (doc: why no answer)
      assert.is_false(doc.ok)
      assert.matches("outcome unknown", doc.error, 1, true)
      assert.matches("stopped leading", doc.error, 1, true)
      -- deposed, by CheckQuorum; the entry in its log, not committed,
      -- not applied
      local st = hh.status(leader)
      assert.are_not.equal("leader", st.role)
      assert.equal(before.last_index + 1, st.last_index)
      assert.equal(before.commit_index, st.commit_index)
      assert.is_true(hh.metric(leader, "lunakv_raft_quorum_lost_total") >= 1)
      local _, bal = call(leader, "balance", { account = "a1" },
        "?consistent=false")
      assert.equal(100, bal.result)
    end)
    hh.resume_all(paused)
    if not ok then error(err, 0) end

    -- a transfer of 1 through every node once a leader is elected (each
    -- try that said "outcome unknown" may have moved 1 more)
    hh.wait_ready(nodes, 30)
    local retried = 0
    for _, n in ipairs(nodes) do
      local _, unknown = hh.until_acked("transfer through " .. n.url,
        function()
          return call(n, "transfer", { from = "a1", to = "a2", amount = 1 })
        end, 30)
      retried = retried + unknown
    end
    hh.wait_ready(nodes, 30)
    hh.converged(nodes)
    -- the deposed call's 5 were moved by the next leader, or never: the
    -- same on every node, and the total kept
    local want
    for _, n in ipairs(nodes) do
      local balances, total = local_state(n, { "a1", "a2" })
      assert.same({ total = 100, accounts = 2 }, total)
      local moved = 100 - balances.a1 - 3
      assert.is_truthy((moved >= 0 and moved <= retried)
        or (moved >= 5 and moved <= 5 + retried), cjson.encode(balances))
      if want then assert.same(want, balances, n.url) else want = balances end
    end
  end)
end)
