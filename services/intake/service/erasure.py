"""Erasure use cases: crypto-shred a case on its owner's request, and again after a restore of the database."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.intake import events as ev
from services.intake import store
from services.intake.service.common import Resources, actor, now, own_case, shred
from shared.auth import Principal
from shared.db import unit_of_work


@dataclass(frozen=True)
class Erasure:
    """Crypto-shredding: destroy a case's data key and ciphertext; the pseudonymous record stays."""

    res: Resources

    async def erase(self, principal: Principal, case_id: str) -> dict[str, Any]:
        async with unit_of_work(self.res.sessions) as session:
            row = await own_case(session, principal, case_id, lock=True)
            if row.status != "erased":
                await shred(session, row, now())
                # The event is the act's audit entry (one entry per act: no access record beside it).
                await self.res.emit(session, ev.CASE_ERASED, row.id, ev.CaseErased(case_id=row.id, **actor(principal)))
        return {"id": row.id, "status": "erased"}


async def reapply_erasures(sessions: async_sessionmaker[AsyncSession],
                           erasures: Sequence[tuple[str, datetime]]) -> list[str]:
    """After a restore: shred again every case the log says was erased (``(case id, when)``) but which
    the restored database holds unerased. -> the case ids shredded now. Idempotent.

    No ``case.erased`` event is emitted: the erasure was recorded (and consumed) when it happened; this
    only repairs intake's own state, which went back in time with the restore."""
    when = dict(erasures)
    shredded: list[str] = []
    ids = sorted(when)
    for start in range(0, len(ids), 500):
        async with unit_of_work(sessions) as session:
            for row in await store.unerased_cases(session, ids[start:start + 500]):
                await shred(session, row, when[row.id])
                shredded.append(row.id)
    return shredded
