-- tools/nemesis.lua - `make nemesis`: a lunakv cluster under random
-- faults while clients write and read through every node, then a check
-- of what the clients saw (issue 18, "Proof").
--
--   lua5.4 bin/lunakv run tools/nemesis.lua [--seconds N] [--seed S]
--       [--nodes 3|5] [--clients-per-node C] [--keep]
--
-- Method. N `lunakv node` processes on 127.0.0.1 (free ports, data in one
-- temporary directory, --write-timeout-ms 2000, otherwise the defaults).
-- C client processes per node (this script with --client), each sending
-- its requests to its own node only (a follower forwards writes and
-- consistent reads to the leader): one request at a time, a write
-- (POST /set) or a consistent read (GET /get?consistent=true of its own
-- or another client's key), each logged on one line with when it was
-- sent and when its answer came on the machine's monotonic clock
-- (core.clock(), which all processes share) and its outcome. The history
-- format, the workload's rules (one writer per key writing 1, 2, 3, ...;
-- a fresh key after an answer of unknown outcome) and what is checked
-- are in tools/nemesis_check.lua's header: no acknowledged write lost,
-- no stale, invented or future consistent read, reads never going back.
--
-- Meanwhile the fault loop, every 0.5 to 2.5 s, does one of (the seed
-- picks which, on which node, for how long):
--   kill      kill -9 a node (the leader half of the time), restarted on
--             its data 0.5 to 5 s later;
--   pause     SIGSTOP a node (the leader half of the time), SIGCONT 0.3 to
--             4 s later (longer than an election timeout, or not);
--   restart   SIGTERM a node (a leader hands over first), started again
--             0.2 to 2 s later;
--   membership
--             POST /remove_node through another node for a voter (the
--             leader half of the time: it hands over, then leaves),
--             retried on 409/503/no answer up to 6 times; once the
--             removed node says "member": false (or 15 s pass; at once
--             for a --join node, which would ask back in) it is stopped,
--             and once a majority of the others hold its removal (it is
--             removed again if it had asked back in; else it stays a
--             voter, not wiped) its directory is wiped; 0.5 to 5 s
--             later it starts again on its port with a fresh directory
--             and --join through an up node (restarts after that use
--             --join too); it is a target of the other faults again once
--             /health is 200 and its /status names it a voter (a
--             learner is promoted when caught up). Its clients meanwhile
--             see refused connections and 503s, which the check allows
--             (a write of unknown outcome or not written, a read
--             unanswered). The removal blocks the loop (timers wait);
--   transfer  POST /transfer_leader to a running node (a follower
--             forwards it) naming a random voter.
-- At most a minority of the nodes is down, paused or out of the
-- configuration at any time, so a majority could always serve. A fault is
-- a row of FAULTS: a weight and a function.
--
-- After --seconds: every paused node is resumed, every stopped one
-- restarted, every node out of the cluster joins again (and one that
-- says it is no member, a removal answered "outcome unknown" that took
-- effect later, is wiped and joins); every node must be a voter again;
-- the cluster must agree on a leader whose voters are exactly the nodes
-- (no learner) with every follower up, and a write must succeed after
-- that (liveness); then the clients stop, every node (a wiped and
-- re-joined one too) must reach the same log and applied index, and
-- each node's full plain scan (GET /scan) must equal the others'. That
-- state is the "final state" the history is checked against.
--
-- The seed is printed first. It fixes the fault schedule and the
-- clients' choices, not the timing of a real cluster, so a seed does not
-- replay a run exactly; it repeats its shape. A failure (a check, no
-- convergence, an error) prints the seed, the offending history lines and
-- the directory with every node's log and data and every client's
-- history, and leaves it; a success removes it (--keep keeps it).
--
-- The check fails when the node breaks: with c/net/routes.c answering
-- consistent reads from local state (the ReadIndex skipped) a 20 s run
-- reported hundreds of stale reads and a read going back; with
-- c/net/raftnode.c answering a write 200 as soon as it is proposed
-- (before it commits), over a thousand stale reads and 5 lost writes
-- (acknowledged, then cut from the log by the next leader). Its logic on
-- made-up histories is spec/27-nemesis_check_spec.lua, in `make test`.
-- Everything started is stopped at the end, on an error too. A make
-- target's script, not part of the installed module.

local core = require "lunakv.core"
local cjson = require "cjson"
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local procs = dofile(here .. "procs.lua")
local check = dofile(here .. "nemesis_check.lua")

local M = {}
local shell_quote, free_ports = procs.shell_quote, procs.free_ports

local function log(fmt, ...)
  io.stderr:write("nemesis: ", string.format(fmt, ...), "\n")
  io.stderr:flush()
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

local function urlencode(s)
  return (s:gsub("[^%w%-%._~]", function(c)
    return string.format("%%%02X", c:byte())
  end))
end

-- The outcome word of a request (tools/nemesis_check.lua's OUTCOME):
-- "200", "STATUS:error_words@PORT", or for no answer "timeout"/"error".
-- Returns it and the decoded body (nil when not JSON).
local function outcome_of(url, ok, status, answer)
  if not ok then
    return tostring(status):find("within", 1, true) and "timeout" or "error"
  end
  local dok, doc = pcall(cjson.decode, answer or "")
  if not dok or type(doc) ~= "table" then doc = nil end
  if status == 200 then return "200", doc end
  local why = doc and type(doc.error) == "string" and doc.error or "?"
  return string.format("%d:%s@%s", status, check.error_word(why),
    url:match("(%d+)$") or "?"), doc
end

-- {======================================================================
-- A client (--client): one request at a time, each logged
-- =======================================================================

local SLOTS = 2 -- keys a client writes at a time

-- Key "cID-SLOT-GEN": client ID's key in slot SLOT, its GEN-th (a slot
-- takes a fresh key after a write of unknown outcome).
local function key_name(id, slot, gen)
  return string.format("c%d-%d-%d", id, slot, gen)
end

-- A read value as one word of the history: the digits, "-" for not
-- found, anything else "?" and the text without blanks.
local function value_word(v)
  if v == nil or v == cjson.null then return "-" end
  v = tostring(v)
  if v:match("^%d+$") then return v end
  return "?" .. v:gsub("%s", "_"):sub(1, 40)
end

-- argv after --client: ID URL NCLIENTS OUT STOP SEED.
local function client_main(c, o)
  local id, url, nclients = c.id, c.url, c.nclients
  math.randomseed(c.seed)
  local out = assert(io.open(c.out, "wb"))
  out:setvbuf("line")
  local gen, nextv = {}, {}
  for s = 1, SLOTS do gen[s], nextv[s] = 0, 1 end
  local hdrs = { ["content-type"] = "application/json" }
  local deadline = core.clock() + o.seconds + 300
  local healthy, n = true, 0
  while core.clock() < deadline do
    n = n + 1
    if n % 16 == 0 and exists(c.stop) then break end
    if not healthy then
      -- after a request that got no answer: wait until the node answers
      -- again before sending anything, so a node that is down costs one
      -- key, not one per try
      healthy = pcall(core.http_request, "GET", url .. "/health", nil, nil,
        500)
      if not healthy then
        core.sleep(0.1)
        if exists(c.stop) then break end
      end
    elseif math.random() < 0.5 then
      local slot = math.random(SLOTS)
      local key, v = key_name(id, slot, gen[slot]), nextv[slot]
      local body = cjson.encode { key = key, value = tostring(v) }
      local sent = core.clock()
      local ok, status, answer = pcall(core.http_request, "POST",
        url .. "/set", body, hdrs, o.timeout_ms)
      local ended = core.clock()
      local outcome = outcome_of(url, ok, status, answer)
      out:write(string.format("W %d %s %d %.6f %.6f %s\n", id, key, v, sent,
        ended, outcome))
      if check.classify(outcome) == "unknown" then
        gen[slot], nextv[slot] = gen[slot] + 1, 1
      else
        nextv[slot] = v + 1
      end
      healthy = ok
      if outcome ~= "200" then core.sleep(0.05) end
    else
      local key
      if math.random() < 0.5 then
        local slot = math.random(SLOTS)
        key = key_name(id, slot, gen[slot])
      else
        -- another client's key, of a generation about as far as ours
        local top = 0
        for s = 1, SLOTS do top = math.max(top, gen[s]) end
        key = key_name(math.random(nclients), math.random(SLOTS),
          math.random(0, top + 1))
      end
      local sent = core.clock()
      local ok, status, answer = pcall(core.http_request, "GET",
        url .. "/get?consistent=true&key=" .. urlencode(key), nil, nil,
        o.timeout_ms)
      local ended = core.clock()
      local outcome, doc = outcome_of(url, ok, status, answer)
      local word = "-"
      if outcome == "200" then
        if doc and doc.value ~= nil and doc.value_encoding == nil then
          word = value_word(doc.value)
        else
          word = "?unreadable_answer"
        end
      end
      out:write(string.format("R %d %s %.6f %.6f %s %s\n", id, key, sent,
        ended, outcome, word))
      healthy = ok
      if outcome ~= "200" then core.sleep(0.05) end
    end
  end
  out:close()
  return 0
end

-- }======================================================================

-- {======================================================================
-- The cluster: nodes we start, kill, pause and restart ourselves
-- =======================================================================

local alive = procs.alive

-- GET url/path as JSON, or nil (never raises). A paused node is never
-- asked: it would not answer.
local function get_json(node, path, timeout_ms)
  if node.state ~= "up" or not alive(node) then return nil end
  local ok, status, body = pcall(core.http_request, "GET", node.url .. path,
    nil, nil, timeout_ms or 1000)
  if not ok or status ~= 200 then return nil end
  local dok, doc = pcall(cjson.decode, body)
  return dok and type(doc) == "table" and doc or nil
end

local function wait_for(what, timeout, fn, every)
  local deadline = core.clock() + timeout
  while true do
    local r = fn()
    if r then return r end
    if core.clock() > deadline then
      error(string.format("%s not within %g s", what, timeout), 0)
    end
    core.sleep(every or 0.05)
  end
end

-- A node that came back through the membership fault (node.join, the URL
-- it asked to add it) starts with --join and no NODE_URLS, a restart too
-- (a member restarted with --join asks nothing, docs/http_api.md); the
-- others with the founding NODE_URLS.
local function spawn_node(c, node, state)
  local argv = { c.interp, c.bin, "node", tostring(node.port), node.dir,
    c.urls[1], table.concat(c.urls, ","), "--write-timeout-ms", "2000" }
  if node.join then
    argv = { c.interp, c.bin, "node", tostring(node.port), node.dir,
      "--join", node.join, "--write-timeout-ms", "2000" }
  end
  local f = io.open(node.log, "ab")
  if f then
    f:write(os.date("!%Y-%m-%dT%H:%M:%SZ"), " nemesis: starting ", node.url,
      "\n")
    f:close()
  end
  node.pid = core.spawn(argv, node.log)
  node.state = state or "up"
end

-- The node that leads as its own /status says, or nil.
local function leader_of(c)
  for _, node in ipairs(c.nodes) do
    local st = get_json(node, "/status", 500)
    if st and st.role == "leader" then return node, st end
  end
  return nil
end

-- Whether list (a /status voters or learners array) holds url.
local function has(list, url)
  for _, u in ipairs(type(list) == "table" and list or {}) do
    if u == url then return true end
  end
  return false
end

-- Every node runs, answers and is a member, all name the same leader in
-- the same term, the leader's configuration is exactly c.urls as voters
-- (no learner: the membership fault takes nodes out and adds them back,
-- so the voters are not c.urls by themselves) and it sees every follower
-- up; returns the leader's /status.
local function agreed(c)
  local leader, term
  for _, node in ipairs(c.nodes) do
    local st = get_json(node, "/status")
    if not st or type(st.leader) ~= "string" or st.member == false then
      return nil
    end
    if leader and (st.leader ~= leader or st.term ~= term) then return nil end
    leader, term = st.leader, st.term
  end
  for _, node in ipairs(c.nodes) do
    if node.url == leader then
      local st = get_json(node, "/status")
      if not st or st.role ~= "leader" then return nil end
      if type(st.voters) ~= "table" or #st.voters ~= #c.urls
          or #(st.learners or {}) ~= 0 then
        return nil
      end
      for _, u in ipairs(c.urls) do
        if not has(st.voters, u) then return nil end
      end
      local up = {}
      for _, f in ipairs(st.followers or {}) do
        if f.state == "up" then up[f.url] = true end
      end
      for _, u in ipairs(c.urls) do
        if u ~= leader and not up[u] then return nil end
      end
      return st
    end
  end
  return nil
end

local function start_cluster(c, n)
  for _ = 1, 5 do
    local ports = free_ports(n)
    c.urls, c.nodes = {}, {}
    for i = 1, n do
      c.urls[i] = "http://127.0.0.1:" .. ports[i]
      c.nodes[i] = { i = i, url = c.urls[i], port = ports[i],
        dir = c.base .. "/node" .. i, log = c.base .. "/node" .. i .. ".log" }
    end
    for _, node in ipairs(c.nodes) do spawn_node(c, node) end
    local ok, err = pcall(wait_for, "an agreed leader", 30, function()
      return agreed(c)
    end)
    if ok then return end
    local taken = false
    for _, node in ipairs(c.nodes) do
      if require("lunakv.cluster").tail(node.log, 50):find("cannot listen",
          1, true) then
        taken = true
      end
    end
    procs.stop(c.nodes)
    if not taken then error(err, 0) end
    -- the next try starts afresh: its nodes must not open this try's logs
    -- (a term, entries of a cluster of other URLs) nor find its "cannot
    -- listen" in their log files and retry for that
    for _, node in ipairs(c.nodes) do
      os.execute("rm -rf -- " .. shell_quote(node.dir) .. " "
        .. shell_quote(node.log))
    end
    log("a port was taken: starting again on others")
  end
  error("no free ports after 5 tries", 0)
end

-- }======================================================================

-- {======================================================================
-- The faults
-- =======================================================================

local function uniform(a, b) return a + (b - a) * math.random() end

-- The nodes running and not paused.
local function up_nodes(c)
  local out = {}
  for _, node in ipairs(c.nodes) do
    if node.state == "up" then out[#out + 1] = node end
  end
  return out
end

local function faulty(c) return #c.nodes - #up_nodes(c) end

-- A node to hurt: the leader half of the time (when one is known), else
-- any node that runs.
local function victim(c)
  if math.random() < 0.5 then
    local l = leader_of(c)
    if l then return l, "leader" end
  end
  local ups = up_nodes(c)
  local v = ups[math.random(#ups)]
  local l = leader_of(c)
  return v, (l == v) and "leader" or "follower"
end

local function note(c, fmt, ...)
  local line = string.format("%.3f (+%.1f s) ", core.clock(),
    core.clock() - c.t0) .. string.format(fmt, ...)
  c.fault_log:write(line, "\n")
  c.fault_log:flush()
  log("%s", line)
end

local function later(c, at, fn) c.timers[#c.timers + 1] = { at = at, fn = fn } end

local function revive(c, node)
  if node.state == "paused" then
    core.kill(node.pid, "CONT")
    node.state = "up"
    note(c, "SIGCONT node%d", node.i)
  elseif node.state == "down" then
    spawn_node(c, node)
    note(c, "restarted node%d", node.i)
  end
end

-- {----------------------------------------------------------------------
-- The membership fault: a voter removed, stopped, wiped and added back.
-- While it is away its node's state is "out" (removed, the process
-- stopped and its directory wiped), then "joining" (running with --join
-- on a fresh directory, not yet a voter); it is "up" again, a target of
-- the other faults, once it serves (/health 200) and is a voter. Both
-- count as faulty (pick_fault), as the voter is missing.

local JSON = { ["content-type"] = "application/json" }

-- A request to url that never raises: status (nil on no answer), the
-- decoded body (nil when not JSON) and the text (or the error).
local function call(method, url, body, timeout_ms)
  local ok, status, text = pcall(core.http_request, method, url, body,
    body and JSON or nil, timeout_ms or 1000)
  if not ok then return nil, nil, tostring(status) end
  local dok, doc = pcall(cjson.decode, text or "")
  return status, dok and type(doc) == "table" and doc or nil, text
end

-- The configuration as the leader has it: its /status, or nil.
local function leader_conf(c)
  local _, st = leader_of(c)
  return st
end

local function one_line(s)
  return (tostring(s):gsub("%s+", " "):sub(1, 120))
end

-- Stop node's process: SIGTERM, SIGKILL after 10 s (a paused one is
-- never given to this).
local function stop_node(c, node)
  if alive(node) then core.kill(node.pid, "TERM") end
  local d = core.clock() + 10
  while alive(node) and core.clock() < d do core.sleep(0.01) end
  if alive(node) then
    core.kill(node.pid, "KILL")
    while alive(node) do core.sleep(0.005) end
    note(c, "node%d ignored SIGTERM for 10 s: killed", node.i)
  end
end

-- Start an "out" node again, fresh, with --join through an up node.
local function rejoin(c, node)
  local ups = up_nodes(c)
  local via = ups[math.random(#ups)]
  node.join = via.url
  spawn_node(c, node, "joining")
  node.join_deadline = core.clock() + 90
  note(c, "node%d started again with --join via node%d", node.i, via.i)
end

-- Whether a "joining" node is back: it serves (/health 200) and its own
-- /status names it a voter. Then it is "up".
local function joined(c, node)
  if node.state ~= "joining" then return node.state == "up" end
  local hs = call("GET", node.url .. "/health", nil, 500)
  if hs ~= 200 then return false end
  local code, st = call("GET", node.url .. "/status", nil, 500)
  if code ~= 200 or not st or st.member == false
      or not has(st.voters, node.url) then
    return false
  end
  node.state = "up"
  note(c, "node%d is a voter again", node.i)
  return true
end

-- A timer that checks a joining node every 0.2 s until it is up.
local function watch_join(c, node)
  later(c, core.clock() + 0.2, function()
    if joined(c, node) or node.state ~= "joining" then return end
    if core.clock() > node.join_deadline then
      error(string.format("node%d, started with --join, is not a voter "
        .. "within 90 s", node.i), 0)
    end
    watch_join(c, node)
  end)
end

-- Whether node's removal is in the logs of a majority of the other
-- nodes (a configuration takes effect when appended: the /status of a
-- node that has the entry leaves node out), so no leader can come
-- without it. A 200 says it applied on the leader; this is for when the
-- only sign was a leader's configuration ("not a member", or a look after
-- an unknown outcome), which may be an entry not yet committed: wiping a
-- voter whose removal is then lost would break Raft, not the node.
local function removal_durable(c, node)
  local n = 0
  for _, o in ipairs(up_nodes(c)) do
    if o ~= node then
      local st = get_json(o, "/status", 500)
      if st and type(st.voters) == "table" and not has(st.voters, node.url)
          and not has(st.learners, node.url) then
        n = n + 1
      end
    end
  end
  return n > (#c.nodes - 1) // 2
end

-- Take a removed node out: stop it, make sure its removal holds (a
-- --join node told it is no member asks to be added again, docs/
-- replication.md "Who is a member", so it may be back in the
-- configuration: removed again while it is stopped), then wipe its
-- directory: it is "out". When its removal cannot be made to hold, it
-- stays a voter with its data and is "down" (the caller restarts it):
-- wiping a voter would be the tool breaking Raft. Returns whether out.
local function take_out(c, node)
  stop_node(c, node)
  node.state = "down" -- not counted by removal_durable
  local body = cjson.encode { node_url = node.url }
  local again = 0
  for _ = 1, 8 do
    if removal_durable(c, node) then break end
    local st = leader_conf(c)
    if st and (has(st.voters, node.url) or has(st.learners, node.url)) then
      again = again + 1
      local ups = up_nodes(c)
      call("POST", ups[math.random(#ups)].url .. "/remove_node", body, 4000)
    end
    core.sleep(0.5)
  end
  if not removal_durable(c, node) then
    note(c, "node%d: its removal does not hold (removed again %d times): "
      .. "kept as a voter, not wiped", node.i, again)
    return false
  end
  if again > 0 then
    note(c, "node%d had asked to be added again: removed again (%d)",
      node.i, again)
  end
  os.execute("rm -rf -- " .. shell_quote(node.dir))
  node.state = "out"
  return true
end

local function membership(c)
  local node, role = victim(c)
  local t0 = core.clock()
  local body = cjson.encode { node_url = node.url }
  local removed, tries, last, acked = false, 0, "", false
  while tries < 6 and not removed do
    tries = tries + 1
    -- through another node when there is one (the victim forwards too)
    local ups, others = up_nodes(c), {}
    for _, u in ipairs(ups) do if u ~= node then others[#others + 1] = u end end
    local via = #others > 0 and others[math.random(#others)] or node
    local status, doc, text = call("POST", via.url .. "/remove_node", body,
      4000)
    last = string.format("via node%d: %s %s", via.i, tostring(status),
      one_line(text))
    if status == 200 then
      removed, acked = true, true
    elseif status == 400 and doc and type(doc.error) == "string"
        and doc.error:find("not a member", 1, true) then
      removed = true -- an earlier try's "outcome unknown" took effect
    else
      -- 409 (a change pending: a learner's promotion), 503 (no leader,
      -- not changed, outcome unknown), no answer: look, then try again
      core.sleep(0.5)
      local st = leader_conf(c)
      if st and type(st.voters) == "table" and not has(st.voters, node.url)
          and not has(st.learners, node.url) then
        removed = true
      end
    end
  end
  if removed and not acked then
    local d0 = core.clock() + 10
    while not removal_durable(c, node) and core.clock() < d0 do
      core.sleep(0.1)
    end
    if not removal_durable(c, node) then
      note(c, "remove_node node%d (%s): its removal is not on a majority "
        .. "of the others within 10 s (last %s): left running", node.i,
        role, last)
      return -- the heal takes it out and back if it is no member then
    end
  end
  if not removed then
    note(c, "remove_node node%d (%s): not removed after %d tries (last %s)",
      node.i, role, tries, last)
    return
  end
  -- a removed node keeps running, no member: wait until it says so (a
  -- removed leader hands over first), or exits, then stop it; a --join
  -- node is stopped at once (told it is no member, it asks back in)
  local said = node.join and "it runs with --join: stopped at once"
    or "it never said member false in 15 s"
  local d = core.clock() + 15
  while not node.join and core.clock() < d and alive(node) do
    local code, st = call("GET", node.url .. "/status", nil, 500)
    if code == 200 and st and st.member == false then
      said = "it said member false"
      break
    end
    core.sleep(0.1)
  end
  if not take_out(c, node) then
    local back = uniform(0.5, 5)
    later(c, core.clock() + back, function() revive(c, node) end)
    return
  end
  local back = uniform(0.5, 5)
  note(c, "remove_node node%d (%s): removed after %d tr%s in %.0f ms (%s); "
    .. "%s; stopped, wiped; joins again in %.1f s", node.i, role, tries,
    tries == 1 and "y" or "ies", (core.clock() - t0) * 1000, last, said,
    back)
  later(c, core.clock() + back, function()
    rejoin(c, node)
    watch_join(c, node)
  end)
end

-- }----------------------------------------------------------------------

-- FAULTS: { name, weight, fn(c) }. fn does one fault (it may schedule
-- its own end with later()) and returns nothing; it is called only while
-- fewer than a minority of the nodes is down or paused when it needs
-- `hurts` (takes a node away).
local FAULTS = {
  { name = "kill", weight = 3, hurts = true, fn = function(c)
    local node, role = victim(c)
    core.kill(node.pid, "KILL")
    while alive(node) do core.sleep(0.005) end
    node.state = "down"
    local back = uniform(0.5, 5)
    note(c, "kill -9 node%d (%s); restart in %.1f s", node.i, role, back)
    later(c, core.clock() + back, function() revive(c, node) end)
  end },
  { name = "pause", weight = 3, hurts = true, fn = function(c)
    local node, role = victim(c)
    core.kill(node.pid, "STOP")
    node.state = "paused"
    local back = uniform(0.3, 4)
    note(c, "SIGSTOP node%d (%s); SIGCONT in %.1f s", node.i, role, back)
    later(c, core.clock() + back, function() revive(c, node) end)
  end },
  { name = "restart", weight = 1, hurts = true, fn = function(c)
    local node, role = victim(c)
    core.kill(node.pid, "TERM")
    local d = core.clock() + 15
    while alive(node) and core.clock() < d do core.sleep(0.01) end
    if alive(node) then
      error(string.format("node%d did not stop within 15 s of SIGTERM",
        node.i), 0)
    end
    node.state = "down"
    local back = uniform(0.2, 2)
    note(c, "SIGTERM node%d (%s), exited; restart in %.1f s", node.i, role,
      back)
    later(c, core.clock() + back, function() revive(c, node) end)
  end },
  -- a voter (the leader too) removed, stopped, wiped and added back
  -- (membership above); before transfer, pick_fault's fallback row
  { name = "membership", weight = 1, hurts = true, fn = membership },
  { name = "transfer", weight = 2, fn = function(c)
    local ups = up_nodes(c)
    local via = ups[math.random(#ups)]
    local to = c.nodes[math.random(#c.nodes)]
    local t0 = core.clock()
    local ok, status, body = pcall(core.http_request, "POST",
      via.url .. "/transfer_leader", cjson.encode { node_url = to.url },
      { ["content-type"] = "application/json" }, 3000)
    note(c, "transfer_leader to node%d via node%d: %s in %.0f ms", to.i, via.i,
      ok and (tostring(status) .. " " .. tostring(body):gsub("%s+$", ""):sub(1, 80)) or
      tostring(status), (core.clock() - t0) * 1000)
  end },
}

local function pick_fault(c)
  local total, can_hurt = 0, faulty(c) < (#c.nodes - 1) // 2
  for _, f in ipairs(FAULTS) do
    if f.weight > 0 and (can_hurt or not f.hurts) then total = total + f.weight end
  end
  local x = math.random() * total
  for _, f in ipairs(FAULTS) do
    if f.weight > 0 and (can_hurt or not f.hurts) then
      x = x - f.weight
      if x <= 0 then return f end
    end
  end
  return FAULTS[#FAULTS]
end

-- }======================================================================

-- {======================================================================
-- The run
-- =======================================================================

local function start_clients(c, o)
  c.clients = {}
  c.stop_file = c.base .. "/stop-clients"
  local nclients = #c.nodes * o.clients_per_node
  for id = 1, nclients do
    local node = c.nodes[(id - 1) % #c.nodes + 1]
    local cl = { id = id, out = string.format("%s/client%d.history", c.base, id),
      log = string.format("%s/client%d.log", c.base, id) }
    cl.pid = core.spawn({ c.interp, c.bin, "run", c.script, "--client",
      tostring(id), node.url, tostring(nclients), cl.out, c.stop_file,
      tostring(o.seed * 1000 + id), "--timeout-ms", tostring(o.timeout_ms),
      "--seconds", tostring(o.seconds) }, cl.log)
    c.clients[id] = cl
  end
end

local function stop_clients(c)
  if not c.stop_file then return end
  local f = io.open(c.stop_file, "wb")
  if f then f:close() end
  local d = core.clock() + 20
  for _, cl in ipairs(c.clients or {}) do
    while alive(cl) and core.clock() < d do core.sleep(0.05) end
  end
  procs.stop(c.clients or {})
end

-- Whether a client has logged an acknowledged write sent after t.
local function write_acked_since(c, t)
  for _, cl in ipairs(c.clients) do
    local f = io.open(cl.out, "rb")
    if f then
      local size = f:seek("end")
      f:seek("set", math.max(0, size - 8192))
      local tail = f:read("a") or ""
      f:close()
      for s, o in tail:gmatch("\nW %S+ %S+ %S+ (%S+) %S+ (%S+)") do
        if o == "200" and tonumber(s) >= t then return true end
      end
    end
  end
  return false
end

-- Every pair of node's store (a plain scan, page by page) as one string
-- per pair, in order; nil when the node does not answer.
local function scan_all(node)
  local items, start = {}, nil
  for _ = 1, 100000 do
    local path = "/scan?limit=1000" .. (start and ("&start=" .. urlencode(start)) or "")
    local doc = get_json(node, path, 5000)
    if not doc then return nil end
    for _, it in ipairs(doc.items or {}) do
      if it.key_encoding or it.value_encoding then
        items[#items + 1] = { it.key, "?" .. tostring(it.value) }
      else
        items[#items + 1] = { it.key, it.value }
      end
    end
    if not doc.more or #(doc.items or {}) == 0 then return items end
    start = items[#items][1] .. "\0"
  end
  return nil
end

-- Wait until every node holds the same log and has applied all of it,
-- and their scans agree twice in a row; returns the state as { [key] =
-- value }. Raises with what differs when that does not happen in time.
local function converge(c, timeout)
  local last_diff = "no answer"
  local prev
  local ok, got = pcall(wait_for, "convergence", timeout, function()
    local idx
    for _, node in ipairs(c.nodes) do
      local st = get_json(node, "/status")
      if not st then last_diff = "node" .. node.i .. " does not answer" return nil end
      local mine = string.format("last %s commit %s applied %s",
        tostring(st.last_index), tostring(st.commit_index),
        tostring(st.applied_index))
      if st.last_index ~= st.applied_index then
        last_diff = "node" .. node.i .. ": " .. mine
        return nil
      end
      if idx and idx ~= st.applied_index then
        last_diff = string.format("node%d at %s, node1 at %s", node.i,
          tostring(st.applied_index), tostring(idx))
        return nil
      end
      idx = st.applied_index
    end
    local scans = {}
    for i, node in ipairs(c.nodes) do
      local items = scan_all(node)
      if not items then last_diff = "node" .. i .. " scan failed" return nil end
      local lines = {}
      for j, it in ipairs(items) do lines[j] = it[1] .. "=" .. it[2] end
      scans[i] = table.concat(lines, "\n")
      if i > 1 and scans[i] ~= scans[1] then
        local a, b = {}, {}
        for l in scans[1]:gmatch("[^\n]+") do a[l] = true end
        for l in scans[i]:gmatch("[^\n]+") do b[l] = true end
        local diff = {}
        for l in pairs(a) do if not b[l] then diff[#diff + 1] = "node1 only: " .. l end end
        for l in pairs(b) do if not a[l] then diff[#diff + 1] = "node" .. i .. " only: " .. l end end
        table.sort(diff)
        last_diff = "scans differ: " .. table.concat(diff, "; ", 1, math.min(#diff, 10))
        prev = nil
        return nil
      end
    end
    if prev ~= scans[1] then
      prev = scans[1]
      return nil -- once more: nothing may still be arriving
    end
    local state = {}
    for l in scans[1]:gmatch("[^\n]+") do
      local k, v = l:match("^([^=]*)=(.*)$")
      state[k] = v
    end
    return state
  end, 0.5)
  if not ok then error(tostring(got) .. ": " .. last_diff, 0) end
  return got
end

local function run(c, o, res)
  c.t0 = core.clock()
  c.timers = {}
  log("seed %d: %d nodes, %d clients, %d s of faults, in %s", o.seed, o.nodes,
    o.nodes * o.clients_per_node, o.seconds, c.base)
  start_cluster(c, o.nodes)
  log("nodes %s", table.concat(c.urls, " "))
  start_clients(c, o)
  wait_for("the clients' first acknowledged write", 30, function()
    return write_acked_since(c, 0)
  end)
  c.t0 = core.clock()
  local t_end = c.t0 + o.seconds
  local next_fault = c.t0 + uniform(0.5, 2.5)
  while core.clock() < t_end do
    local now = core.clock()
    for _, node in ipairs(c.nodes) do
      if node.state ~= "down" and node.state ~= "out" and not alive(node) then
        error(string.format("node%d exited on its own: %s", node.i,
          require("lunakv.cluster").tail(node.log, 10)), 0)
      end
    end
    for i = #c.timers, 1, -1 do
      if c.timers[i].at <= now then
        local t = table.remove(c.timers, i)
        t.fn()
      end
    end
    if now >= next_fault then
      local f = pick_fault(c)
      res.faults[f.name] = (res.faults[f.name] or 0) + 1
      f.fn(c)
      next_fault = core.clock() + uniform(0.5, 2.5)
    end
    core.sleep(0.02)
  end
  -- heal
  c.timers = {}
  for _, node in ipairs(c.nodes) do revive(c, node) end
  -- a node out of the cluster joins now; one left a non-member without
  -- the fault knowing (a removal answered "outcome unknown" that took
  -- effect later) goes out and joins too
  for _, node in ipairs(c.nodes) do
    if node.state == "up" then
      local code, st = call("GET", node.url .. "/status", nil, 1000)
      -- (a --join node asks back in by itself)
      if code == 200 and st and st.member == false and not node.join then
        note(c, "node%d is not a member at the heal: out and join", node.i)
        if not take_out(c, node) then revive(c, node) end
      end
    end
  end
  for _, node in ipairs(c.nodes) do
    if node.state == "out" then rejoin(c, node) end
  end
  wait_for("every node a voter again after healing", 120, function()
    local all = true
    for _, node in ipairs(c.nodes) do
      if node.state == "joining" and not alive(node) then
        error(string.format("node%d, started with --join, exited: %s",
          node.i, require("lunakv.cluster").tail(node.log, 10)), 0)
      end
      if not joined(c, node) then all = false end
    end
    return all
  end, 0.2)
  note(c, "healed: every node runs")
  wait_for("an agreed leader with every follower up after healing", 60,
    function() return agreed(c) end, 0.1)
  local t_healed = core.clock()
  wait_for("an acknowledged write after healing", 30, function()
    return write_acked_since(c, t_healed)
  end, 0.1)
  note(c, "a write was acknowledged after healing; stopping the clients")
  stop_clients(c)
  res.final = converge(c, 60)
  local f = assert(io.open(c.base .. "/final.state", "wb"))
  local keys = {}
  for k in pairs(res.final) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do f:write(k, " ", res.final[k], "\n") end
  f:close()
  note(c, "converged: %d keys on every node", (function()
    local n = 0
    for _ in pairs(res.final) do n = n + 1 end
    return n
  end)())
end

local function parse_args(argv)
  local o = { seconds = 60, nodes = 3, clients_per_node = 2,
    timeout_ms = 5000 }
  local i = 1
  local flags = { ["--seconds"] = { "seconds", 1, 86400 },
    ["--seed"] = { "seed", 0, 2147483647 }, ["--nodes"] = { "nodes", 3, 5 },
    ["--clients-per-node"] = { "clients_per_node", 1, 16 },
    ["--timeout-ms"] = { "timeout_ms", 100, 600000 } }
  while argv[i] do
    local a = argv[i]
    if a == "--client" then -- internal: ID URL NCLIENTS OUT STOP SEED
      o.client = { id = math.tointeger(tonumber(argv[i + 1])),
        url = argv[i + 2], nclients = math.tointeger(tonumber(argv[i + 3])),
        out = argv[i + 4], stop = argv[i + 5],
        seed = math.tointeger(tonumber(argv[i + 6])) }
      if not (o.client.id and o.client.nclients and o.client.seed) then
        error("lunakv: --client needs ID URL NCLIENTS OUT STOP SEED", 0)
      end
      i = i + 6
    elseif a == "--keep" then
      o.keep = true
    elseif flags[a] then
      local f = flags[a]
      local v = math.tointeger(tonumber(argv[i + 1]))
      if not v or v < f[2] or v > f[3] or (a == "--nodes" and v ~= 3 and v ~= 5) then
        error(string.format("lunakv: %s needs an integer %d..%d%s, got '%s'",
          a, f[2], f[3], a == "--nodes" and " (3 or 5)" or "",
          tostring(argv[i + 1])), 0)
      end
      o[f[1]] = v
      i = i + 1
    else
      error("lunakv: unknown argument '" .. a .. "' (--seconds N, --seed S, "
        .. "--nodes 3|5, --clients-per-node C, --timeout-ms MS, --keep)", 0)
    end
    i = i + 1
  end
  return o
end

local function random_seed()
  local f = assert(io.open("/dev/urandom", "rb"))
  local s = string.unpack("<I4", f:read(4)) % 2147483647
  f:close()
  return s
end

function M.main(argv)
  local o = parse_args(argv or {})
  if o.client then return client_main(o.client, o) end
  o.seed = o.seed or random_seed()
  math.randomseed(o.seed)
  io.stdout:write(string.format("nemesis: seed %d (replay the schedule: "
    .. "--seed %d --seconds %d --nodes %d)\n", o.seed, o.seed, o.seconds,
    o.nodes))
  io.stdout:flush()
  local cl = require "lunakv.cluster"
  local c = { script = cl.absolute(assert(_G.arg and _G.arg[0],
    "no script path")) }
  c.interp, c.bin = cl.self_command()
  c.base = os.tmpname()
  os.remove(c.base)
  assert(core.mkdir(c.base))
  c.fault_log = assert(io.open(c.base .. "/faults.log", "wb"))
  local res = { faults = {} }
  local ok, err = pcall(run, c, o, res)
  -- every path comes here, the failed ones too
  pcall(stop_clients, c)
  for _, node in ipairs(c.nodes or {}) do
    if node.state == "paused" and alive(node) then core.kill(node.pid, "CONT") end
  end
  procs.stop(c.nodes or {})
  c.fault_log:close()
  local report
  if ok then
    local paths = {}
    for _, client in ipairs(c.clients) do paths[#paths + 1] = client.out end
    local ops, bad = check.read_files(paths)
    report = check.check(ops, res.final)
    local n = report.counts
    local faults = {}
    for _, f in ipairs(FAULTS) do
      faults[#faults + 1] = string.format("%s %d", f.name, res.faults[f.name] or 0)
    end
    io.stdout:write(string.format("nemesis: seed %d, %d nodes, %d s: writes "
      .. "%d ok, %d not written, %d unknown; consistent reads %d ok, %d other; "
      .. "%d keys; faults: %s\n", o.seed, o.nodes, o.seconds, n.writes_ok,
      n.writes_fail, n.writes_unknown, n.reads_ok, n.reads_other, n.keys,
      table.concat(faults, ", ")))
    -- the answers other than 200, by kind ("W 503:no_leader x40"): a
    -- 503 is allowed, but what else came back is worth seeing
    local other = {}
    for _, op in ipairs(ops) do
      if op.outcome ~= "200" then
        local k = op.kind .. " " .. op.outcome:gsub("@%d+$", "")
        other[k] = (other[k] or 0) + 1
      end
    end
    local list = {}
    for k, v in pairs(other) do list[#list + 1] = { k, v } end
    table.sort(list, function(a, b) return a[2] > b[2] or (a[2] == b[2] and a[1] < b[1]) end)
    for i, x in ipairs(list) do list[i] = x[1] .. " x" .. x[2] end
    io.stdout:write("nemesis: answers other than 200: ",
      #list > 0 and table.concat(list, ", ") or "none", "\n")
    for _, b in ipairs(bad) do io.stdout:write("nemesis: ", b, "\n") end
    if n.writes_ok == 0 or n.reads_ok == 0 then
      ok, err = false, "no acknowledged write or no answered consistent read: "
        .. "nothing was checked"
    elseif not report.ok then
      ok, err = false, string.format("%d problem(s) in the history:\n%s",
        #report.problems, check.format(report))
    end
  end
  if ok then
    io.stdout:write(string.format("nemesis: seed %d: PASS\n", o.seed))
    if o.keep then
      io.stdout:write("nemesis: kept ", c.base, "\n")
    else
      os.execute("rm -rf -- " .. shell_quote(c.base))
    end
    return 0
  end
  io.stdout:write(string.format("nemesis: seed %d: FAIL: %s\n", o.seed,
    tostring(err)))
  for _, node in ipairs(c.nodes or {}) do
    io.stdout:write("-- ", node.log, " (last lines):\n",
      require("lunakv.cluster").tail(node.log, 8), "\n")
  end
  io.stdout:write(string.format("nemesis: seed %d: FAIL; logs, data, the "
    .. "fault schedule (faults.log) and the histories (client*.history) are "
    .. "in %s\n", o.seed, c.base))
  return 1
end

-- }======================================================================

os.exit(M.main({ ... }), true)
