"""The OpenID Connect provider's bridge to authlib (issue #20): the objects authlib's hooks are given, the
HTTP request as authlib reads it, authlib's server with our grants and extensions, and the queries the hooks run.

authlib has no Starlette integration and its hooks are synchronous, while the store is async SQLAlchemy. The
bridge: a route reads the HTTP request (``prepare``), opens one transaction, and runs the authlib call in a
worker thread (``anyio.to_thread``); every hook that needs the database runs its query back on the event loop
through ``anyio.from_thread.run`` on that transaction's session (``Call``, a context variable the worker
thread inherits). The session is only ever used on the loop, one statement after the other; the transaction
commits once authlib has answered -- also when it refused, so a spent code or a revoked family stays so.

What authlib decides: the authorization request (client, redirect URI, response type, nonce), the PKCE
check (``S256Challenge``: S256 only, a challenge required), the token request (client authentication, code,
redirect URI, verifier), refresh (rotation: a new refresh token each time), the ID token (``IdToken``) and
RP-initiated logout (``EndSession``). What is ours (``sign_in.py``): the sign-in form, the accounts, the
token profile.
"""

from __future__ import annotations

import contextvars
import logging
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

import anyio
import structlog
from authlib.oauth2.rfc6749 import AuthorizationServer, OAuth2Payload, OAuth2Request
from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant, RefreshTokenGrant
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core.grants import OpenIDCode
from authlib.oidc.rpinitiated import EndSessionEndpoint, EndSessionRequest
from joserfc.jwk import ECKey
from sqlalchemy.ext.asyncio import AsyncSession

from services.registry import domain
from services.registry.oauth import (
    ACCESS_TOKEN_ALG,
    sign_access_token,
    verify_secret,
)
from services.registry.service import people
from services.registry.service.signing_keys import published_jwks
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
class Call:
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


CURRENT_CALL: contextvars.ContextVar[Call] = contextvars.ContextVar("refnet_oidc_call")


def _call() -> Call:
    return CURRENT_CALL.get()


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
    response; its hooks query through the current ``Call``."""

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


async def signed_in_now(session: AsyncSession, sign_in: SignInSession, now: datetime,
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
    return signed_in_as(person, agency, sign_in)


def signed_in_as(person: Person, agency: Agency, sign_in: SignInSession) -> SignedIn:
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
    user = await signed_in_now(session, sign_in, call.now, _settings().session_idle_seconds) if sign_in else None
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
    user = await signed_in_now(session, sign_in, call.now, settings.session_idle_seconds) if sign_in else None
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
    await end_sign_in(session, sign_in, call.now, _settings().source)


async def end_sign_in(session: AsyncSession, sign_in: SignInSession, now: datetime, source: str) -> None:
    sign_in.ended_at = sign_in.ended_at or now
    person = await store.person(session, sign_in.person_id)
    for client_id, tokens in (await store.revoke_refresh_tokens(session, now, session_ids=[sign_in.id])).items():
        if person is not None:
            await people.revoke_access(session, source, person, client_id, tokens)


SETTINGS: contextvars.ContextVar[RegistrySettings] = contextvars.ContextVar("refnet_oidc_settings")


def _settings() -> RegistrySettings:
    return SETTINGS.get()
