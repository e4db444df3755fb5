# gpulab: the two set-up commands are `make run` and `make test` (see README.md).
# Every target is idempotent: a stamp file records what is installed, and make
# redoes a step only when the file it depends on changed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Keep package caches inside ignored project folders so a fresh clone's installs
# never write outside the repository (besides apt for Chromium, see below).
export npm_config_cache := $(CURDIR)/node_modules/.npm-cache

.PHONY: run test lint bench hub-deps test-deps chromium postgresql clean

run: hub-deps
	$(BIN)/gpulab hub --config jupyterhub_config.py

test: test-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: test-deps
	$(BIN)/python -m bench.admission --quick
	$(BIN)/python -m bench.spawn --quick

lint: test-deps
	$(BIN)/ruff check .

hub-deps: $(VENV)/.hub-deps.stamp node_modules/.deps.stamp

test-deps: hub-deps $(VENV)/.test-deps.stamp chromium postgresql

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.hub-deps.stamp: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.test-deps.stamp: pyproject.toml $(VENV)/.hub-deps.stamp
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

node_modules/.deps.stamp: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Debian's Chromium for the browser tests; Playwright drives it, never downloads one.
chromium:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "installing Debian's chromium (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "The browser tests need Debian's Chromium: run 'sudo apt-get install chromium' and retry." >&2; \
		exit 1; \
	fi

# Debian's PostgreSQL server binaries: the ledger tests start their own server with them
# (initdb + pg_ctl on a temporary folder), never the system service.
postgresql:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "installing Debian's postgresql (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	else \
		echo "The ledger tests need PostgreSQL: run 'sudo apt-get install postgresql' and retry." >&2; \
		exit 1; \
	fi

clean:
	rm -rf $(VENV) node_modules
