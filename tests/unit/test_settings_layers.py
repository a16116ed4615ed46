"""Every setting has a platform-wide form (REFNET_X) under each service's own (REFNET_<SERVICE>_X), and a value
given in code wins over both: one stack's environment can set what all services share once."""

from __future__ import annotations

import pytest

from services.intake.settings import IntakeSettings
from services.referral.settings import ReferralSettings


def test_the_service_value_wins_over_the_shared_one_and_code_over_both(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFNET_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("REFNET_INTAKE_LOG_LEVEL", "WARNING")
    monkeypatch.setenv("REFNET_KAFKA_PARTITIONS", "6")
    assert IntakeSettings().log_level == "WARNING"
    assert ReferralSettings().log_level == "DEBUG"
    assert IntakeSettings().kafka_partitions == ReferralSettings().kafka_partitions == 6
    assert IntakeSettings(log_level="ERROR").log_level == "ERROR"
