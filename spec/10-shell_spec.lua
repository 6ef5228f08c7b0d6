-- The lunakv shell: the tokeniser and printers as pure functions, then
-- every command, quoting, errors and Lua evaluation driven through a pipe
-- (bin/lunakv shell DIR < input), the way a script would use it.

local h = require "spec.helpers"
local shell = require "lunakv.shell"

local lines = h.lines_of

describe("shell.tokenize", function()
  local function words(line) return assert(shell.words(line)) end

  local cases = {
    { "SET a 1", { "SET", "a", "1" } },
    { "  get \t key  ", { "get", "key" } },
    { "", {} },
    { "   ", {} },
    { 'SET "a key" "a value"', { "SET", "a key", "a value" } },
    { [[SET k "line1\nline2"]], { "SET", "k", "line1\nline2" } },
    { [["tab\there"]], { "tab\there" } },
    { [["say \"hi\""]], { 'say "hi"' } },
    { [["back\\slash"]], { "back\\slash" } },
    { [["nul\0byte"]], { "nul\0byte" } },
    { [["\x41\x7a\xff"]], { "Az\255" } },
    { [["\r\a\b\f\v\e\'"]], { "\r\a\b\f\v\27'" } },
    { [['single $quotes \n stay']], { "single $quotes \\n stay" } },
    { [[a"b c"d]], { "ab cd" } },
    { [[""]], { "" } },
    { [['']], { "" } },
    { [[bare\word]], { "bare\\word" } },
    { [[it's]], nil }, -- an open single quote
    { "naïve café", { "naïve", "café" } },
  }
  for _, c in ipairs(cases) do
    it("splits " .. string.format("%q", c[1]), function()
      if c[2] then
        assert.same(c[2], words(c[1]))
      else
        local w, err, more = shell.words(c[1])
        assert.is_nil(w)
        assert.is_string(err)
        assert.is_true(more)
      end
    end)
  end

  it("marks quoted words and where each word is", function()
    local toks = assert(shell.tokenize([[SET "k" v w]]))
    assert.is_false(toks[1].quoted)
    assert.is_true(toks[2].quoted)
    assert.equal(1, toks[1].first)
    assert.equal(3, toks[1].last)
    assert.equal(5, toks[2].first)
    assert.equal(7, toks[2].last)
    assert.equal("v w", ([[SET "k" v w]]):sub(toks[3].first))
  end)

  it("asks for more input when a double quote is left open", function()
    local t, err, more = shell.tokenize('SET k "open')
    assert.is_nil(t)
    assert.matches("unfinished", err)
    assert.is_true(more)
    t, err, more = shell.tokenize('SET k "ends with \\')
    assert.is_nil(t)
    assert.matches("unfinished quoted string %(ends with \\%)", err)
    assert.is_true(more)
    -- with the next line joined, it is one value with a newline
    assert.same({ "SET", "k", "open\nquote" },
      words('SET k "open\nquote"'))
  end)

  it("refuses unknown and malformed escapes, without asking for more",
    function()
      for _, bad in ipairs { [["\q"]], [["\x4"]], [["\xZZ"]] } do
        local t, err, more = shell.tokenize(bad)
        assert.is_nil(t, bad)
        assert.matches("escape", err)
        assert.is_falsy(more)
      end
    end)

  it("raises on a non-string", function()
    assert.has_error(function() shell.tokenize(42) end,
      "bad argument #1 to 'tokenize' (string expected, got number)")
  end)
end)

describe("shell.show and shell.quote", function()
  it("prints plain text as is", function()
    for _, s in ipairs { "a", "hello world", "say \"hi\"", "naïve", "a-b_c:1" } do
      assert.equal(s, shell.show(s))
    end
  end)

  it("quotes what could be misread", function()
    assert.equal('""', shell.show(""))
    assert.equal('" lead"', shell.show(" lead"))
    assert.equal('"trail "', shell.show("trail "))
    assert.equal('"a\\nb"', shell.show("a\nb"))
    assert.equal('"a\\tb"', shell.show("a\tb"))
    assert.equal('"\\"q\\""', shell.show('"q"'))
    assert.equal('"(nil)"', shell.show("(nil)"))
    assert.equal('"\\xff\\0"', shell.show("\255\0"))
    assert.equal('"\\x01\\e"', shell.show("\1\27"))
  end)

  it("reads back through the tokeniser as the same bytes", function()
    math.randomseed(42)
    for _ = 1, 300 do
      local n, t = math.random(0, 12), {}
      for i = 1, n do t[i] = string.char(math.random(0, 255)) end
      local s = table.concat(t)
      local w = assert(shell.words(shell.quote(s)))
      assert.equal(1, #w)
      assert.equal(s, w[1])
      local shown = shell.show(s)
      if shown ~= s then assert.equal(s, shell.words(shown)[1]) end
    end
  end)
end)

describe("shell.pretty", function()
  it("renders Lua values readably", function()
    assert.equal('"a\\nb"', shell.pretty("a\nb"))
    assert.equal("42", shell.pretty(42))
    assert.equal("1.5", shell.pretty(1.5))
    assert.equal("2.0", shell.pretty(2.0))
    assert.equal("nil", shell.pretty(nil))
    assert.equal("true", shell.pretty(true))
    assert.equal("1\tnil\t\"x\"", shell.pretty(1, nil, "x"))
    assert.equal("", shell.pretty())
    assert.equal('{1, 2, a = "b", ["two words"] = true}',
      shell.pretty({ 1, 2, a = "b", ["two words"] = true }))
    assert.equal("{{{{...}}}}", shell.pretty({ { { { {} } } } }))
    local t = {}
    t.self = t
    assert.equal("{self = <cycle>}", shell.pretty(t))
    local big = {}
    for i = 1, 60 do big[i] = i end
    assert.matches("%.%.%. %(10 more%)}$", shell.pretty(big))
  end)
end)

describe("shell.help_text", function()
  it("documents every command", function()
    local text = shell.help_text()
    for _, name in ipairs(shell.command_names()) do
      assert.matches("\n  " .. name, text, 1, true)
    end
    for _, name in ipairs { "SET", "GET", "DELETE", "SCAN", "COUNT",
      "SNAPSHOT", "RELEASE", "BATCH", "COMMIT", "ABORT", "FLUSH", "COMPACT",
      "FUNCTION", "CALL", "STATS", "HELP", "EXIT" } do
      assert.truthy(text:find(name, 1, true), name)
    end
  end)
end)

describe("the shell through a pipe", function()
  local dir
  h.tmpdir_each(function(d) dir = d end)

  -- Feed input to `lunakv shell DIR`; returns exit code, stdout lines,
  -- stderr text. env: extra "K=V " assignments for the command line.
  local function run(input, env)
    h.write_file(dir .. "/input.txt", input)
    local code, out, err = h.run("cd " .. h.quote(dir) .. " && " ..
      (env or "") .. h.lunakv_cmd .. " shell db < input.txt")
    return code, lines(out), err, out
  end

  it("prints exactly the answers of a piped session", function()
    local code, _, err, raw = run("SET a 1\nGET a\n")
    assert.equal(0, code, err)
    assert.equal("1\n1\n", raw)
    assert.equal("", err)
  end)

  it("SET prints the sequence number, GET the value or (nil)", function()
    local code, out, err = run("SET a x\nSET b y\nGET b\nGET nope\n")
    assert.equal(0, code, err)
    assert.same({ "1", "2", "y", "(nil)" }, out)
  end)

  it("takes command words in any case and keeps the case of keys",
    function()
      local _, out = run("set Key Upper\nSeT key lower\nget Key\nGET key\n")
      assert.same({ "1", "2", "Upper", "lower" }, out)
    end)

  it("takes the rest of the line as the value, or one quoted word",
    function()
      local _, out, err = run(table.concat({
        "SET greeting hello   wide  world   ",
        "GET greeting",
        'SET "a key" "a value"',
        'GET "a key"',
        'SET q "say \\"hi\\"\\tthere"',
        "GET q",
        "SET e \"\"",
        "GET e",
        'SET bad "quoted" and more',
        "",
      }, "\n"))
      assert.same({ "1", "hello   wide  world", "2", "a value", "3",
        '"say \\"hi\\"\\tthere"', "4", '""' }, out)
      assert.matches("SET takes one value", err)
    end)

  it("continues an open quote on the next line", function()
    local _, out = run('SET poem "roses\nare red"\nGET poem\nSCAN\n')
    assert.same({ "1", '"roses\\nare red"', 'poem\t"roses\\nare red"' }, out)
  end)

  it("stores binary values given with \\x escapes", function()
    local _, out = run('SET bin "\\x00\\xff\\x41"\nGET bin\n')
    assert.same({ "1", '"\\0\\xffA"' }, out)
    assert.equal("\0\255A", h.stored(dir .. "/db", "bin"))
  end)

  it("DELETE and DEL print the sequence number of the tombstone", function()
    local _, out = run("SET a 1\nSET b 2\nDELETE a\nDEL b\nGET a\nGET b\n")
    assert.same({ "1", "2", "3", "4", "(nil)", "(nil)" }, out)
  end)

  it("GET reads an old version with AT_SEQ n or a bare number", function()
    local _, out = run("SET k v1\nSET k v2\nGET k AT_SEQ 1\nGET k at_seq 2\n"
      .. "GET k 1\nGET k\n")
    assert.same({ "1", "2", "v1", "v2", "v1", "v2" }, out)
  end)

  it("SCAN lists ranges, open ends, and stops at LIMIT", function()
    local input = "SET a 1\nSET b 2\nSET c 3\nSET d 4\n" ..
      "SCAN\nSCAN b c\nSCAN - b\nSCAN c\nSCAN a d LIMIT 2\nSCAN x z\n" ..
      "SCAN a d limit 4\n"
    local code, out, err = run(input)
    assert.equal(0, code, err)
    assert.same({ "1", "2", "3", "4",
      "a\t1", "b\t2", "c\t3", "d\t4",
      "b\t2", "c\t3",
      "a\t1", "b\t2",
      "c\t3", "d\t4",
      "a\t1", "b\t2", "(more)",
      "(empty)",
      "a\t1", "b\t2", "c\t3", "d\t4" }, out)
  end)

  it("SCAN REVERSE lists from hi down, with LIMIT either side", function()
    local input = "SET a 1\nSET b 2\nSET c 3\nSET d 4\nDELETE c\n" ..
      "SCAN REVERSE\nSCAN b cc reverse\nSCAN - b REVERSE\n" ..
      "SCAN a z LIMIT 2 REVERSE\nSCAN a z REVERSE LIMIT 1\nSCAN x z REVERSE\n"
      .. "SNAPSHOT\nSET e 5\nSCAN REVERSE LIMIT 1\nRELEASE\nSCAN REVERSE LIMIT 1\n"
      .. "=db:stats().live_iterators\n" -- a LIMIT stop frees the iterator
    local code, out, err = run(input)
    assert.equal(0, code, err)
    assert.same({ "1", "2", "3", "4", "5",
      "d\t4", "b\t2", "a\t1",
      "b\t2",
      "b\t2", "a\t1",
      "d\t4", "b\t2", "(more)",
      "d\t4", "(more)",
      "(empty)",
      "5", "6", "d\t4", "(more)", "OK", "e\t5", "(more)", "0" },
      out)
  end)

  it("prints an empty range for lo above hi, as COUNT and db:scan do",
    function()
      local code, out, err = run("SET a 1\nSET z 2\nSCAN z a\n"
        .. "SCAN z a REVERSE\nSCAN z a LIMIT 1\nCOUNT z a\n"
        .. "=select('#', db:scan('z', 'a')())\nSCAN a z\n")
      assert.equal(0, code, err)
      assert.equal("", err)
      assert.same({ "1", "2", "(empty)", "(empty)", "(empty)", "0", "1",
        "a\t1", "z\t2" }, out)
    end)

  it("refuses LIMIT 0 and other counts out of range, naming the range",
    function()
      local code, out, err = run("SET a 1\nSCAN LIMIT 0\nSCAN a z LIMIT -1\n"
        .. "SCAN LIMIT 99999999999999999999 REVERSE\nGET a AT_SEQ -1\n"
        .. "SCAN LIMIT 1\n")
      assert.equal(1, code)
      assert.same({ "1", "a\t1" }, out)
      assert.same({
        "lunakv: SCAN: LIMIT must be an integer >= 1, got 0",
        "lunakv: SCAN: LIMIT must be an integer >= 1, got -1",
        "lunakv: SCAN: LIMIT must be an integer >= 1, got "
          .. "99999999999999999999",
        "lunakv: GET: AT_SEQ must be an integer >= 0, got -1",
        "lunakv: 4 command(s) failed" }, lines(err))
    end)

  it("treats a quoted - or LIMIT as a key", function()
    local _, out = run('SET - dash\nSET LIMIT word\nSCAN "-" "-"\n' ..
      'SCAN "LIMIT" "LIMIT"\n')
    assert.same({ "1", "2", "-\tdash", "LIMIT\tword" }, out)
  end)

  it("COUNT counts a range", function()
    local _, out = run("SET a 1\nSET b 2\nSET c 3\nCOUNT\nCOUNT b\nCOUNT a b\n"
      .. "COUNT x y\n")
    assert.same({ "1", "2", "3", "3", "2", "2", "0" }, out)
  end)

  it("SNAPSHOT pins what GET, SCAN and COUNT see until RELEASE", function()
    local code, out, err = run(table.concat({
      "SET a old", "SNAPSHOT", "SET a new", "SET b added",
      "GET a", "SCAN", "COUNT", "GET a AT_SEQ 3",
      "RELEASE", "GET a", "COUNT", "",
    }, "\n"))
    assert.equal(0, code, err)
    assert.same({ "1", "1", "2", "3",
      "old", "a\told", "1", "new",
      "OK", "new", "2" }, out)
  end)

  it("BATCH queues writes and COMMIT applies them at once", function()
    local code, out, err = run(table.concat({
      "SET a 1", "BATCH", "SET x 10", "DELETE a", "GET x", "GET a",
      "COMMIT", "GET x", "GET a", "",
    }, "\n"))
    assert.equal(0, code, err)
    assert.same({ "1", "OK", "QUEUED", "QUEUED", "(nil)", "1",
      "3", "10", "(nil)" }, out)
  end)

  it("ABORT drops a batch, and an uncommitted batch is dropped at the end",
    function()
      local _, out, err = run("BATCH\nSET x 1\nABORT\nGET x\nBATCH\nSET y 2\n")
      assert.same({ "OK", "QUEUED", "OK", "(nil)", "OK", "QUEUED" }, out)
      assert.matches("uncommitted batch of 1 operation", err)
      local x, y = h.stored(dir .. "/db", "x", "y")
      assert.is_nil(x)
      assert.is_nil(y)
    end)

  it("FLUSH and COMPACT put the data in tables", function()
    local code, out, err = run("SET a 1\nFLUSH\nSET b 2\nCOMPACT\nGET a\n" ..
      "GET b\nSTATS\n")
    assert.equal(0, code, err)
    assert.same({ "1", "OK", "2", "OK", "1", "2" },
      { out[1], out[2], out[3], out[4], out[5], out[6] })
    local text = table.concat(out, "\n")
    assert.matches("\nsstable_count +1\n", text)
    assert.matches("\nflushes +%d+\n", text)
    assert.matches("\ncompactions +[1-9]", text)
  end)

  it("STATS is an aligned table naming the data dir and config file",
    function()
      local _, out = run("SET a 1\nSTATS\n")
      local rows = {}
      for i = 2, #out do rows[#rows + 1] = out[i] end
      assert.is_true(#rows > 20)
      local col
      for _, r in ipairs(rows) do
        local name, pad = r:match("^([%w_]+)( +)%S")
        assert.truthy(name, r)
        local c = #name + #pad
        col = col or c
        assert.equal(col, c, "misaligned: " .. r)
      end
      local text = table.concat(rows, "\n")
      assert.matches("data_dir +db\n", text)
      assert.matches("config_file +%(none", text)
      assert.matches("\nseq +1\n", text)
      assert.matches("\nmemtable_keys +1\n", text)
      assert.not_matches("table: 0x", text)
    end)

  it("STATS shows the .env file in use", function()
    h.write_file(dir .. "/.env", "MAX_MEMTABLE_SIZE=65536\n")
    local code, out, err = run("STATS\n")
    assert.equal(0, code, err)
    assert.matches("config_file +%.env", table.concat(out, "\n"))
  end)

  it("HELP lists the commands and explains one", function()
    local code, out, err = run("HELP\nHELP scan\n")
    assert.equal(0, code, err)
    local text = table.concat(out, "\n")
    assert.matches("SET key value", text, 1, true)
    assert.matches("SCAN %[lo %[hi%]%] %[LIMIT n%] %[REVERSE%]", text)
    assert.matches("=expr", text, 1, true)
    assert.matches("\nSCAN [lo [hi]] [LIMIT n] [REVERSE]\n  print key<TAB>value",
      text, 1, true)
  end)

  it("EXIT ends the session; later lines are not run", function()
    local code, out, err = run("SET a 1\nEXIT\nSET b 2\n")
    assert.equal(0, code, err)
    assert.same({ "1" }, out)
    assert.is_nil(h.stored(dir .. "/db", "b"))
  end)

  it("QUIT and the end of input close the db so it reopens at once",
    function()
      for _, input in ipairs { "SET k 1\nquit\n", "SET k 2\n", "SET k 3" } do
        local code, _, err = run(input)
        assert.equal(0, code, err)
        -- the LOCK is free and every write is there
        assert.equal(input:match("SET k (%d)"), h.stored(dir .. "/db", "k"))
      end
    end)

  it("loads, lists, calls and deletes stored functions", function()
    h.write_file(dir .. "/counter.lua", [[
      lunakv.register("inc", function(tx, a)
        local n = (tonumber(tx:get(a.k)) or 0) + (a.by or 1)
        tx:set(a.k, tostring(n))
        return { a.k, n }
      end)
      lunakv.register("peek", function(tx, a) return tx:get(a.k) end,
        { read_only = true })
    ]])
    h.write_file(dir .. "/broken.lua", "lunakv.register('x', function() end")
    local code, out, err = run(table.concat({
      "FUNCTION LIST",
      "function load counter counter.lua",
      "FUNCTION LIST",
      'CALL inc {"k": "hits"}',
      'CALL inc {"k": "hits", "by": 5}',
      "GET hits",
      'CALL peek {"k": "hits"}',
      "CALL peek",
      "FUNCTION LOAD bad broken.lua",
      "FUNCTION LOAD bad nothing.lua",
      "CALL nope",
      'CALL inc {"k": }',
      "FUNCTION",
      "FUNCTION DELETE nope",
      "BATCH",
      "CALL peek",
      "ABORT",
      "FUNCTION DELETE counter",
      "FUNCTION LIST",
      "",
    }, "\n"))
    assert.equal(1, code)
    assert.same({ "(empty)", "counter: inc, peek", "counter\tinc, peek (ro)",
      '["hits",1]', '["hits",6]', "6", '"6"', "OK", "OK", "OK", "(empty)" },
      out)
    local errs = lines(err)
    assert.equal(9, #errs, err)
    assert.matches("^lunakv: CALL: function 'peek': counter:6: attempt to "
      .. "index a nil value", errs[1])
    assert.matches("^lunakv: FUNCTION LOAD: library 'bad': bad:1: ", errs[2])
    assert.matches("^lunakv: FUNCTION LOAD: cannot read nothing.lua", errs[3])
    assert.matches("^lunakv: CALL: unknown function 'nope'", errs[4])
    assert.matches("^lunakv: CALL: function 'inc': args are not JSON",
      errs[5])
    assert.matches("^lunakv: usage: FUNCTION LOAD name FILE", errs[6])
    assert.matches("^lunakv: FUNCTION DELETE: no library 'nope'", errs[7])
    assert.matches("^lunakv: CALL commits on its own", errs[8])
    assert.matches("8 command%(s%) failed", errs[9])
  end)

  it("reports each error on one line and goes on", function()
    local code, out, err = run(table.concat({
      "GET", "SET onlykey", "BOGUS thing here", "SCAN LIMIT 0",
      'SET k "bad \\q"', "RELEASE", "COMMIT", "ABORT", "HELP NOPE",
      "GET k AT_SEQ x", "SNAPSHOT", "SNAPSHOT", "BATCH", "BATCH", "ABORT",
      "SET ok yes", "GET ok", "",
    }, "\n"))
    assert.equal(1, code) -- a piped session with failures exits 1
    -- SNAPSHOT (seq 0) stays pinned, so the last GET does not see "ok"
    assert.same({ "0", "OK", "OK", "1", "(nil)" }, out)
    local errs = lines(err)
    -- one line per failed command, and a closing count
    assert.equal(13, #errs, err)
    assert.matches("^lunakv: usage: GET", errs[1])
    assert.matches("^lunakv: usage: SET", errs[2])
    assert.matches("unknown command 'BOGUS'", errs[3])
    assert.matches("LIMIT must be an integer >= 1, got 0", errs[4])
    assert.matches("unknown escape", errs[5])
    assert.matches("no snapshot", errs[6])
    assert.matches("no batch", errs[7])
    assert.matches("no batch", errs[8])
    assert.matches("no command", errs[9])
    assert.matches("AT_SEQ must be an integer >= 0, got x", errs[10])
    assert.matches("already pinned", errs[11])
    assert.matches("already open", errs[12])
    assert.matches("12 command%(s%) failed", errs[13])
  end)

  it("refuses arguments to the commands that take none, with their usage",
    function()
      local words = { "SNAPSHOT", "RELEASE", "BATCH", "COMMIT", "ABORT",
        "FLUSH", "COMPACT", "STATS", "STATUS" }
      local input = {}
      for i, w in ipairs(words) do input[i] = w .. " extra" end
      local code, out, err = run(table.concat(input, "\n") .. "\n")
      assert.equal(1, code)
      assert.same({}, out)
      local errs = lines(err)
      assert.equal(#words + 1, #errs, err)
      for i, w in ipairs(words) do
        assert.equal("lunakv: usage: " .. w, errs[i])
      end
      assert.matches(#words .. " command%(s%) failed", errs[#words + 1])
    end)

  it("reports engine errors and goes on", function()
    local big = string.rep("k", 70000)
    local _, out, err = run("SET " .. big .. " v\nSET a 1\n")
    assert.same({ "1" }, out)
    assert.matches("^lunakv: too big", err)
  end)

  describe("Lua", function()
    it("evaluates =expr, `lua chunk` and other lines with db in scope",
      function()
        local code, out, err = run(table.concat({
          "SET k v",
          "=1 + 1",
          '= db:get("k")',
          "x = 40",
          "x + 2",
          'lua print("from lua")',
          "lua set = 5",
          "=set",
          "{1, 2, name = \"t\"}",
          "db",
          "=nil",
          "=1, 'two'",
          "lunakv.version",
          "",
        }, "\n"))
        assert.equal(0, code, err)
        assert.same({ "1", "2", '"v"', "42", "from lua", "5",
          '{1, 2, name = "t"}', "lunakv.db (db, open)", "nil", '1\t"two"',
          '"' .. h.lunakv.version .. '"' }, out)
      end)

    it("continues an unfinished chunk on the next lines", function()
      local code, out, err = run(table.concat({
        "function double(n)",
        "  return n * 2",
        "end",
        "double(21)",
        "for i = 1, 3 do",
        "  db:set('n' .. i, tostring(i * i))",
        "end",
        "COUNT n1 n3",
        "t = {",
        "  a = 1,",
        "}",
        "t.a",
        "",
      }, "\n"))
      assert.equal(0, code, err)
      assert.same({ "42", "3", "1" }, out)
    end)

    it("writes through db are seen by the commands", function()
      local _, out = run('db:set("fromlua", "yes")\nGET fromlua\n' ..
        'SNAPSHOT\n=snap.seq\nRELEASE\n=snap\n')
      assert.same({ "1", "yes", "1", "1", "OK", "nil" }, out)
    end)

    it("reports Lua errors on one line and goes on", function()
      local code, out, err = run(table.concat({
        'error("boom")',
        "nosuchvar",
        "x = = 1",
        "nil + 1",
        "=1",
        "",
      }, "\n"))
      assert.equal(1, code)
      assert.same({ "1" }, out)
      local errs = lines(err)
      assert.matches("^stdin:1: boom$", errs[1])
      assert.matches("undefined variable 'nosuchvar'", errs[2])
      assert.matches("^stdin:1: unexpected symbol", errs[3])
      assert.matches("attempt to perform arithmetic", errs[4])
    end)

    it("says so when the input ends inside a chunk", function()
      local _, out, err = run("=1\nfunction f()\n")
      assert.same({ "1" }, out)
      assert.matches("end of input inside an unfinished Lua chunk", err)
    end)
  end)
end)

-- Ctrl-C, sent by the test to its own process while shell.run runs a
-- line: wherever it lands (Lua at the top of a line, inside a function,
-- a command, the read of the next line) the shell prints the same one
-- line, and on a terminal goes on.
describe("the shell and Ctrl-C", function()
  local core = require "lunakv.core"
  local dir, db
  local pid = math.tointeger(tonumber(
    h.read_file("/proc/self/stat"):match("^(%d+)")))
  local KILL = string.format("require('lunakv.core').kill(%d, 'INT')", pid)

  h.tmpdir_each(function(d)
    dir = d
    db = h.open(dir .. "/db")
  end)

  -- Run lines through shell.run with a Ctrl-C handler; reader(line) may
  -- replace the plain read. Returns stdout and stderr lines.
  local function session(input, tty, hooks)
    hooks = hooks or {}
    local out, err = io.tmpfile(), io.tmpfile()
    local i = 0
    local reader = db
    if hooks.scan then
      -- a db whose scans are interrupted half-way: SCAN runs its loop
      reader = setmetatable({ scan = hooks.scan }, { __index = function(_, k)
        local f = db[k]
        return function(_, ...) return f(db, ...) end
      end })
    end
    local sh = shell.run(reader, { tty = tty, core = core, out = out,
      err = err, read = function()
        i = i + 1
        if input[i] == "<ctrl-c while reading>" then
          core.kill(pid, "INT")
          local spin = 0
          for _ = 1, 1e8 do spin = spin + 1 end -- the hook fires here
          return "=0"
        end
        return input[i]
      end })
    local function text(f)
      f:seek("set")
      return lines(f:read("a"))
    end
    return text(out), text(err), sh
  end

  local LINES = {
    KILL .. " while true do end",                       -- the line's chunk
    "(function() " .. KILL .. " while true do end end)()", -- a function
    "SCAN",                                             -- a command
    "<ctrl-c while reading>",                            -- the read
  }

  it("prints one line, the same wherever it lands, and goes on", function()
    local input = {}
    for _, l in ipairs(LINES) do
      input[#input + 1] = l
      input[#input + 1] = "=1 + 1"
    end
    local out, err = session(input, true, { scan = function()
      return function()
        core.kill(pid, "INT")
        while true do end
      end
    end })
    assert.same({ "2", "2", "2", "2", "" }, out) -- "": the newline at EOF
    assert.same({ "lunakv: interrupted", "lunakv: interrupted",
      "lunakv: interrupted", "lunakv: interrupted" }, err)
  end)

  it("ends a session from a pipe, wherever it lands", function()
    for _, l in ipairs(LINES) do
      local out, err, sh = session({ "=1", l, "=2" }, false,
        { scan = function()
          return function()
            core.kill(pid, "INT")
            while true do end
          end
        end })
      assert.same({ "1" }, out, l)
      assert.same({ "lunakv: interrupted" }, err, l)
      assert.equal(1, sh.errors, l)
    end
  end)
end)
