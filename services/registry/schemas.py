"""Request and response bodies of the registry's HTTP API (pydantic). Validation errors name the field."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from services.registry import domain
from services.registry.hsds_ids import NAMESPACE, hsds_id
from services.registry.oauth import import_public_jwks
from shared import geo, pagination, reference
from shared.text import FreeText, Line


def _country(value: str) -> str:
    code = value.upper()
    if not reference.is_country(code):
        raise ValueError("not an ISO 3166-1 alpha-2 country code")
    return code


def _language(value: str) -> str:
    if not domain.LANGUAGE_TAG.fullmatch(value):
        raise ValueError("not a language tag (e.g. en, fr, pt-BR)")
    return value


CountryCode = Annotated[str, Field(min_length=2, max_length=2), AfterValidator(_country)]
LanguageTag = Annotated[str, Field(max_length=35), AfterValidator(_language)]


def _scopes(values: list[str]) -> list[str]:
    unknown = sorted(set(values) - domain.SCOPES)
    if unknown:
        raise ValueError(f"unknown scope(s): {' '.join(unknown)[:200]}")
    return sorted(set(values))


def _jwks(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is not None:
        import_public_jwks(value)  # raises ValueError with the reason
    return value


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- agencies ----------------------------------------------------------------------------------------------


# Examples only: ids in shared/ids.py's formats, no real key material, no real contact points.
EXAMPLE_AGENCY = "agy_3f9c2a1b7d4e5f60"
EXAMPLE_CLIENT = "cli_8b1d4e7a2c5f9036"
EXAMPLE_SERVICE = "svc_5d2e8a0c4b1f7e93"
EXAMPLE_LOCATION = "loc_0a7c3e9f1b5d2486"
EXAMPLE_TIME = "2026-03-14T09:26:53.589793Z"
EXAMPLE_JWKS = {"keys": [{"kty": "EC", "crv": "P-256", "kid": "example-key-1", "use": "sig", "alg": "ES256",
                          "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                          "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}
AGENCY_KIND = Literal["un_agency", "ngo", "government", "service_provider", "oversight"]


class AgencyCreate(_Body):
    """A new agency and its OAuth client: exactly one of ``jwks``, ``jwks_uri`` or ``generate_secret``."""

    name: Line = Field(min_length=1, max_length=200, description="The agency's public name.",
                       examples=["Example Shelter Network"])
    kind: AGENCY_KIND = Field(description="What sort of agency it is (``oversight`` may read the audit log).",
                              examples=["ngo"])
    country: CountryCode = Field(description="Where it is registered: ISO 3166-1 alpha-2.", examples=["IT"])
    jwks: dict[str, Any] | None = Field(
        default=None, description="Its client's public keys (a JWK Set), for private_key_jwt.",
        examples=[EXAMPLE_JWKS])
    jwks_uri: AnyHttpUrl | None = Field(
        default=None, description="Where its client publishes its public keys (https), for private_key_jwt.",
        examples=["https://cases.example.org/.well-known/jwks.json"])
    generate_secret: bool = Field(
        default=False, description="Generate a client secret (client_secret_basic) instead of keys; shown once.",
        examples=[False])
    scopes: list[Line] = Field(default_factory=list, max_length=32,
                               description="The scopes its client may ask for.",
                               examples=[["registry:read", "cases:write"]])

    _check_scopes = field_validator("scopes")(classmethod(lambda cls, v: _scopes(v)))
    _check_jwks = field_validator("jwks")(classmethod(lambda cls, v: _jwks(v)))

    @model_validator(mode="after")
    def _one_credential(self) -> AgencyCreate:
        refused = domain.scopes_not_for_kind(self.kind, self.scopes)
        if refused:
            raise ValueError(f"scope(s) {' '.join(refused)} only for oversight agencies")
        chosen = [self.jwks is not None, self.jwks_uri is not None, self.generate_secret]
        if sum(chosen) != 1:
            raise ValueError("give exactly one of jwks, jwks_uri or generate_secret: true")
        return self


class AgencyPatch(_Body):
    """Only the fields given change; at most one new credential."""

    status: Literal["active", "suspended"] | None = Field(
        default=None, description="Suspend the agency (its client gets no tokens) or make it active again.",
        examples=["suspended"])
    scopes: list[Line] | None = Field(default=None, max_length=32, description="Its client's new scopes.",
                                      examples=[["registry:read"]])
    jwks: dict[str, Any] | None = Field(default=None, description="New public keys (a JWK Set).",
                                        examples=[EXAMPLE_JWKS])
    jwks_uri: AnyHttpUrl | None = Field(default=None, description="A new address of its public keys (https).",
                                        examples=["https://cases.example.org/.well-known/jwks.json"])
    generate_secret: bool = Field(default=False, description="Replace its credential with a new client secret.",
                                  examples=[False])

    _check_scopes = field_validator("scopes")(classmethod(lambda cls, v: v if v is None else _scopes(v)))
    _check_jwks = field_validator("jwks")(classmethod(lambda cls, v: _jwks(v)))

    @model_validator(mode="after")
    def _at_most_one_credential(self) -> AgencyPatch:
        if sum([self.jwks is not None, self.jwks_uri is not None, self.generate_secret]) > 1:
            raise ValueError("give at most one of jwks, jwks_uri or generate_secret: true")
        return self


class _Out(BaseModel):
    # A field the use case returns but the model lacks fails (FastAPI validates answers) instead of vanishing.
    model_config = ConfigDict(extra="forbid")


class AgencyOut(_Out):
    """The public profile: no keys, no secrets."""

    id: str = Field(description="The agency's id.", examples=[EXAMPLE_AGENCY])
    client_id: str = Field(description="Its OAuth client's id.", examples=[EXAMPLE_CLIENT])
    name: str = Field(description="Its public name.", examples=["Example Shelter Network"])
    kind: str = Field(description="What sort of agency it is.", examples=["ngo"])
    country: str = Field(description="Where it is registered: ISO 3166-1 alpha-2.", examples=["IT"])
    status: str = Field(description="``active``, or ``suspended`` (its client gets no tokens).",
                        examples=["active"])
    scopes: list[str] = Field(description="The scopes its client may ask for.",
                              examples=[["cases:write", "registry:read"]])
    auth_method: Literal["private_key_jwt", "client_secret_basic"] = Field(
        description="How its client authenticates at the token endpoint.", examples=["private_key_jwt"])
    created_at: datetime = Field(description="When it was registered.", examples=[EXAMPLE_TIME])
    updated_at: datetime = Field(description="When its profile or credential last changed.",
                                 examples=[EXAMPLE_TIME])


class AgencyRegistered(AgencyOut):
    client_secret: str | None = Field(default=None, description="Shown once, when generated.",
                                      examples=["example-secret-shown-once"])


class AgencyList(_Out):
    items: list[AgencyOut] = Field(description="This page's agencies, oldest first.")
    next_cursor: str | None = Field(description="Pass as ``cursor`` for the next page; null on the last.",
                                    examples=["b2Zmc2V0OjUw"])


# --- services ----------------------------------------------------------------------------------------------


class CapacityIn(_Body):
    total: int = Field(ge=0, le=1_000_000, description="Places the service has.", examples=[12])
    available: int = Field(ge=0, le=1_000_000, description="Places free now (at most ``total``).",
                           examples=[3])
    status: Literal["accepting", "full", "closed"] = Field(description="Whether it takes referrals now.",
                                                           examples=["accepting"])

    @field_validator("available")
    @classmethod
    def _within_total(cls, value: int, info: ValidationInfo) -> int:
        total = info.data.get("total")
        if total is not None and value > total:
            raise ValueError("available cannot exceed total")
        return value


class LocationIn(_Body):
    """Where the service is delivered (a public site: never a safe house's address)."""

    name: Line | None = Field(default=None, max_length=200, description="The site's public name.",
                              examples=["Example Centre Rome"])
    address: FreeText | None = Field(default=None, max_length=500, description="Its public street address.",
                                     examples=["1 Example Street"])
    city: Line | None = Field(default=None, max_length=120, description="Its city.", examples=["Rome"])
    country: CountryCode = Field(description="Its country: ISO 3166-1 alpha-2.", examples=["IT"])
    latitude: float | None = Field(default=None, ge=-90, le=90, description="WGS 84 latitude (with longitude).",
                                   examples=[41.9028])
    longitude: float | None = Field(default=None, ge=-180, le=180,
                                    description="WGS 84 longitude (with latitude).", examples=[12.4964])

    @model_validator(mode="after")
    def _both_or_neither(self) -> LocationIn:
        if (self.latitude is None) != (self.longitude is None):
            raise ValueError("give both latitude and longitude, or neither")
        return self


class Eligibility(_Body):
    """Who the service is for (empty lists: anyone)."""

    min_age: int | None = Field(default=None, ge=0, le=120, description="Youngest age served.", examples=[18])
    max_age: int | None = Field(default=None, ge=0, le=120, description="Oldest age served.", examples=[65])
    genders: list[Annotated[Line, Field(max_length=40)]] = Field(
        default_factory=list, max_length=8, description="Genders served, in the agency's words.",
        examples=[["female"]])
    nationalities: list[CountryCode] = Field(default_factory=list, max_length=250,
                                             description="Nationalities served: ISO 3166-1 alpha-2.",
                                             examples=[["NG", "ER"]])


class Contact(_Body):
    """The service's public contact point (an organisation's, never a person's)."""

    phone: Line | None = Field(default=None, max_length=40, description="The service's public phone line.",
                               examples=["+39 06 0000 0000"])
    email: Line | None = Field(default=None, max_length=200, description="The service's public address.",
                               examples=["intake@example.org"])
    url: AnyHttpUrl | None = Field(default=None, description="The service's public web page.",
                                   examples=["https://shelter.example.org/rome"])


Texts = dict[str, FreeText]  # descriptions may run over lines
Names = dict[str, Line]


def _texts(value: Texts | Names | None, *, required: bool) -> Texts | Names | None:
    if value is None:
        return None
    if required and not value:
        raise ValueError("give at least one language")
    if len(value) > 30:
        raise ValueError("at most 30 languages")
    for lang, text in value.items():
        _language(lang)
        if not text or len(text) > 4000:
            raise ValueError("each text must have 1-4000 characters")
    return value


class ServiceFields(_Body):
    taxonomy: Line | None = Field(default=None, description="What the service does: a code of GET /taxonomy.",
                                  examples=["shelter"])
    names: Names | None = Field(default=None, description="Its name in each language (language tag -> name).",
                                examples=[{"en": "Example Shelter - Rome", "fr": "Refuge exemple - Rome"}])
    descriptions: Texts | None = Field(default=None, description="Its description in each language.",
                                       examples=[{"en": "Safe accommodation for adult survivors."}])
    countries: list[CountryCode] | None = Field(default=None, min_length=1, max_length=50,
                                                description="Countries it serves: ISO 3166-1 alpha-2.",
                                                examples=[["IT"]])
    admin_areas: list[Annotated[Line, Field(min_length=1, max_length=120)]] | None = Field(
        default=None, max_length=100, description="Regions or cities it serves.", examples=[["Rome"]])
    languages: list[LanguageTag] | None = Field(default=None, max_length=50,
                                                description="Languages it works in (language tags).",
                                                examples=[["it", "en"]])
    accepts_children: bool | None = Field(default=None, description="Whether it serves children.",
                                          examples=[False])
    eligibility: Eligibility | None = Field(default=None, description="Who it is for.")
    hours: FreeText | None = Field(default=None, max_length=500, description="When it is open, as free text.",
                                   examples=["Mon-Fri 09:00-17:00"])
    contact: Contact | None = Field(default=None, description="Its public contact point.")
    locations: list[LocationIn] | None = Field(default=None, max_length=50, description="Where it is delivered.")

    @field_validator("taxonomy")
    @classmethod
    def _taxonomy(cls, value: str | None) -> str | None:
        if value is not None and not reference.is_taxonomy_code(value):
            raise ValueError("not a taxonomy code (see GET /taxonomy)")
        return value

    _check_names = field_validator("names")(classmethod(lambda cls, v: _texts(v, required=True)))
    _check_descriptions = field_validator("descriptions")(classmethod(lambda cls, v: _texts(v, required=False)))


class ServiceCreate(ServiceFields):
    taxonomy: Line = Field(description="What the service does: a code of GET /taxonomy.", examples=["shelter"])
    names: Names = Field(description="Its name in each language (language tag -> name); at least one.",
                         examples=[{"en": "Example Shelter - Rome", "fr": "Refuge exemple - Rome"}])
    countries: list[CountryCode] = Field(min_length=1, max_length=50,
                                         description="Countries it serves: ISO 3166-1 alpha-2.", examples=[["IT"]])
    accepts_children: bool = Field(default=False, description="Whether it serves children.", examples=[False])
    capacity: CapacityIn = Field(default_factory=lambda: CapacityIn(total=0, available=0, status="accepting"),
                                 description="Its places (none, accepting, when left out).")


class ServicePatch(ServiceFields):
    """Only the fields given change; ``locations`` replaces the whole list."""


class CapacityOut(_Out):
    available: int = Field(description="Places free now.", examples=[3])
    total: int = Field(description="Places the service has.", examples=[12])
    status: str = Field(description="``accepting``, ``full`` or ``closed``.", examples=["accepting"])


class LocationOut(_Out):
    id: str = Field(description="The location's id.", examples=[EXAMPLE_LOCATION])
    name: str | None = Field(description="The site's public name.", examples=["Example Centre Rome"])
    address: str | None = Field(description="Its public street address.", examples=["1 Example Street"])
    city: str | None = Field(description="Its city.", examples=["Rome"])
    country: str = Field(description="Its country: ISO 3166-1 alpha-2.", examples=["IT"])
    latitude: float | None = Field(description="WGS 84 latitude.", examples=[41.9028])
    longitude: float | None = Field(description="WGS 84 longitude.", examples=[12.4964])


class ServiceOut(_Out):
    id: str = Field(description="The service's id.", examples=[EXAMPLE_SERVICE])
    agency_id: str = Field(description="The agency that provides it.", examples=[EXAMPLE_AGENCY])
    taxonomy: str = Field(description="What it does: a code of GET /taxonomy.", examples=["shelter"])
    taxonomy_label: str = Field(description="That code's label, in the caller's language.",
                                examples=["Shelter"])
    language: str | None = Field(description="The language of name and description (from Accept-Language).",
                                 examples=["en"])
    name: str | None = Field(description="Its name in ``language``.", examples=["Example Shelter - Rome"])
    description: str | None = Field(description="Its description in ``language`` (null: none given).",
                                    examples=["Safe accommodation for adult survivors."])
    names: dict[str, str] = Field(description="Its name in each language.",
                                  examples=[{"en": "Example Shelter - Rome", "fr": "Refuge exemple - Rome"}])
    descriptions: dict[str, str] = Field(description="Its description in each language.",
                                         examples=[{"en": "Safe accommodation for adult survivors."}])
    countries: list[str] = Field(description="Countries it serves: ISO 3166-1 alpha-2.", examples=[["IT"]])
    admin_areas: list[str] = Field(description="Regions or cities it serves.", examples=[["Rome"]])
    languages: list[str] = Field(description="Languages it works in.", examples=[["it", "en"]])
    accepts_children: bool = Field(description="Whether it serves children.", examples=[False])
    eligibility: dict[str, Any] = Field(description="Who it is for (min_age, max_age, genders, nationalities).",
                                        examples=[{"min_age": 18, "genders": [], "nationalities": []}])
    hours: str | None = Field(description="When it is open, as free text.", examples=["Mon-Fri 09:00-17:00"])
    contact: dict[str, Any] = Field(description="Its public contact point (phone, email, url).",
                                    examples=[{"url": "https://shelter.example.org/rome"}])
    capacity: CapacityOut = Field(description="Its places, and whether it takes referrals now.")
    locations: list[LocationOut] = Field(description="Where it is delivered.")
    status: str = Field(description="``active``, or ``withdrawn`` by its agency.", examples=["active"])
    distance_km: float | None = Field(default=None, description="From ``near`` to its nearest location, "
                                      "in a search with ``near``; null otherwise.", examples=[2.418])
    created_at: datetime = Field(description="When it was registered.", examples=[EXAMPLE_TIME])
    updated_at: datetime = Field(description="When it last changed.", examples=[EXAMPLE_TIME])


class ServiceList(_Out):
    items: list[ServiceOut] = Field(description="This page's services.")
    next_cursor: str | None = Field(description="Pass as ``cursor`` for the next page; null on the last.",
                                    examples=["b2Zmc2V0OjUw"])


class ServiceSearch(BaseModel):
    """``GET /services`` filters (docs/contract.md)."""

    taxonomy: str | None = Field(default=None, description="A taxonomy code or a prefix of codes (GET /taxonomy).",
                                 examples=["health"])
    country: CountryCode | None = Field(default=None, description="Serves this country (ISO 3166-1 alpha-2).",
                                        examples=["IT"])
    language: LanguageTag | None = Field(default=None, description="Works in this language (a language tag).",
                                         examples=["fr"])
    accepts_children: bool | None = Field(default=None, description="Serves children (true) or not (false).",
                                          examples=[True])
    accepting: bool | None = Field(default=None, description="Takes referrals now (accepting, a place free).",
                                   examples=[True])
    near: str | None = Field(default=None, description="A point, ``lat,lon``: nearest first, with distance_km.",
                             examples=["41.9028,12.4964"])
    radius_km: float | None = Field(default=None, gt=0, le=20_000,
                                    description="Only within this many km of ``near``.", examples=[25])
    q: Line | None = Field(default=None, min_length=1, max_length=200,
                           description="Words in a name or description, in any language.", examples=["shelter"])
    limit: int = Field(default=50, ge=1, le=500, description="Services per page.", examples=[50])
    cursor: str | None = Field(default=None, max_length=64, description="``next_cursor`` of the previous page.",
                               examples=["b2Zmc2V0OjUw"])

    @field_validator("taxonomy")
    @classmethod
    def _taxonomy(cls, value: str | None) -> str | None:
        if value is not None and not reference.is_taxonomy_prefix(value):
            raise ValueError("not a taxonomy code or prefix (see GET /taxonomy)")
        return value


    @field_validator("near")
    @classmethod
    def _near(cls, value: str | None) -> str | None:
        if value is not None:
            geo.parse_near(value)
        return value

    @model_validator(mode="after")
    def _radius_needs_near(self) -> ServiceSearch:
        if self.radius_km is not None and self.near is None:
            raise ValueError("radius_km needs near=lat,lon")
        return self

    @property
    def point(self) -> tuple[float, float] | None:
        return geo.parse_near(self.near) if self.near else None

    @property
    def offset(self) -> int:
        return decode_cursor(self.cursor)


# Offsets, not keys: the directory is small and its order is by relevance. Bounded so a crafted cursor cannot
# make the database walk a million rows.
MAX_OFFSET = 1_000_000


def encode_cursor(offset: int) -> str:
    return pagination.encode("offset", offset)


def decode_cursor(cursor: str | None) -> int:
    """The offset a cursor names (0 for none); the one invalid-cursor answer otherwise."""
    offset = pagination.decode_int("offset", cursor)
    if offset is not None and offset > MAX_OFFSET:
        raise pagination.invalid_cursor()
    return offset or 0


# --- taxonomy ----------------------------------------------------------------------------------------------


class TaxonomyTermOut(_Out):
    code: str = Field(description="The code services are filed under.", examples=["health.medical"])
    name: str = Field(description="Its label, in ``language``.", examples=["Medical care"])
    language: str = Field(description="The label's language (from Accept-Language; en when none fits).",
                          examples=["en"])
    parent: str | None = Field(description="The code it refines (null for a top-level code).",
                               examples=["health"])


class TaxonomyList(_Out):
    items: list[TaxonomyTermOut] = Field(description="Every code of the service taxonomy, parents first.")
    next_cursor: str | None = Field(description="Always null: the taxonomy is one page.", examples=[None])


# --- OAuth 2.0 (declared for the document: these endpoints answer as RFC 6749/7662/8414 and RFC 7517 say) ----


class TokenOut(_Out):
    """RFC 6749 section 5.1."""

    access_token: str = Field(description="The access token, a JWT signed by the registry (ES256).",
                              examples=["eyJhbGciOiJFUzI1NiIsImtpZCI6ImV4YW1wbGUifQ.e30.c2lnbmF0dXJl"])
    token_type: Literal["Bearer"] = Field(description="Always Bearer.")
    expires_in: int = Field(description="Seconds until it expires.", examples=[300])
    scope: str = Field(description="The scopes granted, space-separated.", examples=["registry:read cases:write"])
    refresh_token: str | None = Field(
        default=None, description="Person grants only (authorization_code, refresh_token): a refresh token, "
                                  "rotated at each use; absent for client_credentials.", examples=[None])
    id_token: str | None = Field(
        default=None, description="authorization_code with scope openid only: the OpenID Connect ID token (ES256, "
                                  "audience the first-party client).", examples=[None])


class IntrospectionOut(_Out):
    """RFC 7662 section 2.2: ``{"active": false}`` alone for a token that is not active, or that the caller
    may not know about."""

    active: bool = Field(description="Whether the token is valid now (signed here, unexpired, not revoked).",
                         examples=[True])
    token_type: Literal["Bearer"] | None = Field(default=None, description="Bearer, when active.")
    scope: str | None = Field(default=None, description="Its scopes, space-separated.",
                              examples=["registry:read"])
    client_id: str | None = Field(default=None, description="The client it was issued to.",
                                  examples=[EXAMPLE_CLIENT])
    sub: str | None = Field(default=None, description="Its subject (the client).", examples=[EXAMPLE_CLIENT])
    aud: str | list[str] | None = Field(default=None, description="Its audience.", examples=["refnet"])
    iss: str | None = Field(default=None, description="Its issuer (this registry).",
                            examples=["https://registry.example.org"])
    exp: int | None = Field(default=None, description="When it expires (seconds since the epoch).",
                            examples=[1773480713])
    iat: int | None = Field(default=None, description="When it was issued (seconds since the epoch).",
                            examples=[1773480413])
    nbf: int | None = Field(default=None, description="Not valid before (seconds since the epoch).",
                            examples=[1773480413])
    jti: str | None = Field(default=None, description="Its id.", examples=["9f86d081884c7d659a2feaa0c55ad015"])
    agency: str | None = Field(default=None, description="The agency of the client.", examples=[EXAMPLE_AGENCY])


class AuthorizationServerMetadata(_Out):
    """RFC 8414."""

    issuer: str = Field(description="The registry's issuer identifier (the tokens' ``iss``).",
                        examples=["https://registry.example.org"])
    token_endpoint: str = Field(description="Where clients get tokens.",
                                examples=["https://registry.example.org/oauth/token"])
    authorization_endpoint: str = Field(
        description="Where a person signs in for a first-party client (code flow with PKCE S256, then a TOTP "
                    "code).", examples=["https://registry.example.org/oauth/authorize"])
    jwks_uri: str = Field(description="Where the keys that sign the tokens are published.",
                          examples=["https://registry.example.org/.well-known/jwks.json"])
    introspection_endpoint: str = Field(description="RFC 7662 token introspection.",
                                        examples=["https://registry.example.org/oauth/introspect"])
    revocation_endpoint: str = Field(description="RFC 7009 token revocation.",
                                     examples=["https://registry.example.org/oauth/revoke"])
    grant_types_supported: list[str] = Field(
        description="client_credentials for agencies' systems; authorization_code and refresh_token for "
                    "first-party clients (people signing in).",
        examples=[["client_credentials", "authorization_code", "refresh_token"]])
    response_types_supported: list[str] = Field(description="Only the authorization code flow.",
                                                examples=[["code"]])
    response_modes_supported: list[str] = Field(description="The code comes back in the redirect's query.",
                                                examples=[["query"]])
    code_challenge_methods_supported: list[str] = Field(
        description="PKCE (RFC 7636): S256 only, and required; plain or no challenge is refused.",
        examples=[["S256"]])
    scopes_supported: list[str] = Field(
        description="openid (first-party clients; a person's API scopes follow their roles) and every scope an "
                    "agency's client may be given.", examples=[["openid", "admin", "registry:read"]])
    token_endpoint_auth_methods_supported: list[str] = Field(
        description="How clients authenticate at the token endpoint: agencies' systems with private_key_jwt or "
                    "client_secret_basic; a public first-party client with none (PKCE binds its code).",
        examples=[["private_key_jwt", "client_secret_basic", "none"]])
    token_endpoint_auth_signing_alg_values_supported: list[str] = Field(
        description="Algorithms accepted for private_key_jwt assertions.", examples=[["ES256", "RS256"]])
    introspection_endpoint_auth_methods_supported: list[str] = Field(
        description="How clients authenticate to introspect.", examples=[["private_key_jwt", "client_secret_basic"]])
    introspection_endpoint_auth_signing_alg_values_supported: list[str] = Field(
        description="Algorithms accepted for assertions there.", examples=[["ES256", "RS256"]])
    revocation_endpoint_auth_methods_supported: list[str] = Field(
        description="How clients authenticate to revoke.", examples=[["private_key_jwt", "client_secret_basic"]])
    revocation_endpoint_auth_signing_alg_values_supported: list[str] = Field(
        description="Algorithms accepted for assertions there.", examples=[["ES256", "RS256"]])
    access_token_signing_alg_values_supported: list[str] = Field(
        description="How the registry signs access tokens.", examples=[["ES256"]])


class JwksOut(_Out):
    """RFC 7517 JWK Set: the public keys that sign access tokens (current, next and previous)."""

    keys: list[dict[str, Any]] = Field(description="Public JWKs; match a token's ``kid``.",
                                       examples=[EXAMPLE_JWKS["keys"]])


# --- HSDS 3.0 (Open Referral's Human Services Data Specification, schema/compiled/service.json) ---------------
# Only what RefNet fills in; a property it has no value for is left out of the answer (HSDS types optional
# properties as plain strings and numbers, not null), so the routes answer with ``response_model_exclude_none``.
# Every id is a UUID, as HSDS declares: the UUIDv5 of ``<kind>/<RefNet key>`` under RefNet's namespace
# (services/registry/hsds_ids.py), the same for ever.

_HSDS_IDS = (f"UUIDv5 under RefNet's namespace ``{NAMESPACE}`` (RFC 9562) of")
EXAMPLE_HSDS_SERVICE = hsds_id("service", EXAMPLE_SERVICE)
EXAMPLE_HSDS_ORGANIZATION = hsds_id("organization", EXAMPLE_AGENCY)
EXAMPLE_HSDS_LOCATION = hsds_id("location", EXAMPLE_LOCATION)


def _hsds_id(name: str, example: UUID) -> Any:
    return Field(description=f"{_HSDS_IDS} ``{name}``.", examples=[example])


def _service_ref() -> Any:
    return Field(description="The service's HSDS id.", examples=[EXAMPLE_HSDS_SERVICE])


class HsdsOrganization(_Out):
    """The agency providing the service, as an HSDS ``organization`` (its public profile only)."""

    id: UUID = _hsds_id("organization/<agency id>", EXAMPLE_HSDS_ORGANIZATION)
    name: str = Field(description="Its public name.", examples=["Example Shelter Network"])
    description: str = Field(description="What sort of agency it is (RefNet's agency kind).", examples=["ngo"])
    legal_status: str = Field(description="The same agency kind.", examples=["ngo"])


class HsdsLanguage(_Out):
    id: UUID = _hsds_id("language/<service id>/<language tag>", hsds_id("language", EXAMPLE_SERVICE, "fr"))
    service_id: UUID = _service_ref()
    code: str = Field(description="A language the service works in (a language tag).", examples=["fr"])


class HsdsServiceArea(_Out):
    id: UUID = _hsds_id("service_area/<service id>/<country>", hsds_id("service_area", EXAMPLE_SERVICE, "IT"))
    service_id: UUID = _service_ref()
    name: str = Field(description="A country it serves (ISO 3166-1 alpha-2).", examples=["IT"])
    extent_type: str = Field(description="Always ``text``: the extent is the country code.", examples=["text"])
    extent: str = Field(description="The country code again.", examples=["IT"])


class HsdsPhone(_Out):
    id: UUID = _hsds_id("phone/<service id>", hsds_id("phone", EXAMPLE_SERVICE))
    service_id: UUID = _service_ref()
    number: str = Field(description="The service's public phone line.", examples=["+39 06 0000 0000"])
    type: str = Field(description="Always ``voice``.", examples=["voice"])


class HsdsSchedule(_Out):
    id: UUID = _hsds_id("schedule/<service id>", hsds_id("schedule", EXAMPLE_SERVICE))
    service_id: UUID = _service_ref()
    description: str = Field(description="When it is open, as free text.", examples=["Mon-Fri 09:00-17:00"])


class HsdsUnit(_Out):
    id: UUID = _hsds_id("unit/places", hsds_id("unit", "places"))
    name: str = Field(description="Always ``places``.", examples=["places"])


class HsdsCapacity(_Out):
    """Places and whether the service takes referrals (HSDS 3.1's ``capacity``; HSDS 3.0 allows it as an
    additional property)."""

    id: UUID = _hsds_id("capacity/<service id>", hsds_id("capacity", EXAMPLE_SERVICE))
    service_id: UUID = _service_ref()
    available: int = Field(description="Places free now.", examples=[3])
    maximum: int = Field(description="Places the service has.", examples=[12])
    unit: HsdsUnit = Field(description="What is counted: places.")
    description: str = Field(description="``accepting``, ``full`` or ``closed``.", examples=["accepting"])
    updated: datetime = Field(description="When the service last changed.", examples=[EXAMPLE_TIME])


class HsdsTaxonomyTerm(_Out):
    id: UUID = _hsds_id("taxonomy_term/<code>", hsds_id("taxonomy_term", "health.medical"))
    code: str = Field(description="The RefNet taxonomy code (GET /taxonomy).", examples=["health.medical"])
    name: str = Field(description="Its label, in the caller's language.", examples=["Medical care"])
    description: str = Field(description="Its label again.", examples=["Medical care"])
    parent_id: UUID | None = Field(default=None, description="The parent term's HSDS id; absent at the top.",
                                   examples=[hsds_id("taxonomy_term", "health")])
    taxonomy: str = Field(description="Always ``refnet``.", examples=["refnet"])
    taxonomy_id: UUID = _hsds_id("taxonomy/refnet", hsds_id("taxonomy", "refnet"))


class HsdsAttribute(_Out):
    id: UUID = _hsds_id("attribute/<service id>/<taxonomy code>",
                        hsds_id("attribute", EXAMPLE_SERVICE, "shelter"))
    link_id: UUID = _service_ref()
    link_type: str = Field(description="Always ``service``.", examples=["service"])
    link_entity: str = Field(description="Always ``service``.", examples=["service"])
    taxonomy_term_id: UUID = Field(description="The term's HSDS id.", examples=[hsds_id("taxonomy_term", "shelter")])
    taxonomy_term: HsdsTaxonomyTerm = Field(description="The service's taxonomy term.")


class HsdsAddress(_Out):
    id: UUID = _hsds_id("address/<location id>", hsds_id("address", EXAMPLE_LOCATION))
    location_id: UUID = Field(description="The location's HSDS id.", examples=[EXAMPLE_HSDS_LOCATION])
    address_1: str = Field(description="Its public street address (empty when not given).",
                           examples=["1 Example Street"])
    city: str = Field(description="Its city (empty when not given).", examples=["Rome"])
    state_province: str = Field(description="Always empty: RefNet does not record it.", examples=[""])
    postal_code: str = Field(description="Always empty: RefNet does not record it.", examples=[""])
    country: str = Field(description="Its country: ISO 3166-1 alpha-2.", examples=["IT"])
    address_type: str = Field(description="Always ``physical``.", examples=["physical"])


class HsdsLocation(_Out):
    id: UUID = _hsds_id("location/<location id>", EXAMPLE_HSDS_LOCATION)
    location_type: str = Field(description="Always ``physical``.", examples=["physical"])
    name: str | None = Field(default=None, description="The site's public name; absent when not given.",
                             examples=["Example Centre Rome"])
    latitude: float | None = Field(default=None, description="WGS 84 latitude; absent when not given.",
                                   examples=[41.9028])
    longitude: float | None = Field(default=None, description="WGS 84 longitude; absent when not given.",
                                    examples=[12.4964])
    addresses: list[HsdsAddress] = Field(description="Its address (one).")


class HsdsServiceAtLocation(_Out):
    id: UUID = _hsds_id("service_at_location/<service id>/<location id>",
                        hsds_id("service_at_location", EXAMPLE_SERVICE, EXAMPLE_LOCATION))
    service_id: UUID = _service_ref()
    location_id: UUID = Field(description="The location's HSDS id.", examples=[EXAMPLE_HSDS_LOCATION])
    location: HsdsLocation = Field(description="Where the service is delivered.")


class HsdsService(_Out):
    """A RefNet service as an HSDS 3.0 ``service`` (``schema/compiled/service.json``), with its organization,
    locations and taxonomy term. Its ids are UUIDs derived from RefNet's ids, for ever the same."""

    id: UUID = _hsds_id("service/<service id>", EXAMPLE_HSDS_SERVICE)
    organization_id: UUID = Field(description="The HSDS id of the agency that provides it.",
                                  examples=[EXAMPLE_HSDS_ORGANIZATION])
    name: str = Field(description="Its name, in the caller's language (Accept-Language).",
                      examples=["Example Shelter - Rome"])
    description: str | None = Field(default=None, description="Its description; absent when none is given.",
                                    examples=["Safe accommodation for adult survivors."])
    status: Literal["active", "inactive"] = Field(description="``active`` (only active services are listed).")
    email: str | None = Field(default=None, description="Its public email address; absent when none.",
                              examples=["intake@example.org"])
    url: str | None = Field(default=None, description="Its public web page; absent when none.",
                            examples=["https://shelter.example.org/rome"])
    minimum_age: int | None = Field(default=None, description="Youngest age served; absent when any.",
                                    examples=[18])
    maximum_age: int | None = Field(default=None, description="Oldest age served; absent when any.",
                                    examples=[65])
    languages: list[HsdsLanguage] = Field(description="Languages it works in.")
    service_areas: list[HsdsServiceArea] = Field(description="Countries it serves.")
    phones: list[HsdsPhone] = Field(description="Its public phone line, if any.")
    schedules: list[HsdsSchedule] = Field(description="Its opening hours, if given.")
    capacities: list[HsdsCapacity] = Field(description="Its places (one).")
    attributes: list[HsdsAttribute] = Field(description="Its taxonomy term (one).")
    service_at_locations: list[HsdsServiceAtLocation] = Field(description="Where it is delivered.")
    last_modified: datetime = Field(description="When it last changed.", examples=[EXAMPLE_TIME])
    organization: HsdsOrganization | None = Field(default=None, description="The agency that provides it.")


class HsdsPage(_Out):
    """A page of services in the HSDS 3.0 API's envelope (``schema/openapi.json``, ``Page``)."""

    total_items: int = Field(description="Services matching the filters, on every page.", examples=[53])
    total_pages: int = Field(description="Pages of ``per_page`` services (at least 1).", examples=[2])
    page_number: int = Field(description="This page's number, from 1.", examples=[1])
    size: int = Field(description="Services on this page.", examples=[50])
    first_page: bool = Field(description="Whether this is the first page.", examples=[True])
    last_page: bool = Field(description="Whether this is the last page.", examples=[False])
    empty: bool = Field(description="Whether this page has no services.", examples=[False])
    contents: list[HsdsService] = Field(description="This page's services.")
