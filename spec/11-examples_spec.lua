-- examples/: every script runs with `lunakv run`, on a temporary store of
-- its own and on a directory it is given, and prints what it is about.
-- A new example without an entry in `expect` fails here, so none is left
-- unchecked.

local h = require "spec.helpers"

-- What each example's output must contain (Lua patterns).
local expect = {
  ["quickstart.lua"] = { "set greeting at seq 1", "greeting = hello",
    "missing  = nil", "fruit:", "after delete, fruit:banana = nil",
    "%d+ sstable%(s%)",
    -- a fresh store's first flush overlaps nothing: the table goes to L2,
    -- and the example says so rather than "L0 has 0 table(s)"
    "\nthe flush wrote table %d+ %(%d+ bytes%) into L2, not L0:\n  its "
    .. "keys overlap no table in L0 or L1, so it went down to L2 at once\n"
    .. "  %(as in LevelDB%): no compaction has to move it there later\n",
    "\ntables per level: L0 0, L1 0, L2 1\n" },
  ["snapshot.lua"] = { "snapshot pinned at seq 3", "live view:",
    "snapshot view:\n  config:mode = primary\n  config:region = eu\n",
    "iter config:replicas = 3" },
  ["batch_transfer.lua"] = { "total before: 150", "alice %-> bob 30 at seq",
    "carol %-> alice 1000 refused", "total after: 150, in the old "
    .. "snapshot: 150", "log:0001  alice %-> bob 30" },
  ["wordcount.lua"] = { "ingested 7 lines, 81 words",
    "46 distinct words", "  the +15\n", "first line: The write%-ahead log",
    "after flush: 1 table%(s%)" },
  ["bank.lua"] = { "library bank: open, transfer, balance, total",
    "total before: 150 in 3 accounts",
    "alice %-> bob 30 at seq %d+: alice 70, bob 80",
    "carol %-> alice 1000 refused: lunakv: function 'transfer': bank:%d+: "
    .. "'carol' has 0, cannot send 1000",
    "balance of bob: 80\n", "after reopen, total: 150; libraries: bank" },
  ["prefix_scan.lua"] = { "users %(prefix \"user:\"%):\n  user:0001:email",
    "orders of user 0002:\n  order:0002:2024%-05%-06 = bread",
    "users now 6, in the snapshot 5", "orders: 5" },
}

describe("examples/", function()
  local dir
  h.tmpdir_each(function(d) dir = d end)

  -- TMPDIR is the test's directory too, so the check that nothing is
  -- left there covers an example's temporary store.
  local function run_example(name, args)
    return h.lunakv_in(dir, "run " .. h.quote(h.root .. "/examples/" .. name)
      .. (args and (" " .. args) or ""), "TMPDIR=" .. h.quote(dir))
  end

  local names = h.list(h.root .. "/examples", "%.lua$")

  it("has an expectation for every example", function()
    assert.is_true(#names >= 5)
    for _, name in ipairs(names) do
      assert.truthy(expect[name], "no expectations for examples/" .. name)
    end
  end)

  for _, name in ipairs(names) do
    describe(name, function()
      it("runs on a temporary store and removes it", function()
        local code, out, err = run_example(name)
        assert.equal(0, code, "stderr:\n" .. err)
        assert.equal("", err)
        for _, pat in ipairs(expect[name] or {}) do
          assert.matches(pat, out)
        end
        -- nothing is left in the working directory
        assert.same({}, h.list(dir))
      end)

      it("runs on a directory it is given and leaves the data there",
        function()
          local code, out, err = run_example(name, h.quote(dir .. "/db"))
          assert.equal(0, code, "stderr:\n" .. err)
          for _, pat in ipairs(expect[name] or {}) do
            assert.matches(pat, out)
          end
          local db = h.open(dir .. "/db")
          local n = 0
          for _ in db:scan() do n = n + 1 end
          db:close()
          assert.is_true(n > 0)
        end)
    end)
  end

  it("wordcount.lua counts the words of a file it is given", function()
    h.write_file(dir .. "/text.txt", "b a b\nc b a\n")
    local code, out, err = run_example("wordcount.lua",
      h.quote(dir .. "/db") .. " " .. h.quote(dir .. "/text.txt"))
    assert.equal(0, code, err)
    assert.matches("ingested 2 lines, 6 words", out)
    assert.matches("3 distinct words", out)
    assert.matches("  b +3\n  a +2\n  c +1\n", out)
    local b, line2 = h.stored(dir .. "/db", "count:b", "line:000002")
    assert.equal("3", b)
    assert.equal("c b a", line2)
  end)
end)
