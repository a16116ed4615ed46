"""audit's answer models (issue #19) put on the wire exactly what the use cases build: above all an entry, whose
Merkle leaf an auditor recomputes from the answer (RFC 8785 of the entry exactly as shown)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.exceptions import ResponseValidationError

from services.audit.domain import EntryDraft, checkpoint_body
from services.audit.leaf import entry_json, leaf_bytes
from services.audit.schemas import CASE_ID, Checkpoint, Entry, EntryPage
from services.audit.service.checkpoints import checkpoint_json
from tests.support.answers import through

T0 = datetime(2026, 5, 1, 9, 30, 0, 123456, tzinfo=UTC)


def entry(**details: Any) -> dict[str, Any]:
    draft = EntryDraft(action="consent.grant", outcome="success", source_service="intake",
                       event_id="7c3e1a9b5d2f4e6a8b0c1d3e5f7a9b2c", occurred_at=T0, agency="agy_3f9c2b7e1d4a6058",
                       resource_type="Consent", resource_id="consent-0c9b8a7f6e5d4c3b2a1f0e9d8c7b6a59",
                       case_id=CASE_ID, details=details)
    return entry_json(index=7, recorded_at=T0, draft=draft)


@pytest.mark.parametrize("details", [
    {},
    {"consent_version": 2, "withdrawn": False, "previous": None, "data_categories": ["identity", "health"],
     "provisions": [{"purpose": "referral", "recipient_agency": "agy_7a0d5c3e9b2f4186", "decision": "permit",
                     "data_categories": ["identity"]}], "capacity": {"available": 3, "total": -2147483647}},
])
async def test_an_entry_is_answered_as_its_leaf_hashes_it(details: dict[str, Any]) -> None:
    shown = entry(**details)
    answered = await through(Entry, shown)
    assert answered == json.loads(json.dumps(shown))
    assert leaf_bytes(answered) == leaf_bytes(shown)
    page = await through(EntryPage, {"items": [shown], "next_cursor": "7"})
    assert leaf_bytes(page["items"][0]) == leaf_bytes(shown)


async def test_an_entry_with_a_field_the_model_lacks_fails_instead_of_losing_it() -> None:
    with pytest.raises(ResponseValidationError):
        await through(Entry, entry() | {"session": "x"})


async def test_a_checkpoint_is_answered_as_signed() -> None:
    body = checkpoint_body("refnet.local/audit", 3, bytes(32))
    row = SimpleNamespace(origin="refnet.local/audit", tree_size=3, root_hash=bytes(32), signed_at=T0, body=body,
                          key_id="31958450", signature=bytes(64))
    cosigned = [SimpleNamespace(line="\u2014 witness.example.org AAAA")]
    shown = checkpoint_json(row, cosigned)
    assert await through(Checkpoint, shown) == shown


def test_a_cases_accesses_come_in_the_order_they_happened_not_the_order_they_reached_the_log() -> None:
    """A read logged (index 119) before the creation that preceded it (index 120), as records of one moment
    reach the log by different topics: the auditor sees the creation first."""
    from services.audit.domain import in_the_order_they_happened

    created = {"index": 120, "occurred_at": "2026-12-03T18:25:26.674043Z", "action": "case.create"}
    refused = {"index": 119, "occurred_at": "2026-12-03T18:25:26.797328Z", "action": "case.read"}
    same_moment = {"index": 118, "occurred_at": "2026-12-03T19:25:26.797328+01:00", "action": "case.read"}
    whole_second = {"index": 121, "occurred_at": "2026-12-03T18:25:27Z", "action": "case.read"}
    assert [a["index"] for a in in_the_order_they_happened([whole_second, refused, created, same_moment])] == [
        120, 118, 119, 121]
