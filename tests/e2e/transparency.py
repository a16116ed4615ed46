"""An auditor's own checks of the audit log, written from the specifications, not from RefNet's code: RFC 9162
Merkle proofs (leaf = the RFC 8785 JCS bytes of the entry as GET /audit/entries returns it) and the Ed25519
signature over a C2SP checkpoint's body with the key GET /audit/public-key publishes."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def leaf_hash(entry: Mapping[str, Any]) -> bytes:
    """RFC 9162 2.1.1: SHA-256(0x00 || leaf), the leaf being the entry's RFC 8785 canonical JSON."""
    return hashlib.sha256(b"\x00" + rfc8785.dumps(dict(entry))).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_inclusion_proof(index: int, tree_size: int, leaf: bytes, path: Sequence[bytes]) -> bytes:
    """RFC 9162 2.1.3.2: the root an inclusion proof leads to from a leaf hash (ValueError if malformed)."""
    if not 0 <= index < tree_size:
        raise ValueError("index outside the tree")
    fn, sn, r = index, tree_size - 1, leaf
    for p in path:
        if sn == 0:
            raise ValueError("proof too long")
        if fn & 1 or fn == sn:
            r = _node(p, r)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn, sn = fn >> 1, sn >> 1
        else:
            r = _node(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ValueError("proof too short")
    return r


def consistent(first: int, second: int, first_root: bytes, second_root: bytes, path: Sequence[bytes]) -> bool:
    """RFC 9162 2.1.4.2: does the consistency proof show the tree of size `second` extends that of `first`?"""
    if not 0 < first <= second:
        return False
    if first == second:
        return not path and first_root == second_root
    proof = list(path)
    if first & (first - 1) == 0:  # an exact power of two: its root is the proof's first node
        proof.insert(0, first_root)
    if not proof:
        return False
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = _node(c, fr), _node(c, sr)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn, sn = fn >> 1, sn >> 1
        else:
            sr = _node(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == first_root and sr == second_root


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    tree_size: int
    root: bytes


def verified_checkpoint(checkpoint: Mapping[str, Any], public_key: Mapping[str, Any]) -> Checkpoint:
    """Check the Ed25519 signature over the checkpoint body (raises InvalidSignature if wrong) and that the
    body says what the JSON around it says; -> what the log's operator signed."""
    assert public_key["algorithm"] == "Ed25519", public_key
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key["public_key"]))
    body = str(checkpoint["body"])
    key.verify(base64.b64decode(checkpoint["signature"]), body.encode())
    lines = body.split("\n")
    assert len(lines) == 4 and lines[3] == "", f"not a C2SP checkpoint body: {body!r}"
    signed = Checkpoint(origin=lines[0], tree_size=int(lines[1]), root=base64.b64decode(lines[2]))
    assert (signed.origin, signed.tree_size, signed.root.hex()) == (
        checkpoint["origin"], checkpoint["tree_size"], checkpoint["root_hash"]), checkpoint
    return signed
