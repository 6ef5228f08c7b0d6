-- lunakv.shell.format - how the shell prints: keys and values (as is, or
-- quoted in the tokeniser's syntax so they read back), Lua results (as
-- lua.c lays them out, tables as constructors), sizes, and the aligned
-- name/value rows of STATS and STATUS.

local M = {}

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

function M.human_bytes(n)
  local units, u, x = { "B", "KiB", "MiB", "GiB", "TiB" }, 1, n
  while x >= 1024 and u < #units do
    x = x / 1024
    u = u + 1
  end
  if u == 1 then return string.format("%d B", n) end
  return string.format("%.1f %s", x, units[u])
end

-- text filled into lines of at most `width` characters, every line but
-- the first starting with `indent` spaces.
function M.wrap(text, width, indent)
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

-- A STATS value as text: a per-level list as "L0 x, L1 y" up to its last
-- non-zero level ("-" when all are zero), sizes with their human form.
function M.stats_value(name, v)
  if type(v) == "table" then
    local last = 0
    for i = 1, #v do if v[i] ~= 0 then last = i end end
    if last == 0 then return "-" end
    local parts = {}
    for i = 1, last do
      local x = v[i]
      if name:find("bytes") then x = M.human_bytes(x) end
      parts[#parts + 1] = string.format("L%d %s", i - 1, x)
    end
    return table.concat(parts, ", ")
  elseif math.type(v) == "float" then
    return string.format("%.2f", v)
  elseif math.type(v) == "integer" and name:find("bytes") and v >= 1024 then
    return string.format("%d (%s)", v, M.human_bytes(v))
  end
  return tostring(v)
end

-- Append to rows one { key, value(key, t[key]) } per key of t: first the
-- keys of order, then the others sorted; keys for which leave(key, v) is
-- true are left out. Returns rows.
function M.keyed_rows(rows, t, order, value, leave)
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
function M.aligned(rows)
  local width = 0
  for _, r in ipairs(rows) do width = math.max(width, #r[1]) end
  local out = {}
  for _, r in ipairs(rows) do
    out[#out + 1] = string.format("%-" .. width .. "s  %s", r[1], r[2])
  end
  return table.concat(out, "\n")
end

return M
