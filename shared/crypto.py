"""Envelope encryption of personal data: a data key per case, wrapped by a master key held outside the
database. Every service that keeps personal data uses it (intake, referral), each with its own master key,
its own data keys and its own ``Envelope`` (the binding of what it seals to that service).

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
from typing import Any, ClassVar, Self

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12
STAGED_SUFFIX = ".new"  # where a rotation keeps the new master key until it replaces the old


class KeyUnavailable(Exception):
    """No master key configured, or none that wrapped this data key."""


class Undecryptable(Exception):
    """A ciphertext or wrapped key does not open with the key given (tampered, or the wrong key)."""


@dataclass(frozen=True)
class MasterKey:
    secret: bytes = field(repr=False)
    #: What the key is called in errors (shared.kek's key-encryption keys are the same kind of file).
    what: ClassVar[str] = "master key"

    def __post_init__(self) -> None:
        if len(self.secret) != KEY_BYTES:
            raise ValueError(f"a {self.what} is 32 bytes (AES-256)")

    @property
    def key_id(self) -> str:
        """A public fingerprint naming which master key wrapped a data key (not enough to recover it)."""
        # "intake" since intake was the first to keep keys: changing it would orphan every stored key id.
        return hashlib.sha256(b"refnet-intake-master-key-id:" + self.secret).hexdigest()[:16]

    @classmethod
    def generate(cls) -> Self:
        return cls(secrets.token_bytes(KEY_BYTES))

    def encoded(self) -> bytes:
        return base64.b64encode(self.secret)

    @classmethod
    def from_file(cls, path: str | Path) -> Self:
        try:
            raw = Path(path).read_bytes().strip()
        except OSError as exc:
            raise KeyUnavailable(f"the {cls.what} file cannot be read ({type(exc).__name__})") from exc
        try:
            return cls(base64.b64decode(raw, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise KeyUnavailable(f"the {cls.what} file does not hold base64 of 32 bytes") from exc


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


def keyring_from_files(master_key_file: str, previous_master_key_file: str, *, setting: str) -> Keyring:
    """The master keys a service is configured with: the current one, the one a rotation retires, and the
    one it stages beside the current (``<file>.new``). ``KeyUnavailable`` naming ``setting`` when unset."""
    if not master_key_file:
        raise KeyUnavailable(f"{setting} is not set")
    previous = [MasterKey.from_file(previous_master_key_file)] if previous_master_key_file else []
    staged = Path(master_key_file + STAGED_SUFFIX)
    if staged.exists():
        previous.append(MasterKey.from_file(staged))
    return Keyring(MasterKey.from_file(master_key_file), tuple(previous))


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


@dataclass(frozen=True)
class Envelope:
    """Wrapping and sealing bound to one service (``refnet-<service>``), so that what one service sealed
    never opens as another's."""

    service: str

    @property
    def _wrap_context(self) -> bytes:
        return f"refnet-{self.service}:data-key:".encode()

    @property
    def _seal_context(self) -> bytes:
        return f"refnet-{self.service}:sealed:".encode()

    def wrap(self, data_key: bytes, master: MasterKey, case_id: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + AESGCM(master.secret).encrypt(nonce, data_key, self._wrap_context + case_id.encode())

    def unwrap(self, wrapped: bytes, master: MasterKey, case_id: str) -> bytes:
        try:
            return AESGCM(master.secret).decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:],
                                                 self._wrap_context + case_id.encode())
        except InvalidTag as exc:
            raise Undecryptable("the data key does not unwrap with this master key") from exc

    def seal(self, data_key: bytes, value: dict[str, Any], *, case_id: str, label: str) -> bytes:
        """Encrypt a JSON object, bound to its case and to what it is (``label``), so blobs cannot be swapped."""
        nonce = os.urandom(NONCE_BYTES)
        plaintext = json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
        aad = self._seal_context + f"{case_id}:{label}".encode()
        return nonce + AESGCM(data_key).encrypt(nonce, plaintext, aad)

    def open_sealed(self, data_key: bytes, blob: bytes, *, case_id: str, label: str) -> dict[str, Any]:
        aad = self._seal_context + f"{case_id}:{label}".encode()
        try:
            plaintext = AESGCM(data_key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
        except InvalidTag as exc:
            raise Undecryptable("the sealed data does not open with this data key") from exc
        value: dict[str, Any] = json.loads(plaintext)
        return value
