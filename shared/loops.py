"""What every supervised background loop (relay, consumers, listeners, leaders) needs to stop when told."""

from __future__ import annotations

import asyncio


def stopping() -> bool:
    """Has the running task been asked to stop? A library may turn the cancellation of an await into an error of
    its own (a connection closed under it, a Kafka error): a loop that survives outages must not take that for
    one and go on, or shutting the service down waits for ever."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
