"""The outbox/inbox contract, written once: an event written through the outbox (``shared/outbox.py``) in a
committed transaction is applied once by each inbox consumer (``shared/consumer.py``), with what was written;
one key's events in the order written; nothing of a rolled-back transaction; and delivering it again is a
no-op.

Every test runs against each way events travel from an outbox to an inbox (the ``pipe`` fixture):

- ``broker``: the production path -- the ``OutboxRelay`` publishing to the test broker, ``EventConsumer`` s
  reading it; redelivery is the relay publishing the outbox again (``mark_for_republish``, as after a broker
  lost its log), so the consumers read every event a second time;
- ``in-process``: no broker -- the outbox rows handed, as CloudEvents encoded and decoded like the relay's, to
  the consumers' inbox (``EventConsumer._apply``: the same transaction of inbox row and effect); redelivery
  hands them over again.

The second is what a test of a service's consumers can stand on without a broker; this suite is what says it
behaves as the first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any, Protocol

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from shared import envelope
from shared.consumer import EventConsumer
from shared.db import unit_of_work
from shared.envelope import Event
from shared.outbox import NewEvent, OutboxRelay, add_events, mark_for_republish
from tests.conftest import Infra
from tests.integration.messaging import SOURCE, Harness

TYPE = "test.happened.v1"
CONSUMERS = ("first", "second")
CONTRACT_EFFECTS_DDL = """
CREATE TABLE contract_effects (
    applied   BIGSERIAL PRIMARY KEY,
    consumer  TEXT NOT NULL,
    event_id  TEXT NOT NULL,
    source    TEXT NOT NULL,
    type      TEXT NOT NULL,
    subject   TEXT,
    key       TEXT NOT NULL,
    data      JSONB NOT NULL,
    at        TIMESTAMPTZ NOT NULL
);
"""


@dataclass(frozen=True)
class Effect:
    event_id: str
    source: str
    type: str
    subject: str | None
    key: str
    data: dict[str, Any]


class Pipe(Protocol):
    """An outbox and the inboxes of ``CONSUMERS``, with a way between them."""

    harness: Harness

    async def settle(self) -> None:
        """Every event committed so far has travelled to every consumer (and been applied, or refused)."""

    async def redeliver(self) -> None:
        """Every event delivered so far travels to every consumer again; then settle."""


@dataclass
class Handlers:
    """The consumers' handlers: each applied event is a row of ``contract_effects``. An event whose data has
    ``fail_times`` fails that many times first (a transient error: a deadlock, a timeout)."""

    failures: dict[str, int] = field(default_factory=dict)

    def for_consumer(self, name: str) -> Callable[[AsyncSession, Event], Any]:
        async def apply(session: AsyncSession, event: Event) -> None:
            await session.execute(text(
                "INSERT INTO contract_effects (consumer, event_id, source, type, subject, key, data, at) "
                "VALUES (:c, :i, :s, :t, :sub, :k, CAST(:d AS JSONB), :at)"),
                {"c": name, "i": event.id, "s": event.source, "t": event.type, "sub": event.subject,
                 "k": event.partition_key, "d": json.dumps(event.data), "at": event.time})
            failed = self.failures.get(f"{name}:{event.id}", 0)
            if failed < int(event.data.get("fail_times", 0)):
                self.failures[f"{name}:{event.id}"] = failed + 1
                raise RuntimeError("transient failure after the effect was written")

        return apply


def consumers_of(harness: Harness, bootstrap: str, handlers: Handlers) -> list[EventConsumer]:
    return [EventConsumer(service="test", name=f"{name}-{harness.topic}", topics=[harness.topic],
                          handlers={TYPE: handlers.for_consumer(name)}, sessions=harness.sessions,
                          bootstrap=bootstrap, max_attempts=5, retry_backoff_seconds=0.01)
            for name in CONSUMERS]


@dataclass
class BrokerPipe:
    harness: Harness
    consumers: list[EventConsumer]

    async def settle(self) -> None:
        for _ in range(300):
            if await self.harness.outbox_size() == 0:
                break
            await asyncio.sleep(0.1)
        assert await self.harness.outbox_size() == 0, "the relay did not publish the outbox in 30 s"
        for consumer in self.consumers:
            assert await consumer.applied_what_the_broker_holds(seconds=60), f"{consumer.name} did not catch up"

    async def redeliver(self) -> None:
        async with self.harness.engine.begin() as conn:
            again = await mark_for_republish(conn, reason="contract test: redelivery", topic=self.harness.topic)
        assert again, "nothing was published to deliver again"
        await self.settle()


@dataclass
class InProcessPipe:
    harness: Harness
    consumers: list[EventConsumer]
    delivered: list[Event] = field(default_factory=list)

    async def _hand_over(self, event: Event) -> None:
        for consumer in self.consumers:
            handler = consumer.handlers[event.type]
            for attempt in range(1, consumer.max_attempts + 1):
                try:
                    await consumer._apply(event, handler)  # the inbox: its row and the effect, one transaction
                    break
                except Exception:
                    if attempt == consumer.max_attempts:
                        raise

    async def settle(self) -> None:
        async with self.harness.engine.begin() as conn:
            rows = (await conn.execute(text(
                "SELECT seq, id, aggregateid, type, subject, payload, created_at FROM outbox "
                "WHERE published_at IS NULL AND topic = :t ORDER BY seq FOR UPDATE"), {"t": self.harness.topic})).all()
            for row in rows:
                stored = row.payload if isinstance(row.payload, dict) else json.loads(row.payload)
                # As the relay builds it, and through the wire format and back, as a consumer reads it.
                key, value, headers = envelope.encode(Event(
                    id=str(row.id), source=stored["source"], type=row.type, subject=row.subject,
                    partition_key=row.aggregateid, time=row.created_at.astimezone(UTC), data=stored["data"]))
                event = envelope.decode(key, value, headers)
                await self._hand_over(event)
                self.delivered.append(event)
            await conn.execute(text("UPDATE outbox SET published_at = now() WHERE seq = ANY(:s)"),
                               {"s": [row.seq for row in rows]})

    async def redeliver(self) -> None:
        assert self.delivered, "nothing was delivered to deliver again"
        for event in list(self.delivered):
            await self._hand_over(event)
        await self.settle()


@contextlib.asynccontextmanager
async def running(*coros: Any) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(c) for c in coros]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture(params=["broker", "in-process"])
async def pipe(request: pytest.FixtureRequest, infra: Infra,
               new_database: Callable[[str], str]) -> AsyncIterator[Pipe]:
    harness = await Harness.create(new_database("contract"))
    async with harness.engine.begin() as conn:
        await conn.exec_driver_sql(CONTRACT_EFFECTS_DDL)
    handlers = Handlers()
    consumers = consumers_of(harness, infra.bootstrap, handlers)
    try:
        if request.param == "broker":
            relay: OutboxRelay = harness.relay(infra.bootstrap)
            async with running(relay.run(), *(c.run() for c in consumers)):
                yield BrokerPipe(harness, consumers)
        else:
            yield InProcessPipe(harness, consumers)
    finally:
        await harness.engine.dispose()


async def write(pipe: Pipe, *events: tuple[str, dict[str, Any]], subject: str | None = None,
                rollback: bool = False) -> list[str]:
    """Write ``(key, data)`` events in one transaction, through the outbox; -> their ids."""

    class RolledBack(Exception):
        pass

    ids: list[uuid.UUID] = []
    with contextlib.suppress(RolledBack):
        async with unit_of_work(pipe.harness.sessions) as session:
            ids = await add_events(session, source=SOURCE, events=[
                NewEvent(topic=pipe.harness.topic, type=TYPE, aggregate_type="test", aggregate_id=key,
                         payload=data, subject=subject) for key, data in events])
            if rollback:
                raise RolledBack
    return [str(i) for i in ids]


async def effects(pipe: Pipe, consumer: str = "first") -> list[Effect]:
    async with pipe.harness.engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT event_id, source, type, subject, key, data FROM contract_effects WHERE consumer = :c "
            "ORDER BY applied"), {"c": consumer})).all()
    return [Effect(r.event_id, r.source, r.type, r.subject, r.key, dict(r.data)) for r in rows]


# --- the contract ----------------------------------------------------------------------------------------------


async def test_a_committed_event_is_applied_once_as_written(pipe: Pipe) -> None:
    [event_id] = await write(pipe, ("case-1", {"n": 1, "what": "granted"}), subject="referral-9")
    await pipe.settle()
    assert await effects(pipe) == [Effect(event_id, SOURCE, envelope.full_type(TYPE), "referral-9", "case-1",
                                          {"n": 1, "what": "granted"})]


async def test_redelivery_is_a_no_op(pipe: Pipe) -> None:
    written = await write(pipe, ("k1", {"n": 1}), ("k2", {"n": 2}), ("k1", {"n": 3}))
    await pipe.settle()
    before = await effects(pipe)
    assert [e.event_id for e in before] == written
    await pipe.redeliver()
    await pipe.redeliver()
    assert await effects(pipe) == before


async def test_an_event_of_a_rolled_back_transaction_is_never_applied(pipe: Pipe) -> None:
    await write(pipe, ("k", {"n": -1}), rollback=True)
    kept = await write(pipe, ("k", {"n": 1}))  # after it, so its arrival says the other had its chance
    await pipe.settle()
    assert [e.event_id for e in await effects(pipe)] == kept


async def test_one_keys_events_apply_in_the_order_written(pipe: Pipe) -> None:
    written: list[tuple[str, int]] = []
    for batch in range(5):
        events = [(f"k{n % 3}", {"n": batch * 6 + n}) for n in range(6)]
        await write(pipe, *events)
        written += [(key, data["n"]) for key, data in events]
    await pipe.settle()
    applied = [(e.key, e.data["n"]) for e in await effects(pipe)]
    assert sorted(applied) == sorted(written)
    for key in ("k0", "k1", "k2"):
        assert [n for k, n in applied if k == key] == [n for k, n in written if k == key]


async def test_each_consumer_has_its_own_inbox(pipe: Pipe) -> None:
    written = await write(pipe, ("k", {"n": 1}), ("k", {"n": 2}))
    await pipe.settle()
    await pipe.redeliver()
    for consumer in CONSUMERS:
        assert [e.event_id for e in await effects(pipe, consumer)] == written, consumer


async def test_a_failed_application_leaves_no_trace_and_is_applied_once_later(pipe: Pipe) -> None:
    """The handler wrote its effect, then failed: effect and inbox row go together, so the retry applies it
    (not "already seen") and the effect is there once."""
    written = await write(pipe, ("k", {"n": 1, "fail_times": 2}), ("k", {"n": 2}))
    await pipe.settle()
    await pipe.redeliver()
    assert [e.event_id for e in await effects(pipe)] == written


async def test_the_event_time_is_when_it_was_written(pipe: Pipe) -> None:
    """Consumers date what they record by the event (a read model's updated_at), not by when it arrived."""
    await write(pipe, ("k", {"n": 1}))
    await asyncio.sleep(0.5)
    await pipe.settle()
    async with pipe.harness.engine.connect() as conn:
        written, applied = (await conn.execute(text(
            "SELECT (SELECT created_at FROM outbox), (SELECT at FROM contract_effects WHERE consumer = 'first')"
        ))).one()
    assert abs((applied - written).total_seconds()) < 0.001
