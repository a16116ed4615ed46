"""The events registry emits on ``refnet.registry.events`` (CONTRACT.md, "Events").

Keyed by agency id. Payloads carry ids and non-identifying attributes only: no keys, secrets or contacts.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from shared.topics import REGISTRY_EVENTS as TOPIC

AGENCY_REGISTERED = "agency.registered.v1"
AGENCY_UPDATED = "agency.updated.v1"
AGENCY_SUSPENDED = "agency.suspended.v1"
SERVICE_PUBLISHED = "service.published.v1"
SERVICE_UPDATED = "service.updated.v1"
SERVICE_WITHDRAWN = "service.withdrawn.v1"
SERVICE_CAPACITY_CHANGED = "service.capacity_changed.v1"

ALL_TYPES = (AGENCY_REGISTERED, AGENCY_UPDATED, AGENCY_SUSPENDED, SERVICE_PUBLISHED, SERVICE_UPDATED,
             SERVICE_WITHDRAWN, SERVICE_CAPACITY_CHANGED)


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


__all__ = ["ALL_TYPES", "TOPIC", "AgencyPayload", "Capacity", "Point", "ServicePayload"]
