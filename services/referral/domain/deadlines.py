"""Acknowledgement deadlines: when a referral is due, and when it is overdue (a flag, not a state)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from services.referral.domain.vocabulary import Priority, Status

# --- deadlines ----------------------------------------------------------------------------------------------

ACKNOWLEDGE_WITHIN: Mapping[Priority, timedelta] = {
    Priority.emergency: timedelta(hours=24),
    Priority.urgent: timedelta(hours=72),
    Priority.normal: timedelta(days=14),
}


def due_at(priority: Priority, created_at: datetime,
           within: Mapping[Priority, timedelta] = ACKNOWLEDGE_WITHIN) -> datetime:
    """When the recipient must have acknowledged (moved the referral past ``requested``); ``within``: the
    deadlines the country's SOPs agreed, if not the referral form's."""
    return created_at + within[priority]


def is_overdue(status: Status, due: datetime, now: datetime) -> bool:
    """Overdue is a flag, not a state: the deadline passed while the referral was still ``requested``."""
    return status is Status.requested and now >= due
