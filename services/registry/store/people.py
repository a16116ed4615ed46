"""The queries of people (issue #20): staff accounts, their one-time links, first-party clients, sign-in
sessions, authorization codes and refresh tokens. Secrets are looked up by their SHA-256 only."""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.registry import domain
from services.registry.store.tables import (
    Agency,
    AuthorizationCode,
    FirstPartyClient,
    Person,
    PersonInvite,
    RefreshToken,
    SignInSession,
)

# --- people and their links --------------------------------------------------------------------------------


# What people type and clients send is looked up only when it has the form of what it names: anything else
# (a NUL byte, which PostgreSQL text cannot hold, or a megabyte) names nothing.
_REFERENCE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


async def agency_by_reference(session: AsyncSession, reference: str) -> Agency | None:
    """An agency by its id or its short name (what a person types on the sign-in form)."""
    if not _REFERENCE.fullmatch(reference):
        return None
    return (await session.execute(select(Agency).where(
        or_(Agency.id == reference, Agency.short_name == reference)))).scalars().first()


async def person(session: AsyncSession, person_id: str, *, for_update: bool = False) -> Person | None:
    return await session.get(Person, person_id, with_for_update=for_update)


async def person_by_login(session: AsyncSession, agency_id: str, login: str, *,
                          for_update: bool = False) -> Person | None:
    if not domain.LOGIN.fullmatch(login):
        return None
    statement = select(Person).where(Person.agency_id == agency_id, Person.login == login)
    if for_update:
        statement = statement.with_for_update()
    return (await session.execute(statement)).scalar_one_or_none()


async def people_of(session: AsyncSession, agency_id: str) -> list[Person]:
    return list((await session.execute(
        select(Person).where(Person.agency_id == agency_id).order_by(Person.created_at, Person.id))).scalars())


async def invite(session: AsyncSession, token_hash: str, *, for_update: bool = False) -> PersonInvite | None:
    return await session.get(PersonInvite, token_hash, with_for_update=for_update)


async def spend_open_invites(session: AsyncSession, person_id: str, now: datetime) -> None:
    """A new link replaces the person's earlier ones: they stop working."""
    await session.execute(update(PersonInvite).where(PersonInvite.person_id == person_id,
                                                     PersonInvite.used_at.is_(None)).values(used_at=now))


# --- first-party clients -----------------------------------------------------------------------------------


async def first_party_client(session: AsyncSession, client_id: str) -> FirstPartyClient | None:
    if not domain.LOGIN.fullmatch(client_id):
        return None
    return await session.get(FirstPartyClient, client_id)


# --- sign-in sessions --------------------------------------------------------------------------------------


async def sign_in_session(session: AsyncSession, token_hash: str, *,
                          for_update: bool = False) -> SignInSession | None:
    statement = select(SignInSession).where(SignInSession.token_hash == token_hash)
    if for_update:
        statement = statement.with_for_update()
    return (await session.execute(statement)).scalar_one_or_none()


async def sign_in_session_by_id(session: AsyncSession, session_id: str, *,
                                for_update: bool = False) -> SignInSession | None:
    return await session.get(SignInSession, session_id, with_for_update=for_update)


async def end_sessions_of(session: AsyncSession, person_id: str, now: datetime) -> list[str]:
    """Every open sign-in session of the person ended; their ids."""
    ended = await session.execute(update(SignInSession).where(
        SignInSession.person_id == person_id, SignInSession.ended_at.is_(None)).values(ended_at=now)
        .returning(SignInSession.id))
    return list(ended.scalars())


# --- authorization codes and refresh tokens ----------------------------------------------------------------


async def authorization_code(session: AsyncSession, code_hash: str) -> AuthorizationCode | None:
    """The code, locked: two token requests with one code are decided one after the other."""
    return await session.get(AuthorizationCode, code_hash, with_for_update=True)


async def refresh_token(session: AsyncSession, token_hash: str) -> RefreshToken | None:
    return await session.get(RefreshToken, token_hash, with_for_update=True)


async def revoke_refresh_tokens(session: AsyncSession, now: datetime, *, family_id: str | None = None,
                                session_ids: list[str] | None = None) -> dict[str, list[tuple[str, datetime]]]:
    """Revoke a family's (or some sessions') refresh tokens; by client, (jti, expiry) of the access tokens
    issued with them that may still be alive, to revoke those too."""
    statement = update(RefreshToken).where(RefreshToken.revoked_at.is_(None))
    if family_id is not None:
        statement = statement.where(RefreshToken.family_id == family_id)
    elif session_ids:
        statement = statement.where(RefreshToken.session_id.in_(session_ids))
    else:
        return {}
    rows = await session.execute(statement.values(revoked_at=now).returning(
        RefreshToken.client_id, RefreshToken.access_jti, RefreshToken.access_expires_at))
    alive: dict[str, list[tuple[str, datetime]]] = {}
    for client_id, jti, expires in rows.all():
        if expires > now:
            alive.setdefault(client_id, []).append((jti, expires))
    return alive


async def totp_secrets_not_under(session: AsyncSession, kek_id: str) -> list[Person | PersonInvite]:
    """People and open links whose TOTP secret is wrapped under another KEK than ``kek_id``, locked."""
    people = (await session.execute(select(Person).where(
        Person.totp_kek_id.is_not(None), Person.totp_kek_id != kek_id).with_for_update())).scalars().all()
    links = (await session.execute(select(PersonInvite).where(
        PersonInvite.totp_kek_id.is_not(None), PersonInvite.totp_kek_id != kek_id,
        PersonInvite.used_at.is_(None)).with_for_update())).scalars().all()
    return [*people, *links]
