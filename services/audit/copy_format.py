"""PostgreSQL's COPY text format, as a verification reads the log: leaf hashes straight from ``COPY ... TO
STDOUT`` text (``TimeZone`` UTC, ``DateStyle`` ISO), without a row object per entry.

Writes the same leaves as :mod:`services.audit.leaf` (tests hold them to the same bytes). Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from services.audit.leaf import (
    LEAF_TEMPLATE,
    MAX_SAFE_INTEGER,
    EscapedText,
    NotPlain,
    details_json,
    entry_leaf,
    json_string,
)

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


class CopyLeafReader:
    """Leaf hashes of COPY text, chunk by chunk; remembers the escaped form of repeated column values."""

    __slots__ = ("_copy_text",)

    def __init__(self) -> None:
        # For COPY lines without escapes, where "\\N" can only be the NULL marker.
        self._copy_text = EscapedText()
        self._copy_text["\\N"] = "null"

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
        enc = json_string
        template = LEAF_TEMPLATE
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
                    raise NotPlain  # an escaped character somewhere: the exact path
                if f[1] != last_recorded:  # a sequencer batch shares its time
                    last_recorded, recorded = f[1], copy_time(f[1])
                details = f[8]
                if details != "{}":
                    details = details_json(details)
                index = int(f[0])
                if index > MAX_SAFE_INTEGER:
                    raise NotPlain
                leaf = (template % (
                    fast[f[3]], fast[f[4]], fast[f[5]], fast[f[6]], fast[f[7]], details,
                    "null" if f[9] == "\\N" else enc(f[9]), index,
                    enc(copy_time(f[2])), fast[f[10]], fast[f[11]], enc(recorded), fast[f[12]], fast[f[13]],
                    fast[f[14]],
                )).encode("utf-8")
            except NotPlain:
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
