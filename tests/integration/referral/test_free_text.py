"""The referral's free text -- its reason and the notes of its transitions -- is personal data."""

from __future__ import annotations

import pytest

from tests.integration.referral.conftest import Service, body


@pytest.mark.parametrize("bad", ["a\x00b", "a\x1bb", "a\rb"])
async def test_control_characters_in_reason_or_note_are_refused_with_422(svc: Service, bad: str) -> None:
    sender, recipient = await svc.agency(), await svc.agency()
    case_id, _ = svc.intake.add_case(sender, consent_to=recipient)
    refused = await svc.refer(sender, body(case_id, recipient, reason=f"Needs shelter {bad}"))
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"][0]["loc"] == ["body", "reason"]
    assert "shelter" not in refused.text
    made = await svc.refer(sender, body(case_id, recipient, reason="Needs shelter\n\tand an interpreter"))
    assert made.status_code == 201, made.text
    moved = await svc.move(recipient, made.json()["id"], "received", note=f"Called back {bad}")
    assert moved.status_code == 422, moved.text
    assert moved.json()["errors"][0]["loc"] == ["body", "note"]
