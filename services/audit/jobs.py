"""audit's background loops: the single sequencer and the checkpoint signer."""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from services.audit.service import Checkpoints, Ingest, LogInconsistent
from shared.loops import every, stopping

log = structlog.get_logger("refnet.audit")


class Sequencer:
    """Appends queued entries in batches; woken when the consumer commits a batch, polling as a fallback."""

    def __init__(self, ingest: Ingest, batch_size: int, poll_seconds: float) -> None:
        self.ingest = ingest
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.wake = asyncio.Event()
        self.appended = 0  # since the last checkpoint look

    async def nudge(self) -> None:
        self.wake.set()

    async def run(self) -> None:
        while True:
            self.wake.clear()
            try:
                while (count := await self.ingest.sequence(self.batch_size)) > 0:
                    self.appended += count
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if stopping():
                    raise
                log.warning("audit_sequencer_interrupted", error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.poll_seconds)


async def sign_checkpoints(checkpoints: Checkpoints, interval: float) -> None:
    """Every few seconds while entries arrive: a new signed checkpoint if the log grew."""
    async def sign() -> None:
        # A log found inconsistent is counted and logged where refused; the signer keeps refusing until someone looks.
        with contextlib.suppress(LogInconsistent):
            await checkpoints.sign()

    await every(interval, sign, name="audit_checkpoint")
