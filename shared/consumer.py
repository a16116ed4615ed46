"""Idempotent consumer: each event's effect happens once, whatever Kafka redelivers.

For every message: decode the CloudEvent (undecodable -> dead-letter topic at once), then in one database
transaction record ``(consumer, source, id)`` in the inbox and apply the handler; a redelivered event
finds its inbox row and does nothing. Offsets are committed only after the transaction, so a crash in
between means a redelivery, which the inbox turns into a no-op. A handler that keeps failing is retried a
bounded number of times and then dead-lettered with the error in the ``refnet-error`` header, and the
consumer moves on. An outage of our own database is not the message's fault: that is retried until it
passes, never dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from sqlalchemy import text
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared import envelope, tracing
from shared.db import dependency_unreachable
from shared.kafka import client_options, dlq_topic, end_offsets_of, event_ids_at, header, make_producer
from shared.loops import stopping
from shared.observability import CONSUMER_LAG, DLQ_MESSAGES, EVENTS_CONSUMED
from shared.settings import ServiceSettings

log = structlog.get_logger("refnet.consumer")

Handler = Callable[[AsyncSession, envelope.Event], Awaitable[None]]

INBOX_DDL = (
    """
CREATE TABLE inbox (
    consumer     TEXT NOT NULL,
    source       TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, source, event_id)
)""",
    # The last record each partition gave us: on (re)assignment we check it is still there (see below).
    """
CREATE TABLE consumer_marks (
    consumer     TEXT NOT NULL,
    topic        TEXT NOT NULL,
    partition    INTEGER NOT NULL,
    "offset"     BIGINT NOT NULL,
    event_id     TEXT,
    PRIMARY KEY (consumer, topic, partition)
)""",
)
INBOX_DROP = ("DROP TABLE consumer_marks", "DROP TABLE inbox")


def caught_up(ends: Mapping[int, int], applied: Mapping[int, int]) -> bool:
    """Has every partition been applied up to its end (an empty partition trivially)?"""
    return all(applied.get(partition, 0) >= end for partition, end in ends.items())


async def applied_through(sessions: async_sessionmaker[AsyncSession], consumer: str, topic: str) -> dict[int, int]:
    """Per partition of ``topic``: the offset after the last record consumer ``consumer`` applied (from its
    marks, written once a batch's effects are committed); partitions it has applied nothing from are absent."""
    async with sessions() as session:
        rows = (await session.execute(
            text('SELECT partition, "offset" FROM consumer_marks WHERE consumer = :c AND topic = :t'),
            {"c": consumer, "t": topic},
        )).all()
    return {int(r.partition): int(r.offset) + 1 for r in rows}


def _header(record: ConsumerRecord[Any, Any], name: str) -> str | None:
    return header(record.headers, name)


class _VerifyPositions(ConsumerRebalanceListener):
    def __init__(self, owner: EventConsumer, consumer: AIOKafkaConsumer) -> None:
        self.owner = owner
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        # Nothing fetched for these is applied until the main loop has checked where to resume.
        self.owner.unverified |= set(assigned)


class _LogReset(Exception):
    """The partitions we were given are not the log we left; restart the client from offset 0."""


class PoisonEvent(Exception):
    """A handler's way to say: this event can never be applied; dead-letter it now, do not retry."""


def _infrastructure_error(exc: BaseException) -> bool:
    if isinstance(exc, (OperationalError, InterfaceError, ConnectionError, OSError, TimeoutError)):
        return True
    # Also PostgreSQL shutting down or starting up (asyncpg's errors, under SQLAlchemy's DBAPIError): a restart
    # of our database is an outage to wait out, never a reason to dead-letter the event.
    return dependency_unreachable(exc)


def _describe(exc: BaseException) -> str:
    first_line = (str(exc).splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first_line}"[:500]


class EventConsumer:
    """Consumes ``topics`` as consumer group ``name``, dispatching by CloudEvents type to ``handlers``.

    Types without a handler are acknowledged and skipped: topics carry more types than one reader needs.
    """

    def __init__(
        self,
        *,
        service: str,
        name: str,
        topics: list[str],
        handlers: Mapping[str, Handler],
        sessions: async_sessionmaker[AsyncSession],
        bootstrap: str,
        max_attempts: int = 5,
        retry_backoff_seconds: float = 0.2,
        enable_idempotence: bool = False,
        on_batch_applied: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.service = service
        self.name = name
        self.topics = topics
        self.handlers = {envelope.full_type(t): h for t, h in handlers.items()}
        self.sessions = sessions
        self.bootstrap = bootstrap
        self.max_attempts = max_attempts
        self.retry_backoff_seconds = retry_backoff_seconds
        self.enable_idempotence = enable_idempotence
        # Fault-injection point for tests: runs after the batch's effects commit, before its mark and offset.
        self.on_batch_applied = on_batch_applied
        self.running = False
        self.unverified: set[TopicPartition] = set()
        # Readiness (shared.app): ``settled`` once this client has joined its group and checked where to resume;
        # ``caught_up`` once the group has applied everything the broker held at some moment since. It stays
        # set: a consumer that has caught up once is serving, whatever the broker does later.
        self.settled = False
        self.caught_up = False

    @classmethod
    def from_settings(cls, settings: ServiceSettings, sessions: async_sessionmaker[AsyncSession], *, name: str,
                      topics: list[str], handlers: Mapping[str, Handler],
                      on_batch_applied: Callable[[], Awaitable[None]] | None = None) -> EventConsumer:
        """A consumer as every service configures one: its broker, retries and dead-letter producer from the
        service's settings (REFNET_CONSUMER_*, REFNET_KAFKA_*)."""
        return cls(service=settings.service_name, name=name, topics=topics, handlers=handlers, sessions=sessions,
                   bootstrap=settings.kafka_bootstrap, max_attempts=settings.consumer_max_attempts,
                   retry_backoff_seconds=settings.consumer_retry_backoff_seconds,
                   # The dead-letter producer: idempotent where the broker allows it, like every other producer.
                   enable_idempotence=settings.kafka_enable_idempotence, on_batch_applied=on_batch_applied)

    async def run(self) -> None:
        while True:
            try:
                await self._consume()
            except asyncio.CancelledError:
                raise
            except _LogReset:
                continue
            except Exception as exc:
                if stopping():
                    raise
                self.running = False
                log.warning("consumer_interrupted", consumer=self.name, error=type(exc).__name__)
                await asyncio.sleep(1.0)

    async def _consume(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.name,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=500,
            session_timeout_ms=10000,  # a dead consumer's partitions move on within 10 s
            # A topic created after we joined (its first producer came later) must be assigned within
            # seconds, not at the next 5-minute metadata refresh: until then its events would sit unread.
            metadata_max_age_ms=5000,
            heartbeat_interval_ms=3000,
            **client_options(),
        )
        consumer.subscribe(self.topics, listener=_VerifyPositions(self, consumer))
        producer = make_producer(self.bootstrap, enable_idempotence=self.enable_idempotence)
        try:
            await consumer.start()
            await producer.start()
            self.running = True
            polls = 0
            while True:
                batch = await consumer.getmany(timeout_ms=1000, max_records=500)
                polls += 1
                if self.unverified:
                    pending, self.unverified = self.unverified & consumer.assignment(), set()
                    reset = await self.verify_positions(pending)
                    if reset:
                        # Start those partitions over from offset 0 with a fresh client: simpler and surer
                        # than repositioning a live one. Nothing fetched so far has been applied.
                        await asyncio.wait_for(consumer.commit({tp: 0 for tp in reset}), 15)
                        raise _LogReset
                # Settled once positions are checked: with partitions assigned, or after a few polls without
                # (another replica of the group holds them all).
                self.settled = self.settled or bool(consumer.assignment()) or polls >= 3
                for tp, records in batch.items():
                    for record in records:
                        with tracing.consuming(self.name, tp.topic, tp.partition, record.offset, record.headers):
                            await self._process(record, producer)
                    self._record_lag(consumer, tp, records[-1].offset + 1)
                if batch:
                    if self.on_batch_applied is not None:
                        await self.on_batch_applied()
                    await self._mark(batch)
                    # A commit that cannot complete (its topic vanished with the broker) must not hang us:
                    # give up, rejoin, and let the position check decide where to resume.
                    await asyncio.wait_for(
                        consumer.commit({tp: records[-1].offset + 1 for tp, records in batch.items()}), 15
                    )
        finally:
            self.running = False
            self.settled = False
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 5)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), 5)

    async def applied_what_the_broker_holds(self, seconds: float = 3.0) -> bool:
        """Read-your-writes for a refusal: wait, at most ``seconds``, until the group (this replica or another:
        the marks are shared) has applied every event the broker holds now. False when that did not happen in
        time or the broker could not be asked; the caller then decides on what it has."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        try:
            ends = await asyncio.wait_for(end_offsets_of(self.bootstrap, self.topics, timeout=seconds), seconds)
        except Exception as exc:  # any failure to ask means "not known"
            log.info("consumer_position_unknown", consumer=self.name, error=type(exc).__name__)
            return False
        while True:
            if all([caught_up(ends.get(topic, {}), await applied_through(self.sessions, self.name, topic))
                    for topic in self.topics]):
                return True
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.05)

    async def check_caught_up(self) -> bool:
        """Latch ``caught_up`` once the group's applied positions reach the ends the broker reports now."""
        if self.caught_up:
            return True
        if not self.settled:
            return False
        ends = await end_offsets_of(self.bootstrap, self.topics)
        for topic in self.topics:
            if not caught_up(ends.get(topic, {}), await applied_through(self.sessions, self.name, topic)):
                return False
        self.caught_up = True
        log.info("consumer_caught_up", consumer=self.name)
        return True

    async def _mark(self, batch: Mapping[TopicPartition, list[ConsumerRecord[Any, Any]]]) -> None:
        async with self.sessions() as session, session.begin():
            for tp, records in batch.items():
                last = records[-1]
                await session.execute(
                    text(
                        'INSERT INTO consumer_marks (consumer, topic, partition, "offset", event_id) '
                        "VALUES (:c, :t, :p, :o, :e) ON CONFLICT (consumer, topic, partition) "
                        'DO UPDATE SET "offset" = EXCLUDED."offset", event_id = EXCLUDED.event_id'
                    ),
                    {"c": self.name, "t": tp.topic, "p": tp.partition, "o": last.offset,
                     "e": _header(last, "ce_id")},
                )

    async def _forget_mark(self, tp: TopicPartition) -> None:
        async with self.sessions() as session, session.begin():
            await session.execute(
                text("DELETE FROM consumer_marks WHERE consumer = :c AND topic = :t AND partition = :p"),
                {"c": self.name, "t": tp.topic, "p": tp.partition},
            )

    async def verify_positions(self, assigned: set[TopicPartition]) -> set[TopicPartition]:
        """-> the partitions whose log is not the one we left: they must be read again from the start.

        A broker that restarted empty (the embedded broker keeps topics in memory) or a partition deleted
        and recreated would otherwise have us resume at an offset of the old log, silently skipping every
        new event before it. We check that the last record we applied is still at its offset with the same
        event id. The inbox makes reading a partition again harmless.
        """
        if not assigned:
            return set()
        async with self.sessions() as session:
            rows = (await session.execute(
                text('SELECT topic, partition, "offset", event_id FROM consumer_marks WHERE consumer = :c'),
                {"c": self.name},
            )).all()
        marks = {TopicPartition(r.topic, r.partition): (r.offset, r.event_id) for r in rows}
        to_check = {tp: marks[tp] for tp in assigned if tp in marks}
        if not to_check:
            return set()
        found = await event_ids_at(self.bootstrap, {tp: offset for tp, (offset, _) in to_check.items()})
        reset = {tp for tp, (_, event_id) in to_check.items() if found[tp] != event_id}
        for tp in sorted(reset):
            log.warning("partition_reset_detected", consumer=self.name, topic=tp.topic, partition=tp.partition)
        for tp in reset:
            await self._forget_mark(tp)
        return reset

    def _record_lag(self, consumer: AIOKafkaConsumer, tp: TopicPartition, position: int) -> None:
        highwater = consumer.highwater(tp)
        if highwater is not None:
            CONSUMER_LAG.labels(self.service, self.name, tp.topic, str(tp.partition)).set(
                max(highwater - position, 0))

    async def _process(self, record: ConsumerRecord[Any, Any], producer: Any) -> None:
        try:
            event = envelope.decode(record.key, record.value, list(record.headers))
        except envelope.UndecodableEvent as exc:
            await self._dead_letter(record, producer, f"undecodable: {exc}")
            return
        handler = self.handlers.get(event.type)
        if handler is None:
            return
        attempt = 0
        while True:
            attempt += 1
            try:
                applied = await self._apply(event, handler)
                EVENTS_CONSUMED.labels(self.service, self.name, "applied" if applied else "duplicate").inc()
                return
            except PoisonEvent as exc:
                await self._dead_letter(record, producer, _describe(exc))
                return
            except Exception as exc:
                if stopping():
                    raise
                if _infrastructure_error(exc):
                    log.warning("consumer_waiting_for_database", consumer=self.name, error=type(exc).__name__)
                    await asyncio.sleep(min(self.retry_backoff_seconds * 2 ** min(attempt, 5), 5.0))
                    attempt = 0
                    continue
                if attempt >= self.max_attempts:
                    await self._dead_letter(record, producer, _describe(exc))
                    return
                await asyncio.sleep(self.retry_backoff_seconds * attempt)

    async def _apply(self, event: envelope.Event, handler: Handler) -> bool:
        async with self.sessions() as session, session.begin():
            inserted = (
                await session.execute(
                    text(
                        "INSERT INTO inbox (consumer, source, event_id) VALUES (:c, :s, :i) "
                        "ON CONFLICT DO NOTHING RETURNING 1"
                    ),
                    {"c": self.name, "s": event.source, "i": event.id},
                )
            ).first()
            if inserted is None:
                return False
            await handler(session, event)
        return True

    async def _dead_letter(self, record: ConsumerRecord[Any, Any], producer: Any, error: str) -> None:
        headers = [*list(record.headers), (envelope.ERROR_HEADER, error.encode()),
                   ("refnet-consumer", self.name.encode())]
        await producer.send_and_wait(dlq_topic(record.topic), value=record.value, key=record.key,
                                     headers=headers)
        DLQ_MESSAGES.labels(self.service, self.name, record.topic).inc()
        tracing.outcome("dead-lettered", failed=True)
        EVENTS_CONSUMED.labels(self.service, self.name, "dead_lettered").inc()
        # The error text may quote the message; the log gets only where and what kind.
        log.warning("event_dead_lettered", consumer=self.name, topic=record.topic, partition=record.partition,
                    offset=record.offset, error=error.split(":", 1)[0])
