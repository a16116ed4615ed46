# RefNet: the two commands. Needs only Python 3.11+ and make; everything else is installed here.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test lint typecheck unit venv clean reliability bench

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "RefNet needs Python 3.11 or newer (set PYTHON=...)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## make run: embedded PostgreSQL + Kafka-protocol broker + the four services, migrated and seeded.
run: $(STAMP)
	$(BIN)/refnet up

## make test: lint, type-check, then every test (it starts and stops its own PostgreSQL and broker). Three
## pytest workers, a test file each at a time: most tests wait on stacks, brokers and databases, not the CPU.
test: $(STAMP) lint typecheck
	$(BIN)/pytest -q -n 3 --dist loadfile --durations=25

## make reliability: the reliability suite at full size (2,000 referrals under faults, hostile input, isolation,
## token attacks, leak scan); writes what it injected, checked and measured to docs/reliability.md.
## (`make test` runs the same suite at a smaller size.)
reliability: $(STAMP)
	REFNET_RELIABILITY=full REFNET_RELIABILITY_REPORT=docs/reliability.md $(BIN)/pytest -q --durations=10 tests/reliability

## make bench: how fast RefNet is, beside raw PostgreSQL / broker / SHA-256 / ES256 figures measured in the same
## run (not part of `make test`; about 9 minutes on 2 cores); writes bench/results/<date>.json, docs/benchmarks.md.
bench: $(STAMP)
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit tests/static tests/contract

clean:
	rm -rf $(VENV) .refnet .mypy_cache .ruff_cache .pytest_cache
