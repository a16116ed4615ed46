"""The statistics' queries: a month's counts and median hours, for the oversight body's indicators."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    func,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession

from services.referral.domain import MonthCounts
from services.referral.store import AgencyRow, ReferralRow, TransitionRow

# --- statistics ---------------------------------------------------------------------------------------------


async def stats_agencies(session: AsyncSession) -> list[str]:
    """Every agency the registry knows, platform clients aside: each gets its cells, zero or not."""
    return list((await session.execute(
        select(AgencyRow.agency_id).where(AgencyRow.kind != "platform"))).scalars())


def _acknowledgements() -> Any:
    """The recipient's first move off ``requested``: the acknowledgement (one per referral)."""
    return (TransitionRow.from_status == "requested") & (TransitionRow.party == "recipient")


async def month_counts(session: AsyncSession, start: datetime, end: datetime) -> MonthCounts:
    """The true counts of the events in [start, end), for ``domain.suppress`` (never published as such)."""
    created = (await session.execute(
        select(ReferralRow.pathway, ReferralRow.from_agency, ReferralRow.to_agency,
               ReferralRow.consent_id.is_not(None), func.count())
        .where(ReferralRow.created_at >= start, ReferralRow.created_at < end)
        .group_by(ReferralRow.pathway, ReferralRow.from_agency, ReferralRow.to_agency,
                  ReferralRow.consent_id.is_not(None)))).all()
    in_period = (TransitionRow.at >= start) & (TransitionRow.at < end)
    decided = (await session.execute(
        select(ReferralRow.pathway, TransitionRow.to_status, func.count())
        .join(ReferralRow, ReferralRow.id == TransitionRow.referral_id)
        .where(in_period, TransitionRow.to_status.in_(["accepted", "rejected"]))
        .group_by(ReferralRow.pathway, TransitionRow.to_status))).all()
    on_time = TransitionRow.at <= ReferralRow.due_at
    acknowledged = (await session.execute(
        select(ReferralRow.pathway, on_time, func.count())
        .join(ReferralRow, ReferralRow.id == TransitionRow.referral_id)
        .where(in_period, _acknowledgements())
        .group_by(ReferralRow.pathway, on_time))).all()
    overdue = (await session.execute(
        select(ReferralRow.pathway, func.count())
        .where(ReferralRow.overdue_at >= start, ReferralRow.overdue_at < end)
        .group_by(ReferralRow.pathway))).all()
    return MonthCounts(
        created={(p, s, r, bool(c)): n for p, s, r, c, n in created},
        decided={(p, to == "accepted"): n for p, to, n in decided},
        acknowledged={(p, bool(t)): n for p, t, n in acknowledged},
        overdue={p: n for p, n in overdue},
    )


async def median_hours(session: AsyncSession, start: datetime, end: datetime) -> dict[tuple[str, str], float]:
    """Per pathway, the median hours from referral to acknowledgement and to acceptance, over those made in
    [start, end)."""
    hours = func.extract("epoch", TransitionRow.at - ReferralRow.created_at) / 3600.0
    median = func.percentile_cont(0.5).within_group(hours)
    medians: dict[tuple[str, str], float] = {}
    for name, condition in (("acknowledge", _acknowledgements()), ("accept", TransitionRow.to_status == "accepted")):
        rows = (await session.execute(
            select(ReferralRow.pathway, median)
            .join(ReferralRow, ReferralRow.id == TransitionRow.referral_id)
            .where(TransitionRow.at >= start, TransitionRow.at < end, condition)
            .group_by(ReferralRow.pathway))).all()
        medians.update({(pathway, name): float(value) for pathway, value in rows})
    return medians
