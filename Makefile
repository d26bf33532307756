# tenant_backup top-level build. `make test` and `make demo` are the README's two commands.
# Everything builds out of tree into build/ (and build-asan/ for the sanitizer run).

CC ?= cc
# The README's commands start on a machine that has none of the packages: they run
# `deps` first and build in a sub-make, so pkg-config is asked only after the packages are
# there. Each package is asked on its own (one missing one must not empty every flag), and
# `pkg-check` names a missing one instead of letting the compiler fail on a header.
PKGS := libcrypto libzstd libcurl jansson libxml-2.0
AGENT_PKGS := libpq libmariadb hiredis libmongoc-1.0
pkg_flags = $(foreach p,$(2),$(shell pkg-config $(1) $(p) 2>/dev/null))
PKG_CFLAGS := $(call pkg_flags,--cflags,$(PKGS))
PKG_LIBS := $(call pkg_flags,--libs,$(PKGS))
DEPS ?= sh scripts/install-deps.sh
DEMO ?= bash scripts/demo.sh

# The version every binary reports (--version, the agents' hello): the extension's own.
TB_VERSION := $(shell sed -n "s/^default_version = '\([^']*\)'.*/\1/p" extension/tenant_backup.control)

WARN := -Wall -Wextra -Werror -Wshadow -Wmissing-prototypes -Wstrict-prototypes
OPT ?= -O2 -g
CFLAGS_ALL := -std=gnu11 $(OPT) $(WARN) -D_GNU_SOURCE -DTB_VERSION='"$(TB_VERSION)"' -fPIC -Icore $(PKG_CFLAGS) $(CFLAGS)
LIBS := $(PKG_LIBS) -lpthread

BUILD ?= build

CORE_SRC := $(wildcard core/*.c core/storage/*.c)
CLI_SRC := $(wildcard cli/*.c)
UNIT_SRC := $(wildcard test/unit/test_*.c)
AGENT_COMMON_SRC := $(wildcard agents/common/*.c)
MYSQL_AGENT_SRC := $(wildcard agents/mysql/*.c)
REDIS_AGENT_SRC := $(wildcard agents/redis/*.c)
MONGODB_AGENT_SRC := $(wildcard agents/mongodb/*.c)

CORE_OBJ := $(CORE_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ := $(CLI_SRC:%.c=$(BUILD)/%.o)
CORE_LIB := $(BUILD)/libtbcore.a
CLI_BIN := $(BUILD)/bin/tenant-backup
UNIT_BIN := $(UNIT_SRC:test/unit/%.c=$(BUILD)/test/%)

# Agents: the shared job loop (libpq) and one program per engine.
AGENT_CFLAGS := -Iagents/common $(call pkg_flags,--cflags,$(AGENT_PKGS))
AGENT_COMMON_OBJ := $(AGENT_COMMON_SRC:%.c=$(BUILD)/%.o)
AGENT_LIB := $(BUILD)/libtbagent.a
MYSQL_AGENT_OBJ := $(MYSQL_AGENT_SRC:%.c=$(BUILD)/%.o)
MYSQL_AGENT_BIN := $(BUILD)/bin/tenant-backup-agent-mysql
REDIS_AGENT_OBJ := $(REDIS_AGENT_SRC:%.c=$(BUILD)/%.o)
REDIS_AGENT_BIN := $(BUILD)/bin/tenant-backup-agent-redis
MONGODB_AGENT_OBJ := $(MONGODB_AGENT_SRC:%.c=$(BUILD)/%.o)
MONGODB_AGENT_BIN := $(BUILD)/bin/tenant-backup-agent-mongodb
AGENT_BINS := $(MYSQL_AGENT_BIN) $(REDIS_AGENT_BIN) $(MONGODB_AGENT_BIN)
ASAN_BINS := build-asan/bin/tenant-backup build-asan/bin/tenant-backup-agent-mysql build-asan/bin/tenant-backup-agent-redis \
	build-asan/bin/tenant-backup-agent-mongodb
AGENT_LIBS := $(call pkg_flags,--libs,libpq)
PREFIX ?= /usr/local

PG_CONFIG ?= /usr/lib/postgresql/15/bin/pg_config
PGXS_ARGS := -C extension PG_CONFIG=$(PG_CONFIG) with_llvm=no

.PHONY: all deps pkg-check extension install install-bin unit-bins test test-unit test-asan test-integration demo bench \
	format clean

all: pkg-check $(CLI_BIN) $(AGENT_BINS) extension

pkg-check:
	@for p in $(PKGS) $(AGENT_PKGS); do pkg-config --exists $$p || \
		{ echo "pkg-config does not know $$p: run 'make deps' (as root) first" >&2; exit 1; }; done

# The PostgreSQL extension (PGXS), linked with core/.
extension: $(CORE_LIB)
	@$(MAKE) --no-print-directory $(PGXS_ARGS)

# Installs the extension where pg_config says (umask 022 keeps it readable by postgres).
install: extension
	umask 022 && $(MAKE) --no-print-directory $(PGXS_ARGS) install

# The command and the agents, for hosts that run them.
install-bin: $(CLI_BIN) $(AGENT_BINS)
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 755 $^ $(DESTDIR)$(PREFIX)/bin/

deps:
	@$(DEPS)

# The files that print TB_VERSION are rebuilt when it changes.
$(BUILD)/cli/main.o $(BUILD)/agents/common/config.o $(BUILD)/agents/common/control.o: extension/tenant_backup.control

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC      $@"
	@$(CC) $(CFLAGS_ALL) -MMD -MP -c -o $@ $<

$(BUILD)/agents/%.o: agents/%.c
	@mkdir -p $(dir $@)
	@echo "  CC      $@"
	@$(CC) $(CFLAGS_ALL) $(AGENT_CFLAGS) -MMD -MP -c -o $@ $<

$(AGENT_LIB): $(AGENT_COMMON_OBJ)
	@mkdir -p $(dir $@)
	@echo "  AR      $@"
	@rm -f $@ && ar rcs $@ $^

$(MYSQL_AGENT_BIN): $(MYSQL_AGENT_OBJ) $(AGENT_LIB) $(CORE_LIB)
	@mkdir -p $(dir $@)
	@echo "  LINK    $@"
	@$(CC) $(CFLAGS_ALL) -o $@ $(MYSQL_AGENT_OBJ) $(AGENT_LIB) $(CORE_LIB) $(AGENT_LIBS) \
		$(shell pkg-config --libs libmariadb 2>/dev/null) $(LIBS)

$(REDIS_AGENT_BIN): $(REDIS_AGENT_OBJ) $(AGENT_LIB) $(CORE_LIB)
	@mkdir -p $(dir $@)
	@echo "  LINK    $@"
	@$(CC) $(CFLAGS_ALL) -o $@ $(REDIS_AGENT_OBJ) $(AGENT_LIB) $(CORE_LIB) $(AGENT_LIBS) \
		$(shell pkg-config --libs hiredis 2>/dev/null) $(LIBS)

$(MONGODB_AGENT_BIN): $(MONGODB_AGENT_OBJ) $(AGENT_LIB) $(CORE_LIB)
	@mkdir -p $(dir $@)
	@echo "  LINK    $@"
	@$(CC) $(CFLAGS_ALL) -o $@ $(MONGODB_AGENT_OBJ) $(AGENT_LIB) $(CORE_LIB) $(AGENT_LIBS) \
		$(shell pkg-config --libs libmongoc-1.0 2>/dev/null) $(LIBS)

$(CORE_LIB): $(CORE_OBJ)
	@mkdir -p $(dir $@)
	@echo "  AR      $@"
	@rm -f $@ && ar rcs $@ $^

# The CLI talks to the control plane and restores PostgreSQL tenants over libpq.
$(CLI_OBJ): CFLAGS_ALL += $(call pkg_flags,--cflags,libpq)
$(CLI_BIN): $(CLI_OBJ) $(CORE_LIB)
	@mkdir -p $(dir $@)
	@echo "  LINK    $@"
	@$(CC) $(CFLAGS_ALL) -o $@ $(CLI_OBJ) $(CORE_LIB) $(AGENT_LIBS) $(LIBS)

$(BUILD)/test/%: test/unit/%.c $(AGENT_LIB) $(CORE_LIB)
	@mkdir -p $(dir $@)
	@echo "  LINK    $@"
	@$(CC) $(CFLAGS_ALL) $(AGENT_CFLAGS) -Itest/unit -o $@ $< $(AGENT_LIB) $(CORE_LIB) $(AGENT_LIBS) $(LIBS) -lcmocka

# An engine's pieces but its main(), for its unit test (test_<engine>.c).
$(BUILD)/libtb%.a:
	@mkdir -p $(dir $@)
	@echo "  AR      $@"
	@rm -f $@ && ar rcs $@ $(filter-out %/main.o,$^)

$(BUILD)/libtbmysql.a: $(MYSQL_AGENT_OBJ)
$(BUILD)/libtbredis.a: $(REDIS_AGENT_OBJ)
$(BUILD)/libtbmongodb.a: $(MONGODB_AGENT_OBJ)
$(BUILD)/test/test_mysql: ENGINE_LIBS = $(call pkg_flags,--libs,libmariadb)
$(BUILD)/test/test_redis: ENGINE_LIBS = $(call pkg_flags,--libs,hiredis)
$(BUILD)/test/test_mongodb: ENGINE_LIBS = $(call pkg_flags,--libs,libmongoc-1.0)

$(BUILD)/test/test_mysql $(BUILD)/test/test_redis $(BUILD)/test/test_mongodb: $(BUILD)/test/test_%: test/unit/test_%.c $(BUILD)/libtb%.a \
		$(AGENT_LIB) $(CORE_LIB)
	@mkdir -p $(dir $@)
	@echo "  LINK    $@"
	@$(CC) $(CFLAGS_ALL) $(AGENT_CFLAGS) -Iagents/$* -Itest/unit -o $@ $< $(BUILD)/libtb$*.a $(AGENT_LIB) \
		$(CORE_LIB) $(AGENT_LIBS) $(ENGINE_LIBS) $(LIBS) -lcmocka

unit-bins: $(UNIT_BIN)

# Unit tests and the CLI rebuilt with AddressSanitizer and UBSan, in their own tree.
ASAN_FLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

test-unit: deps
	@$(MAKE) --no-print-directory pkg-check unit-bins $(CLI_BIN)
	CMOCKA_MESSAGE_OUTPUT=TAP prove -e '' $(UNIT_BIN)

test-asan: deps
	@$(MAKE) --no-print-directory pkg-check
	@$(MAKE) --no-print-directory BUILD=build-asan OPT="$(ASAN_FLAGS)" unit-bins $(ASAN_BINS)
	CMOCKA_MESSAGE_OUTPUT=TAP ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
		prove -e '' $(UNIT_BIN:$(BUILD)/%=build-asan/%)

test-integration: deps
	@$(MAKE) --no-print-directory all install
	TB_BIN=$(CURDIR)/$(BUILD)/bin prove test/integration/*.t

# All tests, each suite once, with one prove summary at the end; TEST_JOBS of them at
# a time (each integration script starts its own servers on random free ports, and
# none touches the installation the others use).
TEST_JOBS ?= 2
test: deps
	@$(MAKE) --no-print-directory unit-bins all install
	@$(MAKE) --no-print-directory BUILD=build-asan OPT="$(ASAN_FLAGS)" unit-bins $(ASAN_BINS)
	CMOCKA_MESSAGE_OUTPUT=TAP ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	TB_BIN=$(CURDIR)/$(BUILD)/bin TB_ASAN_BIN=$(CURDIR)/build-asan/bin \
		prove -j$(TEST_JOBS) --timer -e '' $(UNIT_BIN) $(UNIT_BIN:$(BUILD)/%=build-asan/%) test/integration/*.t

demo: deps
	@$(MAKE) --no-print-directory all install
	@$(DEMO) $(CURDIR)/$(BUILD)/bin

bench: deps
	@$(MAKE) --no-print-directory all install
	@bash bench/seal-open.sh $(CURDIR)/$(BUILD)/bin
	@bash bench/pg-backup.sh $(CURDIR)/$(BUILD)/bin
	@bash bench/mysql-backup.sh $(CURDIR)/$(BUILD)/bin
	@bash bench/redis-backup.sh $(CURDIR)/$(BUILD)/bin
	@bash bench/mongodb-backup.sh $(CURDIR)/$(BUILD)/bin
	@bash bench/pitr.sh $(CURDIR)/$(BUILD)/bin

format:
	clang-format -i $(CORE_SRC) $(wildcard core/*.h core/storage/*.h) $(CLI_SRC) $(wildcard cli/*.h) $(UNIT_SRC) \
		$(wildcard extension/*.c extension/*.h agents/*/*.c agents/*/*.h)

clean:
	rm -rf build build-asan
	@$(MAKE) --no-print-directory $(PGXS_ARGS) clean

-include $(CORE_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(AGENT_COMMON_OBJ:.o=.d) $(MYSQL_AGENT_OBJ:.o=.d) $(REDIS_AGENT_OBJ:.o=.d) $(MONGODB_AGENT_OBJ:.o=.d)
