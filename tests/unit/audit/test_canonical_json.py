"""The leaf's fast canonical JSON writes exactly the bytes of the RFC 8785 reference, for any JSON value.

``leaf_bytes`` writes the plain part of JSON itself and leaves the rest to ``rfc8785``; a single differing
byte would make every verification of an honest log fail, so both are held to the same output here, on
arbitrary values (control characters, astral-plane text, non-ASCII keys, floats, huge integers included).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from services.audit.domain import entry_json, entry_leaf, format_time, leaf_bytes

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


@settings(max_examples=400, deadline=None)
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


@settings(max_examples=300, deadline=None)
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
