"""Keeping the sealed data sealed: re-seal what an older release left in clear, and re-wrap the data keys under
a new master key (``refnet keys rotate-intake``)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.intake import domain, store
from services.intake.crypto import Keyring, KeyUnavailable, MasterKey, Undecryptable, open_sealed, seal, unwrap, wrap
from services.intake.service.common import CASE_LABEL, DEMOGRAPHIC_COLUMNS, Resources, now, seal_clear_facts
from shared.db import unit_of_work


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


async def rewrap_data_keys(sessions: async_sessionmaker[AsyncSession], old: Keyring, new_key: MasterKey,
                           batch: int = 200) -> int:
    """Re-wrap every data key not yet under ``new_key``; case data is not touched. Resumable: returns the
    number re-wrapped; erased cases have no key and stay that way."""
    done = 0
    while True:
        async with unit_of_work(sessions) as session:
            rows = await store.case_keys_not_under(session, new_key.key_id, limit=batch)
            for row in rows:
                data_key = unwrap(row.wrapped_key, old.by_id(row.master_key_id), row.case_id)
                row.wrapped_key = wrap(data_key, new_key, row.case_id)
                row.master_key_id = new_key.key_id
                row.rewrapped_at = now()
        done += len(rows)
        if len(rows) < batch:
            return done


async def count_data_keys_not_under(sessions: async_sessionmaker[AsyncSession], key: MasterKey) -> int:
    async with sessions() as session:
        return await store.count_case_keys_not_under(session, key.key_id)
