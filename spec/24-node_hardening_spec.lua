-- spec/24-node_hardening_spec.lua - `lunakv node` against clients that
-- misbehave and settings that are out of range. Here: HEAD on every
-- kind of route, and log compaction running off the event loop
-- (docs/replication.md, "Log compaction").
-- Real node processes on 127.0.0.1; raw sockets (luasocket) where the
-- HTTP client would hide what is on the wire.

local h = require "spec.helpers"
local hh = require "spec.http_helpers"
local socket = require "socket"

local node
local socks = {}

-- A raw connection to the node (closed in after_each).
local function connect(port)
  local c = assert(socket.tcp())
  c:settimeout(10)
  assert(c:connect("127.0.0.1", port))
  socks[#socks + 1] = c
  return c
end

-- Read one HTTP/1.1 response: status, headers (lower-case names), body
-- (Content-Length bytes; none for a HEAD). nil, why when the bytes are
-- not a response.
local function read_response(c, head)
  local line, err = c:receive("*l")
  if not line then return nil, "no status line: " .. tostring(err) end
  local code = tonumber(line:match("^HTTP/1%.%d (%d%d%d) "))
  if not code then return nil, "not a status line: " .. line end
  local hdrs = {}
  while true do
    local l = c:receive("*l")
    if l == nil then return nil, "connection ended in the headers" end
    if l == "" then break end
    local k, v = l:match("^([^:]+):%s*(.-)%s*$")
    if not k then return nil, "not a header line: " .. l end
    hdrs[k:lower()] = v
  end
  local body = ""
  local n = tonumber(hdrs["content-length"])
  if not head and n and n > 0 then body = assert(c:receive(n)) end
  return code, hdrs, body
end

-- True once the server has closed c: a read returns the end of the stream
-- (whatever it sent before is dropped) within timeout seconds.
local function closed_by_server(c, timeout)
  c:settimeout(timeout or 10)
  local data, err, partial = c:receive("*a")
  if data ~= nil then return true end
  return err == "closed", err, partial
end

local function lines_matching(path, pattern)
  local n = 0
  for _, l in ipairs(h.lines(path)) do
    if l:lower():find(pattern, 1, true) then n = n + 1 end
  end
  return n
end

after_each(function()
  for i = #socks, 1, -1 do
    socks[i]:close()
    socks[i] = nil
  end
  if node and node.pid then hh.stop_node(node, "KILL") end
  node = nil
  h.cleanup()
end)

describe("HEAD #http", function()
  it("answers HEAD on a GET route as GET without the body, on a keep-alive "
    .. "connection", function()
    node = hh.start_node()
    assert.equal(200, (hh.set(node, "k", "value of k")))
    local c = connect(node.port)
    local paths = { "/health", "/get?key=k", "/get?key=absent", "/status",
                    "/scan", "/metrics", "/kv/k", "/kv/absent", "/nowhere" }
    for _, path in ipairs(paths) do
      assert(c:send("GET " .. path .. " HTTP/1.1\r\nHost: x\r\n\r\n"))
      local gcode, ghdrs, gbody = read_response(c)
      assert.is_number(gcode, ghdrs)
      assert(c:send("HEAD " .. path .. " HTTP/1.1\r\nHost: x\r\n\r\n"))
      local code, hdrs = read_response(c, true)
      assert.equal(gcode, code, path)
      assert.equal(ghdrs["content-type"], hdrs["content-type"], path)
      -- the length of the GET's body (/metrics and /status change between
      -- the two; a 404 names the method it refuses)
      if path ~= "/metrics" and path ~= "/status" and path ~= "/nowhere" then
        assert.equal(tostring(#gbody), hdrs["content-length"], path)
      end
      -- nothing of a body may follow: the next answer parses
      assert(c:send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n"))
      local ncode, why = read_response(c)
      assert.equal(200, ncode, path .. ": " .. tostring(why))
    end
  end)

  it("answers HEAD on a POST route 405 with Allow and no body", function()
    node = hh.start_node()
    local c = connect(node.port)
    -- pipelined: the second request is on the wire before the first answer
    assert(c:send("HEAD /set HTTP/1.1\r\nHost: x\r\n\r\n"
      .. "GET /health HTTP/1.1\r\nHost: x\r\n\r\n"))
    local code, hdrs = read_response(c, true)
    assert.equal(405, code, hdrs)
    assert.equal("POST", hdrs.allow)
    local ncode, why = read_response(c)
    assert.equal(200, ncode, why)
    for _, path in ipairs({ "/delete", "/append", "/snapshot" }) do
      assert(c:send("HEAD " .. path .. " HTTP/1.1\r\nHost: x\r\n\r\n"))
      code, hdrs = read_response(c, true)
      assert.equal(405, code, path)
      assert.equal("POST", hdrs.allow, path)
    end
    assert(c:send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert.equal(200, (read_response(c)))
    -- the Allow of a GET route names HEAD too
    assert(c:send("POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"))
    code, hdrs = read_response(c)
    assert.equal(405, code)
    assert.equal("GET, HEAD", hdrs.allow)
  end)
end)

describe("log compaction on a node #slow", function()
  it("runs off the event loop: requests are answered while the log is cut",
    function()
    local dir = h.tmpdir()
    -- a test hook: the compaction waits while this file exists, after it
    -- has begun and before it syncs the engine and rewrites the log
    local gate = dir .. "/gate"
    h.write_file(gate, "")
    node = hh.start_node { dir = dir .. "/node",
      args = { "-s", "LOG_COMPACTION_THRESHOLD=20" },
      env = { LUNAKV_TEST_COMPACTION_GATE = gate } }
    for i = 1, 20 do
      assert.equal(200, (hh.set(node, "k" .. i, "v" .. i)))
    end
    h.wait_until(function()
      return hh.read_log(node.log):find("log compaction: cutting", 1, true)
    end, 20, function() return hh.read_log(node.log) end)
    -- the compaction is held at the gate: the loop still answers
    assert.equal(200, (hh.request("GET", node.url .. "/health")))
    for i = 21, 30 do
      local code, doc = hh.set(node, "k" .. i, "v" .. i)
      assert.equal(200, code)
      assert.equal(i, doc.index)
    end
    local code, doc = hh.get(node, "k25")
    assert.equal(200, code)
    assert.equal("v25", doc.value)
    assert.equal(0, hh.status(node).base_index)
    os.remove(gate)
    h.wait_until(function()
      return hh.read_log(node.log):find("log compacted", 1, true)
    end, 20, function() return hh.read_log(node.log) end)
    assert.equal(20, hh.status(node).base_index)
    assert.equal(30, hh.status(node).last_index)
    -- the cut log and the engine agree after a restart
    hh.stop_node(node)
    node = hh.restart(node)
    for i = 1, 30 do
      local _, d = hh.get(node, "k" .. i)
      assert.equal("v" .. i, d.value)
    end
    assert.equal(200, (hh.set(node, "after", "restart")))
    assert.equal(31, hh.status(node).last_index)
  end)
end)
