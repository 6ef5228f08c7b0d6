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
local bench = require "lunakv.bench"

local rounds = tonumber(arg and arg[1] or "") or 7
local n = 100000
-- the bench's own loops and key formats for 16-byte keys, without its
-- timing inside
local kf, mf = "%016d", "%015d."
local val = string.rep("v", 100)

-- ops/s of the bench's `base` loop on db, and the number it found
local function rate(base, db)
  local loop = bench.plain_loop(base)
  collectgarbage()
  local t0 = core.clock()
  local found = loop(db, nil, string.format, kf, mf, val, nil, math.random,
    nil, nil, nil, n, type)
  return n / (core.clock() - t0), found
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
  got.bare[#got.bare + 1] = rate("bare")
  got.writes[#got.writes + 1] = rate("writes", db)
  local ops, found = rate("reads", db)
  assert(found == n, "reads found " .. found .. " of " .. n)
  got.reads[#got.reads + 1] = ops
  ops, found = rate("misses", db)
  assert(found == 0, "misses found " .. found)
  got.misses[#got.misses + 1] = ops
  got.bare[#got.bare + 1] = rate("bare")
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
