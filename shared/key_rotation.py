"""Master-key rotation, once for every service that keeps keys wrapped under a master key (intake's case data
keys; referral's case data keys and webhook signing secrets): re-wrap, batch by batch, what is not yet under
the new key, and stage and install the new key file.

What a service re-wraps stays the service's: its ``Wrapped`` sources say which rows are not yet under a key
and where in a row a wrapped key sits (its bytes, the master key that wrapped it, what it is bound to).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.crypto import STAGED_SUFFIX, Envelope, Keyring, MasterKey, write_key_file
from shared.db import make_engine, make_sessionmaker, unit_of_work


@dataclass(frozen=True)
class Slot:
    """One wrapped key in a row: its bytes, the id of the master key that wrapped it, what the wrapping is bound
    to (a case id, a subscription), and how to store it re-wrapped (bytes, new key id)."""

    wrapped: bytes
    key_id: str
    binding: str
    put: Callable[[bytes, str], None]


@dataclass(frozen=True)
class Wrapped:
    """One kind of wrapped key a service keeps.

    ``pending(session, key_id, limit)``: up to ``limit`` rows holding a key not wrapped by ``key_id``, locked
    (``FOR UPDATE SKIP LOCKED``: two runs skip each other's rows); ``slots(row)``: the wrapped keys of a row;
    ``count(session, key_id)``: how many rows still hold one not wrapped by ``key_id``.
    """

    envelope: Envelope
    pending: Callable[[AsyncSession, str, int], Awaitable[Sequence[Any]]]
    slots: Callable[[Any], Iterable[Slot]]
    count: Callable[[AsyncSession, str], Awaitable[int]]


async def rewrap(sessions: async_sessionmaker[AsyncSession], sources: Sequence[Wrapped], old: Keyring,
                 new_key: MasterKey, *, batch: int = 200) -> int:
    """Re-wrap under ``new_key`` every key of ``sources`` not yet under it, each batch one transaction; only
    the wrapping changes, never what the keys protect. Resumable. -> how many keys were re-wrapped.
    ``KeyUnavailable`` / ``Undecryptable`` when a key was wrapped by a master key ``old`` does not hold."""
    done = 0
    for source in sources:
        while True:
            changed = 0
            async with unit_of_work(sessions) as session:
                rows = await source.pending(session, new_key.key_id, batch)
                for row in rows:
                    for slot in source.slots(row):
                        if slot.key_id == new_key.key_id:
                            continue
                        key = source.envelope.unwrap(slot.wrapped, old.by_id(slot.key_id), slot.binding)
                        slot.put(source.envelope.wrap(key, new_key, slot.binding), new_key.key_id)
                        changed += 1
            done += changed
            # A full batch that changed nothing would come back unchanged: stop rather than loop for ever
            # (``count`` then reports those rows).
            if len(rows) < batch or not changed:
                break
    return done


async def count_not_under(sessions: async_sessionmaker[AsyncSession], sources: Sequence[Wrapped],
                          key: MasterKey) -> int:
    """Rows still holding a key not wrapped by ``key``."""
    async with sessions() as session:
        return sum([await source.count(session, key.key_id) for source in sources])


def stage(key_file: Path, new_key: MasterKey | None) -> tuple[Path, MasterKey]:
    """Write the new key beside the current one (``<key_file>.new``), where a service loading its keys finds it
    too; without ``new_key`` the one already staged (an interrupted rotation), else a new one."""
    staged = Path(str(key_file) + STAGED_SUFFIX)
    if new_key is None:
        new_key = MasterKey.from_file(staged) if staged.exists() else MasterKey.generate()
    write_key_file(staged, new_key)
    return staged, new_key


def install(staged: Path, key_file: Path) -> None:
    staged.replace(key_file)


async def rotate_key_file(database_url: str, sources: Sequence[Wrapped], key_file: Path,
                          new_key: MasterKey | None = None,
                          previous: Path | None = None) -> tuple[MasterKey, int, int]:
    """Re-wrap under a new master key every key of ``sources`` wrapped by the key in ``key_file`` (or
    ``previous``), then replace ``key_file`` with the new key. -> (new key, keys re-wrapped, rows left under
    other keys).

    The new key is staged first (``stage``), so an interrupted rotation resumes with that key; after the
    install one more sweep takes what a running service wrapped under the old key meanwhile.
    """
    old = MasterKey.from_file(key_file)
    staged, new_key = stage(key_file, new_key)
    ring = Keyring(old, (MasterKey.from_file(previous),) if previous else ())
    engine = make_engine(database_url, pool_size=2)
    sessions = make_sessionmaker(engine)
    try:
        count = await rewrap(sessions, sources, ring, new_key)
        install(staged, key_file)
        count += await rewrap(sessions, sources, ring, new_key)
        left = await count_not_under(sessions, sources, new_key)
    finally:
        await engine.dispose()
    return new_key, count, left


async def rewrap_to_current(database_url: str, sources: Sequence[Wrapped], ring: Keyring) -> tuple[int, int]:
    """The two-key layout (read-only mounts): the new key is already the configured current key and the old
    one the configured previous key. Re-wrap every key under the current key; write no file.
    -> (keys re-wrapped, rows left under other keys)."""
    engine = make_engine(database_url, pool_size=2)
    sessions = make_sessionmaker(engine)
    try:
        count = await rewrap(sessions, sources, ring, ring.current)
        return count, await count_not_under(sessions, sources, ring.current)
    finally:
        await engine.dispose()
