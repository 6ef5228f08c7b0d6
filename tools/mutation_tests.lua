-- tools/mutation_tests.lua - how a row of tools/mutations*.lua names its
-- test: shell commands run in the scratch copy's root that build what
-- they need and fail when the guarantee is broken.

local M = {}

-- a C test binary (c/engine/NAME.c or c/net/NAME.c as "net/NAME")
function M.ctest(name, args)
  return "make -s build/test/" .. name .. " >/dev/null && build/test/" .. name ..
    (args and (" " .. args) or "")
end

-- a busted spec file; filter: a Lua pattern over the test's full name
function M.spec(file, filter)
  return "make -s all >/dev/null && LUNAKV_BUILD=build lua5.4 /usr/bin/busted " ..
    (filter and ("--filter=" .. string.format("%q", filter) .. " ") or "") ..
    "spec/" .. file
end

-- a busted spec file under ASan/UBSan (make asan-spec), for a bug only a
-- sanitizer sees (a read of freed memory that happens to hold the value)
function M.asan_spec(file, filter)
  return "make -s asan-spec SPEC=" .. file ..
    (filter and (" FILTER=" .. string.format("%q", filter)) or "") ..
    " >/dev/null 2>&1"
end

-- the crash test (c/crash/crashtest.c) with these arguments
function M.crash(args)
  return "make -s build/crash/crashtest >/dev/null && build/crash/crashtest " ..
    "/tmp/lunakv-mutate-crash " .. args
end

return M
