"""The lifecycle over HTTP: every legal move by its party, every illegal move and wrong party (409), outsiders
(404), reason codes, history, work queues and the pull feed's events (ids and enums only)."""

from __future__ import annotations

from typing import Any

import pytest

from services.referral.domain import OPEN_STATES, TRANSITIONS, Party, Status, allowed_moves
from tests.integration.referral.conftest import Service, body

PATHS: dict[Status, list[tuple[str, str | None]]] = {
    Status.requested: [],
    Status.received: [("received", None)],
    Status.accepted: [("received", None), ("accepted", None)],
    Status.rejected: [("received", None), ("rejected", "no-capacity")],
    Status.in_progress: [("received", None), ("accepted", None), ("in_progress", None)],
    Status.on_hold: [("received", None), ("accepted", None), ("in_progress", None), ("on_hold", None)],
    Status.completed: [("received", None), ("accepted", None), ("in_progress", None), ("completed", None)],
    Status.failed: [("received", None), ("accepted", None), ("in_progress", None), ("failed", "lost-contact")],
}


async def referral_in(svc: Service, state: Status) -> tuple[str, str, str]:
    """-> (referral id, sender, recipient), the referral driven to ``state``."""
    sender, recipient = await svc.agency(), await svc.agency()
    case_id, _ = svc.intake.add_case(sender)
    created = await svc.refer(sender, body(case_id, recipient))
    assert created.status_code == 201, created.text
    rid = created.json()["id"]
    if state is Status.cancelled:
        assert (await svc.move(sender, rid, "cancelled", "no-longer-needed")).status_code == 200
    for to, code in PATHS.get(state, []):
        moved = await svc.move(recipient, rid, to, code)
        assert moved.status_code == 200, moved.text
    return rid, sender, recipient


def reason_for(to: Status) -> str | None:
    return {Status.rejected: "not-eligible", Status.failed: "person-declined",
            Status.cancelled: "wrong-recipient"}.get(to)


LEGAL = [(frm, to, party) for (frm, to), party in TRANSITIONS.items()]
LEGAL += [(s, Status.cancelled, Party.sender) for s in sorted(OPEN_STATES)]


@pytest.mark.parametrize(("frm", "to", "party"), LEGAL, ids=lambda v: str(v))
async def test_every_legal_move_by_its_party(svc: Service, frm: Status, to: Status, party: Party) -> None:
    rid, sender, recipient = await referral_in(svc, frm)
    actor = sender if party is Party.sender else recipient
    moved = await svc.move(actor, rid, to, reason_for(to), note="Spoke with the case worker")
    assert moved.status_code == 200, moved.text
    data = moved.json()
    assert data["status"] == to
    last = data["history"][-1]
    assert (last["from"], last["to"], last["by"], last["agency"], last["reason_code"]) == (
        frm, to, party, actor, reason_for(to))
    assert last["note"] == "Spoke with the case worker"
    # the full history is kept and shown to both parties
    for agency in (sender, recipient):
        shown = await svc.client.get(f"/referrals/{rid}", headers=svc.headers(agency))
        assert shown.status_code == 200
        assert [h["to"] for h in shown.json()["history"]] == ["requested", *[to for to, _ in PATHS.get(frm, [])],
                                                               *(["cancelled"] if frm is Status.cancelled else []),
                                                               to]


@pytest.mark.parametrize("state", list(Status), ids=str)
async def test_every_illegal_move_and_wrong_party_is_409_naming_state_and_allowed(svc: Service,
                                                                                   state: Status) -> None:
    rid, sender, recipient = await referral_in(svc, state)
    for party, agency in ((Party.sender, sender), (Party.recipient, recipient)):
        allowed = allowed_moves(state, party)
        for to in [*Status, "overdue", "nonsense"]:
            if to in allowed:
                continue
            refused = await svc.move(agency, rid, str(to), reason_for(Status(to)) if to in set(Status) else None)
            assert refused.status_code == 409, (state, party, to, refused.text)
            problem = refused.json()
            assert problem["type"].endswith("invalid-transition")
            assert problem["current_state"] == state
            assert problem["allowed"] == [str(s) for s in allowed]
    shown = await svc.client.get(f"/referrals/{rid}", headers=svc.headers(sender))
    assert shown.json()["status"] == state  # nothing moved


async def test_outsiders_get_404_for_reads_and_moves(svc: Service) -> None:
    rid, _, _ = await referral_in(svc, Status.requested)
    outsider = await svc.agency()
    assert (await svc.client.get(f"/referrals/{rid}", headers=svc.headers(outsider))).status_code == 404
    moved = await svc.move(outsider, rid, "received")
    assert moved.status_code == 404 and moved.json()["type"].endswith("not-found")
    assert (await svc.move(outsider, "no-such-referral", "received")).status_code == 404
    assert (await svc.client.get("/referrals/no-such", headers=svc.headers(outsider))).status_code == 404


@pytest.mark.parametrize(("state", "to", "party"), [
    (Status.received, "rejected", Party.recipient), (Status.in_progress, "failed", Party.recipient),
    (Status.accepted, "cancelled", Party.sender),
])
async def test_reason_codes_required_and_checked(svc: Service, state: Status, to: str, party: Party) -> None:
    rid, sender, recipient = await referral_in(svc, state)
    actor = sender if party is Party.sender else recipient
    for code in (None, "because"):
        refused = await svc.move(actor, rid, to, code)
        assert refused.status_code == 422, refused.text
        assert refused.json()["errors"][0]["loc"] == ["body", "reason_code"]
        assert refused.json()["allowed_reason_codes"]
    if party is Party.sender:  # the system's own codes are not the sender's
        assert (await svc.move(actor, rid, to, "consent-withdrawn")).status_code == 422


async def test_transition_body_is_validated(svc: Service) -> None:
    rid, _, recipient = await referral_in(svc, Status.requested)
    for bad in ({}, {"to": ""}, {"to": "received", "extra": True}, {"to": "received", "note": "x" * 5000}):
        response = await svc.client.post(f"/referrals/{rid}/transitions", json=bad, headers=svc.headers(recipient))
        assert response.status_code == 422, bad


async def queue(svc: Service, agency: str, **params: Any) -> list[str]:
    response = await svc.client.get("/referrals", params=params, headers=svc.headers(agency))
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


async def test_work_queues_by_role_status_and_pathway_with_pagination(svc: Service) -> None:
    sender, recipient = await svc.agency(), await svc.agency()
    ids = []
    for pathway, taxonomy in [("service", "shelter"), ("protection", "protection.rsd"), ("service", "mhpss")]:
        case_id, _ = svc.intake.add_case(sender)
        created = await svc.refer(sender, body(case_id, recipient, pathway=pathway, service_type=taxonomy))
        ids.append(created.json()["id"])
    await svc.move(recipient, ids[0], "received")
    assert await queue(svc, sender, role="sent") == ids
    assert await queue(svc, sender, role="received") == []
    assert await queue(svc, recipient, role="received") == ids
    assert await queue(svc, recipient, role="received", status="requested") == ids[1:]
    assert await queue(svc, recipient, role="received", pathway="protection") == [ids[1]]
    assert await queue(svc, await svc.agency()) == []
    first = await svc.client.get("/referrals", params={"role": "sent", "limit": 2}, headers=svc.headers(sender))
    page = first.json()
    assert [i["id"] for i in page["items"]] == ids[:2] and page["next_cursor"]
    rest = await svc.client.get("/referrals", params={"role": "sent", "limit": 2, "cursor": page["next_cursor"]},
                                headers=svc.headers(sender))
    assert [i["id"] for i in rest.json()["items"]] == ids[2:] and rest.json()["next_cursor"] is None
    for bad in ({"role": "owner"}, {"status": "lost"}, {"limit": 0}, {"limit": 501}, {"cursor": "abc"},
                {"overdue": "maybe"}):
        assert (await svc.client.get("/referrals", params=bad, headers=svc.headers(sender))).status_code == 422


async def test_pull_feed_carries_the_partys_events_without_free_text(svc: Service) -> None:
    rid, sender, recipient = await referral_in(svc, Status.accepted)
    outsider = await svc.agency()
    feed = await svc.client.get("/events", headers=svc.headers(recipient, "events:read"))
    assert feed.status_code == 200
    mine = [e for e in feed.json()["items"] if e["subject"] == rid]
    assert [e["type"] for e in mine] == ["org.refnet.referral.requested.v1", "org.refnet.referral.received.v1",
                                         "org.refnet.referral.accepted.v1"]
    data = mine[0]["data"]
    assert set(data) == {"referral_id", "case_id", "from_agency", "to_agency", "status", "pathway", "service_type",
                         "priority", "shared_categories", "consent_id", "reason_code", "due_at", "agency",
                         "acting_user"}
    assert "Needs a safe place" not in str(feed.json())
    assert (data["from_agency"], data["to_agency"], data["agency"]) == (sender, recipient, sender)
    # the cursor moves on; an outsider sees none of it
    cursor = feed.json()["next_cursor"]
    later = await svc.client.get("/events", params={"after": cursor}, headers=svc.headers(recipient, "events:read"))
    assert later.json()["items"] == [] and later.json()["next_cursor"] == cursor
    others = await svc.client.get("/events", headers=svc.headers(outsider, "events:read"))
    assert all(e["subject"] != rid for e in others.json()["items"])
    assert (await svc.client.get("/events", headers=svc.headers(recipient, "referrals:read"))).status_code == 403


async def test_pull_feed_long_poll_returns_when_an_event_arrives(svc: Service) -> None:
    import asyncio

    rid, sender, recipient = await referral_in(svc, Status.requested)
    feed = await svc.client.get("/events", headers=svc.headers(sender, "events:read"))
    cursor = feed.json()["next_cursor"]
    waiting = asyncio.create_task(svc.client.get("/events", params={"after": cursor, "wait": 4},
                                                 headers=svc.headers(sender, "events:read")))
    await asyncio.sleep(0.5)
    assert not waiting.done()
    await svc.move(recipient, rid, "received")
    answer = await asyncio.wait_for(waiting, 5)
    assert [e["type"] for e in answer.json()["items"]] == ["org.refnet.referral.received.v1"]


async def test_the_acting_user_is_recorded_in_history_and_events(svc: Service) -> None:
    sender, recipient = await svc.agency(), await svc.agency()
    case_id, _ = svc.intake.add_case(sender)
    created = await svc.client.post("/referrals", json=body(case_id, recipient),
                                    headers=svc.headers(sender, acting_user="caseworker.7"))
    rid = created.json()["id"]
    moved = await svc.client.post(f"/referrals/{rid}/transitions", json={"to": "received"},
                                  headers=svc.headers(recipient, acting_user="intake-desk"))
    assert [(h["agency"], h["acting_user"]) for h in moved.json()["history"]] == [
        (sender, "caseworker.7"), (recipient, "intake-desk")]
    feed = await svc.client.get("/events", headers=svc.headers(sender, "events:read"))
    mine = [e["data"] for e in feed.json()["items"] if e["subject"] == rid]
    assert [(d["agency"], d["acting_user"]) for d in mine] == [(sender, "caseworker.7"), (recipient, "intake-desk")]
    bad = await svc.client.post(f"/referrals/{rid}/transitions", json={"to": "accepted"},
                                headers=svc.headers(recipient, acting_user="has spaces"))
    assert bad.status_code == 400
