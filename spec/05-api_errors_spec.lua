-- Wrong use of the API raises a Lua error and never crashes: bad argument
-- types, closed handles, bad options, oversized keys.

local h = require "spec.helpers"
local lunakv = require "lunakv"

local NOT_STRINGS = {
  { "a number", 42 },
  { "a float", 1.5 },
  { "nil", nil },
  { "a table", { "k" } },
  { "a boolean", true },
  { "a function", print },
}

describe("API errors", function()
  local dir, db
  h.tmpdir_each(function(d)
    dir = d
    db = h.open(dir .. "/db")
    db:set("present", "yes")
  end)

  describe("bad arguments", function()
    -- name, function(bad) calling the API with bad where a string belongs
    local calls = {
      { "db:set key", function(x) return db:set(x, "v") end },
      { "db:set value", function(x) return db:set("k", x) end },
      { "db:get key", function(x) return db:get(x) end },
      { "db:delete key", function(x) return db:delete(x) end },
      { "batch:set key", function(x) return db:batch():set(x, "v") end },
      { "batch:set value", function(x) return db:batch():set("k", x) end },
      { "batch:delete key", function(x) return db:batch():delete(x) end },
      { "snapshot:get key", function(x)
          local s <close> = db:snapshot()
          return s:get(x)
        end },
      { "iter:seek key", function(x)
          local it = db:iter()
          local ok, e = pcall(it.seek, it, x)
          it:close()
          if not ok then error(e, 0) end
        end },
    }
    for _, call in ipairs(calls) do
      for _, case in ipairs(NOT_STRINGS) do
        it(call[1] .. " refuses " .. case[1], function()
          local err = h.error_of(call[2], case[2])
          assert.is_string(err, "no error")
          assert.matches("bad argument", err)
          -- the db still works
          assert.equal("yes", db:get("present"))
        end)
      end
    end

    local bounds = {
      { "a number", 42 }, { "a table", {} }, { "a boolean", false },
    }
    for _, case in ipairs(bounds) do
      it("db:scan refuses " .. case[1] .. " as a bound", function()
        assert.matches("bad argument", h.error_of(function()
          for _ in db:scan(case[2], nil) do end
        end))
        assert.matches("bad argument", h.error_of(function()
          for _ in db:scan(nil, case[2]) do end
        end))
      end)
    end

    local seqs = {
      { "a string", "x" }, { "a table", {} }, { "a fraction", 1.5 },
      { "a negative number", -1 },
    }
    for _, case in ipairs(seqs) do
      it("db:get refuses " .. case[1] .. " as the sequence", function()
        assert.matches("bad argument", h.error_of(db.get, db, "present",
          case[2]))
      end)
    end

    it("names the method in the message", function()
      assert.matches("'set'", h.error_of(function() return db:set(1, "v") end))
      assert.matches("'get'", h.error_of(function() return db:get({}) end))
    end)

    it("refuses a non-string directory and non-table options", function()
      assert.matches("bad argument", h.error_of(lunakv.open, 42))
      assert.matches("bad argument", h.error_of(lunakv.open, nil))
      assert.matches("bad argument", h.error_of(lunakv.open, {}))
      assert.matches("bad argument", h.error_of(lunakv.open, dir .. "/x", 5))
      assert.is_false(h.exists(dir .. "/x/LOCK"))
    end)
  end)

  describe("a closed db", function()
    local methods = {
      { "set", "k", "v" }, { "get", "present" }, { "delete", "k" },
      { "scan", nil, nil }, { "iter" }, { "snapshot" }, { "batch" },
      { "stats" }, { "flush" }, { "sync" }, { "compact" }, { "tables" },
    }
    for _, m in ipairs(methods) do
      it("raises 'closed' from db:" .. m[1], function()
        db:close()
        local err = h.error_of(function()
          local r = db[m[1]](db, m[2], m[3])
          -- a lazy scan must fail by its first step at the latest
          if type(r) == "function" then r() end
        end)
        assert.is_string(err, "db:" .. m[1] .. " worked on a closed db")
        assert.matches("closed", err)
      end)
    end

    it("can be closed twice", function()
      db:close()
      assert.has_no.errors(function() db:close() end)
    end)

    it("is closed by <close> at the end of a block", function()
      local d2 = dir .. "/scoped"
      local held
      do
        local scoped <close> = h.open(d2)
        scoped:set("a", "1")
        held = scoped
      end
      assert.matches("closed", h.error_of(held.get, held, "a"))
      local again = h.open(d2) -- the LOCK was released
      assert.equal("1", again:get("a"))
      again:close()
    end)

    it("is released for another open by close", function()
      db:close()
      local again = h.open(dir .. "/db")
      assert.equal("yes", again:get("present"))
      again:close()
    end)
  end)

  describe("options", function()
    local bad = {
      { "bogus_option", 1 },
      { "max_memtable_size", "big" },
      { "max_memtable_size", -5 },
      { "max_memtable_size", 0 },
      { "max_memtable_size", 1.5 },
      { "max_l0_files", 0 },
      { "sparse_index_n", "16" },
      { "block_size", {} },
      { "block_cache_bytes", -1 },
      { "wal_buffer_size", false },
      { "bloom_bits_per_key", -1 },
      { "hash_functions", -1 },
      { "bloom_filter_size", "x" },
      { "table_size", 0 },
      { "level1_max_bytes", 0 },
      { "log_file_name", 5 },
      { "log_file_name", "" },
      { "log_file_name", "a/b" },
      { "sync", "sometimes" },
      { "sync", true },
      { "mmap_reads", 1 },
      { "mmap_reads", "yes" },
    }
    for _, case in ipairs(bad) do
      it("refuses " .. case[1] .. " = " .. tostring(case[2]) ..
        " with an error naming it", function()
          local target = dir .. "/opts"
          local err = h.error_of(lunakv.open, target, { [case[1]] = case[2] })
          assert.is_string(err, "open accepted the option")
          assert.matches(case[1], err, 1, true)
          assert.is_false(h.exists(target .. "/LOCK"))
        end)
    end

    it("accepts every documented option with a good value", function()
      local target = dir .. "/good"
      local d <close> = h.open(target, {
        max_memtable_size = 64 * 1024, max_l0_files = 4, wal_buffer_size = 10,
        sparse_index_n = 8, log_file_name = "mylog", bloom_filter_size = 128,
        hash_functions = 3, bloom_bits_per_key = 12, block_size = 1024,
        table_size = 1024 * 1024, block_cache_bytes = 0,
        level1_max_bytes = 1024 * 1024, sync = "always", mmap_reads = true,
      })
      d:set("a", "1")
      assert.equal("1", d:get("a"))
      for _, mode in ipairs { "none", "batch" } do
        local t = h.open(target .. mode, { sync = mode })
        t:set("a", mode)
        assert.equal(mode, t:get("a"))
        t:close()
      end
    end)
  end)

  describe("size limits", function()
    it("raises 'too big' for a key over 64 KiB", function()
      local err = h.error_of(db.set, db, ("k"):rep(64 * 1024 + 1), "v")
      assert.is_string(err)
      assert.matches("lunakv: too big", err, 1, true)
      assert.equal("yes", db:get("present"))
    end)

    it("raises 'too big' for an oversized key in a batch", function()
      local err = h.error_of(function()
        local b = db:batch()
        b:set(("k"):rep(64 * 1024 + 1), "v")
        b:commit()
      end)
      assert.is_string(err)
      assert.matches("too big", err)
    end)

    it("accepts a key of exactly 64 KiB", function()
      local k = ("k"):rep(64 * 1024)
      db:set(k, "max")
      assert.equal("max", db:get(k))
      db:flush()
      assert.equal("max", db:get(k))
    end)

    it("accepts a 1 MiB value", function()
      local v = ("0123456789abcdef"):rep(65536)
      db:set("big", v)
      db:flush()
      assert.equal(v, db:get("big"))
    end)
  end)
end)
