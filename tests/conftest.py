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

import pytest

from deploy.launcher.infra import POSTGRES_BIN_PATH, Broker, Postgres, free_port


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
