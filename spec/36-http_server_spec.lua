-- spec/36-http_server_spec.lua - the node's own HTTP/1.1 server
-- (c/net/hserver.c, parser c/net/hparse.c) as a client on the wire sees
-- it, apart from any route: pipelining, requests cut at awkward places,
-- chunked bodies, Expect: 100-continue, HTTP/1.0 and Connection, malformed
-- heads, the body cap, HEAD, clients that vanish or do not read, and the
-- absolute-form target (docs/http_api.md, "Connections" and "Limits").
-- One node on 127.0.0.1 for the whole file; raw luasocket connections,
-- since an HTTP client would hide the bytes that matter here.

local h = require "spec.helpers"
local hh = require "spec.http_helpers"
local socket = require "socket"
local cjson = hh.json

-- Small enough that a refused body is cheap to send, large enough for
-- the 50 KB values of the /scan answers below. body_cap() in hserver.c
-- lets bodies up to MAX_BODY + 1 MiB reach the routes; past that the
-- server itself answers 413.
local MAX_BODY = 100000
local CAP = MAX_BODY + 1048576

local node
local socks = {}

-- A raw connection to the node (closed after each test).
local function connect(timeout)
  local c = assert(socket.tcp())
  c:settimeout(timeout or 10)
  assert(c:connect("127.0.0.1", node.port))
  socks[#socks + 1] = c
  return c
end

-- One answer from c: { status, line (the status line), head (its bytes,
-- status line to the empty line, CRLFs included), headers (lower-case
-- names), body (Content-Length bytes; none for a HEAD) }. nil, why when
-- the bytes are not an answer.
local function read_answer(c, head_only)
  local line, err = c:receive("*l")
  if not line then return nil, "no status line: " .. tostring(err) end
  local status = tonumber(line:match("^HTTP/1%.[01] (%d%d%d) "))
  if not status then return nil, "not a status line: " .. line end
  local raw, hdrs = { line }, {}
  while true do
    local l, e = c:receive("*l")
    if not l then return nil, "connection ended in the head: " .. tostring(e) end
    raw[#raw + 1] = l
    if l == "" then break end
    local k, v = l:match("^([^:]+): (.*)$")
    if not k then return nil, "not a header line: " .. l end
    hdrs[k:lower()] = v
  end
  local body = ""
  local n = tonumber(hdrs["content-length"])
  if not head_only and n and n > 0 then
    local b, e, part = c:receive(n)
    if not b then
      return nil, "body cut short (" .. tostring(e) .. ") after "
        .. #(part or "") .. " of " .. n .. " bytes"
    end
    body = b
  end
  return { status = status, line = line, headers = hdrs, body = body,
           head = table.concat(raw, "\r\n") .. "\r\n" }
end

-- An answer that must be there.
local function answer(c, head_only)
  local a, why = read_answer(c, head_only)
  assert(a, why)
  return a
end

-- The server has closed c: a read gets the end of the stream (luasocket
-- says "closed" for a FIN and for a reset alike) within timeout s.
local function assert_closed(c, timeout)
  c:settimeout(timeout or 10)
  local data, err = c:receive(1)
  assert.is_nil(data, "a byte after the last answer: " .. tostring(data))
  assert.equal("closed", err)
end

-- The server has not closed c, and sends nothing, for wait s (0.3).
local function assert_open(c, wait)
  c:settimeout(wait or 0.3)
  local data, err = c:receive(1)
  assert.is_nil(data, "unexpected byte: " .. tostring(data))
  assert.equal("timeout", err)
end

local function health_body()
  return '{"ok": true, "role": "leader", "leader": "' .. node.url .. '"}\n'
end

-- The whole answer to GET /health, byte for byte (keep-alive, HTTP/1.1).
local function health_answer()
  local b = health_body()
  return "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    .. "Content-Length: " .. #b .. "\r\n\r\n" .. b
end

local function assert_health(a)
  assert.equal(health_answer(), a.head .. a.body)
end

-- A JSON error answer: status, {"ok": false, "error": ...} with the
-- error containing words, Connection: close.
local function assert_refused(a, status, words, what)
  what = what or ""
  assert.equal(status, a.status, what .. ": " .. a.line .. " " .. a.body)
  assert.equal("application/json", a.headers["content-type"], what)
  assert.equal("close", a.headers["connection"], what)
  assert.equal(tostring(#a.body), a.headers["content-length"], what)
  local ok, doc = pcall(cjson.decode, a.body)
  assert.is_true(ok, what .. ": not JSON: " .. a.body)
  assert.is_false(doc.ok, what)
  assert.is_string(doc.error, what)
  if words then assert.matches(words, doc.error, 1, true) end
end

-- A new connection to the node is served: GET /health is 200.
local function assert_healthy(what)
  local c = connect()
  assert(c:send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n"))
  local a, why = read_answer(c)
  assert(a, (what or "") .. ": /health on a new connection: " .. tostring(why))
  assert_health(a)
  c:close()
end

local function req(method, path, body, extra)
  local t = { method .. " " .. path .. " HTTP/1.1", "Host: x" }
  for _, l in ipairs(extra or {}) do t[#t + 1] = l end
  if body then t[#t + 1] = "Content-Length: " .. #body end
  return table.concat(t, "\r\n") .. "\r\n\r\n" .. (body or "")
end

-- The node's resident memory, KiB.
local function rss_kib()
  local s = h.read_file("/proc/" .. node.pid .. "/status")
  return tonumber(s:match("VmRSS:%s+(%d+)"))
end

local function metric(name)
  local code, text = hh.request("GET", node.url .. "/metrics")
  assert.equal(200, code)
  return tonumber(text:match("\n" .. h.plain(name) .. " (%d+)\n"))
end

describe("the node's HTTP/1.1 server #http", function()
  setup(function()
    node = hh.start_node { args = { "--max-body-bytes", tostring(MAX_BODY) } }
  end)

  teardown(function()
    local ok, err = true, nil
    if node and node.pid then
      -- stopped with TERM: a node that crashed meanwhile, or cannot stop
      -- cleanly, fails the file (after everything is cleaned up)
      local done, a, how, code = pcall(hh.stop_node, node)
      ok = done and a and how == "exit" and code == 0
      err = done and ("node stopped with " .. tostring(how) .. " "
        .. tostring(code) .. ": " .. hh.read_log(node.log):sub(-2000)) or a
    end
    node = nil
    h.cleanup()
    assert(ok, err)
  end)

  after_each(function()
    for i = #socks, 1, -1 do
      socks[i]:close()
      socks[i] = nil
    end
  end)

  describe("pipelining", function()
    it("answers three requests written in one send in order, the third "
      .. "seeing the second's write", function()
      local c = connect()
      assert(c:send(req("GET", "/health")
        .. req("PUT", "/kv/pipe", "pipelined value")
        .. req("GET", "/kv/pipe")))
      assert_health(answer(c))
      local put = answer(c)
      assert.equal(200, put.status, put.body)
      assert.is_true(cjson.decode(put.body).ok)
      local get = answer(c)
      assert.equal("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream"
        .. "\r\nContent-Length: 15\r\n\r\npipelined value", get.head .. get.body)
      -- and the connection serves on
      assert(c:send(req("GET", "/health")))
      assert_health(answer(c))
    end)

    it("answers 200 pipelined writes and reads of bodies up to 8 KB, "
      .. "sent while the first writes are held for their commit", function()
      local c = connect(30)
      local want, out = {}, {}
      for i = 1, 100 do
        local k, v = "pp" .. i, h.value_for("pp" .. i, (i * 997) % 8000)
        want[i] = v
        out[#out + 1] = req("PUT", "/kv/" .. k, v)
        out[#out + 1] = req("GET", "/kv/" .. k)
      end
      -- about 400 KB: more than a read takes, and the server stops reading
      -- while a write it holds points into its buffer (small enough for
      -- the answers to fit the socket buffers while this send blocks)
      assert(c:send(table.concat(out)))
      for i = 1, 100 do
        local put = answer(c)
        assert.equal(200, put.status, "PUT " .. i .. ": " .. put.body)
        local get = answer(c)
        assert.equal(200, get.status, "GET " .. i)
        assert.equal(want[i], get.body, "GET " .. i)
      end
      assert_open(c)
    end)
  end)

  describe("requests cut at awkward places", function()
    it("takes a request written a byte at a time, and a head split inside "
      .. "its CRLF CRLF, with the next request pipelined behind", function()
      local c = connect()
      local r = req("PUT", "/kv/drip", "drop by drop")
      for i = 1, #r do
        assert(c:send(r:sub(i, i)))
        socket.sleep(0.002)
      end
      local put = answer(c)
      assert.equal(200, put.status, put.body)
      -- the end of one head and the start of the next in one piece; the
      -- next head's CRLF CRLF cut after CR, then after CRLF
      local two = req("GET", "/kv/drip") .. req("GET", "/health")
      local cuts = { #req("GET", "/kv/drip") - 1, -- "\r\n\r" | "\n"
                     #req("GET", "/kv/drip") + 10,
                     #two - 2, -- "...\r\n" | "\r\n"
                     #two - 1 } -- "...\r\n\r" | "\n"
      local from = 1
      for _, at in ipairs(cuts) do
        assert(c:send(two:sub(from, at)))
        from = at + 1
        socket.sleep(0.05)
      end
      assert(c:send(two:sub(from)))
      local get = answer(c)
      assert.equal(200, get.status)
      assert.equal("drop by drop", get.body)
      assert_health(answer(c))
      -- a head cut after its first CRLF of the final pair, alone
      assert(c:send("GET /health HTTP/1.1\r\nHost: x\r\n"))
      socket.sleep(0.1)
      assert_open(c, 0.1)
      assert(c:send("\r\n"))
      assert_health(answer(c))
    end)

    it("finds the end of a short head pipelined behind a long one, whatever "
      .. "the long one's length", function()
      -- the second head ends long before where the first one did, and
      -- its body (no line end in it) reaches past that place: a search
      -- for the head's end resumed at the first one's offset finds none
      local c = connect(5)
      for _, pad in ipairs { 300, 3000, 20000 } do
        local long = req("GET", "/health", nil,
          { "X-Pad: " .. ("p"):rep(pad) })
        local short = req("PUT", "/kv/short", ("s"):rep(pad + 100))
        assert(c:send(long .. short))
        assert_health(answer(c))
        local a = answer(c)
        assert.equal(200, a.status, pad .. ": " .. a.body)
      end
    end)
  end)

  describe("chunked request bodies", function()
    it("joins chunks sent in pieces, with a chunk extension and a trailer, "
      .. "and serves the request pipelined behind them", function()
      local c = connect()
      local pieces = {
        "PUT /kv/c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        "6;name=value\r", "\nchunk,", "\r\n",
        "1", "\r\n \r\n",
        "b\r\nsecond one,\r\n",
        "A\r\nthird 0123\r\n0\r\nX-Trailer: t", "rue\r\n",
        "\r\n" .. req("GET", "/kv/c"),
      }
      for _, p in ipairs(pieces) do
        assert(c:send(p))
        socket.sleep(0.03)
      end
      local put = answer(c)
      assert.equal(200, put.status, put.body)
      local get = answer(c)
      assert.equal("chunk, second one,third 0123", get.body)
      assert.equal("28", get.headers["content-length"])
      assert_open(c)
    end)

    it("answers a malformed chunk size 400 with a JSON error, then closes",
      function()
      local c = connect()
      assert(c:send("PUT /kv/c2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
        .. "chunked\r\n\r\n5\r\nhello\r\nzz\r\nabc\r\n0\r\n\r\n"))
      assert_refused(answer(c), 400, "chunk size")
      assert_closed(c)
      local code = hh.request("GET", node.url .. "/kv/c2")
      assert.equal(404, code)
    end)
  end)

  describe("Expect: 100-continue", function()
    it("sends 100 Continue after a head whose body has not come, then the "
      .. "answer", function()
      local c = connect()
      assert(c:send("PUT /kv/e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
        .. "Content-Length: 9\r\n\r\n"))
      c:settimeout(5)
      local line, err = c:receive("*l")
      assert.equal("HTTP/1.1 100 Continue", line, err)
      assert.equal("", (c:receive("*l")))
      assert_open(c, 0.1) -- nothing more until the body
      c:settimeout(10)
      assert(c:send("continued"))
      local put = answer(c)
      assert.equal(200, put.status, put.body)
      assert(c:send(req("GET", "/kv/e")))
      assert.equal("continued", answer(c).body)
    end)

    it("sends no 100 when the body came with the head", function()
      local c = connect()
      assert(c:send("PUT /kv/e2 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
        .. "Content-Length: 8\r\n\r\nat once!" .. req("GET", "/kv/e2")))
      local put = answer(c)
      assert.equal("HTTP/1.1 200 OK", put.line)
      local get = answer(c)
      assert.equal("HTTP/1.1 200 OK", get.line)
      assert.equal("at once!", get.body)
    end)
  end)

  describe("HTTP/1.0", function()
    it("answers HTTP/1.0 and closes, without Connection: keep-alive",
      function()
      local c = connect()
      assert(c:send("GET /health HTTP/1.0\r\n\r\n"))
      local a = answer(c)
      local b = health_body()
      assert.equal("HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n"
        .. "Content-Length: " .. #b .. "\r\nConnection: close\r\n\r\n" .. b,
        a.head .. a.body)
      assert_closed(c)
    end)

    it("keeps the connection with Connection: keep-alive, saying so",
      function()
      local c = connect()
      assert(c:send("GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"))
      local a = answer(c)
      assert.equal("HTTP/1.0 200 OK", a.line)
      assert.equal("keep-alive", a.headers.connection)
      assert.equal(health_body(), a.body)
      assert_open(c)
      assert(c:send("PUT /kv/ten HTTP/1.0\r\nConnection: keep-alive\r\n"
        .. "Content-Length: 3\r\n\r\n1.0"))
      a = answer(c)
      assert.equal("HTTP/1.0 200 OK", a.line)
      assert.equal("keep-alive", a.headers.connection)
      -- the last one without keep-alive: answered, then closed
      assert(c:send("GET /kv/ten HTTP/1.0\r\n\r\n"))
      a = answer(c)
      assert.equal("HTTP/1.0 200 OK", a.line)
      assert.equal("close", a.headers.connection)
      assert.equal("1.0", a.body)
      assert_closed(c)
    end)
  end)

  describe("Connection: close", function()
    it("answers an HTTP/1.1 request with Connection: close, then closes, "
      .. "dropping what was pipelined behind", function()
      local c = connect()
      assert(c:send(req("GET", "/health", nil, { "Connection: close" })
        .. req("PUT", "/kv/never", "x")))
      local a = answer(c)
      local b = health_body()
      assert.equal("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        .. "Content-Length: " .. #b .. "\r\nConnection: close\r\n\r\n" .. b,
        a.head .. a.body)
      assert_closed(c)
      assert.equal(404, (hh.request("GET", node.url .. "/kv/never")))
    end)
  end)

  describe("malformed heads", function()
    -- name, bytes, status, words of the error
    local CASES = {
      { "a garbage request line", "this is not http\r\n\r\n", 400 },
      { "a request line with two spaces", "GET  /health HTTP/1.1\r\n\r\n", 400 },
      { "a header line without a colon",
        "GET /health HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n", 400 },
      { "a bare LF line end", "GET /health HTTP/1.1\nHost: x\n\n", 400 },
      { "HTTP/2.0", "GET /health HTTP/2.0\r\nHost: x\r\n\r\n", 505,
        "HTTP version not supported" },
      { "HTTP/1.2", "GET /health HTTP/1.2\r\nHost: x\r\n\r\n", 505 },
      { "Content-Length with Transfer-Encoding",
        "PUT /kv/m HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        .. "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400,
        "Content-Length and Transfer-Encoding" },
      { "a bad Content-Length",
        "PUT /kv/m HTTP/1.1\r\nHost: x\r\nContent-Length: 12abc\r\n\r\n"
        .. "123456789012", 400, "Content-Length" },
      { "two Content-Lengths",
        "PUT /kv/m HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
        .. "Content-Length: 1\r\n\r\nx", 400, "Content-Length" },
      { "a head of 256 KiB (one header)",
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " .. ("b"):rep(256 * 1024)
        .. "\r\n\r\n", 431, "too large" },
    }
    for _, case in ipairs(CASES) do
      local name, bytes, status, words = case[1], case[2], case[3], case[4]
      it("answers " .. name .. " " .. status .. " with a JSON error, closes, "
        .. "and serves new connections", function()
        local c = connect()
        -- the 431's send may be cut short by the close: its answer is
        -- still there to read
        c:send(bytes)
        assert_refused(answer(c), status, words, name)
        assert_closed(c)
        assert_healthy(name)
      end)
    end
  end)

  describe("the body cap", function()
    it("answers a body far over the cap 413 at once, without reading it, "
      .. "and drops what the client goes on sending", function()
      local c = connect()
      local len = 100 * CAP
      -- only the head: the answer comes before any of the body
      assert(c:send("PUT /kv/huge HTTP/1.1\r\nHost: x\r\nContent-Length: "
        .. len .. "\r\n\r\n"))
      assert_refused(answer(c), 413, "over the node's limit")
      -- the server half-closes once its answer is out (a lingering
      -- close), and reads and drops the body: no reset while it comes
      local chunk = ("z"):rep(65536)
      for i = 1, 32 do -- 2 MiB, the node's read buffer many times over
        local n, err = c:send(chunk)
        assert.equal(#chunk, n, "send " .. i .. ": " .. tostring(err))
      end
      assert_closed(c)
      c:close()
      assert.equal(404, (hh.request("GET", node.url .. "/kv/huge")))
      assert_healthy()
    end)

    it("lets a body between the node's limit and the cap reach the route, "
      .. "whose 413 names the limit; the connection serves on", function()
      local c = connect()
      local body = ("y"):rep(MAX_BODY + 1)
      assert(c:send(req("PUT", "/kv/over", body) .. req("GET", "/health")))
      local a = answer(c)
      assert.equal(413, a.status)
      assert.matches("the limit is " .. MAX_BODY, cjson.decode(a.body).error,
        1, true)
      assert.is_nil(a.headers.connection)
      assert_health(answer(c))
    end)
  end)

  describe("HEAD", function()
    it("answers HEAD /status with GET's headers and Content-Length, and no "
      .. "body: the next request on the socket parses", function()
      local c = connect()
      assert(c:send(req("GET", "/status") .. req("HEAD", "/status")
        .. req("GET", "/health")))
      local get = answer(c)
      assert.equal(200, get.status)
      local head = answer(c, true)
      assert.equal("HTTP/1.1 200 OK", head.line)
      assert.equal(tostring(#get.body), head.headers["content-length"])
      assert.equal(get.head, head.head)
      -- had a body followed, this would read its first bytes
      assert_health(answer(c))
      assert_open(c)
    end)
  end)

  describe("clients that vanish", function()
    it("stays healthy after 200 clients send a request and close at once, "
      .. "some with a reset", function()
      local sends = {
        req("GET", "/health"),
        req("PUT", "/kv/gone", "held for its commit"),
        req("GET", "/scan?limit=1000"),
        req("PUT", "/kv/gone2", ("g"):rep(50000)),
        req("GET", "/metrics"),
      }
      for i = 1, 200 do
        local c = assert(socket.tcp())
        c:settimeout(10)
        assert(c:connect("127.0.0.1", node.port))
        c:send(sends[i % #sends + 1])
        if i % 3 == 0 then c:setoption("linger", { on = true, timeout = 0 }) end
        c:close()
      end
      assert_healthy()
      local st = hh.status(node)
      assert.equal("leader", st.role)
      assert.is_true(hh.alive(node.pid))
      -- every one of them closed and freed: only /metrics's own is open
      h.wait_until(function()
        return metric("lunakv_http_connections_open") == 1
      end, 10, function()
        return "open: " .. tostring(metric("lunakv_http_connections_open"))
      end)
      local log = hh.read_log(node.log)
      for _, bad in ipairs { "internal error", "AddressSanitizer",
                             "runtime error", "LeakSanitizer" } do
        assert.is_nil(log:find(bad, 1, true), log:sub(-2000))
      end
    end)
  end)

  describe("the absolute-form target", function()
    it("serves GET http://host:port/health", function()
      local c = connect()
      assert(c:send("GET " .. node.url .. "/health HTTP/1.1\r\nHost: x\r\n\r\n"))
      assert_health(answer(c))
    end)

    it("takes the query from the target only, never from a header",
      function()
      for i = 1, 3 do
        assert.equal(200, (hh.request("PUT", node.url .. "/kv/absq" .. i, "v")))
      end
      local c = connect()
      -- a target without a query, and a '?' in a header after it: the
      -- route sees no query (/scan's default limit, 100), not "limit=1"
      assert(c:send("GET " .. node.url .. "/scan HTTP/1.1\r\n"
        .. "X-Note: ?limit=1\r\nHost: x\r\n\r\n"))
      local a = answer(c)
      assert.equal(200, a.status, a.body)
      local doc = cjson.decode(a.body)
      assert.is_true(#doc.items >= 3, "items: " .. #doc.items .. ": "
        .. a.body:sub(1, 300))
    end)
  end)

  describe("a client that does not read", function()
    it("does not buffer answers without bound, and other clients are "
      .. "answered meanwhile", function()
      -- 40 values of 50 KB: each /scan answer is about 2 MB
      for i = 1, 40 do
        local code = hh.request("PUT", string.format("%s/kv/big%02d", node.url,
          i), h.value_for("big" .. i, 50000))
        assert.equal(200, code)
      end
      local before = rss_kib()
      local slow = connect()
      -- 100 requests for 200 MB of answers, none read
      assert(slow:send(req("GET", "/scan?start=big00&end=big99&limit=1000"):rep(100)))
      local worst = 0
      for _ = 1, 10 do
        socket.sleep(0.2)
        local t0 = socket.gettime()
        local code = hh.request("GET", node.url .. "/health")
        local dt = socket.gettime() - t0
        assert.equal(200, code)
        worst = math.max(worst, dt)
      end
      local grew = rss_kib() - before
      local what = string.format("for a client that does not read, the node "
        .. "grew by %d MiB and answered /health in %.2f s at worst",
        grew // 1024, worst)
      -- what the kernel's socket buffers do not take of one answer, and
      -- slack; not the 200 MB asked for
      assert.is_true(grew < 64 * 1024, what)
      -- generous: a 2-core machine with other work running
      assert.is_true(worst < 1.0, what)
      -- the first answers are intact when the client reads at last
      slow:settimeout(30)
      local a = answer(slow)
      assert.equal(200, a.status)
      assert.equal(40, #cjson.decode(a.body).items)
      slow:close()
      assert_healthy()
    end)
  end)
end)
