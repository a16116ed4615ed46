"""intake's consumers are built from its settings like every other service's."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker

from services.intake import consumers
from services.intake.settings import IntakeSettings


@pytest.mark.parametrize("idempotent", [True, False])
def test_the_dead_letter_producer_follows_enable_idempotence(idempotent: bool) -> None:
    """On Apache Kafka (idempotence on) a retried dead-letter write must not land twice: intake's consumers
    once built their dead-letter producer without the setting, always non-idempotent."""
    settings = IntakeSettings(kafka_enable_idempotence=idempotent, consumer_group="intake-x")
    built = consumers.build(settings, async_sessionmaker())
    assert [c.name for c in built] == ["intake-x-referrals", "intake-x-agencies"]
    assert all(c.enable_idempotence is idempotent for c in built)
