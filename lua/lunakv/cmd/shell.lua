-- lunakv.cmd.shell - `lunakv shell [DIR]` and `lunakv shell --url URL`:
-- open the database (or reach the node), run the shell's loop
-- (lunakv.shell) on it, close. The default command.

local M = {}

M.summary = "Open the shell on a data directory (the default command)."
M.description = "Open the shell on a data directory: SET, GET, SCAN, ... "
  .. "and Lua with `db` in scope.\nType HELP in the shell for its "
  .. "commands. From a pipe it prints only the\nanswers: printf 'SET a "
  .. "1\\nGET a\\n' | lunakv shell DIR"

function M.add_to_parser(c)
  c:argument("dir", "Data directory (default: DATA_DIR, else ./data).")
    :args("?")
  c:option("--url", "Talk to a running node over HTTP instead "
    .. "(e.g. http://127.0.0.1:8000): the same commands, plus STATUS.")
    :argname("<url>")
  c:flag("--read-only", "Open the database without changing it (a "
    .. "shared lock,\nno WAL cut): reads work, writes are refused. For a "
    .. "copy, a read-only\nmedium, or a database other readers have open.")
end

-- A node over HTTP has settings of its own: only a local db reads ours.
function M.settings(args)
  return args.url == nil
end

-- `lunakv shell [DIR]`: open the db, run the loop, close. opts: the
-- engine options (the settings layers' table), info: their sources.
-- Returns true, or nil and a message (exit 1).
local function local_shell(dir, opts, info)
  local lunakv = require "lunakv"
  local core = require "lunakv.core"
  for _, w in ipairs(info and info.warnings or {}) do
    io.stderr:write("lunakv: warning: ", w, "\n")
  end
  dir = dir or opts.data_dir
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
  local sh = require("lunakv.shell").run(db, { dir = dir, info = info,
    lunakv = lunakv, tty = tty, core = core })
  db:close()
  if not tty and sh.errors > 0 then
    return nil, string.format("%d command(s) failed", sh.errors)
  end
  return true
end

-- `lunakv shell --url URL`: the loop over HTTP. Fails (exit 1) when the
-- node does not answer GET /health; after that, a failed request is one
-- error line and the session goes on.
local function remote_shell(url)
  local lunakv = require "lunakv"
  local core = require "lunakv.core"
  local remote = require "lunakv.remote"
  local base, why = remote.base_url(url)
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
  local sh = require("lunakv.shell").run(node, { remote = base,
    lunakv = lunakv, tty = tty, core = core })
  if not tty and sh.errors > 0 then
    return nil, string.format("%d command(s) failed", sh.errors)
  end
  return true
end

-- Returns true, or nil and a message, or 2 (lunakv.cli's EXIT_USAGE) and
-- a message.
function M.run(args, opts, info)
  if args.url then
    if args.dir then
      return 2, "shell: give a data directory or --url, not both"
    end
    return remote_shell(args.url)
  end
  if args.read_only then opts.read_only = true end
  return local_shell(args.dir, opts, info)
end

return M
