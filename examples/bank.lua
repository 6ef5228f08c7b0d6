-- bank.lua - accounts and transfers as stored functions: each function
-- runs next to the data, reads a consistent state and commits all its
-- writes at once, so no transfer is half done and none is lost.
--
-- The file is two things (docs/functions.md):
--   a library   loaded with db:put_library("bank", source), or in the
--               shell FUNCTION LOAD bank examples/bank.lua; it registers
--               open, transfer, balance and total;
--   a script    bin/lunakv run examples/bank.lua [DIR] loads this file as
--               that library into a store and calls its functions.
-- Inside a library's sandbox the global `lunakv` is the table with
-- register; when run as a script there is no such global.

-- luacheck: globals lunakv

local PREFIX = "account:"

if lunakv and lunakv.register then
  -- An amount: an integer >= min (whole JSON numbers arrive as integers).
  local function amount_of(v, min)
    if math.type(v) ~= "integer" or v < min then
      error(("amount must be an integer >= %d, got %s"):format(min,
        tostring(v)), 2)
    end
    return v
  end

  local function name_of(v)
    if type(v) ~= "string" or v == "" then
      error("an account name is a non-empty string", 2)
    end
    return v
  end

  local function balance_of(tx, who)
    local v = tx:get(PREFIX .. who)
    if v == nil then error("no account '" .. who .. "'", 2) end
    return math.tointeger(tonumber(v))
  end

  -- open {account = name [, amount = n]}: a new account, 0 by default
  lunakv.register("open", function(tx, args)
    local who = name_of(args and args.account)
    if tx:get(PREFIX .. who) ~= nil then
      error("account '" .. who .. "' exists")
    end
    local n = args.amount == nil and 0 or amount_of(args.amount, 0)
    tx:set(PREFIX .. who, tostring(n))
    return n
  end)

  -- transfer {from =, to =, amount =}: both balances, or neither
  lunakv.register("transfer", function(tx, args)
    local from, to = name_of(args and args.from), name_of(args.to)
    local n = amount_of(args.amount, 1)
    if from == to then error("from and to are the same account") end
    local have, dest = balance_of(tx, from), balance_of(tx, to)
    if have < n then
      error(("'%s' has %d, cannot send %d"):format(from, have, n))
    end
    tx:set(PREFIX .. from, tostring(have - n))
    tx:set(PREFIX .. to, tostring(dest + n))
    return { [from] = have - n, [to] = dest + n }
  end)

  lunakv.register("balance", function(tx, args)
    return balance_of(tx, name_of(args and args.account))
  end, { read_only = true })

  -- total: every account's balance, summed (constant under transfers)
  lunakv.register("total", function(tx)
    local sum, n = 0, 0
    for _, v in tx:scan(PREFIX, PREFIX .. "\255") do
      sum, n = sum + math.tointeger(tonumber(v)), n + 1
    end
    return { total = sum, accounts = n }
  end, { read_only = true })
  return
end

-- The script: this very file, stored as the library "bank".
local lunakv_mod = require "lunakv"
package.path = arg[0]:gsub("[^/]*$", "") .. "lib/?.lua;" .. package.path
local store_dir = require "store_dir"

local dir, remove_dir = store_dir(arg[1])
local f = assert(io.open(arg[0], "rb"))
local source = f:read("a")
f:close()

local db = lunakv_mod.open(dir)
local names = db:put_library("bank", source)
print("library bank: " .. table.concat(names, ", "))

-- a name already taken, when DIR is reused, is not an error here
for _, a in ipairs { { "alice", 100 }, { "bob", 50 }, { "carol", 0 } } do
  local who, amount = a[1], a[2]
  local ok, err = pcall(db.call, db, "open", { account = who, amount = amount })
  if ok then print(("opened %s with %d"):format(who, amount))
  else print(err) end
end
local t = db:call("total")
print(("total before: %d in %d accounts"):format(t.total, t.accounts))

local moved, seq = db:call("transfer", { from = "alice", to = "bob", amount = 30 })
print(("alice -> bob 30 at seq %d: alice %d, bob %d"):format(seq, moved.alice,
  moved.bob))

-- refused inside the function: nothing of it is written
local ok, err = pcall(db.call, db, "transfer",
  { from = "carol", to = "alice", amount = 1000 })
print("carol -> alice 1000 refused: " .. tostring(not ok and err))

print("balance of bob: " .. db:call("balance", { account = "bob" }))
db:close()

-- the library is data in the store: it is there after a reopen
db = lunakv_mod.open(dir)
t = db:call("total")
print(("after reopen, total: %d; libraries: %s"):format(t.total,
  db:libraries()[1].name))
db:close()
remove_dir()
