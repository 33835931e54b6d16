# rushorder: `make up` runs the whole stack in the foreground, `make test` runs the suite.
# Everything runs from .venv, (re)installed only when pyproject.toml changes.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.rushorder-installed
# Packages that hold Python files (a fresh clone may not have all of them yet).
PY_DIRS = $(foreach d,rushorder engine api workers persistence,$(if $(wildcard $(d)/*.py),$(d)))

.PHONY: help venv install up test test-fast test-servers test-plain test-clustered test-cluster bench load lint clean

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

# `python -m` puts the repo first on sys.path. Two tiers (tests/conftest.py marks them): the
# pure tests (no server) run once, in seconds; the `servers` tests run twice, on plain Redis
# and on cluster-enabled Redis servers holding every slot, where keys of two slots in one
# script or command fail with CROSSSLOT. Only the `servers` tests depend on the pass. The
# two passes run at once: each starts private servers of its own on free ports, in a temp
# dir of its own; each pass's output is printed whole when it ends (--output-sync).
test: test-fast test-servers  ## the whole suite: pure tests, then the servers tier

# On servers of your own (RUSHORDER_TEST_REDIS_URL / _DATABASE_URL) the two passes would
# share their databases, so they run one after the other.
SERVERS_JOBS = $(if $(RUSHORDER_TEST_REDIS_URL)$(RUSHORDER_TEST_DATABASE_URL),1,2)

test-servers:  ## only the tests on private servers, plain Redis and cluster at once
	@$(MAKE) --no-print-directory -j$(SERVERS_JOBS) --output-sync=target test-plain test-clustered

test-fast: $(STAMP)  ## only the tests that need no server (seconds; no Redis, no Postgres)
	$(BIN)/python -m pytest -q -m "not servers"

# Two pytest processes at once: neither writes .pytest_cache (last-failed, ...).
test-plain: $(STAMP)  ## the servers tier on plain Redis
	RUSHORDER_TEST_CLUSTER=0 $(BIN)/python -m pytest -q -m servers -p no:cacheprovider

test-clustered: $(STAMP)  ## the servers tier on cluster-enabled Redis
	RUSHORDER_TEST_CLUSTER=1 $(BIN)/python -m pytest -q -m servers -p no:cacheprovider

test-cluster: $(STAMP)  ## the whole suite on cluster-enabled Redis only
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
