"""Reactions to other services' events: consent withdrawn, agency suspended, case erased -- through the
handlers, and once end to end over the real broker (intake's event in, the cancellation out on the
recipient's delivery topic)."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from shared import envelope
from shared.kafka import ensure_topics
from shared.topics import INTAKE_EVENTS, REFERRAL_EVENTS, delivery_topic
from tests.conftest import Infra
from tests.integration.referral.conftest import Service, body


async def status_of(svc: Service, agency: str, rid: str) -> dict:  # type: ignore[type-arg]
    response = await svc.client.get(f"/referrals/{rid}", headers=svc.headers(agency))
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_consent_withdrawal_cancels_only_open_referrals_that_relied_on_it(svc: Service) -> None:
    sender, a, b = await svc.agency(), await svc.agency(), await svc.agency()
    case_id, consent_id = svc.intake.add_case(sender)
    # a second consent, to b only, covering the same categories
    other_consent = "consent-" + uuid.uuid4().hex[:8]
    svc.intake.cases[case_id].consents = {consent_id: (a, {"identity", "demographics"}),
                                          other_consent: (b, {"identity", "demographics"})}
    open_a = (await svc.refer(sender, body(case_id, a))).json()["id"]
    accepted_a = (await svc.refer(sender, body(case_id, a, service_type="mhpss"))).json()["id"]
    for to in ("received", "accepted"):
        await svc.move(a, accepted_a, to)
    rejected_a = (await svc.refer(sender, body(case_id, a, service_type="wash"))).json()["id"]
    await svc.move(a, rejected_a, "received")
    await svc.move(a, rejected_a, "rejected", "outside-mandate")
    to_b = (await svc.refer(sender, body(case_id, b))).json()
    assert to_b["consent_id"] == other_consent

    await svc.apply("consent.withdrawn.v1", {"case_id": case_id, "consent_id": consent_id, "agency": sender,
                                             "client_id": "c", "consent_version": 2, "withdrawn_version": 1})

    for rid in (open_a, accepted_a):
        shown = await status_of(svc, sender, rid)
        assert shown["status"] == "cancelled"
        last = shown["history"][-1]
        assert (last["by"], last["reason_code"], last["agency"]) == ("system", "consent-withdrawn", None)
    assert (await status_of(svc, sender, rejected_a))["status"] == "rejected"  # the past stays
    assert (await status_of(svc, sender, to_b["id"]))["status"] == "requested"  # another consent
    # the recipient is told
    feed = await svc.client.get("/events", headers=svc.headers(a, "events:read"))
    cancelled = [e for e in feed.json()["items"] if e["type"].endswith("referral.cancelled.v1")]
    assert {e["subject"] for e in cancelled} == {open_a, accepted_a}
    assert all(e["data"]["reason_code"] == "consent-withdrawn" for e in cancelled)


async def test_agency_suspension_cancels_open_referrals_to_it(svc: Service) -> None:
    sender, recipient, other = await svc.agency(), await svc.agency(), await svc.agency()
    case_id, _ = svc.intake.add_case(sender)
    svc.intake.cases[case_id].consents = {"c-any": (None, {"identity", "demographics"})}
    to_recipient = (await svc.refer(sender, body(case_id, recipient))).json()["id"]
    to_other = (await svc.refer(sender, body(case_id, other))).json()["id"]
    await svc.agency(recipient, status="suspended")
    shown = await status_of(svc, sender, to_recipient)
    assert shown["status"] == "cancelled" and shown["history"][-1]["reason_code"] == "recipient-suspended"
    assert (await status_of(svc, sender, to_other))["status"] == "requested"
    refused = await svc.refer(sender, body(case_id, recipient))
    assert refused.status_code == 409 and refused.json()["type"].endswith("recipient-suspended")


async def test_case_erasure_cancels_every_open_referral_of_the_case(svc: Service) -> None:
    sender, a, b = await svc.agency(), await svc.agency(), await svc.agency()
    case_id, _ = svc.intake.add_case(sender)
    svc.intake.cases[case_id].consents = {"c-any": (None, {"identity", "demographics"})}
    other_case, _ = svc.intake.add_case(sender, consent_to=a)
    ids = [(await svc.refer(sender, body(case_id, x))).json()["id"] for x in (a, b)]
    untouched = (await svc.refer(sender, body(other_case, a))).json()["id"]
    await svc.apply("case.erased.v1", {"case_id": case_id, "agency": sender, "client_id": "c", "status": "erased"})
    for rid in ids:
        shown = await status_of(svc, sender, rid)
        assert shown["status"] == "cancelled" and shown["history"][-1]["reason_code"] == "case-erased"
    assert (await status_of(svc, sender, untouched))["status"] == "requested"


async def test_withdrawal_cascades_across_services_over_the_broker(svc: Service, infra: Infra) -> None:
    """intake publishes consent.withdrawn on the real broker; referral's consumer cancels the referral and the
    cancellation reaches the recipient's case system on refnet.delivery.<agency>, keyed by referral id."""
    sender, recipient = await svc.agency(), await svc.agency()
    case_id, consent_id = svc.intake.add_case(sender, consent_to=recipient)
    rid = (await svc.refer(sender, body(case_id, recipient))).json()["id"]

    await ensure_topics(infra.bootstrap, [INTAKE_EVENTS])
    producer = AIOKafkaProducer(bootstrap_servers=infra.bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        key, value, headers = envelope.encode(envelope.Event(
            id=uuid.uuid4().hex, source="/refnet/intake", type="consent.withdrawn.v1", subject=consent_id,
            partition_key=case_id, time=datetime.now(UTC),
            data={"case_id": case_id, "consent_id": consent_id, "agency": sender, "client_id": "c",
                  "consent_version": 2, "withdrawn_version": 1}))
        await producer.send_and_wait(INTAKE_EVENTS, value=value, key=key, headers=headers)
    finally:
        await producer.stop()

    deadline = time.monotonic() + 60
    while (await status_of(svc, sender, rid))["status"] != "cancelled":
        assert time.monotonic() < deadline, "the withdrawal did not cancel the referral"
        await asyncio.sleep(0.3)

    consumer = AIOKafkaConsumer(delivery_topic(recipient), bootstrap_servers=infra.bootstrap,
                                auto_offset_reset="earliest", group_id=None, enable_auto_commit=False)
    await consumer.start()
    seen: list[envelope.Event] = []
    keys: set[bytes | None] = set()
    try:
        deadline = time.monotonic() + 30
        while len(seen) < 2 and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    keys.add(record.key)
                    seen.append(envelope.decode(record.key, record.value, list(record.headers)))
    finally:
        await consumer.stop()
    assert [e.short_type for e in seen] == ["referral.requested.v1", "referral.cancelled.v1"]
    assert keys == {rid.encode()}
    assert seen[1].data["reason_code"] == "consent-withdrawn" and seen[1].data["referral_id"] == rid

    # and on refnet.referral.events, keyed by case id (one case's events stay in order)
    consumer = AIOKafkaConsumer(REFERRAL_EVENTS, bootstrap_servers=infra.bootstrap, auto_offset_reset="earliest",
                                group_id=None, enable_auto_commit=False)
    await consumer.start()
    mine: list[tuple[bytes | None, str]] = []
    try:
        deadline = time.monotonic() + 30
        while len(mine) < 2 and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    event = envelope.decode(record.key, record.value, list(record.headers))
                    if event.subject == rid:
                        mine.append((record.key, event.short_type))
    finally:
        await consumer.stop()
    assert mine == [(case_id.encode(), "referral.requested.v1"), (case_id.encode(), "referral.cancelled.v1")]


async def test_a_create_racing_the_withdrawal_or_erasure_never_outlives_it(svc: Service) -> None:
    """If intake's answer predates the event (the create was in flight), the event still wins."""
    sender, recipient = await svc.agency(), await svc.agency()
    case_id, consent_id = svc.intake.add_case(sender, consent_to=recipient)
    await svc.apply("consent.withdrawn.v1", {"case_id": case_id, "consent_id": consent_id})
    # the fake intake still answers "permitted" with the withdrawn consent, as a stale answer would
    refused = await svc.refer(sender, body(case_id, recipient))
    assert refused.status_code == 409 and refused.json()["type"].endswith("consent-missing")

    erased_case, _ = svc.intake.add_case(sender, consent_to=recipient)
    await svc.apply("case.erased.v1", {"case_id": erased_case})
    assert (await svc.refer(sender, body(erased_case, recipient))).status_code == 404


async def test_concurrent_creates_and_suspension_leave_no_open_referral_to_a_suspended_agency(svc: Service) -> None:
    sender, recipient = await svc.agency(), await svc.agency()
    cases = [svc.intake.add_case(sender, consent_to=recipient)[0] for _ in range(8)]
    results = await asyncio.gather(*[svc.refer(sender, body(c, recipient)) for c in cases],
                                   svc.agency(recipient, status="suspended"))
    created = [r.json()["id"] for r in results[:-1] if r.status_code == 201]  # type: ignore[union-attr]
    for rid in created:
        shown = await status_of(svc, sender, rid)
        assert shown["status"] == "cancelled", shown
    refused = [r for r in results[:-1] if r.status_code != 201]  # type: ignore[union-attr]
    assert all(r.json()["type"].endswith("recipient-suspended") for r in refused)  # type: ignore[union-attr]
