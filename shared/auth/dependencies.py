"""FastAPI's side of authentication: the bearer scheme, ``authenticate`` and ``require_scopes``.

Failures follow RFC 6750 section 3: 401 with ``WWW-Authenticate: Bearer error="invalid_token"`` for a bad
token, a bare ``Bearer`` challenge when no bearer token was sent at all, and 403 with
``error="insufficient_scope"`` when the token is good but lacks a scope. Each is a ``Problem``, so the body
is RFC 9457 problem+json. Details name what is wrong, never the token's content. Use it in a route::

    @router.get("/cases")
    async def list_cases(principal: Annotated[Principal, Depends(require_scopes("cases:read"))]) -> ...:

with ``app.state.token_validator = TokenValidator.from_settings(settings)`` set at startup (shared.app does).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import structlog
from fastapi import Depends, Header, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.auth.principal import ACTING_USER, ACTING_USER_HEADER, Principal, acting_user_for
from shared.auth.problems import insufficient_scope, invalid_token, missing_token
from shared.auth.tokens import TokenValidator
from shared.errors import Problem

log = structlog.get_logger("refnet.auth")

# RFC 6750 section 2.1 b64token.
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]+")

#: Declares the bearer scheme in OpenAPI. auto_error=False: we produce our own RFC 6750 / 9457 answers.
bearer_scheme = HTTPBearer(
    auto_error=False,
    bearerFormat="JWT",
    description=("RFC 9068 JWT access token from the RefNet issuer: an agency system's (client credentials"
                 " grant) or a person's (signed in through a first-party client; its subject is the person)."),
)


def get_token_validator(request: Request) -> TokenValidator:
    validator = getattr(request.app.state, "token_validator", None)
    if not isinstance(validator, TokenValidator):
        # A wiring mistake in the service, not the caller's fault: let it surface as a 500.
        raise RuntimeError("app.state.token_validator is not set to a TokenValidator")
    return validator


def _bearer_token(request: Request) -> str:
    values = request.headers.getlist("authorization")
    if not values:
        raise missing_token()
    if len(values) > 1:
        raise invalid_token("More than one Authorization header was sent.")
    scheme, _, credentials = values[0].strip().partition(" ")
    if scheme.lower() != "bearer":
        # RFC 6750 section 3.1: an unsupported scheme counts as "no authentication information".
        raise missing_token("A bearer access token is required; the Authorization scheme is not Bearer.")
    credentials = credentials.strip()
    if not credentials:
        raise invalid_token("The Authorization header carries no token.")
    if not _B64TOKEN.fullmatch(credentials):
        raise invalid_token("The bearer token has characters not allowed in a token.")
    return credentials


async def authenticate(request: Request) -> Principal:
    """Validate the request's bearer token and ``X-Acting-User`` header; no scope check. A person's token
    names the acting user itself (its ``sub``): a header naming anyone else is refused."""
    token = _bearer_token(request)
    try:
        principal = await get_token_validator(request).validate(token)
    except Problem as problem:
        # Refusals are worth a log line (audit turns them into token.refused); the detail holds no token.
        log.info("token_refused", status=problem.status, reason=problem.detail, path=request.url.path)
        raise
    try:
        principal = acting_user_for(principal, request.headers.get(ACTING_USER_HEADER))
    except Problem as problem:
        log.info("acting_user_refused", status=problem.status, reason=problem.slug, path=request.url.path)
        raise
    request.state.principal = principal
    return principal


ScopeDependency = Callable[[Request, HTTPAuthorizationCredentials | None, str | None],
                           Coroutine[Any, Any, Principal]]

_ACTING_USER_PARAMETER: Any = Header(
    default=None, alias=ACTING_USER_HEADER,
    description=("The person acting inside the calling agency, as the agency's system asserts it (recorded with"
                 " every access, as asserted by that system). With a person's own access token the token names"
                 " the person: the header may be left out, or repeat the token's subject; any other value is"
                 " refused (403 acting-user-contradicts-token). A system may not name a RefNet person"
                 " (person- and 32 hex digits; 400 acting-user-is-a-person): a person acts with their own token."),
    examples=["caseworker-17"],
    # Documented, not enforced by FastAPI: a bad value is our 400 invalid-acting-user, not a generic 422.
    json_schema_extra={"pattern": f"^{ACTING_USER.pattern}$", "maxLength": 128},
)


def require_scopes(*scopes: str) -> ScopeDependency:
    """A FastAPI dependency: the authenticated ``Principal``, holding every one of ``scopes``."""
    for scope in scopes:
        if not _SCOPE_TOKEN.fullmatch(scope):
            raise ValueError(f"not a valid scope token: {scope!r}")
    required = frozenset(scopes)

    async def dependency(
        request: Request,
        # Unused: we parse the header ourselves to tell "missing" from "malformed". It is here so the
        # route declares the bearer security scheme in OpenAPI, with the scopes it needs (OpenAPI 3.1 lets
        # any scheme list them): integrators and the scope tests read them from the document.
        # (A default, not Annotated: with postponed annotations the closure's scopes would be out of reach.)
        credentials: HTTPAuthorizationCredentials | None = Security(bearer_scheme, scopes=sorted(required)),
        # Unused too (authenticate reads and checks it): declared so the document names the header.
        acting_user: str | None = _ACTING_USER_PARAMETER,
    ) -> Principal:
        principal = await authenticate(request)
        missing = required - principal.scopes
        if missing:
            log.info("scope_refused", client_id=principal.client_id, missing=sorted(missing),
                     path=request.url.path)
            raise insufficient_scope(required, missing)
        return principal

    dependency.__name__ = f"require_scopes({' '.join(sorted(required))})"
    dependency.__qualname__ = dependency.__name__
    return dependency


def require_any_scope(*scopes: str) -> Callable[[Request, str | None], Coroutine[Any, Any, Principal]]:
    """A FastAPI dependency: the authenticated ``Principal``, holding at least one of ``scopes`` (a refusal names
    the first). FastAPI would AND several security requirements, so a route using it says so itself:
    ``openapi_extra=any_scope_security(*scopes)``."""
    for scope in scopes:
        if not _SCOPE_TOKEN.fullmatch(scope):
            raise ValueError(f"not a valid scope token: {scope!r}")
    alternatives, named = frozenset(scopes), frozenset(scopes[:1])

    async def dependency(request: Request, acting_user: str | None = _ACTING_USER_PARAMETER) -> Principal:
        principal = await authenticate(request)
        if not alternatives & principal.scopes:
            log.info("scope_refused", client_id=principal.client_id, missing=sorted(alternatives),
                     path=request.url.path)
            raise insufficient_scope(named, named)
        return principal

    dependency.__name__ = f"require_any_scope({' '.join(scopes)})"
    dependency.__qualname__ = dependency.__name__
    return dependency


def any_scope_security(*scopes: str) -> dict[str, Any]:
    """The OpenAPI security of a route where any one of ``scopes`` is enough: one requirement each."""
    return {"security": [{"HTTPBearer": [scope]} for scope in scopes]}


#: Any valid token, whatever its scopes.
Authenticated = Annotated[Principal, Depends(require_scopes())]
