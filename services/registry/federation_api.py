"""registry's routes for agencies' own identity providers (issue #20 part 5): the operator's trusts (scope
``admin``), and the two legs of a brokered sign-in -- out to the agency's provider, and back."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.registry import federation as rules
from services.registry.deps import Deps, deps
from services.registry.federation_schemas import IdentityProviderIn, IdentityProviderList, IdentityProviderOut
from services.registry.oidc import (
    _HTML,
    _HTML_OR_PROBLEM,
    NO_STORE,
    SESSION_COOKIE,
    ClientIdParam,
    CodeChallenge,
    NonceParam,
    RedirectUri,
    ResponseType,
    ScopeParam,
    StateParam,
    _answer,
    _message,
    _page,
    _prepared,
    _q,
    _refusal,
    _secure,
)
from services.registry.service.federation import Refused
from services.registry.store.federation_tables import IdentityProvider
from shared.auth import Principal, require_scopes
from shared.errors import Problem
from shared.ids import is_refnet_id
from shared.text import Line

router = APIRouter()
Registry = Annotated[Deps, Depends(deps)]
Admin = Annotated[Principal, Depends(require_scopes("admin"))]
IdpId = Annotated[str, Path(pattern=r"^idp-[0-9a-f]{32}$", description="The trust's id.",
                            examples=["idp-5b0e3f1c2a9d4e8f9a1b2c3d4e5f6a7b"])]
#: The browser that started a brokered sign-in keeps its state: the callback must come back to it (a
#: callback URL handed to someone else's browser signs no one in there).
FEDERATION_COOKIE = "refnet_federation"
CALLBACK_PATH = "/oauth/federated/callback"


def _out(row: IdentityProvider, registry: Deps) -> IdentityProviderOut:
    return IdentityProviderOut(
        id=row.id, agency_id=row.agency_id, issuer=row.issuer, discovery_url=row.discovery_url,
        jwks_uri=row.jwks_uri, client_id=row.client_id, auth_method=row.auth_method,
        has_client_secret=row.client_secret_wrapped is not None, scope=row.scope, login_claim=row.login_claim,
        roles_claim=row.roles_claim, role_map=dict(row.role_map), tenant_claim=row.tenant_claim,
        tenant_value=row.tenant_value, mfa_amr=list(row.mfa_amr), mfa_acr=list(row.mfa_acr),
        algorithms=list(row.algorithms), redirect_uri=registry.federation.callback_url, created_at=row.created_at)


def _actor(caller: Principal) -> tuple[str | None, str | None]:
    return (caller.client_id if is_refnet_id(caller.client_id, "client") else None), caller.acting_user


# --- the operator's trusts ------------------------------------------------------------------------------------


@router.post("/identity-providers", status_code=201, tags=["identity providers"],
             summary="Trust an agency's OpenID Connect provider for its staff")
async def add_identity_provider(body: IdentityProviderIn, caller: Admin, registry: Registry) -> IdentityProviderOut:
    """The agency's people then sign in through their own provider; the registry verifies its ID tokens and
    issues its own tokens (one issuer for every RefNet API). One provider per agency, one agency per issuer."""
    trust = rules.Trust(
        issuer=body.issuer, discovery_url=body.discovery_url or rules.default_discovery_url(body.issuer),
        jwks_uri=body.jwks_uri, client_id=body.client_id, auth_method=body.auth_method, scope=body.scope,
        login_claim=body.login_claim, roles_claim=body.roles_claim, role_map=body.role_map,
        tenant_claim=body.tenant_claim, tenant_value=body.tenant_value, mfa_amr=rules.check_values(body.mfa_amr),
        mfa_acr=rules.check_values(body.mfa_acr), algorithms=tuple(body.algorithms))
    client_id, acting_user = _actor(caller)
    row = await registry.federation.add(body.agency, trust, body.client_secret, client_id=client_id,
                                        acting_user=acting_user)
    return _out(row, registry)


@router.get("/identity-providers", tags=["identity providers"], summary="The trusted identity providers")
async def list_identity_providers(
    caller: Admin, registry: Registry,
    agency_id: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Only this agency's.",
                                           examples=["agy_3f2a9c1d7e5b4a60"])] = None,
) -> IdentityProviderList:
    return IdentityProviderList(items=[_out(r, registry) for r in await registry.federation.trusts(agency_id)])


@router.delete("/identity-providers/{idp_id}", status_code=204, tags=["identity providers"],
               summary="Stop trusting an identity provider")
async def remove_identity_provider(idp_id: IdpId, caller: Admin, registry: Registry) -> Response:
    """Its people's sign-ins and refresh tokens end (their access tokens are revoked); they can no longer sign
    in through it."""
    client_id, acting_user = _actor(caller)
    await registry.federation.remove(idp_id, client_id=client_id, acting_user=acting_user)
    return Response(status_code=204)


# --- a brokered sign-in -----------------------------------------------------------------------------------------


@router.get(CALLBACK_PATH, response_class=HTMLResponse, tags=["sign-in"],
            summary="Back from an agency's provider: verify its answer and go on signing in",
            responses={302: {"description": "Signed in: on to the registry's authorization request."},
                       400: {"description": "The sign-in did not start in this browser: an HTML page for a "
                                            "browser (Accept: text/html), else a problem.", **_HTML_OR_PROBLEM},
                       403: {"description": "The provider's answer was refused (HTML page saying why).", **_HTML}})
async def federated_callback(
    request: Request, registry: Registry,
    state: Annotated[Line | None, Query(max_length=200, description="The state the registry sent.",
                                       examples=["Zm9vYmFy..."])] = None,
    code: Annotated[Line | None, Query(max_length=4096, description="The provider's authorization code.",
                                      examples=["SplxlOBeZQQYbYS6WxSbIA"])] = None,
    error: Annotated[Line | None, Query(max_length=200, description="The provider's error, if it refused.",
                                       examples=["access_denied"])] = None,
) -> Response:
    cookie = request.cookies.get(FEDERATION_COOKIE)
    if not state or not cookie or not hmac.compare_digest(cookie.encode(), state.encode()):
        return _refusal(request, "This sign-in cannot go on", "It did not start in this browser, or it has expired; "
                        "start again from the application.", 400, "sign-in-not-started-here")
    done = await registry.federation.finish(state, code, error)
    if done.refused is not None:
        page = _page("You are not signed in", _message(rules.refusal_text(done.refused, done.agency_name)), 403)
        page.delete_cookie(FEDERATION_COOKIE, path=CALLBACK_PATH)
        return page
    response = RedirectResponse("/oauth/authorize?" + done.return_query, status_code=302, headers=NO_STORE)
    secure = _secure(registry)
    assert done.session_token is not None
    response.set_cookie(SESSION_COOKIE, done.session_token, httponly=True, samesite="lax", secure=secure, path="/")
    response.delete_cookie(FEDERATION_COOKIE, path=CALLBACK_PATH)
    return response


@router.get("/oauth/federated/{idp_id}", response_class=HTMLResponse, tags=["sign-in"],
            summary="Sign in with one's agency's own account (the registry's authorization request's parameters)",
            responses={302: {"description": "On to the agency's provider (or back to the client with an error)."},
                       400: {"description": "The authorization request is not valid: an HTML page for a browser "
                                            "(Accept: text/html), else a problem.", **_HTML_OR_PROBLEM},
                       404: {"description": "No such identity provider (HTML page).", **_HTML},
                       503: {"description": "The agency's provider cannot be reached (HTML page).", **_HTML}})
async def federated_start(
    idp_id: IdpId, request: Request, registry: Registry,
    response_type: ResponseType = None, client_id: ClientIdParam = None, redirect_uri: RedirectUri = None,
    scope: ScopeParam = None, state: StateParam = None, nonce: NonceParam = None,
    code_challenge: CodeChallenge = None,
    code_challenge_method: Annotated[Line | None, _q("PKCE method: `S256`.", "S256")] = None,
    prompt: Annotated[Line | None, _q("Ignored here: the agency's provider signs the person in afresh.",
                                     "login")] = None,
) -> Response:
    """Takes the same query as `/oauth/authorize` (checked the same way), and goes on with it once the agency's
    provider has signed the person in."""
    query = list(request.query_params.multi_items())
    refused = await registry.sign_in.check_request(_prepared(request, query, "GET"))
    if refused is not None:
        return _answer(refused, request)
    try:
        url, state = await registry.federation.start(idp_id, query)
    except Problem as problem:
        return _page("No such sign-in", _message(problem.detail), problem.status)
    except Refused as refused_upstream:
        return _page("The agency's sign-in cannot be reached", _message(
            rules.refusal_text(refused_upstream.reason, "The agency")), 503)
    response = RedirectResponse(url, status_code=302, headers=NO_STORE)
    response.set_cookie(FEDERATION_COOKIE, state, httponly=True, samesite="lax", secure=_secure(registry),
                        path=CALLBACK_PATH, max_age=rules.FEDERATED_LOGIN_SECONDS)
    return response
