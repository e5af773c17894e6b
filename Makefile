# `make run`: set up and run the service on the embedded SQLite store, with a demo program and token printed.
# `make test`: set up and run the whole test suite (PostgreSQL tests run when PostgreSQL is reachable).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test install lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/.installed

run: install
	$(BIN)/loyalty demo
	$(BIN)/loyalty serve --host $(HOST) --port $(PORT)

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check src tests

bench: install
	$(BIN)/loyalty bench

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
