-- lunakv.config - options from built-in defaults < a `.env` file <
-- environment variables, keyed by the seed's names (LOG_FILE_NAME,
-- MAX_MEMTABLE_SIZE, ...). The keys, their defaults and ranges are the C
-- schema's (core.options_schema), so a value refused here is exactly one
-- the engine or the node would refuse.
--
--   local opts, info = config.load([dir [, env]])
--
-- opts has one lowercase key per known variable (max_memtable_size, sync,
-- bloom_filter_size, data_dir, ...), ready for lunakv.open(dir, opts).
-- info = { file = path of the .env read or nil, warnings = { ... },
--          sources = { key = "default" | "FILE:LINE" | "environment" } }.
-- A key is its variable in upper or lower case (MAX_MEMTABLE_SIZE or
-- max_memtable_size), the same in .env, the environment and --set
-- (M.find). Unknown keys, keys set twice and unparsable lines in .env are
-- warnings (file:line); a bad value for a known key raises an error
-- naming key, value and source, and so does a directory given as the
-- file.

local core = require "lunakv.core"

local M = {}

-- The kinds of value, by the schema's type names.
local KINDS = { integer = "int", boolean = "bool", enum = "enum",
  string = "string", filename = "filename" }

-- Every option lunakv knows, in documentation order, made from
-- core.options_schema: its rows live in c/engine/options.c (the engine),
-- c/net/nodeopts.c (the node) and c/lua/lunakv_options.c (keys only Lua
-- reads). Fields:
--   key     the Lua name (lunakv.open option, config.load result key): the
--           variable in lower case; an engine option is also known by its
--           engine name when that differs (bloom_min_bits for
--           BLOOM_FILTER_SIZE) or when it has no variable (read_only)
--   env     the .env / environment variable; nil = Lua-only spelling
--   kind    "int", "bool", "enum", "string" or "filename"
--   min/max the accepted integer range (a file name's length in bytes)
--   values  the names an "enum" takes
--   default the built-in default (= lkv_options_init for engine options)
--   engine  the engine option it sets (lunakv.core), or false when the
--           engine ignores it (node settings, and the seed's leftovers)
--   room    who reads it: "engine", "node" or "lua"
M.schema = {}
for _, row in ipairs(core.options_schema) do
  local function add(key, env)
    M.schema[#M.schema + 1] = {
      key = key, env = env, kind = assert(KINDS[row.type], row.type),
      min = row.min, max = row.max, values = row.values,
      default = row.default, doc = row.doc, room = row.room,
      engine = row.room == "engine" and row.name or false,
    }
  end
  -- a node setting without a variable is a flag of `lunakv node`, not a
  -- key here
  if row.env then add(row.env:lower(), row.env) end
  if row.room == "engine" and row.env ~= row.name:upper() then
    add(row.name, nil)
  end
end

local by_key, by_env = {}, {}
for _, spec in ipairs(M.schema) do
  by_key[spec.key] = spec
  if spec.env then by_env[spec.env] = spec end
end
M.by_key = by_key

M.SYNC_MODES = by_key.sync.values

-- The spec of the setting a name means, in .env, the environment and
-- --set alike: its variable in upper or in lower case (MAX_MEMTABLE_SIZE
-- or max_memtable_size), never mixed (Max_Memtable_Size is unknown: the
-- environment could not be read that way). nil for an unknown name.
function M.find(name)
  if type(name) ~= "string" then return nil end
  if name == name:upper() then return by_env[name] end
  if name == name:lower() then return by_env[name:upper()] end
  return nil
end

local function show(v)
  if type(v) == "string" then return string.format("%q", v) end
  return tostring(v)
end
M.show = show

-- {======================================================================
-- Numbers in text: one reading of "an integer from lo to hi" for every
-- layer that takes one (.env, the environment, --set, the command line's
-- numeric options, the shell's LIMIT and AT_SEQ)
-- =======================================================================

-- "an integer from lo to hi", or "an integer >= lo" when hi is nil or
-- math.maxinteger (no upper end worth printing).
function M.int_range(lo, hi)
  if hi == nil or hi == math.maxinteger then
    return string.format("an integer >= %d", lo)
  end
  return string.format("an integer from %d to %d", lo, hi)
end

-- The integer written in text (decimal digits, an optional sign, blanks
-- around), when it lies in [lo, hi] (hi nil: no upper end). Returns it,
-- or nil and why: "not an integer" or "out of range" (also for digits
-- past 64 bits, which Lua would read as a float).
function M.parse_int(text, lo, hi)
  local t = tostring(text):match("^%s*(.-)%s*$")
  if not t:match("^[+-]?%d+$") then return nil, "not an integer" end
  local n = math.tointeger(tonumber(t))
  if n == nil or n < lo or (hi ~= nil and n > hi) then
    return nil, "out of range"
  end
  return n
end

-- The converters made below: they read a negative number and name the
-- range, so lunakv.cli hands them one (`-n -5`) rather than letting
-- argparse take it for an option. Weak keys: the parsers own them.
M.range_checked = setmetatable({}, { __mode = "k" })

-- One of those converters: value(text) is the value, or nil when text is
-- not one; then the converter returns nil and "NAME must be MUST, got
-- 'TEXT'" (a usage error).
local function range_converter(name, must, value)
  local function convert(text)
    local v = value(text)
    if v == nil then
      return nil, string.format("%s must be %s, got '%s'", name, must, text)
    end
    return v
  end
  M.range_checked[convert] = true
  return convert
end

-- An argparse converter for an integer option or argument named name
-- (as the user writes it: "--num", "N"): the integer, or nil and
-- "NAME must be an integer from LO to HI, got 'TEXT'" (a usage error).
-- The same range belongs in the option's help text (M.int_range).
function M.int_arg(name, lo, hi)
  return range_converter(name, M.int_range(lo, hi), function(text)
    return (M.parse_int(text, lo, hi))
  end)
end

-- An argparse converter for a positive number (a duration) at most hi:
-- the number, or nil and "NAME must be a number > 0 and <= HI, got 'TEXT'".
function M.seconds_arg(name, hi)
  return range_converter(name, string.format("a number > 0 and <= %g", hi),
    function(text)
      local t = tostring(text):match("^%s*(.-)%s*$")
      local n = t:match("^[+-]?[%d.]+[eE]?[+-]?%d*$") and tonumber(t)
      if n and n > 0 and n <= hi then return n end
      return nil
    end)
end

-- }======================================================================

-- "a", "b" or "c" for a list of names.
local function one_of(values)
  local q = {}
  for i, v in ipairs(values) do q[i] = string.format("%q", v) end
  if #q < 2 then return q[1] or "" end
  return table.concat(q, ", ", 1, #q - 1) .. " or " .. q[#q]
end

-- What values of spec are accepted, for messages.
function M.expected(spec)
  if spec.kind == "enum" then return one_of(spec.values) end
  if spec.kind == "string" then return "a string" end
  if spec.kind == "filename" then
    return string.format("a file name of %d to %d bytes, without '/'",
      spec.min, spec.max)
  end
  if spec.kind == "bool" then return "true or false" end
  return M.int_range(spec.min, spec.max)
end

-- Check a Lua value against spec. Returns the value (integers normalised)
-- or nil and the reason.
function M.check(spec, v)
  if spec.kind == "string" then
    if type(v) ~= "string" then return nil, "expected a string" end
    return v
  elseif spec.kind == "filename" then
    if type(v) ~= "string" or #v < spec.min or #v > spec.max
        or v:find("[/%z]") then
      return nil, "expected " .. M.expected(spec)
    end
    return v
  elseif spec.kind == "enum" then
    for _, m in ipairs(spec.values) do
      if v == m then return v end
    end
    return nil, "expected " .. M.expected(spec)
  elseif spec.kind == "bool" then
    if type(v) ~= "boolean" then return nil, "expected true or false" end
    return v
  end
  local n = math.type(v) and math.tointeger(v)
  if not n then return nil, "expected " .. M.expected(spec) end
  if n < spec.min or (spec.max and n > spec.max) then
    if n < 0 then return nil, "must not be negative" end
    return nil, "expected " .. M.expected(spec)
  end
  return n
end

-- The words a .env or the environment may use for a boolean.
local BOOL_WORDS = { ["true"] = true, ["1"] = true, yes = true, on = true,
  ["false"] = false, ["0"] = false, no = false, off = false }

-- Turn the text of a variable into a value of spec's kind, or raise.
-- Messages name the variable as given (name, default spec.env).
local function convert(spec, text, source, name)
  local label = name or spec.env
  local v = text
  if spec.kind == "bool" then
    v = BOOL_WORDS[text:match("^%s*(.-)%s*$"):lower()]
    if v == nil then
      error(string.format("lunakv: %s=%s (%s): expected true or false "
        .. "(or 1/0, yes/no, on/off)", label, show(text), source), 0)
    end
  elseif spec.kind == "int" then
    local why
    v, why = M.parse_int(text, math.mininteger) -- its range: M.check
    if not v then
      error(string.format("lunakv: %s=%s (%s): %s", label, show(text),
        source, why == "out of range" and "too large" or why), 0)
    end
  end
  local ok, why = M.check(spec, v)
  if ok == nil then
    error(string.format("lunakv: %s=%s (%s): %s", label, show(text),
      source, why), 0)
  end
  return ok
end

local ESCAPES = { n = "\n", t = "\t", r = "\r", ['"'] = '"', ["\\"] = "\\" }

-- Parse the text of a .env file. `name` labels messages ("path/.env").
-- Returns entries { {key=, value=, line=}, ... } in file order and a list
-- of warnings for lines that are not KEY=VALUE. Raises on a value whose
-- quote is not closed or is followed by something other than a comment.
function M.parse(text, name)
  name = name or ".env"
  local entries, warnings = {}, {}
  local lineno = 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    lineno = lineno + 1
    line = line:gsub("\r$", "")
    if lineno == 1 then line = line:gsub("^\239\187\191", "") end -- BOM
    if line:match("^%s*$") or line:match("^%s*#") then goto continue end
    do
      local body = line:gsub("^%s*export%s+", "", 1)
      local key, raw = body:match("^%s*([%a_][%w_]*)%s*=(.*)$")
      local where = name .. ":" .. lineno
      if not key then
        warnings[#warnings + 1] = string.format(
          "%s: ignored line (expected KEY=VALUE): %s", where, line)
        goto continue
      end
      local raw0 = raw
      raw = raw:gsub("^%s+", "")
      local q = raw:sub(1, 1)
      local value, rest
      if q == '"' then
        local buf, i = {}, 2
        while true do
          local c = raw:sub(i, i)
          if c == "" then
            error(string.format("lunakv: %s: %s: missing closing quote",
              where, key), 0)
          elseif c == "\\" and ESCAPES[raw:sub(i + 1, i + 1)] then
            buf[#buf + 1] = ESCAPES[raw:sub(i + 1, i + 1)]
            i = i + 2
          elseif c == '"' then
            break
          else
            buf[#buf + 1] = c
            i = i + 1
          end
        end
        value, rest = table.concat(buf), raw:sub(i + 1)
      elseif q == "'" then
        local close = raw:find("'", 2, true)
        if not close then
          error(string.format("lunakv: %s: %s: missing closing quote",
            where, key), 0)
        end
        value, rest = raw:sub(2, close - 1), raw:sub(close + 1)
      else
        -- unquoted: a comment starts at a '#' that follows whitespace;
        -- surrounding whitespace is dropped ("a#b" keeps its '#')
        value = raw0:gsub("%s+#.*$", ""):match("^%s*(.-)%s*$")
        rest = ""
      end
      if not (rest:match("^%s*$") or rest:match("^%s+#")) then
        error(string.format("lunakv: %s: %s: unexpected text after the "
          .. "closing quote: %s", where, key, rest:match("^%s*(.-)%s*$")), 0)
      end
      entries[#entries + 1] = { key = key, value = value, line = lineno }
    end
    ::continue::
  end
  return entries, warnings
end

-- A fresh table of the defaults, keyed like config.load's result.
function M.defaults()
  local t = {}
  for _, spec in ipairs(M.schema) do
    if spec.env then t[spec.key] = spec.default end
  end
  return t
end

-- Is path a directory? (io.open opens one; reading it fails with EISDIR.)
local function is_directory(path)
  local f = io.open(path, "rb")
  if not f then return false end
  local ok, _, code = f:read(0)
  f:close()
  return ok == nil and code == 21
end
M.is_directory = is_directory

local function read_file(path)
  if is_directory(path) then
    error("lunakv: config file " .. path .. ": is a directory, not a file "
      .. "of KEY=VALUE lines", 0)
  end
  local f = io.open(path, "rb")
  if not f then return nil end
  -- a .env is a few lines; refuse to swallow something that is not one
  local text = f:read(1024 * 1024 + 1) or ""
  f:close()
  if #text > 1024 * 1024 then
    error("lunakv: " .. path .. ": larger than 1 MiB, not a .env file", 0)
  end
  return text
end

local function getenv_of(env, fname)
  if env == nil then return os.getenv end
  if type(env) == "table" then return function(k) return env[k] end end
  if type(env) == "function" then return env end
  error("bad argument #2 to '" .. fname .. "' (table or function expected, "
    .. "got " .. type(env) .. ")", 3)
end

-- The three lower layers: defaults < the file at path (when it exists;
-- required: it must) < environment.
local function load_layers(path, required, getenv)
  local opts, info = M.defaults(), { warnings = {}, sources = {} }
  for k in pairs(opts) do info.sources[k] = "default" end

  local text = read_file(path)
  if not text and required then
    error("lunakv: config file " .. path .. ": cannot be read", 0)
  end
  if text then
    info.file = path
    local entries, warnings = M.parse(text, path)
    for _, w in ipairs(warnings) do info.warnings[#info.warnings + 1] = w end
    local first = {} -- spec.key -> the line that set it first
    for _, e in ipairs(entries) do
      local spec = M.find(e.key)
      local where = path .. ":" .. e.line
      if spec then
        -- the last one wins, as in a shell; the earlier one was most
        -- likely forgotten, so say where both are
        if first[spec.key] then
          info.warnings[#info.warnings + 1] = string.format(
            "%s: %s is set again (first at %s:%d); the value of line %d "
            .. "is used", where, e.key, path, first[spec.key], e.line)
        else
          first[spec.key] = e.line
        end
        opts[spec.key] = convert(spec, e.value, where, e.key)
        info.sources[spec.key] = where
      else
        info.warnings[#info.warnings + 1] =
          string.format("%s: unknown key %s (ignored)", where, e.key)
      end
    end
  end

  for _, spec in ipairs(M.schema) do
    if spec.env then
      -- the variable in upper or lower case (M.find); both set to
      -- different values is refused rather than one picked
      local name, v = spec.env, getenv(spec.env)
      local lower = getenv(spec.env:lower())
      if v == nil or v == "" then
        name, v = spec.env:lower(), lower
      elseif lower ~= nil and lower ~= "" and lower ~= v then
        error(string.format("lunakv: %s=%s and %s=%s (environment): give "
          .. "one", spec.env, show(tostring(v)), spec.env:lower(),
          show(tostring(lower))), 0)
      end
      if v ~= nil and v ~= "" then
        opts[spec.key] = convert(spec, tostring(v), "environment", name)
        info.sources[spec.key] = "environment"
      end
    end
  end
  return opts, info
end

-- config.load([dir [, env]]): dir holds the .env (default: the current
-- directory); env replaces os.getenv for tests: a table name -> value or a
-- function(name) -> value. Empty environment variables count as unset.
function M.load(dir, env)
  if dir ~= nil and type(dir) ~= "string" then
    error("bad argument #1 to 'load' (string expected, got "
      .. type(dir) .. ")", 2)
  end
  local getenv = getenv_of(env, "load")
  local path = (dir and dir ~= "") and (dir:gsub("/+$", "") .. "/.env")
    or ".env"
  return load_layers(path, false, getenv)
end

-- config.load_file(path [, env]): like load, with the .env-format file at
-- path (which must exist) in place of <dir>/.env.
function M.load_file(path, env)
  if type(path) ~= "string" or path == "" then
    error("bad argument #1 to 'load_file' (file name expected, got "
      .. (path == "" and "an empty string" or type(path)) .. ")", 2)
  end
  return load_layers(path, true, getenv_of(env, "load_file"))
end

-- config.override(opts, info, settings [, source]): the top layer, flags.
-- settings is a list of "KEY=VALUE" strings; KEY names a variable in
-- upper or lower case (M.find), VALUE is read as in .env. Changes opts
-- and info in place (info.sources[key] = source, default "flag"). An unknown key or a bad value raises
-- "lunakv: ..." naming it: a typo on the command line is an error, not a
-- warning.
function M.override(opts, info, settings, source)
  source = source or "flag"
  for _, s in ipairs(settings) do
    local name, text = tostring(s):match("^%s*([%w_]+)%s*=(.*)$")
    if not name then
      error(string.format("lunakv: %s %s: expected KEY=VALUE", source,
        show(s)), 0)
    end
    local spec = M.find(name)
    if not spec then
      local names = {}
      for _, sp in ipairs(M.schema) do
        if sp.env then names[#names + 1] = sp.env end
      end
      error(string.format("lunakv: %s %s: unknown key %s (known: %s)",
        source, show(s), name, table.concat(names, ", ")), 0)
    end
    -- the value is read as in .env and the environment (MMAP_READS=on)
    opts[spec.key] = convert(spec, text, source, name)
    if info then
      info.sources = info.sources or {}
      info.sources[spec.key] = source
    end
  end
  return opts, info
end

return M
