-- lunakv.shell.tokenize - how the shell splits a line into words: blanks
-- separate them, "double quotes" take escapes, 'single quotes' are
-- literal. Pure functions, tested on their own (spec/10-shell_spec.lua).

local M = {}

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

return M
