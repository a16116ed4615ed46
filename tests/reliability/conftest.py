from __future__ import annotations

import pytest

from tests.reliability.report import REPORT, Report


@pytest.fixture(scope="session")
def report() -> Report:
    return REPORT


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    REPORT.write()
