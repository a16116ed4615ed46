"""Transactional outbox: a state change and its event are written in one transaction; a relay publishes.

The relay is the only way an event reaches Kafka. One relay per service holds a PostgreSQL advisory lock
(the others wait as hot standbys), so rows go out in ``seq`` order and one case's events stay in order.
It wakes on ``NOTIFY outbox`` (sent by a trigger when rows are inserted) and polls as a fallback. A row
counts as published once the broker acknowledged it with ``acks=all``; while the broker is away rows wait.
Publishing is at-least-once: consumers deduplicate (see ``shared.consumer``).

The outbox is also the durable record of what the service said. A published row is kept, with the partition
and offset the broker gave it, for ``retention`` (then pruned in bounded batches; the newest event of each
entity is kept for ever, see ``shared.contract.state_key``). At start and every ``reconcile_seconds`` the
relay checks that the broker still holds the last row it published on each partition; where a topic is
missing, a log is shorter than recorded, or a recorded offset holds another event, the broker lost what it
had acknowledged (an embedded broker restarted, a cluster lost or replaced its log): every retained row of
that topic is published again, in its original order and with its original CloudEvents ``id``, so every
consumer, and every case system that dedupes on ``id``, ends up with each event once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import structlog
from aiokafka import TopicPartition
from sqlalchemy import Uuid, column, insert, table, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from shared import contract, envelope, tracing
from shared.db import connect_args, plain_url
from shared.kafka import end_offsets_of, ensure_topics, event_ids_at, make_producer
from shared.leader import lock_key
from shared.loops import stopping
from shared.observability import EVENTS_PUBLISHED, LEADER
from shared.topics import DELIVERY_PREFIX

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
    # Per partition, the last row the broker acknowledged: what the relay checks the broker still holds.
    """
CREATE TABLE outbox_marks (
    topic      TEXT NOT NULL,
    partition  INTEGER NOT NULL,
    "offset"   BIGINT NOT NULL,
    event_id   TEXT NOT NULL,
    PRIMARY KEY (topic, partition)
)""",
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
    "DROP TABLE outbox_marks",
    "DROP INDEX outbox_published_at",
    "DROP INDEX outbox_state",
    "DROP INDEX outbox_topic_seq",
    "DROP INDEX outbox_unpublished",
    "ALTER TABLE outbox DROP COLUMN published_at, DROP COLUMN published_partition, DROP COLUMN published_offset, "
    "DROP COLUMN state_key",
)


# The outbox as ``add_events`` writes it (the table itself is created by OUTBOX_DDL in each migration).
_OUTBOX = table("outbox", column("id", Uuid()), column("topic"), column("aggregatetype"), column("aggregateid"),
                column("type"), column("subject"), column("payload", JSONB()), column("state_key"))


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
    traced = tracing.carrier()  # the writer's traceparent, for the relay's span (empty when not tracing)
    for event in events:
        if contract.in_contract_namespace(event.topic):
            contract.check_event_type(event.topic, event.type)
        rows.append({"id": event.event_id or uuid.uuid4(), "topic": event.topic,
                     "aggregatetype": event.aggregate_type, "aggregateid": event.aggregate_id,
                     "type": envelope.full_type(event.type), "subject": event.subject,
                     "payload": {"source": source, "data": event.payload, **traced},
                     "state_key": contract.state_key(event.type, event.payload)
                     if contract.in_contract_namespace(event.topic) else None})
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


async def mark_for_republish(conn: AsyncConnection, *, reason: str, topic: str | None = None,
                             since: datetime | None = None) -> dict[str, int]:
    """Make retained rows (of ``topic``, written at or after ``since``) unpublished again, so the relay publishes
    them again in ``seq`` order with their ids; -> rows per topic. Runs in the caller's transaction; safe for
    every consumer, which dedupes on the event id."""
    rows = (await conn.execute(_MARK_FOR_REPUBLISH, {"topic": topic, "since": since})).all()
    counts = {row.topic: int(row.n) for row in rows}
    for name, n in counts.items():
        await conn.execute(text('DELETE FROM outbox_marks WHERE topic = :t'), {"t": name})
        await conn.execute(text("INSERT INTO outbox_republished (topic, reason, rows) VALUES (:t, :r, :n)"),
                           {"t": name, "r": reason, "n": n})
    if counts:
        await conn.execute(text(f"NOTIFY {NOTIFY_CHANNEL}"))
    return counts


@dataclass(frozen=True)
class OutboxSummary:
    """What an operator asks of a service's outbox (``/readyz``, ``refnet status``)."""

    retained: int
    unpublished: int
    last_republish: dict[str, Any] | None
    oldest_unpublished_seconds: float = 0.0  # for the gauge; not in the JSON, which ``refnet status`` shows

    def as_json(self) -> dict[str, Any]:
        return {"retained": self.retained, "unpublished": self.unpublished, "last_republish": self.last_republish}


async def outbox_summary(engine: AsyncEngine) -> OutboxSummary:
    async with engine.connect() as conn:
        counts = (await conn.execute(text(
            "SELECT count(*) FILTER (WHERE published_at IS NOT NULL) AS retained, "
            "count(*) FILTER (WHERE published_at IS NULL) AS unpublished, "
            "coalesce(extract(epoch FROM now() - min(created_at) FILTER (WHERE published_at IS NULL)), 0) "
            "AS oldest FROM outbox"))).one()
        last = (await conn.execute(text(
            "SELECT topic, reason, rows, at FROM outbox_republished ORDER BY id DESC LIMIT 1"))).first()
    return OutboxSummary(
        retained=int(counts.retained), unpublished=int(counts.unpublished),
        oldest_unpublished_seconds=max(float(counts.oldest), 0.0),
        last_republish=None if last is None else {"topic": last.topic, "reason": last.reason, "rows": int(last.rows),
                                                 "at": last.at.astimezone(UTC).isoformat()})


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
        retention: timedelta | None = None,
        reconcile_seconds: float = 15.0,
        prune_batch: int = 1000,
        delivery_partitions: int = 1,
        delivery_retention_ms: int | None = None,
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
        self.retention = retention  # None: keep published rows for ever (the embedded stack)
        self.reconcile_seconds = reconcile_seconds
        self.prune_batch = prune_batch
        # Per-agency delivery topics (only referral writes them) get their prescribed partitions and retention.
        self.delivery_partitions = delivery_partitions
        self.delivery_config = {**(self.topic_config or {}),
                                **({"retention.ms": str(delivery_retention_ms)} if delivery_retention_ms else {})}
        self.is_leader = False
        # Set once this replica knows its part at start: it leads and has checked the broker against its record
        # and published what was waiting, or another replica leads. Readiness waits for it.
        self.settled = False
        self._wake = asyncio.Event()
        self._known_topics: set[str] = set()
        self._last_offsets: dict[tuple[str, int], int] = {}
        self._backoff = 0.1
        self._next_reconcile = 0.0

    async def run(self) -> None:
        """Run until cancelled, surviving database and broker outages."""
        while True:
            try:
                await self._lead()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if stopping():
                    raise
                self.is_leader = False
                log.warning("outbox_relay_interrupted", service=self.service, error=type(exc).__name__)
                await asyncio.sleep(min(self._backoff, 5.0))
                self._backoff = min(self._backoff * 2, 5.0)

    async def _lead(self) -> None:
        dsn, args = connect_args(self.dsn)  # TLS as the pooled engine has it (shared.db)
        conn: asyncpg.Connection = await asyncpg.connect(dsn, timeout=10, **args)
        try:
            # Only the lock holder publishes: this keeps seq order, hence per-case order, across replicas.
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _lock_key(self.service)):
                self.settled = True  # another replica leads and answers for what was published
                await asyncio.sleep(self.poll_seconds)
            self.is_leader = True
            LEADER.labels(self.service, "outbox-relay").set(1)
            await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
            producer = make_producer(self.bootstrap, enable_idempotence=self.enable_idempotence)
            self._next_reconcile = 0.0  # a new leader (or a new producer after a log reset) looks first
            try:
                await producer.start()
                while True:
                    if conn.is_closed():
                        raise ConnectionError("relay's database connection closed")
                    self._wake.clear()
                    if time.monotonic() >= self._next_reconcile:
                        if await self.reconcile():
                            # This producer's view of the broker is of the log that was lost (the embedded
                            # broker acknowledges writes sent with such stale metadata and drops them): publish
                            # again with a fresh one.
                            raise BrokerLogReset("the broker no longer holds what it acknowledged")
                        await self.prune()
                        self._next_reconcile = time.monotonic() + self.reconcile_seconds
                    await self._drain(producer)
                    self.settled = True
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

    async def reconcile(self) -> dict[str, str]:
        """Check the broker still holds the last event published on each partition; where it does not, mark the
        topic's retained rows for publishing again. -> {topic: why} for the topics marked."""
        async with self.engine.connect() as conn:
            marks = (await conn.execute(text('SELECT topic, partition, "offset", event_id FROM outbox_marks'))).all()
        if not marks:
            return {}
        ends = await end_offsets_of(self.bootstrap, {m.topic for m in marks})
        lost: dict[str, str] = {}
        to_read: dict[TopicPartition, tuple[int, str]] = {}
        for mark in marks:
            end = ends.get(mark.topic, {}).get(mark.partition)
            if mark.topic not in ends:
                lost[mark.topic] = "topic missing"
            elif end is None:
                lost[mark.topic] = "partition missing"
            elif end <= mark.offset:
                lost[mark.topic] = "log shorter than recorded"
            else:
                to_read[TopicPartition(mark.topic, mark.partition)] = (mark.offset, mark.event_id)
        found = await event_ids_at(self.bootstrap, {tp: offset for tp, (offset, _) in to_read.items()})
        for tp, (_, event_id) in to_read.items():
            if found[tp] != event_id:
                lost.setdefault(tp.topic, "recorded offset holds another event")
        if lost:
            async with self.engine.begin() as conn:
                for topic, reason in sorted(lost.items()):
                    counts = await mark_for_republish(conn, reason=f"broker lost its log: {reason}", topic=topic)
                    log.warning("outbox_republishing", service=self.service, topic=topic, reason=reason,
                                rows=counts.get(topic, 0))
            self._known_topics -= set(lost)
            self._last_offsets = {p: o for p, o in self._last_offsets.items() if p[0] not in lost}  # numbered anew
        return lost

    async def prune(self) -> int:
        """Delete published rows older than the retention, in bounded batches, keeping each entity's newest."""
        if self.retention is None:
            return 0
        pruned = 0
        for _ in range(10):  # bounded work per look; the next look goes on
            async with self.engine.begin() as conn:
                deleted = (await conn.execute(_PRUNE, {"keep": self.retention.total_seconds(),
                                                       "n": self.prune_batch})).rowcount
            pruned += deleted
            if deleted < self.prune_batch:
                break
        if pruned:
            log.info("outbox_pruned", service=self.service, rows=pruned)
        return pruned

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
                        "WHERE published_at IS NULL ORDER BY seq LIMIT :n FOR UPDATE SKIP LOCKED"
                    ),
                    {"n": self.batch_size},
                )
            ).all()
            if not rows:
                return 0
            await self._ensure_topics(producer, {r.topic for r in rows})
            with tracing.Publishing() as spans:  # a span per event, ended when acknowledged (if tracing)
                acks = await self._send(producer, rows, spans)
            await conn.execute(_RECORD_PUBLISHED, {
                "seqs": [r.seq for r in rows], "partitions": [a.partition for a in acks],
                "offsets": [a.offset for a in acks]})
            last: dict[tuple[str, int], tuple[int, str]] = {}
            for row, ack in zip(rows, acks, strict=True):
                last[(ack.topic, ack.partition)] = (ack.offset, str(row.id))
            await conn.execute(_RECORD_MARK, [
                {"t": topic, "p": partition, "o": offset, "e": event_id}
                for (topic, partition), (offset, event_id) in last.items()])
        return len(rows)

    async def _ensure_topics(self, producer: Any, topics: set[str]) -> None:
        new = topics - self._known_topics
        if new:
            delivery = {t for t in new if t.startswith(DELIVERY_PREFIX)}
            await ensure_topics(self.bootstrap, new - delivery, partitions=self.partitions,
                                replication_factor=self.replication_factor, config=self.topic_config)
            await ensure_topics(self.bootstrap, delivery, partitions=self.delivery_partitions,
                                replication_factor=self.replication_factor, config=self.delivery_config or None)
            # Learn each new topic's partitions before sending: a batch that sends to a known topic and then to
            # one the producer has no metadata for yet is refused by the embedded broker (NotLeaderForPartition)
            # until the request times out, 15 s in which every later event of the service waits.
            for topic in sorted(new):
                await producer.partitions_for(topic)
            self._known_topics |= new

    async def _send(self, producer: Any, rows: Sequence[Any], spans: tracing.Publishing | None = None) -> list[Any]:
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
            if spans is not None:
                headers += spans.start(row.topic, event.id, row.type, stored.get(tracing.TRACEPARENT))
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
        # not keep. Keep the rows unpublished, start over with a fresh producer (which looks at the broker
        # first and publishes again what it lost); consumers dedupe.
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
        return acks


_MARK_FOR_REPUBLISH = text(
    "WITH again AS (UPDATE outbox SET published_at = NULL, published_partition = NULL, published_offset = NULL"
    " WHERE published_at IS NOT NULL AND (CAST(:topic AS TEXT) IS NULL OR topic = :topic)"
    " AND (CAST(:since AS TIMESTAMPTZ) IS NULL OR created_at >= :since) RETURNING topic)"
    " SELECT topic, count(*) AS n FROM again GROUP BY topic")
_RECORD_PUBLISHED = text(
    "UPDATE outbox SET published_at = now(), published_partition = acked.partition, published_offset = acked.off "
    "FROM unnest(CAST(:seqs AS BIGINT[]), CAST(:partitions AS INTEGER[]), CAST(:offsets AS BIGINT[])) "
    "AS acked(seq, partition, off) WHERE outbox.seq = acked.seq")
_RECORD_MARK = text(
    'INSERT INTO outbox_marks (topic, partition, "offset", event_id) VALUES (:t, :p, :o, :e) '
    'ON CONFLICT (topic, partition) DO UPDATE SET "offset" = EXCLUDED."offset", event_id = EXCLUDED.event_id')
# Published and older than the retention, unless it is the newest event of its entity (kept for ever).
_PRUNE = text(
    "DELETE FROM outbox WHERE seq IN ("
    " SELECT old.seq FROM outbox old"
    " WHERE old.published_at < now() - make_interval(secs => :keep)"
    "   AND (old.state_key IS NULL OR EXISTS (SELECT 1 FROM outbox newer WHERE newer.topic = old.topic"
    "        AND newer.state_key = old.state_key AND newer.seq > old.seq))"
    " ORDER BY old.seq LIMIT :n)")
