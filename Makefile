# lunakv - build, test, install. This Makefile is the only list of sources:
# every c/util/*.c (but *_test.c) is the shared leaf (CRC-32C, byte coding,
# errors, latency histograms, random numbers), built into the engine's
# library; c/engine/*.c (but *_test.c) the engine, c/net/*.c (but *_test.c)
# the HTTP node on libevent, c/lua/*.c and c/bench/workload.c the binding,
# c/bench/*.c the benchmark lkv_bench.
#
#   make            build build/liblunakv.a and the Lua module build/lunakv/core.so
#   make test       install missing Debian packages (as root), build, run the
#                   C unit tests (c/util, c/engine, c/net) and every busted spec
#   make shell      the same set-up, then open the shell on ./data
#   make asan       the whole suite under AddressSanitizer + UBSan
#   make crashtest  SIGKILL and simulated power-loss cycles (CYCLES=N)
#   make faultwalk  fault_test failing every file call of its workload, not
#                   a sample of each kind (FAULT_WALK=all; about a minute)
#   make mutate     break each guarantee on purpose: its test must fail
#   make lint       clang-format check, luacheck, warnings as errors (CI)
#   make format     lay out every C file as .clang-format says
#   make bench      lunakv against LevelDB (BENCH_NUM=N, BENCH_JSON=FILE)
#   make bench-cluster  3 lunakv nodes against 3 etcd members over HTTP
#                   (BENCH_SECONDS=S per workload)
#   make bench-failover  seconds of failed writes per leader kill -9 and
#                   a leadership transfer's cost (BENCH_KILLS, BENCH_TRANSFERS)
#   make bench-scripting  stored-function calls against Redis EVAL on one
#                   node, and against plain writes on 3 (BENCH_SECONDS,
#                   BENCH_ROUNDS)
#   make nemesis    a cluster under random kill -9, SIGSTOP, restarts,
#                   membership changes (a voter removed, wiped, joined
#                   again) and leadership transfers while clients write
#                   and read, then a check of their history
#                   (NEMESIS_SECONDS, NEMESIS_NODES, NEMESIS_SEED)
#   make fuzz       libFuzzer on the WAL, SSTable, MANIFEST, JSON body,
#                   replication log (file and /append frames) and HTTP
#                   request (head and chunked body) readers
#   make install    PREFIX=/usr/local DESTDIR= (module, Lua files, bin/lunakv)

PREFIX      ?= /usr/local
LUA_VERSION ?= 5.4
LUA         ?= lua$(LUA_VERSION)
LUA_INCDIR  ?= /usr/include/lua$(LUA_VERSION)
INST_LIBDIR ?= $(PREFIX)/lib/lua/$(LUA_VERSION)
INST_LUADIR ?= $(PREFIX)/share/lua/$(LUA_VERSION)
INST_BINDIR ?= $(PREFIX)/bin
BUSTED      ?= /usr/bin/busted
BUSTED_ARGS ?=

CC       ?= cc
OPT      ?= -O2
CFLAGS   ?= $(OPT) -g
WARN      = -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE -fPIC -fvisibility=hidden -pthread \
             $(WARN) $(CFLAGS) $(SAN)
LIBFLAG  ?= -shared
LDLIBS    = -pthread
NET_LDLIBS = -levent -lm

BUILD ?= build

UTIL_SRC    = $(filter-out %_test.c,$(wildcard c/util/*.c))
UTIL_OBJ    = $(UTIL_SRC:c/util/%.c=$(BUILD)/obj/util/%.o)
UTIL_TEST   = $(wildcard c/util/*_test.c)
ENGINE_SRC  = $(filter-out %_test.c,$(wildcard c/engine/*.c))
ENGINE_OBJ  = $(ENGINE_SRC:c/engine/%.c=$(BUILD)/obj/engine/%.o)
ENGINE_TEST = $(wildcard c/engine/*_test.c)
NET_SRC     = $(filter-out %_test.c,$(wildcard c/net/*.c))
NET_OBJ     = $(NET_SRC:c/net/%.c=$(BUILD)/obj/net/%.o)
NET_TEST    = $(wildcard c/net/*_test.c)
TEST_BINS   = $(UTIL_TEST:c/util/%.c=$(BUILD)/test/util/%) \
              $(ENGINE_TEST:c/engine/%.c=$(BUILD)/test/%) \
              $(NET_TEST:c/net/%.c=$(BUILD)/test/net/%)
LUA_SRC     = $(wildcard c/lua/*.c)
LUA_OBJ     = $(LUA_SRC:c/lua/%.c=$(BUILD)/obj/lua/%.o) \
              $(BUILD)/obj/bench/workload.o
BENCH_SRC   = $(wildcard c/bench/*.c)
BENCH_HEADERS = $(wildcard c/bench/*.h)
UTIL_HEADERS = $(wildcard c/util/*.h)
HEADERS     = $(wildcard c/engine/*.h) $(UTIL_HEADERS)
# headers only the net room's test programs include (the simulation's
# parts, the log tests' helpers): editing one rebuilds the tests alone
NET_TEST_HEADERS = $(wildcard c/net/raft_sim_*.h c/net/*_test_util.h)
NET_HEADERS = $(filter-out $(NET_TEST_HEADERS),$(wildcard c/net/*.h))

# Debian packages the project needs to build and test; `make deps` installs
# the missing ones when run as root, else prints the apt-get line.
DEB_PKGS = build-essential lua5.4 liblua5.4-dev lua-cjson libevent-dev \
           lua-busted lua-argparse lua-readline lua-socket iproute2
BENCH_PKGS = libleveldb-dev

.PHONY: all deps test ctest ctest-build spec shell asan tsan crashtest mutate bench bench-build bench-cluster bench-failover bench-scripting nemesis fuzz \
        lint format \
        fuzz-build fuzz-corpus install \
        uninstall clean

all: $(BUILD)/liblunakv.a $(BUILD)/liblunakvnet.a $(BUILD)/lunakv/core.so

# the leaf: sees only its own headers, so nothing of another room creeps in
$(BUILD)/obj/util/%.o: c/util/%.c $(UTIL_HEADERS)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Ic/util -c $< -o $@

$(BUILD)/obj/engine/%.o: c/engine/%.c $(HEADERS)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Ic/util -Ic/engine -c $< -o $@

$(BUILD)/obj/net/%.o: c/net/%.c $(NET_HEADERS) c/engine/lunakv.h $(UTIL_HEADERS)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Ic/util -Ic/engine -c $< -o $@

$(BUILD)/obj/lua/%.o: c/lua/%.c $(HEADERS) $(NET_HEADERS) $(wildcard c/lua/*.h) \
                     c/bench/workload.h
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Ic/util -Ic/engine -Ic/net -Ic/bench -I$(LUA_INCDIR) -c $< -o $@

# the bench's workloads (c/bench/workload.c), which core.bench runs too
$(BUILD)/obj/bench/workload.o: c/bench/workload.c c/bench/workload.h $(HEADERS)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Ic/util -Ic/engine -c $< -o $@

# c/util rides in the engine's library: everything that links lunakv links
# the engine, and the leaf needs no more than libc and pthreads
$(BUILD)/liblunakv.a: $(ENGINE_OBJ) $(UTIL_OBJ)
	@mkdir -p $(@D)
	rm -f $@ && $(AR) rcs $@ $^

# the net room: its own library, so the engine stays free of libevent
$(BUILD)/liblunakvnet.a: $(NET_OBJ)
	@mkdir -p $(@D)
	rm -f $@ && $(AR) rcs $@ $^

$(BUILD)/lunakv/core.so: $(LUA_OBJ) $(BUILD)/liblunakvnet.a $(BUILD)/liblunakv.a
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(LIBFLAG) -o $@ $(LUA_OBJ) $(BUILD)/liblunakvnet.a \
	  $(BUILD)/liblunakv.a $(NET_LDLIBS) $(LDLIBS) -Wl,--exclude-libs,ALL

$(BUILD)/test/util/%: c/util/%.c $(BUILD)/liblunakv.a c/engine/test.h \
                      $(UTIL_HEADERS)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Ic/util -Ic/engine $< -o $@ $(BUILD)/liblunakv.a $(LDLIBS)

$(BUILD)/test/%: c/engine/%.c $(BUILD)/liblunakv.a c/engine/test.h
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Ic/util -Ic/engine $< -o $@ $(BUILD)/liblunakv.a $(LDLIBS)

$(BUILD)/test/net/%: c/net/%.c $(BUILD)/liblunakvnet.a $(BUILD)/liblunakv.a \
                     c/engine/test.h $(NET_HEADERS) $(NET_TEST_HEADERS)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Ic/util -Ic/engine -Ic/net $< -o $@ $(BUILD)/liblunakvnet.a \
	  $(BUILD)/liblunakv.a $(NET_LDLIBS) $(LDLIBS)

deps:
	@sh tools/deps.sh $(DEB_PKGS)

ctest-build: $(TEST_BINS)

ctest: $(TEST_BINS)
	@set -e; for t in $(TEST_BINS); do echo "== $$t"; $$t; done

spec: all
	LUNAKV_BUILD=$(BUILD) $(LUA) $(BUSTED) $(BUSTED_ARGS) spec

test: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory ctest
	@$(MAKE) --no-print-directory spec

shell: deps
	@$(MAKE) --no-print-directory all
	$(LUA) bin/lunakv shell ./data

# AddressSanitizer + UBSan. lua5.4 itself is not instrumented, so the ASan
# runtime is preloaded; leak checking is off for the interpreter (it frees
# its own state lazily at exit) but on for the C unit tests.
ASAN_FLAGS = -fsanitize=address,undefined -fno-sanitize-recover=all \
             -fno-omit-frame-pointer
ASAN_LUA = LD_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
	ASAN_OPTIONS=detect_leaks=0 LUNAKV_BUILD=build-asan $(LUA)
asan: deps
	@$(MAKE) --no-print-directory BUILD=build-asan OPT=-O1 SAN="$(ASAN_FLAGS)" all ctest
	$(ASAN_LUA) $(BUSTED) $(BUSTED_ARGS) spec

# One spec file under ASan/UBSan, for make mutate's rows whose bug only a
# sanitizer sees: make asan-spec SPEC=15-faults_spec.lua FILTER='real size'
.PHONY: asan-spec
asan-spec:
	@$(MAKE) --no-print-directory BUILD=build-asan OPT=-O1 SAN="$(ASAN_FLAGS)" all
	$(ASAN_LUA) $(BUSTED) $(if $(FILTER),--filter='$(FILTER)') spec/$(SPEC)

# The C tests under ThreadSanitizer: the engine's lock-free paths (the
# memtable's skiplist and filter, snapshot views, cache presence counts)
# are raced by memtable_test, cache_test and db_test; then a short crash
# test, whose child reads on a second thread while it writes, flushes
# and compacts. The Lua specs stay out: an uninstrumented interpreter
# cannot host TSan (TSan must see every thread from its start).
TSAN_FLAGS = -fsanitize=thread -fno-omit-frame-pointer
tsan: deps
	@$(MAKE) --no-print-directory BUILD=build-tsan OPT=-O1 SAN="$(TSAN_FLAGS)" ctest
	@$(MAKE) --no-print-directory BUILD=build-tsan OPT=-O1 SAN="$(TSAN_FLAGS)" build-tsan/crash/crashtest
	build-tsan/crash/crashtest $(CRASH_DIR)-tsan kill 10 power 100

# The crash test (c/crash/crashtest.c, after RocksDB's db_crashtest):
# CYCLES SIGKILL cycles of a writing child, then 10 x CYCLES simulated
# power losses through the fault env. CI runs the default; the README
# quotes CYCLES=1000. CRASH_DIR is scratch space (tmpfs when there is one).
CYCLES    ?= 20
CRASH_DIR ?= $(if $(wildcard /dev/shm),/dev/shm,/tmp)/lunakv-crashtest-$(shell id -u)
$(BUILD)/crash/crashtest: c/crash/crashtest.c $(BUILD)/liblunakv.a $(HEADERS)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Ic/util -Ic/engine $< -o $@ $(BUILD)/liblunakv.a $(LDLIBS)

crashtest: deps
	@$(MAKE) --no-print-directory $(BUILD)/crash/crashtest
	$(BUILD)/crash/crashtest $(CRASH_DIR) kill $(CYCLES) power $$(( $(CYCLES) * 10 ))

# The engine's fault walk over every call of its workload, where `make
# ctest` (and CI) fail an even sample of about 40 calls of each kind.
.PHONY: faultwalk
faultwalk:
	@$(MAKE) --no-print-directory $(BUILD)/test/fault_test
	FAULT_WALK=all $(BUILD)/test/fault_test

# The Raft core's deterministic simulation (c/net/raft_sim_test.c, which
# `make ctest` runs with its short default): the scripted scenarios, then
# SEEDS random seeds from SIM_START (1). A failing seed prints the command
# that replays it; SEEDS=100000 is the long run.
.PHONY: sim
SEEDS     ?= 2000
SIM_START ?= 1
sim: $(BUILD)/test/net/raft_sim_test
	SIM_SEEDS=$(SEEDS) SIM_START=$(SIM_START) $(BUILD)/test/net/raft_sim_test

# Mutation testing (tools/mutate.lua): each mutation in tools/mutations.lua
# (and tools/mutations_net.lua, mutations_raft.lua, mutations_funcs.lua)
# breaks one documented guarantee in a scratch copy, and the test named
# for it must fail. MUTATE=word,... picks by name, MUTATE_SAMPLE=n picks n.
mutate: deps
	@MUTATE="$(MUTATE)" MUTATE_SAMPLE="$(MUTATE_SAMPLE)" MUTATE_SEED="$(MUTATE_SEED)" \
	  $(LUA) tools/mutate.lua

BENCH_NUM ?= 1000000
$(BUILD)/bench/lkv_bench: $(BENCH_SRC) $(BENCH_HEADERS) $(BUILD)/liblunakv.a
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Ic/util -Ic/engine $(BENCH_SRC) -o $@ $(BUILD)/liblunakv.a -lleveldb $(LDLIBS)

# the benchmark's binary alone (CI builds it so it keeps compiling)
bench-build: deps
	@sh tools/deps.sh $(BENCH_PKGS)
	@$(MAKE) --no-print-directory $(BUILD)/bench/lkv_bench

bench: bench-build
	$(BUILD)/bench/lkv_bench --num=$(BENCH_NUM) $(if $(BENCH_JSON),--json=$(BENCH_JSON))

# A 3-node lunakv cluster and a 3-member etcd cluster (Debian etcd-server,
# installed when run as root; without it lunakv runs alone) on 127.0.0.1,
# driven one after the other by the same C load generator at 32
# connections: durable writes, then linearizable reads
# (tools/bench_cluster.lua). Everything started is stopped at the end.
BENCH_SECONDS ?= 10
bench-cluster: deps
	-@sh tools/deps.sh etcd-server || echo "bench-cluster: no etcd: lunakv only" >&2
	@$(MAKE) --no-print-directory all
	$(LUA) bin/lunakv run tools/bench_cluster.lua --seconds $(BENCH_SECONDS)

# Issue 19's scripting figures (tools/bench_scripting.lua): an increment
# function's calls (get, add 1, set) on one lunakv node against Redis
# running the same logic through EVAL (Debian's redis-server with
# appendfsync always, driven by redis-tools' redis-benchmark; installed
# when run as root; without them lunakv runs alone), then the calls
# against plain /set on a 3-node cluster; 32 connections, BENCH_SECONDS
# per workload, one server at a time; the one-node part BENCH_ROUNDS
# times, lunakv and Redis alternating (medians). Everything started is
# stopped at the end.
BENCH_ROUNDS ?= 5
bench-scripting: deps
	-@sh tools/deps.sh redis-server redis-tools || echo "bench-scripting: no redis: lunakv only" >&2
	@$(MAKE) --no-print-directory all
	$(LUA) bin/lunakv run tools/bench_scripting.lua --seconds $(BENCH_SECONDS) \
	  --rounds $(BENCH_ROUNDS)

# Failover figures: a 3-node lunakv cluster on 127.0.0.1 under continuous
# writes; kill -9 its leader BENCH_KILLS times (restarting it each time)
# and transfer the leadership BENCH_TRANSFERS times; prints how long
# writes failed per kill and the errors and pause per transfer
# (tools/bench_failover.lua). Everything started is stopped at the end.
BENCH_KILLS ?= 20
BENCH_TRANSFERS ?= 10
bench-failover: deps
	@$(MAKE) --no-print-directory all
	$(LUA) bin/lunakv run tools/bench_failover.lua --kills $(BENCH_KILLS) --transfers $(BENCH_TRANSFERS)

# The nemesis (tools/nemesis.lua): NEMESIS_NODES (3 or 5) nodes on
# 127.0.0.1 with two client processes each, writing and reading
# (consistent=true) through their own node, while a fault loop kills
# (-9), pauses (SIGSTOP), restarts (SIGTERM) nodes, removes a voter and
# adds it back wiped (--join), and transfers the leadership at random for
# NEMESIS_SECONDS; then everything is healed and
# the clients' history is checked: no acknowledged write lost, no stale
# or invented consistent read, every node's data the same. The seed is
# printed (NEMESIS_SEED=S repeats a run's schedule); a failure leaves
# the logs and data and prints where. CI runs 20 s.
NEMESIS_SECONDS ?= 60
NEMESIS_NODES   ?= 3
nemesis: deps
	@$(MAKE) --no-print-directory all
	$(LUA) bin/lunakv run tools/nemesis.lua --seconds $(NEMESIS_SECONDS) \
	  --nodes $(NEMESIS_NODES) $(if $(NEMESIS_SEED),--seed $(NEMESIS_SEED))

# libFuzzer targets for the readers of untrusted bytes (c/fuzz/): WAL
# replay, SSTable open/read, MANIFEST decode, the HTTP JSON body reader, the
# replication log at open (rlog) and its frames as an /append body (frames),
# the HTTP request head and chunked body parser (http), the load
# generator's reader of HTTP answers (httpresp). Seeds come from a small
# real database (seed.lua), small real replication logs (rlog_seed.c) and
# a few requests and answers as they go over the wire (printf below);
# FUZZ_SECONDS per target.
FUZZ_SECONDS ?= 60
FUZZ_CC      ?= clang
FUZZ_BASE     = -std=c11 -D_GNU_SOURCE -g -O1 -pthread -Ic/util -Ic/engine -Ic/net
FUZZ_FLAGS    = $(FUZZ_BASE) -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
FUZZ_TARGETS  = wal sst block manifest json rlog frames http httpresp
FUZZ_NET_SRC  = c/net/json.c c/net/hparse.c c/net/httpresp.c \
                $(filter-out %_test.c,$(wildcard c/net/rlog*.c))
FUZZ_CORPUS   = c/fuzz/corpus
fuzz-build: deps
	@sh tools/deps.sh clang libclang-rt-14-dev
	@$(MAKE) --no-print-directory all
	@mkdir -p build-fuzz
	@set -e; for t in $(FUZZ_TARGETS); do \
	  $(FUZZ_CC) $(FUZZ_FLAGS) c/fuzz/fuzz_$$t.c $(UTIL_SRC) $(ENGINE_SRC) \
	    $(FUZZ_NET_SRC) -o build-fuzz/fuzz_$$t; done
	$(FUZZ_CC) $(FUZZ_BASE) -fsanitize=address,undefined c/fuzz/rlog_seed.c \
	  $(UTIL_SRC) $(ENGINE_SRC) $(FUZZ_NET_SRC) -o build-fuzz/rlog_seed
	rm -rf build-fuzz/seed && $(LUA) bin/lunakv run c/fuzz/seed.lua build-fuzz/seed
	@set -e; for t in $(FUZZ_TARGETS); do mkdir -p build-fuzz/corpus_$$t; done
	cp build-fuzz/seed/wal.log.* build-fuzz/corpus_wal/
	cp build-fuzz/seed/*.sst build-fuzz/corpus_sst/
	cp build-fuzz/seed/MANIFEST build-fuzz/corpus_manifest/
	printf '{"key": "a\\u00e9\\ud83d\\ude00", "value": "v\\n", "n": [1, {"x": null}]}' \
	  > build-fuzz/corpus_json/seed1
	printf 'GET /kv/a?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n' \
	  > build-fuzz/corpus_http/get
	printf 'POST /put HTTP/1.1\r\nHost: n1\r\nContent-Type: application/json\r\nContent-Length: 26\r\nExpect: 100-continue\r\n\r\n{"key": "a", "value": "b"}' \
	  > build-fuzz/corpus_http/post
	printf 'PUT /kv/a HTTP/1.1\r\nHost: n1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-Sum: 1\r\n\r\n' \
	  > build-fuzz/corpus_http/chunked
	printf '\r\nGET /get?key=a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nDELETE /kv/a HTTP/1.1\r\nConnection: close\r\n\r\n' \
	  > build-fuzz/corpus_http/pipelined
	rm -rf build-fuzz/seed-rlog && build-fuzz/rlog_seed build-fuzz/seed-rlog \
	  build-fuzz/corpus_rlog build-fuzz/corpus_frames
	printf 'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n{"value": "v1"}' > build-fuzz/corpus_httpresp/len
	printf 'HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value;q="a b"\r\nnot f\r\nA \r\nound, sorr\r\n0\r\nX-Trailer: t\r\nServer-Timing: db;dur=1\r\n\r\n' > build-fuzz/corpus_httpresp/chunked
	printf 'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok' > build-fuzz/corpus_httpresp/continue
	printf 'HTTP/1.0 500 Internal Server Error\r\nContent-Type: text/plain\r\n\r\nengine: ioerror: 000123.sst\n' > build-fuzz/corpus_httpresp/to-close
	printf 'HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 38\r\n\r\n{"error": "noquorum: 1 of 3 replicas"}' > build-fuzz/corpus_httpresp/retry-after

# Each target reads the seeds made above and its committed corpus
# (c/fuzz/corpus/TARGET: minimized inputs, and every input that once
# crashed it, kept as a regression test); new inputs go to build-fuzz. A
# crash fails the target and names the input to add to the corpus.
fuzz: fuzz-build
	@set -e; for t in $(FUZZ_TARGETS); do echo "== fuzz_$$t ($(FUZZ_SECONDS) s)"; \
	  mkdir -p $(FUZZ_CORPUS)/$$t; \
	  if ! build-fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -max_len=65536 \
	      -artifact_prefix=build-fuzz/fuzz_$$t- -print_final_stats=1 \
	      build-fuzz/corpus_$$t $(FUZZ_CORPUS)/$$t > build-fuzz/fuzz_$$t.log 2>&1; then \
	    tail -40 build-fuzz/fuzz_$$t.log; \
	    echo "fuzz_$$t crashed: add its input (build-fuzz/fuzz_$$t-*) to $(FUZZ_CORPUS)/$$t/ once fixed" >&2; \
	    exit 1; fi; \
	  tail -4 build-fuzz/fuzz_$$t.log; done

# Fold what the last fuzz runs found into the committed corpora, minimized
# (libFuzzer's -merge keeps the inputs that add coverage).
fuzz-corpus: fuzz-build
	@set -e; for t in $(FUZZ_TARGETS); do \
	  rm -rf $(FUZZ_CORPUS)/$$t.new && mkdir -p $(FUZZ_CORPUS)/$$t.new $(FUZZ_CORPUS)/$$t; \
	  build-fuzz/fuzz_$$t -merge=1 -max_len=65536 $(FUZZ_CORPUS)/$$t.new \
	    $(FUZZ_CORPUS)/$$t build-fuzz/corpus_$$t > build-fuzz/merge_$$t.log 2>&1; \
	  rm -rf $(FUZZ_CORPUS)/$$t && mv $(FUZZ_CORPUS)/$$t.new $(FUZZ_CORPUS)/$$t; \
	  echo "$$t: $$(ls $(FUZZ_CORPUS)/$$t | wc -l) inputs"; done

# the Lua package's directories (lunakv, lunakv/cmd, ...): every *.lua in
# them is installed, so a new module file needs no line here
LUA_PKG_DIRS = $(patsubst lua/%/,%,$(sort $(dir $(wildcard lua/lunakv/*.lua lua/lunakv/*/*.lua))))

install: all
	install -d $(DESTDIR)$(INST_LIBDIR)/lunakv $(DESTDIR)$(INST_BINDIR) \
	           $(LUA_PKG_DIRS:%=$(DESTDIR)$(INST_LUADIR)/%)
	install -m 0755 $(BUILD)/lunakv/core.so $(DESTDIR)$(INST_LIBDIR)/lunakv/core.so
	set -e; for d in $(LUA_PKG_DIRS); do \
	  install -m 0644 lua/$$d/*.lua $(DESTDIR)$(INST_LUADIR)/$$d/; done
	install -m 0755 bin/lunakv $(DESTDIR)$(INST_BINDIR)/lunakv

uninstall:
	rm -rf $(DESTDIR)$(INST_LIBDIR)/lunakv $(DESTDIR)$(INST_LUADIR)/lunakv \
	       $(DESTDIR)$(INST_BINDIR)/lunakv

# The habits, checked: every C file as .clang-format lays it out (make
# format applies it), luacheck over every Lua file (.luacheckrc), the
# whole C tree (module, tests, crash test) built with warnings as errors,
# no circle of files calling each other in a C room (tools/callgraph.sh),
# and every row of the mutation test still applying to the code.
LINT_PKGS = clang-format lua-check
C_FILES   = $(wildcard c/*/*.c c/*/*.h)
LUA_FILES = lua spec bin tools examples
lint:
	@sh tools/deps.sh $(LINT_PKGS)
	clang-format --dry-run --Werror $(C_FILES)
	luacheck -q $(LUA_FILES)
	@$(MAKE) --no-print-directory BUILD=build-lint CFLAGS="-O2 -Werror" \
	  all ctest-build build-lint/crash/crashtest
	@for room in util engine net lua; do \
	  sh tools/callgraph.sh build-lint/obj/$$room >/dev/null || exit 1; done
	MUTATE_CHECK=1 LUNAKV_BUILD=build-lint $(LUA) tools/mutate.lua

format:
	@sh tools/deps.sh clang-format
	clang-format -i $(C_FILES)

clean:
	rm -rf build build-asan build-tsan build-fuzz build-lint
