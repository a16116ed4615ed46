"""audit's one consumer: every event on every RefNet topic becomes a queued entry.

Audit consumes every RefNet topic and every event type on them, not a chosen few: an event type nobody
told audit about is still an event someone may have to answer for.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from services.audit.service import Ingest
from services.audit.settings import AuditSettings
from shared.app import Runtime
from shared.consumer import EventConsumer, Handler
from shared.topics import ALL_TOPICS


class _EveryType(dict[str, Handler]):
    """Dispatch table answering every event type with the one audit handler."""

    def __init__(self, handler: Handler) -> None:
        super().__init__()
        self.handler = handler

    def get(self, key: str, default: Any = None) -> Handler:
        return self.handler


def ingest_consumer(runtime: Runtime, ingest: Ingest, on_applied: Callable[[], Awaitable[None]] | None = None
                    ) -> EventConsumer:
    settings = runtime.settings
    assert isinstance(settings, AuditSettings)
    consumer = EventConsumer.from_settings(settings, runtime.sessions, name=settings.consumer_group,
                                           topics=list(ALL_TOPICS), handlers={}, on_batch_applied=on_applied)
    consumer.handlers = _EveryType(ingest.record)
    return consumer
