"""The audit log's rules, free of I/O: what an entry is, how an event becomes one, what a checkpoint says.

An entry is shaped after FHIR AuditEvent (CONTRACT.md, audit) and carries ids and enumerations only. An
event that would put anything else into the log -- a field outside the entry schema whose value is free
text, a nested object, a long string -- is refused (:class:`NotAuditable`), so personal data can never be
stored by accident: refusing loses nothing (the event goes to the dead-letter topic for a human to look
at), storing would be forever.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import rfc8785
from pydantic import ValidationError

from shared.access import DETAIL_VALUE, parse_access_record
from shared.envelope import Event
from shared.ids import is_acting_user, is_refnet_id, resource_id_ok

# --- entries --------------------------------------------------------------------------------------------

OUTCOMES = frozenset({"success", "denied", "error"})
# The order GET /audit/entries shows; the leaf is the JCS form, so order does not change a hash.
ENTRY_FIELDS = (
    "index", "recorded_at", "occurred_at", "action", "outcome", "agency", "client_id", "acting_user", "purpose",
    "resource_type", "resource_id", "case_id", "source_service", "event_id", "details",
)
# Payload fields that become entry columns (the rest, if harmless, go to ``details``).
_COLUMN_FIELDS = ("agency", "client_id", "acting_user", "purpose", "case_id")
# JSON numbers outside this range lose precision in other JSON parsers (RFC 8785 needs IEEE doubles).
MAX_DETAIL_INT = 2**31 - 1
MAX_DETAILS = 32
MAX_LIST_ITEMS = 64
MAX_RECORD_FIELDS = 16
MAX_RECORDS = 16
# The case record's personal fields (CONTRACT.md: identity, contact, notes) and free-text fields of
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


def utc(moment: datetime) -> datetime:
    """A moment in UTC, at the microsecond precision PostgreSQL keeps (so a stored entry hashes the same)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


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
        details=checked_details(data),
        **columns,
    )


def _draft_from_access(event: Event, service: str) -> EntryDraft:
    try:
        record = parse_access_record(event.data)
    except ValidationError as exc:
        # Only the field locations: the rejected input may be exactly the personal data we refuse.
        where = sorted({".".join(str(p) for p in e["loc"]) for e in exc.errors()})[:5]
        raise NotAuditable(f"access record outside its schema at: {', '.join(where)}") from None
    _check_access_ids(record.case_id, record.resource_type, record.resource_id, record.agency, record.client_id,
                      record.acting_user)
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
        details=checked_details(record.details),
    )


def _check_access_ids(case_id: str | None, resource_type: str | None, resource_id: str | None,
                      agency: str | None, client_id: str | None, acting_user: str | None) -> None:
    """An access record names things by the ids RefNet issues, and people by an identifier: anything else is
    what someone typed (a URL path, a claimed client id) and must not become permanent. Names fields only."""
    bad = [name for name, ok in (
        ("case_id", case_id is None or is_refnet_id(case_id, "case")),
        # (intake names the case as the resource of a consent list or a refused override)
        ("resource_id", resource_id is None or resource_id_ok(resource_type, resource_id)
         or (resource_id == case_id and is_refnet_id(case_id, "case"))),
        ("agency", agency is None or is_refnet_id(agency, "agency")),
        ("client_id", client_id is None or is_refnet_id(client_id, "client")),
        ("acting_user", acting_user is None or is_acting_user(acting_user)),
    ) if not ok]
    if bad:
        raise NotAuditable(f"access record fields not in RefNet's id formats: {', '.join(bad)}")


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC with microseconds: one fixed spelling, since the leaf hashes the text."""
    if moment.tzinfo is not UTC:  # what the database driver gives is UTC already
        moment = utc(moment)
    if moment.year >= 1000:
        # The same text as the strftime below (which stays the definition), several times faster: every entry
        # of a verification passes here twice. isoformat() of a UTC moment ends in "+00:00".
        return moment.isoformat(timespec="microseconds")[:-6] + "Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entry_json(
    *, index: int, recorded_at: datetime, draft: EntryDraft | None = None, **columns: Any
) -> dict[str, Any]:
    """The entry exactly as GET /audit/entries returns it (and as its leaf hashes it)."""
    values: Mapping[str, Any] = columns
    if draft is not None:
        values = {name: getattr(draft, name) for name in ENTRY_FIELDS if hasattr(draft, name)}
    entry = {name: values.get(name) for name in ENTRY_FIELDS}
    entry["index"] = index
    entry["recorded_at"] = format_time(recorded_at)
    entry["occurred_at"] = format_time(values["occurred_at"])
    entry["details"] = dict(values.get("details") or {})
    return entry


def leaf_bytes(entry: Mapping[str, Any]) -> bytes:
    """The Merkle leaf: the RFC 8785 canonical JSON of the entry.

    Entries hold strings, safe integers, booleans, nulls, lists and objects with ASCII keys -- the part of
    JSON where RFC 8785 and Python's own JSON string escaping coincide -- so ``_canonical`` writes them with
    the C string encoder, several times faster than ``rfc8785`` (a full verification canonicalises every
    entry). Anything else (a float, a non-ASCII key, an integer beyond 2**53, text that is not valid
    Unicode) is left to ``rfc8785`` itself; tests hold both to the same bytes.
    """
    value = dict(entry)
    try:
        if value.keys() == _ENTRY_KEYS:  # an entry: its keys' order is known, only the values need writing
            written = "".join([prefix + _canonical(value[name]) for prefix, name in _ENTRY_LAYOUT])
            return (written + "}").encode("utf-8")
        return _canonical(value).encode("utf-8")
    except (_NotPlain, UnicodeEncodeError):
        return rfc8785.dumps(value)


def entry_leaf(index: int, recorded_at: str, occurred_at: str, columns: Mapping[str, Any]) -> bytes:
    """``leaf_bytes(entry_json(index=..., recorded_at=..., **columns))``, with both times already written by
    :func:`format_time` and the other fields looked up in ``columns`` (a database record will do).

    The sequencer's and the verification's loop: a full verification writes a million leaves, and the entry
    dict in between costs as much as the hashing. Tests hold this to the same bytes as the definition above.
    """
    details = columns["details"]
    try:
        return (_LEAF_TEMPLATE % (
            _value(columns["acting_user"]), _value(columns["action"]), _value(columns["agency"]),
            _value(columns["case_id"]), _value(columns["client_id"]), _canonical(dict(details)) if details else "{}",
            _value(columns["event_id"]), _canonical(index), _json_string(occurred_at), _value(columns["outcome"]),
            _value(columns["purpose"]), _json_string(recorded_at), _value(columns["resource_id"]),
            _value(columns["resource_type"]), _value(columns["source_service"]),
        )).encode("utf-8")
    except (_NotPlain, UnicodeEncodeError):
        entry = {name: columns[name] for name in ENTRY_FIELDS if name not in _WRITTEN_HERE}
        entry |= {"index": index, "recorded_at": recorded_at, "occurred_at": occurred_at,
                  "details": dict(details or {})}
        return leaf_bytes(entry)


class LeafWriter:
    """:func:`entry_leaf` for database rows: text columns and ``details`` as JSON text (``details::text``),
    from driver records (:meth:`leaf`, both times already written by :func:`format_time`) or COPY text
    (:meth:`copy_chunk`).

    The sequencer's and the verification's loop. Per entry it costs one ``%`` format: the few distinct
    values of the low-cardinality columns (action, agency, outcome...) are escaped once per writer, and
    ``details`` is parsed and written back by the C JSON codec -- for the plain part of JSON (ASCII, no
    floats, safe integers) that is RFC 8785's form. Anything else goes the way of :func:`entry_leaf`, and
    from there, if need be, to ``rfc8785``; tests hold all three to the same bytes.
    """

    __slots__ = ("_copy_text", "_text")

    def __init__(self) -> None:
        self._text = _EscapedText()
        # For COPY lines without escapes, where "\N" can only be the NULL marker.
        self._copy_text = _EscapedText()
        self._copy_text["\\N"] = "null"

    def leaf(self, index: int, recorded_at: str, occurred_at: str, record: Mapping[str, Any]) -> bytes:
        text = self._text
        try:
            details = record["details"]
            if details != "{}":
                details = _plain_details(details)
            if index > _MAX_SAFE_INTEGER:
                raise _NotPlain
            return (_LEAF_TEMPLATE % (
                text[record["acting_user"]], text[record["action"]], text[record["agency"]],
                text[record["case_id"]], text[record["client_id"]], details, _json_string(record["event_id"]),
                index, _json_string(occurred_at), text[record["outcome"]], text[record["purpose"]],
                _json_string(recorded_at), text[record["resource_id"]], text[record["resource_type"]],
                text[record["source_service"]],
            )).encode("utf-8")
        except (_NotPlain, UnicodeEncodeError):
            columns = {name: record[name] for name in ENTRY_FIELDS if name not in _WRITTEN_HERE}
            columns["details"] = json.loads(record["details"])
            return entry_leaf(index, recorded_at, occurred_at, columns)


    def copy_chunk(self, text: str) -> tuple[list[str], list[bytes | None], list[str]]:
        """Leaf hashes of whole lines of ``COPY (SELECT COPY_COLUMNS, stored leaf as hex) TO STDOUT`` text
        (``TimeZone`` UTC, ``DateStyle`` ISO): the indexes as written, the hashes (None for a row no entry can
        be: a time outside years 1 to 9999, details that are not an object) and the stored leaves' hex
        (``\\N`` where the node is missing).

        The verification's loop, a million times: a line with no escape but NULL markers -- nearly every
        line -- is used as split, its NULLs (``\\N``) written ``null`` by the escaped-text memo; any other
        line is unescaped field by field and goes the way of :meth:`leaf`.
        """
        fast = self._copy_text
        sha256 = hashlib.sha256
        enc = _json_string
        template = _LEAF_TEMPLATE
        last_recorded = recorded = ""
        indexes: list[str] = []
        hashes: list[bytes | None] = []
        stored: list[str] = []
        leaf: bytes | None
        for line in text.split("\n"):
            if not line:
                continue
            f = line.split("\t")
            if len(f) != _COPY_WIDTH:
                raise ValueError("a COPY row of the log has the wrong number of fields")
            indexes.append(f[0])
            stored.append(f[15])
            try:
                if line.count("\\") != line.count("\\N") or f[0] == "\\N":
                    raise _NotPlain  # an escaped character somewhere: the exact path
                if f[1] != last_recorded:  # a sequencer batch shares its time
                    last_recorded, recorded = f[1], copy_time(f[1])
                details = f[8]
                if details != "{}":
                    details = details_json(details)
                index = int(f[0])
                if index > _MAX_SAFE_INTEGER:
                    raise _NotPlain
                leaf = (template % (
                    fast[f[3]], fast[f[4]], fast[f[5]], fast[f[6]], fast[f[7]], details,
                    "null" if f[9] == "\\N" else enc(f[9]), index,
                    enc(copy_time(f[2])), fast[f[10]], fast[f[11]], enc(recorded), fast[f[12]], fast[f[13]],
                    fast[f[14]],
                )).encode("utf-8")
            except _NotPlain:
                leaf = self._exact_copy_leaf(f)
            except (ValueError, TypeError):
                leaf = None
            hashes.append(None if leaf is None else sha256(b"\x00" + leaf).digest())
        return indexes, hashes, stored

    def _exact_copy_leaf(self, raw: list[str]) -> bytes | None:
        f = [None if value == "\\N" else _copy_unescape(value) for value in raw]
        index, recorded, occurred, details = f[0], f[1], f[2], f[8]
        if index is None or recorded is None or occurred is None or details is None:
            return None
        try:
            columns: dict[str, Any] = dict(zip(COPY_COLUMNS[3:], f[3:15], strict=True))
            columns["details"] = json.loads(details)
            if not isinstance(columns["details"], dict):
                return None
            return entry_leaf(int(index), copy_time(recorded), copy_time(occurred), columns)
        except (ValueError, TypeError):
            return None


#: An ``audit_entries`` row as a verification's COPY writes it, the leaf's members in RFC 8785 order after
#: the index and the two times; ``store`` adds the stored leaf hash (hex) after them.
COPY_COLUMNS = ("idx", "recorded_at", "occurred_at", "acting_user", "action", "agency", "case_id", "client_id",
                "details", "event_id", "outcome", "purpose", "resource_id", "resource_type", "source_service")
_COPY_WIDTH = len(COPY_COLUMNS) + 1
_COPY_ESCAPE = re.compile(r"\\(?:([0-7]{1,3})|x([0-9a-fA-F]{1,2})|(.))", re.DOTALL)
_COPY_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_COPY_TIME = re.compile(r"(\d{4,})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?\+00")


def _copy_unescape(value: str) -> str:
    """A field of PostgreSQL's COPY text format, unescaped (``\\\\``, ``\\n``..., octal and hex bytes)."""
    if "\\" not in value:
        return value

    def one(match: re.Match[str]) -> str:
        octal, hexa, char = match.groups()
        if octal is not None:
            return chr(int(octal, 8))
        if hexa is not None:
            return chr(int(hexa, 16))
        return _COPY_ESCAPES.get(char, char)

    return _COPY_ESCAPE.sub(one, value)


def copy_time(text: str) -> str:
    """A ``timestamptz`` as COPY writes it in UTC with ``DateStyle`` ISO, in :func:`format_time`'s spelling.

    ``2024-05-01 10:00:00.5+00`` -> ``2024-05-01T10:00:00.500000Z``. Raises ValueError for what no entry's
    time can be (before year 1 -- COPY writes BC years like AD ones with a suffix -- or after 9999).
    """
    if len(text) == 29 and text[26:] == "+00" and text[0] != "0" and text[4] == "-":
        return text[:10] + "T" + text[11:26] + "Z"  # the common case: all six digits of the fraction
    match = _COPY_TIME.fullmatch(text)
    if match is None:
        raise ValueError("not a time an entry can hold")
    year, month, day, hour, minute, second, fraction = match.groups()
    if len(year) > 4 or int(year) == 0:
        raise ValueError("not a time an entry can hold")
    # strftime's %Y (format_time's definition) does not pad years below 1000.
    return f"{int(year)}-{month}-{day}T{hour}:{minute}:{second}.{(fraction or '').ljust(6, '0')}Z"


class _EscapedText(dict[str | None, str]):
    """Column value -> its JSON string (``None`` -> ``null``), remembered up to a bound."""

    def __init__(self) -> None:
        super().__init__({None: "null"})

    def __missing__(self, key: str | None) -> str:
        if type(key) is not str:
            raise _NotPlain
        value: str = _json_string(key)
        if len(self) < _ESCAPED_TEXT_LIMIT:
            self[key] = value
        return value


def details_json(text: str) -> str:
    """The RFC 8785 form of an entry's ``details``, from any JSON text of it (``details::text``).

    Canonical JSON is compositional: this, between the entry's other members, is the entry's leaf.
    """
    try:
        return _plain_details(text)
    except _NotPlain:
        pass
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("details is not a JSON object")  # no entry can hold it: a rewrite
    try:
        return _canonical(value)
    except _NotPlain:
        return rfc8785.dumps(value).decode("utf-8")


def _plain_details(text: str) -> str:
    """RFC 8785 form of a JSON object's text, if it lies in the plain part of JSON; else :class:`_NotPlain`.

    ASCII text without escapes has ASCII keys, which sort by code point as RFC 8785 sorts them; the parse
    hooks refuse floats (RFC 8785 writes them its own way) and integers beyond 2**53.
    """
    if not text.isascii() or "\\u" in text:
        raise _NotPlain
    value = _parse_plain(text)
    if type(value) is not dict:
        raise _NotPlain
    return _write_plain(value)


def _refuse(_: str) -> Any:
    raise _NotPlain


def _plain_int(digits: str) -> int:
    if len(digits) > 15:  # at most 15 digits (and a sign) is below 2**53 for certain
        raise _NotPlain
    return int(digits)


class _NotPlain(Exception):
    """A value outside the part of JSON ``_canonical`` writes: leave it to the reference implementation."""


_json_string = json.encoder.encode_basestring  # the C encoder; escapes exactly as RFC 8785 3.2.2.2 does
_MAX_SAFE_INTEGER = 2**53 - 1
_ENTRY_KEYS = frozenset(ENTRY_FIELDS)
# (what precedes the value, field name) in RFC 8785 order: ASCII names sort by code point as by UTF-16.
_ENTRY_LAYOUT = tuple(
    (("{" if n == 0 else ",") + _json_string(name) + ":", name) for n, name in enumerate(sorted(ENTRY_FIELDS))
)


# entry_leaf's fields, in this (RFC 8785) order; the import fails if the entry's fields change without it.
_LEAF_FIELDS = ("acting_user", "action", "agency", "case_id", "client_id", "details", "event_id", "index",
                "occurred_at", "outcome", "purpose", "recorded_at", "resource_id", "resource_type", "source_service")
if tuple(name for _, name in _ENTRY_LAYOUT) != _LEAF_FIELDS:
    raise ImportError("entry_leaf's field order no longer matches ENTRY_FIELDS")
_ESCAPED_TEXT_LIMIT = 8192  # enough for the low-cardinality columns, which fill it first
_parse_plain = json.JSONDecoder(parse_float=_refuse, parse_int=_plain_int, parse_constant=_refuse).decode
_write_plain = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True, check_circular=False,
                                allow_nan=False).encode
_LEAF_TEMPLATE = "".join(prefix.replace("%", "%%") + "%s" for prefix, _ in _ENTRY_LAYOUT) + "}"
_WRITTEN_HERE = frozenset({"index", "recorded_at", "occurred_at", "details"})


def _value(value: Any) -> str:
    if value is None:
        return "null"
    if type(value) is str:
        return _json_string(value)
    return _canonical(value)


def _canonical(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    kind = type(value)
    if kind is str:
        return _json_string(value)
    if kind is int and -_MAX_SAFE_INTEGER <= value <= _MAX_SAFE_INTEGER:
        return str(value)
    if kind is list or kind is tuple:
        return "[" + ",".join([_canonical(item) for item in value]) + "]"
    if kind is dict:
        keys = sorted(value)  # ASCII keys sort the same by code point as by UTF-16 code unit (RFC 8785 3.2.3)
        if not all(type(key) is str and key.isascii() for key in keys):
            raise _NotPlain
        return "{" + ",".join([_json_string(key) + ":" + _canonical(value[key]) for key in keys]) + "}"
    raise _NotPlain


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
    granted consent not withdrawn since; a risk-to-life override for the reader's agency counts when no
    consent does.
    """
    active: dict[str, Any] = {}  # consent_id -> version, in grant order
    overrides: set[str] = set()
    result: dict[int, ConsentInForce] = {}
    for entry in sorted(entries, key=lambda e: (e["occurred_at"], e["index"])):
        action, details = entry["action"], entry.get("details") or {}
        consent_id = entry["resource_id"] if entry.get("resource_type") == "Consent" else details.get("consent_id")
        if action == "consent.grant" and consent_id:
            active.pop(consent_id, None)
            active[consent_id] = details.get("consent_version")
        elif action == "consent.withdraw" and consent_id:
            active.pop(consent_id, None)
        elif action == "consent.override":
            recipient = details.get("recipient_agency")
            if isinstance(recipient, str):
                overrides.add(recipient)
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
            elif entry.get("agency") in overrides:
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
