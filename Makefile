# OpenStack image tools: build, test, install.
#
#   make demo      build, then run imginfo-parse over the bundled samples
#   make test      build, then run every test
#   make check     fmt, clippy, tests, man page drift, staged install (what CI runs)
#   make test-fleet  the Ansible fleet playbook (examples/fleet/) on 7 local hosts
#   make fuzz      every parser's cargo-fuzz target for FUZZ_SECONDS each (nightly)
#   make install   copy built binaries, man pages and completions (never compiles)
#
# Packagers: PREFIX, DESTDIR, BINDIR, MANDIR, DATAROOTDIR, CARGO, CARGOFLAGS,
# PROFILE and CARGO_TARGET_DIR are honoured.

TOOLS       := imginfo-parse checksum-tee vhd-chain cachewalk glance-dump glance-load

PREFIX      ?= /usr/local
BINDIR      ?= $(PREFIX)/bin
DATAROOTDIR ?= $(PREFIX)/share
MANDIR      ?= $(DATAROOTDIR)/man
BASHDIR     ?= $(DATAROOTDIR)/bash-completion/completions
ZSHDIR      ?= $(DATAROOTDIR)/zsh/vendor-completions
FISHDIR     ?= $(DATAROOTDIR)/fish/vendor_completions.d
INSTALL     ?= install
CARGO       ?= cargo
CARGOFLAGS  ?= --locked
PROFILE     ?= release

TARGET_DIR  := $(or $(CARGO_TARGET_DIR),target)
OUT_DIR     := $(TARGET_DIR)/$(if $(filter dev,$(PROFILE)),debug,$(PROFILE))
DEBUG_DIR   := $(TARGET_DIR)/debug
COMP_DIR    := $(TARGET_DIR)/completions

.PHONY: all build build-debug test test-glance test-upstream test-fleet upstream-man faults fuzz check deb deb-check vendor-check fmt-check clippy man man-check \
	completions install uninstall install-check demo bench clean

all: build man completions

# Release binaries carry no build paths (reproducible packages): the
# checkout and cargo's home are remapped.
CARGO_HOME_DIR := $(or $(CARGO_HOME),$(HOME)/.cargo)
REMAP := --remap-path-prefix=$(CURDIR)=/build/image-tools --remap-path-prefix=$(CARGO_HOME_DIR)=/cargo

build:
	RUSTFLAGS="$(RUSTFLAGS) $(REMAP)" $(CARGO) build $(CARGOFLAGS) --profile $(PROFILE) --bins

build-debug:
	$(CARGO) build $(CARGOFLAGS) --workspace --bins

# Pipeline tests in tests/ run the built binaries, so build them first.
test: build-debug
	rm -rf target/upstream-summary
	UPSTREAM_SUMMARY_DIR="$(abspath target/upstream-summary)" IMAGE_TOOLS_BIN_DIR="$(abspath $(DEBUG_DIR))" \
	  $(CARGO) test $(CARGOFLAGS) --workspace
	@python3 tests/upstream/summary.py target/upstream-summary

# The fault campaign alone (it also runs in `make test`): every writer
# killed at pseudo-random points, then checked and re-run.
faults: build-debug
	IMAGE_TOOLS_BIN_DIR="$(abspath $(DEBUG_DIR))" $(CARGO) test $(CARGOFLAGS) -p pipeline-tests --test faults --test fs_faults -- --nocapture

# Only the tests against real Glance servers (started by
# tests/glance-server/start-glance.sh; they need python3.11 and, once, PyPI).
test-glance: build-debug
	IMAGE_TOOLS_BIN_DIR="$(abspath $(DEBUG_DIR))" $(CARGO) test $(CARGOFLAGS) \
		-p glance-dump -p glance-load -p imginfo-parse -p pipeline-tests --test readme_glance --test pipelines_glance --test glance --test glance_audit \
		--test replicate --test errors --test tls --test keystone --test server_faults

# The differential tests against the upstream OpenStack code itself
# (tests/tests/upstream_*.rs, drivers in tests/upstream/; they build the
# pinned venv under target/ when missing: python3.11 and, once, PyPI).
test-upstream: build-debug
	rm -rf target/upstream-summary
	UPSTREAM_SUMMARY_DIR="$(abspath target/upstream-summary)" IMAGE_TOOLS_BIN_DIR="$(abspath $(DEBUG_DIR))" \
	  $(CARGO) test $(CARGOFLAGS) -p pipeline-tests --test 'upstream_*'
	@python3 tests/upstream/summary.py target/upstream-summary

# examples/fleet/fleet.yml run by real ansible-core (pinned, from PyPI, in
# a venv under target/) against 7 hosts on this machine, the .deb unpacked
# per host (tests/fleet/test-fleet.sh); ends with the fleet line. About 35 s
# once the .deb is built, plus a minute for the venv the first time.
ANSIBLE_CORE ?= 2.17.7
test-fleet: deb
	@bash tests/upstream/ensure-pip-venv.sh target/fleet-venv ansible-core==$(ANSIBLE_CORE) ansible
	@bash tests/fleet/test-fleet.sh "$(abspath $(TARGET_DIR))/image-tools.deb" target/fleet-venv

# The fuzz campaign (fuzz/run.sh): each cargo-fuzz target for FUZZ_SECONDS
# from fuzz/seeds/<target> and fuzz/regressions/<target>, growing a scratch
# corpus in fuzz/corpus/<target>; fails on any crash, OOM or hang and says
# which input to keep in fuzz/regressions/<target>/ (replayed by `make
# test`). Needs nightly Rust and cargo-fuzz; says "fuzz: skipped: ..." and
# succeeds without them.
FUZZ_SECONDS ?= 60
fuzz:
	@FUZZ_SECONDS="$(FUZZ_SECONDS)" sh fuzz/run.sh

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy $(CARGOFLAGS) --workspace --all-targets -- -D warnings

check: fmt-check clippy test man-check install-check deb-check vendor-check test-fleet

# The README's offline build for packagers, run as written on a copy of
# the tree: cargo vendor, then make --locked --offline with an empty
# CARGO_HOME (packaging/vendor-check.sh).
vendor-check:
	@sh packaging/vendor-check.sh

# A Debian package of the built tree (packaging/deb.sh: reproducible).
deb: build completions
	@sh packaging/deb.sh "$(abspath $(TARGET_DIR))/image-tools.deb"

# Two package builds must be byte-identical and hold the six tools and no
# build path; lintian (when installed) finds no error or warning; as root
# in CI, it is installed, run and removed.
deb-check: build completions
	@if ! command -v dpkg-deb >/dev/null 2>&1; then echo "deb-check: skipped: no dpkg-deb"; exit 0; fi; \
	d=$$(mktemp -d) && trap 'rm -rf "$$d"' EXIT && \
	sh packaging/deb.sh "$$d/a.deb" >/dev/null && sleep 1 && sh packaging/deb.sh "$$d/b.deb" >/dev/null && \
	cmp "$$d/a.deb" "$$d/b.deb" || { echo "deb-check: two builds differ" >&2; exit 1; }; \
	dpkg-deb -c "$$d/a.deb" > "$$d/list" && \
	for t in $(TOOLS); do \
		grep -q "./usr/bin/$$t\$$" "$$d/list" || { echo "deb-check: $$t missing" >&2; exit 1; }; \
		grep -q "./usr/share/man/man1/$$t.1.gz" "$$d/list" || { echo "deb-check: man $$t missing" >&2; exit 1; }; \
	done; \
	dpkg-deb --fsys-tarfile "$$d/a.deb" | tar -xO ./usr/bin/imginfo-parse > "$$d/bin" && \
	if grep -a -q -e "$(CURDIR)" -e "$(CARGO_HOME_DIR)" "$$d/bin"; then \
		echo "deb-check: a build path is in the binary" >&2; exit 1; fi; \
	if command -v lintian >/dev/null 2>&1; then \
		lintian --fail-on error,warning --tag-display-limit 0 "$$d/a.deb" > "$$d/lintian" 2>&1 || \
			{ cat "$$d/lintian" >&2; echo "deb-check: lintian found errors or warnings" >&2; exit 1; }; \
		echo "deb-check: lintian: no errors, no warnings"; \
	else echo "deb-check: lintian skipped: not installed"; fi; \
	if [ "$$(id -u)" = 0 ] && [ -n "$${CI:-}" ]; then \
		dpkg -i "$$d/a.deb" >/dev/null && for t in $(TOOLS); do /usr/bin/$$t --version >/dev/null || exit 1; done && \
		dpkg -r image-tools >/dev/null && for t in $(TOOLS); do test ! -e /usr/bin/$$t || exit 1; done && \
		echo "deb-check: installed, ran and removed with dpkg"; \
	fi; \
	echo "deb-check: reproducible package ($$(sha256sum "$$d/a.deb" | cut -c1-16)...)"

# Man pages are generated from the clap definitions plus doc/*.roff and
# committed, so packagers never need to run a binary for the target.
# The man pages' tables of deliberate differences from the upstream code,
# rendered from the tables the differential tests assert.
UPSTREAM_MAN_CACHEWALK = tools/cachewalk/doc/upstream.roff \
	"Nova's image cache manager (nova 34.0.0)=tests/upstream/differences-nova.json" \
	"Glance's image cache (glance 33.0.0)=tests/upstream/differences-glance-cache.json"
UPSTREAM_MAN_IMGINFO = tools/imginfo-parse/doc/upstream.roff \
	"oslo.utils' format inspector (oslo.utils 10.2.0; Nova, Glance)=tests/upstream/differences-oslo.json" \
	"Cinder's image checks (cinder 29.0.0)=tests/upstream/differences-cinder.json"

upstream-man:
	@python3 tests/upstream/man_table.py $(UPSTREAM_MAN_CACHEWALK)
	@python3 tests/upstream/man_table.py $(UPSTREAM_MAN_IMGINFO)

man: upstream-man build-debug
	@for t in $(TOOLS); do \
		$(DEBUG_DIR)/$$t --generate man > man/$$t.1 || exit 1; \
		echo "man/$$t.1"; \
	done

man-check: build-debug
	@python3 tests/upstream/man_table.py --check $(UPSTREAM_MAN_CACHEWALK)
	@python3 tests/upstream/man_table.py --check $(UPSTREAM_MAN_IMGINFO)
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	for t in $(TOOLS); do \
		$(DEBUG_DIR)/$$t --generate man > "$$tmp/$$t.1" || exit 1; \
		if ! diff -u "man/$$t.1" "$$tmp/$$t.1"; then \
			echo "man/$$t.1 is out of date: run 'make man' and commit it" >&2; exit 1; \
		fi; \
	done && echo "man pages up to date"

completions: build
	@mkdir -p $(COMP_DIR)
	@for t in $(TOOLS); do \
		$(OUT_DIR)/$$t --generate bash > $(COMP_DIR)/$$t || exit 1; \
		$(OUT_DIR)/$$t --generate zsh  > $(COMP_DIR)/_$$t || exit 1; \
		$(OUT_DIR)/$$t --generate fish > $(COMP_DIR)/$$t.fish || exit 1; \
	done

# Copies only: run `make` (or `make build completions`) first.
install:
	@for t in $(TOOLS); do \
		test -x $(OUT_DIR)/$$t || { echo "$(OUT_DIR)/$$t missing: run 'make' first" >&2; exit 1; }; \
		test -f $(COMP_DIR)/$$t || { echo "$(COMP_DIR)/$$t missing: run 'make' first" >&2; exit 1; }; \
		$(INSTALL) -Dm755 $(OUT_DIR)/$$t "$(DESTDIR)$(BINDIR)/$$t"; \
		$(INSTALL) -Dm644 man/$$t.1 "$(DESTDIR)$(MANDIR)/man1/$$t.1"; \
		$(INSTALL) -Dm644 $(COMP_DIR)/$$t "$(DESTDIR)$(BASHDIR)/$$t"; \
		$(INSTALL) -Dm644 $(COMP_DIR)/_$$t "$(DESTDIR)$(ZSHDIR)/_$$t"; \
		$(INSTALL) -Dm644 $(COMP_DIR)/$$t.fish "$(DESTDIR)$(FISHDIR)/$$t.fish"; \
	done

uninstall:
	@for t in $(TOOLS); do \
		rm -f "$(DESTDIR)$(BINDIR)/$$t" "$(DESTDIR)$(MANDIR)/man1/$$t.1" \
			"$(DESTDIR)$(BASHDIR)/$$t" "$(DESTDIR)$(ZSHDIR)/_$$t" \
			"$(DESTDIR)$(FISHDIR)/$$t.fish"; \
	done

# A staged install and uninstall must add, then remove, exactly our files.
install-check: build completions
	@stage=$$(mktemp -d) && trap 'rm -rf "$$stage"' EXIT && \
	$(MAKE) --no-print-directory install DESTDIR="$$stage" PREFIX=/usr && \
	for t in $(TOOLS); do \
		for f in usr/bin/$$t usr/share/man/man1/$$t.1 \
			usr/share/bash-completion/completions/$$t \
			usr/share/zsh/vendor-completions/_$$t \
			usr/share/fish/vendor_completions.d/$$t.fish; do \
			test -s "$$stage/$$f" || { echo "install-check: $$f missing" >&2; exit 1; }; \
		done; \
		"$$stage/usr/bin/$$t" --version >/dev/null || exit 1; \
	done && \
	$(MAKE) --no-print-directory uninstall DESTDIR="$$stage" PREFIX=/usr && \
	left=$$(find "$$stage" -type f) && \
	{ [ -z "$$left" ] || { echo "install-check: uninstall left: $$left" >&2; exit 1; }; } && \
	echo "install-check: staged install and uninstall ok"

demo: build
	@sh examples/demo.sh "$(abspath $(OUT_DIR))"

bench: build
	@sh bench/run.sh "$(abspath $(OUT_DIR))"
	@sh bench/probe.sh "$(abspath $(OUT_DIR))"
	@sh bench/checksum.sh "$(abspath $(OUT_DIR))"
	@sh bench/vhd.sh "$(abspath $(OUT_DIR))"
	@sh bench/cachewalk.sh "$(abspath $(OUT_DIR))"
	@sh bench/cachewalk-scale.sh "$(abspath $(OUT_DIR))"
	@sh bench/glance.sh "$(abspath $(OUT_DIR))"
	@sh bench/audit.sh "$(abspath $(OUT_DIR))"

clean:
	$(CARGO) clean
