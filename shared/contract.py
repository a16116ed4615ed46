"""Every event type of the public contract, by the topic that carries it (docs/contract.md, "Events").

This is the one list. Services import these names instead of spelling type strings, ``shared.outbox.add_event``
refuses a type that is not listed for its topic, and ``refnet contract export`` documents each one
(``docs/asyncapi.yaml``, ``docs/events/<type>.schema.json``), which tests compare with the code. Names are
short types: on the wire ``ce_type`` is ``org.refnet.`` + the short type (``shared.envelope.full_type``).

To add a type: name it here with a one-line summary, give it a payload model in the emitting service's
``events.py`` (``EMITTED``), and run ``refnet contract export``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from shared.envelope import TYPE_PREFIX
from shared.topics import AUDIT_ACCESS, DELIVERY_PREFIX, INTAKE_EVENTS, REFERRAL_EVENTS, REGISTRY_EVENTS

# --- registry: refnet.registry.events, keyed by agency id ----------------------------------------------------

AGENCY_REGISTERED = "agency.registered.v1"
AGENCY_UPDATED = "agency.updated.v1"
AGENCY_SUSPENDED = "agency.suspended.v1"
SERVICE_PUBLISHED = "service.published.v1"
SERVICE_UPDATED = "service.updated.v1"
SERVICE_WITHDRAWN = "service.withdrawn.v1"
SERVICE_CAPACITY_CHANGED = "service.capacity_changed.v1"
TOKEN_REVOKED = "token.revoked.v1"  # noqa: S105 -- an event type, not a secret

AGENCY_TYPES = (AGENCY_REGISTERED, AGENCY_UPDATED, AGENCY_SUSPENDED)
SERVICE_TYPES = (SERVICE_PUBLISHED, SERVICE_UPDATED, SERVICE_WITHDRAWN, SERVICE_CAPACITY_CHANGED)
TOKEN_TYPES = (TOKEN_REVOKED,)
REGISTRY_TYPES = (*AGENCY_TYPES, *SERVICE_TYPES, *TOKEN_TYPES)

# --- intake: refnet.intake.events, keyed by case id ----------------------------------------------------------

CASE_REGISTERED = "case.registered.v1"
CASE_UPDATED = "case.updated.v1"
CASE_CLOSED = "case.closed.v1"
CASE_ERASED = "case.erased.v1"
CONSENT_GRANTED = "consent.granted.v1"
CONSENT_WITHDRAWN = "consent.withdrawn.v1"
CONSENT_OVERRIDDEN = "consent.overridden.v1"

CASE_TYPES = (CASE_REGISTERED, CASE_UPDATED, CASE_CLOSED, CASE_ERASED)
CONSENT_TYPES = (CONSENT_GRANTED, CONSENT_WITHDRAWN, CONSENT_OVERRIDDEN)
INTAKE_TYPES = (*CASE_TYPES, *CONSENT_TYPES)

# --- referral: refnet.referral.events keyed by case id, and refnet.delivery.<agency> keyed by referral id ----

#: The referral states (FHIR Task statuses), each announced by ``referral.<state>.v1`` when reached.
REFERRAL_STATES = ("requested", "received", "accepted", "rejected", "in_progress", "on_hold", "completed",
                   "failed", "cancelled")
#: ``overdue`` is a flag, not a state: set when ``due_at`` passes while the referral is still requested.
REFERRAL_OVERDUE = "referral.overdue.v1"


def referral_state_type(state: str) -> str:
    """``accepted`` -> ``referral.accepted.v1``; a state the contract does not name is refused."""
    if state not in REFERRAL_STATES:
        raise ValueError(f"{state!r} is not a referral state of the event contract")
    return f"referral.{state}.v1"


REFERRAL_TYPES = (*(referral_state_type(state) for state in REFERRAL_STATES), REFERRAL_OVERDUE)

# --- access records: refnet.audit.access, keyed by case id (else agency, else client id) -------------------

ACCESS_RECORDED = "access.recorded.v1"
ACCESS_TYPES = (ACCESS_RECORDED,)

#: The types each contract topic carries (delivery topics: see :func:`types_for_topic`).
TYPES_BY_TOPIC: Mapping[str, tuple[str, ...]] = MappingProxyType({
    REGISTRY_EVENTS: REGISTRY_TYPES,
    INTAKE_EVENTS: INTAKE_TYPES,
    REFERRAL_EVENTS: REFERRAL_TYPES,
    AUDIT_ACCESS: ACCESS_TYPES,
})

ALL_TYPES: tuple[str, ...] = tuple(type_ for types in TYPES_BY_TOPIC.values() for type_ in types)

#: One line per type for the generated documentation; a type without one fails the export.
SUMMARIES: Mapping[str, str] = MappingProxyType({
    AGENCY_REGISTERED: "An agency was registered (its public profile; never keys or secrets).",
    AGENCY_UPDATED: "An agency's public profile, scopes or status changed (also on reactivation).",
    AGENCY_SUSPENDED: "An agency was suspended: its tokens stop working, open referrals to it are cancelled.",
    SERVICE_PUBLISHED: "An agency published a service in the directory.",
    SERVICE_UPDATED: "A published service changed.",
    SERVICE_WITHDRAWN: "A service was withdrawn from the directory.",
    SERVICE_CAPACITY_CHANGED: "A service's capacity (available, total, accepting/full/closed) changed.",
    TOKEN_REVOKED: "An access token was revoked (RFC 7009): every service refuses it from now on (by `jti`).",
    CASE_REGISTERED: "A case was registered (non-identifying facts only).",
    CASE_UPDATED: "A case changed; `changed` names the fields, never their values.",
    CASE_CLOSED: "A case was closed.",
    CASE_ERASED: "A case's personal data was crypto-shredded; its open referrals are cancelled.",
    CONSENT_GRANTED: "A new consent version was recorded (its provisions: purpose, recipient, categories); it "
                     "replaces the one before: open referrals it does not cover, whichever version they were made "
                     "under, are cancelled.",
    CONSENT_WITHDRAWN: "The consent in force was withdrawn: no consent is in force, so every open referral made "
                       "under consent (any version) is cancelled and reads stop.",
    CONSENT_OVERRIDDEN: "A risk-to-life disclosure override was approved for one recipient agency.",
    **{
        referral_state_type(state): f"A referral reached the state `{state}`."
        for state in REFERRAL_STATES
    },
    REFERRAL_OVERDUE: "A referral is still `requested` after its `due_at` (a flag, not a state).",
    ACCESS_RECORDED: "An access to case data (granted or refused), a token issued or refused, a consent action.",
})


#: Topics under this prefix are RefNet's and carry only contract types; others (test harnesses) are not checked.
TOPIC_NAMESPACE = "refnet."


def in_contract_namespace(topic: str) -> bool:
    return topic.startswith(TOPIC_NAMESPACE)


def short_type(type_: str) -> str:
    """``org.refnet.case.registered.v1`` or ``case.registered.v1`` -> ``case.registered.v1``."""
    return type_.removeprefix(TYPE_PREFIX)


def is_delivery_topic(topic: str) -> bool:
    return topic.startswith(DELIVERY_PREFIX) and len(topic) > len(DELIVERY_PREFIX)


def types_for_topic(topic: str) -> tuple[str, ...]:
    """The types a topic may carry: a delivery topic carries the referral types; any other topic none."""
    if is_delivery_topic(topic):
        return REFERRAL_TYPES
    return TYPES_BY_TOPIC.get(topic, ())


def check_event_type(topic: str, type_: str) -> None:
    """Raise ``ValueError`` unless ``type_`` (short or full) is a contract type documented for ``topic``."""
    if short_type(type_) not in types_for_topic(topic):
        raise ValueError(
            f"event type {type_!r} is not in the event contract for topic {topic!r} (shared/contract.py); "
            "add it there with a payload model, then run `refnet contract export`"
        )


# --- what the outbox keeps for ever ------------------------------------------------------------------------

#: Families of types whose events each carry the whole current state of one entity, with the payload field that
#: names it. The outbox keeps the newest published event of each entity past its retention (shared.outbox), so a
#: read model built from these events can always be rebuilt, however old the fact.
STATE_FIELDS: Mapping[str, str] = MappingProxyType({
    "agency": "agency_id", "service": "service_id", "case": "case_id", "consent": "consent_id",
    "referral": "referral_id",
})
#: History, not state: a revocation matters only while its token lives, an override until it lapses, and an
#: access record once audit has it. These are pruned with the retention.
HISTORY_TYPES = frozenset({TOKEN_REVOKED, CONSENT_OVERRIDDEN, ACCESS_RECORDED})


def state_key(type_: str, payload: Mapping[str, object]) -> str | None:
    """``referral.accepted.v1`` with ``referral_id: ref-1`` -> ``referral:ref-1``; None for history."""
    short = short_type(type_)
    if short in HISTORY_TYPES:
        return None
    field = STATE_FIELDS.get(short.split(".", 1)[0])
    value = payload.get(field) if field else None
    return f"{short.split('.', 1)[0]}:{value}" if isinstance(value, str) and value else None
