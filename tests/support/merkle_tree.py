"""Test-only Merkle code: an in-memory log and RFC 9162's recursive definition of the root.

:class:`MerkleTree` stores perfect subtrees only, as the database does, and does everything through the
production planning functions of :mod:`services.audit.merkle` (``append_plan``, ``inclusion_plan``,
``consistency_plan``, ``proof_from_nodes``, ``root_from_nodes``): tests that use it, the transparency-dev vectors
among them, test that code path. :func:`root_of_leaves` is the definition they are compared with.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType

from services.audit.merkle import (
    EMPTY_ROOT,
    AppendResult,
    NodeId,
    append_plan,
    consistency_plan,
    hash_children,
    hash_leaf,
    inclusion_plan,
    proof_from_nodes,
    root_from_nodes,
)


def root_of_leaves(leaves: Sequence[bytes]) -> bytes:
    """``MTH(D[0:n])`` straight from the recursive definition of RFC 9162 2.1.1 (the reference)."""
    data = list(leaves)

    def mth(lo: int, hi: int) -> bytes:
        if hi - lo == 1:
            return hash_leaf(data[lo])
        k = 1 << ((hi - lo - 1).bit_length() - 1)  # the largest power of two below hi - lo
        return hash_children(mth(lo, lo + k), mth(lo + k, hi))

    return mth(0, len(data)) if data else EMPTY_ROOT


class MerkleTree:
    """An in-memory log that stores perfect subtrees only, exactly as the database does.

    Every operation goes through the planning functions above, so this doubles as the executable
    description of how a store should use them.
    """

    def __init__(self, leaves: Iterable[bytes] = ()) -> None:
        self._size = 0
        self._border: list[bytes] = []
        self._nodes: dict[NodeId, bytes] = {}
        self.append_many(leaves)

    @property
    def size(self) -> int:
        return self._size

    def __len__(self) -> int:
        return self._size

    @property
    def nodes(self) -> Mapping[NodeId, bytes]:
        """Read-only view of the stored perfect subtrees."""
        return MappingProxyType(self._nodes)

    def append(self, data: bytes) -> int:
        """Append one entry; returns its leaf index."""
        self.append_leaf_hashes([hash_leaf(data)])
        return self._size - 1

    def append_many(self, entries: Iterable[bytes]) -> int:
        """Append entries in order; returns the new tree size."""
        self.append_leaf_hashes(hash_leaf(data) for data in entries)
        return self._size

    def append_leaf_hashes(self, leaf_hashes: Iterable[bytes]) -> AppendResult:
        """Append already-hashed leaves (the store path: hashes are computed where the entry is)."""
        result = append_plan(self._size, self._border, leaf_hashes)
        for node in result.nodes:
            self._nodes[(node.level, node.index)] = node.hash
        self._size, self._border = result.size, result.border
        return result

    def leaf_hash(self, index: int) -> bytes:
        if not 0 <= index < self._size:
            raise IndexError(f"leaf index {index} outside a tree of size {self._size}")
        return self._nodes[(0, index)]

    def _size_or_current(self, size: int | None) -> int:
        if size is None:
            return self._size
        if size < 0:
            raise ValueError(f"size must be a non-negative integer, got {size!r}")
        if size > self._size:
            raise ValueError(f"size {size} exceeds the tree size {self._size}")
        return size

    def root(self, size: int | None = None) -> bytes:
        """Root of the tree as it was at ``size`` leaves (default: now)."""
        return root_from_nodes(self._size_or_current(size), self._nodes)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        return proof_from_nodes(inclusion_plan(index, self._size_or_current(size)), self._nodes)

    def consistency_proof(self, first: int, second: int | None = None) -> list[bytes]:
        return proof_from_nodes(consistency_plan(first, self._size_or_current(second)), self._nodes)
