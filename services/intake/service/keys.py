"""Keeping the sealed data sealed: re-seal what an older release left in clear, and re-wrap the data keys under
a new master key (``refnet keys rotate-intake``)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.intake import domain, store
from services.intake.crypto import Keyring, KeyUnavailable, MasterKey, Undecryptable, open_sealed, seal
from services.intake.service.common import CASE_LABEL, DEMOGRAPHIC_COLUMNS, Resources, now, seal_clear_facts
from shared.crypto import Envelope
from shared.db import unit_of_work
from shared.key_rotation import Slot, Wrapped, count_not_under, rewrap


@dataclass(frozen=True)
class Sealing:
    res: Resources

    async def seal_clear_facts(self, batch: int = 200) -> int:
        """Seal what cases still hold in clear of the sealed fields (trafficking facts, gender, citizenship, age
        band), batch by batch (resumable; replicas skip each other's rows). Returns how many cases it changed. A
        case whose key does not open is left for the next run."""
        done, after = 0, ""
        while True:
            async with unit_of_work(self.res.sessions) as session:
                rows = await store.cases_holding_in_clear(session, domain.SEALED_FACTS, DEMOGRAPHIC_COLUMNS,
                                                          after=after, limit=batch)
                for row in rows:
                    try:
                        data_key = await self.res.data_key(session, row.id) if row.sealed is not None else None
                        if data_key is None or row.sealed is None:
                            seal_clear_facts(row, None)  # erased: the facts should have gone with the key
                        else:
                            personal = open_sealed(data_key, row.sealed, case_id=row.id, label=CASE_LABEL)
                            row.sealed = seal(data_key, seal_clear_facts(row, personal), case_id=row.id,
                                              label=CASE_LABEL)
                    except (KeyUnavailable, Undecryptable):
                        continue  # left in clear until its master key is configured; the others go on
                    done += 1
            if len(rows) < batch:
                return done
            after = rows[-1].id


def _data_key_slots(row: store.CaseKeyRow) -> list[Slot]:
    def put(wrapped: bytes, key_id: str) -> None:
        row.wrapped_key, row.master_key_id, row.rewrapped_at = wrapped, key_id, now()

    return [Slot(row.wrapped_key, row.master_key_id, row.case_id, put)]


async def _pending(session: AsyncSession, key_id: str, limit: int) -> list[store.CaseKeyRow]:
    return await store.case_keys_not_under(session, key_id, limit=limit)


#: The cases' data keys, bound to their case (erased cases have none and stay that way); wrapped as
#: ``services.intake.crypto.wrap`` wraps them.
DATA_KEYS = Wrapped(envelope=Envelope("intake"), pending=_pending, slots=_data_key_slots,
                    count=store.count_case_keys_not_under)


async def rewrap_data_keys(sessions: async_sessionmaker[AsyncSession], old: Keyring, new_key: MasterKey,
                           batch: int = 200) -> int:
    """Re-wrap every data key not yet under ``new_key``; case data is not touched. Resumable: returns the
    number re-wrapped; erased cases have no key and stay that way."""
    return await rewrap(sessions, [DATA_KEYS], old, new_key, batch=batch)


async def count_data_keys_not_under(sessions: async_sessionmaker[AsyncSession], key: MasterKey) -> int:
    return await count_not_under(sessions, [DATA_KEYS], key)
