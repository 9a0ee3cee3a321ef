# Gofer's developer commands. `make help` lists them.
SHELL := bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/gofer-target
# No Go module proxy is reachable: Go builds use only local sources (see scripts/go-plugins.sh).
export GOPROXY := off
export GOTOOLCHAIN := local
GO_SOURCES := sdk-go examples/pipeline-go
BUF := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/gofer-buf/node_modules/.bin/buf
HOST_TARGET := x86_64-unknown-linux-gnu
STATIC_BIN := $(CARGO_TARGET_DIR)/$(HOST_TARGET)/release/gofer
COMMIT := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
RELEASE_NAME := gofer-$(VERSION)-x86_64-linux
PREFIX ?= /usr/local

.PHONY: help setup run serve test lint unit release install check-static openapi bench fuzz go-plugin-examples python-plugin test-engines cli-docs docs docs-serve docs-commands

help: ## List the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

setup: ## Install and start what builds and tests need (Docker, busybox-static, Go, wasm target)
	bash scripts/setup.sh

run: ## Quick start: build, start a dev server (127.0.0.1:8080), run the example DAG live
	bash scripts/quickstart.sh

serve: ## Build and start a development server on embedded defaults, nothing else
	cargo run -p gofer -- service start

bench: ## Benchmarks (release build): runs vs raw `docker run --rm`, the Swarm scheduler vs the Docker one, object stores, start-up and memory, API tails, plugins, auth, the web UI's budgets
	cargo build --release -p gofer
	python3 scripts/bench-runs.py
	python3 scripts/bench-swarm.py
	python3 scripts/bench-objects.py
	python3 scripts/bench-startup.py
	python3 scripts/bench-api.py
	python3 scripts/bench-scale.py
	python3 scripts/bench-triggers.py
	python3 scripts/bench-followers.py
	python3 scripts/bench-plugins.py
	python3 scripts/bench-auth.py
	node tests/browser/bench-ui.mjs

test: lint unit test-engines docs docs-commands release check-static ## Everything CI runs: lint, all tests, the documentation site and its commands, the static binary check

test-engines: ## The run, recovery, log and object tests again on the other engines: Docker Swarm (make setup starts a single-node Swarm) and an S3 bucket (moto)
	# --workspace: the same feature set as `unit`, so nothing is rebuilt.
	TEST_SCHEDULER_ENGINE=swarm TEST_OBJECTS_ENGINE=s3 cargo test --workspace --test it -- runs:: recovery:: logs:: secrets_objects::

lint: ## cargo fmt --check and clippy with warnings as errors; gofmt, go vet, fresh *.pb.go
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy -p gofer-sdk --features plugin --all-targets -- -D warnings
	cd plugins && cargo fmt --all -- --check && CARGO_TARGET_DIR=$(CARGO_TARGET_DIR)/plugins cargo clippy --release --target wasm32-wasip2 -- -D warnings
	@unformatted=$$(gofmt -l $(GO_SOURCES)); [ -z "$$unformatted" ] || { echo "gofmt needed: $$unformatted"; exit 1; }
	bash scripts/go-plugins.sh check
	cd proto && $(BUF) lint
	cd sdk-go/config && go vet ./...
	cd examples/pipeline-go && go vet ./...

unit: ## All unit and end-to-end tests (real server processes, Docker, Go plugins, SQLite, loopback HTTP)
	bash scripts/build-busybox-image.sh
	cd sdk-go/config && go test ./...
	bash scripts/go-plugins.sh test
	cargo test --workspace --all-targets
	cargo test --doc -p gofer-sdk
	cargo test -p gofer-sdk --features plugin --test harness
	cargo package -p gofer-sdk --allow-dirty --offline --quiet

python-plugin: ## Build the example Python plugin (componentize-py) into target/plugins-py/py-tally.wasm
	bash scripts/python-plugin.sh

go-plugin-examples: ## Build the example Go plugins (go-ticker, go-echo) with manifests into target/plugins-go
	bash scripts/go-plugins.sh build

release: docs ## dist/: the static binary gofer-VERSION-x86_64-linux (with its manual at /docs), the man page, shell completions, an installable .tar.gz of them, SHA-256s
	GOFER_BUILD_COMMIT=$(COMMIT) GOFER_BUILD_DATE=$$(date -u +%Y-%m-%d) RUSTFLAGS="-C target-feature=+crt-static" \
	  cargo build --release -p gofer --features docs-site --target $(HOST_TARGET)
	rm -rf dist && mkdir -p dist/completions
	cp $(STATIC_BIN) dist/$(RELEASE_NAME)
	cd dist && sha256sum $(RELEASE_NAME) > $(RELEASE_NAME).sha256
	dist/$(RELEASE_NAME) reference man > dist/gofer.1
	for shell in bash zsh fish; do dist/$(RELEASE_NAME) completion $$shell > dist/completions/gofer.$$shell; done
	bash scripts/release-archive.sh pack dist $(RELEASE_NAME)
	@ls -l dist dist/completions

install: ## Install the release made by `make release` under PREFIX (default /usr/local): binary, man page, completions
	@test -f dist/$(RELEASE_NAME).tar.gz || { echo "no dist/$(RELEASE_NAME).tar.gz: run make release first"; exit 1; }
	mkdir -p "$(DESTDIR)$(PREFIX)"
	tar -xzf dist/$(RELEASE_NAME).tar.gz --strip-components=1 --no-same-owner --no-overwrite-dir -C "$(DESTDIR)$(PREFIX)"

check-static: ## Check the release binary is static, says its commit, and runs the server and the CLI
	bash scripts/check-static.sh dist/$(RELEASE_NAME) $(COMMIT)
	cd dist && sha256sum --check --quiet $(RELEASE_NAME).sha256
	bash scripts/release-archive.sh check $(RELEASE_NAME) $(COMMIT)

docs: ## Build the documentation site (mdBook) into target/book; warnings, broken links and anchors are errors
	bash scripts/docs.sh build

docs-serve: ## Build the documentation site and serve it on http://127.0.0.1:3000
	bash scripts/docs.sh serve

docs-commands: ## Run every shell block of the README and docs/getting-started.md against a fresh `make run`
	python3 scripts/check-shell-blocks.py

cli-docs: ## Regenerate docs/cli.md from the CLI's definition
	cargo run -q -p gofer -- reference markdown > docs/cli.md

fuzz: ## Fuzz the REST API with schemathesis (no request may get a 5xx)
	bash scripts/fuzz-api.sh

openapi: ## Regenerate docs/openapi.json from the code
	cargo run -q -p gofer -- service openapi > docs/openapi.json
