"""One stack for the whole e2e session: it starts as `make run` starts it (about 20 s), with the few settings
the scenarios need (`SCENARIO_ENV`: short emergency deadlines), and every scenario uses its own cases, so
scenarios do not depend on each other's data."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.network import Network, running_stack
from tests.e2e.scenarios import SCENARIO_ENV


@pytest.fixture(scope="session")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    with running_stack(tmp_path_factory.mktemp("stack") / ".refnet", extra_env=SCENARIO_ENV) as net:
        yield net
