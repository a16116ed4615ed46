"""audit's use cases, one transaction each: record an event, sequence the queue, sign, answer, verify."""

from __future__ import annotations

import base64
import contextlib
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
    NotAuditable,
    checkpoint_body,
    consents_in_force,
    draft_from_event,
    entry_json,
    entry_leaf,
    format_time,
    is_access,
    leaf_bytes,
    parse_checkpoint_body,
)
from services.audit.merkle import (
    EMPTY_ROOT,
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
    tree's right border (``O(log n)`` nodes) and nothing else of the tree. Returns how many it appended.
    """
    async with sessions() as session, session.begin():
        if not await store.take_sequencer_lock(session):
            return 0
        queued = await store.oldest_pending(session, batch_size)
        if not queued:
            return 0
        size = await store.tree_size(session)
        border_ids = compact_range(size)
        found = await store.fetch_nodes(session, border_ids)
        border = [found[node_id] for node_id in border_ids]
        logged = await store.already_logged(session, [(r["source_service"], r["event_id"]) for r in queued])
        recorded_at = datetime.now(UTC)
        recorded_text = format_time(recorded_at)
        rows: list[tuple[Any, ...]] = []
        leaves: list[bytes] = []
        for item in queued:
            key = (item["source_service"], item["event_id"])
            if key in logged:
                continue  # the same event reached the queue twice (a replayed consumer group): log it once
            logged.add(key)
            index = size + len(rows)
            leaves.append(hash_leaf(entry_leaf(index, recorded_text, format_time(item["occurred_at"]), item)))
            rows.append((index, recorded_at, *(item[name] for name in store.ENTRY_COLUMNS)))
        result = append_plan(size, border, leaves)
        await store.append_entries(session, rows, result.nodes)
        await store.remove_pending(session, [r["seq"] for r in queued])
    ENTRIES_APPENDED.inc(len(rows))
    TREE_SIZE.set(result.size)
    return len(rows)


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
    if not cursor.isdigit() or len(cursor) > 19:
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


async def _size_at_most_current(session: AsyncSession, name: str, value: int) -> None:
    size = await store.tree_size(session)
    if value > size:
        raise InvalidParameter(name, f"exceeds the log's size ({size})")


async def inclusion_proof(sessions: async_sessionmaker[AsyncSession], index: int, tree_size: int | None
                          ) -> dict[str, Any]:
    async with sessions() as session:
        if tree_size is None:
            tree_size = await store.tree_size(session)
        await _size_at_most_current(session, "tree_size", tree_size)
        if index >= tree_size:
            raise InvalidParameter("index", f"must be below tree_size ({tree_size})")
        plan = inclusion_plan(index, tree_size)
        found = await store.fetch_nodes(session, [*plan.node_ids, (0, index), *compact_range(tree_size)])
    return {
        "index": index, "tree_size": tree_size, "leaf_hash": found[(0, index)].hex(),
        "root_hash": root_from_nodes(tree_size, found).hex(),
        "path": [h.hex() for h in proof_from_nodes(plan, found)],
    }


async def consistency_proof(sessions: async_sessionmaker[AsyncSession], first: int, second: int | None
                            ) -> dict[str, Any]:
    async with sessions() as session:
        if second is None:
            second = await store.tree_size(session)
        await _size_at_most_current(session, "second", second)
        if first > second:
            raise InvalidParameter("first", f"must not exceed second ({second})")
        if first == 0 and second > 0:
            raise InvalidParameter("first", "must be at least 1: RFC 9162 defines no proof from the empty tree")
        plan = consistency_plan(first, second)
        found = await store.fetch_nodes(session, [*plan.node_ids, *compact_range(first), *compact_range(second)])
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
    size = 0
    border: list[bytes] = []
    pending: list[bytes] = []

    async with sessions() as session:
        conn = await session.connection()
        marks: Sequence[Any] = await store.all_checkpoints(conn)
        targets = [cp for cp in marks if int(cp.tree_size) > 0]
        empty = [cp for cp in marks if int(cp.tree_size) == 0]

        def check_checkpoint(cp: Any, root: bytes) -> None:
            nonlocal checked, first_bad_checkpoint
            checked += 1
            ok = bytes(cp.root_hash) == root and _checkpoint_sound(cp, public_key)
            if not ok and first_bad_checkpoint is None:
                first_bad_checkpoint = int(cp.tree_size)

        for cp in empty:
            check_checkpoint(cp, EMPTY_ROOT)
        next_mark = 0

        def flush() -> None:
            nonlocal size, border, pending, next_mark
            if pending:
                result = append_plan(size, border, pending)
                size, border, pending = result.size, result.border, []
                while next_mark < len(targets) and int(targets[next_mark].tree_size) == size:
                    check_checkpoint(targets[next_mark], result.root)
                    next_mark += 1

        mark_sizes = [int(cp.tree_size) for cp in targets]
        recorded_at: Any = None
        recorded_text = ""
        # aclosing: leaving the loop early (a hole) must end the scan before the connection is used again.
        async with contextlib.aclosing(store.scan_entries_with_leaves(conn)) as records:
            async for record in records:
                expected = size + len(pending)
                if record["idx"] != expected:
                    first_bad = expected if first_bad is None else first_bad
                    break
                if record["recorded_at"] != recorded_at:  # a sequencer batch shares its time: write it once
                    recorded_at = record["recorded_at"]
                    recorded_text = format_time(recorded_at)
                leaf = hash_leaf(entry_leaf(expected, recorded_text, format_time(record["occurred_at"]), record))
                stored_leaf = record["stored_leaf"]
                if first_bad is None and (stored_leaf is None or stored_leaf != leaf):
                    first_bad = expected
                pending.append(leaf)
                if len(pending) >= 2000 or (next_mark < len(mark_sizes) and mark_sizes[next_mark] == expected + 1):
                    flush()
        flush()
        root = append_plan(size, border, []).root
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
