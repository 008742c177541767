# Portcullis: the two commands in README.md are `make demo` and `make test`; both set everything up first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY_STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed

.PHONY: demo test setup browser lint typecheck unit e2e bench fuzz lock clean

demo: setup ## run the gateway on its embedded defaults in front of the bundled demo MCP server
	@$(BIN)/portcullis token --config examples/demo.yaml --user alice --groups eng,oncall > .demo-token
	@echo ""
	@echo "  Portcullis demo: MCP endpoint http://127.0.0.1:8080/mcp/demo (Ctrl-C to stop)"
	@echo "  A development token for alice (groups eng, oncall) is in .demo-token; send it as"
	@echo "  'Authorization: Bearer <token>'. Mint others with: $(BIN)/portcullis token --config examples/demo.yaml --user NAME"
	@echo "  The console: http://127.0.0.1:8080/ui/ (sign in as anyone: the development issuer; drop_table waits for"
	@echo "  an approval by group oncall). Then: $(BIN)/portcullis sessions list --config examples/demo.yaml"
	@echo ""
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/portcullis serve --config examples/demo.yaml

test: setup browser lint typecheck ## everything CI runs
	$(BIN)/pytest

setup: $(PY_STAMP) $(NODE_STAMP)

$(PY_STAMP): requirements/dev.lock pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11 or newer is required")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements/dev.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

$(NODE_STAMP): package-lock.json package.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# The console's browser tests drive Debian's chromium (no browser download); installed with apt when it is missing.
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ ! -x "$(CHROMIUM)" ] && ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO=sudo; else \
	    echo "The console tests need Chromium: install Debian's chromium package (apt-get install chromium)," \
	      "or set PORTCULLIS_CHROMIUM to a Chromium binary." >&2; exit 1; fi; \
	  $$SUDO apt-get install -y -q chromium >/dev/null 2>&1 || \
	    { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q chromium >/dev/null; }; \
	fi

lint: $(PY_STAMP)
	$(BIN)/ruff check portcullis tests bench
	$(BIN)/ruff format --check portcullis tests bench

typecheck: $(PY_STAMP)
	$(BIN)/mypy

unit: $(PY_STAMP)
	$(BIN)/pytest tests/unit

e2e: setup browser
	$(BIN)/pytest tests/e2e

bench: setup ## the core benchmark (see docs/performance.md)
	$(BIN)/python bench/run.py

fuzz: setup ## coverage-guided fuzzing (atheris) of the parsers and the masker, 300 s per target (docs/security.md)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements/fuzz.lock
	$(BIN)/python bench/fuzz.py --seconds $${FUZZ_SECONDS:-300}

lock: ## re-pin Python dependencies after editing pyproject.toml
	$(BIN)/pip-compile --quiet --extra dev --generate-hashes --allow-unsafe --strip-extras -o requirements/dev.lock pyproject.toml
	$(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras -o requirements/runtime.lock pyproject.toml
	$(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe -o requirements/build.lock requirements/build.in
	$(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe -o requirements/fuzz.lock requirements/fuzz.in

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache tests/artifacts .demo-token
