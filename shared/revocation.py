"""Revoked tokens and suspended agencies, known to every resource server within seconds.

Access tokens are validated locally (``shared.auth``), so on their own a revoked token, or the token of an
agency suspended since, would keep working until it expires (up to 15 minutes). The issuer announces both
on its event topic: ``token.revoked.v1`` (the token's ``jti`` and expiry) and ``agency.suspended.v1``. Every
service process reads that topic into a :class:`RevocationList` that the validator consults on each request.

Why this shape (docs/architecture.md: "a service that needs another's fact keeps a read model built from events"):

- The reader has **no consumer group**: a group would share the partitions among a service's replicas, and
  every replica must know every revocation. It reads the topic from the start at boot (registry events are
  few) and then follows it.
- The list is **in memory** for the check on each request, and **kept in the service's own database**
  (``revocations``) for restarts: a restarted process loads it before it reads the topic, so what it refused
  before it refuses again, even if the broker has lost the topic meanwhile (the issuer's outbox also
  publishes the events again, see ``shared.outbox``). Rows are forgotten once no token they refuse can
  still be valid. No call to the issuer per request.
- A suspended agency's tokens are refused if they were **issued before the suspension** (``iat``); the
  issuer refuses it new tokens from that moment, so a later reactivation only lets newly issued tokens in.
- It is eventually consistent (the relay publishes within about a second). A service is not ready
  (``/readyz``) until its reader has caught up with the topic once.

An issuer that publishes no such events (another OAuth server) leaves the list empty: tokens are then
valid until they expire, as RFC 9068 resource servers usually treat them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from datetime import datetime

import structlog
from aiokafka import AIOKafkaConsumer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared import contract, envelope
from shared.kafka import client_options, end_offsets_of
from shared.loops import stopping

log = structlog.get_logger("refnet.revocation")

TOKEN_REVOKED = envelope.full_type(contract.TOKEN_REVOKED)
AGENCY_SUSPENDED = envelope.full_type(contract.AGENCY_SUSPENDED)
# After this long no token issued before a suspension can still be valid (RFC 9068 tokens here live at most
# 15 minutes, plus clock leeway), so the suspension need not be remembered longer.
_MAX_TOKEN_AGE_SECONDS = 15 * 60 + 120


# Each service keeps what it heard in its own database, so a restarted process refuses what it refused before,
# whatever the broker still holds (added by each service's retention migration, see shared.migration_ops).
REVOCATIONS_DDL = (
    """
CREATE TABLE revocations (
    kind          TEXT NOT NULL,          -- 'token' (subject = jti) or 'agency' (subject = agency id)
    subject       TEXT NOT NULL,
    effective_at  TIMESTAMPTZ,            -- an agency's suspension: tokens issued up to then are refused
    forget_after  TIMESTAMPTZ NOT NULL,   -- no token it could refuse is valid after this
    PRIMARY KEY (kind, subject)
)""",
)
REVOCATIONS_DROP = ("DROP TABLE revocations",)


class RevocationList:
    """Which tokens (by ``jti``) and which agencies' earlier tokens the issuer has withdrawn."""

    def entries(self) -> list[tuple[str, str, float | None, float]]:
        """(kind, subject, effective at, forget after) of everything held, for :class:`RevocationStore`."""
        return ([("token", jti, None, exp + 120) for jti, exp in self._tokens.items()]
                + [("agency", agency, at, at + _MAX_TOKEN_AGE_SECONDS) for agency, at in self._suspended.items()])

    def __init__(self) -> None:
        self._tokens: dict[str, float] = {}  # jti -> expiry (epoch seconds)
        self._suspended: dict[str, float] = {}  # agency id -> moment of the (latest) suspension
        self._last_pruned = 0.0

    def revoke_token(self, jti: str, expires_at: float) -> None:
        self._tokens[jti] = expires_at
        self._prune()

    def suspend_agency(self, agency_id: str, at: float) -> None:
        self._suspended[agency_id] = max(at, self._suspended.get(agency_id, at))
        self._prune()

    def refusal(self, *, jti: str, agency_id: str, issued_at: float | None) -> str | None:
        """Why the token must be refused, or None. A token without ``iat`` counts as issued long ago."""
        if jti in self._tokens:
            return "The token has been revoked."
        suspended_at = self._suspended.get(agency_id)
        if suspended_at is not None and (issued_at is None or issued_at <= suspended_at):
            return "The token's agency was suspended after the token was issued."
        return None

    def _prune(self) -> None:
        now = time.time()
        if now - self._last_pruned < 60:
            return
        self._last_pruned = now
        self._tokens = {jti: exp for jti, exp in self._tokens.items() if exp > now - 120}
        self._suspended = {a: at for a, at in self._suspended.items() if at > now - _MAX_TOKEN_AGE_SECONDS}

    def apply(self, event: envelope.Event) -> tuple[str, str, float | None, float] | None:
        """Take in one event of the issuer's topic; types other than the two above are not about tokens.
        -> what to keep, as in :meth:`entries`, or None."""
        type_ = envelope.full_type(event.type)
        if type_ == TOKEN_REVOKED:
            jti, expires_at = event.data.get("jti"), event.data.get("expires_at")
            if isinstance(jti, str) and jti and isinstance(expires_at, str):
                try:
                    expiry = datetime.fromisoformat(expires_at).timestamp()
                except ValueError:
                    log.warning("revocation_event_unreadable", event_id=event.id)
                    return None
                self.revoke_token(jti, expiry)
                return ("token", jti, None, expiry + 120)
        elif type_ == AGENCY_SUSPENDED:
            agency_id = event.data.get("agency_id")
            if isinstance(agency_id, str) and agency_id:
                at = event.time.timestamp()
                self.suspend_agency(agency_id, at)
                return ("agency", agency_id, at, at + _MAX_TOKEN_AGE_SECONDS)
        return None

    def load(self, entries: Iterable[tuple[str, str, float | None, float]]) -> None:
        for kind, subject, effective_at, forget_after in entries:
            if kind == "token":
                self.revoke_token(subject, forget_after - 120)
            elif kind == "agency" and effective_at is not None:
                self.suspend_agency(subject, effective_at)


class RevocationStore:
    """The service's own copy of its revocation list (table ``revocations``), read at start, added to as
    revocations arrive."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def load(self) -> list[tuple[str, str, float | None, float]]:
        async with self.sessions() as session, session.begin():
            await session.execute(text("DELETE FROM revocations WHERE forget_after < now()"))
            rows = (await session.execute(text(
                "SELECT kind, subject, extract(epoch FROM effective_at) AS effective_at, "
                "extract(epoch FROM forget_after) AS forget_after FROM revocations"))).all()
        return [(r.kind, r.subject, None if r.effective_at is None else float(r.effective_at), float(r.forget_after))
                for r in rows]

    async def keep(self, entries: Iterable[tuple[str, str, float | None, float]]) -> None:
        values = [{"k": kind, "s": subject, "e": effective_at, "f": forget_after}
                  for kind, subject, effective_at, forget_after in entries]
        if not values:
            return
        async with self.sessions() as session, session.begin():
            await session.execute(_KEEP, values)


# A later suspension of the same agency moves its moment on; a token's row never changes.
_KEEP = text(
    "INSERT INTO revocations (kind, subject, effective_at, forget_after) "
    "VALUES (:k, :s, to_timestamp(CAST(:e AS DOUBLE PRECISION)), to_timestamp(:f)) "
    "ON CONFLICT (kind, subject) DO UPDATE SET "
    "effective_at = GREATEST(revocations.effective_at, EXCLUDED.effective_at), "
    "forget_after = GREATEST(revocations.forget_after, EXCLUDED.forget_after)")


class RevocationListener:
    """Follows the issuer's event topic from its start into a :class:`RevocationList` (see the module doc),
    keeping what it learns in ``store`` when one is given."""

    def __init__(self, bootstrap: str, topics: Iterable[str], revocations: RevocationList,
                 store: RevocationStore | None = None) -> None:
        self.bootstrap = bootstrap
        self.topics = list(topics)
        self.revocations = revocations
        self.store = store
        self.events_seen = 0
        self.loaded = store is None  # the stored list is in memory
        self.caught_up = False  # latched, like shared.consumer.EventConsumer.caught_up
        self._positions: dict[tuple[str, int], int] = {}
        self._following = False

    async def check_caught_up(self) -> bool:
        """Latch ``caught_up`` once the stored list is loaded and the topic was read to the ends it has now."""
        if self.caught_up:
            return True
        if not (self.loaded and self._following):
            return False
        ends = await end_offsets_of(self.bootstrap, self.topics)
        if all(self._positions.get((topic, partition), 0) >= end
               for topic, by_partition in ends.items() for partition, end in by_partition.items()):
            self.caught_up = True
        return self.caught_up

    async def run(self) -> None:
        while not self.loaded:
            assert self.store is not None
            try:
                self.revocations.load(await self.store.load())
                self.loaded = True
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if stopping():
                    raise
                log.warning("revocation_store_unreadable", error=type(exc).__name__)
                await asyncio.sleep(1.0)
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if stopping():
                    raise
                log.warning("revocation_listener_interrupted", error=type(exc).__name__)
                await asyncio.sleep(1.0)

    async def _follow(self) -> None:
        # group_id=None: every partition, no offsets committed; "earliest" also restarts from the beginning
        # when a broker that lost its log (the embedded one keeps it in memory) reports our offset out of range.
        consumer = AIOKafkaConsumer(
            *self.topics, bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", metadata_max_age_ms=5000, **client_options(),
        )
        try:
            await consumer.start()  # inside the try: cancelled while starting, it must still be closed
            self._following = True
            while True:
                batch = await consumer.getmany(timeout_ms=1000, max_records=500)
                learned = []
                for tp, records in batch.items():
                    for record in records:
                        try:
                            event = envelope.decode(record.key, record.value, list(record.headers))
                        except envelope.UndecodableEvent:
                            continue  # the services' own consumers dead-letter it; here it is simply not a revocation
                        self.events_seen += 1
                        entry = self.revocations.apply(event)
                        if entry is not None:
                            learned.append(entry)
                    self._positions[(tp.topic, tp.partition)] = records[-1].offset + 1
                if learned and self.store is not None:
                    await self.store.keep(learned)
        finally:
            self._following = False
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), 5)
