"""The deadline scheduler: flags referrals still ``requested`` past their ``due_at``, once each.

Every replica runs one; only the holder of a PostgreSQL advisory lock works (the others wait as hot
standbys), and even two workers at once would not flag a referral twice: ``flag_overdue`` claims rows under
lock and sets ``overdue_at`` in the same transaction as the ``referral.overdue.v1`` event. The clock is the
use cases' clock, injectable so tests need not wait days.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.referral.service import Referrals
from shared.observability import LEADER

log = structlog.get_logger("refnet.referral.deadlines")

LOCK_KEY = int.from_bytes(hashlib.sha256(b"refnet-referral:deadlines").digest()[:8], "big") >> 1


class DeadlineScheduler:
    def __init__(self, referrals: Referrals, engine: AsyncEngine, *, interval_seconds: float = 30.0,
                 lock_key: int = LOCK_KEY) -> None:
        self.referrals = referrals
        self.lock_key = lock_key
        self.engine = engine
        self.interval_seconds = interval_seconds
        self.is_leader = False

    async def tick(self) -> int:
        """One pass: flag what is overdue now."""
        return await self.referrals.flag_overdue()

    async def run(self) -> None:
        """Run until cancelled, surviving database outages."""
        while True:
            try:
                await self._lead()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.is_leader = False
                log.warning("deadline_scheduler_interrupted", error=type(exc).__name__)
                await asyncio.sleep(min(self.interval_seconds, 5.0))

    async def _lead(self) -> None:
        async with self.engine.connect() as conn:
            while not (await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.lock_key})).scalar():
                await conn.commit()  # do not sit idle in a transaction while waiting
                await asyncio.sleep(self.interval_seconds)
            await conn.commit()
            self.is_leader = True
            LEADER.labels("referral", "deadline-scheduler").set(1)
            try:
                while True:
                    await self.tick()
                    await conn.execute(text("SELECT 1"))  # the lock lives with this connection: keep it alive
                    await conn.commit()
                    await asyncio.sleep(self.interval_seconds)
            finally:
                self.is_leader = False
                LEADER.labels("referral", "deadline-scheduler").set(0)
                with contextlib.suppress(Exception):
                    await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.lock_key})
                    await conn.commit()
