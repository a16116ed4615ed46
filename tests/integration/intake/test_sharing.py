"""Need to know: isolation, recipients' reads decided by consent at the moment of the read, overrides,
and the referral clearance."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from shared.topics import AUDIT_ACCESS, INTAKE_EVENTS
from tests.integration.intake.conftest import (
    Intake,
    access_records,
    agency,
    case_body,
    consent_body,
    topic_events,
    unique_person,
)


async def test_a_third_agency_gets_404_on_every_case_endpoint(intake: Intake) -> None:
    owner, stranger = agency(), agency()
    created = await intake.register(owner, case_body(consent=consent_body()))
    case_id = created["id"]
    history = await intake.client.get(f"/cases/{case_id}/consents", headers=intake.writer(owner))
    consent_id = history.json()["items"][0]["id"]
    h = intake.writer(stranger, acting_user="u1")
    calls = [
        intake.client.get(f"/cases/{case_id}", headers=h),
        intake.client.patch(f"/cases/{case_id}", headers=h, json={"fear_of_return": False}),
        intake.client.post(f"/cases/{case_id}/erase", headers=h),
        intake.client.post(f"/cases/{case_id}/consents", headers=h, json=consent_body()),
        intake.client.get(f"/cases/{case_id}/consents", headers=h),
        intake.client.post(f"/cases/{case_id}/consents/{consent_id}/withdraw", headers=h, json={}),
        intake.client.post(f"/cases/{case_id}/overrides", headers=h,
                           json={"recipient_agency": stranger,
                                 "justification": "imminent threat to life reported by shelter"}),
    ]
    for response in await asyncio.gather(*calls):
        assert response.status_code == 404, (response.request.method, response.request.url, response.text)
        assert response.json()["type"].endswith("not-found")
        assert case_id not in response.json()["detail"]
    listed = await intake.client.get("/cases", headers=h)
    assert listed.status_code == 200 and case_id not in listed.text
    # Nothing changed for the owner.
    still = await intake.read(case_id, owner)
    assert still.status_code == 200 and still.json()["status"] == "active"
    # An unknown case looks exactly the same.
    unknown = await intake.read("case-0000", stranger)
    assert unknown.status_code == 404
    # The refused read is on the record, naming who tried and why it was refused.
    records = await topic_events(
        intake.bootstrap, AUDIT_ACCESS,
        lambda e: e.data.get("case_id") == case_id and e.data.get("agency") == stranger)
    assert records[0].data["action"] == "case.read" and records[0].data["outcome"] == "denied"
    assert records[0].data["details"]["reason"] == "not-a-party" and records[0].data["details"]["role"] == "none"
    assert records[0].data["acting_user"] == "u1" and records[0].data["purpose"] == "case_management"


async def test_a_recipient_sees_only_the_shared_fields(intake: Intake) -> None:
    owner, recipient = agency(), agency()
    created = await intake.register(owner, case_body(consent=consent_body(recipient)))
    await intake.refer(created["id"], owner, recipient, ["identity", "protection_needs"])
    read = await intake.read(created["id"], recipient, purpose="referral")
    assert read.status_code == 200, read.text
    body = read.json()
    assert set(body) == {"id", "status", "owner_agency", "created_at", "person", "screening"}
    assert set(body["person"]) == {"given_name", "family_name", "other_names", "birth_date", "estimated_age"}
    assert set(body["screening"]) == {"needs", "fear_of_return", "risk_level", "migration_status",
                                      "bia_completed_at", "bid_completed_at"}
    # Categories the referral does not share, even where consent would permit them, stay absent.
    assert "citizenship" not in body["person"] and "is_minor" not in body


async def test_consent_not_covering_a_category_refuses_the_read(intake: Intake) -> None:
    owner, recipient = agency(), agency()
    created = await intake.register(owner, case_body(consent=consent_body(recipient, ["demographics"])))
    await intake.refer(created["id"], owner, recipient, ["demographics", "contact"])
    assert (await intake.read(created["id"], recipient, "referral")).status_code == 404


async def test_only_referrals_from_the_owner_count(intake: Intake) -> None:
    owner, recipient = agency(), agency()
    created = await intake.register(owner, case_body(consent=consent_body(recipient)))
    await intake.refer(created["id"], agency(), recipient, ["identity"])
    assert (await intake.read(created["id"], recipient, "referral")).status_code == 404


async def test_consent_for_another_agency_does_not_help(intake: Intake) -> None:
    owner, recipient = agency(), agency()
    created = await intake.register(owner, case_body(consent=consent_body(agency())))
    await intake.refer(created["id"], owner, recipient, ["identity"])
    assert (await intake.read(created["id"], recipient, "referral")).status_code == 404


async def test_a_deny_provision_wins(intake: Intake) -> None:
    owner, recipient = agency(), agency()
    consent = consent_body(None, ["identity", "contact"])
    consent["provisions"].append({"purpose": "referral", "recipient_agency": recipient,
                                  "data_categories": ["contact"], "decision": "deny"})
    created = await intake.register(owner, case_body(consent=consent))
    await intake.refer(created["id"], owner, recipient, ["contact"])
    assert (await intake.read(created["id"], recipient, "referral")).status_code == 404
    await intake.refer(created["id"], owner, other := agency(), ["contact"])
    assert (await intake.read(created["id"], other, "referral")).status_code == 200


async def test_withdrawal_stops_the_very_next_read_and_is_recorded(intake: Intake) -> None:
    owner, recipient = agency(), agency()
    created = await intake.register(owner, case_body(consent=consent_body(recipient)))
    case_id = created["id"]
    await intake.refer(case_id, owner, recipient, ["identity"])
    assert (await intake.read(case_id, recipient, "referral")).status_code == 200

    consent_id = (await intake.client.get(f"/cases/{case_id}/consents",
                                          headers=intake.writer(owner))).json()["items"][0]["id"]
    withdrawn = await intake.client.post(f"/cases/{case_id}/consents/{consent_id}/withdraw",
                                         headers=intake.headers(owner), json={"reason": "asked to stop"})
    assert withdrawn.status_code == 201, withdrawn.text
    assert withdrawn.json()["kind"] == "withdrawal" and withdrawn.json()["version"] == 2

    refused = await intake.read(case_id, recipient, "referral")
    assert refused.status_code == 404

    history = (await intake.client.get(f"/cases/{case_id}/consents", headers=intake.writer(owner))).json()
    assert [v["status"] for v in history["items"]] == ["withdrawn", "withdrawal"]
    again = await intake.client.post(f"/cases/{case_id}/consents/{consent_id}/withdraw",
                                     headers=intake.headers(owner), json={})
    assert again.status_code == 409

    records = await topic_events(intake.bootstrap, AUDIT_ACCESS, access_records(case_id), expect=5)
    reads = [r.data for r in records if r.data["action"] == "case.read" and r.data["agency"] == recipient]
    assert [r["outcome"] for r in reads] == ["success", "denied"]
    assert reads[1]["details"]["reason"] == "consent-missing"
    assert reads[1]["details"]["role"] == "recipient"
    events = await topic_events(intake.bootstrap, INTAKE_EVENTS,
                                lambda e: e.partition_key == case_id and e.short_type.startswith("consent"),
                                expect=2)
    assert [e.short_type for e in events] == ["consent.granted.v1", "consent.withdrawn.v1"]
    assert events[1].data["consent_id"] == consent_id
    assert "asked to stop" not in str(events[1].data)


async def test_an_expired_consent_behaves_like_a_withdrawn_one(intake: Intake) -> None:
    owner, recipient = agency(), agency()
    soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    created = await intake.register(owner, case_body(consent=consent_body(recipient, valid_until=soon)))
    await intake.refer(created["id"], owner, recipient, ["identity"])
    assert (await intake.read(created["id"], recipient, "referral")).status_code == 200
    await asyncio.sleep(2.2)
    assert (await intake.read(created["id"], recipient, "referral")).status_code == 404
    history = (await intake.client.get(f"/cases/{created['id']}/consents", headers=intake.writer(owner))).json()
    assert history["items"][0]["status"] == "expired"


@pytest.mark.parametrize("status", ["rejected", "completed", "failed", "cancelled"])
async def test_closed_referrals_give_no_access(intake: Intake, status: str) -> None:
    owner, recipient = agency(), agency()
    created = await intake.register(owner, case_body(consent=consent_body(recipient)))
    referral = await intake.refer(created["id"], owner, recipient, ["identity"])
    assert (await intake.read(created["id"], recipient, "referral")).status_code == 200
    await intake.refer(created["id"], owner, recipient, ["identity"], status=status, referral_id=referral)
    assert (await intake.read(created["id"], recipient, "referral")).status_code == 404


async def test_accepted_and_overdue_referrals_still_give_access(intake: Intake) -> None:
    owner, recipient = agency(), agency()
    created = await intake.register(owner, case_body(consent=consent_body(recipient)))
    referral = await intake.refer(created["id"], owner, recipient, ["identity"])
    await intake.refer(created["id"], owner, recipient, ["identity"], status="overdue", referral_id=referral)
    assert (await intake.read(created["id"], recipient, "referral")).status_code == 200
    await intake.refer(created["id"], owner, recipient, ["identity"], status="accepted", referral_id=referral)
    assert (await intake.read(created["id"], recipient, "referral")).status_code == 200


async def test_a_childs_consent_needs_a_guardian_and_assent(intake: Intake) -> None:
    owner = agency()
    child = unique_person() | {"birth_date": None, "estimated_age": 12}
    by_self = await intake.client.post("/cases", json=case_body(child, consent=consent_body()),
                                       headers=intake.writer(owner))
    assert by_self.status_code == 422
    assert by_self.json()["errors"][0]["loc"] == ["body", "initial_consent", "grantor"]

    created = await intake.register(owner, case_body(child))
    no_assent = await intake.client.post(f"/cases/{created['id']}/consents", headers=intake.headers(owner),
                                         json=consent_body(grantor="guardian"))
    assert no_assent.status_code == 422
    assert no_assent.json()["errors"][0]["loc"] == ["body", "child_assent"]
    ok = await intake.client.post(f"/cases/{created['id']}/consents", headers=intake.headers(owner),
                                  json=consent_body(grantor="guardian", child_assent=True))
    assert ok.status_code == 201, ok.text


async def test_clearance(intake: Intake) -> None:
    owner, recipient = agency(), agency()
    created = await intake.register(owner, case_body(consent=consent_body(recipient)))
    service = intake.headers("referral-service", "cases:clearance")
    body = {"case_id": created["id"], "to_agency": recipient, "purpose": "referral",
            "data_categories": ["identity", "demographics"], "pathway": "protection"}
    ok = await intake.client.post("/internal/clearance", headers=service, json=body)
    assert ok.status_code == 200, ok.text
    answer = ok.json()
    assert answer["permitted"] is True and answer["consent_version"] == 1 and answer["consent_id"]
    assert answer["facts"] == {"is_minor": False, "age_known": True, "bia_completed": False,
                               "bid_completed": False, "fear_of_return": True, "status": "active"}

    too_much = await intake.client.post("/internal/clearance", headers=service,
                                        json=body | {"data_categories": ["identity", "contact"]})
    assert too_much.json()["permitted"] is False and too_much.json()["reason"] == "consent-missing"
    elsewhere = await intake.client.post("/internal/clearance", headers=service, json=body | {"to_agency": "x"})
    assert elsewhere.json()["permitted"] is False

    unknown = await intake.client.post("/internal/clearance", headers=service, json=body | {"case_id": "case-1"})
    assert unknown.status_code == 404
    not_owner = await intake.client.post("/internal/clearance", headers=service,
                                         json=body | {"from_agency": agency()})
    assert not_owner.status_code == 404
    bad = await intake.client.post("/internal/clearance", headers=service, json=body | {"pathway": "teleport"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["loc"] == ["body", "pathway"]
    agency_token = await intake.client.post("/internal/clearance", headers=intake.headers(owner), json=body)
    assert agency_token.status_code == 403


async def test_erasure_removes_personal_data_for_everyone(intake: Intake) -> None:
    owner, recipient = agency(), agency()
    person = unique_person()
    created = await intake.register(owner, case_body(person, consent=consent_body(recipient)))
    case_id = created["id"]
    await intake.refer(case_id, owner, recipient, ["identity"])
    assert (await intake.read(case_id, recipient, "referral")).status_code == 200

    erased = await intake.client.post(f"/cases/{case_id}/erase", headers=intake.headers(owner))
    assert erased.status_code == 202 and erased.json() == {"id": case_id, "status": "erased"}

    owner_view = await intake.read(case_id, owner)
    assert owner_view.status_code == 200
    body = owner_view.json()
    assert body["status"] == "erased" and body["is_minor"] is False
    # Gender, citizenship and age band were sealed with the names: nothing of the person is left.
    assert body["person"] == {} and body["age_band"] is None
    assert "notes" not in body["screening"]
    for value in (person["given_name"], person["birth_date"], person["phone"]):
        assert value not in owner_view.text
    assert (await intake.read(case_id, recipient, "referral")).status_code == 404
    consents = await intake.client.get(f"/cases/{case_id}/consents", headers=intake.writer(owner))
    assert consents.status_code == 200
    listed = await intake.client.get("/cases?status=erased", headers=intake.headers(owner))
    assert [c["id"] for c in listed.json()["items"]] == [case_id]
    patch = await intake.client.patch(f"/cases/{case_id}", headers=intake.writer(owner), json={"status": "active"})
    assert patch.status_code == 409
    events = await topic_events(intake.bootstrap, INTAKE_EVENTS,
                                lambda e: e.partition_key == case_id and "erased" in e.type)
    assert events[0].data == {"case_id": case_id, "agency": owner, "client_id": f"client-{owner}",
                              "acting_user": None, "status": "erased"}
    again = await intake.client.post(f"/cases/{case_id}/erase", headers=intake.headers(owner))
    assert again.status_code == 202


async def test_a_suspended_recipient_reads_nothing(intake: Intake) -> None:
    from services.intake.consumers import on_agency
    from shared.db import unit_of_work
    from shared.envelope import Event

    owner, recipient = agency(), agency()
    created = await intake.register(owner, case_body(consent=consent_body(recipient)))
    await intake.refer(created["id"], owner, recipient, ["identity"])
    assert (await intake.read(created["id"], recipient, "referral")).status_code == 200
    event = Event(id=f"e-{recipient}", source="/refnet/registry", type="org.refnet.agency.suspended.v1",
                  subject=None, partition_key=recipient, time=datetime.now(UTC),
                  data={"agency_id": recipient, "status": "suspended"})
    async with unit_of_work(intake.app.state.runtime.sessions) as session:
        await on_agency(session, event)
    assert (await intake.read(created["id"], recipient, "referral")).status_code == 404
    answer = await intake.client.post(
        "/internal/clearance", headers=intake.headers("referral-service", "cases:clearance"),
        json={"case_id": created["id"], "to_agency": recipient, "data_categories": ["identity"],
              "pathway": "service"})
    assert answer.json()["permitted"] is False and answer.json()["reason"] == "recipient-suspended"


async def test_a_person_of_unknown_age_is_presumed_a_child_for_consent(intake: Intake) -> None:
    unknown_age = unique_person() | {"birth_date": None}
    response = await intake.client.post("/cases", json=case_body(unknown_age, consent=consent_body()),
                                        headers=intake.writer(agency()))
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "initial_consent", "grantor"]


async def test_clearance_presumes_a_person_of_unknown_age_a_child(intake: Intake) -> None:
    """Rule 4: no birth date and no estimate is a child to every guard -- clearance never answers "unknown"
    (referral waited for ever on ``is_minor: null``)."""
    owner, recipient = agency(), agency()
    guardian = consent_body(recipient, grantor="guardian", child_assent=True)
    created = await intake.register(owner, case_body(unique_person() | {"birth_date": None}, consent=guardian))
    assert created["is_minor"] is None  # what intake recorded: the age is not known
    answer = await intake.client.post(
        "/internal/clearance", headers=intake.headers("referral-service", "cases:clearance"),
        json={"case_id": created["id"], "to_agency": recipient, "data_categories": ["identity"],
              "pathway": "avrr"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["facts"]["is_minor"] is True and answer.json()["facts"]["age_known"] is False
