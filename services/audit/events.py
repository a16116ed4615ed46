"""The events audit emits and consumes (docs/contract.md, "Events")."""

from __future__ import annotations

