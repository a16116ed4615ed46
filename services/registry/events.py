"""The events registry emits and consumes (CONTRACT.md, "Events")."""

from __future__ import annotations

from shared.topics import REGISTRY_EVENTS as TOPIC

__all__ = ["TOPIC"]
