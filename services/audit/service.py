"""audit's use cases, one transaction each: record an event, sequence the queue, sign, answer, verify."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from prometheus_client import Counter, Gauge
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.audit import store
from services.audit.domain import (
    CONSENT_PREFIX,
    ENTRY_FIELDS,
    LeafWriter,
    NotAuditable,
    checkpoint_body,
    consents_in_force,
    draft_from_event,
    entry_json,
    format_time,
    is_access,
    leaf_bytes,
    parse_checkpoint_body,
)
from services.audit.merkle import (
    EMPTY_ROOT,
    CompactRange,
    append_plan,
    compact_range,
    consistency_plan,
    hash_leaf,
    inclusion_plan,
    proof_from_nodes,
    root_from_nodes,
)
from services.audit.signing import CheckpointSigner, key_hash, verify_signature
from shared.consumer import PoisonEvent
from shared.envelope import Event
from shared.errors import Problem

log = structlog.get_logger("refnet.audit")

ENTRIES_APPENDED = Counter("refnet_audit_entries_appended_total", "Entries the sequencer appended to the log")
TREE_SIZE = Gauge("refnet_audit_tree_size", "Entries in the log after the last append")
CHECKPOINT_SIZE = Gauge("refnet_audit_checkpoint_tree_size", "Tree size of the latest signed checkpoint")
CHECKPOINT_TIME = Gauge("refnet_audit_last_checkpoint_timestamp_seconds", "When the latest checkpoint was signed")
VERIFY_FAILURES = Counter("refnet_audit_verify_failures_total", "Runs of /audit/verify that found a mismatch")


MAX_INDEX = 2**63 - 1  # PostgreSQL's BIGINT, the type of an entry's index


class InvalidParameter(Problem):
    """A request parameter that is well-formed but impossible (index beyond the tree, first > second)."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(400, "invalid-parameter", f"{name}: {message}", title="Bad Request",
                         errors=[{"loc": ["query", name], "msg": message}])


# --- ingest ---------------------------------------------------------------------------------------------


async def record_event(session: AsyncSession, event: Event) -> None:
    """The consumer's effect, in its inbox transaction: queue the event's entry for the sequencer."""
    try:
        draft = draft_from_event(event)
    except NotAuditable as exc:
        raise PoisonEvent(f"not auditable: {exc}") from None
    await store.add_pending(session, draft)


async def sequence_pending(sessions: async_sessionmaker[AsyncSession], batch_size: int) -> int:
    """Append the oldest queued entries to the log: dense indexes, leaves, Merkle nodes, one transaction.

    Only the holder of the sequencer lock appends, so indexes never collide across replicas. Reads the
    tree's size and right border (``O(log n)`` nodes) in one query and nothing else of the tree. The
    entries go from the queue to the log inside the server (one INSERT ... SELECT from the DELETE), which
    runs while their leaves are hashed here; only the new Merkle nodes are sent. Returns how many it appended.
    """
    async with sessions() as session, session.begin():
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
            leaves = [sha256(b"\x00" + leaf(index, recorded_text, format_time(item["occurred_at"]), item)).digest()
                      for index, item in enumerate(placed, size)]
            result = append_plan(size, border, leaves)
        finally:
            moved = await moving
        if moved != len(placed):
            raise RuntimeError(f"the sequencer moved {moved} entries to the log, not {len(placed)}")
        await store.add_nodes(driver, result.nodes)
    ENTRIES_APPENDED.inc(len(placed))
    TREE_SIZE.set(result.size)
    return len(placed)


# --- checkpoints ----------------------------------------------------------------------------------------


def checkpoint_json(row: Any) -> dict[str, Any]:
    return {
        "origin": row.origin,
        "tree_size": int(row.tree_size),
        "root_hash": bytes(row.root_hash).hex(),
        "timestamp": format_time(row.signed_at),
        "body": row.body,
        "key_id": row.key_id,
        "signature": _b64(bytes(row.signature)),
        # The same checkpoint as a C2SP signed note, for tools that speak that format.
        "note": f"{row.body}\n\u2014 {row.origin} {_b64(bytes.fromhex(row.key_id) + bytes(row.signature))}\n",
    }


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def sign_checkpoint(sessions: async_sessionmaker[AsyncSession], signer: CheckpointSigner) -> dict[str, Any]:
    """The checkpoint of the log as it is now: the latest one if nothing was appended since, else a new one."""
    async with sessions() as session, session.begin():
        size = await store.tree_size(session)
        latest = await store.latest_checkpoint(session)
        if latest is not None and int(latest.tree_size) >= size:
            return checkpoint_json(latest)
        root = root_from_nodes(size, await store.fetch_nodes(session, compact_range(size)))
        body = checkpoint_body(signer.origin, size, root)
        await store.add_checkpoint(session, {
            "tree_size": size, "root_hash": root, "origin": signer.origin, "signed_at": datetime.now(UTC),
            "body": body, "key_id": signer.key_id, "signature": signer.sign(body),
        })
    async with sessions() as session:
        latest = await store.latest_checkpoint(session)
    assert latest is not None
    CHECKPOINT_SIZE.set(int(latest.tree_size))
    CHECKPOINT_TIME.set(latest.signed_at.timestamp())
    return checkpoint_json(latest)


# --- reading the log ------------------------------------------------------------------------------------


def _entry(row: Any) -> dict[str, Any]:
    return entry_json(index=int(row.idx), recorded_at=row.recorded_at,
                      **{name: getattr(row, name) for name in store.ENTRY_COLUMNS})


def parse_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    # ASCII digits only (str.isdigit() also takes other scripts' digits), and within BIGINT: an index.
    if not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 19 or int(cursor) > MAX_INDEX:
        raise InvalidParameter("cursor", "not a cursor this API returned")
    return int(cursor)


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None

    def json(self) -> dict[str, Any]:
        return {"items": self.items, "next_cursor": self.next_cursor}


async def list_entries(
    sessions: async_sessionmaker[AsyncSession], *, limit: int, cursor: str | None, **filters: Any
) -> Page:
    if filters.get("since") is not None and filters.get("until") is not None and filters["since"] > filters["until"]:
        raise InvalidParameter("since", "is after until")
    async with sessions() as session:
        rows = await store.find_entries(session, limit=limit + 1, after=parse_cursor(cursor), **filters)
    items = [_entry(r) for r in rows[:limit]]
    return Page(items, str(items[-1]["index"]) if len(rows) > limit else None)


async def case_access(sessions: async_sessionmaker[AsyncSession], case_id: str) -> dict[str, Any]:
    """Who saw (or tried to see) the case, when, why, and under which consent."""
    async with sessions() as session:
        rows = await store.case_entries(session, case_id)
    history = [_entry(r) for r in rows]
    consent = consents_in_force(history)
    items = []
    for e in history:
        if not is_access(e["action"]):
            continue
        basis = consent[e["index"]]
        items.append({
            "index": e["index"], "occurred_at": e["occurred_at"], "recorded_at": e["recorded_at"],
            "action": e["action"], "outcome": e["outcome"], "agency": e["agency"], "client_id": e["client_id"],
            "acting_user": e["acting_user"], "purpose": e["purpose"],
            "data_categories": e["details"].get("data_categories") or e["details"].get("categories"),
            "consent": {"consent_id": basis.consent_id, "consent_version": basis.consent_version,
                        "basis": basis.basis},
        })
    return {"case_id": case_id, "items": items, "next_cursor": None}


async def case_consents(sessions: async_sessionmaker[AsyncSession], case_id: str) -> dict[str, Any]:
    """The consent versions, withdrawals and overrides of a case, pseudonymous as the log is."""
    async with sessions() as session:
        rows = await store.case_entries(session, case_id)
    items = [
        {name: e[name] for name in ENTRY_FIELDS if name not in ("case_id", "source_service")}
        for e in map(_entry, rows) if e["action"].startswith(CONSENT_PREFIX)
    ]
    # A case has tens of entries, not thousands: one page, in the list shape every RefNet list has.
    return {"case_id": case_id, "items": items, "next_cursor": None}


# --- proofs ---------------------------------------------------------------------------------------------


def _size_at_most_current(name: str, value: int, size: int) -> None:
    if value > size:
        raise InvalidParameter(name, f"exceeds the log's size ({size})")


async def inclusion_proof(sessions: async_sessionmaker[AsyncSession], index: int, tree_size: int | None
                          ) -> dict[str, Any]:
    """One statement reads the log's size and every node the proof and the root need (one more without
    ``tree_size``, to learn it first)."""
    async with store.reader(sessions) as db:
        if tree_size is None:
            tree_size = await store.log_size(db)
        wanted = index < tree_size
        plan = inclusion_plan(index, tree_size) if wanted else None
        ids = [*plan.node_ids, (0, index), *compact_range(tree_size)] if plan is not None else []
        size, found = await store.nodes_and_size(db, ids)
    _size_at_most_current("tree_size", tree_size, size)
    if plan is None:
        raise InvalidParameter("index", f"must be below tree_size ({tree_size})")
    return {
        "index": index, "tree_size": tree_size, "leaf_hash": found[(0, index)].hex(),
        "root_hash": root_from_nodes(tree_size, found).hex(),
        "path": [h.hex() for h in proof_from_nodes(plan, found)],
    }


async def consistency_proof(sessions: async_sessionmaker[AsyncSession], first: int, second: int | None
                            ) -> dict[str, Any]:
    async with store.reader(sessions) as db:
        if second is None:
            second = await store.log_size(db)
        valid = first <= second and not (first == 0 and second > 0)
        plan = consistency_plan(first, second) if valid else None
        ids = [*plan.node_ids, *compact_range(first), *compact_range(second)] if plan is not None else []
        size, found = await store.nodes_and_size(db, ids)
    _size_at_most_current("second", second, size)
    if first > second:
        raise InvalidParameter("first", f"must not exceed second ({second})")
    if plan is None:
        raise InvalidParameter("first", "must be at least 1: RFC 9162 defines no proof from the empty tree")
    return {
        "first": first, "second": second,
        "first_root_hash": root_from_nodes(first, found).hex(),
        "second_root_hash": root_from_nodes(second, found).hex(),
        "path": [h.hex() for h in proof_from_nodes(plan, found)],
    }


# --- verification ---------------------------------------------------------------------------------------


async def verify_log(sessions: async_sessionmaker[AsyncSession], public_key: bytes) -> dict[str, Any]:
    """Recompute the tree from the stored entries (not from the stored hashes) and compare.

    An entry is bad when its recomputed leaf differs from the leaf stored when it was appended, or when
    the index sequence has a hole. Independently, the recomputed root at every signed checkpoint's size
    must equal the root that checkpoint signed: this catches a rewrite that also rewrote the stored nodes.
    """
    first_bad: int | None = None
    first_bad_checkpoint: int | None = None
    checked = 0
    tree = CompactRange()

    async with sessions() as session:
        conn = await session.connection()
        marks: Sequence[Any] = await store.all_checkpoints(conn)
        targets = [cp for cp in marks if int(cp.tree_size) > 0]
        mark_sizes = [int(cp.tree_size) for cp in targets]
        next_mark = 0

        def check_checkpoint(cp: Any, root: bytes) -> None:
            nonlocal checked, first_bad_checkpoint
            checked += 1
            ok = bytes(cp.root_hash) == root and _checkpoint_sound(cp, public_key)
            if not ok and first_bad_checkpoint is None:
                first_bad_checkpoint = int(cp.tree_size)

        for cp in marks:
            if int(cp.tree_size) == 0:
                check_checkpoint(cp, EMPTY_ROOT)

        def grow(leaves: list[bytes]) -> None:
            """Add recomputed leaves to the tree, taking its root at each checkpoint's size on the way."""
            nonlocal next_mark
            start = 0
            while next_mark < len(mark_sizes) and mark_sizes[next_mark] <= tree.size + len(leaves) - start:
                cut = start + mark_sizes[next_mark] - tree.size
                tree.extend(leaves[start:cut])
                start = cut
                check_checkpoint(targets[next_mark], tree.root())
                next_mark += 1
            tree.extend(leaves[start:] if start else leaves)

        writer = LeafWriter()
        hole = False

        def consume(text: str) -> None:
            nonlocal first_bad, hole
            if hole:
                return  # the rest of the COPY drains unread: the log ends at the hole
            indexes, hashes, stored = writer.copy_chunk(text)
            expected = tree.size
            if indexes != [str(i) for i in range(expected, expected + len(indexes))]:
                cut = next(k for k, idx in enumerate(indexes) if idx != str(expected + k))
                indexes, hashes, stored = indexes[:cut], hashes[:cut], stored[:cut]
                hole = True
            if first_bad is None and (None in hashes or b"".join(hashes).hex() != "".join(stored)):  # type: ignore[arg-type]
                for k, value in enumerate(hashes):
                    if value is None or value.hex() != stored[k]:
                        first_bad = expected + k
                        break
            # A row no entry can be still takes its place in the tree (which can then match no checkpoint).
            grow([value if value is not None else _UNREADABLE for value in hashes])
            if hole and first_bad is None:
                first_bad = tree.size

        await store.copy_log(conn, consume)
        size = tree.size
        root = tree.root()
        stored_root = root_from_nodes(size, await store.fetch_nodes(conn, compact_range(size)))
    for cp in targets[next_mark:]:  # signed for entries that are no longer there
        checked += 1
        if first_bad_checkpoint is None:
            first_bad_checkpoint = int(cp.tree_size)
    ok = first_bad is None and first_bad_checkpoint is None and stored_root == root
    if not ok:
        VERIFY_FAILURES.inc()
        log.warning("audit_log_verification_failed", first_bad_index=first_bad,
                    first_bad_checkpoint=first_bad_checkpoint)
    return {
        "ok": ok, "tree_size": size, "first_bad_index": first_bad, "root_hash": root.hex(),
        "stored_root_matches": stored_root == root, "checkpoints_checked": checked,
        "first_bad_checkpoint": first_bad_checkpoint,
    }


async def recomputed_root(sessions: async_sessionmaker[AsyncSession], size: int) -> bytes | None:
    """The root of the first ``size`` entries, from the entries themselves; None if the log is shorter."""
    count = 0
    border: list[bytes] = []
    batch: list[bytes] = []
    async with sessions() as session:
        conn = await session.connection()
        async for row in store.stream_entries_with_leaves(conn):
            if count + len(batch) == size:
                break
            if int(row.idx) != count + len(batch):
                return None
            batch.append(hash_leaf(leaf_bytes(_entry(row))))
            if len(batch) >= 4096:
                result = append_plan(count, border, batch)
                count, border, batch = result.size, result.border, []
    result = append_plan(count, border, batch)
    return result.root if result.size == size else None


_UNREADABLE = hashlib.sha256(b"\x00").digest()


def _checkpoint_sound(cp: Any, public_key: bytes) -> bool:
    """The stored body says what the row says, and (when signed by the current key) the signature holds."""
    try:
        body = parse_checkpoint_body(cp.body)
    except ValueError:
        return False
    if body.tree_size != int(cp.tree_size) or body.root != bytes(cp.root_hash):
        return False
    if cp.key_id != key_hash(cp.origin, public_key).hex():
        return True  # signed by an earlier key; its root was compared above
    return verify_signature(public_key, cp.body, bytes(cp.signature))
