# resumelb: build, test and benchmark targets. `make test` is what CI runs.

CARGO ?= cargo
PREFIX ?= /usr/local

.PHONY: all build test lint fmt-check clippy unit bench-pool clean

all: build

build:
	$(CARGO) build --release

## The whole check: formatting, lints, every test.
test: fmt-check clippy unit

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --all-targets -- -D warnings

unit:
	$(CARGO) test

## Pool speed: the last line is `pool get+put: <N> ns`.
bench-pool:
	$(CARGO) bench --bench pool

clean:
	$(CARGO) clean
