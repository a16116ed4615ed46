"""Agencies and their OAuth clients: registration, listing, changes (scopes, status, credentials).

Every change writes its event (``agency.*``) to the outbox in the same transaction.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.registry import domain, events
from services.registry.oauth import generate_secret, hash_secret
from services.registry.schemas import AgencyCreate, AgencyPatch
from services.registry.store import queries
from services.registry.store.tables import Agency
from shared.db import unit_of_work
from shared.errors import Problem, invalid, not_found
from shared.outbound import OutboundPolicy, require_callable_url
from shared.outbox import add_event

log = structlog.get_logger("refnet.registry")


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def agency_payload(agency: Agency) -> dict[str, Any]:
    return events.AgencyPayload(
        agency_id=agency.id, client_id=agency.client_id, name=agency.name, kind=agency.kind,
        country=agency.country, status=agency.status,  # type: ignore[arg-type]
        scopes=sorted(agency.scopes),
    ).model_dump(mode="json")


async def emit_agency(session: AsyncSession, source: str, type_: str, agency: Agency) -> None:
    await add_event(session, source=source, topic=events.TOPIC, type=type_, aggregate_type="Agency",
                    aggregate_id=agency.id, payload=agency_payload(agency), subject=agency.id)


@dataclass
class Credentials:
    jwks: dict[str, Any] | None = None
    jwks_uri: str | None = None
    secret_hash: str | None = None


async def add_agency(
    session: AsyncSession, source: str, *, name: str, kind: str, country: str, scopes: list[str],
    credentials: Credentials, agency_id: str | None = None, client_id: str | None = None,
    short_name: str | None = None,
) -> Agency:
    """A new agency and its ``agency.registered`` event, in the caller's transaction (also the seed's)."""
    agency = Agency(
        id=agency_id or new_id("agy"), client_id=client_id or new_id("cli"), name=name, short_name=short_name,
        kind=kind, country=country, status="active", scopes=sorted(set(scopes)), jwks=credentials.jwks,
        jwks_uri=credentials.jwks_uri, secret_hash=credentials.secret_hash,
        created_at=datetime.now(UTC), updated_at=datetime.now(UTC),
    )
    session.add(agency)
    await session.flush()
    await emit_agency(session, source, events.AGENCY_REGISTERED, agency)
    return agency


def _credentials(jwks: dict[str, Any] | None, jwks_uri: object, generate: bool) -> tuple[Credentials, str | None]:
    if generate:
        secret = generate_secret()
        return Credentials(secret_hash=hash_secret(secret)), secret
    return Credentials(jwks=jwks, jwks_uri=str(jwks_uri) if jwks_uri is not None else None), None


def _refuse_platform_scopes(refused: list[str]) -> None:
    if refused:
        raise Problem(403, "platform-scope",
                      f"The scope(s) {', '.join(refused)} are granted only by the platform's bootstrap (refnet "
                      "seed), never through the API.")


class Agencies:
    """The agency use cases, one transaction each."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], source: str, outbound: OutboundPolicy) -> None:
        self.sessions = sessions
        self.source = source
        self.outbound = outbound

    async def _check_jwks_uri(self, jwks_uri: object) -> None:
        if jwks_uri is not None:
            await require_callable_url(str(jwks_uri), self.outbound, loc=["body", "jwks_uri"],
                                       slug="jwks-uri-not-allowed")

    async def register(self, body: AgencyCreate) -> tuple[Agency, str | None]:
        """The new agency and, when one was asked for, its client secret (shown once, stored hashed)."""
        _refuse_platform_scopes(domain.scopes_the_api_may_not_grant(body.scopes))
        await self._check_jwks_uri(body.jwks_uri)
        credentials, secret = _credentials(body.jwks, body.jwks_uri, body.generate_secret)
        async with unit_of_work(self.sessions) as session:
            agency = await add_agency(session, self.source, name=body.name, kind=body.kind,
                                      country=body.country, scopes=body.scopes, credentials=credentials)
        log.info("agency_registered", agency_id=agency.id)
        return agency, secret

    async def page(self, limit: int, offset: int) -> tuple[list[Agency], bool]:
        """A page of agencies, and whether more follow."""
        async with unit_of_work(self.sessions) as session:
            rows = await queries.agencies_page(session, limit + 1, offset)
        return rows[:limit], len(rows) > limit

    async def by_id(self, ids: set[str]) -> dict[str, Agency]:
        async with unit_of_work(self.sessions) as session:
            rows = await queries.agencies_by_id(session, ids)
        return {a.id: a for a in rows}

    async def get(self, agency_id: str) -> Agency:
        async with unit_of_work(self.sessions) as session:
            agency = await queries.agency(session, agency_id)
        if agency is None:
            raise not_found("agency")
        return agency

    async def update(self, agency_id: str, body: AgencyPatch) -> tuple[Agency, str | None]:
        """The changed agency and, when new credentials were generated, its client secret."""
        secret: str | None = None
        await self._check_jwks_uri(body.jwks_uri)
        async with unit_of_work(self.sessions) as session:
            agency = await queries.agency(session, agency_id, for_update=True)
            if agency is None:
                raise not_found("agency")
            was = agency.status
            new_credentials = body.jwks is not None or body.jwks_uri is not None or body.generate_secret
            if new_credentials and not domain.credentials_settable_by_api(agency.scopes):
                raise Problem(403, "platform-client",
                              "The credentials of a client holding a platform scope ("
                              f"{', '.join(sorted(domain.PLATFORM_SCOPES))}) are set only by the platform's "
                              "bootstrap (refnet seed), never through the API.")
            if body.scopes is not None:
                _refuse_platform_scopes(domain.scopes_the_api_may_not_grant(body.scopes, agency.scopes))
            if body.status is not None:
                agency.status = body.status
            if body.scopes is not None:
                refused = domain.scopes_not_for_kind(agency.kind, body.scopes)
                if refused:
                    detail = f"The scope(s) {' '.join(refused)} are only for oversight agencies."
                    raise invalid(["body", "scopes"], detail, detail=detail)
                agency.scopes = body.scopes
            if new_credentials:
                credentials, secret = _credentials(body.jwks, body.jwks_uri, body.generate_secret)
                agency.jwks, agency.jwks_uri = credentials.jwks, credentials.jwks_uri
                agency.secret_hash = credentials.secret_hash
            agency.updated_at = datetime.now(UTC)
            await session.flush()
            type_ = events.AGENCY_SUSPENDED if domain.is_suspension(was, agency.status) else events.AGENCY_UPDATED
            await emit_agency(session, self.source, type_, agency)
        log.info("agency_updated", agency_id=agency.id, status=agency.status)
        return agency, secret
