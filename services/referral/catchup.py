"""Whether referral's read model of the registry is loaded yet.

The broker knows agencies and services from the registry's events (ARCHITECTURE.md: a local read model,
eventually consistent). Right after a replica starts, before its consumer has read what the registry had
published, a recipient it does not know may simply not have arrived yet: that is "try again shortly" (503 with
Retry-After), not "no such agency" (422). The read model counts as loaded once the consumer's applied
positions reach the ends the registry topic had when we first looked; from then on an unknown recipient is
unknown. A registry topic still empty when we look is looked at again for a while (`empty_grace_seconds`):
on a fresh stack the registry starts beside us and publishes its first agencies seconds later.
"""

from __future__ import annotations

import asyncio
import time

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.referral.events import REGISTRY_EVENTS
from shared.consumer import applied_through, caught_up
from shared.kafka import end_offsets
from shared.loops import stopping

log = structlog.get_logger("refnet.referral.catchup")


class RegistryCatchUp:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, bootstrap: str, consumer: str,
                 topic: str = REGISTRY_EVENTS, poll_seconds: float = 0.5, empty_grace_seconds: float = 15.0) -> None:
        self.sessions = sessions
        self.bootstrap = bootstrap
        self.consumer = consumer
        self.topic = topic
        self.poll_seconds = poll_seconds
        self.loaded = False
        self._ends: dict[int, int] = {}
        self._empty_until = time.monotonic() + empty_grace_seconds

    async def check(self) -> bool:
        """One look: the topic's ends (looked up until they are not all zero), then the consumer's positions."""
        if self.loaded:
            return True
        if not any(self._ends.values()):
            self._ends = await end_offsets(self.bootstrap, self.topic)
            if not any(self._ends.values()) and time.monotonic() < self._empty_until:
                return False
        if caught_up(self._ends, await applied_through(self.sessions, self.consumer, self.topic)):
            self.loaded = True
            log.info("registry_read_model_loaded", events=sum(self._ends.values()))
        return self.loaded

    async def run(self) -> None:
        """Look until loaded, through broker and database outages, then stop."""
        while not self.loaded:
            try:
                await self.check()
            except Exception as exc:  # the broker or the database is away: look again later
                if stopping():
                    raise
                log.warning("registry_catchup_check_failed", error=type(exc).__name__)
            if not self.loaded:
                await asyncio.sleep(self.poll_seconds)
