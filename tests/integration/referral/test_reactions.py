"""Reactions to other services' events: consent withdrawn, agency suspended, case erased -- through the
handlers, and once end to end over the real broker (intake's event in, the cancellation out on the
recipient's delivery topic)."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Any

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


async def test_consent_withdrawal_cancels_every_open_referral_made_under_consent(svc: Service) -> None:
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
    # A withdrawal leaves no consent in force (versions are append-only: only the latest counts), so the
    # referral made under the other consent ends too.
    assert (await status_of(svc, sender, to_b["id"]))["status"] == "cancelled"
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


def granted(case_id: str, consent_id: str, version: int, *provisions: tuple[str | None, list[str], str],
            **extra: Any) -> dict[str, Any]:
    """A consent.granted payload as intake emits it: provisions as (recipient or None, categories, decision)."""
    return {"case_id": case_id, "agency": "a", "client_id": "c", "consent_id": consent_id,
            "consent_version": version, "grantor": "self", "valid_from": "2026-01-01T00:00:00Z",
            "valid_until": "2027-01-01T00:00:00Z",
            "provisions": [{"purpose": "referral", "recipient_agency": to, "data_categories": cats, "decision": d}
                           for to, cats, d in provisions], **extra}


async def test_withdrawing_a_later_version_cancels_a_referral_made_under_an_earlier_one(svc: Service) -> None:
    """Issue 16, finding 8: made under v1; v2 replaced v1 (still covering it); v2 withdrawn -> cancelled."""
    sender, recipient = await svc.agency(), await svc.agency()
    case_id, v1 = svc.intake.add_case(sender, consent_to=recipient)
    rid = (await svc.refer(sender, body(case_id, recipient))).json()["id"]
    await svc.apply("consent.granted.v1", granted(case_id, v1, 1, (recipient, ["identity", "demographics"], "permit")))
    v2 = "consent-" + uuid.uuid4().hex[:12]
    await svc.apply("consent.granted.v1", granted(case_id, v2, 2, (None, ["identity", "demographics"], "permit")))
    assert (await status_of(svc, sender, rid))["status"] == "requested"  # v2 still covers it

    await svc.apply("consent.withdrawn.v1", {"case_id": case_id, "consent_id": v2, "agency": sender,
                                             "client_id": "c", "consent_version": 3, "withdrawn_version": 2})
    shown = await status_of(svc, sender, rid)
    assert shown["status"] == "cancelled"
    assert shown["history"][-1]["reason_code"] == "consent-withdrawn"


async def test_a_new_version_that_no_longer_permits_a_referral_cancels_it(svc: Service) -> None:
    sender, a, b = await svc.agency(), await svc.agency(), await svc.agency()
    case_id, v1 = svc.intake.add_case(sender, consent_to=None)
    to_a = (await svc.refer(sender, body(case_id, a))).json()["id"]
    to_b = (await svc.refer(sender, body(case_id, b))).json()["id"]
    to_b_minimal = (await svc.refer(sender, body(case_id, b, service_type="mhpss",
                                                 shared_categories=["identity"]))).json()["id"]

    # v2: b only -- the referral to a is no longer consented to
    await svc.apply("consent.granted.v1", granted(case_id, "consent-v2-" + uuid.uuid4().hex[:6], 2,
                                                  (b, ["identity", "demographics"], "permit")))
    assert (await status_of(svc, sender, to_a))["status"] == "cancelled"
    assert (await status_of(svc, sender, to_b))["status"] == "requested"
    # v3: demographics denied to any agency (deny wins) -- only the referral sharing identity alone stays
    await svc.apply("consent.granted.v1", granted(case_id, "consent-v3-" + uuid.uuid4().hex[:6], 3,
                                                  (b, ["identity", "demographics"], "permit"),
                                                  (None, ["demographics"], "deny")))
    assert (await status_of(svc, sender, to_b))["status"] == "cancelled"
    assert (await status_of(svc, sender, to_b_minimal))["status"] == "requested"
    # an older version arriving late (a replay) changes nothing: v3 stays in force
    await svc.apply("consent.granted.v1", granted(case_id, v1, 1, (None, ["identity"], "deny")))
    assert (await status_of(svc, sender, to_b_minimal))["status"] == "requested"


async def test_a_clearance_older_than_the_version_we_know_cannot_make_a_referral(svc: Service) -> None:
    """intake answered under v1 while we already heard of v2 replacing and v3 withdrawing it."""
    sender, recipient = await svc.agency(), await svc.agency()
    case_id, _ = svc.intake.add_case(sender, consent_to=recipient)
    v2 = "consent-" + uuid.uuid4().hex[:12]
    await svc.apply("consent.granted.v1", granted(case_id, v2, 2, (recipient, ["identity"], "permit")))
    await svc.apply("consent.withdrawn.v1", {"case_id": case_id, "consent_id": v2, "agency": sender,
                                             "client_id": "c", "consent_version": 3, "withdrawn_version": 2})
    refused = await svc.refer(sender, body(case_id, recipient))  # the fake intake still answers with v1
    assert refused.status_code == 409 and refused.json()["type"].endswith("consent-missing")
