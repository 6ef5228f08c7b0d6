-- Damaged files: a WAL with a bad or torn record, a table with flipped
-- bytes, a damaged or missing MANIFEST, and a LOCK held by someone else.
-- Offsets follow c/engine/wal_format.md and c/engine/sst_format.md.

local h = require "spec.helpers"
local lunakv = require "lunakv"

local key = h.key
local function val(i) return h.value_for(key(i), 100) end

local plain = h.plain

-- Assert that err is a corruption report naming file.
local function assert_corrupt(err, file)
  assert.is_string(err)
  assert.matches("corrupt", err:lower())
  assert.matches(plain(file), err)
end

describe("corruption", function()
  local dir, db
  h.tmpdir_each(function(d) dir = d .. "/db" end)

  describe("of the WAL", function()
    -- 100 keys, one WAL record each, only in the WAL. Returns the log's path
    -- and its records (recs[i] holds key i).
    local function wal_only(n)
      db = h.open(dir, { sync = "none" })
      for i = 1, n do db:set(key(i), val(i)) end
      db:close()
      db = nil
      assert.same({}, h.list(dir, "%.sst$"))
      local logs = h.list(dir, "^wal%.log%.%d%d%d%d%d%d$")
      assert.equal(1, #logs)
      local path = dir .. "/" .. logs[1]
      local recs, size = h.wal_records(path)
      -- a log starts with a marker (a batch of nothing: 12 payload bytes)
      -- saying where its sequence numbers start (wal_format.md)
      assert.equal(n + 1, #recs)
      assert.equal(12, table.remove(recs, 1).len)
      assert.equal(size, recs[n].offset + recs[n].size)
      return path, recs
    end

    -- After damage at record `first_bad`: keys before it present with their
    -- values, none from it on; then new writes survive another reopen.
    local function check_prefix(first_bad, n)
      db = h.open(dir)
      -- what was cut is reported, not printed: stats say where and how much
      local st = db:stats()
      assert.is_true(st.wal_dropped_bytes > 0)
      assert.matches("wal%.log%.%d+: .* at offset %d+", st.recovery)
      for i = 1, first_bad - 1 do
        assert.equal(val(i), db:get(key(i)), key(i))
      end
      for i = first_bad, n do
        assert.is_nil(db:get(key(i)), key(i))
      end
      assert.equal(first_bad - 1, #h.collect(db.scan, db, nil, nil))
      for i = 1, 20 do db:set("new" .. i, "after-" .. i) end
      db:close()
      db = h.open(dir)
      for i = 1, 20 do assert.equal("after-" .. i, db:get("new" .. i)) end
      for i = 1, first_bad - 1 do assert.equal(val(i), db:get(key(i))) end
      for i = first_bad, n do assert.is_nil(db:get(key(i))) end
    end

    it("keeps the clean prefix before a record with a flipped byte", function()
      local path, recs = wal_only(100)
      local r = recs[50]
      h.flip_byte(path, r.offset + 8 + r.len // 2)
      check_prefix(50, 100)
    end)

    it("keeps the clean prefix before a record with a damaged length",
      function()
        local path, recs = wal_only(100)
        h.flip_byte(path, recs[70].offset + 5)
        check_prefix(70, 100)
      end)

    it("keeps the clean prefix before a torn tail", function()
      local path, recs = wal_only(100)
      h.truncate(path, recs[80].offset + 8 + recs[80].len // 2)
      check_prefix(80, 100)
    end)

    it("keeps everything when the tail is torn inside a record header",
      function()
        local path = wal_only(100)
        h.write_file(path, h.read_file(path) .. "\1\2\3")
        check_prefix(101, 100)
      end)
  end)

  describe("of a table", function()
    local N = 2000

    -- One table holding N keys in many blocks; returns its name and path.
    local function one_table()
      db = h.open(dir, { block_cache_bytes = 0 })
      for i = 1, N do db:set(key(i), val(i)) end
      db:flush()
      db:close()
      db = nil
      local tables = h.list(dir, "^%d+%.sst$")
      assert.equal(1, #tables)
      return tables[1], dir .. "/" .. tables[1]
    end

    -- Open the damaged db and read every key and a full scan: each read is
    -- either right or a corruption error naming file; never a wrong value.
    -- Returns how many gets failed and whether the scan failed.
    local function read_all(file)
      local ok, opened = pcall(lunakv.open, dir, { block_cache_bytes = 0 })
      if not ok then
        assert_corrupt(opened, file)
        return "open failed"
      end
      db = opened
      local failed = 0
      for i = 1, N do
        local good, v = pcall(db.get, db, key(i))
        if good then
          assert.equal(val(i), v, key(i) .. " read wrong")
        else
          assert_corrupt(v, file)
          failed = failed + 1
        end
      end
      local rows = {}
      local good, err = pcall(function()
        for k, v in db:scan(nil, nil) do rows[#rows + 1] = { k, v } end
      end)
      for j, kv in ipairs(rows) do
        assert.equal(key(j), kv[1], "scan row " .. j)
        assert.equal(val(j), kv[2], "scan row " .. j)
      end
      if good then
        assert.equal(N, #rows)
      else
        assert_corrupt(err, file)
      end
      return failed, not good
    end

    it("reports a flipped byte in a data block on get and scan", function()
      local file, path = one_table()
      local f = h.sst_footer(path)
      assert.is_true(f.filter_offset > 10 * 4096, "expected many data blocks")
      h.flip_byte(path, f.filter_offset // 2)
      local failed, scan_failed = read_all(file)
      assert.is_number(failed, "open failed, but only a data block is damaged")
      assert.is_true(failed >= 1, "no get reported the damaged block")
      assert.is_true(failed < N / 4, "one damaged block made " .. failed ..
        " of " .. N .. " keys unreadable")
      assert.is_true(scan_failed, "a scan across the damaged block succeeded")
    end)

    it("reports flipped bytes in several data blocks", function()
      local file, path = one_table()
      local f = h.sst_footer(path)
      for _, frac in ipairs { 0.1, 0.35, 0.6, 0.9 } do
        h.flip_byte(path, math.floor(f.filter_offset * frac))
      end
      local failed = read_all(file)
      assert.is_number(failed)
      assert.is_true(failed >= 4)
    end)

    it("reports damage to the first byte of the file", function()
      local file, path = one_table()
      h.flip_byte(path, 0)
      local failed = read_all(file)
      assert.is_number(failed)
      assert.is_true(failed >= 1)
      -- the first key lives in the first block: its read is an error
      -- naming the table, not a value and not "absent"
      assert.matches("corruption: " .. file, h.error_of(db.get, db, key(1)))
    end)

    it("never returns a wrong value when the index is damaged", function()
      local file, path = one_table()
      local f = h.sst_footer(path)
      h.flip_byte(path, f.index_offset + f.index_size // 2)
      local failed = read_all(file)
      assert.is_true(failed == "open failed" or failed > 0)
    end)

    it("never returns a wrong value when the footer is damaged", function()
      local file, path = one_table()
      local f = h.sst_footer(path)
      for _, off in ipairs { 3, 17, 41, 52 } do
        h.flip_byte(path, f.footer_offset + off)
        local failed = read_all(file)
        assert.is_true(failed == "open failed" or failed > 0, "footer byte " ..
          off)
        if db then db:close() db = nil end
        h.flip_byte(path, f.footer_offset + off) -- undo
      end
      -- undone, the table reads clean again
      assert.equal(0, read_all(file))
    end)

    it("reports a table cut short", function()
      local file, path = one_table()
      h.truncate(path, h.file_size(path) - 100)
      local failed = read_all(file)
      assert.is_true(failed == "open failed" or failed > 0)
    end)
  end)

  describe("of the MANIFEST", function()
    -- A db with tables and a MANIFEST; returns the table names.
    local function with_tables()
      db = h.open(dir, { max_memtable_size = 16 * 1024 })
      for i = 1, 1000 do db:set(key(i), val(i)) end
      db:flush()
      db:close()
      db = nil
      local tables = h.list(dir, "^%d+%.sst$")
      assert.is_true(#tables >= 1)
      assert.is_true(h.exists(dir .. "/MANIFEST"))
      return tables
    end

    local function assert_open_fails(pattern, tables)
      local ok, err = pcall(lunakv.open, dir)
      if ok then
        db = err
        error("open succeeded (" .. #h.collect(db.scan, db, nil, nil) ..
          " keys visible)")
      end
      assert.matches(pattern, err)
      -- the failed open removed nothing
      assert.same(tables, h.list(dir, "^%d+%.sst$"))
    end

    local damage = {
      { "garbage over it", function(p)
          local n = h.file_size(p)
          local t = {}
          for i = 1, n do t[i] = string.char((i * 7 + 13) % 256) end
          h.write_file(p, table.concat(t))
        end },
      { "garbage appended", function(p)
          h.write_file(p, h.read_file(p) .. "junk")
        end },
      { "a flipped byte in the body", function(p)
          h.flip_byte(p, 20)
        end },
      { "a flipped byte in the checksum", function(p)
          h.flip_byte(p, h.file_size(p) - 2)
        end },
      { "a flipped magic", function(p) h.flip_byte(p, 0) end },
      { "truncation to half", function(p)
          h.truncate(p, h.file_size(p) // 2)
        end },
      { "truncation of its last byte", function(p)
          h.truncate(p, h.file_size(p) - 1)
        end },
      { "truncation to zero bytes", function(p) h.truncate(p, 0) end },
    }
    for _, case in ipairs(damage) do
      it("fails the open with an error naming MANIFEST after " .. case[1],
        function()
          local tables = with_tables()
          case[2](dir .. "/MANIFEST")
          assert_open_fails("MANIFEST", tables)
        end)
    end

    it("fails the open when MANIFEST is missing but tables exist", function()
      local tables = with_tables()
      os.remove(dir .. "/MANIFEST")
      assert_open_fails(".", tables)
    end)

    it("opens again once the MANIFEST is restored", function()
      local tables = with_tables()
      local saved = h.read_file(dir .. "/MANIFEST")
      h.flip_byte(dir .. "/MANIFEST", 20)
      assert_open_fails("MANIFEST", tables)
      h.write_file(dir .. "/MANIFEST", saved)
      db = h.open(dir)
      for i = 1, 1000, 13 do assert.equal(val(i), db:get(key(i))) end
    end)
  end)

  describe("LOCK", function()
    it("refuses a second open of the same directory in this process",
      function()
        db = h.open(dir)
        db:set("a", "1")
        local err = h.error_of(lunakv.open, dir)
        assert.is_string(err, "second open succeeded")
        assert.matches("lock", err:lower())
        assert.matches("busy", err)
        -- the first handle is unharmed, and after close the dir opens again
        assert.equal("1", db:get("a"))
        db:close()
        db = h.open(dir)
        assert.equal("1", db:get("a"))
      end)

    -- Run script (Lua, after h.prelude) in a child process with the
    -- arguments given, from a fresh directory; returns its pid and output
    -- files once it has printed "ready".
    local function start_holder(script, ...)
      local work = h.tmpdir()
      local path = work .. "/holder.lua"
      h.write_file(path, h.prelude .. script)
      local cmd = h.lua .. " " .. h.quote(path)
      for _, a in ipairs { ... } do cmd = cmd .. " " .. h.quote(a) end
      local pid, p = h.spawn(cmd, work)
      h.wait_until(function() return h.lines(p.out)[1] == "ready" end, 15,
        function() return h.read_file(p.err) end)
      return pid, p
    end

    it("refuses an open while another process holds the db", function()
      local stop = h.tmpdir() .. "/stop"
      local pid, p = start_holder([[
local lunakv = require "lunakv"
io.stdout:setvbuf("line")
local db = lunakv.open(arg[1])
db:set("holder", "yes")
print("ready")
while not io.open(arg[2]) do os.execute("sleep 0.02") end
db:close()
print("closed")
]], dir, stop)
      local err = h.error_of(lunakv.open, dir)
      assert.is_string(err, "open succeeded while another process holds it")
      assert.matches("lock", err:lower())
      h.write_file(stop, "")
      h.wait_until(function() return h.lines(p.out)[2] == "closed" end, 15,
        function() return h.read_file(p.err) end)
      h.wait(pid)
      db = h.open(dir)
      assert.equal("yes", db:get("holder"))
    end)

    it("is released when the holding process is killed -9", function()
      local pid = start_holder([[
local lunakv = require "lunakv"
io.stdout:setvbuf("line")
local db = lunakv.open(arg[1], { sync = "none" })
db:set("holder", "yes")
print("ready")
while true do os.execute("sleep 0.05") end
]], dir)
      assert.matches("lock", (h.error_of(lunakv.open, dir) or ""):lower())
      h.kill(pid, "KILL")
      h.wait(pid)
      db = h.open(dir)
      assert.equal("yes", db:get("holder"))
    end)
  end)
end)
