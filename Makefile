# The two commands: `make bench` (the main job) and `make test` (the whole suite).
# Each creates or refreshes its own virtual environment in .venv.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
BENCH_ARGS ?=

.PHONY: test bench lint clean

# Reinstall when pyproject.toml changes; one stamp per extra.
$(VENV)/.installed-%: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$*]'
	touch $@

test: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests alembic
	$(BIN)/mypy
	$(BIN)/pytest

bench: $(VENV)/.installed-bench
	$(BIN)/harbordb bench $(BENCH_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests alembic
	$(BIN)/ruff format --check src tests alembic
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
