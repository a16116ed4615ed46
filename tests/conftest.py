"""Test infrastructure: a real PostgreSQL and a real Kafka-protocol broker, started here, stopped after.

``REFNET_DATABASE_URL`` (a server URL, ``postgresql://user@host:port/db``) and ``REFNET_KAFKA_BOOTSTRAP``
point the suite at external ones instead. Tests that inject faults into the broker or the database
(SIGSTOP, kill, restart) always start their own private process, so they disturb nobody else.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from xdist.scheduler import LoadScopeScheduling

from deploy.launcher.infra import POSTGRES_BIN_PATH, Broker, Postgres, free_port
from tests.e2e.network import Network, running_stack
from tests.e2e.scenarios import SCENARIO_ENV

# `make test` runs files in parallel (pytest-xdist, --dist loadfile), each file on one worker so its module
# fixtures start once. The e2e files that share the session's stack must also share a worker: the contract check
# reads the traffic the scenarios and the demo put on that very stack. (xdist's own xdist_group marks do not
# reach its scheduler under pytest 9.2, hence a scheduler of our own.)
SHARED_STACK = frozenset({*(f"tests/e2e/{name}" for name in (
    "test_demo_and_case_system.py", "test_readme.py", "test_signed_in_people.py", "test_sop_scenarios.py",
    "test_zz_events_match_contract.py")), "tests/browser/test_console_flow.py", "tests/reliability/test_leak_scan.py"})
# Likewise the three reliability suites that share `reliability_network`: one worker, one stack boot, not three.
SHARED_RELIABILITY_STACK = frozenset(f"tests/reliability/{name}" for name in (
    "test_hostile_input.py", "test_isolation_matrix.py", "test_token_attacks.py"))


# Seconds each slow unit took in one measured run (make test, 2 cores): they are handed out first, so none of
# them starts last and holds the run up alone (xdist otherwise orders units by their number of tests). Stale
# figures only cost time; a unit missing here just starts after these.
SLOW_UNITS = {
    "tests/e2e/test_restart.py": 200, "e2e-stack": 280, "tests/reliability/test_faults_under_load.py": 150,
    "reliability-stack": 90, "tests/integration/test_launcher.py": 100,
    "tests/integration/test_broker_outages.py": 90, "tests/integration/test_outbox_and_consumer.py": 80,
    "tests/integration/audit/test_forgery.py": 50,
    "tests/integration/test_outbox_inbox_contract.py": 45, "tests/e2e/test_production_config.py": 40,
    "tests/static/test_k8s.py": 40, "tests/integration/test_services_boot.py": 35,
    "tests/integration/test_broker_lost_log.py": 32,
}


class _FilesSharingAStack(LoadScopeScheduling):
    def _split_scope(self, nodeid: str) -> str:
        file = nodeid.split("::", 1)[0]
        if file in SHARED_STACK:
            return "e2e-stack"
        return "reliability-stack" if file in SHARED_RELIABILITY_STACK else file

    def schedule(self) -> None:
        # xdist's LoadScopeScheduling.schedule, with the work queue ordered longest first.
        if self.collection is not None or not self._check_nodes_have_same_collection():
            super().schedule()
            return
        self.collection = list(next(iter(self.registered_collections.values())))
        if not self.collection:
            return
        units: dict[str, dict[str, bool]] = {}
        for nodeid in self.collection:
            units.setdefault(self._split_scope(nodeid), {})[nodeid] = False
        for unit, nodeids in sorted(units.items(), key=lambda item: (-SLOW_UNITS.get(item[0], 0), -len(item[1]))):
            self.workqueue[unit] = nodeids
        for _ in range(max(len(self.nodes) - len(self.workqueue), 0)):  # more workers than work
            unused, _assigned = self.assigned_work.popitem()
            unused.shutdown()
        for node in self.nodes:
            self._assign_work_unit(node)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> LoadScopeScheduling | None:
    return _FilesSharingAStack(config, log) if config.getvalue("dist") == "loadfile" else None


@dataclass
class Infra:
    server_url: str  # postgresql://user@host:port (no database)
    bootstrap: str
    postgres: Postgres | None
    broker: Broker | None
    workdir: Path

    def database_url(self, name: str) -> str:
        return f"postgresql+asyncpg://{self.server_url.split('://', 1)[1]}/{name}"


def psql(server_url: str, sql: str, database: str = "postgres") -> str:
    """Run SQL with the wheel's psql: usable from sync fixtures and from inside async tests alike."""
    out = subprocess.run(
        [str(POSTGRES_BIN_PATH / "psql"), "-v", "ON_ERROR_STOP=1", "-qAt", f"{server_url}/{database}"],
        input=sql.encode(), capture_output=True, check=True,
    )
    return out.stdout.decode()


def _create_database(server_url: str, name: str) -> None:
    psql(server_url, f'CREATE DATABASE "{name}"')


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    workdir = Path(tempfile.mkdtemp(prefix="refnet-test-"))
    postgres: Postgres | None = None
    broker: Broker | None = None
    server_url = os.environ.get("REFNET_DATABASE_URL", "")
    bootstrap = os.environ.get("REFNET_KAFKA_BOOTSTRAP", "")
    try:
        if not server_url:
            postgres = Postgres(workdir / "pgdata", free_port(), workdir / "postgres.log")
            postgres.start()
            server_url = f"postgresql://postgres@127.0.0.1:{postgres.port}"
        else:
            server_url = server_url.replace("postgresql+asyncpg://", "postgresql://").rsplit("/", 1)[0]
        if not bootstrap:
            broker = Broker(free_port(), workdir / "broker.log")
            broker.start()
            bootstrap = broker.bootstrap
        yield Infra(server_url, bootstrap, postgres, broker, workdir)
    finally:
        if broker is not None:
            broker.stop()
        if postgres is not None:
            postgres.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def new_database(infra: Infra) -> Callable[[str], str]:
    """Factory: ``new_database("outbox")`` -> the SQLAlchemy URL of a fresh, empty database."""

    def make(prefix: str = "t") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        _create_database(infra.server_url, name)
        return infra.database_url(name)

    return make


@pytest.fixture
def private_broker(infra: Infra) -> Iterator[Broker]:
    """A broker of this test's own, to pause, kill and restart."""
    broker = Broker(free_port(), infra.workdir / f"broker-{uuid.uuid4().hex[:6]}.log")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def e2e_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    """One stack for the whole e2e session (and the console's browser flow, which shares its worker): it starts
    as `make run` starts it, with the few settings the scenarios need (`SCENARIO_ENV`: short emergency
    deadlines); every test uses its own cases, so none depends on another's data."""
    with running_stack(tmp_path_factory.mktemp("stack") / ".refnet", extra_env=SCENARIO_ENV) as net:
        yield net
