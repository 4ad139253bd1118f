# Two commands do all set-up on a fresh clone:
#   make serve   creates .venv if needed, installs, starts the server on 127.0.0.1:8000
#   make test    creates .venv if needed, installs, runs lint, types and the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: serve test check pytest bench clean

$(STAMP): pyproject.toml clients/cerver-mcp/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	# The cerver-mcp client (its own distribution, never imported by the server): its tests
	# spawn the `cerver-mcp` it installs.
	$(BIN)/pip install -q -e ./clients/cerver-mcp
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/cerver serve

check: $(STAMP)
	$(BIN)/ruff check cerver tests bench clients
	$(BIN)/ruff format --check cerver tests bench clients
	$(BIN)/mypy
	$(BIN)/mypy clients/cerver-mcp/src

# tests/cluster starts its own multi-node Ray cluster: it runs in its own pytest process,
# once with a SQLite store and once with PostgreSQL. tests.reaped fails a run that leaves a
# process behind (and kills it): no process outlives the suite.
REAPED = $(BIN)/python -m tests.reaped
pytest: $(STAMP)
	$(REAPED) $(BIN)/python -m pytest --ignore=tests/cluster $(PYTEST_ARGS)
	CERVER_TEST_CLUSTER_STORE=sqlite $(REAPED) $(BIN)/python -m pytest tests/cluster $(PYTEST_ARGS)
	CERVER_TEST_CLUSTER_STORE=postgresql $(REAPED) $(BIN)/python -m pytest tests/cluster $(PYTEST_ARGS)

test: check pytest

bench: $(STAMP)
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
