"""Verification: recompute the tree from the stored entries and compare with what was stored and signed."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import structlog
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.audit import store
from services.audit.copy_format import CopyLeafReader
from services.audit.leaf import leaf_bytes
from services.audit.merkle import (
    EMPTY_ROOT,
    CompactRange,
    append_plan,
    compact_range,
    fold_subtrees,
    hash_leaf,
    root_from_nodes,
)
from services.audit.service.checkpoints import Checkpoints, checkpoint_sound
from services.audit.service.entries import entry_of
from services.audit.signing import CheckpointMemory, LogKeys
from shared.errors import Problem

log = structlog.get_logger("refnet.audit")

VERIFY_FAILURES = Counter("refnet_audit_verify_failures_total", "Runs of /audit/verify that found a mismatch")


class FullVerifyGate:
    """One full verification at a time, and at most one per interval (per replica)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.lock = asyncio.Lock()
        self.last = float("-inf")

    def refusal(self) -> Problem | None:
        wait = self.last + self.interval - time.monotonic()
        if not self.lock.locked() and wait <= 0:
            return None
        return Problem(429, "rate-limited", f"a full verification runs at most every {int(self.interval)} s; "
                       "the incremental one (without full) is not limited",
                       headers={"Retry-After": str(max(1, int(wait + 0.999)))})


class Verification:
    """Whether the log is what was appended and signed: the keys and the remembered checkpoint are
    ``checkpoints``' (so a verification checks against what this signer signed)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], checkpoints: Checkpoints,
                 full_interval_seconds: float = 300.0) -> None:
        self.sessions = sessions
        self.checkpoints = checkpoints
        self.gate = FullVerifyGate(full_interval_seconds)

    async def verify(self, *, full: bool = False, record: bool = True) -> dict[str, Any]:
        """See :func:`verify_log`. ``full`` runs one at a time and at most once per interval, else 429."""
        keys, memory = self.checkpoints.keys, self.checkpoints.memory
        if not full:
            return await verify_log(self.sessions, keys, memory, full=False, record=record)
        if (refusal := self.gate.refusal()) is not None:
            raise refusal
        async with self.gate.lock:
            self.gate.last = time.monotonic()
            return await verify_log(self.sessions, keys, memory, full=True, record=record)


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
    if checkpoint is None or not checkpoint_sound(checkpoint, keys) or bytes(checkpoint.root_hash) != bytes(
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
            ok = bytes(cp.root_hash) == root and checkpoint_sound(cp, keys)
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
            batch.append(hash_leaf(leaf_bytes(entry_of(row))))
            if len(batch) >= 4096:
                result = append_plan(count, border, batch)
                count, border, batch = result.size, result.border, []
    result = append_plan(count, border, batch)
    return result.root if result.size == size else None


_UNREADABLE = hashlib.sha256(b"\x00").digest()
