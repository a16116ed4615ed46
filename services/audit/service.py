"""audit's use cases, one transaction each: record an event, sequence the queue, sign, answer, verify."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import structlog
from prometheus_client import Counter, Gauge
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.audit import store
from services.audit.copy_format import CopyLeafReader
from services.audit.domain import (
    CONSENT_PREFIX,
    NotAuditable,
    checkpoint_body,
    consents_in_force,
    draft_from_event,
    is_access,
    parse_checkpoint_body,
)
from services.audit.leaf import ENTRY_FIELDS, LeafWriter, entry_json, format_time, leaf_bytes
from services.audit.merkle import (
    EMPTY_ROOT,
    CompactRange,
    MissingNodeError,
    append_plan,
    compact_range,
    consistency_plan,
    fold_subtrees,
    hash_leaf,
    inclusion_plan,
    proof_from_nodes,
    root_from_nodes,
    verify_consistency,
)
from services.audit.signing import (
    CheckpointMemory,
    CheckpointSigner,
    LogKeys,
    VerifierKey,
    parse_signature_line,
    verify_cosignature,
)
from shared.consumer import PoisonEvent
from shared.envelope import Event
from shared.errors import Problem

log = structlog.get_logger("refnet.audit")

ENTRIES_APPENDED = Counter("refnet_audit_entries_appended_total", "Entries the sequencer appended to the log")
TREE_SIZE = Gauge("refnet_audit_tree_size", "Entries in the log after the last append")
CHECKPOINT_SIZE = Gauge("refnet_audit_checkpoint_tree_size", "Tree size of the latest signed checkpoint")
CHECKPOINT_TIME = Gauge("refnet_audit_last_checkpoint_timestamp_seconds", "When the latest checkpoint was signed")
VERIFY_FAILURES = Counter("refnet_audit_verify_failures_total", "Runs of /audit/verify that found a mismatch")
CHECKPOINTS_REFUSED = Counter("refnet_audit_checkpoints_refused_total",
                              "Times the signer refused to sign: the log does not extend its last signed checkpoint")


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


def checkpoint_json(row: Any, cosigned: Sequence[Any] = ()) -> dict[str, Any]:
    lines = [str(c.line) for c in cosigned]
    signature_line = f"\u2014 {row.origin} {_b64(bytes.fromhex(row.key_id) + bytes(row.signature))}"
    return {
        "origin": row.origin,
        "tree_size": int(row.tree_size),
        "root_hash": bytes(row.root_hash).hex(),
        "timestamp": format_time(row.signed_at),
        "body": row.body,
        "key_id": row.key_id,
        "signature": _b64(bytes(row.signature)),
        # The same checkpoint as a C2SP signed note, for tools that speak that format, witnesses' lines after.
        "note": f"{row.body}\n" + "".join(f"{line}\n" for line in [signature_line, *lines]),
        "cosignatures": lines,
    }


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class LogInconsistent(Problem):
    """The log no longer extends the last checkpoint this service signed: it will not sign another."""

    def __init__(self, detail: str) -> None:
        super().__init__(503, "log-inconsistent", detail, title="Service Unavailable")


def _refuse(detail: str) -> LogInconsistent:
    CHECKPOINTS_REFUSED.inc()
    log.error("audit_checkpoint_refused", reason=detail)
    return LogInconsistent(detail)


async def sign_checkpoint(sessions: async_sessionmaker[AsyncSession], signer: CheckpointSigner, keys: LogKeys,
                          memory: CheckpointMemory) -> dict[str, Any]:
    """The checkpoint of the log as it is now: the latest one if nothing was appended since, else a new one.

    A new one only if the log extends the last signed checkpoint (an RFC 9162 consistency proof from the
    stored nodes, checked here): the larger of the database's latest -- if one of the log's keys verifies it
    -- and the one this signer remembers outside the database. Otherwise :class:`LogInconsistent`.
    """
    async with sessions() as session, session.begin():
        size = await store.tree_size(session)
        latest = await store.latest_checkpoint(session)
        if latest is not None and not _checkpoint_sound(latest, keys):
            raise _refuse("the latest stored checkpoint is not signed by any of the log's keys")
        floor_size, floor_root = (int(latest.tree_size), bytes(latest.root_hash)) if latest is not None else (0, b"")
        if memory.last is not None and memory.size >= floor_size:
            if memory.size == floor_size and latest is not None and memory.root != floor_root:
                raise _refuse(f"the stored checkpoint at size {floor_size} is not the one this signer signed")
            floor_size, floor_root = memory.size, memory.root
        if size < floor_size:
            raise _refuse(f"the log holds {size} entries, fewer than the {floor_size} of its last checkpoint")
        if latest is not None and int(latest.tree_size) == size:
            return checkpoint_json(latest, await store.cosignatures_of(session, size))
        try:
            plan = consistency_plan(floor_size, size) if floor_size else None
            nodes = await store.fetch_nodes(session, [*compact_range(size), *(plan.node_ids if plan else [])])
            root = root_from_nodes(size, nodes)
            consistent = plan is None or verify_consistency(floor_size, size, floor_root, root,
                                                            proof_from_nodes(plan, nodes))
        except MissingNodeError:
            consistent = False
        if not consistent:
            raise _refuse(f"the log at size {size} does not extend the checkpoint signed at size {floor_size}")
        body = checkpoint_body(signer.origin, size, root)
        await store.add_checkpoint(session, {
            "tree_size": size, "root_hash": root, "origin": signer.origin, "signed_at": datetime.now(UTC),
            "body": body, "key_id": signer.key_id, "signature": signer.sign(body),
        })
    async with sessions() as session:
        latest = await store.latest_checkpoint(session)
    assert latest is not None
    signed = checkpoint_json(latest)
    memory.remember(signed)
    CHECKPOINT_SIZE.set(int(latest.tree_size))
    CHECKPOINT_TIME.set(latest.signed_at.timestamp())
    return signed


async def cosigned_checkpoint(sessions: async_sessionmaker[AsyncSession], at_least: int) -> dict[str, Any]:
    """The largest checkpoint that at least ``at_least`` witnesses cosigned."""
    async with sessions() as session:
        row = await store.latest_checkpoint_cosigned(session, at_least)
        if row is None:
            raise Problem(404, "not-found", f"no checkpoint has {at_least} cosignatures yet")
        return checkpoint_json(row, await store.cosignatures_of(session, int(row.tree_size)))


MAX_COSIGNATURE_SKEW_SECONDS = 600


async def add_cosignature(sessions: async_sessionmaker[AsyncSession], witnesses: Sequence[VerifierKey],
                          tree_size: int, line_text: str) -> dict[str, Any]:
    """Store a witness's C2SP cosignature of the checkpoint at ``tree_size``: one of the configured witness
    keys must verify it over that checkpoint's body."""
    try:
        line = parse_signature_line(line_text)
    except ValueError as exc:
        raise Problem(422, "invalid-cosignature", f"cosignature: {exc}",
                      errors=[{"loc": ["body", "cosignature"], "msg": str(exc)}]) from None
    key = next((w for w in witnesses if w.name == line.name and w.key_id == line.key_id), None)
    if key is None:
        raise Problem(403, "unknown-witness", "the cosignature's key is not one of this log's witnesses")
    async with sessions() as session, session.begin():
        checkpoint = await store.checkpoint_at(session, tree_size)
        if checkpoint is None:
            raise Problem(404, "not-found", f"no checkpoint of size {tree_size}")
        timestamp = verify_cosignature(key, checkpoint.body, line)
        if timestamp is None:
            raise Problem(422, "invalid-cosignature", "the cosignature does not verify over this checkpoint",
                          errors=[{"loc": ["body", "cosignature"], "msg": "does not verify"}])
        if timestamp > datetime.now(UTC).timestamp() + MAX_COSIGNATURE_SKEW_SECONDS:
            raise Problem(422, "invalid-cosignature", "the cosignature's time is in the future",
                          errors=[{"loc": ["body", "cosignature"], "msg": "time in the future"}])
        await store.add_cosignature(session, {"tree_size": tree_size, "witness": key.name,
                                              "key_id": key.key_id.hex(), "cosigned_at": timestamp,
                                              "line": line_text.strip("\n")})
    return {"tree_size": tree_size, "witness": key.name, "cosigned_at": timestamp}


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
        if not is_access(e["action"], e["purpose"]):
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


@dataclass
class _Start:
    """Where a verification starts: the empty tree, or a checkpoint an earlier verification reached."""

    size: int = 0
    border: list[bytes] | None = None


async def _incremental_start(conn: Any, keys: LogKeys) -> _Start:
    """The last verified checkpoint, if it still holds: one of the log's keys verifies it, it names the root
    the verification found, and the stored nodes at its border fold to that root (so everything before it
    is as signed, and the rest can be recomputed from there). Else the empty tree: a full verification."""
    mark = await store.last_verified(conn)
    if mark is None:
        return _Start()
    size = int(mark.tree_size)
    checkpoint = await store.checkpoint_at(conn, size)
    if checkpoint is None or not _checkpoint_sound(checkpoint, keys) or bytes(checkpoint.root_hash) != bytes(
            mark.root_hash):
        return _Start()
    coords = compact_range(size)
    found = await store.fetch_nodes(conn, coords)
    border = [found.get(c) for c in coords]
    if any(h is None for h in border) or (border and fold_subtrees(border) != bytes(mark.root_hash)):  # type: ignore[arg-type]
        return _Start()
    return _Start(size, [h for h in border if h is not None])


async def verify_log(sessions: async_sessionmaker[AsyncSession], keys: LogKeys,
                     memory: CheckpointMemory | None = None, *, full: bool = True, record: bool = True
                     ) -> dict[str, Any]:
    """Recompute the tree from the stored entries (not from the stored hashes) and compare.

    An entry is bad when its recomputed leaf differs from the leaf stored when it was appended, or when
    the index sequence has a hole. Independently, the recomputed root at every signed checkpoint's size
    must equal the root that checkpoint signed, and one of the log's keys must verify that checkpoint:
    this catches a rewrite that also rewrote the stored nodes. The checkpoint the signer remembers outside
    the database (``memory``) counts as one more, and is missed if the database no longer has it.

    ``full=False`` starts at the last checkpoint an earlier verification reached (when it still holds, see
    :func:`_incremental_start`) and recomputes only what was appended since; a run that finds everything
    in order marks the last checkpoint it reached, for the next one (unless ``record`` is False).
    """
    first_bad: int | None = None
    first_bad_checkpoint: int | None = None
    missing_checkpoint: int | None = None
    checked = 0
    tree = CompactRange()

    async with sessions() as session:
        conn = await session.connection()
        start = _Start() if full else await _incremental_start(conn, keys)
        if start.border is not None:
            tree = CompactRange.from_border(start.size, start.border)
        marks: list[Any] = list(await store.all_checkpoints(conn))
        if memory is not None and memory.last is not None:
            same = next((cp for cp in marks if int(cp.tree_size) == memory.size), None)
            if same is None:
                missing_checkpoint = memory.size
                marks.append(_remembered(memory))
                marks.sort(key=lambda cp: int(cp.tree_size))
            elif bytes(same.root_hash) != memory.root:
                first_bad_checkpoint = memory.size
        targets = [cp for cp in marks if int(cp.tree_size) > start.size]
        mark_sizes = [int(cp.tree_size) for cp in targets]
        next_mark = 0
        reached: tuple[int, bytes] | None = None

        def check_checkpoint(cp: Any, root: bytes) -> None:
            nonlocal checked, first_bad_checkpoint, reached
            checked += 1
            ok = bytes(cp.root_hash) == root and _checkpoint_sound(cp, keys)
            if not ok and first_bad_checkpoint is None:
                first_bad_checkpoint = int(cp.tree_size)
            if ok and first_bad is None and first_bad_checkpoint is None:
                reached = (int(cp.tree_size), root)

        if start.size == 0:
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

        reader = CopyLeafReader()
        hole = False

        def consume(text: str) -> None:
            nonlocal first_bad, hole
            if hole:
                return  # the rest of the COPY drains unread: the log ends at the hole
            indexes, hashes, stored = reader.copy_chunk(text)
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

        await store.copy_log(conn, consume, start=start.size)
        size = tree.size
        root = tree.root()
        stored_root = root_from_nodes(size, await store.fetch_nodes(conn, compact_range(size)))
    for cp in targets[next_mark:]:  # signed for entries that are no longer there
        checked += 1
        if first_bad_checkpoint is None:
            first_bad_checkpoint = int(cp.tree_size)
    ok = first_bad is None and first_bad_checkpoint is None and missing_checkpoint is None and stored_root == root
    if not ok:
        VERIFY_FAILURES.inc()
        log.warning("audit_log_verification_failed", first_bad_index=first_bad,
                    first_bad_checkpoint=first_bad_checkpoint, missing_checkpoint=missing_checkpoint)
    elif record and reached is not None and reached[0] > start.size:
        async with sessions() as session, session.begin():
            await store.add_verified(session, reached[0], reached[1], datetime.now(UTC), full)
    return {
        "ok": ok, "tree_size": size, "first_bad_index": first_bad, "root_hash": root.hex(),
        "stored_root_matches": stored_root == root, "checkpoints_checked": checked,
        "first_bad_checkpoint": first_bad_checkpoint, "missing_checkpoint": missing_checkpoint,
        "full": start.size == 0, "from_index": start.size,
    }


def _remembered(memory: CheckpointMemory) -> Any:
    """The signer's remembered checkpoint in the shape of a checkpoint row."""
    last = memory.last or {}
    return SimpleNamespace(tree_size=memory.size, root_hash=memory.root, origin=last.get("origin"),
                           body=last.get("body"), key_id=last.get("key_id"),
                           signature=base64.b64decode(str(last.get("signature", ""))))


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


def _checkpoint_sound(cp: Any, keys: LogKeys) -> bool:
    """The stored body says what the row says, and one of the log's keys -- the one it names -- signed it.

    A key id none of the log's keys has fails: an earlier key is trusted only if it is configured
    (``REFNET_AUDIT_CHECKPOINT_PREVIOUS_KEYS``), never because the database names it.
    """
    try:
        body = parse_checkpoint_body(cp.body)
    except (ValueError, TypeError, AttributeError):
        return False
    if body.tree_size != int(cp.tree_size) or body.root != bytes(cp.root_hash) or body.origin != cp.origin:
        return False
    return keys.verify(cp.origin, cp.key_id, cp.body, bytes(cp.signature))
