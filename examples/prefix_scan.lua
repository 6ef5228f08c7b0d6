-- prefix_scan.lua - range scans over key prefixes: the usual way to keep
-- several kinds of records in one ordered store ("user:", "order:"), and
-- to read one kind, one owner, or one time window back in key order.
--
--   bin/lunakv run examples/prefix_scan.lua [DIR]
--
-- Without DIR a temporary directory is used and removed at the end.
local lunakv = require "lunakv"
-- examples/lib/store_dir.lua: the directory named, or a temporary one
package.path = arg[0]:gsub("[^/]*$", "") .. "lib/?.lua;" .. package.path
local store_dir = require "store_dir"

local dir, remove_dir = store_dir(arg[1])

local db <close> = lunakv.open(dir)

-- Keys are built so that their byte order is the order we want to read
-- them in: fixed-width numbers, most significant part first.
db:set("user:0001:name", "ada")
db:set("user:0001:email", "ada@example.org")
db:set("user:0002:name", "grace")
db:set("user:0002:email", "grace@example.org")
db:set("user:0010:name", "linus")
for i, item in ipairs { "tea", "bread", "lamp", "ink", "rope" } do
  local user = i % 2 == 1 and "0001" or "0002"
  -- order:<user>:<time> so one user's orders sit together, oldest first
  db:set(string.format("order:%s:2024-05-%02d", user, i * 3), item)
end
db:set("userx", "not a user record") -- shares the bytes "user" only

-- prefix(p): every key that starts with p, in order. scan(p, nil) starts
-- at the first key >= p; the loop stops at the first key past the prefix
-- (leaving the for loop early closes the engine iterator at once).
local function prefix(reader, p)
  local out = {}
  for k, v in reader:scan(p, nil) do
    if k:sub(1, #p) ~= p then break end
    out[#out + 1] = { k, v }
  end
  return out
end

-- The same with both bounds given to the engine: the smallest key above
-- every key that starts with p is p with its last byte raised by one
-- ("user:" -> "user;"). scan is inclusive, so that key itself is skipped.
local function prefix_end(p)
  local i = #p
  while i > 0 and p:byte(i) == 255 do i = i - 1 end
  if i == 0 then return nil end -- all 0xff: no upper bound
  return p:sub(1, i - 1) .. string.char(p:byte(i) + 1)
end

local function prefix_bounded(reader, p)
  local hi, out = prefix_end(p), {}
  for k, v in reader:scan(p, hi) do
    if k ~= hi then out[#out + 1] = { k, v } end
  end
  return out
end

local function show(title, rows)
  print(title)
  for _, r in ipairs(rows) do print("  " .. r[1] .. " = " .. r[2]) end
end

show("users (prefix \"user:\"):", prefix(db, "user:"))
show("user 0001:", prefix(db, "user:0001:"))
show("orders of user 0002:", prefix(db, "order:0002:"))

-- A time window inside one user's orders: an ordinary inclusive range.
show("user 0001, orders from May 5 to May 14:",
  (function()
    local out = {}
    for k, v in db:scan("order:0001:2024-05-05", "order:0001:2024-05-14") do
      out[#out + 1] = { k, v }
    end
    return out
  end)())

-- Both prefix helpers agree, and neither returns "userx".
local a, b = prefix(db, "user:"), prefix_bounded(db, "user:")
assert(#a == 5 and #b == 5)
for i = 1, #a do assert(a[i][1] == b[i][1]) end

-- A prefix scan over a snapshot ignores later writes.
local snap <close> = db:snapshot()
db:set("user:0003:name", "barbara")
print(string.format("users now %d, in the snapshot %d",
  #prefix(db, "user:"), #prefix(snap, "user:")))
assert(#prefix(snap, "user:") == 5)
snap:release()

-- Counting a prefix without keeping the rows.
local n = 0
for k in db:scan("order:", prefix_end("order:")) do
  if k ~= prefix_end("order:") then n = n + 1 end
end
print("orders: " .. n)
assert(n == 5)

db:close()
remove_dir()
