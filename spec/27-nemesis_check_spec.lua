-- spec/27-nemesis_check_spec.lua - the history checker of `make nemesis`
-- (tools/nemesis_check.lua) on made-up histories: a clean one passes,
-- and each kind of violation (a lost write, a stale, invented or future
-- read, a read of a refused write, reads going back, an invented key) is
-- reported with the history lines that show it. The real runs, with
-- broken nodes among them, are in tools/nemesis.lua's header.

local check = dofile("tools/nemesis_check.lua")

-- History lines: w(key, value, sent, ended, outcome) and r(key, sent,
-- ended, value or nil, outcome); writes of key k are client "c-k"'s.
local function w(key, value, sent, ended, outcome, client)
  return string.format("W %s %s %d %.6f %.6f %s", client or ("c-" .. key),
    key, value, sent, ended, outcome or "200")
end
local function r(key, sent, ended, value, outcome)
  return string.format("R r1 %s %.6f %.6f %s %s", key, sent, ended,
    outcome or "200", value == nil and "-" or tostring(value))
end

local function run(lines, final)
  local ops = {}
  for _, l in ipairs(lines) do ops[#ops + 1] = assert(check.parse_line(l)) end
  return check.check(ops, final, function(k) return k:match("^nemesis%-") end)
end

-- The problems' kinds, sorted.
local function whats(report)
  local out = {}
  for _, p in ipairs(report.problems) do out[#out + 1] = p.what end
  table.sort(out)
  return out
end

-- Key "a": 1 acked at [1, 2], 2 acked at [3, 4], 3 refused ("no leader")
-- at [5, 6], 4 outcome unknown at [7, 8] (the last write of "a").
local A = {
  w("a", 1, 1, 2), w("a", 2, 3, 4), w("a", 3, 5, 6, "503:no_leader@2001"),
  w("a", 4, 7, 8, "503:outcome_unknown@2002"),
}
local function with(...)
  local t = {}
  for _, l in ipairs(A) do t[#t + 1] = l end
  for _, l in ipairs { ... } do t[#t + 1] = l end
  return t
end

describe("nemesis history check", function()
  it("classifies answers as documented: ok, definitely not written, or "
    .. "outcome unknown", function()
    local cases = {
      { "200", "ok" },
      { "refused", "unknown" }, -- a request may have left first
      { "400:malformed_JSON@2000", "fail" },
      { "413:request_body_is_5000000_bytes;_the_limit_is_4194304@2000", "fail" },
      { "503:no_leader@2000", "fail" },
      { "503:not_the_leader@2000", "fail" },
      { "503:not_written@2000", "fail" },
      { "503:the_node_is_shutting_down@2000", "fail" },
      { "503:268435200_bytes_of_writes_are_waiting_for_a_majority;@2000", "fail" },
      { "503:outcome_unknown@2000", "unknown" },
      { "500:the_replication_log_failed@2000", "unknown" },
      { "500:writes_are_stopped@2000", "unknown" },
      { "timeout", "unknown" },
      { "error", "unknown" },
      -- a node out of the cluster (the membership fault): removed, it
      -- answers 503 "not a member"; stopped, the connection is refused
      -- ("error"); joining, it knows no leader yet ("no leader", above)
      { "503:not_a_member_of_the_cluster@2000", "unknown" },
    }
    for _, c in ipairs(cases) do
      assert.equal(c[2], check.classify(c[1]), c[1])
    end
    assert.equal("outcome_unknown", check.error_word(
      "outcome unknown: index 3 was not committed within 5000 ms"))
  end)

  it("passes a clean history: concurrent reads may see either value, an "
    .. "unknown write may show up at any time after it was sent", function()
    local rep = run(with(
      r("a", 0.5, 1.5, nil),   -- before any ack
      r("a", 0.5, 3.5, 1),     -- 1 acked meanwhile
      r("a", 2.5, 3.5, 1),     -- concurrent with 2
      r("a", 2.5, 3.5, 2),
      r("a", 4.5, 5.5, 2),     -- after 2's ack; 3 is being refused
      r("a", 7.5, 7.9, 2),     -- 4's fate still open
      r("a", 8.5, 9, 4),       -- 4 took effect after all
      r("a", 9.5, 10, 4),
      r("b", 1, 2, nil)        -- a key nobody wrote
    ), { a = "4" })
    assert.same({}, whats(rep), check.format(rep))
    assert.is_true(rep.ok)
    assert.same({ writes_ok = 2, writes_fail = 1, writes_unknown = 1,
      reads_ok = 9, reads_other = 0, keys = 1 }, rep.counts)
    -- the unknown write may also never take effect
    assert.is_true(run(with(r("a", 8.5, 9, 2)), { a = "2" }).ok)
    -- answers other than 200 prove nothing
    assert.is_true(run(with(r("a", 8.5, 9, nil, "503:no_leader@2000"),
      r("a", 8.5, 9, 9, "timeout")), { a = "2" }).ok)
    -- nor do those of a node taken out of the cluster and wiped: its
    -- client's write refused by the connection is unknown (the key's
    -- last), its reads 503 or no answer
    local out = run(with(
      w("b", 1, 1, 2), w("b", 2, 3, 4, "error"),
      r("b", 4.5, 5, nil, "503:not_a_member_of_the_cluster@2000"),
      r("b", 5.5, 6, nil, "error"), r("b", 6.5, 7, 1)
    ), { a = "2", b = "1" })
    assert.is_true(out.ok, check.format(out))
    assert.same({ writes_ok = 3, writes_fail = 1, writes_unknown = 2,
      reads_ok = 1, reads_other = 2, keys = 2 }, out.counts)
  end)

  it("reports a lost write: the final state below the last acknowledged "
    .. "value, or without the key", function()
    local rep = run(A, { a = "1" })
    assert.same({ "lost write" }, whats(rep))
    assert.matches("final state answered 1, but 2 was acknowledged",
      rep.problems[1].detail, 1, true)
    assert.same({ "final state: a=1", A[2] }, rep.problems[1].lines)
    assert.same({ "lost write" }, whats(run(A, {})))
    -- below what a consistent read had already returned
    assert.same({ "lost write" }, whats(run(with(r("a", 8.5, 9, 4)),
      { a = "2" })))
  end)

  it("reports a stale consistent read: below the last value acknowledged "
    .. "before it was sent, or not found after an ack", function()
    local rep = run(with(r("a", 4.5, 5, 1)), { a = "2" })
    assert.same({ "stale read" }, whats(rep))
    assert.same({ r("a", 4.5, 5, 1), A[2] }, rep.problems[1].lines)
    assert.same({ "stale read" }, whats(run(with(r("a", 2.5, 3, nil)),
      { a = "2" })))
  end)

  it("reports an invented read: a value never sent, a refused write's, "
    .. "or one sent only after the answer", function()
    assert.same({ "invented read" }, whats(run(with(r("a", 4.5, 5, 7)),
      { a = "2" })))
    assert.same({ "invented read" }, whats(run(with(r("b", 4.5, 5, 1)),
      { a = "2" })))
    local rep = run(with(r("a", 5.5, 6.5, 3)), { a = "2" })
    assert.same({ "read of a refused write" }, whats(rep))
    assert.same({ r("a", 5.5, 6.5, 3), A[3] }, rep.problems[1].lines)
    assert.same({ "future read" }, whats(run(with(r("a", 1.2, 2.5, 2)),
      { a = "2" })))
  end)

  it("reports reads going back: a read sent after another's answer sees "
    .. "less", function()
    -- 4 (unknown) seen, then 2 again: each read alone would be fine
    local rep = run(with(r("a", 8.1, 8.2, 4), r("a", 8.3, 8.4, 2)),
      { a = "4" })
    assert.same({ "read went back" }, whats(rep))
    assert.same({ r("a", 8.3, 8.4, 2), r("a", 8.1, 8.2, 4) },
      rep.problems[1].lines)
    -- overlapping reads may disagree
    assert.is_true(run(with(r("a", 8.1, 8.5, 4), r("a", 8.3, 8.6, 2)),
      { a = "4" }).ok)
  end)

  it("reports a final state with a value or key no client wrote", function()
    assert.same({ "invented value" }, whats(run(A, { a = "3" })))
    assert.same({ "invented value" }, whats(run(A, { a = "x" })))
    assert.same({ "invented key" }, whats(run(A, { a = "2", zz = "1" })))
    assert.is_true(run(A, { a = "2", ["nemesis-barrier"] = "1" }).ok)
  end)

  it("refuses a history outside the workload's premises", function()
    assert.same({ "malformed" }, whats(run(with(w("a", 5, 9, 10, "200", "x")))))
    assert.same({ "malformed" }, whats(run(with(w("a", 5, 9, 10)))))
    assert.same({ "malformed" }, whats(run { w("a", 1, 1, 3), w("a", 2, 2, 4) }))
  end)

  it("reads history files, keeping unreadable lines apart", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "wb"))
    f:write(A[1], "\n", r("a", 2.5, 3, 1), "\n", "W c-a a 2 3.0") -- torn
    f:close()
    local ops, bad = check.read_files { path, path .. ".absent" }
    os.remove(path)
    assert.equal(2, #ops)
    assert.equal("W", ops[1].kind)
    assert.equal(1, ops[1].value)
    assert.equal("R", ops[2].kind)
    assert.equal(1, ops[2].value)
    assert.equal(1, #bad)
    assert.matches("unreadable", bad[1])
  end)
end)
