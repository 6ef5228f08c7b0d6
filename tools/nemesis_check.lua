-- tools/nemesis_check.lua - the history checker of `make nemesis`
-- (tools/nemesis.lua), apart so that spec/27-nemesis_check_spec.lua can
-- feed it made-up histories. Loaded with dofile; no lunakv module needed.
--
-- The workload it checks (tools/nemesis.lua's clients keep to it):
--
--   * Every key has exactly one writer, a client process that sends one
--     request at a time. It writes the values 1, 2, 3, ... to the key in
--     order (POST /set, the value a decimal number), so the writes of a
--     key never overlap in time and their values go up.
--   * Each answer is one of three kinds (M.classify): "ok" (200: the
--     write is committed), "fail" (definitely not written: a 4xx, the
--     503s docs/http_api.md lists as such - "no leader", "not the leader",
--     "not written", "the node is shutting down", "... bytes of writes are
--     waiting"), "unknown" (anything else: 503 "outcome unknown", a 500
--     from the log, no answer at all: a timeout, a connection cut or
--     refused - core.http_request says "connection refused" also when the
--     request left and the node died before answering, so a transport
--     failure never proves a write was not sent). After a "fail" the writer goes on with the
--     next value (the refused one must never appear); after an "unknown"
--     it never writes that key again and takes a fresh key. So an
--     "unknown" write, which may take effect at any later time (a write a
--     follower forwarded can reach the leader long after the client gave
--     up), is always the last write of its key.
--   * Reads are GET /get?key=K&consistent=true of any client's keys.
--   * Every time is core.clock(), CLOCK_MONOTONIC, which all processes
--     of the machine share: "sent" is read before the request leaves,
--     "ended" after its answer arrived.
--
-- What a linearizable store must then show, per key (each rule is a
-- consequence of linearizability, so a violation is a real bug; for a
-- register with one sequential writer and distinct values they are also
-- enough: a history passing them has a linearization, below). Checking
-- key by key loses nothing: linearizability is local (Herlihy and Wing),
-- a history is linearizable when each object's part of it is.
--
--   Let A(t) be the highest value of an "ok" write that ended before t,
--   and B(t) the highest value of any write sent before t.
--   1. A consistent read answered 200, sent at s and answered at e,
--      returns a value v that some write of the key sent (not invented),
--      whose write was not refused as "fail", with A(s) <= v <= B(e):
--      below A(s) is a stale read (an acknowledged write was lost to
--      it); above B(e) a read from the future; "not found" is right only
--      when A(s) is 0 (no write acknowledged before the read was sent).
--   2. Reads do not go back: a read sent after another read's answer
--      arrived returns at least that read's value.
--   3. The final state (after healing and convergence, what every node
--      holds) is like a read that starts after everything ended: at
--      least the key's last acknowledged value (else a lost write), at
--      least every value a consistent read returned, at most the highest
--      value sent, a value some write sent, never a "fail" one; and it
--      holds no key no client wrote.
--
-- Why that is enough: a linearization picks for each write that took
-- effect (every "ok" one; the "unknown" one if something shows it) a
-- point in its interval ([sent, ended], or [sent, forever) when
-- unknown), in order, and puts each read of v between the point of
-- write v and the point of the next write that took effect. Such points
-- exist when, for every two writes i <= j that took effect, i's lower
-- bound (its sent, and the sent of every read of a lower value) is below
-- j's upper bound (its ended, and the ended of every read of j or more).
-- The four kinds of pairs are: write/write, true of a sequential writer;
-- write/read, the upper bound of rule 1; read/write, its lower bound;
-- read/read, rule 2. The final state is a read at time infinity.
--
-- The times are compared strictly in the direction that can only make a
-- check looser: a write counts in A(s) only when its "ended" is below the
-- read's "sent", so clock reads taken around the requests never turn a
-- legal history into a reported violation.
--
-- The history is lines of text, one per request (tools/nemesis.lua's
-- clients write them):
--   W CLIENT KEY VALUE SENT ENDED OUTCOME
--   R CLIENT KEY SENT ENDED OUTCOME VALUE     (VALUE "-": not found)
-- OUTCOME: "200", "STATUS:error_words@PORT" (the error's text up to its
-- first colon, spaces as _), "timeout" or "error" (no answer).

local M = {}

-- 503 errors that mean "definitely not written" (docs/http_api.md,
-- "Definitely not written"), as the clients log them: the error text up
-- to its first colon, spaces as underscores.
local NOT_WRITTEN_503 = {
  "^no_leader", "^not_the_leader", "^not_written",
  "^the_node_is_shutting_down", "^%d+_bytes_of_writes_are_waiting",
}

-- The kind of a write's outcome: "ok", "fail" (definitely not written)
-- or "unknown" (may be written, now or later).
function M.classify(outcome)
  if outcome == "200" then return "ok" end
  local status, why = outcome:match("^(%d%d%d):([^@]*)")
  status = tonumber(status)
  if status and status >= 400 and status < 500 then return "fail" end
  if status == 503 then
    for _, p in ipairs(NOT_WRITTEN_503) do
      if why:find(p) then return "fail" end
    end
  end
  return "unknown"
end

-- An error text as a log word: up to its first colon, at most 60 bytes,
-- spaces (and other blanks) made underscores.
function M.error_word(text)
  local w = tostring(text or "?"):match("^[^:]*"):sub(1, 60)
  return (w:gsub("%s", "_"))
end

-- One history line as an op table, or nil, message. Values are integers
-- (nil: "not found"); a value that is not a decimal integer stays a
-- string (the check calls it invented).
local function value_of(s)
  if s == "-" then return nil end
  return math.tointeger(tonumber(s)) or s
end

function M.parse_line(line)
  local w = { line:match("^W (%S+) (%S+) (%S+) (%S+) (%S+) (%S+)$") }
  if #w == 6 then
    local v = math.tointeger(tonumber(w[3]))
    if not v or v < 1 then return nil, "bad write value: " .. line end
    return { kind = "W", client = w[1], key = w[2], value = v,
      sent = tonumber(w[4]), ended = tonumber(w[5]), outcome = w[6],
      class = M.classify(w[6]), line = line }
  end
  local r = { line:match("^R (%S+) (%S+) (%S+) (%S+) (%S+) (%S+)$") }
  if #r == 6 then
    return { kind = "R", client = r[1], key = r[2], sent = tonumber(r[3]),
      ended = tonumber(r[4]), outcome = r[5], value = value_of(r[6]),
      line = line }
  end
  return nil, "unreadable history line: " .. line
end

-- Every op of the history files (paths) and the lines that could not be
-- read (a client killed mid-line leaves one; reported, not fatal).
function M.read_files(paths)
  local ops, bad = {}, {}
  for _, path in ipairs(paths) do
    local f = io.open(path, "rb")
    if f then
      for line in f:lines() do
        if line ~= "" then
          local op, err = M.parse_line(line)
          if op then ops[#ops + 1] = op else bad[#bad + 1] = err end
        end
      end
      f:close()
    end
  end
  return ops, bad
end

local function show(v)
  if v == nil then return "not found" end
  return tostring(v)
end

-- The check. ops: parsed lines (any order). final: nil (no final state:
-- rules 1 and 2 only) or { [key] = value string } of the converged
-- nodes, every key they hold (reserved ones excluded by the scan);
-- ignore_key: keys of the final state that belong to no client (a
-- function of the key, optional). Returns a report:
--   { ok = bool, problems = { { what =, detail =, lines = {...} } },
--     counts = { writes_ok, writes_fail, writes_unknown, reads_ok,
--                reads_other, keys } }
-- what is one of "malformed", "invented read", "stale read",
-- "future read", "read of a refused write", "read went back",
-- "lost write", "invented value", "invented key".
function M.check(ops, final, ignore_key)
  local problems = {}
  local function problem(what, detail, ...)
    problems[#problems + 1] = { what = what, detail = detail,
      lines = { ... } }
  end
  local counts = { writes_ok = 0, writes_fail = 0, writes_unknown = 0,
    reads_ok = 0, reads_other = 0, keys = 0 }
  local keys = {} -- key -> { writes = {...}, reads = {...} }
  for _, op in ipairs(ops) do
    local k = keys[op.key]
    if not k then
      k = { writes = {}, reads = {} }
      keys[op.key] = k
    end
    if op.kind == "W" then
      table.insert(k.writes, op)
      counts["writes_" .. op.class] = counts["writes_" .. op.class] + 1
    elseif op.outcome == "200" then
      table.insert(k.reads, op)
      counts.reads_ok = counts.reads_ok + 1
    else
      counts.reads_other = counts.reads_other + 1
    end
  end

  local names = {}
  for key in pairs(keys) do names[#names + 1] = key end
  table.sort(names)
  for _, key in ipairs(names) do
    local k = keys[key]
    local ws, rs = k.writes, k.reads
    table.sort(ws, function(a, b) return a.sent < b.sent end)
    if #ws > 0 then counts.keys = counts.keys + 1 end
    -- the workload's premises: one writer, one write at a time, values
    -- going up, an "unknown" write last (else the rules do not hold)
    local by_value, sound = {}, true
    for i, w in ipairs(ws) do
      local prev = ws[i - 1]
      if w.client ~= ws[1].client then
        problem("malformed", key .. ": two writers", ws[1].line, w.line)
        sound = false
      elseif prev and (w.sent < prev.ended or w.value <= prev.value) then
        problem("malformed", key .. ": writes overlap or do not go up",
          prev.line, w.line)
        sound = false
      elseif prev and prev.class == "unknown" then
        problem("malformed", key .. ": a write after an unknown outcome",
          prev.line, w.line)
        sound = false
      end
      by_value[w.value] = w
    end
    if sound then
      -- acked[i]: the highest ok value among ws[1..i] (0: none)
      local acked = {}
      for i, w in ipairs(ws) do
        acked[i] = math.max(acked[i - 1] or 0, w.class == "ok" and w.value or 0)
      end
      -- A(t): the highest ok value whose write ended before t, and the
      -- line of that write
      local function a_of(t)
        local best, line = 0, nil
        for i = #ws, 1, -1 do
          if ws[i].ended < t then
            best = acked[i]
            if best > 0 then line = by_value[best].line end
            break
          end
        end
        return best, line
      end
      -- B(t): the highest value sent before t (writes go up in time)
      local function b_of(t)
        for i = #ws, 1, -1 do
          if ws[i].sent < t then return ws[i].value end
        end
        return 0
      end
      -- rule 1 for one value v seen between s and e (what: "read" or
      -- "final state"); line: the op that saw it
      local function judge(v, s, e, line, what)
        local a, aline = a_of(s)
        if v == nil then
          if a > 0 then
            problem(what == "read" and "stale read" or "lost write",
              string.format("%s: %s answered not found, but %s=%d was "
                .. "acknowledged before it", key, what, key, a), line, aline)
          end
          return
        end
        local w = math.type(v) == "integer" and by_value[v]
        if not w then
          problem(what == "read" and "invented read" or "invented value",
            string.format("%s: %s answered %s, a value no write of %s sent",
              key, what, show(v), key), line)
        elseif w.class == "fail" then
          problem(what == "read" and "read of a refused write"
            or "invented value",
            string.format("%s: %s answered %d, whose write was refused as "
              .. "not written (%s)", key, what, v, w.outcome), line, w.line)
        elseif v < a then
          problem(what == "read" and "stale read" or "lost write",
            string.format("%s: %s answered %d, but %d was acknowledged "
              .. "before it", key, what, v, a), line, aline)
        elseif v > b_of(e) then
          problem("future read", string.format("%s: %s answered %d, whose "
            .. "write was sent only after the answer", key, what, v), line,
            w.line)
        end
      end
      for _, r in ipairs(rs) do judge(r.value, r.sent, r.ended, r.line, "read") end
      -- rule 2: by answer time; best: the highest value of the reads
      -- answered before a read was sent
      table.sort(rs, function(a, b) return a.ended < b.ended end)
      local by_sent = {}
      for i, r in ipairs(rs) do by_sent[i] = r end
      table.sort(by_sent, function(a, b) return a.sent < b.sent end)
      local j, best, best_line = 1, 0, nil
      for _, r in ipairs(by_sent) do
        while rs[j] and rs[j].ended < r.sent do
          local v = math.type(rs[j].value) == "integer" and rs[j].value or 0
          if v > best then best, best_line = v, rs[j].line end
          j = j + 1
        end
        local v = math.type(r.value) == "integer" and r.value or 0
        if v < best then
          problem("read went back", string.format("%s: read answered %s, "
            .. "after another read had answered %d", key, show(r.value), best),
            r.line, best_line)
        end
      end
      -- rule 3
      if final then
        local raw = final[key]
        local v = raw ~= nil and (math.tointeger(tonumber(raw)) or raw) or nil
        if #ws > 0 or v ~= nil then
          judge(v, math.huge, math.huge, "final state: " .. key .. "="
            .. show(raw), "final state")
          for _, r in ipairs(rs) do
            -- (a read of a value no write sent is reported above)
            local rv = math.type(r.value) == "integer" and r.value or 0
            local rw = by_value[rv]
            if rw and rw.class ~= "fail"
                and (math.type(v) ~= "integer" or v < rv) then
              problem("lost write", string.format("%s: the final state "
                .. "holds %s, but a consistent read had answered %d", key,
                show(v), rv), "final state: " .. key .. "=" .. show(raw),
                r.line)
              break
            end
          end
        end
      end
    end
  end
  if final then
    local extra = {}
    for key in pairs(final) do
      if not keys[key] and not (ignore_key and ignore_key(key)) then
        extra[#extra + 1] = key
      end
    end
    table.sort(extra)
    for _, key in ipairs(extra) do
      problem("invented key", key .. ": in the final state, but no client "
        .. "wrote it", "final state: " .. key .. "=" .. tostring(final[key]))
    end
  end
  return { ok = #problems == 0, problems = problems, counts = counts }
end

-- A report's problems as text: how many of each kind, then the first
-- `each` (default 5) of each kind with their history lines.
function M.format(report, each)
  each = each or 5
  local by, order = {}, {}
  for _, p in ipairs(report.problems) do
    if not by[p.what] then
      by[p.what] = {}
      order[#order + 1] = p.what
    end
    table.insert(by[p.what], p)
  end
  local out, kinds = {}, {}
  for _, what in ipairs(order) do
    kinds[#kinds + 1] = string.format("%s %d", what, #by[what])
  end
  out[1] = "by kind: " .. table.concat(kinds, ", ")
  for _, what in ipairs(order) do
    for i, p in ipairs(by[what]) do
      if i > each then
        out[#out + 1] = string.format("... and %d more %s", #by[what] - each,
          what)
        break
      end
      out[#out + 1] = string.format("%s: %s", p.what, p.detail)
      for _, l in ipairs(p.lines) do out[#out + 1] = "    " .. l end
    end
  end
  return table.concat(out, "\n")
end

return M
