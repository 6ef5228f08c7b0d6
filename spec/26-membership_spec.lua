-- spec/26-membership_spec.lua - Raft membership changes with real `lunakv
-- node` processes on 127.0.0.1 (docs/replication.md, "Membership";
-- issue 18): a node added under write load catches up by snapshot and
-- log and becomes a voter; a follower removed, and the leader removed (a
-- new leader among the rest, writes go on); a node the cluster does not
-- count (another NODE_URLS, or removed) says so in /status and /health;
-- --join; bad requests refused with the configuration unchanged; a
-- learner not caught up is not promoted; a restart of every node keeps
-- the configuration, with its URLs; a voter whose directory was wiped
-- (the follower, the leader) started again with --join is removed and
-- added back, voting in nothing meanwhile; a removal that would leave no
-- answering majority is refused, and the wiped node says so.

local h = require "spec.helpers"
local hh = require "spec.http_helpers"
local cjson = hh.json

local nodes -- the cluster of the running test; stopped in after_each
local extra -- nodes started beside it; stopped in after_each

after_each(function()
  local ok, err = pcall(hh.stop_cluster, nodes)
  local ok2, err2 = pcall(hh.stop_cluster, extra)
  nodes, extra = nil, nil
  h.cleanup()
  if not ok then error(err, 0) end
  if not ok2 then error(err2, 0) end
end)

local function post(node, route, url, headers)
  local body = cjson.encode { node_url = url }
  local hd = { ["content-type"] = "application/json" }
  for k, v in pairs(headers or {}) do hd[k] = v end
  return hh.json_call("POST", node.url .. route, body, hd)
end

-- The members of nodes but node.
local function others(nodes_, node)
  local out = {}
  for _, n in ipairs(nodes_) do
    if n ~= node then out[#out + 1] = n end
  end
  return out
end

local function sorted(t)
  local c = {}
  for i, v in ipairs(t or {}) do c[i] = v end
  table.sort(c)
  return c
end

-- { voters = sorted URLs, learners = sorted URLs } as node sees them
local function conf_of(node)
  local st = hh.status(node)
  return { voters = sorted(st.voters), learners = sorted(st.learners) }
end

local function urls(list)
  local out = {}
  for i, n in ipairs(list) do out[i] = n.url end
  return sorted(out)
end

-- Wait until node's /status says member (true or false).
local function wait_member(node, want, timeout)
  local last
  h.wait_until(function()
    local code, st = hh.json_request("GET", node.url .. "/status")
    last = st
    return code == 200 and st.member == want
  end, timeout or 20, function()
    return node.url .. " /status: " .. cjson.encode(last or {}) .. "\n"
      .. hh.read_log(node.log or ""):sub(-1500)
  end)
end

-- Wait until leader (re-found each time) lists url among its voters.
local function wait_voter(url, timeout)
  local last
  h.wait_until(function()
    local leader = hh.wait_leader(nodes, 20)
    last = conf_of(leader)
    for _, v in ipairs(last.voters) do
      if v == url then return true end
    end
    return false
  end, timeout or 30, function() return cjson.encode(last or {}) end)
end

-- A node of extra started with `--join via` (or with argv words), on a
-- fresh port and directory, waited for until it listens (its /health is
-- 503 until it is a member). env: extra environment.
local function start_extra(words, env, dir, port)
  dir = dir or (h.tmpdir() .. "/extra")
  for _ = 1, 10 do
    local p = port or hh.pick_ports(1)[1]
    local envs = {}
    for k, v in pairs(env or {}) do envs[#envs + 1] = k .. "=" .. h.quote(v) end
    local cmd = (#envs > 0 and ("env " .. table.concat(envs, " ") .. " ") or "")
      .. h.lua .. " " .. h.quote(h.bin) .. " node " .. p .. " " .. h.quote(dir)
      .. " " .. words(p)
    local pid, pr = h.spawn(cmd)
    local node = { url = "http://127.0.0.1:" .. p, port = p, dir = dir,
                   pid = pid, log = pr.err, words = words, env = env }
    local st = h.wait_until(function()
      if not hh.alive(pid) then return "dead" end
      return hh.read_log(pr.err):find("listening on", 1, true) and "up"
    end, 20)
    if st == "up" then
      extra = extra or {}
      extra[#extra + 1] = node
      return node
    end
    h.wait(pid)
    if not hh.read_log(pr.err):find("cannot listen", 1, true) or port then
      error("node did not start: " .. hh.read_log(pr.err))
    end
  end
  error("no free port")
end

local function join_words(via)
  return function() return "--join " .. h.quote(via.url) end
end

local function restart_extra(node)
  local n = start_extra(node.words, node.env, node.dir, node.port)
  node.pid, node.log = n.pid, n.log
  extra[#extra] = nil -- it is node itself
  return node
end

-- A writer process: k<i> = v<i> through the URLs given, round robin, until
-- its stop file exists; prints "ok <i>" for each acknowledged write,
-- "fail <i> <status>" for each other answer.
local WRITER = [==[
local http = require "socket.http"
local ltn12 = require "ltn12"
http.TIMEOUT = 5
local stop, prefix = arg[1], arg[2]
local targets = {}
for i = 3, #arg do targets[#targets + 1] = arg[i] end
local i = 0
while not io.open(stop, "r") do
  i = i + 1
  local body = string.format('{"key": "%s%d", "value": "v%d"}', prefix, i, i)
  local ok, code = http.request {
    method = "POST", url = targets[1 + i % #targets] .. "/set",
    headers = { ["content-type"] = "application/json",
                ["content-length"] = tostring(#body) },
    source = ltn12.source.string(body), sink = ltn12.sink.null() }
  if ok and code == 200 then io.write("ok ", i, "\n")
  else io.write("fail ", i, " ", tostring(code), "\n") end
  io.flush()
end
]==]

local function start_writer(prefix, targets)
  local dir = h.tmpdir()
  local script = dir .. "/writer.lua"
  h.write_file(script, h.prelude .. WRITER)
  local words = { h.lua, h.quote(script), h.quote(dir .. "/stop"), prefix }
  for _, t in ipairs(targets) do words[#words + 1] = h.quote(t.url) end
  local pid, p = h.spawn(table.concat(words, " "))
  return { pid = pid, out = p.out, stop = dir .. "/stop", prefix = prefix }
end

-- Stop the writer; returns the numbers of its acknowledged writes.
local function stop_writer(w)
  h.write_file(w.stop, "")
  h.wait_until(function() return not hh.alive(w.pid) end, 20)
  h.wait(w.pid)
  local acked = {}
  for n in hh.read_log(w.out):gmatch("ok (%d+)") do
    acked[#acked + 1] = tonumber(n)
  end
  return acked
end

local function acked_count(w)
  local n = 0
  for _ in hh.read_log(w.out):gmatch("ok %d+") do n = n + 1 end
  return n
end

local function failed_count(w)
  local n = 0
  for _ in hh.read_log(w.out):gmatch("fail %d+") do n = n + 1 end
  return n
end

-- Every (key, value) of node, by /scan pages.
local function all_pairs(node)
  local out, start = {}, nil
  while true do
    local q = "/scan?limit=1000" .. (start and ("&start=" .. hh.urlencode(start)) or "")
    local code, doc = hh.json_request("GET", node.url .. q)
    assert(code == 200, "scan: " .. tostring(code))
    local last
    for _, it in ipairs(doc.items) do
      if it.key ~= start then out[it.key] = it.value end
      last = it.key
    end
    if not doc.more then return out end
    start = last
  end
end

-- kill -9 member victim, wipe its directory (a lost disk), and start it
-- again on its port with --join via: a fresh node whose URL the cluster
-- counts as a voter already. Returns it (a node of extra).
local function wipe_and_rejoin(victim, via)
  hh.kill_member(victim)
  h.rm_rf(victim.dir)
  return start_extra(join_words(via), nil, victim.dir, victim.port)
end

-- Wait until node's log has line (plain text); returns where it starts.
local function wait_line(node, line, timeout)
  return h.wait_until(function()
    return hh.read_log(node.log):find(line, 1, true)
  end, timeout or 40, function()
    return node.url .. " never logged " .. string.format("%q", line) .. ":\n"
      .. hh.read_log(node.log):sub(-3000)
  end)
end

-- A rejoin's steps, in the order d's log has them: told it is a member
-- already, removed, added again, caught up.
local function assert_rejoin_steps(d)
  local log, at = hh.read_log(d.log), 0
  for _, line in ipairs { "is already a member, but this node's directory "
      .. "began empty", "removed " .. d.url .. " from the cluster",
      "joined the cluster through", "the join is done" } do
    local i = log:find(line, at + 1, true)
    assert.truthy(i, string.format("%q after byte %d of:\n%s", line, at, log))
    at = i
  end
end

-- Every node of list lists the URLs of want as its voters, each once,
-- and no learner.
local function wait_voters_exactly(list, want)
  for _, n in ipairs(list) do
    local last
    h.wait_until(function()
      last = conf_of(n)
      return #last.voters == #want and #last.learners == 0
    end, 30, function() return n.url .. ": " .. cjson.encode(last) end)
    assert.same(want, conf_of(n).voters)
  end
end

describe("Raft membership #cluster", function()
  it("adds a node under write load: it catches up by snapshot and log, "
    .. "becomes a voter and holds the same data", function()
    -- a short log, so the new node needs a snapshot
    local env = { LOG_COMPACTION_THRESHOLD = "50" }
    nodes = hh.start_cluster { n = 3, env = env }
    local leader = hh.wait_ready(nodes)
    for i = 1, 200 do
      local code = hh.set(leader, "pre" .. i, "p" .. i)
      assert.equal(200, code)
    end
    h.wait_until(function() return hh.status(leader).base_index > 0 end, 20)
    local w = start_writer("w", nodes)
    h.wait_until(function() return acked_count(w) >= 20 end, 20)
    -- through a follower: forwarded to the leader
    local via = nodes[1] ~= leader and nodes[1] or nodes[2]
    local d = start_extra(join_words(via), env)
    wait_member(d, true)
    wait_voter(d.url)
    local before = acked_count(w)
    h.wait_until(function() return acked_count(w) >= before + 20 end, 20)
    local acked = stop_writer(w)
    assert.is_true(#acked > 40, "the writer went on: " .. #acked)
    -- the new node installed a snapshot (the log was compacted) and holds
    -- every acknowledged write and the earlier ones, as the leader does
    assert.truthy(hh.read_log(d.log):find("snapshot installed", 1, true),
      hh.read_log(d.log))
    leader = hh.wait_leader(nodes, 20)
    hh.wait_caught_up(d, leader, 30)
    local want = all_pairs(leader)
    local got = all_pairs(d)
    assert.same(want, got)
    for _, i in ipairs(acked) do assert.equal("v" .. i, got["w" .. i]) end
    for i = 1, 200 do assert.equal("p" .. i, got["pre" .. i]) end
    -- every node sees four voters, named by URL
    local four = urls { nodes[1], nodes[2], nodes[3], d }
    for _, n in ipairs { nodes[1], nodes[2], nodes[3], d } do
      h.wait_until(function()
        local c = conf_of(n)
        return #c.voters == 4 and #c.learners == 0
      end, 20)
      assert.same(four, conf_of(n).voters)
    end
    assert.equal("follower", hh.status(d).role)
    local code = hh.json_request("GET", d.url .. "/health")
    assert.equal(200, code)
  end)

  it("removes a follower: the rest go on, the removed node takes no part "
    .. "and says it is not a member", function()
    nodes = hh.start_cluster { n = 3 }
    local leader = hh.wait_ready(nodes)
    assert.equal(200, (hh.set(leader, "a", "1")))
    local victim, via
    for _, n in ipairs(nodes) do
      if n ~= leader then
        if victim then via = n else victim = n end
      end
    end
    -- sent to the other follower: forwarded to the leader
    local code, doc, text = post(via, "/remove_node", victim.url)
    assert.equal(200, code, text)
    assert.is_true(doc.ok)
    assert.is_number(doc.index)
    assert.same(urls { leader, via }, sorted(doc.voters))
    assert.same({}, doc.learners)
    for _, n in ipairs { leader, via } do
      h.wait_until(function() return #conf_of(n).voters == 2 end, 10)
      assert.same(urls { leader, via }, conf_of(n).voters)
    end
    -- the removed node learns it (it hears no leader, asks, and the
    -- leader says so), then stops: no campaign raises its term
    wait_member(victim, false)
    local code2, hdoc = hh.json_request("GET", victim.url .. "/health")
    assert.equal(503, code2)
    assert.is_false(hdoc.ok)
    assert.truthy(hdoc.error:find("not a member", 1, true), hdoc.error)
    local rcode = hh.get(victim, "a")
    assert.equal(503, rcode)
    local term = hh.status(victim).term
    local rounds = hh.metric(victim, "lunakv_raft_prevote_rounds_total")
    h.sleep(3)
    assert.equal(term, hh.status(victim).term)
    assert.equal(rounds, hh.metric(victim, "lunakv_raft_prevote_rounds_total"))
    assert.is_false(hh.status(victim).member)
    -- two voters still commit
    for i = 1, 10 do assert.equal(200, (hh.set(via, "b" .. i, "x"))) end
    assert.equal(leader.url, hh.status(via).leader)
  end)

  it("removes the leader: it hands over and leaves, another is elected "
    .. "among the rest, writes go on", function()
    nodes = hh.start_cluster { n = 3 }
    local old = hh.wait_ready(nodes)
    for i = 1, 10 do assert.equal(200, (hh.set(old, "k" .. i, "v" .. i))) end
    local rest = others(nodes, old)
    local code, doc, text = post(old, "/remove_node", old.url)
    assert.equal(200, code, text)
    assert.same(urls(rest), sorted(doc.voters))
    local new = hh.wait_leader(nodes, 20, old)
    assert.are_not.equal(old.url, new.url)
    for i = 1, 20 do
      local n = rest[1 + i % 2]
      h.wait_until(function()
        return (hh.set(n, "after" .. i, "w" .. i)) == 200
      end, 15)
    end
    for _, n in ipairs(rest) do
      hh.wait_value(n, "after20", "w20")
      assert.same(urls(rest), conf_of(n).voters)
    end
    wait_member(old, false)
    local st = hh.status(old)
    assert.are_not.equal("leader", st.role)
    assert.equal(503, (hh.json_request("GET", old.url .. "/health")))
  end)

  it("a node started with NODE_URLS the cluster does not share says it is "
    .. "not a member and is unhealthy", function()
    nodes = hh.start_cluster { n = 3 }
    local leader = hh.wait_ready(nodes)
    assert.equal(200, (hh.set(leader, "a", "1")))
    local list = {}
    for i, n in ipairs(nodes) do list[i] = n.url end
    local d = start_extra(function(p)
      return h.quote(nodes[1].url) .. " "
        .. h.quote(table.concat(list, ",") .. ",http://127.0.0.1:" .. p)
    end)
    wait_member(d, false)
    local code, doc = hh.json_request("GET", d.url .. "/health")
    assert.equal(503, code)
    assert.is_false(doc.ok)
    assert.truthy(doc.error:find("not a member", 1, true))
    assert.equal(503, (hh.get(d, "a")))
    -- it never disturbs the cluster (three voters, the same leader and
    -- term) and stops campaigning (its term stays)
    local lterm, dterm = hh.status(leader).term, hh.status(d).term
    local rounds = hh.metric(d, "lunakv_raft_prevote_rounds_total")
    assert.is_true(dterm <= lterm)
    h.sleep(3)
    assert.equal(rounds, hh.metric(d, "lunakv_raft_prevote_rounds_total"))
    assert.equal(leader.url, hh.status(leader).leader)
    assert.equal(lterm, hh.status(leader).term)
    assert.same(urls(nodes), conf_of(leader).voters)
    assert.equal(dterm, hh.status(d).term)
    assert.is_false(hh.status(d).member)
  end)

  it("refuses bad changes with 400 or 409 and leaves the configuration as "
    .. "it was", function()
    -- a long election timeout: the leader keeps leading while its
    -- followers are paused below
    nodes = hh.start_cluster { n = 3, env = { CLUSTER_TOKEN = "s3cret" },
      args = { "--election-timeout-ms", "3000" } }
    local leader = hh.wait_ready(nodes)
    local tok = { ["x-lunakv-token"] = "s3cret" }
    local want = conf_of(leader)
    local follower = nodes[1] ~= leader and nodes[1] or nodes[2]
    local function unchanged(where)
      for _, n in ipairs(nodes) do
        assert.same(want, conf_of(n), where .. " on " .. n.url)
      end
    end
    local function refused(code, doc, text, status, what, where)
      assert.equal(status, code, where .. ": " .. tostring(text))
      assert.is_false(doc.ok, where)
      assert.truthy(doc.error:find(what, 1, true), where .. ": " .. doc.error)
      unchanged(where)
    end
    for _, bad in ipairs { "not a url", "ftp://127.0.0.1:1", "http://",
                           "http://127.0.0.1:0", "http://127.0.0.1:70000",
                           "http://127.0.0.1:1/path", "127.0.0.1:8000",
                           "http://a b:1" } do
      for _, target in ipairs { leader, follower } do
        for _, route in ipairs { "/add_node", "/remove_node" } do
          local code, doc, text = post(target, route, bad, tok)
          refused(code, doc, text, 400, "node_url", route .. " " .. bad)
        end
      end
    end
    local code, doc, text = hh.json_call("POST", leader.url .. "/add_node",
      '{"url": "x"}', tok)
    refused(code, doc, text, 400, "node_url", "no node_url")
    code, doc, text = hh.json_call("POST", leader.url .. "/add_node",
      '{"node_url": 5}', tok)
    refused(code, doc, text, 400, "must be a string", "a number")
    -- a member already (through a follower too)
    for _, target in ipairs { leader, follower } do
      code, doc, text = post(target, "/add_node", nodes[3].url, tok)
      refused(code, doc, text, 409, "already a member", "already in")
    end
    -- removing a node that is not a member
    code, doc, text = post(follower, "/remove_node", "http://127.0.0.1:1", tok)
    refused(code, doc, text, 400, "not a member", "not a member")
    -- the token: missing 401, wrong 403, on the leader and a follower
    for _, target in ipairs { leader, follower } do
      code, doc, text = post(target, "/add_node", "http://127.0.0.1:1")
      refused(code, doc, text, 401, "token", "no token")
      code, doc, text = post(target, "/add_node", "http://127.0.0.1:1",
        { ["x-lunakv-token"] = "nope" })
      refused(code, doc, text, 403, "token", "wrong token")
    end

    -- a second change while one is pending: the followers paused, the
    -- first add cannot commit yet
    local stopped = hh.pause_followers(nodes, leader)
    -- the first change on a socket of its own, its answer read later
    local first
    local sent, err = pcall(function()
      first = assert(hh.send_later(leader, "POST", "/add_node",
        '{"node_url": "http://127.0.0.1:1"}', { ["X-Lunakv-Token"] = "s3cret" },
        15))
      h.wait_until(function()
        return hh.status(leader).last_index > 0 and
          #hh.status(leader).learners == 1
      end, 5)
      code, doc, text = post(leader, "/add_node", "http://127.0.0.1:2", tok)
    end)
    -- resumed whatever happened: a paused node ignores SIGTERM
    hh.resume_all(stopped)
    if not sent then
      if first then first:close() end
      error(err, 0)
    end
    assert.equal(409, code, text)
    assert.truthy(doc.error:find("pending", 1, true), doc.error)
    hh.read_answer(first)
    -- the first one went through (had the leader lost its lead while its
    -- followers were paused, another may have cut it: then it did not);
    -- the second never did
    h.wait_until(function()
      local ok, l = pcall(hh.wait_leader, nodes, 1)
      if not ok then return false end
      local c = conf_of(l)
      local committed = hh.status(l).commit_index == hh.status(l).last_index
      return committed and #c.learners <= 1
    end, 20)
    leader = hh.wait_leader(nodes, 20)
    assert.same(want.voters, conf_of(leader).voters)
    local learners = conf_of(leader).learners
    if #learners == 0 then return end
    assert.same({ "http://127.0.0.1:1" }, learners)
    -- a learner that never answered is not promoted, and goes again
    h.sleep(1.5)
    assert.same({ "http://127.0.0.1:1" }, conf_of(leader).learners)
    h.wait_until(function()
      code, doc, text = post(leader, "/remove_node", "http://127.0.0.1:1", tok)
      return code == 200 and doc.ok
    end, 15, function() return text end)
    assert.same(want, conf_of(leader))
  end)

  it("refuses to remove the last voter (409)", function()
    nodes = hh.start_cluster { n = 1 }
    local only = hh.wait_ready(nodes)
    local code, doc, text = post(only, "/remove_node", only.url)
    assert.equal(409, code, text)
    assert.truthy(doc.error:find("last voter", 1, true), doc.error)
    assert.same({ only.url }, conf_of(only).voters)
    assert.equal(200, (hh.set(only, "k", "v")))
  end)

  it("does not promote a learner that is not caught up", function()
    nodes = hh.start_cluster { n = 3 }
    local leader = hh.wait_ready(nodes)
    -- a node nobody runs yet: a learner that never answers
    local port = hh.pick_ports(1)[1]
    local url = "http://127.0.0.1:" .. port
    local code, doc, text = post(leader, "/add_node", url)
    assert.equal(200, code, text)
    assert.same({ url }, doc.learners)
    for i = 1, 30 do assert.equal(200, (hh.set(leader, "k" .. i, "v"))) end
    h.sleep(1.5)
    assert.same({ url }, conf_of(leader).learners)
    assert.same(urls(nodes), conf_of(leader).voters)
    -- started now (it asks to join: a learner already), it catches up
    -- and is promoted
    local d = start_extra(join_words(leader), nil, nil, port)
    wait_voter(url)
    hh.wait_value(d, "k30", "v")
  end)

  it("joins with --join through any member, and a restart of every node "
    .. "keeps the configuration with its URLs", function()
    -- a short log: after the restart the configuration's URLs come from
    -- the engine, not from entries still in the log
    local env = { LOG_COMPACTION_THRESHOLD = "20" }
    nodes = hh.start_cluster { n = 3, env = env }
    local leader = hh.wait_ready(nodes)
    local follower = nodes[1] ~= leader and nodes[1] or nodes[2]
    local d = start_extra(join_words(follower), env)
    wait_member(d, true)
    wait_voter(d.url)
    assert.truthy(hh.read_log(d.log):find("joined the cluster", 1, true))
    -- one founding node leaves
    local gone = nodes[3] ~= leader and nodes[3] or nodes[2]
    local code, _, text = post(leader, "/remove_node", gone.url)
    assert.equal(200, code, text)
    local kept = others(nodes, gone)
    kept[#kept + 1] = d
    for i = 1, 60 do
      h.wait_until(function()
        return (hh.set(kept[1 + i % 3], "k" .. i, "v" .. i)) == 200
      end, 15)
    end
    for _, n in ipairs(kept) do
      hh.wait_value(n, "k60", "v60")
      -- compacted past the changes' entries
      h.wait_until(function() return hh.status(n).base_index > 10 end, 20)
    end

    -- every node stopped, then the founding ones started again with
    -- their own NODE_URLS (the joined one still down): they know its URL
    hh.stop_cluster(nodes)
    hh.stop_cluster(extra)
    for _, n in ipairs(nodes) do
      if n ~= gone then hh.start_member(n) end
    end
    local l = hh.wait_leader(nodes, 30, gone)
    assert.are_not.equal(gone.url, l.url)
    assert.same(urls(kept), conf_of(l).voters)
    restart_extra(d)
    wait_member(d, true)
    assert.falsy(hh.read_log(d.log):find("joined the cluster", 1, true),
      "a member asks nothing at a restart")
    for _, n in ipairs(kept) do
      h.wait_until(function() return #conf_of(n).voters == 3 end, 20)
      assert.same(urls(kept), conf_of(n).voters)
      assert.is_true(hh.status(n).member)
    end
    -- the removed node, started again as it was first: told it is out
    local gone_words = function()
      return h.quote(gone.leader) .. " " .. h.quote(table.concat(gone.urls, ","))
    end
    gone = start_extra(gone_words, env, gone.dir, gone.port)
    wait_member(gone, false)
    assert.equal(503, (hh.json_request("GET", gone.url .. "/health")))
    h.wait_until(function()
      return (hh.set(d, "after", "restart")) == 200
    end, 20)
    for _, n in ipairs(kept) do hh.wait_value(n, "after", "restart") end
  end)

  it("lunakv cluster add starts a node that joins; cluster remove takes "
    .. "one out and stops it", function()
    local dir = h.tmpdir() .. "/cl"
    local function cli(cmd)
      return h.run(h.lunakv_cmd .. " cluster " .. cmd .. " --dir "
        .. h.quote(dir))
    end
    local code, out, err, base
    for _ = 1, 10 do
      base = 20000 + (hh.pick_ports(1)[1] - 20000) % 11000
      code, out, err = cli("up 3 --base-port " .. base)
      if code == 0 or not (err:find("cannot listen", 1, true)
          or err:find("is already in use", 1, true)) then
        break
      end
    end
    assert.equal(0, code, err)
    local ok, e = pcall(function()
      code, out, err = cli("add")
      assert.equal(0, code, err)
      local new = "http://127.0.0.1:" .. (base + 3)
      assert.truthy(out:find(new .. " joined the cluster as a voter", 1, true),
        out)
      local node = { url = new }
      assert.equal(4, #hh.status(node).voters)
      local victim = "http://127.0.0.1:" .. (base + 1)
      code, out, err = cli("remove " .. victim)
      assert.equal(0, code, err)
      assert.truthy(out:find("removed " .. victim, 1, true), out)
      assert.truthy(out:find("stopped node1", 1, true), out)
      h.wait_until(function() return #hh.status(node).voters == 3 end, 10)
      assert.is_nil((hh.request("GET", victim .. "/health")))
      -- a URL that is no member: refused, nothing changes
      code, out, err = cli("remove http://127.0.0.1:9")
      assert.equal(1, code)
      assert.truthy(err:find("not a member", 1, true), err)
      assert.equal(3, #hh.status(node).voters)
      code, out = cli("status")
      assert.equal(0, code)
      assert.truthy(out:find("3 of 3 nodes answer", 1, true), out)
    end)
    local dcode, _, derr = cli("down")
    if not ok then error(e, 0) end
    assert.equal(0, dcode, derr)
  end)

  it("a follower wiped and started again with --join is removed and added "
    .. "back: a voter once more with every acknowledged write, while the "
    .. "cluster takes writes", function()
    nodes = hh.start_cluster { n = 3 }
    local leader = hh.wait_ready(nodes)
    for i = 1, 20 do assert.equal(200, (hh.set(leader, "pre" .. i, "p" .. i))) end
    local victim, via
    for _, n in ipairs(nodes) do
      if n ~= leader then
        if victim then via = n else victim = n end
      end
    end
    local w = start_writer("w", { leader, via })
    h.wait_until(function() return acked_count(w) >= 20 end, 20)
    -- through the other follower: forwarded to the leader
    local d = wipe_and_rejoin(victim, via)
    wait_line(d, "the join is done")
    assert_rejoin_steps(d)
    local before = acked_count(w)
    h.wait_until(function() return acked_count(w) >= before + 20 end, 20)
    local acked = stop_writer(w)
    -- two voters of three took every write meanwhile
    assert.equal(0, failed_count(w), hh.read_log(w.out):match("fail[^\n]*"))
    -- one voter per URL, no learner left, on every node
    wait_voters_exactly({ leader, via, d }, urls(nodes))
    leader = hh.wait_leader(nodes, 20)
    hh.wait_caught_up(d, leader, 30)
    local st = hh.status(d)
    assert.is_true(st.member)
    assert.is_nil(st.join)
    assert.equal(200, (hh.json_request("GET", d.url .. "/health")))
    -- its own store (local reads) holds every acknowledged write
    local got = all_pairs(d)
    for _, i in ipairs(acked) do assert.equal("v" .. i, got["w" .. i]) end
    for i = 1, 20 do assert.equal("p" .. i, got["pre" .. i]) end
    assert.same(all_pairs(leader), got)
    assert.equal(0, hh.metric(d, "lunakv_join_unfinished"))
  end)

  it("the leader wiped and started again with --join (another leader "
    .. "elected first) is removed and added back as a voter", function()
    nodes = hh.start_cluster { n = 3 }
    local old = hh.wait_ready(nodes)
    for i = 1, 20 do assert.equal(200, (hh.set(old, "pre" .. i, "p" .. i))) end
    local rest = others(nodes, old)
    local w = start_writer("w", rest)
    h.wait_until(function() return acked_count(w) >= 20 end, 20)
    hh.kill_member(old)
    h.rm_rf(old.dir)
    local new = hh.wait_leader(nodes, 20, old)
    -- writes go on under the new leader before the old one comes back
    local resumed = acked_count(w)
    h.wait_until(function() return acked_count(w) >= resumed + 10 end, 20)
    local fails = failed_count(w)
    local via = rest[1] ~= new and rest[1] or rest[2]
    local d = start_extra(join_words(via), nil, old.dir, old.port)
    wait_line(d, "the join is done")
    assert_rejoin_steps(d)
    local before = acked_count(w)
    h.wait_until(function() return acked_count(w) >= before + 20 end, 20)
    local acked = stop_writer(w)
    -- not one write refused while it was removed and added back
    assert.equal(fails, failed_count(w))
    wait_voters_exactly({ rest[1], rest[2], d }, urls(nodes))
    local leader = hh.wait_leader(nodes, 20)
    hh.wait_caught_up(d, leader, 30)
    assert.is_true(hh.status(d).member)
    local got = all_pairs(d)
    for _, i in ipairs(acked) do assert.equal("v" .. i, got["w" .. i]) end
    for i = 1, 20 do assert.equal("p" .. i, got["pre" .. i]) end
    assert.same(all_pairs(leader), got)
  end)

  it("a wiped voter whose removal would leave no answering majority is "
    .. "refused: it says so, serves nothing and grants no vote; it joins "
    .. "once the others are back", function()
    -- a long election timeout: the leader keeps its lease while the
    -- wiped follower restarts (its old self answered, then its new one)
    nodes = hh.start_cluster { n = 3,
      args = { "--election-timeout-ms", "3000" } }
    local a = hh.wait_ready(nodes)
    for i = 1, 10 do assert.equal(200, (hh.set(a, "k" .. i, "v" .. i))) end
    local b, c
    for _, n in ipairs(nodes) do
      if n ~= a then
        if b then c = n else b = n end
      end
    end
    local rounds = hh.metric(c, "lunakv_raft_prevote_rounds_total")
    h.kill(c.pid, "STOP")
    local paused = true
    local ok, err = pcall(function()
      -- the leader has not heard from c for an election timeout
      h.wait_until(function()
        for _, f in ipairs(hh.status(a).followers or {}) do
          if f.url == c.url then return f.last_contact_ms > 3500 end
        end
      end, 20)
      local d = wipe_and_rejoin(b, a)
      local code, doc
      h.wait_until(function()
        code, doc = hh.json_request("GET", d.url .. "/health")
        return code == 503 and doc.join and doc.join.state == "refused"
      end, 20, function() return cjson.encode(doc or {}) end)
      assert.is_false(doc.ok)
      assert.truthy(doc.error:find("refuses to remove", 1, true), doc.error)
      assert.truthy(doc.error:find("not a majority", 1, true), doc.error)
      local st = hh.status(d)
      assert.is_false(st.member)
      assert.equal("refused", st.join.state)
      assert.is_true(st.join.fresh)
      -- it serves nothing: a local read, a write, a consistent read
      assert.equal(503, (hh.get(d, "k1")))
      assert.equal(503, (hh.set(d, "x", "y")))
      assert.equal(503, (hh.consistent_get(d, "k1")))
      -- killed and started again over its directory, which now holds the
      -- term the leader's messages brought: its join mark says the join
      -- is unfinished, so it asks again, and is refused again
      assert.is_true(hh.status(d).term > 0)
      hh.stop_cluster({ d }, "KILL")
      restart_extra(d)
      h.wait_until(function()
        code, doc = hh.json_request("GET", d.url .. "/health")
        return code == 503 and doc.join and doc.join.state == "refused"
      end, 20, function()
        return cjson.encode(doc or {}) .. "\n" .. hh.read_log(d.log)
      end)
      assert.is_true(doc.join.fresh)
      assert.falsy(hh.read_log(d.log):find("joined the cluster", 1, true))
      -- nothing was proposed: the configuration is as it was
      assert.same(urls(nodes), conf_of(a).voters)
      assert.same({}, conf_of(a).learners)
      -- an election that needs its vote: the leader killed (its
      -- connections close, so d forgets it), c resumed; c campaigns and
      -- asks d, the only other voter up
      hh.kill_member(a)
      h.kill(c.pid, "CONT")
      paused = false
      local vote, role
      h.wait_until(function()
        vote = hh.status(d).vote
        role = hh.status(c).role
        return vote ~= cjson.null or role == "leader"
          or hh.metric(c, "lunakv_raft_prevote_rounds_total") >= rounds + 2
      end, 30)
      assert.equal(cjson.null, vote)
      assert.are_not.equal("leader", role)
      assert.is_true(hh.metric(d, "lunakv_join_votes_dropped_total") >= 1)
      assert.equal(0, hh.metric(d, "lunakv_raft_prevote_rounds_total"))
      assert.equal(0, hh.metric(d, "lunakv_raft_elections_started_total"))
      -- the leader back: a and c elect one, d's removal is taken (it asks
      -- again), it is added, catches up and votes
      hh.start_member(a)
      wait_line(d, "the join is done", 50)
      assert_rejoin_steps(d)
      wait_voters_exactly({ a, c, d }, urls(nodes))
      hh.until_acked("a write through d", function()
        return hh.set(d, "after", "rejoin")
      end, 20)
      for _, n in ipairs { a, c, d } do hh.wait_value(n, "after", "rejoin") end
      hh.wait_value(d, "k10", "v10")
      assert.equal(200, (hh.json_request("GET", d.url .. "/health")))
    end)
    if paused then h.kill(c.pid, "CONT") end
    if not ok then error(err, 0) end
  end)

  it("a member restarted with --join over its own directory carries on "
    .. "as that member", function()
    nodes = hh.start_cluster { n = 3 }
    local leader = hh.wait_ready(nodes)
    local via = nodes[1] ~= leader and nodes[1] or nodes[2]
    local d = start_extra(join_words(via))
    wait_line(d, "the join is done")
    wait_voter(d.url)
    for i = 1, 10 do assert.equal(200, (hh.set(leader, "k" .. i, "v"))) end
    hh.wait_value(d, "k10", "v")
    -- kill -9, not wiped: its term file, vote and log are its own
    hh.stop_cluster({ d }, "KILL")
    restart_extra(d)
    wait_member(d, true)
    local log = hh.read_log(d.log)
    assert.falsy(log:find("already a member", 1, true), log)
    assert.falsy(log:find("removed", 1, true), log)
    assert.is_nil(hh.status(d).join)
    assert.same(urls { nodes[1], nodes[2], nodes[3], d },
      conf_of(hh.wait_leader(nodes, 20)).voters)
  end)

  it("a directory whose join is unfinished does not start without --join",
    function()
    local port = hh.pick_ports(1)[1]
    local url = "http://127.0.0.1:" .. port
    local dir = h.tmpdir() .. "/j"
    os.execute("mkdir -p " .. h.quote(dir))
    h.write_file(dir .. "/joining", "")
    local code, _, err = h.run(h.lunakv_cmd .. " node " .. port .. " "
      .. h.quote(dir) .. " " .. url .. " " .. url)
    assert.equal(1, code, err)
    assert.truthy(err:find("--join has not finished", 1, true), err)
  end)
end)
