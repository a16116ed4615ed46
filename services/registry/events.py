"""The events registry emits on ``refnet.registry.events`` (docs/contract.md, "Events").

Keyed by agency id. Payloads carry ids and non-identifying attributes only: no keys, secrets or contacts.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

# The type names are the contract's (shared/contract.py), imported here so the service reads events.X.
from shared.contract import (
    AGENCY_REGISTERED,
    AGENCY_SUSPENDED,
    AGENCY_TYPES,
    AGENCY_UPDATED,
    SERVICE_CAPACITY_CHANGED,
    SERVICE_PUBLISHED,
    SERVICE_TYPES,
    SERVICE_UPDATED,
    SERVICE_WITHDRAWN,
    TOKEN_REVOKED,
)
from shared.topics import REGISTRY_EVENTS as TOPIC


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AgencyPayload(_Payload):
    """agency.registered.v1, agency.updated.v1 (also on reactivation), agency.suspended.v1."""

    agency_id: str
    client_id: str
    name: str
    kind: str
    country: str
    status: Literal["active", "suspended"]
    scopes: list[str]


class Capacity(_Payload):
    available: int
    total: int
    status: Literal["accepting", "full", "closed"]


class Point(_Payload):
    lat: float
    lon: float


class ServicePayload(_Payload):
    """service.published.v1, service.updated.v1, service.capacity_changed.v1, service.withdrawn.v1."""

    service_id: str
    agency_id: str
    taxonomy: str
    status: Literal["active", "withdrawn"]
    countries: list[str]
    languages: list[str]
    accepts_children: bool
    capacity: Capacity
    location: Point | None  # the first location's coordinates, if it has any


class TokenRevokedPayload(_Payload):
    """token.revoked.v1: resource servers refuse the token from now on (shared.revocation)."""

    jti: str
    agency_id: str
    client_id: str
    expires_at: str  # RFC 3339; after it the token is refused anyway and may be forgotten


#: The payload model of every type registry emits (for the JSON Schemas and the AsyncAPI document).
EMITTED: dict[str, type[BaseModel]] = {
    **dict.fromkeys(AGENCY_TYPES, AgencyPayload),
    **dict.fromkeys(SERVICE_TYPES, ServicePayload),
    TOKEN_REVOKED: TokenRevokedPayload,
}

__all__ = [
    "AGENCY_REGISTERED",
    "AGENCY_SUSPENDED",
    "AGENCY_UPDATED",
    "EMITTED",
    "SERVICE_CAPACITY_CHANGED",
    "SERVICE_PUBLISHED",
    "SERVICE_UPDATED",
    "SERVICE_WITHDRAWN",
    "TOKEN_REVOKED",
    "TOPIC",
    "AgencyPayload",
    "Capacity",
    "Point",
    "ServicePayload",
    "TokenRevokedPayload",
]
