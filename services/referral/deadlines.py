"""The deadline scheduler: flags referrals still ``requested`` past their ``due_at``, once each.

Every replica runs one; only the holder of a PostgreSQL advisory lock works (the others wait as hot
standbys), and even two workers at once would not flag a referral twice: ``flag_overdue`` claims rows under
lock and sets ``overdue_at`` in the same transaction as the ``referral.overdue.v1`` event. The clock is the
use cases' clock, injectable so tests need not wait days.
"""

from __future__ import annotations

import asyncio

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.referral.domain import Pathway, Priority
from services.referral.service import Referrals
from shared import leader
from shared.leader import Leadership, keep_alive
from shared.observability import REFERRALS_OVERDUE

log = structlog.get_logger("refnet.referral.deadlines")

LOCK_KEY = leader.lock_key("refnet-referral:deadlines")


class DeadlineScheduler:
    def __init__(self, referrals: Referrals, engine: AsyncEngine, *, interval_seconds: float = 30.0,
                 lock_key: int = LOCK_KEY) -> None:
        self.referrals = referrals
        self.interval_seconds = interval_seconds
        self.leadership = Leadership(engine=engine, service="referral", task="deadline-scheduler", key=lock_key,
                                     retry_seconds=interval_seconds)

    @property
    def is_leader(self) -> bool:
        return self.leadership.is_leader

    async def tick(self) -> int:
        """One pass: flag what is overdue now, and export how many are overdue and still unanswered."""
        flagged = await self.referrals.flag_overdue()
        counts = await self.referrals.overdue_counts()
        # Every pathway and priority, 0 when none: a series that exists only while something is overdue
        # could not tell "none overdue" from "no scheduler" (which the absent() alert catches).
        for pathway in Pathway:
            for priority in Priority:
                REFERRALS_OVERDUE.labels(str(pathway), str(priority)).set(counts.get((str(pathway), str(priority)), 0))
        return flagged

    async def run(self) -> None:
        """Run until cancelled; only while this replica leads, surviving database outages."""
        await self.leadership.run(self._work)

    async def _work(self, conn: AsyncConnection) -> None:
        while True:
            await self.tick()
            await keep_alive(conn)
            await asyncio.sleep(self.interval_seconds)
