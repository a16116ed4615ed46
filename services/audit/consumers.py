"""What audit runs beside its HTTP routes: the ingest consumer, the single sequencer, the checkpoint signer.

Audit consumes every RefNet topic and every event type on them, not a chosen few: an event type nobody
told audit about is still an event someone may have to answer for.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.audit import service
from services.audit.settings import AuditSettings
from services.audit.signing import CheckpointSigner
from shared.app import Runtime
from shared.consumer import EventConsumer, Handler
from shared.envelope import Event
from shared.loops import stopping
from shared.topics import ALL_TOPICS

log = structlog.get_logger("refnet.audit")

class _EveryType(dict[str, Handler]):
    """Dispatch table answering every event type with the one audit handler."""

    def __init__(self, handler: Handler) -> None:
        super().__init__()
        self.handler = handler

    def get(self, key: str, default: Any = None) -> Handler:
        return self.handler


async def _record(session: AsyncSession, event: Event) -> None:
    await service.record_event(session, event)


def ingest_consumer(runtime: Runtime, on_applied: Callable[[], Awaitable[None]] | None = None) -> EventConsumer:
    settings = runtime.settings
    assert isinstance(settings, AuditSettings)
    consumer = EventConsumer(
        service=settings.service_name,
        name=settings.consumer_group,
        topics=list(ALL_TOPICS),
        handlers={},
        sessions=runtime.sessions,
        bootstrap=settings.kafka_bootstrap,
        max_attempts=settings.consumer_max_attempts,
        retry_backoff_seconds=settings.consumer_retry_backoff_seconds,
        enable_idempotence=settings.kafka_enable_idempotence,
        on_batch_applied=on_applied,
    )
    consumer.handlers = _EveryType(_record)
    return consumer


class Sequencer:
    """Appends queued entries in batches; woken when the consumer commits a batch, polling as a fallback."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], batch_size: int, poll_seconds: float) -> None:
        self.sessions = sessions
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
                while (count := await service.sequence_pending(self.sessions, self.batch_size)) > 0:
                    self.appended += count
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if stopping():
                    raise
                log.warning("audit_sequencer_interrupted", error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.poll_seconds)


async def sign_checkpoints(runtime: Runtime, signer: CheckpointSigner, interval: float) -> None:
    """Every few seconds while entries arrive: a new signed checkpoint if the log grew."""
    while True:
        try:
            await service.sign_checkpoint(runtime.sessions, signer, runtime.extras["log_keys"],
                                          runtime.extras["checkpoint_memory"])
        except asyncio.CancelledError:
            raise
        except service.LogInconsistent:
            pass  # counted and logged where refused; the signer keeps refusing until someone looks
        except Exception as exc:
            if stopping():
                raise
            log.warning("audit_checkpoint_failed", error=type(exc).__name__)
        await asyncio.sleep(interval)


def wiring(runtime: Runtime) -> Sequence[EventConsumer | Callable[[], Coroutine[Any, Any, None]]]:
    """The consumers and background jobs audit runs beside its HTTP routes."""
    settings = runtime.settings
    assert isinstance(settings, AuditSettings)
    signer: CheckpointSigner = runtime.extras["signer"]
    sequencer = Sequencer(runtime.sessions, settings.sequencer_batch_size, settings.sequencer_poll_seconds)
    runtime.extras["sequencer"] = sequencer

    async def checkpoint_signer() -> None:
        await sign_checkpoints(runtime, signer, settings.checkpoint_interval_seconds)

    async def audit_sequencer() -> None:
        await sequencer.run()

    return [ingest_consumer(runtime, sequencer.nudge), audit_sequencer, checkpoint_signer]
