-- Reverse iteration through the Lua binding: it:seek_last() and it:prev(),
-- alone and mixed with seek/next, over the db and over snapshots, through
-- overwrites, deletes, flushes and compactions.

local h = require "spec.helpers"

local key = h.key

-- Every { key, value } from it:start() and it:step() until not valid, in
-- the order visited.
local function walk(it, start, step)
  local out = {}
  local ok = it[start](it)
  while ok do
    assert.is_true(it:valid())
    out[#out + 1] = { it:key(), it:value() }
    ok = it[step](it)
  end
  assert.is_false(it:valid())
  return out
end

local function forward(it) return walk(it, "seek_first", "next") end
local function backward(it) return walk(it, "seek_last", "prev") end

local function reversed(t)
  local out = {}
  for i = #t, 1, -1 do out[#out + 1] = t[i] end
  return out
end

-- Byte order (the engine's), whatever the locale's collation.
local function bytes_less(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = a:byte(i), b:byte(i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

-- The model's live keys, sorted.
local function sorted_rows(model)
  local ks = {}
  for k in pairs(model) do ks[#ks + 1] = k end
  table.sort(ks, bytes_less)
  local out = {}
  for i, k in ipairs(ks) do out[i] = { k, model[k] } end
  return out
end

-- A db in dir with small tables: a few thousand writes make several levels.
local function open_small(dir)
  return h.open(dir .. "/db", { max_memtable_size = 16 * 1024,
                                table_size = 16 * 1024,
                                level1_max_bytes = 64 * 1024,
                                sync = "none" })
end

describe("reverse iteration", function()
  local db
  h.tmpdir_each(function(d) db = open_small(d) end)

  it("walks the reverse of the forward walk, through deletes, overwrites, "
     .. "flush and compact", function()
    local model = {}
    -- binary keys too: a 0 byte, prefixes of one another, 0xff
    local extra = { "", "\0", "a", "a\0", "a\0b", "ab", "k\0ey", "\255",
                    "\255\255" }
    for _, k in ipairs(extra) do
      db:set(k, "x" .. k)
      model[k] = "x" .. k
    end
    for i = 1, 3000 do
      local k = key((i * 7919) % 1500)
      local r = (i * 31) % 10
      if r < 3 then
        db:delete(k)
        model[k] = nil
      else
        local v = h.value_for(k .. ":" .. i, 20 + i % 60)
        db:set(k, v)
        model[k] = v
      end
    end
    -- a long run of deleted keys, and the very first and last keys deleted
    for i = 600, 800 do db:delete(key(i)); model[key(i)] = nil end
    db:delete("")
    model[""] = nil
    db:delete("\255\255")
    model["\255\255"] = nil
    db:set("\255", "")   -- an empty value is a value
    model["\255"] = ""

    local want = sorted_rows(model)
    local function check(phase)
      local it <close> = db:iter()
      local fwd = forward(it)
      assert.equal(#want, #fwd, phase)
      assert.same(want, fwd, phase)
      assert.same(reversed(fwd), backward(it), phase)
    end
    check("memtables and tables")
    db:flush()
    check("after flush")
    db:compact()
    check("after compact")
  end)

  it("seek_last on an empty db gives false and leaves it not valid", function()
    local it <close> = db:iter()
    assert.is_false(it:seek_last())
    assert.is_false(it:valid())
    assert.is_nil(it:key())
    assert.is_false(it:seek_first())
    -- all deleted, in the memtable and then in tables
    for i = 1, 200 do db:set(key(i), "v") end
    db:flush()
    for i = 1, 200 do db:delete(key(i)) end
    local it2 <close> = db:iter()
    assert.is_false(it2:seek_last())
    assert.is_false(it2:valid())
    db:flush()
    local it3 <close> = db:iter()
    assert.is_false(it3:seek_last())
    assert.is_false(it3:valid())
  end)

  it("prev past the first key gives false", function()
    for _, k in ipairs { "b", "d", "f" } do db:set(k, k:upper()) end
    local it <close> = db:iter()
    assert.is_true(it:seek_last())
    assert.equal("f", it:key())
    assert.equal("F", it:value())
    assert.is_true(it:prev())
    assert.equal("d", it:key())
    assert.is_true(it:prev())
    assert.equal("b", it:key())
    assert.equal("B", it:value())
    assert.is_false(it:prev())
    assert.is_false(it:valid())
    assert.is_nil(it:key())
    -- from seek_first and from a seek to the first key, too
    assert.is_true(it:seek_first())
    assert.is_false(it:prev())
    assert.is_true(it:seek("a"))
    assert.equal("b", it:key())
    assert.is_false(it:prev())
    -- and it can be positioned again afterwards
    assert.is_true(it:seek_last())
    assert.equal("f", it:key())
  end)

  it("mixes next and prev", function()
    for _, k in ipairs { "b", "d", "f", "h" } do db:set(k, k:upper()) end
    db:delete("d")
    db:set("f", "F2")
    local it <close> = db:iter()
    assert.is_true(it:seek("c"))       -- d is deleted: f
    assert.equal("f", it:key())
    assert.equal("F2", it:value())
    assert.is_true(it:prev())          -- back over the deleted d
    assert.equal("b", it:key())
    assert.is_true(it:next())
    assert.equal("f", it:key())
    assert.is_true(it:next())
    assert.equal("h", it:key())
    assert.is_false(it:next())         -- off the end
    assert.is_true(it:seek_last())
    assert.equal("h", it:key())
    assert.is_true(it:prev())
    assert.equal("f", it:key())
    assert.equal("F2", it:value())
    assert.is_true(it:next())
    assert.equal("h", it:key())
    assert.equal("H", it:value())
    assert.is_true(it:seek("zzz") == false)
    assert.is_true(it:seek_last())
    assert.equal("h", it:key())
  end)

  it("agrees with a model when stepping randomly in both directions",
     function()
    local model = {}
    for i = 1, 1200 do
      local k = key((i * 389) % 700)
      if i % 4 == 0 then
        db:delete(k)
        model[k] = nil
      else
        local v = "v" .. i
        db:set(k, v)
        model[k] = v
      end
      if i == 600 then db:flush() end
    end
    local rows = sorted_rows(model)
    local index = {}
    for j, kv in ipairs(rows) do index[kv[1]] = j end
    -- position of the first live key >= k
    local function lower(k)
      local lo, hi = 1, #rows + 1
      while lo < hi do
        local mid = (lo + hi) // 2
        if bytes_less(rows[mid][1], k) then lo = mid + 1 else hi = mid end
      end
      return lo
    end
    local rnd = 12345
    local function rand(n)
      rnd = (rnd * 1103515245 + 12345) % 2147483648
      return rnd % n
    end
    local it <close> = db:iter()
    for _ = 1, 60 do
      local probe = key(rand(750))
      local pos = lower(probe)
      assert.equal(pos <= #rows, it:seek(probe))
      for _ = 1, 25 do
        if pos < 1 or pos > #rows then break end
        assert.equal(rows[pos][1], it:key())
        assert.equal(rows[pos][2], it:value())
        assert.equal(pos, index[it:key()])
        if rand(2) == 0 then
          pos = pos + 1
          assert.equal(pos <= #rows, it:next())
        else
          pos = pos - 1
          assert.equal(pos >= 1, it:prev())
        end
      end
    end
  end)

  it("over a snapshot does not see later writes", function()
    local s <close> = h.snapshot_then_rewrite(db, 400)
    db:set(key(0), "before all")
    db:set(key(999), "after all")
    db:flush()
    db:compact()
    local it <close> = s:iter()
    local back = backward(it)
    assert.equal(400, #back)
    for j, kv in ipairs(back) do
      local i = 401 - j
      assert.same({ key(i), "old" .. i }, kv)
    end
    assert.same(reversed(back), forward(it))
    -- the db's own iterator sees the new state, backward too
    local now <close> = db:iter()
    assert.is_true(now:seek_last())
    assert.equal(key(999), now:key())
    assert.is_true(now:prev())
    assert.equal(key(399), now:key())
    assert.equal("new399", now:value())
    -- an iterator at the snapshot's seq through db:iter(at) agrees
    local at <close> = db:iter(s.seq)
    assert.same(back, backward(at))
  end)

  it("keeps its view while writes and flushes go on during a backward "
     .. "walk", function()
    for i = 1, 600 do db:set(key(i), "v" .. i) end
    local it <close> = db:iter()
    local rows, n = {}, 0
    local ok = it:seek_last()
    while ok do
      n = n + 1
      rows[#rows + 1] = { it:key(), it:value() }
      -- around the position: the key just before (next to be shown), a
      -- new key in between, the key just shown; and now and then a flush
      local i = 601 - n
      db:delete(key(i - 1))
      db:set(key(i - 1) .. "\0", "added")
      db:set(key(i), "changed")
      if n % 150 == 0 then db:flush() end
      ok = it:prev()
    end
    assert.equal(600, #rows)
    for j, kv in ipairs(rows) do
      local i = 601 - j
      assert.same({ key(i), "v" .. i }, kv)
    end
    -- a new iterator sees the writes: each key deleted, then set again
    -- ("changed") one step later, and an added key just before each
    local want = {}
    for i = 600, 1, -1 do
      want[#want + 1] = { key(i), "changed" }
      want[#want + 1] = { key(i - 1) .. "\0", "added" }
    end
    local now <close> = db:iter()
    assert.same(want, backward(now))
    assert.same(reversed(want), forward(now))
  end)

  it("refuses prev on an iterator that is not valid", function()
    db:set("a", "1")
    local it <close> = db:iter()
    -- never positioned
    assert.matches("needs a valid iterator", h.error_of(it.prev, it))
    -- fallen off the front
    assert.is_true(it:seek_first())
    assert.is_false(it:prev())
    assert.matches("needs a valid iterator", h.error_of(it.prev, it))
    -- fallen off the end
    assert.is_true(it:seek_last())
    assert.is_false(it:next())
    assert.matches("needs a valid iterator", h.error_of(it.prev, it))
    -- still usable
    assert.is_true(it:seek_last())
    assert.equal("a", it:key())
  end)

  it("raises on a closed iterator", function()
    db:set("a", "1")
    local it = db:iter()
    assert.is_true(it:seek_last())
    it:close()
    assert.matches("closed", h.error_of(it.seek_last, it))
    assert.matches("closed", h.error_of(it.prev, it))
    assert.has_no.errors(function() it:close() end)
  end)
end)

describe("db:rscan and snapshot:rscan", function()
  local db
  h.tmpdir_each(function(d) db = open_small(d) end)

  local function rows(...)
    local out = {}
    for k, v in ... do out[#out + 1] = { k, v } end
    return out
  end

  it("gives exactly the reverse of scan for any bounds, through tables",
    function()
      math.randomseed(11)
      local model = {}
      for i = 1, 3000 do
        local k = key(math.random(0, 999))
        if math.random() < 0.2 then
          db:delete(k); model[k] = nil
        else
          local v = "v" .. i; db:set(k, v); model[k] = v
        end
      end
      db:flush()
      db:set(key(500), "in the memtable"); model[key(500)] = "in the memtable"
      -- bounds on keys, between keys, outside the range, open, inverted
      local probes = { nil, key(0), key(1), key(500), key(500) .. "x",
        key(999), "a", "z", "key0002", "" }
      for i = 1, 10 do
        for j = 1, 10 do
          local lo, hi = probes[i], probes[j]
          assert.same(reversed(rows(db:scan(lo, hi))), rows(db:rscan(lo, hi)),
            string.format("rscan(%s, %s)", tostring(lo), tostring(hi)))
        end
      end
      assert.same(reversed(sorted_rows(model)), rows(db:rscan()))
    end)

  it("reads the state as of a sequence number and through a snapshot",
    function()
      db:set("a", "1"); db:set("b", "1")
      local at = db:set("c", "1")
      local snap <close> = db:snapshot()
      db:delete("b"); db:set("d", "2"); db:set("a", "2")
      local old = { { "c", "1" }, { "b", "1" }, { "a", "1" } }
      assert.same(old, rows(db:rscan(nil, nil, at)))
      assert.same(old, rows(snap:rscan()))
      assert.same({ { "c", "1" }, { "b", "1" } }, rows(snap:rscan("b", "c")))
      assert.same({ { "d", "2" }, { "c", "1" }, { "a", "2" } },
        rows(db:rscan()))
    end)

  it("frees its iterator when the loop breaks, and refuses bad bounds",
    function()
      for i = 1, 50 do db:set(key(i), "v") end
      local seen = {}
      for k in db:rscan() do
        seen[#seen + 1] = k
        if #seen == 3 then break end
      end
      assert.same({ key(50), key(49), key(48) }, seen)
      assert.equal(0, db:stats().live_iterators)
      for _, bad in ipairs { 42, {}, false } do
        assert.matches("bad argument", h.error_of(function()
          for _ in db:rscan(bad) do end
        end))
        assert.matches("bad argument", h.error_of(function()
          for _ in db:rscan(nil, bad) do end
        end))
      end
      assert.equal(0, db:stats().live_iterators)
    end)
end)
