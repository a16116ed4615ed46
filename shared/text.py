"""Text fields of request bodies: the one check every service applies to text a client sends.

PostgreSQL cannot store NUL in text or JSONB (the insert fails, and used to answer 500), and control
characters have no place in a name or a note: they hide text from a reader and forge lines in whatever
shows them. ``Line`` refuses every control character; ``FreeText`` (notes, reasons, descriptions,
addresses) keeps line feed and tab. Both refuse lone surrogates, which no database encoding accepts.
Limits are added where a field is declared: ``Annotated[Line, StringConstraints(max_length=200)]`` or
``Field(max_length=...)``.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

# C0 controls, DEL, C1 controls (Unicode category Cc) and lone surrogates (a JSON "\ud800").
_ANY_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# The same, but line feed and tab: what free text may hold.
_FREE_TEXT_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def _refuse(value: str, pattern: re.Pattern[str], what: str) -> str:
    found = pattern.search(value)
    if found is not None:
        # The message names what is wrong, never the value (it may be personal data).
        raise ValueError("must not contain NUL characters" if found.group() == "\x00" else what)
    return value


def single_line(value: str) -> str:
    return _refuse(value, _ANY_CONTROL, "must not contain control characters")


def free_text(value: str) -> str:
    return _refuse(value, _FREE_TEXT_CONTROL, "must not contain control characters other than line feed and tab")


Line = Annotated[str, AfterValidator(single_line)]
FreeText = Annotated[str, AfterValidator(free_text)]
