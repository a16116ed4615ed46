"""intake's read models follow the referral and registry events on the real broker."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from sqlalchemy import select, text

from services.intake.store import AgencyRow, ReferralRow
from shared import envelope
from shared.kafka import ensure_topics, make_producer
from shared.topics import AUDIT_ACCESS, REFERRAL_EVENTS, REGISTRY_EVENTS
from tests.integration.intake.conftest import (
    Intake,
    access_records,
    agency,
    case_body,
    consent_body,
    topic_events,
)


async def _publish(bootstrap: str, topic: str, type: str, key: str, data: dict[str, object]) -> None:
    await ensure_topics(bootstrap, [topic])
    producer = make_producer(bootstrap)
    await producer.start()
    try:
        event = envelope.Event(id=str(uuid.uuid4()), source="/refnet/test", type=type, subject=None,
                               partition_key=key, time=datetime.now(UTC), data=data)
        k, v, headers = envelope.encode(event)
        await producer.send_and_wait(topic, value=v, key=k, headers=headers)
    finally:
        await producer.stop()


async def _eventually(check: object, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.3)
    raise AssertionError("the read model did not catch up")


async def test_referral_events_open_and_close_a_recipients_access(intake: Intake) -> None:
    owner, recipient = agency(), agency()
    created = await intake.register(owner, case_body(consent=consent_body(recipient)))
    case_id = created["id"]
    referral_id = f"ref-{uuid.uuid4().hex[:10]}"
    data = {"referral_id": referral_id, "case_id": case_id, "from_agency": owner, "to_agency": recipient,
            "status": "requested", "pathway": "protection", "shared_categories": ["identity"],
            "consent_id": "c1", "due_at": "2030-01-01T00:00:00Z"}
    await _publish(intake.bootstrap, REFERRAL_EVENTS, "referral.requested.v1", case_id, data)

    async def readable() -> bool:
        return (await intake.read(case_id, recipient, "referral")).status_code == 200

    await _eventually(readable)
    await _publish(intake.bootstrap, REFERRAL_EVENTS, "referral.cancelled.v1", case_id,
                   data | {"status": "cancelled"})

    async def closed() -> bool:
        async with intake.app.state.runtime.sessions() as session:
            row = await session.get(ReferralRow, referral_id)
            return row is not None and row.status == "cancelled"

    await _eventually(closed)
    assert (await intake.read(case_id, recipient, "referral")).status_code == 404

    agency_id = agency()
    await _publish(intake.bootstrap, REGISTRY_EVENTS, "agency.suspended.v1", agency_id,
                   {"agency_id": agency_id, "status": "suspended"})

    async def suspended() -> bool:
        async with intake.app.state.runtime.sessions() as session:
            rows = (await session.execute(select(AgencyRow).where(AgencyRow.id == agency_id))).scalars().all()
            return bool(rows) and rows[0].status == "suspended"

    await _eventually(suspended)


async def test_a_recipient_reading_as_soon_as_it_is_told_leaves_no_refusal(intake: Intake) -> None:
    """A case system reads the case the moment its webhook says "referred": intake may not have applied the
    referral event yet. It applies what the broker holds before refusing, so the read succeeds and the audit
    log holds no refusal an auditor would take for probing."""
    owner, recipient = agency(), agency()
    case_id = (await intake.register(owner, case_body(consent=consent_body(recipient))))["id"]
    data = {"referral_id": f"ref-{uuid.uuid4().hex[:10]}", "case_id": case_id, "from_agency": owner,
            "to_agency": recipient, "status": "requested", "pathway": "protection",
            "shared_categories": ["identity"], "consent_id": "c1", "due_at": "2030-01-01T00:00:00Z"}
    # Hold intake's consumer back for a second (its upsert waits on the lock), as a busy consumer would be.
    async with intake.app.state.runtime.sessions() as blocker:
        await blocker.execute(text("LOCK TABLE referrals IN SHARE MODE"))
        await _publish(intake.bootstrap, REFERRAL_EVENTS, "referral.requested.v1", case_id, data)

        async def release() -> None:
            await asyncio.sleep(1.0)
            await blocker.rollback()

        read, _ = await asyncio.gather(intake.read(case_id, recipient, "referral"), release())
    assert read.status_code == 200, read.text
    records = await topic_events(intake.bootstrap, AUDIT_ACCESS, access_records(case_id), expect=2, timeout=5)
    reads = [r.data for r in records if r.data["action"] == "case.read" and r.data["agency"] == recipient]
    assert [r["outcome"] for r in reads] == ["success"]


async def test_a_party_with_no_referral_is_still_refused_once(intake: Intake) -> None:
    owner, stranger = agency(), agency()
    case_id = (await intake.register(owner, case_body()))["id"]
    assert (await intake.read(case_id, stranger, "referral")).status_code == 404
    records = await topic_events(intake.bootstrap, AUDIT_ACCESS, access_records(case_id), expect=3, timeout=5)
    reads = [r.data for r in records if r.data["action"] == "case.read" and r.data["agency"] == stranger]
    assert [(r["outcome"], r["details"]["reason"]) for r in reads] == [("denied", "not-a-party")]
