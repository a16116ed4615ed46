"""The topic names of the public event contract (docs/contract.md, "Events")."""

from __future__ import annotations

REGISTRY_EVENTS = "refnet.registry.events"
INTAKE_EVENTS = "refnet.intake.events"
REFERRAL_EVENTS = "refnet.referral.events"
AUDIT_ACCESS = "refnet.audit.access"
DELIVERY_PREFIX = "refnet.delivery."

ALL_TOPICS = (REGISTRY_EVENTS, INTAKE_EVENTS, REFERRAL_EVENTS, AUDIT_ACCESS)


def delivery_topic(agency_id: str) -> str:
    """The topic an agency's case system subscribes to: the referral events it is party to."""
    return DELIVERY_PREFIX + agency_id
