-- snapshot.lua - a snapshot is a pinned, consistent view: later writes,
-- deletes, flushes and compactions do not change what it shows.
--
--   bin/lunakv run examples/snapshot.lua [DIR]
--
-- Without DIR a temporary directory is used and removed at the end.
local lunakv = require "lunakv"
-- examples/lib/store_dir.lua: the directory named, or a temporary one
package.path = arg[0]:gsub("[^/]*$", "") .. "lib/?.lua;" .. package.path
local store_dir = require "store_dir"

local dir, remove_dir = store_dir(arg[1])

local db = lunakv.open(dir)

db:set("config:mode", "primary")
db:set("config:replicas", "3")
db:set("config:region", "eu")

do
  -- <close> releases the snapshot when the block ends, even on error.
  local snap <close> = db:snapshot()
  print("snapshot pinned at seq " .. snap.seq)

  -- Change the live data after the snapshot was taken.
  db:set("config:mode", "standby")
  db:delete("config:region")
  db:set("config:zone", "b")
  db:flush()   -- moving data into SSTables does not disturb the view
  db:compact() -- nor does rewriting them

  print("live view:")
  for k, v in db:scan("config:", "config:~") do print("  " .. k .. " = " .. v) end
  print("snapshot view:")
  for k, v in snap:scan("config:", "config:~") do print("  " .. k .. " = " .. v) end

  assert(snap:get("config:mode") == "primary")
  assert(snap:get("config:region") == "eu")
  assert(snap:get("config:zone") == nil)

  -- The same reads work without a snapshot by passing a sequence number,
  -- as long as a snapshot keeps that history from being compacted away.
  assert(db:get("config:mode", snap.seq) == "primary")
end

-- An iterator gives step-by-step control: seek, then walk.
local it <close> = db:iter()
it:seek("config:r")
while it:valid() do
  print("iter " .. it:key() .. " = " .. it:value())
  it:next()
end
it:close()

db:close()
remove_dir()
