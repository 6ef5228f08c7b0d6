-- lunakv-scm-1.rockspec - `luarocks make rockspec/lunakv-scm-1.rockspec`
-- builds and installs lunakv from a checkout. The Makefile is the only
-- list of sources; this file hands it luarocks' compiler flags and install
-- directories (the "make" back-end).
rockspec_format = "3.0"
package = "lunakv"
version = "scm-1"

source = {
  url = "git+https://github.com/lunakv/lunakv.git",
}

description = {
  summary = "An LSM-tree key-value store in C, scripted from Lua 5.4",
  detailed = [[
lunakv is a LevelDB-class storage engine (write-ahead log, memtable,
SSTables with Bloom filters and sparse indexes, leveled compaction, MVCC
snapshots) written in C11, with an idiomatic Lua 5.4 API (require "lunakv"),
a shell, and a replicated HTTP server mode built on libevent.
]],
  license = "MIT",
  labels = { "database", "key-value", "lsm-tree", "storage" },
}

dependencies = {
  "lua >= 5.4",
  "lua-cjson",
  "argparse", -- the lunakv command line (lua-argparse in Debian)
  -- optional: "readline" (lua-readline) gives the shell line editing and
  -- history on a terminal; without it the shell reads plain lines
}

external_dependencies = {
  LIBEVENT = {
    header = "event2/event.h",
  },
}

build = {
  type = "make",
  build_variables = {
    CFLAGS = "$(CFLAGS)",
    LIBFLAG = "$(LIBFLAG)",
    LUA_INCDIR = "$(LUA_INCDIR)",
    LIBEVENT_INCDIR = "$(LIBEVENT_INCDIR)",
    LIBEVENT_LIBDIR = "$(LIBEVENT_LIBDIR)",
  },
  install_variables = {
    INST_LIBDIR = "$(LIBDIR)",
    INST_LUADIR = "$(LUADIR)",
    INST_BINDIR = "$(BINDIR)",
    LIBEVENT_INCDIR = "$(LIBEVENT_INCDIR)",
    LIBEVENT_LIBDIR = "$(LIBEVENT_LIBDIR)",
  },
}
