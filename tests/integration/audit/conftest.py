"""An audit service of each test's own: a fresh database migrated to head, a private broker, a signing
key in a temporary directory, tokens from a local issuer; and a producer to feed it events."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import rfc8785
from aiokafka import AIOKafkaConsumer
from fastapi import FastAPI

from deploy.launcher.infra import Broker
from services.audit.app import create_app
from services.audit.deps import Deps
from services.audit.settings import AuditSettings
from services.audit.signing import generate_key_file
from shared import envelope
from shared.kafka import dlq_topic, ensure_topics, make_producer
from shared.migrations import upgrade
from shared.topics import ALL_TOPICS
from tests.conftest import Infra, psql
from tests.support.issuer import LocalIssuer
from tests.support.merkle_tree import MerkleTree

AUDITOR_SCOPE = "audit:read"


@pytest.fixture(scope="package")
def issuer() -> Iterator[LocalIssuer]:
    with LocalIssuer() as local:
        yield local


@dataclass
class AuditHarness:
    app: FastAPI
    client: httpx.AsyncClient
    bootstrap: str
    database_url: str
    server_url: str
    issuer: LocalIssuer
    headers: dict[str, str]
    producer: Any
    _sent: int = field(default=0)

    @property
    def deps(self) -> Deps:
        """The running service's use cases (what its routes, consumer and jobs use)."""
        return self.app.state.runtime.need(Deps)

    @property
    def database(self) -> str:
        return self.database_url.rsplit("/", 1)[1]

    def sql(self, statement: str) -> str:
        """Run SQL as the cluster's superuser, behind the service's back."""
        return psql(self.server_url, statement, self.database)

    async def forge(self, index: int, agency: str) -> None:
        """Rewrite an entry behind the service's back, and every stored hash to match the new content.

        Superuser, triggers off (``session_replication_role = replica``): what an insider could do.
        """
        behind = "SET session_replication_role = replica; "
        change = f"UPDATE audit_entries SET agency = '{agency}' WHERE idx = {index}"  # noqa: S608
        self.sql(behind + change)
        shown = (await self.get("/audit/entries", limit=500)).json()["items"]
        tree = MerkleTree(rfc8785.dumps(e) for e in shown)
        rewrites = [
            f"UPDATE merkle_nodes SET hash = '\\x{h.hex()}' WHERE level = {level} AND idx = {idx};"  # noqa: S608
            for (level, idx), h in tree.nodes.items()
        ]
        self.sql(behind + "".join(rewrites))

    async def send(self, topic: str, type: str, data: dict[str, Any], *, event_id: str | None = None,
                   source: str = "/refnet/intake", key: str = "k") -> str:
        event = envelope.Event(id=event_id or str(uuid.uuid4()), source=source, type=type, subject=None,
                               partition_key=key, time=datetime.now(UTC), data=data)
        k, value, headers = envelope.encode(event)
        await self.producer.send_and_wait(topic, value=value, key=k, headers=headers)
        return event.id

    async def send_raw(self, topic: str, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        await self.producer.send_and_wait(topic, value=value, key=b"k", headers=headers)

    async def get(self, path: str, **params: Any) -> httpx.Response:
        return await self.client.get(path, params=params, headers=self.headers)

    async def size(self) -> int:
        return int(self.sql("SELECT count(*) FROM audit_entries").strip())

    async def wait_for_size(self, n: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while (current := await self.size()) < n:
            if time.monotonic() > deadline:
                pytest.fail(f"the log holds {current} entries, not {n}, after {timeout} s")
            await asyncio.sleep(0.2)

    async def dead_letters(self, topic: str, count: int, timeout: float = 20.0) -> list[Any]:
        reader = AIOKafkaConsumer(dlq_topic(topic), bootstrap_servers=self.bootstrap, group_id=None,
                                  auto_offset_reset="earliest", enable_auto_commit=False)
        await reader.start()
        found: list[Any] = []
        try:
            deadline = time.monotonic() + timeout
            while len(found) < count and time.monotonic() < deadline:
                batch = await reader.getmany(timeout_ms=500)
                for records in batch.values():
                    found.extend(records)
        finally:
            await reader.stop()
        return found


@pytest.fixture
def audit_settings(tmp_path: Path, issuer: LocalIssuer) -> Callable[..., AuditSettings]:
    key_file = tmp_path / "checkpoint.pem"
    generate_key_file(key_file)

    def make(database_url: str, bootstrap: str, **overrides: Any) -> AuditSettings:
        values: dict[str, Any] = {
            "database_url": database_url, "kafka_bootstrap": bootstrap, "log_json": False,
            "issuer": issuer.issuer, "jwks_url": issuer.jwks_url, "checkpoint_key_file": str(key_file),
            "checkpoint_interval_seconds": 3600.0, "sequencer_poll_seconds": 0.2,
            "consumer_retry_backoff_seconds": 0.01, "consumer_max_attempts": 2,
        }
        values.update(overrides)
        return AuditSettings(**values)

    return make


@asynccontextmanager
async def running_audit(settings: AuditSettings, server_url: str, issuer: LocalIssuer, *,
                        migrate: bool = True) -> AsyncIterator[AuditHarness]:
    if migrate:
        await asyncio.to_thread(upgrade, "audit", settings.database_url)
    await ensure_topics(settings.kafka_bootstrap, [*ALL_TOPICS, *map(dlq_topic, ALL_TOPICS)])
    app = create_app(settings)
    producer = make_producer(settings.kafka_bootstrap)
    await producer.start()
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://audit.test") as client:
                yield AuditHarness(
                    app=app, client=client, bootstrap=settings.kafka_bootstrap,
                    database_url=settings.database_url, server_url=server_url, issuer=issuer,
                    headers=issuer.auth_headers("auditor-client", "oversight", AUDITOR_SCOPE),
                    producer=producer,
                )
    finally:
        await producer.stop()


@pytest.fixture
async def audit(infra: Infra, private_broker: Broker, new_database: Callable[[str], str],
                audit_settings: Callable[..., AuditSettings], issuer: LocalIssuer) -> AsyncIterator[AuditHarness]:
    settings = audit_settings(new_database("audit"), private_broker.bootstrap)
    async with running_audit(settings, infra.server_url, issuer) as harness:
        yield harness
