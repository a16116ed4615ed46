"""One way to page every list: an opaque cursor naming the position after a page's last item, one error.

A position is what the store orders by -- a sequence number, an offset, an id -- and the cursor is that
position in base64url, tagged with its kind so a cursor of one list is refused by another (422, like any
query parameter with a wrong value). Clients treat it
as opaque; the server never trusts it beyond its kind and range.
"""

from __future__ import annotations

import base64
import re
from typing import Annotated

from fastapi import Query

from shared.errors import Problem, invalid
from shared.text import Line

_ID = re.compile(r"[A-Za-z0-9_\-:.]{1,128}")
_MAX_POSITION = 2**63 - 1  # a BIGINT

#: The query parameter every list takes (its value is opaque to clients).
CursorParam = Annotated[Line | None, Query(max_length=200, description="The `next_cursor` of the previous page.",
                                                  examples=["ZGVsaXZlcnk6NDI"])]


def invalid_cursor() -> Problem:
    # The answer any other query parameter with a wrong value gets (shared.errors' validation problem).
    return invalid(["query", "cursor"], "not a cursor this list returned")


def encode(kind: str, position: int | str) -> str:
    """The cursor of ``position`` in a list of ``kind`` (a short tag such as ``"seq"``, ``"id"``)."""
    return base64.urlsafe_b64encode(f"{kind}:{position}".encode()).decode().rstrip("=")


def _decode(kind: str, cursor: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (ValueError, UnicodeDecodeError):
        raise invalid_cursor() from None
    tag, _, value = raw.partition(":")
    if tag != kind or not value:
        raise invalid_cursor()
    return value


def decode_int(kind: str, cursor: str | None) -> int | None:
    """The numeric position a cursor names (None: the first page); 400 ``invalid-cursor`` otherwise."""
    if cursor is None:
        return None
    value = _decode(kind, cursor)
    # ASCII digits only (str.isdigit() also takes other scripts' digits), and within BIGINT.
    if not (value.isascii() and value.isdigit()) or len(value) > 19 or int(value) > _MAX_POSITION:
        raise invalid_cursor()
    return int(value)


def decode_id(kind: str, cursor: str | None) -> str | None:
    """The id a cursor names (None: the first page); 400 ``invalid-cursor`` otherwise."""
    if cursor is None:
        return None
    value = _decode(kind, cursor)
    if not _ID.fullmatch(value):
        raise invalid_cursor()
    return value
