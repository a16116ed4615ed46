"""The audit log's Merkle tree, as defined by RFC 9162 section 2.1 (Certificate Transparency v2).

Hashing: a leaf hash is ``SHA-256(0x00 || leaf)``, an interior node ``SHA-256(0x01 || left || right)``, and
the empty tree's root ``SHA-256("")``. A tree of ``n > 1`` leaves splits at ``k``, the largest power of two
smaller than ``n``: ``MTH(D[0:n]) = HASH(0x01 || MTH(D[0:k]) || MTH(D[k:n]))``.

Storage model. The only nodes ever stored are *perfect* subtrees, addressed ``(level, index)``: level 0
holds the leaf hashes, and node ``(level, i)`` covers leaves ``[i * 2**level, (i + 1) * 2**level)``. Such a
node never changes once complete, so it can be written once and cached forever. Every other node of a
tree of size ``n`` lies on its right border and is a fold of the perfect subtrees of a *compact range*.

The functions here separate *planning* (which stored nodes an operation needs: pure integer arithmetic)
from *computing* (hashing what the caller fetched), so a service can read the ``O(log n)`` nodes it needs
from any store, synchronously or not, in a single query:

* :func:`append_plan` turns the current right border (the hashes at :func:`compact_range`) and a batch of
  new leaf hashes into the nodes to insert and the new root, without reading anything else;
* :func:`inclusion_plan` / :func:`consistency_plan` list the stored nodes a proof needs and
  :func:`proof_from_nodes` assembles the proof from them; :func:`root_from_nodes` does the same for a root;
* :func:`verify_inclusion` / :func:`verify_consistency` implement the RFC 9162 verification algorithms
  (sections 2.1.3.2 and 2.1.4.2) and depend on nothing but the proof;
* :class:`CompactRange` grows a tree leaf by leaf keeping only its right border (a whole-log verification),
  :func:`root_of_leaf_hashes` the root of a stream of leaf hashes with it.

The in-memory tree and the recursive definition tests compare against are test code (``tests/support``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "AppendResult",
    "CompactRange",
    "MissingNodeError",
    "NodeId",
    "ProofElement",
    "ProofPlan",
    "StoredNode",
    "append_plan",
    "compact_range",
    "consistency_plan",
    "fold_subtrees",
    "hash_children",
    "hash_leaf",
    "inclusion_plan",
    "proof_from_nodes",
    "root_from_nodes",
    "root_of_leaf_hashes",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"
_sha256 = hashlib.sha256
EMPTY_ROOT: bytes = _sha256(b"").digest()

NodeId = tuple[int, int]
"""A stored perfect subtree ``(level, index)``: leaves ``[index << level, (index + 1) << level)``."""


class StoredNode(NamedTuple):
    """A perfect subtree to persist: it never changes once written."""

    level: int
    index: int  # type: ignore[assignment]  # shadows tuple.index on purpose: it is the storage coordinate
    hash: bytes


class MissingNodeError(LookupError):
    """The caller's mapping lacks stored nodes a plan needs (a store bug, or a size beyond the log)."""

    def __init__(self, missing: Sequence[NodeId]) -> None:
        self.missing = tuple(missing)
        super().__init__(f"stored Merkle nodes missing: {list(self.missing)}")


# --- hashing ------------------------------------------------------------------------------------------------


def hash_leaf(data: bytes) -> bytes:
    """RFC 9162 leaf hash: ``SHA-256(0x00 || data)``."""
    return _sha256(_LEAF_PREFIX + data).digest()


def hash_children(left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior node hash: ``SHA-256(0x01 || left || right)``."""
    return _sha256(_NODE_PREFIX + left + right).digest()


def fold_subtrees(hashes: Sequence[bytes]) -> bytes:
    """The hash of consecutive perfect subtrees given left to right, with levels strictly decreasing.

    Folding from the right reproduces the RFC split: the leftmost (largest) subtree is the left child of
    the node covering the whole range, the fold of the rest its right child.
    """
    if not hashes:
        raise ValueError("nothing to fold")
    acc = hashes[-1]
    for left in reversed(hashes[:-1]):
        acc = _sha256(_NODE_PREFIX + left + acc).digest()
    return acc


# --- planning (integer arithmetic only) ---------------------------------------------------------------------


def _check_size(name: str, value: int) -> None:
    if not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (``n >= 2``): where RFC 9162 splits a tree of size n."""
    return 1 << ((n - 1).bit_length() - 1)


def _range_nodes(start: int, end: int) -> tuple[NodeId, ...]:
    """Decompose leaves ``[start, end)`` into maximal aligned perfect subtrees, left to right.

    For the ranges RFC 9162 produces (a perfect subtree, or a subtree on the right border whose start is
    aligned to its largest piece) the levels come out strictly decreasing, so :func:`fold_subtrees`
    applies.
    """
    nodes: list[NodeId] = []
    while start < end:
        # Largest level allowed by both the alignment of `start` and the remaining width.
        level = (end - start).bit_length() - 1
        if start:
            level = min(level, (start & -start).bit_length() - 1)
        nodes.append((level, start >> level))
        start += 1 << level
    return tuple(nodes)


def compact_range(size: int) -> list[NodeId]:
    """The perfect subtrees making up ``[0, size)`` (one per set bit of ``size``), left to right.

    These are the tree's "right border": their hashes are all :func:`append_plan` needs to extend the
    tree, and :func:`fold_subtrees` of them is the root.
    """
    _check_size("size", size)
    return list(_range_nodes(0, size))


@dataclass(frozen=True)
class ProofElement:
    """One hash of a proof: a stored perfect subtree, or an ephemeral node folded from several.

    ``parts`` are perfect subtrees left to right; with more than one part the element is a right-border
    node of a tree whose size is not a power of two, which is never stored because it changes with
    every append.
    """

    parts: tuple[NodeId, ...]

    @property
    def ephemeral(self) -> bool:
        return len(self.parts) > 1


@dataclass(frozen=True)
class ProofPlan:
    """Which stored nodes make up a proof, in proof order (from the leaf upwards)."""

    elements: tuple[ProofElement, ...]

    @property
    def node_ids(self) -> list[NodeId]:
        """Every stored node the proof needs, each once: fetch these in one query."""
        return list(dict.fromkeys(part for element in self.elements for part in element.parts))

    def __len__(self) -> int:
        return len(self.elements)


def _plan(ranges: list[tuple[int, int]]) -> ProofPlan:
    return ProofPlan(tuple(ProofElement(_range_nodes(a, b)) for a, b in ranges))


def inclusion_plan(index: int, tree_size: int) -> ProofPlan:
    """Plan the inclusion proof of leaf ``index`` in the tree of ``tree_size`` leaves (RFC 9162 2.1.3.1).

    Walks ``PATH(m, D[n])`` from the root down, recording each sibling subtree, then reverses the list
    since the proof runs from the leaf up. At most one element is ephemeral: the right-border sibling
    where the leaf's path leaves the border.
    """
    _check_size("index", index)
    _check_size("tree_size", tree_size)
    if index >= tree_size:
        raise ValueError(f"leaf index {index} is not below tree size {tree_size}")
    siblings: list[tuple[int, int]] = []
    lo, hi = 0, tree_size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            siblings.append((lo + k, hi))
            hi = lo + k
        else:
            siblings.append((lo, lo + k))
            lo += k
    siblings.reverse()
    return _plan(siblings)


def consistency_plan(first: int, second: int) -> ProofPlan:
    """Plan the consistency proof between tree sizes ``first`` and ``second`` (RFC 9162 2.1.4.1).

    Follows ``SUBPROOF(m, D[n], b)`` from the root down: the recursion's trailing ``MTH`` terms are
    recorded on the way and the list reversed, the subtree equal to the old tree being included only
    when it is not the old tree itself. Equal sizes give an empty proof; RFC 9162 defines none from the
    empty tree, so ``first == 0 < second`` is refused.
    """
    _check_size("first", first)
    _check_size("second", second)
    if first > second:
        raise ValueError(f"first size {first} exceeds second size {second}")
    if first == second:
        return ProofPlan(())
    if first == 0:
        raise ValueError("no consistency proof exists from the empty tree (RFC 9162 requires 0 < first)")
    terms: list[tuple[int, int]] = []
    lo, hi = 0, second
    whole_old_tree = True  # the RFC's `b`: is [lo, hi) still the old tree's own root?
    while hi != first:
        k = _split(hi - lo)
        if first <= lo + k:
            terms.append((lo + k, hi))
            hi = lo + k
        else:
            terms.append((lo, lo + k))
            lo += k
            whole_old_tree = False
    if not whole_old_tree:
        terms.append((lo, hi))
    terms.reverse()
    return _plan(terms)


# --- computing with fetched nodes ---------------------------------------------------------------------------


def _lookup(parts: Iterable[NodeId], nodes: Mapping[NodeId, bytes]) -> list[bytes]:
    hashes: list[bytes] = []
    missing: list[NodeId] = []
    for node_id in parts:
        value = nodes.get(node_id)
        if value is None:
            missing.append(node_id)
            continue
        if len(value) != HASH_SIZE:
            raise ValueError(f"stored Merkle node {node_id} is {len(value)} bytes, not {HASH_SIZE}")
        hashes.append(bytes(value))
    if missing:
        raise MissingNodeError(missing)
    return hashes


def proof_from_nodes(plan: ProofPlan, nodes: Mapping[NodeId, bytes]) -> list[bytes]:
    """Assemble a proof from a plan and the stored nodes fetched for it (``{(level, index): hash}``).

    Raises :class:`MissingNodeError` naming every node of ``plan.node_ids`` absent from ``nodes``.
    """
    missing = [node_id for node_id in plan.node_ids if node_id not in nodes]
    if missing:
        raise MissingNodeError(missing)
    return [fold_subtrees(_lookup(element.parts, nodes)) for element in plan.elements]


def root_from_nodes(size: int, nodes: Mapping[NodeId, bytes]) -> bytes:
    """The root of the tree of ``size`` leaves, from the stored nodes at ``compact_range(size)``."""
    coords = compact_range(size)
    if not coords:
        return EMPTY_ROOT
    return fold_subtrees(_lookup(coords, nodes))


@dataclass(frozen=True)
class AppendResult:
    """Outcome of :func:`append_plan`: what to store, and the new tree head."""

    size: int
    root: bytes
    nodes: list[StoredNode]
    """Every perfect subtree the batch completed (leaves included), in completion order."""
    border: list[bytes]
    """Hashes at ``compact_range(size)``: pass them to the next :func:`append_plan`."""


def append_plan(size: int, border: Sequence[bytes], leaf_hashes: Iterable[bytes]) -> AppendResult:
    """Append a batch of leaf hashes to a tree of ``size`` leaves, reading nothing but its right border.

    ``border`` holds the hashes of :func:`compact_range` ``(size)``, left to right. Each new leaf is
    pushed onto that stack and merged with equal-level subtrees below it, which is exactly how perfect
    subtrees complete; every completed node is reported once, so the caller can insert them all in one
    statement. Cost: one hash per new node; memory ``O(log n)`` besides the returned nodes.
    """
    coords = compact_range(size)
    if len(border) != len(coords):
        raise ValueError(f"a tree of size {size} has {len(coords)} border hashes, got {len(border)}")
    for (level, _), value in zip(coords, border, strict=True):
        if len(value) != HASH_SIZE:
            raise ValueError(f"border hash at level {level} is {len(value)} bytes, not {HASH_SIZE}")
    stack = [bytes(value) for value in border]
    nodes: list[StoredNode] = []
    # Hot loop (a backfill may append millions of leaves): bound locals, and tuple.__new__ skips the
    # NamedTuple constructor's Python-level argument handling.
    record = nodes.append
    new = tuple.__new__
    sha256 = _sha256
    prefix = _NODE_PREFIX
    n = size
    for value in leaf_hashes:
        if len(value) != HASH_SIZE:
            raise ValueError(f"leaf hash {n} is {len(value)} bytes, not {HASH_SIZE}")
        h = bytes(value)
        record(new(StoredNode, (0, n, h)))
        n += 1
        # The stack holds compact_range(n - 1): the new leaf completes one perfect subtree per trailing
        # zero bit of n, merging with the stack's top entry each time.
        m = n
        level = 0
        while not m & 1:
            h = sha256(prefix + stack.pop() + h).digest()
            level += 1
            m >>= 1
            record(new(StoredNode, (level, m - 1, h)))
        stack.append(h)
    return AppendResult(n, fold_subtrees(stack) if stack else EMPTY_ROOT, nodes, stack)


# --- verification (RFC 9162 2.1.3.2 and 2.1.4.2) ------------------------------------------------------------


def _is_hash(value: object) -> bool:
    return isinstance(value, bytes | bytearray) and len(value) == HASH_SIZE


def _is_size(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _hash_list(proof: object) -> list[bytes] | None:
    """The proof as a list of 32-byte hashes, or None if it is not one (never raises)."""
    if isinstance(proof, bytes | bytearray | str) or not isinstance(proof, Iterable):
        return None
    try:
        items = list(proof)
    except Exception:  # a hostile iterable must not make verification raise
        return None
    if not all(_is_hash(item) for item in items):
        return None
    return [bytes(item) for item in items]


def verify_inclusion(
    leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """Whether ``proof`` puts ``leaf_hash`` at ``index`` in the tree of ``tree_size`` leaves with ``root``.

    RFC 9162 section 2.1.3.2, verbatim. Malformed input (``index >= tree_size``, a hash that is not 32
    bytes, a proof of the wrong length or type) gives False, never an exception.
    """
    if not (_is_size(index) and _is_size(tree_size)) or index >= tree_size:
        return False
    if not (_is_hash(leaf_hash) and _is_hash(root)):
        return False
    path = _hash_list(proof)
    if path is None:
        return False
    fn, sn = index, tree_size - 1
    r = bytes(leaf_hash)
    for p in path:
        if sn == 0:
            return False  # proof longer than the path to the root
        if fn & 1 or fn == sn:
            r = _sha256(_NODE_PREFIX + p + r).digest()
            # A right-border node without a right sibling is promoted level by level, unhashed.
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = _sha256(_NODE_PREFIX + r + p).digest()
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Whether ``proof`` shows the tree of ``first`` leaves (``first_root``) is a prefix of ``second``'s.

    RFC 9162 section 2.1.4.2 for ``0 < first < second``. Equal sizes are consistent exactly when the proof
    is empty and the roots are the same bytes; ``first == 0 < second`` is refused (any root would
    "verify"), as is ``first > second``, as transparency-dev/merkle does. Malformed input gives False.
    """
    if not (_is_size(first) and _is_size(second)) or first > second:
        return False
    path = _hash_list(proof)
    if path is None:
        return False
    if first == second:
        return not path and isinstance(first_root, bytes | bytearray) and first_root == second_root
    if first == 0 or not path or not (_is_hash(first_root) and _is_hash(second_root)):
        return False
    if first & (first - 1) == 0:
        # The old root is itself a node of the new tree, so the proof omits it.
        path.insert(0, bytes(first_root))
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = _sha256(_NODE_PREFIX + c + fr).digest()
            sr = _sha256(_NODE_PREFIX + c + sr).digest()
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = _sha256(_NODE_PREFIX + sr + c).digest()
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == first_root and sr == second_root


# --- whole-tree roots ---------------------------------------------------------------------------------------


def root_of_leaf_hashes(leaf_hashes: Iterable[bytes]) -> bytes:
    """The root over a stream of leaf hashes, keeping only the ``O(log n)`` compact range in memory."""
    tree = CompactRange()
    tree.extend(leaf_hashes)
    return tree.root()


class CompactRange:
    """A tree grown leaf by leaf that keeps only its right border (``O(log n)`` hashes), resumable.

    A whole-log verification feeds it the leaves it recomputes, a batch at a time, and asks for the root
    wherever a signed checkpoint was taken; unlike :func:`append_plan` it records no nodes, since nothing
    it computes is stored.
    """

    __slots__ = ("_stack", "size")

    def __init__(self) -> None:
        self.size = 0
        self._stack: list[bytes] = []

    @classmethod
    def from_border(cls, size: int, border: Sequence[bytes]) -> CompactRange:
        """The tree of ``size`` leaves whose right border (the hashes at :func:`compact_range`) is ``border``."""
        if len(border) != size.bit_count():
            raise ValueError(f"a tree of size {size} has {size.bit_count()} border hashes, got {len(border)}")
        tree = cls()
        tree.size = size
        tree._stack = [bytes(h) for h in border]
        return tree

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        # Runs once per log entry: bare hashlib calls and local names.
        sha256 = _sha256
        prefix = _NODE_PREFIX
        width = HASH_SIZE
        stack = self._stack
        push = stack.append
        pop = stack.pop
        n = self.size
        try:
            for h in leaf_hashes:
                if len(h) != width:
                    raise ValueError(f"leaf hash {n} is {len(h)} bytes, not {width}")
                n += 1
                m = n
                while not m & 1:
                    h = sha256(prefix + pop() + h).digest()
                    m >>= 1
                push(h)
        finally:
            self.size = n

    def root(self) -> bytes:
        return fold_subtrees(self._stack) if self._stack else EMPTY_ROOT
