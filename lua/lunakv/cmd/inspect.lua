-- lunakv.cmd.inspect - `lunakv inspect DIR [--count]`: what a database
-- holds, read without changing it (the work is lunakv.inspect).

local M = {}

M.summary = "Show what a database holds, without changing it."
M.description = "Open DIR read-only (nothing on disk changes: safe on a "
  .. "copy or a read-only\nmedium) and print its sequence number, its "
  .. "tables level by level with their\nkey ranges, and what the WAL "
  .. "replay found."

function M.add_to_parser(c)
  c:argument("dir", "The database directory."):argname("<dir>")
  c:flag("--count", "Also count the live keys (reads the whole database).")
end

function M.run(args)
  return require("lunakv.inspect").main(args)
end

return M
