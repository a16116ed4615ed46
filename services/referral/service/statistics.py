"""De-identified statistics for oversight agencies (GET /stats, docs/domain.md rule 9; ``domain.statistics``
says how)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.referral import domain, store
from services.referral.service.clock import Clock, system_clock
from shared.errors import invalid


class Statistics:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, clock: Clock = system_clock) -> None:
        self.sessions = sessions
        self.clock = clock

    async def stats(self, label: str) -> dict[str, Any]:
        """docs/domain.md's indicators for one closed month or quarter, de-identified.

        Only oversight agencies call this (scope ``stats:read``). A quarter is built from its months, each
        protected alone, so a month and its quarter never difference into a suppressed cell."""
        try:
            period = domain.parse_period(label)
            domain.check_closed(period, self.clock())
        except domain.PeriodInvalid as refused:
            raise invalid(["query", "period"], str(refused), detail=str(refused)) from None
        months = []
        async with self.sessions() as session:
            agencies = await store.stats_agencies(session)
            for label_of_month in period.months:
                month = domain.parse_period(label_of_month)
                counts = await store.month_counts(session, month.start, month.end)
                cells, sums = domain.cells_of(counts, agencies)
                months.append((cells, domain.suppress(cells, sums)))
            medians = await store.median_hours(session, period.start, period.end)
        values, hidden = months[0] if len(months) == 1 else domain.protect_quarter(months)
        return domain.statistics_view(period, values, hidden, medians)
