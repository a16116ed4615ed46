"""The events intake emits and consumes (CONTRACT.md, "Events")."""

from __future__ import annotations

from shared.topics import INTAKE_EVENTS as TOPIC

__all__ = ["TOPIC"]
