-- quickstart.lua - open a store, write, read, scan, delete, look at stats.
--
--   bin/lunakv run examples/quickstart.lua [DIR]
--
-- Without DIR the store lives in a fresh temporary directory that is
-- removed at the end; with DIR it is kept (run it twice and the keys are
-- still there).
local lunakv = require "lunakv"
-- examples/lib/store_dir.lua: the directory named, or a temporary one
package.path = arg[0]:gsub("[^/]*$", "") .. "lib/?.lua;" .. package.path
local store_dir = require "store_dir"

local dir, remove_dir = store_dir(arg[1])

-- Options are checked by name: a typo such as { max_memtable_sise = 1 }
-- raises an error listing the valid names.
local db = lunakv.open(dir, { max_memtable_size = 1024 * 1024, sync = "batch" })
print("opened " .. tostring(db))

-- Every write returns its sequence number.
local seq = db:set("greeting", "hello")
print("set greeting at seq " .. seq)
db:set("fruit:apple", "red")
db:set("fruit:banana", "yellow")
db:set("fruit:cherry", "dark red")

-- Keys and values are byte strings: embedded zeros are fine.
db:set("binary\0key", "a\0b")
assert(db:get("binary\0key") == "a\0b")

print("greeting = " .. db:get("greeting"))
print("missing  = " .. tostring(db:get("no such key"))) -- nil when absent

-- Overwrite, then read the old version back by sequence number.
db:set("greeting", "hello again")
print("greeting now " .. db:get("greeting") .. ", at seq " .. seq .. " "
  .. db:get("greeting", seq))

-- Scans are inclusive on both ends and ascending; nil leaves an end open.
-- Leaving the loop early (break) frees the engine iterator at once.
print("fruit:")
for k, v in db:scan("fruit:", "fruit:\255") do
  print("  " .. k .. " = " .. v)
end

db:delete("fruit:banana")
print("after delete, fruit:banana = " .. tostring(db:get("fruit:banana")))

-- Push the memtable into an SSTable and look at the numbers.
db:flush()
local st = db:stats()
print(("seq %d, %d sstable(s), %d bytes on disk")
  :format(st.seq, st.sstable_count, st.total_size_bytes))

-- Where did the flush put its table? db:tables() lists every table with
-- its level; the newest (highest number) is the one the flush wrote. Not
-- necessarily L0: like LevelDB, the engine puts a flushed table as deep
-- as L2 when no table in the levels above overlaps its keys.
local newest
for _, t in ipairs(db:tables()) do
  if not newest or t.number > newest.number then newest = t end
end
-- Why there: the engine's rule (lkv_vset_flush_level in c/engine/vset.c).
local why = {
  [0] = ":\n  its keys overlap a table in L0 or L1, so the flush starts at the top",
  [1] = ", not L0:\n  its keys overlap no table in L0 or L1 but one in L2, so it went one level\n"
    .. "  down (a flushed table goes down to L2 when nothing is in its way)",
  [2] = ", not L0:\n  its keys overlap no table in L0 or L1, so it went down to L2 at once\n"
    .. "  (as in LevelDB): no compaction has to move it there later",
}
if newest then
  print(("the flush wrote table %d (%d bytes) into L%d%s"):format(
    newest.number, newest.size, newest.level, why[newest.level] or ""))
end
-- stats() counts the tables of every level (index 1 is L0)
local levels, deepest = {}, 1
for level, n in ipairs(st.sstables_per_level) do
  if n > 0 then deepest = level end
end
for level = 1, math.max(deepest, 3) do
  levels[#levels + 1] = ("L%d %d"):format(level - 1,
    st.sstables_per_level[level])
end
print("tables per level: " .. table.concat(levels, ", "))

db:close() -- also done by the garbage collector or a <close> variable

remove_dir()
