"""audit's tables (its own database; no other service reads them) and every query on them.

The log tables only ever see INSERT and SELECT (migration audit_0002 makes the database enforce it).
Merkle nodes are perfect subtrees ``(level, idx)``; any operation reads the ``O(log n)`` of them
``services.audit.merkle`` plans, in one query.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    LargeBinary,
    MetaData,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    and_,
    bindparam,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import DeclarativeBase

from services.audit.domain import EntryDraft
from services.audit.merkle import NodeId, StoredNode
from shared.db import NAMING


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _entry_columns() -> list[Column[Any]]:
    return [
        Column("action", Text, nullable=False),
        Column("outcome", Text, nullable=False),
        Column("agency", Text),
        Column("client_id", Text),
        Column("acting_user", Text),
        Column("purpose", Text),
        Column("resource_type", Text),
        Column("resource_id", Text),
        Column("case_id", Text),
        Column("source_service", Text, nullable=False),
        Column("event_id", Text, nullable=False),
        Column("occurred_at", DateTime(timezone=True), nullable=False),
        Column("details", JSONB, nullable=False),
    ]


pending = Table(
    "audit_pending", Base.metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=True),
    *_entry_columns(),
    UniqueConstraint("source_service", "event_id", name="uq_audit_pending_event"),
)

entries = Table(
    "audit_entries", Base.metadata,
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    *_entry_columns(),
    UniqueConstraint("source_service", "event_id", name="uq_audit_entries_event"),
    Index("ix_audit_entries_agency", "agency", "idx"),
    Index("ix_audit_entries_action", "action", "idx"),
    Index("ix_audit_entries_recorded", "recorded_at"),
)

nodes = Table(
    "merkle_nodes", Base.metadata,
    Column("level", SmallInteger, primary_key=True, autoincrement=False),
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary, nullable=False),
)

checkpoints = Table(
    "audit_checkpoints", Base.metadata,
    Column("tree_size", BigInteger, primary_key=True, autoincrement=False),
    Column("root_hash", LargeBinary, nullable=False),
    Column("origin", Text, nullable=False),
    Column("signed_at", DateTime(timezone=True), nullable=False),
    Column("body", Text, nullable=False),
    Column("key_id", Text, nullable=False),
    Column("signature", LargeBinary, nullable=False),
)

ENTRY_COLUMNS = (
    "action", "outcome", "agency", "client_id", "acting_user", "purpose", "resource_type", "resource_id",
    "case_id", "source_service", "event_id", "occurred_at", "details",
)
#: An ``audit_entries`` row in column order (``details`` last), as the sequencer writes it and a scan reads it.
LOG_COLUMNS = ("idx", "recorded_at", *ENTRY_COLUMNS)

# One sequencer at a time across all replicas: a transaction-scoped advisory lock.
SEQUENCER_LOCK = 0x52464E4155444954  # "RFNAUDIT"


# --- the queue ------------------------------------------------------------------------------------------


async def add_pending(session: AsyncSession, draft: EntryDraft) -> None:
    await session.execute(insert(pending).values({name: getattr(draft, name) for name in ENTRY_COLUMNS}))


async def take_sequencer_lock(session: AsyncSession) -> bool:
    return bool((await session.execute(select(func.pg_try_advisory_xact_lock(SEQUENCER_LOCK)))).scalar_one())


async def driver_connection(session: AsyncSession | AsyncConnection) -> Any:
    """The asyncpg connection under the caller's transaction (which must have begun).

    The log's bulk paths -- the sequencer's batches, a verification's full scan -- use it directly: per row,
    the ORM's result and parameter processing costs more than the hashing does. ``details`` still comes and
    goes through the JSON codec SQLAlchemy's dialect installs on every connection (JSON text in, dict out).
    """
    connection = await session.connection() if isinstance(session, AsyncSession) else session
    raw = await connection.get_raw_connection()
    return raw.driver_connection


async def oldest_pending(session: AsyncSession, limit: int) -> Sequence[Any]:
    """The oldest queued entries, as driver records (``seq`` and ``ENTRY_COLUMNS`` by name)."""
    driver = await driver_connection(session)
    records: Sequence[Any] = await driver.fetch(
        f"SELECT seq, {', '.join(ENTRY_COLUMNS)} FROM audit_pending ORDER BY seq LIMIT $1", limit)  # noqa: S608
    return records


async def remove_pending(session: AsyncSession, seqs: list[int]) -> None:
    await session.execute(text("DELETE FROM audit_pending WHERE seq = ANY(CAST(:seqs AS BIGINT[]))"), {"seqs": seqs})


# --- the log --------------------------------------------------------------------------------------------


async def tree_size(session: AsyncSession | AsyncConnection) -> int:
    value = (await session.execute(select(func.max(entries.c.idx)))).scalar_one()
    return 0 if value is None else int(value) + 1


async def already_logged(session: AsyncSession, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of (source_service, event_id) are in the log already (a second consumer group, a replay)."""
    wanted = list(keys)
    if not wanted:
        return set()
    # Both lists as arrays on the unique index (source_service, event_id): an index scan whatever the log's
    # size (a join against an unnest() was planned as a full scan of the log), then the exact pairs here.
    rows = await session.execute(
        text(
            "SELECT source_service, event_id FROM audit_entries "
            "WHERE source_service = ANY(CAST(:s AS TEXT[])) AND event_id = ANY(CAST(:i AS TEXT[]))"
        ),
        {"s": sorted({k[0] for k in wanted}), "i": [k[1] for k in wanted]},
    )
    pairs = set(wanted)
    return {(r[0], r[1]) for r in rows if (r[0], r[1]) in pairs}


async def append_entries(session: AsyncSession, rows: Sequence[Sequence[Any]], new_nodes: list[StoredNode]) -> None:
    """Entries (each in ``LOG_COLUMNS`` order, ``details`` a dict) and their new Merkle nodes, by COPY."""
    driver = await driver_connection(session)
    if rows:
        records = [(*row[:-1], json.dumps(row[-1])) for row in rows]
        await driver.copy_records_to_table("audit_entries", records=records, columns=LOG_COLUMNS)
    if new_nodes:
        await driver.copy_records_to_table("merkle_nodes", records=new_nodes, columns=("level", "idx", "hash"))


async def fetch_nodes(session: AsyncSession | AsyncConnection, ids: Sequence[NodeId]) -> dict[NodeId, bytes]:
    if not ids:
        return {}
    rows = await session.execute(
        text(
            "SELECT n.level, n.idx, n.hash FROM merkle_nodes n "
            "JOIN unnest(CAST(:levels AS SMALLINT[]), CAST(:idxs AS BIGINT[])) AS k(level, idx) "
            "ON n.level = k.level AND n.idx = k.idx"
        ),
        {"levels": [level for level, _ in ids], "idxs": [idx for _, idx in ids]},
    )
    return {(int(r[0]), int(r[1])): bytes(r[2]) for r in rows}


def _filters(
    *, case_id: str | None = None, agency: str | None = None, actions: Sequence[str] | None = None,
    action_prefix: str | None = None, since: datetime | None = None, until: datetime | None = None,
    after: int | None = None,
) -> list[Any]:
    conditions: list[Any] = []
    if case_id is not None:
        conditions.append(entries.c.case_id == case_id)
    if agency is not None:
        conditions.append(entries.c.agency == agency)
    if actions:
        conditions.append(entries.c.action.in_(list(actions)))
    if action_prefix is not None:
        conditions.append(entries.c.action.startswith(action_prefix, autoescape=True))
    if since is not None:
        conditions.append(entries.c.recorded_at >= since)
    if until is not None:
        conditions.append(entries.c.recorded_at < until)
    if after is not None:
        conditions.append(entries.c.idx > after)
    return conditions


async def find_entries(session: AsyncSession, *, limit: int, **filters: Any) -> Sequence[Any]:
    conditions = _filters(**filters)
    query = select(entries).where(and_(True, *conditions)).order_by(entries.c.idx).limit(limit)
    return (await session.execute(query)).all()


async def case_entries(session: AsyncSession, case_id: str) -> Sequence[Any]:
    """Everything the log holds about one case, in log order (a case has tens of entries, not millions)."""
    query = select(entries).where(entries.c.case_id == case_id).order_by(entries.c.idx)
    return (await session.execute(query)).all()


async def leaf_hash(session: AsyncSession, index: int) -> bytes | None:
    found = await fetch_nodes(session, [(0, index)])
    return found.get((0, index))


async def scan_entries_with_leaves(conn: AsyncConnection, prefetch: int = 5000) -> AsyncGenerator[Any, None]:
    """Every entry in index order as a driver record: ``LOG_COLUMNS`` and ``stored_leaf`` (NULL if the leaf's
    node is missing). The verification's full scan: a million rows, no ORM row objects."""
    driver = await driver_connection(conn)
    query = (
        f"SELECT {', '.join('e.' + c for c in LOG_COLUMNS)}, n.hash AS stored_leaf FROM audit_entries e "  # noqa: S608
        "LEFT JOIN merkle_nodes n ON n.level = 0 AND n.idx = e.idx ORDER BY e.idx"
    )
    cursor = await driver.cursor(query)
    # The next batch is asked for before this one is used, so the server reads and joins it while we hash.
    following = asyncio.ensure_future(cursor.fetch(prefetch))
    try:
        while batch := await following:
            following = asyncio.ensure_future(cursor.fetch(prefetch))
            await asyncio.sleep(0)  # let the request go out
            for record in batch:
                yield record
    finally:
        if not following.done():
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await following


async def stream_entries_with_leaves(conn: AsyncConnection, batch: int = 2000) -> AsyncIterator[Any]:
    """Every entry in index order beside its stored leaf hash (NULL if the node is missing)."""
    query = (
        select(entries, nodes.c.hash.label("stored_leaf"))
        .select_from(entries.outerjoin(nodes, and_(nodes.c.level == 0, nodes.c.idx == entries.c.idx)))
        .order_by(entries.c.idx)
        .execution_options(yield_per=batch)
    )
    result = await conn.stream(query)
    async for row in result:
        yield row


# --- checkpoints ----------------------------------------------------------------------------------------


async def latest_checkpoint(session: AsyncSession) -> Any | None:
    query = select(checkpoints).order_by(checkpoints.c.tree_size.desc()).limit(1)
    return (await session.execute(query)).first()


async def all_checkpoints(session: AsyncSession | AsyncConnection) -> Sequence[Any]:
    return (await session.execute(select(checkpoints).order_by(checkpoints.c.tree_size))).all()


async def add_checkpoint(session: AsyncSession, values: Mapping[str, Any]) -> None:
    statement = text(
        "INSERT INTO audit_checkpoints (tree_size, root_hash, origin, signed_at, body, key_id, signature) "
        "VALUES (:tree_size, :root_hash, :origin, :signed_at, :body, :key_id, :signature) "
        "ON CONFLICT (tree_size) DO NOTHING"
    ).bindparams(bindparam("root_hash", type_=LargeBinary), bindparam("signature", type_=LargeBinary))
    await session.execute(statement, dict(values))
