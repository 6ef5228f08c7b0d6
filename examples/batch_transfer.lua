-- batch_transfer.lua - move money between accounts atomically: a batch
-- applies all its writes at once (one WAL record, one visible step), so no
-- reader ever sees money that left one account but has not arrived.
--
--   bin/lunakv run examples/batch_transfer.lua [DIR]
--
-- Without DIR a temporary directory is used and removed at the end.
local lunakv = require "lunakv"
-- examples/lib/store_dir.lua: the directory named, or a temporary one
package.path = arg[0]:gsub("[^/]*$", "") .. "lib/?.lua;" .. package.path
local store_dir = require "store_dir"

local dir, remove_dir = store_dir(arg[1])

local db = lunakv.open(dir, { sync = "always" }) -- fdatasync each commit

local function balance(reader, who)
  return tonumber(reader:get("account:" .. who) or "0")
end

local function total(reader)
  local sum = 0
  for _, v in reader:scan("account:", "account:~") do sum = sum + tonumber(v) end
  return sum
end

-- Opening balances, in one batch too.
local b = db:batch()
b:set("account:alice", "100")
b:set("account:bob", "50")
b:set("account:carol", "0")
b:commit()
print("total before: " .. total(db))

local transfers = 0

-- transfer(from, to, amount): checks, then one atomic commit. The batch is
-- emptied by commit and can be reused for the next transfer.
local function transfer(from, to, amount)
  local have = balance(db, from)
  if have < amount then
    error(("%s has %d, cannot send %d"):format(from, have, amount), 2)
  end
  b:set("account:" .. from, tostring(have - amount))
  b:set("account:" .. to, tostring(balance(db, to) + amount))
  transfers = transfers + 1
  b:set(("log:%04d"):format(transfers), ("%s -> %s %d"):format(from, to, amount))
  return b:commit()
end

local before = db:snapshot() -- the view before any transfer

print("alice -> bob 30 at seq " .. transfer("alice", "bob", 30))
print("bob -> carol 70 at seq " .. transfer("bob", "carol", 70))
local ok, err = pcall(transfer, "carol", "alice", 1000)
print("carol -> alice 1000 refused: " .. tostring(not ok and err))

for _, who in ipairs { "alice", "bob", "carol" } do
  print(("%-5s now %3d, before %3d"):format(who, balance(db, who),
    balance(before, who)))
end
print("total after: " .. total(db) .. ", in the old snapshot: " .. total(before))
assert(total(db) == total(before))

print("transfer log:")
for k, v in db:scan("log:", "log:~") do print("  " .. k .. "  " .. v) end

before:release()
b:close() -- optional: the garbage collector frees it too
db:close()
remove_dir()
