"""An agency's own indicators (GET /indicators, issue #21; ``domain.indicators`` says what they count)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.referral.domain.indicators import IndicatorsQueryInvalid, indicators_view, month_range
from services.referral.service.clock import Clock, system_clock
from services.referral.store.indicators import agency_tally
from shared.auth import Principal
from shared.errors import invalid


class Indicators:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, clock: Clock = system_clock) -> None:
        self.sessions = sessions
        self.clock = clock

    async def of_agency(self, principal: Principal, first: str | None, last: str | None) -> dict[str, Any]:
        """The caller's agency's figures for each month from ``first`` to ``last``: always the agency the
        token names, whoever in it asks (its system or any of its people holding ``referrals:read``)."""
        now = self.clock()
        try:
            months = month_range(first, last, now)
        except IndicatorsQueryInvalid as refused:
            raise invalid(["query", refused.parameter], refused.message, detail=refused.message) from None
        async with self.sessions() as session:
            tally = await agency_tally(session, principal.agency_id, months[0].start, months[-1].end)
        return indicators_view(principal.agency_id, months, tally, now)
