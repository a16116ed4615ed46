"""One replica at a time: work that must not run twice at once leads by a PostgreSQL advisory lock.

Every replica runs the task; only the holder of the task's session-level advisory lock does the work, the
others wait as hot standbys. The lock lives with one dedicated connection, so if the leader dies or loses
its database connection the lock is released and a standby takes over. An outage ends the leadership and
the task tries again with backoff; it never gives up while the service runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Callable

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.loops import stopping
from shared.observability import LEADER

log = structlog.get_logger("refnet.leader")


def lock_key(name: str) -> int:
    """A stable 63-bit advisory lock id for a task name: the same in every process and after restarts."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") >> 1


async def keep_alive(conn: AsyncConnection) -> None:
    """Touch the lock's connection between rounds, so a broken one ends the leadership promptly."""
    await conn.execute(text("SELECT 1"))
    await conn.commit()


class Leadership:
    def __init__(self, *, engine: AsyncEngine, service: str, task: str, key: int, retry_seconds: float) -> None:
        self.engine = engine
        self.service = service
        self.task = task
        self.key = key
        self.retry_seconds = retry_seconds
        self.is_leader = False

    async def run(self, body: Callable[[AsyncConnection], Awaitable[None]]) -> None:
        """Run ``body(conn)`` whenever this replica leads, until cancelled. ``body`` should loop forever."""
        while True:
            try:
                await self._lead(body)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if stopping():
                    raise
                log.warning("leader_task_interrupted", service=self.service, task=self.task,
                            error=type(exc).__name__)
                await asyncio.sleep(min(self.retry_seconds, 5.0))

    async def _lead(self, body: Callable[[AsyncConnection], Awaitable[None]]) -> None:
        async with self.engine.connect() as conn:
            while not (await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key})).scalar():
                await conn.commit()  # do not sit idle in a transaction while waiting
                await asyncio.sleep(self.retry_seconds)
            await conn.commit()
            self.is_leader = True
            LEADER.labels(self.service, self.task).set(1)
            try:
                await body(conn)
            finally:
                self.is_leader = False
                LEADER.labels(self.service, self.task).set(0)
                with contextlib.suppress(Exception):
                    await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
                    await conn.commit()
