"""Registration, owner reads, updates, listing, and the access record of every read."""

from __future__ import annotations

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


async def test_registration_derives_facts_and_owner_reads_everything(intake: Intake) -> None:
    owner = agency()
    person = unique_person() | {"birth_date": "1999-04-02"}
    created = await intake.register(owner, case_body(person))
    assert created["status"] == "active"
    assert created["owner_agency"] == owner
    assert created["is_minor"] is False
    assert created["age_band"] == "27-29"
    assert created["person"]["given_name"] == person["given_name"]

    read = await intake.read(created["id"], owner)
    assert read.status_code == 200, read.text
    body = read.json()
    assert body["person"]["phone"] == person["phone"]
    assert body["person"]["birth_date"] == "1999-04-02"
    assert body["screening"]["notes"].endswith("free text")
    assert body["screening"]["needs"] == ["shelter", "protection.rsd"]

    registered = await topic_events(intake.bootstrap, INTAKE_EVENTS,
                                    lambda e: e.partition_key == created["id"])
    assert registered[0].type == "org.refnet.case.registered.v1"
    data = registered[0].data
    assert data["case_id"] == created["id"] and data["agency"] == owner
    # The registration's answer carried the case: the event says why and what (one audit entry for the act),
    # and nothing about the person (finding 13: no age band, gender, citizenship or screening fact).
    assert data["purpose"] == "case_management" and "identity" in data["data_categories"]
    assert not {"is_minor", "age_band", "gender", "citizenship", "fear_of_return", "trafficking_status"} & set(data)

    records = await topic_events(intake.bootstrap, AUDIT_ACCESS, access_records(created["id"]), expect=1)
    assert [r.data["action"] for r in records] == ["case.read"]  # no second record of the registration
    reads = [r.data for r in records if r.data["action"] == "case.read"]
    assert reads and reads[0]["outcome"] == "success"
    assert reads[0]["agency"] == owner and reads[0]["purpose"] == "case_management"
    assert "identity" in reads[0]["details"]["categories"]


async def test_a_child_is_under_18_on_the_day_of_intake(intake: Intake) -> None:
    created = await intake.register(agency(), case_body(unique_person() | {"birth_date": None,
                                                                          "estimated_age": 15}))
    assert created["is_minor"] is True
    assert created["age_band"] == "9-17"


async def test_reads_need_a_purpose(intake: Intake) -> None:
    owner = agency()
    created = await intake.register(owner)
    missing = await intake.client.get(f"/cases/{created['id']}", headers=intake.headers(owner))
    assert missing.status_code == 400
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["type"].endswith("purpose-required")
    bogus = await intake.read(created["id"], owner, purpose="curiosity")
    assert bogus.status_code == 400
    assert bogus.json()["type"].endswith("invalid-purpose")


async def test_update_list_and_filters(intake: Intake) -> None:
    owner = agency()
    first = await intake.register(owner)
    await intake.register(owner, case_body(trafficking_status="actual", needs=["mhpss"]))
    patched = await intake.client.patch(f"/cases/{first['id']}", headers=intake.writer(owner),
                                        json={"bia_completed_at": "2024-01-02", "status": "follow_up"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["status"] == "follow_up"
    assert patched.json()["screening"]["bia_completed_at"] == "2024-01-02"

    listed = await intake.client.get("/cases", headers=intake.headers(owner))
    assert listed.status_code == 200
    assert len(listed.json()["items"]) == 2
    assert "person" not in listed.json()["items"][0]
    actual = await intake.client.get("/cases?trafficking_status=actual", headers=intake.headers(owner))
    assert len(actual.json()["items"]) == 1
    mhpss = await intake.client.get("/cases?needs=mhpss", headers=intake.headers(owner))
    assert len(mhpss.json()["items"]) == 1
    page = await intake.client.get("/cases?limit=1", headers=intake.headers(owner))
    cursor = page.json()["next_cursor"]
    assert cursor
    rest = await intake.client.get(f"/cases?limit=1&cursor={cursor}", headers=intake.headers(owner))
    assert rest.json()["items"][0]["id"] != page.json()["items"][0]["id"]
    assert (await intake.client.get("/cases?cursor=!!", headers=intake.headers(owner))).status_code == 422

    closed = await intake.client.patch(f"/cases/{first['id']}", headers=intake.writer(owner),
                                       json={"status": "closed"})
    assert closed.status_code == 200
    events = await topic_events(intake.bootstrap, INTAKE_EVENTS, lambda e: e.partition_key == first["id"],
                                expect=3)
    assert [e.short_type for e in events] == ["case.registered.v1", "case.updated.v1", "case.closed.v1"]
    assert events[1].data["changed"] == ["bia_completed_at", "status"]


async def test_initial_consent_is_recorded_with_the_case(intake: Intake) -> None:
    owner = agency()
    created = await intake.register(owner, case_body(consent=consent_body()))
    history = await intake.client.get(f"/cases/{created['id']}/consents", headers=intake.writer(owner))
    assert history.status_code == 200
    [version] = history.json()["items"]
    assert version["version"] == 1 and version["status"] == "active"


async def test_scopes_are_enforced(intake: Intake) -> None:
    owner = agency()
    response = await intake.client.post("/cases", json=case_body(), headers=intake.writer(owner, "cases:read"))
    assert response.status_code == 403
    assert (await intake.client.post("/cases", json=case_body())).status_code == 401


async def test_owner_corrects_personal_fields_which_stay_sealed(intake: Intake) -> None:
    owner = agency()
    created = await intake.register(owner)
    patched = await intake.client.patch(
        f"/cases/{created['id']}", headers=intake.writer(owner),
        json={"person": {"phone": "+254700000001", "languages": ["sw"]}, "notes": "moved to shelter B"})
    assert patched.status_code == 200, patched.text
    body = (await intake.read(created["id"], owner)).json()
    assert body["person"]["phone"] == "+254700000001" and body["person"]["languages"] == ["sw"]
    assert body["person"]["given_name"] == created["person"]["given_name"]
    assert body["screening"]["notes"] == "moved to shelter B"
    events = await topic_events(intake.bootstrap, INTAKE_EVENTS,
                                lambda e: e.partition_key == created["id"] and "updated" in e.type)
    assert events[0].data["changed"] == ["notes", "person.languages", "person.phone"]
    assert "+254700000001" not in str(events[0].data)
    for patch in ({"person": {"birth_date": "2001-01-01"}}, {"person": {"given_name": None}}, {"status": None},
                  {"person": None}):
        refused = await intake.client.patch(f"/cases/{created['id']}", headers=intake.writer(owner), json=patch)
        assert refused.status_code == 422, (patch, refused.text)
        assert refused.json()["errors"][0]["loc"][:2] == ["body", next(iter(patch))]
