"""The events referral emits and consumes (docs/contract.md, "Events").

Emitted: ``referral.<state>.v1`` for every state a referral reaches and ``referral.overdue.v1``, on
``refnet.referral.events`` keyed by case id, and the same events on ``refnet.delivery.<agency>`` of the
sender and of the recipient keyed by referral id. Payloads are ids and enumerations only: never the free-text
``reason`` or ``note``.

Consumed: the registry's agency and service events (read model, suspension) and intake's consent versions
(granted, withdrawn) and case erasure. Their payloads are read leniently (unknown fields ignored) but what we
need must be there.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# The type names are the contract's (shared/contract.py), imported here so the service reads events.X.
from shared.contract import (
    AGENCY_REGISTERED,
    AGENCY_SUSPENDED,
    AGENCY_UPDATED,
    CASE_ERASED,
    CONSENT_GRANTED,
    CONSENT_WITHDRAWN,
    REFERRAL_TYPES,
    SERVICE_CAPACITY_CHANGED,
    SERVICE_PUBLISHED,
    SERVICE_UPDATED,
    SERVICE_WITHDRAWN,
)
from shared.contract import REFERRAL_OVERDUE as OVERDUE
from shared.contract import referral_state_type as state_event_type
from shared.topics import INTAKE_EVENTS, REGISTRY_EVENTS
from shared.topics import REFERRAL_EVENTS as TOPIC

__all__ = [
    "AGENCY_REGISTERED",
    "AGENCY_SUSPENDED",
    "AGENCY_UPDATED",
    "CASE_ERASED",
    "CONSENT_GRANTED",
    "CONSENT_WITHDRAWN",
    "EMITTED",
    "INTAKE_EVENTS",
    "OVERDUE",
    "REGISTRY_EVENTS",
    "SERVICE_CAPACITY_CHANGED",
    "SERVICE_PUBLISHED",
    "SERVICE_UPDATED",
    "SERVICE_WITHDRAWN",
    "TOPIC",
    "AgencyChanged",
    "Attestation",
    "CaseErased",
    "ConsentGranted",
    "ConsentWithdrawn",
    "ReferralEvent",
    "ServiceChanged",
    "state_event_type",
]


#: On whose authentication an acting user is named (shared.auth.Attestation).
Attestation = Literal["token", "system"]


class ReferralEvent(BaseModel):
    """The payload of every referral event. Closed: a new field is a contract change."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    referral_id: str
    case_id: str
    from_agency: str
    to_agency: str
    status: str
    pathway: str
    service_type: str
    priority: str
    shared_categories: list[str]
    consent_id: str | None
    reason_code: str | None
    due_at: datetime
    agency: str | None  # the actor; None when RefNet itself acted
    acting_user: str | None
    # On whose authentication acting_user is named: "token" (the person's own verified access token) or
    # "system" (asserted by the agency's system client, X-Acting-User); left out when no person is named.
    attested_by: Attestation | None = None

    def payload(self) -> dict[str, Any]:
        """The event's data: ``attested_by`` only when someone is named, so such payloads are as before issue 20."""
        data = self.model_dump(mode="json")
        if data["attested_by"] is None:
            del data["attested_by"]
        return data


#: The payload model of every type referral emits (for the JSON Schemas and the AsyncAPI document).
EMITTED: dict[str, type[BaseModel]] = dict.fromkeys(REFERRAL_TYPES, ReferralEvent)


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class AgencyChanged(_Lenient):
    agency_id: str = Field(min_length=1, max_length=128)
    name: str = Field(default="", max_length=300)
    kind: str = Field(default="", max_length=32)
    country: str = Field(default="", max_length=8)
    status: Literal["active", "suspended"]
    scopes: list[str] = Field(default_factory=list)


class Capacity(_Lenient):
    available: int
    total: int
    status: Literal["accepting", "full", "closed"]


class Point(_Lenient):
    lat: float
    lon: float


class ServiceChanged(_Lenient):
    service_id: str = Field(min_length=1, max_length=128)
    agency_id: str = Field(min_length=1, max_length=128)
    taxonomy: str = Field(max_length=64)
    status: Literal["active", "withdrawn"] = "active"
    countries: list[str] = Field(default_factory=list)
    languages: list[str] = Field(default_factory=list)
    accepts_children: bool = False
    capacity: Capacity
    location: Point | None = None


class Provision(_Lenient):
    purpose: str
    recipient_agency: str | None = None  # None: any agency
    data_categories: list[str]
    decision: Literal["permit", "deny"]


class ConsentGranted(_Lenient):
    """A new consent version: it replaces the one before (what it no longer permits ends)."""

    case_id: str
    consent_id: str
    consent_version: int = Field(ge=1)
    provisions: list[Provision]
    valid_from: datetime
    valid_until: datetime | None = None


class ConsentWithdrawn(_Lenient):
    """A withdrawal ends the case's consent in force: no consent covers any referral until a new grant."""

    case_id: str
    consent_id: str  # the version withdrawn
    consent_version: int | None = Field(default=None, ge=1)  # the version recording the withdrawal


class CaseErased(_Lenient):
    case_id: str
