"""Webhook subscriptions and their delivery log: what the dispatcher reads and advances."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    exists,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from services.referral.store import DeliveryRow, FeedRow, SubscriptionRow

# --- webhook subscriptions and deliveries -------------------------------------------------------------------


async def lock_agency_subscriptions(session: AsyncSession, agency_id: str) -> None:
    """Serialise an agency's subscription creations until the transaction ends (the per-agency limit)."""
    await session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
                          {"k": f"referral-subscriptions:{agency_id}"})


async def subscription_count(session: AsyncSession, agency_id: str) -> int:
    return int((await session.execute(select(func.count()).select_from(SubscriptionRow).where(
        SubscriptionRow.agency_id == agency_id, SubscriptionRow.status != "deleted"))).scalar_one())


async def last_feed_seq(session: AsyncSession) -> int | None:
    return (await session.execute(select(FeedRow.seq).order_by(FeedRow.seq.desc()).limit(1))).scalar()


async def subscription(session: AsyncSession, subscription_id: str, *,
                       for_update: bool = False) -> SubscriptionRow | None:
    return await session.get(SubscriptionRow, subscription_id, with_for_update=for_update)


async def subscriptions_of(session: AsyncSession, agency_id: str) -> list[SubscriptionRow]:
    return list((await session.execute(
        select(SubscriptionRow).where(SubscriptionRow.agency_id == agency_id, SubscriptionRow.status != "deleted")
        .order_by(SubscriptionRow.created_at))).scalars())


async def deliveries_page(session: AsyncSession, subscription_id: str, *, after: int | None,
                          limit: int) -> list[DeliveryRow]:
    query = select(DeliveryRow).where(DeliveryRow.subscription_id == subscription_id)
    if after is not None:
        query = query.where(DeliveryRow.id > after)
    return list((await session.execute(query.order_by(DeliveryRow.id).limit(limit))).scalars())


async def subscriptions_with_clear_secret(session: AsyncSession) -> list[SubscriptionRow]:
    """Subscriptions made before referral_0007 whose secret is still in clear, locked."""
    return list((await session.execute(
        select(SubscriptionRow).where(SubscriptionRow.secret.is_not(None)).with_for_update())).scalars())


def _secret_not_under(key_id: str) -> Any:
    # A NULL key id (no previous secret; a clear secret of before referral_0007) is nothing to re-wrap.
    return or_(SubscriptionRow.secret_key_id != key_id, SubscriptionRow.previous_secret_key_id != key_id)


async def subscriptions_with_secret_not_under(session: AsyncSession, key_id: str,
                                              limit: int) -> list[SubscriptionRow]:
    """Subscriptions (deleted ones too) whose secret or previous secret is wrapped by another master key than
    ``key_id``, locked (rows being delivered or rotated meanwhile are skipped, for the next sweep)."""
    return list((await session.execute(
        select(SubscriptionRow).where(_secret_not_under(key_id))
        .order_by(SubscriptionRow.id).limit(limit).with_for_update(skip_locked=True))).scalars())


async def count_subscriptions_with_secret_not_under(session: AsyncSession, key_id: str) -> int:
    return int((await session.execute(select(func.count()).select_from(SubscriptionRow)
                                      .where(_secret_not_under(key_id)))).scalar_one())


async def due_subscriptions(session: AsyncSession, now: datetime) -> list[tuple[str, str]]:
    """(id, agency) of the active subscriptions due now with events waiting past their cursor."""
    waiting = exists().where(or_(FeedRow.from_agency == SubscriptionRow.agency_id,
                                 FeedRow.to_agency == SubscriptionRow.agency_id),
                             FeedRow.seq > SubscriptionRow.cursor)
    return [(row.id, row.agency_id) for row in await session.execute(
        select(SubscriptionRow.id, SubscriptionRow.agency_id).where(
            SubscriptionRow.status == "active", SubscriptionRow.next_attempt_at <= now, waiting))]


async def advance_subscription(session: AsyncSession, subscription_id: str, *, cursor: int | None = None,
                               next_attempt_at: datetime | None = None) -> None:
    values = {k: v for k, v in (("cursor", cursor), ("next_attempt_at", next_attempt_at)) if v is not None}
    await session.execute(update(SubscriptionRow).where(SubscriptionRow.id == subscription_id).values(**values))
