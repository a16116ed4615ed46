"""Ingest: an event becomes a queued entry (in the consumer's inbox transaction), the sequencer appends the queue."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime

from prometheus_client import Counter, Gauge
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.audit import store
from services.audit.domain import NotAuditable, draft_from_event
from services.audit.leaf import LeafWriter, format_time
from services.audit.merkle import append_plan
from shared.consumer import PoisonEvent
from shared.envelope import Event

ENTRIES_APPENDED = Counter("refnet_audit_entries_appended_total", "Entries the sequencer appended to the log")
TREE_SIZE = Gauge("refnet_audit_tree_size", "Entries in the log after the last append")


class Ingest:
    """The log's intake: queue what the consumer hands over, append the queue to the log."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    @staticmethod
    async def record(session: AsyncSession, event: Event) -> None:
        """The consumer's effect, in its inbox transaction: queue the event's entry for the sequencer."""
        try:
            draft = draft_from_event(event)
        except NotAuditable as exc:
            raise PoisonEvent(f"not auditable: {exc}") from None
        await store.add_pending(session, draft)

    async def sequence(self, batch_size: int) -> int:
        """Append the oldest queued entries to the log: dense indexes, leaves, Merkle nodes, one transaction.

        Only the holder of the sequencer lock appends, so indexes never collide across replicas. Reads the
        tree's size and right border (``O(log n)`` nodes) in one query and nothing else of the tree. The
        entries go from the queue to the log inside the server (one INSERT ... SELECT from the DELETE), which
        runs while their leaves are hashed here; only the new Merkle nodes are sent. Returns how many it
        appended.
        """
        async with self.sessions() as session, session.begin():
            if not await store.take_sequencer_lock(session):
                return 0
            driver = await store.driver_connection(session)
            queued = await store.pending_leaves(driver, batch_size)
            if not queued:
                return 0
            size, border = await store.size_and_border(driver)
            # An event already in the log (a replayed consumer group) leaves the queue without a second entry;
            # the queue's own unique key keeps one batch free of twins.
            placed = [item for item in queued if not item["logged"]]
            recorded_at = datetime.now(UTC)
            moving = asyncio.ensure_future(store.move_to_log(
                driver, [item["seq"] for item in queued], [item["seq"] for item in placed], size, recorded_at))
            try:
                await asyncio.sleep(0)  # the statement goes out; the server inserts while we hash
                recorded_text = format_time(recorded_at)
                leaf = LeafWriter().leaf
                sha256 = hashlib.sha256
                leaves = [
                    sha256(b"\x00" + leaf(index, recorded_text, format_time(item["occurred_at"]), item)).digest()
                    for index, item in enumerate(placed, size)
                ]
                result = append_plan(size, border, leaves)
            finally:
                moved = await moving
            if moved != len(placed):
                raise RuntimeError(f"the sequencer moved {moved} entries to the log, not {len(placed)}")
            await store.add_nodes(driver, result.nodes)
        ENTRIES_APPENDED.inc(len(placed))
        TREE_SIZE.set(result.size)
        return len(placed)
