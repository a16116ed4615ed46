"""The single sequencer: dense indexes in append order, whatever runs at once, each event once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from services.audit import service
from shared.envelope import Event
from tests.integration.audit.conftest import AuditHarness


def _event(n: int) -> Event:
    return Event(id=f"ev-{n}", source="/refnet/referral", type="org.refnet.referral.received.v1", subject=None,
                 partition_key=f"case-{n % 7}", time=datetime.now(UTC),
                 data={"case_id": f"case-{n % 7}", "referral_id": f"r-{n}", "agency": "unhcr"})


async def test_concurrent_sequencers_append_densely_and_once(audit: AuditHarness) -> None:
    sessions = audit.app.state.runtime.sessions
    for n in range(300):
        async with sessions() as session, session.begin():
            await service.record_event(session, _event(n))
    # The same events queued again (as a second consumer group would): logged once all the same.
    for n in range(0, 300, 10):
        async with sessions() as session, session.begin():
            await service.record_event(session, _event(n))

    async def drain() -> int:
        total = 0
        while True:
            count = await service.sequence_pending(sessions, 37)
            if count == 0 and audit.sql("SELECT count(*) FROM audit_pending").strip() == "0":
                return total
            total += count
            await asyncio.sleep(0)

    # Four more sequencers beside the service's own background one.
    appended = await asyncio.gather(*(drain() for _ in range(4)))
    assert sum(appended) <= 300
    await audit.wait_for_size(300)
    assert audit.sql("SELECT count(*), min(idx), max(idx), count(DISTINCT event_id) FROM audit_entries"
                     ).strip() == "300|0|299|300"
    report = (await audit.get("/audit/verify")).json()
    assert report["ok"] is True and report["tree_size"] == 300
    levels = audit.sql("SELECT level, count(*) FROM merkle_nodes GROUP BY level ORDER BY level").split()
    # Every perfect subtree stored once: 300 leaves, 150 pairs, 75, 37, 18, 9, 4, 2, 1.
    assert levels == ["0|300", "1|150", "2|75", "3|37", "4|18", "5|9", "6|4", "7|2", "8|1"]
