-- lunakv.cli - the `lunakv` command: a table from subcommand to module,
-- in the manner of luarocks' cmd/. The arguments are parsed with
-- lua-argparse; each subcommand is the module lunakv.cmd.<name>, loaded
-- here, whose run loads what does the work only when it is used. This
-- file owns what the commands share: the settings flags and their
-- layers, --help and --version, and the exit code: 0 ok, 1 an expected
-- failure (one "lunakv: ..." line on stderr), 2 a usage error (one line
-- and the usage), 99 a bug (traceback and a request to report it).
--
-- A command module has: summary (its line in the command list),
-- description (its help's text; default the summary), add_to_parser(c, h)
-- (its arguments and options; h.help_flag and h.config_options add ours),
-- settings (true, or f(args) -> boolean: the settings layers are loaded
-- before run, and the command takes -c/-s), script (true: errors are the
-- script's, reported as lua5.4 does), and run(args, opts, info, argv)
-- returning true, or nil and a message, or EXIT_USAGE and a message.
--
-- Settings, lowest priority first: built-in defaults < .env in the
-- working directory (or the file given by --config) < environment
-- variables < --set KEY=VALUE flags.

local M = {}

local EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_BUG = 0, 1, 2, 99
M.EXIT_OK, M.EXIT_FAIL, M.EXIT_USAGE, M.EXIT_BUG =
  EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_BUG

-- The subcommands, in the order the help lists them; `help` and
-- `version` are this file's own.
local COMMANDS = { "shell", "bench", "node", "cluster", "inspect", "run" }

local EPILOG = [[
With no command, lunakv opens the shell on DATA_DIR (default ./data).
Settings, lowest priority first: built-in defaults < .env in the current
directory (or --config FILE) < environment variables < --set KEY=VALUE.
`lunakv help COMMAND` shows a command's options.]]

-- {======================================================================
-- Messages
-- =======================================================================

-- Does this error come from lunakv (an expected failure, not a bug)?
local function is_lunakv_error(e)
  return type(e) == "string" and e:find("lunakv: ", 1, true) ~= nil
end

-- "x.lua:3: lunakv: bad thing" -> "lunakv: x.lua:3: bad thing", or with
-- keep_where false (the position is inside lunakv) "lunakv: bad thing".
local function one_line(e, keep_where)
  local s = e:find("lunakv: ", 1, true)
  local where = e:sub(1, s - 1):gsub("%s+$", "")
  local msg = e:sub(s + #"lunakv: ")
  if where ~= "" and keep_where then
    if not where:find(":$") then where = where .. ":" end
    msg = where .. " " .. msg
  end
  return (("lunakv: " .. msg):gsub("\n.*", ""))
end
M.one_line = one_line

local function version_string()
  local ok, lunakv = pcall(require, "lunakv")
  if ok then return lunakv._VERSION .. " (" .. _VERSION .. ")" end
  return nil, lunakv
end

-- }======================================================================

-- {======================================================================
-- The parser
-- =======================================================================

-- argparse's own --help and --version print and call os.exit. Ours note
-- what was asked and stop the parse with this marker, so main() returns
-- an exit code like every other path.
local SIGNAL = "\0lunakv-cli-signal\0"

-- The settings flags, on the main parser (target prefix "global_") and
-- on each command that opens a db.
local function add_config_options(p, prefix)
  prefix = prefix or ""
  p:option("-c --config", "Read settings from FILE (.env format) instead of "
    .. "./.env.")
    :argname("<file>"):target(prefix .. "config")
  p:option("-s --set", "Set KEY=VALUE over every other layer (KEY as in "
    .. ".env, e.g. MAX_MEMTABLE_SIZE, or lower case); repeatable.")
    :argname("<key=value>"):count("*"):target(prefix .. "set")
end

-- Build the parser. Returns it and the table of command parsers by name,
-- and a state table the --help/--version actions fill in.
local function build_parser()
  local argparse = require "argparse"
  local state = {}
  local function help_flag(p)
    p:flag("-h --help", "Show this help and exit.")
      :action(function()
        state.help = p
        error(SIGNAL, 0)
      end)
  end

  local p = argparse("lunakv",
    "lunakv: an LSM-tree key-value store in C, scripted from Lua 5.4.")
    :add_help(false):require_command(false):command_target("command")
    :epilog(EPILOG):help_max_width(79)
  help_flag(p)
  p:flag("-v --version", "Print the version and exit.")
    :action(function()
      state.version = true
      error(SIGNAL, 0)
    end)
  add_config_options(p, "global_")

  local cmds = {}
  local function command(name, summary, description)
    local c = p:command(name, description or summary):summary(summary)
      :add_help(false)
    help_flag(c)
    cmds[name] = c
    return c
  end

  local helpers = { help_flag = help_flag,
    config_options = add_config_options }
  for _, name in ipairs(COMMANDS) do
    local mod = require("lunakv.cmd." .. name)
    local c = command(name, mod.summary, mod.description)
    mod.add_to_parser(c, helpers)
    -- a command that reads the settings takes the flags that set them
    if mod.settings then add_config_options(c) end
  end

  local help = command("help", "Show the help of a command.")
  help:argument("name", "The command."):args("?"):argname("<command>")

  command("version", "Print the version.")
  return p, cmds, state
end

-- argparse takes every word that starts with '-' for an option, so in
-- `bench -n -5` it reports "unknown option '-5'" instead of handing -5 to
-- --num, whose converter names the range. Before the parse, a negative
-- number is attached to the option before it when that option's
-- converter checks ranges (config.range_checked: config.int_arg and its
-- kin) (`--num=-5`, `-n-5`: argparse's own spellings); one where such an
-- argument is expected (`cluster up -5 --dir D`) goes, with the
-- positional words after it, behind a "--" at the end (`cluster up --dir
-- D -- -5`), where argparse takes words as they are. Options and
-- arguments whose converters do not check ranges are left as they were.
-- The parsers are read, not changed; the words after `run` (the
-- script's) and after a "--" of the user's are left alone.
local function is_negative_number(s)
  return s:match("^%-%.?%d") ~= nil
end

local function attach_negative_numbers(list, p)
  local path = { p } -- the parsers of the commands named so far
  local function option_of(name)
    for i = #path, 1, -1 do
      for _, o in ipairs(path[i]._options or {}) do
        for _, alias in ipairs(o._aliases or {}) do
          if alias == name then return o end
        end
      end
    end
    return nil
  end
  local function command_of(name)
    for _, c in ipairs(path[#path]._commands or {}) do
      for _, alias in ipairs(c._aliases or {}) do
        if alias == name then return c end
      end
    end
    return nil
  end
  local checked = require("lunakv.config").range_checked
  -- does the command being parsed take a range-checked argument?
  local function checked_argument()
    for _, a in ipairs(path[#path]._arguments or {}) do
      if a._convert and checked[a._convert] then return true end
    end
    return false
  end
  local out, tail, i = {}, nil, 1
  while i <= #list do
    local a = list[i]
    if a == "--" or path[#path]._handle_options == false then
      if tail then -- the user's "--": the rest are positional words too
        table.move(list, i + (a == "--" and 1 or 0), #list, #tail + 1, tail)
      else
        table.move(list, i, #list, #out + 1, out)
      end
      break
    end
    local o = a:sub(1, 1) == "-" and not a:find("=", 1, true)
      and option_of(a)
    local takes_value = o and (o._maxargs or 0) > 0 and list[i + 1] ~= nil
    if takes_value and is_negative_number(list[i + 1])
        and o._convert and checked[o._convert] then
      out[#out + 1] = a:sub(1, 2) == "--" and (a .. "=" .. list[i + 1])
        or (a .. list[i + 1])
      i = i + 2
    elseif takes_value then
      out[#out + 1], out[#out + 2] = a, list[i + 1]
      i = i + 2
    elseif o or (a:sub(1, 1) == "-" and not is_negative_number(a)) then
      out[#out + 1] = a -- a flag, or argparse says what it makes of it
      i = i + 1
    elseif tail or (is_negative_number(a) and checked_argument()) then
      tail = tail or {}
      tail[#tail + 1] = a
      i = i + 1
    else
      local c = command_of(a)
      if c then path[#path + 1] = c end
      out[#out + 1] = a
      i = i + 1
    end
  end
  if tail then
    out[#out + 1] = "--"
    table.move(tail, 1, #tail, #out + 1, out)
  end
  return out
end
M.attach_negative_numbers = attach_negative_numbers

-- }======================================================================

-- {======================================================================
-- Settings
-- =======================================================================

-- defaults < .env (or --config) < environment < --set, global flags
-- first. Returns opts, info; raises "lunakv: ..." on a bad file or value,
-- or returns nil, message, true when a flag was wrong (a usage error).
local function load_config(args)
  local config = require "lunakv.config"
  local file = args.config or args.global_config
  local opts, info
  if file and config.is_directory(file) then
    return nil, "--config " .. file .. ": a directory, not a file of "
      .. "KEY=VALUE lines", true
  end
  if file then
    opts, info = config.load_file(file)
  else
    opts, info = config.load()
  end
  local settings = {}
  for _, s in ipairs(args.global_set or {}) do settings[#settings + 1] = s end
  for _, s in ipairs(args.set or {}) do settings[#settings + 1] = s end
  local ok, err = pcall(config.override, opts, info, settings, "--set")
  if not ok then return nil, err, true end
  return opts, info
end
M.load_config = load_config

-- }======================================================================

-- {======================================================================
-- Running a command
-- =======================================================================

-- Does cmd read the settings layers for these arguments?
local function wants_settings(cmd, args)
  if type(cmd.settings) == "function" then return cmd.settings(args) end
  return cmd.settings == true
end

-- The settings (when the command reads them), then the command itself.
-- Returns what the command's run returns: true, or nil and a message
-- (exit 1), or EXIT_USAGE and a message.
local function run_command(cmd, args, argv)
  local opts, info
  if wants_settings(cmd, args) then
    local usage
    opts, info, usage = load_config(args)
    if not opts then
      if usage then return EXIT_USAGE, info:gsub("^lunakv: ", "") end
      return nil, info
    end
  end
  return cmd.run(args, opts, info, argv)
end

local function print_version()
  local v, err = version_string()
  if not v then
    io.stderr:write("lunakv: cannot load the lunakv module: ",
      (tostring(err):gsub("\n.*", "")), "\n")
    return EXIT_FAIL
  end
  io.stdout:write(v, "\n")
  return EXIT_OK
end

-- Run a subcommand under xpcall and turn what happened into an exit code.
local function dispatch(cmd, args, argv, usage_of)
  local tb
  local ok, res, msg = xpcall(run_command, function(e)
    if not is_lunakv_error(e) then
      tb = debug.traceback(tostring(e), 2)
      if cmd.script then
        -- the frames below the script are lunakv's own: leave them out
        tb = tb:gsub("\n[^\n]*lunakv/cmd/run%.lua:.*$", "")
      end
    end
    return e
  end, cmd, args, argv)
  if ok then
    if res == EXIT_USAGE then
      io.stderr:write("lunakv: ", msg, "\n", usage_of(), "\n")
      return EXIT_USAGE
    end
    if res or msg == nil then return EXIT_OK end
    io.stderr:write(one_line("lunakv: " .. tostring(msg):gsub("^lunakv: ", "")), "\n")
    return EXIT_FAIL
  end
  if is_lunakv_error(res) then
    io.stderr:write(one_line(res, cmd.script), "\n")
    return EXIT_FAIL
  end
  if cmd.script then
    io.stderr:write("lunakv: ", tb or tostring(res), "\n")
    return EXIT_FAIL
  end
  io.stderr:write("lunakv: internal error: ", tb or tostring(res), "\n",
    "lunakv: this is a bug; please report it with the lines above\n")
  return EXIT_BUG
end

-- The parser of the command named in argv (for a usage line), or p.
local function parser_for(argv, p, cmds)
  for i = 1, #argv do
    if cmds[argv[i]] then return cmds[argv[i]] end
  end
  return p
end

-- main(argv) -> exit code. argv is the script's `arg` table.
function M.main(argv)
  argv = argv or {}
  local list = {}
  for i = 1, #argv do list[i] = argv[i] end
  local p, cmds, state = build_parser()
  list = attach_negative_numbers(list, p)
  local pok, ok, res = pcall(p.pparse, p, list)
  if not pok then
    if state.help then
      io.stdout:write(state.help:get_help(), "\n")
      return EXIT_OK
    elseif state.version then
      return print_version()
    end
    error(ok, 0) -- a bug in the parser set-up
  end
  if not ok then
    local where = parser_for(list, p, cmds)
    -- argparse may add a "Did you mean" line: one line is the rule
    io.stderr:write("lunakv: ", (tostring(res):gsub("\n.*", "")), "\n",
      where:get_usage(), "\n")
    return EXIT_USAGE
  end
  local args = res
  local name = args.command or "shell"
  if name == "help" then
    if not args.name then
      io.stdout:write(p:get_help(), "\n")
      return EXIT_OK
    end
    local c = cmds[args.name]
    if not c then
      io.stderr:write("lunakv: help: unknown command '", args.name, "'\n",
        p:get_usage(), "\n")
      return EXIT_USAGE
    end
    io.stdout:write(c:get_help(), "\n")
    return EXIT_OK
  elseif name == "version" then
    return print_version()
  elseif name == "run" and (args.file == "-h" or args.file == "--help") then
    io.stdout:write(cmds.run:get_help(), "\n") -- options are not parsed
    return EXIT_OK                               -- after `run`
  end
  return dispatch(require("lunakv.cmd." .. name), args, argv, function()
    return (cmds[name] or p):get_usage()
  end)
end

return M
