"""The checkpoint signing key: Ed25519, loaded from a PEM file, named the way C2SP signed notes name keys.

The key id is the C2SP signed-note key hash: the first four bytes of
``SHA-256(<origin> || "\\n" || 0x01 || <32-byte public key>)``, in hex. ``signed_note`` gives the whole note
(body, blank line, ``— <origin> <base64(key hash || signature)>``) for tools that speak the format.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALGORITHM = "Ed25519"
_ED25519_SIGNATURE_TYPE = b"\x01"


def key_hash(origin: str, public_key: bytes) -> bytes:
    return hashlib.sha256(origin.encode() + b"\n" + _ED25519_SIGNATURE_TYPE + public_key).digest()[:4]


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True)
class CheckpointSigner:
    private_key: Ed25519PrivateKey
    origin: str

    @property
    def public_key(self) -> bytes:
        return raw_public(self.private_key.public_key())

    @property
    def key_id(self) -> str:
        return key_hash(self.origin, self.public_key).hex()

    def sign(self, body: str) -> bytes:
        return self.private_key.sign(body.encode())

    def signed_note(self, body: str, signature: bytes) -> str:
        stamp = base64.b64encode(key_hash(self.origin, self.public_key) + signature).decode()
        return f"{body}\n\u2014 {self.origin} {stamp}\n"


def verify_signature(public_key: bytes, body: str, signature: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, body.encode())
    except (InvalidSignature, ValueError):
        return False
    return True


def generate_key_file(path: Path) -> None:
    """Write a new Ed25519 private key as PKCS#8 PEM, readable by its owner only."""
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)


def load_key_file(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} does not hold an Ed25519 private key")
    return key
