"""registry's HTTP routes: parse, authorise, call the service layer, shape the response."""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from services.registry import domain
from services.registry.domain import OAuthError
from services.registry.schemas import (
    AgencyCreate,
    AgencyList,
    AgencyOut,
    AgencyPatch,
    AgencyRegistered,
    CapacityIn,
    LocationOut,
    ServiceCreate,
    ServiceList,
    ServiceOut,
    ServicePatch,
    ServiceSearch,
    decode_cursor,
    encode_cursor,
)
from services.registry.service import RegistryService, ServiceRecord
from services.registry.store import Agency, Service
from shared.app import runtime_of
from shared.auth import Principal, require_scopes
from shared.errors import Problem
from shared.text import Line

router = APIRouter()

Admin = Annotated[Principal, Depends(require_scopes("admin"))]
Reader = Annotated[Principal, Depends(require_scopes("registry:read"))]
Writer = Annotated[Principal, Depends(require_scopes("registry:write"))]
AcceptLanguage = Annotated[str | None, Header(alias="Accept-Language", max_length=500)]
FORM_TYPE = "application/x-www-form-urlencoded"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


async def registry_of(request: Request) -> RegistryService:
    # async: FastAPI runs a plain-def dependency in its thread pool, a thread hop on every request.
    registry: RegistryService = runtime_of(request).extras["registry"]
    return registry


Registry = Annotated[RegistryService, Depends(registry_of)]
AgencyId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
ServiceId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


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
TOKEN_FORM = _oauth_form({"grant_type": {"type": "string", "enum": ["client_credentials"]},
                          "scope": {"type": "string", "description": "space-separated scopes"}}, ["grant_type"])
TOKEN_ACTION_FORM = _oauth_form({"token": {"type": "string"}, "token_type_hint": {"type": "string"}}, ["token"])


@router.post("/oauth/token", tags=["oauth"], summary="Token endpoint (client credentials grant)",
             responses=TOKEN_RESPONSES, openapi_extra=TOKEN_FORM)
async def token(request: Request, registry: Registry) -> JSONResponse:
    basic_used = "authorization" in request.headers
    try:
        form, basic = await oauth_form(request)
    except OAuthError as error:
        await registry.throttle({}, None, _address(request))
        await registry.record_refusal({}, None, None, error)
        return oauth_error_response(error, basic_used)
    await registry.throttle(form, basic, _address(request))
    try:
        body = await registry.issue_token(form, basic)
    except OAuthError as error:
        return oauth_error_response(error, basic_used)
    return JSONResponse(body, headers=NO_STORE)


@router.post("/oauth/introspect", tags=["oauth"], summary="Token introspection (RFC 7662)",
             responses=OAUTH_RESPONSES, openapi_extra=TOKEN_ACTION_FORM)
async def introspect(request: Request, registry: Registry) -> JSONResponse:
    basic_used = "authorization" in request.headers
    try:
        form, basic = await oauth_form(request)
        await registry.throttle(form, basic, _address(request))
        return JSONResponse(await registry.introspect(form, basic), headers=NO_STORE)
    except OAuthError as error:
        return oauth_error_response(error, basic_used)


@router.post("/oauth/revoke", tags=["oauth"], summary="Token revocation (RFC 7009)",
             responses=OAUTH_RESPONSES, openapi_extra=TOKEN_ACTION_FORM)
async def revoke(request: Request, registry: Registry) -> Response:
    basic_used = "authorization" in request.headers
    try:
        form, basic = await oauth_form(request)
        await registry.throttle(form, basic, _address(request))
        await registry.revoke(form, basic)
    except OAuthError as error:
        return oauth_error_response(error, basic_used)
    return Response(status_code=200, headers=NO_STORE)


@router.get("/.well-known/oauth-authorization-server", tags=["oauth"], summary="RFC 8414 metadata")
async def metadata(registry: Registry) -> dict[str, Any]:
    issuer = registry.settings.issuer.rstrip("/")
    auth_methods = ["private_key_jwt", "client_secret_basic"]
    algs = list(domain.ASSERTION_ALGORITHMS)
    return {
        "issuer": registry.settings.issuer,
        "token_endpoint": issuer + "/oauth/token",
        "jwks_uri": issuer + "/.well-known/jwks.json",
        "introspection_endpoint": issuer + "/oauth/introspect",
        "revocation_endpoint": issuer + "/oauth/revoke",
        "grant_types_supported": ["client_credentials"],
        "response_types_supported": [],
        "scopes_supported": sorted(domain.SCOPES),
        "token_endpoint_auth_methods_supported": auth_methods,
        "token_endpoint_auth_signing_alg_values_supported": algs,
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_signing_alg_values_supported": algs,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_signing_alg_values_supported": algs,
        "access_token_signing_alg_values_supported": ["ES256"],
    }


@router.get("/.well-known/jwks.json", tags=["oauth"], summary="Signing keys (current and previous)")
async def jwks(registry: Registry) -> JSONResponse:
    # Shorter than the time a rotated-in key is published before it signs (refnet keys rotate --activate-in).
    return JSONResponse(await registry.jwks(), headers={"Cache-Control": "public, max-age=30"})


# --- agencies -----------------------------------------------------------------------------------------------


def agency_out(agency: Agency) -> AgencyOut:
    return AgencyOut(
        id=agency.id, client_id=agency.client_id, name=agency.name, kind=agency.kind, country=agency.country,
        status=agency.status, scopes=sorted(agency.scopes),
        auth_method="client_secret_basic" if agency.secret_hash else "private_key_jwt",
        created_at=agency.created_at, updated_at=agency.updated_at,
    )


def _registered(agency: Agency, secret: str | None) -> AgencyRegistered:
    return AgencyRegistered(**agency_out(agency).model_dump(), client_secret=secret)


@router.post("/agencies", status_code=201, tags=["agencies"], response_model_exclude_none=True)
async def register_agency(body: AgencyCreate, _: Admin, registry: Registry, response: Response) -> AgencyRegistered:
    agency, secret = await registry.register_agency(body)
    response.headers["Cache-Control"] = "no-store"
    return _registered(agency, secret)


def _offset(cursor: str | None) -> int:
    if cursor is None:
        return 0
    try:
        return decode_cursor(cursor)
    except ValueError:
        raise Problem(422, "validation-error", "The request is not valid: query.cursor.",
                      errors=[{"loc": ["query", "cursor"], "msg": "not a cursor this API returned"}]) from None


@router.get("/agencies", tags=["agencies"])
async def list_agencies(
    _: Reader, registry: Registry,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[Line | None, Query(max_length=64)] = None,
) -> AgencyList:
    offset = _offset(cursor)
    agencies, more = await registry.list_agencies(limit, offset)
    return AgencyList(items=[agency_out(a) for a in agencies],
                      next_cursor=encode_cursor(offset + limit) if more else None)


@router.get("/agencies/{agency_id}", tags=["agencies"])
async def get_agency(agency_id: AgencyId, _: Reader,
                     registry: Registry) -> AgencyOut:
    return agency_out(await registry.get_agency(agency_id))


@router.patch("/agencies/{agency_id}", tags=["agencies"], response_model_exclude_none=True)
async def update_agency(agency_id: AgencyId, body: AgencyPatch, _: Admin, registry: Registry,
                        response: Response) -> AgencyRegistered:
    agency, secret = await registry.update_agency(agency_id, body)
    response.headers["Cache-Control"] = "no-store"
    return _registered(agency, secret)


# --- the directory ------------------------------------------------------------------------------------------


def service_out(service: Service | ServiceRecord, accept_language: str | None,
                distance: float | None = None) -> ServiceOut:
    language = domain.pick_language(accept_language, service.names)
    description_language = language if language in service.descriptions else domain.pick_language(
        accept_language, service.descriptions)
    return ServiceOut(
        id=service.id, agency_id=service.agency_id, taxonomy=service.taxonomy,
        taxonomy_label=domain.TAXONOMY[service.taxonomy][
            domain.pick_language(accept_language, domain.TAXONOMY[service.taxonomy]) or "en"],
        language=language, name=domain.localized(service.names, language),
        description=domain.localized(service.descriptions, description_language),
        names=service.names, descriptions=service.descriptions, countries=service.countries,
        admin_areas=service.admin_areas, languages=service.languages,
        accepts_children=service.accepts_children, eligibility=service.eligibility, hours=service.hours,
        contact=service.contact,
        capacity={"available": service.capacity_available, "total": service.capacity_total,  # type: ignore[arg-type]
                  "status": service.capacity_status},
        locations=[LocationOut(id=loc.id, name=loc.name, address=loc.address, city=loc.city,
                               country=loc.country, latitude=loc.latitude, longitude=loc.longitude)
                   for loc in service.locations],
        status=service.status, distance_km=round(distance, 3) if distance is not None else None,
        created_at=service.created_at, updated_at=service.updated_at,
    )


def _content_language(response: Response, out: ServiceOut) -> None:
    if out.language:
        response.headers["Content-Language"] = out.language
    response.headers["Vary"] = "Accept-Language"


@router.post("/services", status_code=201, tags=["directory"])
async def create_service(body: ServiceCreate, principal: Writer, registry: Registry, response: Response,
                         accept_language: AcceptLanguage = None) -> ServiceOut:
    service = await registry.create_service(principal.agency_id, body)
    out = service_out(service, accept_language)
    _content_language(response, out)
    response.headers["Location"] = f"/services/{service.id}"
    return out


@router.get("/services", tags=["directory"])
async def search_services(params: Annotated[ServiceSearch, Query()], _: Reader, registry: Registry,
                          response: Response, accept_language: AcceptLanguage = None) -> ServiceList:
    rows, _total = await registry.search(
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
    out = service_out(await registry.get_service(service_id), accept_language)
    _content_language(response, out)
    return out


@router.patch("/services/{service_id}", tags=["directory"])
async def update_service(service_id: ServiceId, body: ServicePatch, principal: Writer, registry: Registry,
                         response: Response, accept_language: AcceptLanguage = None) -> ServiceOut:
    out = service_out(await registry.update_service(principal.agency_id, service_id, body), accept_language)
    _content_language(response, out)
    return out


@router.delete("/services/{service_id}", status_code=204, tags=["directory"])
async def withdraw_service(service_id: ServiceId, principal: Writer, registry: Registry) -> Response:
    await registry.withdraw_service(principal.agency_id, service_id)
    return Response(status_code=204)


@router.put("/services/{service_id}/capacity", tags=["directory"])
async def set_capacity(service_id: ServiceId, body: CapacityIn, principal: Writer, registry: Registry,
                       accept_language: AcceptLanguage = None) -> ServiceOut:
    return service_out(await registry.set_capacity(principal.agency_id, service_id, body), accept_language)


@router.get("/taxonomy", tags=["directory"])
async def taxonomy(_: Reader, accept_language: AcceptLanguage = None) -> dict[str, Any]:
    items = []
    for code, labels in domain.TAXONOMY.items():
        language = domain.pick_language(accept_language, labels) or "en"
        items.append({"code": code, "name": labels[language], "language": language,
                      "parent": code.split(".")[0] if "." in code else None})
    return {"items": items, "next_cursor": None}


# --- HSDS 3.0 -----------------------------------------------------------------------------------------------


def hsds_organization(agency: Agency | None) -> dict[str, Any] | None:
    """The agency as an HSDS organization (public profile only)."""
    if agency is None:
        return None
    return {"id": agency.id, "name": agency.name, "description": agency.kind, "legal_status": agency.kind,
            "uri": None}


def hsds_service(service: Service | ServiceRecord, agency: dict[str, Any] | None,
                 accept_language: str | None) -> dict[str, Any]:
    """One service in the HSDS 3.0 ``service`` schema (with its organization, locations and taxonomy)."""
    out = service_out(service, accept_language)
    term_id = f"refnet:{service.taxonomy}"
    return {
        "id": service.id,
        "organization_id": service.agency_id,
        "name": out.name,
        "description": out.description,
        "status": "active" if service.status == "active" else "inactive",
        "email": service.contact.get("email"),
        "url": service.contact.get("url"),
        "minimum_age": service.eligibility.get("min_age"),
        "maximum_age": service.eligibility.get("max_age"),
        "eligibility_description": None,
        "languages": [{"id": f"{service.id}:{lang}", "service_id": service.id, "code": lang, "name": None}
                      for lang in service.languages],
        "service_areas": [{"id": f"{service.id}:{c}", "service_id": service.id, "name": c,
                           "extent_type": "text", "extent": c} for c in service.countries],
        "phones": [{"id": f"{service.id}:phone", "service_id": service.id, "number": service.contact["phone"],
                    "type": "voice"}] if service.contact.get("phone") else [],
        "schedules": [{"id": f"{service.id}:hours", "service_id": service.id,
                       "description": service.hours}] if service.hours else [],
        "capacities": [{"id": f"{service.id}:capacity", "service_id": service.id, "available":
                        service.capacity_available, "maximum": service.capacity_total,
                        "unit": {"id": "places", "name": "places"},
                        "description": service.capacity_status, "updated": service.updated_at.isoformat()}],
        "attributes": [{"id": f"{service.id}:{service.taxonomy}", "link_id": service.id,
                        "link_type": "service", "link_entity": "service", "taxonomy_term_id": term_id,
                        "taxonomy_term": {"id": term_id, "code": service.taxonomy, "name": out.taxonomy_label,
                                          "description": out.taxonomy_label,
                                          "parent_id": f"refnet:{service.taxonomy.split('.')[0]}"
                                          if "." in service.taxonomy else None,
                                          "taxonomy": "refnet", "taxonomy_id": "refnet"}}],
        "service_at_locations": [
            {"id": f"{service.id}:{loc.id}", "service_id": service.id, "location_id": loc.id,
             "location": {"id": loc.id, "location_type": "physical", "name": loc.name,
                          "latitude": loc.latitude, "longitude": loc.longitude,
                          "addresses": [{"id": f"{loc.id}:address", "location_id": loc.id,
                                         "address_1": loc.address or "", "city": loc.city or "",
                                         "region": None, "state_province": "", "postal_code": "",
                                         "country": loc.country, "address_type": "physical"}]}}
            for loc in service.locations
        ],
        "organization": agency,
    }


@router.get("/hsds/services", tags=["directory"], summary="The directory as HSDS 3.0 JSON")
async def hsds_services(
    _: Reader, registry: Registry,
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=500)] = 50,
    taxonomy_term_id: Annotated[Line | None, Query(max_length=80)] = None,
    accept_language: AcceptLanguage = None,
) -> dict[str, Any]:
    taxonomy = taxonomy_term_id.removeprefix("refnet:") if taxonomy_term_id else None
    if taxonomy is not None and not domain.is_taxonomy_prefix(taxonomy):
        raise Problem(422, "validation-error", "The request is not valid: query.taxonomy_term_id.",
                      errors=[{"loc": ["query", "taxonomy_term_id"], "msg": "not a taxonomy term"}])
    rows, total = await registry.search(taxonomy=taxonomy, offset=(page - 1) * per_page, limit=per_page,
                                        count=True)
    total = total or 0
    agencies = await registry.agencies_by_id({service.agency_id for service, _ in rows})
    contents = [hsds_service(service, hsds_organization(agencies.get(service.agency_id)), accept_language)
                for service, _d in rows]
    total_pages = max(1, math.ceil(total / per_page))
    return {"total_items": total, "total_pages": total_pages, "page_number": page, "size": len(contents),
            "first_page": page == 1, "last_page": page >= total_pages, "empty": not contents,
            "contents": contents}


@router.get("/hsds/services/{service_id}", tags=["directory"], summary="One service as HSDS 3.0 JSON")
async def hsds_service_by_id(service_id: ServiceId, _: Reader, registry: Registry,
                             accept_language: AcceptLanguage = None) -> dict[str, Any]:
    service = await registry.get_service(service_id)
    agency = (await registry.agencies_by_id({service.agency_id})).get(service.agency_id)
    return hsds_service(service, hsds_organization(agency), accept_language)
