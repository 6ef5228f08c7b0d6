-- Compaction: snapshots that survive it, iterators that are not disturbed
-- by it, levels that never overlap, history that is reclaimed, and a
-- process killed -9 while it compacts.

local h = require "spec.helpers"
local lunakv = require "lunakv"

-- Tiny sizes so a few thousand writes run many flushes and compactions.
local SMALL = {
  max_memtable_size = 8 * 1024,
  max_l0_files = 2,
  table_size = 8 * 1024,
  level1_max_bytes = 32 * 1024,
  sync = "none",
}

local function key(i) return string.format("k%05d", i) end

local assert_levels_disjoint = h.assert_levels_disjoint

local function total_bytes(db)
  local n = 0
  for _, t in ipairs(db:tables()) do n = n + t.size end
  return n
end

describe("compaction", function()
  local dir, db

  before_each(function() dir = h.tmpdir() .. "/db" end)
  after_each(function()
    if db then db:close() end
    db = nil
    h.cleanup()
  end)

  it("runs in the background and keeps levels 1.. free of overlaps", function()
    db = lunakv.open(dir, SMALL)
    math.randomseed(7)
    local want = {}
    for i = 1, 6000 do
      local k = key(math.random(1, 2000))
      local v = "v" .. i .. string.rep("x", i % 40)
      db:set(k, v)
      want[k] = v
      -- a table every 500 writes at the least: a flush thread that fell
      -- behind could otherwise merge the frozen memtables into so few
      -- tables that no compaction is ever due
      if i % 500 == 0 then db:flush() end
    end
    db:flush()
    -- under load the flush thread may fall behind and merge most of the
    -- frozen memtables into one or two tables, so the compaction they
    -- call for can still be due when flush() returns: let it run
    local st = h.wait_until(function()
      local s = db:stats()
      return s.compaction_pending == 0 and s
    end, 30)
    assert.is_true(st.compactions > 0, "no compaction ran")
    assert.is_true(st.sstables_per_level[1] <= SMALL.max_l0_files + 12)
    assert_levels_disjoint(db)
    for k, v in pairs(want) do assert.equal(v, db:get(k)) end
  end)

  -- Deterministic: the compaction thread is held inside its first output
  -- table's creation (the fault env's pause) while stats() is asked.
  it("reports compaction_pending while a compaction runs, 0 once it is done",
    function()
      local core = require "lunakv.core"
      local fe = core.fault_env()
      -- overlapping tables while L0 may hold many: flushes place the
      -- first three in L2, L1 and L0 (each overlaps the one below), the
      -- fourth in L0
      local roomy = { max_memtable_size = 64 * 1024, max_l0_files = 50,
        l0_slowdown_files = 60, l0_stop_files = 70, sync = "none", env = fe }
      db = lunakv.open(dir, roomy)
      for round = 1, 4 do
        for i = 1, 300 do db:set(key(i), "r" .. round) end
        db:flush()
      end
      assert.equal(2, db:stats().sstables_per_level[1])
      assert.equal(0, db:stats().compaction_pending)
      db:close()
      -- reopened with max_l0_files = 2, a compaction is due at once
      fe:pause("create", ".sst")
      local small = {}
      for k, v in pairs(SMALL) do small[k] = v end
      small.env = fe
      db = lunakv.open(dir, small)
      finally(function() fe:resume() end)
      assert.is_true(fe:wait_paused(10), "no compaction started")
      local st = db:stats()
      assert.equal(1, st.compaction_pending)
      fe:resume()
      st = h.wait_until(function()
        local s = db:stats()
        return s.compaction_pending == 0 and s
      end, 30)
      assert.is_true(st.compactions >= 1)
      assert.is_nil(st.bg_error) -- a string only after a failure
      -- idle means idle: nothing is due in the tree that is left
      assert.is_true(st.sstables_per_level[1] < SMALL.max_l0_files)
      assert.equal("r4", db:get(key(1)))
    end)

  it("keeps what a snapshot sees through flush and full compaction", function()
    db = lunakv.open(dir, SMALL)
    for i = 1, 500 do db:set(key(i), "old" .. i) end
    local snap = db:snapshot()
    for i = 1, 500 do
      if i % 2 == 0 then db:set(key(i), "new" .. i) else db:delete(key(i)) end
    end
    db:flush()
    db:compact()
    -- a full compaction leaves nothing due (no level over budget)
    assert.equal(0, db:stats().compaction_pending)
    for i = 1, 500 do
      assert.equal("old" .. i, snap:get(key(i)))
      assert.equal(i % 2 == 0 and ("new" .. i) or nil, db:get(key(i)))
    end
    local n = 0
    for k, v in snap:scan() do
      n = n + 1
      assert.equal("old" .. tonumber(k:sub(2)), v)
    end
    assert.equal(500, n)
    snap:release()
  end)

  it("reclaims shadowed versions and tombstones once no snapshot needs them",
    function()
      db = lunakv.open(dir, SMALL)
      local snaps = {}
      for round = 1, 6 do
        for i = 1, 400 do db:set(key(i), string.rep(tostring(round), 60)) end
        snaps[round] = db:snapshot() -- pins this round's versions
      end
      for i = 1, 200 do db:delete(key(i)) end
      db:compact()
      local pinned = total_bytes(db)
      for round = 1, 6 do
        assert.equal(string.rep(tostring(round), 60), snaps[round]:get(key(7)))
      end
      local first_seq = snaps[1].seq
      for round = 1, 6 do snaps[round]:release() end
      db:compact()
      local after = total_bytes(db)
      assert.is_true(after * 4 < pinned, string.format(
        "table bytes %d -> %d: history not reclaimed", pinned, after))
      assert.is_nil(db:get(key(1)))
      assert.equal(string.rep("6", 60), db:get(key(300)))
      assert.equal(200, #h.collect(db.scan, db, nil, nil))
      -- the history is gone: at round 1's sequence no version is left
      -- (key 300's only version is round 6's, written after)
      assert.is_nil(db:get(key(300), first_seq))
      assert_levels_disjoint(db)
    end)

  it("gives a scan one consistent view while writes, flushes and compactions run",
    function()
      db = lunakv.open(dir, SMALL)
      for i = 1, 1000 do db:set(key(i), "a" .. i) end
      local seen, i = {}, 0
      for k, v in db:scan() do
        i = i + 1
        seen[#seen + 1] = k .. "=" .. v
        -- rewrite and delete around the cursor, then force flush + compact
        db:set(key(i), "b" .. i)
        db:delete(key(1001 - i))
        db:set("k0" .. i, "new")
        if i % 200 == 0 then db:flush(); db:compact() end
      end
      assert.equal(1000, #seen)
      for j = 1, 1000 do assert.equal(key(j) .. "=a" .. j, seen[j]) end
    end)

  it("cuts its output tables where the tables a level further down end",
    function()
      -- 2000 keys, fully compacted into L2 (too big for a 32 KiB L1)
      local opts = { max_memtable_size = 1024 * 1024, table_size = 8 * 1024,
                     level1_max_bytes = 32 * 1024, sync = "none" }
      db = lunakv.open(dir, opts)
      for i = 1, 2000 do db:set(key(i), h.value_for(key(i), 100)) end
      db:flush()
      db:compact()
      for _, t in ipairs(db:tables()) do assert.equal(2, t.level) end
      db:close()
      -- every 5th key anew, as one L0 table that a compaction merges into
      -- L1 with L2 below it (an L1 this big never pushes down)
      opts.level1_max_bytes = 64 * 1024 * 1024
      opts.max_l0_files = 1
      db = lunakv.open(dir, opts)
      for i = 5, 2000, 5 do db:set(key(i), h.value_for(key(i), 101)) end
      db:flush()
      h.wait_until(function() return db:stats().compaction_pending == 0 end, 20)
      local l1, l2 = {}, {}
      for _, t in ipairs(db:tables()) do
        table.insert(t.level == 1 and l1 or l2, t)
      end
      table.sort(l1, function(a, b) return a.smallest < b.smallest end)
      assert.is_true(#l1 >= 3, #l1 .. " L1 tables")
      -- no L2 table spans a gap between two L1 tables: pushing any one L1
      -- table down later merges it with whole L2 tables only
      for i = 2, #l1 do
        local a, b = l1[i - 1], l1[i]
        for _, t in ipairs(l2) do
          assert.is_false(t.smallest <= a.largest and t.largest >= b.smallest,
            string.format("L2 [%s..%s] spans the cut between L1 ..%s and %s..",
                          t.smallest, t.largest, a.largest, b.smallest))
        end
      end
      for i = 1, 2000 do
        assert.equal(h.value_for(key(i), i % 5 == 0 and 101 or 100), db:get(key(i)))
      end
    end)

  -- The versions of a round end up in the memtable, in L0 and in deeper
  -- levels; get(k, at) must find each round's wherever it lies, before
  -- and after a full compaction merges them into one level.
  it("reads pinned history with get(k, at) from every level it sits in, and after a full compaction",
    function()
      -- L0 may hold many tables, so no compaction runs before the check:
      -- the four flushes land in L2, L1 and L0 (each overlaps the one
      -- below), round 5 stays in the memtable
      db = lunakv.open(dir, { max_memtable_size = SMALL.max_memtable_size,
        max_l0_files = 50, l0_slowdown_files = 60, l0_stop_files = 70,
        sync = "none" })
      local seqs, snaps = {}, {}
      for round = 1, 5 do
        for i = 1, 200 do db:set(key(i), "r" .. round) end
        seqs[round] = db:last_seq()
        snaps[round] = db:snapshot() -- keep history alive until the end
        if round < 5 then db:flush() end -- round 5 stays in the memtable
      end
      local function check()
        for round = 1, 5 do
          for i = 1, 200, 37 do
            assert.equal("r" .. round, db:get(key(i), seqs[round]))
          end
        end
      end
      local levels = {}
      for _, t in ipairs(db:tables()) do levels[#levels + 1] = t.level end
      table.sort(levels)
      assert.equal("0 0 1 2", table.concat(levels, " "))
      assert.is_true(db:stats().memtable_keys > 0)
      check()
      db:compact()
      local deepest = 0
      for _, t in ipairs(db:tables()) do deepest = math.max(deepest, t.level) end
      for _, t in ipairs(db:tables()) do assert.equal(deepest, t.level) end
      check()
      for round = 1, 5 do snaps[round]:release() end
    end)
end)

-- A writer that cycles over 500 keys with tiny memtables (so flushes and
-- compactions run all the time) and prints the index of each write that
-- db:set has acknowledged.
local WRITER = h.prelude .. [[
local lunakv = require "lunakv"
io.stdout:setvbuf("line")
local db = lunakv.open(arg[1], {
  max_memtable_size = 8 * 1024, max_l0_files = 2, table_size = 8 * 1024,
  level1_max_bytes = 32 * 1024, sync = "none" })
local round = arg[2]
for i = 1, 100000000 do
  db:set(string.format("k%03d", i % 500), round .. ":" .. i .. string.rep("z", i % 64))
  io.stdout:write(i, "\n")
end
]]

describe("a process killed -9 during compactions", function()
  after_each(function() h.cleanup() end)

  it("never loses an acknowledged write and always reopens #crash", function()
    local dir = h.tmpdir() .. "/db"
    local work = h.tmpdir()
    local script = work .. "/writer.lua"
    h.write_file(script, WRITER)
    local expect = {} -- key -> value the db must hold
    math.randomseed(os.time())
    for round = 1, 6 do
      local pid, p = h.spawn(h.lua .. " " .. h.quote(script) .. " " ..
        h.quote(dir) .. " R" .. round, work)
      local target = math.random(500, 6000)
      h.wait_until(function() return #h.lines(p.out) >= target end, 60,
        function() return h.exists(p.err) and h.read_file(p.err) or "" end)
      h.kill(pid, "KILL")
      h.wait(pid)
      local acked = h.lines(p.out)
      local last = tonumber(acked[#acked])
      local db = lunakv.open(dir) -- must open, whatever the crash hit
      for i = math.max(1, last - 499), last do
        local k = string.format("k%03d", i % 500)
        expect[k] = ("R%d:%d%s"):format(round, i, string.rep("z", i % 64))
      end
      -- the write in flight when the kill came may or may not have landed
      local nxt = last + 1
      local knext = string.format("k%03d", nxt % 500)
      local vnext = ("R%d:%d%s"):format(round, nxt, string.rep("z", nxt % 64))
      if db:get(knext) == vnext then expect[knext] = vnext end
      for k, v in pairs(expect) do
        assert.equal(v, db:get(k), "round " .. round .. " key " .. k)
      end
      assert_levels_disjoint(db)
      db:close()
    end
    local db = lunakv.open(dir)
    assert.is_true(db:stats().sstable_count > 0)
    db:close()
  end)
end)
