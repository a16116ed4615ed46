"""Every query of registry but the signing keys' (``signing_keys``) and the directory search's (``search``):
agencies and their OAuth clients, services, used client-assertion jtis and revoked tokens."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, delete, func, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.registry.hsds_ids import hsds_uuid
from services.registry.store.tables import Agency, RevokedToken, Service, UsedAssertion

# --- agencies ----------------------------------------------------------------------------------------------

# Built once: constructing the statement costs more than running it (this runs for every token request).
_AGENCY_BY_CLIENT = select(Agency).where(Agency.client_id == bindparam("client_id"))


async def agency(session: AsyncSession, agency_id: str | None, *, for_update: bool = False) -> Agency | None:
    return await session.get(Agency, agency_id, with_for_update=for_update)


async def agency_by_client(session: AsyncSession, client_id: str) -> Agency | None:
    return (await session.execute(_AGENCY_BY_CLIENT, {"client_id": client_id})).scalar_one_or_none()


async def agencies_page(session: AsyncSession, limit: int, offset: int) -> list[Agency]:
    """Up to ``limit`` agencies from ``offset``, oldest first."""
    return list((await session.execute(
        select(Agency).order_by(Agency.created_at, Agency.id).offset(offset).limit(limit))).scalars())


async def agencies_by_id(session: AsyncSession, ids: set[str]) -> list[Agency]:
    return list((await session.execute(select(Agency).where(Agency.id.in_(ids)))).scalars())


# --- services ----------------------------------------------------------------------------------------------


async def service_for_update(session: AsyncSession, service_id: str) -> Service | None:
    return await session.get(Service, service_id, with_for_update=True)


async def active_service(session: AsyncSession, service_id: str, *, hsds: bool = False) -> Service | None:
    """The service if it and its agency are both active; with ``hsds``, by its HSDS id (hsds_ids.py) too."""
    hsds_id = hsds_uuid(service_id) if hsds else None
    query = select(Service).join(Agency, Agency.id == Service.agency_id).where(
        Service.status == "active", Agency.status == "active")
    if hsds_id is None:
        return (await session.execute(query.where(Service.id == service_id))).scalar_one_or_none()
    # Should a RefNet id ever be written as a UUID, the service it names comes before another's HSDS id.
    return (await session.execute(
        query.where(or_(Service.id == service_id, Service.hsds_id == hsds_id))
        .order_by((Service.id == service_id).desc()).limit(1))).scalars().first()


# --- client assertions and tokens --------------------------------------------------------------------------


async def purge_used_assertions(session: AsyncSession) -> None:
    """Forget the jtis of assertions past their expiry (they are refused as expired anyway)."""
    await session.execute(delete(UsedAssertion).where(UsedAssertion.expires_at < func.now()))


async def use_assertion(session: AsyncSession, client_id: str, jti: str, expires_at: datetime) -> bool:
    """Record the assertion's jti; False when it was already recorded (a replay)."""
    inserted = await session.execute(
        insert(UsedAssertion).values(client_id=client_id, jti=jti, expires_at=expires_at)
        .on_conflict_do_nothing().returning(UsedAssertion.jti))
    return inserted.first() is not None


async def is_revoked(session: AsyncSession, jti: str) -> bool:
    return await session.get(RevokedToken, jti) is not None


async def revoke(session: AsyncSession, jti: str, expires_at: datetime) -> bool:
    """Record the token as revoked; False when it already was."""
    added = await session.execute(insert(RevokedToken).values(jti=jti, expires_at=expires_at)
                                  .on_conflict_do_nothing().returning(RevokedToken.jti))
    return added.first() is not None
