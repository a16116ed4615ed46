"""The events audit emits and consumes (CONTRACT.md, "Events")."""

from __future__ import annotations

