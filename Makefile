# The two commands a newcomer needs (see README): `make demo` and `make test`.
# Both create the virtual environment on first use; nothing needs to be installed by hand.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo demo-production test test-fast lock ui bench bench-loader bench-transform bench-spark bench-kill bench-listing bench-orphans bench-declared clean-data clean help

help:
	@echo "make demo   - generate Jaffle Shop data, load it, build and audit every model (prod)"
	@echo "make test   - run the whole test suite"
	@echo "make demo-production - the demo on PostgreSQL + S3 (needs ELT_PG_*, ELT_LANDING_URL; see README)"
	@echo "make ui     - open the SQLMesh UI (column lineage) on http://127.0.0.1:8000"
	@echo "make clean-data - delete the demo data, landing and warehouse under data/, and SQLMesh's .cache/"

# uv (pinned) installs the lock in about 45 s where pip takes about 110 s on a fresh machine (both
# downloading everything; decision 0061). It is only the installer: where it cannot be had or fails
# (a registry it cannot reach), pip installs the same lock. Both compile the bytecode (uv with
# --compile-bytecode, pip by default): without it, where PYTHONDONTWRITEBYTECODE is set (it is on
# these machines), every process compiles every module it imports, and the test suite took 5
# minutes longer.
UV_VERSION := 0.13.9
$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	@if ! $(BIN)/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION) >/dev/null 2>&1; then \
	  echo "pip could not install uv $(UV_VERSION) (not on the package index?); installing requirements.lock with pip"; \
	  $(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock; \
	elif UV_SYSTEM_CERTS=1 $(BIN)/uv pip install --quiet --python $(BIN)/python --compile-bytecode -r requirements.lock; then \
	  echo "installed requirements.lock with uv $(UV_VERSION)"; \
	else \
	  echo "uv $(UV_VERSION) could not install requirements.lock (its error is above); installing it with pip"; \
	  $(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock; \
	fi
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/elt demo

# The same pipeline the production way: needs ELT_PG_* and ELT_LANDING_URL=s3://... (README).
demo-production: $(STAMP)
	$(BIN)/elt demo --production

# Three workers on CI's two cores (two leave a fifth of the CPU idle while tests wait on servers,
# subprocesses and fsync: decision 0012), a test file per worker at a time (its module fixtures stay
# in one process), the files in the order tests/conftest.py gives them (longest first:
# --no-loadscope-reorder, or xdist would start the files with the most tests first).
# TEST_WORKERS=0 runs everything in this process (easier to debug one test). The 25 slowest tests are
# listed at the end, to keep CI under its time limit.
TEST_WORKERS ?= 3
XDIST = $(if $(filter 0,$(TEST_WORKERS)),-n 0,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)
# The project's own modules are installed in place (pip -e), so pip never compiled them, and with
# PYTHONDONTWRITEBYTECODE set no process writes their bytecode: each of the suite's hundreds of
# `elt` subprocesses compiled them again (0.12-0.15 s of a 2.1 s start; with 4 workers the suite
# keeps both cores 99.5% busy, so CPU saved is time saved). compileall only rewrites what changed.
COMPILE = PYTHONDONTWRITEBYTECODE= $(BIN)/python -m compileall -q sources orchestrator macros >/dev/null
test: $(STAMP)
	@$(COMPILE)
	$(BIN)/python -m pytest $(XDIST) --durations=25

test-fast: $(STAMP)
	@$(COMPILE)
	$(BIN)/python -m pytest $(XDIST) -m "not slow and not ui"

ui: $(STAMP)
	$(BIN)/sqlmesh ui --host 127.0.0.1 --port 8000

# Re-freeze the transitive dependency set after changing a pin in pyproject.toml.
lock:
	rm -rf /tmp/elt-lock-venv && $(PYTHON) -m venv /tmp/elt-lock-venv
	/tmp/elt-lock-venv/bin/pip install --quiet -e '.[test,spark]'
	( echo "# Frozen transitive dependency set for the pins in pyproject.toml."; \
	  echo "# Regenerate: make lock  (pip freeze of a clean venv built from pyproject.toml)"; \
	  /tmp/elt-lock-venv/bin/pip freeze --exclude-editable ) > requirements.lock

clean-data:
	rm -rf data/ .cache/

clean: clean-data
	rm -rf $(VENV)

# Loader throughput and memory against a DuckDB-only baseline in the same run (last line: JSON).
bench: $(STAMP)
	$(BIN)/python bench/loader_files.py --years 3

# Transform cost against history: full build vs a plain DuckDB floor, no-op, new day, late correction (last line: JSON).
bench-transform: $(STAMP)
	$(BIN)/python bench/transform.py --years 1 6

# The Spark gateway (local mode) beside DuckDB at 1 year: full build and one new day (information).
bench-spark: $(STAMP)
	$(BIN)/python bench/transform.py --spark 1

# PostgreSQL extraction (1M and 5M rows) against psql COPY in the same run (last line: JSON).
bench-loader: $(STAMP)
	$(BIN)/python bench/loader_postgres.py --sizes 1000000 5000000

# A load with nothing new at 1, 100, 10,000 and 100,000 landed batches of a table, each over the
# 1-batch load of the same run (last line: JSON). About 2 minutes.
bench-listing: $(STAMP)
	$(BIN)/python bench/landing_listing.py --repeat 5 --s3

# The orphan check of a whole-history build on a real PostgreSQL server (decision 0067); JSON line.
bench-orphans: $(STAMP)
	$(BIN)/python bench/orphan_check_postgres.py --deletions

# The declared raw tables' check of every transform at 200 tables and 1,600 old versions (decision 0074)
bench-declared: $(STAMP)
	$(BIN)/python bench/declared_tables.py

# Chaos: `elt transform` SIGKILLed at random instants, then healed; marts must equal a clean build,
# and no process may outlive the kill (last line: JSON; exit 1 on any loss). About 15 s a round.
bench-kill: $(STAMP)
	$(BIN)/python bench/kill_transform.py --rounds 40 --min-delay 1.0
