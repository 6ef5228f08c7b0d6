-- quickstart.lua - open a store, write, read, scan, delete, look at stats.
--
--   bin/lunakv run examples/quickstart.lua [DIR]
--
-- Without DIR the store lives in a fresh temporary directory that is
-- removed at the end; with DIR it is kept (run it twice and the keys are
-- still there).
local lunakv = require "lunakv"

local dir, temporary = arg[1], false
if not dir then
  -- os.tmpname() creates a unique file; reuse its name for our directory
  dir = os.tmpname()
  os.remove(dir)
  temporary = true
end

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
print(("seq %d, %d sstable(s), %d bytes on disk, L0 has %d table(s)")
  :format(st.seq, st.sstable_count, st.total_size_bytes,
          st.sstables_per_level[1]))

db:close() -- also done by the garbage collector or a <close> variable

if temporary then
  os.execute("rm -rf '" .. dir:gsub("'", "'\\''") .. "'")
end
