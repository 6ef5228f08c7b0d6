-- tools/procs.lua - the child processes a bench script starts (lunakv
-- nodes, etcd members, redis-server, client loops) and what starting them
-- needs (free ports, a program's path, waiting with a deadline, the
-- benches' command line), shared by tools/bench_cluster.lua,
-- bench_failover.lua, bench_scripting.lua and nemesis.lua. A process is a
-- table with the pid that core.spawn returned; loaded with dofile beside
-- the script.

local core = require "lunakv.core"

local M = {}

-- Whether p still runs. A child's pid stays ours until it is reaped
-- (core.pid_alive reaps it); then its number may go to another process,
-- so p.pid is cleared and p is never signalled again.
function M.alive(p)
  if not p.pid then return false end
  if not core.pid_alive(p.pid) then p.pid = nil end
  return p.pid ~= nil
end

-- Stop every process of procs: SIGTERM, SIGKILL to those still running
-- after 10 s, then up to 5 s more for them to be gone.
function M.stop(procs)
  for _, p in ipairs(procs) do
    if M.alive(p) then core.kill(p.pid, "TERM") end
  end
  local deadline = core.clock() + 10
  for _, p in ipairs(procs) do
    while M.alive(p) and core.clock() < deadline do core.sleep(0.05) end
    if M.alive(p) then core.kill(p.pid, "KILL") end
  end
  for _, p in ipairs(procs) do
    local d = core.clock() + 5
    while M.alive(p) and core.clock() < d do core.sleep(0.05) end
  end
end

-- s quoted for sh: the only shell strings the tools build are rm -rf of
-- their own temporary directory and the like.
function M.shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- The full path of a program in PATH, or nil.
function M.which(name)
  for d in (os.getenv("PATH") or "/usr/bin:/bin"):gmatch("[^:]+") do
    local p = d .. "/" .. name
    local f = io.open(p, "rb")
    if f then
      f:close()
      return p
    end
  end
  return nil
end

-- Poll fn (every 0.1 s) until it returns true; fn returns false and why
-- while it is not ready. Raises "lunakv: WHAT not ready within T s: why"
-- at the deadline.
function M.wait_for(what, timeout, fn)
  local deadline = core.clock() + timeout
  while true do
    local ok, why = fn()
    if ok then return true end
    if core.clock() > deadline then
      error(string.format("lunakv: %s not ready within %d s: %s", what,
        timeout, tostring(why)), 0)
    end
    core.sleep(0.1)
  end
end

-- Distinct random ports in 20000..32000 (below Linux's ephemeral range)
-- on which nothing accepts connections now. Another process may take one
-- before we listen on it: a caller whose server cannot listen picks again.
function M.free_ports(n)
  local f = assert(io.open("/dev/urandom", "rb"))
  local ports, seen = {}, {}
  while #ports < n do
    local p = 20000 + string.unpack("<I4", f:read(4)) % 12001
    if not seen[p] then
      seen[p] = true
      local ok, err = pcall(core.http_request, "GET",
        "http://127.0.0.1:" .. p .. "/health", nil, nil, 500)
      if not ok and tostring(err):find("connection refused", 1, true) then
        ports[#ports + 1] = p
      end
    end
  end
  f:close()
  return ports
end

-- A bench script's command line: --json (sets o.json), and for each
-- option of opts, { "name", default, "LETTER", whole = true when it must
-- be a whole number }, --name V with V a positive number, kept as
-- o[name] (its dashes as underscores). Raises "lunakv: ..." for anything
-- else, listing the options in their order.
function M.parse_args(argv, opts)
  local o, key, whole, usage = {}, {}, {}, {}
  for _, opt in ipairs(opts) do
    local flag = "--" .. opt[1]
    key[flag], whole[flag] = opt[1]:gsub("-", "_"), opt.whole
    o[key[flag]] = opt[2]
    usage[#usage + 1] = flag .. " " .. opt[3]
  end
  usage[#usage + 1] = "--json"
  local i = 1
  while argv[i] do
    local a = argv[i]
    if a == "--json" then
      o.json = true
    elseif key[a] then
      local v = tonumber(argv[i + 1])
      if not v or v <= 0 then
        error("lunakv: " .. a .. " needs a positive number", 0)
      end
      if whole[a] then
        v = math.tointeger(v)
        if not v then error("lunakv: " .. a .. " takes a whole number", 0) end
      end
      o[key[a]] = v
      i = i + 1
    else
      error("lunakv: unknown argument '" .. a .. "' ("
        .. table.concat(usage, ", ") .. ")", 0)
    end
    i = i + 1
  end
  return o
end

-- The 1-minute load average (/proc/loadavg), as text ("?" when there is
-- none): a bench shares the machine, and a busy one moves its figures.
function M.loadavg()
  local f = io.open("/proc/loadavg", "rb")
  if not f then return "?" end
  local l = f:read("l") or "?"
  f:close()
  return l:match("^(%S+)") or "?"
end

return M
