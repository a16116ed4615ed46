"""The token-signing keys' private parts at rest: stored only wrapped (AES-256-GCM) under the registry's
key-encryption key (``REFNET_REGISTRY_KEK_FILE``, shared.kek), which is held outside the database. A backup
or dump of the registry's database therefore holds no key that can sign a token.
"""

from __future__ import annotations

from collections.abc import Callable

from joserfc.jwk import ECKey

from shared.kek import KeyEncryptionKey, KeyRing, KeyUnavailable, Undecryptable

__all__ = ["KeyUnavailable", "SigningKeyVault", "Undecryptable", "unwrap_private_pem", "wrap_private_pem"]


def _context(kid: str) -> bytes:
    # Bound to the kid: a wrapped private key copied onto another key's row does not open.
    return b"refnet-registry:signing-key:" + kid.encode()


def wrap_private_pem(private_pem: str, kid: str, kek: KeyEncryptionKey) -> bytes:
    return kek.wrap(private_pem.encode(), _context(kid))


def unwrap_private_pem(wrapped: bytes | None, kek_id: str | None, kid: str, ring: KeyRing) -> str:
    if wrapped is None or kek_id is None:
        raise KeyUnavailable("the signing key's private part was destroyed")
    return ring.by_id(kek_id).unwrap(wrapped, _context(kid)).decode()


class SigningKeyVault:
    """A running registry's KEKs, and the signing keys it has opened with them.

    An unknown KEK id (a rotation staged or installed a new KEK since start) makes it read the KEK files
    again, keeping the keys it had. Opened keys are remembered by kid and wrapped value, so a re-wrapped or
    destroyed key is never served from memory under its old row.
    """

    def __init__(self, load: Callable[[], KeyRing]) -> None:
        self._load = load
        self.ring = load()
        self._opened: dict[tuple[str, bytes], ECKey] = {}

    @property
    def current(self) -> KeyEncryptionKey:
        return self.ring.current

    def ring_for(self, kek_id: str) -> KeyRing:
        """The KEKs, read again when ``kek_id`` is not among them (a rotation since start)."""
        try:
            self.ring.by_id(kek_id)
        except KeyUnavailable:
            self.ring = self._load().merged(self.ring)
        return self.ring

    def private_key(self, kid: str, wrapped: bytes | None, kek_id: str | None) -> ECKey:
        if wrapped is not None and (cached := self._opened.get((kid, wrapped))) is not None:
            return cached
        try:
            pem = unwrap_private_pem(wrapped, kek_id, kid, self.ring)
        except KeyUnavailable:
            if wrapped is None:
                raise
            self.ring = self._load().merged(self.ring)
            pem = unwrap_private_pem(wrapped, kek_id, kid, self.ring)
        key = ECKey.import_key(pem)
        if len(self._opened) >= 8:  # a handful of keys sign over a registry's life: keep the recent ones
            self._opened.clear()
        assert wrapped is not None
        self._opened[(kid, wrapped)] = key
        return key
