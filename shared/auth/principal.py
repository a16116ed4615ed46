"""Who is calling: the caller a verified token names, and the person acting inside that agency."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from shared.errors import Problem

ACTING_USER_HEADER = "X-Acting-User"
# An acting user is an opaque id or an e-mail-like login inside the calling agency. It ends up in audit
# entries and logs, so no spaces, quotes or control characters.
ACTING_USER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+:\-]{0,127}")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: an agency's OAuth client, and optionally the person acting inside that agency."""

    client_id: str
    agency_id: str
    scopes: frozenset[str]
    token_id: str
    expires_at: datetime
    acting_user: str | None = None

    def has_scopes(self, *scopes: str) -> bool:
        return set(scopes) <= self.scopes


def parse_acting_user(value: str | None) -> str | None:
    """The ``X-Acting-User`` header: optional, but if present it must be a plain, short identifier."""
    if value is None:
        return None
    if not ACTING_USER.fullmatch(value):
        raise Problem(
            400,
            "invalid-acting-user",
            f"The {ACTING_USER_HEADER} header must be 1-128 characters of letters, digits and . _ @ + : -,"
            " starting with a letter or digit.",
        )
    return value
