"""How a referral looks in an answer: the JSON a party reads, its free text as that party may see it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.referral import domain
from services.referral.domain import Party, Status
from services.referral.store import ReferralRow, TransitionRow
from shared.times import utc_text


@dataclass(frozen=True)
class FreeTextView:
    """A referral's free text as one party may see it: ``state`` says why the reason is absent, if it is
    (``withheld``: not this party's to read now; ``erased``: the case was erased)."""

    reason: str | None
    state: str
    notes: Mapping[int, str | None]


def party_of(row: ReferralRow, agency_id: str) -> Party | None:
    if agency_id == row.from_agency:
        return Party.sender
    if agency_id == row.to_agency:
        return Party.recipient
    return None


def timestamp(value: datetime | None) -> str | None:
    return utc_text(value) if value is not None else None


def referral_view(row: ReferralRow, history: Sequence[TransitionRow] | None, *, texts: FreeTextView,
                  now: datetime | None = None) -> dict[str, Any]:
    overdue = row.overdue_at is not None or (
        now is not None and domain.is_overdue(Status(row.status), row.due_at, now))
    view: dict[str, Any] = {
        "id": row.id, "status": row.status, "case_id": row.case_id, "from_agency": row.from_agency,
        "to_agency": row.to_agency, "service_id": row.service_id, "pathway": row.pathway,
        "service_type": row.service_type, "priority": row.priority, "reason": texts.reason,
        "free_text": texts.state,
        "shared_categories": list(row.shared_categories), "consent_id": row.consent_id,
        "consent_version": row.consent_version, "due_at": timestamp(row.due_at), "overdue": overdue,
        "overdue_at": timestamp(row.overdue_at), "created_at": timestamp(row.created_at),
        "updated_at": timestamp(row.updated_at),
    }
    if history is not None:
        view["history"] = [
            {"from": t.from_status, "to": t.to_status, "by": t.party, "agency": t.agency,
             "acting_user": t.acting_user, "attested_by": t.attested_by, "reason_code": t.reason_code,
             "note": texts.notes.get(t.id), "at": timestamp(t.at)}
            for t in history
        ]
    return view
