-- tools/plain_loops.lua - the seed-profile Lua rows as plain loops.
--
--   bin/lunakv run tools/plain_loops.lua [ROUNDS]     (default 7)
--
-- `lunakv bench` times every 8th operation inside its loops and compares
-- each row with a bare loop that carries the same timing. This script
-- measures what issue 5 states its goals in: loops with nothing inside
-- but the operation, timed from outside, against a loop that formats the
-- key and makes one C call (`type`). Rounds interleave the four loops, as
-- this VM's speed drifts over seconds; medians are printed, with each
-- row's share of the bare loop (the issue's goals: writes 0.316, reads
-- 0.324, misses 0.376 of its 2.5M/s reference loop).
--
-- Seed profile: N = 100,000, 16-byte keys, 100-byte values, our defaults.
-- Each round writes into a new database; reads and misses then run on it
-- as `lunakv bench` runs them (no flush in between).

local lunakv = require "lunakv"
local core = require "lunakv.core"

local rounds = tonumber(arg and arg[1] or "") or 7
local n = 100000
local fmt, kf, mf = string.format, "%016d", "%015d."
local val = string.rep("v", 100)

local function bare()
  local f = 0
  for i = 0, n - 1 do if type(fmt(kf, i)) then f = f + 1 end end
  return f
end

local function writes(db)
  for i = 0, n - 1 do db:set(fmt(kf, i), val) end
  return n
end

local function reads(db)
  local f = 0
  for i = 0, n - 1 do if db:get(fmt(kf, i)) then f = f + 1 end end
  return f
end

local function misses(db)
  local f = 0
  for i = 0, n - 1 do if db:get(fmt(mf, i // 10)) then f = f + 1 end end
  return f
end

-- ops/s of fn(db), and what it returned
local function rate(fn, db)
  collectgarbage()
  local t0 = core.clock()
  local r = fn(db)
  return n / (core.clock() - t0), r
end

local function median(t)
  table.sort(t)
  return t[(#t + 1) // 2]
end

local base = os.tmpname()
os.remove(base)
local got = { bare = {}, writes = {}, reads = {}, misses = {} }
for r = 1, rounds do
  local dir = base .. "-" .. r
  local db = lunakv.open(dir, {})
  got.bare[#got.bare + 1] = rate(bare)
  got.writes[#got.writes + 1] = rate(writes, db)
  local ops, found = rate(reads, db)
  assert(found == n, "reads found " .. found .. " of " .. n)
  got.reads[#got.reads + 1] = ops
  ops, found = rate(misses, db)
  assert(found == 0, "misses found " .. found)
  got.misses[#got.misses + 1] = ops
  got.bare[#got.bare + 1] = rate(bare)
  db:close()
  os.execute("rm -rf '" .. dir .. "'")
end

local b = median(got.bare)
print(string.format("%d rounds of %d ops, medians (bare loop: %.0f ops/s)",
  rounds, n, b))
for _, name in ipairs { "writes", "reads", "misses" } do
  local m = median(got[name])
  print(string.format("%-7s %9.0f ops/s  %.3f of bare", name, m, m / b))
end
