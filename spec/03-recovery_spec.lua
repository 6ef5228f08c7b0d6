-- Recovery: what a closed, reopened or killed database keeps.

local h = require "spec.helpers"

local key = h.key

-- A child script: opens arg[1] with sync = arg[2], writes key i = value
-- for i = 1, 2, ... and prints each key once db:set has returned.
local WRITER = h.prelude .. [[
local lunakv = require "lunakv"
io.stdout:setvbuf("line")
local db = lunakv.open(arg[1], { sync = arg[2],
  max_memtable_size = tonumber(arg[3]) or 64 * 1024 })
for i = 1, 10000000 do
  local k = string.format("key%06d", i)
  db:set(k, "value-of-" .. k .. string.rep("x", i % 50))
  io.stdout:write(k, "\n")
end
]]

local function writer_value(i)
  local k = key(i)
  return "value-of-" .. k .. string.rep("x", i % 50)
end

describe("recovery", function()
  local dir, db
  h.tmpdir_each(function(d) dir = d .. "/db" end)

  it("keeps flushed and unflushed data across close and reopen", function()
    db = h.open(dir, { max_memtable_size = 16 * 1024 })
    for i = 1, 3000 do db:set(key(i), h.value_for(key(i))) end
    for i = 1, 3000, 10 do db:delete(key(i)) end
    local seq = db:stats().seq
    db:close()
    db = h.open(dir, { max_memtable_size = 16 * 1024 })
    for i = 1, 3000 do
      if i % 10 == 1 then
        assert.is_nil(db:get(key(i)))
      else
        assert.equal(h.value_for(key(i)), db:get(key(i)))
      end
    end
    assert.equal(seq, db:stats().seq)
    -- sequence numbers go on from where they were
    assert.equal(seq + 1, db:set("next", "1"))
  end)

  it("recovers data that is only in the WAL", function()
    db = h.open(dir) -- 4 MiB memtable: nothing is flushed
    for i = 1, 500 do db:set(key(i), h.value_for(key(i))) end
    db:set("empty", "")
    db:delete(key(3))
    assert.equal(0, db:stats().flushes)
    db:close()
    assert.is_true(#h.list(dir, "^wal%.log%.%d%d%d%d%d%d$") >= 1)
    db = h.open(dir)
    for i = 1, 500 do
      if i == 3 then
        assert.is_nil(db:get(key(i)))
      else
        assert.equal(h.value_for(key(i)), db:get(key(i)))
      end
    end
    assert.equal("", db:get("empty"))
  end)

  it("uses the log_file_name option for the WAL", function()
    db = h.open(dir, { log_file_name = "journal", sync = "none" })
    db:set("a", "1")
    assert.is_true(#h.list(dir, "^journal%.%d%d%d%d%d%d$") >= 1)
    assert.equal(0, #h.list(dir, "^wal%.log"))
    db:close()
    db = h.open(dir, { log_file_name = "journal" })
    assert.equal("1", db:get("a"))
  end)

  it("survives many reopen cycles without accumulating files", function()
    local counts = {}
    for round = 1, 25 do
      db = h.open(dir, { max_memtable_size = 8 * 1024 })
      for i = 1, 100 do
        db:set(key(round * 1000 + i), "r" .. round)
      end
      if round % 5 == 0 then db:flush() end
      -- every earlier round is still there
      for r = 1, round do
        assert.equal("r" .. r, db:get(key(r * 1000 + 1)), "round " .. round)
        assert.equal("r" .. r, db:get(key(r * 1000 + 100)), "round " .. round)
      end
      db:close()
      db = nil
      counts[round] = #h.list(dir, "^wal%.")
    end
    db = h.open(dir)
    assert.equal(2500, #h.collect(db.scan, db, nil, nil))
    for round = 1, 25 do
      assert.is_true(counts[round] <= 2, "WAL files after round " .. round ..
        ": " .. counts[round])
    end
  end)

  -- Kill -9 a writer and check that every key it reported is there (but
  -- for the last may_lose ones, which must then be a suffix).
  local function kill_writer(sync, acked_wanted, may_lose, memtable_bytes)
    local work = h.tmpdir()
    local script = work .. "/writer.lua"
    h.write_file(script, WRITER)
    local pid, p = h.spawn(h.lua .. " " .. h.quote(script) .. " " ..
      h.quote(dir) .. " " .. sync .. " " .. (memtable_bytes or ""), work)
    h.wait_until(function() return #h.lines(p.out) >= acked_wanted end, 30,
      function() return "writer stderr: " .. (h.exists(p.err) and
        h.read_file(p.err) or "") end)
    h.kill(pid, "KILL")
    local _, how, code = h.wait(pid)
    assert.equal("signal", how, "the writer ended before it was killed: " ..
      tostring(how) .. " " .. tostring(code) .. " " .. h.read_file(p.err))
    local acked = h.lines(p.out)
    assert.is_true(#acked >= acked_wanted)
    db = h.open(dir)
    local missing, wrong = {}, {}
    for n, k in ipairs(acked) do
      assert.equal(key(n), k)
      local v = db:get(k)
      if v == nil then missing[#missing + 1] = n
      elseif v ~= writer_value(n) then wrong[#wrong + 1] = k end
    end
    assert.same({}, wrong)
    may_lose = may_lose or 0
    assert.is_true(#missing <= may_lose, #missing .. " acknowledged writes lost")
    for i, n in ipairs(missing) do -- a suffix: the last ones, no holes
      assert.equal(#acked - #missing + i, n)
    end
    -- whatever got in after the last ack continues the acknowledged keys
    -- with no hole: the db holds key(1) .. key(m) and nothing else
    local all = h.collect(db.scan, db)
    for i, kv in ipairs(all) do
      assert.equal(key(i), kv[1])
      assert.equal(writer_value(i), kv[2])
    end
    assert.is_true(#all >= #acked - #missing)
    -- and the reopened db takes writes
    db:set("after", "crash")
    db:close()
    db = h.open(dir)
    assert.equal("crash", db:get("after"))
    assert.equal(writer_value(1), db:get(key(1)))
  end

  it("loses no acknowledged write when a sync=always writer is killed -9",
    function()
      kill_writer("always", 300)
    end)

  it("loses no acknowledged write when a sync=none writer is killed -9",
    function()
      kill_writer("none", 3000)
    end)

  -- SYNC=batch writes the log every WAL_BUFFER_SIZE (100) writes: a kill
  -- loses at most the 99 since. The 4 MiB memtable takes every write, so
  -- no memtable switch writes the log out for it: writing out only at
  -- switches loses all of them here, every time.
  it("loses fewer than WAL_BUFFER_SIZE acknowledged writes when a sync=batch writer is killed -9",
    function()
      kill_writer("batch", 3000, 99, 4 * 1024 * 1024)
    end)
end)
