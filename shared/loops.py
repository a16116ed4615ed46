"""Supervised background loops: how every loop of every service (relay, consumers, listeners, leaders, jobs)
goes on through outages, backs off, and stops when told."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

log = structlog.get_logger("refnet.loops")


def stopping() -> bool:
    """Has the running task been asked to stop? A library may turn the cancellation of an await into an error of
    its own (a connection closed under it, a Kafka error): a loop that survives outages must not take that for
    one and go on, or shutting the service down waits for ever."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: the ``failures``-th wait is ``base * 2**(failures-1)``, capped, half of
    it fixed and half random, so many failing loops (or replicas) do not retry in step."""

    base_seconds: float = 1.0
    max_seconds: float = 30.0

    def delay(self, failures: int) -> float:
        capped = min(self.max_seconds, self.base_seconds * 2 ** max(failures - 1, 0))
        return capped / 2 + random.uniform(0, capped / 2)


async def _attempt(step: Callable[[], Awaitable[object]], name: str) -> bool:
    """Run ``step`` once; False (logged, the type only: no personal data) when it failed for any reason but a
    stop."""
    try:
        await step()
        return True
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        if stopping():
            raise
        log.warning("loop_step_failed", loop=name, error=type(exc).__name__)
        return False


async def every(interval_seconds: float, step: Callable[[], Awaitable[object]], *, name: str,
                backoff: Backoff | None = None) -> None:
    """Run ``step`` now and then every ``interval_seconds`` for as long as the service runs; a failure (the
    database restarting, say) is logged and the loop goes on, after a growing wait if ``backoff`` is given."""
    failures = 0
    while True:
        failures = 0 if await _attempt(step, name) else failures + 1
        await asyncio.sleep(backoff.delay(failures) if failures and backoff else interval_seconds)


async def until_done(step: Callable[[], Awaitable[object]], *, name: str,
                     backoff: Backoff = Backoff(1.0, 30.0)) -> None:
    """Run ``step`` until it completes once, waiting longer after each failure."""
    failures = 0
    while not await _attempt(step, name):
        failures += 1
        await asyncio.sleep(backoff.delay(failures))
