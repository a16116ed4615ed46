"""Events whose payload lacks what referral needs can never be applied: they are dead-lettered (PoisonEvent),
and the error names fields, never values."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from services.referral.consumers import intake_handlers, registry_handlers
from shared.consumer import PoisonEvent
from shared.envelope import Event


def event(short_type: str, data: dict[str, Any]) -> Event:
    return Event(id="e1", source="/refnet/x", type="org.refnet." + short_type, subject=None, partition_key="k",
                 time=datetime.now(UTC), data=data)


@pytest.mark.parametrize(("short_type", "data"), [
    ("agency.suspended.v1", {"agency_id": "a"}),  # no status
    ("agency.registered.v1", {"agency_id": "a", "status": "asleep"}),
    ("service.published.v1", {"service_id": "s", "agency_id": "a", "taxonomy": "shelter"}),  # no capacity
    ("consent.withdrawn.v1", {"case_id": "c"}),
    ("case.erased.v1", {"agency": "a"}),
])
async def test_incomplete_payloads_are_poison(short_type: str, data: dict[str, Any]) -> None:
    handlers = {**registry_handlers(None), **intake_handlers(None)}  # type: ignore[arg-type]
    with pytest.raises(PoisonEvent) as poison:
        await handlers[short_type](None, event(short_type, {**data, "name": "Secret Name"}))  # type: ignore[arg-type]
    assert "Secret Name" not in str(poison.value)
