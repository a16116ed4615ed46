"""The referral vocabularies: pathways, priorities, states, parties, data categories, the service taxonomy
and the reason codes (docs/contract.md)."""

from __future__ import annotations

from enum import StrEnum


class Pathway(StrEnum):
    protection = "protection"
    assistance = "assistance"
    service = "service"
    avrr = "avrr"
    resettlement = "resettlement"


class Priority(StrEnum):
    emergency = "emergency"
    urgent = "urgent"
    normal = "normal"


class Status(StrEnum):
    requested = "requested"
    received = "received"
    accepted = "accepted"
    rejected = "rejected"
    in_progress = "in_progress"
    on_hold = "on_hold"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


class Party(StrEnum):
    """Who moves a referral: the agency that sent it, the one that received it, or RefNet itself."""

    sender = "sender"
    recipient = "recipient"
    system = "system"


class DataCategory(StrEnum):
    identity = "identity"
    contact = "contact"
    demographics = "demographics"
    trafficking_experience = "trafficking_experience"
    protection_needs = "protection_needs"
    health = "health"
    documents = "documents"
    notes = "notes"



OPEN_STATES: frozenset[Status] = frozenset(
    {Status.requested, Status.received, Status.accepted, Status.in_progress, Status.on_hold}
)
TERMINAL_STATES: frozenset[Status] = frozenset(set(Status) - OPEN_STATES)

#: docs/contract.md: reason codes for rejected.
REJECT_REASONS: frozenset[str] = frozenset({"no-capacity", "not-eligible", "outside-mandate", "duplicate", "other"})
#: Reason codes for failed (the recipient could not deliver the service it accepted).
FAIL_REASONS: frozenset[str] = frozenset(
    {"lost-contact", "person-declined", "no-capacity", "not-eligible", "service-unavailable", "other"}
)
#: Reason codes a sender may give when it cancels.
SENDER_CANCEL_REASONS: frozenset[str] = frozenset(
    {"no-longer-needed", "person-declined", "duplicate", "wrong-recipient", "referred-elsewhere", "other"}
)
#: Reason codes only RefNet itself gives, reacting to other services' events.
SYSTEM_CANCEL_REASONS: frozenset[str] = frozenset({"consent-withdrawn", "recipient-suspended", "case-erased"})
#: Optional reason codes for putting a service on hold.
HOLD_REASONS: frozenset[str] = frozenset(
    {"awaiting-person", "awaiting-documents", "awaiting-capacity", "safety-concern", "other"}
)
