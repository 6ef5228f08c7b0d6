-- tools/procs.lua - the child processes a bench script starts (lunakv
-- nodes, etcd members, client loops), shared by tools/bench_cluster.lua
-- and tools/bench_failover.lua. A process is a table with the pid that
-- core.spawn returned; loaded with dofile beside the script.

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

return M
