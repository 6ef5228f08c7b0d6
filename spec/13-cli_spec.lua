-- bin/lunakv as a command line: help and version, usage errors (one line
-- and the usage, exit 2), and the order of the settings layers: defaults
-- < .env (or --config FILE) < environment < --set flags.

local h = require "spec.helpers"
local cjson = require "cjson"

local lines = h.lines_of

describe("lunakv command line", function()
  local dir
  h.tmpdir_each(function(d) dir = d end)

  -- Run bin/lunakv ARGS in dir, with environment assignments env
  -- ("K=V " ...) and stdin from input (default: nothing).
  local function lunakv(args, env, input)
    local redirect = " </dev/null"
    if input then
      h.write_file(dir .. "/stdin.txt", input)
      redirect = " <stdin.txt"
    end
    return h.run("cd " .. h.quote(dir) .. " && env -u DATA_DIR -u SYNC " ..
      "-u MAX_MEMTABLE_SIZE " .. (env or "") .. h.lunakv_cmd .. " " ..
      args .. redirect)
  end

  describe("help and version", function()
    it("prints the usage and every command with --help and -h", function()
      for _, flag in ipairs { "--help", "-h", "help" } do
        local code, out, err = lunakv(flag)
        assert.equal(0, code, err)
        assert.equal("", err)
        assert.matches("^Usage: lunakv ", out)
        for _, cmd in ipairs { "shell", "bench", "run", "help", "version" } do
          assert.matches("\n   " .. cmd .. " ", out)
        end
        assert.matches("%-%-set <key=value>", out)
        assert.matches("defaults < %.env", out)
      end
    end)

    it("explains each command with `help CMD` and `CMD --help`", function()
      local want = {
        shell = { "Usage: lunakv shell", "<dir>", "%-%-url" },
        bench = { "Usage: lunakv bench", "%-%-workloads", "%-%-num",
          "%-%-value%-size", "%-%-json", "writes,reads,reads4,misses",
          "fillseq,%s+fillrandom,%s+overwrite,%s+readrandom,%s+"
          .. "readmissing,%s+readseq,%s+seekrandom,%s+fillsync" },
        run = { "Usage: lunakv run", "<file>", "<args>" },
        help = { "Usage: lunakv help" },
        version = { "Usage: lunakv version" },
      }
      for cmd, pats in pairs(want) do
        for _, args in ipairs { "help " .. cmd, cmd .. " --help",
          cmd .. " -h" } do
          local code, out, err = lunakv(args)
          assert.equal(0, code, args .. ": " .. err)
          for _, p in ipairs(pats) do assert.matches(p, out, nil, args) end
        end
      end
    end)

    it("prints one version line with --version, -v and version", function()
      for _, args in ipairs { "--version", "-v", "version" } do
        local code, out, err = lunakv(args)
        assert.equal(0, code, err)
        assert.equal("lunakv " .. h.lunakv.version .. " (Lua 5.4)\n", out)
      end
    end)
  end)

  describe("usage errors", function()
    local cases = {
      { "frobnicate", "unknown command 'frobnicate'", "lunakv" },
      { "--frobnicate", "unknown option '%-%-frobnicate'", "lunakv" },
      { "shell --frobnicate", "unknown option", "lunakv shell" },
      { "shell a b", "too many arguments", "lunakv shell" },
      { "shell --url http://127.0.0.1:1 db", "shell: give a data directory "
        .. "or %-%-url, not both", "lunakv shell" },
      { "run", "missing argument 'file'", "lunakv run" },
      { "help frobnicate", "help: unknown command 'frobnicate'", "lunakv" },
      { "bench --num", "option '%-%-num' requires an argument",
        "lunakv bench" },
      { "-s", "option '%-s' requires an argument", "lunakv" },
      { "shell --set NOPE=1 db", "%-%-set \"NOPE=1\": unknown key NOPE "
        .. "%(known: LOG_FILE_NAME, MAX_MEMTABLE_SIZE", "lunakv shell" },
      { "shell --set MAX_MEMTABLE_SIZE=big db",
        "MAX_MEMTABLE_SIZE=\"big\" %(%-%-set%): not an integer",
        "lunakv shell" },
      { "-s SYNC=sometimes shell db",
        "SYNC=\"sometimes\" %(%-%-set%): expected \"none\", \"batch\" or "
        .. "\"always\"", "lunakv shell" },
      { "shell -s oops db", "%-%-set \"oops\": expected KEY=VALUE",
        "lunakv shell" },
      { "shell -c /tmp db", "%-%-config /tmp: a directory, not a file of "
        .. "KEY=VALUE lines", "lunakv shell" },
      { "--config . shell db", "%-%-config %.: a directory", "lunakv shell" },
      { "bench -c / -n 10", "%-%-config /: a directory", "lunakv bench" },
      { "shell --set Max_L0_Files=5 db", "%-%-set \"Max_L0_Files=5\": "
        .. "unknown key Max_L0_Files", "lunakv shell" },
      -- lunakv.open's own names are not settings (it raised at open)
      { "shell --set bloom_min_bits=256 db", "%-%-set \"bloom_min_bits=256\": "
        .. "unknown key bloom_min_bits", "lunakv shell" },
    }
    for _, c in ipairs(cases) do
      it("exits 2 for `lunakv " .. c[1] .. "` with one line and the usage",
        function()
          local code, out, err = lunakv(c[1])
          assert.equal(2, code, err)
          assert.equal("", out)
          local l = lines(err)
          assert.matches("^lunakv: " .. c[2], l[1])
          assert.matches("^Usage: " .. c[3]:gsub("%p", "%%%0") .. " ", l[2])
          -- the rest is the usage's continuation lines
          for i = 3, #l do assert.matches("^       ", l[i]) end
        end)
    end

    it("never leaves a database behind after a usage error", function()
      lunakv("shell --set NOPE=1 db")
      assert.is_false(h.exists(dir .. "/db"))
    end)
  end)

  describe("expected failures", function()
    -- A .env, and what `lunakv shell db` fed "SET a 1" then does: exit
    -- code, stdout, stderr.
    local env_cases = {
      { "exits 1 naming a bad value in .env, its file and line",
        "# settings\nMAX_L0_FILES=many\n", 1, "",
        "lunakv: MAX_L0_FILES=\"many\" (.env:2): not an integer\n" },
      { "warns about an unknown key in .env and goes on",
        "NOT_A_SETTING=1\n", 0, "1\n",
        "lunakv: warning: .env:1: unknown key NOT_A_SETTING (ignored)\n" },
      { "warns about a key set twice in .env, naming both lines",
        "SYNC=none\nMAX_L0_FILES=5\nsync=always\n", 0, "1\n",
        "lunakv: warning: .env:3: sync is set again (first at .env:1); the "
        .. "value of line 3 is used\n" },
    }
    for _, c in ipairs(env_cases) do
      local name, env, want_code, want_out, want_err = table.unpack(c)
      it(name, function()
        h.write_file(dir .. "/.env", env)
        local code, out, err = lunakv("shell db", nil, "SET a 1\n")
        assert.equal(want_code, code, err)
        assert.equal(want_out, out)
        assert.equal(want_err, err)
      end)
    end

    it("exits 1 when the --config file cannot be read", function()
      local code, out, err = lunakv("shell --config nope.env db")
      assert.equal(1, code)
      assert.equal("", out)
      assert.equal("lunakv: config file nope.env: cannot be read\n", err)
    end)

    it("exits 1, not 99, when the data dir cannot be opened", function()
      h.write_file(dir .. "/afile", "x")
      local code, _, err = lunakv("shell afile/db", nil, "")
      assert.equal(1, code)
      assert.matches("^lunakv: [^\n]+\n$", err)
    end)
  end)

  describe("the settings layers", function()
    -- The shell reports the data dir it opened in STATS: DATA_DIR shows
    -- which layer won, and the bench's --json shows every setting.
    local function data_dir(args, env)
      local code, out, err = lunakv(args or "", env, "STATS\n")
      assert.equal(0, code, err)
      return out:match("\ndata_dir +([^\n]+)") or out:match("^data_dir +([^\n]+)")
    end

    it("opens the shell on ./data with no command and no settings",
      function()
        local code, out, err = lunakv("", nil, "SET a 1\nGET a\n")
        assert.equal(0, code, err)
        assert.equal("1\n1\n", out)
        assert.is_true(h.exists(dir .. "/data/MANIFEST") or
          #h.list(dir .. "/data") > 0)
      end)

    it("puts .env over the defaults, the environment over .env, and "
      .. "--set over all", function()
        assert.equal("data", data_dir())
        h.write_file(dir .. "/.env", "DATA_DIR=from-dotenv\n")
        assert.equal("from-dotenv", data_dir())
        assert.equal("from-env", data_dir(nil, "DATA_DIR=from-env "))
        assert.equal("from-flag", data_dir("--set DATA_DIR=from-flag",
          "DATA_DIR=from-env "))
        assert.equal("from-flag", data_dir("shell --set DATA_DIR=from-flag",
          "DATA_DIR=from-env "))
        -- a flag after the command wins over one before it
        assert.equal("after", data_dir("-s DATA_DIR=before shell -s "
          .. "DATA_DIR=after"))
        -- lower-case option names work too
        assert.equal("lower", data_dir("-s data_dir=lower"))
        -- and in .env and the environment
        h.write_file(dir .. "/.env", "data_dir=lower-dotenv\n")
        assert.equal("lower-dotenv", data_dir())
        assert.equal("lower-env", data_dir(nil, "data_dir=lower-env "))
        -- a DIR argument names the directory outright
        assert.equal("arg", data_dir("shell arg", "DATA_DIR=from-env "))
      end)

    it("reads --config FILE instead of ./.env", function()
      h.write_file(dir .. "/.env", "DATA_DIR=from-dotenv\n")
      h.write_file(dir .. "/other.env", "DATA_DIR=from-other\n")
      local code, out, err = lunakv("--config other.env", nil, "STATS\n")
      assert.equal(0, code, err)
      assert.matches("^data_dir +from%-other\n", out)
      assert.matches("\nconfig_file +other%.env\n", out)
      code, out, err = lunakv("shell -c other.env", nil, "STATS\n")
      assert.equal(0, code, err)
      assert.matches("\nconfig_file +other%.env\n", out)
    end)

    it("hands every layer's engine settings to the db", function()
      h.write_file(dir .. "/.env", table.concat({
        "MAX_MEMTABLE_SIZE=65536", "WAL_BUFFER_SIZE=7", "SYNC=always",
        "BLOCK_SIZE=2048", "" }, "\n"))
      local code, out, err = lunakv("bench -n 100 -w writes --layers c "
        .. "--json -s SYNC=none -s block_size=1024",
        "WAL_BUFFER_SIZE=9 SYNC=batch ")
      assert.equal(0, code, err)
      local doc = cjson.decode(out)
      local o, src = doc.config.options, doc.config.sources
      assert.equal(".env", doc.config.file)
      assert.equal(65536, o.max_memtable_size)
      assert.equal(".env:1", src.max_memtable_size)
      assert.equal(9, o.wal_buffer_size)
      assert.equal("environment", src.wal_buffer_size)
      assert.equal("none", o.sync)
      assert.equal("--set", src.sync)
      assert.equal(1024, o.block_size)
      assert.equal("--set", src.block_size)
      assert.equal(4, o.max_l0_files)
      assert.is_nil(src.max_l0_files) -- defaults are not listed
    end)

    it("reads a --set value as .env and the environment do", function()
      for _, args in ipairs { "-s MMAP_READS=true", "-s mmap_reads=on" } do
        local code, out, err = lunakv("bench -n 100 -w writes --layers c "
          .. "--json " .. args)
        assert.equal(0, code, args .. ": " .. err)
        assert.is_true(cjson.decode(out).config.options.mmap_reads, args)
      end
      h.write_file(dir .. "/.env", "MMAP_READS=yes\n")
      local code, out, err = lunakv("bench -n 100 -w writes --layers c "
        .. "--json")
      assert.equal(0, code, err)
      assert.is_true(cjson.decode(out).config.options.mmap_reads)
    end)

    it("uses the settings in the shell's db: a tiny memtable flushes",
      function()
        local input = {}
        for i = 1, 200 do
          input[#input + 1] = string.format("SET key%03d %s", i,
            string.rep("v", 100))
        end
        -- a frozen memtable is waiting for its flush or is a table now
        -- (both read under one lock): the flush thread's progress does
        -- not matter (asking for completed flushes made this flaky)
        input[#input + 1] = "=(function(st) return st.imm_memtables + "
          .. "st.sstable_count > 0 end)(db:stats())"
        input[#input + 1] = ""
        local code, out, err = lunakv("-s MAX_MEMTABLE_SIZE=4096 shell db",
          nil, table.concat(input, "\n"))
        assert.equal(0, code, err)
        local l = lines(out)
        assert.equal("true", l[#l])
      end)
  end)
end)
