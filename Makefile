# rushorder: `make up` runs the whole stack in the foreground, `make test` runs the suite.
# Everything runs from .venv, (re)installed only when pyproject.toml changes.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.rushorder-installed
# Packages that hold Python files (a fresh clone may not have all of them yet).
PY_DIRS = $(foreach d,rushorder engine api workers persistence,$(if $(wildcard $(d)/*.py),$(d)))

.PHONY: help venv install up test test-cluster bench load lint clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

venv: $(STAMP)  ## create .venv and install rushorder with [dev,servers]

install: $(STAMP)  ## same as venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The stamp is newer than pyproject.toml once its dependencies are installed.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev,servers]'
	touch $@

up: $(STAMP)  ## start Redis, Postgres, API, workers and mock platform; Ctrl-C stops all
	$(BIN)/rushorder up

# `python -m` puts the repo first on sys.path, so tests/engine/ cannot shadow engine/.
# The second pass runs on cluster-enabled Redis servers holding every slot, where keys of
# two slots in one script or command fail with CROSSSLOT (tests/conftest.py).
test: $(STAMP)  ## run the whole test suite against private servers: plain Redis, then cluster
	RUSHORDER_TEST_CLUSTER=0 $(BIN)/python -m pytest -q
	RUSHORDER_TEST_CLUSTER=1 $(BIN)/python -m pytest -q

test-cluster: $(STAMP)  ## only the cluster pass of `make test`
	RUSHORDER_TEST_CLUSTER=1 $(BIN)/python -m pytest -q

bench: $(STAMP)  ## run every load/bench_*.py in turn
	@set -e; for script in load/bench_*.py; do \
		[ -e "$$script" ] || continue; \
		echo "== $$script"; $(BIN)/python "$$script"; \
	done

load: $(STAMP)  ## run the locust scenario headless against a private stack
	$(BIN)/python load/run_load.py

lint: $(STAMP)  ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/mypy --explicit-package-bases $(PY_DIRS) tests

clean:  ## remove caches (keeps .venv and the .rushorder data dir)
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist *.egg-info
