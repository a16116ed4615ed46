"""The events referral emits and consumes (CONTRACT.md, "Events")."""

from __future__ import annotations

from shared.topics import REFERRAL_EVENTS as TOPIC

__all__ = ["TOPIC"]
