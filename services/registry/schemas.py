"""Request and response bodies of the registry's HTTP API (pydantic). Validation errors name the field."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

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


class AgencyCreate(_Body):
    name: Line = Field(min_length=1, max_length=200)
    kind: Literal["un_agency", "ngo", "government", "service_provider", "oversight"]
    country: CountryCode
    jwks: dict[str, Any] | None = None
    jwks_uri: AnyHttpUrl | None = None
    generate_secret: bool = False
    scopes: list[Line] = Field(default_factory=list, max_length=32)

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
    status: Literal["active", "suspended"] | None = None
    scopes: list[Line] | None = Field(default=None, max_length=32)
    jwks: dict[str, Any] | None = None
    jwks_uri: AnyHttpUrl | None = None
    generate_secret: bool = False

    _check_scopes = field_validator("scopes")(classmethod(lambda cls, v: v if v is None else _scopes(v)))
    _check_jwks = field_validator("jwks")(classmethod(lambda cls, v: _jwks(v)))

    @model_validator(mode="after")
    def _at_most_one_credential(self) -> AgencyPatch:
        if sum([self.jwks is not None, self.jwks_uri is not None, self.generate_secret]) > 1:
            raise ValueError("give at most one of jwks, jwks_uri or generate_secret: true")
        return self


class AgencyOut(BaseModel):
    """The public profile: no keys, no secrets."""

    id: str
    client_id: str
    name: str
    kind: str
    country: str
    status: str
    scopes: list[str]
    auth_method: Literal["private_key_jwt", "client_secret_basic"]
    created_at: datetime
    updated_at: datetime


class AgencyRegistered(AgencyOut):
    client_secret: str | None = Field(default=None, description="Shown once, when generated.")


class AgencyList(BaseModel):
    items: list[AgencyOut]
    next_cursor: str | None


# --- services ----------------------------------------------------------------------------------------------


class CapacityIn(_Body):
    total: int = Field(ge=0, le=1_000_000)
    available: int = Field(ge=0, le=1_000_000)
    status: Literal["accepting", "full", "closed"]

    @field_validator("available")
    @classmethod
    def _within_total(cls, value: int, info: ValidationInfo) -> int:
        total = info.data.get("total")
        if total is not None and value > total:
            raise ValueError("available cannot exceed total")
        return value


class LocationIn(_Body):
    name: Line | None = Field(default=None, max_length=200)
    address: FreeText | None = Field(default=None, max_length=500)
    city: Line | None = Field(default=None, max_length=120)
    country: CountryCode
    latitude: float | None = Field(default=None, ge=-90, le=90)
    longitude: float | None = Field(default=None, ge=-180, le=180)

    @model_validator(mode="after")
    def _both_or_neither(self) -> LocationIn:
        if (self.latitude is None) != (self.longitude is None):
            raise ValueError("give both latitude and longitude, or neither")
        return self


class Eligibility(_Body):
    min_age: int | None = Field(default=None, ge=0, le=120)
    max_age: int | None = Field(default=None, ge=0, le=120)
    genders: list[Annotated[Line, Field(max_length=40)]] = Field(default_factory=list, max_length=8)
    nationalities: list[CountryCode] = Field(default_factory=list, max_length=250)


class Contact(_Body):
    """The service's public contact point (an organisation's, never a person's)."""

    phone: Line | None = Field(default=None, max_length=40)
    email: Line | None = Field(default=None, max_length=200)
    url: AnyHttpUrl | None = None


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
    taxonomy: Line | None = None
    names: Names | None = None
    descriptions: Texts | None = None
    countries: list[CountryCode] | None = Field(default=None, min_length=1, max_length=50)
    admin_areas: list[Annotated[Line, Field(min_length=1, max_length=120)]] | None = Field(default=None,
                                                                                         max_length=100)
    languages: list[LanguageTag] | None = Field(default=None, max_length=50)
    accepts_children: bool | None = None
    eligibility: Eligibility | None = None
    hours: FreeText | None = Field(default=None, max_length=500)
    contact: Contact | None = None
    locations: list[LocationIn] | None = Field(default=None, max_length=50)

    @field_validator("taxonomy")
    @classmethod
    def _taxonomy(cls, value: str | None) -> str | None:
        if value is not None and not reference.is_taxonomy_code(value):
            raise ValueError("not a taxonomy code (see GET /taxonomy)")
        return value

    _check_names = field_validator("names")(classmethod(lambda cls, v: _texts(v, required=True)))
    _check_descriptions = field_validator("descriptions")(classmethod(lambda cls, v: _texts(v, required=False)))


class ServiceCreate(ServiceFields):
    taxonomy: Line
    names: Names
    countries: list[CountryCode] = Field(min_length=1, max_length=50)
    accepts_children: bool = False
    capacity: CapacityIn = Field(default_factory=lambda: CapacityIn(total=0, available=0, status="accepting"))


class ServicePatch(ServiceFields):
    """Only the fields given change; ``locations`` replaces the whole list."""


class CapacityOut(BaseModel):
    available: int
    total: int
    status: str


class LocationOut(BaseModel):
    id: str
    name: str | None
    address: str | None
    city: str | None
    country: str
    latitude: float | None
    longitude: float | None


class ServiceOut(BaseModel):
    id: str
    agency_id: str
    taxonomy: str
    taxonomy_label: str
    language: str | None = Field(description="The language of name and description (from Accept-Language).")
    name: str | None
    description: str | None
    names: dict[str, str]
    descriptions: dict[str, str]
    countries: list[str]
    admin_areas: list[str]
    languages: list[str]
    accepts_children: bool
    eligibility: dict[str, Any]
    hours: str | None
    contact: dict[str, Any]
    capacity: CapacityOut
    locations: list[LocationOut]
    status: str
    distance_km: float | None = None
    created_at: datetime
    updated_at: datetime


class ServiceList(BaseModel):
    items: list[ServiceOut]
    next_cursor: str | None


class ServiceSearch(BaseModel):
    """``GET /services`` filters (CONTRACT.md)."""

    taxonomy: str | None = Field(default=None, description="a code or a prefix, e.g. health")
    country: CountryCode | None = None
    language: LanguageTag | None = None
    accepts_children: bool | None = None
    accepting: bool | None = None
    near: str | None = Field(default=None, description="lat,lon")
    radius_km: float | None = Field(default=None, gt=0, le=20_000)
    q: Line | None = Field(default=None, min_length=1, max_length=200)
    limit: int = Field(default=50, ge=1, le=500)
    cursor: str | None = Field(default=None, max_length=64)

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
