"""The leaf's fast canonical JSON writes exactly the bytes of the RFC 8785 reference, for any JSON value.

``leaf_bytes`` writes the plain part of JSON itself and leaves the rest to ``rfc8785``; a single differing
byte would make every verification of an honest log fail, so both are held to the same output here, on
arbitrary values (control characters, astral-plane text, non-ASCII keys, floats, huge integers included).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from services.audit.copy_format import COPY_COLUMNS, CopyLeafReader, copy_time
from services.audit.leaf import details_json, entry_json, entry_leaf, format_time, leaf_bytes

scalars = (
    st.none() | st.booleans() | st.text() | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=25,
)


def reference(value: dict[str, Any]) -> bytes | type[Exception]:
    try:
        return rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as exc:
        return type(exc)


def ours(value: dict[str, Any]) -> bytes | type[Exception]:
    try:
        return leaf_bytes(value)
    except rfc8785.CanonicalizationError as exc:
        return type(exc)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.text(max_size=12), values, max_size=16))
def test_leaf_bytes_equal_the_reference_implementation(entry: dict[str, Any]) -> None:
    assert ours(entry) == reference(entry)


@pytest.mark.parametrize("text", ["\x00\x01\x1f", "\b\f\n\r\t", '"\\', "\x7f\u2028\u2029", "é€𝄞", "\ud800"])
def test_escapes_and_unicode_match(text: str) -> None:
    entry = {"a": text, text: 1} if text.isascii() else {"a": text}
    assert ours(entry) == reference(entry)


def test_keys_beyond_the_basic_plane_sort_by_utf16() -> None:
    # U+FF61 sorts after U+1D11E by code point but before it by UTF-16 code unit (a surrogate is 0xD834).
    entry = {"\uff61": 1, "\U0001d11e": 2}
    assert ours(entry) == reference(entry)


@settings(max_examples=200, deadline=None)
@given(st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9999, 12, 30),
                    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)),
                                               timezone(timedelta(hours=-8))])))
def test_format_time_is_the_fixed_strftime_spelling(moment: datetime) -> None:
    assert format_time(moment) == moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


columns = st.fixed_dictionaries({
    name: st.none() | st.text() for name in ("action", "outcome", "agency", "client_id", "acting_user", "purpose",
                                             "resource_type", "resource_id", "case_id", "source_service", "event_id")
} | {"details": st.dictionaries(st.text(max_size=8), values, max_size=6)})


@settings(max_examples=150, deadline=None)
@given(columns, st.integers(min_value=0, max_value=2**60), st.datetimes(min_value=datetime(1900, 1, 1)),
       st.datetimes(min_value=datetime(1900, 1, 1)))
def test_entry_leaf_is_leaf_bytes_of_entry_json(values: dict[str, Any], index: int, recorded: datetime,
                                               occurred: datetime) -> None:
    recorded, occurred = recorded.replace(tzinfo=UTC), occurred.replace(tzinfo=UTC)
    reference = ours(entry_json(index=index, recorded_at=recorded, occurred_at=occurred, **values))
    try:
        fast: bytes | type[Exception] = entry_leaf(index, format_time(recorded), format_time(occurred), values)
    except rfc8785.CanonicalizationError as exc:
        fast = type(exc)
    assert fast == reference


# --- the verification's COPY path -------------------------------------------------------------------------


def _pg_time(moment: datetime) -> str:
    """A UTC time as PostgreSQL's COPY writes it with DateStyle ISO: fraction trimmed, year padded to four."""
    moment = moment.astimezone(UTC)
    text = f"{moment.year:04d}-{moment:%m-%d %H:%M:%S}"
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return text + "+00"


def _copy_field(value: str | None) -> str:
    """COPY text escaping, as PostgreSQL's CopyAttributeOutText writes a field."""
    if value is None:
        return "\\N"
    escapes = {"\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}
    return "".join(escapes.get(c, c) for c in value)


@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)))
def test_copy_time_is_format_time(moment: datetime) -> None:
    moment = moment.replace(tzinfo=UTC)
    assert copy_time(_pg_time(moment)) == format_time(moment)


@pytest.mark.parametrize("text", ["0044-03-15 12:00:00+00 BC", "10000-01-01 00:00:00+00", "0000-01-01 00:00:00+00",
                                  "2024-01-01 00:00:00+01", "\\N", "infinity"])
def test_copy_time_refuses_what_no_entry_holds(text: str) -> None:
    with pytest.raises(ValueError):
        copy_time(text)


_text = st.none() | st.text(alphabet=st.characters(codec="utf-8", blacklist_characters="\x00"))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(
    st.fixed_dictionaries({name: _text for name in COPY_COLUMNS[3:] if name != "details"}),
    st.dictionaries(st.text(max_size=8).filter(lambda k: "\x00" not in k), values, max_size=5),
    st.datetimes(min_value=datetime(1, 1, 1)), st.datetimes(min_value=datetime(1, 1, 1)),
), min_size=1, max_size=4), st.integers(min_value=0, max_value=2**40))
def test_copy_chunk_hashes_entry_leaf(rows: list[tuple[dict[str, Any], dict[str, Any], datetime, datetime]],
                                      first: int) -> None:
    lines = []
    expected: list[bytes | None] = []
    for n, (columns, details, recorded, occurred) in enumerate(rows):
        recorded, occurred = recorded.replace(tzinfo=UTC), occurred.replace(tzinfo=UTC)
        values = {**columns, "details": details}
        try:
            leaf: bytes | None = entry_leaf(first + n, format_time(recorded), format_time(occurred), values)
        except rfc8785.CanonicalizationError:
            leaf = None
        if leaf is not None:
            expected.append(hashlib.sha256(b"\x00" + leaf).digest())
        else:
            expected.append(None)
        try:
            details_text = json.dumps(details, ensure_ascii=False)
        except ValueError:
            details_text = "{}"
        fields = [str(first + n), _pg_time(recorded), _pg_time(occurred),
                  *(_copy_field(columns[name]) if name != "details" else _copy_field(details_text)
                    for name in COPY_COLUMNS[3:]), "ab" * 32]
        lines.append("\t".join(fields))
    indexes, hashes, stored = CopyLeafReader().copy_chunk("\n".join(lines) + "\n")
    assert indexes == [str(first + n) for n in range(len(rows))]
    assert stored == ["ab" * 32] * len(rows)
    assert hashes == expected


def test_copy_chunk_marks_rows_no_entry_can_be() -> None:
    good = ["7", "2024-05-01 10:00:00.5+00", "2024-05-01 09:00:00+00", "\\N", "case.read", "\\N", "\\N", "\\N",
            "{}", "ev-1", "success", "\\N", "\\N", "\\N", "intake", "\\N"]
    bad_time = [*good[:2], "20000-01-01 00:00:00+00", *good[3:]]
    bad_details = [*good[:8], "[1, 2]", *good[9:]]
    _, hashes, stored = CopyLeafReader().copy_chunk("\n".join("\t".join(r) for r in (good, bad_time, bad_details)))
    entry = {"action": "case.read", "outcome": "success", "event_id": "ev-1", "source_service": "intake",
             "details": {}} | {name: None for name in ("agency", "client_id", "acting_user", "purpose",
                                                        "resource_type", "resource_id", "case_id")}
    leaf = entry_leaf(7, "2024-05-01T10:00:00.500000Z", "2024-05-01T09:00:00.000000Z", entry)
    assert hashes == [hashlib.sha256(b"\x00" + leaf).digest(), None, None]
    assert stored == ["\\N"] * 3


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(max_size=8), values, max_size=6))
def test_details_json_is_rfc8785(details: dict[str, Any]) -> None:
    try:
        text = json.dumps(details, ensure_ascii=False)
    except ValueError:
        return
    try:
        want: str | type[Exception] = rfc8785.dumps(details).decode()
    except rfc8785.CanonicalizationError as exc:
        want = type(exc)
    try:
        got: str | type[Exception] = details_json(text)
    except rfc8785.CanonicalizationError as exc:
        got = type(exc)
    assert got == want
