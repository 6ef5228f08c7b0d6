-- lunakv.tmpdir - a fresh private directory: mktemp -d under $TMPDIR
-- (else /tmp), created under a name no one else holds, readable by us
-- alone. Taking a name from os.tmpname() and removing its file first
-- would leave a moment in which another process could create that path.
--
--   local dir, remove = require("lunakv.tmpdir")("lunakv-bench")
--   ...
--   remove() -- rm -rf the directory and all in it

local function quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- Returns the directory and a function that removes it; raises when
-- mktemp fails.
return function(prefix)
  local p = assert(io.popen('mktemp -d "${TMPDIR:-/tmp}/"' ..
    quote(prefix .. ".XXXXXX")))
  local dir = p:read("l")
  local ok = p:close()
  assert(ok and dir and dir ~= "", "mktemp -d failed")
  return dir, function() os.execute("rm -rf -- " .. quote(dir)) end
end
