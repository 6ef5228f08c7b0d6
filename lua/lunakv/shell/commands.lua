-- lunakv.shell.commands - the shell's commands (SET, GET, SCAN, ...): each
-- a table { name, aliases, usage, help, local_only, no_args,
-- run(sh, args, line) } where args are the tokeniser's words after the
-- command's and sh the session (lunakv.shell). run returns the answer's
-- text (nil: none) or raises { shell_error = "..." } for an expected
-- failure (one line, no position). HELP's text is built from the same
-- tables.

local format = require "lunakv.shell.format"

local M = {}

-- An expected failure of a command: one line, no position.
local function fail(fmt, ...)
  error({ shell_error = string.format(fmt, ...) }, 0)
end

local function usage(cmd)
  fail("usage: %s", cmd.usage)
end

-- Trailing keyword arguments, e.g. LIMIT 10 or AT_SEQ 5: when the last
-- two tokens are an unquoted `word` (any case, a key of words) and a
-- number, remove them and return the number, which must be an integer in
-- [lo, hi] (words[WORD] = { lo, hi }); cmd names the command in the
-- message (config.parse_int: the command line's reading of integers).
local function take_keyword(cmd, args, words)
  local n = #args
  if n < 2 then return nil end
  local kw, num = args[n - 1], args[n]
  local range = not kw.quoted and words[kw.text:upper()]
  if not range then return nil end
  local config = require "lunakv.config"
  local v = config.parse_int(num.text, range[1], range[2])
  if not v then
    fail("%s: %s must be %s, got %s", cmd, kw.text:upper(),
      config.int_range(range[1], range[2]), format.show(num.text))
  end
  args[n], args[n - 1] = nil, nil
  return v
end

local SEQ_RANGE = { 0, math.maxinteger }   -- AT_SEQ n, GET key n
local LIMIT_RANGE = { 1, math.maxinteger } -- SCAN ... LIMIT n (0: refused)

-- A trailing unquoted flag word (any case), e.g. REVERSE: removed when
-- present.
local function take_flag(args, word)
  local t = args[#args]
  if t and not t.quoted and t.text:upper() == word then
    args[#args] = nil
    return true
  end
  return false
end

local function scan_rows(reader, lo, hi, reverse)
  if reverse then return reader:rscan(lo, hi) end
  return reader:scan(lo, hi)
end

-- A range bound: an unquoted "-" is an open end.
local function bound(tok)
  if tok == nil or (not tok.quoted and tok.text == "-") then return nil end
  return tok.text
end

local commands, order = {}, {}

-- A definition with no_args = true takes no arguments: with any, the
-- command fails with its usage before run is called.
local function command(def)
  if def.no_args then
    local run = def.run
    def.run = function(sh, args, line)
      if #args ~= 0 then usage(def) end
      return run(sh, args, line)
    end
  end
  commands[def.name] = def
  order[#order + 1] = def
  for _, a in ipairs(def.aliases or {}) do commands[a] = def end
end

command {
  name = "SET", usage = "SET key value",
  help = "write value under key; prints the write's sequence number (in a "
    .. "BATCH: QUEUED). The value may be the rest of the line "
    .. "(SET greeting hello world) or one quoted word",
  run = function(sh, args, line)
    if #args < 2 then usage(commands.SET) end
    local key, value = args[1].text
    if #args == 2 then
      value = args[2].text
    else
      for k = 2, #args do
        if args[k].quoted then
          fail("SET takes one value: quote all of it, or give it unquoted "
            .. "as the rest of the line")
        end
      end
      value = line:sub(args[2].first):gsub("[ \t]+$", "")
    end
    if sh.batch then
      sh.batch:set(key, value)
      return "QUEUED"
    end
    return tostring(sh.db:set(key, value))
  end,
}

command {
  name = "GET", usage = "GET key [AT_SEQ n]",
  help = "print the value of key, or (nil) when absent; AT_SEQ n reads "
    .. "the newest version with sequence number <= n. Inside a SNAPSHOT, "
    .. "reads the snapshot",
  run = function(sh, args)
    local at = take_keyword("GET", args, { AT_SEQ = SEQ_RANGE,
      AT = SEQ_RANGE })
    if #args == 2 and at == nil then -- GET key n
      local config = require "lunakv.config"
      local why
      at, why = config.parse_int(args[2].text, SEQ_RANGE[1], SEQ_RANGE[2])
      if why == "not an integer" then usage(commands.GET) end
      if not at then
        fail("GET: the seq must be %s, got %s", config.int_range(
          SEQ_RANGE[1], SEQ_RANGE[2]), format.show(args[2].text))
      end
      args[2] = nil
    end
    if #args ~= 1 then usage(commands.GET) end
    local v
    if at then
      v = sh.db:get(args[1].text, at)
    else
      v = sh:reader():get(args[1].text)
    end
    return v == nil and "(nil)" or format.show(v)
  end,
}

command {
  name = "DELETE", aliases = { "DEL" }, usage = "DELETE key",
  help = "delete key (a tombstone); prints the sequence number (in a "
    .. "BATCH: QUEUED)",
  run = function(sh, args)
    if #args ~= 1 then usage(commands.DELETE) end
    if sh.batch then
      sh.batch:delete(args[1].text)
      return "QUEUED"
    end
    return tostring(sh.db:delete(args[1].text))
  end,
}

command {
  name = "SCAN", usage = "SCAN [lo [hi]] [LIMIT n] [REVERSE]",
  help = "print key<TAB>value for every key with lo <= key <= hi, in "
    .. "order (REVERSE: from hi down); - or a missing bound is an open "
    .. "end. (empty) when none (also when lo is above hi); (more) when "
    .. "LIMIT n (n >= 1) cut the listing short",
  run = function(sh, args)
    local reverse = take_flag(args, "REVERSE")
    local limit = take_keyword("SCAN", args, { LIMIT = LIMIT_RANGE })
    reverse = take_flag(args, "REVERSE") or reverse
    if #args > 2 then usage(commands.SCAN) end
    -- lo above hi is an empty range, as for COUNT, db:scan and /scan
    local lo, hi = bound(args[1]), bound(args[2])
    if reverse and sh.remote then
      fail("SCAN REVERSE: the HTTP API scans forward only")
    end
    local out, n = {}, 0
    for k, v in scan_rows(sh:reader(), lo, hi, reverse) do
      if limit and n >= limit then
        out[#out + 1] = "(more)"
        break
      end
      n = n + 1
      out[#out + 1] = format.show(k) .. "\t" .. format.show(v)
    end
    if n == 0 and #out == 0 then return "(empty)" end
    return table.concat(out, "\n")
  end,
}

command {
  name = "COUNT", usage = "COUNT [lo [hi]]",
  help = "print how many keys lie in [lo, hi] (- or missing: open; 0 "
    .. "when lo is above hi)",
  run = function(sh, args)
    if #args > 2 then usage(commands.COUNT) end
    local n = 0
    for _ in sh:reader():scan(bound(args[1]), bound(args[2])) do n = n + 1 end
    return tostring(n)
  end,
}

command {
  name = "SNAPSHOT", local_only = true, usage = "SNAPSHOT", no_args = true,
  help = "pin the current state: GET, SCAN and COUNT read it until "
    .. "RELEASE; prints its sequence number",
  run = function(sh)
    if sh.snap then
      fail("a snapshot is already pinned at seq %d; RELEASE it first",
        sh.snap.seq)
    end
    sh.snap = sh.db:snapshot()
    sh.env.snap = sh.snap
    return tostring(sh.snap.seq)
  end,
}

command {
  name = "RELEASE", local_only = true, usage = "RELEASE", no_args = true,
  help = "release the snapshot; reads see the latest data again",
  run = function(sh)
    if not sh.snap then fail("no snapshot is pinned (SNAPSHOT pins one)") end
    sh.snap:release()
    sh.snap, sh.env.snap = nil, nil
    return "OK"
  end,
}

command {
  name = "BATCH", local_only = true, aliases = { "BEGIN", "MULTI" }, usage = "BATCH", no_args = true,
  help = "start an atomic batch: SET and DELETE are queued until COMMIT "
    .. "(all at once) or ABORT (none); reads still see the db",
  run = function(sh)
    if sh.batch then
      fail("a batch is already open (%d queued); COMMIT or ABORT it",
        sh.batch:count())
    end
    sh.batch = sh.db:batch()
    return "OK"
  end,
}

command {
  name = "COMMIT", local_only = true, aliases = { "EXEC" }, usage = "COMMIT", no_args = true,
  help = "apply the batch atomically; prints its last sequence number",
  run = function(sh)
    if not sh.batch then fail("no batch is open (BATCH opens one)") end
    local seq = sh.batch:commit()
    sh.batch:close()
    sh.batch = nil
    return tostring(seq)
  end,
}

command {
  name = "ABORT", local_only = true, aliases = { "DISCARD" }, usage = "ABORT", no_args = true,
  help = "drop the batch without writing anything",
  run = function(sh)
    if not sh.batch then fail("no batch is open (BATCH opens one)") end
    sh.batch:close()
    sh.batch = nil
    return "OK"
  end,
}

command {
  name = "FLUSH", local_only = true, usage = "FLUSH", no_args = true,
  help = "write the memtable to an SSTable; returns when done",
  run = function(sh)
    sh.db:flush()
    return "OK"
  end,
}

command {
  name = "COMPACT", local_only = true, usage = "COMPACT", no_args = true,
  help = "flush, then merge every table into the last level; returns when "
    .. "done",
  run = function(sh)
    sh.db:compact()
    return "OK"
  end,
}

-- Stored functions (docs/functions.md): on a local database, or over
-- --url on a node (lunakv.remote's methods of the same names).
local function read_source(path)
  local f, err = io.open(path, "rb")
  if not f then fail("FUNCTION LOAD: cannot read %s", err) end
  local src = f:read("a")
  f:close()
  return src
end

-- A failure of the db's function calls: one line, without "lunakv: ".
local function db_call(what, fn, ...)
  local ok, res, seq = pcall(fn, ...)
  if not ok then
    if type(res) == "table" then error(res, 0) end
    fail("%s: %s", what, tostring(res):gsub("^lunakv: ", ""))
  end
  return res, seq
end

-- "function" is also Lua's keyword: spelled so, the line is the command
-- only when LOAD, LIST or DELETE follows, else Lua (function f() ... end).
local FUNCTION_SUBS = { LOAD = true, LIST = true, DELETE = true }

command {
  name = "FUNCTION",
  claims = function(word, next_word)
    return word ~= "function" or FUNCTION_SUBS[next_word:upper()] ~= nil
  end,
  usage = "FUNCTION LOAD name FILE | LIST | DELETE name",
  help = "stored Lua functions: LOAD runs the library in FILE (it calls "
    .. "lunakv.register) and stores it as name, replacing one of the same "
    .. "name, and prints its functions; LIST prints each library with its "
    .. "functions (ro: read_only); DELETE drops a library",
  run = function(sh, args)
    local sub = args[1] and not args[1].quoted and args[1].text:upper()
    if sub == "LOAD" and #args == 3 then
      local src = read_source(args[3].text)
      local names = db_call("FUNCTION LOAD", sh.db.put_library, sh.db,
        args[2].text, src)
      return args[2].text .. ": " .. table.concat(names, ", ")
    elseif sub == "LIST" and #args == 1 then
      local out = {}
      for _, lib in ipairs(db_call("FUNCTION LIST", sh.db.libraries, sh.db)) do
        local fs = {}
        for i, f in ipairs(lib.functions) do
          fs[i] = lib.read_only[f] and f .. " (ro)" or f
        end
        out[#out + 1] = lib.name .. "\t" .. table.concat(fs, ", ")
      end
      return #out == 0 and "(empty)" or table.concat(out, "\n")
    elseif sub == "DELETE" and #args == 2 then
      db_call("FUNCTION DELETE", sh.db.delete_library, sh.db, args[2].text)
      return "OK"
    end
    usage(commands.FUNCTION)
  end,
}

command {
  name = "CALL", usage = "CALL function [json]",
  help = "run a stored function with the rest of the line as its JSON "
    .. "argument (none: nil); its writes commit as one batch. Prints the "
    .. "result as JSON",
  run = function(sh, args, line)
    if #args < 1 or args[1].quoted and args[1].text == "" then
      usage(commands.CALL)
    end
    if sh.batch then
      fail("CALL commits on its own: COMMIT or ABORT the batch first")
    end
    local json = args[2] and line:sub(args[2].first):gsub("[ \t]+$", "")
    local res = db_call("CALL", sh.db.call_json, sh.db, args[1].text, json)
    return res
  end,
}

-- STATS rows, in the order a reader wants them; anything else the engine
-- reports follows, sorted.
local STATS_ORDER = {
  "seq", "sstable_count", "sstables_per_level", "bytes_per_level",
  "total_size_bytes", "memtable_size_bytes", "memtable_keys",
  "imm_memtables", "wal_size_bytes", "bytes_written_user",
  "bytes_written_disk", "bytes_written_wal", "write_amplification",
  "flushes", "compactions", "seek_compactions", "compaction_pending",
  "compaction_bytes_read",
  "compaction_bytes_written", "bytes_written_per_level", "stall_slowdowns", "stall_stops",
  "stall_micros", "stall_refusals", "bloom_checks", "bloom_negatives",
  "block_reads",
  "block_cache_hits", "block_cache_bytes", "live_snapshots",
  "live_iterators", "wal_syncs", "bg_error",
}
-- The rows of STATS: { {name, text}, ... }.
local function stats_rows(sh)
  local st = sh.db:stats()
  local rows
  if sh.remote then
    -- a node's /stats: the engine's fields, plus tables such as rlog
    -- whose members become rows of their own (rlog.syncs, ...)
    rows = { { "node", sh.remote } }
    local flat = {}
    for k, v in pairs(st) do
      if type(v) == "table" and #v == 0 and next(v) ~= nil then
        for k2, v2 in pairs(v) do flat[k .. "." .. k2] = v2 end
      elseif (type(v) == "string" and v == "") or type(v) == "userdata" then
        flat[k] = nil -- "" and null: no error, nothing cut
      else
        flat[k] = v
      end
    end
    st = flat
  else
    rows = {
      { "data_dir", sh.dir or "?" },
      { "config_file", sh.info and sh.info.file
        or "(none: defaults and environment)" },
    }
  end
  if sh.snap then rows[#rows + 1] = { "snapshot_seq", tostring(sh.snap.seq) } end
  if sh.batch then
    rows[#rows + 1] = { "batch_queued", tostring(sh.batch:count()) }
  end
  return format.keyed_rows(rows, st, STATS_ORDER, format.stats_value)
end

command {
  name = "STATS", usage = "STATS", no_args = true,
  help = "print the store's statistics as a table, with the data directory "
    .. "and the config file in use",
  run = function(sh)
    return format.aligned(stats_rows(sh))
  end,
}

-- The rows of STATUS: the node's /status, its followers (on a leader)
-- one row each.
local STATUS_ORDER = { "my_url", "role", "leader", "term", "commit_index",
  "last_index", "applied_index", "apply_waiting", "durable_index" }

local function status_rows(sh)
  local st = sh.db:status()
  local rows = format.keyed_rows({}, st, STATUS_ORDER,
    function(_, v) return tostring(v) end,
    function(k, v)
      return k == "nodes" or k == "followers" or type(v) == "table"
    end)
  if type(st.nodes) == "table" then
    local n = {}
    for i, u in ipairs(st.nodes) do n[i] = tostring(u) end
    rows[#rows + 1] = { "nodes", table.concat(n, ", ") }
  end
  if type(st.followers) == "table" then
    for _, f in ipairs(st.followers) do
      local parts = {}
      for _, k in ipairs { "state", "match_index", "next_index", "lag" } do
        if f[k] ~= nil then parts[#parts + 1] = k .. " " .. tostring(f[k]) end
      end
      rows[#rows + 1] = { "follower " .. tostring(f.url),
        table.concat(parts, ", ") }
    end
  end
  return rows
end

command {
  name = "STATUS", usage = "STATUS", no_args = true,
  help = "(over HTTP) print the node's replication state: role, leader, "
    .. "term, commit/last/applied index, and each follower's progress on "
    .. "a leader",
  run = function(sh)
    if not sh.remote then
      fail("STATUS is a node's state: connect with lunakv shell --url URL")
    end
    return format.aligned(status_rows(sh))
  end,
}

local LUA_HELP = [[
Anything else is Lua, run with `db` (this database), `lunakv`, and `snap`
(the pinned snapshot, if any) in scope; results are printed readably:
  =expr              print the value of expr (db:get("k"), #t, ...)
  lua chunk          run chunk as Lua even if it starts with a command word
  any other line     tried as `return <line>`, then as a statement
A line that is unfinished Lua (or an unclosed quote) continues on the next
(prompt >>). Globals you set stay for the session.]]

local QUOTING_HELP = [[
Quoting: "double quotes" take escapes \n \t \r \0 \e \\ \" \xHH;
'single quotes' are literal. Command words are case-insensitive; keys and
values keep their case. Keys and values that are not plain text are
printed quoted the same way; a missing key prints (nil).]]

command {
  name = "HELP", aliases = { "?" }, usage = "HELP [command]",
  help = "list the commands, or explain one",
  run = function(_, args)
    if #args == 1 then
      local c = commands[args[1].text:upper()]
      if not c then fail("no command %s (HELP lists them)", format.show(args[1].text)) end
      local names = c.name
      if c.aliases then names = names .. " (also " .. table.concat(c.aliases, ", ") .. ")" end
      return c.usage .. "\n  " .. format.wrap(c.help, 74, 2)
        .. (c.aliases and ("\n  " .. names) or "")
    elseif #args > 1 then
      usage(commands.HELP)
    end
    return M.help_text()
  end,
}

command {
  name = "EXIT", aliases = { "QUIT" }, usage = "EXIT",
  help = "close the database and leave (so do Ctrl-D and the end of input)",
  run = function(sh)
    sh.done = true
    return nil
  end,
}

-- The full HELP text: every command with its usage and one paragraph.
function M.help_text()
  local out, width = {}, 0
  for _, c in ipairs(order) do width = math.max(width, #c.usage) end
  out[#out + 1] = "Commands:"
  for _, c in ipairs(order) do
    local text = c.help
    if c.aliases then text = text .. " (also " .. table.concat(c.aliases, ", ") .. ")" end
    out[#out + 1] = string.format("  %-" .. width .. "s  %s", c.usage,
      format.wrap(text, 76 - width - 4, width + 4))
  end
  out[#out + 1] = ""
  out[#out + 1] = QUOTING_HELP
  out[#out + 1] = ""
  out[#out + 1] = LUA_HELP
  return table.concat(out, "\n")
end

-- The command names (for completion and the specs).
function M.command_names()
  local t = {}
  for _, c in ipairs(order) do t[#t + 1] = c.name end
  return t
end

-- The definition of the command named word (any case, aliases too), or
-- nil; next_word (the line's second word, "" when none) lets a command
-- that shares its name with Lua (FUNCTION) leave a Lua line alone.
function M.lookup(word, next_word)
  local c = commands[word:upper()]
  if c and c.claims and not c.claims(word, next_word or "") then return nil end
  return c
end

return M
