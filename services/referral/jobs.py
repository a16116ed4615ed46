"""referral's background loops, each supervised and surviving outages:

- ``DeadlineScheduler``: flags referrals past their acknowledgement deadline (one replica leads);
- ``RegistryCatchUp``: says when the read model of the registry has caught up after start-up (then stops);
- ``WebhookDispatcher``: delivers the agencies' referral events to their webhooks (one replica leads);
- ``seal_clear_text``: seals free text and webhook secrets kept in clear before an upgrade (once, then stops).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from services.referral import store
from services.referral.domain import Pathway, Priority
from services.referral.events import REGISTRY_EVENTS
from services.referral.service import Referrals
from services.referral.service.subscriptions import seal_clear_secrets
from services.referral.service.views import timestamp
from services.referral.store import DeliveryRow, FeedRow, SubscriptionRow
from services.referral.webhooks import signed_headers, signing_secrets
from shared import leader
from shared.consumer import applied_through, caught_up
from shared.crypto import Keyring, KeyUnavailable, Undecryptable
from shared.db import unit_of_work
from shared.kafka import end_offsets
from shared.leader import Leadership, keep_alive
from shared.loops import Backoff, stopping, until_done
from shared.observability import REFERRALS_OVERDUE
from shared.outbound import OutboundPolicy, call, guarded_client

log = structlog.get_logger("refnet.referral.jobs")

DEADLINES_LOCK_KEY = leader.lock_key("refnet-referral:deadlines")
WEBHOOKS_LOCK_KEY = leader.lock_key("refnet-referral:webhooks")


# --- deadlines ----------------------------------------------------------------------------------------------
#
# The deadline scheduler: flags referrals still ``requested`` past their ``due_at``, once each.
#
# Every replica runs one; only the holder of a PostgreSQL advisory lock works (the others wait as hot
# standbys), and even two workers at once would not flag a referral twice: ``flag_overdue`` claims rows under
# lock and sets ``overdue_at`` in the same transaction as the ``referral.overdue.v1`` event. The clock is the
# use cases' clock, injectable so tests need not wait days.


class DeadlineScheduler:
    def __init__(self, referrals: Referrals, engine: AsyncEngine, *, interval_seconds: float = 30.0,
                 lock_key: int = DEADLINES_LOCK_KEY) -> None:
        self.referrals = referrals
        self.interval_seconds = interval_seconds
        self.leadership = Leadership(engine=engine, service="referral", task="deadline-scheduler", key=lock_key,
                                     retry_seconds=interval_seconds)

    @property
    def is_leader(self) -> bool:
        return self.leadership.is_leader

    async def tick(self) -> int:
        """One pass: flag what is overdue now, and export how many are overdue and still unanswered."""
        flagged = await self.referrals.flag_overdue()
        counts = await self.referrals.overdue_counts()
        # Every pathway and priority, 0 when none: a series that exists only while something is overdue
        # could not tell "none overdue" from "no scheduler" (which the absent() alert catches).
        for pathway in Pathway:
            for priority in Priority:
                REFERRALS_OVERDUE.labels(str(pathway), str(priority)).set(counts.get((str(pathway), str(priority)), 0))
        return flagged

    async def run(self) -> None:
        """Run until cancelled; only while this replica leads, surviving database outages."""
        await self.leadership.run(self._work)

    async def _work(self, conn: AsyncConnection) -> None:
        while True:
            await self.tick()
            await keep_alive(conn)
            await asyncio.sleep(self.interval_seconds)


# --- the registry read model after start-up -----------------------------------------------------------------
#
# Whether referral's read model of the registry is loaded yet.
#
# The broker knows agencies and services from the registry's events (docs/architecture.md: a local read model,
# eventually consistent). Right after a replica starts, before its consumer has read what the registry had
# published, a recipient it does not know may simply not have arrived yet: that is "try again shortly" (503 with
# Retry-After), not "no such agency" (422). The read model counts as loaded once the consumer's applied
# positions reach the ends the registry topic had when we first looked; from then on an unknown recipient is
# unknown. A registry topic still empty when we look is looked at again for a while (`empty_grace_seconds`):
# on a fresh stack the registry starts beside us and publishes its first agencies seconds later.


class RegistryCatchUp:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, bootstrap: str, consumer: str,
                 topic: str = REGISTRY_EVENTS, poll_seconds: float = 0.5, empty_grace_seconds: float = 15.0) -> None:
        self.sessions = sessions
        self.bootstrap = bootstrap
        self.consumer = consumer
        self.topic = topic
        self.poll_seconds = poll_seconds
        self.loaded = False
        self._ends: dict[int, int] = {}
        self._empty_until = time.monotonic() + empty_grace_seconds

    async def check(self) -> bool:
        """One look: the topic's ends (looked up until they are not all zero), then the consumer's positions."""
        if self.loaded:
            return True
        if not any(self._ends.values()):
            self._ends = await end_offsets(self.bootstrap, self.topic)
            if not any(self._ends.values()) and time.monotonic() < self._empty_until:
                return False
        if caught_up(self._ends, await applied_through(self.sessions, self.consumer, self.topic)):
            self.loaded = True
            log.info("registry_read_model_loaded", events=sum(self._ends.values()))
        return self.loaded

    async def run(self) -> None:
        """Look until loaded, through broker and database outages, then stop."""
        while not self.loaded:
            try:
                await self.check()
            except Exception as exc:  # the broker or the database is away: look again later
                if stopping():
                    raise
                log.warning("registry_catchup_check_failed", error=type(exc).__name__)
            if not self.loaded:
                await asyncio.sleep(self.poll_seconds)


# --- webhook delivery ---------------------------------------------------------------------------------------
#
# Webhook delivery to case systems, signed per the Standard Webhooks spec.
#
# A subscription belongs to one agency and receives the referral events that agency is party to (the
# ``referral_feed`` rows naming it as sender or recipient), in feed order, from the moment it was created.
# Each subscription has its own cursor and its own delivery task, so a slow or failing receiver only delays
# itself; an agency has at most a few deliveries in flight, so its receivers cannot take every slot from the
# others'. URLs are checked when subscribed and every address when connecting (shared.outbound), and every
# attempt is bounded in time and in bytes read. A failed attempt is retried with exponential backoff and
# jitter; after ``max_failures`` consecutive failures the subscription is disabled (the agency can reactivate
# it, and it resumes where it stopped). Every attempt is logged in ``webhook_deliveries`` (status code, error
# class, duration: never a body).
#
# Signing secrets are kept wrapped under referral's master key (shared/crypto.py), never in clear; a rotation
# gives a new secret while the old one keeps signing for a grace period (every delivery then carries both
# signatures, as Standard Webhooks allows), so a receiver can switch without losing an event.
#
# Delivery is at-least-once: a receiver deduplicates on ``webhook-id``, which is the event id and the same on
# every retry. One dispatcher leads across replicas (PostgreSQL advisory lock), so replicas do not race.


class WebhookDispatcher:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], engine: AsyncEngine, *, source: str,
                 policy: OutboundPolicy, transport: httpx.AsyncBaseTransport | None = None,
                 poll_seconds: float = 1.0, backoff_base_seconds: float = 2.0,
                 backoff_max_seconds: float = 3600.0, max_failures: int = 12, max_parallel: int = 50,
                 max_parallel_per_agency: int = 4, lock_key: int = WEBHOOKS_LOCK_KEY,
                 keyring: Keyring | None = None) -> None:
        """``transport`` replaces the guarded network under deliveries (tests only)."""
        self.keyring = keyring
        self.sessions = sessions
        self.engine = engine
        self.source = source
        self.policy = policy
        self.transport = transport
        self.poll_seconds = poll_seconds
        self.backoff_base_seconds = backoff_base_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self.max_failures = max_failures
        self.leadership = Leadership(engine=engine, service="referral", task="webhook-dispatcher", key=lock_key,
                                     retry_seconds=max(poll_seconds, 1.0))
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._parallel = asyncio.Semaphore(max_parallel)
        self.max_parallel_per_agency = max_parallel_per_agency
        self._agency_slots: dict[str, tuple[asyncio.Semaphore, int]] = {}  # semaphore, tasks holding or waiting
        self._http: httpx.AsyncClient | None = None

    def backoff(self, failures: int) -> float:
        return Backoff(self.backoff_base_seconds, self.backoff_max_seconds).delay(failures)

    @property
    def is_leader(self) -> bool:
        return self.leadership.is_leader

    async def run(self) -> None:
        """Run until cancelled; only while this replica leads, surviving database outages."""
        await self.leadership.run(self._work)

    async def _work(self, conn: AsyncConnection) -> None:
        self._http = guarded_client(self.policy, self.transport)
        try:
            while True:
                await self.dispatch_once()
                await keep_alive(conn)
                await asyncio.sleep(self.poll_seconds)
        finally:
            tasks = list(self._in_flight.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._in_flight.clear()
            await self._http.aclose()
            self._http = None

    async def dispatch_once(self) -> None:
        """Start a delivery task for every due subscription with events waiting (one task each)."""
        now = datetime.now(UTC)
        async with self.sessions() as session:
            due = await store.due_subscriptions(session, now)
        for subscription_id, agency_id in due:
            if subscription_id not in self._in_flight:
                task = asyncio.create_task(self._serve(subscription_id, agency_id),
                                           name=f"webhook-{subscription_id}")
                self._in_flight[subscription_id] = task
                task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        for subscription_id, running in list(self._in_flight.items()):
            if running is task:
                del self._in_flight[subscription_id]

    @contextlib.asynccontextmanager
    async def _agency_slot(self, agency_id: str) -> AsyncIterator[None]:
        """One of the agency's few delivery slots (the semaphore lives while a task holds or awaits it)."""
        semaphore, users = self._agency_slots.get(agency_id) or (asyncio.Semaphore(self.max_parallel_per_agency), 0)
        self._agency_slots[agency_id] = (semaphore, users + 1)
        try:
            async with semaphore:
                yield
        finally:
            semaphore, users = self._agency_slots[agency_id]
            if users == 1:
                del self._agency_slots[agency_id]
            else:
                self._agency_slots[agency_id] = (semaphore, users - 1)

    async def _serve(self, subscription_id: str, agency_id: str) -> None:
        # The agency's slot first, so its waiting subscriptions do not hold any of the shared ones.
        async with self._agency_slot(agency_id), self._parallel:
            while True:
                async with self.sessions() as session:
                    sub = await store.subscription(session, subscription_id)
                    if sub is None or sub.status != "active" or sub.next_attempt_at > datetime.now(UTC):
                        return
                    rows = await store.feed_page(session, sub.agency_id, after=sub.cursor, limit=100)
                if not rows:
                    return
                for row in rows:
                    if sub.event_types and row.type not in sub.event_types:
                        await self._advance(subscription_id, row.seq)
                        continue
                    if not await self._deliver(sub, row):
                        return

    async def _advance(self, subscription_id: str, seq: int) -> None:
        async with unit_of_work(self.sessions) as session:
            await store.advance_subscription(session, subscription_id, cursor=seq)

    async def _deliver(self, sub: SubscriptionRow, row: FeedRow) -> bool:
        assert self._http is not None
        body = json.dumps({
            "specversion": "1.0", "id": row.event_id, "source": self.source, "type": row.type,
            "time": timestamp(row.created_at), "subject": row.referral_id, "datacontenttype": "application/json",
            "data": row.payload,
        }, separators=(",", ":"))
        try:
            keys = signing_secrets(sub, self.keyring, datetime.now(UTC))
        except (KeyUnavailable, Undecryptable) as exc:
            # Not sent unsigned, not counted against the receiver: it waits for the key, backing off.
            log.error("webhook_secret_unavailable", subscription_id=sub.id, error=type(exc).__name__)
            async with unit_of_work(self.sessions) as session:
                await store.advance_subscription(
                    session, sub.id, next_attempt_at=datetime.now(UTC) + timedelta(seconds=self.backoff_max_seconds))
            return False
        headers = {"content-type": "application/json",
                   **signed_headers(keys, row.event_id, body, datetime.now(UTC))}
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        try:
            # The answer's body is not used: read up to the cap (so the connection can be reused) and judge
            # by the status code.
            response = await call(self._http, self.policy, "POST", sub.url, content=body.encode(), headers=headers)
            status = response.status_code
            ok = 200 <= status < 300
        except (httpx.HTTPError, httpx.InvalidURL, OSError, ValueError) as exc:
            # The class name only (OutboundRefused, DeadlineExceeded, ConnectError...): never a body or address.
            error, ok = type(exc).__name__, False
        duration_ms = int((time.monotonic() - started) * 1000)
        now = datetime.now(UTC)
        async with unit_of_work(self.sessions) as session:
            current = await store.subscription(session, sub.id, for_update=True)
            assert current is not None
            session.add(DeliveryRow(subscription_id=sub.id, event_id=row.event_id, event_type=row.type,
                                    feed_seq=row.seq, attempt=current.failures + 1,
                                    outcome="delivered" if ok else "failed", status_code=status, error=error,
                                    duration_ms=duration_ms, at=now))
            if ok:
                current.cursor, current.failures = row.seq, 0
            else:
                current.failures += 1
                current.next_attempt_at = now + timedelta(seconds=self.backoff(current.failures))
                if current.failures >= self.max_failures:
                    current.status, current.disabled_at = "disabled", now
                    log.warning("webhook_disabled", subscription_id=sub.id, failures=current.failures)
        sub.cursor = row.seq if ok else sub.cursor
        return ok


# --- free text and secrets kept in clear before an upgrade --------------------------------------------------


async def seal_clear_text(referrals: Referrals, keyring: Keyring, sessions: async_sessionmaker[AsyncSession]) -> None:
    """Referrals (and webhook secrets) made before free text was sealed: sealed once, retried through
    database restarts, then done."""
    async def seal() -> None:
        await referrals.seal_clear_text()
        await seal_clear_secrets(sessions, keyring)

    await until_done(seal, name="free_text_sealing")
