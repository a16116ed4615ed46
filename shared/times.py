"""How a moment is written in RefNet's answers: RFC 3339 in UTC with a ``Z`` (audit's leaves have their own,
fixed-precision form: services/audit/leaf.py)."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_text(moment: datetime) -> str:
    """``2026-12-03T10:00:00.123456Z`` for any aware moment, whatever its offset."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
