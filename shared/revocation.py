"""Revoked tokens and suspended agencies, known to every resource server within seconds.

Access tokens are validated locally (``shared.auth``), so on their own a revoked token, or the token of an
agency suspended since, would keep working until it expires (up to 15 minutes). The issuer announces both
on its event topic: ``token.revoked.v1`` (the token's ``jti`` and expiry) and ``agency.suspended.v1``. Every
service process reads that topic into a :class:`RevocationList` that the validator consults on each request.

Why this shape (ARCHITECTURE.md: "a service that needs another's fact keeps a read model built from events"):

- The reader has **no consumer group**: a group would share the partitions among a service's replicas, and
  every replica must know every revocation. It reads the topic from the start at boot (registry events are
  few) and then follows it.
- The list is **in memory**: it only has to outlive the tokens it refuses, and a restarted process rebuilds
  it from the topic. No database table, no call to the issuer per request.
- A suspended agency's tokens are refused if they were **issued before the suspension** (``iat``); the
  issuer refuses it new tokens from that moment, so a later reactivation only lets newly issued tokens in.
- It is eventually consistent (the relay publishes within about a second). Until the reader has caught up
  after a start, or while the broker is away, the token lifetime remains the bound, as before.

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

from shared import contract, envelope

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

    def apply(self, event: envelope.Event) -> None:
        """Take in one event of the issuer's topic; types other than the two above are not about tokens."""
        type_ = envelope.full_type(event.type)
        if type_ == TOKEN_REVOKED:
            jti, expires_at = event.data.get("jti"), event.data.get("expires_at")
            if isinstance(jti, str) and jti and isinstance(expires_at, str):
                try:
                    self.revoke_token(jti, datetime.fromisoformat(expires_at).timestamp())
                except ValueError:
                    log.warning("revocation_event_unreadable", event_id=event.id)
        elif type_ == AGENCY_SUSPENDED:
            agency_id = event.data.get("agency_id")
            if isinstance(agency_id, str) and agency_id:
                self.suspend_agency(agency_id, event.time.timestamp())


class RevocationListener:
    """Follows the issuer's event topic from its start into a :class:`RevocationList` (see the module doc)."""

    def __init__(self, bootstrap: str, topics: Iterable[str], revocations: RevocationList) -> None:
        self.bootstrap = bootstrap
        self.topics = list(topics)
        self.revocations = revocations
        self.events_seen = 0

    async def run(self) -> None:
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("revocation_listener_interrupted", error=type(exc).__name__)
                await asyncio.sleep(1.0)

    async def _follow(self) -> None:
        # group_id=None: every partition, no offsets committed; "earliest" also restarts from the beginning
        # when a broker that lost its log (the embedded one keeps it in memory) reports our offset out of range.
        consumer = AIOKafkaConsumer(
            *self.topics, bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", metadata_max_age_ms=5000,
        )
        try:
            await consumer.start()  # inside the try: cancelled while starting, it must still be closed
            async for record in consumer:
                try:
                    event = envelope.decode(record.key, record.value, list(record.headers))
                except envelope.UndecodableEvent:
                    continue  # the services' own consumers dead-letter it; here it is simply not a revocation
                self.events_seen += 1
                self.revocations.apply(event)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), 5)
