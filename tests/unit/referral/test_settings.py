"""Acknowledgement deadlines are settings: the referral form's by default, the SOPs' where they differ."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from services.referral.domain import ACKNOWLEDGE_WITHIN, Priority
from services.referral.settings import ReferralSettings


def test_the_referral_forms_deadlines_by_default() -> None:
    assert ReferralSettings().acknowledge_within() == dict(ACKNOWLEDGE_WITHIN)


def test_deadlines_from_the_environment_as_iso_8601_durations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFNET_REFERRAL_ACKNOWLEDGE_EMERGENCY_WITHIN", "PT5S")
    monkeypatch.setenv("REFNET_REFERRAL_ACKNOWLEDGE_NORMAL_WITHIN", "P7D")
    assert ReferralSettings().acknowledge_within() == {
        Priority.emergency: timedelta(seconds=5), Priority.urgent: timedelta(hours=72),
        Priority.normal: timedelta(days=7)}


@pytest.mark.parametrize("value", ["PT0S", "-PT1H"])
def test_a_deadline_must_be_positive(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("REFNET_REFERRAL_ACKNOWLEDGE_URGENT_WITHIN", value)
    with pytest.raises(ValidationError, match="acknowledge_urgent_within"):
        ReferralSettings()
