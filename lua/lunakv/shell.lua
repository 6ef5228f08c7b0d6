-- lunakv.shell - the interactive shell: commands (SET, GET, SCAN, ...) and
-- Lua at the same prompt, in the manner of lua.c: a line whose first word
-- is not a command runs as Lua with `db` in scope, compiled as
-- `return <line>` first and then as a statement, and a chunk cut short at
-- <eof> asks for more lines. Line editing and history only on a terminal;
-- from a pipe the shell prints nothing but its answers.
--
--   M.tokenize(line)        the pure tokeniser (tested on its own)
--   M.show(s)               how keys and values are printed
--   M.pretty(...)           how Lua results are printed
--   M.new(db, opts)         a session object; sh:handle(line) runs one line
--   M.run(db, opts)         the read-eval-print loop over stdin
--   M.main(args)            `lunakv shell`: open, loop, close
--
-- `lunakv shell --url URL` runs the same loop on a node: `db` is then a
-- lunakv.remote client (set/get/delete/scan/stats over HTTP), STATUS shows
-- the node's replication state, and the commands with no HTTP route
-- (SNAPSHOT, BATCH, FLUSH, ...) say so and change nothing.
--
-- Answers go to stdout, errors to stderr as one line; an error never ends
-- the session. See HELP (below) or README.md for every command.

local M = {}

-- {======================================================================
-- The tokeniser
-- =======================================================================

local ESCAPES = {
  n = "\n", t = "\t", r = "\r", ["0"] = "\0", a = "\a", b = "\b", f = "\f",
  v = "\v", e = "\27", ['"'] = '"', ["'"] = "'", ["\\"] = "\\",
}

-- Split a line into words. Returns a list of tokens
--   { text = "...", quoted = bool, first = i, last = j }
-- (first/last: byte positions of the word in line), or nil, message,
-- incomplete. incomplete is true when more input could finish the line
-- (an open quote, or a backslash at the very end inside quotes): the
-- caller may read another line and retry with both joined by "\n".
--
-- Rules: blanks (space, tab) separate words. "double quotes" allow the
-- escapes \n \t \r \0 \a \b \f \v \e \\ \" \' and \xHH; 'single quotes'
-- take everything literally. Quoted and bare parts next to each other
-- form one word (a"b c"d is `ab cd`). A bare word is literal: a backslash
-- outside quotes is just a backslash.
function M.tokenize(line)
  if type(line) ~= "string" then
    error("bad argument #1 to 'tokenize' (string expected, got "
      .. type(line) .. ")", 2)
  end
  local toks, i, n = {}, 1, #line
  while true do
    i = line:find("[^ \t]", i)
    if not i then break end
    local buf, first, quoted = {}, i, false
    while i <= n do
      local c = line:byte(i)
      if c == 32 or c == 9 then -- blank: the word ends
        break
      elseif c == 34 then -- "
        quoted = true
        i = i + 1
        while true do
          local j = line:find('["\\]', i)
          if not j then
            return nil, "unfinished quoted string (no closing \")", true
          end
          buf[#buf + 1] = line:sub(i, j - 1)
          if line:byte(j) == 34 then
            i = j + 1
            break
          end
          local e = line:sub(j + 1, j + 1)
          if e == "" then
            return nil, "unfinished quoted string (ends with \\)", true
          elseif ESCAPES[e] then
            buf[#buf + 1] = ESCAPES[e]
            i = j + 2
          elseif e == "x" then
            local h = line:match("^%x%x", j + 2)
            if not h then
              return nil, string.format(
                "bad escape at column %d: \\x needs two hex digits", j)
            end
            buf[#buf + 1] = string.char(tonumber(h, 16))
            i = j + 4
          else
            return nil, string.format(
              "unknown escape \\%s at column %d (use \\\\ for a backslash)",
              e, j)
          end
        end
      elseif c == 39 then -- '
        quoted = true
        local j = line:find("'", i + 1, true)
        if not j then
          return nil, "unfinished quoted string (no closing ')", true
        end
        buf[#buf + 1] = line:sub(i + 1, j - 1)
        i = j + 1
      else
        local j = line:find("[ \t\"']", i) or n + 1
        buf[#buf + 1] = line:sub(i, j - 1)
        i = j
      end
    end
    toks[#toks + 1] = { text = table.concat(buf), quoted = quoted,
      first = first, last = i - 1 }
  end
  return toks
end

-- The words of line as plain strings (nil, message, incomplete as above).
function M.words(line)
  local toks, err, more = M.tokenize(line)
  if not toks then return nil, err, more end
  local w = {}
  for k, t in ipairs(toks) do w[k] = t.text end
  return w
end

-- }======================================================================

-- {======================================================================
-- Printing keys, values and Lua results
-- =======================================================================

-- Is s printable text (UTF-8 without control characters)?
local function printable(s)
  if s:find("[%z\1-\31\127]") then return false end
  return utf8.len(s) ~= nil
end

local RQUOTE = { ["\n"] = "\\n", ["\t"] = "\\t", ["\r"] = "\\r",
  ['"'] = '\\"', ["\\"] = "\\\\", ["\0"] = "\\0", ["\27"] = "\\e" }

-- The quoted form of s, in the tokeniser's syntax (it reads back as s).
function M.quote(s)
  local out = s:gsub('[%c"\\\128-\255]', function(c)
    if RQUOTE[c] then return RQUOTE[c] end
    if c:byte() >= 128 then return c end -- kept; checked below
    return string.format("\\x%02x", c:byte())
  end)
  if utf8.len(out) == nil then -- bytes that are not UTF-8: all as \xHH
    out = s:gsub('[%c"\\\128-\255]', function(c)
      return RQUOTE[c] or string.format("\\x%02x", c:byte())
    end)
  end
  return '"' .. out .. '"'
end

-- How the shell prints a key or a value: as is when it is plain printable
-- text, else quoted (M.quote). Quoted are: the empty string, text with a
-- leading or trailing blank, text that starts with " or ( (so a value
-- can never be mistaken for a quoted one or for the shell's own "(nil)"),
-- control characters, and bytes that are not UTF-8.
function M.show(s)
  if s == "" or s:find("^[\"(%s]") or s:find("%s$") or not printable(s) then
    return M.quote(s)
  end
  return s
end

local function is_identifier(k)
  return type(k) == "string" and k:match("^[%a_][%w_]*$") ~= nil
end

local function lua_string(s)
  return (string.format("%q", s):gsub("\\\n", "\\n"):gsub("\r", "\\r"))
end

-- Render one Lua value readably: strings quoted, tables as constructors
-- (keys sorted, nested up to depth levels, at most max_items entries each,
-- cycles shown as <cycle>), other values by tostring.
local function render(v, depth, seen, out)
  local t = type(v)
  if t == "string" then
    out[#out + 1] = lua_string(v)
  elseif t == "number" then
    if math.type(v) == "float" and v == math.floor(v) and v > -1e15
       and v < 1e15 then
      out[#out + 1] = string.format("%.1f", v)
    else
      out[#out + 1] = tostring(v)
    end
  elseif t ~= "table" or getmetatable(v) ~= nil and getmetatable(v).__tostring
  then
    out[#out + 1] = tostring(v)
  elseif seen[v] then
    out[#out + 1] = "<cycle>"
  elseif depth <= 0 then
    out[#out + 1] = "{...}"
  else
    seen[v] = true
    local keys, n = {}, #v
    for k in pairs(v) do
      if not (math.type(k) == "integer" and k >= 1 and k <= n) then
        keys[#keys + 1] = k
      end
    end
    table.sort(keys, function(a, b)
      local ta, tb = type(a), type(b)
      if ta ~= tb then return ta < tb end
      if ta == "number" or ta == "string" then return a < b end
      return tostring(a) < tostring(b)
    end)
    out[#out + 1] = "{"
    local count, max_items = 0, 50
    local function sep()
      if count > 0 then out[#out + 1] = ", " end
      count = count + 1
    end
    for i = 1, n do
      if count >= max_items then break end
      sep()
      render(v[i], depth - 1, seen, out)
    end
    for _, k in ipairs(keys) do
      if count >= max_items then break end
      sep()
      if is_identifier(k) then
        out[#out + 1] = k
      else
        out[#out + 1] = "["
        render(k, depth - 1, seen, out)
        out[#out + 1] = "]"
      end
      out[#out + 1] = " = "
      render(v[k], depth - 1, seen, out)
    end
    if n + #keys > count then
      out[#out + 1] = string.format(", ... (%d more)", n + #keys - count)
    end
    out[#out + 1] = "}"
    seen[v] = nil
  end
end

-- The text for results ...: each rendered, separated by tabs (lua.c's
-- layout); "" for no results.
function M.pretty(...)
  local parts = {}
  for i = 1, select("#", ...) do
    local out = {}
    render((select(i, ...)), 3, {}, out)
    parts[i] = table.concat(out)
  end
  return table.concat(parts, "\t")
end

local function human_bytes(n)
  local units, u, x = { "B", "KiB", "MiB", "GiB", "TiB" }, 1, n
  while x >= 1024 and u < #units do
    x = x / 1024
    u = u + 1
  end
  if u == 1 then return string.format("%d B", n) end
  return string.format("%.1f %s", x, units[u])
end
M.human_bytes = human_bytes

-- }======================================================================

-- {======================================================================
-- Commands
-- =======================================================================

-- text filled into lines of at most `width` characters, every line but
-- the first starting with `indent` spaces.
local function wrap(text, width, indent)
  local lines, line = {}, ""
  for word in text:gmatch("%S+") do
    if line ~= "" and #line + 1 + #word > width then
      lines[#lines + 1] = line
      line = word
    else
      line = line == "" and word or (line .. " " .. word)
    end
  end
  lines[#lines + 1] = line
  return table.concat(lines, "\n" .. string.rep(" ", indent))
end

local Shell = {}
Shell.__index = Shell

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
      config.int_range(range[1], range[2]), M.show(num.text))
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

-- The reader GET, SCAN and COUNT use: the pinned snapshot if any.
function Shell:reader()
  return self.snap or self.db
end

function Shell:prompt()
  if self.remote then
    return "lunakv@" .. self.remote:gsub("^%a+://", "") .. "> "
  end
  if self.batch then
    return string.format("lunakv(batch %d)> ", self.batch:count())
  elseif self.snap then
    return string.format("lunakv(snap %d)> ", self.snap.seq)
  end
  return "lunakv> "
end

local commands, order = {}, {}

local function command(def)
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
    local key, value = args[1].text, nil
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
          SEQ_RANGE[1], SEQ_RANGE[2]), M.show(args[2].text))
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
    return v == nil and "(nil)" or M.show(v)
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
      out[#out + 1] = M.show(k) .. "\t" .. M.show(v)
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
  name = "SNAPSHOT", local_only = true, usage = "SNAPSHOT",
  help = "pin the current state: GET, SCAN and COUNT read it until "
    .. "RELEASE; prints its sequence number",
  run = function(sh, args)
    if #args ~= 0 then usage(commands.SNAPSHOT) end
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
  name = "RELEASE", local_only = true, usage = "RELEASE",
  help = "release the snapshot; reads see the latest data again",
  run = function(sh, args)
    if #args ~= 0 then usage(commands.RELEASE) end
    if not sh.snap then fail("no snapshot is pinned (SNAPSHOT pins one)") end
    sh.snap:release()
    sh.snap, sh.env.snap = nil, nil
    return "OK"
  end,
}

command {
  name = "BATCH", local_only = true, aliases = { "BEGIN", "MULTI" }, usage = "BATCH",
  help = "start an atomic batch: SET and DELETE are queued until COMMIT "
    .. "(all at once) or ABORT (none); reads still see the db",
  run = function(sh, args)
    if #args ~= 0 then usage(commands.BATCH) end
    if sh.batch then
      fail("a batch is already open (%d queued); COMMIT or ABORT it",
        sh.batch:count())
    end
    sh.batch = sh.db:batch()
    return "OK"
  end,
}

command {
  name = "COMMIT", local_only = true, aliases = { "EXEC" }, usage = "COMMIT",
  help = "apply the batch atomically; prints its last sequence number",
  run = function(sh, args)
    if #args ~= 0 then usage(commands.COMMIT) end
    if not sh.batch then fail("no batch is open (BATCH opens one)") end
    local seq = sh.batch:commit()
    sh.batch:close()
    sh.batch = nil
    return tostring(seq)
  end,
}

command {
  name = "ABORT", local_only = true, aliases = { "DISCARD" }, usage = "ABORT",
  help = "drop the batch without writing anything",
  run = function(sh, args)
    if #args ~= 0 then usage(commands.ABORT) end
    if not sh.batch then fail("no batch is open (BATCH opens one)") end
    sh.batch:close()
    sh.batch = nil
    return "OK"
  end,
}

command {
  name = "FLUSH", local_only = true, usage = "FLUSH",
  help = "write the memtable to an SSTable; returns when done",
  run = function(sh, args)
    if #args ~= 0 then usage(commands.FLUSH) end
    sh.db:flush()
    return "OK"
  end,
}

command {
  name = "COMPACT", local_only = true, usage = "COMPACT",
  help = "flush, then merge every table into the last level; returns when "
    .. "done",
  run = function(sh, args)
    if #args ~= 0 then usage(commands.COMPACT) end
    sh.db:compact()
    return "OK"
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
  "stall_micros", "bloom_checks", "bloom_negatives", "block_reads",
  "block_cache_hits", "block_cache_bytes", "live_snapshots",
  "live_iterators", "wal_syncs", "bg_error",
}

local function stats_value(name, v)
  if type(v) == "table" then
    local last = 0
    for i = 1, #v do if v[i] ~= 0 then last = i end end
    if last == 0 then return "-" end
    local parts = {}
    for i = 1, last do
      local x = v[i]
      if name:find("bytes") then x = human_bytes(x) end
      parts[#parts + 1] = string.format("L%d %s", i - 1, x)
    end
    return table.concat(parts, ", ")
  elseif math.type(v) == "float" then
    return string.format("%.2f", v)
  elseif math.type(v) == "integer" and name:find("bytes") and v >= 1024 then
    return string.format("%d (%s)", v, human_bytes(v))
  end
  return tostring(v)
end

-- Append to rows one { key, value(key, t[key]) } per key of t: first the
-- keys of order, then the others sorted; keys for which leave(key, v) is
-- true are left out. Returns rows.
local function keyed_rows(rows, t, order, value, leave)
  local done = {}
  for _, k in ipairs(order) do
    if t[k] ~= nil then
      rows[#rows + 1] = { k, value(k, t[k]) }
      done[k] = true
    end
  end
  local rest = {}
  for k, v in pairs(t) do
    if not done[k] and not (leave and leave(k, v)) then rest[#rest + 1] = k end
  end
  table.sort(rest)
  for _, k in ipairs(rest) do rows[#rows + 1] = { k, value(k, t[k]) } end
  return rows
end

-- Rows { {name, text}, ... } as lines, the names padded to one width.
local function aligned(rows)
  local width = 0
  for _, r in ipairs(rows) do width = math.max(width, #r[1]) end
  local out = {}
  for _, r in ipairs(rows) do
    out[#out + 1] = string.format("%-" .. width .. "s  %s", r[1], r[2])
  end
  return table.concat(out, "\n")
end

-- The rows of STATS: { {name, text}, ... }.
function Shell:stats_rows()
  local st = self.db:stats()
  local rows
  if self.remote then
    -- a node's /stats: the engine's fields, plus tables such as rlog
    -- whose members become rows of their own (rlog.syncs, ...)
    rows = { { "node", self.remote } }
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
      { "data_dir", self.dir or "?" },
      { "config_file", self.info and self.info.file
        or "(none: defaults and environment)" },
    }
  end
  if self.snap then rows[#rows + 1] = { "snapshot_seq", tostring(self.snap.seq) } end
  if self.batch then
    rows[#rows + 1] = { "batch_queued", tostring(self.batch:count()) }
  end
  return keyed_rows(rows, st, STATS_ORDER, stats_value)
end

command {
  name = "STATS", usage = "STATS",
  help = "print the store's statistics as a table, with the data directory "
    .. "and the config file in use",
  run = function(sh, args)
    if #args ~= 0 then usage(commands.STATS) end
    return aligned(sh:stats_rows())
  end,
}

-- The rows of STATUS: the node's /status, its followers (on a leader)
-- one row each.
local STATUS_ORDER = { "my_url", "role", "leader", "term", "commit_index",
  "last_index", "applied_index", "durable_index" }

function Shell:status_rows()
  local st = self.db:status()
  local rows = keyed_rows({}, st, STATUS_ORDER,
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
  name = "STATUS", usage = "STATUS",
  help = "(over HTTP) print the node's replication state: role, leader, "
    .. "term, commit/last/applied index, and each follower's progress on "
    .. "a leader",
  run = function(sh, args)
    if #args ~= 0 then usage(commands.STATUS) end
    if not sh.remote then
      fail("STATUS is a node's state: connect with lunakv shell --url URL")
    end
    return aligned(sh:status_rows())
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
      if not c then fail("no command %s (HELP lists them)", M.show(args[1].text)) end
      local names = c.name
      if c.aliases then names = names .. " (also " .. table.concat(c.aliases, ", ") .. ")" end
      return c.usage .. "\n  " .. wrap(c.help, 74, 2)
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
      wrap(text, 76 - width - 4, width + 4))
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

-- }======================================================================

-- {======================================================================
-- Sessions: one line at a time
-- =======================================================================

-- M.new(db, opts) -> a session. opts: dir, info (config.load's),
-- lunakv (the module, put in the Lua scope), out, err (files; default
-- io.stdout, io.stderr).
function M.new(db, opts)
  opts = opts or {}
  local sh = setmetatable({
    db = db, dir = opts.dir, info = opts.info, remote = opts.remote,
    out = opts.out or io.stdout, err = opts.err or io.stderr,
    pending = nil, -- text of an unfinished line (quote or Lua chunk)
    errors = 0,
  }, Shell)
  sh.env = setmetatable({ db = db, lunakv = opts.lunakv }, { __index = _G })
  return sh
end

-- Is e the error a Ctrl-C raises (core.interrupts)? Its text is
-- "interrupted!" after whatever position luaL_error found where the Lua
-- code was stopped: none at the top of a line's chunk, "stdin:1: " in a
-- function the line called, a shell.lua line in a command. The shell
-- prints every one the same way: INTERRUPTED.
local function is_interrupt(e)
  if type(e) ~= "string" then return false end
  local first = e:match("^[^\n]*") -- a traceback may follow
  return first:sub(-#"interrupted!") == "interrupted!"
end
local INTERRUPTED = "lunakv: interrupted"

-- The one-line text of an error value.
local function error_line(e)
  local msg
  if is_interrupt(e) then
    return INTERRUPTED
  elseif type(e) == "table" and e.shell_error then
    msg = "lunakv: " .. e.shell_error
  elseif type(e) == "string" then
    local s = e:find("lunakv: ", 1, true)
    msg = s and e:sub(s) or e
  else
    local mt = getmetatable(e)
    msg = (mt and mt.__tostring) and tostring(e)
      or ("(error object is a " .. type(e) .. " value)")
  end
  msg = msg:gsub("\n.*", "")
  return msg
end

function Shell:report(e)
  -- from a pipe a Ctrl-C ends the session (M.run looks at this)
  if is_interrupt(e) then self.interrupted = true end
  self.errors = self.errors + 1
  self.out:flush()
  self.err:write(error_line(e), "\n")
  self.err:flush()
end

function Shell:answer(text)
  if text ~= nil then self.out:write(text, "\n") end
  self.out:flush()
end

-- Compile code as lua.c does: `return code` first, then code itself.
-- Returns the function, or nil, message, incomplete.
function Shell:compile(code)
  local f = load("return " .. code, "=stdin", "t", self.env)
  if f then return f end
  local err
  f, err = load(code, "=stdin", "t", self.env)
  if f then return f end
  return nil, err, err:sub(-5) == "<eof>"
end

local function pack(...) return { n = select("#", ...), ... } end

-- Run Lua code; prints its results. Returns false when the chunk is
-- unfinished (more lines wanted). word: the line's first word when it
-- may have been meant as a command (named in a syntax error).
function Shell:eval(code, word)
  local f, err, more = self:compile(code)
  if not f then
    if more then return false end
    if word then
      err = string.format("unknown command '%s' (HELP lists them); as Lua: %s",
        word, err)
      self:report({ shell_error = err })
    else
      self:report(err)
    end
    return true
  end
  local r = pack(xpcall(f, debug.traceback))
  if not r[1] then
    self:report(r[2])
  elseif r.n > 1 then
    self:answer(M.pretty(table.unpack(r, 2, r.n)))
  else
    self.out:flush()
  end
  return true
end

-- Is the first word of line a command? Returns its definition.
local function command_of(toks)
  local first = toks[1]
  if not first or first.quoted then return nil end
  return commands[first.text:upper()]
end

-- Handle one line of input (a line the user typed). Returns "more" when
-- the line is unfinished and the next one continues it, nil otherwise;
-- sh.done is set after EXIT.
function Shell:handle(line)
  local text = line
  if self.pending then text = self.pending .. "\n" .. line end
  self.pending = nil
  local lua_mode = self.pending_lua
  self.pending_lua = nil
  local word

  if not lua_mode then
    local toks, err, more = M.tokenize(text)
    if toks then
      if #toks == 0 then return nil end
      local cmd = command_of(toks)
      if cmd and cmd.local_only and self.remote then
        self:report({ shell_error = string.format(
          "%s is not available over HTTP (a node has no route for it); "
          .. "nothing was changed", cmd.name) })
        return nil
      end
      if cmd then
        local args = {}
        for k = 2, #toks do args[k - 1] = toks[k] end
        local ok, res = pcall(cmd.run, self, args, text)
        if ok then self:answer(res) else self:report(res) end
        return nil
      end
    else
      -- a command whose quoting is wrong, or unfinished (an open quote
      -- goes on on the next line); anything else is left to Lua
      local first = text:match("^[ \t]*([^ \t\"']+)")
      if first and commands[first:upper()] then
        if more then
          self.pending = text
          return "more"
        end
        self:report({ shell_error = err })
        return nil
      end
    end
    -- not a command: Lua (a tokenising error does not matter to Lua)
    local body = text:match("^%s*=(.*)$")
    if body then
      text = "return " .. body
    else
      body = text:match("^%s*[Ll][Uu][Aa]%s+(.*)$")
        or (text:match("^%s*[Ll][Uu][Aa]%s*$") and "")
      if body then
        text = body
      else
        -- a lone name that means nothing is more likely a mistyped
        -- command than a question about an unset global
        local name = text:match("^%s*([%a_][%w_]*)%s*$")
        if name and self.env[name] == nil then
          self:report({ shell_error = string.format(
            "unknown command or undefined variable '%s' (HELP lists the "
            .. "commands)", name) })
          return nil
        end
        -- "FOO bar" that is not Lua was most likely meant as a command
        word = text:match("^%s*([%a_][%w_]*)[ \t]+[%w_\"'%-]")
      end
    end
    if text:match("^%s*$") then return nil end
  end
  if self:eval(text, word) then return nil end
  self.pending, self.pending_lua = text, true
  return "more"
end

-- The end of input with a line still unfinished.
function Shell:finish()
  if self.pending then
    local what = self.pending_lua and "Lua chunk" or "quoted string"
    self.pending, self.pending_lua = nil, nil
    self:report({ shell_error = "end of input inside an unfinished " .. what })
  end
  if self.batch then
    self.err:write(string.format(
      "lunakv: warning: uncommitted batch of %d operation(s) discarded\n",
      self.batch:count()))
    self.batch:close()
    self.batch = nil
  end
  if self.snap then
    self.snap:release()
    self.snap, self.env.snap = nil, nil
  end
end

-- }======================================================================

-- {======================================================================
-- The loop: terminal (readline, prompts, history) or pipe (bare answers)
-- =======================================================================

local function history_file()
  local home = os.getenv("HOME")
  if not home or home == "" then return nil end
  return home .. "/.lunakv_history"
end

-- A line reader for a terminal: lua-readline when installed, else plain
-- io.read with the prompt written to stdout.
local function terminal_reader()
  local ok, rl = pcall(require, "readline")
  if ok and type(rl) == "table" and rl.readline then
    local hist = history_file()
    pcall(rl.set_options, {
      histfile = hist or "", keeplines = 1000, ignoredups = true,
      completion = true, auto_add = true, minlength = 1,
    })
    local words = {}
    for _, name in ipairs(M.command_names()) do
      words[#words + 1] = name
      words[#words + 1] = name:lower()
    end
    words[#words + 1] = "db:"
    pcall(rl.set_complete_list, words)
    return function(prompt) return rl.readline(prompt) end,
      function() if hist then pcall(rl.save_history) end end
  end
  return function(prompt)
    io.stdout:write(prompt)
    io.stdout:flush()
    return io.stdin:read("l")
  end, function() end
end

-- M.run(db, opts): the read-eval-print loop until EXIT or the end of
-- input. opts as M.new, plus tty (prompts and line editing), read (a
-- function(prompt) -> line or nil, replacing stdin), core (lunakv.core:
-- when given, Ctrl-C interrupts the running command instead of the
-- process). Returns the session (sh.errors counts failures).
function M.run(db, opts)
  opts = opts or {}
  local sh = M.new(db, opts)
  local tty = opts.tty
  local read, save = opts.read, function() end
  if read == nil then
    if tty then
      read, save = terminal_reader()
    else
      read = function() return io.stdin:read("l") end
    end
  end
  local more = nil
  -- one step: read a line and handle it. A Ctrl-C raises "interrupted!"
  -- at the next Lua step (core.interrupts), which may fall anywhere in
  -- here; the pcall around the step turns it into one line of output
  local function step()
    local prompt = tty and (more and ">> " or sh:prompt()) or nil
    local line = read(prompt)
    if line == nil then
      if tty then sh.out:write("\n") end
      return "eof"
    end
    more = sh:handle((line:gsub("\r$", "")))
  end
  local core = opts.core
  local was = core and core.interrupts(true)
  while not sh.done do
    local ok, res = pcall(step)
    if not ok then
      -- a Ctrl-C outside a command or a line's Lua (reading, printing):
      -- reported like one inside (Shell:report), and what was read so
      -- far of an unfinished line is dropped
      more, sh.pending, sh.pending_lua = nil, nil, nil
      sh:report(res)
    elseif res == "eof" then
      break
    end
    if sh.interrupted then
      if not tty then break end -- from a pipe, Ctrl-C ends the session
      sh.interrupted = false
    end
  end
  if core and not was then core.interrupts(false) end
  sh:finish()
  save()
  sh.out:flush()
  return sh
end

-- `lunakv shell [DIR]`. args: dir, opts (engine options, config.load's
-- table with flags applied), info (config.load's info), url (reserved).
-- Returns true, or nil and a message (exit 1).
function M.main(args)
  local lunakv = require "lunakv"
  local core = require "lunakv.core"
  if args.url then return M.main_remote(args) end
  local opts, info = args.opts, args.info
  if not opts then opts, info = lunakv.config.load() end
  for _, w in ipairs(info and info.warnings or {}) do
    io.stderr:write("lunakv: warning: ", w, "\n")
  end
  local dir = args.dir or opts.data_dir
  local tty = core.isatty(0) and core.isatty(1)
  local ok, db = pcall(lunakv.open, dir, opts)
  if not ok then
    local e = tostring(db)
    if not opts.read_only and (e:find("Permission denied", 1, true)
        or e:find("Read-only file system", 1, true)) then
      e = e .. " (lunakv shell --read-only opens it without writing)"
    end
    return nil, e
  end
  local _ <close> = db
  local recovery = db:stats().recovery -- the WAL tail open had to cut
  if recovery then io.stderr:write("lunakv: warning: ", recovery, "\n") end
  if tty then
    io.stderr:write(string.format(
      "%s shell on %s (config: %s). HELP for commands, EXIT or Ctrl-D to "
      .. "leave.\n", lunakv._VERSION, dir, info and info.file
      or "no .env file"))
  end
  local sh = M.run(db, { dir = dir, info = info, lunakv = lunakv, tty = tty,
    core = core })
  db:close()
  if not tty and sh.errors > 0 then
    return nil, string.format("%d command(s) failed", sh.errors)
  end
  return true
end

-- `lunakv shell --url URL`: the loop over HTTP. Fails (exit 1) when the
-- node does not answer GET /health; after that, a failed request is one
-- error line and the session goes on.
function M.main_remote(args)
  local lunakv = require "lunakv"
  local core = require "lunakv.core"
  local remote = require "lunakv.remote"
  local base, why = remote.base_url(args.url)
  if not base then return nil, "--url: " .. why end
  local ok, node = pcall(remote.connect, base)
  if not ok then
    local msg = tostring(node)
    msg = msg:sub((msg:find("lunakv: ", 1, true) or -7) + 8)
    return nil, "cannot reach the node: " .. msg
  end
  local tty = core.isatty(0) and core.isatty(1)
  if tty then
    local role = ""
    local sok, st = pcall(node.status, node)
    if sok and st.role then role = " (" .. tostring(st.role) .. ")" end
    io.stderr:write(string.format(
      "%s shell on %s%s. HELP for commands, EXIT or Ctrl-D to leave.\n",
      lunakv._VERSION, base, role))
  end
  local sh = M.run(node, { remote = base, lunakv = lunakv, tty = tty,
    core = core })
  if not tty and sh.errors > 0 then
    return nil, string.format("%d command(s) failed", sh.errors)
  end
  return true
end

-- }======================================================================

return M
