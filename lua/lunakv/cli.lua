-- lunakv.cli - the `lunakv` command: maps subcommands to the modules that
-- run them (loaded only when used) and turns their outcome into an exit
-- code: 0 ok, 1 an expected failure (one "lunakv: ..." line on stderr),
-- 2 a usage error, 99 a bug (traceback and a request to report it).

local M = {}

local USAGE = [==[
usage: lunakv [COMMAND [ARGS...]]

commands:
  shell [DIR]          open the shell on DIR (default: DATA_DIR or ./data)
  run FILE [ARGS...]   run the Lua script FILE, with require "lunakv"
                       available and arg[0] = FILE, arg[1..] = ARGS
  help                 show this help
  version              print the version

options:
  -h, --help           show this help
  -v, --version        print the version

With no command, lunakv opens the shell. Settings come from defaults, a .env
file in the current directory, then environment variables (see
lua/lunakv/config.lua for every key).
]==]

M.USAGE = USAGE

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
  return (("lunakv: " .. msg):gsub("\n", " "))
end
M.one_line = one_line

local function version_string()
  local ok, lunakv = pcall(require, "lunakv")
  if ok then return lunakv._VERSION .. " (" .. _VERSION .. ")" end
  return nil, lunakv
end

local function usage_error(msg)
  io.stderr:write("lunakv: ", msg, "\n", USAGE)
  return 2
end

-- The subcommands. run(args, argv) gets the words after the command name
-- (and the whole original arg table) and returns true, or nil and a message
-- (an expected failure, exit 1), or 2 and a message (a usage error).
local commands = {}

commands.shell = {
  run = function(args)
    if #args > 1 then return 2, "shell takes at most one DIR" end
    return require("lunakv.shell").main(args)
  end,
}

commands.run = {
  -- A script's own errors are reported like lua5.4 does: message and
  -- traceback, exit 1 (they are the script's, not lunakv's, bugs).
  script = true,
  run = function(args, argv)
    local file = args[1]
    if not file then return 2, "run needs a FILE" end
    local chunk, err = loadfile(file)
    if not chunk then return nil, err end
    -- arg as the standalone interpreter builds it: the script at 0, its
    -- arguments at 1.., everything before it (interpreter, bin/lunakv,
    -- "run") at negative indices
    local newarg, first = {}, 0
    while argv[first - 1] ~= nil do first = first - 1 end
    for i = first, #argv do newarg[i - 2] = argv[i] end
    _G.arg = newarg
    chunk(table.unpack(args, 2))
    return true
  end,
}

local function print_version()
  local v, err = version_string()
  if not v then
    io.stderr:write("lunakv: cannot load the lunakv module: ",
      tostring(err):gsub("\n.*", ""), "\n")
    return 1
  end
  io.stdout:write(v, "\n")
  return 0
end

-- Run a subcommand under xpcall and turn what happened into an exit code.
local function dispatch(cmd, args, argv)
  local tb
  local ok, res, msg = xpcall(cmd.run, function(e)
    if not is_lunakv_error(e) then
      tb = debug.traceback(tostring(e), 2)
      if cmd.script then
        -- the frames below the script are this file's: leave them out
        tb = tb:gsub("\n[^\n]*lunakv/cli%.lua:.*$", "")
      end
    end
    return e
  end, args, argv)
  if ok then
    if res == 2 then return usage_error(msg) end
    if res or msg == nil then return 0 end
    io.stderr:write(one_line("lunakv: " .. tostring(msg)), "\n")
    return 1
  end
  if is_lunakv_error(res) then
    io.stderr:write(one_line(res, cmd.script), "\n")
    return 1
  end
  if cmd.script then
    io.stderr:write("lunakv: ", tb or tostring(res), "\n")
    return 1
  end
  io.stderr:write("lunakv: internal error: ", tb or tostring(res), "\n",
    "lunakv: this is a bug; please report it with the lines above\n")
  return 99
end

-- main(argv) -> exit code. argv is the script's `arg` table.
function M.main(argv)
  argv = argv or {}
  local name = argv[1]
  if name == nil then name = "shell" end
  if name == "-h" or name == "--help" or name == "help" then
    io.stdout:write(USAGE)
    return 0
  elseif name == "-v" or name == "--version" or name == "version" then
    return print_version()
  end
  local cmd = commands[name]
  if not cmd then
    if name:sub(1, 1) == "-" then
      return usage_error("unknown option '" .. name .. "'")
    end
    return usage_error("unknown command '" .. name .. "'")
  end
  local args = {}
  for i = 2, #argv do args[#args + 1] = argv[i] end
  if not cmd.script and (args[1] == "-h" or args[1] == "--help") then
    io.stdout:write(USAGE)
    return 0
  end
  return dispatch(cmd, args, argv)
end

return M
