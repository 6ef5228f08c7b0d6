-- spec/helpers.lua - what the lunakv specs share: package paths for the
-- uninstalled module, temporary directories, file surgery (flip a byte,
-- truncate), child processes (spawn, kill, wait) and polling with a
-- deadline. Specs run from the repository root; each one loads this file
-- with `local h = require "spec.helpers"`.

local M = {}

-- ---- paths -------------------------------------------------------------

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
M.quote = shell_quote

-- All that is left to read of f (a file or a pipe), which is then closed.
local function drain(f)
  local s = f:read("a")
  f:close()
  return s
end

local function capture(cmd) return drain(assert(io.popen(cmd, "r"))) end

M.root = capture("pwd"):gsub("\n$", "")
M.lua = "lua5.4"
M.build = os.getenv("LUNAKV_BUILD") or "build"

local function under_root(p)
  if p:sub(1, 1) == "/" then return p end
  return M.root .. "/" .. p
end
M.build_dir = under_root(M.build)
M.bin = M.root .. "/bin/lunakv"
-- the shell words that run bin/lunakv (append its arguments)
M.lunakv_cmd = M.lua .. " " .. shell_quote(M.bin)

if not package.path:find("./lua/?.lua;", 1, true) then
  package.path = "./lua/?.lua;./lua/?/init.lua;" .. package.path
end
do
  local c = (M.build:sub(1, 1) == "/" and "" or "./") .. M.build .. "/?.so;"
  if not package.cpath:find(c, 1, true) then
    package.cpath = c .. package.cpath
  end
end

-- Lua source that gives a child interpreter the same module paths, as
-- absolute paths so the child may run from any directory.
M.prelude = string.format(
  "package.path = %q .. package.path; package.cpath = %q .. package.cpath\n",
  M.root .. "/lua/?.lua;" .. M.root .. "/lua/?/init.lua;",
  M.build_dir .. "/?.so;")

-- ---- files -------------------------------------------------------------

function M.read_file(path) return drain(assert(io.open(path, "rb"))) end

function M.write_file(path, data)
  local f = assert(io.open(path, "wb"))
  assert(f:write(data))
  assert(f:close())
end

function M.file_size(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local n = f:seek("end")
  f:close()
  return n
end

function M.exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

-- XOR the byte at 0-based `offset` with 0xFF, in place.
function M.flip_byte(path, offset)
  local f = assert(io.open(path, "r+b"))
  assert(f:seek("set", offset))
  local b = assert(f:read(1), "offset past the end of " .. path)
  assert(f:seek("set", offset))
  assert(f:write(string.char(b:byte() ~ 0xFF)))
  assert(f:close())
end

-- Keep the first n bytes of path.
function M.truncate(path, n)
  local data = M.read_file(path)
  assert(n <= #data, "truncate past the end of " .. path)
  M.write_file(path, data:sub(1, n))
end

-- Names (not paths) of the entries of dir matching the Lua pattern, sorted.
function M.list(dir, pattern)
  local out = {}
  local p = assert(io.popen("ls -1A " .. shell_quote(dir) .. " 2>/dev/null"))
  for name in p:lines() do
    if not pattern or name:match(pattern) then out[#out + 1] = name end
  end
  p:close()
  table.sort(out)
  return out
end

function M.rm_rf(path)
  assert(path and #path > 1 and path ~= "/", "refusing to remove " ..
    tostring(path))
  os.execute("rm -rf " .. shell_quote(path))
end

-- A fresh directory under /tmp; M.cleanup() removes every one made.
local made = {}
function M.tmpdir()
  local d = capture("mktemp -d /tmp/lunakv-spec.XXXXXX"):gsub("\n$", "")
  assert(d:match("^/tmp/lunakv%-spec%."), "mktemp failed")
  made[#made + 1] = d
  return d
end

-- The fixture of most describe blocks: before each test a fresh M.tmpdir()
-- is handed to set (which keeps it, and may open a db in it); after each,
-- M.cleanup() closes what M.open opened and removes every dir made.
function M.tmpdir_each(set)
  local busted = require "busted"
  busted.before_each(function() set(M.tmpdir()) end)
  busted.after_each(function() M.cleanup() end)
end

-- ---- processes ---------------------------------------------------------

-- ---- databases ---------------------------------------------------------

local opened = {}

-- lunakv.open, with the db closed by M.cleanup() (a spec's after_each),
-- whatever state the test left it in.
function M.open(dir, opts)
  local db = require("lunakv").open(dir, opts)
  opened[#opened + 1] = db
  return db
end

-- The values of the keys in the db at dir, read by opening it and closing
-- it again (what a process that has ended left there). The close must
-- succeed: it frees the lock for the next open.
function M.stored(dir, ...)
  local db = M.open(dir)
  local n, out = select("#", ...), {}
  for i = 1, n do out[i] = db:get((select(i, ...))) end
  db:close()
  return table.unpack(out, 1, n)
end

local procs = {} -- pid -> popen handle (its close reaps the process)

-- Start `cmd` (a shell command line) in the background with its output
-- going to files. Returns the pid of the command itself (sh execs it) and
-- a table { pid, out = stdout path, err = stderr path }.
function M.spawn(cmd, outdir)
  outdir = outdir or M.tmpdir()
  local out = outdir .. "/spawn-" .. tostring(#made) .. "-" ..
    tostring(os.time()) .. "-" .. tostring(math.random(1e9))
  local err = out .. ".err"
  out = out .. ".out"
  local line = "echo $$; exec " .. cmd .. " </dev/null >" .. shell_quote(out)
    .. " 2>" .. shell_quote(err)
  local handle = assert(io.popen(line, "r"))
  local pid = tonumber(handle:read("l"))
  assert(pid, "spawn: no pid from the shell")
  procs[pid] = handle
  return pid, { pid = pid, out = out, err = err }
end

-- Send signal sig (a name like "KILL" or a number; default TERM) to pid.
function M.kill(pid, sig)
  os.execute(string.format("kill -%s %d 2>/dev/null", tostring(sig or "TERM"),
    pid))
end

-- Reap a spawned process (blocks until it has exited). Returns the
-- popen-close results: ok, "exit"/"signal", code.
function M.wait(pid)
  local handle = procs[pid]
  if not handle then return nil end
  procs[pid] = nil
  -- the handle's stdout holds only the pid line, already read
  return handle:close()
end

-- Run a shell command to completion. Returns exit code, stdout, stderr.
function M.run(cmd)
  local errf = os.tmpname()
  local p = assert(io.popen("(" .. cmd .. ") 2>" .. shell_quote(errf), "r"))
  local out = p:read("a")
  local _, how, code = p:close()
  local err = M.read_file(errf)
  os.remove(errf)
  if how == "signal" then code = 128 + code end
  return code, out, err
end

-- Assert that a command ended with exit code want and that its stderr
-- matches pattern; code, out, err: what M.run (or a spec's wrapper of it)
-- returned. Returns err.
function M.assert_exit(want, pattern, code, _, err)
  local luassert = require "luassert"
  luassert.equal(want, code, err)
  luassert.matches(pattern, err)
  return err
end

-- Run bin/lunakv with args (shell words, redirections allowed) in dir;
-- env: assignments ("K=V K2=V2") for its environment, optional. Returns
-- exit code, stdout, stderr.
function M.lunakv_in(dir, args, env)
  return M.run("cd " .. shell_quote(dir) .. " && "
    .. (env and (env .. " ") or "") .. M.lunakv_cmd .. " " .. args)
end

-- Sleep a little, between polls (Lua has no sleep of its own).
function M.sleep(seconds)
  os.execute("sleep " .. tostring(seconds))
end

-- Poll fn until it returns a truthy value (returned) or timeout seconds
-- pass (then raise, with what(), when given, in the message).
function M.wait_until(fn, timeout, what)
  timeout = timeout or 10
  local deadline = os.time() + timeout
  local delay = 0.005
  while true do
    local v = fn()
    if v then return v end
    if os.time() > deadline then
      error("wait_until: timed out after " .. timeout .. " s" ..
        (what and (": " .. tostring(what())) or ""), 2)
    end
    M.sleep(delay)
    delay = math.min(delay * 2, 0.1)
  end
end

-- Kill and reap every process spawned and remove every tmpdir made.
function M.cleanup()
  for i = #opened, 1, -1 do -- before their directories go
    pcall(opened[i].close, opened[i])
    opened[i] = nil
  end
  for pid in pairs(procs) do
    M.kill(pid, "KILL")
    M.wait(pid)
  end
  for i = #made, 1, -1 do
    M.rm_rf(made[i])
    made[i] = nil
  end
end

-- Pids of the live processes whose command line mentions s (e.g. a data
-- dir: the nodes a test started there).
function M.pids_under(s)
  local out = {}
  for _, name in ipairs(M.list("/proc", "^%d+$")) do
    local f = io.open("/proc/" .. name .. "/cmdline", "rb")
    local cmd = f and drain(f) or ""
    if cmd:find(s, 1, true) and require("lunakv.core").pid_alive(tonumber(name)) then
      out[#out + 1] = tonumber(name)
    end
  end
  return out
end

-- The complete lines (each ending in "\n") of a string, as a list; text
-- after the last "\n" is left out.
function M.lines_of(s)
  local out = {}
  for l in s:gmatch("([^\n]*)\n") do out[#out + 1] = l end
  return out
end

-- Complete lines (ending in "\n") of a file; a torn last line is left out.
function M.lines(path)
  local f = io.open(path, "rb")
  if not f then return {} end
  return M.lines_of(drain(f))
end

-- s as a Lua pattern that matches s itself (every punctuation escaped).
function M.plain(s)
  return (s:gsub("%p", "%%%0"))
end

-- ---- lunakv-specific ---------------------------------------------------

M.lunakv = require "lunakv"

-- The i-th key of the specs' usual key space: "key000042".
function M.key(i)
  return string.format("key%06d", i)
end

-- A deterministic value for key k, of about n bytes.
function M.value_for(k, n)
  local base = "value-of-" .. k .. ";"
  n = n or #base
  return (base:rep(n // #base + 1)):sub(1, math.max(n, #base))
end

-- The WAL records of a log file: { {offset=, len=, size=}, ... } where
-- offset is where the 8-byte header starts and size = 8 + len.
function M.wal_records(path)
  local data = M.read_file(path)
  local recs, pos = {}, 1
  while pos + 8 <= #data + 1 do
    local _, len = string.unpack("<I4I4", data, pos)
    if pos + 8 + len > #data + 1 then break end
    recs[#recs + 1] = { offset = pos - 1, len = len, size = 8 + len }
    pos = pos + 8 + len
  end
  return recs, #data
end

-- The footer of an .sst: filter_offset, filter_size, index_offset,
-- index_size (see c/engine/sst_format.md).
function M.sst_footer(path)
  local data = M.read_file(path)
  local f = #data - 56 + 1
  local filter_off, filter_size, index_off, index_size =
    string.unpack("<I8I8I8I8", data, f)
  return { filter_offset = filter_off, filter_size = filter_size,
           index_offset = index_off, index_size = index_size,
           footer_offset = #data - 56, size = #data }
end

-- Set keys 1..n (M.key) to "old"..i, pin a snapshot, then delete the even
-- keys and set the odd ones to "new"..i. Returns the snapshot, which still
-- sees every old value.
function M.snapshot_then_rewrite(db, n)
  for i = 1, n do db:set(M.key(i), "old" .. i) end
  local s = db:snapshot()
  for i = 1, n do
    if i % 2 == 0 then db:delete(M.key(i)) else db:set(M.key(i), "new" .. i) end
  end
  return s
end

-- Assert that no two tables of a level >= 1 of db overlap (where, when
-- given, heads the message). Returns how many tables those levels hold.
function M.assert_levels_disjoint(db, where)
  local by_level = {}
  for _, t in ipairs(db:tables()) do
    if t.level >= 1 then
      by_level[t.level] = by_level[t.level] or {}
      table.insert(by_level[t.level], t)
    end
  end
  local n = 0
  for level, ts in pairs(by_level) do
    table.sort(ts, function(a, b) return a.smallest < b.smallest end)
    for i = 2, #ts do
      require("luassert").is_true(ts[i - 1].largest < ts[i].smallest,
        (where and (where .. ": ") or "") .. string.format(
        "L%d tables %d [%q..%q] and %d [%q..%q] overlap", level,
        ts[i - 1].number, ts[i - 1].smallest, ts[i - 1].largest,
        ts[i].number, ts[i].smallest, ts[i].largest))
    end
    n = n + #ts
  end
  return n
end

-- Every (k, v) of an iterator-style scan as an array of pairs.
function M.collect(iterfn, ...)
  local out = {}
  for k, v in iterfn(...) do out[#out + 1] = { k, v } end
  return out
end

-- The entries of t under the keys of like, as a new table (compared with
-- like, it checks those keys and no others).
function M.pick(t, like)
  local out = {}
  for k in pairs(like) do out[k] = t[k] end
  return out
end

-- The error text of a failed pcall, or nil when fn succeeded.
function M.error_of(fn, ...)
  local ok, e = pcall(fn, ...)
  if ok then return nil end
  return tostring(e)
end

math.randomseed(os.time())

return M
