# Gofer's developer commands. `make help` lists them.
SHELL := bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/gofer-target
HOST_TARGET := x86_64-unknown-linux-gnu
STATIC_BIN := $(CARGO_TARGET_DIR)/$(HOST_TARGET)/release/gofer
COMMIT := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)

.PHONY: help setup run serve test lint unit release check-static openapi bench fuzz

help: ## List the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

setup: ## Install and start what builds and tests need (Docker, busybox-static, Go, wasm target)
	bash scripts/setup.sh

run: ## Quick start: build, start a dev server (127.0.0.1:8080), run the example DAG live
	bash scripts/quickstart.sh

serve: ## Build and start a development server on embedded defaults, nothing else
	cargo run -p gofer -- service start

bench: ## Benchmark Gofer runs against raw `docker run --rm` (release build)
	cargo build --release -p gofer
	python3 scripts/bench-runs.py
	python3 scripts/bench-plugins.py

test: lint unit release check-static ## Everything CI runs: lint, all tests, the static binary check

lint: ## cargo fmt --check and clippy with warnings as errors
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	cd plugins && cargo fmt --all -- --check && CARGO_TARGET_DIR=$(CARGO_TARGET_DIR)/plugins cargo clippy --release --target wasm32-wasip2 -- -D warnings

unit: ## All unit and end-to-end tests (real server processes, Docker, SQLite files, loopback HTTP)
	bash scripts/build-busybox-image.sh
	cargo test --workspace --all-targets

release: ## The single statically linked binary: $(STATIC_BIN)
	GOFER_BUILD_COMMIT=$(COMMIT) RUSTFLAGS="-C target-feature=+crt-static" \
	  cargo build --release -p gofer --target $(HOST_TARGET)
	@ls -l $(STATIC_BIN)

check-static: ## Check the release binary is static and runs the server and the CLI
	bash scripts/check-static.sh $(STATIC_BIN)

fuzz: ## Fuzz the REST API with schemathesis (no request may get a 5xx)
	bash scripts/fuzz-api.sh

openapi: ## Regenerate docs/openapi.json from the code
	cargo run -q -p gofer -- service openapi > docs/openapi.json
