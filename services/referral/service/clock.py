"""The use cases' clock (injectable: tests turn it, so deadlines need not take days) and a field's 422."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from shared.errors import Problem, invalid

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


def field_problem(field: str, detail: str, slug: str = "validation-error", status: int = 422,
                  **extensions: Any) -> Problem:
    if (status, slug) == (422, "validation-error") and not extensions:
        return invalid(["body", field], detail, detail=detail)
    return Problem(status, slug, detail, title="Unprocessable Content",
                   errors=[{"loc": ["body", field], "msg": detail}], **extensions)
