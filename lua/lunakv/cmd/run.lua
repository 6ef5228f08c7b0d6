-- lunakv.cmd.run - `lunakv run FILE [ARGS]`: a Lua script with
-- require "lunakv" available, its arguments passed through untouched.

local M = {}

M.summary = "Run a Lua script with lunakv available."
M.description = "Run the Lua script FILE with require \"lunakv\" "
  .. "available; arg[0] is FILE and\narg[1..] its ARGS (passed through "
  .. "untouched, options included)."

-- A script's own errors are reported like lua5.4 does: message and
-- traceback, exit 1 (they are the script's, not lunakv's, bugs).
M.script = true

function M.add_to_parser(c)
  c:handle_options(false)
  c:argument("file", "The script to run."):argname("<file>")
  c:argument("args", "Arguments for the script."):args("*")
    :argname("<args>")
end

-- The traceback of a script's error is cut at this function's frame
-- (lunakv.cli), so the script must be called from here, as `chunk`.
function M.run(args, _, _, argv)
  local file = args.file
  local chunk, err = loadfile(file)
  if not chunk then return nil, err end
  -- arg as the standalone interpreter builds it: the script at 0, its
  -- arguments at 1.., everything before it (interpreter, bin/lunakv,
  -- options, "run") at negative indices
  local at = 1
  while argv[at] ~= nil and argv[at] ~= "run" do at = at + 1 end
  local newarg, first = {}, 0
  while argv[first - 1] ~= nil do first = first - 1 end
  for i = first, #argv do newarg[i - at - 1] = argv[i] end
  _G.arg = newarg
  chunk(table.unpack(args.args or {}))
  return true
end

return M
