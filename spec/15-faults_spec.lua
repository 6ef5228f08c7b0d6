-- Faults below the engine: failed system calls, power loss (through the
-- fault env, core.fault_env), a changed log name, directories that are not
-- databases, read-only opens. The exhaustive walk of every call is the C
-- test c/engine/fault_test.c; these check what a Lua user sees.

local h = require "spec.helpers"
local lunakv = require "lunakv"
local core = require "lunakv.core"

local key = h.key

-- CRC-32C (Castagnoli, reflected), bit by bit: small inputs only.
local function crc32c(s)
  local c = 0xffffffff
  for i = 1, #s do
    c = c ~ s:byte(i)
    for _ = 1, 8 do
      c = (c & 1) ~= 0 and ((c >> 1) ~ 0x82f63b78) or (c >> 1)
    end
  end
  return c ~ 0xffffffff
end

local function count(db)
  local n = 0
  for _ in db:scan() do n = n + 1 end
  return n
end

describe("the fault env", function()
  local dir
  h.tmpdir_each(function(d) dir = d .. "/db" end)

  -- Open the db at path through fe under SYNC=always and write k = v, then
  -- crash and cut the power: reopened, the acknowledged write is there.
  local function assert_acked_write_survives(fe, path, k, v)
    local db = h.open(path, { env = fe, sync = "always" })
    db:set(k, v)
    fe:crash()
    pcall(db.close, db)
    fe:power_loss("drop")
    db = h.open(path, { env = fe })
    assert.equal(v, db:get(k))
  end

  -- Each case: a call kind and a path part to fail, and what to do; the
  -- failure must raise a worded lunakv error (never crash), and the db
  -- must still close and reopen with every acknowledged write.
  local cases = {
    { "write", "wal.log", "set", "io error: write .*wal%.log" },
    { "sync", "wal.log", "sync", "io error: fdatasync .*wal%.log" },
    { "syncdir", nil, "sync", "io error: fsync " },
    { "write", ".sst", "flush", "io error: write .*%.sst" },
    { "sync", ".sst", "flush", "io error: fsync .*%.sst" },
    { "create", "MANIFEST.tmp", "flush", "io error: open .*MANIFEST%.tmp" },
    { "rename", "MANIFEST", "flush", "io error: rename .*MANIFEST" },
    { "sync", "MANIFEST", "flush", "io error: fsync .*MANIFEST" },
    { "write", ".sst", "compact", "io error: write .*%.sst" },
    -- (one failure: the open is retried without O_NOATIME only on EPERM)
    { "open", ".sst", "reopen", "io error: open .*%.sst" },
    { "read", ".sst", "reopen", "io error: read .*%.sst" },
    { "read", "MANIFEST", "reopen", "io error: read .*MANIFEST" },
    { "listdir", nil, "reopen", "io error: opendir " },
    { "lock", "LOCK", "reopen", "io error: lock .*LOCK" },
  }
  for _, c in ipairs(cases) do
    local op, match, action, pattern, sticky = c[1], c[2], c[3], c[4], c[5]
    it(string.format("a failed %s%s during %s raises %q and loses no write",
      op, match and (" of " .. match) or "", action, pattern), function()
      local fe = core.fault_env()
      local opts = { env = fe, sync = "always", max_memtable_size = 64 * 1024 }
      local db = h.open(dir, opts)
      for i = 1, 200 do db:set(key(i), h.value_for(key(i))) end
      db:flush()
      for i = 201, 300 do db:set(key(i), h.value_for(key(i))) end
      local err
      if action == "reopen" then
        db:close()
        fe:fail(op, 1, "EIO", match, { sticky = sticky })
        err = h.error_of(lunakv.open, dir, opts)
      else
        fe:fail(op, 1, op == "write" and "ENOSPC" or "EIO", match)
        if action == "set" then
          err = h.error_of(db.set, db, "one", "more")
        else
          err = h.error_of(db[action], db)
        end
      end
      assert.is_not_nil(err, "the fault did not surface")
      assert.is_true(fe:fired() >= 1)
      assert.matches("^lunakv: " .. pattern, err)
      if action ~= "reopen" then
        -- the db answers reads and closes; later writes may be refused
        assert.equal(h.value_for(key(7)), db:get(key(7)))
        pcall(db.close, db)
      end
      fe:clear()
      db = h.open(dir, opts)
      for i = 1, 300 do assert.equal(h.value_for(key(i)), db:get(key(i))) end
    end)
  end

  it("keeps every synced write and drops the unsynced ones at a power loss",
    function()
      local fe = core.fault_env()
      local opts = { env = fe, sync = "none", max_memtable_size = 64 * 1024 }
      local db = h.open(dir, opts)
      for i = 1, 100 do db:set(key(i), "v") end
      db:sync()
      for i = 101, 150 do db:set(key(i), "v") end
      assert.is_true(fe:unsynced_bytes() > 0)
      fe:crash()
      assert.matches("io error", h.error_of(db.set, db, "x", "y"))
      pcall(db.close, db)
      fe:power_loss("drop")
      db = h.open(dir, opts)
      for i = 1, 100 do assert.equal("v", db:get(key(i))) end
      assert.equal(100, count(db))
    end)

  -- Found by the crash test (one power cut in a few hundred, SYNC=always
  -- only): reopening cut a log's torn tail without syncing the cut; when
  -- the next write then switched to a new log, a power cut brought the
  -- torn tail back and replay, stopping there, dropped the new log's
  -- synced writes. Made deterministic with the pause.
  it("makes the cut of a torn log tail durable before a later log takes writes",
    function()
      local fe = core.fault_env()
      local db = h.open(dir, { env = fe, sync = "always" })
      for i = 1, 50 do db:set(key(i), string.rep("v", 100)) end
      db:close()
      local wal = dir .. "/" .. h.list(dir, "^wal%.log%.")[1]
      local f = assert(io.open(wal, "ab"))
      f:write("\7\0\0") -- half a record header: a torn tail
      f:close()
      -- the replayed 5 KB memtable is over this limit: the first write
      -- switches to a new log before it writes
      fe:pause("create", ".sst") -- and the flush of the old one waits
      finally(function() fe:resume() end)
      db = h.open(dir, { env = fe, sync = "always", max_memtable_size = 1024 })
      db:set("after", "the cut")
      assert.is_true(fe:wait_paused(10), "the flush did not start")
      fe:crash()
      fe:resume()
      pcall(db.close, db)
      fe:power_loss("drop")
      db = h.open(dir, { env = fe, sync = "always" })
      assert.equal("the cut", db:get("after"))
      assert.equal(50, count(db) - 1)
    end)

  -- Also found by the crash test: a log created by an open under
  -- SYNC=none (no directory sync) and then reopened under SYNC=always
  -- took acknowledged writes while a power cut could still take the
  -- file's name, and with it the writes.
  it("keeps SYNC=always writes in a log an earlier open created under SYNC=none",
    function()
      local fe = core.fault_env()
      local db = h.open(dir, { env = fe, sync = "none" })
      db:close()
      assert_acked_write_survives(fe, dir, "acked", "durable")
    end)

  -- The kernel writes pages back in no order between files: a power cut
  -- may keep the new log's records and lose the old log's tail. Replay
  -- must stop at the gap in sequence numbers rather than bring back
  -- later writes without earlier ones (found by the crash test's
  -- power-loss cycles, as a hole).
  it("never replays a later log over a hole left by an earlier log's lost tail",
    function()
      local fe = core.fault_env()
      local opts = { env = fe, sync = "none", max_memtable_size = 4096 }
      local db = h.open(dir, opts)
      for i = 1, 10 do db:set(key(i), string.rep("a", 100)) end
      db:sync() -- the first log durable up to key 10
      fe:pause("create", ".sst") -- the first log's flush waits
      finally(function() fe:resume() end)
      local i = 10
      while db:stats().imm_memtables == 0 do -- into the first log, unsynced
        i = i + 1
        db:set(key(i), string.rep("b", 100))
      end
      local switched = i -- this write went to the new log
      for j = i + 1, i + 5 do db:set(key(j), "c") end
      local logs = h.list(dir, "^wal%.log%.")
      table.sort(logs)
      fe:writeback(dir .. "/" .. logs[#logs]) -- the new log reached the disk
      fe:crash()
      fe:resume()
      pcall(db.close, db)
      fe:power_loss("drop") -- the old log's unsynced tail did not
      db = h.open(dir, opts)
      for j = 1, 10 do assert.is_not_nil(db:get(key(j)), key(j)) end
      -- a prefix: nothing after the first missing key
      local first_missing
      for j = 11, switched + 5 do
        local v = db:get(key(j))
        if v == nil and not first_missing then first_missing = j end
        if first_missing then assert.is_nil(v, key(j) .. " after missing " .. key(first_missing)) end
      end
      assert.is_not_nil(first_missing) -- the lost tail is lost
      assert.matches("sequence number does not follow on", db:stats().recovery)
    end)

  -- A directory made for a new database is an entry of its parent: a
  -- power cut takes it, and all its files, unless the parent is synced.
  it("keeps SYNC=always writes of a database made in a new directory",
    function()
      assert_acked_write_survives(core.fault_env(), dir .. "/new/db", "first",
        "write")
    end)

  it("refuses a bad call kind, errno name or mode", function()
    local fe = core.fault_env()
    assert.matches("unknown call kind 'writes'",
      h.error_of(fe.fail, fe, "writes", 1))
    assert.matches("unknown errno name 'EFOO'",
      h.error_of(fe.fail, fe, "write", 1, "EFOO"))
    assert.matches("invalid option 'lost'",
      h.error_of(fe.power_loss, fe, "lost"))
    assert.matches("must be a fault env",
      h.error_of(lunakv.open, dir, { env = {} }))
  end)
end)

describe("the WAL name", function()
  local dir
  h.tmpdir_each(function(d) dir = d .. "/db" end)

  -- Before: the default name opened an empty database, and writing to it
  -- and reopening with custom.log lost both the old writes and the new.
  it("comes from the MANIFEST, not from today's log_file_name", function()
    local db = h.open(dir, { log_file_name = "custom.log", sync = "none" })
    for i = 1, 100 do db:set(key(i), "first") end
    db:close()
    db = h.open(dir) -- the default, wal.log
    assert.equal(100, count(db))
    for i = 101, 150 do db:set(key(i), "second") end
    db:close()
    assert.equal(0, #h.list(dir, "^custom%.log%."), "old logs are gone once their data is in a table")
    db = h.open(dir, { log_file_name = "custom.log" })
    assert.equal(150, count(db))
    assert.equal("first", db:get(key(1)))
    assert.equal("second", db:get(key(150)))
  end)

  it("finds a version 1 MANIFEST's logs by their name on disk", function()
    -- a version 1 MANIFEST (as written before the name was recorded),
    -- next to logs named custom.log.*: made by rewriting the version
    -- field and dropping the name and log start of a version 2 file
    local db = h.open(dir, { log_file_name = "custom.log", sync = "none" })
    for i = 1, 50 do db:set(key(i), "old") end
    db:close()
    local m = h.read_file(dir .. "/MANIFEST")
    local blen = string.unpack("<I4", m, 13)
    local body = m:sub(17, 16 + blen)
    local namelen = body:byte(29) -- a one-byte varint: "custom.log" is 10
    assert.equal(10, namelen)
    -- (version 2 has the name, then the 8-byte start of the oldest log)
    local v1body = body:sub(1, 28) .. body:sub(30 + namelen + 8)
    local head = "LKVMANI\1" .. string.pack("<I4I4", 1, #v1body)
    -- the helper must agree with the file's own checksum first
    assert.equal(string.unpack("<I4", m, 17 + blen), crc32c(m:sub(1, 16 + blen)))
    local crc = crc32c(head .. v1body)
    h.write_file(dir .. "/MANIFEST", head .. v1body .. string.pack("<I4", crc))
    db = h.open(dir)
    assert.equal(50, count(db))
  end)

  it("keeps a sync=none writer's acknowledged writes across a kill -9 and a name change",
    function()
      local work = h.tmpdir()
      local script = work .. "/writer.lua"
      h.write_file(script, h.prelude .. [[
local lunakv = require "lunakv"
io.stdout:setvbuf("line")
local db = lunakv.open(arg[1], { sync = "none", log_file_name = "custom.log" })
for i = 1, 10000000 do
  db:set(string.format("key%06d", i), "v" .. i)
  io.stdout:write(i, "\n")
end
]])
      local pid, p = h.spawn(h.lua .. " " .. h.quote(script) .. " " .. h.quote(dir), work)
      h.wait_until(function() return #h.lines(p.out) >= 1000 end, 30)
      h.kill(pid, "KILL")
      h.wait(pid)
      local acked = #h.lines(p.out)
      local db = h.open(dir) -- wal.log: the data is under custom.log
      for i = 1, acked do assert.equal("v" .. i, db:get(key(i)), key(i)) end
    end)
end)

describe("opening a directory", function()
  local dir
  h.tmpdir_each(function(d) dir = d .. "/db" end)

  it("refuses one that holds other files but no MANIFEST, untouched", function()
    os.execute("mkdir -p " .. h.quote(dir))
    local junk = string.rep("\171\205", 50) -- 100 bytes that are no log
    h.write_file(dir .. "/wal.log.000001", junk)
    h.write_file(dir .. "/notes.txt", "mine")
    local err = h.error_of(lunakv.open, dir)
    assert.matches("is not a lunakv database: it holds .* but no MANIFEST", err)
    assert.equal(junk, h.read_file(dir .. "/wal.log.000001"))
    assert.is_false(h.exists(dir .. "/LOCK"))
    assert.is_false(h.exists(dir .. "/MANIFEST"))
  end)

  it("takes an empty one, and a new database's first files", function()
    os.execute("mkdir -p " .. h.quote(dir))
    local db = h.open(dir)
    db:set("a", "1")
    db:close()
    assert.is_true(h.exists(dir .. "/MANIFEST"))
    db = h.open(dir)
    assert.equal("1", db:get("a"))
  end)

  it("reports the real size when a table disagrees with the MANIFEST", function()
    -- a valid table of another size under the listed table's name
    local other = h.tmpdir() .. "/other"
    for _, d in ipairs { { dir, 100 }, { other, 300 } } do
      local db = h.open(d[1], { sync = "none" })
      for i = 1, d[2] do db:set(key(i), "v") end
      db:flush()
      db:close()
    end
    local name = h.list(dir, "%.sst$")[1]
    assert.same({ name }, h.list(other, "%.sst$"))
    local size, bigger = h.file_size(dir .. "/" .. name), h.file_size(other .. "/" .. name)
    h.write_file(dir .. "/" .. name, h.read_file(other .. "/" .. name))
    assert.matches(string.format("%s: size %d differs from the %d bytes in MANIFEST",
      name, bigger, size), h.error_of(lunakv.open, dir))
  end)
end)

describe("read_only", function()
  local dir
  h.tmpdir_each(function(d) dir = d .. "/db" end)

  local function write_some(opts)
    local db = h.open(dir, opts)
    for i = 1, 200 do db:set(key(i), "v" .. i) end
    db:flush()
    for i = 201, 250 do db:set(key(i), "v" .. i) end -- only in the WAL
    db:close()
  end

  local function snapshot_files()
    local out = {}
    for _, name in ipairs(h.list(dir, ".")) do
      out[name] = h.read_file(dir .. "/" .. name)
    end
    return out
  end

  it("reads the tables and the WAL and changes no file", function()
    write_some({ sync = "none" })
    -- a torn tail a normal open would cut
    local wal = dir .. "/" .. h.list(dir, "^wal%.log%.")[1]
    local f = assert(io.open(wal, "ab"))
    f:write("\1\2\3")
    f:close()
    local before = snapshot_files()
    local db = h.open(dir, { read_only = true })
    assert.equal("v1", db:get(key(1)))
    assert.equal("v250", db:get(key(250)))
    assert.equal(250, count(db))
    for _, call in ipairs { { "set", "a", "b" }, { "delete", "a" }, { "flush" },
                            { "compact" }, { "sync" } } do
      assert.matches("open read%-only", h.error_of(db[call[1]], db,
        table.unpack(call, 2)))
    end
    local b = db:batch()
    b:set("x", "y")
    assert.matches("open read%-only", h.error_of(b.commit, b))
    b:close()
    db:close()
    assert.same(before, snapshot_files())
  end)

  it("opens a database on a device that refuses every change", function()
    local fe = core.fault_env()
    write_some({ env = fe, sync = "none" })
    fe:crash() -- from now on every write, rename, unlink... fails
    assert.matches("io error", h.error_of(lunakv.open, dir, { env = fe }))
    local db = h.open(dir, { env = fe, read_only = true })
    assert.equal(250, count(db))
  end)

  it("shares the LOCK with other readers but not with a writer", function()
    write_some({ sync = "none" })
    local r1 = h.open(dir, { read_only = true })
    local r2 = h.open(dir, { read_only = true })
    assert.equal("v1", r2:get(key(1)))
    assert.matches("busy: .*LOCK is locked", h.error_of(lunakv.open, dir))
    r1:close()
    r2:close()
    local w = h.open(dir)
    assert.matches("busy: .*open for writing",
      h.error_of(lunakv.open, dir, { read_only = true }))
    w:close()
  end)

  it("backs lunakv shell --read-only and lunakv inspect", function()
    write_some({ sync = "none" })
    local before = snapshot_files()
    local lk = h.lunakv_cmd
    local code, out, err = h.run("printf 'GET " .. key(250) .. "\\nSET a b\\n' | "
      .. lk .. " shell --read-only " .. h.quote(dir))
    assert.equal(1, code)
    assert.equal("v250\n", out)
    assert.matches("is open read%-only", err)
    code, out = h.run(lk .. " inspect --count " .. h.quote(dir))
    assert.equal(0, code, out)
    assert.matches("sequence 250, 1 table%(s%)", out)
    assert.matches("wal: 50 write%(s%) not yet in a table", out)
    assert.matches("L%d: 1 table%(s%)", out)
    assert.matches("%.sst +%d+ bytes  key000001 %.%. key000200", out)
    assert.matches("250 live key%(s%)", out)
    assert.same(before, snapshot_files())
    code, out, err = h.run(lk .. " inspect " .. h.quote(dir .. "/nope"))
    assert.equal(1, code)
    assert.equal("", out)
    assert.matches("does not exist", err)
  end)

  it("refuses a directory with no database", function()
    os.execute("mkdir -p " .. h.quote(dir))
    assert.matches("holds no lunakv database",
      h.error_of(lunakv.open, dir, { read_only = true }))
    assert.matches("does not exist",
      h.error_of(lunakv.open, dir .. "/nope", { read_only = true }))
    assert.is_false(h.exists(dir .. "/nope"))
    assert.matches("read_only = 1: must be true or false",
      h.error_of(lunakv.open, dir, { read_only = 1 }))
  end)
end)
