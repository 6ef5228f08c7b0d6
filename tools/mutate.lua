-- tools/mutate.lua - mutation testing, in the manner of SQLite's: break
-- the code on purpose, one named mutation at a time, and check that the
-- test said to defend that guarantee fails. The mutations are listed in
-- tools/mutations.lua (a source edit each, and the test expected to catch
-- it), and for the node, the Raft core and the stored functions in
-- tools/mutations_net.lua, mutations_raft.lua and mutations_funcs.lua.
-- Run by `make mutate` (every one) or `make mutate MUTATE=name,...`
-- (those whose name contains one of the words) or MUTATE_SAMPLE=n (n of
-- them, picked by MUTATE_SEED).
--
-- Works on a scratch copy of the tracked files (never the checkout): each
-- mutation is applied, the test command runs there (it builds what it
-- needs), then the file is restored. Prints a table of caught / SURVIVED /
-- no-build (the mutated file does not compile: the row proves nothing) /
-- stale (the original text is no longer in the file: the list needs
-- mending) and exits 1 unless every one was caught.

-- the engine's list, the node's (tools/mutations_net.lua), the Raft
-- core's (tools/mutations_raft.lua) and the stored functions'
-- (tools/mutations_funcs.lua), each when present
local list = dofile(arg[0]:gsub("mutate%.lua$", "mutations.lua"))
for _, more in ipairs({ "mutations_net.lua", "mutations_raft.lua",
  "mutations_funcs.lua" }) do
  local path = arg[0]:gsub("mutate%.lua$", more)
  local f = io.open(path, "r")
  if f then
    f:close()
    for _, m in ipairs(dofile(path)) do list[#list + 1] = m end
  end
end

local function sh(cmd)
  local ok, how, code = os.execute(cmd)
  return ok == true, how, code
end

-- All that is left to read of f (a file or a pipe), which is then closed.
local function drain(f)
  local s = f:read("a")
  f:close()
  return s
end

local function capture(cmd) return drain(assert(io.popen(cmd, "r"))) end

local function read(path) return drain(assert(io.open(path, "rb"))) end

local function write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

local function count(hay, needle)
  local n, at = 0, 1
  while true do
    local i = hay:find(needle, at, true)
    if not i then return n end
    n, at = n + 1, i + #needle
  end
end

-- which mutations
local want = os.getenv("MUTATE") or ""
local chosen = {}
for _, m in ipairs(list) do
  local pick = want == ""
  for word in want:gmatch("[^,]+") do
    if m.name:find(word, 1, true) then pick = true end
  end
  if pick then chosen[#chosen + 1] = m end
end
local sample = tonumber(os.getenv("MUTATE_SAMPLE") or "")
if sample and sample < #chosen then
  math.randomseed(tonumber(os.getenv("MUTATE_SEED") or "") or os.time())
  for i = #chosen, 2, -1 do
    local j = math.random(i)
    chosen[i], chosen[j] = chosen[j], chosen[i]
  end
  for i = #chosen, sample + 1, -1 do chosen[i] = nil end
end

local root = capture("git rev-parse --show-toplevel"):gsub("\n$", "")

-- MUTATE_CHECK=1 (make lint): only check that every row still applies to
-- the checkout (its original text stands exactly once in its file) and
-- that the mutated C file still compiles; no test runs. A refactor or a
-- format pass that moves a row's code shows here, not at the next full
-- run.
-- A mutation that calls a function nobody defines only warns under
-- -fsyntax-only and then fails to link inside its test, which would count
-- as caught: an implicit declaration is an error here.
local CHECK = "${CC:-cc} -std=c11 -D_GNU_SOURCE -fsyntax-only " ..
  "-Werror=implicit-function-declaration " ..
  "-Ic/util -Ic/engine -Ic/net -Ic/lua -Ic/bench -I/usr/include/lua5.4"
-- The full names of a spec file's tests (busted --list), by file.
local spec_names = {}
local function names_of(file)
  if not spec_names[file] then
    local t = {}
    local out = capture("cd '" .. root .. "' && LUNAKV_BUILD=" ..
      (os.getenv("LUNAKV_BUILD") or "build") .. " lua5.4 " ..
      "/usr/bin/busted --list spec/" .. file .. " 2>/dev/null")
    for line in out:gmatch("[^\n]+") do
      t[#t + 1] = line:match("^%S+:%d+: (.*)$")
    end
    spec_names[file] = t
  end
  return spec_names[file]
end

-- A row whose test is a spec with a filter must name a test: busted runs
-- none for a filter that matches nothing (a "-" in it is a Lua pattern's
-- quantifier), passes, and the mutation would count as survived.
local function filter_matches(test)
  local filter, file = test:match('%-%-filter=(%b"") spec/(%S+)$')
  if not filter then
    file, filter = test:match('SPEC=(%S+) FILTER=(%b"")')
  end
  if not filter then return true end
  filter = load("return " .. filter)()
  for _, name in ipairs(names_of(file)) do
    if name:find(filter) then return true end
  end
  return false
end

if os.getenv("MUTATE_CHECK") == "1" then
  local bad = 0
  for _, m in ipairs(chosen) do
    local orig = read(root .. "/" .. m.file)
    local status = "applies"
    if count(orig, m.from) ~= 1 then
      status = "stale"
    elseif not filter_matches(m.test) then
      status = "no-test"
    elseif m.file:match("%.c$") then
      local s, e = orig:find(m.from, 1, true)
      local dir = m.file:match("^(.*)/") or "."
      local cc = io.popen("cd '" .. root .. "' && " .. CHECK .. " -I" .. dir ..
        " -x c - >/dev/null 2>&1", "w")
      cc:write(orig:sub(1, s - 1) .. m.to .. orig:sub(e + 1))
      if not cc:close() then status = "no-build" end
    end
    if status ~= "applies" then
      bad = bad + 1
      print(string.format("%-8s %s (%s)", status, m.name, m.file))
    end
  end
  print(string.format("mutate: %d of %d rows apply, build and name a test",
    #chosen - bad, #chosen))
  os.exit(bad == 0 and 0 or 1)
end
-- one scratch copy per user and checkout, so two checkouts never share one
local function hash(str)
  local h = 5381
  for i = 1, #str do h = (h * 33 + str:byte(i)) % 4294967296 end
  return string.format("%08x", h)
end
local scratch = os.getenv("MUTATE_DIR") or ("/tmp/lunakv-mutate-" ..
  capture("id -u"):gsub("\n$", "") .. "-" .. hash(root))
assert(scratch:match("^/tmp/lunakv%-mutate%-") or os.getenv("MUTATE_DIR"),
  "refusing scratch dir " .. scratch)
io.stderr:write("mutate: ", #chosen, " mutation(s) in ", scratch, "\n")
sh("rm -rf '" .. scratch .. "' && mkdir -p '" .. scratch .. "'")
assert(sh("cd '" .. root .. "' && git ls-files -z | xargs -0 tar -cf - | " ..
  "tar -xf - -C '" .. scratch .. "'"), "copying the tree failed")
assert(sh("cd '" .. scratch .. "' && make -s all >/dev/null"),
  "the unmutated tree does not build")

local rows, survived = {}, 0
for i, m in ipairs(chosen) do
  local path = scratch .. "/" .. m.file
  local orig = read(path)
  local status
  if count(orig, m.from) ~= 1 then
    status = "stale"
  else
    local s, e = orig:find(m.from, 1, true)
    write(path, orig:sub(1, s - 1) .. m.to .. orig:sub(e + 1))
    io.stderr:write(string.format("mutate: [%d/%d] %s\n", i, #chosen, m.name))
    local log = scratch .. "/mutate.log"
    -- a mutation that does not compile proves nothing: it is reported as
    -- such, not as caught
    local builds = not m.file:match("%.c$") or sh("cd '" .. scratch ..
      "' && " .. CHECK .. " '" .. m.file .. "' >'" .. log .. "' 2>&1")
    if not builds then
      status = "no-build"
    else
      local ok = sh("cd '" .. scratch .. "' && timeout " .. (m.timeout or 600) ..
        " sh -c " .. string.format("%q", m.test) .. " >'" .. log .. "' 2>&1")
      status = ok and "SURVIVED" or "caught"
    end
    write(path, orig)
  end
  if status ~= "caught" then survived = survived + 1 end
  rows[#rows + 1] = { m.name, status, m.test }
end

print(string.format("%-62s %-9s %s", "mutation", "result", "test"))
for _, r in ipairs(rows) do
  print(string.format("%-62s %-9s %s", r[1]:sub(1, 62), r[2], r[3]))
end
print(string.format("%d of %d caught", #rows - survived, #rows))
sh("rm -rf '" .. scratch .. "'")
os.exit(survived == 0 and 0 or 1)
