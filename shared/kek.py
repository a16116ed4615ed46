"""Key-encryption keys (KEKs): AES-256 keys held in files (secrets) outside the database, that wrap secrets
the database stores, so that a copy of the database (a backup, a dump) is not a copy of those secrets.

A KEK file holds base64 of 32 random bytes (``openssl rand -base64 32``). Each wrapped value records the
``key_id`` of the KEK that wrapped it, so a rotation knows what to re-wrap and a reader which key opens it.
A rotation stages the new KEK beside the current one (``<file>.new``) before any value is wrapped under it,
so a reader that reloads its keys finds it (``KeyRing.load``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12
STAGED_SUFFIX = ".new"


class KeyUnavailable(Exception):
    """No KEK configured, or none with the key id a value was wrapped under."""


class Undecryptable(Exception):
    """A wrapped value does not open with the KEK (tampered, the wrong key, or the wrong context)."""


@dataclass(frozen=True)
class KeyEncryptionKey:
    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) != KEY_BYTES:
            raise ValueError("a key-encryption key is 32 bytes (AES-256)")

    @property
    def key_id(self) -> str:
        """A public fingerprint naming the KEK (not enough to recover it)."""
        return hashlib.sha256(b"refnet-kek-id:" + self.secret).hexdigest()[:16]

    @classmethod
    def generate(cls) -> KeyEncryptionKey:
        return cls(secrets.token_bytes(KEY_BYTES))

    def encoded(self) -> bytes:
        return base64.b64encode(self.secret)

    @classmethod
    def from_file(cls, path: str | Path) -> KeyEncryptionKey:
        try:
            raw = Path(path).read_bytes().strip()
        except OSError as exc:
            raise KeyUnavailable(f"the key-encryption key file cannot be read ({type(exc).__name__})") from exc
        try:
            return cls(base64.b64decode(raw, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise KeyUnavailable("the key-encryption key file does not hold base64 of 32 bytes") from exc

    def wrap(self, value: bytes, context: bytes) -> bytes:
        """AES-256-GCM of ``value``, bound to ``context`` (what it is and whose), so wrapped values cannot be
        swapped between rows: nonce || ciphertext || tag."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce + AESGCM(self.secret).encrypt(nonce, value, context)

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        try:
            return AESGCM(self.secret).decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], context)
        except InvalidTag as exc:
            raise Undecryptable("the value does not unwrap with this key-encryption key") from exc


def write_key_file(path: Path, key: KeyEncryptionKey) -> None:
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


@dataclass(frozen=True)
class KeyRing:
    """The current KEK (wraps new values) and older ones still accepted for unwrapping."""

    current: KeyEncryptionKey
    previous: tuple[KeyEncryptionKey, ...] = ()

    @classmethod
    def load(cls, key_file: str, previous_file: str = "", *, setting: str) -> KeyRing:
        """The KEKs configured: ``key_file``, ``previous_file`` (an older one during a rotation) and a staged
        ``<key_file>.new``. ``setting`` names the environment variable in the error when none is set."""
        if not key_file:
            raise KeyUnavailable(f"{setting} is not set (a file holding base64 of 32 random bytes)")
        previous = [KeyEncryptionKey.from_file(previous_file)] if previous_file else []
        staged = Path(key_file + STAGED_SUFFIX)
        if staged.exists():
            previous.append(KeyEncryptionKey.from_file(staged))
        return cls(KeyEncryptionKey.from_file(key_file), tuple(previous))

    def merged(self, older: KeyRing | None) -> KeyRing:
        """This ring, still accepting the keys of ``older`` (a running service keeps what it had)."""
        if older is None:
            return self
        seen = {k.key_id for k in (self.current, *self.previous)}
        extra = tuple(k for k in (older.current, *older.previous) if k.key_id not in seen)
        return KeyRing(self.current, (*self.previous, *extra))

    def by_id(self, key_id: str) -> KeyEncryptionKey:
        for key in (self.current, *self.previous):
            if key.key_id == key_id:
                return key
        raise KeyUnavailable("the key-encryption key that wrapped this value is not configured")
