"""Who moved a referral, on whose authentication (issue 20, docs/domain.md rule 10): the history and the events
say ``attested_by`` -- ``token`` for a person's own access token, ``system`` for an ``X-Acting-User`` the agency's
system asserted -- and the audit entry made from the event keeps it in its details. Without a person named the
event has no ``attested_by`` at all (its payload as before) and the history says null."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.audit.domain import draft_from_event
from shared.envelope import Event
from tests.integration.referral.conftest import Service, body
from tests.support.issuer import new_person


async def _feed(svc: Service, agency: str, referral_id: str) -> list[dict[str, Any]]:
    feed = await svc.client.get("/events", headers=svc.headers(agency, "events:read"))
    assert feed.status_code == 200, feed.text
    return [e for e in feed.json()["items"] if e["subject"] == referral_id]


def _audited(item: dict[str, Any]) -> dict[str, Any]:
    """The audit entry's details for a feed item, as the audit service drafts it from the event."""
    event = Event(id=item["id"], source="/refnet/referral", type=item["type"], subject=item["subject"],
                  partition_key=item["subject"], time=datetime.fromisoformat(item["time"]), data=item["data"])
    draft = draft_from_event(event)
    return {"acting_user": draft.acting_user, "agency": draft.agency, **draft.details}


async def test_a_persons_moves_say_token_in_history_events_and_audit(svc: Service) -> None:
    sender, recipient = await svc.agency(), await svc.agency()
    case_id, _ = svc.intake.add_case(sender)
    asker, receiver = new_person(), new_person()
    created = await svc.client.post("/referrals", json=body(case_id, recipient),
                                    headers=svc.issuer.person_headers(asker, sender))
    assert created.status_code == 201, created.text
    rid = created.json()["id"]
    moved = await svc.client.post(f"/referrals/{rid}/transitions", json={"to": "received"},
                                  headers=svc.issuer.person_headers(receiver, recipient, acting_user=receiver))
    assert moved.status_code == 200, moved.text
    assert [(h["agency"], h["acting_user"], h["attested_by"]) for h in moved.json()["history"]] == [
        (sender, asker, "token"), (recipient, receiver, "token")]
    # The history reads the same later (it is stored, not derived from the caller of the read).
    again = await svc.client.get(f"/referrals/{rid}", headers=svc.headers(sender))
    assert [h["attested_by"] for h in again.json()["history"]] == ["token", "token"]
    items = await _feed(svc, sender, rid)
    assert [(e["data"]["acting_user"], e["data"]["attested_by"]) for e in items] == [
        (asker, "token"), (receiver, "token")]
    assert [_audited(e)["attested_by"] for e in items] == ["token", "token"]
    assert _audited(items[1])["acting_user"] == receiver


async def test_a_systems_asserted_user_says_system(svc: Service) -> None:
    sender, recipient = await svc.agency(), await svc.agency()
    case_id, _ = svc.intake.add_case(sender)
    created = await svc.refer(sender, body(case_id, recipient), **{"X-Acting-User": "caseworker.7"})
    assert created.status_code == 201, created.text
    rid = created.json()["id"]
    assert [(h["acting_user"], h["attested_by"]) for h in created.json()["history"]] == [("caseworker.7", "system")]
    (item,) = await _feed(svc, sender, rid)
    assert (item["data"]["acting_user"], item["data"]["attested_by"]) == ("caseworker.7", "system")
    assert (_audited(item)["acting_user"], _audited(item)["attested_by"]) == ("caseworker.7", "system")


async def test_without_a_person_the_event_is_as_before(svc: Service) -> None:
    sender, recipient = await svc.agency(), await svc.agency()
    case_id, _ = svc.intake.add_case(sender)
    created = await svc.refer(sender, body(case_id, recipient))
    rid = created.json()["id"]
    moved = await svc.move(sender, rid, "cancelled", "no-longer-needed")  # the agency's system, nobody named
    assert [(h["acting_user"], h["attested_by"]) for h in moved.json()["history"]] == [(None, None), (None, None)]
    items = await _feed(svc, sender, rid)
    assert len(items) == 2
    for item in items:
        assert "attested_by" not in item["data"] and item["data"]["acting_user"] is None
        assert "attested_by" not in _audited(item)
