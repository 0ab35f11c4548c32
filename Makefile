# kalshictl — `make demo` runs the whole pipeline locally; `make test` runs the test suite.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
KCTL   := $(VENV)/bin/kalshictl
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | cksum | cut -d' ' -f1)

.PHONY: install test test-fast lint format demo bench chaos clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -U pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test,embedded]'
	# Kalshi's own SDK (declares Python >= 3.13, works on 3.11): the simulator's faithfulness tests parse with it.
	$(PY) -m pip install -q --disable-pip-version-check --ignore-requires-python kalshi-python-sync==3.34.0
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP) ## create .venv and install kalshictl with test dependencies

lint: install ## ruff lint + format check
	$(VENV)/bin/ruff check kalshictl tests bench
	$(VENV)/bin/ruff format --check kalshictl tests bench

format: install
	$(VENV)/bin/ruff format kalshictl tests bench
	$(VENV)/bin/ruff check --fix kalshictl tests bench

test: install lint ## the whole test suite (real PostgreSQL, real local exchange)
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m 'not slow'

demo: install ## local exchange + embedded PostgreSQL + 3 gatherers + deduplicator, live status
	$(KCTL) demo

bench: install ## benchmark scripts (figures with baseline ratios)
	$(PY) bench/run_all.py

chaos: install ## the full fault-injection suite
	$(PY) -m pytest -s -m chaos -o addopts='' tests/chaos

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
