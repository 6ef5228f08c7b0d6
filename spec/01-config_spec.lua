-- lunakv.config.load: defaults < .env < environment variables.
-- Lua cannot set environment variables, so the environment cases run
-- config.load in a child lua5.4 started with `env -u ... VAR=value`.

local h = require "spec.helpers"
local lunakv = require "lunakv"
local config = lunakv.config

local SEED_KEYS = {
  "MAX_MEMTABLE_SIZE", "MAX_L0_FILES", "BLOOM_FILTER_SIZE", "HASH_FUNCTIONS",
  "SPARSE_INDEX_N", "WAL_BUFFER_SIZE", "LOG_FILE_NAME", "TOMBSTONE_VALUE",
  "LOG_COMPACTION_THRESHOLD", "BENCHMARK_N", "SYNC",
}

local plain = h.plain

-- Run config.load in a child with cwd `cwd`, a clean environment for the
-- seed keys plus `env` (name -> value), loading `load_dir` (nil: no
-- argument). Returns exit code, opts (key -> tostring(value)), warnings,
-- stderr.
local function load_in_child(cwd, env, load_dir)
  local unset = {}
  for _, k in ipairs(SEED_KEYS) do unset[#unset + 1] = "-u " .. k end
  local set = {}
  for k, v in pairs(env or {}) do set[#set + 1] = k .. "=" .. h.quote(v) end
  local code = h.prelude .. string.format([[
local config = require "lunakv.config"
local opts, info = config.load(%s)
local keys = {}
for k in pairs(opts) do keys[#keys + 1] = k end
table.sort(keys)
for _, k in ipairs(keys) do io.write("opt ", k, "=", tostring(opts[k]), "\n") end
for _, w in ipairs(info.warnings) do io.write("warning ", w, "\n") end
io.write("file ", tostring(info.file), "\n")
]], load_dir and string.format("%q", load_dir) or "")
  local rc, out, err = h.run("cd " .. h.quote(cwd) .. " && env " ..
    table.concat(unset, " ") .. " " .. table.concat(set, " ") .. " " .. h.lua ..
    " -e " .. h.quote(code))
  local opts, warnings = {}, {}
  for line in out:gmatch("[^\n]+") do
    local k, v = line:match("^opt ([%w_]+)=(.*)$")
    if k then opts[k] = v end
    local w = line:match("^warning (.*)$")
    if w then warnings[#warnings + 1] = w end
    local f = line:match("^file (.*)$")
    if f then opts["(file)"] = f end
  end
  return rc, opts, warnings, err
end

describe("lunakv.config.load", function()
  local dir
  h.tmpdir_each(function(d) dir = d end)

  describe("in this process", function()
    -- these cases read this process's environment: it must not set them
    before_each(function()
      for _, k in ipairs(SEED_KEYS) do
        assert(os.getenv(k) == nil, "unset " .. k .. " to run the config specs")
      end
    end)

    it("returns the defaults when there is no .env", function()
      local opts, info = config.load(dir)
      assert.equal(4 * 1024 * 1024, opts.max_memtable_size)
      assert.equal(4, opts.max_l0_files)
      assert.equal(16, opts.sparse_index_n)
      assert.equal(100, opts.wal_buffer_size)
      assert.equal("wal.log", opts.log_file_name)
      assert.equal("batch", opts.sync)
      assert.equal("table", type(info))
      assert.same({}, info.warnings)
      assert.is_nil(info.file)
    end)

    it("parses quotes, comments and the export prefix", function()
      h.write_file(dir .. "/.env", table.concat({
        "# a comment line",
        "",
        "export MAX_L0_FILES=7",
        "  export   SPARSE_INDEX_N = 32  ",
        'LOG_FILE_NAME="my log.wal"   # a trailing comment',
        "TOMBSTONE_VALUE='#not a comment'",
        "SYNC=always # comment after an unquoted value",
        "BENCHMARK_N=500",
        "   # indented comment MAX_MEMTABLE_SIZE=1",
        'HASH_FUNCTIONS="3"',
        "BLOOM_FILTER_SIZE='1024'",
      }, "\n") .. "\n")
      local opts, info = config.load(dir)
      assert.equal(7, opts.max_l0_files)
      assert.equal(32, opts.sparse_index_n)
      assert.equal("my log.wal", opts.log_file_name)
      assert.equal("#not a comment", opts.tombstone_value)
      assert.equal("always", opts.sync)
      assert.equal(500, opts.benchmark_n)
      assert.equal(3, opts.hash_functions)
      assert.equal(1024, opts.bloom_filter_size)
      assert.equal("integer", math.type(opts.max_l0_files))
      assert.equal(4 * 1024 * 1024, opts.max_memtable_size)
      assert.same({}, info.warnings)
      assert.matches(plain(dir), info.file)
    end)

    it("keeps '#' inside a value and spaces inside quotes", function()
      h.write_file(dir .. "/.env",
        "TOMBSTONE_VALUE=a#b\nLOG_FILE_NAME=' spaced '\n")
      local opts = config.load(dir)
      assert.equal("a#b", opts.tombstone_value)
      assert.equal(" spaced ", opts.log_file_name)
    end)

    it("reads MMAP_READS as a boolean, in the usual spellings", function()
      assert.is_false(config.load(dir).mmap_reads) -- default: pread
      for text, want in pairs { ["true"] = true, ON = true, ["1"] = true,
        yes = true, ["false"] = false, Off = false, ["0"] = false } do
        h.write_file(dir .. "/.env", "MMAP_READS=" .. text .. "\n")
        assert.equal(want, config.load(dir).mmap_reads, text)
      end
    end)

    it("reads CRLF line endings", function()
      h.write_file(dir .. "/.env", "MAX_L0_FILES=6\r\nSYNC=none\r\n")
      local opts = config.load(dir)
      assert.equal(6, opts.max_l0_files)
      assert.equal("none", opts.sync)
    end)

    it("warns about an unknown key, naming it, and goes on", function()
      h.write_file(dir .. "/.env", "MAX_L0_FILES=5\nNOT_A_LUNAKV_KEY=1\n")
      local opts, info = config.load(dir)
      assert.equal(5, opts.max_l0_files)
      assert.equal(1, #info.warnings)
      assert.matches("NOT_A_LUNAKV_KEY", info.warnings[1])
      assert.is_nil(opts.not_a_lunakv_key)
      assert.is_nil(opts.NOT_A_LUNAKV_KEY)
    end)

    local bad = {
      { "MAX_L0_FILES", "lots" },
      { "MAX_MEMTABLE_SIZE", "-1" },
      { "MAX_MEMTABLE_SIZE", "4MB" },
      { "SPARSE_INDEX_N", "1.5" },
      { "SYNC", "sometimes" },
      { "WAL_BUFFER_SIZE", "0" },
      { "MMAP_READS", "maybe" },
      { "HASH_FUNCTIONS", "99999999999999999999999" },
    }
    for _, case in ipairs(bad) do
      it("raises naming the key and value for " .. case[1] .. "=" .. case[2],
        function()
          h.write_file(dir .. "/.env", "BENCHMARK_N=5\n" .. case[1] .. "=" ..
            case[2] .. "\n")
          local err = h.error_of(config.load, dir)
          assert.is_string(err, "accepted " .. case[1] .. "=" .. case[2])
          assert.matches(case[1], err, 1, true)
          assert.matches(case[2], err, 1, true)
        end)
    end

    it("warns about a key set twice, naming both lines; the last wins",
      function()
        h.write_file(dir .. "/.env",
          "MAX_L0_FILES=5\nSYNC=none\n# again\nMAX_L0_FILES=6\n")
        local opts, info = config.load(dir)
        assert.equal(6, opts.max_l0_files)
        assert.equal(dir .. "/.env:4", info.sources.max_l0_files)
        assert.same({ dir .. "/.env:4: MAX_L0_FILES is set again (first at "
          .. dir .. "/.env:1); the value of line 4 is used" }, info.warnings)
      end)

    it("takes lower-case keys in .env as --set does, and warns about "
      .. "mixed case", function()
        h.write_file(dir .. "/.env",
          "max_l0_files=5\nsync=none\nMax_Memtable_Size=1\n")
        local opts, info = config.load(dir)
        assert.equal(5, opts.max_l0_files)
        assert.equal("none", opts.sync)
        assert.equal(dir .. "/.env:1", info.sources.max_l0_files)
        assert.equal(4 * 1024 * 1024, opts.max_memtable_size)
        assert.same({ dir .. "/.env:3: unknown key Max_Memtable_Size "
          .. "(ignored)" }, info.warnings)
        -- one setting, two spellings: set twice
        h.write_file(dir .. "/.env", "SYNC=always\nsync=none\n")
        opts, info = config.load(dir)
        assert.equal("none", opts.sync)
        assert.equal(1, #info.warnings)
        assert.matches("%.env:2: sync is set again %(first at .*%.env:1%)",
          info.warnings[1])
      end)

    it("takes lower-case keys from the environment too", function()
      local opts, info = config.load(dir, { max_l0_files = "7",
        SYNC = "none" })
      assert.equal(7, opts.max_l0_files)
      assert.equal("environment", info.sources.max_l0_files)
      assert.equal("none", opts.sync)
      -- both spellings with different values: which one was meant?
      local err = h.error_of(config.load, dir, { MAX_L0_FILES = "5",
        max_l0_files = "6" })
      assert.matches("MAX_L0_FILES=\"5\" and max_l0_files=\"6\" "
        .. "%(environment%): give one", err)
      -- the same value twice is fine
      opts = config.load(dir, { MAX_L0_FILES = "5", max_l0_files = "5" })
      assert.equal(5, opts.max_l0_files)
    end)

    it("refuses a directory as the settings file", function()
      local err = h.error_of(config.load_file, dir)
      assert.equal("lunakv: config file " .. dir .. ": is a directory, not "
        .. "a file of KEY=VALUE lines", err)
      h.rm_rf(dir .. "/.env")
      os.execute("mkdir " .. h.quote(dir .. "/.env"))
      err = h.error_of(config.load, dir)
      assert.equal("lunakv: config file " .. dir .. "/.env: is a directory, "
        .. "not a file of KEY=VALUE lines", err)
    end)

    it("gives options that lunakv.open takes as they are", function()
      h.write_file(dir .. "/.env",
        "LOG_FILE_NAME=journal\nSYNC=none\nMAX_MEMTABLE_SIZE=65536\n" ..
        "TOMBSTONE_VALUE=x\nBENCHMARK_N=10\nBLOOM_FILTER_SIZE=256\n")
      local opts = config.load(dir)
      local db = lunakv.open(dir .. "/db", opts)
      local ok, err = pcall(function()
        db:set("a", "1")
        assert.equal(1, #h.list(dir .. "/db", "^journal%.%d%d%d%d%d%d$"))
        assert.equal("1", db:get("a"))
      end)
      db:close()
      assert(ok, err)
    end)
  end)

  describe("with environment variables", function()
    it("gives defaults < .env < environment", function()
      h.write_file(dir .. "/.env",
        "MAX_L0_FILES=7\nSPARSE_INDEX_N=32\nSYNC=always\n")
      local rc, opts, warnings, err = load_in_child(h.root,
        { MAX_L0_FILES = "9", WAL_BUFFER_SIZE = "7" }, dir)
      assert.equal(0, rc, err)
      assert.equal("9", opts.max_l0_files)        -- environment over .env
      assert.equal("7", opts.wal_buffer_size)     -- environment over default
      assert.equal("32", opts.sparse_index_n)     -- .env over default
      assert.equal("always", opts.sync)           -- .env over default
      assert.equal("4194304", opts.max_memtable_size) -- default
      assert.same({}, warnings)
    end)

    it("reads every seed key from the environment", function()
      local env = {
        MAX_MEMTABLE_SIZE = "65536", MAX_L0_FILES = "3",
        BLOOM_FILTER_SIZE = "512", HASH_FUNCTIONS = "4", SPARSE_INDEX_N = "8",
        WAL_BUFFER_SIZE = "10", LOG_FILE_NAME = "envlog",
        TOMBSTONE_VALUE = "<gone>", LOG_COMPACTION_THRESHOLD = "77",
        BENCHMARK_N = "1234", SYNC = "none",
      }
      local rc, opts, _, err = load_in_child(dir, env, dir)
      assert.equal(0, rc, err)
      -- each under its key's name in lower case, with the value given
      local want = {}
      for k, v in pairs(env) do want[k:lower()] = v end
      assert.same(want, h.pick(opts, want))
    end)

    it("reads the .env of the working directory by default", function()
      h.write_file(dir .. "/.env", "MAX_L0_FILES=11\n")
      local rc, opts, _, err = load_in_child(dir, {}, nil)
      assert.equal(0, rc, err)
      assert.equal("11", opts.max_l0_files)
      assert.matches("%.env", opts["(file)"])
    end)

    it("raises naming the key and value of a bad environment variable",
      function()
        local rc, _, _, err = load_in_child(dir, { MAX_L0_FILES = "many" }, dir)
        assert.is_not.equal(0, rc)
        assert.matches("MAX_L0_FILES", err)
        assert.matches("many", err)
      end)

    it("raises for a bad SYNC from the environment over a good .env",
      function()
        h.write_file(dir .. "/.env", "SYNC=always\n")
        local rc, _, _, err = load_in_child(dir, { SYNC = "often" }, dir)
        assert.is_not.equal(0, rc)
        assert.matches("SYNC", err)
        assert.matches("often", err)
      end)
  end)
end)
