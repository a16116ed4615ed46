# RefNet: the two commands. Needs only Python 3.11+ and make; everything else is installed here.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test lint typecheck unit venv clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "RefNet needs Python 3.11 or newer (set PYTHON=...)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## make run: embedded PostgreSQL + Kafka-protocol broker + the four services, migrated and seeded.
run: $(STAMP)
	$(BIN)/refnet up

## make test: lint, type-check, then every test (it starts and stops its own PostgreSQL and broker).
test: $(STAMP) lint typecheck
	$(BIN)/pytest -q --durations=15

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit tests/static

clean:
	rm -rf $(VENV) .refnet .mypy_cache .ruff_cache .pytest_cache
