"""The e2e tests share one stack for the session: `e2e_stack` in tests/conftest.py (as `make run` starts it)."""

from __future__ import annotations

import pytest

from tests.e2e.network import Network


@pytest.fixture(scope="session")
def network(e2e_stack: Network) -> Network:
    return e2e_stack
