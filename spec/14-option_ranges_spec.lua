-- Numeric options of bin/lunakv: a value out of range is a usage error
-- (exit 2, one line naming the option and its range, then the usage),
-- never a bug report (exit 99) from the C layer refusing it later. The
-- ranges Lua checks are the C layer's own (core.bench, core.http_bench):
-- the last block reads them back from the C messages.

local h = require "spec.helpers"
local core = require "lunakv.core"
local bench = require "lunakv.bench"

local lines = h.lines_of

local plain = h.plain

-- Nothing listens on port 1: a run that got past the checks would fail
-- to connect (exit 1), not pass.
local URL = "--url http://127.0.0.1:1 "

-- { arguments, the option the message names, its range as printed }
local CASES = {
  { "bench --value-size 67108864", "--value-size", "from 0 to 1048576" },
  { "bench --value-size 100000000000", "--value-size", "from 0 to 1048576" },
  { "bench --value-size 99999999999999999999999", "--value-size",
    "from 0 to 1048576" },
  { "bench --value-size -1", "--value-size", "from 0 to 1048576" },
  { "bench --key-size 65537", "--key-size", "from 2 to 1024" },
  { "bench --key-size 1", "--key-size", "from 2 to 1024" },
  { "bench -n -5", "--num", "from 1 to 1099511627776" },
  { "bench --num -5", "--num", "from 1 to 1099511627776" },
  { "bench --num=-5", "--num", "from 1 to 1099511627776" },
  { "bench -n 0", "--num", "from 1 to 1099511627776" },
  { "bench -n 1099511627777", "--num", "from 1 to 1099511627776" },
  { "bench -n 1.5", "--num", "from 1 to 1099511627776" },
  { "bench --repeat 0", "--repeat", ">= 1" },
  { "bench --repeat -2", "--repeat", ">= 1" },
  { "bench --seed -1", "--seed", ">= 0" },
  { "bench -w reads257", "--workloads", "from 1 to 256" },
  { "bench -w reads99999999999999999999", "--workloads", "from 1 to 256" },
  { "bench -w readrandom0", "--workloads", "from 1 to 256" },
  { "bench " .. URL .. "--connections 5000", "--connections",
    "from 1 to 4096" },
  { "bench " .. URL .. "--connections 0", "--connections", "from 1 to 4096" },
  { "bench " .. URL .. "--connections -3", "--connections",
    "from 1 to 4096" },
  { "bench " .. URL .. "--key-size 41", "--key-size",
    "from 1 to 40 with %-%-url" },
  { "bench " .. URL .. "--value-size 33554433", "--value-size",
    "from 0 to 33554432 with %-%-url" },
  { "bench " .. URL .. "--timeout-ms 0", "--timeout-ms",
    "from 1 to 86400000" },
  { "bench " .. URL .. "--timeout-ms 86400001", "--timeout-ms",
    "from 1 to 86400000" },
  { "bench " .. URL .. "--keys 0", "--keys", ">= 1" },
  { "bench " .. URL .. "--seconds 0", "--seconds", "> 0 and <= 86400" },
  { "bench " .. URL .. "--seconds -2", "--seconds", "> 0 and <= 86400" },
  { "bench " .. URL .. "--seconds 86401", "--seconds", "> 0 and <= 86400" },
  { "bench " .. URL .. "-w mix101", "--workloads", "from 0 to 100" },
  { "bench " .. URL .. "-w mix99999999999999999999", "--workloads",
    "from 0 to 100" },
  { "cluster up 0", "N", "from 1 to 64" },
  { "cluster up 65", "N", "from 1 to 64" },
  { "cluster up -5", "N", "from 1 to 64" },
  { "cluster up -5 --base-port 20000", "N", "from 1 to 64" },
  { "cluster up --base-port 0", "--base-port", "from 1 to 65535" },
  { "cluster up --base-port 70000", "--base-port", "from 1 to 65535" },
  { "cluster up --base-port -1", "--base-port", "from 1 to 65535" },
  { "cluster up 3 --base-port 65534", "--base-port",
    "from 1 to 65533 for 3 nodes" },
  { "cluster up --timeout 0", "--timeout", "> 0 and <= 86400" },
  { "cluster up --timeout -1", "--timeout", "> 0 and <= 86400" },
  { "cluster up --timeout 1e9", "--timeout", "> 0 and <= 86400" },
}

local pids_under = h.pids_under

describe("numeric options #ranges", function()
  local dir
  before_each(function() dir = h.tmpdir() end)
  after_each(function()
    for _, pid in ipairs(pids_under(dir)) do core.kill(pid, "KILL") end
    h.cleanup()
  end)

  local function lunakv(args)
    return h.lunakv_in(dir, args .. " </dev/null")
  end

  for _, c in ipairs(CASES) do
    local args, option, range = c[1], c[2], c[3]
    it("`lunakv " .. args .. "` is a usage error naming " .. option
      .. " and its range", function()
        local code, out, err = lunakv(args)
        assert.equal("", out)
        local l = lines(err)
        assert.equal(2, code, err)
        assert.matches("^lunakv: ", l[1])
        -- the option by name, the range, and the value given
        local opt = option:find("%", 1, true) and option or plain(option)
        local rng = range:find("%", 1, true) and range or plain(range)
        assert.matches(opt, l[1])
        assert.matches(rng, l[1])
        assert.matches("^Usage: lunakv ", l[2])
        for i = 3, #l do assert.matches("^       ", l[i]) end
        assert.is_nil(err:find("internal error", 1, true))
        -- nothing was created (cluster up would make ./cluster)
        assert.same({}, h.list(dir))
      end)
  end

  it("leaves negative numbers to a script run with `run`", function()
    h.write_file(dir .. "/args.lua", "print(table.concat(arg, ' '))\n")
    local code, out, err = lunakv("run args.lua -n -5 --x -1 -- -2")
    assert.equal(0, code, err)
    assert.equal("-n -5 --x -1 -- -2\n", out)
  end)

  it("hands a negative number only to converters that check ranges",
    function()
      -- lunakv node's numeric flags check ranges: the -5 reaches the
      -- converter, which names the range (exit 2), and no node starts
      local node = "node 0 " .. h.quote(dir .. "/n")
        .. " http://127.0.0.1:1 http://127.0.0.1:1 "
      local code, out, err = lunakv(node .. "--heartbeat-ms -5")
      assert.equal(2, code, err)
      assert.equal("", out)
      assert.matches("%-%-heartbeat%-ms must be an integer from %d+ to %d+, "
        .. "got '%-5'", err)
      assert.is_false(h.exists(dir .. "/n"))
      -- --host takes text, unchecked: a -5 there stays argparse's unknown
      -- option (exit 2), it never reaches core.serve (exit 99)
      code, out, err = lunakv(node .. "--host -5")
      assert.equal(2, code, err)
      assert.equal("", out)
      assert.matches("unknown option '%-5'", err)
      assert.is_nil(err:find("internal error", 1, true))
      assert.is_false(h.exists(dir .. "/n"))
    end)

  it("prints each option's range in --help", function()
    local code, out = lunakv("bench --help")
    assert.equal(0, code)
    out = out:gsub("%s+", " ")
    for _, want in ipairs { "1 to 1099511627776", "2 to 1024",
      "0 to 1048576", "1 to 40", "0 to 33554432", "1 to 4096",
      "1 to 86400000", "1 to 256" } do
      assert.matches(want, out, 1, true)
    end
    code, out = lunakv("cluster up --help")
    assert.equal(0, code)
    out = out:gsub("%s+", " ")
    for _, want in ipairs { "1 to 64", "1 to 65535", "86400" } do
      assert.matches(want, out, 1, true)
    end
  end)

  -- The ranges above are the C layer's: read them from its messages.
  describe("agree with the C layer", function()
    local function c_range(fn, ...)
      local ok, e = pcall(fn, ...)
      assert.is_false(ok)
      local lo, hi = tostring(e):match("from (%-?%d+) to (%-?%d+)")
      return math.tointeger(tonumber(lo)), math.tointeger(tonumber(hi))
    end

    it("core.bench", function()
      local db = h.open(dir .. "/db")
      local L = bench.LIMITS
      local _, hi = c_range(core.bench, db, { kind = "writes", num = 1,
        value_size = -1 })
      assert.equal(hi, L.value_size[2])
      _, hi = c_range(core.bench, db, { kind = "writes", num = 1,
        key_size = 0 })
      assert.equal(hi, L.key_size[2])
      _, hi = c_range(core.bench, db, { kind = "writes", num = 0 })
      assert.equal(hi, L.num[2])
      _, hi = c_range(core.bench, db, { kind = "reads", num = 1,
        threads = 0 })
      assert.equal(hi, L.threads[2])
      db:close()
    end)

    it("core.http_bench", function()
      local L = bench.LIMITS
      local function hb(o)
        o.url, o.ops = "http://127.0.0.1:1", 1
        return c_range(core.http_bench, o)
      end
      assert.same(L.connections, { hb { connections = 0 } })
      assert.same(L.http_key_size, { hb { key_size = 0 } })
      assert.same(L.http_value_size, { hb { value_size = -1 } })
      assert.same(L.timeout_ms, { hb { timeout_ms = 0 } })
      assert.same(L.write_pct, { hb { write_pct = -1 } })
    end)
  end)
end)
