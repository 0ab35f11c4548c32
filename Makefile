# kalshictl — `make demo` runs the whole pipeline locally; `make test` runs the test suite.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
KCTL   := $(VENV)/bin/kalshictl
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt Makefile | cksum | cut -d' ' -f1)
# every extra: tests and the demo use all of them (a gatherer host installs plain `kalshictl`)
EXTRAS := test,embedded,export,aws
PIP    := $(PY) -m pip --disable-pip-version-check

.PHONY: install lock test test-fast lint format demo bench chaos soak clean

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -U pip
	$(PIP) install -q -c constraints.txt -e '.[$(EXTRAS)]'
	# Kalshi's own SDK (declares Python >= 3.13, works on 3.11): the simulator's faithfulness tests parse with it.
	$(PIP) install -q -c constraints.txt --ignore-requires-python kalshi-python-sync==3.34.0
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP) ## create .venv and install kalshictl with every extra, at the versions in constraints.txt

lock: install ## rewrite constraints.txt from the working .venv (after changing dependencies in pyproject.toml)
	{ sed -n '/^#/p' constraints.txt; $(PIP) freeze --exclude kalshictl; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

lint: install ## ruff lint + format check + mypy (configured in pyproject.toml)
	$(VENV)/bin/ruff check kalshictl tests bench
	$(VENV)/bin/ruff format --check kalshictl tests bench
	$(VENV)/bin/mypy

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

soak: install ## 8 simulated days of the whole pipeline in minutes: tiers stay bounded, production + cold tier = truth
	$(PY) -m kalshictl.local.soak

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
