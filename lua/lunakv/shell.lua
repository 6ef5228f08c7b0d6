-- lunakv.shell - the interactive shell: commands (SET, GET, SCAN, ...) and
-- Lua at the same prompt, in the manner of lua.c: a line whose first word
-- is not a command runs as Lua with `db` in scope, compiled as
-- `return <line>` first and then as a statement, and a chunk cut short at
-- <eof> asks for more lines. Line editing and history only on a terminal;
-- from a pipe the shell prints nothing but its answers.
--
--   M.tokenize(line)        the pure tokeniser (lunakv.shell.tokenize)
--   M.show(s)               how keys and values are printed
--   M.pretty(...)           how Lua results are printed (both
--                           lunakv.shell.format)
--   M.new(db, opts)         a session object; sh:handle(line) runs one line
--   M.run(db, opts)         the read-eval-print loop over stdin
--
-- The commands themselves are lunakv.shell.commands; `lunakv shell`
-- (opening the db or connecting to a node) is lunakv.cmd.shell. Over
-- HTTP (`lunakv shell --url URL`) `db` is a lunakv.remote client
-- (set/get/delete/scan/stats), STATUS shows the node's replication
-- state, and the commands with no HTTP route (SNAPSHOT, BATCH, FLUSH,
-- ...) say so and change nothing.
--
-- Answers go to stdout, errors to stderr as one line; an error never ends
-- the session. See HELP or README.md for every command.

local tokenize = require "lunakv.shell.tokenize"
local format = require "lunakv.shell.format"
local commands = require "lunakv.shell.commands"

local M = {}

-- The pieces a script or a spec may want on their own.
M.tokenize, M.words = tokenize.tokenize, tokenize.words
M.quote, M.show, M.pretty = format.quote, format.show, format.pretty
M.human_bytes = format.human_bytes
M.help_text, M.command_names = commands.help_text, commands.command_names

-- {======================================================================
-- Sessions: one line at a time
-- =======================================================================

local Shell = {}
Shell.__index = Shell

-- The reader GET, SCAN and COUNT use: the pinned snapshot if any. The
-- commands (lunakv.shell.commands) reach the session through these
-- methods and its fields (db, snap, batch, remote, env).
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
-- function the line called, a lunakv/shell/ line in a command. The shell
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
    self:answer(format.pretty(table.unpack(r, 2, r.n)))
  else
    self.out:flush()
  end
  return true
end

-- Is the first word of line a command? Returns its definition.
local function command_of(toks)
  local first = toks[1]
  if not first or first.quoted then return nil end
  local second = toks[2]
  return commands.lookup(first.text, second and not second.quoted
    and second.text or "")
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
    local toks, err, more = tokenize.tokenize(text)
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
      local first, second = text:match("^[ \t]*([^ \t\"']+)[ \t]*(%a*)")
      if first and commands.lookup(first, second) then
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
    for _, name in ipairs(commands.command_names()) do
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

-- }======================================================================

return M
