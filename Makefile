# Switchyard: what a person types. The build itself is CMake (CMakeLists.txt);
# this file only strings the steps together. See docs/testing.md.
#
#   make          build build/yard and build/mock-engine (RelWithDebInfo)
#   make test     unit + e2e under ctest (with the real llama-server tier), again under
#                 ASan+UBSan, the unit tests under valgrind, a 30 s fuzz smoke per target,
#                 the Debian package, banned calls, format
#   make llama-server  the real-engine tier's llama-server, built once into ~/.cache/yard/
#                 (scripts/llama-server.sh; YARD_LLAMA_SERVER=PATH uses another)
#   make demo     build, then scripts/demo.sh
#   make bench    bench/run        make fuzz   tests/fuzz/run     make soak   tests/soak/run
#   make format   clang-format -i over src/ tools/ tests/
#   make install  build, then install yard, mock-engine, man pages, completions and the
#                 systemd unit under PREFIX (default /usr/local; DESTDIR=DIR stages them)
#   make uninstall  remove what make install installed (same PREFIX and DESTDIR)
#   make deb      build-deb/switchyard_VERSION_ARCH.deb, built by dpkg-buildpackage (debian/)
#   make clean    remove build directories
#
# Variables: CTEST_ARGS="-R e2e/smoke" narrows the ctest runs (and the valgrind run);
# ARGS="..." is passed to demo.sh, bench/run, tests/fuzz/run and tests/soak/run; JOBS=N
# build parallelism; FUZZ_SMOKE=N seconds per fuzz target in make test (0: none);
# PREFIX and DESTDIR for make install and uninstall (docs/install.md).

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.ONESHELL:
.DEFAULT_GOAL := build
MAKEFLAGS += --no-print-directory

JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CTEST_ARGS ?=
ARGS ?=
FUZZ_SMOKE ?= 30
E2E_DIR := tests/e2e
PREFIX ?= /usr/local
DESTDIR ?=

.PHONY: all build demo test bench fuzz soak clean format deps-build deps-test deps-bench \
	deps-deb e2e-deps install uninstall deb llama-server

all: build

deps-build:
	@scripts/deps.sh build

deps-test:
	@scripts/deps.sh test

deps-bench:
	@scripts/deps.sh bench

deps-deb:
	@scripts/deps.sh deb

# Configuring again is cheap and repairs a build dir whose last configure failed.
build: deps-build
	@cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build build -j$(JOBS)

# npm packages for the e2e tests, once, and again only when package*.json change.
e2e-deps:
	@if [[ ! -f $(E2E_DIR)/package.json ]]; then exit 0; fi
	stamp=$(E2E_DIR)/node_modules/.yard-installed
	if [[ -f $$stamp && $$stamp -nt $(E2E_DIR)/package.json &&
	      ( ! -f $(E2E_DIR)/package-lock.json || $$stamp -nt $(E2E_DIR)/package-lock.json ) ]]; then
	  exit 0
	fi
	if [[ -f $(E2E_DIR)/package-lock.json ]]; then verb=ci; else verb=install; fi
	echo "npm $$verb --prefix $(E2E_DIR)"
	npm $$verb --prefix $(E2E_DIR) --no-audit --no-fund --loglevel=error
	touch $$stamp

# llama-server for tests/e2e/llama-server.test.mjs: $YARD_LLAMA_SERVER, the cached build,
# or a build into the cache (10-15 minutes on 2 cores, once). Prints its path.
llama-server: deps-test
	@JOBS=$(JOBS) scripts/llama-server.sh

# Runs every tier even when one fails; the last line is "N passed, N failed"
# (ctest tests of both builds, each unit test executable under valgrind, each
# fuzz target's smoke, the package check and the checks; a build or setup step
# that fails counts as one failure).
test: deps-test
	@passed=0; failed=0; notes=()
	step() { # step NAME CMD... : one pass/fail unit
	  local name=$$1; shift
	  if "$$@"; then passed=$$((passed + 1)); else failed=$$((failed + 1)); notes+=("FAILED: $$name"); fi
	}
	ctest_tier() { # ctest_tier NAME DIR
	  local name=$$1 dir=$$2 log=$$2/ctest.log rc=0
	  echo "== $$name: ctest --test-dir $$dir"
	  ctest --test-dir $$dir --output-on-failure --repeat until-pass:2 $(CTEST_ARGS) 2>&1 | tee $$log || rc=$$?
	  # A test that failed and then passed when run again is said, never hidden.
	  local t flaky; flaky=$$(awk '/Test +#[0-9]+: /{ n=$$0; sub(/.*Test +#[0-9]+: /, "", n); sub(/ .*/, "", n);
	    if ($$0 ~ /\*\*\*/) f[n] = 1; else if ($$0 ~ / Passed /) p[n] = 1 }
	    END { for (n in f) if (n in p) print n }' $$log)
	  for t in $$flaky; do notes+=("FLAKY: $$t failed in $$name, then passed when run again (see $$log)"); done
	  local line; line=$$(grep -E '[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' $$log | tail -n 1 || true)
	  if [[ -n $$line ]]; then
	    local f t; f=$$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$$line")
	    t=$$(sed -E 's/.* failed out of ([0-9]+).*/\1/' <<<"$$line")
	    passed=$$((passed + t - f)); failed=$$((failed + f))
	    [[ $$f -eq 0 ]] || notes+=("FAILED: $$f of $$t tests in $$name")
	    if [[ $$rc -ne 0 && $$f -eq 0 ]]; then failed=$$((failed + 1)); notes+=("FAILED: ctest in $$name exited $$rc"); fi
	  elif grep -q 'No tests were found' $$log; then
	    notes+=("$$name: no tests")
	  else
	    failed=$$((failed + 1)); notes+=("FAILED: ctest in $$name exited $$rc")
	  fi
	}
	$(MAKE) e2e-deps || { failed=$$((failed + 1)); notes+=("FAILED: npm packages for $(E2E_DIR)"); }
	# Once for both ctest runs: the real-engine tier reads YARD_LLAMA_SERVER.
	echo "== llama-server for the real-engine tier: scripts/llama-server.sh"
	if llama=$$(JOBS=$(JOBS) scripts/llama-server.sh); then
	  export YARD_LLAMA_SERVER=$$llama; echo "llama-server: $$llama"
	else
	  failed=$$((failed + 1)); notes+=("FAILED: scripts/llama-server.sh (e2e/llama-server skips without it)")
	fi
	build_tier() { # build_tier NAME DIR CMAKE-ARGS...: configure + build, keep going past errors
	  local name=$$1 dir=$$2; shift 2
	  echo "== $$name build: $$dir/"
	  if ! cmake -S . -B $$dir "$$@" >/dev/null; then
	    failed=$$((failed + 1)); notes+=("FAILED: configure of $$dir/"); return 1
	  fi
	  local keep=(); [[ -f $$dir/Makefile ]] && keep=(-- -k); [[ -f $$dir/build.ninja ]] && keep=(-- -k 0)
	  if ! cmake --build $$dir -j$(JOBS) "$${keep[@]}"; then
	    failed=$$((failed + 1)); notes+=("FAILED: $$name build ($$dir/); ctest runs what was built")
	  fi
	  return 0
	}
	valgrind_tier() { # valgrind_tier DIR: each unit test executable of DIR under memcheck, one unit each
	  local dir=$$1 out=$$1/valgrind names name rc start
	  names=$$(ctest --test-dir $$dir -N $(CTEST_ARGS) | sed -n 's|^ *Test *#[0-9]*: unit/||p') || true
	  echo "== valgrind: unit tests of $$dir/ under memcheck (logs in $$out/)"
	  if [[ -z $$names ]]; then notes+=("valgrind: no unit tests"); return 0; fi
	  mkdir -p $$out
	  for name in $$names; do
	    rc=0; start=$$SECONDS
	    # the entry's own command and environment (one binary may be two entries, as
	    # unit/test_cgroup_noclone3 is test_cgroup with YARD_CLONE3=0)
	    info=$$(ctest --test-dir $$dir -N -V -R "^unit/$$name\$$")
	    cmd=$$(sed -n 's/^[0-9]*: Test command: //p' <<<"$$info")
	    envs=$$(sed -n 's/^[0-9]*:  \([A-Za-z_][A-Za-z0-9_]*=.*\)$$/\1/p' <<<"$$info")
	    [[ -n $$cmd ]] || cmd=$$dir/$$name
	    timeout -k 10 900 env $$envs valgrind -q --error-exitcode=1 --leak-check=full \
	      --errors-for-leak-kinds=definite --track-fds=no --suppressions=tests/valgrind.supp \
	      $$cmd >$$out/$$name.log 2>&1 || rc=$$?
	    if [[ $$rc -eq 0 ]]; then
	      passed=$$((passed + 1)); echo "valgrind $$name: ok ($$((SECONDS - start))s)"
	    else
	      failed=$$((failed + 1)); notes+=("FAILED: valgrind $$name (exit $$rc, $$out/$$name.log)")
	      echo "valgrind $$name: FAILED (exit $$rc); the end of $$out/$$name.log:"
	      tail -n 40 $$out/$$name.log
	    fi
	  done
	}
	fuzz_tier() { # a short run of each libFuzzer target, one unit each (build-fuzz/)
	  local t
	  if [[ $(FUZZ_SMOKE) -eq 0 ]]; then notes+=("fuzz: skipped (FUZZ_SMOKE=0)"); return 0; fi
	  echo "== fuzz: $(FUZZ_SMOKE) s per target, tests/fuzz/run (build-fuzz/)"
	  for t in tests/fuzz/fuzz_*.c; do
	    [[ -f $$t ]] && step "fuzz $$(basename $$t .c)" tests/fuzz/run $(FUZZ_SMOKE) $$t
	  done
	  return 0
	}
	release_built=0
	if build_tier release build -DCMAKE_BUILD_TYPE=RelWithDebInfo; then
	  release_built=1
	  ctest_tier release build
	fi
	if build_tier sanitizer build-asan -DYARD_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug; then
	  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    ctest_tier asan build-asan
	fi
	if [[ $$release_built -eq 1 ]]; then valgrind_tier build; fi
	fuzz_tier
	echo "== tests/package/check-deb.sh: make deb, the package's files against make install's, yard from it, its unit"
	step "tests/package/check-deb.sh" tests/package/check-deb.sh
	echo "== scripts/check-banned.sh"
	step "scripts/check-banned.sh" scripts/check-banned.sh
	echo "== scripts/check-format.sh"
	step "scripts/check-format.sh" scripts/check-format.sh
	echo "== scripts/check-layers.sh"
	step "scripts/check-layers.sh" scripts/check-layers.sh
	echo "=="
	for n in "$${notes[@]}"; do echo "$$n"; done
	echo "$$passed passed, $$failed failed"
	[[ $$failed -eq 0 ]]

demo: build
	@if [[ -f scripts/demo.sh ]]; then
	  exec bash scripts/demo.sh $(ARGS)
	fi
	echo "make demo: scripts/demo.sh is missing (not written yet)" >&2
	exit 1

# run_if_present PATH WHAT: run PATH (executable, or with bash) or say it is missing.
define run_if_present
	@if [[ -f $(1) ]]; then
	  if [[ -x $(1) ]]; then exec ./$(1) $(ARGS); else exec bash $(1) $(ARGS); fi
	fi
	echo "make $(2): $(1) is missing (not written yet); nothing to run" >&2
	exit 1
endef

bench: deps-bench build
	$(call run_if_present,bench/run,bench)

fuzz: deps-test
	$(call run_if_present,tests/fuzz/run,fuzz)

soak: deps-test build
	$(call run_if_present,tests/soak/run,soak)

format: deps-test
	@scripts/check-format.sh --fix

# The build's files under DESTDIR+PREFIX (cmake --install; cmake/install.cmake says what).
install: build
	@DESTDIR="$(DESTDIR)" cmake --install build --prefix "$(PREFIX)"
	if [[ -z "$(DESTDIR)" && ( "$(PREFIX)" == /usr || "$(PREFIX)" == /usr/local ) ]] &&
	   ! getent passwd yard >/dev/null; then
	  echo "make install: yard.service runs as the user 'yard', which does not exist yet;" \
	    "docs/install.md says how to make it and /etc/yard/yard.yaml"
	fi

# Removes the files an install of this build to the same PREFIX and DESTDIR made: the
# list is what installing it to a scratch directory gives, so it holds for any prefix.
uninstall: build
	@scratch=$$(mktemp -d /tmp/yard-uninstall.XXXXXX)
	trap 'rm -rf "$$scratch"' EXIT
	DESTDIR="$$scratch" cmake --install build --prefix "$(PREFIX)" >/dev/null
	dest="$(DESTDIR)"
	while IFS= read -r -d '' f; do
	  f=$${f#"$$scratch"}
	  if [[ -e "$$dest$$f" || -L "$$dest$$f" ]]; then rm -f "$$dest$$f"; echo "removed $$dest$$f"; fi
	done < <(find "$$scratch" -type f -print0)
	for d in "$(PREFIX)/libexec/yard" "$(PREFIX)/share/yard"; do
	  [[ -d "$$dest$$d" ]] && rmdir --ignore-fail-on-non-empty "$$dest$$d"
	done
	exit 0

# A Debian package built by Debian's tooling from a copy of the tree (scripts/build-deb.sh).
deb: deps-deb
	@scripts/build-deb.sh

clean:
	rm -rf build build-*/
