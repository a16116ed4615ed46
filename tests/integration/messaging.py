"""A minimal service for exercising the outbox, the relay and the idempotent consumer for real.

Its only state change is "write an event"; its only effect is a row in ``effects`` per applied event,
with a serial ``applied`` number, so tests can count deliveries and check per-key order.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.consumer import EventConsumer, PoisonEvent
from shared.db import make_engine, make_sessionmaker, unit_of_work
from shared.envelope import Event
from shared.migration_ops import MESSAGING_DDL
from shared.outbox import OutboxRelay, add_event

SOURCE = "/refnet/test"
EFFECTS_DDL = """
CREATE TABLE effects (
    applied   BIGSERIAL PRIMARY KEY,
    event_id  TEXT NOT NULL,
    key       TEXT NOT NULL,
    n         INTEGER NOT NULL
);
"""


@dataclass
class Harness:
    url: str
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    topic: str

    @classmethod
    async def create(cls, url: str) -> Harness:
        engine = make_engine(url, pool_size=5)
        async with engine.begin() as conn:
            for ddl in (*MESSAGING_DDL, EFFECTS_DDL):
                await conn.exec_driver_sql(ddl)
        return cls(url, engine, make_sessionmaker(engine), f"test.{uuid.uuid4().hex[:8]}")

    async def write(self, key: str, n: int, *, rollback: bool = False, session: AsyncSession | None = None,
                    type: str = "test.happened.v1") -> None:
        if session is not None:
            await add_event(session, source=SOURCE, topic=self.topic, type=type, aggregate_type="test",
                            aggregate_id=key, payload={"key": key, "n": n})
            return

        class Rollback(Exception):
            pass

        try:
            async with unit_of_work(self.sessions) as s:
                await add_event(s, source=SOURCE, topic=self.topic, type=type, aggregate_type="test",
                                aggregate_id=key, payload={"key": key, "n": n})
                if rollback:
                    raise Rollback
        except Rollback:
            pass

    async def write_stream(self, events: int, keys: int, per_tx: int = 10,
                           rolled_back_every: int = 0, start: int = 0) -> int:
        """Write events numbered ``start``.., ``per_tx`` per transaction, key n % keys; plus rolled-back ones.

        Returns the number of events committed."""
        written = start
        tx = 0
        while written < start + events:
            tx += 1
            doomed = rolled_back_every and tx % rolled_back_every == 0
            async with self.sessions() as s:
                await s.begin()
                for _ in range(per_tx):
                    n = -1 if doomed else written
                    await self.write(f"k{(written if not doomed else tx) % keys}", n, session=s)
                    if not doomed:
                        written += 1
                if doomed:
                    await s.rollback()
                else:
                    await s.commit()
        return written - start

    def relay(self, bootstrap: str, **kwargs: Any) -> OutboxRelay:
        return OutboxRelay(service=f"test-{self.topic}", engine=self.engine, database_url=self.url,
                           bootstrap=bootstrap, poll_seconds=0.5, **kwargs)

    def consumer(self, bootstrap: str, *, group: str | None = None, poison_n: int | None = None,
                 on_batch_applied: Callable[[], Awaitable[None]] | None = None) -> EventConsumer:
        async def apply(session: AsyncSession, event: Event) -> None:
            if poison_n is not None and event.data.get("n") == poison_n:
                raise ValueError("this event can never be applied")
            if not isinstance(event.data.get("n"), int):
                raise PoisonEvent("payload has no integer n")
            await session.execute(text("INSERT INTO effects (event_id, key, n) VALUES (:i, :k, :n)"),
                                  {"i": event.id, "k": event.partition_key, "n": event.data["n"]})

        return EventConsumer(service="test", name=group or f"g-{self.topic}", topics=[self.topic],
                             handlers={"test.happened.v1": apply}, sessions=self.sessions,
                             bootstrap=bootstrap, max_attempts=3, retry_backoff_seconds=0.01,
                             on_batch_applied=on_batch_applied)

    async def effects(self) -> list[Any]:
        async with self.engine.connect() as conn:
            return list((await conn.execute(text("SELECT event_id, key, n FROM effects ORDER BY applied"))).all())

    async def outbox_size(self) -> int:
        """Rows not yet published."""
        async with self.engine.connect() as conn:
            return int((await conn.execute(
                text("SELECT count(*) FROM outbox WHERE published_at IS NULL"))).scalar_one())

    async def retained(self) -> int:
        """Rows published and kept."""
        async with self.engine.connect() as conn:
            return int((await conn.execute(
                text("SELECT count(*) FROM outbox WHERE published_at IS NOT NULL"))).scalar_one())

    async def wait_for_effects(self, count: int, timeout: float) -> list[Any]:
        deadline = time.monotonic() + timeout
        while True:
            rows = await self.effects()
            if len(rows) >= count or time.monotonic() > deadline:
                return rows
            await asyncio.sleep(0.25)


def assert_exactly_once(rows: list[Any], expected_n: set[int]) -> None:
    seen = [r.n for r in rows]
    assert len(seen) == len(set(seen)), "an event was applied twice"
    missing, extra = sorted(expected_n - set(seen))[:10], sorted(set(seen) - expected_n)[:10]
    assert set(seen) == expected_n, f"missing {missing}, extra {extra}"


def assert_exactly_once_in_order(rows: list[Any], expected_n: set[int]) -> None:
    assert_exactly_once(rows, expected_n)
    last: dict[str, int] = {}
    for r in rows:
        assert r.n > last.get(r.key, -1), f"key {r.key}: {r.n} applied after {last[r.key]}"
        last[r.key] = r.n


@contextlib.asynccontextmanager
async def running(*coros: object) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(c) for c in coros]  # type: ignore[arg-type]
    try:
        yield
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def harness(new_database: Callable[[str], str]) -> Harness:
    return await Harness.create(new_database("backbone"))
