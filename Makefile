# reghook — build, run and test.
#
#   make            build build/reghook
#   make run        install what is missing, build, serve (a private PostgreSQL of the checkout)
#   make clean-db   stop and remove that PostgreSQL and its data
#   make test       install what is missing, build (also with sanitizers), run every test
#   make bench      the benchmarks under tests/bench/
#   make deb        the Debian package, build/deb/reghook_<version>_<arch>.deb
#   make image      the container image localhost/reghook:<version> (and :latest), from the package
#   make fuzz       each libFuzzer harness of tests/fuzz/ for FUZZ_SECONDS (300) seconds
#   make format     reformat the C with the pinned clang-format; format-check only checks
#
# Two build trees share one set of rules: build/ (optimised) and build/asan/
# (AddressSanitizer + UndefinedBehaviorSanitizer), which the tests run.

VERSION := 0.1.0
PKGS    := libevent libevent_openssl yajl libcurl libpq openssl

CC      ?= cc
WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter
ifneq ($(CI),)
WARN    += -Werror
endif
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
BASE_CFLAGS = -std=c11 -D_GNU_SOURCE -DREGHOOK_VERSION='"$(VERSION)"' $(WARN) \
	-Icommon -Idispatcher $(PKG_CFLAGS) -MMD -MP

OPT      := -O2 -g
SAN      :=

COMMON_SRC     := $(wildcard common/*.c)
DISPATCHER_SRC := $(filter-out dispatcher/main.c,$(wildcard dispatcher/*.c))
UNIT_SRC       := $(wildcard tests/unit/test_*.c)
SCHEMA_SQL     := $(sort $(wildcard schema/[0-9][0-9][0-9]_*.sql))
# The files of schema/functions/, in the order reghook migrate applies them:
# those that others call first, authz.sql (grants and policies) last.
FUNCTION_SQL   := $(addprefix schema/functions/,access.sql namespaces.sql sources.sql ingest.sql \
	webhooks.sql queue.sql retrigger.sql history.sql authz.sql)
ifneq ($(sort $(FUNCTION_SQL)),$(sort $(wildcard schema/functions/*.sql)))
$(error FUNCTION_SQL must list every file of schema/functions/, each once)
endif

objs = $(patsubst %.c,$(1)/obj/%.o,$(2))

.PHONY: all asan run clean-db test unit bench deb image fuzz fuzzers format format-check install-deps clean
all: build/reghook

# --- one rule set, instantiated for each build tree ---------------------------
define TREE
$(1)/obj/%.o: %.c | $(1)/gen/schema.h
	@mkdir -p $$(dir $$@)
	$$(CC) $$(BASE_CFLAGS) -I$(1)/gen $(2) -c $$< -o $$@

$(1)/gen/schema.h: $(SCHEMA_SQL) $(FUNCTION_SQL) packaging/embed-schema Makefile
	@mkdir -p $$(dir $$@)
	packaging/embed-schema $(SCHEMA_SQL) --functions $(FUNCTION_SQL) > $$@.tmp && mv $$@.tmp $$@

$(1)/obj/dispatcher/migrate.o: $(1)/gen/schema.h

$(1)/reghook: $(call objs,$(1),dispatcher/main.c $(DISPATCHER_SRC) $(COMMON_SRC))
	$$(CC) $(2) -o $$@ $$^ $$(PKG_LIBS) -lm

$(1)/tests/unit/%: $(1)/obj/tests/unit/%.o $(call objs,$(1),$(DISPATCHER_SRC) $(COMMON_SRC))
	@mkdir -p $$(dir $$@)
	$$(CC) $(2) -o $$@ $$^ $$(PKG_LIBS) -lm

$(1)/tests/tools/%: $(1)/obj/tests/tools/%.o $(call objs,$(1),$(DISPATCHER_SRC) $(COMMON_SRC))
	@mkdir -p $$(dir $$@)
	$$(CC) $(2) -o $$@ $$^ $$(PKG_LIBS) -lm
endef

SANFLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
$(eval $(call TREE,build,$(OPT)))
$(eval $(call TREE,build/asan,$(SANFLAGS)))

UNIT_BINS      := $(patsubst tests/unit/%.c,build/asan/tests/unit/%,$(UNIT_SRC))
# Programs that integration tests run (tests/tools/NAME.c), sanitizers on.
TOOL_BINS      := $(patsubst tests/tools/%.c,build/asan/tests/tools/%,$(wildcard tests/tools/*.c))

asan: build/asan/reghook $(UNIT_BINS) $(TOOL_BINS)

install-deps:
	@packaging/install-deps

# Only what building and serving need: not the tests' servers and tools.
run:
	@packaging/install-deps run
	@$(MAKE) --no-print-directory build/reghook
	packaging/run-local build/reghook

# Stops and removes make run's private PostgreSQL cluster (and ./var's files).
clean-db:
	packaging/run-local --remove-db

# The builds of make test run one job per core.
test: install-deps
	@$(MAKE) --no-print-directory -j$(shell nproc 2>/dev/null || echo 1) build/reghook asan fuzzers
	tests/run build build/asan $(TESTS)

unit: asan
	@for t in $(UNIT_BINS); do $$t || exit 1; done

bench: install-deps
	@$(MAKE) --no-print-directory build/reghook
	tests/bench/run build/reghook

# make soak: the long versions of the reliability tests (pytest marker soak):
# 20,000 events under SIGKILLs, PostgreSQL stopped for 30 s, six failovers of a
# primary and its standby back and forth; they print figures.
.PHONY: soak
soak: install-deps
	@$(MAKE) --no-print-directory build/reghook asan
	REGHOOK_SOAK=1 tests/run build build/asan -m soak -s $(TESTS)

# --- Debian package: packaging/build-deb runs dpkg-buildpackage on a copy of
# the tree with packaging/debian/; rebuilt only when a source changed.
DEB := build/deb/reghook_$(VERSION)_$(shell dpkg --print-architecture 2>/dev/null).deb
# One build at a time in a checkout (flock): two at once (two tests, or two
# make image) removed each other's tree as they compiled in it; the second
# then finds the package up to date.
deb: install-deps
	@mkdir -p build/deb
	@flock build/deb/.lock $(MAKE) --no-print-directory $(DEB)
$(DEB): Makefile README.md $(wildcard common/*.[ch] dispatcher/*.[ch]) $(SCHEMA_SQL) $(FUNCTION_SQL) \
		$(filter-out packaging/container/% packaging/compose.yaml,$(shell find packaging -type f 2>/dev/null))
	packaging/build-deb $(VERSION) build/deb

# --- container image: that package installed into a Debian base made with
# mmdebstrap (packaging/container/build-image; the base is built once per
# package list, then only the thin layer with the package). IMAGE_TAGS names it.
IMAGE_TAGS ?= localhost/reghook:$(VERSION) localhost/reghook:latest
image: install-deps
	@$(MAKE) --no-print-directory deb
	packaging/container/build-image $(DEB) $(IMAGE_TAGS)

# --- fuzzing: libFuzzer harnesses (clang), each linked with what it tests ---------
# tests/run runs each briefly (FUZZ_TEST_SECONDS); `make fuzz` for longer,
# keeping what it learns in build/fuzz/corpus/ and crashes in build/fuzz/.
FUZZ_SECONDS ?= 300
FUZZ_CFLAGS  := -std=c11 -D_GNU_SOURCE $(WARN) -Icommon -Idispatcher $(PKG_CFLAGS) \
	-O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined \
	-fno-sanitize-recover=undefined
FUZZ_BASE    := common/buf.c common/log.c
FUZZ_BINS    := build/fuzz/fuzz_envelope build/fuzz/fuzz_jsonparse build/fuzz/fuzz_urltemplate \
	build/fuzz/fuzz_config build/fuzz/fuzz_template build/fuzz/fuzz_httpd

build/fuzz/fuzz_envelope: dispatcher/envelope.c common/jsonparse.c
build/fuzz/fuzz_jsonparse: common/jsonparse.c
build/fuzz/fuzz_urltemplate: dispatcher/urltemplate.c
build/fuzz/fuzz_config: dispatcher/config.c common/conf.c common/netguard.c dispatcher/urltemplate.c
build/fuzz/fuzz_httpd: common/httpd.c
build/fuzz/fuzz_template: dispatcher/template.c dispatcher/payload.c dispatcher/envelope.c \
	common/jsonparse.c common/jsongen.c
build/fuzz/%: tests/fuzz/%.c $(FUZZ_BASE) $(wildcard common/*.h dispatcher/*.h)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -o $@ $(filter %.c,$^) $(PKG_LIBS)

fuzzers: $(FUZZ_BINS)

fuzz: install-deps
	@$(MAKE) --no-print-directory fuzzers
	tests/fuzz/run build/fuzz $(FUZZ_SECONDS) build/fuzz

FORMAT_FILES = $(wildcard common/*.[ch] dispatcher/*.[ch] tests/unit/*.[ch] tests/fuzz/*.[ch] \
	tests/tools/*.[ch])
format:
	clang-format -i $(FORMAT_FILES)
format-check:
	clang-format --dry-run --Werror $(FORMAT_FILES)

clean:
	rm -rf build

-include $(shell find build -name '*.d' 2>/dev/null)
