from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.network import Network
from tests.reliability.report import REPORT, Report
from tests.reliability.stack import reliability_stack


@pytest.fixture(scope="session")
def report() -> Report:
    return REPORT


@pytest.fixture(scope="session")
def reliability_network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    """One stack for the hostile-input, isolation and token suites (tests/reliability/stack.py); the fault suite
    and the leak scan start their own."""
    with reliability_stack(tmp_path_factory.mktemp("reliability") / ".refnet") as net:
        yield net


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    REPORT.write()
