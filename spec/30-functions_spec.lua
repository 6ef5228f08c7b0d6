-- Stored functions on an embedded db (docs/functions.md): libraries,
-- calls committed as one batch, the sandbox, the limits, and bad input
-- that changes nothing.

local h = require "spec.helpers"
local core = require "lunakv.core"

local LIB_KEY = "\255\255lunakv/lib/"

-- Every key and value of the db, reserved ones included: what "nothing
-- changed" is checked against.
local function everything(db)
  local t = {}
  for k, v in db:scan() do t[k] = v end
  return t
end

-- The library named name in db:libraries(), or nil.
local function lib_info(db, name)
  for _, l in ipairs(db:libraries()) do
    if l.name == name then return l end
  end
end

describe("stored functions", function()
  local dir, db
  h.tmpdir_each(function(d)
    dir = d
    db = h.open(dir .. "/db")
  end)

  -- Load src as library name; returns its function names.
  local function load(name, src) return db:put_library(name, src) end

  describe("libraries", function()
    it("registers functions, lists them, and stores the source", function()
      local names = load("kv", [[
        lunakv.register("put", function(tx, a) tx:set(a.k, a.v) end)
        lunakv.register("read", function(tx, a) return tx:get(a.k) end,
          { read_only = true })
      ]])
      assert.same({ "put", "read" }, names)
      local l = lib_info(db, "kv")
      assert.same({ "put", "read" }, l.functions)
      assert.same({ read = true }, l.read_only)
      assert.is_true(l.memory > 0)
      assert.matches("lunakv.register%(\"put\"", db:get(LIB_KEY .. "kv"))
      assert.is_nil(db:call("put", { k = "a", v = "1" }))
      assert.equal("1", db:call("read", { k = "a" }))
    end)

    it("survives a reopen, compiled again from the store", function()
      load("c", [[lunakv.register("inc", function(tx)
        local n = (tonumber(tx:get("n")) or 0) + 1
        tx:set("n", tostring(n))
        return n
      end)]])
      assert.equal(1, db:call("inc"))
      db:close()
      db = h.open(dir .. "/db")
      assert.same({ "inc" }, lib_info(db, "c").functions)
      assert.equal(2, db:call("inc"))
    end)

    it("keeps a library's load limits for the reopen and the restart",
      function()
        -- its top level runs ~9e7 instructions: more than the default
        -- budget, so it loads only under the limits it was put with
        local heavy = [[
          local n = 0
          for i = 1, 3e7 do n = n + i end
          state = "clean"
          lunakv.register("state", function() return state end)
          lunakv.register("dirty", function()
            state = "dirty"
            local t = {}
            for i = 1, math.huge do t[i] = ("x"):rep(1 << 16) .. i end
          end)
        ]]
        assert.matches("SCRIPT_MAX_INSTRUCTIONS",
          h.error_of(db.put_library, db, "heavy", heavy))
        db:put_library("heavy", heavy, { script_max_instructions = 200000000 })
        load("a", [[lunakv.register("ok", function() return "ok" end)]])
        db:close()
        db = h.open(dir .. "/db")
        assert.equal("clean", db:call("state"))
        -- the memory limit restarts the library: under its own limits
        assert.matches("SCRIPT_MAX_MEMORY", h.error_of(db.call, db, "dirty"))
        assert.equal("clean", db:call("state"))
        assert.is_nil(lib_info(db, "heavy").error)
      end)

    it("lets a stored library that no longer loads fail alone", function()
      load("a", [[lunakv.register("ok", function() return "ok" end)]])
      db:set(LIB_KEY .. "broken", "lunakv.register('gone', function() end")
      db:close()
      db = h.open(dir .. "/db")
      assert.equal("ok", db:call("ok"))
      local b = lib_info(db, "broken")
      assert.same({}, b.functions)
      assert.matches("broken:1:", b.error, 1, true)
      assert.matches("unknown function 'gone' (not loaded: library "
        .. "'broken': broken:1:", h.error_of(db.call, db, "gone"), 1, true)
      db:delete_library("broken")
      assert.is_nil(lib_info(db, "broken"))
      assert.is_nil(db:get(LIB_KEY .. "broken"))
      assert.equal("ok", db:call("ok"))
    end)

    it("replaces a library of the same name, functions and all", function()
      load("a", [[lunakv.register("f1", function() return 1 end)]])
      load("a", [[lunakv.register("f2", function() return 2 end)]])
      assert.same({ "f2" }, lib_info(db, "a").functions)
      assert.matches("unknown function 'f1'", h.error_of(db.call, db, "f1"))
      assert.equal(2, db:call("f2"))
    end)

    it("keeps the working library when its replacement does not load",
      function()
        -- a failed put changes nothing: not the store, not the runtime
        load("a", [[lunakv.register("f", function() return 1 end)]])
        local before = everything(db)
        for _, src in ipairs { "x = = 1", "error('boom')",
          "lunakv.register('g', function() end) error('late')", "x = 1" } do
          assert.matches("library 'a'",
            h.error_of(db.put_library, db, "a", src), 1, true)
          assert.same(before, everything(db))
          assert.same({ "f" }, (lib_info(db, "a") or {}).functions)
          assert.equal(1, db:call("f"))
        end
      end)

    it("deletes a library and its functions, in the store too", function()
      load("a", [[lunakv.register("f", function() return 1 end)]])
      db:delete_library("a")
      assert.same({}, db:libraries())
      assert.is_nil(db:get(LIB_KEY .. "a"))
      assert.matches("unknown function 'f'", h.error_of(db.call, db, "f"))
      db:close()
      db = h.open(dir .. "/db")
      assert.same({}, db:libraries())
    end)

    it("refuses a syntax or run error with its line, storing nothing",
      function()
        load("good", [[lunakv.register("g", function() return 1 end)]])
        local before = everything(db)
        local cases = {
          { "x = = 1", "bad:1: unexpected symbol" },
          { "\n\nerror('boom')", "bad:3: boom" },
          { "local t = nil\nreturn t.x", "bad:2: attempt to index" },
          { "x = 1", "registers no function" },
          { "lunakv.register('g', function() end)",
            "function 'g' is already registered by library 'good'" },
          { "lunakv.register('h', function() end)\n"
            .. "lunakv.register('h', function() end)", "registered twice" },
          { "lunakv.register('bad name', function() end)", "may hold only" },
          { "lunakv.register('h', 1)", "function expected" },
          { "lunakv.register('h', function() end, { rw = true })",
            "unknown option 'rw'" },
          { "\27Lua", "attempt to load a binary chunk" },
        }
        for _, c in ipairs(cases) do
          local err = h.error_of(db.put_library, db, "bad", c[1])
          assert.matches(c[2], err, 1, true)
          assert.same(before, everything(db))
          assert.is_nil(lib_info(db, "bad"))
        end
      end)

    it("refuses bad names and sources, changing nothing", function()
      local before = everything(db)
      local cases = {
        { "", "x", "library name must be 1 to 64 bytes" },
        { string.rep("n", 65), "x", "1 to 64 bytes" },
        { "a b", "x", "may hold only letters" },
        { "a/b", "x", "may hold only letters" },
        { 7, "x", "string expected" },
        { "ok", 7, "string expected" },
        { "ok", nil, "string expected" },
      }
      for _, c in ipairs(cases) do
        local err = h.error_of(db.put_library, db, c[1], c[2])
        assert.matches(c[3], err, 1, true)
        assert.same(before, everything(db))
      end
      assert.matches("no library 'nope'",
        h.error_of(db.delete_library, db, "nope"))
      assert.matches("may hold only",
        h.error_of(db.delete_library, db, "../x"))
      assert.same(before, everything(db))
      assert.same({}, db:libraries())
    end)

    it("allows lunakv.register only while the library loads", function()
      load("late", [[
        lunakv.register("f", function() lunakv.register("g", print) end)
      ]])
      assert.matches("only while the library loads",
        h.error_of(db.call, db, "f"))
      assert.same({ "f" }, lib_info(db, "late").functions)
    end)
  end)

  describe("calls", function()
    it("commit all the writes of a call in one batch", function()
      load("w", [[lunakv.register("two", function(tx)
        tx:set("a", "1"); tx:set("b", "2"); tx:delete("c")
        return "done"
      end)]])
      db:set("c", "x")
      local seq0 = db:last_seq()
      local res, seq = db:call("two")
      assert.equal("done", res)
      assert.equal(seq0 + 3, seq)
      assert.equal("1", db:get("a"))
      assert.equal("2", db:get("b"))
      assert.is_nil(db:get("c"))
      -- the old state is exactly the one before the batch
      assert.is_nil(db:get("a", seq0))
      assert.equal("x", db:get("c", seq + 0 - 1))
    end)

    it("write nothing when the function fails halfway", function()
      load("w", [[lunakv.register("half", function(tx, a)
        tx:set("a", "1")
        tx:delete("keep")
        if a.fail == "error" then error("stop here") end
        if a.fail == "caught" then
          -- a raise the script catches is its business: the call goes on
          pcall(error, "ignored")
        end
        return tx:get("a")
      end)]])
      db:set("keep", "k")
      local before, seq = everything(db), db:last_seq()
      assert.matches("function 'half': w:4: stop here",
        h.error_of(db.call, db, "half", { fail = "error" }))
      assert.same(before, everything(db))
      assert.equal(seq, db:last_seq())
      assert.equal("1", db:call("half", { fail = "caught" }))
      assert.is_nil(db:get("keep"))
    end)

    it("see their own writes in tx:get and tx:scan", function()
      for k, v in pairs { a = "1", b = "2", c = "3", e = "5" } do
        db:set(k, v)
      end
      load("s", [[lunakv.register("mix", function(tx, a)
        local seen = {}
        seen.before = tx:get("b")
        tx:set("b", "two")
        tx:set("d", "4")
        tx:delete("c")
        tx:set("x", "gone"); tx:delete("x")
        seen.b, seen.c, seen.d = tx:get("b"), tx:get("c"), tx:get("d")
        seen.rows = {}
        for k, v in tx:scan(a.lo, a.hi, a.limit) do
          seen.rows[#seen.rows + 1] = k .. "=" .. v
          -- a write during the scan, past where it stands: it shows
          if k == "d" then tx:set("dd", "new") end
        end
        return seen
      end)]])
      local got = db:call("mix", {})
      assert.same({ before = "2", b = "two", d = "4",
        rows = { "a=1", "b=two", "d=4", "dd=new", "e=5" } }, got)
      got = db:call("mix", { lo = "b", hi = "d" }) -- inclusive, as db:scan
      assert.same({ "b=two", "d=4" }, got.rows) -- "dd" sorts after "d"
      got = db:call("mix", { limit = 2 })
      assert.same({ "a=1", "b=two" }, got.rows)
      got = db:call("mix", { lo = "z" })
      assert.same({}, got.rows)
    end)

    it("hold at most 64 scans open at once", function()
      -- each open scan holds an engine iterator outside the counted
      -- memory: keeping them is refused, dropping them is not
      for i = 1, 3 do db:set("k" .. i, "v") end
      load("s", [[
        lunakv.register("keep", function(tx, n)
          local keep = {}
          for i = 1, n do
            local step, _, _, cursor = tx:scan()
            step()
            keep[i] = cursor
          end
          return #keep
        end)
        lunakv.register("drop", function(tx)
          local n = 0
          for _ = 1, 1000 do
            local step = tx:scan()
            n = n + (step() and 1 or 0)
          end
          for _ = 1, 1000 do for _ in tx:scan() do n = n + 1 break end end
          return n
        end)]])
      assert.equal(64, db:call("keep", 64))
      assert.matches("function 'keep': s:4: too many open scans (at most 64 "
        .. "per call)", h.error_of(db.call, db, "keep", 65), 1, true)
      assert.equal(2000, db:call("drop"))
    end)

    it("keep reserved keys out of reach", function()
      load("r", [[
        lunakv.register("scan", function(tx)
          local n = 0
          for k in tx:scan() do n = n + 1; assert(k:byte(1) ~= 255, k) end
          return n
        end)
        lunakv.register("get", function(tx) return tx:get(LIB) end)
        lunakv.register("set", function(tx) tx:set(LIB, "x") end)
        LIB = "\255\255lunakv/lib/r"
      ]])
      db:set("a", "1")
      assert.equal(1, db:call("scan"))
      assert.matches("reserved", h.error_of(db.call, db, "get"))
      assert.matches("reserved", h.error_of(db.call, db, "set"))
      assert.matches("lunakv.register", db:get(LIB_KEY .. "r"))
    end)

    it("refuse writes from a read_only function", function()
      load("ro", [[lunakv.register("w", function(tx) tx:set("a", "1") end,
        { read_only = true })]])
      assert.matches("function 'w' is read_only",
        h.error_of(db.call, db, "w"))
      assert.is_nil(db:get("a"))
    end)

    it("pass args and results through JSON", function()
      load("j", [[lunakv.register("echo", function(_, a) return a end)
        lunakv.register("none", function() end)]])
      assert.same({ n = 3, f = 1.5, s = "x", l = { 1, 2 }, t = true },
        db:call("echo", { n = 3, f = 1.5, s = "x", l = { 1, 2 }, t = true }))
      assert.equal("integer", math.type(db:call("echo", 3)))
      assert.is_nil(db:call("echo"))
      assert.is_nil(db:call("none"))
      assert.equal('{"a":[1,2]}', db:call_json("echo", '{"a": [1, 2]}'))
      assert.equal("null", db:call_json("echo"))
    end)

    it("fail with nothing written when the result is not JSON", function()
      load("j", [[
        lunakv.register("fn", function(tx)
          tx:set("a", "1") return function() end end)
        lunakv.register("tx", function(tx) tx:set("a", "1") return tx end)
        lunakv.register("sparse", function(tx)
          tx:set("a", "1") return { [1] = 1, [1000] = 2 } end)
        lunakv.register("cycle", function(tx)
          local t = {}; t.t = t; tx:set("a", "1") return t end)
      ]])
      for _, f in ipairs { "fn", "tx", "sparse", "cycle" } do
        assert.matches("function '" .. f
          .. "': the result cannot be encoded as JSON",
          h.error_of(db.call, db, f), 1, true)
        assert.is_nil(db:get("a"))
      end
    end)

    it("refuse integers JSON would round, args and results", function()
      load("j", [[lunakv.register("echo", function(_, a) return a end)
      lunakv.register("big", function(tx)
        tx:set("a", "1")
        return { n = 1234567890123456789 }
      end)]])
      -- 14 digits pass both ways, exactly
      assert.same({ n = 99999999999999, m = -99999999999999 },
        db:call("echo", { n = 99999999999999, m = -99999999999999 }))
      assert.matches("integer too large for JSON: 100000000000000",
        h.error_of(db.call, db, "echo", { n = 100000000000000 }), 1, true)
      assert.matches("integer too large for JSON: -9007199254740993",
        h.error_of(db.call, db, "echo", { { -9007199254740993 } }), 1, true)
      assert.matches("function 'big': the result cannot be encoded as JSON: "
        .. "integer too large for JSON: 1234567890123456789",
        h.error_of(db.call, db, "big"), 1, true)
      assert.is_nil(db:get("a"))
    end)

    it("refuse JSON nested too deeply instead of crashing", function()
      load("j", [[lunakv.register("echo", function(_, a) return a end)
        lunakv.register("deep", function(_, a)
          local t = 1.5
          for _ = 1, a do t = { t } end
          return t
        end)]])
      -- 100 levels of floats: each level of the integer walk pushes
      -- values, past the 20 slots a C function starts with
      local json = ("["):rep(100) .. "1.0" .. ("]"):rep(100)
      assert.equal(("["):rep(100) .. "1" .. ("]"):rep(100),
        db:call_json("echo", json))
      local r = db:call("deep", 990)
      for _ = 1, 990 do r = r[1] end
      assert.equal(1.5, r)
      assert.matches("nested", h.error_of(db.call_json, db,
        "echo", ("["):rep(1001) .. "1" .. ("]"):rep(1001)))
    end)

    it("refuse bad calls, changing nothing", function()
      load("j", [[lunakv.register("f", function(tx) tx:set("a", "1") end)]])
      local before = everything(db)
      assert.matches("unknown function 'nope'",
        h.error_of(db.call, db, "nope"))
      assert.matches("function name must be",
        h.error_of(db.call, db, ""))
      assert.matches("string expected", h.error_of(db.call, db, 1))
      assert.matches("cannot encode as JSON",
        h.error_of(db.call, db, "f", print))
      assert.matches("args are not JSON",
        h.error_of(db.call_json, db, "f", "{oops"))
      assert.matches("option 'max' is unknown",
        h.error_of(db.call, db, "f", nil, { max = 1 }))
      assert.matches("script_max_writes",
        h.error_of(db.call, db, "f", nil, { script_max_writes = 0 }))
      assert.same(before, everything(db))
    end)
  end)

  describe("the sandbox", function()
    -- each refused at the library's top level and inside a call
    local escapes = {
      "load('return 1')", "loadstring('return 1')", "dofile('/etc/passwd')",
      "loadfile('/etc/passwd')", "require('os')", "collectgarbage()",
      "io.open('/etc/passwd')", "os.execute('true')", "os.exit(1)",
      "os.getenv('HOME')", "os.remove('/tmp/x')", "os.rename('/a', '/b')",
      "package.loadlib('x', 'y')", "debug.getregistry()",
      "string.dump(function() end)",
      "print('x')", "warn('x')", "coroutine.create(function() end)",
      "getmetatable('').__index.x = 1",
      "setmetatable({}, { __gc = function() end })",
    }
    for _, expr in ipairs(escapes) do
      it("refuses " .. expr, function()
        local err = h.error_of(db.put_library, db, "e", expr
          .. "\nlunakv.register('e', function() end)")
        assert.is_string(err)
        assert.matches("e:1:", err, 1, true)
        load("e", "lunakv.register('e', function() " .. expr .. " end)")
        err = h.error_of(db.call, db, "e")
        assert.matches("function 'e': e:1:", err, 1, true)
        db:delete_library("e")
      end)
    end

    it("leaves os.time, os.clock, os.date, string, table, math, utf8, cjson",
      function()
        load("ok", [[lunakv.register("f", function()
          return { type(os.time()), type(os.clock()), os.date("!%Y", 0),
            ("%d"):format(7), table.concat({ 1, 2 }, ","), math.max(1, 2),
            utf8.char(233), cjson.encode({ 1 }), #tostring(cjson.null) > 0 }
        end)]])
        assert.same({ "number", "number", "1970", "7", "1,2", 2, "é", "[1]",
          true }, db:call("f"))
      end)

    it("gives cjson's encode, decode and null only, not its setters",
      function()
        -- the setters let a script raise the depth bounds and overflow
        -- the C stack; cjson.new keeps buffers outside the counted memory
        load("c", [[lunakv.register("f", function()
          local names = {}
          for k in pairs(cjson) do names[#names + 1] = k end
          table.sort(names)
          local t = {}
          t[1] = t
          return { names, (pcall(cjson.encode, t)) }
        end)]])
        assert.same({ { "decode", "encode", "null" }, false }, db:call("f"))
      end)

    it("loads cjson as the C module, not a cjson.lua in the directory",
      function()
        -- Lua's default package.path searches ./?.lua first: a child
        -- runs in a directory holding a cjson.lua that raises
        local cwd = dir .. "/cwd"
        assert(os.execute("mkdir -p '" .. cwd .. "'"))
        h.write_file(cwd .. "/cjson.lua", "error('the cjson.lua of ./')\n")
        local script = h.prelude .. [[
          package.path = package.path:gsub("%./%?%.lua;?", "")
          local db = require("lunakv").open("db")
          db:put_library("c", "lunakv.register('f', function() "
            .. "return cjson.encode({ 1 }) end)")
          io.write((db:call("f")))
          db:close()
        ]]
        h.write_file(dir .. "/child.lua", script)
        local code, out, err = h.run("cd '" .. cwd .. "' && " .. h.lua .. " '"
          .. dir .. "/child.lua'")
        assert.equal(0, code, err)
        assert.equal("[1]", out)
      end)

    it("keeps each library's globals and string methods its own", function()
      load("a", [[
        shared = "a's"
        string.upper = function() return "hijacked" end
        lunakv.register("set_global", function() shared2 = "a's" end)
      ]])
      load("b", [[lunakv.register("look", function()
        return { shared = shared or "none", shared2 = shared2 or "none",
          upper = ("x"):upper() }
      end)]])
      db:call("set_global")
      assert.same({ shared = "none", shared2 = "none", upper = "X" },
        db:call("look"))
    end)
  end)

  describe("limits", function()
    local defaults = {}
    for _, l in ipairs(core.script_limits()) do defaults[l.name] = l.default end

    it("has documented defaults", function()
      assert.same({ script_max_instructions = 50000000,
        script_max_memory = 64 * 1024 * 1024, script_max_writes = 10000 },
        defaults)
    end)

    -- Run f, expecting the limit named; then the db and the library work,
    -- nothing was written, and the library's memory is back.
    local function refused(f, limit, opts)
      local mem = lib_info(db, "lim").memory
      local before = everything(db)
      local err = h.error_of(db.call, db, f, nil, opts)
      assert.matches("function '" .. f .. "'", err, 1, true)
      assert.matches(limit, err, 1, true)
      assert.same(before, everything(db))
      assert.is_true(lib_info(db, "lim").memory < mem + 64 * 1024,
        "memory " .. lib_info(db, "lim").memory .. " after " .. mem)
      assert.equal("ok", db:call("ok"))
      db:set("still", "writable")
      assert.equal("writable", db:get("still"))
      db:delete("still")
      return err
    end

    before_each(function()
      load("lim", [[
        lunakv.register("ok", function() return "ok" end)
        lunakv.register("loop", function(tx) tx:set("a", "1") while true do end end)
        lunakv.register("loop_caught", function(tx)
          tx:set("a", "1")
          while true do pcall(function() while true do end end) end
        end)
        lunakv.register("gib", function(tx)
          tx:set("a", "1") return #string.rep("x", 1 << 30) end)
        kept = {}
        lunakv.register("bomb", function(tx)
          tx:set("a", "1")
          for i = 1, math.huge do kept[i] = string.rep("x", 1 << 16) .. i end
        end)
        lunakv.register("bomb_caught", function(tx)
          tx:set("a", "1")
          pcall(function()
            for i = 1, math.huge do kept[i] = string.rep("x", 1 << 16) .. i end
          end)
          kept = {}
          return "survived"
        end)
        lunakv.register("writes", function(tx, a)
          for i = 1, a and a.n or 1e9 do tx:set("k" .. i, "v") end
        end)
        lunakv.register("writes_caught", function(tx)
          pcall(function() for i = 1, 1e9 do tx:set("k" .. i, "v") end end)
        end)
        lunakv.register("big_writes", function(tx)
          local v = string.rep("v", 1 << 20)
          for i = 1, 1e9 do tx:set("k" .. i, v) end
        end)
      ]])
    end)

    it("ends an infinite loop at SCRIPT_MAX_INSTRUCTIONS, with its line",
      function()
        local err = refused("loop", "SCRIPT_MAX_INSTRUCTIONS")
        assert.matches("lim:2: SCRIPT_MAX_INSTRUCTIONS limit reached", err, 1,
          true)
        refused("loop_caught", "SCRIPT_MAX_INSTRUCTIONS",
          { script_max_instructions = 100000 })
      end)

    it("counts what table and string functions loop over in C", function()
      -- none of these runs a Lua instruction while it loops: without the
      -- charges each would run for minutes under any budget
      load("c", [[
        local huge = setmetatable({}, { __len = function() return 3e8 end })
        lunakv.register("move", function() table.move({}, 1, 3e8, 2) end)
        lunakv.register("shift", function()
          local t = {}
          for i = 1, 10000 do t[i] = i end
          for _ = 1, 1e6 do table.insert(t, 1, 0) table.remove(t, 1) end
        end)
        lunakv.register("sort", function()
          local t = {}
          for i = 1, 4000 do t[i] = -i end
          for _ = 1, 1e6 do table.sort(t) end
        end)
        lunakv.register("cheap", function()
          table.insert(huge, 1, "x") -- the raw length: no shift
          local first = table.remove(huge, 1)
          local t = { 1, 2, 3 }
          table.insert(t, 1, 0)
          table.insert(t, 9)
          return { #string.rep("", 2^62), #string.rep("", 1e18, ""),
            first, table.remove(t, 1), table.remove(t), t,
            table.move({ 1, 2, 3 }, 1, 3, 2), string.rep("ab", 3, "-") }
        end)
      ]])
      for _, f in ipairs { "move", "shift", "sort" } do
        local t0 = os.clock()
        assert.matches("function '" .. f
          .. "': c:%d+: SCRIPT_MAX_INSTRUCTIONS limit reached",
          h.error_of(db.call, db, f))
        assert.is_true(os.clock() - t0 < 5, f .. " took " .. os.clock() - t0)
      end
      assert.same({ 0, 0, "x", 0, 9, { 1, 2, 3 }, { 1, 1, 2, 3 },
        "ab-ab-ab" }, db:call("cheap"))
    end)

    it("charges tx operations to SCRIPT_MAX_INSTRUCTIONS", function()
      -- each runs in C, unseen by the count hook: uncharged, a loop of
      -- them ran for seconds under the default budget
      for i = 1, 100 do db:set(("k%03d"):format(i), "v") end
      load("t", [[
        lunakv.register("scans", function(tx)
          while true do for _ in tx:scan() do break end end
        end)
        lunakv.register("gets", function(tx)
          while true do tx:get("k001") end
        end)
        lunakv.register("rows", function(tx)
          while true do for _ in tx:scan() do end end
        end)
      ]])
      for _, f in ipairs { "scans", "gets", "rows" } do
        local t0 = os.clock()
        assert.matches("function '" .. f
          .. "': t:%d+: SCRIPT_MAX_INSTRUCTIONS limit reached",
          h.error_of(db.call, db, f))
        assert.is_true(os.clock() - t0 < 2, f .. " took " .. os.clock() - t0)
      end
    end)

    it("refuses a 1 GiB allocation at SCRIPT_MAX_MEMORY", function()
      refused("gib", "SCRIPT_MAX_MEMORY")
    end)

    it("lets a call whose garbage the emergency collection frees go on",
      function()
        -- each 4 MiB string is garbage at once: a refused allocation is
        -- retried by Lua after a full collection, and that one fits
        load("g", [[lunakv.register("garbage", function()
          local n = 0
          for _ = 1, 40 do n = n + #string.rep("x", 4 << 20) end
          return n
        end)]])
        assert.equal(40 * (4 << 20), db:call("garbage", nil,
          { script_max_memory = 16 << 20 }))
      end)

    it("ends a memory bomb kept in a global, the library restarted",
      function()
        refused("bomb", "SCRIPT_MAX_MEMORY")
        refused("bomb_caught", "SCRIPT_MAX_MEMORY")
      end)

    it("ends a call at SCRIPT_MAX_WRITES, nothing written", function()
      refused("writes", "SCRIPT_MAX_WRITES limit reached (10000 writes)")
      refused("writes_caught", "SCRIPT_MAX_WRITES")
      refused("writes", "SCRIPT_MAX_WRITES limit reached (5 writes)",
        { script_max_writes = 5 })
      db:call("writes", { n = 5 }, { script_max_writes = 5 })
      assert.equal("v", db:get("k5"))
    end)

    it("counts the pending writes' bytes against SCRIPT_MAX_MEMORY",
      function()
        refused("big_writes", "SCRIPT_MAX_MEMORY",
          { script_max_memory = 16 * 1024 * 1024 })
      end)

    it("applies the limits to a library's load too", function()
      local before = everything(db)
      assert.matches("SCRIPT_MAX_INSTRUCTIONS", h.error_of(db.put_library, db,
        "l", "while true do end", { script_max_instructions = 10000 }))
      assert.matches("SCRIPT_MAX_MEMORY", h.error_of(db.put_library, db,
        "l", "x = string.rep('x', 1 << 30)"))
      assert.same(before, everything(db))
    end)
  end)
end)
