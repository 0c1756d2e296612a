# lossbook — the two commands of the quick start are `make book` and `make test`.
PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
LOCK    := requirements/lock.txt
STAMP   := $(VENV)/.installed-stamp
PIP     := $(PY) -m pip --disable-pip-version-check
CH      ?= 01_compsum
PRESET  ?= book
CHAPTERS := $(basename $(notdir $(wildcard notebooks/[0-9][0-9]_*.py)))
SHELL   := /bin/bash
.SHELLFLAGS := -o pipefail -ec
QUIET_PIP := { grep -v "is ignored: it is neither" || true; }

.PHONY: book test chapter bench lint install clean

# Create the virtualenv if absent and install the locked environment (torch: the CPU wheel).
$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c $(LOCK) "torch==2.13.0" 2>&1 | $(QUIET_PIP)
	$(PIP) install -q -c $(LOCK) -e ".[book,test,ray]" 2>&1 | $(QUIET_PIP)
	$(PY) -c "import torch, lossbook, jupyter_book, nbval, mnist1d, ray"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

install: $(STAMP)

# Execute every stale chapter at the `book` preset (FORCE=1: all of them), then build the HTML.
book: $(STAMP)
	$(PY) -m lossbook build $(if $(FORCE),--force)

# Execute one chapter: make chapter CH=01_compsum PRESET=smoke [PARAMS="seed=3 epochs=5"]
chapter: $(STAMP)
	$(PY) -m lossbook run $(CH) --preset $(PRESET) $(foreach p,$(PARAMS),-p $(p))

lint: $(STAMP)
	$(PY) -m ruff check src tests notebooks benchmarks

# Lint, unit tests, every chapter at `smoke` under nbval, and a warnings-as-errors book build.
test: $(STAMP) lint
	$(PY) -m pytest tests -q
	rm -rf build/smoke
	$(foreach ch,$(CHAPTERS),$(PY) -m lossbook run $(ch) --preset smoke --prepare-only -o build/smoke/$(ch).ipynb &&) true
	$(PY) -m pytest -q --nbval-lax --nbval-current-env --nbval-cell-timeout=900 build/smoke
	$(PY) -m lossbook build --no-execute --strict

bench: $(STAMP)
	$(PY) benchmarks/run.py

clean:
	rm -rf _build build
