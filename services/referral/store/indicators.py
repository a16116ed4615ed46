"""The queries behind an agency's own indicators (``domain.indicators``): counts by month of the referrals it
sent and received and of their moves, and its waits to acknowledge and to accept. Only one agency's rows are
read, named by the caller's token, never by a parameter."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.referral.domain.indicators import COUNTED_MOVES, SIDES, AgencyTally, Side
from services.referral.store import ReferralRow, TransitionRow


def _month(column: Any) -> Any:
    """``YYYY-MM`` of a moment, in UTC whatever the session's time zone."""
    return func.to_char(func.timezone("UTC", column), "YYYY-MM")


def _side(agency: str, side: Side) -> Any:
    return (ReferralRow.from_agency if side == "sent" else ReferralRow.to_agency) == agency


async def agency_tally(session: AsyncSession, agency: str, start: datetime, end: datetime) -> AgencyTally:
    """What ``agency`` sent and received, and the moves of those referrals, in [start, end)."""
    created: dict[tuple[Side, str], int] = {}
    moves: dict[tuple[Side, str, str], int] = {}
    reasons: dict[tuple[Side, str, str], int] = {}
    in_range = (TransitionRow.at >= start) & (TransitionRow.at < end)
    for side in SIDES:
        month = _month(ReferralRow.created_at)
        for label, n in (await session.execute(
                select(month, func.count())
                .where(_side(agency, side), ReferralRow.created_at >= start, ReferralRow.created_at < end)
                .group_by(month))).all():
            created[(side, label)] = n
        month = _month(TransitionRow.at)
        for label, to, code, n in (await session.execute(
                select(month, TransitionRow.to_status, TransitionRow.reason_code, func.count())
                .join(ReferralRow, ReferralRow.id == TransitionRow.referral_id)
                .where(_side(agency, side), in_range, TransitionRow.to_status.in_([str(s) for s in COUNTED_MOVES]))
                .group_by(month, TransitionRow.to_status, TransitionRow.reason_code))).all():
            moves[(side, label, to)] = moves.get((side, label, to), 0) + n
            if to == "rejected" and code is not None:
                reasons[(side, label, code)] = reasons.get((side, label, code), 0) + n
    # The recipient's first move off ``requested`` is its acknowledgement (one per referral), as in /stats.
    acknowledgement = (TransitionRow.from_status == "requested") & (TransitionRow.party == "recipient")
    hours = func.extract("epoch", TransitionRow.at - ReferralRow.created_at) / 3600.0
    waits: dict[tuple[str, str], list[float]] = {}
    acknowledged: dict[str, int] = {}
    for name, condition in (("acknowledge", acknowledgement), ("accept", TransitionRow.to_status == "accepted")):
        month = _month(TransitionRow.at)
        for label, wait in (await session.execute(
                select(month, hours)
                .join(ReferralRow, ReferralRow.id == TransitionRow.referral_id)
                .where(_side(agency, "received"), in_range, condition))).all():
            waits.setdefault((name, label), []).append(float(wait))
            if name == "acknowledge":
                acknowledged[label] = acknowledged.get(label, 0) + 1
    return AgencyTally(created=created, moves=moves, acknowledged=acknowledged, reasons=reasons, waits=waits)
