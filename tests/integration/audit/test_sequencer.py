"""The single sequencer: dense indexes in append order, whatever runs at once, each event once."""

from __future__ import annotations

import asyncio
import hashlib
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


async def test_awkward_values_verify_and_hash_as_the_api_shows_them(audit: AuditHarness) -> None:
    """Escapes COPY must undo, NULLs, a year below 1000, fractions PostgreSQL trims, non-ASCII details."""
    import rfc8785

    from services.audit.domain import EntryDraft
    from services.audit.store import add_pending

    sessions = audit.app.state.runtime.sessions
    awkward = ["tab\there", "new\nline", "back\\slash \\N", 'quote"d', "\x01\x1f\x7f", "é€𝄞\u2028", "\\N", ""]
    async with sessions() as session, session.begin():
        for n, text in enumerate(awkward):
            await add_pending(session, EntryDraft(
                action="case.read", outcome="success", source_service="intake", event_id=f"odd-{n}",
                occurred_at=datetime(999 if n % 2 else 2024, 5, 1, 10, 0, 0, n * 100_000, tzinfo=UTC),
                agency=text, purpose=None if n % 3 else text,
                details={"k": text, "ü": [1, True, None], "n": {"x": "\t"}} if n % 2 else {}))
    while await service.sequence_pending(sessions, 3):
        pass
    report = (await audit.get("/audit/verify")).json()
    assert report["ok"] is True and report["tree_size"] == len(awkward)
    shown = (await audit.get("/audit/entries", limit=500)).json()["items"]
    for entry in shown:
        proof = (await audit.get("/audit/proofs/inclusion", index=entry["index"])).json()
        assert proof["leaf_hash"] == hashlib.sha256(b"\x00" + rfc8785.dumps(entry)).hexdigest()
