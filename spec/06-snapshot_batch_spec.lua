-- Snapshots (a pinned view that outlives overwrites, flushes and
-- compactions) and batches (atomic, invisible until commit).

local h = require "spec.helpers"

local key = h.key

describe("snapshot", function()
  local dir, db
  h.tmpdir_each(function(d)
    dir = d
    db = h.open(dir .. "/db", { max_memtable_size = 16 * 1024 })
  end)

  it("has an integer seq equal to the last write's", function()
    db:set("a", "1")
    local last = db:set("b", "2")
    local s <close> = db:snapshot()
    assert.equal("integer", math.type(s.seq))
    assert.equal(last, s.seq)
    db:set("c", "3")
    assert.equal(last, s.seq)
  end)

  it("sees old values after overwrite, delete, flush and compact", function()
    local s <close> = h.snapshot_then_rewrite(db, 500)
    db:set("later", "x")
    db:flush()
    db:compact()
    for i = 1, 500 do assert.equal("old" .. i, s:get(key(i))) end
    assert.is_nil(s:get("later"))
    local rows = h.collect(s.scan, s, nil, nil)
    assert.equal(500, #rows)
    for j, kv in ipairs(rows) do
      assert.same({ key(j), "old" .. j }, kv)
    end
    -- and the db itself shows the new state
    assert.is_nil(db:get(key(2)))
    assert.equal("new1", db:get(key(1)))
    assert.equal("x", db:get("later"))
    assert.equal("old7", db:get(key(7), s.seq))
  end)

  it("scans exactly its contents while writes continue", function()
    for i = 1, 1000 do db:set(key(i), "v" .. i) end
    local s <close> = db:snapshot()
    local rows, n = {}, 0
    for k, v in s:scan(nil, nil) do
      n = n + 1
      rows[#rows + 1] = { k, v }
      -- writes in the middle of the scan: new keys, overwrites, deletes,
      -- and now and then a flush
      db:set(key(1000 + n), "added")
      db:set(key(n), "changed")
      db:delete(key(1001 - n))
      if n % 250 == 0 then db:flush() end
    end
    assert.equal(1000, #rows)
    for j, kv in ipairs(rows) do assert.same({ key(j), "v" .. j }, kv) end
    -- a second scan of the same snapshot, after all that, agrees
    local again = h.collect(s.scan, s, key(1), key(2000))
    assert.same(rows, again)
    -- while the db moved on: key j <= 500 was changed then deleted, key j >
    -- 500 deleted then changed, and 1000 keys were added
    for j = 1, 1000 do
      assert.equal(j > 500 and "changed" or nil, db:get(key(j)))
    end
    assert.equal(1500, #h.collect(db.scan, db, nil, nil))
  end)

  it("is released by <close> and by release()", function()
    db:set("a", "1")
    do
      local s <close> = db:snapshot()
      assert.equal(1, db:stats().live_snapshots)
      assert.equal("1", s:get("a"))
    end
    assert.equal(0, db:stats().live_snapshots)
    local s = db:snapshot()
    s:release()
    assert.equal(0, db:stats().live_snapshots)
    assert.matches("closed", h.error_of(s.get, s, "a"))
    assert.has_no.errors(function() s:release() end)
  end)

  it("lets compaction drop old versions once released", function()
    for i = 1, 500 do db:set(key(i), h.value_for(key(i), 200)) end
    local s = db:snapshot()
    for i = 1, 500 do db:set(key(i), h.value_for(key(i) .. "2", 200)) end
    db:compact()
    local pinned = db:stats().total_size_bytes
    assert.equal(h.value_for(key(9), 200), s:get(key(9)))
    s:release()
    db:compact()
    local free = db:stats().total_size_bytes
    assert.is_true(free * 10 < pinned * 7,
      string.format("size %d with snapshot, %d after release", pinned, free))
  end)

  it("keeps closed iterators and snapshots from crashing", function()
    db:set("a", "1")
    local it_ = db:iter()
    it_:seek("a")
    it_:close()
    assert.matches("closed", h.error_of(it_.key, it_))
    assert.has_no.errors(function() it_:close() end)
  end)
end)

describe("batch", function()
  local dir, db
  h.tmpdir_each(function(d)
    dir = d
    db = h.open(dir .. "/db")
  end)

  it("is invisible before commit", function()
    db:set("x", "old")
    local b = db:batch()
    b:set("x", "new")
    b:set("y", "1")
    b:delete("z")
    db:set("z", "kept-until-commit")
    assert.equal("old", db:get("x"))
    assert.is_nil(db:get("y"))
    assert.equal(2, #h.collect(db.scan, db, nil, nil))
    b:commit()
    assert.equal("new", db:get("x"))
    assert.equal("1", db:get("y"))
    assert.is_nil(db:get("z"))
  end)

  it("commits with consecutive seqs and returns the last", function()
    local before = db:set("a", "0")
    local b = db:batch()
    for i = 1, 10 do b:set(key(i), "b" .. i) end
    b:delete("a")
    local last = b:commit()
    assert.equal("integer", math.type(last))
    assert.equal(before + 11, last)
    assert.equal(last, db:stats().seq)
    -- every operation of the batch has its own seq, in order
    assert.equal("0", db:get("a", before + 10))
    assert.is_nil(db:get("a", last))
    assert.is_nil(db:get(key(2), before + 1))
    assert.equal("b2", db:get(key(2), before + 2))
    assert.equal(last + 1, db:set("after", "1"))
  end)

  it("is all or nothing to a snapshot taken around it", function()
    for i = 1, 100 do db:set(key(i), "0") end
    local s1 = db:snapshot()
    local b = db:batch()
    for i = 1, 100 do b:set(key(i), "1") end
    b:commit()
    local s2 = db:snapshot()
    local r1, r2 = {}, {}
    for _, v in s1:scan(nil, nil) do r1[v] = (r1[v] or 0) + 1 end
    for _, v in s2:scan(nil, nil) do r2[v] = (r2[v] or 0) + 1 end
    s1:release(); s2:release()
    assert.same({ ["0"] = 100 }, r1)
    assert.same({ ["1"] = 100 }, r2)
  end)

  it("survives reopen as a whole", function()
    local b = db:batch()
    for i = 1, 50 do b:set(key(i), "v" .. i) end
    b:delete(key(3))
    b:commit()
    db:close()
    db = h.open(dir .. "/db")
    assert.equal("v1", db:get(key(1)))
    assert.equal("v50", db:get(key(50)))
    assert.is_nil(db:get(key(3)))
  end)

  it("is atomic across a crash: a torn batch record leaves none of it",
    function()
      db:close()
      db = h.open(dir .. "/db", { sync = "none" })
      db:set("before", "1")
      local b = db:batch()
      for i = 1, 50 do b:set(key(i), "v" .. i) end
      b:commit()
      db:close()
      db = nil
      local logs = h.list(dir .. "/db", "^wal%.log%.%d+$")
      assert.equal(1, #logs)
      local path = dir .. "/db/" .. logs[1]
      local recs = h.wal_records(path)
      assert.equal(3, #recs) -- the log's start marker, "before", the batch
      h.truncate(path, recs[3].offset + recs[3].size - 1)
      db = h.open(dir .. "/db")
      assert.equal("1", db:get("before"))
      assert.same({ { "before", "1" } }, h.collect(db.scan, db, nil, nil))
    end)

  it("commits an empty batch as a no-op returning the current seq", function()
    local s = db:set("a", "1")
    assert.equal(s, db:batch():commit())
    assert.equal(s, db:stats().seq)
  end)
end)
