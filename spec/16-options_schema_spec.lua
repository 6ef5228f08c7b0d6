-- The options schema: one table in C (c/engine/options.c, c/net/nodeopts.c,
-- c/lua/lunakv_options.c) that lkv_options_init, the engine's check, the
-- node, the binding and lunakv.config all read, seen from Lua as
-- core.options_schema. The README's table and .env.example list exactly
-- its keys with its defaults; every bad value is refused once, where it
-- enters (.env, the environment, --set, lunakv.open), naming key, value
-- and source, with the range the C layer enforces.

local h = require "spec.helpers"
local core = require "lunakv.core"
local lunakv = require "lunakv"
local config = lunakv.config

local ROWS = core.options_schema

local by_name, env_rows, env_of = {}, {}, {}
for _, r in ipairs(ROWS) do
  by_name[r.room .. "." .. r.name] = r
  if r.env then
    env_rows[#env_rows + 1] = r
    env_of[r.name] = r.env
  end
end

local function sorted_keys(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out)
  return out
end

local function contains(haystack, needle)
  return haystack:find(needle, 1, true) ~= nil
end

-- How the README writes a default and a range.
local function default_text(r)
  if r.type == "string" and r.default == "" then return "(empty)" end
  return tostring(r.default)
end

local function range_text(r)
  local t
  if r.type == "integer" then
    t = r.max == math.maxinteger and (">= " .. r.min)
      or (r.min .. " to " .. r.max)
  elseif r.type == "boolean" then
    t = "true or false"
  elseif r.type == "enum" then
    t = table.concat(r.values, ", ", 1, #r.values - 1) .. " or "
      .. r.values[#r.values]
  elseif r.type == "filename" then
    t = "file name of " .. r.min .. " to " .. r.max .. " bytes"
  else
    t = "any text"
  end
  if r.at_least then t = t .. ", >= " .. env_of[r.at_least] end
  return t
end

-- The configuration table of the README: env -> { default=, range= }.
local function readme_table()
  local text = h.read_file(h.root .. "/README.md")
  local section = assert(text:match("\n## Configuration\n(.-)\n## "),
    "README has no Configuration section")
  local rows, n = {}, 0
  local in_table = false
  for line in (section .. "\n"):gmatch("([^\n]*)\n") do
    if line:match("^| key | default | range | meaning |") then
      in_table = true
    elseif in_table and line:match("^|") then
      if not line:match("^|%-") then -- not the rule under the header
        local cells = {}
        for c in line:gmatch("|([^|]*)") do
          cells[#cells + 1] = c:gsub("`", ""):match("^%s*(.-)%s*$")
        end
        local key = cells[1]
        assert(rows[key] == nil, "README lists " .. key .. " twice")
        rows[key] = { default = cells[2], range = cells[3] }
        n = n + 1
      end
    elseif in_table then
      break
    end
  end
  assert(n > 0, "README: no configuration table (| key | default | range "
    .. "| meaning |)")
  return rows
end

-- Bad values for a row: { lua = a Lua value, text = the same in .env }.
-- text nil: no .env spelling (a wrong Lua type); lua nil: .env only.
local function bad_values(r)
  local out = {}
  if r.type == "integer" then
    if r.min > math.mininteger then
      -- a negative number is refused as such, without the range
      out[#out + 1] = { lua = r.min - 1, text = tostring(r.min - 1),
        range = r.min > 0 }
    end
    if r.max < math.maxinteger then
      out[#out + 1] = { lua = r.max + 1, text = tostring(r.max + 1),
        range = true }
    else
      out[#out + 1] = { text = "9223372036854775808" } -- past 64 bits
    end
    out[#out + 1] = { lua = "12", text = "twelve" }
    out[#out + 1] = { lua = 1.5, text = "1.5" }
  elseif r.type == "boolean" then
    out[#out + 1] = { lua = 1, text = "maybe" }
    out[#out + 1] = { lua = "true" }
  elseif r.type == "enum" then
    out[#out + 1] = { lua = "sometimes", text = "sometimes" }
    out[#out + 1] = { lua = true }
  elseif r.type == "filename" then
    out[#out + 1] = { lua = "", text = "" }
    out[#out + 1] = { lua = "a/b", text = "a/b" }
    local long = ("x"):rep(r.max + 1)
    out[#out + 1] = { lua = long, text = long }
    out[#out + 1] = { lua = 5 }
  else
    out[#out + 1] = { lua = 5 }
  end
  return out
end

describe("the options schema", function()
  local dir
  h.tmpdir_each(function(d) dir = d end)

  describe("core.options_schema", function()
    it("describes each option with its type, default, range and doc",
      function()
        local seen_env = {}
        for _, r in ipairs(ROWS) do
          local what = r.room .. "." .. r.name
          assert.is_string(r.name, what)
          assert.is_string(r.doc, what)
          assert.truthy(r.doc ~= "", what)
          assert.truthy(({ engine = 1, node = 1, lua = 1 })[r.room], what)
          if r.env then
            assert.is_nil(seen_env[r.env], "two rows use " .. r.env)
            seen_env[r.env] = true
            assert.equal(r.env:upper(), r.env, what)
          end
          if r.type == "integer" or r.type == "filename" then
            assert.equal("integer", math.type(r.min), what)
            assert.equal("integer", math.type(r.max), what)
            assert.truthy(r.min <= r.max, what)
          end
          if r.type == "integer" then
            assert.truthy(r.min <= r.default and r.default <= r.max, what)
          elseif r.type == "boolean" then
            assert.is_boolean(r.default, what)
          elseif r.type == "enum" then
            assert.truthy(#r.values >= 2, what)
            local ok = false
            for _, v in ipairs(r.values) do ok = ok or v == r.default end
            assert.truthy(ok, what .. ": default not among its values")
          else
            assert.is_string(r.default, what)
          end
          if r.at_least then
            assert.is_table(by_name[r.room .. "." .. r.at_least], what)
          end
        end
      end)

    it("gives the defaults lkv_options_init sets (core.defaults)",
      function()
        local d = core.defaults()
        local n = 0
        for _, r in ipairs(ROWS) do
          if r.room == "engine" then
            n = n + 1
            assert.equal(r.default, d[r.name], r.name)
          end
        end
        assert.equal(n, #sorted_keys(d))
      end)

    it("is what lunakv.config checks against", function()
      for _, r in ipairs(env_rows) do
        local spec = config.find(r.env)
        assert.is_table(spec, r.env)
        assert.equal(r.default, spec.default, r.env)
        assert.equal(r.min, spec.min, r.env)
        assert.equal(r.max, spec.max, r.env)
        assert.equal(r.default, config.defaults()[spec.key], r.env)
        if r.type == "integer" then -- both ends are in
          assert.equal(r.min, config.check(spec, r.min), r.env)
          assert.equal(r.max, config.check(spec, r.max), r.env)
        end
      end
    end)
  end)

  describe("the documentation", function()
    it("README's configuration table lists exactly the schema's keys, "
      .. "with its defaults and ranges", function()
        local rows = readme_table()
        local want = {}
        for _, r in ipairs(env_rows) do want[r.env] = true end
        assert.same(sorted_keys(want), sorted_keys(rows))
        for _, r in ipairs(env_rows) do
          assert.equal(default_text(r), rows[r.env].default,
            r.env .. ": the README's default")
          assert.equal(range_text(r), rows[r.env].range,
            r.env .. ": the README's range")
        end
      end)

    it(".env.example sets exactly the schema's keys to its defaults",
      function()
        local path = h.root .. "/.env.example"
        local entries, warnings = config.parse(h.read_file(path), path)
        assert.same({}, warnings)
        local set = {}
        for _, e in ipairs(entries) do
          assert.is_nil(set[e.key], e.key .. " is set twice")
          set[e.key] = true
        end
        local want = {}
        for _, r in ipairs(env_rows) do want[r.env] = true end
        assert.same(sorted_keys(want), sorted_keys(set))
        -- read as lunakv reads a .env: every value is the default
        local opts, info = config.load_file(path, {})
        assert.same({}, info.warnings)
        for _, r in ipairs(env_rows) do
          local key = config.find(r.env).key
          assert.equal(r.default, opts[key], r.env)
          assert.matches("%.env%.example:%d+$", info.sources[key])
        end
      end)

    it("lunakv node's flags and docs/http_api.md carry the node's ranges "
      .. "and defaults", function()
        local node = require "lunakv.cmd.node"
        local doc = h.read_file(h.root .. "/docs/http_api.md")
        assert.truthy(#node.NUMERIC > 0)
        for _, f in ipairs(node.NUMERIC) do
          local flag, _, lo, hi, default = table.unpack(f)
          local r = by_name["node." .. flag:gsub("^%-%-", ""):gsub("%-", "_")]
          assert.is_table(r, flag .. " is not in the node's schema")
          assert.same({ r.min, r.max, r.default }, { lo, hi, default }, flag)
          assert.truthy(contains(doc, string.format("| `%s` | %d to %d | %d |",
            flag, r.min, r.max, r.default)), "docs/http_api.md: " .. flag)
        end
      end)

    it("lunakv bench takes BENCHMARK_N's range", function()
      local bench = require "lunakv.bench"
      local r = by_name["lua.benchmark_n"]
      assert.same({ r.min, r.max }, bench.LIMITS.num)
    end)
  end)

  describe("a bad value is refused once, naming key, value and source",
    function()
      for _, r in ipairs(env_rows) do
        for _, b in ipairs(bad_values(r)) do
          if b.text then
            it("in .env, the environment and --set: " .. r.env .. "="
              .. (#b.text > 20 and b.text:sub(1, 20) .. "..." or b.text),
              function()
                local shown = string.format("%q", b.text)
                h.write_file(dir .. "/.env", "# settings\n\n" .. r.env .. "="
                  .. b.text .. "\n")
                local err = h.error_of(config.load, dir, {})
                assert.is_string(err, "config.load accepted it")
                assert.truthy(contains(err, "lunakv: " .. r.env .. "="
                  .. shown .. " (" .. dir .. "/.env:3): "), err)
                -- refused here, not by the engine or the binding later
                assert.falsy(contains(err, "invalid argument"), err)
                assert.falsy(contains(err, "bad argument"), err)
                if b.range then
                  assert.truthy(contains(err, config.expected(
                    config.find(r.env))), err)
                end
                if b.text ~= "" then -- an empty variable counts as unset
                  err = h.error_of(config.load, dir .. "/none",
                    { [r.env] = b.text })
                  assert.is_string(err, "the environment's was accepted")
                  assert.truthy(contains(err, r.env .. "=" .. shown
                    .. " (environment): "), err)
                end
                err = h.error_of(config.override, config.defaults(), {},
                  { r.env .. "=" .. b.text }, "--set")
                assert.is_string(err, "--set's was accepted")
                assert.truthy(contains(err, r.env .. "=" .. shown
                  .. " (--set): "), err)
              end)
          end
        end
      end

      -- lunakv.open takes every key of lunakv.config: the variables in
      -- lower case, and the engine's own names where they differ
      -- (bloom_min_bits); read_only is lunakv.open's own (05-api_errors)
      for _, spec in ipairs(config.schema) do
        local r
        for _, row in ipairs(ROWS) do
          if (spec.env and row.env == spec.env) or (not spec.env
              and row.room == "engine" and row.name == spec.engine) then
            r = row
          end
        end
        for _, b in ipairs(spec.key ~= "read_only" and bad_values(r) or {}) do
          if b.lua ~= nil then
            local key = spec.key
            it("by lunakv.open: " .. key .. " = "
              .. config.show(b.lua):sub(1, 20), function()
                local target = dir .. "/db"
                local err = h.error_of(lunakv.open, target, { [key] = b.lua })
                assert.is_string(err, "lunakv.open accepted it")
                assert.truthy(contains(err, "lunakv: option " .. key .. " = "
                  .. config.show(b.lua) .. ": "), err)
                assert.falsy(contains(err, "invalid argument"), err)
                assert.falsy(contains(err, "bad argument"), err)
                if b.range then
                  assert.truthy(contains(err, config.expected(spec)), err)
                end
                assert.is_false(h.exists(target))
              end)
          end
        end
      end

      it("BLOCK_SIZE=100 in .env names the file and line, with the "
        .. "engine's range", function()
          h.write_file(dir .. "/.env", "SYNC=none\n# blocks\nBLOCK_SIZE=100\n")
          local err = h.error_of(config.load, dir, {})
          assert.equal("lunakv: BLOCK_SIZE=\"100\" (" .. dir .. "/.env:3): "
            .. "expected an integer from 256 to 4194304", err)
        end)

      for _, c in ipairs {
        { "bloom_bits_per_key", 0, "from 1 to 64" },
        { "level_multiplier", 1, "from 2 to 100" },
        { "table_size", 1, ">= 4096" },
      } do
        it("lunakv.open refuses " .. c[1] .. " = " .. c[2] .. " with the "
          .. "engine's range", function()
            local err = h.error_of(lunakv.open, dir .. "/db", { [c[1]] = c[2] })
            assert.equal("lunakv: option " .. c[1] .. " = " .. c[2]
              .. ": expected an integer " .. c[3], err)
            -- the engine's own check names the same range
            err = h.error_of(core.open, dir .. "/db", { [c[1]] = c[2] })
            assert.truthy(contains(err, "invalid argument: option " .. c[1]
              .. " is " .. c[2] .. "; it must be " .. c[3]), err)
          end)
      end
    end)

  -- The engine's own check (a C caller can pass anything) reads the same
  -- rows: each end of a range passes it and one past fails. The db path
  -- lies under a plain file, so what passes the check fails at mkdir.
  describe("the engine's check", function()
    -- The options tied by at_least (a chain: max_l0_files <=
    -- l0_slowdown_files <= l0_stop_files) all take v, as far as their own
    -- ranges let them, so that v is tried alone.
    local linked = {}
    for _, r in ipairs(ROWS) do
      if r.room == "engine" and r.at_least then
        linked[r.name], linked[r.at_least] = true, true
      end
    end
    local function opts_for(name, v)
      local opts = {}
      if linked[name] then
        for _, r in ipairs(ROWS) do
          if r.room == "engine" and linked[r.name] then
            opts[r.name] = math.max(r.min, math.min(v, r.max))
          end
        end
      end
      opts[name] = v
      return opts
    end

    for _, r in ipairs(ROWS) do
      if r.room == "engine" and r.type == "integer" then
        it("takes " .. r.name .. " from " .. r.min .. " to " .. r.max,
          function()
            h.write_file(dir .. "/file", "")
            local target = dir .. "/file/db"
            for _, v in ipairs { r.min, r.max } do
              local err = h.error_of(core.open, target, opts_for(r.name, v))
              assert.truthy(contains(err, "io error"), r.name .. " = " .. v
                .. ": " .. err)
            end
            local outside = {}
            if r.min > 0 then outside[#outside + 1] = r.min - 1 end
            if r.max < math.maxinteger then
              outside[#outside + 1] = r.max + 1
            end
            for _, v in ipairs(outside) do
              -- an int field past INT_MAX cannot even reach the engine
              local err = h.error_of(core.open, target, opts_for(r.name, v))
              assert.truthy(contains(err, "invalid argument: option "
                .. r.name .. " is " .. v) or contains(err, "option '"
                .. r.name .. "' is too large"), r.name .. " = " .. v
                .. ": " .. tostring(err))
            end
          end)
      end
    end

    it("takes a log_file_name of the schema's lengths", function()
      local r = by_name["engine.log_file_name"]
      h.write_file(dir .. "/file", "")
      local target = dir .. "/file/db"
      local err = h.error_of(core.open, target,
        { log_file_name = ("x"):rep(r.max) })
      assert.truthy(contains(err, "io error"), err)
      err = h.error_of(core.open, target,
        { log_file_name = ("x"):rep(r.max + 1) })
      assert.truthy(contains(err, "invalid argument: option log_file_name"),
        err)
    end)

    it("refuses a level that would be below its floor", function()
      local err = h.error_of(core.open, dir .. "/db",
        { max_l0_files = 10, l0_slowdown_files = 9 })
      assert.truthy(contains(err, "invalid argument: option "
        .. "l0_slowdown_files is 9; it must be >= max_l0_files (10)"), err)
      assert.is_false(h.exists(dir .. "/db"))
    end)
  end)

  describe("core.serve", function()
    for _, r in ipairs(ROWS) do
      if r.room == "node" and r.type == "integer" then
        it("refuses " .. r.name .. " outside " .. r.min .. " to " .. r.max
          .. " before it starts", function()
            local outside = { r.min - 1 }
            if r.max < math.maxinteger then outside[2] = r.max + 1 end
            for _, v in ipairs(outside) do
              local err = h.error_of(core.serve, dir .. "/node",
                { [r.name] = v })
              assert.truthy(contains(err, "option '" .. r.name
                .. "' must be from " .. r.min .. " to " .. r.max), err)
              assert.is_false(h.exists(dir .. "/node"))
            end
          end)
      end
    end
  end)
end)
