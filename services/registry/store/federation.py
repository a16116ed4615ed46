"""The queries of agencies' own identity providers (issue #20 part 5): trusts, links and sign-ins on their
way through an upstream (looked up by the SHA-256 of their state only)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.registry.store.federation_tables import FederatedIdentity, FederatedLogin, IdentityProvider


async def provider(session: AsyncSession, idp_id: str) -> IdentityProvider | None:
    return await session.get(IdentityProvider, idp_id)


async def provider_by_issuer(session: AsyncSession, issuer: str) -> IdentityProvider | None:
    statement = select(IdentityProvider).where(IdentityProvider.issuer == issuer)
    return (await session.execute(statement)).scalar_one_or_none()


async def providers(session: AsyncSession, agency_id: str | None = None) -> list[IdentityProvider]:
    statement = select(IdentityProvider).order_by(IdentityProvider.created_at, IdentityProvider.id)
    if agency_id is not None:
        statement = statement.where(IdentityProvider.agency_id == agency_id)
    return list((await session.execute(statement)).scalars())


async def remove_provider(session: AsyncSession, row: IdentityProvider) -> None:
    await session.delete(row)
    await session.flush()


async def link(session: AsyncSession, issuer: str, subject: str, *,
               for_update: bool = False) -> FederatedIdentity | None:
    return await session.get(FederatedIdentity, (issuer, subject), with_for_update=for_update)


async def is_brokered(session: AsyncSession, person_id: str) -> bool:
    """Does the person sign in through their agency's own provider (an upstream account is linked)?"""
    found = await session.execute(select(FederatedIdentity.person_id).where(FederatedIdentity.person_id == person_id))
    return found.first() is not None


async def people_of_issuer(session: AsyncSession, issuer: str) -> list[str]:
    """The ids of the people linked to an issuer's accounts."""
    return list((await session.execute(select(FederatedIdentity.person_id).where(
        FederatedIdentity.issuer == issuer))).scalars())


async def login(session: AsyncSession, state_hash: str) -> FederatedLogin | None:
    """A sign-in on its way back, locked: two callbacks with one state are decided one after the other."""
    return await session.get(FederatedLogin, state_hash, with_for_update=True)


async def purge_logins(session: AsyncSession, now: datetime) -> None:
    """Sign-ins that never came back (or came back) are of no use once expired."""
    await session.execute(delete(FederatedLogin).where(FederatedLogin.expires_at < now))


async def secrets_not_under(session: AsyncSession, kek_id: str) -> list[IdentityProvider]:
    """Trusts whose client secret is wrapped under another KEK than ``kek_id``, locked."""
    return list((await session.execute(select(IdentityProvider).where(
        IdentityProvider.client_secret_kek_id.is_not(None), IdentityProvider.client_secret_kek_id != kek_id)
        .with_for_update())).scalars())
