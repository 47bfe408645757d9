# vlmq: `make run` runs the whole service on its embedded defaults; `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-quick test-fast install lint typecheck check clean compose-check

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Set everything up and run API, one worker and an embedded Redis on SQLite under ./var/.
run: $(STAMP)
	$(BIN)/vlmq migrate
	$(BIN)/vlmq up

## Set everything up and run the whole suite (SQLite and PostgreSQL, real Redis and workers).
test: $(STAMP)
	$(BIN)/ruff check services workers vlmq tests bench
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/pytest

## Lint and the unit tests; needs no Redis, database or worker (well under a minute).
test-quick: $(STAMP)
	$(BIN)/ruff check services workers vlmq tests bench
	$(BIN)/ruff format --check services workers vlmq tests bench
	$(BIN)/lint-imports
	$(BIN)/pytest -q -p no:cacheprovider tests/unit

## As `make test`, less the tests marked slow (faults, fuzzing, schemathesis, long end-to-end runs).
test-fast: $(STAMP)
	$(BIN)/ruff check services workers vlmq tests bench
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/pytest -m "not slow"

## docker-compose.yml renders under the Compose specification and defaults no secret.
compose-check: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider tests/unit/test_compose.py

lint: $(STAMP)
	$(BIN)/ruff check services workers vlmq tests bench
	$(BIN)/lint-imports
	$(BIN)/ruff format --check services workers vlmq

typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
