"""Webhook subscriptions (the ``/subscriptions`` routes): an agency manages only its own (others' are 404).

A subscription receives the referral events its agency is party to, from the moment it was created; its
signing secret is kept wrapped under referral's master key, never in clear (``webhooks.py`` signs and seals,
``jobs.WebhookDispatcher`` delivers).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.referral import store
from services.referral.service.views import timestamp
from services.referral.store import SubscriptionRow
from services.referral.webhooks import new_secret, seal_secret
from shared import pagination
from shared.auth import Principal
from shared.crypto import Keyring
from shared.db import unit_of_work
from shared.errors import Problem, not_found
from shared.outbound import OutboundPolicy, require_callable_url

log = structlog.get_logger("refnet.referral.webhooks")


async def seal_clear_secrets(sessions: async_sessionmaker[AsyncSession], keyring: Keyring) -> int:
    """Seal the clear secrets of subscriptions made before referral_0007. -> how many."""
    async with unit_of_work(sessions) as session:
        rows = await store.subscriptions_with_clear_secret(session)
        for row in rows:
            assert row.secret is not None
            row.secret_wrapped, row.secret_key_id = seal_secret(row.secret, keyring, row.id)
            row.secret = None
    if rows:
        log.info("webhook_secrets_sealed", count=len(rows))
    return len(rows)


def subscription_view(row: SubscriptionRow, *, secret: str | None = None) -> dict[str, Any]:
    """The subscription as its agency sees it; ``secret`` only in the answer that creates it or rotates it."""
    view: dict[str, Any] = {
        "id": row.id, "url": row.url, "event_types": row.event_types, "status": row.status,
        "consecutive_failures": row.failures, "next_attempt_at": timestamp(row.next_attempt_at),
        "created_at": timestamp(row.created_at), "disabled_at": timestamp(row.disabled_at),
    }
    if row.previous_secret_until is not None and row.previous_secret_until > datetime.now(UTC):
        view["previous_secret_valid_until"] = timestamp(row.previous_secret_until)
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
            await store.lock_agency_subscriptions(session, principal.agency_id)
            count = await store.subscription_count(session, principal.agency_id)
            if count >= self.max_per_agency:
                raise Problem(409, "too-many-subscriptions",
                              f"An agency may hold at most {self.max_per_agency} webhook subscriptions.")
            last = await store.last_feed_seq(session)
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
        row = await store.subscription(session, subscription_id, for_update=True)
        if row is None or row.agency_id != principal.agency_id or row.status == "deleted":
            raise not_found("subscription")
        return row

    async def of_agency(self, principal: Principal) -> list[dict[str, Any]]:
        async with self.sessions() as session:
            rows = await store.subscriptions_of(session, principal.agency_id)
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
            rows = await store.deliveries_page(session, subscription_id, after=after, limit=limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        items = [{"id": str(r.id), "event_id": r.event_id, "event_type": r.event_type, "attempt": r.attempt,
                  "outcome": r.outcome, "status_code": r.status_code, "error": r.error,
                  "duration_ms": r.duration_ms, "at": timestamp(r.at)} for r in rows]
        return items, (pagination.encode("delivery", rows[-1].id) if more and rows else None)
