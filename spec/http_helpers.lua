-- spec/http_helpers.lua - what the HTTP specs share on top of
-- spec/helpers.lua: requests from Lua (luasocket, Debian lua-socket), JSON
-- (lua-cjson), and real `bin/lunakv node` processes on 127.0.0.1 with
-- random high ports (a bind failure is retried on another port).

local h = require "spec.helpers"
local http = require "socket.http"
local ltn12 = require "ltn12"
local cjson = require "cjson"

local M = { json = cjson }

http.TIMEOUT = 10

-- request(method, url [, body [, headers]]) -> status, body, headers.
-- status is nil and body the error when the connection failed.
function M.request(method, url, body, headers)
  local out = {}
  local hdrs = {}
  for k, v in pairs(headers or {}) do hdrs[k] = v end
  if body then hdrs["content-length"] = tostring(#body) end
  local ok, code, rh = http.request {
    method = method, url = url, headers = hdrs,
    source = body and ltn12.source.string(body) or nil,
    sink = ltn12.sink.table(out),
  }
  if not ok then return nil, code end
  return code, table.concat(out), rh
end

-- The same, with the body decoded as JSON (nil when it is not JSON).
function M.json_request(method, url, body)
  local code, text, hdrs = M.request(method, url, body,
    body and { ["content-type"] = "application/json" } or nil)
  local okj, doc = pcall(cjson.decode, text or "")
  return code, okj and doc or nil, text, hdrs
end

-- URL-encode every byte but unreserved ones.
function M.urlencode(s)
  return (s:gsub("[^%w%-%._~]", function(c)
    return string.format("%%%02X", c:byte())
  end))
end

-- Running (a zombie, exited but not yet reaped, is not).
local function alive(pid)
  local f = io.open("/proc/" .. pid .. "/stat", "r")
  if not f then return false end
  local st = f:read("a")
  f:close()
  return st:match("^%d+ %b() (%a)") ~= "Z"
end
M.alive = alive

-- A log file's text, "" while it does not exist yet.
function M.read_log(path)
  return h.exists(path) and h.read_file(path) or ""
end

-- Start a node. spec: { dir = DATA_DIR (default a tmpdir), leader = "self"
-- or a URL, others = { extra node URLs }, args = { extra flags },
-- port = fixed port }. Returns node { url, port, dir, pid, log = stderr
-- path } once /health answers.
function M.start_node(spec)
  spec = spec or {}
  local dir = spec.dir or (h.tmpdir() .. "/node")
  for _ = 1, 20 do
    -- below Linux's ephemeral range (32768..), where client sockets live
    local port = spec.port or math.random(20000, 32000)
    local url = "http://127.0.0.1:" .. port
    local leader = (spec.leader == nil or spec.leader == "self") and url
      or spec.leader
    local nodes = { url }
    for _, u in ipairs(spec.others or {}) do nodes[#nodes + 1] = u end
    local cmd = table.concat({ h.lua, h.quote(h.bin), "node", port,
      h.quote(dir), h.quote(leader), h.quote(table.concat(nodes, ",")),
      table.concat(spec.args or {}, " ") }, " ")
    local pid, p = h.spawn(cmd)
    local node = { url = url, port = port, dir = dir, pid = pid,
                   log = p.err, leader = leader }
    local up = h.wait_until(function()
      if not alive(pid) then return "dead" end
      local code = M.request("GET", url .. "/health")
      return code == 200 and "up" or nil
    end, 20, function() return M.read_log(p.err) end)
    if up == "up" then return node end
    h.wait(pid)
    local log = M.read_log(p.err)
    if not log:find("cannot listen", 1, true) or spec.port then
      error("node did not start: " .. log)
    end
  end
  error("no free port after 20 tries")
end

-- Stop a node with sig (default TERM) and reap it; returns how it ended:
-- ok, "exit"/"signal", code.
function M.stop_node(node, sig)
  if not node.pid then return nil end
  h.kill(node.pid, sig or "TERM")
  local a, b, c = h.wait(node.pid)
  node.pid = nil
  return a, b, c
end

-- Restart a stopped node on the same port and directory.
function M.restart(node, spec)
  spec = spec or {}
  spec.dir, spec.port = node.dir, node.port
  if node.leader ~= node.url then spec.leader = node.leader end
  return M.start_node(spec)
end

function M.status(node)
  local code, doc = M.json_request("GET", node.url .. "/status")
  assert(code == 200, "status: " .. tostring(code))
  return doc
end

function M.set(node, k, v)
  return M.json_request("POST", node.url .. "/set",
    cjson.encode { key = k, value = v })
end

function M.get(node, k)
  return M.json_request("GET", node.url .. "/get?key=" .. M.urlencode(k))
end

return M
