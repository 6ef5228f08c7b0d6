-- lunakv - an LSM-tree key-value store: the Lua face over lunakv.core.
--
--   local lunakv = require "lunakv"
--   local db <close> = lunakv.open("data", { sync = "batch" })
--   local seq = db:set("k", "v"); db:get("k") --> "v"
--
-- This file checks options (by name, with the list of valid ones) and maps
-- the seed's names onto the engine's; everything else is lunakv.core, the
-- C binding (c/lua/, built by lunakv_core.c). Errors raise "lunakv: ...".

local core = require "lunakv.core"
local config = require "lunakv.config"

local M = {}

M._NAME = "lunakv"
M.version = core.version
M._VERSION = "lunakv " .. core.version
M.config = config
M.limits = {
  max_key_bytes = core.max_key_bytes,
  max_value_bytes = core.max_value_bytes,
  max_levels = core.max_levels,
}

local valid_names
do
  local names = {}
  for _, spec in ipairs(config.schema) do names[#names + 1] = spec.key end
  table.sort(names)
  valid_names = table.concat(names, ", ")
end

-- Check opts and return the engine's options table. Seed names
-- (bloom_filter_size, hash_functions) become engine names; keys the engine
-- does not use (tombstone_value, log_compaction_threshold, benchmark_n,
-- data_dir) are checked and left out.
local function engine_options(opts)
  local out, given_as = {}, {}
  for k, v in pairs(opts) do
    if type(k) ~= "string" then
      error("lunakv: option names must be strings, got " .. config.show(k), 3)
    end
    local spec = config.by_key[k]
    if not spec then
      error(string.format("lunakv: unknown option '%s' (valid options: %s)",
        k, valid_names), 3)
    end
    local value, why = config.check(spec, v)
    if value == nil then
      error(string.format("lunakv: option %s = %s: %s", k, config.show(v),
        why), 3)
    end
    local name = spec.engine
    if name then
      if given_as[name] and out[name] ~= value then
        error(string.format(
          "lunakv: options %s = %s and %s = %s set the same setting; give one",
          given_as[name], config.show(out[name]), k, config.show(value)), 3)
      end
      out[name], given_as[name] = value, k
    end
  end
  return out
end

-- The engine's options table for a settings table (lunakv.config names);
-- raises "lunakv: ..." on an unknown option or a bad value. Used by
-- lunakv.node to hand the settings to core.serve.
function M.engine_options(opts)
  return engine_options(opts or {})
end

-- lunakv.open(dir [, opts]) -> db. opts keys are listed in
-- lunakv.config.schema; the table config.load() returns fits as is. With
-- dir nil, opts.data_dir names the directory. Two more keys shape this
-- open only: read_only = true (change nothing on disk; writes raise) and
-- env = core.fault_env() (a file system that fails on demand, for tests).
function M.open(dir, opts)
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #2 to 'open' (table expected, got " .. type(opts)
      .. ")", 2)
  end
  if dir == nil and opts then dir = opts.data_dir end
  if type(dir) ~= "string" or dir == "" then
    error("bad argument #1 to 'open' (directory name expected, got "
      .. (dir == "" and "an empty string" or type(dir)) .. ")", 2)
  end
  -- read_only and env are how this open behaves, not settings a .env
  -- file or lunakv.config carries: they pass beside the checked ones
  local read_only, env
  if opts and (opts.read_only ~= nil or opts.env ~= nil) then
    read_only, env = opts.read_only, opts.env
    if read_only ~= nil and type(read_only) ~= "boolean" then
      error("lunakv: option read_only = " .. config.show(read_only)
        .. ": must be true or false", 2)
    end
    local rest = {}
    for k, v in pairs(opts) do
      if k ~= "read_only" and k ~= "env" then rest[k] = v end
    end
    opts = rest
  end
  local eopts = opts and engine_options(opts) or nil
  if read_only ~= nil or env ~= nil then
    eopts = eopts or {}
    eopts.read_only, eopts.env = read_only, env
  end
  -- called through pcall, core.open's message carries no position (its
  -- caller is C); re-raised at level 2 it names the caller's line
  local ok, db = pcall(core.open, dir, eopts)
  if not ok then error(db, type(db) == "string" and 2 or 0) end
  return db
end

return M
