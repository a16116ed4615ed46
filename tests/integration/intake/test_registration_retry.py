"""A case system that lost the answer to a registration sends it again with the same Idempotency-Key: it gets
the case the first attempt made, never a second record of the same person (tests/reliability finds the lost
answers; here, each way a retry can meet its first attempt)."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from shared.topics import AUDIT_ACCESS, INTAKE_EVENTS
from tests.integration.intake.conftest import Intake, access_records, agency, case_body, consent_body, topic_events


async def _count_cases(intake: Intake, owner: str) -> int:
    async with intake.app.state.runtime.sessions() as session:
        return int((await session.execute(text("SELECT count(*) FROM cases WHERE owner_agency = :o"),
                                          {"o": owner})).scalar_one())


async def test_a_retried_registration_returns_the_first_case(intake: Intake) -> None:
    owner = agency()
    body = case_body(consent=consent_body())
    headers = intake.writer(owner) | {"Idempotency-Key": "reg-0001"}
    first = await intake.client.post("/cases", json=body, headers=headers)
    again = await intake.client.post("/cases", json=body, headers=headers)
    assert first.status_code == again.status_code == 201, again.text
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert await _count_cases(intake, owner) == 1

    case_id = first.json()["id"]
    registered = await topic_events(intake.bootstrap, INTAKE_EVENTS, lambda e: e.partition_key == case_id,
                                    expect=3, timeout=5)
    assert [e.type for e in registered].count("org.refnet.case.registered.v1") == 1
    # The replay handed the person's data back: a read by the owner, on the record like any other.
    # (The registration and its consent are the events above: one audit entry each, no access record beside.)
    records = await topic_events(intake.bootstrap, AUDIT_ACCESS, access_records(case_id), expect=1, timeout=5)
    assert [r.data["action"] for r in records] == ["case.read"]
    replay = next(r.data for r in records if r.data["action"] == "case.read")
    assert replay["details"]["replay"] is True and replay["agency"] == owner


async def test_concurrent_attempts_with_one_key_make_one_case(intake: Intake) -> None:
    owner = agency()
    body = case_body()
    headers = intake.writer(owner) | {"Idempotency-Key": "reg-race"}
    answers = await asyncio.gather(*(intake.client.post("/cases", json=body, headers=headers) for _ in range(5)))
    assert {a.status_code for a in answers} == {201}
    assert len({a.json()["id"] for a in answers}) == 1
    assert await _count_cases(intake, owner) == 1


async def test_the_key_is_the_owners_own_and_bound_to_its_request(intake: Intake) -> None:
    owner, other = agency(), agency()
    body = case_body()
    made = await intake.client.post("/cases", json=body, headers=intake.writer(owner) | {"Idempotency-Key": "k-1"})
    assert made.status_code == 201
    # Another agency's same key is another registration: keys do not cross agencies (nor reveal their cases).
    theirs = await intake.client.post("/cases", json=body, headers=intake.writer(other) | {"Idempotency-Key": "k-1"})
    assert theirs.status_code == 201 and theirs.json()["id"] != made.json()["id"]
    # The same key with a different person is refused, naming the header and nothing of either person.
    changed = case_body()
    reused = await intake.client.post("/cases", json=changed,
                                      headers=intake.writer(owner) | {"Idempotency-Key": "k-1"})
    assert reused.status_code == 422
    assert reused.json()["type"] == "urn:refnet:problem:idempotency-key-reused"
    assert changed["person"]["family_name"] not in reused.text and body["person"]["family_name"] not in reused.text
    # Without a key, a registration is a registration, as before.
    plain = [await intake.client.post("/cases", json=body, headers=intake.writer(owner)) for _ in range(2)]
    assert len({p.json()["id"] for p in plain}) == 2


async def test_a_key_whose_case_was_erased_does_not_register_again(intake: Intake) -> None:
    owner = agency()
    body = case_body()
    headers = intake.writer(owner) | {"Idempotency-Key": "reg-erased"}
    made = await intake.client.post("/cases", json=body, headers=headers)
    erased = await intake.client.post(f"/cases/{made.json()['id']}/erase", headers=intake.writer(owner))
    assert erased.status_code == 202
    again = await intake.client.post("/cases", json=body, headers=headers)
    assert again.status_code == 409 and again.json()["type"] == "urn:refnet:problem:case-erased"
    assert await _count_cases(intake, owner) == 1


async def test_a_malformed_key_is_a_validation_error(intake: Intake) -> None:
    answer = await intake.client.post("/cases", json=case_body(),
                                      headers=intake.writer(agency()) | {"Idempotency-Key": "x" * 256})
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["loc"] == ["header", "Idempotency-Key"]
