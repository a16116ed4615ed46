"""The events intake emits and consumes (docs/contract.md, "Events").

Payloads are closed pydantic models of ids, enumerations, dates and booleans: never a name, a birth date,
a contact or free text. Emitted on ``refnet.intake.events``, keyed by case id.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# The type names are the contract's (shared/contract.py), imported here so the service reads ev.X.
from shared.contract import (
    AGENCY_TYPES,
    CASE_CLOSED,
    CASE_ERASED,
    CASE_REGISTERED,
    CASE_UPDATED,
    CONSENT_GRANTED,
    CONSENT_OVERRIDDEN,
    CONSENT_WITHDRAWN,
    REFERRAL_TYPES,
)
from shared.topics import INTAKE_EVENTS as TOPIC
from shared.topics import REFERRAL_EVENTS, REGISTRY_EVENTS

__all__ = [
    "AGENCY_TYPES",
    "CASE_CLOSED",
    "CASE_ERASED",
    "CASE_REGISTERED",
    "CASE_UPDATED",
    "CONSENT_GRANTED",
    "CONSENT_OVERRIDDEN",
    "CONSENT_WITHDRAWN",
    "EMITTED",
    "REFERRAL_EVENTS",
    "REFERRAL_TYPES",
    "REGISTRY_EVENTS",
    "TOPIC",
    "CaseErased",
    "CaseEvent",
    "ConsentGranted",
    "ConsentOverridden",
    "ConsentWithdrawn",
    "ProvisionSummary",
    "ReferralChanged",
    "schemas",
]


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    case_id: str
    agency: str  # the acting agency
    client_id: str
    acting_user: str | None = None
    # On whose authentication acting_user is named: "token" (the person's own verified access token) or
    # "system" (asserted by the agency's system client, X-Acting-User); None when no person is named.
    attested_by: Literal["token", "system"] | None = None


class CaseEvent(_Payload):
    """case.registered / case.updated / case.closed: the act and what its answer disclosed, nothing of the person.

    No consumer needs a case's attributes (referral asks intake's clearance at the moment it decides), and
    every event stays in the permanent audit log: so no age band, gender, citizenship or screening fact here --
    together they can single a person out, and the log outlives erasure. Each such event is the act's one
    audit entry: the write, and the case its answer carried back to the writer (purpose, categories).
    """

    purpose: str  # the writer's X-Purpose
    status: str
    data_categories: list[str] = Field(default_factory=list)  # what the answer carried
    changed: list[str] = Field(default_factory=list)  # field names, for case.updated


class CaseErased(_Payload):
    status: Literal["erased"] = "erased"


class ProvisionSummary(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    purpose: str
    recipient_agency: str | None
    data_categories: list[str]
    decision: str


class ConsentGranted(_Payload):
    consent_id: str
    consent_version: int
    grantor: str
    provisions: list[ProvisionSummary]
    valid_from: datetime
    valid_until: datetime | None


class ConsentWithdrawn(_Payload):
    consent_id: str  # the consent version withdrawn
    consent_version: int  # the new version recording the withdrawal
    withdrawn_version: int


class ConsentOverridden(_Payload):
    """A risk-to-life override was approved (docs/domain.md rule 6): the actor is the approving person; the person
    who requested it is ``requested_by``. Both are ids from their own access tokens (issue 20)."""

    override_id: str
    recipient_agency: str
    approver: str  # the approving person (the actor's acting_user)
    valid_until: datetime
    # Absent from events before issue 20 (one request named both, as the caller wrote them).
    requested_by: str | None = None
    approved_at: datetime | None = None


class ReferralChanged(BaseModel):
    """What intake needs from a referral event; other fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    referral_id: str
    case_id: str
    from_agency: str
    to_agency: str
    status: str | None = None
    pathway: str | None = None
    shared_categories: list[str] = Field(default_factory=list)
    consent_id: str | None = None


#: The payload model of every type intake emits (for JSON Schemas and the AsyncAPI document).
EMITTED: dict[str, type[BaseModel]] = {
    CASE_REGISTERED: CaseEvent, CASE_UPDATED: CaseEvent, CASE_CLOSED: CaseEvent, CASE_ERASED: CaseErased,
    CONSENT_GRANTED: ConsentGranted, CONSENT_WITHDRAWN: ConsentWithdrawn, CONSENT_OVERRIDDEN: ConsentOverridden,
}


def schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema of each emitted payload, by short type."""
    return {type_: model.model_json_schema() for type_, model in EMITTED.items()}


def payload(model: BaseModel) -> dict[str, Any]:
    data = model.model_dump(mode="json")
    if "attested_by" in data and data["attested_by"] is None:
        del data["attested_by"]  # nobody named: the payload as before issue 20
    return data
