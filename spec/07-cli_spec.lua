-- bin/lunakv: run, --version, usage errors, and the shell fed by a pipe.

local h = require "spec.helpers"
local lunakv = require "lunakv"

local plain = h.plain

local lines = h.lines_of

describe("bin/lunakv", function()
  local dir
  h.tmpdir_each(function(d) dir = d end)

  local function lunakv_cmd(args, cwd)
    return h.lunakv_in(cwd or dir, args)
  end

  describe("run", function()
    it("runs a script from another directory with arg and the module",
      function()
        h.write_file(dir .. "/script.lua", [[
local lunakv = require "lunakv"
print("arg1=" .. tostring(arg[1]), "arg2=" .. tostring(arg[2]))
print("arg0=" .. tostring(arg[0]))
print("dots=" .. select("#", ...) .. ":" .. tostring((...)))
local db = lunakv.open(arg[2])
db:set("from", "script")
print("got=" .. db:get("from"))
db:close()
]])
        -- cwd is the temporary dir, not the checkout: the script path is
        -- relative to it, the module is found from bin/lunakv's own path
        local code, out, err = lunakv_cmd("run script.lua x " ..
          h.quote(dir .. "/db"), dir)
        assert.equal(0, code, err)
        local l = lines(out)
        assert.equal("arg1=x\targ2=" .. dir .. "/db", l[1])
        assert.equal("arg0=script.lua", l[2])
        assert.equal("dots=2:x", l[3])
        assert.equal("got=script", l[4])
        assert.equal("script", h.stored(dir .. "/db", "from"))
      end)

    it("runs a script given by absolute path from /", function()
      h.write_file(dir .. "/s.lua",
        'local l = require "lunakv"; print(arg[1], l.version)\n')
      local code, out, err = lunakv_cmd("run " .. h.quote(dir .. "/s.lua") ..
        " hello", "/")
      assert.equal(0, code, err)
      assert.equal("hello\t" .. lunakv.version .. "\n", out)
    end)

    it("works when started as an executable through a relative path",
      function()
        h.write_file(dir .. "/s.lua", 'print(require("lunakv").version)\n')
        local code, out, err = h.run("cd " .. h.quote(h.root) ..
          " && bin/lunakv run " .. h.quote(dir .. "/s.lua"))
        assert.equal(0, code, err)
        assert.equal(lunakv.version .. "\n", out)
      end)

    local examples = h.list(h.root .. "/examples", "%.lua$")
    it("finds the examples", function()
      assert.is_true(#examples >= 1)
    end)
    -- Examples run without arguments: their documented default is a
    -- temporary store from mktemp -d (examples/lib/store_dir.lua), removed
    -- at their end. TMPDIR points it into this test's directory, so
    -- nothing lands in /tmp, however the example ends.
    for _, ex in ipairs(examples) do
      it("runs examples/" .. ex .. " successfully", function()
        local tmp = dir .. "/tmp"
        assert(require("lunakv.core").mkdir(tmp))
        local code, out, err = h.lunakv_in(dir, "run "
          .. h.quote(h.root .. "/examples/" .. ex), "TMPDIR=" .. h.quote(tmp))
        assert.equal(0, code, "stdout:\n" .. out .. "\nstderr:\n" .. err)
        assert.is_true(#out > 0)
        assert.same({}, h.list(tmp), "the example left its temporary store")
      end)
    end

    it("exits 1 with the message when the script raises", function()
      h.write_file(dir .. "/bad.lua", 'error("boom from script")\n')
      local code, _, err = lunakv_cmd("run bad.lua")
      assert.equal(1, code)
      assert.matches("boom from script", err)
    end)

    it("fails naming a missing script", function()
      local code, _, err = lunakv_cmd("run no-such-script.lua")
      assert.is_not.equal(0, code)
      assert.matches("no%-such%-script%.lua", err)
    end)

    it("is a usage error (exit 2) without a FILE", function()
      local code = lunakv_cmd("run")
      assert.equal(2, code)
    end)
  end)

  describe("options and commands", function()
    it("prints the version with --version", function()
      local code, out, err = lunakv_cmd("--version")
      assert.equal(0, code, err)
      assert.matches("lunakv", out)
      assert.matches(plain(lunakv.version), out)
      assert.equal(1, #lines(out))
      code, out = h.run(h.quote(h.bin) .. " --version")
      assert.equal(0, code)
      assert.matches(plain(lunakv.version), out)
    end)

    it("exits 2 on an unknown command, saying which", function()
      local code, out, err = lunakv_cmd("frobnicate")
      assert.equal(2, code)
      assert.matches("frobnicate", err)
      assert.equal("", out)
    end)

    it("exits 2 on an unknown option", function()
      local code, _, err = lunakv_cmd("--frobnicate")
      assert.equal(2, code)
      assert.matches("frobnicate", err)
    end)

    it("prints usage with --help", function()
      local code, out = lunakv_cmd("--help")
      assert.equal(0, code)
      assert.matches("usage", out:lower())
      assert.matches("run", out)
    end)
  end)

  describe("shell", function()
    local function shell(input, db)
      return h.run("cd " .. h.quote(dir) .. " && printf " .. h.quote(input) ..
        " | " .. h.lunakv_cmd .. " shell " .. h.quote(db))
    end

    it("answers piped commands with just the answers", function()
      local code, out, err = shell("SET a 1\\nGET a\\n", dir .. "/db")
      assert.equal(0, code, err)
      local l = lines(out)
      assert.equal(2, #l, "stdout: " .. out)
      assert.equal("1", l[2])
      assert.is_nil(out:find("lunakv>", 1, true))
      assert.equal("", err)
      -- the write is in the db once the shell has ended
      assert.equal("1", h.stored(dir .. "/db", "a"))
    end)

    it("answers a missing key, deletes and scans", function()
      local code, out, err = shell(
        "GET nope\\nSET b 2\\nSET c 3\\nDELETE b\\nGET b\\nSCAN a z\\n",
        dir .. "/db")
      assert.equal(0, code, err)
      local l = lines(out)
      assert.equal(6, #l, "stdout: " .. out)
      assert.equal(l[1], l[5]) -- "absent" is said the same way twice
      assert.is_not.equal("", l[1])
      -- the scan answers c = 3, not the deleted b
      assert.matches("^c%s+3$", l[6])
    end)

    it("reports a bad command on stderr and goes on", function()
      local _, out, err = shell("SET a 1\\nBOGUS x\\nGET a\\n", dir .. "/db")
      assert.matches("lunakv", err)
      local l = lines(out)
      assert.equal("1", l[#l], "stdout: " .. out)
    end)
  end)
end)
