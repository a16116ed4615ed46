"""How an entry is written as its Merkle leaf: the RFC 8785 canonical JSON of the entry, and the fast paths.

:func:`leaf_bytes` is the definition; :func:`entry_leaf` and :class:`LeafWriter` write the same bytes without
the entry dict in between (the sequencer's and the verification's loops); tests hold all of them, and the
``rfc8785`` reference, to the same bytes. Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import rfc8785

if TYPE_CHECKING:
    from services.audit.domain import EntryDraft

# The order GET /audit/entries shows; the leaf is the JCS form, so order does not change a hash.
ENTRY_FIELDS = (
    "index", "recorded_at", "occurred_at", "action", "outcome", "agency", "client_id", "acting_user", "purpose",
    "resource_type", "resource_id", "case_id", "source_service", "event_id", "details",
)

def utc(moment: datetime) -> datetime:
    """A moment in UTC, at the microsecond precision PostgreSQL keeps (so a stored entry hashes the same)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)



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
    except (NotPlain, UnicodeEncodeError):
        return rfc8785.dumps(value)


def entry_leaf(index: int, recorded_at: str, occurred_at: str, columns: Mapping[str, Any]) -> bytes:
    """``leaf_bytes(entry_json(index=..., recorded_at=..., **columns))``, with both times already written by
    :func:`format_time` and the other fields looked up in ``columns`` (a database record will do).

    The sequencer's and the verification's loop: a full verification writes a million leaves, and the entry
    dict in between costs as much as the hashing. Tests hold this to the same bytes as the definition above.
    """
    details = columns["details"]
    try:
        return (LEAF_TEMPLATE % (
            _value(columns["acting_user"]), _value(columns["action"]), _value(columns["agency"]),
            _value(columns["case_id"]), _value(columns["client_id"]), _canonical(dict(details)) if details else "{}",
            _value(columns["event_id"]), _canonical(index), json_string(occurred_at), _value(columns["outcome"]),
            _value(columns["purpose"]), json_string(recorded_at), _value(columns["resource_id"]),
            _value(columns["resource_type"]), _value(columns["source_service"]),
        )).encode("utf-8")
    except (NotPlain, UnicodeEncodeError):
        entry = {name: columns[name] for name in ENTRY_FIELDS if name not in _WRITTEN_HERE}
        entry |= {"index": index, "recorded_at": recorded_at, "occurred_at": occurred_at,
                  "details": dict(details or {})}
        return leaf_bytes(entry)


class LeafWriter:
    """:func:`entry_leaf` for database rows: text columns and ``details`` as JSON text (``details::text``),
    from driver records (:meth:`leaf`, both times already written by :func:`format_time`); COPY text is
    :class:`services.audit.copy_format.CopyLeafReader`'s.

    The sequencer's and the verification's loop. Per entry it costs one ``%`` format: the few distinct
    values of the low-cardinality columns (action, agency, outcome...) are escaped once per writer, and
    ``details`` is parsed and written back by the C JSON codec -- for the plain part of JSON (ASCII, no
    floats, safe integers) that is RFC 8785's form. Anything else goes the way of :func:`entry_leaf`, and
    from there, if need be, to ``rfc8785``; tests hold all three to the same bytes.
    """

    __slots__ = ("_text",)

    def __init__(self) -> None:
        self._text = EscapedText()

    def leaf(self, index: int, recorded_at: str, occurred_at: str, record: Mapping[str, Any]) -> bytes:
        text = self._text
        try:
            details = record["details"]
            if details != "{}":
                details = _plain_details(details)
            if index > MAX_SAFE_INTEGER:
                raise NotPlain
            return (LEAF_TEMPLATE % (
                text[record["acting_user"]], text[record["action"]], text[record["agency"]],
                text[record["case_id"]], text[record["client_id"]], details, json_string(record["event_id"]),
                index, json_string(occurred_at), text[record["outcome"]], text[record["purpose"]],
                json_string(recorded_at), text[record["resource_id"]], text[record["resource_type"]],
                text[record["source_service"]],
            )).encode("utf-8")
        except (NotPlain, UnicodeEncodeError):
            columns = {name: record[name] for name in ENTRY_FIELDS if name not in _WRITTEN_HERE}
            columns["details"] = json.loads(record["details"])
            return entry_leaf(index, recorded_at, occurred_at, columns)


class EscapedText(dict[str | None, str]):
    """Column value -> its JSON string (``None`` -> ``null``), remembered up to a bound."""

    def __init__(self) -> None:
        super().__init__({None: "null"})

    def __missing__(self, key: str | None) -> str:
        if type(key) is not str:
            raise NotPlain
        value: str = json_string(key)
        if len(self) < _ESCAPED_TEXT_LIMIT:
            self[key] = value
        return value


def details_json(text: str) -> str:
    """The RFC 8785 form of an entry's ``details``, from any JSON text of it (``details::text``).

    Canonical JSON is compositional: this, between the entry's other members, is the entry's leaf.
    """
    try:
        return _plain_details(text)
    except NotPlain:
        pass
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("details is not a JSON object")  # no entry can hold it: a rewrite
    try:
        return _canonical(value)
    except NotPlain:
        return rfc8785.dumps(value).decode("utf-8")


def _plain_details(text: str) -> str:
    """RFC 8785 form of a JSON object's text, if it lies in the plain part of JSON; else :class:`NotPlain`.

    ASCII text without escapes has ASCII keys, which sort by code point as RFC 8785 sorts them; the parse
    hooks refuse floats (RFC 8785 writes them its own way) and integers beyond 2**53.
    """
    if not text.isascii() or "\\u" in text:
        raise NotPlain
    value = _parse_plain(text)
    if type(value) is not dict:
        raise NotPlain
    return _write_plain(value)


def _refuse(_: str) -> Any:
    raise NotPlain


def _plain_int(digits: str) -> int:
    if len(digits) > 15:  # at most 15 digits (and a sign) is below 2**53 for certain
        raise NotPlain
    return int(digits)


class NotPlain(Exception):
    """A value outside the part of JSON ``_canonical`` writes: leave it to the reference implementation."""


json_string = json.encoder.encode_basestring  # the C encoder; escapes exactly as RFC 8785 3.2.2.2 does
MAX_SAFE_INTEGER = 2**53 - 1
_ENTRY_KEYS = frozenset(ENTRY_FIELDS)
# (what precedes the value, field name) in RFC 8785 order: ASCII names sort by code point as by UTF-16.
_ENTRY_LAYOUT = tuple(
    (("{" if n == 0 else ",") + json_string(name) + ":", name) for n, name in enumerate(sorted(ENTRY_FIELDS))
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
LEAF_TEMPLATE = "".join(prefix.replace("%", "%%") + "%s" for prefix, _ in _ENTRY_LAYOUT) + "}"
_WRITTEN_HERE = frozenset({"index", "recorded_at", "occurred_at", "details"})


def _value(value: Any) -> str:
    if value is None:
        return "null"
    if type(value) is str:
        return json_string(value)
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
        return json_string(value)
    if kind is int and -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        return str(value)
    if kind is list or kind is tuple:
        return "[" + ",".join([_canonical(item) for item in value]) + "]"
    if kind is dict:
        keys = sorted(value)  # ASCII keys sort the same by code point as by UTF-16 code unit (RFC 8785 3.2.3)
        if not all(type(key) is str and key.isascii() for key in keys):
            raise NotPlain
        return "{" + ",".join([json_string(key) + ":" + _canonical(value[key]) for key in keys]) + "}"
    raise NotPlain
