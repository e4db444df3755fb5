# gpulab: the two set-up commands are `make run` and `make test` (see README.md).
# Every target is idempotent: a stamp file records what is installed, and make
# redoes a step only when the file it depends on changed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Keep package caches inside ignored project folders so a fresh clone's installs
# never write outside the repository (besides apt for Chromium, see below).
export npm_config_cache := $(CURDIR)/node_modules/.npm-cache

.PHONY: run test lint bench hub-deps test-deps chromium postgresql clean labextension \
	server-extension-config

run: hub-deps
	$(BIN)/gpulab hub --config jupyterhub_config.py

test: test-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: test-deps
	$(BIN)/python -m bench.admission --quick
	$(BIN)/python -m bench.spawn --quick
	$(BIN)/python -m bench.cluster_start --quick
	$(BIN)/python -m bench.ddp --quick
	$(BIN)/python -m bench.dashboard --quick
	$(BIN)/python -m bench.preprocess --quick
	$(BIN)/python -m bench.hub_load --quick

lint: test-deps
	$(BIN)/ruff check .

hub-deps: $(VENV)/.hub-deps.stamp node_modules/.deps.stamp labextension server-extension-config \
	$(VENV)/.kernels.stamp

test-deps: hub-deps $(VENV)/.test-deps.stamp chromium postgresql

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.hub-deps.stamp: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c constraints.txt -e .
	touch $@

# The kernelspecs "Python 3 (gpulab GPU)" and "(gpulab CPU)" in the venv the servers run
# from (kernels/gpulab_kernels); their provisioner is registered by the install above.
$(VENV)/.kernels.stamp: kernels/gpulab_kernels/kernelspecs.py $(VENV)/.hub-deps.stamp
	$(BIN)/gpulab kernels install
	touch $@

$(VENV)/.test-deps.stamp: pyproject.toml $(VENV)/.hub-deps.stamp
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

node_modules/.deps.stamp: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The JupyterLab sidebar (TypeScript in $(LABEXT_JS)), built with JupyterLab's builder into
# $(LABEXT_OUT) (ignored by git). The editable venv serves it through a symlink, as
# `jupyter labextension develop` makes; a wheel ships the prebuilt folder (hatch_build.py).
# Its output's package.json is the stamp: rebuilt when a source, the manifest or the lockfile
# changes.
LABEXT_JS := extensions/gpulab_jupyterlab/js
LABEXT_OUT := extensions/gpulab_jupyterlab/labextension
LABEXT_LINK := $(VENV)/share/jupyter/labextensions/gpulab-jupyterlab
LABEXT_SOURCES := $(shell find $(LABEXT_JS)/src $(LABEXT_JS)/style -type f 2>/dev/null) \
	$(LABEXT_JS)/tsconfig.json $(LABEXT_JS)/install.json
SERVER_CONFIG := $(VENV)/etc/jupyter/jupyter_server_config.d/gpulab_jupyterlab.json

labextension: $(LABEXT_OUT)/package.json
	@if [ "$$(readlink $(LABEXT_LINK))" != "$(CURDIR)/$(LABEXT_OUT)" ]; then \
		rm -rf $(LABEXT_LINK) && mkdir -p $(dir $(LABEXT_LINK)) && \
		ln -s $(CURDIR)/$(LABEXT_OUT) $(LABEXT_LINK) && \
		echo "linked $(LABEXT_LINK) -> $(LABEXT_OUT)"; \
	fi

$(LABEXT_JS)/node_modules/.deps.stamp: $(LABEXT_JS)/package.json $(LABEXT_JS)/package-lock.json
	cd $(LABEXT_JS) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(LABEXT_OUT)/package.json: $(LABEXT_JS)/node_modules/.deps.stamp $(LABEXT_SOURCES) \
		| $(VENV)/.hub-deps.stamp
	cd $(LABEXT_JS) && PATH="$(CURDIR)/$(BIN):$$PATH" npm run --silent build:prod
	touch $@

# The server extension's switch: `pip install -e .` installs it as shared-data too; this
# keeps it there in a venv installed before the file existed.
server-extension-config: $(SERVER_CONFIG)

$(SERVER_CONFIG): jupyter-config/jupyter_server_config.d/gpulab_jupyterlab.json \
		| $(VENV)/.hub-deps.stamp
	install -D -m 644 $< $@

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
	rm -rf $(LABEXT_JS)/node_modules $(LABEXT_JS)/lib $(LABEXT_JS)/tsconfig.tsbuildinfo $(LABEXT_OUT)
