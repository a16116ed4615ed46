"""The audit log's rules, free of I/O: what an entry is, how an event becomes one, what a checkpoint says.

An entry is shaped after FHIR AuditEvent (docs/contract.md, audit) and carries ids and enumerations only. An
event that would put anything else into the log -- a field outside the entry schema whose value is free
text, a nested object, a long string -- is refused (:class:`NotAuditable`), so personal data can never be
stored by accident: refusing loses nothing (the event goes to the dead-letter topic for a human to look
at), storing would be forever.

Beside it, as pure: how an entry is written as its Merkle leaf (:mod:`services.audit.leaf`), the COPY text
a verification reads (:mod:`services.audit.copy_format`), the tree itself (:mod:`services.audit.merkle`) and
checkpoint signatures (:mod:`services.audit.signing`).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

# Read here by deploy/launcher/demo.py and bench/audit.py (the entry's leaf is defined in leaf.py):
from services.audit.leaf import entry_json as entry_json
from services.audit.leaf import leaf_bytes as leaf_bytes
from services.audit.leaf import utc
from shared.access import DETAIL_VALUE, parse_access_record
from shared.envelope import Event
from shared.ids import is_acting_user, is_refnet_id, resource_id_ok

# --- entries --------------------------------------------------------------------------------------------

OUTCOMES = frozenset({"success", "denied", "error"})
# Payload fields that become entry columns (the rest, if harmless, go to ``details``).
_COLUMN_FIELDS = ("agency", "client_id", "acting_user", "purpose", "case_id")
# JSON numbers outside this range lose precision in other JSON parsers (RFC 8785 needs IEEE doubles).
MAX_DETAIL_INT = 2**31 - 1
MAX_DETAILS = 32
MAX_LIST_ITEMS = 64
MAX_RECORD_FIELDS = 16
MAX_RECORDS = 16
# The case record's personal fields (docs/contract.md: identity, contact, notes) and free-text fields of
# requests: refused by name wherever they appear, even when the value would pass for an identifier
# (a phone number does).
PERSONAL_FIELDS = frozenset({
    "given_name", "family_name", "other_names", "birth_date", "phone", "email", "address", "person",
    "documents", "notes", "note", "justification", "free_text", "comment", "description",
})
# ("reason" is not among them: services put reason codes there, e.g. "no-consent"; a free-text reason
# fails the identifier rule anyway.)
# Public-profile attributes of agencies and services that registry events carry: not personal data, but
# free text and coordinates (a shelter's location is sensitive) have no place in the log, and the registry
# is their record. Left out of the entry -- the only fields ever left out rather than refused.
OMITTED_FIELDS = {"registry": frozenset({"name", "location"})}
_VERSION_SUFFIX = re.compile(r"\.v\d+$")

#: The details field saying on whose authentication the acting user is named (``token`` | ``system``).
ATTESTED_BY = "attested_by"
ATTESTATIONS = frozenset({"token", "system"})

#: The id of a first-party client people sign in through (``refnet-console``), as a person's token names it.
FIRST_PARTY_CLIENT = re.compile(r"[a-z][a-z0-9._-]{0,63}")

# Short event types (without org.refnet. and version) whose action name differs from the type.
ACTION_BY_TYPE = {
    "case.registered": "case.create",
    "case.updated": "case.update",
    "case.erased": "case.erase",
    "case.closed": "case.close",
    "consent.granted": "consent.grant",
    "consent.withdrawn": "consent.withdraw",
    "consent.overridden": "consent.override",
}
# What a domain event is about: its resource type and the payload field holding the resource's id.
RESOURCE_BY_PREFIX = {
    "case": ("Case", "case_id"),
    "consent": ("Consent", "consent_id"),
    "referral": ("Referral", "referral_id"),
    "agency": ("Agency", "agency_id"),
    "service": ("Service", "service_id"),
}
# ... unless the action names its own: an override is its own resource, not a consent.
RESOURCE_BY_ACTION = {"consent.override": ("Override", "override_id")}
# Actions that are a party seeing (or trying to see) a case's data: these, and any ``<thing>.read``.
ACCESS_ACTIONS = frozenset({"case.read", "access.denied"})
# Writes whose answer carries the case back to the writer: intake's event of the write is the act's one entry,
# and names the purpose the answer was given for -- then it is an access too.
DISCLOSING_WRITES = frozenset({"case.create", "case.update", "case.close"})


def is_access(action: str, purpose: str | None = None) -> bool:
    return (action in ACCESS_ACTIONS or action.endswith(".read")
            or (action in DISCLOSING_WRITES and purpose is not None))
CONSENT_PREFIX = "consent."


class NotAuditable(ValueError):
    """The event cannot become an entry without storing something that may be personal data.

    The message names fields, never values.
    """


def _is_token(value: object) -> bool:
    return isinstance(value, str) and DETAIL_VALUE.fullmatch(value) is not None


def _is_small_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_DETAIL_INT


def _scalar_ok(value: object) -> bool:
    return isinstance(value, bool) or _is_small_int(value) or _is_token(value)


def _flat_ok(value: object) -> bool:
    """null, a token, a small int, a bool, or a short list of tokens/ints/bools."""
    if value is None or _scalar_ok(value):
        return True
    return isinstance(value, list) and len(value) <= MAX_LIST_ITEMS and all(_scalar_ok(v) for v in value)


def _record_ok(value: object) -> bool:
    """A small flat object: identifier keys (none of them personal) and flat values -- e.g. a consent
    provision ``{purpose, recipient_agency, data_categories, decision}`` or a capacity
    ``{available, total, status}``. Never an object inside an object."""
    return (
        isinstance(value, dict) and len(value) <= MAX_RECORD_FIELDS
        and all(_is_token(k) and k not in PERSONAL_FIELDS and _flat_ok(v) for k, v in value.items())
    )


def detail_value_ok(value: object) -> bool:
    """A flat value, a flat record, or a short list of flat records: ids, enumerations, small numbers."""
    if _flat_ok(value) or _record_ok(value):
        return True
    return isinstance(value, list) and len(value) <= MAX_RECORDS and all(_record_ok(v) for v in value)


def checked_details(details: Mapping[str, Any]) -> dict[str, Any]:
    if len(details) > MAX_DETAILS:
        raise NotAuditable(f"too many detail fields ({len(details)} > {MAX_DETAILS})")
    bad_keys = [k for k in details if not _is_token(k)]
    if bad_keys:
        raise NotAuditable("a detail field name is not an identifier")
    personal = sorted(k for k in details if k in PERSONAL_FIELDS)
    if personal:
        raise NotAuditable(f"fields that hold personal data: {', '.join(personal)}")
    bad = sorted(k for k, v in details.items() if not detail_value_ok(v))
    if bad:
        raise NotAuditable(f"fields not allowed in an audit entry: {', '.join(bad)}")
    return dict(details)


@dataclass(frozen=True)
class EntryDraft:
    """An entry before the sequencer gives it its place (``index``) and its ``recorded_at``."""

    action: str
    outcome: str
    source_service: str
    event_id: str
    occurred_at: datetime
    agency: str | None = None
    client_id: str | None = None
    acting_user: str | None = None
    purpose: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    case_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def action_for(short_type: str) -> str:
    """``consent.granted.v1`` -> ``consent.grant``; ``referral.accepted.v1`` -> ``referral.accepted``."""
    base = _VERSION_SUFFIX.sub("", short_type)
    return ACTION_BY_TYPE.get(base, base)


def source_service(source: str) -> str:
    """``/refnet/intake`` -> ``intake``: the entry names the service, the envelope its URI reference."""
    name = source.removeprefix("/refnet/")
    if not _is_token(name):
        raise NotAuditable("the event source is not a RefNet service")
    return name


def _token_or_none(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not _is_token(value):
        raise NotAuditable(f"field {name} is not an identifier")
    return str(value)


def utc_bound(moment: datetime) -> datetime:
    """A query bound in UTC. ``0001-01-01T00:00:00+14:00`` is in year 0 and ``9999-12-31T23:59:59-14:00`` in
    year 10000 in UTC, which Python cannot hold: such a bound lies before (after) every entry's time, so the
    first (last) moment Python can hold answers the query the same way."""
    try:
        return utc(moment)
    except OverflowError:
        edge = datetime.min if moment.year == datetime.min.year else datetime.max
        return edge.replace(tzinfo=UTC)


def draft_from_event(event: Event) -> EntryDraft:
    """Turn any RefNet event into an entry draft, or raise :class:`NotAuditable`."""
    short = event.short_type
    if not _is_token(short):
        raise NotAuditable("the event type is not an identifier")
    service = source_service(event.source)
    if not _is_token(event.id):
        raise NotAuditable("the event id is not an identifier")
    if _VERSION_SUFFIX.sub("", short) == "access.recorded":
        return _draft_from_access(event, service)
    data = {k: v for k, v in event.data.items() if k not in OMITTED_FIELDS.get(service, ())}
    action = action_for(short)
    columns = {name: _token_or_none(data, name) for name in _COLUMN_FIELDS}
    for name in _COLUMN_FIELDS:
        data.pop(name, None)
    # Who acted, on whose authentication: a value of its own, or left out (entries before issue 20 named none).
    attested_by = data.pop(ATTESTED_BY, None)
    if attested_by is not None and attested_by not in ATTESTATIONS:
        raise NotAuditable("field attested_by is not token or system")
    outcome = data.pop("outcome", "success")
    if outcome not in OUTCOMES:
        raise NotAuditable("field outcome is not success, denied or error")
    resource: tuple[str | None, str | None] = (
        RESOURCE_BY_ACTION.get(action) or RESOURCE_BY_PREFIX.get(action.split(".", 1)[0]) or (None, None))
    resource_type, id_field = resource
    resource_id = None
    if id_field is not None:
        resource_id = _token_or_none(data, id_field)
        if id_field != "case_id":
            data.pop(id_field, None)
        else:
            resource_id = columns["case_id"]
    if resource_type is not None and resource_id is None:
        resource_type = None
    return EntryDraft(
        action=action,
        outcome=outcome,
        source_service=service,
        event_id=event.id,
        occurred_at=utc(event.time),
        resource_type=resource_type,
        resource_id=resource_id,
        details=checked_details(with_attestation(data, attested_by)),
        **columns,
    )


def _draft_from_access(event: Event, service: str) -> EntryDraft:
    try:
        record = parse_access_record(event.data)
    except ValidationError as exc:
        # Only the field locations: the rejected input may be exactly the personal data we refuse.
        where = sorted({".".join(str(p) for p in e["loc"]) for e in exc.errors()})[:5]
        raise NotAuditable(f"access record outside its schema at: {', '.join(where)}") from None
    if ATTESTED_BY in record.details:  # only the record's own field says it, checked by its schema
        raise NotAuditable("access record details name attested_by")
    _check_access_ids(record.case_id, record.resource_type, record.resource_id, record.agency, record.client_id,
                      record.acting_user, record.attested_by)
    return EntryDraft(
        action=record.action,
        outcome=record.outcome,
        source_service=service,
        event_id=event.id,
        occurred_at=utc(event.time),
        agency=record.agency,
        client_id=record.client_id,
        acting_user=record.acting_user,
        purpose=record.purpose,
        resource_type=record.resource_type,
        resource_id=record.resource_id,
        case_id=record.case_id,
        details=checked_details(with_attestation(record.details, record.attested_by)),
    )


def with_attestation(details: Mapping[str, Any], attested_by: str | None) -> dict[str, Any]:
    """``details`` with ``attested_by`` (on whose authentication ``acting_user`` is named) when there is one.

    In ``details``, not a column of its own: the leaf is the canonical JSON of the entry, so an entry that
    names no attestation -- every entry written before issue 20 -- keeps exactly the leaf it has."""
    if attested_by is None:
        return dict(details)
    return {**details, ATTESTED_BY: attested_by}


def _check_access_ids(case_id: str | None, resource_type: str | None, resource_id: str | None,
                      agency: str | None, client_id: str | None, acting_user: str | None,
                      attested_by: str | None = None) -> None:
    """An access record names things by the ids RefNet issues, and people by an identifier: anything else is
    what someone typed (a URL path, a claimed client id) and must not become permanent. Names fields only."""
    bad = [name for name, ok in (
        ("case_id", case_id is None or is_refnet_id(case_id, "case")),
        # (intake names the case as the resource of a consent list or a refused override)
        ("resource_id", resource_id is None or resource_id_ok(resource_type, resource_id)
         or (resource_id == case_id and is_refnet_id(case_id, "case"))),
        ("agency", agency is None or is_refnet_id(agency, "agency")),
        # A person signs in through a first-party client the operator registered (the console): its id is the
        # registry's choice, not an agency's cli_ id.
        ("client_id", client_id is None or is_refnet_id(client_id, "client")
         or (attested_by == "token" and FIRST_PARTY_CLIENT.fullmatch(client_id) is not None)),
        ("acting_user", acting_user is None or is_acting_user(acting_user)),
    ) if not ok]
    if bad:
        raise NotAuditable(f"access record fields not in RefNet's id formats: {', '.join(bad)}")


# --- case views -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConsentInForce:
    consent_id: str | None
    consent_version: Any
    basis: str  # "recorded" (the reading service named it), "log" (derived from the log), "override", "none"


def consents_in_force(entries: Sequence[Mapping[str, Any]]) -> dict[int, ConsentInForce]:
    """For each access entry of one case (by index): the consent that was in force when it happened.

    The reading service's own record wins (it decided on the consent it names). Otherwise the case's
    entries are replayed in the order things happened (``occurred_at``; log order breaks ties -- the log
    interleaves topics, so its order alone is not the order of events across services): the latest
    granted consent not withdrawn since; a risk-to-life override approved for the reader's agency and not
    revoked since counts when no consent does.
    """
    active: dict[str, Any] = {}  # consent_id -> version, in grant order
    overrides: dict[object, str] = {}  # override (its id, else its entry) -> recipient agency, while in force
    result: dict[int, ConsentInForce] = {}
    for entry in sorted(entries, key=lambda e: (e["occurred_at"], e["index"])):
        action, details = entry["action"], entry.get("details") or {}
        consent_id = entry["resource_id"] if entry.get("resource_type") == "Consent" else details.get("consent_id")
        if action == "consent.grant" and consent_id:
            active.pop(consent_id, None)
            active[consent_id] = details.get("consent_version")
        elif action == "consent.withdraw" and consent_id:
            active.pop(consent_id, None)
        elif action == "consent.override" and entry.get("outcome", "success") == "success":
            recipient = details.get("recipient_agency")
            if isinstance(recipient, str):
                overrides[entry.get("resource_id") or entry["index"]] = recipient
        elif action == "consent.override.revoke" and entry.get("outcome", "success") == "success":
            overrides.pop(entry.get("resource_id"), None)  # that override; another for the same agency stays
        elif is_access(action, entry.get("purpose")):
            if "consent_id" in details or "consent_version" in details:
                result[entry["index"]] = ConsentInForce(
                    details.get("consent_id"), details.get("consent_version"), "recorded")
            elif "override_id" in details:
                # Intake read under a risk-to-life override and said so: that, not a consent, was the basis.
                result[entry["index"]] = ConsentInForce(None, None, "override")
            elif active:
                cid, version = next(reversed(active.items()))
                result[entry["index"]] = ConsentInForce(cid, version, "log")
            elif entry.get("agency") in overrides.values():
                result[entry["index"]] = ConsentInForce(None, None, "override")
            else:
                result[entry["index"]] = ConsentInForce(None, None, "none")
    return result


# --- checkpoints ----------------------------------------------------------------------------------------


def checkpoint_body(origin: str, tree_size: int, root: bytes) -> str:
    """The C2SP tlog-checkpoint text: ``<origin>\\n<tree_size>\\n<base64 root>\\n``."""
    if not origin or "\n" in origin:
        raise ValueError("the origin must be one non-empty line")
    return f"{origin}\n{tree_size}\n{base64.b64encode(root).decode()}\n"


@dataclass(frozen=True)
class CheckpointBody:
    origin: str
    tree_size: int
    root: bytes


def parse_checkpoint_body(body: str) -> CheckpointBody:
    """Read a checkpoint body back; raises ValueError on anything but the exact C2SP form."""
    lines = body.split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise ValueError("a checkpoint body is three or more lines, each ending in a newline")
    origin, size_text, root_text = lines[0], lines[1], lines[2]
    if not origin:
        raise ValueError("the checkpoint has no origin")
    if not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")):
        raise ValueError("the checkpoint tree size is not a decimal number")
    try:
        root = base64.b64decode(root_text, validate=True)
    except ValueError as exc:
        raise ValueError("the checkpoint root is not base64") from exc
    if len(root) != 32:
        raise ValueError("the checkpoint root is not 32 bytes")
    return CheckpointBody(origin, int(size_text), root)


def in_the_order_they_happened(accesses: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A case's accesses for an auditor: by when each happened, then by log index. The log's own order is the
    order records arrived, and records of one moment reach it by different topics (a case's creation by intake's
    events, a read by the access records), so the log may hold a read before the creation that preceded it."""
    return sorted(accesses, key=lambda a: (datetime.fromisoformat(a["occurred_at"]).astimezone(UTC), a["index"]))
