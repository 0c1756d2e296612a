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

.PHONY: book test chapter audit bench chaos lint install clean site browser

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

# Re-execute one chapter with fresh seed-sets; per-claim verdict stability: make audit CH=06_ldam_drw [SEEDS=3]
audit: $(STAMP)
	$(PY) -m lossbook audit $(CH) --seeds $(or $(SEEDS),3) --preset $(PRESET)

lint: $(STAMP)
	$(PY) -m ruff check src tests notebooks benchmarks

# Lint, unit tests, every chapter at `smoke` under nbval, and a warnings-as-errors book build.
test: $(STAMP) lint
	$(PY) -m pytest tests -q
	rm -rf build/smoke
	$(foreach ch,$(CHAPTERS),$(PY) -m lossbook run $(ch) --preset smoke --prepare-only -o build/smoke/$(ch).ipynb &&) true
	$(PY) -m pytest -q --nbval-lax --nbval-current-env --nbval-cell-timeout=900 build/smoke
	$(PY) -m lossbook build --no-execute --strict
	$(MAKE) --no-print-directory site

# The site check's browser (Debian's chromium) and npm (for the pinned MathJax), when absent.
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  command -v google-chrome >/dev/null || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
	  >/dev/null; }
	@command -v npm >/dev/null || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null; }

# Every page of _build/html in headless Chromium at 1280 and 390 px; screenshots in build/site/.
site: $(STAMP) browser
	$(PY) tests/site_check.py

# make bench [TABLES="4 5"] [CHAPTERS=1]: all tables, or some; CHAPTERS=1 re-executes the book cold.
bench: $(STAMP)
	$(PY) benchmarks/run.py $(if $(TABLES),--tables $(TABLES)) $(if $(CHAPTERS),--chapters)

# Fault trials (corrupt caches, kill -9, concurrent runs, forged records, bad values, bad files):
# one table of trial, expected, observed, verdict. They also run in `make test`.
chaos: $(STAMP)
	$(PY) -m pytest tests/test_chaos.py -q -m chaos --chaos-table

clean:
	rm -rf _build build
