"""The OAuth 2.0 authorization server: client authentication (client_secret_basic, RFC 7523 private_key_jwt),
the token endpoint (client credentials), introspection (RFC 7662), revocation (RFC 7009) and the throttle.

Every issued or refused token writes an access record (``shared.access``) in the same transaction; a revocation
writes its event (``token.revoked``) to the outbox the same way.
"""

from __future__ import annotations

import base64
import binascii
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.registry import domain, events
from services.registry.domain import OAuthError
from services.registry.keyvault import SigningKeyVault
from services.registry.oauth import (
    RateLimiter,
    RemoteJWKS,
    client_keys,
    read_unverified,
    sign_access_token,
    unverified_claims,
    verify_access_token,
    verify_assertion,
    verify_secret,
)
from services.registry.service.signing_keys import destroy_expired_private_keys, published_jwks, signing_key
from services.registry.settings import RegistrySettings
from services.registry.store import queries
from services.registry.store.tables import Agency
from shared.access import AccessRecord, record_access
from shared.db import unit_of_work
from shared.errors import Problem
from shared.ids import is_refnet_id
from shared.outbound import OutboundPolicy
from shared.outbox import add_event
from shared.times import utc_text

log = structlog.get_logger("refnet.registry")

_JTI_PURGE_SECONDS = 30.0
#: Grants of people signing in at a first-party client (the OpenID Connect provider answers them).
_KEY_PURGE_SECONDS = 60.0


async def _agency_by_client(session: AsyncSession, client_id: str) -> Agency | None:
    if not domain.client_id_hint(client_id):
        return None  # not an id this registry could have issued (and NUL would upset PostgreSQL)
    return await queries.agency_by_client(session, client_id)


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


def assertion_policy(settings: RegistrySettings) -> domain.AssertionPolicy:
    issuer = settings.issuer.rstrip("/")
    return domain.AssertionPolicy(
        # RFC 7523 3: the issuer or the endpoint's URL (as the issuer names it, or as the service is reached).
        audiences=frozenset({issuer, issuer + "/", settings.token_url, issuer + "/oauth/introspect",
                             issuer + "/oauth/revoke", settings.base_url.rstrip("/") + "/oauth/token"}),
        max_lifetime_seconds=settings.assertion_max_lifetime_seconds,
        leeway_seconds=settings.assertion_leeway_seconds,
    )


class Authorization:
    """The authorization server's use cases, one transaction each, bound to one running registry (its
    throttle, its cache of clients' remote JWKS and its opened signing keys live in memory)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], settings: RegistrySettings,
                 vault: SigningKeyVault, outbound: OutboundPolicy) -> None:
        self.sessions = sessions
        self.settings = settings
        self.source = settings.source
        self.vault = vault
        self.remote_jwks = RemoteJWKS(outbound)
        self._next_jti_purge = 0.0  # monotonic time of the next purge of expired assertion jtis
        self._next_key_purge = 0.0  # ... and of the next destruction of retired keys' private parts
        self.limiter = RateLimiter(settings.token_requests_per_minute, settings.token_burst)
        self.policy = assertion_policy(settings)
        # The OpenID Connect provider's grants (service/sign_in.py), set by the app that runs both.
        self.person_grants: Callable[[dict[str, str], str | None], Awaitable[dict[str, Any]]] | None = None

    async def aclose(self) -> None:
        await self.remote_jwks.aclose()

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
            await queries.purge_used_assertions(session)
        expires_at = datetime.fromtimestamp(exp + self.policy.leeway_seconds, UTC)
        if not await queries.use_assertion(session, client_id, jti, expires_at):
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
            if grant_type in domain.PERSON_GRANT_TYPES and self.person_grants is not None:
                # A person's sign-in (code, refresh) at a first-party client: the OpenID Connect provider's.
                return await self.person_grants(form, basic)
            if grant_type != "client_credentials":
                raise OAuthError("unsupported_grant_type", "Supported grants: client_credentials (agencies' systems); "
                                 "authorization_code and refresh_token (first-party clients signing people in).")
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

    async def _active_claims(self, session: AsyncSession, token: str) -> dict[str, Any] | None:
        claims = verify_access_token(token, await published_jwks(session))
        if claims is None or claims.get("iss") != self.settings.issuer:
            return None
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or exp <= time.time():
            return None
        jti = claims.get("jti")
        if not isinstance(jti, str) or await queries.is_revoked(session, jti):
            return None
        agency = await queries.agency(session, claims.get("agency"))
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
            if await queries.revoke(session, jti, expires):
                # Resource servers validate tokens locally: this event is how they learn to refuse this one.
                agency_id = str(claims.get("agency") or "")
                payload = events.TokenRevokedPayload(
                    jti=jti, agency_id=agency_id, client_id=str(claims.get("sub")),
                    expires_at=utc_text(expires))
                await add_event(session, source=self.source, topic=events.TOPIC, type=events.TOKEN_REVOKED,
                                aggregate_type="Token", aggregate_id=agency_id or jti,
                                payload=payload.model_dump(), subject=jti)
        log.info("token_revoked", by=caller.client_id)
