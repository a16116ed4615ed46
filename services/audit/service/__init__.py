"""audit's use cases, one class per aggregate, each public method one transaction (the ingest handler runs in
the consumer's inbox transaction):

* :class:`Ingest` (``ingest.py``): queue an event's entry, sequence the queue into the log;
* :class:`Entries` (``entries.py``): read the log, a case's access and consent history;
* :class:`Checkpoints` (``checkpoints.py``): sign the log's state, take witnesses' cosignatures;
* :class:`Proofs` (``proofs.py``): inclusion and consistency proofs;
* :class:`Verification` (``verification.py``): recompute the tree and compare.

The functions at the end serve callers without a running service (the offline ``refnet audit`` commands, the
benchmark, other services' restore tests): they build the use case they need from a session factory.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.audit.service.checkpoints import Checkpoints, LogInconsistent, checkpoint_json
from services.audit.service.entries import Entries, InvalidParameter, Page
from services.audit.service.ingest import Ingest
from services.audit.service.proofs import Proofs
from services.audit.service.verification import FullVerifyGate, Verification, recomputed_root, verify_log
from shared.envelope import Event

__all__ = [
    "Checkpoints",
    "Entries",
    "FullVerifyGate",
    "Ingest",
    "InvalidParameter",
    "LogInconsistent",
    "Page",
    "Proofs",
    "Verification",
    "checkpoint_json",
    "inclusion_proof",
    "recomputed_root",
    "record_event",
    "sequence_pending",
    "verify_log",
]


async def record_event(session: AsyncSession, event: Event) -> None:
    """:meth:`Ingest.record`."""
    await Ingest.record(session, event)


async def sequence_pending(sessions: async_sessionmaker[AsyncSession], batch_size: int) -> int:
    """:meth:`Ingest.sequence`."""
    return await Ingest(sessions).sequence(batch_size)


async def inclusion_proof(sessions: async_sessionmaker[AsyncSession], index: int, tree_size: int | None
                          ) -> dict[str, Any]:
    """:meth:`Proofs.inclusion`."""
    return await Proofs(sessions).inclusion(index, tree_size)
