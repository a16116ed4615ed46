"""referral's answer models (issue #19) take what the use cases build and put exactly that on the wire.

Each view goes through a FastAPI route declaring the model, as the real routes do: a field the model lacks is a
failure (``extra="forbid"``), not a field silently dropped, and what is absent today stays absent.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.exceptions import ResponseValidationError

from services.referral.app import create_app
from services.referral.domain import MonthCounts, cells_of, parse_period, statistics_view, suppress
from services.referral.schemas import (
    CASE_ID,
    RECIPIENT,
    REFERRAL_ID,
    SENDER,
    Referral,
    ReferralWithHistory,
    Statistics,
    Subscription,
    SubscriptionSecret,
)
from services.referral.service.subscriptions import subscription_view
from services.referral.service.views import FreeTextView, referral_view
from services.referral.store import ReferralRow, SubscriptionRow, TransitionRow
from tests.support.answers import through

NOW = datetime(2026, 5, 1, 9, 30, 0, 123456, tzinfo=UTC)


def as_json(view: dict[str, Any]) -> Any:
    return json.loads(json.dumps(view))


def referral_row(**changes: Any) -> ReferralRow:
    values: dict[str, Any] = dict(
        id=REFERRAL_ID, case_id=CASE_ID, from_agency=SENDER, to_agency=RECIPIENT, service_id=None,
        pathway="protection", service_type="protection.rsd", priority="urgent", shared_categories=["identity"],
        consent_id=None, consent_version=None, status="received", due_at=NOW + timedelta(days=4), overdue_at=None,
        created_at=NOW, updated_at=NOW)
    return ReferralRow(**(values | changes))


def history() -> list[TransitionRow]:
    return [TransitionRow(id=1, referral_id=REFERRAL_ID, from_status=None, to_status="requested", party="sender",
                          agency=SENDER, acting_user="user-0042", reason_code=None, at=NOW),
            TransitionRow(id=2, referral_id=REFERRAL_ID, from_status="requested", to_status="received",
                          party="recipient", agency=RECIPIENT, acting_user=None, reason_code=None, at=NOW)]


TEXTS = FreeTextView(reason="Example reason", state="shown", notes={1: None, 2: "Example note"})


@pytest.mark.parametrize("row", [
    referral_row(),
    referral_row(service_id="svc_2c4e6a8b0d1f3e5a", consent_id="consent-0c9b8a7f6e5d4c3b2a1f0e9d8c7b6a59",
                 consent_version=3, overdue_at=NOW, status="on_hold"),
])
async def test_a_referral_is_answered_as_the_use_case_wrote_it(row: ReferralRow) -> None:
    listed = referral_view(row, None, texts=TEXTS, now=NOW)
    assert await through(Referral, listed) == as_json(listed)
    whole = referral_view(row, history(), texts=TEXTS, now=NOW)
    answered = await through(ReferralWithHistory, whole)
    assert answered == as_json(whole)
    assert answered["history"][0]["from"] is None and answered["history"][1]["note"] == "Example note"


async def test_a_listed_referral_with_a_field_the_model_lacks_fails_instead_of_losing_it() -> None:
    whole = referral_view(referral_row(), history(), texts=TEXTS, now=NOW)
    with pytest.raises(ResponseValidationError):
        await through(Referral, whole)  # a list's model has no history: adding one to lists must change the model
    with pytest.raises(ResponseValidationError):
        await through(ReferralWithHistory, whole | {"person_name": "Example Person"})


def subscription_row(**changes: Any) -> SubscriptionRow:
    values: dict[str, Any] = dict(
        id="9b1d3f5a7c9e0b2d4f6a8c0e1b3d5f7a", agency_id=RECIPIENT, url="https://case-system.example.org/hooks",
        event_types=None, status="active", cursor=0, failures=0, next_attempt_at=NOW, created_at=NOW,
        disabled_at=None, previous_secret_until=None)
    return SubscriptionRow(**(values | changes))


async def test_a_subscription_keeps_absent_what_is_absent_and_never_shows_a_secret_on_a_read() -> None:
    plain = subscription_view(subscription_row())
    answered = await through(Subscription, plain)
    assert answered == as_json(plain) and "previous_secret_valid_until" not in answered and "secret" not in answered

    rotated = subscription_row(previous_secret_until=datetime.now(UTC) + timedelta(hours=1))
    assert await through(Subscription, subscription_view(rotated)) == as_json(subscription_view(rotated))
    with_secret = subscription_view(rotated, secret="whsec_RXhhbXBsZQ==")
    assert await through(SubscriptionSecret, with_secret) == as_json(with_secret)
    with pytest.raises(ResponseValidationError):
        await through(Subscription, with_secret)  # a read's model refuses a secret instead of passing it on


async def test_statistics_are_answered_as_computed_suppressed_figures_included() -> None:
    counts = MonthCounts(created={}, decided={("service", True): 30, ("service", False): 12,
                                              ("protection", True): 14, ("protection", False): 3},
                         acknowledged={("service", True): 20, ("service", False): 2}, overdue={})
    cells, sums = cells_of(counts, ("agy_a", "agy_b"))
    view = statistics_view(parse_period("2025-10"), cells, suppress(cells, sums),
                           {("service", "accept"): 30.4, ("service", "acknowledge"): 2.6})
    answered = await through(Statistics, view)
    assert answered == as_json(view)
    assert answered["by_pathway"]["service"]["accepted"] == 30
    assert answered["by_pathway"]["protection"]["accepted"] == "suppressed"


def test_the_document_declares_the_headers_a_creation_sends() -> None:
    document = create_app().openapi()
    created = document["paths"]["/referrals"]["post"]["responses"]["201"]
    assert created["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ReferralWithHistory"}
    assert created["headers"]["Location"]["required"] is True
    assert created["headers"]["Idempotent-Replayed"]["required"] is False
    subscribed = document["paths"]["/subscriptions"]["post"]["responses"]["201"]
    assert subscribed["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/SubscriptionSecret"}
    assert subscribed["headers"]["Location"]["required"] is True
