# The two commands a newcomer needs: `make demo` and `make test`. Both create .venv if needed.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
JS_DEPS := tests/interop/js/node_modules/.package-lock.json

.PHONY: demo test lint typecheck imports unit browser schemas schemas-check bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "eventmicro needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# the NATS JavaScript client, for the interop tests (npm is on the project's machines)
$(JS_DEPS): tests/interop/js/package-lock.json
	cd tests/interop/js && npm ci --no-audit --no-fund --loglevel=error

demo: $(STAMP)
	$(BIN)/eventmicro demo

test: lint typecheck imports schemas-check unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# the import rules in pyproject.toml ([tool.importlinter]): nats-py only in the transport modules
imports: $(STAMP)
	$(BIN)/lint-imports

unit: $(STAMP) $(JS_DEPS) browser
	$(BIN)/pytest

# Debian's chromium, for the dashboard's browser tests: Playwright drives it, nothing is downloaded
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  echo "installing Debian's chromium for the browser tests"; \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium >/dev/null \
	  || { $$SUDO apt-get update -q >/dev/null && \
	       DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium >/dev/null; }; }

schemas: $(STAMP)
	$(BIN)/python scripts/gen_schemas.py

schemas-check: $(STAMP)
	$(BIN)/python scripts/gen_schemas.py --check

# FastStream, for the peers suite only (the bench extra): make test never needs it
BENCH_STAMP := $(VENV)/.bench-stamp
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis tests/interop/js/node_modules
