"""The pull feed (GET /events): an agency's referral events in order, long-polled, with a bound on how many
requests of one agency may wait at once."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.referral import store
from shared.auth import Principal
from shared.errors import Problem


class WaitingPolls:
    """Pull-feed requests waiting for events (``wait`` > 0), per agency, on this replica: a bounded number
    each, so one agency's clients cannot hold every connection and database session of the replica."""

    def __init__(self, per_agency: int) -> None:
        self.per_agency = per_agency
        self._held: dict[str, int] = {}

    def held(self, agency_id: str) -> int:
        return self._held.get(agency_id, 0)

    @contextlib.contextmanager
    def hold(self, agency_id: str) -> Iterator[None]:
        held = self._held.get(agency_id, 0)
        if held >= self.per_agency:
            raise Problem(429, "too-many-waiting-polls",
                          f"An agency may have at most {self.per_agency} waiting /events requests at once; "
                          "retry when one of them has returned.", headers={"Retry-After": "1"})
        self._held[agency_id] = held + 1
        try:
            yield
        finally:
            left = self._held[agency_id] - 1
            if left:
                self._held[agency_id] = left
            else:
                del self._held[agency_id]


class Feed:
    """The pull feed's use case; ``max_wait_seconds`` caps a request's ``wait``."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, max_wait_seconds: float,
                 max_waiting_per_agency: int) -> None:
        self.sessions = sessions
        self.max_wait_seconds = max_wait_seconds
        self.waiting = WaitingPolls(max_waiting_per_agency)

    async def pull(self, principal: Principal, *, after: int, wait: float,
                   limit: int) -> tuple[list[dict[str, Any]], str]:
        """As ``feed``, ``wait`` capped, and counted against the agency's waiting requests if it waits."""
        wait = min(wait, float(self.max_wait_seconds))
        if wait <= 0:
            return await self.feed(principal, after=after, wait=0, limit=limit)
        with self.waiting.hold(principal.agency_id):
            return await self.feed(principal, after=after, wait=wait, limit=limit)

    async def feed(self, principal: Principal, *, after: int, wait: float,
                   limit: int) -> tuple[list[dict[str, Any]], str]:
        """The caller's referral events after ``after``, waiting up to ``wait`` seconds for the first."""
        me = principal.agency_id
        deadline = time.monotonic() + wait
        while True:
            async with self.sessions() as session:
                rows = await store.feed_page(session, me, after=after, limit=limit)
            if rows or time.monotonic() >= deadline:
                break
            await asyncio.sleep(min(0.25, max(deadline - time.monotonic(), 0)))
        items = [{"cursor": str(r.seq), "id": r.event_id, "type": r.type,
                  "time": r.created_at.isoformat(), "subject": r.referral_id, "data": r.payload} for r in rows]
        return items, str(rows[-1].seq if rows else after)
