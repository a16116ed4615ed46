"""Envelope encryption of personal data: a data key per case, wrapped by the master key.

Each case's personal fields are sealed with AES-256-GCM under the case's own random data key. The data key
is stored only wrapped (AES-256-GCM under the master key, bound to the case id). Rotating the master key
re-wraps data keys and never touches case data; destroying a case's data key (erasure) makes its data
unreadable for good. Neither key ever appears in a log, an error or an event.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12
STAGED_SUFFIX = ".new"  # where a rotation keeps the new master key until it replaces the old
_WRAP_CONTEXT = b"refnet-intake:data-key:"
_SEAL_CONTEXT = b"refnet-intake:sealed:"


class KeyUnavailable(Exception):
    """No master key configured, or none that wrapped this data key."""


class Undecryptable(Exception):
    """A ciphertext or wrapped key does not open with the key given (tampered, or the wrong key)."""


@dataclass(frozen=True)
class MasterKey:
    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) != KEY_BYTES:
            raise ValueError("a master key is 32 bytes (AES-256)")

    @property
    def key_id(self) -> str:
        """A public fingerprint naming which master key wrapped a data key (not enough to recover it)."""
        return hashlib.sha256(b"refnet-intake-master-key-id:" + self.secret).hexdigest()[:16]

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(secrets.token_bytes(KEY_BYTES))

    def encoded(self) -> bytes:
        return base64.b64encode(self.secret)

    @classmethod
    def from_file(cls, path: str | Path) -> MasterKey:
        try:
            raw = Path(path).read_bytes().strip()
        except OSError as exc:
            raise KeyUnavailable(f"the master key file cannot be read ({type(exc).__name__})") from exc
        try:
            return cls(base64.b64decode(raw, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise KeyUnavailable("the master key file does not hold base64 of 32 bytes") from exc


def write_key_file(path: Path, key: MasterKey) -> None:
    """Write (or atomically replace) a key file readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, key.encoded() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    os.chmod(path, 0o600)


@dataclass(frozen=True)
class Keyring:
    """The current master key (wraps new data keys) and older ones still accepted for unwrapping."""

    current: MasterKey
    previous: tuple[MasterKey, ...] = ()

    def merged(self, older: Keyring | None) -> Keyring:
        """This ring, still accepting the keys of ``older`` (a running service keeps what it had)."""
        if older is None:
            return self
        seen = {k.key_id for k in (self.current, *self.previous)}
        extra = tuple(k for k in (older.current, *older.previous) if k.key_id not in seen)
        return Keyring(self.current, (*self.previous, *extra))

    def by_id(self, key_id: str) -> MasterKey:
        for key in (self.current, *self.previous):
            if key.key_id == key_id:
                return key
        raise KeyUnavailable("the master key that wrapped this data key is not configured")


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def wrap(data_key: bytes, master: MasterKey, case_id: str) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(master.secret).encrypt(nonce, data_key, _WRAP_CONTEXT + case_id.encode())


def unwrap(wrapped: bytes, master: MasterKey, case_id: str) -> bytes:
    try:
        return AESGCM(master.secret).decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:],
                                             _WRAP_CONTEXT + case_id.encode())
    except InvalidTag as exc:
        raise Undecryptable("the data key does not unwrap with this master key") from exc


def seal(data_key: bytes, value: dict[str, Any], *, case_id: str, label: str) -> bytes:
    """Encrypt a JSON object, bound to its case and to what it is (``label``), so blobs cannot be swapped."""
    nonce = os.urandom(NONCE_BYTES)
    plaintext = json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
    aad = _SEAL_CONTEXT + f"{case_id}:{label}".encode()
    return nonce + AESGCM(data_key).encrypt(nonce, plaintext, aad)


def open_sealed(data_key: bytes, blob: bytes, *, case_id: str, label: str) -> dict[str, Any]:
    aad = _SEAL_CONTEXT + f"{case_id}:{label}".encode()
    try:
        plaintext = AESGCM(data_key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except InvalidTag as exc:
        raise Undecryptable("the sealed data does not open with this data key") from exc
    value: dict[str, Any] = json.loads(plaintext)
    return value
