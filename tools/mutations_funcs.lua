-- tools/mutations_funcs.lua - the stored functions' named mutations for
-- `make mutate` (tools/mutate.lua reads them after tools/mutations.lua):
-- each breaks one guarantee docs/functions.md states for the runtime
-- (c/lua/lunakv_funcs.c, lunakv_sandbox.c, lunakv_tx.c, and the embedded
-- caller in lunakv_dbfuncs.c), and names the case of spec/30-functions_spec.lua
-- that must then fail. `from` must occur exactly once in `file` (else the
-- row is reported stale: mend it with the code). `make mutate
-- MUTATE=funcs:` runs these rows; the node's (c/net) are `funcs-http:`,
-- caught by spec/31-functions_http_spec.lua, and `funcs-bank:`, caught by
-- spec/32-bank_cluster_spec.lua (examples/bank.lua through a leader's
-- kill and deposition).

local t = dofile("tools/mutation_tests.lua")
local spec = t.spec

local SPEC = "30-functions_spec.lua"
local SPEC_HTTP = "31-functions_http_spec.lua"
local SPEC_BANK = "32-bank_cluster_spec.lua"

return {
  -- ---- the limits ------------------------------------------------------
  -- (the infinite loop then runs until the row's timeout ends it)
  { name = "funcs: no instruction budget (the count hook never armed)",
    file = "c/lua/lunakv_sandbox.c",
    from = "  lua_sethook(lib->L, count_hook, LUA_MASKCOUNT, 1);\n" ..
      "  schedule(lib->L, lib);",
    to = "  (void)count_hook;",
    timeout = 120,
    test = spec(SPEC, "ends an infinite loop at SCRIPT_MAX_INSTRUCTIONS") },
  { name = "funcs: table.move's loop in C not charged to the budget",
    file = "c/lua/lunakv_sandbox.c",
    from = "    lkvf_charge(L, getlib(L), (uint64_t)((lua_Unsigned)e - (lua_Unsigned)f));",
    to = "    (void)0;",
    test = spec(SPEC, "counts what table and string functions loop over in C") },
  { name = "funcs: the allocator ignores SCRIPT_MAX_MEMORY",
    file = "c/lua/lunakv_sandbox.c",
    from = "  if (nsize - osize > lib->limit ||\n" ..
      "      lib->used + lib->extra > lib->limit - (nsize - osize)) {",
    to = "  if (0) {",
    test = spec(SPEC, "refuses a 1 GiB allocation at SCRIPT_MAX_MEMORY") },
  { name = "funcs: SCRIPT_MAX_WRITES not enforced",
    file = "c/lua/lunakv_tx.c",
    from = "  if (c->nw >= c->lim->max_writes) {",
    to = "  if (0) {",
    test = spec(SPEC, "ends a call at SCRIPT_MAX_WRITES") },
  { name = "funcs: a limit the script catches with pcall lets its call commit",
    file = "c/lua/lunakv_funcs.c",
    from = "  if (lib->hit != HIT_NONE) {\n" ..
      "    if (st == LUA_OK) lua_pushnil(lib->L); /* caught by the script */",
    to = "  if (lib->hit != HIT_NONE && st != LUA_OK) {\n" ..
      "    if (st == LUA_OK) lua_pushnil(lib->L); /* caught by the script */",
    test = spec(SPEC, "ends a memory bomb kept in a global") },
  { name = "funcs: a library not restarted after a limit keeps its globals",
    file = "c/lua/lunakv_funcs.c",
    from = "    int restart = lib->hit == HIT_INSTRUCTIONS || lib->hit == HIT_MEMORY;",
    to = "    int restart = 0;",
    test = spec(SPEC, "ends a memory bomb kept in a global") },
  -- ---- a call's writes -------------------------------------------------
  { name = "funcs: a read_only function may write",
    file = "c/lua/lunakv_tx.c",
    from = "  if (c->read_only)\n" ..
      "    return luaL_error(L, \"function '%s' is read_only: it may not write\",\n" ..
      "                      c->fname);\n",
    to = "",
    test = spec(SPEC, "refuse writes from a read_only function") },
  -- (the error taken for a null result: the writes before it commit)
  { name = "funcs: a function that raises after writing commits its writes",
    file = "c/lua/lunakv_funcs.c",
    from = "  } else if (st != LUA_OK) {\n",
    to = "  } else if (st != LUA_OK && c.stage == STAGE_RUN &&\n" ..
      "             (c.json = lkvf_dupbytes(\"null\", 5)) != NULL) {\n" ..
      "    c.json_len = 4;\n    lua_pop(lib->L, 1);\n" ..
      "  } else if (st != LUA_OK) {\n",
    test = spec(SPEC, "write nothing when the function fails halfway") },
  { name = "funcs: tx:get misses the call's own writes",
    file = "c/lua/lunakv_tx.c",
    from = "  i = sorted_find(c, k, klen, &found);\n  if (found) {",
    to = "  i = sorted_find(c, k, klen, &found);\n  if (0 && found) {",
    test = spec(SPEC, "see their own writes in tx:get and tx:scan") },
  -- ---- the sandbox -----------------------------------------------------
  -- (load takes binary chunks too: bytecode is not verified)
  { name = "funcs: the sandbox leaves load to scripts",
    file = "c/lua/lunakv_sandbox.c",
    from = "\"load\",  \"loadstring\",",
    to = "\"loadstring\",",
    test = spec(SPEC, "refuses load%(") },
  { name = "funcs: setmetatable takes a __gc metamethod",
    file = "c/lua/lunakv_sandbox.c",
    from = "    if (lua_rawget(L, 2) != LUA_TNIL)\n" ..
      "      return luaL_error(L, \"__gc metamethods are not allowed in functions\");\n",
    to = "    lua_rawget(L, 2);\n",
    test = spec(SPEC, "refuses setmetatable%(") },
  -- ---- JSON ------------------------------------------------------------
  { name = "funcs: integers past 14 digits pass through JSON rounded",
    file = "c/lua/lunakv_funcs.c",
    from = "  if (!lua_isinteger(L, idx)) return;\n  n = lua_tointeger(L, idx);",
    to = "  if (1) return;\n  n = lua_tointeger(L, idx);",
    test = spec(SPEC, "refuse integers JSON would round") },
  { name = "funcs: JSON nests past 1,000 levels (the bound out of reach)",
    file = "c/lua/lunakv_funcs.h",
    from = "#define LKVF_JSON_MAX_DEPTH 1000\n",
    to = "#define LKVF_JSON_MAX_DEPTH 1000000\n",
    test = spec(SPEC, "refuse JSON nested too deeply") },
  -- ---- libraries -------------------------------------------------------
  -- (put_library dropping the old library before compiling the new one)
  { name = "funcs: a replacement that does not load drops the working library",
    file = "c/lua/lunakv_dbfuncs.c",
    from = "  rt = funcs_of(L, d);\n" ..
      "  if (lkvf_library_prepare(rt, name, nlen, src, slen, &lim, &lib, &e) !=",
    to = "  rt = funcs_of(L, d);\n  lkvf_library_remove(rt, name, nlen, &e);\n" ..
      "  if (lkvf_library_prepare(rt, name, nlen, src, slen, &lim, &lib, &e) !=",
    test = spec(SPEC, "keeps the working library when its replacement") },
  -- ---- on the node (c/net/funcs.c, c/lua/lunakv_nodefuncs.c): spec 31 --
  { name = "funcs-http: a call's writes proposed as separate entries",
    file = "c/net/funcs.c",
    from = "  lkvnet_node_cmd_encode(cmd, LKVNET_OP_BATCH, NULL, 0, NULL, 0);\n" ..
      "  lkvnet_node_batch_encode(cmd + clen - plen, w, n);\n",
    to = "  for (; n > 1; w++, n--) {\n" ..
      "    size_t l1 = lkvnet_node_cmd_size(w->klen, w->vlen);\n" ..
      "    unsigned char *c1 = malloc(l1);\n" ..
      "    uint64_t i1, t1;\n    lkv_err e1;\n" ..
      "    lkvnet_node_cmd_encode(c1, w->op == LKVNET_FN_SET ? LKVNET_OP_SET\n" ..
      "                               : LKVNET_OP_DELETE, w->key, w->klen,\n" ..
      "                           w->val, w->vlen);\n" ..
      "    (void)lkvnet_raft_propose(s->raft, c1, l1, &i1, &t1, &e1);\n" ..
      "    free(c1);\n  }\n" ..
      "  plen = lkvnet_node_batch_size(w, n);\n" ..
      "  clen = lkvnet_node_cmd_size(0, plen);\n" ..
      "  lkvnet_node_cmd_encode(cmd, LKVNET_OP_BATCH, NULL, 0, NULL, 0);\n" ..
      "  lkvnet_node_batch_encode(cmd + clen - plen, w, n);\n",
    test = spec(SPEC_HTTP, "math.random in a function leaves identical") },
  -- (the isolation: a call reads the applied state while entries of the
  -- log are still waiting to apply)
  { name = "funcs-http: the overlay forgets writes before they apply",
    file = "c/net/overlay.c",
    from = "  if (o->g[1].n > 0 && applied >= o->g[1].end) gen_free(&o->g[1]);",
    to = "  if (o->g[1].n > 0) gen_free(&o->g[1]);",
    test = spec(SPEC_HTTP, "lose no update") },
  { name = "funcs-http: a failed call's writes are committed",
    file = "c/lua/lunakv_funcs.c",
    from = "  } else if (st != LUA_OK) {\n",
    to = "  } else if (st != LUA_OK && c.stage == STAGE_RUN &&\n" ..
      "             (c.json = lkvf_dupbytes(\"null\", 5)) != NULL) {\n" ..
      "    c.json_len = 4;\n    lua_pop(lib->L, 1);\n" ..
      "  } else if (st != LUA_OK) {\n",
    test = spec(SPEC_HTTP, "fails halfway writes nothing") },
  { name = "funcs-http: followers keep compiled libraries an entry deleted",
    file = "c/net/apply.c",
    from = "  if (rc == LKV_OK && libs && s->has_fns) s->fns.changed(s->fns.ctx);",
    to = "  (void)libs;",
    test = spec(SPEC_HTTP, "DELETE removes it everywhere") },
  { name = "funcs-http: snapshots leave the libraries behind",
    file = "c/net/repl.c",
    from = "    if (!lkvnet_node_is_reserved(e.key, e.klen) ||\n" ..
      "        lkvnet_node_is_library_key(e.key, e.klen)) {",
    to = "    if (!lkvnet_node_is_reserved(e.key, e.klen)) {",
    test = spec(SPEC_HTTP, "installs a snapshot has the libraries") },
  { name = "funcs-http: a snapshot install keeps a library the snapshot lacks",
    file = "c/net/follow.c",
    from = "    if (lkvnet_node_is_reserved(k, kl) && !lkvnet_node_is_library_key(k, kl))",
    to = "    if (lkvnet_node_is_reserved(k, kl))",
    test = spec(SPEC_HTTP, "installs a snapshot has the libraries") },
  { name = "funcs-http: a read-only call with consistent=false is forwarded",
    file = "c/net/funcs.c",
    from = "  if (kind == 1 && inconsistent(query)) {",
    to = "  if (kind == 1 && inconsistent(query) && s->leader) {",
    test = spec(SPEC_HTTP, "consistent=false runs on the follower") },
  { name = "funcs-http: a library that does not load is stored anyway",
    file = "c/net/funcs.c",
    from = "  if (a.status != 200) {\n" ..
      "    reply_refusal(s, req, LKVNET_ROUTE_FUNCTIONS, start, &a);",
    to = "  if (a.status != 200 && 0) {\n" ..
      "    reply_refusal(s, req, LKVNET_ROUTE_FUNCTIONS, start, &a);",
    test = spec(SPEC_HTTP, "bad input is a 4xx and changes nothing") },
  { name = "funcs-http: a read-write call that wrote nothing answers unconfirmed",
    file = "c/net/funcs.c",
    from = "      run_call(s, req, start, 1, last);",
    to = "      run_call(s, req, start, 0, last);",
    test = spec("31-functions_http_spec.lua", "writes nothing, sent") },
  { name = "funcs-http: calls read the engine alone, not the writes waiting",
    file = "c/lua/lunakv_nodefuncs.c",
    from = "  int r = lkvnet_overlay_get(be->ov, k, klen, &v, &vlen);",
    to = "  int r = -1;\n  (void)lkvnet_overlay_get;",
    test = spec(SPEC_HTTP, "lose no update") },
  { name = "funcs-http: a proposal's writes never reach the overlay",
    file = "c/net/raftnode.c",
    from = "  overlay_note(s, index, cmd, n);\n",
    to = "  (void)overlay_note;\n",
    test = spec(SPEC_HTTP, "lose no update") },
  { name = "funcs-http: a call's scan shows a deletion still waiting as a row",
    file = "c/lua/lunakv_nodefuncs.c",
    from = "    if (sc->o_deleted) continue;",
    to = "",
    test = spec(SPEC_HTTP, "scans see the writes and deletions") },
  { name = "funcs-http: a call's scan misses the writes still waiting",
    file = "c/lua/lunakv_nodefuncs.c",
    from = "  lkvnet_overlay_seek(be->ov, lo, lolen, &sc->pos);",
    to = "  lkvnet_overlay_seek(be->ov, lo, lolen, &sc->pos);\n  sc->o_done = 1;",
    test = spec(SPEC_HTTP, "scans see the writes and deletions") },
  { name = "funcs-http: a call's scan shows a key twice (engine and overlay)",
    file = "c/lua/lunakv_nodefuncs.c",
    from = "    if (c == 0) sc->e_have = 0;",
    to = "",
    test = spec(SPEC_HTTP, "scans see the writes and deletions") },
  -- ---- the bank on a cluster under failures: spec 32 --------------------
  -- (a transfer is atomic in the log only as one entry: across a leader
  -- kill one half could commit without the other)
  { name = "funcs-bank: a transfer's writes proposed as separate entries",
    file = "c/net/funcs.c",
    from = "  lkvnet_node_cmd_encode(cmd, LKVNET_OP_BATCH, NULL, 0, NULL, 0);\n" ..
      "  lkvnet_node_batch_encode(cmd + clen - plen, w, n);\n",
    to = "  for (; n > 1; w++, n--) {\n" ..
      "    size_t l1 = lkvnet_node_cmd_size(w->klen, w->vlen);\n" ..
      "    unsigned char *c1 = malloc(l1);\n" ..
      "    uint64_t i1, t1;\n    lkv_err e1;\n" ..
      "    lkvnet_node_cmd_encode(c1, w->op == LKVNET_FN_SET ? LKVNET_OP_SET\n" ..
      "                               : LKVNET_OP_DELETE, w->key, w->klen,\n" ..
      "                           w->val, w->vlen);\n" ..
      "    (void)lkvnet_raft_propose(s->raft, c1, l1, &i1, &t1, &e1);\n" ..
      "    free(c1);\n  }\n" ..
      "  plen = lkvnet_node_batch_size(w, n);\n" ..
      "  clen = lkvnet_node_cmd_size(0, plen);\n" ..
      "  lkvnet_node_cmd_encode(cmd, LKVNET_OP_BATCH, NULL, 0, NULL, 0);\n" ..
      "  lkvnet_node_batch_encode(cmd + clen - plen, w, n);\n",
    test = spec(SPEC_BANK, "the leader killed") },
  { name = "funcs-bank: a batch entry applied without its second write",
    file = "c/net/apply.c",
    from = "    if (lkvnet_node_is_library_key(w.key, w.klen)) *libs = 1;\n",
    to = "    if (lkvnet_node_is_library_key(w.key, w.klen)) *libs = 1;\n" ..
      "    if (i == 1 && !*libs) continue;\n",
    test = spec(SPEC_BANK, "the leader killed") },
  { name = "funcs-bank: a new leader's calls read past entries not applied",
    file = "c/net/funcs.c",
    from = "  if (!s->in_ready && s->applied_index >= s->ovl_from &&\n" ..
      "      s->applied_index >= s->lib_index) {",
    to = "  if (!s->in_ready && s->applied_index >= s->lib_index) {",
    test = spec(SPEC_BANK, "the leader killed") },
  -- (a deposed leader's waiting call: written or not is up to the next
  -- leader, so neither a success nor a refusal may be said)
  { name = "funcs-bank: a call whose leader is deposed answered 400",
    file = "c/net/apply.c",
    from = "    lkvnet_node_held_error(&p->h, 503,\n" ..
      "                           \"outcome unknown: %s; index %llu (term %llu) may \"",
    to = "    lkvnet_node_held_error(&p->h, 400,\n" ..
      "                           \"outcome unknown: %s; index %llu (term %llu) may \"",
    test = spec(SPEC_BANK, "its leader is deposed") },
  { name = "funcs-bank: a deposed leader keeps its calls waiting",
    file = "c/net/raftnode.c",
    from = "    lkvnet_node_pending_unknown(s, \"this node stopped leading\");\n",
    to = "    (void)0;\n",
    test = spec(SPEC_BANK, "its leader is deposed") },
}
