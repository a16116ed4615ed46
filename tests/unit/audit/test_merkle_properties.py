"""Property tests of the audit Merkle tree against the recursive definitions of RFC 9162 section 2.1.

The references below (``_mth``, ``_path``, ``_proof``) transcribe the RFC's ``MTH``, ``PATH`` and
``PROOF``/``SUBPROOF`` literally over a list of leaf hashes; the module under test instead plans proofs
over stored perfect subtrees, so agreement between the two is meaningful.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.audit.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    MissingNodeError,
    append_plan,
    compact_range,
    consistency_plan,
    hash_children,
    hash_leaf,
    inclusion_plan,
    proof_from_nodes,
    root_from_nodes,
    root_of_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)
from tests.support.merkle_tree import MerkleTree, root_of_leaves

MAX_SIZE = 300
FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- RFC 9162 references ------------------------------------------------------------------------------------


def _split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def _mth(hashes: Sequence[bytes]) -> bytes:
    if not hashes:
        return EMPTY_ROOT
    if len(hashes) == 1:
        return hashes[0]
    k = _split(len(hashes))
    return hash_children(_mth(hashes[:k]), _mth(hashes[k:]))


def _path(m: int, hashes: Sequence[bytes]) -> list[bytes]:
    """RFC 9162 2.1.3.1 PATH(m, D[n])."""
    if len(hashes) == 1:
        return []
    k = _split(len(hashes))
    if m < k:
        return [*_path(m, hashes[:k]), _mth(hashes[k:])]
    return [*_path(m - k, hashes[k:]), _mth(hashes[:k])]


def _subproof(m: int, hashes: Sequence[bytes], whole: bool) -> list[bytes]:
    """RFC 9162 2.1.4.1 SUBPROOF(m, D[n], b)."""
    n = len(hashes)
    if m == n:
        return [] if whole else [_mth(hashes)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, hashes[:k], whole), _mth(hashes[k:])]
    return [*_subproof(m - k, hashes[k:], False), _mth(hashes[:k])]


def _proof(m: int, hashes: Sequence[bytes]) -> list[bytes]:
    return _subproof(m, hashes, True)


def _leaves(size: int, salt: bytes) -> list[bytes]:
    return [salt + i.to_bytes(4, "big") for i in range(size)]


def _flip(value: bytes, bit: int) -> bytes:
    out = bytearray(value)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


sizes = st.integers(min_value=1, max_value=MAX_SIZE)
salts = st.binary(max_size=8)


# --- roots and appends --------------------------------------------------------------------------------------


@FAST
@given(size=st.integers(min_value=0, max_value=MAX_SIZE), salt=salts)
def test_roots_agree(size: int, salt: bytes) -> None:
    leaves = _leaves(size, salt)
    hashes = [hash_leaf(leaf) for leaf in leaves]
    expected = _mth(hashes)
    assert root_of_leaves(leaves) == expected
    assert root_of_leaf_hashes(iter(hashes)) == expected
    assert MerkleTree(leaves).root() == expected


@FAST
@given(batches=st.lists(st.integers(min_value=0, max_value=40), max_size=25), salt=salts)
def test_incremental_appends_in_random_batches(batches: list[int], salt: bytes) -> None:
    leaves = _leaves(sum(batches), salt)
    size = 0
    border: list[bytes] = []
    stored: dict[tuple[int, int], bytes] = {}
    for count in batches:
        new = leaves[size:size + count]
        result = append_plan(size, border, [hash_leaf(leaf) for leaf in new])
        assert result.size == size + count
        assert result.root == root_of_leaves(leaves[:result.size])
        # Exactly the perfect subtrees that end inside this batch, each once, each with its true hash.
        completed = {(level, index) for level in range(result.size.bit_length())
                     for index in range(result.size >> level)
                     if ((index + 1) << level) > size}
        emitted = [(node.level, node.index) for node in result.nodes]
        assert len(emitted) == len(set(emitted))
        assert set(emitted) == completed
        for node in result.nodes:
            first_leaf = node.index << node.level
            assert node.hash == root_of_leaves(leaves[first_leaf:first_leaf + (1 << node.level)])
            stored[(node.level, node.index)] = node.hash
        assert result.border == [stored[node_id] for node_id in compact_range(result.size)]
        size, border = result.size, result.border
    assert root_from_nodes(size, stored) == root_of_leaves(leaves)


def test_append_plan_rejects_a_wrong_border() -> None:
    with pytest.raises(ValueError):
        append_plan(3, [b"\x00" * HASH_SIZE], [])  # size 3 has two border nodes
    with pytest.raises(ValueError):
        append_plan(1, [b"short"], [])
    with pytest.raises(ValueError):
        append_plan(0, [], [b"not a hash"])


def test_root_matches_pymerkle() -> None:
    # pymerkle's defaults are RFC 9162 hashing: sha256, 0x00 leaf and 0x01 node prefixes
    # (its `disable_security` would drop them; it is left off).
    pymerkle = pytest.importorskip("pymerkle")
    reference = pymerkle.InmemoryTree(algorithm="sha256")
    assert reference.security and reference.leaf_prefix == b"\x00" and reference.node_prefix == b"\x01"
    get_root = getattr(reference, "get_root", None) or reference.get_state  # pymerkle 6 names it get_state
    ours = MerkleTree()
    for size in range(1, 260):
        entry = f"audit entry {size}".encode()
        reference.append_entry(entry)
        ours.append(entry)
        assert ours.root() == get_root(), size
    for size in (0, 1, 2, 3, 5, 8, 100, 128, 129, 255):
        assert ours.root(size) == get_root(size)


# --- proofs -------------------------------------------------------------------------------------------------


@FAST
@given(size=sizes, salt=salts)
def test_every_inclusion_proof_verifies(size: int, salt: bytes) -> None:
    tree = MerkleTree(_leaves(size, salt))
    hashes = [tree.leaf_hash(i) for i in range(size)]
    root = tree.root()
    for index in range(size):
        proof = tree.inclusion_proof(index)
        assert proof == _path(index, hashes)
        assert verify_inclusion(hashes[index], index, size, proof, root)


@FAST
@given(second=sizes, salt=salts)
def test_every_consistency_proof_verifies(second: int, salt: bytes) -> None:
    tree = MerkleTree(_leaves(second, salt))
    hashes = [tree.leaf_hash(i) for i in range(second)]
    root2 = tree.root()
    for first in range(1, second + 1):
        proof = tree.consistency_proof(first)
        assert proof == (_proof(first, hashes) if first < second else [])
        assert verify_consistency(first, second, tree.root(first), root2, proof)


@FAST
@given(data=st.data(), stored=sizes, salt=salts)
def test_historical_proofs_from_a_bigger_store(data: st.DataObject, stored: int, salt: bytes) -> None:
    """Proofs for past tree sizes come from the same stored nodes, fetched by plan alone."""
    tree = MerkleTree(_leaves(stored, salt))
    hashes = [tree.leaf_hash(i) for i in range(stored)]
    second = data.draw(st.integers(min_value=1, max_value=stored), label="second")
    first = data.draw(st.integers(min_value=1, max_value=second), label="first")
    index = data.draw(st.integers(min_value=0, max_value=second - 1), label="index")
    for plan, expected in [
        (inclusion_plan(index, second), _path(index, hashes[:second])),
        (consistency_plan(first, second), _proof(first, hashes[:second]) if first < second else []),
    ]:
        fetched = {node_id: tree.nodes[node_id] for node_id in plan.node_ids}  # the one query
        assert proof_from_nodes(plan, fetched) == expected
        # O(log n) reads: at most one ephemeral element, itself at most log2(n) subtrees.
        assert len(plan.node_ids) <= 2 * second.bit_length()
        assert sum(element.ephemeral for element in plan.elements) <= 1
        if plan.node_ids:
            fetched.pop(plan.node_ids[-1])
            with pytest.raises(MissingNodeError):
                proof_from_nodes(plan, fetched)
    assert root_from_nodes(second, {n: tree.nodes[n] for n in compact_range(second)}) == _mth(hashes[:second])


@FAST
@given(data=st.data(), size=sizes, salt=salts)
def test_a_flipped_bit_breaks_inclusion(data: st.DataObject, size: int, salt: bytes) -> None:
    tree = MerkleTree(_leaves(size, salt))
    index = data.draw(st.integers(min_value=0, max_value=size - 1), label="index")
    leaf_hash, proof, root = tree.leaf_hash(index), tree.inclusion_proof(index), tree.root()
    assert verify_inclusion(leaf_hash, index, size, proof, root)
    target = data.draw(st.integers(min_value=0, max_value=len(proof) + 1), label="target")
    bit = data.draw(st.integers(min_value=0, max_value=8 * HASH_SIZE - 1), label="bit")
    if target == len(proof):
        assert not verify_inclusion(_flip(leaf_hash, bit), index, size, proof, root)
    elif target == len(proof) + 1:
        assert not verify_inclusion(leaf_hash, index, size, proof, _flip(root, bit))
    else:
        broken = [*proof[:target], _flip(proof[target], bit), *proof[target + 1:]]
        assert not verify_inclusion(leaf_hash, index, size, broken, root)


@FAST
@given(data=st.data(), second=st.integers(min_value=2, max_value=MAX_SIZE), salt=salts)
def test_a_flipped_bit_breaks_consistency(data: st.DataObject, second: int, salt: bytes) -> None:
    tree = MerkleTree(_leaves(second, salt))
    first = data.draw(st.integers(min_value=1, max_value=second - 1), label="first")
    proof, root1, root2 = tree.consistency_proof(first), tree.root(first), tree.root()
    assert verify_consistency(first, second, root1, root2, proof)
    target = data.draw(st.integers(min_value=0, max_value=len(proof) + 1), label="target")
    bit = data.draw(st.integers(min_value=0, max_value=8 * HASH_SIZE - 1), label="bit")
    if target == len(proof):
        assert not verify_consistency(first, second, _flip(root1, bit), root2, proof)
    elif target == len(proof) + 1:
        assert not verify_consistency(first, second, root1, _flip(root2, bit), proof)
    else:
        broken = [*proof[:target], _flip(proof[target], bit), *proof[target + 1:]]
        assert not verify_consistency(first, second, root1, root2, broken)


@FAST
@given(data=st.data(), size=sizes, salt=salts)
def test_wrong_position_or_size_breaks_inclusion(data: st.DataObject, size: int, salt: bytes) -> None:
    tree = MerkleTree(_leaves(size, salt))
    index = data.draw(st.integers(min_value=0, max_value=size - 1), label="index")
    leaf_hash, proof, root = tree.leaf_hash(index), tree.inclusion_proof(index), tree.root()
    other = data.draw(st.integers(min_value=0, max_value=2 * size).filter(lambda i: i != index), label="i")
    assert not verify_inclusion(leaf_hash, other, size, proof, root)
    assert not verify_inclusion(leaf_hash, index, size, proof[:-1] if proof else [root], root)
    assert not verify_inclusion(leaf_hash, index, size, [*proof, root], root)
    # (A different tree size is not always rejected: sizes whose trees have the same shape along this
    # path accept the same proof. The signed tree head binds size and root together; the published
    # vectors' "treeSize * 2" and "treeSize / 2" probes check the cases where the shapes differ.)


junk = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.binary(max_size=40),
    st.text(max_size=4), st.lists(st.binary(min_size=31, max_size=33), max_size=12),
    st.lists(st.integers(), max_size=3), st.floats(allow_nan=True),
)


@settings(max_examples=300, deadline=None)
@given(a=junk, b=junk, c=junk, d=junk, e=junk)
def test_verifiers_never_raise(a: object, b: object, c: object, d: object, e: object) -> None:
    assert verify_inclusion(a, b, c, d, e) in (True, False)  # type: ignore[arg-type]
    assert verify_consistency(a, b, c, d, e) in (True, False)  # type: ignore[arg-type]


def test_verifiers_refuse_malformed_sizes() -> None:
    tree = MerkleTree(_leaves(5, b""))
    leaf, proof, root = tree.leaf_hash(4), tree.inclusion_proof(4), tree.root()
    assert verify_inclusion(leaf, 4, 5, proof, root)
    assert not verify_inclusion(leaf, 5, 5, proof, root)  # index == size
    assert not verify_inclusion(leaf, -1, 5, proof, root)
    assert not verify_inclusion(leaf, 4, 5, (*proof, b""), root)
    assert not verify_inclusion(leaf, 4, 5, b"".join(proof), root)  # type: ignore[arg-type]  # not a list
    cproof, root2 = tree.consistency_proof(2), tree.root(2)
    assert verify_consistency(2, 5, root2, root, cproof)
    assert not verify_consistency(5, 2, root, root2, cproof)  # first > second
    assert not verify_consistency(0, 5, EMPTY_ROOT, root, cproof)  # from the empty tree: refused
    assert not verify_consistency(0, 5, EMPTY_ROOT, root, [])
    assert verify_consistency(5, 5, root, root, [])
    assert not verify_consistency(5, 5, root, root, [root])
    assert not verify_consistency(5, 5, root, root2, [])
    with pytest.raises(ValueError):
        consistency_plan(0, 5)
    with pytest.raises(ValueError):
        inclusion_plan(5, 5)


def test_streamed_root_of_a_large_log() -> None:
    # The whole-log check: a few hundred thousand leaves keep this quick while exercising deep stacks.
    count = 200_000
    hashes = (hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(count))
    stream_root = root_of_leaf_hashes(hashes)
    replay = append_plan(0, [], (hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(count)))
    assert stream_root == replay.root


@given(st.lists(st.binary(min_size=32, max_size=32), max_size=70), st.data())
def test_compact_range_grows_to_the_root_of_every_prefix(leaf_hashes: list[bytes], data: st.DataObject) -> None:
    from services.audit.merkle import CompactRange, root_of_leaf_hashes

    tree = CompactRange()
    assert tree.root() == root_of_leaf_hashes([])
    start = 0
    while start < len(leaf_hashes):
        cut = data.draw(st.integers(min_value=start + 1, max_value=len(leaf_hashes)))
        tree.extend(leaf_hashes[start:cut])
        start = cut
        assert tree.size == cut and tree.root() == root_of_leaf_hashes(leaf_hashes[:cut])
