-- examples/lib/store_dir.lua - where an example keeps its store: the
-- directory named on its command line, kept afterwards, or else a fresh
-- private directory (lunakv.tmpdir: mktemp -d) that the returned function
-- removes.
--
--   local dir, remove_dir = store_dir(arg[1])
--   ...
--   remove_dir() -- does nothing for a directory the user named

local tmpdir = require "lunakv.tmpdir"

return function(given)
  if given then return given, function() end end
  return tmpdir("lunakv-example")
end
