"""What RefNet answers, as pydantic models mirroring the services' documented answers (docs/openapi/).

Mirrored, not imported: an integrator installs the client without the services. Every model keeps fields it
does not know (``extra="allow"``), so a newer RefNet adding a field breaks nobody. Audit entries and
checkpoints keep their timestamps as the exact text the log signed and hashed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

#: Why case data is read (``X-Purpose``); recorded with every access in the audit log.
Purpose = Literal["case_management", "referral", "law_enforcement", "family_tracing", "research", "audit"]
DataCategory = Literal["identity", "contact", "demographics", "trafficking_experience", "health",
                       "protection_needs", "documents", "notes"]

T = TypeVar("T")


class Model(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class Page(Model, Generic[T]):
    """Every RefNet list: one page of ``items`` and the ``next_cursor`` to ask for the next (None: the last)."""

    items: list[T]
    next_cursor: str | None = None


# --- intake ------------------------------------------------------------------------------------------------


class Case(Model):
    """A case as the caller may see it: the owner all of it, a recipient only the categories its referral
    shares (the others are absent, not null)."""

    id: str
    status: str
    owner_agency: str
    created_at: datetime
    is_minor: bool | None = None  # absent for a recipient the demographics are not shared with
    age_band: str | None = None
    person: dict[str, Any] = Field(default_factory=dict)
    screening: dict[str, Any] = Field(default_factory=dict)


class Consent(Model):
    """One consent version (append-only): a grant, or a withdrawal ending an earlier one."""

    id: str
    case_id: str
    version: int
    kind: str
    status: str
    withdraws: str | None = None
    grantor: str | None = None
    child_assent: Any = None
    method: str | None = None
    language: str | None = None
    interpreter_used: bool | None = None
    provisions: list[dict[str, Any]] = Field(default_factory=list)
    checklist: dict[str, Any] | None = None
    valid_from: datetime
    valid_until: datetime | None = None
    recorded_by_agency: str
    recorded_by_user: str | None = None
    created_at: datetime


# --- referral ----------------------------------------------------------------------------------------------


class Transition(Model):
    """One step of a referral's history (``from`` is a Python keyword: ``from_``)."""

    from_: str | None = Field(default=None, alias="from")
    to: str
    by: str
    agency: str | None = None
    acting_user: str | None = None
    #: On whose authentication ``acting_user`` is named: ``token`` (the person's own), ``system`` (asserted).
    attested_by: str | None = None
    reason_code: str | None = None
    note: str | None = None
    at: datetime


class Referral(Model):
    id: str
    status: str
    case_id: str
    from_agency: str
    to_agency: str
    service_id: str | None = None
    pathway: str
    service_type: str | None = None
    priority: str
    reason: str | None = None
    free_text: str | None = None
    shared_categories: list[str] = Field(default_factory=list)
    consent_id: str | None = None
    consent_version: int | None = None
    due_at: datetime | None = None
    overdue: bool = False
    overdue_at: datetime | None = None
    created_at: datetime
    updated_at: datetime | None = None
    #: Present on ``GET /referrals/{id}`` and in transition answers; lists may leave it out.
    history: list[Transition] | None = None


class FeedEvent(Model):
    """One event of the pull feed (``GET /events``): keep ``cursor`` of the last one handled."""

    cursor: str
    id: str
    type: str
    time: datetime
    subject: str
    data: dict[str, Any] = Field(default_factory=dict)


class Subscription(Model):
    """A webhook subscription; ``secret`` only in the answers that create it or rotate it."""

    id: str
    url: str
    event_types: list[str] = Field(default_factory=list)
    status: str
    consecutive_failures: int = 0
    next_attempt_at: datetime | None = None
    created_at: datetime
    disabled_at: datetime | None = None
    previous_secret_valid_until: datetime | None = None
    secret: str | None = None


class Delivery(Model):
    """One attempt to deliver an event to a subscription."""

    id: str
    event_id: str
    event_type: str
    attempt: int
    outcome: str
    status_code: int | None = None
    error: str | None = None
    duration_ms: int | None = None
    at: datetime


class SentIndicators(Model):
    """A month of the referrals an agency sent: how many, and what their recipients did with them."""

    referrals: int
    accepted: int
    rejected: int
    cancelled: int
    completed: int
    acceptance_rate: float | None = None
    rejection_reasons: dict[str, int] = Field(default_factory=dict)


class ReceivedIndicators(Model):
    """A month of the referrals an agency received: how many, what it did, how fast."""

    referrals: int
    acknowledged: int
    accepted: int
    rejected: int
    cancelled: int
    completed: int
    acceptance_rate: float | None = None
    median_hours_to_acknowledge: float | None = None
    median_hours_to_accept: float | None = None
    rejection_reasons: dict[str, int] = Field(default_factory=dict)


class MonthIndicators(Model):
    month: str
    start: datetime
    end: datetime
    complete: bool
    sent: SentIndicators
    received: ReceivedIndicators


class AgencyIndicators(Model):
    """The caller's agency's own indicators (``GET /indicators``), one entry per month, oldest first."""

    agency_id: str
    from_: str = Field(alias="from")
    to: str
    months: list[MonthIndicators]


# --- registry ----------------------------------------------------------------------------------------------


class Capacity(Model):
    available: int
    total: int
    status: str


class Location(Model):
    id: str
    name: str | None = None
    address: str | None = None
    city: str | None = None
    country: str
    latitude: float | None = None
    longitude: float | None = None


class Service(Model):
    """A service in the directory (``GET /services``)."""

    id: str
    agency_id: str
    taxonomy: str
    taxonomy_label: str | None = None
    language: str | None = None
    name: str | None = None
    description: str | None = None
    countries: list[str] = Field(default_factory=list)
    languages: list[str] = Field(default_factory=list)
    accepts_children: bool = False
    capacity: Capacity | None = None
    locations: list[Location] = Field(default_factory=list)
    status: str
    distance_km: float | None = None


# --- audit -------------------------------------------------------------------------------------------------


class ConsentBasis(Model):
    """Under what a read happened: ``recorded`` (the reading service named the consent), ``log`` (the consent
    in force, from the log), ``override`` (a risk-to-life override), ``none``."""

    consent_id: str | None = None
    consent_version: Any = None
    basis: str


class Access(Model):
    """One access to a case (``GET /audit/cases/{id}/access``)."""

    index: int
    occurred_at: str
    recorded_at: str
    action: str
    outcome: str
    agency: str | None = None
    client_id: str | None = None
    acting_user: str | None = None
    purpose: str | None = None
    data_categories: list[str] | None = None
    consent: ConsentBasis


class CaseAccess(Page[Access]):
    case_id: str


class AuditEntry(Model):
    """An entry of the log exactly as it was hashed into the tree: ``model_dump()`` gives back its leaf's JSON
    (every field, in the log's own text; a field a newer log adds is kept too)."""

    index: int
    recorded_at: str
    occurred_at: str
    action: str
    outcome: str
    agency: str | None
    client_id: str | None
    acting_user: str | None
    purpose: str | None
    resource_type: str | None
    resource_id: str | None
    case_id: str | None
    source_service: str | None
    event_id: str | None
    details: dict[str, Any]


class CaseEntry(Model):
    """A consent entry of a case (``GET /audit/cases/{id}/consents``): an entry without case and source."""

    index: int
    recorded_at: str
    occurred_at: str
    action: str
    outcome: str
    agency: str | None = None
    acting_user: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class CaseEntries(Page[CaseEntry]):
    case_id: str


class Checkpoint(Model):
    """A signed checkpoint of the log (C2SP tlog-checkpoint): trust ``body``, the text the signature covers."""

    origin: str
    tree_size: int
    root_hash: str
    timestamp: str
    body: str
    key_id: str
    signature: str


class LogKey(Model):
    key_id: str
    algorithm: str
    origin: str
    public_key: str


class InclusionProof(Model):
    index: int
    tree_size: int
    leaf_hash: str
    root_hash: str
    path: list[str]


class ConsistencyProof(Model):
    """RFC 9162: the log of size ``second`` extends the one of size ``first``."""

    first: int
    second: int
    first_root_hash: str
    second_root_hash: str
    path: list[str]
