-- seed.lua DIR - write a small database whose WAL, tables and MANIFEST
-- seed the fuzzers' corpora (run by `make fuzz` through bin/lunakv run).
local lunakv = require "lunakv"
local dir = assert(arg[1], "usage: seed.lua DIR")
local db = lunakv.open(dir, { max_memtable_size = 4096, sync = "none",
  block_size = 256, sparse_index_n = 2 })
for i = 1, 300 do
  db:set(string.format("key%04d", i), string.rep(string.char(65 + i % 26), i % 40))
  if i % 7 == 0 then db:delete(string.format("key%04d", i - 3)) end
end
db:flush()
for i = 1, 20 do db:set("tail" .. i, "v" .. i) end -- left in the WAL
db:close()
