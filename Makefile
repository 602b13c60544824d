# socksec — the two commands of the README, and the pieces they are made of.

CARGO ?= cargo
ARGS ?= selftest

.PHONY: run test deps build deb lint lab c-abi bench fuzz clean

## Build socksec from source and run it on this host (make run ARGS="query --connect 10.0.0.1:22").
run:
	$(CARGO) run --release -q -p socksec-cli -- $(ARGS)

## Install what the tests need (as root) and run every test tier: pure, host, C ABI, lab, the
## Debian package (installed, run and purged), fuzz corpora.
test: deps lint build
	$(CARGO) test --workspace --all-targets --no-fail-fast
	./scripts/deb-test
	./scripts/fuzz-ci

deps:
	./scripts/install-deps

## The shipped artefacts: the CLI, the broker, the osquery extension, and the C library the C
## ABI tests link against (the host tests and the Debian package use these release builds).
build:
	$(CARGO) build --release -p socksec-cli -p socksec-winsock -p socksecd -p socksec-osquery

## The Debian package, from the release build: target/debian/socksec_<version>_amd64.deb.
deb: build
	./scripts/deb-build

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## The C ABI alone: the shipped library, called from a C program built against the header.
c-abi: build
	$(CARGO) test -p socksec-winsock --test c_abi -- --nocapture

## The lab alone, keeping the guest's logs in lab/logs for a reader.
lab: deps
	$(CARGO) run --release -p socksec-lab -- run --keep-logs lab/logs

## Query latency and throughput (as root; minutes): the table of docs/benchmark.md.
bench:
	$(CARGO) build --release -q -p socksecd -p socksec-winsock -p socksec-bench
	$(CARGO) run --release -q -p socksec-bench -- $(BENCH_ARGS)

## Fuzz every target for FUZZ_SECONDS each (nightly + cargo-fuzz), growing fuzz/corpus/.
FUZZ_SECONDS ?= 60
fuzz: deps
	./scripts/fuzz $(FUZZ_SECONDS) $(FUZZ_TARGETS)

clean:
	$(CARGO) clean
