"""The audit Merkle tree against the published transparency-dev/merkle test vectors.

Data: ``tests/data/transparency_dev/`` (see its README for source paths and commits):

* ``constants.json``: ``testonly/constants.go`` (leaves, every node hash, every root, compact ranges) and the
  vectors of ``proof/verify_test.go`` (inclusion and consistency proofs with their expected hashes);
* ``proof_node_plans.json``: ``proof/proof_test.go``, which storage nodes each proof is built from;
* ``inclusion_probes.json`` / ``consistency_probes.json``: the ``testdata/`` files ``cmd/proofgen`` generates,
  happy paths plus the corrupted probes every verifier must reject, each copied verbatim.

The corruption functions below mirror ``corruptInclusionProof`` / ``corruptConsistencyProof`` of
``proof/verify_test.go`` so the same probes are also applied to every proof vector, not only to the ones
that have published files.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from services.audit.merkle import (
    EMPTY_ROOT,
    ProofElement,
    ProofPlan,
    append_plan,
    compact_range,
    consistency_plan,
    hash_leaf,
    inclusion_plan,
    proof_from_nodes,
    root_from_nodes,
    root_of_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)
from tests.support.merkle_tree import MerkleTree, root_of_leaves

DATA = Path(__file__).resolve().parents[2] / "data" / "transparency_dev"
UINT64 = (1 << 64) - 1  # Go's sizes are uint64: `0 - 1` wraps


@cache
def _load(name: str) -> Any:
    return json.loads((DATA / name).read_text())


def _constants() -> dict[str, Any]:
    constants: dict[str, Any] = _load("constants.json")["testonly/constants.go"]
    return constants


def _verify_test() -> dict[str, Any]:
    vectors: dict[str, Any] = _load("constants.json")["proof/verify_test.go"]
    return vectors


def _hexes(values: list[str]) -> list[bytes]:
    return [bytes.fromhex(v) for v in values]


LEAVES = _hexes(_constants()["leaf_inputs"])
ROOTS = _hexes(_constants()["root_hashes"])
NODE_HASHES = [_hexes(level) for level in _constants()["node_hashes"]]
SOME_HASH = bytes.fromhex(_verify_test()["sha256_some_hash"])
EMPTY_TREE_HASH = bytes.fromhex(_verify_test()["sha256_empty_tree_hash"])


@pytest.fixture(scope="module")
def tree() -> MerkleTree:
    return MerkleTree(LEAVES)


# --- testonly/constants.go ----------------------------------------------------------------------------------


def test_empty_root_is_sha256_of_nothing() -> None:
    assert EMPTY_ROOT == ROOTS[0] == EMPTY_TREE_HASH
    assert root_of_leaves([]) == root_of_leaf_hashes([]) == MerkleTree().root() == EMPTY_ROOT


@pytest.mark.parametrize("size", range(len(ROOTS)))
def test_root_for_every_published_size(tree: MerkleTree, size: int) -> None:
    expected = ROOTS[size]
    assert root_of_leaves(LEAVES[:size]) == expected
    assert root_of_leaf_hashes(hash_leaf(leaf) for leaf in LEAVES[:size]) == expected
    assert MerkleTree(LEAVES[:size]).root() == expected
    assert tree.root(size) == expected  # a historical root, from the nodes of a bigger store
    if size:
        assert bytes.fromhex(_verify_test()["roots"][size - 1]) == expected


def test_roots_when_appending_one_leaf_at_a_time() -> None:
    size, border = 0, list[bytes]()
    for leaf, expected in zip(LEAVES, ROOTS[1:], strict=True):
        result = append_plan(size, border, [hash_leaf(leaf)])
        assert result.root == expected
        size, border = result.size, result.border


def test_every_published_node_hash_is_stored(tree: MerkleTree) -> None:
    for level, hashes in enumerate(NODE_HASHES):
        for index, expected in enumerate(hashes):
            assert tree.nodes[(level, index)] == expected
    assert len(tree.nodes) == sum(len(level) for level in NODE_HASHES)
    assert [hash_leaf(leaf) for leaf in LEAVES] == NODE_HASHES[0]


@pytest.mark.parametrize("size", range(len(ROOTS)))
def test_compact_range_matches_published_compact_trees(size: int) -> None:
    published = [tuple(ref) for ref in _constants()["compact_trees"][size]]
    assert compact_range(size) == published
    border = [NODE_HASHES[level][index] for level, index in published]
    assert MerkleTree(LEAVES[:size]).append_leaf_hashes([]).border == border
    assert root_from_nodes(size, {(lv, ix): NODE_HASHES[lv][ix] for lv, ix in published}) == ROOTS[size]


# --- proof/verify_test.go: proofs, and the probes its verifier tests reject ---------------------------------


def _extend(proof: list[bytes], *hashes: bytes) -> list[bytes]:
    return [*proof, *hashes]


def _prepend(proof: list[bytes], *hashes: bytes) -> list[bytes]:
    return [*hashes, *proof]


def corrupt_inclusion(
    index: int, size: int, proof: list[bytes], root: bytes, leaf_hash: bytes
) -> Iterator[tuple[str, tuple[bytes, int, int, list[bytes], bytes]]]:
    """``corruptInclusionProof``: (description, verify_inclusion arguments) that must all fail."""
    yield "leafIndex - 1", (leaf_hash, (index - 1) & UINT64, size, proof, root)
    yield "leafIndex + 1", (leaf_hash, index + 1, size, proof, root)
    yield "leafIndex ^ 2", (leaf_hash, index ^ 2, size, proof, root)
    yield "treeSize * 2", (leaf_hash, index, size * 2, proof, root)
    yield "treeSize / 2", (leaf_hash, index, size // 2, proof, root)
    yield "wrong leaf", (b"WrongLeaf", index, size, proof, root)
    yield "empty root", (leaf_hash, index, size, proof, EMPTY_TREE_HASH)
    yield "random root", (leaf_hash, index, size, proof, SOME_HASH)
    yield "trailing garbage", (leaf_hash, index, size, _extend(proof, b""), root)
    yield "trailing root", (leaf_hash, index, size, _extend(proof, root), root)
    yield "preceding garbage", (leaf_hash, index, size, _prepend(proof, b""), root)
    yield "preceding root", (leaf_hash, index, size, _prepend(proof, root), root)
    for i in range(len(proof)):
        wrong = list(proof)
        wrong[i] = bytes([wrong[i][0] ^ 8]) + wrong[i][1:]
        yield f"modified proof[{i}] bit 3", (leaf_hash, index, size, wrong, root)
    if proof:
        yield "removed component", (leaf_hash, index, size, proof[:-1], root)
    if len(proof) > 1:
        yield "inserted component", (leaf_hash, index, size, _prepend(proof[1:], proof[0], SOME_HASH), root)


def corrupt_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: list[bytes]
) -> Iterator[tuple[str, tuple[int, int, bytes, bytes, list[bytes]]]]:
    """``corruptConsistencyProof``: (description, verify_consistency arguments) that must all fail."""
    yield "size1 - 1", ((size1 - 1) & UINT64, size2, root1, root2, proof)
    yield "size1 + 1", (size1 + 1, size2, root1, root2, proof)
    yield "size1 ^ 2", (size1 ^ 2, size2, root1, root2, proof)
    yield "size2 * 2", (size1, size2 * 2, root1, root2, proof)
    yield "size2 / 2", (size1, size2 // 2, root1, root2, proof)
    yield "wrong root1", (size1, size2, b"WrongRoot", root2, proof)
    yield "wrong root2", (size1, size2, root1, b"WrongRoot", proof)
    yield "swapped roots", (size1, size2, root2, root1, proof)
    yield "empty proof", (size1, size2, root1, root2, [])
    yield "trailing garbage", (size1, size2, root1, root2, _extend(proof, b""))
    yield "trailing root1", (size1, size2, root1, root2, _extend(proof, root1))
    yield "trailing root2", (size1, size2, root1, root2, _extend(proof, root2))
    yield "preceding garbage", (size1, size2, root1, root2, _prepend(proof, b""))
    yield "preceding root1", (size1, size2, root1, root2, _prepend(proof, root1))
    yield "preceding root2", (size1, size2, root1, root2, _prepend(proof, root2))
    yield "preceding proof[0]", (size1, size2, root1, root2, _prepend(proof, proof[0]))
    if proof:
        yield "truncated proof", (size1, size2, root1, root2, proof[:-1])
    for i in range(len(proof)):
        wrong = list(proof)
        wrong[i] = bytes([wrong[i][0] ^ 16]) + wrong[i][1:]
        yield f"modified proof[{i}] bit 4", (size1, size2, root1, root2, wrong)


INCLUSION_VECTORS = _verify_test()["inclusion_proofs"]
CONSISTENCY_VECTORS = _verify_test()["consistency_proofs"]


def test_inclusion_vector_zero_is_an_invalid_path() -> None:
    # verify_test.go skips {0, 0, nil}: there is no leaf in an empty tree.
    assert INCLUSION_VECTORS[0] == {"leaf": 0, "size": 0, "proof": []}
    with pytest.raises(ValueError):
        inclusion_plan(0, 0)
    assert not verify_inclusion(EMPTY_TREE_HASH, 0, 0, [], EMPTY_TREE_HASH)


@pytest.mark.parametrize("vector", INCLUSION_VECTORS[1:], ids=lambda v: f"leaf{v['leaf']}-size{v['size']}")
def test_published_inclusion_proof(tree: MerkleTree, vector: dict[str, Any]) -> None:
    index, size, expected = vector["leaf"] - 1, vector["size"], _hexes(vector["proof"])
    leaf_hash, root = hash_leaf(LEAVES[index]), ROOTS[size]
    assert tree.inclusion_proof(index, size) == expected
    assert MerkleTree(LEAVES[:size]).inclusion_proof(index) == expected
    assert verify_inclusion(leaf_hash, index, size, expected, root)
    accepted = [desc for desc, args in corrupt_inclusion(index, size, expected, root, leaf_hash)
                if verify_inclusion(*args)]
    assert accepted == []


@pytest.mark.parametrize("vector", CONSISTENCY_VECTORS, ids=lambda v: f"{v['size1']}-{v['size2']}")
def test_published_consistency_proof(tree: MerkleTree, vector: dict[str, Any]) -> None:
    size1, size2, expected = vector["size1"], vector["size2"], _hexes(vector["proof"])
    root1, root2 = ROOTS[size1], ROOTS[size2]
    assert tree.consistency_proof(size1, size2) == expected
    assert MerkleTree(LEAVES[:size2]).consistency_proof(size1) == expected
    assert verify_consistency(size1, size2, root1, root2, expected)
    if not expected:
        return  # verify_test.go corrupts only non-trivial proofs
    accepted = [desc for desc, args in corrupt_consistency(size1, size2, root1, root2, expected)
                if verify_consistency(*args)]
    assert accepted == []


def test_single_entry_inclusion() -> None:
    # TestVerifyInclusionSingleEntry: root and leaf hash of a 1-entry tree coincide, the proof is empty.
    h = hash_leaf(b"data")
    assert verify_inclusion(h, 0, 1, [], h)
    assert not verify_inclusion(b"", 0, 1, [], h)
    assert not verify_inclusion(h, 0, 1, [], b"")
    assert not verify_inclusion(b"", 0, 1, [], b"")


@pytest.mark.parametrize(("index", "size"), [(0, 0), (0, 1), (1, 0), (2, 1)])
def test_inclusion_with_invalid_root_or_leaf(index: int, size: int) -> None:
    # TestVerifyInclusion's first loop.
    assert not verify_inclusion(SOME_HASH, index, size, [], b"")
    assert not verify_inclusion(b"", index, size, [], EMPTY_TREE_HASH)
    assert not verify_inclusion(SOME_HASH, index, size, [], EMPTY_TREE_HASH)


# --- proof/proof_test.go: which stored nodes a proof is built from ------------------------------------------


def _go_nodes_to_plan(case: dict[str, Any]) -> ProofPlan:
    ids = [tuple(node) for node in case["ids"]]
    begin, end = case.get("rehash", (len(ids), len(ids)))
    elements = [ProofElement((node,)) for node in ids[:begin]]
    if end > begin:
        # Go lists the nodes of the rehashed (ephemeral) node bottom-up; ours are left to right.
        elements.append(ProofElement(tuple(reversed(ids[begin:end]))))
    elements += [ProofElement((node,)) for node in ids[end:]]
    return ProofPlan(tuple(elements))


@pytest.mark.parametrize("case", _load("proof_node_plans.json")["inclusion"],
                         ids=lambda c: f"size{c['size']}-index{c['index']}")
def test_inclusion_plan_matches_go_storage_nodes(case: dict[str, Any]) -> None:
    if case.get("error"):
        with pytest.raises(ValueError):
            inclusion_plan(case["index"], case["size"])
        return
    plan = inclusion_plan(case["index"], case["size"])
    assert plan == _go_nodes_to_plan(case)
    assert sorted(plan.node_ids) == sorted({tuple(node) for node in case["ids"]})


@pytest.mark.parametrize("case", _load("proof_node_plans.json")["consistency"],
                         ids=lambda c: f"{c['size1']}-{c['size2']}")
def test_consistency_plan_matches_go_storage_nodes(case: dict[str, Any]) -> None:
    if case.get("error"):
        with pytest.raises(ValueError):
            consistency_plan(case["size1"], case["size2"])
        return
    assert consistency_plan(case["size1"], case["size2"]) == _go_nodes_to_plan(case)


def test_plans_fetch_only_what_they_name(tree: MerkleTree) -> None:
    # The store reads plan.node_ids in one query and nothing else.
    for plan, expected in [
        (inclusion_plan(5, 8), _hexes(INCLUSION_VECTORS[3]["proof"])),
        (consistency_plan(6, 7), _hexes(CONSISTENCY_VECTORS[4]["proof"])),
    ]:
        fetched = {node_id: tree.nodes[node_id] for node_id in plan.node_ids}
        assert proof_from_nodes(plan, fetched) == expected


# --- testdata/: the published probe files -------------------------------------------------------------------


def _b64(value: str) -> bytes:
    return base64.b64decode(value)


def _probe_id(entry: dict[str, Any]) -> str:
    return str(entry["path"]).removeprefix("testdata/").removesuffix(".json")


INCLUSION_PROBES = _load("inclusion_probes.json")["probes"]
CONSISTENCY_PROBES = _load("consistency_probes.json")["probes"]


def test_all_published_probe_files_are_present() -> None:
    # Five inclusion and five consistency vectors, each with its full set of generated probes.
    assert len(INCLUSION_PROBES) == 98
    assert len(CONSISTENCY_PROBES) == 102
    assert sum(not e["probe"]["wantErr"] for e in INCLUSION_PROBES) == 6
    assert all(len(e["commit"]) == 40 for e in INCLUSION_PROBES + CONSISTENCY_PROBES)


@pytest.mark.parametrize("entry", INCLUSION_PROBES, ids=_probe_id)
def test_published_inclusion_probe(tree: MerkleTree, entry: dict[str, Any]) -> None:
    probe = entry["probe"]
    index = probe["leafIdx"] if "leafIdx" in probe else probe["leafIndex"]
    size, root, leaf_hash = probe["treeSize"], _b64(probe["root"]), _b64(probe["leafHash"])
    proof = [_b64(p) for p in probe["proof"] or []]  # Go writes a nil slice as null
    assert verify_inclusion(leaf_hash, index, size, proof, root) is (not probe["wantErr"])
    if not probe["wantErr"] and size <= len(LEAVES) and root == ROOTS[size]:
        assert tree.inclusion_proof(index, size) == proof  # we produce the published proof too


@pytest.mark.parametrize("entry", CONSISTENCY_PROBES, ids=_probe_id)
def test_published_consistency_probe(tree: MerkleTree, entry: dict[str, Any]) -> None:
    probe = entry["probe"]
    size1, size2, root1, root2 = probe["size1"], probe["size2"], _b64(probe["root1"]), _b64(probe["root2"])
    proof = [_b64(p) for p in probe["proof"] or []]
    assert verify_consistency(size1, size2, root1, root2, proof) is (not probe["wantErr"])
    if not probe["wantErr"] and size2 <= len(LEAVES) and (root1, root2) == (ROOTS[size1], ROOTS[size2]):
        assert tree.consistency_proof(size1, size2) == proof


def _numbered_dirs(probes: list[dict[str, Any]], kind: str) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for entry in probes:
        directory = entry["path"].split("/")[2]
        if directory.isdigit():
            groups.setdefault(f"{kind}/{directory}", []).append(entry["probe"])
    return groups


def test_published_inclusion_corruptions_follow_verify_test_rules() -> None:
    """Each numbered directory holds its happy path plus exactly ``corruptInclusionProof``'s probes."""
    for directory, probes in _numbered_dirs(INCLUSION_PROBES, "inclusion").items():
        (happy,) = [p for p in probes if not p["wantErr"]]
        proof = [_b64(p) for p in happy["proof"] or []]
        args = (happy["leafIdx"], happy["treeSize"], proof, _b64(happy["root"]), _b64(happy["leafHash"]))
        generated = sorted(repr(a) for _, a in corrupt_inclusion(*args))
        published = sorted(
            repr((_b64(p["leafHash"]), p["leafIdx"], p["treeSize"], [_b64(h) for h in p["proof"] or []],
                  _b64(p["root"])))
            for p in probes if p["wantErr"]
        )
        assert published == generated, directory


def test_published_consistency_corruptions_follow_verify_test_rules() -> None:
    for directory, probes in _numbered_dirs(CONSISTENCY_PROBES, "consistency").items():
        (happy,) = [p for p in probes if not p["wantErr"]]
        proof = [_b64(p) for p in happy["proof"] or []]
        if not proof:
            assert len(probes) == 1, directory  # proofgen corrupts only non-trivial proofs
            continue
        args = (happy["size1"], happy["size2"], _b64(happy["root1"]), _b64(happy["root2"]), proof)
        generated = sorted(repr(a) for _, a in corrupt_consistency(*args))
        published = sorted(
            repr((p["size1"], p["size2"], _b64(p["root1"]), _b64(p["root2"]),
                  [_b64(h) for h in p["proof"] or []]))
            for p in probes if p["wantErr"]
        )
        assert published == generated, directory
