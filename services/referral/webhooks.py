"""Webhook delivery to case systems, signed per the Standard Webhooks spec.

A subscription belongs to one agency and receives the referral events that agency is party to (the
``referral_feed`` rows naming it as sender or recipient), in feed order, from the moment it was created.
Each subscription has its own cursor and its own delivery task, so a slow or failing receiver only delays
itself; an agency has at most a few deliveries in flight, so its receivers cannot take every slot from the
others'. URLs are checked when subscribed and every address when connecting (shared.outbound), and every
attempt is bounded in time and in bytes read. A failed attempt is retried with exponential backoff and
jitter; after ``max_failures`` consecutive failures the subscription is disabled (the agency can reactivate
it, and it resumes where it stopped). Every attempt is logged in ``webhook_deliveries`` (status code, error
class, duration: never a body).

Signing secrets are kept wrapped under referral's master key (shared/crypto.py), never in clear; a rotation
gives a new secret while the old one keeps signing for a grace period (every delivery then carries both
signatures, as Standard Webhooks allows), so a receiver can switch without losing an event.

Delivery is at-least-once: a receiver deduplicates on ``webhook-id``, which is the event id and the same on
every retry. One dispatcher leads across replicas (PostgreSQL advisory lock), so replicas do not race.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import structlog
from sqlalchemy import exists, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from standardwebhooks import Webhook

from services.referral.store import DeliveryRow, FeedRow, SubscriptionRow
from shared import leader
from shared.auth import Principal
from shared.crypto import Envelope, Keyring, KeyUnavailable, Undecryptable
from shared.db import unit_of_work
from shared.errors import Problem, not_found
from shared.leader import Leadership, keep_alive
from shared.outbound import OutboundPolicy, call, guarded_client, require_callable_url

log = structlog.get_logger("refnet.referral.webhooks")

LOCK_KEY = leader.lock_key("refnet-referral:webhooks")


def new_secret() -> str:
    return _SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


_SECRET_PREFIX = "whsec_"  # noqa: S105 -- the Standard Webhooks prefix, not a secret
_ENVELOPE = Envelope("referral")


def _bound_to(subscription_id: str) -> str:
    # The wrapping is bound to the subscription (and, by this prefix, can never pass for a case's data key).
    return f"webhook-secret:{subscription_id}"


def seal_secret(secret: str, keyring: Keyring, subscription_id: str) -> tuple[bytes, str]:
    """-> (the secret wrapped under the current master key, that key's id)."""
    raw = base64.b64decode(secret.removeprefix(_SECRET_PREFIX))
    return _ENVELOPE.wrap(raw, keyring.current, _bound_to(subscription_id)), keyring.current.key_id


def open_secret(wrapped: bytes, key_id: str, keyring: Keyring, subscription_id: str) -> str:
    raw = _ENVELOPE.unwrap(wrapped, keyring.by_id(key_id), _bound_to(subscription_id))
    return _SECRET_PREFIX + base64.b64encode(raw).decode()


def signing_secrets(row: SubscriptionRow, keyring: Keyring | None, now: datetime) -> list[str]:
    """The secrets a delivery is signed with: the current one, and the previous one within its grace.
    ``KeyUnavailable`` / ``Undecryptable`` when the master key that wrapped them is not configured."""
    if row.secret is not None:  # made before referral_0007 and not sealed yet
        found = [row.secret]
    else:
        if keyring is None:
            raise KeyUnavailable("REFNET_REFERRAL_MASTER_KEY_FILE is not set")
        assert row.secret_wrapped is not None and row.secret_key_id is not None
        found = [open_secret(row.secret_wrapped, row.secret_key_id, keyring, row.id)]
    if (row.previous_secret_wrapped is not None and row.previous_secret_key_id is not None and keyring is not None
            and row.previous_secret_until is not None and row.previous_secret_until > now):
        found.append(open_secret(row.previous_secret_wrapped, row.previous_secret_key_id, keyring, row.id))
    return found


def signed_headers(secrets_: list[str] | str, message_id: str, body: str, at: datetime) -> dict[str, str]:
    """The three Standard Webhooks headers for ``body``; several secrets give several signatures
    (space-separated), any of which a receiver may verify."""
    keys = [secrets_] if isinstance(secrets_, str) else secrets_
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": " ".join(Webhook(key).sign(message_id, at, body) for key in keys),
    }


async def seal_clear_secrets(sessions: async_sessionmaker[AsyncSession], keyring: Keyring) -> int:
    """Seal the clear secrets of subscriptions made before referral_0007. -> how many."""
    async with unit_of_work(sessions) as session:
        rows = list((await session.execute(
            select(SubscriptionRow).where(SubscriptionRow.secret.is_not(None)).with_for_update())).scalars())
        for row in rows:
            assert row.secret is not None
            row.secret_wrapped, row.secret_key_id = seal_secret(row.secret, keyring, row.id)
            row.secret = None
    if rows:
        log.info("webhook_secrets_sealed", count=len(rows))
    return len(rows)


def _ts(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value is not None else None


def subscription_view(row: SubscriptionRow, *, secret: str | None = None) -> dict[str, Any]:
    """The subscription as its agency sees it; ``secret`` only in the answer that creates it or rotates it."""
    view: dict[str, Any] = {
        "id": row.id, "url": row.url, "event_types": row.event_types, "status": row.status,
        "consecutive_failures": row.failures, "next_attempt_at": _ts(row.next_attempt_at),
        "created_at": _ts(row.created_at), "disabled_at": _ts(row.disabled_at),
    }
    if row.previous_secret_until is not None and row.previous_secret_until > datetime.now(UTC):
        view["previous_secret_valid_until"] = _ts(row.previous_secret_until)
    if secret is not None:
        view["secret"] = secret
    return view


class Subscriptions:
    """The subscription use cases: an agency manages only its own subscriptions (others' are 404)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, policy: OutboundPolicy,
                 max_per_agency: int = 20, keyring: Keyring | None = None,
                 secret_grace: timedelta = timedelta(hours=24)) -> None:
        self.sessions = sessions
        self.policy = policy
        self.max_per_agency = max_per_agency
        self.keyring = keyring
        self.secret_grace = secret_grace

    def _keyring(self) -> Keyring:
        if self.keyring is None:  # no secret is kept in clear: no key, no new secret
            raise Problem(503, "master-key-unavailable",
                          "Webhook secrets cannot be kept: referral's master key is not configured.")
        return self.keyring

    async def create(self, principal: Principal, url: str, event_types: list[str] | None) -> dict[str, Any]:
        await require_callable_url(url, self.policy, loc=["body", "url"], slug="webhook-url-not-allowed")
        keyring = self._keyring()
        now = datetime.now(UTC)
        async with unit_of_work(self.sessions) as session:
            await session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
                                  {"k": f"referral-subscriptions:{principal.agency_id}"})
            count = (await session.execute(select(func.count()).select_from(SubscriptionRow).where(
                SubscriptionRow.agency_id == principal.agency_id, SubscriptionRow.status != "deleted"))).scalar_one()
            if count >= self.max_per_agency:
                raise Problem(409, "too-many-subscriptions",
                              f"An agency may hold at most {self.max_per_agency} webhook subscriptions.")
            last = (await session.execute(select(FeedRow.seq).order_by(FeedRow.seq.desc()).limit(1))).scalar()
            secret = new_secret()
            subscription_id = uuid.uuid4().hex
            wrapped, key_id = seal_secret(secret, keyring, subscription_id)
            row = SubscriptionRow(id=subscription_id, agency_id=principal.agency_id, url=url,
                                  event_types=event_types, secret=None, secret_wrapped=wrapped,
                                  secret_key_id=key_id, status="active", cursor=last or 0,
                                  failures=0, next_attempt_at=now, created_at=now, disabled_at=None)
            session.add(row)
        log.info("webhook_subscribed", subscription_id=row.id, agency=principal.agency_id)
        return subscription_view(row, secret=secret)

    async def rotate_secret(self, principal: Principal, subscription_id: str) -> dict[str, Any]:
        """A new secret; the one it replaces keeps signing deliveries for ``secret_grace``."""
        keyring = self._keyring()
        async with unit_of_work(self.sessions) as session:
            row = await self._own(session, principal, subscription_id)
            if row.secret is not None:  # not sealed yet: seal the old one on the way out
                row.secret_wrapped, row.secret_key_id = seal_secret(row.secret, keyring, row.id)
                row.secret = None
            row.previous_secret_wrapped, row.previous_secret_key_id = row.secret_wrapped, row.secret_key_id
            row.previous_secret_until = datetime.now(UTC) + self.secret_grace
            secret = new_secret()
            row.secret_wrapped, row.secret_key_id = seal_secret(secret, keyring, row.id)
        log.info("webhook_secret_rotated", subscription_id=row.id, agency=principal.agency_id)
        return subscription_view(row, secret=secret)

    async def _own(self, session: AsyncSession, principal: Principal, subscription_id: str) -> SubscriptionRow:
        row = await session.get(SubscriptionRow, subscription_id, with_for_update=True)
        if row is None or row.agency_id != principal.agency_id or row.status == "deleted":
            raise not_found("subscription")
        return row

    async def of_agency(self, principal: Principal) -> list[dict[str, Any]]:
        async with self.sessions() as session:
            rows = (await session.execute(
                select(SubscriptionRow).where(SubscriptionRow.agency_id == principal.agency_id,
                                              SubscriptionRow.status != "deleted")
                .order_by(SubscriptionRow.created_at))).scalars()
            return [subscription_view(r) for r in rows]

    async def get(self, principal: Principal, subscription_id: str) -> dict[str, Any]:
        async with self.sessions() as session:
            return subscription_view(await self._own(session, principal, subscription_id))

    async def delete(self, principal: Principal, subscription_id: str) -> None:
        async with unit_of_work(self.sessions) as session:
            row = await self._own(session, principal, subscription_id)
            row.status = "deleted"  # kept for its delivery log; never delivered to again

    async def reactivate(self, principal: Principal, subscription_id: str) -> dict[str, Any]:
        async with unit_of_work(self.sessions) as session:
            row = await self._own(session, principal, subscription_id)
            row.status, row.failures, row.disabled_at = "active", 0, None
            row.next_attempt_at = datetime.now(UTC)
            return subscription_view(row)

    async def deliveries(self, principal: Principal, subscription_id: str, *, limit: int,
                         after: int | None) -> tuple[list[dict[str, Any]], str | None]:
        async with self.sessions() as session:
            await self._own(session, principal, subscription_id)
            query = select(DeliveryRow).where(DeliveryRow.subscription_id == subscription_id)
            if after is not None:
                query = query.where(DeliveryRow.id > after)
            rows = list((await session.execute(query.order_by(DeliveryRow.id).limit(limit + 1))).scalars())
        more = len(rows) > limit
        rows = rows[:limit]
        items = [{"id": str(r.id), "event_id": r.event_id, "event_type": r.event_type, "attempt": r.attempt,
                  "outcome": r.outcome, "status_code": r.status_code, "error": r.error,
                  "duration_ms": r.duration_ms, "at": _ts(r.at)} for r in rows]
        return items, (str(rows[-1].id) if more and rows else None)


class WebhookDispatcher:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], engine: AsyncEngine, *, source: str,
                 policy: OutboundPolicy, transport: httpx.AsyncBaseTransport | None = None,
                 poll_seconds: float = 1.0, backoff_base_seconds: float = 2.0,
                 backoff_max_seconds: float = 3600.0, max_failures: int = 12, max_parallel: int = 50,
                 max_parallel_per_agency: int = 4, lock_key: int = LOCK_KEY, keyring: Keyring | None = None) -> None:
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
        """Exponential backoff with jitter: half the capped delay fixed, half random."""
        delay = min(self.backoff_max_seconds, self.backoff_base_seconds * 2 ** max(failures - 1, 0))
        return delay / 2 + random.uniform(0, delay / 2)

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
        waiting = exists().where(or_(FeedRow.from_agency == SubscriptionRow.agency_id,
                                     FeedRow.to_agency == SubscriptionRow.agency_id),
                                 FeedRow.seq > SubscriptionRow.cursor)
        async with self.sessions() as session:
            due = [(row.id, row.agency_id) for row in await session.execute(
                select(SubscriptionRow.id, SubscriptionRow.agency_id).where(
                    SubscriptionRow.status == "active", SubscriptionRow.next_attempt_at <= now, waiting))]
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
                    sub = await session.get(SubscriptionRow, subscription_id)
                    if sub is None or sub.status != "active" or sub.next_attempt_at > datetime.now(UTC):
                        return
                    rows = list((await session.execute(
                        select(FeedRow).where(or_(FeedRow.from_agency == sub.agency_id,
                                                  FeedRow.to_agency == sub.agency_id), FeedRow.seq > sub.cursor)
                        .order_by(FeedRow.seq).limit(100))).scalars())
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
            await session.execute(update(SubscriptionRow).where(SubscriptionRow.id == subscription_id)
                                  .values(cursor=seq))

    async def _deliver(self, sub: SubscriptionRow, row: FeedRow) -> bool:
        assert self._http is not None
        body = json.dumps({
            "specversion": "1.0", "id": row.event_id, "source": self.source, "type": row.type,
            "time": _ts(row.created_at), "subject": row.referral_id, "datacontenttype": "application/json",
            "data": row.payload,
        }, separators=(",", ":"))
        try:
            keys = signing_secrets(sub, self.keyring, datetime.now(UTC))
        except (KeyUnavailable, Undecryptable) as exc:
            # Not sent unsigned, not counted against the receiver: it waits for the key, backing off.
            log.error("webhook_secret_unavailable", subscription_id=sub.id, error=type(exc).__name__)
            async with unit_of_work(self.sessions) as session:
                await session.execute(update(SubscriptionRow).where(SubscriptionRow.id == sub.id).values(
                    next_attempt_at=datetime.now(UTC) + timedelta(seconds=self.backoff_max_seconds)))
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
            current = await session.get(SubscriptionRow, sub.id, with_for_update=True)
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
