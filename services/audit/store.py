"""audit's tables (its own database; no other service reads them) and every query on them.

The log tables only ever see INSERT and SELECT (migration audit_0002 makes the database enforce it).
Merkle nodes are perfect subtrees ``(level, idx)``; any operation reads the ``O(log n)`` of them
``services.audit.merkle`` plans, in one query.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
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
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase

from services.audit.copy_format import COPY_COLUMNS
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

cosignatures = Table(
    "audit_cosignatures", Base.metadata,
    Column("tree_size", BigInteger, primary_key=True, autoincrement=False),
    Column("witness", Text, nullable=False),
    Column("key_id", Text, primary_key=True),
    Column("cosigned_at", BigInteger, nullable=False),
    Column("line", Text, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

verified = Table(
    "audit_verified", Base.metadata,
    Column("tree_size", BigInteger, primary_key=True, autoincrement=False),
    Column("root_hash", LargeBinary, nullable=False),
    Column("verified_at", DateTime(timezone=True), nullable=False),
    Column("full_scan", Boolean, nullable=False),
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

#: The entry's text columns: everything but ``occurred_at`` and ``details``, which a leaf needs rewritten.
TEXT_COLUMNS = tuple(name for name in ENTRY_COLUMNS if name not in ("occurred_at", "details"))


# One sequencer at a time across all replicas: a transaction-scoped advisory lock.
SEQUENCER_LOCK = 0x52464E4155444954  # "RFNAUDIT"


# --- the queue ------------------------------------------------------------------------------------------


async def add_pending(session: AsyncSession, draft: EntryDraft) -> None:
    # The same event queued twice (a second consumer group, a replay) while its first copy still waits is one
    # entry: the queue keeps the first, and the sequencer leaves out what the log already holds.
    await session.execute(pg_insert(pending).values({name: getattr(draft, name) for name in ENTRY_COLUMNS})
                          .on_conflict_do_nothing(constraint="uq_audit_pending_event"))


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


async def pending_leaves(driver: Any, limit: int) -> Sequence[Any]:
    """The oldest queued entries as their leaves need them, as driver records: ``seq``, ``TEXT_COLUMNS``,
    ``occurred_at``, ``details`` (JSON text) and ``logged`` (the log has the event already: a replay, or a
    second consumer group). The last probes the unique index once per entry."""
    records: Sequence[Any] = await driver.fetch(
        f"SELECT p.seq, {', '.join('p.' + c for c in TEXT_COLUMNS)}, p.occurred_at, "  # noqa: S608
        "p.details::text AS details, EXISTS (SELECT 1 FROM audit_entries e "
        "WHERE e.source_service = p.source_service AND e.event_id = p.event_id) AS logged "
        "FROM audit_pending p ORDER BY p.seq LIMIT $1", limit)
    return records


_BORDER = """
WITH s AS (SELECT coalesce(max(idx) + 1, 0) AS n FROM audit_entries)
SELECT s.n, b.level, m.hash
FROM s
LEFT JOIN LATERAL (SELECT g AS level FROM generate_series(62, 0, -1) AS g WHERE (s.n >> g) & 1 = 1) AS b ON true
LEFT JOIN merkle_nodes m ON m.level = b.level AND m.idx = (s.n >> b.level) - 1
ORDER BY b.level DESC
"""


async def size_and_border(driver: Any) -> tuple[int, list[bytes]]:
    """The log's size and the hashes of its right border (``merkle.compact_range(size)``), in one query.

    The border node at level ``b`` exists for each set bit ``b`` of the size, and ends where the size's bits
    above and at ``b`` do: index ``(size >> b) - 1``.
    """
    rows = await driver.fetch(_BORDER)
    size = int(rows[0]["n"])
    border = [row["hash"] for row in rows if row["level"] is not None]
    if len(border) != size.bit_count() or any(h is None for h in border):
        raise LookupError(f"stored Merkle nodes missing on the border of a tree of size {size}")
    return size, [bytes(h) for h in border]


async def move_to_log(driver: Any, taken: Sequence[int], placed: Sequence[int], first_index: int,
                      recorded_at: datetime) -> int:
    """Insert the ``placed`` queue rows into the log at ``first_index`` onwards, then delete the ``taken`` ones:
    the entries go from table to table inside the server. Returns how many were inserted.

    In this order, two statements: the queue's trigger (migration audit_0004) lets a row go only once the log
    holds its event, and a statement does not see its own CTE's inserts.
    """
    columns = ", ".join(ENTRY_COLUMNS)
    status: str = await driver.execute(
        f"INSERT INTO audit_entries (idx, recorded_at, {columns}) "  # noqa: S608
        f"SELECT $2::bigint + k.n - 1, $3, {', '.join('p.' + c for c in ENTRY_COLUMNS)} FROM audit_pending p "
        "JOIN unnest($1::bigint[]) WITH ORDINALITY AS k(seq, n) ON k.seq = p.seq",
        list(placed), first_index, recorded_at)
    await driver.execute("DELETE FROM audit_pending WHERE seq = ANY($1::bigint[])", list(taken))
    return int(status.rsplit(" ", 1)[1])


async def add_nodes(driver: Any, new_nodes: list[StoredNode]) -> None:
    if new_nodes:
        await driver.copy_records_to_table("merkle_nodes", records=new_nodes, columns=("level", "idx", "hash"))


# --- the log --------------------------------------------------------------------------------------------


async def tree_size(session: AsyncSession | AsyncConnection) -> int:
    value = (await session.execute(select(func.max(entries.c.idx)))).scalar_one()
    return 0 if value is None else int(value) + 1


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


async def nodes_and_size(driver: Any, ids: Sequence[NodeId]) -> tuple[int, dict[NodeId, bytes]]:
    """The log's size and the stored nodes ``ids``, read in one statement (so from one snapshot)."""
    rows = await driver.fetch(
        "SELECT NULL::smallint AS level, (SELECT coalesce(max(idx) + 1, 0) FROM audit_entries) AS idx, "
        "NULL::bytea AS hash "
        "UNION ALL SELECT n.level, n.idx, n.hash FROM merkle_nodes n "
        "JOIN unnest($1::smallint[], $2::bigint[]) AS k(level, idx) ON n.level = k.level AND n.idx = k.idx",
        [level for level, _ in ids], [idx for _, idx in ids])
    size = 0
    found: dict[NodeId, bytes] = {}
    for level, idx, value in rows:
        if level is None:
            size = int(idx)
        else:
            found[(level, idx)] = value
    return size, found


async def log_size(driver: Any) -> int:
    return int(await driver.fetchval("SELECT coalesce(max(idx) + 1, 0) FROM audit_entries"))


@contextlib.asynccontextmanager
async def reader(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[Any]:
    """A pooled driver connection for reads of one statement each, outside any transaction.

    A proof reads its nodes and the log's size in one statement: a BEGIN and a ROLLBACK around it would be
    two more round trips for nothing.
    """
    async with sessions() as session:
        yield await driver_connection(session)


_COPY_LOG = (
    f"SELECT {', '.join('e.' + c for c in COPY_COLUMNS)}, encode(n.hash, 'hex') "  # noqa: S608
    "FROM audit_entries e LEFT JOIN merkle_nodes n ON n.level = 0 AND n.idx = e.idx WHERE e.idx >= $1 ORDER BY e.idx"
)


async def copy_log(conn: AsyncConnection, consume: Callable[[str], None], start: int = 0) -> None:
    """Every entry from index ``start`` on, in index order, as COPY text, handed to ``consume`` in chunks of
    whole lines (see ``copy_format.CopyLeafReader.copy_chunk``): the verification's scan.

    COPY is the cheapest way out of the server: no per-batch round trips, no per-column record building
    here, and the server keeps writing the next rows while ``consume`` hashes these. The times come in UTC,
    ISO style (``SET LOCAL``: for this transaction only).
    """
    driver = await driver_connection(conn)
    await driver.execute("SET LOCAL TimeZone = 'UTC'; SET LOCAL DateStyle = 'ISO, YMD'")
    carry = b""

    async def output(chunk: bytes) -> None:
        nonlocal carry
        data = carry + chunk if carry else bytes(chunk)
        end = data.rfind(b"\n") + 1  # a row may straddle two chunks
        carry = data[end:]
        if end:
            consume(data[:end].decode("utf-8"))

    await driver.copy_from_query(_COPY_LOG, start, output=output)
    if carry:
        consume(carry.decode("utf-8"))


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


async def checkpoint_at(session: AsyncSession | AsyncConnection, size: int) -> Any | None:
    return (await session.execute(select(checkpoints).where(checkpoints.c.tree_size == size))).first()


async def latest_checkpoint_cosigned(session: AsyncSession, at_least: int) -> Any | None:
    """The largest checkpoint with at least ``at_least`` cosignatures."""
    counted = (select(cosignatures.c.tree_size).group_by(cosignatures.c.tree_size)
               .having(func.count() >= at_least).scalar_subquery())
    query = (select(checkpoints).where(checkpoints.c.tree_size.in_(counted))
             .order_by(checkpoints.c.tree_size.desc()).limit(1))
    return (await session.execute(query)).first()


# --- cosignatures and verification marks ------------------------------------------------------------------


async def add_cosignature(session: AsyncSession, values: Mapping[str, Any]) -> None:
    """A witness's cosignature; the same witness cosigning the same checkpoint again keeps the first."""
    await session.execute(text(
        "INSERT INTO audit_cosignatures (tree_size, witness, key_id, cosigned_at, line) "
        "VALUES (:tree_size, :witness, :key_id, :cosigned_at, :line) ON CONFLICT (tree_size, key_id) DO NOTHING"
    ), dict(values))


async def cosignatures_of(session: AsyncSession | AsyncConnection, size: int) -> Sequence[Any]:
    query = select(cosignatures).where(cosignatures.c.tree_size == size).order_by(cosignatures.c.key_id)
    return (await session.execute(query)).all()


async def last_verified(session: AsyncSession | AsyncConnection) -> Any | None:
    query = select(verified).order_by(verified.c.tree_size.desc()).limit(1)
    return (await session.execute(query)).first()


async def add_verified(session: AsyncSession | AsyncConnection, size: int, root: bytes, verified_at: datetime,
                       full_scan: bool) -> None:
    await session.execute(text(
        "INSERT INTO audit_verified (tree_size, root_hash, verified_at, full_scan) "
        "VALUES (:size, :root, :at, :full) ON CONFLICT (tree_size) DO NOTHING"
    ).bindparams(bindparam("root", type_=LargeBinary)),
        {"size": size, "root": root, "at": verified_at, "full": full_scan})
