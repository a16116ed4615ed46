"""The OpenID Connect provider's use cases (issue #20): people sign in (password, then a TOTP code) and
first-party clients (the console) get codes, tokens and refresh tokens. authlib does the protocol
(``oidc_provider.py``, the bridge to it); what is ours is here: the sign-in form's steps, the accounts, the
token profile.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import anyio
import structlog
from authlib.oauth2.rfc6749.errors import OAuth2Error
from authlib.oauth2.rfc6749.util import extract_basic_authorization
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.registry import domain
from services.registry.keyvault import SigningKeyVault
from services.registry.oauth import (
    RateLimiter,
    verify_access_token,
)
from services.registry.service import people
from services.registry.service.oidc_provider import (
    CURRENT_CALL,
    SETTINGS,
    Call,
    CodeGrant,
    EndSession,
    IdToken,
    PreparedRequest,
    Provider,
    RotatingRefreshGrant,
    S256Challenge,
    SignedIn,
    end_sign_in,
    signed_in_as,
    signed_in_now,
)
from services.registry.service.signing_keys import published_jwks, signing_key
from services.registry.settings import RegistrySettings
from services.registry.store import people as store
from services.registry.store import queries
from services.registry.store.tables import (
    Person,
    SignInSession,
)
from shared.access import AccessRecord, record_access
from shared.db import unit_of_work
from shared.errors import Problem
from shared.ids import new_id

log = structlog.get_logger("refnet.registry.sign_in")

T = TypeVar("T")



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
            call = Call(session, key, row.kid, datetime.now(UTC).replace(microsecond=0))
            call_token, settings_token = CURRENT_CALL.set(call), SETTINGS.set(self.settings)
            try:
                return await anyio.to_thread.run_sync(work)
            finally:
                CURRENT_CALL.reset(call_token)
                SETTINGS.reset(settings_token)

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
            user = await signed_in_now(session, sign_in, now, self.settings.session_idle_seconds)
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
            return SignInStep(user=signed_in_as(person, agency, sign_in), session_token=token)

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
            return SignInStep(user=signed_in_as(person, agency, sign_in))

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
                    await end_sign_in(session, sign_in, now, self.source)
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
