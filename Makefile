# resumelb: build, test and benchmark targets. `make test` is what CI runs;
# it installs what the tests need (a virtualenv with waitress, mandoc).

CARGO ?= cargo
PYTHON ?= python3
# The Python the worker embeds for WSGI applications (cargo feature wsgi):
# Debian's, whose libpython python3-dev provides, not whatever python3 is
# first on PATH. scripts/cargo-features turns the feature on when its
# headers and libpython are there.
PYO3_PYTHON ?= /usr/bin/python3
export PYO3_PYTHON
FEATURES = $$(scripts/cargo-features)
VENV ?= .venv
PREFIX ?= /usr/local
DESTDIR ?=
# Where the binaries to install are (the release build by default).
BUILD_DIR ?= target/release
BINS = resumelb zkresumelb resumelb-worker get-worker-resume get-lb-status rlb-nagios
MAN1 = $(addsuffix .1,$(BINS))
MAN7 = resumelb-protocol.7

.PHONY: all build install uninstall soak faults simulate fuzz test fmt-check clippy unit man-lint deps demo bench bench-pool bench-compare bench-peers clean

all: build

build:
	$(CARGO) build --release $(FEATURES)

## Binaries to $(PREFIX)/bin, man pages to $(PREFIX)/share/man/man1 and man7.
install: build
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/man/man7
	for b in $(BINS); do install -m 755 $(BUILD_DIR)/$$b $(DESTDIR)$(PREFIX)/bin/$$b; done
	for m in $(MAN1); do install -m 644 man/$$m $(DESTDIR)$(PREFIX)/share/man/man1/$$m; done
	for m in $(MAN7); do install -m 644 man/$$m $(DESTDIR)$(PREFIX)/share/man/man7/$$m; done

## Removes exactly what install put there.
uninstall:
	for b in $(BINS); do rm -f $(DESTDIR)$(PREFIX)/bin/$$b; done
	for m in $(MAN1); do rm -f $(DESTDIR)$(PREFIX)/share/man/man1/$$m; done
	for m in $(MAN7); do rm -f $(DESTDIR)$(PREFIX)/share/man/man7/$$m; done

## The whole check: formatting, lints, man pages, every test.
test: deps fmt-check clippy man-lint unit

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --all-targets $(FEATURES) -- -D warnings

## The tests run with a ZooKeeper server of their own (scripts/with-zookeeper
## installs Debian's zookeeper when missing, starts it, stops it afterwards).
unit:
	RLB_TEST_PYTHON=$(CURDIR)/$(VENV)/bin/python RLB_TEST_CHROMIUM=$$(command -v chromium) \
	  scripts/with-zookeeper $(CARGO) test $(FEATURES)

man-lint:
	mandoc -Tlint -W warning man/*.1 man/*.7

## Test dependencies: waitress (the WSGI server behind the upstream app
## tests), zdaemon (supervision tests) and PasteDeploy (WSGI app tests) in
## a virtualenv; mandoc for the man page lint; python3-dev for the WSGI
## app (Debian's, for $(PYO3_PYTHON)); chromium for the page's browser test
## (tests/page.rs).
deps: $(VENV)/.installed
	@command -v mandoc >/dev/null || { \
	  echo "installing mandoc"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mandoc; }
	@command -v chromium >/dev/null || { \
	  echo "installing chromium (the page's browser test)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
	@[ -n "$(FEATURES)" ] || { \
	  echo "installing python3-dev (the WSGI app embeds $(PYO3_PYTHON))"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-dev; }

## The benchmark's Python peers (W3: granian and gunicorn), beside the
## test dependencies.
$(VENV)/.bench-installed: $(VENV)/.installed
	$(VENV)/bin/pip install -q granian gunicorn
	touch $@

$(VENV)/.installed: Makefile
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q waitress zdaemon PasteDeploy
	touch $@

## Four demo workers and an LB on loopback, a classed workload with the
## résumé pool and then the classless pool; one table (DEMO_SECONDS=20).
demo:
	$(CARGO) build --release --bins --examples $(FEATURES)
	./target/release/examples/demo

## Fuzz every target to FUZZ_RUNS executions (default 10 million) or
## FUZZ_SECONDS each, on the nightly toolchain; fails on any crash.
fuzz:
	scripts/fuzz

## The chaos soak: workers killed under load (SOAK_SECONDS=120).
soak:
	$(CARGO) build --release --bins --examples $(FEATURES)
	./target/release/examples/soak

## Faults: an application down, a slow one, a hung worker, with each pool
## (FAULT_SECONDS per phase, default 5); then restarts and reloads under
## load beside HAProxy's and nginx's (FAULT_ONLY=restarts for those alone).
faults: deps bench-peers
	$(CARGO) build --release --bins --examples $(FEATURES)
	./target/release/examples/faults

## The pool simulator: the real pool code on simulated workers and clients,
## every scenario with the résumé and classic pools (SIMULATE_ARGS, e.g.
## "--scenario w1b,hung --seed 3", or --help for a workload of your own).
simulate:
	$(CARGO) build --release --example simulate $(FEATURES)
	./target/release/examples/simulate $(SIMULATE_ARGS)

## Figures: LB overhead against a direct upstream, then the pool.
## BENCH_BASELINE=<rev> measures that revision's binaries first, then ours.
bench:
	$(CARGO) build --release --bins --examples $(FEATURES)
	$(if $(BENCH_BASELINE),scripts/bench-baseline $(BENCH_BASELINE) bench,./target/release/examples/bench)
	$(CARGO) bench --bench pool

## resumelb beside HAProxy and nginx (W1 cache workload, W2 overhead):
## tables, ratios, SVG charts in target/bench-compare. BENCH_QUICK=1 for a
## short run, BENCH_ONLY=W1a,haproxy,... for a subset, BENCH_SECONDS and
## BENCH_WARMUP per variant, BENCH_BASELINE=<rev> to run that revision's
## binaries first (tables in target/bench-compare-baseline). Exits 1 if a
## peer could not run.
bench-compare: bench-peers $(VENV)/.bench-installed
	$(CARGO) build --release --bins --examples $(FEATURES)
	$(if $(BENCH_BASELINE),scripts/bench-baseline $(BENCH_BASELINE) bench-compare,./target/release/examples/bench-compare)

## HAProxy and nginx from Debian's packages, when missing (a failure is
## reported by bench-compare as SKIPPED rows).
bench-peers:
	@for p in haproxy nginx; do \
	  command -v $$p >/dev/null || [ -x /usr/sbin/$$p ] || { \
	    echo "installing $$p"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$p; } \
	      || echo "could not install $$p"; }; \
	done

## Pool speed: the last line is `pool get+put: <N> ns`.
bench-pool:
	$(CARGO) bench --bench pool

clean:
	$(CARGO) clean
	rm -rf $(VENV)
