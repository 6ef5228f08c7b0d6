-- spec/22-cluster_cli_spec.lua - `lunakv cluster up|status|down`: real node
-- processes on 127.0.0.1, on random ports from 20000 to 32000 (below the
-- ephemeral range) so parallel runs do not collide, in a temporary
-- directory. Every process a test starts is stopped after it, also when
-- the test fails: the after_each kills whatever still runs from the
-- test's directory.

local h = require "spec.helpers"
local core = require "lunakv.core"
local cjson = require "cjson"
local hh = require "spec.http_helpers"

-- A base port from /dev/urandom (math.random is seeded with the second:
-- parallel runs would collide), so that base .. base + span stays below
-- 32000.
local function random_base(span)
  return 20000 + (hh.pick_ports(1)[1] - 20000) % (12000 - span)
end

local LUNAKV = h.lunakv_cmd

local pids_under = h.pids_under

local function cluster(cmd)
  return h.run(LUNAKV .. " cluster " .. cmd)
end

-- `cluster up N` on a random base port, retried on another one when a
-- port was taken. Returns code, out, err, base port.
local function up(n, dir, extra)
  local code, out, err, base
  for _ = 1, 10 do
    base = random_base(n)
    code, out, err = cluster(string.format("up %d --base-port %d --dir %s %s",
      n, base, h.quote(dir), extra or ""))
    if code == 0 or not (err:find("cannot listen", 1, true)
        or err:find("is already in use", 1, true)) then
      break
    end
  end
  return code, out, err, base
end

-- A random base port whose base + 1 this process holds: listening (as
-- another server would) or only bound (free-looking, yet no node can
-- listen there). Returns the base and the socket to close.
local function hold_port(listen)
  local socket = require "socket"
  for _ = 1, 20 do
    local base = random_base(1000)
    if listen then
      local srv = socket.bind("127.0.0.1", base + 1)
      if srv then return base, srv end
    else
      local sock = socket.tcp()
      if sock:bind("127.0.0.1", base + 1) then return base, sock end
      sock:close()
    end
  end
  error("no free port found in 20 tries")
end

describe("lunakv cluster #cluster", function()
  local dir
  before_each(function() dir = h.tmpdir() .. "/cl" end)
  after_each(function()
    for _ = 1, 2 do
      for _, pid in ipairs(pids_under(dir)) do core.kill(pid, "KILL") end
      h.wait_until(function() return #pids_under(dir) == 0 end, 10)
    end
    h.cleanup()
  end)

  it("starts 3 nodes that agree on a leader, shows them, and stops them", function()
    local code, out, err, base = up(3, dir)
    assert.equal(0, code, err)
    local leader = "http://127.0.0.1:" .. base
    assert.matches("cluster of 3 nodes up in " .. dir:gsub("%p", "%%%0")
      .. ", leader " .. leader:gsub("%p", "%%%0"), out)
    for i = 0, 2 do
      assert.matches("http://127.0.0.1:" .. (base + i) .. " +%a+ +pid %d+", out)
    end

    local rec = cjson.decode(h.read_file(dir .. "/cluster.json"))
    assert.equal(3, #rec.nodes)
    assert.equal(leader, rec.leader)
    for _, n in ipairs(rec.nodes) do
      assert.is_true(core.pid_alive(math.tointeger(n.pid)), n.url)
      assert.is_true(h.exists(n.log))
    end

    code, out = cluster("status --dir " .. h.quote(dir))
    assert.equal(0, code)
    assert.matches("3 of 3 nodes answer", out)
    local leaders, followers = 0, 0
    for line in out:gmatch("[^\n]+") do
      if line:match("^http://127%.0%.0%.1:%d+ +%d+ +up +leader ") then
        leaders = leaders + 1
      elseif line:match("^http://127%.0%.0%.1:%d+ +%d+ +up +follower ") then
        followers = followers + 1
      end
    end
    assert.same({ 1, 2 }, { leaders, followers })

    -- a second up on the same directory refuses and starts nothing
    local _
    code, _, err = cluster("up 3 --base-port " .. (base + 10) .. " --dir "
      .. h.quote(dir))
    assert.equal(1, code)
    assert.matches("a cluster is already running from", err)
    assert.equal(3, #pids_under(dir))

    -- so does one elsewhere on ports this cluster holds: its nodes would
    -- die, and this cluster's answers pass for theirs
    local dir2 = dir .. "-2"
    code, out, err = cluster("up 2 --base-port " .. (base + 2) .. " --dir "
      .. h.quote(dir2))
    assert.equal(1, code)
    assert.equal("", out)
    assert.matches("lunakv: port " .. (base + 2) .. " is already in use "
      .. "%(something accepts connections on 127%.0%.0%.1:" .. (base + 2)
      .. "%); stop it or choose another %-%-base%-port", err)
    assert.equal(0, #pids_under(dir2))
    assert.is_false(h.exists(dir2 .. "/cluster.json"))
    assert.equal(3, #pids_under(dir))

    code, out = cluster("down --dir " .. h.quote(dir))
    assert.equal(0, code)
    assert.matches("stopped 3 nodes", out)
    for _, n in ipairs(rec.nodes) do
      assert.is_false(core.pid_alive(math.tointeger(n.pid)), n.url)
    end
    assert.equal(0, #pids_under(dir))
    assert.is_false(h.exists(dir .. "/cluster.json"))
    -- the nodes stopped cleanly (SIGTERM, not SIGKILL)
    assert.matches("stopped cleanly", h.read_file(rec.nodes[1].log))
  end)

  it("status marks a killed node as stopped", function()
    -- started with a relative --dir and a stale $PWD: the record holds
    -- the real directory
    local parent = dir:match("^(.*)/[^/]+$")
    local code, err
    for _ = 1, 10 do
      local base = random_base(2)
      code, _, err = h.run("cd " .. h.quote(parent) .. " && PWD=/nonexistent "
        .. LUNAKV .. " cluster up 2 --base-port " .. base .. " --dir cl")
      if code == 0 or not (err:find("cannot listen", 1, true)
          or err:find("is already in use", 1, true)) then
        break
      end
    end
    assert.equal(0, code, err)
    local rec = cjson.decode(h.read_file(dir .. "/cluster.json"))
    local _, real = h.run("cd " .. h.quote(parent) .. " && pwd -P")
    assert.equal(real:gsub("\n$", "") .. "/cl", rec.dir)
    assert.equal(rec.dir .. "/node0", rec.nodes[1].dir)
    local pid = math.tointeger(rec.nodes[2].pid)
    core.kill(pid, "KILL")
    h.wait_until(function() return not core.pid_alive(pid) end, 10)
    local out
    code, out = cluster("status --dir " .. h.quote(dir))
    assert.equal(0, code)
    assert.matches("1 of 2 nodes answer", out)
    assert.matches(rec.nodes[2].url:gsub("%p", "%%%0") .. " +" .. pid
      .. " +stopped", out)
    code, out = cluster("down --dir " .. h.quote(dir))
    assert.equal(0, code)
    assert.matches("stopped 1 node\n", out)
  end)

  -- The argument list of a running process, from /proc.
  local function cmdline(pid)
    local parts = {}
    for part in h.read_file("/proc/" .. pid .. "/cmdline"):gmatch("[^%z]+") do
      parts[#parts + 1] = part
    end
    return parts
  end

  local function answers(url)
    return (pcall(core.http_request, "GET", url .. "/health", nil, nil, 1000))
  end

  -- Kill node i of the record with SIGKILL and start it again by hand
  -- with the same arguments (from another directory, when cwd is given,
  -- with its data dir relative to it); wait until it answers. Returns the
  -- new pid.
  local function restart_by_hand(rec, i, cwd)
    local node = rec.nodes[i]
    local pid = math.tointeger(node.pid)
    local argv = cmdline(pid)
    core.kill(pid, "KILL")
    h.wait_until(function() return not core.pid_alive(pid) end, 10)
    h.wait_until(function() return not answers(node.url) end, 10)
    for k, a in ipairs(argv) do
      if cwd and a == node.dir then
        argv[k] = node.dir:sub(#cwd + 2)
      end
      argv[k] = h.quote(argv[k])
    end
    local cmd = table.concat(argv, " ")
    if cwd then
      cmd = "sh -c " .. h.quote("cd " .. h.quote(cwd) .. " && exec " .. cmd)
    end
    local npid = h.spawn(cmd)
    h.wait_until(function() return answers(node.url) end, 20,
      function() return node.url .. " does not answer" end)
    return npid
  end

  it("down stops a node that was restarted by hand, or keeps cluster.json",
    function()
      local code, _, err = up(3, dir)
      assert.equal(0, code, err)
      local rec = cjson.decode(h.read_file(dir .. "/cluster.json"))
      restart_by_hand(rec, 2)
      local out
      code, out = cluster("status --dir " .. h.quote(dir))
      assert.equal(0, code)
      assert.matches("3 of 3 nodes answer", out)
      assert.matches(rec.nodes[2].url:gsub("%p", "%%%0") .. " +%d+ +up "
        .. "%(not ours%)", out)

      code, out, err = cluster("down --dir " .. h.quote(dir))
      local left = {}
      for _, n in ipairs(rec.nodes) do
        if answers(n.url) then left[#left + 1] = n.url end
      end
      -- the rule: nothing answers afterwards, or down fails and keeps
      -- the record that lets it try again
      if code == 0 then
        assert.same({}, left)
        assert.is_false(h.exists(dir .. "/cluster.json"))
      else
        assert.is_true(h.exists(dir .. "/cluster.json"))
        assert.matches(left[1]:gsub("%p", "%%%0"), err)
      end
      -- and what it does here: it finds the node by its data dir
      assert.equal(0, code, err)
      assert.matches("^stopped 3 nodes %(node1 restarted by hand: pid %d+%)\n",
        out)
      assert.equal(0, #pids_under(dir))
    end)

  it("down refuses to forget a node it cannot match, naming its URL",
    function()
      local code, _, err = up(2, dir)
      assert.equal(0, code, err)
      local rec = cjson.decode(h.read_file(dir .. "/cluster.json"))
      -- started from the cluster's parent with a relative data dir: its
      -- command line does not hold the recorded one
      local parent = dir:match("^(.*)/[^/]+$")
      local npid = restart_by_hand(rec, 2, parent)
      local out
      code, out, err = cluster("down --dir " .. h.quote(dir))
      assert.equal(1, code)
      assert.matches("^stopped 1 node\n", out)
      assert.matches("^lunakv: " .. rec.nodes[2].url:gsub("%p", "%%%0")
        .. " %(node1%) still answers", err)
      assert.matches("cluster%.json kept\n$", err)
      assert.is_true(h.exists(dir .. "/cluster.json"))
      assert.is_true(answers(rec.nodes[2].url))
      -- stopped by hand, the next down forgets the cluster
      h.kill(npid, "TERM")
      h.wait(npid)
      code, out, err = cluster("down --dir " .. h.quote(dir))
      assert.equal(0, code, err)
      assert.equal("stopped 0 nodes\n", out)
      assert.is_false(h.exists(dir .. "/cluster.json"))
    end)

  -- `cluster up 3` on a base port whose base + 1 this process holds
  -- (hold_port), let go after; it must fail, print nothing on stdout and
  -- leave no node running and no record. Returns its stderr and the base.
  local function up_fails_on_held_port(listen)
    local base, sock = hold_port(listen)
    local code, out, err = cluster(string.format("up 3 --base-port %d --dir %s",
      base, h.quote(dir)))
    sock:close()
    assert.equal(1, code)
    assert.equal("", out)
    assert.equal(0, #pids_under(dir))
    assert.is_false(h.exists(dir .. "/cluster.json"))
    return err, base
  end

  it("refuses ports where something already listens, starting nothing", function()
    local err, base = up_fails_on_held_port(true)
    assert.matches("^lunakv: port " .. (base + 1) .. " is already in use", err)
    assert.is_false(h.exists(dir .. "/node0.log"))
  end)

  it("stops what it started and shows the log when a node fails", function()
    -- the second node's port is bound, not listening, by a socket outside
    -- the cluster: it looks free, and the node cannot listen there
    local err, base = up_fails_on_held_port(false)
    assert.matches("the last lines of " .. dir:gsub("%p", "%%%0")
      .. "/node1%.log", err)
    assert.matches("cannot listen on 127%.0%.0%.1:" .. (base + 1), err)
    -- seen in its log or at its exit, whichever comes first
    assert.matches("lunakv: node1 %(http://127%.0%.0%.1:" .. (base + 1)
      .. "%) [^\n]*", err)
    assert.is_truthy(err:find("exited during start-up", 1, true)
      or err:find("cannot listen on port " .. (base + 1), 1, true))
  end)

  it("refuses bad arguments and a missing record", function()
    local missing = "no cluster recorded: .*cluster%.json does not exist"
    h.assert_exit(1, missing, cluster("status --dir " .. h.quote(dir)))
    h.assert_exit(1, missing, cluster("down --dir " .. h.quote(dir)))
    h.assert_exit(2, "N must be an integer from 1 to 64",
      cluster("up 0 --dir " .. h.quote(dir)))
    h.assert_exit(2, "%-%-base%-port must be an integer from 1 to 65535",
      cluster("up --base-port 70000 --dir " .. h.quote(dir)))
    h.assert_exit(2, "a command is required", cluster(""))
  end)
end)
