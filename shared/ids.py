"""The formats of the ids RefNet mints, checked before an id is looked up or written anywhere.

An id that does not have its format is treated like an unknown id (404) and is never recorded: whatever a
caller types in a URL must not reach an event or the append-only audit log, where it would stay for ever.
"""

from __future__ import annotations

import re
import uuid

_CASE_ID = re.compile(r"case-[0-9a-f]{32}")
_CONSENT_ID = re.compile(r"consent-[0-9a-f]{32}")
_OVERRIDE_ID = re.compile(r"override-[0-9a-f]{32}")


def new_id(prefix: str) -> str:
    """``<prefix>-<32 hex digits>``: random, so it says nothing about the person or the time."""
    return f"{prefix}-{uuid.uuid4().hex}"


def is_case_id(value: object) -> bool:
    """Is ``value`` a case id as intake mints them (``case-`` and 32 lowercase hex digits)?"""
    return isinstance(value, str) and _CASE_ID.fullmatch(value) is not None


def is_consent_id(value: object) -> bool:
    return isinstance(value, str) and _CONSENT_ID.fullmatch(value) is not None


def is_override_id(value: object) -> bool:
    return isinstance(value, str) and _OVERRIDE_ID.fullmatch(value) is not None
