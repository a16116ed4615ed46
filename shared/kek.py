"""Key-encryption keys (KEKs): AES-256 keys held in files (secrets) outside the database, that wrap secrets
the database stores, so that a copy of the database (a backup, a dump) is not a copy of those secrets.

A KEK file holds base64 of 32 random bytes (``openssl rand -base64 32``). Each wrapped value records the
``key_id`` of the KEK that wrapped it, so a rotation knows what to re-wrap and a reader which key opens it.
A rotation stages the new KEK beside the current one (``<file>.new``) before any value is wrapped under it,
so a reader that reloads its keys finds it (``KeyRing.load``).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

# The key files, their errors and their atomic writing are those of the master keys (shared.crypto).
from shared.crypto import (
    NONCE_BYTES,
    STAGED_SUFFIX,
    KeyUnavailable,
    MasterKey,
    Undecryptable,
    write_key_file,
)

__all__ = ["STAGED_SUFFIX", "KeyEncryptionKey", "KeyRing", "KeyUnavailable", "Undecryptable", "write_key_file"]


@dataclass(frozen=True)
class KeyEncryptionKey(MasterKey):
    what: ClassVar[str] = "key-encryption key"

    @property
    def key_id(self) -> str:
        """A public fingerprint naming the KEK (not enough to recover it)."""
        return hashlib.sha256(b"refnet-kek-id:" + self.secret).hexdigest()[:16]

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
