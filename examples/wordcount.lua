-- wordcount.lua - a small ingest workload: count the words of a text in
-- the store, one atomic batch per line, then list the most frequent words
-- with a prefix scan and check every count against a plain Lua table.
--
--   bin/lunakv run examples/wordcount.lua [DIR [FILE]]
--
-- Without DIR a temporary directory is used and removed at the end;
-- without FILE a built-in text is counted. Keys: "count:<word>" -> decimal count,
-- "line:<nnnnnn>" -> the line itself (so the text can be read back in
-- order with a scan).
local lunakv = require "lunakv"
-- examples/lib/store_dir.lua: the directory named, or a temporary one
package.path = arg[0]:gsub("[^/]*$", "") .. "lib/?.lua;" .. package.path
local store_dir = require "store_dir"

local TEXT = [[
The write-ahead log takes every write first, then the memtable.
When the memtable is full it is frozen, and a fresh one takes the writes.
A background thread writes the frozen memtable to a sorted table file.
Reads look in the memtable, then the frozen one, then the table files.
Compaction merges the table files, level by level, and drops the old
versions that no snapshot can see. The log, the memtable and the tables
are the whole of the store.
]]

local file = arg[2]
local text = TEXT
if file then
  local f = assert(io.open(file, "r"))
  text = f:read("a")
  f:close()
end

local dir, remove_dir = store_dir(arg[1])

local db <close> = lunakv.open(dir)
local expected = {} -- the same counts, kept in Lua, to check the store

-- One batch per line: the line and the new counts of its words become
-- visible together, so a reader never sees a line without its counts.
local lineno, words = 0, 0
for line in text:gmatch("[^\n]+") do
  lineno = lineno + 1
  local b = db:batch()
  b:set(string.format("line:%06d", lineno), line)
  local seen = {} -- counts changed by this line, read once from the store
  for word in line:lower():gmatch("[%a][%a'-]*") do
    local key = "count:" .. word
    seen[key] = (seen[key] or tonumber(db:get(key) or "0")) + 1
    expected[word] = (expected[word] or 0) + 1
    words = words + 1
  end
  for key, n in pairs(seen) do b:set(key, tostring(n)) end
  b:commit()
  b:close()
end
print(string.format("ingested %d lines, %d words", lineno, words))

-- Every count in the store, by a scan over the "count:" prefix: the keys
-- come back sorted, so this is also the vocabulary in alphabetical order.
local counts, distinct = {}, 0
for key, value in db:scan("count:", nil) do
  if key:sub(1, 6) ~= "count:" then break end -- past the prefix: stop
  local word = key:sub(7)
  counts[#counts + 1] = { word = word, n = tonumber(value) }
  distinct = distinct + 1
  assert(expected[word] == tonumber(value), "count of " .. word)
end
for word in pairs(expected) do assert(db:get("count:" .. word)) end
print(string.format("%d distinct words; the most frequent:", distinct))

table.sort(counts, function(a, b)
  if a.n ~= b.n then return a.n > b.n end
  return a.word < b.word
end)
for i = 1, math.min(8, #counts) do
  print(string.format("  %-12s %d", counts[i].word, counts[i].n))
end

-- The text reads back in order from its line keys.
local first = nil
for _, line in db:scan("line:", "line:~") do
  first = first or line
end
print("first line: " .. tostring(first))

-- After a flush the data lives in an SSTable; the counts do not change.
db:flush()
if counts[1] then
  local top = counts[1].word
  assert(db:get("count:" .. top) == tostring(expected[top]))
  print(string.format("after flush: %d table(s), \"%s\" seen %s times",
    db:stats().sstable_count, top, db:get("count:" .. top)))
end

db:close()
remove_dir()
