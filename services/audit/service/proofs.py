"""Proofs: RFC 9162 inclusion and consistency proofs from the stored Merkle nodes."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.audit import store
from services.audit.merkle import compact_range, consistency_plan, inclusion_plan, proof_from_nodes, root_from_nodes
from services.audit.service.entries import InvalidParameter


def _size_at_most_current(name: str, value: int, size: int) -> None:
    if value > size:
        raise InvalidParameter(name, f"exceeds the log's size ({size})")


class Proofs:
    """Proofs that an entry is in the log, and that the log at one size extends it at another."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def inclusion(self, index: int, tree_size: int | None) -> dict[str, Any]:
        """One statement reads the log's size and every node the proof and the root need (one more without
        ``tree_size``, to learn it first)."""
        async with store.reader(self.sessions) as db:
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

    async def consistency(self, first: int, second: int | None) -> dict[str, Any]:
        async with store.reader(self.sessions) as db:
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
