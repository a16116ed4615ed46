"""One rendering of the contract documents per test session: building the four apps takes a few seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy import contract


@pytest.fixture(scope="session")
def rendered() -> dict[Path, str]:
    return contract.render()
