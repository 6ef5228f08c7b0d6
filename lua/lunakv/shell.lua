-- lunakv.shell - a minimal line shell over a db: SET, GET, DELETE, SCAN,
-- STATS, HELP, EXIT (command words in any case; keys keep theirs).
-- A placeholder: the full shell (quoting, Lua evaluation, history) is a
-- later issue. Answers go to stdout, errors to stderr; an error does not
-- end the session.

local M = {}

local HELP = [[
SET key value    write value (the rest of the line, spaces included)
GET key          print the value, or (nil)
DELETE key       delete key
SCAN lo hi       print "key<TAB>value" for lo <= key <= hi (- = open end)
STATS            print the store's statistics
EXIT             close the db and leave (also QUIT, or end of input)]]

-- Split a line into its blank-separated words. Pure: tested on its own.
function M.split(line)
  local words = {}
  for w in line:gmatch("%S+") do words[#words + 1] = w end
  return words
end

-- The text after the first n words of line, leading blanks removed.
function M.rest(line, n)
  local pos = 1
  for _ = 1, n do
    local _, e = line:find("^%s*%S+", pos)
    if not e then return "" end
    pos = e + 1
  end
  return (line:sub(pos):gsub("^%s+", ""))
end

local function format_stats(st)
  local keys, out = {}, {}
  for k in pairs(st) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local v = st[k]
    if type(v) == "table" then
      local parts = {}
      for i, x in ipairs(v) do parts[i] = "L" .. (i - 1) .. "=" .. x end
      v = table.concat(parts, " ")
    elseif math.type(v) == "float" then
      v = string.format("%.3f", v)
    end
    out[#out + 1] = k .. ": " .. tostring(v)
  end
  return table.concat(out, "\n")
end

local function need(words, n, usage)
  if #words ~= n then error("lunakv: usage: " .. usage, 0) end
end

-- Execute one line against db. Returns the text to print (or nil) and
-- true when the shell should stop. Raises on errors.
function M.execute(db, line)
  local words = M.split(line)
  if #words == 0 then return nil end
  local cmd = words[1]:upper()
  if cmd == "SET" then
    if #words < 3 then error("lunakv: usage: SET key value", 0) end
    db:set(words[2], M.rest(line, 2))
    return "OK"
  elseif cmd == "GET" then
    need(words, 2, "GET key")
    local v = db:get(words[2])
    return v == nil and "(nil)" or v
  elseif cmd == "DELETE" or cmd == "DEL" then
    need(words, 2, "DELETE key")
    db:delete(words[2])
    return "OK"
  elseif cmd == "SCAN" then
    need(words, 3, "SCAN lo hi")
    local lo = words[2] ~= "-" and words[2] or nil
    local hi = words[3] ~= "-" and words[3] or nil
    local out = {}
    for k, v in db:scan(lo, hi) do out[#out + 1] = k .. "\t" .. v end
    if #out == 0 then return nil end
    return table.concat(out, "\n")
  elseif cmd == "STATS" then
    need(words, 1, "STATS")
    return format_stats(db:stats())
  elseif cmd == "HELP" then
    return HELP
  elseif cmd == "EXIT" or cmd == "QUIT" then
    return nil, true
  end
  error("lunakv: unknown command '" .. words[1]
    .. "' (commands: SET, GET, DELETE, SCAN, STATS, HELP, EXIT)", 0)
end

-- Read lines from input until EXIT or its end. Prompts only when asked
-- (a terminal). Returns when done; the caller closes db.
function M.loop(db, input, output, errout, prompt)
  while true do
    if prompt then
      output:write(prompt)
      output:flush()
    end
    local line = input:read("l")
    if line == nil then
      if prompt then output:write("\n") end
      return
    end
    local ok, text, done = pcall(M.execute, db, line)
    if not ok then
      local msg = tostring(text)
      errout:write(msg:match("lunakv: .*") or ("lunakv: " .. msg), "\n")
    else
      if text then output:write(text, "\n") end
      if done then return end
    end
    output:flush()
  end
end

-- `lunakv shell [DIR]`: returns true, or raises a lunakv error.
function M.main(args)
  local lunakv = require "lunakv"
  local opts, info = lunakv.config.load()
  for _, w in ipairs(info.warnings) do
    io.stderr:write("lunakv: warning: ", w, "\n")
  end
  local dir = args[1] or opts.data_dir
  local db <close> = lunakv.open(dir, opts)
  local tty = os.execute("test -t 0 && test -t 1") == true
  if tty then
    io.stderr:write(lunakv._VERSION, " shell on ", dir,
      " (HELP for commands, EXIT to leave)\n")
  end
  M.loop(db, io.stdin, io.stdout, io.stderr, tty and "lunakv> " or nil)
  db:close()
  return true
end

return M
