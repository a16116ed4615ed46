"""Queries on the authorization server's signing keys (``signing_keys``). Which key has which status is
decided by the rules in ``domain`` (the signing-key lifecycle); these only read and write the rows, with the
database's clock (``now()``: the start of the transaction) as the rules' time."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.registry import domain
from services.registry.store.tables import SigningKey

# The keys that sign (or are about to) and the database's time, in one round trip (this runs for every token
# issued). Built once: constructing the statement costs more than running it.
_SIGNING_NOW = select(SigningKey, func.now()).where(SigningKey.status.in_(domain.SIGNING_STATUSES))


async def lock(session: AsyncSession) -> None:
    """Serialise the writers of the signing keys (rotations, promotions, seeding) until the transaction ends."""
    await session.execute(text("LOCK TABLE signing_keys IN EXCLUSIVE MODE"))


async def now(session: AsyncSession) -> datetime:
    """The database's time: the start of the current transaction, the same for every statement in it."""
    return (await session.execute(select(func.now()))).scalar_one()


async def count(session: AsyncSession) -> int:
    return int((await session.execute(select(func.count()).select_from(SigningKey))).scalar_one())


async def all_keys(session: AsyncSession) -> list[SigningKey]:
    return list((await session.execute(select(SigningKey).execution_options(populate_existing=True))).scalars())


async def signing_keys_and_now(session: AsyncSession) -> tuple[list[SigningKey], datetime]:
    """The ``next`` and ``current`` keys, and the database's time."""
    rows = (await session.execute(_SIGNING_NOW)).all()
    if not rows:
        return [], await now(session)
    return [row[0] for row in rows], rows[0][1]


async def published_rows(session: AsyncSession) -> Sequence[Any]:
    """(kid, public_jwk, status, private_key_wrapped, kek_id) of every published key."""
    return (await session.execute(
        select(SigningKey.kid, SigningKey.public_jwk, SigningKey.status, SigningKey.private_key_wrapped,
               SigningKey.kek_id)
        .where(SigningKey.status.in_(domain.PUBLISHED_STATUSES)))).all()


async def holding_private_parts(session: AsyncSession) -> list[SigningKey]:
    """The keys that no longer sign but still hold their private part (candidates for destruction)."""
    return list((await session.execute(select(SigningKey).where(
        SigningKey.status.not_in(domain.SIGNING_STATUSES), SigningKey.private_key_wrapped.is_not(None)))).scalars())


async def destroy_private_parts(session: AsyncSession, kids: Sequence[str]) -> list[str]:
    """NULL the private parts of ``kids`` (never of a key that signs); returns the kids destroyed."""
    if not kids:
        return []
    destroyed = await session.execute(
        update(SigningKey)
        .where(SigningKey.kid.in_(list(kids)), SigningKey.status.not_in(domain.SIGNING_STATUSES),
               SigningKey.private_key_wrapped.is_not(None))
        .values(private_key_wrapped=None, kek_id=None)
        .returning(SigningKey.kid)
        .execution_options(synchronize_session=False))
    return list(destroyed.scalars())


async def wrapped_not_under(session: AsyncSession, kek_id: str) -> list[SigningKey]:
    """Keys whose private part is wrapped under another KEK than ``kek_id``."""
    return list((await session.execute(select(SigningKey).where(
        SigningKey.private_key_wrapped.is_not(None), SigningKey.kek_id != kek_id))).scalars())


async def count_wrapped_not_under(session: AsyncSession, kek_id: str) -> int:
    return int((await session.execute(select(func.count()).select_from(SigningKey).where(
        SigningKey.private_key_wrapped.is_not(None), SigningKey.kek_id != kek_id))).scalar_one())
