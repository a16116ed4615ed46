"""intake's envelope encryption: shared/crypto.py, bound to intake (what it sealed opens only here)."""

from __future__ import annotations

from shared.crypto import (
    KEY_BYTES,
    NONCE_BYTES,
    STAGED_SUFFIX,
    Envelope,
    Keyring,
    KeyUnavailable,
    MasterKey,
    Undecryptable,
    new_data_key,
    write_key_file,
)

__all__ = [
    "KEY_BYTES",
    "NONCE_BYTES",
    "STAGED_SUFFIX",
    "KeyUnavailable",
    "Keyring",
    "MasterKey",
    "Undecryptable",
    "new_data_key",
    "open_sealed",
    "seal",
    "unwrap",
    "wrap",
    "write_key_file",
]

_INTAKE = Envelope("intake")
wrap = _INTAKE.wrap
unwrap = _INTAKE.unwrap
seal = _INTAKE.seal
open_sealed = _INTAKE.open_sealed
