"""The registry's use cases, one transaction each: agencies, the authorization server, the directory.

Every state change writes its event to the outbox in the same transaction; every issued or refused token
writes an access record (``shared.access``) the same way.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import secrets
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote_plus

import structlog
from sqlalchemy import (
    Float,
    Integer,
    Select,
    Text,
    and_,
    bindparam,
    delete,
    exists,
    false,
    func,
    literal,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import JSON, aggregate_order_by, insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from services.registry import domain, events
from services.registry.domain import OAuthError
from services.registry.keyvault import SigningKeyVault, unwrap_private_pem, wrap_private_pem
from services.registry.oauth import (
    NewSigningKey,
    RateLimiter,
    RemoteJWKS,
    client_keys,
    generate_secret,
    generate_signing_key,
    hash_secret,
    read_unverified,
    sign_access_token,
    unverified_claims,
    verify_access_token,
    verify_assertion,
    verify_secret,
)
from services.registry.schemas import AgencyCreate, AgencyPatch, CapacityIn, ServiceCreate, ServicePatch
from services.registry.settings import RegistrySettings
from services.registry.store import Agency, Location, RevokedToken, Service, SigningKey, UsedAssertion
from shared.access import AccessRecord, record_access
from shared.db import unit_of_work
from shared.errors import Problem, not_found
from shared.ids import is_refnet_id
from shared.kek import KeyEncryptionKey, KeyRing
from shared.outbound import Resolver, require_callable_url
from shared.outbox import add_event

log = structlog.get_logger("refnet.registry")


#: What ``null`` sets an optional service field to in a PATCH; the other fields may not be null.
NULL_MEANS: dict[str, Any] = {"descriptions": {}, "admin_areas": [], "languages": [], "eligibility": {},
                              "hours": None, "contact": {}}


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


# --- signing keys ------------------------------------------------------------------------------------------
#
# Private parts are stored only wrapped under the KEK (services/registry/keyvault.py). A key that stops
# signing gets ``retired_at``; once ``retired_at`` is older than the grace period its private part is
# destroyed (domain.private_part_expired), while its public part stays published as long as it is the
# previous key.

_SIGNS = ("next", "current")


def _wrapped(key: NewSigningKey, kek: KeyEncryptionKey) -> dict[str, Any]:
    return {"private_key_wrapped": wrap_private_pem(key.private_pem, key.kid, kek), "kek_id": kek.key_id}


def _status(status: str) -> dict[str, Any]:
    """The values that give a key ``status``: a key that stops signing remembers when it stopped."""
    if status in _SIGNS:
        return {"status": status, "retired_at": None}
    return {"status": status, "retired_at": func.coalesce(SigningKey.retired_at, func.now())}


async def ensure_signing_key(session: AsyncSession, kek: KeyEncryptionKey,
                             initial: NewSigningKey | None = None) -> str:
    """The current key's kid; creates one (from ``initial``, else freshly generated) when there is none."""
    current = (await session.execute(select(SigningKey).where(SigningKey.status == "current"))).scalar_one_or_none()
    if current is not None:
        return current.kid
    key = initial or generate_signing_key()
    await session.execute(
        insert(SigningKey).values(kid=key.kid, public_jwk=key.public_jwk, status="current", **_wrapped(key, kek))
        .on_conflict_do_nothing()
    )
    return key.kid


async def sync_signing_keys(session: AsyncSession, file_keys: list[NewSigningKey], kek: KeyEncryptionKey) -> str:
    """The database is the one source of truth for the signing keys (private parts wrapped under the KEK).
    A key file only seeds a database that holds no key yet: its first key signs, its second stays published
    as the previous one, any other is retired. Once the database holds keys the file changes nothing, so a
    stale file (a secret from before a rotation) can neither revert the rotation nor give a destroyed
    private part back. Returns the current kid."""
    await session.execute(text("LOCK TABLE signing_keys IN EXCLUSIVE MODE"))
    held = (await session.execute(select(func.count()).select_from(SigningKey))).scalar_one()
    if held or not file_keys:
        return await ensure_signing_key(session, kek)
    for position, key in enumerate(file_keys):
        status = "current" if position == 0 else "previous" if position == 1 else "retired"
        await session.execute(insert(SigningKey).values(
            kid=key.kid, public_jwk=key.public_jwk, status=status,
            retired_at=None if position == 0 else func.now(), **_wrapped(key, kek)))
    return file_keys[0].kid


async def rotate_signing_key(session: AsyncSession, kek: KeyEncryptionKey, *, activate_in_seconds: float = 0,
                             keep_previous: bool = True) -> str:
    """A new signing key. It is published at once and signs from ``activate_in_seconds`` on: resource servers
    refetch the JWKS at most every 30 s (shared.auth), so a key published a minute before it signs is known
    everywhere by then. The key it replaces stays published as ``previous`` (tokens it signed stay valid until
    they expire) unless ``keep_previous`` is false (a compromised key: retired at once)."""
    await session.execute(text("LOCK TABLE signing_keys IN EXCLUSIVE MODE"))
    await session.execute(update(SigningKey).where(SigningKey.status == "next").values(**_status("retired")))
    key = generate_signing_key()
    await session.execute(insert(SigningKey).values(
        kid=key.kid, public_jwk=key.public_jwk, status="next",
        activates_at=func.now() + timedelta(seconds=activate_in_seconds), **_wrapped(key, kek)))
    if not keep_previous:
        await session.execute(update(SigningKey).where(SigningKey.status == "current").values(**_status("retired")))
    if activate_in_seconds <= 0:
        await _promote(session, key.kid)
    return key.kid


async def _promote(session: AsyncSession, kid: str) -> None:
    await session.execute(update(SigningKey).where(SigningKey.status == "previous").values(**_status("retired")))
    await session.execute(update(SigningKey).where(SigningKey.status == "current").values(**_status("previous")))
    await session.execute(update(SigningKey).where(SigningKey.kid == kid).values(**_status("current")))


# The current key and a due ``next`` one, in one round trip (this runs for every token issued).
_SIGNING_KEYS = select(SigningKey, (SigningKey.activates_at <= func.now()).label("due")).where(
    SigningKey.status.in_(_SIGNS))


async def signing_key(session: AsyncSession) -> SigningKey:
    """The key to sign with now; a ``next`` key whose time has come is promoted first (once per rotation)."""
    current: SigningKey | None = None
    due: str | None = None
    for key, key_due in (await session.execute(_SIGNING_KEYS)).all():
        if key.status == "current":
            current = key
        elif key_due:
            due = key.kid
    if current is not None and due is None:
        return current
    if due is not None:
        await session.execute(text("LOCK TABLE signing_keys IN EXCLUSIVE MODE"))
        still_due = (await session.execute(
            select(SigningKey.kid).where(SigningKey.kid == due, SigningKey.status == "next"))).scalar_one_or_none()
        if still_due is not None:
            await _promote(session, due)
    return (await session.execute(select(SigningKey).where(SigningKey.status == "current")
                                  .execution_options(populate_existing=True))).scalar_one()


async def retire_previous_signing_key(session: AsyncSession) -> None:
    """After a rotation, once every token the previous key signed has expired: stop publishing it."""
    await session.execute(update(SigningKey).where(SigningKey.status == "previous").values(**_status("retired")))


async def destroy_expired_private_keys(session: AsyncSession, grace_seconds: float) -> list[str]:
    """Destroy the private part of every key that stopped signing more than ``grace_seconds`` ago; their
    public parts stay (published while a key is the previous one). Returns their kids."""
    destroyed = await session.execute(
        update(SigningKey)
        .where(SigningKey.status.not_in(_SIGNS), SigningKey.private_key_wrapped.is_not(None),
               SigningKey.retired_at <= func.now() - timedelta(seconds=grace_seconds))
        .values(private_key_wrapped=None, kek_id=None)
        .returning(SigningKey.kid))
    kids = list(destroyed.scalars())
    if kids:
        log.info("signing_keys_private_parts_destroyed", kids=kids)
    return kids


async def rewrap_signing_keys(session: AsyncSession, ring: KeyRing) -> int:
    """Wrap every private part under ``ring.current`` (a KEK rotation); returns how many were re-wrapped."""
    await session.execute(text("LOCK TABLE signing_keys IN EXCLUSIVE MODE"))
    rows = (await session.execute(select(SigningKey).where(
        SigningKey.private_key_wrapped.is_not(None), SigningKey.kek_id != ring.current.key_id))).scalars().all()
    for row in rows:
        pem = unwrap_private_pem(row.private_key_wrapped, row.kek_id, row.kid, ring)
        row.private_key_wrapped = wrap_private_pem(pem, row.kid, ring.current)
        row.kek_id = ring.current.key_id
    await session.flush()
    return len(rows)


async def count_signing_keys_not_under(session: AsyncSession, kek: KeyEncryptionKey) -> int:
    return int((await session.execute(select(func.count()).select_from(SigningKey).where(
        SigningKey.private_key_wrapped.is_not(None), SigningKey.kek_id != kek.key_id))).scalar_one())


_PUBLISHED = ("next", "current", "previous")


def _publication_order(status: str) -> int:
    return {"next": 0, "current": 1, "previous": 2}[status]


async def published_signing_keys(session: AsyncSession, ring: KeyRing) -> list[tuple[str, str]]:
    """(kid, private PEM) of the newest key first (next, else current), then the one before if it still has
    its private part: the content of the key file secret."""
    rows = (await session.execute(
        select(SigningKey.kid, SigningKey.private_key_wrapped, SigningKey.kek_id, SigningKey.status)
        .where(SigningKey.status.in_(_PUBLISHED), SigningKey.private_key_wrapped.is_not(None))
    )).all()
    ordered = sorted(rows, key=lambda r: _publication_order(r.status))[:2]
    return [(r.kid, unwrap_private_pem(r.private_key_wrapped, r.kek_id, r.kid, ring)) for r in ordered]


async def published_jwks(session: AsyncSession) -> list[dict[str, Any]]:
    rows = (await session.execute(
        select(SigningKey.public_jwk, SigningKey.status).where(SigningKey.status.in_(_PUBLISHED))
    )).all()
    return [dict(r.public_jwk) for r in sorted(rows, key=lambda r: (r.status != "current", r.status))]


# --- agencies ----------------------------------------------------------------------------------------------


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


_JTI_PURGE_SECONDS = 30.0
_KEY_PURGE_SECONDS = 60.0


class RegistryService:
    """The use cases, bound to the database and the settings of one running registry."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], settings: RegistrySettings,
                 vault: SigningKeyVault | None = None, *, resolver: Resolver | None = None) -> None:
        """``resolver`` replaces the DNS lookups of agencies' jwks_uri hosts (tests)."""
        self.sessions = sessions
        self.settings = settings
        self.source = settings.source
        self.vault = vault or SigningKeyVault(settings.kek_ring)
        self.outbound = settings.outbound_policy()
        if resolver is not None:
            self.outbound = dataclasses.replace(self.outbound, resolver=resolver)
        self.remote_jwks = RemoteJWKS(self.outbound)
        self._next_jti_purge = 0.0  # monotonic time of the next purge of expired assertion jtis
        self._next_key_purge = 0.0  # ... and of the next destruction of retired keys' private parts
        self.limiter = RateLimiter(settings.token_requests_per_minute, settings.token_burst)
        issuer = settings.issuer.rstrip("/")
        self.policy = domain.AssertionPolicy(
            # RFC 7523 3: the issuer or the endpoint's URL (as the issuer names it, or as the service is reached).
            audiences=frozenset({issuer, issuer + "/", settings.token_url, issuer + "/oauth/introspect",
                                 issuer + "/oauth/revoke", settings.base_url.rstrip("/") + "/oauth/token"}),
            max_lifetime_seconds=settings.assertion_max_lifetime_seconds,
            leeway_seconds=settings.assertion_leeway_seconds,
        )

    async def aclose(self) -> None:
        await self.remote_jwks.aclose()

    # -- agencies --------------------------------------------------------------------------------------

    async def _check_jwks_uri(self, jwks_uri: object) -> None:
        if jwks_uri is not None:
            await require_callable_url(str(jwks_uri), self.outbound, loc=["body", "jwks_uri"],
                                       slug="jwks-uri-not-allowed")

    async def register_agency(self, body: AgencyCreate) -> tuple[Agency, str | None]:
        _refuse_platform_scopes(domain.scopes_the_api_may_not_grant(body.scopes))
        await self._check_jwks_uri(body.jwks_uri)
        credentials, secret = _credentials(body.jwks, body.jwks_uri, body.generate_secret)
        async with unit_of_work(self.sessions) as session:
            agency = await add_agency(session, self.source, name=body.name, kind=body.kind,
                                      country=body.country, scopes=body.scopes, credentials=credentials)
        log.info("agency_registered", agency_id=agency.id)
        return agency, secret

    async def list_agencies(self, limit: int, offset: int) -> tuple[list[Agency], bool]:
        async with unit_of_work(self.sessions) as session:
            rows = (await session.execute(
                select(Agency).order_by(Agency.created_at, Agency.id).offset(offset).limit(limit + 1)
            )).scalars().all()
        return list(rows[:limit]), len(rows) > limit

    async def agencies_by_id(self, ids: set[str]) -> dict[str, Agency]:
        async with unit_of_work(self.sessions) as session:
            rows = (await session.execute(select(Agency).where(Agency.id.in_(ids)))).scalars().all()
        return {a.id: a for a in rows}

    async def get_agency(self, agency_id: str) -> Agency:
        async with unit_of_work(self.sessions) as session:
            agency = await session.get(Agency, agency_id)
        if agency is None:
            raise not_found("agency")
        return agency

    async def update_agency(self, agency_id: str, body: AgencyPatch) -> tuple[Agency, str | None]:
        secret: str | None = None
        await self._check_jwks_uri(body.jwks_uri)
        async with unit_of_work(self.sessions) as session:
            agency = await session.get(Agency, agency_id, with_for_update=True)
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
                    raise Problem(422, "validation-error", detail, title="Unprocessable Content",
                                  errors=[{"loc": ["body", "scopes"], "msg": detail}])
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

    # -- the authorization server ----------------------------------------------------------------------

    async def throttle(self, form: dict[str, str], basic: str | None, address: str) -> None:
        """429 for a client over its rate. The first refusal of a run is an access record (token.refused,
        error rate_limited); the rest are not, so a flood cannot turn into a flood of writes."""
        hint: str | None = None
        if basic is not None:
            hint = domain.client_id_hint(_basic_client_id(basic))
        elif form.get("client_assertion"):
            try:
                _, claims = read_unverified(form["client_assertion"])
                hint = domain.client_id_hint(claims.get("sub"))
            except OAuthError:
                hint = None
        hint = hint or domain.client_id_hint(form.get("client_id"))
        allowed, first_refusal = self.limiter.check(f"{hint}|{address}")
        if not allowed:
            if first_refusal:
                await self.record_refusal(form, basic, form.get("grant_type"),
                                          OAuthError("invalid_request", "rate limited"), error="rate_limited")
            raise Problem(429, "too-many-requests", "Too many token requests; slow down.",
                          headers={"Retry-After": str(self.limiter.retry_after())})

    async def _authenticate(self, session: AsyncSession, form: dict[str, str], basic: str | None,
                            now: float) -> tuple[Agency, tuple[str, float] | None]:
        """The client (not yet checked for suspension) and, for an assertion, its (jti, exp)."""
        assertion = form.get("client_assertion")
        assertion_type = form.get("client_assertion_type")
        if "client_secret" in form:
            raise OAuthError("invalid_client", "client_secret_post is not supported; use HTTP Basic or a "
                                               "private_key_jwt client assertion.")
        if basic is not None and (assertion or assertion_type):
            raise OAuthError("invalid_request", "Use one client authentication method, not two.")
        if basic is not None:
            client_id, secret = _basic_credentials(basic)
            agency = await _agency_by_client(session, client_id)
            if agency is None or agency.secret_hash is None or not verify_secret(secret, agency.secret_hash):
                raise OAuthError("invalid_client", "Client authentication failed.")
            return agency, None
        if assertion_type is None and assertion is None:
            raise OAuthError("invalid_client", "Client authentication is required.")
        if assertion_type != domain.ASSERTION_TYPE:
            raise OAuthError("invalid_client", f"client_assertion_type must be {domain.ASSERTION_TYPE}.")
        if not assertion:
            raise OAuthError("invalid_client", "client_assertion is missing.")
        header, unverified = read_unverified(assertion)
        claimed = unverified.get("sub")
        if not isinstance(claimed, str) or not claimed:
            raise OAuthError("invalid_client", "The client assertion has no 'sub' claim.")
        if form.get("client_id") not in (None, claimed):
            raise OAuthError("invalid_client", "client_id does not match the assertion's subject.")
        agency = await _agency_by_client(session, claimed)
        if agency is None or (agency.jwks is None and agency.jwks_uri is None):
            raise OAuthError("invalid_client", "Client authentication failed.")
        if agency.jwks is not None:
            claims = verify_assertion(assertion, header, unverified, client_keys(agency.jwks))
        else:
            assert agency.jwks_uri is not None
            try:
                claims = verify_assertion(assertion, header, unverified, await self.remote_jwks.keys(agency.jwks_uri))
            except OAuthError:
                # The agency may have rotated its keys since we cached them.
                keys = await self.remote_jwks.keys(agency.jwks_uri, refresh=True)
                claims = verify_assertion(assertion, header, unverified, keys)
        return agency, domain.check_assertion_claims(claims, agency.client_id, self.policy, now)

    async def _consume_jti(self, session: AsyncSession, client_id: str, jti: str, exp: float) -> None:
        # Expired entries go, now and then rather than on every request (a statement per token issued): an
        # assertion past its exp is refused anyway, so its jti need not be kept; one kept a little longer
        # only refuses that jti's reuse a little longer.
        if time.monotonic() >= self._next_jti_purge:
            self._next_jti_purge = time.monotonic() + _JTI_PURGE_SECONDS
            await session.execute(delete(UsedAssertion).where(UsedAssertion.expires_at < func.now()))
        inserted = await session.execute(
            insert(UsedAssertion)
            .values(client_id=client_id, jti=jti,
                    expires_at=datetime.fromtimestamp(exp + self.policy.leeway_seconds, UTC))
            .on_conflict_do_nothing()
            .returning(UsedAssertion.jti)
        )
        if inserted.first() is None:
            raise OAuthError("invalid_client", "The client assertion was already used (jti replay).")

    async def authenticate_client(self, session: AsyncSession, form: dict[str, str],
                                  basic: str | None) -> Agency:
        now = time.time()
        agency, assertion = await self._authenticate(session, form, basic, now)
        domain.check_client_active(agency.status)
        if assertion is not None:
            await self._consume_jti(session, agency.client_id, *assertion)
        return agency

    async def issue_token(self, form: dict[str, str], basic: str | None) -> dict[str, Any]:
        grant_type = form.get("grant_type")
        try:
            if not grant_type:
                raise OAuthError("invalid_request", "grant_type is required.")
            if grant_type != "client_credentials":
                raise OAuthError("unsupported_grant_type", "Only the client_credentials grant is supported.")
            async with unit_of_work(self.sessions) as session:
                agency = await self.authenticate_client(session, form, basic)
                scopes = domain.grant_scopes(form.get("scope"), domain.holdable_scopes(agency.kind, agency.scopes))
                if time.monotonic() >= self._next_key_purge:
                    self._next_key_purge = time.monotonic() + _KEY_PURGE_SECONDS
                    await destroy_expired_private_keys(session, self.settings.signing_key_grace_seconds)
                key = await signing_key(session)
                private_key = self.vault.private_key(key.kid, key.private_key_wrapped, key.kek_id)
                now = int(time.time())
                jti = uuid.uuid4().hex
                claims = {
                    "iss": self.settings.issuer, "sub": agency.client_id, "client_id": agency.client_id,
                    "aud": self.settings.audience, "agency": agency.id, "scope": " ".join(scopes),
                    "iat": now, "nbf": now, "exp": now + self.settings.access_token_lifetime_seconds,
                    "jti": jti,
                }
                token = sign_access_token(private_key, key.kid, claims)
                await record_access(session, source=self.source, record=AccessRecord(
                    action="token.issue", outcome="success", agency=agency.id, client_id=agency.client_id,
                    resource_type="Token", resource_id=jti,
                    details={"grant_type": "client_credentials", "scopes": scopes,
                             "auth_method": "client_secret_basic" if basic else "private_key_jwt"},
                ))
        except OAuthError as refusal:
            await self.record_refusal(form, basic, grant_type, refusal)
            raise
        return {"access_token": token, "token_type": "Bearer",
                "expires_in": self.settings.access_token_lifetime_seconds, "scope": " ".join(scopes)}

    async def record_refusal(self, form: dict[str, str], basic: str | None, grant_type: str | None,
                             refusal: OAuthError, *, error: str | None = None) -> None:
        claimed: str | None = None
        if basic is not None:
            claimed = _basic_client_id(basic)
        elif form.get("client_assertion"):
            try:
                claimed = read_unverified(form["client_assertion"])[1].get("sub")
            except OAuthError:
                claimed = None
        client_id = domain.client_id_hint(claimed or form.get("client_id"))
        async with unit_of_work(self.sessions) as session:
            agency = await _agency_by_client(session, client_id) if client_id else None
            await record_access(session, source=self.source, record=AccessRecord(
                action="token.refused", outcome="denied", agency=agency.id if agency else None,
                # Only an id this registry could have issued reaches the permanent log (audit refuses others).
                client_id=client_id if is_refnet_id(client_id, "client") else None, resource_type="Token",
                details={"error": error or refusal.error,
                         "grant_type": grant_type if domain.client_id_hint(grant_type) else None},
            ))
        log.info("token_refused", error=refusal.error, client_id=client_id)

    async def jwks(self) -> dict[str, Any]:
        async with unit_of_work(self.sessions) as session:
            return {"keys": await published_jwks(session)}

    async def _active_claims(self, session: AsyncSession, token: str) -> dict[str, Any] | None:
        claims = verify_access_token(token, await published_jwks(session))
        if claims is None or claims.get("iss") != self.settings.issuer:
            return None
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or exp <= time.time():
            return None
        jti = claims.get("jti")
        if not isinstance(jti, str) or await session.get(RevokedToken, jti) is not None:
            return None
        agency = await session.get(Agency, claims.get("agency"))
        if agency is None or agency.status != "active":
            return None
        return claims

    async def introspect(self, form: dict[str, str], basic: str | None) -> dict[str, Any]:
        """RFC 7662. A caller that may not know about the token (domain.may_introspect) gets the answer for
        an inactive token (section 2.2), not an error: whatever it sends, it learns nothing, not even whether
        the token is valid, and it is decided before the token is checked, so timing tells nothing either."""
        token = form.get("token")
        async with unit_of_work(self.sessions) as session:
            caller = await self.authenticate_client(session, form, basic)
            if not token:
                raise OAuthError("invalid_request", "token is required.")
            if not domain.may_introspect(caller.kind, caller.client_id, unverified_claims(token).get("client_id")):
                return {"active": False}
            claims = await self._active_claims(session, token)
        if claims is None or not domain.may_introspect(caller.kind, caller.client_id, claims.get("client_id")):
            return {"active": False}
        keep = ("scope", "client_id", "sub", "aud", "iss", "exp", "iat", "nbf", "jti", "agency")
        return {"active": True, "token_type": "Bearer", **{k: claims[k] for k in keep if k in claims}}

    async def revoke(self, form: dict[str, str], basic: str | None) -> None:
        token = form.get("token")
        async with unit_of_work(self.sessions) as session:
            caller = await self.authenticate_client(session, form, basic)
            if not token:
                raise OAuthError("invalid_request", "token is required.")
            claims = verify_access_token(token, await published_jwks(session))
            if claims is None:
                return  # RFC 7009 2.2: an invalid token is not an error
            if claims.get("sub") != caller.client_id and "admin" not in caller.scopes:
                raise OAuthError("unauthorized_client", "A client may revoke only its own tokens.")
            exp = claims.get("exp")
            expires = datetime.fromtimestamp(exp if isinstance(exp, int | float) else time.time(), UTC)
            jti = str(claims.get("jti"))
            added = (await session.execute(insert(RevokedToken).values(jti=jti, expires_at=expires)
                                           .on_conflict_do_nothing().returning(RevokedToken.jti))).first()
            if added is not None:
                # Resource servers validate tokens locally: this event is how they learn to refuse this one.
                agency_id = str(claims.get("agency") or "")
                payload = events.TokenRevokedPayload(
                    jti=jti, agency_id=agency_id, client_id=str(claims.get("sub")),
                    expires_at=expires.isoformat().replace("+00:00", "Z"))
                await add_event(session, source=self.source, topic=events.TOPIC, type=events.TOKEN_REVOKED,
                                aggregate_type="Token", aggregate_id=agency_id or jti,
                                payload=payload.model_dump(), subject=jti)
        log.info("token_revoked", by=caller.client_id)

    # -- the directory ---------------------------------------------------------------------------------

    async def _caller_agency(self, session: AsyncSession, agency_id: str) -> Agency:
        agency = await session.get(Agency, agency_id)
        if agency is None or agency.status != "active":
            raise Problem(403, "agency-not-active", "The calling agency is not registered or not active.")
        return agency

    async def _own_service(self, session: AsyncSession, agency_id: str, service_id: str) -> Service:
        await self._caller_agency(session, agency_id)
        service = await session.get(Service, service_id, with_for_update=True)
        if service is None or service.agency_id != agency_id or service.status != "active":
            raise not_found("service")
        return service

    async def create_service(self, agency_id: str, body: ServiceCreate) -> Service:
        async with unit_of_work(self.sessions) as session:
            await self._caller_agency(session, agency_id)
            service = await add_service(session, self.source, agency_id, body)
        return service

    async def update_service(self, agency_id: str, service_id: str, body: ServicePatch) -> Service:
        async with unit_of_work(self.sessions) as session:
            service = await self._own_service(session, agency_id, service_id)
            values = body.model_dump(exclude_unset=True, exclude={"locations"}, mode="json")
            for name, value in values.items():
                if value is None and name not in NULL_MEANS:
                    raise Problem(422, "validation-error", f"The request is not valid: body.{name}.",
                                  errors=[{"loc": ["body", name], "msg": "may not be null"}])
                setattr(service, name, value if value is not None else NULL_MEANS[name])
            if "locations" in body.model_fields_set:
                service.locations = _locations(service.id, body.locations or [])
            service.updated_at = datetime.now(UTC)
            await session.flush()
            await emit_service(session, self.source, events.SERVICE_UPDATED, service)
        return service

    async def withdraw_service(self, agency_id: str, service_id: str) -> None:
        async with unit_of_work(self.sessions) as session:
            service = await self._own_service(session, agency_id, service_id)
            service.status = "withdrawn"
            service.updated_at = datetime.now(UTC)
            await session.flush()
            await emit_service(session, self.source, events.SERVICE_WITHDRAWN, service)

    async def set_capacity(self, agency_id: str, service_id: str, body: CapacityIn) -> Service:
        async with unit_of_work(self.sessions) as session:
            service = await self._own_service(session, agency_id, service_id)
            service.capacity_available, service.capacity_total = body.available, body.total
            service.capacity_status = body.status
            service.updated_at = datetime.now(UTC)
            await session.flush()
            await emit_service(session, self.source, events.SERVICE_CAPACITY_CHANGED, service)
        return service

    async def get_service(self, service_id: str) -> Service:
        async with unit_of_work(self.sessions) as session:
            row = (await session.execute(
                select(Service).join(Agency, Agency.id == Service.agency_id)
                .where(Service.id == service_id, Service.status == "active", Agency.status == "active")
            )).scalar_one_or_none()
        if row is None:
            raise not_found("service")
        return row

    async def search(self, *, taxonomy: str | None = None, country: str | None = None,
                     language: str | None = None, accepts_children: bool | None = None,
                     accepting: bool | None = None, point: tuple[float, float] | None = None,
                     radius_km: float | None = None, q: str | None = None, offset: int = 0, limit: int = 50,
                     count: bool = False) -> tuple[list[tuple[ServiceRecord, float | None]], int | None]:
        """Active services of active agencies matching every filter given; by distance when ``point``."""
        shape = SearchShape(taxonomy=bool(taxonomy), country=bool(country), language=bool(language),
                            accepts_children=accepts_children, accepting=accepting, near=point is not None,
                            radius=point is not None and radius_km is not None, q=bool(q))
        params: dict[str, Any] = {"offset": offset, "limit": limit}
        if taxonomy:
            params.update(taxonomy=taxonomy, taxonomy_like=_like_prefix(taxonomy),
                          taxonomy_root=taxonomy.split(".", 1)[0])
        if country:
            params["countries"] = [country]
        if language:
            params["languages"] = [language]
        if q:
            params["q_pattern"] = "%" + _escape_like(q) + "%"
        if point is not None:
            params.update(lat=point[0], lon=point[1])
            if radius_km is not None:
                lat_min, lat_max, lon_min, lon_max = domain.bounding_box(point[0], point[1], radius_km)
                params.update(radius_km=radius_km, lat_min=lat_min, lat_max=lat_max, lon_min=lon_min,
                              lon_max=lon_max)
        page_statement, count_statement = _search_statements(shape)
        total = None
        # Core statements on the session's connection: the ORM has nothing to do here.
        async with self.sessions() as session:
            if count:
                async with session.begin():  # the total and the page from one snapshot
                    connection = await session.connection()
                    total = (await connection.execute(count_statement, params)).scalar_one()
                    rows = (await connection.execute(page_statement, params)).all()
            else:
                # One statement is its own snapshot: no BEGIN/COMMIT round trips around it.
                connection = await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
                rows = (await connection.execute(page_statement, params)).all()
        return [(ServiceRecord.of(row), row[_KM]) for row in rows], total


@dataclass(frozen=True, slots=True)
class SearchShape:
    """Which filters a search has (not their values): one statement per shape, built once."""

    taxonomy: bool
    country: bool
    language: bool
    accepts_children: bool | None
    accepting: bool | None
    near: bool
    radius: bool
    q: bool


@functools.cache
def _search_statements(shape: SearchShape) -> tuple[Select[Any], Select[Any]]:
    """The page and the count statements of a search of this shape, the values left as bound parameters.

    Built once per shape and reused, so a search neither rebuilds a large expression tree nor has
    SQLAlchemy compute its cache key again (the statement object memoizes it). Columns, not ORM objects:
    the page is read in one statement, its locations aggregated as JSON.
    """
    conditions: list[ColumnElement[bool]] = [Service.status == "active", Agency.status == "active"]
    if shape.taxonomy:
        conditions.append(or_(Service.taxonomy == bindparam("taxonomy"),
                              Service.taxonomy.like(bindparam("taxonomy_like"))))
    if shape.country:
        conditions.append(Service.countries.contains(bindparam("countries", type_=Service.countries.type)))
    if shape.language:
        conditions.append(Service.languages.contains(bindparam("languages", type_=Service.languages.type)))
    if shape.accepts_children is not None:
        conditions.append(Service.accepts_children.is_(shape.accepts_children))
    if shape.accepting is True:
        conditions.append(and_(Service.capacity_status == "accepting", Service.capacity_available > 0))
    elif shape.accepting is False:
        conditions.append(or_(Service.capacity_status != "accepting", Service.capacity_available <= 0))
    if shape.q:
        pattern = bindparam("q_pattern", type_=Text)
        conditions.append(or_(_any_text_matches(Service.names, pattern),
                              _any_text_matches(Service.descriptions, pattern)))
    query: Any = select(*(Service.__table__.c[name] for name in _SERVICE_COLUMNS)).join(
        Agency, Agency.id == Service.agency_id)
    if shape.near:
        located = [Location.latitude.is_not(None), Location.longitude.is_not(None), *_located_filters(shape)]
        if shape.radius:
            # Only the locations in the radius's bounding box, found by the GiST index on their points
            # (migration registry_0004): distances are then computed for a few rows, not the directory.
            located.append(_location_point().op("<@")(func.box(
                func.point(bindparam("lon_min", type_=Float), bindparam("lat_min", type_=Float)),
                func.point(bindparam("lon_max", type_=Float), bindparam("lat_max", type_=Float)))))
        nearest = (
            select(Location.service_id, func.min(_haversine()).label("km"))
            .where(*located)
            .group_by(Location.service_id).subquery()
        )
        distance = nearest.c.km
        query = query.join(nearest, nearest.c.service_id == Service.id).add_columns(distance.label("km"))
        if shape.radius:
            conditions.append(distance <= bindparam("radius_km", type_=Float))
        query = query.order_by(distance, Service.id)
    else:
        query = query.add_columns(literal(None, Float).label("km")).order_by(Service.created_at, Service.id)
    query = query.where(*conditions)
    page = query.offset(bindparam("offset", type_=Integer)).limit(bindparam("limit", type_=Integer)).subquery("page")
    # The locations of the page's services only, aggregated after the LIMIT (json, not jsonb: jsonb would
    # round the coordinates to 15 digits).
    located_here = (
        select(func.coalesce(func.json_agg(aggregate_order_by(_location_json(), Location.position)),
                             literal([], JSON)))
        .where(Location.service_id == page.c.id).scalar_subquery()
    )
    page_statement = select(page, located_here.label("locations")).order_by(
        *((page.c.km, page.c.id) if shape.near else (page.c.created_at, page.c.id)))
    count_statement = select(func.count()).select_from(query.order_by(None).subquery())
    return page_statement, count_statement


@dataclass(frozen=True, slots=True)
class LocationRecord:
    """A location as the directory search reads it (what the API shows of a ``Location``)."""

    id: str
    name: str | None
    address: str | None
    city: str | None
    country: str
    latitude: float | None
    longitude: float | None


@dataclass(frozen=True, slots=True)
class ServiceRecord:
    """A service as the directory search reads it: the columns of ``Service`` and its locations, without
    the ORM's per-object bookkeeping (a search page holds up to 500 services)."""

    locations: list[LocationRecord]
    id: str
    agency_id: str
    taxonomy: str
    names: dict[str, str]
    descriptions: dict[str, str]
    countries: list[str]
    admin_areas: list[str]
    languages: list[str]
    accepts_children: bool
    eligibility: dict[str, Any]
    hours: str | None
    contact: dict[str, Any]
    capacity_available: int
    capacity_total: int
    capacity_status: str
    status: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: Sequence[Any]) -> ServiceRecord:
        """From a search row: the columns ``_SERVICE_COLUMNS`` in order, ``km``, then ``locations`` (JSON
        objects). By position: looking 18 columns up by name costs more than the rest of the conversion."""
        return cls([LocationRecord(**loc) for loc in row[_KM + 1]], *row[:_KM])


#: The services' columns a search reads, in ``ServiceRecord``'s order (so that a row converts by position).
_SERVICE_COLUMNS = tuple(f.name for f in fields(ServiceRecord) if f.name != "locations")
_KM = len(_SERVICE_COLUMNS)
_LOCATION_FIELDS = tuple(f.name for f in fields(LocationRecord))


def _location_json() -> ColumnElement[Any]:
    return func.json_build_object(*(part for name in _LOCATION_FIELDS for part in (name, getattr(Location, name))))


def _located_filters(shape: SearchShape) -> list[ColumnElement[bool]]:
    """The search's filters on the copies each location keeps of its service's attributes, in the terms of
    the index ``ix_locations_search`` (migration registry_0004): near a point, active, of a taxonomy root,
    accepting. They only let the index discard locations early: the services' own columns are checked too.
    """
    # "= true" (the planner reduces it to the bare column) matches the index's predicate and its columns.
    filters: list[ColumnElement[bool]] = [Location.service_active == true()]
    if shape.taxonomy:
        filters.append(func.split_part(Location.service_taxonomy, ".", 1) == bindparam("taxonomy_root"))
        filters.append(or_(Location.service_taxonomy == bindparam("taxonomy"),
                           Location.service_taxonomy.like(bindparam("taxonomy_like"))))
    if shape.accepting is not None:
        filters.append(Location.service_accepting == (true() if shape.accepting else false()))
    return filters


def _any_text_matches(texts: Any, pattern: ColumnElement[str]) -> ColumnElement[bool]:
    """Some language's text (not a language code: the JSON keys) matches the ILIKE pattern."""
    each = func.jsonb_each_text(texts).table_valued("key", "value")
    return exists(select(literal(1)).select_from(each).where(each.c.value.ilike(pattern, escape="\\")))


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _like_prefix(prefix: str) -> str:
    return _escape_like(prefix) + ".%"


def _location_point() -> ColumnElement[Any]:
    """A location as a PostgreSQL point (x = longitude, y = latitude): the expression the index is on."""
    return func.point(Location.longitude, Location.latitude)


def _haversine() -> ColumnElement[float]:
    """Great-circle distance in km from the point bound as ``lat``, ``lon`` to the location."""
    lat, lon = bindparam("lat", type_=Float), bindparam("lon", type_=Float)
    dlat = func.radians(Location.latitude - lat) / 2
    dlon = func.radians(Location.longitude - lon) / 2
    a = func.power(func.sin(dlat), 2) + func.cos(func.radians(lat)) * func.cos(
        func.radians(Location.latitude)) * func.power(func.sin(dlon), 2)
    return 2 * domain.EARTH_RADIUS_KM * func.asin(func.least(1.0, func.sqrt(a)))


def _locations(service_id: str, items: list[Any]) -> list[Location]:
    return [
        Location(id=new_id("loc"), service_id=service_id, position=i, name=loc.name, address=loc.address,
                 city=loc.city, country=loc.country, latitude=loc.latitude, longitude=loc.longitude)
        for i, loc in enumerate(items)
    ]


async def add_service(session: AsyncSession, source: str, agency_id: str, body: ServiceCreate,
                      service_id: str | None = None) -> Service:
    data = body.model_dump(mode="json")
    now = datetime.now(UTC)
    service = Service(
        id=service_id or new_id("svc"), agency_id=agency_id, taxonomy=body.taxonomy, names=body.names,
        descriptions=body.descriptions or {}, countries=body.countries, admin_areas=body.admin_areas or [],
        languages=body.languages or [], accepts_children=body.accepts_children,
        eligibility=data["eligibility"] or {}, hours=body.hours, contact=data["contact"] or {},
        capacity_available=body.capacity.available, capacity_total=body.capacity.total,
        capacity_status=body.capacity.status, status="active", created_at=now, updated_at=now,
    )
    service.locations = _locations(service.id, body.locations or [])
    session.add(service)
    await session.flush()
    await emit_service(session, source, events.SERVICE_PUBLISHED, service)
    return service


def service_payload(service: Service) -> dict[str, Any]:
    first = next((loc for loc in service.locations if loc.latitude is not None), None)
    return events.ServicePayload(
        service_id=service.id, agency_id=service.agency_id, taxonomy=service.taxonomy,
        status=service.status,  # type: ignore[arg-type]
        countries=list(service.countries), languages=list(service.languages),
        accepts_children=service.accepts_children,
        capacity=events.Capacity(available=service.capacity_available, total=service.capacity_total,
                                 status=service.capacity_status),  # type: ignore[arg-type]
        location=events.Point(lat=first.latitude, lon=first.longitude)  # type: ignore[arg-type]
        if first is not None else None,
    ).model_dump(mode="json")


async def emit_service(session: AsyncSession, source: str, type_: str, service: Service) -> None:
    await add_event(session, source=source, topic=events.TOPIC, type=type_, aggregate_type="Service",
                    aggregate_id=service.agency_id, payload=service_payload(service), subject=service.id)


# Built once: constructing the statement costs more than running it (this runs for every token request).
_AGENCY_BY_CLIENT = select(Agency).where(Agency.client_id == bindparam("client_id"))


async def _agency_by_client(session: AsyncSession, client_id: str) -> Agency | None:
    if not domain.client_id_hint(client_id):
        return None  # not an id this registry could have issued (and NUL would upset PostgreSQL)
    return (await session.execute(_AGENCY_BY_CLIENT, {"client_id": client_id})).scalar_one_or_none()


def _basic_credentials(header_value: str) -> tuple[str, str]:
    try:
        raw = base64.b64decode(header_value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise OAuthError("invalid_client", "The Basic credentials are malformed.") from None
    user, sep, password = raw.partition(":")
    if not sep or not user:
        raise OAuthError("invalid_client", "The Basic credentials are malformed.")
    # RFC 6749 2.3.1: client id and secret are form-urlencoded before Basic encoding.
    return unquote_plus(user), unquote_plus(password)


def _basic_client_id(header_value: str) -> str | None:
    try:
        return _basic_credentials(header_value)[0]
    except OAuthError:
        return None
