"""A background loop that rides out outages still stops when the service stops."""

from __future__ import annotations

import asyncio

from shared.db import make_engine
from shared.outbox import OutboxRelay


async def test_a_relay_stops_when_cancelled_even_if_the_cancellation_surfaces_as_an_outage() -> None:
    # A driver may turn the cancellation of an await into its own error (a connection closed under it): the
    # relay must not take that for an outage, sleep and go on -- shutting down would then wait for ever.
    engine = make_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none", pool_size=1)
    relay = OutboxRelay(service="t", engine=engine, database_url="postgresql+asyncpg://nobody@127.0.0.1:1/none",
                        bootstrap="127.0.0.1:1")
    started = asyncio.Event()

    async def lead() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise ConnectionError("connection closed in the middle of an operation") from None

    relay._lead = lead  # type: ignore[method-assign]
    task = asyncio.create_task(relay.run())
    await started.wait()
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=3)
    assert done, "the relay went on after it was cancelled"
    await engine.dispose()
