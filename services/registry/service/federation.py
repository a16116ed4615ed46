"""Brokering agencies' own identity providers (issue #20 part 5): the trusts an operator registers, and a
person's sign-in through their agency's provider.

The flow: ``start`` sends the browser to the upstream's authorization endpoint with the registry's own state,
nonce and PKCE verifier (authlib's client builds the request); ``finish`` takes the code back, exchanges it
(authlib's client: PKCE verifier, client authentication), verifies the ID token (joserfc: signature against the
provider's JWKS, an allow-listed asymmetric algorithm, ``iss``, ``aud``/``azp``, ``exp``, ``iat``, ``nonce``),
maps its claims (federation.py), links or creates the person by (issuer, ``sub``) and opens a complete sign-in
session of the registry's own provider: the route then goes on with the registry's authorization request, as
after a password and TOTP sign-in. No upstream token is stored; of the ID token only ``sub`` (in the link)
and the mapped roles are kept. Every outbound call goes through the guarded client (shared.outbound).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import structlog
from authlib.integrations.base_client.errors import OAuthError as AuthlibOAuthError

with warnings.catch_warnings():
    # authlib's httpx client prefers the httpx2 fork and says so once, at import; RefNet runs on httpx.
    warnings.simplefilter("ignore")
    from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.registry import domain
from services.registry import federation as rules
from services.registry.domain import OAuthError
from services.registry.keyvault import SigningKeyVault
from services.registry.oauth import ACCESS_TOKEN_ALG, RemoteJWKS
from services.registry.service import people
from services.registry.service.signing_keys import signing_key
from services.registry.settings import RegistrySettings
from services.registry.store import federation as store
from services.registry.store import people as people_store
from services.registry.store import queries
from services.registry.store.federation_tables import FederatedIdentity, FederatedLogin, IdentityProvider
from services.registry.store.tables import Agency, Person, SignInSession
from shared.access import AccessRecord, record_access
from shared.db import unit_of_work
from shared.errors import Problem, invalid, not_found
from shared.ids import new_id
from shared.kek import KeyRing
from shared.outbound import GuardedTransport, OutboundPolicy, call

log = structlog.get_logger("refnet.registry.federation")

_DISCOVERY_MAX_AGE = 300.0
_MAX_DOCUMENT_BYTES = 64 * 1024


def _secret_context(idp_id: str) -> bytes:
    # Bound to the trust: a wrapped secret copied onto another trust's row does not open.
    return b"refnet-registry:idp-client-secret:" + idp_id.encode()


def trust_of(row: IdentityProvider) -> rules.Trust:
    return rules.Trust(row.issuer, row.discovery_url, row.jwks_uri, row.client_id, row.auth_method, row.scope,
                       row.login_claim, row.roles_claim, dict(row.role_map), row.tenant_claim, row.tenant_value,
                       tuple(row.mfa_amr), tuple(row.mfa_acr), tuple(row.algorithms))


@dataclass(frozen=True)
class Endpoints:
    authorization: str
    token: str
    jwks_uri: str


@dataclass(frozen=True)
class Finished:
    """A brokered sign-in's outcome: a sign-in session's cookie value and the authorization request to go on
    with, or why it was refused (a reason code; federation.refusal_text words it)."""

    agency_name: str
    return_query: str = ""
    session_token: str | None = None
    refused: str | None = None


class _BoundedTransport(httpx.AsyncBaseTransport):
    """The guarded transport, with the same bounds as ``shared.outbound.call`` for authlib's token request: a
    total deadline, at most ``max_response_bytes`` read, no compressed answer (it could grow in memory)."""

    def __init__(self, policy: OutboundPolicy) -> None:
        self.policy = policy
        self.inner = GuardedTransport(policy)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.headers["accept-encoding"] = "identity"
        async with asyncio.timeout(self.policy.deadline_seconds):
            response = await self.inner.handle_async_request(request)
            try:
                if response.headers.get("content-encoding", "identity") != "identity":
                    raise httpx.DecodingError("a compressed answer", request=request)
                body = bytearray()
                async for chunk in response.stream:  # type: ignore[union-attr]
                    body += chunk
                    if len(body) > self.policy.max_response_bytes:
                        raise httpx.DecodingError("an answer over the size limit", request=request)
            finally:
                await response.aclose()
        return httpx.Response(response.status_code, headers=response.headers, content=bytes(body), request=request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Federation:
    """Trusts (the operator's) and brokered sign-ins, one transaction each."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], settings: RegistrySettings,
                 vault: SigningKeyVault, outbound: OutboundPolicy) -> None:
        self.sessions = sessions
        self.settings = settings
        self.source = settings.source
        self.vault = vault
        self.policy = outbound
        self.jwks = RemoteJWKS(outbound)
        self._documents: dict[str, tuple[float, dict[str, Any]]] = {}
        self._http: httpx.AsyncClient | None = None

    @property
    def callback_url(self) -> str:
        return self.settings.issuer.rstrip("/") + "/oauth/federated/callback"

    async def aclose(self) -> None:
        await self.jwks.aclose()
        if self._http is not None:
            await self._http.aclose()

    # --- the operator's trusts ---

    async def add(self, agency_ref: str, trust: rules.Trust, client_secret: str | None, *,
                  acting_user: str | None = None, client_id: str | None = None) -> IdentityProvider:
        async with unit_of_work(self.sessions) as session:
            return await add_trust(session, self.settings, self.vault.ring, agency_ref, trust, client_secret,
                                   acting_user=acting_user, client_id=client_id)

    async def trusts(self, agency_id: str | None = None) -> list[IdentityProvider]:
        async with unit_of_work(self.sessions) as session:
            return await store.providers(session, agency_id)

    async def remove(self, idp_id: str, *, acting_user: str | None = None, client_id: str | None = None) -> None:
        async with unit_of_work(self.sessions) as session:
            await remove_trust(session, self.source, idp_id, acting_user=acting_user, client_id=client_id)

    async def for_agency(self, agency_ref: str) -> IdentityProvider | None:
        """The trust of the agency a person named on the sign-in form (an agency has at most one in use)."""
        async with unit_of_work(self.sessions) as session:
            agency = await people_store.agency_by_reference(session, agency_ref) if agency_ref else None
            if agency is None or agency.status != "active":
                return None
            found = await store.providers(session, agency.id)
            return found[0] if found else None

    # --- the upstream's documents ---

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(transport=GuardedTransport(self.policy), follow_redirects=False,
                                           trust_env=False, timeout=self.policy.deadline_seconds)
        return self._http

    async def _document(self, url: str) -> dict[str, Any]:
        cached = self._documents.get(url)
        if cached and time.monotonic() - cached[0] < _DISCOVERY_MAX_AGE:
            return cached[1]
        try:
            response = await call(self._client(), self.policy, "GET", url, headers={"accept": "application/json"})
            if response.status_code != 200 or not response.complete:
                raise ValueError("unusable discovery response")
            document = json.loads(response.content)
            if not isinstance(document, dict):
                raise ValueError("a discovery document is a JSON object")
        except (httpx.HTTPError, ValueError):
            if cached:
                return cached[1]
            raise Refused("unavailable") from None
        self._documents[url] = (time.monotonic(), document)
        return document

    async def endpoints(self, trust: rules.Trust) -> Endpoints:
        """The upstream's endpoints from its discovery document, whose ``issuer`` must be the trusted one
        (OpenID Connect Discovery 4.3); the trust's ``jwks_uri``, if set, replaces the document's."""
        document = await self._document(trust.discovery_url)
        found = (document.get("authorization_endpoint"), document.get("token_endpoint"),
                 trust.jwks_uri or document.get("jwks_uri"))
        if document.get("issuer") != trust.issuer or not all(
                isinstance(u, str) and rules.url_problem(u, allow_http=self.policy.allow_http) is None for u in found):
            log.warning("identity_provider_discovery_unusable", issuer_matches=document.get("issuer") == trust.issuer)
            raise Refused("unavailable")
        authorization, token, jwks_uri = (str(u) for u in found)
        return Endpoints(authorization, token, jwks_uri)

    async def _oauth_client(self, row: IdentityProvider, trust: rules.Trust, token_url: str) -> AsyncOAuth2Client:
        secret: Any = None
        if trust.auth_method in rules.SECRET_AUTH_METHODS:
            assert row.client_secret_wrapped is not None and row.client_secret_kek_id is not None
            ring = self.vault.ring_for(row.client_secret_kek_id)
            secret = unwrap_client_secret(row.client_secret_wrapped, row.client_secret_kek_id, row.id, ring)
        client = AsyncOAuth2Client(client_id=trust.client_id, client_secret=secret,
                                   token_endpoint_auth_method=trust.auth_method, redirect_uri=self.callback_url,
                                   scope=trust.scope, code_challenge_method="S256",
                                   transport=_BoundedTransport(self.policy), trust_env=False,
                                   timeout=self.policy.deadline_seconds)
        if trust.auth_method == "private_key_jwt":
            # RefNet authenticates with its own signing key: the upstream knows the registry's JWKS URL.
            async with unit_of_work(self.sessions) as session:
                key_row = await signing_key(session)
            client.client_secret = self.vault.private_key(key_row.kid, key_row.private_key_wrapped, key_row.kek_id)
            client.register_client_auth_method(PrivateKeyJWT(token_url, headers={"kid": key_row.kid},
                                                             alg=ACCESS_TOKEN_ALG))
        return client

    # --- a sign-in through the upstream ---

    async def start(self, idp_id: str, return_query: list[tuple[str, str]]) -> tuple[str, str]:
        """The upstream authorization URL to send the browser to, and the state (the browser's cookie keeps it
        too: the callback must come back to the browser that started)."""
        async with unit_of_work(self.sessions) as session:
            row = await store.provider(session, idp_id)
            if row is None:
                raise not_found("identity provider")
            trust = trust_of(row)
        endpoints = await self.endpoints(trust)
        state, nonce, verifier = (secrets.token_urlsafe(32) for _ in range(3))
        # prompt=login was for the registry's own form; the upstream's sign-in is the fresh one.
        query = urlencode([(k, v) for k, v in return_query if k != "prompt"])
        now = datetime.now(UTC)
        async with unit_of_work(self.sessions) as session:
            await store.purge_logins(session, now)
            session.add(FederatedLogin(state_hash=people.digest(state), idp_id=idp_id, nonce=nonce,
                                       code_verifier=verifier, return_query=query,
                                       expires_at=now + timedelta(seconds=rules.FEDERATED_LOGIN_SECONDS)))
        client = AsyncOAuth2Client(client_id=trust.client_id, redirect_uri=self.callback_url, scope=trust.scope,
                                   code_challenge_method="S256")
        async with client:
            url, _ = client.create_authorization_url(endpoints.authorization, state=state, code_verifier=verifier,
                                                     nonce=nonce)
        return url, state

    async def finish(self, state: str, code: str | None, error: str | None) -> Finished:
        now = datetime.now(UTC)
        async with unit_of_work(self.sessions) as session:
            login = await store.login(session, people.digest(state)) if state else None
            if login is None or login.used_at is not None or login.expires_at <= now:
                return Finished("RefNet", refused="expired")
            login.used_at = now  # one callback per state, whatever comes of it
            row = await store.provider(session, login.idp_id)
            agency = await queries.agency(session, row.agency_id) if row is not None else None
            if row is None or agency is None:
                return Finished("RefNet", refused="expired")
            trust, agency_id, agency_name = trust_of(row), agency.id, agency.name
            nonce, verifier, return_query = login.nonce, login.code_verifier, login.return_query
        try:
            if error is not None or not code:
                raise Refused("upstream_error")
            claims = await self._verified_claims(row, trust, code, verifier, nonce)
            try:
                async with unit_of_work(self.sessions) as session:
                    token = await self._signed_in(session, row, trust, claims, now)
            except IntegrityError:
                # The same upstream account's first sign-in twice at once: one linked it; this one starts again.
                raise Refused("expired") from None
        except Refused as refused:
            await self._record_refusal(agency_id, row.id, refused.reason)
            return Finished(agency_name, return_query, refused=refused.reason)
        return Finished(agency_name, return_query, session_token=token)

    async def _verified_claims(self, row: IdentityProvider, trust: rules.Trust, code: str, verifier: str,
                               nonce: str) -> dict[str, Any]:
        endpoints = await self.endpoints(trust)
        client = await self._oauth_client(row, trust, endpoints.token)
        try:
            async with client:
                answer = await client.fetch_token(endpoints.token, grant_type="authorization_code", code=code,
                                                  code_verifier=verifier)
        except AuthlibOAuthError:
            raise Refused("upstream_error") from None
        except (httpx.HTTPError, ValueError, TimeoutError):
            raise Refused("unavailable") from None
        id_token = answer.get("id_token") if isinstance(answer, dict) else None
        if not isinstance(id_token, str) or len(id_token) > 16 * 1024:
            raise Refused("id_token")
        return await self.verify_id_token(id_token, trust, endpoints.jwks_uri, nonce)

    async def verify_id_token(self, id_token: str, trust: rules.Trust, jwks_uri: str, nonce: str) -> dict[str, Any]:
        """The ID token's claims once everything checks (OpenID Connect Core 3.1.3.7); ``Refused`` otherwise."""
        try:
            keys = await self.jwks.keys(jwks_uri)
        except OAuthError:
            raise Refused("unavailable") from None
        try:
            token = _decode(id_token, keys, trust)
        except (JoseError, ValueError):
            try:  # the provider may have rotated its keys since they were fetched
                token = _decode(id_token, await self.jwks.keys(jwks_uri, refresh=True), trust)
            except (JoseError, ValueError, OAuthError):
                raise Refused("id_token") from None
        if str(token.header.get("typ", "JWT")).lower() not in ("jwt", "application/jwt"):
            raise Refused("id_token")  # e.g. the upstream's access token (at+jwt) handed back as an ID token
        claims = dict(token.claims)
        registry = jwt.JWTClaimsRegistry(
            leeway=rules.CLOCK_LEEWAY_SECONDS,
            iss={"essential": True, "value": trust.issuer}, aud={"essential": True, "value": trust.client_id},
            sub={"essential": True}, exp={"essential": True}, iat={"essential": True},
            nonce={"essential": True, "value": nonce})
        try:
            registry.validate(claims)
        except JoseError:
            raise Refused("id_token") from None
        audience = claims["aud"]
        if isinstance(audience, list) and len(audience) > 1 and claims.get("azp") != trust.client_id:
            raise Refused("id_token")
        if "azp" in claims and claims["azp"] != trust.client_id:
            raise Refused("id_token")
        if rules.subject_of(claims) is None:
            raise Refused("id_token")
        return claims

    async def _signed_in(self, session: AsyncSession, row: IdentityProvider, trust: rules.Trust,
                         claims: dict[str, Any], now: datetime) -> str:
        """Map the claims, link or create the person, open a complete sign-in session: its cookie value."""
        agency = await queries.agency(session, row.agency_id)
        if agency is None or agency.status != "active":
            raise Refused("disabled")
        subject = rules.subject_of(claims)
        assert subject is not None
        link = await store.link(session, trust.issuer, subject, for_update=True)
        person = await people_store.person(session, link.person_id, for_update=True) if link else None
        if person is not None and person.agency_id != agency.id:
            # The issuer was trusted for another agency when this account was linked: never move a person.
            raise Refused("other_agency")
        if not rules.tenant_matches(claims, trust):
            raise Refused("tenant")
        roles = rules.mapped_roles(claims, trust, agency.kind)
        if not roles:
            raise Refused("no_roles")
        proven = rules.second_factor_proven(claims, trust)
        if domain.needs_second_factor(roles) and not proven:
            raise Refused("second_factor")
        if person is not None and person.status == "disabled":
            raise Refused("disabled")
        if person is None:
            person = await _new_person(session, agency, rules.login_for(claims, trust, subject), roles)
            link = FederatedIdentity(issuer=trust.issuer, subject=subject, person_id=person.id)
            session.add(link)
        else:
            person.roles = roles  # refreshed at each sign-in: the upstream decides them
            person.status = "active"
            person.updated_at = now
        assert link is not None
        link.last_sign_in_at = now
        token, token_hash = people.new_secret_token()
        sign_in = SignInSession(id=new_id("signin"), token_hash=token_hash, person_id=person.id,
                                amr=rules.session_amr(claims, proven), complete=True, auth_time=now,
                                last_seen_at=now,
                                expires_at=now + timedelta(seconds=self.settings.federated_session_max_seconds))
        session.add(sign_in)
        await record_access(session, source=self.source, record=AccessRecord(
            action="sign_in.federated", outcome="success", agency=agency.id, acting_user=person.id,
            resource_type="Agency", resource_id=agency.id,
            details={"identity_provider": row.id, "roles": roles, "second_factor": proven}))
        await session.flush()
        log.info("federated_sign_in", agency=agency.id, person=person.id, identity_provider=row.id)
        return token

    async def _record_refusal(self, agency_id: str, idp_id: str, reason: str) -> None:
        async with unit_of_work(self.sessions) as session:
            await record_access(session, source=self.source, record=AccessRecord(
                action="sign_in.refused", outcome="denied", agency=agency_id, resource_type="Agency",
                resource_id=agency_id, details={"reason": reason, "identity_provider": idp_id}))
        log.warning("federated_sign_in_refused", agency=agency_id, identity_provider=idp_id, reason=reason)


def _decode(id_token: str, keys: list[Any], trust: rules.Trust) -> Any:
    algorithms = [a for a in trust.algorithms if a in rules.ALLOWED_ALGORITHMS]
    return jwt.decode(id_token, KeySet(keys), algorithms=algorithms)


async def _new_person(session: AsyncSession, agency: Agency, login: str, roles: list[str]) -> Person:
    """A person brokered in: no password, no TOTP secret (they sign in only through the upstream)."""
    if await people_store.person_by_login(session, agency.id, login) is not None:
        # Never link by a name: a login already taken (a local account, or another upstream account) stays
        # its owner's; this person gets an opaque one.
        login = "fed-" + secrets.token_hex(10)
    person = Person(id=new_id("person"), agency_id=agency.id, login=login, roles=roles, status="active", failures=0)
    session.add(person)
    await session.flush()
    return person


# --- the operator's steps, in the caller's transaction (the API's and the CLI's) ------------------------------


def wrap_client_secret(secret: str, idp_id: str, ring: KeyRing) -> tuple[bytes, str]:
    return ring.current.wrap(secret.encode(), _secret_context(idp_id)), ring.current.key_id


def unwrap_client_secret(wrapped: bytes, kek_id: str, idp_id: str, ring: KeyRing) -> str:
    return ring.by_id(kek_id).unwrap(wrapped, _secret_context(idp_id)).decode()


def _errors(wrong: list[tuple[str, str]]) -> Problem:
    return Problem(422, "validation-error", "The identity provider is not valid: "
                   + ", ".join(name for name, _ in wrong) + ".", title="Unprocessable Content",
                   errors=[{"loc": ["body", name], "msg": msg} for name, msg in wrong])


async def add_trust(session: AsyncSession, settings: RegistrySettings, ring: KeyRing, agency_ref: str,
                    trust: rules.Trust, client_secret: str | None, *, acting_user: str | None = None,
                    client_id: str | None = None) -> IdentityProvider:
    """Register a trust for one agency (an agency has at most one; an issuer serves one agency)."""
    agency = await people_store.agency_by_reference(session, agency_ref) if agency_ref else None
    if agency is None or agency.kind == domain.PLATFORM_KIND:
        raise invalid(["body", "agency"], "no such agency (an agency id or short name)")
    wrong = rules.check_trust(trust, agency.kind, has_secret=bool(client_secret),
                              allow_http=settings.outbound_allow_http)
    if wrong:
        raise _errors(wrong)
    if await store.provider_by_issuer(session, trust.issuer) is not None:
        raise Problem(409, "issuer-trusted", "This issuer is already trusted (for one agency only).")
    if await store.providers(session, agency.id):
        raise Problem(409, "agency-has-provider", "The agency already has an identity provider; remove it first.")
    idp_id = new_id("idp")
    wrapped, wrapped_kek = (wrap_client_secret(client_secret, idp_id, ring) if client_secret else (None, None))
    row = IdentityProvider(
        id=idp_id, agency_id=agency.id, issuer=trust.issuer, discovery_url=trust.discovery_url,
        jwks_uri=trust.jwks_uri, client_id=trust.client_id, auth_method=trust.auth_method,
        client_secret_wrapped=wrapped, client_secret_kek_id=wrapped_kek, scope=trust.scope,
        login_claim=trust.login_claim, roles_claim=trust.roles_claim, role_map=dict(trust.role_map),
        tenant_claim=trust.tenant_claim, tenant_value=trust.tenant_value, mfa_amr=list(trust.mfa_amr),
        mfa_acr=list(trust.mfa_acr), algorithms=list(trust.algorithms))
    session.add(row)
    await session.flush()
    await record_access(session, source=settings.source, record=AccessRecord(
        action="identity_provider.add", outcome="success", agency=agency.id, client_id=client_id,
        acting_user=acting_user, resource_type="Agency", resource_id=agency.id,
        details={"identity_provider": idp_id}))
    log.info("identity_provider_added", agency=agency.id, identity_provider=idp_id)
    return row


async def remove_trust(session: AsyncSession, source: str, idp_id: str, *, acting_user: str | None = None,
                       client_id: str | None = None) -> None:
    """Remove a trust: its people's sign-ins and refresh tokens end (their access tokens are revoked). The
    links stay, so the same issuer trusted again for the same agency finds the same people -- and trusted for
    another agency finds them of the first, and refuses them."""
    row = await store.provider(session, idp_id)
    if row is None:
        raise not_found("identity provider")
    now = datetime.now(UTC)
    for person_id in await store.people_of_issuer(session, row.issuer):
        person = await people_store.person(session, person_id, for_update=True)
        if person is None:
            continue
        ended = await people_store.end_sessions_of(session, person.id, now)
        for first_party, tokens in (await people_store.revoke_refresh_tokens(session, now, session_ids=ended)).items():
            await people.revoke_access(session, source, person, first_party, tokens)
    agency_id = row.agency_id
    await store.remove_provider(session, row)
    await record_access(session, source=source, record=AccessRecord(
        action="identity_provider.remove", outcome="success", agency=agency_id, client_id=client_id,
        acting_user=acting_user, resource_type="Agency", resource_id=agency_id,
        details={"identity_provider": idp_id}))
    log.info("identity_provider_removed", agency=agency_id, identity_provider=idp_id)


def return_query_params(query: str) -> list[tuple[str, str]]:
    return parse_qsl(query, keep_blank_values=True)


async def rewrap_client_secrets(session: AsyncSession, ring: KeyRing) -> tuple[int, int]:
    """A KEK rotation's part for the trusts: every client secret wrapped under ``ring.current``. Returns
    (re-wrapped, left under another KEK)."""
    rewrapped = 0
    for row in await store.secrets_not_under(session, ring.current.key_id):
        assert row.client_secret_wrapped is not None and row.client_secret_kek_id is not None
        secret = unwrap_client_secret(row.client_secret_wrapped, row.client_secret_kek_id, row.id, ring)
        row.client_secret_wrapped, row.client_secret_kek_id = wrap_client_secret(secret, row.id, ring)
        rewrapped += 1
    await session.flush()
    return rewrapped, len(await store.secrets_not_under(session, ring.current.key_id))
