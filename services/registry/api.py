"""registry's HTTP routes: read the request, call one use case, answer (the shapes are in ``views`` and
``hsds``). The OAuth endpoints read their form themselves, under RFC 6749's rules."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime

from services.registry import domain
from services.registry.deps import Deps, deps
from services.registry.domain import OAuthError
from services.registry.hsds import (
    hsds_organization,
    hsds_service,
    hsds_taxonomy_term_id,
    is_refnet_taxonomy,
    taxonomy_code,
)
from services.registry.hsds_ids import hsds_id
from services.registry.schemas import (
    AgencyCreate,
    AgencyList,
    AgencyOut,
    AgencyPatch,
    AgencyRegistered,
    AuthorizationServerMetadata,
    CapacityIn,
    HsdsPage,
    HsdsService,
    IntrospectionOut,
    JwksOut,
    ServiceCreate,
    ServiceList,
    ServiceOut,
    ServicePatch,
    ServiceSearch,
    TaxonomyList,
    TaxonomyTermOut,
    TokenOut,
    decode_cursor,
    encode_cursor,
)
from services.registry.views import agency_out, registered, service_out
from shared import reference
from shared.auth import Principal, require_scopes
from shared.errors import invalid
from shared.text import Line

router = APIRouter()

Admin = Annotated[Principal, Depends(require_scopes("admin"))]
Reader = Annotated[Principal, Depends(require_scopes("registry:read"))]
Writer = Annotated[Principal, Depends(require_scopes("registry:write"))]
AcceptLanguage = Annotated[str | None, Header(
    alias="Accept-Language", max_length=500, examples=["fr, en;q=0.8"],
    description="The languages the caller reads, by preference (RFC 9110): names, descriptions and taxonomy "
                "labels are given in the first one the service has.")]
FORM_TYPE = "application/x-www-form-urlencoded"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}



Registry = Annotated[Deps, Depends(deps)]
AgencyId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="The agency's id.",
                                examples=["agy_3f9c2a1b7d4e5f60"])]
ServiceId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="The service's id.",
                                examples=["svc_5d2e8a0c4b1f7e93"])]
HsdsServiceId = Annotated[str, Path(
    pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="The service's HSDS id (a UUID), or RefNet's service id.",
    examples=[str(hsds_id("service", "svc_5d2e8a0c4b1f7e93"))])]


# --- OAuth 2.0 ----------------------------------------------------------------------------------------------


def oauth_error_response(error: OAuthError, basic_used: bool = False) -> JSONResponse:
    headers = dict(NO_STORE)
    if error.status == 401 and basic_used:
        headers["WWW-Authenticate"] = 'Basic realm="refnet"'
    return JSONResponse({"error": error.error, "error_description": error.description},
                        status_code=error.status, headers=headers)


async def oauth_form(request: Request) -> tuple[dict[str, str], str | None]:
    """The form parameters (each at most once, RFC 6749 3.2) and the Basic credentials, if any."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != FORM_TYPE:
        raise OAuthError("invalid_request", f"The body must be {FORM_TYPE}.")
    try:
        form = await request.form(max_files=0, max_fields=50)
    except Exception:
        raise OAuthError("invalid_request", "The body is not a valid form.") from None
    params: dict[str, str] = {}
    for name, value in form.multi_items():
        if not isinstance(value, str):
            raise OAuthError("invalid_request", "Files are not accepted.")
        if name in params:
            raise OAuthError("invalid_request", f"The parameter '{name[:40]}' is repeated.")
        params[name] = value
    basic: str | None = None
    authorization = request.headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != "basic":
            raise OAuthError("invalid_client", "Only HTTP Basic client authentication is accepted here.")
        basic = value.strip()
    return params, basic


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


# The OAuth endpoints read their form themselves (RFC 6749 rules FastAPI's form parsing does not know), so
# their body and their RFC 6749 error answers are declared here for the OpenAPI document.
_CLIENT_AUTH_FIELDS: dict[str, Any] = {
    "client_assertion_type": {"type": "string", "enum": [domain.ASSERTION_TYPE]},
    "client_assertion": {"type": "string", "description": "RFC 7523 private_key_jwt assertion"},
    "client_id": {"type": "string"},
}


def _oauth_form(fields: dict[str, Any], required: list[str]) -> dict[str, Any]:
    schema = {"type": "object", "properties": {**fields, **_CLIENT_AUTH_FIELDS}, "required": required}
    return {"requestBody": {"required": True, "content": {FORM_TYPE: {"schema": schema}}}}


_OAUTH_ERROR = {"application/json": {"schema": {
    "type": "object", "required": ["error"],
    "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}}}}}
OAUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "RFC 6749 error: invalid_request, invalid_scope, unsupported_grant_type",
          "content": _OAUTH_ERROR},
    401: {"description": "RFC 6749 error: invalid_client (client authentication failed)", "content": _OAUTH_ERROR},
    429: {"description": "Too many requests from this client; slow down"},
    503: {"description": "The registry's database is unreachable right now; retry after `Retry-After`"},
}
TOKEN_RESPONSES: dict[int | str, dict[str, Any]] = {**OAUTH_RESPONSES, 503: {
    "description": "The registry's database is unreachable right now (retry after `Retry-After`), or its "
                   "signing key does not open with the configured key-encryption key (`signing-key-unavailable`)"}}
TOKEN_FORM = _oauth_form({
    "grant_type": {"type": "string", "enum": list(domain.GRANT_TYPES), "description": (
        "`client_credentials`: an agency's system, authenticated by `client_assertion` (private_key_jwt) or HTTP "
        "Basic. `authorization_code` and `refresh_token`: a first-party client (the console) for a person who "
        "signed in at `/oauth/authorize`; a public client sends its `client_id`, a confidential one HTTP Basic.")},
    "scope": {"type": "string", "description": "client_credentials: space-separated scopes (default: all the "
                                               "agency holds). A person's scopes follow their roles."},
    "code": {"type": "string", "description": "authorization_code: the code the redirect carried (60 s, single use)."},
    "redirect_uri": {"type": "string", "description": "authorization_code: the redirect URI of the authorization "
                                                      "request, exactly."},
    "code_verifier": {"type": "string", "minLength": 43, "maxLength": 128, "description": (
        "authorization_code: the PKCE verifier whose S256 challenge the authorization request carried (RFC 7636).")},
    "refresh_token": {"type": "string", "description": (
        "refresh_token: the refresh token last issued; the answer holds a new one, and presenting a used one "
        "again revokes the whole family.")},
}, ["grant_type"])
TOKEN_ACTION_FORM = _oauth_form({"token": {"type": "string"}, "token_type_hint": {"type": "string"}}, ["token"])


# The OAuth endpoints answer with JSONResponse (RFC 6749 headers and error bodies), so ``response_model`` only
# documents their success answer; it does not filter it.
@router.post("/oauth/token", tags=["oauth"],
             summary="Token endpoint: client credentials (agencies' systems); authorization code with PKCE and "
                     "refresh token (first-party clients, for people)",
             responses=TOKEN_RESPONSES, openapi_extra=TOKEN_FORM, response_model=TokenOut)
async def token(request: Request, registry: Registry) -> JSONResponse:
    basic_used = "authorization" in request.headers
    try:
        form, basic = await oauth_form(request)
    except OAuthError as error:
        await registry.authorization.throttle({}, None, _address(request))
        await registry.authorization.record_refusal({}, None, None, error)
        return oauth_error_response(error, basic_used)
    await registry.authorization.throttle(form, basic, _address(request))
    try:
        body = await registry.authorization.issue_token(form, basic)
    except OAuthError as error:
        return oauth_error_response(error, basic_used)
    return JSONResponse(body, headers=NO_STORE)


@router.post("/oauth/introspect", tags=["oauth"], summary="Token introspection (RFC 7662)",
             responses=OAUTH_RESPONSES, openapi_extra=TOKEN_ACTION_FORM, response_model=IntrospectionOut)
async def introspect(request: Request, registry: Registry) -> JSONResponse:
    basic_used = "authorization" in request.headers
    try:
        form, basic = await oauth_form(request)
        await registry.authorization.throttle(form, basic, _address(request))
        return JSONResponse(await registry.authorization.introspect(form, basic), headers=NO_STORE)
    except OAuthError as error:
        return oauth_error_response(error, basic_used)


@router.post("/oauth/revoke", tags=["oauth"], summary="Token revocation (RFC 7009)",
             responses={200: {"description": "Revoked, or not a token of this registry (RFC 7009 2.2): no body"},
                        **OAUTH_RESPONSES},
             openapi_extra=TOKEN_ACTION_FORM, response_class=Response)
async def revoke(request: Request, registry: Registry) -> Response:
    basic_used = "authorization" in request.headers
    try:
        form, basic = await oauth_form(request)
        await registry.authorization.throttle(form, basic, _address(request))
        await registry.authorization.revoke(form, basic)
    except OAuthError as error:
        return oauth_error_response(error, basic_used)
    return Response(status_code=200, headers=NO_STORE)


@router.get("/.well-known/oauth-authorization-server", tags=["oauth"], summary="RFC 8414 metadata")
async def metadata(registry: Registry) -> AuthorizationServerMetadata:
    issuer = registry.settings.issuer.rstrip("/")
    auth_methods = ["private_key_jwt", "client_secret_basic"]
    algs = list(domain.ASSERTION_ALGORITHMS)
    return AuthorizationServerMetadata(
        issuer=registry.settings.issuer,
        token_endpoint=issuer + "/oauth/token",
        authorization_endpoint=issuer + "/oauth/authorize",
        jwks_uri=issuer + "/.well-known/jwks.json",
        introspection_endpoint=issuer + "/oauth/introspect",
        revocation_endpoint=issuer + "/oauth/revoke",
        grant_types_supported=list(domain.GRANT_TYPES),
        response_types_supported=["code"],
        response_modes_supported=["query"],
        code_challenge_methods_supported=list(domain.CODE_CHALLENGE_METHODS),
        scopes_supported=domain.scopes_supported(),
        # "none": a public first-party client (the console) at the token endpoint, its code bound by PKCE.
        token_endpoint_auth_methods_supported=[*auth_methods, "none"],
        token_endpoint_auth_signing_alg_values_supported=algs,
        introspection_endpoint_auth_methods_supported=auth_methods,
        introspection_endpoint_auth_signing_alg_values_supported=algs,
        revocation_endpoint_auth_methods_supported=auth_methods,
        revocation_endpoint_auth_signing_alg_values_supported=algs,
        access_token_signing_alg_values_supported=["ES256"],
    )


@router.get("/.well-known/jwks.json", tags=["oauth"], summary="Signing keys (current and previous)",
            response_model=JwksOut)
async def jwks(registry: Registry) -> JSONResponse:
    # Shorter than the time a rotated-in key is published before it signs (refnet keys rotate --activate-in).
    return JSONResponse(await registry.signing_keys.jwks(), headers={"Cache-Control": "public, max-age=30"})


# --- agencies -----------------------------------------------------------------------------------------------


@router.post("/agencies", status_code=201, tags=["agencies"], response_model_exclude_none=True)
async def register_agency(body: AgencyCreate, _: Admin, registry: Registry, response: Response) -> AgencyRegistered:
    agency, secret = await registry.agencies.register(body)
    response.headers["Cache-Control"] = "no-store"
    return registered(agency, secret)


@router.get("/agencies", tags=["agencies"])
async def list_agencies(
    _: Reader, registry: Registry,
    limit: Annotated[int, Query(ge=1, le=500, description="Agencies per page.", examples=[50])] = 50,
    cursor: Annotated[Line | None, Query(max_length=64, description="``next_cursor`` of the previous page.",
                                         examples=["b2Zmc2V0OjUw"])] = None,
) -> AgencyList:
    offset = decode_cursor(cursor)
    agencies, more = await registry.agencies.page(limit, offset)
    return AgencyList(items=[agency_out(a) for a in agencies],
                      next_cursor=encode_cursor(offset + limit) if more else None)


@router.get("/agencies/{agency_id}", tags=["agencies"])
async def get_agency(agency_id: AgencyId, _: Reader,
                     registry: Registry) -> AgencyOut:
    return agency_out(await registry.agencies.get(agency_id))


@router.patch("/agencies/{agency_id}", tags=["agencies"], response_model_exclude_none=True)
async def update_agency(agency_id: AgencyId, body: AgencyPatch, _: Admin, registry: Registry,
                        response: Response) -> AgencyRegistered:
    agency, secret = await registry.agencies.update(agency_id, body)
    response.headers["Cache-Control"] = "no-store"
    return registered(agency, secret)


# --- the directory ------------------------------------------------------------------------------------------


def _content_language(response: Response, out: ServiceOut) -> None:
    if out.language:
        response.headers["Content-Language"] = out.language
    response.headers["Vary"] = "Accept-Language"


@router.post("/services", status_code=201, tags=["directory"])
async def create_service(body: ServiceCreate, principal: Writer, registry: Registry, response: Response,
                         accept_language: AcceptLanguage = None) -> ServiceOut:
    service = await registry.directory.create(principal.agency_id, body)
    out = service_out(service, accept_language)
    _content_language(response, out)
    response.headers["Location"] = f"/services/{service.id}"
    return out


@router.get("/services", tags=["directory"])
async def search_services(params: Annotated[ServiceSearch, Query()], _: Reader, registry: Registry,
                          response: Response, accept_language: AcceptLanguage = None) -> ServiceList:
    rows, _total = await registry.directory.search(
        taxonomy=params.taxonomy, country=params.country, language=params.language,
        accepts_children=params.accepts_children, accepting=params.accepting, point=params.point,
        radius_km=params.radius_km, q=params.q, offset=params.offset, limit=params.limit + 1,
    )
    more = len(rows) > params.limit
    response.headers["Vary"] = "Accept-Language"
    return ServiceList(items=[service_out(s, accept_language, d) for s, d in rows[: params.limit]],
                       next_cursor=encode_cursor(params.offset + params.limit) if more else None)


@router.get("/services/{service_id}", tags=["directory"])
async def get_service(service_id: ServiceId, _: Reader, registry: Registry, response: Response,
                      accept_language: AcceptLanguage = None) -> ServiceOut:
    out = service_out(await registry.directory.get(service_id), accept_language)
    _content_language(response, out)
    return out


@router.patch("/services/{service_id}", tags=["directory"])
async def update_service(service_id: ServiceId, body: ServicePatch, principal: Writer, registry: Registry,
                         response: Response, accept_language: AcceptLanguage = None) -> ServiceOut:
    out = service_out(await registry.directory.update(principal.agency_id, service_id, body), accept_language)
    _content_language(response, out)
    return out


@router.delete("/services/{service_id}", status_code=204, tags=["directory"])
async def withdraw_service(service_id: ServiceId, principal: Writer, registry: Registry) -> Response:
    await registry.directory.withdraw(principal.agency_id, service_id)
    return Response(status_code=204)


@router.put("/services/{service_id}/capacity", tags=["directory"])
async def set_capacity(service_id: ServiceId, body: CapacityIn, principal: Writer, registry: Registry,
                       accept_language: AcceptLanguage = None) -> ServiceOut:
    return service_out(await registry.directory.set_capacity(principal.agency_id, service_id, body), accept_language)


@router.get("/taxonomy", tags=["directory"])
async def taxonomy(_: Reader, accept_language: AcceptLanguage = None) -> TaxonomyList:
    items = []
    for code, labels in reference.TAXONOMY.items():
        language = domain.pick_language(accept_language, labels) or "en"
        items.append(TaxonomyTermOut(code=code, name=labels[language], language=language,
                                     parent=code.split(".")[0] if "." in code else None))
    return TaxonomyList(items=items, next_cursor=None)


# --- HSDS 3.0 -----------------------------------------------------------------------------------------------


#: The HSDS 3.0 API's own parameter names (its ``schema/openapi.json``); the ones RefNet does not implement
#: (minimal, full, format, ...) are not declared, so they are a 422 naming them, not silently ignored.
HSDS_TAXONOMY = "refnet"
_HSDS_UNSUPPORTED = ("Not supported, so refused with a 422 that names them: ``minimal``, ``full``, ``format`` "
                     "(JSON only), ``postcode``, ``proximity`` (use GET /services with ``near``).")


def _utc(moment: datetime, name: str) -> datetime:
    """``moment`` in UTC; a 422 naming the parameter when UTC would be outside years 1-9999 (say,
    ``0001-01-01T00:00:00+14:00``), which Python cannot hold: the database driver would fail on it."""
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise invalid(["query", name], "outside the years 1 to 9999 once in UTC") from None


@router.get("/hsds/services", tags=["directory"], summary="The directory as HSDS 3.0 JSON",
            response_model=HsdsPage, response_model_exclude_none=True, description=(
                "Active services of active agencies, oldest first, as the HSDS 3.0 API's ``GET /services`` "
                "answers: a page envelope whose ``contents`` are HSDS 3.0 services. Supported HSDS 3.0 "
                "parameters: ``page``, ``per_page``, ``search``, ``taxonomy_term_id``, ``taxonomy_id``, "
                "``organization_id``, ``modified_after``. " + _HSDS_UNSUPPORTED))
async def hsds_services(
    _: Reader, registry: Registry,
    page: Annotated[int, Query(ge=1, le=10_000, description="The page to answer, from 1.", examples=[1])] = 1,
    per_page: Annotated[int, Query(ge=1, le=500, description="Services per page.", examples=[50])] = 50,
    search: Annotated[Line | None, Query(
        min_length=1, max_length=200, examples=["shelter"],
        description="Words in a service's name or description, in any language.")] = None,
    taxonomy_term_id: Annotated[Line | None, Query(
        max_length=80, examples=[hsds_taxonomy_term_id("health")],
        description="A taxonomy term's HSDS id, or RefNet's ``refnet:<code>`` or bare code; a parent term "
                    "takes in its children (``health`` finds ``health.medical``).")] = None,
    taxonomy_id: Annotated[Line | None, Query(
        max_length=80, examples=[HSDS_TAXONOMY],
        description="Services with a term of this taxonomy: every service's term is in ``refnet`` (HSDS id "
                    f"``{hsds_id('taxonomy', HSDS_TAXONOMY)}``), so any other value finds none.")] = None,
    organization_id: Annotated[Line | None, Query(
        max_length=80, examples=[str(hsds_id("organization", "agy_3f9c2a1b7d4e5f60"))],
        description="Services this agency provides: the organization's HSDS id, or RefNet's agency id.")
    ] = None,
    modified_after: Annotated[AwareDatetime | None, Query(
        examples=["2026-03-14T00:00:00Z"],
        description="Services changed at or after this time (RFC 3339, with its offset).")] = None,
    accept_language: AcceptLanguage = None,
) -> dict[str, Any]:
    since = _utc(modified_after, "modified_after") if modified_after is not None else None
    taxonomy = taxonomy_code(taxonomy_term_id) if taxonomy_term_id else None
    if taxonomy_term_id and (taxonomy is None or not reference.is_taxonomy_prefix(taxonomy)):
        raise invalid(["query", "taxonomy_term_id"], "not a taxonomy term")
    rows: list[Any] = []
    total: int | None = 0
    if taxonomy_id is None or is_refnet_taxonomy(taxonomy_id):
        rows, total = await registry.directory.search(
            taxonomy=taxonomy, q=search, agency_id=organization_id, modified_after=since,
            offset=(page - 1) * per_page, limit=per_page, count=True)
    total = total or 0
    agencies = await registry.agencies.by_id({service.agency_id for service, _ in rows})
    contents = [hsds_service(service, hsds_organization(agencies.get(service.agency_id)), accept_language)
                for service, _d in rows]
    total_pages = max(1, math.ceil(total / per_page))
    return {"total_items": total, "total_pages": total_pages, "page_number": page, "size": len(contents),
            "first_page": page == 1, "last_page": page >= total_pages, "empty": not contents,
            "contents": contents}


@router.get("/hsds/services/{service_id}", tags=["directory"], summary="One service as HSDS 3.0 JSON",
            response_model=HsdsService, response_model_exclude_none=True, description=(
                "An active service of an active agency as an HSDS 3.0 ``service``, with its organization, "
                "locations and taxonomy term (the HSDS 3.0 API's ``GET /services/{id}``), by its HSDS id or "
                "by RefNet's service id. It takes no query parameter."))
async def hsds_service_by_id(service_id: HsdsServiceId, _: Reader, registry: Registry,
                             accept_language: AcceptLanguage = None) -> dict[str, Any]:
    service = await registry.directory.get(service_id, hsds=True)
    agency = (await registry.agencies.by_id({service.agency_id})).get(service.agency_id)
    return hsds_service(service, hsds_organization(agency), accept_language)
