"""POST /referrals against a real database: every guard refuses with its problem type and passes when
satisfied; due_at from priority; intake down is 503, never a guess; idempotent under concurrent retries."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from sqlalchemy import text

from services.referral.jobs import RegistryCatchUp
from shared.db import unit_of_work
from shared.kafka import make_producer
from tests.conftest import Infra
from tests.integration.referral.conftest import Service, body, running_referral
from tests.support.issuer import LocalIssuer


async def parties(svc: Service) -> tuple[str, str]:
    return await svc.agency(), await svc.agency()


def problem_slug(response: object) -> str:
    data = response.json()  # type: ignore[attr-defined]
    assert response.headers["content-type"].startswith("application/problem+json")  # type: ignore[attr-defined]
    return str(data["type"]).rsplit(":", 1)[-1]


async def test_a_referral_is_created_requested_with_due_at_and_history(svc: Service) -> None:
    sender, recipient = await parties(svc)
    case_id, consent_id = svc.intake.add_case(sender)
    created = await svc.refer(sender, body(case_id, recipient, priority="emergency"))
    assert created.status_code == 201, created.text
    data = created.json()
    assert data["status"] == "requested"
    assert (data["from_agency"], data["to_agency"], data["case_id"]) == (sender, recipient, case_id)
    assert data["consent_id"] == consent_id
    assert datetime.fromisoformat(data["due_at"]) == svc.clock() + timedelta(hours=24)
    assert [(h["from"], h["to"], h["by"]) for h in data["history"]] == [(None, "requested", "sender")]
    assert created.headers["location"] == f"/referrals/{data['id']}"
    # intake was asked about exactly this referral, on behalf of the sender
    call = svc.intake.calls[-1]
    assert call == {"case_id": case_id, "from_agency": sender, "to_agency": recipient, "purpose": "referral",
                    "data_categories": ["demographics", "identity"], "pathway": "service"}


@pytest.mark.parametrize(("priority", "delta"), [("emergency", timedelta(hours=24)),
                                                 ("urgent", timedelta(hours=72)), ("normal", timedelta(days=14))])
async def test_due_at_follows_priority(svc: Service, priority: str, delta: timedelta) -> None:
    sender, recipient = await parties(svc)
    case_id, _ = svc.intake.add_case(sender)
    created = await svc.refer(sender, body(case_id, recipient, priority=priority))
    assert datetime.fromisoformat(created.json()["due_at"]) == svc.clock() + delta


async def test_due_at_follows_the_configured_deadlines(infra: Infra, new_database: Callable[[str], str],
                                                       issuer: LocalIssuer) -> None:
    async with running_referral(new_database("referral"), infra.bootstrap, issuer,
                                acknowledge_emergency_within=timedelta(minutes=30)) as svc:
        sender, recipient = await parties(svc)
        case_id, _ = svc.intake.add_case(sender)
        created = await svc.refer(sender, body(case_id, recipient, priority="emergency"))
        assert datetime.fromisoformat(created.json()["due_at"]) == svc.clock() + timedelta(minutes=30)


async def test_consent_missing_for_that_recipient_or_category(svc: Service) -> None:
    sender, recipient = await parties(svc)
    other = await svc.agency()
    case_id, _ = svc.intake.add_case(sender, consent_to=other)
    refused = await svc.refer(sender, body(case_id, recipient))
    assert refused.status_code == 409
    assert problem_slug(refused) == "consent-missing"
    # a category the consent does not cover
    case2, _ = svc.intake.add_case(sender, consent_to=recipient, categories={"identity"})
    refused = await svc.refer(sender, body(case2, recipient, shared_categories=["identity", "health"]))
    assert problem_slug(refused) == "consent-missing"
    # and with consent to that recipient it passes
    allowed = await svc.refer(sender, body(case2, recipient, shared_categories=["identity"]))
    assert allowed.status_code == 201, allowed.text


async def test_child_bia_guard(svc: Service) -> None:
    sender, recipient = await parties(svc)
    no_bia, _ = svc.intake.add_case(sender, is_minor=True)
    refused = await svc.refer(sender, body(no_bia, recipient))
    assert (refused.status_code, problem_slug(refused)) == (409, "child-bia-missing")
    with_bia, _ = svc.intake.add_case(sender, is_minor=True, bia_completed=True)
    assert (await svc.refer(sender, body(with_bia, recipient))).status_code == 201


async def test_unknown_age_is_refused_as_a_child_not_left_waiting(svc: Service) -> None:
    """docs/domain.md rule 4: unknown age is a presumed child -- the child guard answers, never a 503 for ever."""
    sender, recipient = await parties(svc)
    unknown, _ = svc.intake.add_case(sender, is_minor=None)
    refused = await svc.refer(sender, body(unknown, recipient))
    assert (refused.status_code, problem_slug(refused)) == (409, "child-bia-missing")


@pytest.mark.parametrize("pathway", ["avrr", "resettlement"])
async def test_child_bid_guard(svc: Service, pathway: str) -> None:
    sender, recipient = await parties(svc)
    no_bid, _ = svc.intake.add_case(sender, is_minor=True, bia_completed=True)
    taxonomy = "avrr" if pathway == "avrr" else "protection.resettlement"
    refused = await svc.refer(sender, body(no_bid, recipient, pathway=pathway, service_type=taxonomy))
    assert (refused.status_code, problem_slug(refused)) == (409, "child-bid-missing")
    with_bid, _ = svc.intake.add_case(sender, is_minor=True, bia_completed=True, bid_completed=True)
    allowed = await svc.refer(sender, body(with_bid, recipient, pathway=pathway, service_type=taxonomy))
    assert allowed.status_code == 201, allowed.text


async def test_non_refoulement_fear_of_return(svc: Service) -> None:
    sender, iom = await parties(svc)
    case_id, _ = svc.intake.add_case(sender, fear_of_return=True)
    refused = await svc.refer(sender, body(case_id, iom, pathway="avrr", service_type="avrr"))
    assert (refused.status_code, problem_slug(refused)) == (409, "non-refoulement")


async def test_non_refoulement_open_protection_referral_then_allowed_once_closed(svc: Service) -> None:
    sender, unhcr = await parties(svc)
    iom = await svc.agency()
    case_id, _ = svc.intake.add_case(sender)
    protection = await svc.refer(sender, body(case_id, unhcr, pathway="protection", service_type="protection.rsd"))
    assert protection.status_code == 201
    refused = await svc.refer(sender, body(case_id, iom, pathway="avrr", service_type="avrr"))
    assert (refused.status_code, problem_slug(refused)) == (409, "non-refoulement")
    # accepted is still open
    pid = protection.json()["id"]
    assert (await svc.move(unhcr, pid, "received")).status_code == 200
    assert (await svc.move(unhcr, pid, "accepted")).status_code == 200
    refused = await svc.refer(sender, body(case_id, iom, pathway="avrr", service_type="avrr"))
    assert problem_slug(refused) == "non-refoulement"
    # once the protection referral is closed (here: cancelled by the sender), avrr may be considered
    assert (await svc.move(sender, pid, "cancelled", "no-longer-needed")).status_code == 200
    allowed = await svc.refer(sender, body(case_id, iom, pathway="avrr", service_type="avrr"))
    assert allowed.status_code == 201, allowed.text


async def test_suspended_recipient(svc: Service) -> None:
    sender = await svc.agency()
    suspended = await svc.agency(status="suspended")
    case_id, _ = svc.intake.add_case(sender)
    refused = await svc.refer(sender, body(case_id, suspended))
    assert (refused.status_code, problem_slug(refused)) == (409, "recipient-suspended")
    await svc.agency(suspended, status="active")  # reactivated
    assert (await svc.refer(sender, body(case_id, suspended))).status_code == 201


async def test_intakes_own_word_on_suspension_and_erasure(svc: Service) -> None:
    sender, recipient = await svc.agency(), await svc.agency()
    case_id, _ = svc.intake.add_case(sender)
    svc.intake.suspended.add(recipient)  # our read model has not heard yet; intake has
    refused = await svc.refer(sender, body(case_id, recipient))
    assert (refused.status_code, problem_slug(refused)) == (409, "recipient-suspended")
    svc.intake.suspended.discard(recipient)
    svc.intake.erased.add(case_id)
    assert (await svc.refer(sender, body(case_id, recipient))).status_code == 404


async def test_referral_to_a_registry_service_and_service_full(svc: Service) -> None:
    sender, provider = await parties(svc)
    full = await svc.service(provider, available=0, status="full")
    open_ = await svc.service(provider, available=2)
    case_id, _ = svc.intake.add_case(sender)
    refused = await svc.refer(sender, body(case_id, service_id=full, service_type=None))
    assert (refused.status_code, problem_slug(refused)) == (409, "service-full")
    created = await svc.refer(sender, {**body(case_id, service_id=open_), "service_type": None})
    assert created.status_code == 201, created.text
    data = created.json()
    assert (data["to_agency"], data["service_id"], data["service_type"]) == (provider, open_, "shelter")


async def test_bad_input_is_422_naming_the_field(svc: Service) -> None:
    sender, recipient = await parties(svc)
    case_id, _ = svc.intake.add_case(sender)
    for bad, field in [
        ({"pathway": "deport"}, "pathway"), ({"priority": "whenever"}, "priority"),
        ({"shared_categories": ["secrets"]}, "shared_categories"), ({"service_type": "spa"}, "service_type"),
        ({"shared_categories": []}, "shared_categories"), ({"case_id": "a b"}, "case_id"),
        ({"surprise": 1}, "surprise"), ({"reason": ""}, "reason"),
    ]:
        response = await svc.refer(sender, {**body(case_id, recipient), **bad})
        assert response.status_code == 422, (bad, response.text)
        assert any(field in e["loc"] for e in response.json()["errors"]), (bad, response.json())
    myself = await svc.refer(sender, body(case_id, sender))
    assert myself.status_code == 422 and myself.json()["errors"][0]["loc"] == ["body", "to_agency"]
    own_service = await svc.service(sender)
    mine = await svc.refer(sender, {**body(case_id, service_id=own_service), "service_type": None})
    assert mine.status_code == 422 and mine.json()["errors"][0]["loc"] == ["body", "service_id"]
    mismatch = await svc.refer(sender, body(case_id, service_id=await svc.service(recipient), service_type="mhpss"))
    assert mismatch.status_code == 422 and mismatch.json()["errors"][0]["loc"] == ["body", "service_type"]
    unknown = await svc.refer(sender, body(case_id, "agency-nobody-knows"))
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["loc"] == ["body", "to_agency"]
    no_service = await svc.refer(sender, body(case_id, service_id="svc-nope"))
    assert no_service.status_code == 422 and no_service.json()["errors"][0]["loc"] == ["body", "service_id"]
    not_json = await svc.client.post("/referrals", content=b"{", headers={**svc.headers(sender),
                                                                          "content-type": "application/json"})
    assert not_json.status_code == 422


async def test_an_unknown_recipient_is_503_while_the_registry_read_model_is_still_loading(svc: Service) -> None:
    sender, recipient = await parties(svc)
    case_id, _ = svc.intake.add_case(sender)
    svc.referrals.registry_loaded = lambda: False  # a replica that has just started
    try:
        for unknown in (body(case_id, "agency-not-read-yet"), body(case_id, service_id="svc-not-read-yet")):
            loading = await svc.refer(sender, unknown)
            assert (loading.status_code, problem_slug(loading)) == (503, "registry-loading"), loading.text
            assert loading.headers["retry-after"] == "2"
        # what it already knows it refers to at once
        assert (await svc.refer(sender, body(case_id, recipient))).status_code == 201
    finally:
        svc.referrals.registry_loaded = lambda: True
    unknown = await svc.refer(sender, body(case_id, "agency-not-read-yet"))
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["loc"] == ["body", "to_agency"]


async def test_the_registry_read_model_is_loaded_once_the_consumer_reached_the_topics_end(
        svc: Service, infra: Infra) -> None:
    topic = f"test.registry.{uuid.uuid4().hex[:8]}"
    producer = make_producer(infra.bootstrap)
    await producer.start()
    try:
        for n in range(3):
            await producer.send_and_wait(topic, value=b"{}", key=str(n).encode(), partition=0)
    finally:
        await producer.stop()
    catchup = RegistryCatchUp(svc.referrals.sessions, bootstrap=infra.bootstrap, consumer="catchup-test", topic=topic)

    async def mark(offset: int) -> None:
        async with unit_of_work(svc.referrals.sessions) as session:
            await session.execute(text(
                'INSERT INTO consumer_marks (consumer, topic, partition, "offset") VALUES (:c, :t, 0, :o) '
                'ON CONFLICT (consumer, topic, partition) DO UPDATE SET "offset" = EXCLUDED."offset"'),
                {"c": "catchup-test", "t": topic, "o": offset})

    assert await catchup.check() is False  # nothing applied yet
    await mark(1)
    assert await catchup.check() is False  # two of three
    await mark(2)
    assert await catchup.check() is True
    # A topic nobody has written to yet: the registry may be starting beside us, so wait for its first events
    # a while (here 0.5 s), then there is nothing to wait for.
    empty = RegistryCatchUp(svc.referrals.sessions, bootstrap=infra.bootstrap, consumer="catchup-test",
                            topic=f"test.registry.{uuid.uuid4().hex[:8]}", empty_grace_seconds=0.5)
    assert await empty.check() is False
    await asyncio.sleep(0.6)
    assert await empty.check() is True


async def test_unknown_case_or_someone_elses_case_is_404(svc: Service) -> None:
    sender, recipient = await parties(svc)
    assert (await svc.refer(sender, body("case-unknown", recipient))).status_code == 404
    other_owner = await svc.agency()
    case_id, _ = svc.intake.add_case(other_owner)
    response = await svc.refer(sender, body(case_id, recipient))
    assert response.status_code == 404 and problem_slug(response) == "not-found"


@pytest.mark.parametrize("down", [0, 500, 503])
async def test_intake_unavailable_is_503_with_retry_after_and_nothing_created(svc: Service, down: int) -> None:
    sender, recipient = await parties(svc)
    case_id, _ = svc.intake.add_case(sender)
    svc.intake.down = down
    try:
        response = await svc.refer(sender, body(case_id, recipient))
    finally:
        svc.intake.down = None
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) >= 1
    assert problem_slug(response) == "intake-unavailable"
    queue = await svc.client.get("/referrals?role=sent", headers=svc.headers(sender))
    assert queue.json()["items"] == []


async def test_scopes_are_required(svc: Service) -> None:
    sender, recipient = await parties(svc)
    case_id, _ = svc.intake.add_case(sender)
    response = await svc.client.post("/referrals", json=body(case_id, recipient),
                                     headers=svc.headers(sender, "referrals:read"))
    assert response.status_code == 403
    assert (await svc.client.post("/referrals", json=body(case_id, recipient))).status_code == 401


async def test_twenty_concurrent_retries_with_one_key_make_one_referral(svc: Service) -> None:
    sender, recipient = await parties(svc)
    case_id, _ = svc.intake.add_case(sender)
    request = body(case_id, recipient)
    responses = await asyncio.gather(*[
        svc.refer(sender, request, **{"Idempotency-Key": "retry-me-1"}) for _ in range(20)])
    assert {r.status_code for r in responses} == {201}, [r.text for r in responses if r.status_code != 201]
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 1
    assert sum(1 for r in responses if r.headers.get("idempotent-replayed") == "true") == 19
    queue = await svc.client.get("/referrals?role=sent", headers=svc.headers(sender))
    assert [item["id"] for item in queue.json()["items"]] == list(ids)
    # the same key in the body field is the same request
    again = await svc.refer(sender, {**request, "idempotency_key": "retry-me-1"})
    assert again.json()["id"] in ids
    # the same key for a different request is refused, not silently answered with the first
    other = await svc.refer(sender, {**request, "priority": "normal"}, **{"Idempotency-Key": "retry-me-1"})
    assert other.status_code == 422 and problem_slug(other) == "idempotency-key-reused"
    # another agency's identical key is its own
    sender2 = await svc.agency()
    case2, _ = svc.intake.add_case(sender2)
    mine = await svc.refer(sender2, body(case2, recipient), **{"Idempotency-Key": "retry-me-1"})
    assert mine.status_code == 201 and mine.json()["id"] not in ids
