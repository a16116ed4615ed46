"""The authorization server's token-signing keys: seeding, rotation, which key signs, what the JWKS publishes,
and the destruction of private parts after the grace period.

The lifecycle's rules are ``domain``'s (pure); the functions here read the rows under a table lock, ask the
rules what the keys become, and write that back, all in the caller's transaction (each takes the session),
with the database's time. ``SigningKeys`` runs each as one transaction of its own.

Private parts are stored only wrapped under the KEK (services/registry/keyvault.py).
"""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.registry import domain
from services.registry.keyvault import SigningKeyVault, unwrap_private_pem, wrap_private_pem
from services.registry.oauth import NewSigningKey, generate_signing_key
from services.registry.store import signing_keys as store
from services.registry.store.tables import SigningKey
from shared.db import unit_of_work
from shared.kek import KeyEncryptionKey, KeyRing

log = structlog.get_logger("refnet.registry")


def _state(row: SigningKey) -> domain.SigningKeyState:
    return domain.SigningKeyState(kid=row.kid, status=row.status, activates_at=row.activates_at,
                                  retired_at=row.retired_at, has_private_part=row.private_key_wrapped is not None)


async def _apply(session: AsyncSession, rows: list[SigningKey], after: list[domain.SigningKeyState],
                 new_keys: dict[str, NewSigningKey], kek: KeyEncryptionKey | None) -> None:
    """Write ``after`` (the rules' answer) to the rows, one change at a time in an order the unique current key
    allows: keys leaving ``current`` first, the key that becomes current last."""
    by_kid = {row.kid: row for row in rows}
    changed = [s for s in after if s.kid in new_keys or _state(by_kid[s.kid]) != s]
    for state in sorted(changed, key=lambda s: s.status == "current"):
        row = by_kid.get(state.kid)
        if row is None:
            key = new_keys[state.kid]
            assert kek is not None
            row = SigningKey(kid=key.kid, public_jwk=key.public_jwk,
                             private_key_wrapped=wrap_private_pem(key.private_pem, key.kid, kek), kek_id=kek.key_id)
            session.add(row)
        row.status, row.activates_at, row.retired_at = state.status, state.activates_at, state.retired_at
        await session.flush()


async def ensure_signing_key(session: AsyncSession, kek: KeyEncryptionKey,
                             initial: NewSigningKey | None = None) -> str:
    """The current key's kid; creates one (from ``initial``, else freshly generated) when there is none."""
    await store.lock(session)
    rows = await store.all_keys(session)
    current = domain.signer(_state(row) for row in rows)
    if current is not None:
        return current
    key = initial or generate_signing_key()
    after = [*(_state(r) for r in rows), domain.SigningKeyState(key.kid, "current")]
    await _apply(session, rows, after, {key.kid: key}, kek)
    return key.kid


async def sync_signing_keys(session: AsyncSession, file_keys: list[NewSigningKey], kek: KeyEncryptionKey) -> str:
    """The database is the one source of truth for the signing keys (private parts wrapped under the KEK).
    A key file only seeds a database that holds no key yet (``domain.seeded_keys``). Once the database holds
    keys the file changes nothing, so a stale file (a secret from before a rotation) can neither revert the
    rotation nor give a destroyed private part back. Returns the current kid."""
    await store.lock(session)
    if await store.count(session) or not file_keys:
        return await ensure_signing_key(session, kek)
    after = domain.seeded_keys([key.kid for key in file_keys], await store.now(session))
    await _apply(session, [], after, {key.kid: key for key in file_keys}, kek)
    return file_keys[0].kid


async def rotate_signing_key(session: AsyncSession, kek: KeyEncryptionKey, *, activate_in_seconds: float = 0,
                             keep_previous: bool = True) -> str:
    """A new signing key (``domain.rotated``). It is published at once and signs from ``activate_in_seconds``
    on: resource servers refetch the JWKS at most every 30 s (shared.auth), so a key published a minute before
    it signs is known everywhere by then."""
    await store.lock(session)
    rows = await store.all_keys(session)
    key = generate_signing_key()
    after = domain.rotated([_state(r) for r in rows], key.kid, await store.now(session),
                           activate_in_seconds=activate_in_seconds, keep_previous=keep_previous)
    await _apply(session, rows, after, {key.kid: key}, kek)
    return key.kid


async def signing_key(session: AsyncSession) -> SigningKey:
    """The key to sign with now; a ``next`` key whose time has come is promoted first (once per rotation)."""
    rows, now = await store.signing_keys_and_now(session)
    states = [_state(row) for row in rows]
    due = domain.due_to_sign(states, now)
    if due is None:
        current = next((row for row in rows if row.status == "current"), None)
        if current is not None:
            return current
    await store.lock(session)
    rows = await store.all_keys(session)
    states = [_state(row) for row in rows]
    if due is not None and any(s.kid == due and s.status == "next" for s in states):  # not promoted meanwhile
        await _apply(session, rows, domain.promoted(states, due, now), {}, None)
    kid = domain.signer(_state(row) for row in rows)
    if kid is None:
        raise RuntimeError("the registry holds no current signing key")
    return next(row for row in rows if row.kid == kid)


async def retire_previous_signing_key(session: AsyncSession) -> None:
    """After a rotation, once every token the previous key signed has expired: stop publishing it."""
    await store.lock(session)
    rows = await store.all_keys(session)
    await _apply(session, rows, domain.previous_retired([_state(r) for r in rows], await store.now(session)), {}, None)


async def destroy_expired_private_keys(session: AsyncSession, grace_seconds: float) -> list[str]:
    """Destroy the private part of every key that stopped signing more than ``grace_seconds`` ago
    (``domain.private_part_expired``); their public parts stay. Returns their kids."""
    now = await store.now(session)
    expired = [row.kid for row in await store.holding_private_parts(session)
               if domain.private_part_expired(_state(row), now, grace_seconds)]
    kids = await store.destroy_private_parts(session, expired)
    if kids:
        log.info("signing_keys_private_parts_destroyed", kids=kids)
    return kids


async def rewrap_signing_keys(session: AsyncSession, ring: KeyRing) -> int:
    """Wrap every private part under ``ring.current`` (a KEK rotation); returns how many were re-wrapped."""
    await store.lock(session)
    rows = await store.wrapped_not_under(session, ring.current.key_id)
    for row in rows:
        pem = unwrap_private_pem(row.private_key_wrapped, row.kek_id, row.kid, ring)
        row.private_key_wrapped = wrap_private_pem(pem, row.kid, ring.current)
        row.kek_id = ring.current.key_id
    await session.flush()
    return len(rows)


async def count_signing_keys_not_under(session: AsyncSession, kek: KeyEncryptionKey) -> int:
    return await store.count_wrapped_not_under(session, kek.key_id)


async def published_signing_keys(session: AsyncSession, ring: KeyRing) -> list[tuple[str, str]]:
    """(kid, private PEM) of ``domain.key_file_keys``: the content of the key file secret."""
    rows = {row.kid: row for row in await store.published_rows(session)}
    states = [domain.SigningKeyState(r.kid, r.status, has_private_part=r.private_key_wrapped is not None)
              for r in rows.values()]
    return [(s.kid, unwrap_private_pem(rows[s.kid].private_key_wrapped, rows[s.kid].kek_id, s.kid, ring))
            for s in domain.key_file_keys(states)]


async def published_jwks(session: AsyncSession) -> list[dict[str, Any]]:
    """The public JWKs the JWKS document publishes, in ``domain.published`` order."""
    rows = {row.kid: row for row in await store.published_rows(session)}
    states = [domain.SigningKeyState(r.kid, r.status) for r in rows.values()]
    return [dict(rows[s.kid].public_jwk) for s in domain.published(states)]


class SigningKeys:
    """The signing-key use cases of a running registry, one transaction each."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], vault: SigningKeyVault,
                 grace_seconds: float) -> None:
        self.sessions = sessions
        self.vault = vault
        self.grace_seconds = grace_seconds

    async def start(self, file_keys: list[NewSigningKey]) -> str:
        """At start: seed an empty store (from the key file, else a new key), destroy expired private parts.
        Returns the current kid."""
        async with unit_of_work(self.sessions) as session:
            current_kid = await sync_signing_keys(session, file_keys, self.vault.current)
            await destroy_expired_private_keys(session, self.grace_seconds)
        return current_kid

    async def jwks(self) -> dict[str, Any]:
        async with unit_of_work(self.sessions) as session:
            return {"keys": await published_jwks(session)}
