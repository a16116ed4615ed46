"""The checkpoint signing key: Ed25519, loaded from a PEM file, named the way C2SP signed notes name keys.

The key id is the C2SP signed-note key hash: the first four bytes of
``SHA-256(<origin> || "\\n" || 0x01 || <32-byte public key>)``, in hex. ``signed_note`` gives the whole note
(body, blank line, ``— <origin> <base64(key hash || signature)>``) for tools that speak the format.
"""

from __future__ import annotations

import base64
import hashlib
import json
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


# --- verifier keys and cosignatures (C2SP signed-note, tlog-cosignature) --------------------------------

_COSIGNATURE_TYPE = b"\x04"  # tlog-cosignature/v1, Ed25519
_SIGNATURE_TYPES = {"log": _ED25519_SIGNATURE_TYPE, "witness": _COSIGNATURE_TYPE}
MAX_TIMESTAMP = 2**63 - 1


@dataclass(frozen=True)
class VerifierKey:
    """A C2SP verifier key: ``<name>+<key id hex>+<base64(signature type || public key)>``."""

    name: str
    kind: str  # "log" (checkpoint signer, type 0x01) or "witness" (cosigner, type 0x04)
    public_key: bytes

    @property
    def key_id(self) -> bytes:
        return hashlib.sha256(self.name.encode() + b"\n" + _SIGNATURE_TYPES[self.kind]
                              + self.public_key).digest()[:4]

    def text(self) -> str:
        material = base64.b64encode(_SIGNATURE_TYPES[self.kind] + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{material}"


def parse_vkey(text: str) -> VerifierKey:
    """Read a verifier key; ValueError (naming what is wrong, not quoting it) unless it is well formed."""
    parts = text.strip().split("+", 2)  # the base64 key may hold "+" itself; a name may not
    if len(parts) != 3:
        raise ValueError("a verifier key is <name>+<key id>+<base64 key>")
    name, hash_text, material_text = parts
    if not name or any(c.isspace() for c in name):
        raise ValueError("a verifier key's name is one word")
    try:
        material = base64.b64decode(material_text, validate=True)
    except ValueError as exc:
        raise ValueError("a verifier key's key material is not base64") from exc
    kinds = {value: kind for kind, value in _SIGNATURE_TYPES.items()}
    if len(material) != 33 or material[:1] not in kinds:
        raise ValueError("a verifier key must be an Ed25519 checkpoint (0x01) or cosignature (0x04) key")
    key = VerifierKey(name, kinds[material[:1]], material[1:])
    if key.key_id.hex() != hash_text.lower():
        raise ValueError("a verifier key's key id does not match its name and key")
    return key


def log_vkey(origin: str, public_key: bytes) -> VerifierKey:
    return VerifierKey(origin, "log", public_key)


def cosigned_message(body: str, timestamp: int) -> bytes:
    """What an Ed25519 cosigner signs (tlog-cosignature): a header line, a time line, the checkpoint body."""
    return f"cosignature/v1\ntime {timestamp}\n{body}".encode()


def cosign(private_key: Ed25519PrivateKey, name: str, body: str, timestamp: int) -> str:
    """The cosignature line ``— <name> base64(key id || u64 timestamp || signature)`` for a checkpoint body."""
    key = VerifierKey(name, "witness", raw_public(private_key.public_key()))
    signature = private_key.sign(cosigned_message(body, timestamp))
    return f"\u2014 {name} {base64.b64encode(key.key_id + timestamp.to_bytes(8, 'big') + signature).decode()}"


@dataclass(frozen=True)
class SignatureLine:
    name: str
    key_id: bytes
    payload: bytes  # what follows the key id: the signature (log) or timestamp || signature (cosigner)


def parse_signature_line(line: str) -> SignatureLine:
    """``— <name> <base64>``; ValueError if it is not a note signature line."""
    parts = line.strip("\n").split(" ")
    if len(parts) != 3 or parts[0] != "\u2014" or not parts[1]:
        raise ValueError("a signature line is '\u2014 <name> <base64>'")
    try:
        raw = base64.b64decode(parts[2], validate=True)
    except ValueError as exc:
        raise ValueError("the signature is not base64") from exc
    if len(raw) < 5:
        raise ValueError("the signature is too short")
    return SignatureLine(parts[1], raw[:4], raw[4:])


def verify_cosignature(key: VerifierKey, body: str, line: SignatureLine) -> int | None:
    """The cosignature's timestamp if ``line`` is ``key``'s valid cosignature of ``body``, else None."""
    if key.kind != "witness" or line.name != key.name or line.key_id != key.key_id or len(line.payload) != 72:
        return None
    timestamp = int.from_bytes(line.payload[:8], "big")
    if timestamp > MAX_TIMESTAMP:
        return None
    try:
        Ed25519PublicKey.from_public_bytes(key.public_key).verify(line.payload[8:], cosigned_message(body, timestamp))
    except (InvalidSignature, ValueError):
        return None
    return timestamp


@dataclass(frozen=True)
class LogKeys:
    """Every key the log has ever signed checkpoints with: the current one and the earlier ones configured.

    Only these are trusted: the database may name any key id, but a checkpoint counts only if one of these
    keys verifies it (a key in the database would be as forgeable as the checkpoints it vouches for).
    """

    origin: str
    keys: dict[str, bytes]  # key id (hex) -> Ed25519 public key

    @classmethod
    def of(cls, signer: CheckpointSigner, previous: list[str] | tuple[str, ...] = ()) -> LogKeys:
        keys = {signer.key_id: signer.public_key}
        for text in previous:
            key = parse_vkey(text)
            if key.kind != "log" or key.name != signer.origin:
                raise ValueError("an earlier checkpoint key must be a checkpoint (0x01) key of this log's origin")
            keys[key.key_id.hex()] = key.public_key
        return cls(signer.origin, keys)

    def verify(self, origin: str, key_id: str, body: str, signature: bytes) -> bool:
        public = self.keys.get(key_id)
        return origin == self.origin and public is not None and verify_signature(public, body, signature)


class CheckpointMemory:
    """The last checkpoint this signer signed, kept outside the audit database: what the database is checked
    against (a checkpoint row deleted behind the service's back is missed, not forgotten).

    In memory, and in ``path`` when one is configured (so it survives a restart): a file the signer's
    operator owns, next to the key, not writable by the database's administrators.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.last: dict[str, object] | None = None
        if path is not None and path.exists():
            self.last = json.loads(path.read_text())

    @property
    def size(self) -> int:
        return int(str(self.last["tree_size"])) if self.last else 0

    @property
    def root(self) -> bytes:
        return bytes.fromhex(str(self.last["root_hash"])) if self.last else b""

    def remember(self, checkpoint: dict[str, object]) -> None:
        if self.last is not None and int(str(checkpoint["tree_size"])) < self.size:
            return
        self.last = {k: checkpoint[k] for k in ("origin", "tree_size", "root_hash", "body", "key_id", "signature")}
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_suffix(self.path.suffix + ".partial")
            partial.write_text(json.dumps(self.last))
            os.replace(partial, self.path)  # whole or not at all
