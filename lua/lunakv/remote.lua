-- lunakv.remote - a client for a running node over HTTP (docs/http_api.md),
-- shaped like a db so the shell's commands and Lua lines work on it:
--
--   local node = require("lunakv.remote").connect("http://127.0.0.1:8000")
--   node:set(k, v) --> the log index     node:get(k) --> value or nil
--   node:delete(k) --> the log index     for k, v in node:scan(lo, hi) do end
--   node:stats(), node:status(), node:health() --> the decoded JSON
--
-- Requests go through core.http_request (C, libevent). Keys and values are
-- binary safe: text goes through the seed's JSON routes (/set, /delete),
-- bytes that are not UTF-8 through the raw /kv/{key} route, and base64
-- answers ("value_encoding": "base64") are decoded. A node's refusal
-- (4xx/5xx with {"ok": false, "error": ...}) raises
-- "lunakv: URL answered 503: <the node's sentence>"; a transport failure
-- raises core's "lunakv: io error: cannot connect to URL: ...".

local core = require "lunakv.core"
local cjson = require "cjson"

local M = {}

local Client = {}
Client.__index = Client

M.TIMEOUT_MS = 10000

-- {======================================================================
-- Encoding
-- =======================================================================

-- URL-encode every byte but the unreserved ones (RFC 3986).
function M.urlencode(s)
  return (s:gsub("[^%w%-%._~]", function(c)
    return string.format("%%%02X", c:byte())
  end))
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local B64INV = {}
for i = 1, 64 do B64INV[B64:byte(i)] = i - 1 end

-- Standard base64 (padded) to bytes; nil for malformed input.
function M.base64_decode(s)
  s = s:gsub("%s", "")
  if #s % 4 ~= 0 then return nil end
  local out = {}
  for i = 1, #s, 4 do
    local a, b, c, d = s:byte(i, i + 3)
    local va, vb = B64INV[a], B64INV[b]
    local vc, vd = B64INV[c], B64INV[d]
    if not va or not vb then return nil end
    local n = va << 18 | vb << 12 | (vc or 0) << 6 | (vd or 0)
    if c == 61 then -- "=="
      out[#out + 1] = string.char(n >> 16)
    elseif d == 61 then
      if not vc then return nil end
      out[#out + 1] = string.char(n >> 16, (n >> 8) & 255)
    else
      if not vc or not vd then return nil end
      out[#out + 1] = string.char(n >> 16, (n >> 8) & 255, n & 255)
    end
  end
  return table.concat(out)
end

-- A member of an answer, decoded when it comes in base64.
local function member(doc, name)
  local v = doc[name]
  if v == nil or v == cjson.null then return nil end
  if doc[name .. "_encoding"] == "base64" then
    local raw = M.base64_decode(v)
    if not raw then
      error("lunakv: the node sent bad base64 in \"" .. name .. "\"", 0)
    end
    return raw
  end
  return v
end

-- lua-cjson decodes every number as a float; indexes and counters read
-- better (and compare equal to integers in tables) as integers.
local function integers(v)
  if type(v) == "table" then
    for k, x in pairs(v) do
      if math.type(x) == "float" then
        v[k] = math.tointeger(x) or x
      elseif type(x) == "table" then
        integers(x)
      end
    end
  end
  return v
end

local function is_text(s)
  return utf8.len(s) ~= nil
end

-- }======================================================================

-- {======================================================================
-- Requests
-- =======================================================================

-- Normalise a base URL: http://HOST[:PORT], no trailing slash. Returns it,
-- or nil and why.
function M.base_url(url)
  if type(url) ~= "string" then return nil, "a URL must be a string" end
  local u = url:gsub("/+$", "")
  if not u:match("^[Hh][Tt][Tt][Pp]://[^/?#]+$") then
    return nil, "'" .. url .. "' is not a node URL (expected "
      .. "http://HOST:PORT)"
  end
  return u
end

-- M.new(url [, opts]) -> a client, without contacting the node. opts:
-- timeout_ms (default 10000), consistent (reads through the leader).
function M.new(url, opts)
  local base, why = M.base_url(url)
  if not base then error("lunakv: " .. why, 2) end
  opts = opts or {}
  return setmetatable({ url = base, timeout_ms = opts.timeout_ms
    or M.TIMEOUT_MS, consistent = opts.consistent }, Client)
end

-- M.connect(url [, opts]) -> a client, once GET /health answers 200.
function M.connect(url, opts)
  local c = M.new(url, opts)
  c:health()
  return c
end

local JSON_HEADERS = { ["Content-Type"] = "application/json" }

-- The raw exchange: status, body text (any status).
function Client:raw(method, path, body, headers)
  return core.http_request(method, self.url .. path, body, headers,
    self.timeout_ms)
end

-- A request whose answer must be 2xx JSON: returns the decoded document,
-- or raises with the node's own error sentence.
function Client:request(method, path, body)
  local status, text = self:raw(method, path, body,
    body and JSON_HEADERS or nil)
  local ok, doc = pcall(cjson.decode, text)
  if not ok or type(doc) ~= "table" then doc = nil end
  integers(doc)
  if status < 200 or status > 299 then
    local why = doc and type(doc.error) == "string" and doc.error
      or (text:gsub("%s+", " "):sub(1, 200))
    error(string.format("lunakv: %s answered %d: %s", self.url, status,
      why), 0)
  end
  if not doc then
    error(string.format("lunakv: %s%s answered %d with a body that is not "
      .. "a JSON object", self.url, path, status), 0)
  end
  return doc
end

-- }======================================================================

-- {======================================================================
-- The db-shaped methods
-- =======================================================================

local function checkstr(v, n, fname)
  if type(v) ~= "string" then
    error(string.format("bad argument #%d to '%s' (string expected, got %s)",
      n, fname, type(v)), 3)
  end
end

-- set(key, value) -> the write's log index.
function Client:set(key, value)
  checkstr(key, 1, "set")
  checkstr(value, 2, "set")
  local doc
  if is_text(key) and is_text(value) then
    doc = self:request("POST", "/set", cjson.encode { key = key,
      value = value })
  else -- bytes JSON cannot carry as a string: the raw route
    doc = self:request("PUT", "/kv/" .. M.urlencode(key), value)
  end
  return math.tointeger(doc.index) or doc.index
end

-- get(key) -> value, or nil when absent.
function Client:get(key, at)
  checkstr(key, 1, "get")
  if at ~= nil then
    error("lunakv: reads at a sequence number are not available over HTTP "
      .. "(a node serves its latest applied state)", 2)
  end
  local doc = self:request("GET", "/get?key=" .. M.urlencode(key)
    .. (self.consistent and "&consistent=true" or ""))
  return member(doc, "value")
end

-- delete(key) -> the tombstone's log index.
function Client:delete(key)
  checkstr(key, 1, "delete")
  local doc
  if is_text(key) then
    doc = self:request("POST", "/delete", cjson.encode { key = key })
  else
    doc = self:request("DELETE", "/kv/" .. M.urlencode(key))
  end
  return math.tointeger(doc.index) or doc.index
end

-- scan([lo [, hi [, page]]]) -> an iterator of key, value over [lo, hi]
-- (nil: open), fetched page rows at a time (default and most 1000).
function Client:scan(lo, hi, page)
  if lo ~= nil then checkstr(lo, 1, "scan") end
  if hi ~= nil then checkstr(hi, 2, "scan") end
  page = math.max(1, math.min(page or 1000, 1000))
  local items, i, more, start = {}, 1, true, lo
  local function fetch()
    local q = { "limit=" .. page }
    if start then q[#q + 1] = "start=" .. M.urlencode(start) end
    if hi then q[#q + 1] = "end=" .. M.urlencode(hi) end
    local doc = self:request("GET", "/scan?" .. table.concat(q, "&"))
    items, i = {}, 1
    for _, it in ipairs(type(doc.items) == "table" and doc.items or {}) do
      items[#items + 1] = { member(it, "key"), member(it, "value") or "" }
    end
    more = doc.more == true
    if #items > 0 then
      start = items[#items][1] .. "\0" -- the smallest key after the last
    end
  end
  return function()
    if i > #items then
      if not more then return nil end
      fetch()
      if #items == 0 then return nil end
    end
    local it = items[i]
    i = i + 1
    return it[1], it[2]
  end
end

-- Stored functions (docs/functions.md, "On a node"), shaped as the db's
-- methods: put_library -> function names; libraries -> { { name,
-- functions, read_only = { f = true }, error }, ... }; delete_library;
-- call_json -> the result as JSON text, and the log index when it wrote.
local function fname(v, what)
  if type(v) ~= "string" or not v:match("^[%w_.-]+$") then
    error("lunakv: " .. what .. " name must be 1 to 64 bytes of "
      .. "[A-Za-z0-9_.-]", 0)
  end
  return v
end

function Client:put_library(name, source)
  checkstr(source, 2, "put_library")
  local doc = self:request("PUT", "/functions/" .. fname(name, "library"),
    source)
  return doc.functions
end

function Client:delete_library(name)
  self:request("DELETE", "/functions/" .. fname(name, "library"))
end

function Client:libraries()
  local out = {}
  for i, lib in ipairs(self:request("GET", "/functions").libraries) do
    local ro = {}
    for _, f in ipairs(lib.read_only) do ro[f] = true end
    out[i] = { name = lib.name, functions = lib.functions, read_only = ro,
      error = lib.error }
  end
  return out
end

function Client:call_json(fn, json)
  local doc = self:request("POST", "/call/" .. fname(fn, "function"), json)
  return cjson.encode(doc.result), doc.index
end

function Client:stats() return self:request("GET", "/stats") end
function Client:status() return self:request("GET", "/status") end
function Client:health() return self:request("GET", "/health") end

-- Nothing is held between requests; close exists so a client can stand
-- where a local db is closed.
function Client.close(_self) end

Client.__tostring = function(c) return "lunakv.remote (" .. c.url .. ")" end
Client.__close = function() end

-- }======================================================================

return M
