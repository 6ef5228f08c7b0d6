-- examples/lib/store_dir.lua - where an example keeps its store: the
-- directory named on its command line, kept afterwards, or else a fresh
-- private directory that the returned function removes.
--
--   local dir, remove_dir = store_dir(arg[1])
--   ...
--   remove_dir() -- does nothing for a directory the user named
--
-- The fresh directory comes from mktemp -d (under $TMPDIR, else /tmp),
-- which creates it under a name no one else holds, readable by us alone.
-- Taking a name from os.tmpname() and removing its file first would leave
-- a moment in which another process could create that path.

local function quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

local TEMPLATE = '"${TMPDIR:-/tmp}/lunakv-example.XXXXXX"'

return function(given)
  if given then return given, function() end end
  local p = assert(io.popen("mktemp -d " .. TEMPLATE))
  local dir = p:read("l")
  local ok = p:close()
  assert(ok and dir and dir ~= "", "mktemp -d failed")
  return dir, function() os.execute("rm -rf -- " .. quote(dir)) end
end
