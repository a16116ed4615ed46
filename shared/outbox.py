"""Transactional outbox: a state change and its event are written in one transaction; a relay publishes.

The relay is the only way an event reaches Kafka. One relay per service holds a PostgreSQL advisory lock
(the others wait as hot standbys), so rows go out in ``seq`` order and one case's events stay in order.
It wakes on ``NOTIFY outbox`` (sent by a trigger when rows are inserted) and polls as a fallback. Rows are
deleted only after the broker acknowledged them with ``acks=all``; while the broker is away they wait.
Publishing is at-least-once: consumers deduplicate (see ``shared.consumer``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog
from sqlalchemy import Uuid, column, insert, table, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from shared import contract, envelope
from shared.db import plain_url
from shared.kafka import ensure_topics, make_producer
from shared.leader import lock_key
from shared.observability import EVENTS_PUBLISHED, LEADER, OUTBOX_BACKLOG, OUTBOX_OLDEST_AGE

log = structlog.get_logger("refnet.outbox")

NOTIFY_CHANNEL = "refnet_outbox"

# DDL shared by every service's first migration (see shared.migration_ops).
OUTBOX_DDL = (
    """
CREATE TABLE outbox (
    seq            BIGSERIAL PRIMARY KEY,
    id             UUID NOT NULL UNIQUE,
    topic          TEXT NOT NULL,
    aggregatetype  TEXT NOT NULL,
    aggregateid    TEXT NOT NULL,
    type           TEXT NOT NULL,
    subject        TEXT,
    payload        JSONB NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now()
)""",
    f"""
CREATE FUNCTION refnet_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{NOTIFY_CHANNEL}', '');
    RETURN NULL;
END $$""",
    """
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION refnet_outbox_notify()""",
)
OUTBOX_DROP = ("DROP TABLE outbox", "DROP FUNCTION refnet_outbox_notify()")

# The outbox as the durable record of what a service said (added by each service's retention migration, see
# shared.migration_ops): a published row is kept with where the broker put it, so a relay can tell when the
# broker lost it and publish it again, until the retention prunes it. ``state_key`` names the entity whose
# current state the event carries (shared.contract.state_key): the newest row of each is never pruned, so a
# read model can always be rebuilt from the outbox, however old the fact.
OUTBOX_RETENTION_DDL = (
    """
ALTER TABLE outbox
    ADD COLUMN published_at        TIMESTAMPTZ,
    ADD COLUMN published_partition INTEGER,
    ADD COLUMN published_offset    BIGINT,
    ADD COLUMN state_key           TEXT""",
    "CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL",
    "CREATE INDEX outbox_topic_seq ON outbox (topic, seq)",
    "CREATE INDEX outbox_state ON outbox (topic, state_key, seq) WHERE state_key IS NOT NULL",
    "CREATE INDEX outbox_published_at ON outbox (published_at) WHERE published_at IS NOT NULL",
    # What the relay republished and why: for `refnet status` and for the operator reading the runbook.
    """
CREATE TABLE outbox_republished (
    id      BIGSERIAL PRIMARY KEY,
    topic   TEXT NOT NULL,
    reason  TEXT NOT NULL,
    rows    BIGINT NOT NULL,
    at      TIMESTAMPTZ NOT NULL DEFAULT now()
)""",
)
OUTBOX_RETENTION_DROP = (
    "DROP TABLE outbox_republished",
    "DROP INDEX outbox_published_at",
    "DROP INDEX outbox_state",
    "DROP INDEX outbox_topic_seq",
    "DROP INDEX outbox_unpublished",
    "ALTER TABLE outbox DROP COLUMN published_at, DROP COLUMN published_partition, DROP COLUMN published_offset, "
    "DROP COLUMN state_key",
)


# The outbox as ``add_events`` writes it (the table itself is created by OUTBOX_DDL in each migration).
_OUTBOX = table("outbox", column("id", Uuid()), column("topic"), column("aggregatetype"), column("aggregateid"),
                column("type"), column("subject"), column("payload", JSONB()))


@dataclass(frozen=True)
class NewEvent:
    """One event to write with ``add_events``: the arguments of ``add_event`` but the source."""

    topic: str
    type: str
    aggregate_type: str
    aggregate_id: str
    payload: dict[str, Any]
    subject: str | None = None
    event_id: uuid.UUID | None = None


async def add_event(
    session: AsyncSession,
    *,
    source: str,
    topic: str,
    type: str,
    aggregate_type: str,
    aggregate_id: str,
    payload: dict[str, Any],
    subject: str | None = None,
    event_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """Write an event in the caller's transaction. It is published only if that transaction commits.

    ``aggregate_id`` is the Kafka key (the case id; the agency id for registry events). ``source`` is kept
    with the row so the relay needs no configuration to build the envelope.

    On a RefNet topic only the contract's types for that topic are accepted (``ValueError`` otherwise), so
    an undocumented event fails where it is written, in every test that reaches it, not at a consumer.
    """
    (written,) = await add_events(session, source=source, events=[NewEvent(
        topic=topic, type=type, aggregate_type=aggregate_type, aggregate_id=aggregate_id, payload=payload,
        subject=subject, event_id=event_id)])
    return written


async def add_events(session: AsyncSession, *, source: str, events: Sequence[NewEvent]) -> list[uuid.UUID]:
    """Write several events in the caller's transaction in one round trip, in the order given: a change
    that several parties hear of costs one trip to the database, not one per party."""
    rows: list[dict[str, Any]] = []
    for event in events:
        if contract.in_contract_namespace(event.topic):
            contract.check_event_type(event.topic, event.type)
        rows.append({"id": event.event_id or uuid.uuid4(), "topic": event.topic,
                     "aggregatetype": event.aggregate_type, "aggregateid": event.aggregate_id,
                     "type": envelope.full_type(event.type), "subject": event.subject,
                     "payload": {"source": source, "data": event.payload}})
    if rows:
        # An executemany: asyncpg sends the rows in one round trip and in order (so ``seq`` follows the list),
        # and the compiled statement is cached. A multi-row VALUES would be compiled anew each time, which
        # costs more than the round trips it saves.
        await session.execute(insert(_OUTBOX), rows)
    return [row["id"] for row in rows]


class BrokerLogReset(ConnectionError):
    """The broker's log went backwards: what it just acknowledged may not be kept."""


def _lock_key(service: str) -> int:
    return lock_key(f"refnet-outbox:{service}")


class OutboxRelay:
    def __init__(
        self,
        *,
        service: str,
        engine: AsyncEngine,
        database_url: str,
        bootstrap: str,
        enable_idempotence: bool = False,
        batch_size: int = 500,
        poll_seconds: float = 1.0,
        partitions: int = 1,
        replication_factor: int = 1,
        min_insync_replicas: int = 1,
    ) -> None:
        self.service = service
        self.engine = engine
        self.dsn = plain_url(database_url)
        self.bootstrap = bootstrap
        self.enable_idempotence = enable_idempotence
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.topic_config = {"min.insync.replicas": str(min_insync_replicas)} if min_insync_replicas > 1 else None
        self.is_leader = False
        self._wake = asyncio.Event()
        self._known_topics: set[str] = set()
        self._last_offsets: dict[tuple[str, int], int] = {}
        self._backoff = 0.1

    async def run(self) -> None:
        """Run until cancelled, surviving database and broker outages."""
        while True:
            try:
                await self._lead()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.is_leader = False
                log.warning("outbox_relay_interrupted", service=self.service, error=type(exc).__name__)
                await asyncio.sleep(min(self._backoff, 5.0))
                self._backoff = min(self._backoff * 2, 5.0)

    async def _lead(self) -> None:
        conn: asyncpg.Connection = await asyncpg.connect(self.dsn, timeout=10)
        try:
            # Only the lock holder publishes: this keeps seq order, hence per-case order, across replicas.
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _lock_key(self.service)):
                await asyncio.sleep(self.poll_seconds)
            self.is_leader = True
            LEADER.labels(self.service, "outbox-relay").set(1)
            await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
            producer = make_producer(self.bootstrap, enable_idempotence=self.enable_idempotence)
            try:
                await producer.start()
                while True:
                    if conn.is_closed():
                        raise ConnectionError("relay's database connection closed")
                    self._wake.clear()
                    await self._drain(producer)
                    self._backoff = 0.1
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(producer.stop(), 5)  # also after a failed start: none left unclosed
        finally:
            self.is_leader = False
            LEADER.labels(self.service, "outbox-relay").set(0)
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def _drain(self, producer: Any) -> None:
        while True:
            published = await self._publish_batch(producer)
            if published < self.batch_size:
                return

    async def _publish_batch(self, producer: Any) -> int:
        async with self.engine.connect() as conn, conn.begin():
            rows = (
                await conn.execute(
                    text(
                        "SELECT seq, id, topic, aggregateid, type, subject, payload, created_at FROM outbox "
                        "ORDER BY seq LIMIT :n FOR UPDATE SKIP LOCKED"
                    ),
                    {"n": self.batch_size},
                )
            ).all()
            if not rows:
                OUTBOX_BACKLOG.labels(self.service).set(0)
                OUTBOX_OLDEST_AGE.labels(self.service).set(0)
                return 0
            OUTBOX_OLDEST_AGE.labels(self.service).set(
                max((datetime.now(UTC) - rows[0].created_at).total_seconds(), 0.0))
            await self._ensure_topics(producer, {r.topic for r in rows})
            await self._send(producer, rows)
            await conn.execute(text("DELETE FROM outbox WHERE seq = ANY(:seqs)"), {"seqs": [r.seq for r in rows]})
            backlog = (await conn.execute(text("SELECT count(*) FROM outbox"))).scalar_one()
            OUTBOX_BACKLOG.labels(self.service).set(max(backlog - len(rows), 0))
        return len(rows)

    async def _ensure_topics(self, producer: Any, topics: set[str]) -> None:
        new = topics - self._known_topics
        if new:
            await ensure_topics(self.bootstrap, new, partitions=self.partitions,
                                replication_factor=self.replication_factor, config=self.topic_config)
            # Learn each new topic's partitions before sending: a batch that sends to a known topic and then to
            # one the producer has no metadata for yet is refused by the embedded broker (NotLeaderForPartition)
            # until the request times out, 15 s in which every later event of the service waits.
            for topic in sorted(new):
                await producer.partitions_for(topic)
            self._known_topics |= new

    async def _send(self, producer: Any, rows: Sequence[Any]) -> None:
        futures = []
        for row in rows:
            stored = row.payload if isinstance(row.payload, dict) else json.loads(row.payload)
            event = envelope.Event(
                id=str(row.id),
                source=stored["source"],
                type=row.type,
                subject=row.subject,
                partition_key=row.aggregateid,
                time=row.created_at.astimezone(UTC) if row.created_at else datetime.now(UTC),
                data=stored["data"],
            )
            key, value, headers = envelope.encode(event)
            # send() only enqueues; aiokafka keeps one in-flight batch per partition, so order holds.
            futures.append(await producer.send(row.topic, value=value, key=key, headers=headers))
        try:
            acks = [await fut for fut in futures]
        except Exception:
            # A topic may have vanished with the broker (memory storage): look again next time.
            self._known_topics.clear()
            raise
        # A partition's offsets only grow. If they went back, the broker lost its log (the embedded broker
        # keeps it in memory) and, with this producer's stale metadata, may have acknowledged writes it did
        # not keep. Keep the rows, start over with a fresh producer, publish again; consumers dedupe.
        regressed = False
        for ack in acks:
            partition = (ack.topic, ack.partition)
            if ack.offset < self._last_offsets.get(partition, -1):
                regressed = True
            self._last_offsets[partition] = ack.offset
        if regressed:
            self._known_topics.clear()
            self._last_offsets.clear()
            raise BrokerLogReset("partition offsets went backwards")
        for row in rows:
            EVENTS_PUBLISHED.labels(self.service, row.topic).inc()
