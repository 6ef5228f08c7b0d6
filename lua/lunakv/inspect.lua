-- lunakv.inspect - `lunakv inspect DIR`: what a database holds, read
-- without changing a byte of it (lunakv.open's read_only: a shared lock,
-- no WAL cut, no file deleted), so it is safe on a copy, on a read-only
-- medium and next to other readers. Prints the sequence number, the tables
-- level by level with their key ranges, what the WAL replay found, and
-- the entry count (with --count, which reads every key).

-- The command line's side (arguments, help) is lunakv.cmd.inspect.

local M = {}

-- A key as printed: printable ASCII as is, anything else escaped.
local function show(k)
  return (k:gsub("[^\32-\126]", function(c)
    return string.format("\\x%02x", c:byte())
  end))
end

-- args: dir, count. Returns true, or nil and a message (exit 1).
function M.main(args)
  local lunakv = require "lunakv"
  local ok, db = pcall(lunakv.open, args.dir, { read_only = true })
  if not ok then return nil, (tostring(db):gsub("^lunakv: ", "")) end
  local st = db:stats()
  local out = io.stdout
  out:write(string.format("%s: sequence %d, %d table(s), %d bytes\n", args.dir,
    st.seq, st.sstable_count, st.total_size_bytes))
  if st.recovery then out:write("  wal: ", st.recovery, "\n") end
  if st.memtable_keys > 0 then
    out:write(string.format("  wal: %d write(s) not yet in a table "
      .. "(%d bytes in memory)\n", st.memtable_keys, st.memtable_size_bytes))
  end
  local by_level = {}
  for _, t in ipairs(db:tables()) do
    local l = by_level[t.level] or {}
    by_level[t.level] = l
    l[#l + 1] = t
  end
  for level = 0, lunakv.limits.max_levels - 1 do
    local ts = by_level[level]
    if ts then
      local bytes = 0
      for _, t in ipairs(ts) do bytes = bytes + t.size end
      out:write(string.format("L%d: %d table(s), %d bytes\n", level, #ts, bytes))
      for _, t in ipairs(ts) do
        out:write(string.format("  %06d.sst %10d bytes  %s .. %s\n", t.number,
          t.size, show(t.smallest), show(t.largest)))
      end
    end
  end
  if args.count then
    local n = 0
    for _ in db:scan() do n = n + 1 end
    out:write(string.format("%d live key(s)\n", n))
  end
  db:close()
  return true
end

return M
