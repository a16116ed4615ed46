"""Handlers of other services' events, keeping registry's read models."""

from __future__ import annotations

from collections.abc import Sequence

from shared.app import Runtime
from shared.consumer import EventConsumer


def wiring(runtime: Runtime) -> Sequence[EventConsumer]:
    """The consumers and background jobs registry runs beside its HTTP routes."""
    return []
