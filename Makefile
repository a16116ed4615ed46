# RefNet: the two commands. Needs only Python 3.11+ and make; everything else is installed here.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# The pinned, hashed dependencies (`make lock` writes them): dev.txt for this virtualenv (the dev, local and
# bench extras), prod.txt for deploy/Dockerfile (no extras).
LOCK_DEV  := requirements/dev.txt
LOCK_PROD := requirements/prod.txt
# The lock compiler, needed only by `make lock` (installing from the lock needs only pip).
UV_VERSION ?= 0.13.9
PIP    := $(BIN)/python -m pip --disable-pip-version-check

.PHONY: run test lint typecheck unit venv clean reliability bench lock chromium chromium-start

# The browser tests (tests/browser/) drive Debian's headless Chromium and its driver. `make test` installs them
# when missing, in the background while the virtualenv, ruff and mypy run, and waits for the install only before
# pytest; apt's output goes to CHROMIUM_LOG. apt-get update runs only if the install fails without it (a
# missing or stale package list); the lock timeout lets it queue behind another apt on the same machine. A Ctrl-C
# of make does not reach it: an interrupted dpkg would leave the packages half installed.
CHROMIUM      := /usr/bin/chromium /usr/bin/chromedriver
CHROMIUM_LOG  := .refnet/chromium-install.log
CHROMIUM_RC   := .refnet/chromium-install.rc
CHROMIUM_WAIT ?= 1200
APT_GET       := env DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=600

# Exactly the locked versions (each file checked against its hash), then the project itself without
# resolving anything again.
$(STAMP): pyproject.toml $(LOCK_DEV)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "RefNet needs Python 3.11 or newer (set PYTHON=...)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --require-hashes -r $(LOCK_DEV)
	$(PIP) install --quiet --no-deps -e .
	@$(PIP) check || { echo "requirements/ lacks what pyproject.toml declares: run make lock"; exit 1; }
	touch $(STAMP)

venv: $(STAMP)

## make run: embedded PostgreSQL + Kafka-protocol broker + the four services, migrated and seeded.
run: $(STAMP)
	$(BIN)/refnet up

## make test: lint, type-check, then every test (it starts and stops its own PostgreSQL and broker). Three
## pytest workers, a test file each at a time: most tests wait on stacks, brokers and databases, not the CPU.
test: chromium-start $(STAMP) lint typecheck
	@$(MAKE) --no-print-directory chromium-wait
	$(BIN)/pytest -q -n 6 --dist loadfile --durations=25

## make chromium: install Chromium and chromedriver for the browser tests now (make test does it by itself).
chromium: chromium-start
	@$(MAKE) --no-print-directory chromium-wait

chromium-start:
	@mkdir -p .refnet && rm -f $(CHROMIUM_RC) $(CHROMIUM_RC).tmp
	@if ls $(CHROMIUM) >/dev/null 2>&1; then echo 0 > $(CHROMIUM_RC); else \
	  echo "· Chromium for the browser tests: installing in the background (log: $(CHROMIUM_LOG))"; \
	  ( trap '' INT HUP; ( date -u "+started %FT%TZ"; \
	    if [ "$$(id -u)" = 0 ]; then sudo=; elif command -v sudo >/dev/null; then sudo="sudo -n"; \
	    else echo "not root and no sudo: install the Debian packages chromium and chromium-driver as root"; exit 1; fi; \
	    command -v apt-get >/dev/null || { echo "no apt-get: install Chromium at /usr/bin/chromium and its driver at /usr/bin/chromedriver"; exit 1; }; \
	    $$sudo $(APT_GET) install --no-install-recommends chromium chromium-driver \
	    || { $$sudo $(APT_GET) update && $$sudo $(APT_GET) install --no-install-recommends chromium chromium-driver; }; \
	    rc=$$?; date -u "+finished %FT%TZ"; exit $$rc \
	  ) > $(CHROMIUM_LOG) 2>&1 < /dev/null; echo $$? > $(CHROMIUM_RC).tmp; mv $(CHROMIUM_RC).tmp $(CHROMIUM_RC) ) >/dev/null 2>&1 & \
	fi

# Not a target of its own to call: it waits for what chromium-start began.
chromium-wait:
	@waited=0; while [ ! -f $(CHROMIUM_RC) ]; do \
	  if [ $$waited = 0 ]; then echo "· waiting for the Chromium install (log: $(CHROMIUM_LOG))"; fi; \
	  if [ $$waited -ge $(CHROMIUM_WAIT) ]; then echo "Chromium install still running after $(CHROMIUM_WAIT) s: see $(CHROMIUM_LOG)"; exit 1; fi; \
	  sleep 1; waited=$$((waited + 1)); done; \
	rc=$$(cat $(CHROMIUM_RC)); \
	if [ "$$rc" != 0 ] || ! ls $(CHROMIUM) >/dev/null 2>&1; then \
	  echo "Chromium install failed (exit $$rc); the browser tests need $(CHROMIUM). From $(CHROMIUM_LOG):"; \
	  tail -n 15 $(CHROMIUM_LOG); exit 1; fi

## make reliability: the reliability suite at full size (2,000 referrals under faults, hostile input, isolation,
## token attacks, leak scan); writes what it injected, checked and measured to docs/reliability.md.
## (`make test` runs the same suite at a smaller size.)
reliability: $(STAMP)
	REFNET_RELIABILITY=full REFNET_RELIABILITY_REPORT=docs/reliability.md $(BIN)/pytest -q --durations=10 tests/reliability

## make bench: how fast RefNet is, beside raw PostgreSQL / broker / SHA-256 / ES256 figures measured in the same
## run (not part of `make test`; about 9 minutes on 2 cores); writes bench/results/<date>.json, docs/benchmarks.md.
bench: $(STAMP)
	$(BIN)/python -m bench

## make lint: ruff, and the import contract of pyproject.toml ([tool.importlinter]): services never import
## each other or deploy/, shared/ never imports a service.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit tests/static tests/contract

## make lock: pin, with hashes, what pyproject.toml declares (a dependency added, removed or given a new range;
## every other pin kept), then install it here. `make lock UPGRADE=1`: every pin moved to the newest version
## its range allows. Commit requirements/ with the change that called for it.
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet 'uv==$(UV_VERSION)'
	$(BIN)/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes $(if $(UPGRADE),--upgrade) \
		--custom-compile-command 'make lock' --extra dev --extra local --extra bench -o $(LOCK_DEV) pyproject.toml
	$(BIN)/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes \
		--custom-compile-command 'make lock' -c $(LOCK_DEV) -o $(LOCK_PROD) pyproject.toml
	$(MAKE) venv

clean:
	rm -rf $(VENV) .refnet .mypy_cache .ruff_cache .pytest_cache
