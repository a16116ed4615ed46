"""The OpenID Connect provider (issue #20): people sign in (password, then a TOTP code) and first-party
clients (the console) get codes, tokens and refresh tokens -- on authlib's authorization server.

authlib has no Starlette integration and its hooks are synchronous, while the store is async SQLAlchemy. The
bridge: a route reads the HTTP request (``prepare``), opens one transaction, and runs the authlib call in a
worker thread (``anyio.to_thread``); every hook that needs the database runs its query back on the event loop
through ``anyio.from_thread.run`` on that transaction's session (``_Call``, a context variable the worker
thread inherits). The session is only ever used on the loop, one statement after the other; the transaction
commits once authlib has answered -- also when it refused, so a spent code or a revoked family stays so.

What authlib decides: the authorization request (client, redirect URI, response type, nonce), the PKCE
check (``S256Challenge``: S256 only, a challenge required), the token request (client authentication, code,
redirect URI, verifier), refresh (rotation: a new refresh token each time), the ID token (``IdToken``) and
RP-initiated logout (``EndSession``). What is ours: the sign-in form, the accounts, the token profile.
"""

from __future__ import annotations

import contextvars
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import anyio
import structlog
from authlib.oauth2.rfc6749 import AuthorizationServer, OAuth2Payload, OAuth2Request
from authlib.oauth2.rfc6749.errors import InvalidRequestError, OAuth2Error
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant, RefreshTokenGrant
from authlib.oauth2.rfc6749.util import extract_basic_authorization
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core.grants import OpenIDCode
from authlib.oidc.rpinitiated import EndSessionEndpoint, EndSessionRequest
from joserfc.jwk import ECKey
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.registry import domain
from services.registry.keyvault import SigningKeyVault
from services.registry.oauth import (
    ACCESS_TOKEN_ALG,
    RateLimiter,
    sign_access_token,
    verify_access_token,
    verify_secret,
)
from services.registry.service import people
from services.registry.service.signing_keys import published_jwks, signing_key
from services.registry.settings import RegistrySettings
from services.registry.store import people as store
from services.registry.store import queries
from services.registry.store.tables import (
    Agency,
    AuthorizationCode,
    FirstPartyClient,
    Person,
    RefreshToken,
    SignInSession,
)
from shared.access import AccessRecord, record_access
from shared.db import unit_of_work
from shared.errors import Problem
from shared.ids import new_id

log = structlog.get_logger("refnet.registry.sign_in")
# authlib logs issued tokens (access, refresh and ID tokens) and codes at DEBUG ("Issue token %r to %r"): its
# records below WARNING never reach a log, whatever the service's log level.
logging.getLogger("authlib").setLevel(logging.WARNING)

T = TypeVar("T")
#: Grants a first-party client may use at the token endpoint (client_credentials stays the agencies').
PERSON_GRANT_TYPES = domain.PERSON_GRANT_TYPES
OIDC_SCOPES = domain.OIDC_SCOPES


# --- what authlib's hooks are given ------------------------------------------------------------------------


@dataclass(frozen=True)
class SignedIn:
    """A person signed in through one sign-in session: what tokens say about them."""

    person_id: str
    agency_id: str
    agency_kind: str
    roles: tuple[str, ...]
    session_id: str
    amr: tuple[str, ...]
    auth_time: int

    @property
    def acr(self) -> str:
        # "mfa": a second factor an agency's own provider proved (service/federation.py).
        return domain.authentication_context(bool({domain.AMR_OTP, "mfa"} & set(self.amr)))[1]

    def get_user_id(self) -> str:
        return self.person_id


class Client:
    """authlib's ClientMixin over a first-party client's row."""

    def __init__(self, row: FirstPartyClient) -> None:
        self.client_id = row.client_id
        self.redirect_uris = list(row.redirect_uris)
        self.secret_hash = row.secret_hash
        self.client_metadata = {"post_logout_redirect_uris": list(row.post_logout_redirect_uris)}

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return None  # the authorization request names its redirect URI (OpenID Connect Core 3.1.2.1)

    def get_allowed_scope(self, scope: str | None) -> str:
        return " ".join(s for s in (scope or "").split() if s in OIDC_SCOPES)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris  # exact match (RFC 9700 2.1)

    def check_client_secret(self, client_secret: str) -> bool:
        return self.secret_hash is not None and verify_secret(client_secret, self.secret_hash)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == ("client_secret_basic" if self.secret_hash else "none")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in PERSON_GRANT_TYPES


@dataclass
class Code:
    """authlib's AuthorizationCodeMixin (OpenID Connect's) over a code's row."""

    row: AuthorizationCode
    user: SignedIn
    code_challenge: str = field(init=False)
    code_challenge_method: str = field(init=False)

    def __post_init__(self) -> None:
        self.code_challenge = self.row.code_challenge
        self.code_challenge_method = self.row.code_challenge_method

    def get_redirect_uri(self) -> str:
        return self.row.redirect_uri

    def get_scope(self) -> str:
        return self.row.scope

    def get_nonce(self) -> str | None:
        return self.row.nonce

    def get_auth_time(self) -> int:
        return self.user.auth_time

    def get_acr(self) -> str:
        return self.user.acr

    def get_amr(self) -> list[str]:
        return list(self.user.amr)


@dataclass
class Refresh:
    """authlib's TokenMixin over a refresh token's row."""

    row: RefreshToken
    user: SignedIn

    def check_client(self, client: Client) -> bool:
        return self.row.client_id == client.client_id

    def get_scope(self) -> str:
        return self.row.scope


@dataclass
class _Call:
    """One authlib call: the transaction its hooks query in, the signing key, and what it issued."""

    session: AsyncSession
    key: ECKey
    kid: str
    now: datetime
    access_jti: str | None = None
    access_expires: datetime | None = None

    def run(self, query: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        """Run ``query(session, *args)`` on the event loop, from authlib's worker thread."""
        return anyio.from_thread.run(query, self.session, *args)


_CALL: contextvars.ContextVar[_Call] = contextvars.ContextVar("refnet_oidc_call")


def _call() -> _Call:
    return _CALL.get()


# --- the HTTP request as authlib reads it --------------------------------------------------------------------


class _Payload(OAuth2Payload):
    def __init__(self, data: dict[str, str], datalist: dict[str, list[str]]) -> None:
        self._data = data
        self._datalist = datalist

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> dict[str, list[str]]:
        return self._datalist


#: authlib checks each request's URL for https. Transport security is the deployment's (TLS at the ingress;
#: the issuer is https in production), and the URL a proxy forwards says nothing about it: authlib is given
#: this one for its check, and the real URL after.
_TRANSPORT_CHECKED = "https://refnet.invalid/"


class PreparedRequest(OAuth2Request):
    """An HTTP request read in full beforehand (the query or the form, each parameter with all its values),
    so authlib's synchronous code never touches Starlette's."""

    def __init__(self, method: str, uri: str, headers: dict[str, str], params: list[tuple[str, str]]) -> None:
        super().__init__(method, _TRANSPORT_CHECKED, headers=headers)
        self.uri = uri
        datalist: dict[str, list[str]] = {}
        for name, value in params:
            datalist.setdefault(name, []).append(value)
        data = {name: values[0] for name, values in datalist.items()}
        self._form = data
        self.payload = _Payload(data, datalist)

    @property
    def args(self) -> dict[str, str]:
        return self._form

    @property
    def form(self) -> dict[str, str]:
        return self._form


# --- authlib's server, grants and extensions -----------------------------------------------------------------


class Provider(AuthorizationServer):
    """authlib's authorization server, answering (status, body, headers) for the route to turn into a
    response; its hooks query through the current ``_Call``."""

    def __init__(self, settings: RegistrySettings) -> None:
        super().__init__(scopes_supported=None)
        self.settings = settings
        self.register_token_generator("default", self._generate_token)

    def query_client(self, client_id: str) -> Client | None:
        row = _call().run(store.first_party_client, client_id) if isinstance(client_id, str) else None
        return Client(row) if row is not None else None

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        call = _call()
        user: SignedIn = request.user
        if isinstance(request.refresh_token, Refresh):
            family = request.refresh_token.row.family_id
        else:
            assert isinstance(request.authorization_code, Code)
            family = request.authorization_code.row.code_hash
        assert call.access_jti is not None and call.access_expires is not None
        row = RefreshToken(token_hash=people.digest(token["refresh_token"]), family_id=family,
                           session_id=user.session_id, client_id=request.client.client_id, scope=token["scope"],
                           access_jti=call.access_jti, access_expires_at=call.access_expires, issued_at=call.now)
        call.run(_save_refresh, row, user, request.payload.grant_type)

    def _generate_token(self, grant_type: str, client: Client, user: SignedIn, scope: str | None = None,
                        expires_in: int | None = None, include_refresh_token: bool = True) -> dict[str, Any]:
        """The RFC 9068 access token of the agreed person profile, and a refresh token."""
        call = _call()
        now = int(call.now.timestamp())
        lifetime = min(self.settings.access_token_lifetime_seconds, domain.PERSON_TOKEN_MAX_LIFETIME_SECONDS)
        scopes = domain.person_scopes(user.agency_kind, user.roles)
        jti = uuid.uuid4().hex
        claims = {
            "iss": self.settings.issuer, "aud": self.settings.audience, "sub": user.person_id,
            "client_id": client.client_id, "agency": user.agency_id, "roles": list(user.roles),
            "scope": " ".join(scopes), "amr": list(user.amr), "acr": user.acr, "auth_time": user.auth_time,
            "iat": now, "nbf": now, "exp": now + lifetime, "jti": jti,
        }
        call.access_jti, call.access_expires = jti, call.now + timedelta(seconds=lifetime)
        granted = [s for s in (scope or "").split() if s in OIDC_SCOPES]
        return {"access_token": sign_access_token(call.key, call.kid, claims), "token_type": "Bearer",
                "expires_in": lifetime, "scope": " ".join([*granted, *scopes]),
                "refresh_token": people.new_secret_token()[0]}

    def create_oauth2_request(self, request: PreparedRequest) -> PreparedRequest:
        return request

    def create_json_request(self, request: Any) -> Any:
        raise NotImplementedError("no JSON endpoints here")

    def handle_response(self, status: int, body: Any, headers: Any) -> tuple[int, Any, list[tuple[str, str]]]:
        return status, body, list(headers)

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        return None  # no signal subscribers


class S256Challenge(CodeChallenge):
    """PKCE with S256 only: a missing challenge or method, and ``plain``, are refused at the authorization
    request (authlib's own CodeChallenge lets a request without a challenge through, and defaults to plain)."""

    SUPPORTED_CODE_CHALLENGE_METHOD = list(domain.CODE_CHALLENGE_METHODS)
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        payload = grant.request.payload
        reason = domain.check_code_challenge(payload.data.get("code_challenge"),
                                             payload.data.get("code_challenge_method"))
        if reason:
            raise InvalidRequestError(reason, redirect_uri=redirect_uri)
        super().validate_code_challenge(grant, redirect_uri)


class CodeGrant(AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "none"]

    def validate_authorization_request(self) -> str:
        if not self.request.payload.redirect_uri:
            raise InvalidRequestError("redirect_uri is required.")
        redirect_uri: str = super().validate_authorization_request()
        return redirect_uri

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        call = _call()
        user: SignedIn = request.user
        data = request.payload.data
        row = AuthorizationCode(
            code_hash=people.digest(code), client_id=request.client.client_id, session_id=user.session_id,
            redirect_uri=request.payload.redirect_uri, scope=request.scope or "", nonce=data.get("nonce"),
            code_challenge=data["code_challenge"], code_challenge_method=data["code_challenge_method"],
            expires_at=call.now + timedelta(seconds=self.server.settings.authorization_code_lifetime_seconds))
        call.run(_add, row)

    def query_authorization_code(self, code: str, client: Client) -> Code | None:
        return _call().run(_spend_code, code, client.client_id)

    def delete_authorization_code(self, authorization_code: Code) -> None:
        return None  # spent when it was read (``_spend_code``): a code is good for one token request

    def authenticate_user(self, authorization_code: Code) -> SignedIn:
        return authorization_code.user


class RotatingRefreshGrant(RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "none"]
    INCLUDE_NEW_REFRESH_TOKEN = True  # rotation: every use gives a new one, the old one is spent

    def authenticate_refresh_token(self, refresh_token: str) -> Refresh | None:
        return _call().run(_open_refresh, refresh_token)

    def authenticate_user(self, refresh_token: Refresh) -> SignedIn:
        return refresh_token.user

    def revoke_old_credential(self, refresh_token: Refresh) -> None:
        _call().run(_rotated, refresh_token.row)


class IdToken(OpenIDCode):
    """ID tokens signed with the registry's current signing key (ES256), for the client as audience."""

    def __init__(self, settings: RegistrySettings) -> None:
        super().__init__(require_nonce=False)
        self.settings = settings

    def exists_nonce(self, nonce: str, request: OAuth2Request) -> bool:
        return False  # a nonce is carried into the ID token for the client to check; codes are single use

    def resolve_client_private_key(self, client: Client) -> ECKey:
        return _call().key

    def get_client_algorithm(self, client: Client) -> str:
        return ACCESS_TOKEN_ALG

    def get_encode_header(self, client: Client) -> dict[str, str]:
        return {"alg": ACCESS_TOKEN_ALG, "kid": _call().kid, "typ": "JWT"}

    def get_client_claims(self, client: Client) -> dict[str, Any]:
        now = int(_call().now.timestamp())
        return {"iss": self.settings.issuer, "aud": client.client_id, "iat": now,
                "exp": now + self.settings.id_token_lifetime_seconds}

    def generate_user_info(self, user: SignedIn, scope: str) -> dict[str, Any]:
        return {"sub": user.person_id, "sid": user.session_id, "agency": user.agency_id, "roles": list(user.roles)}


class EndSession(EndSessionEndpoint):
    """RP-initiated logout: the sign-in session the ID token names ends, with its refresh tokens."""

    def get_server_jwks(self) -> dict[str, Any]:
        return {"keys": _call().run(_published_jwks)}

    def get_algorithms(self) -> list[str]:
        return [ACCESS_TOKEN_ALG]

    def end_session(self, end_session_request: EndSessionRequest) -> None:
        claims = end_session_request.id_token_claims or {}
        if claims.get("iss") == self.server.settings.issuer and isinstance(claims.get("sid"), str):
            _call().run(_end_session, claims["sid"])


# --- the hooks' queries (on the event loop, in the call's transaction) ---------------------------------------


async def _add(session: AsyncSession, row: Any) -> None:
    session.add(row)
    await session.flush()


async def _rotated(session: AsyncSession, row: RefreshToken) -> None:
    row.rotated_at = _call().now
    await session.flush()


async def _published_jwks(session: AsyncSession) -> list[dict[str, Any]]:
    return await published_jwks(session)


async def _signed_in(session: AsyncSession, sign_in: SignInSession, now: datetime,
                     idle_seconds: float) -> SignedIn | None:
    """The person of a live, complete sign-in session (not ended, not idle, account active, agency active)."""
    if sign_in.ended_at is not None or not sign_in.complete:
        return None
    if domain.idle_expired(sign_in.last_seen_at, now, idle_seconds) or (
            sign_in.expires_at is not None and sign_in.expires_at <= now):  # a brokered sign-in's end
        sign_in.ended_at = now
        return None
    person = await store.person(session, sign_in.person_id)
    if person is None or person.status != "active":
        return None
    agency = await queries.agency(session, person.agency_id)
    if agency is None or agency.status != "active":
        return None
    return _signed_in_as(person, agency, sign_in)


def _signed_in_as(person: Person, agency: Agency, sign_in: SignInSession) -> SignedIn:
    return SignedIn(person.id, agency.id, agency.kind, tuple(person.roles), sign_in.id, tuple(sign_in.amr),
                    int(sign_in.auth_time.timestamp()))


async def _revoke_family(session: AsyncSession, family_id: str, now: datetime, source: str) -> None:
    for client_id, tokens in (await store.revoke_refresh_tokens(session, now, family_id=family_id)).items():
        person = await _person_of_family(session, family_id)
        if person is not None:
            await people.revoke_access(session, source, person, client_id, tokens)


async def _person_of_family(session: AsyncSession, family_id: str) -> Person | None:
    code = await session.get(AuthorizationCode, family_id)
    sign_in = await store.sign_in_session_by_id(session, code.session_id) if code else None
    return await store.person(session, sign_in.person_id) if sign_in else None


async def _spend_code(session: AsyncSession, code: str, client_id: str) -> Code | None:
    call = _call()
    row = await store.authorization_code(session, people.digest(code))
    if row is None or row.client_id != client_id:
        return None
    if row.used_at is not None:
        # RFC 6749 4.1.2: a code used twice -- whatever was issued with it is revoked.
        await _revoke_family(session, row.code_hash, call.now, _settings().source)
        log.warning("authorization_code_reused", client_id=client_id)
        return None
    row.used_at = call.now
    if row.expires_at <= call.now:
        return None
    sign_in = await store.sign_in_session_by_id(session, row.session_id, for_update=True)
    user = await _signed_in(session, sign_in, call.now, _settings().session_idle_seconds) if sign_in else None
    return Code(row, user) if user is not None else None


async def _open_refresh(session: AsyncSession, token: str) -> Refresh | None:
    call = _call()
    settings = _settings()
    row = await store.refresh_token(session, people.digest(token))
    if row is None or row.revoked_at is not None:
        return None
    if row.rotated_at is not None:
        # Reuse of a rotated refresh token: one of the two holders is not the client. The whole family goes.
        await _revoke_family(session, row.family_id, call.now, settings.source)
        log.warning("refresh_token_reused", client_id=row.client_id)
        return None
    if domain.idle_expired(row.issued_at, call.now, settings.session_idle_seconds):
        return None
    sign_in = await store.sign_in_session_by_id(session, row.session_id, for_update=True)
    user = await _signed_in(session, sign_in, call.now, settings.session_idle_seconds) if sign_in else None
    return Refresh(row, user) if user is not None else None


async def _save_refresh(session: AsyncSession, row: RefreshToken, user: SignedIn, grant_type: str) -> None:
    call = _call()
    session.add(row)
    sign_in = await store.sign_in_session_by_id(session, user.session_id)
    if sign_in is not None:
        sign_in.last_seen_at = call.now  # a refresh is activity: the session stays alive
    await record_access(session, source=_settings().source, record=AccessRecord(
        # The first-party client is named in the details: the client_id column holds agencies' clients only.
        action="token.issue", outcome="success", agency=user.agency_id, acting_user=user.person_id,
        resource_type="Token", resource_id=call.access_jti,
        details={"grant_type": grant_type, "first_party_client": row.client_id, "amr": list(user.amr),
                 "roles": list(user.roles)}))
    await session.flush()


async def _end_session(session: AsyncSession, session_id: str) -> None:
    call = _call()
    sign_in = await store.sign_in_session_by_id(session, session_id, for_update=True)
    if sign_in is None:
        return
    await _end(session, sign_in, call.now, _settings().source)


async def _end(session: AsyncSession, sign_in: SignInSession, now: datetime, source: str) -> None:
    sign_in.ended_at = sign_in.ended_at or now
    person = await store.person(session, sign_in.person_id)
    for client_id, tokens in (await store.revoke_refresh_tokens(session, now, session_ids=[sign_in.id])).items():
        if person is not None:
            await people.revoke_access(session, source, person, client_id, tokens)


_SETTINGS: contextvars.ContextVar[RegistrySettings] = contextvars.ContextVar("refnet_oidc_settings")


def _settings() -> RegistrySettings:
    return _SETTINGS.get()


# --- the use cases -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """What authlib answered: (status, body, headers)."""

    status: int
    body: Any
    headers: list[tuple[str, str]]

    @property
    def location(self) -> str | None:
        return next((v for k, v in self.headers if k.lower() == "location"), None)


@dataclass(frozen=True)
class SignInStep:
    """Where a sign-in stands after a step: signed in (``user``), or a second factor to give, or refused."""

    user: SignedIn | None = None
    needs_second_factor: bool = False
    refused: str | None = None  # why, in words fit for the person (never which of login or password)
    session_token: str | None = None  # a new sign-in session's cookie value


class SignIn:
    """The provider's use cases: the authorization request, the sign-in steps, token grants, userinfo,
    logout. One transaction each."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], settings: RegistrySettings,
                 vault: SigningKeyVault) -> None:
        self.sessions = sessions
        self.settings = settings
        self.source = settings.source
        self.vault = vault
        self.provider = Provider(settings)
        self.provider.register_grant(CodeGrant, [S256Challenge(required=True), IdToken(settings)])
        self.provider.register_grant(RotatingRefreshGrant)
        self.provider.register_endpoint(EndSession)
        # Sign-in attempts per address, as the token endpoint's per client: the lockout stops guessing one
        # account's password, this slows trying one password on many accounts.
        self.limiter = RateLimiter(settings.token_requests_per_minute, settings.token_burst)
        self.lockout = domain.LockoutPolicy(settings.sign_in_max_failures, settings.sign_in_failure_window_seconds,
                                            settings.sign_in_lock_seconds)

    async def _authlib(self, work: Callable[[], T]) -> T:
        """Run ``work`` (an authlib call) in a worker thread, its hooks querying in one transaction."""
        async with unit_of_work(self.sessions) as session:
            row = await signing_key(session)
            key = self.vault.private_key(row.kid, row.private_key_wrapped, row.kek_id)
            call = _Call(session, key, row.kid, datetime.now(UTC).replace(microsecond=0))
            call_token, settings_token = _CALL.set(call), _SETTINGS.set(self.settings)
            try:
                return await anyio.to_thread.run_sync(work)
            finally:
                _CALL.reset(call_token)
                _SETTINGS.reset(settings_token)

    # --- the authorization endpoint ---

    async def check_request(self, request: PreparedRequest, user: SignedIn | None = None) -> Answer | None:
        """None when the authorization request is acceptable (for ``user``, the person already signed in, if
        any); else the answer: a redirect to the client with the error once its redirect URI is known to be the
        client's, a 400 otherwise."""

        def validate() -> Answer | None:
            try:
                self.provider.get_consent_grant(request, end_user=user)
            except OAuth2Error as error:
                return Answer(*self.provider.handle_error_response(request, error))
            return None

        return await self._authlib(validate)

    async def issue_code(self, request: PreparedRequest, user: SignedIn) -> Answer:
        def issue() -> Answer:
            try:
                grant = self.provider.get_consent_grant(request, end_user=user)
            except OAuth2Error as error:
                return Answer(*self.provider.handle_error_response(request, error))
            return Answer(*self.provider.create_authorization_response(request, grant_user=user, grant=grant))

        return await self._authlib(issue)

    # --- sign-in steps ---

    async def current(self, session_token: str | None) -> SignedIn | None:
        """The person the cookie's sign-in session is for, if it is complete and alive; the session's
        ``last_seen_at`` moves (activity)."""
        if not session_token:
            return None
        now = datetime.now(UTC)
        async with unit_of_work(self.sessions) as session:
            sign_in = await store.sign_in_session(session, people.digest(session_token), for_update=True)
            if sign_in is None:
                return None
            user = await _signed_in(session, sign_in, now, self.settings.session_idle_seconds)
            if user is not None:
                sign_in.last_seen_at = now
            return user

    async def pending_second_factor(self, session_token: str | None) -> bool:
        """Whether the cookie names a sign-in waiting for its second factor (still fresh)."""
        if not session_token:
            return False
        now = datetime.now(UTC)
        async with unit_of_work(self.sessions) as session:
            sign_in = await store.sign_in_session(session, people.digest(session_token))
            return (sign_in is not None and not sign_in.complete and sign_in.ended_at is None
                    and not domain.idle_expired(sign_in.last_seen_at, now, self.settings.session_idle_seconds))

    async def _refuse(self, session: AsyncSession, person: Person | None, now: datetime, reason: str) -> None:
        if person is not None:
            state = domain.after_failure(domain.FailureState(person.failures, person.first_failure_at,
                                                             person.locked_until), now, self.lockout)
            newly_locked = state.locked_until != person.locked_until
            person.failures, person.first_failure_at, person.locked_until = (
                state.failures, state.first_failure_at, state.locked_until)
            if newly_locked:
                log.warning("person_locked_out", person=person.id, agency=person.agency_id)
        await record_access(session, source=self.source, record=AccessRecord(
            action="sign_in.refused", outcome="denied", agency=person.agency_id if person else None,
            acting_user=person.id if person else None, resource_type="Agency",
            resource_id=person.agency_id if person else None, details={"reason": reason}))

    async def password_step(self, agency_ref: str, login: str, password: str) -> SignInStep:
        """The first step. The answer never says whether the agency, the login or the password was wrong."""
        now = datetime.now(UTC)
        wrong = SignInStep(refused="The agency, login or password is not right.")
        async with unit_of_work(self.sessions) as session:
            agency = await store.agency_by_reference(session, agency_ref) if agency_ref else None
            person = (await store.person_by_login(session, agency.id, login, for_update=True)
                      if agency is not None and login else None)
            if person is not None and domain.is_locked(domain.FailureState(
                    person.failures, person.first_failure_at, person.locked_until), now):
                people.verify_password(password, None)  # the same work as any other answer
                await record_access(session, source=self.source, record=AccessRecord(
                    action="sign_in.refused", outcome="denied", agency=person.agency_id, acting_user=person.id,
                    resource_type="Agency", resource_id=person.agency_id, details={"reason": "locked"}))
                return SignInStep(refused="This account is locked after too many failed attempts. Try again "
                                          "later, or ask your agency's administrator to reset it.")
            good = people.verify_password(password, person.password_hash if person else None)
            if (person is None or agency is None or not good or person.status != "active"
                    or agency.status != "active"):
                await self._refuse(session, person, now, "credentials")
                return wrong
            token, token_hash = people.new_secret_token()
            second = person.totp_secret_wrapped is not None
            if domain.needs_second_factor(person.roles) and not second:
                await self._refuse(session, None, now, "no_second_factor")
                return SignInStep(refused="This account has no second factor yet; ask your agency's "
                                          "administrator for a new link.")
            amr, _ = domain.authentication_context(False)
            sign_in = SignInSession(id=new_id("signin"), token_hash=token_hash, person_id=person.id, amr=amr,
                                    complete=not second, auth_time=now, last_seen_at=now)
            session.add(sign_in)
            if second:
                await session.flush()
                return SignInStep(needs_second_factor=True, session_token=token)
            person.failures, person.first_failure_at = 0, None
            await session.flush()
            return SignInStep(user=_signed_in_as(person, agency, sign_in), session_token=token)

    async def second_factor_step(self, session_token: str | None, code: str) -> SignInStep:
        now = datetime.now(UTC)
        async with unit_of_work(self.sessions) as session:
            sign_in = (await store.sign_in_session(session, people.digest(session_token), for_update=True)
                       if session_token else None)
            if (sign_in is None or sign_in.complete or sign_in.ended_at is not None
                    or domain.idle_expired(sign_in.last_seen_at, now, self.settings.session_idle_seconds)):
                return SignInStep(refused="The sign-in has expired; start again.")
            person = await store.person(session, sign_in.person_id, for_update=True)
            agency = await queries.agency(session, person.agency_id) if person else None
            if person is None or agency is None or person.totp_secret_wrapped is None or person.totp_kek_id is None:
                return SignInStep(refused="The sign-in has expired; start again.")
            if domain.is_locked(domain.FailureState(person.failures, person.first_failure_at,
                                                    person.locked_until), now):
                sign_in.ended_at = now
                return SignInStep(refused="This account is locked after too many failed attempts. Try again "
                                          "later, or ask your agency's administrator to reset it.")
            secret = people.unwrap_totp(person.totp_secret_wrapped, person.totp_kek_id, person.id,
                                        self.vault.ring_for(person.totp_kek_id))
            step = people.accepted_totp_step(secret, code, person.totp_last_step, now)
            if step is None:
                await self._refuse(session, person, now, "second_factor")
                return SignInStep(needs_second_factor=True, refused="The code is not right.")
            person.totp_last_step = step
            person.failures, person.first_failure_at = 0, None
            sign_in.amr, _ = domain.authentication_context(True)
            sign_in.complete = True
            sign_in.auth_time = sign_in.last_seen_at = now
            await session.flush()
            return SignInStep(user=_signed_in_as(person, agency, sign_in))

    # --- the token endpoint's person grants ---

    async def is_first_party(self, client_id: str) -> bool:
        async with unit_of_work(self.sessions) as session:
            return await store.first_party_client(session, client_id) is not None

    async def token(self, request: PreparedRequest) -> Answer:
        def grant() -> Answer:
            return Answer(*self.provider.create_token_response(request))

        return await self._authlib(grant)

    # --- logout ---

    async def end_session(self, request: PreparedRequest, session_token: str | None) -> Answer | None:
        """RP-initiated logout. With a valid ``id_token_hint`` (authlib checks it) the session it names ends
        and the person goes back to the client's registered post-logout URI; the cookie's session ends too."""

        def logout() -> Answer | None:
            try:
                validated = self.provider.validate_endpoint_request("end_session", request)
            except OAuth2Error as error:
                return Answer(*self.provider.handle_error_response(request, error))
            result = self.provider.create_endpoint_response("end_session", validated)
            return Answer(*result) if result is not None else None

        answer = await self._authlib(logout)
        if session_token:
            now = datetime.now(UTC)
            async with unit_of_work(self.sessions) as session:
                sign_in = await store.sign_in_session(session, people.digest(session_token), for_update=True)
                if sign_in is not None:
                    await _end(session, sign_in, now, self.source)
        return answer

    # --- userinfo ---

    async def userinfo(self, bearer: str) -> dict[str, Any]:
        """OpenID Connect userinfo for a person's live access token (a system's token has no person)."""
        async with unit_of_work(self.sessions) as session:
            claims = verify_access_token(bearer, await published_jwks(session))
            if (claims is None or claims.get("iss") != self.settings.issuer
                    or not isinstance(claims.get("exp"), int | float) or claims["exp"] <= time.time()
                    or claims.get("sub") == claims.get("client_id")
                    or await queries.is_revoked(session, str(claims.get("jti")))):
                raise Problem(401, "invalid-token", "The access token is not a live token of a signed-in person.",
                              headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
            person = await store.person(session, str(claims.get("sub")))
            if person is None or person.status != "active":
                raise Problem(401, "invalid-token", "The access token is not a live token of a signed-in person.",
                              headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
            return {"sub": person.id, "agency": person.agency_id, "roles": list(person.roles),
                    "preferred_username": person.login}


def _oauth_error(answer: Answer) -> domain.OAuthError:
    body = answer.body if isinstance(answer.body, dict) else dict(answer.body or [])
    error = body.get("error")
    known = ("invalid_request", "invalid_client", "invalid_grant", "unauthorized_client", "unsupported_grant_type",
             "invalid_scope")
    description = str(body.get("error_description") or "The token request was refused.")[:300]
    return domain.OAuthError(error if error in known else "invalid_request", description,
                             status=answer.status if 400 <= answer.status < 500 else 400)


async def token_grant(sign_in: SignIn, form: dict[str, str], basic: str | None) -> dict[str, Any]:
    """The token endpoint's person grants (authorization_code, refresh_token): the token response, or the
    OAuthError the endpoint answers with."""
    headers = {"Authorization": "Basic " + basic} if basic is not None else {}
    client_id = extract_basic_authorization(headers)[0] if basic is not None else form.get("client_id")
    if not isinstance(client_id, str) or not await sign_in.is_first_party(client_id):
        # An agency's system (or anyone else) has the client credentials grant only, as before.
        raise domain.OAuthError("unsupported_grant_type", "Only the client_credentials grant is supported.")
    request = PreparedRequest("POST", sign_in.settings.token_url, headers, list(form.items()))
    answer = await sign_in.token(request)
    if answer.status != 200 or not isinstance(answer.body, dict):
        raise _oauth_error(answer)
    return answer.body
