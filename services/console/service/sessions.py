"""Sessions: signing in and out, and the signed-in session every page starts from.

Everything is server-side. The browser holds an opaque random session id (a cookie); the database holds its
SHA-256 and, sealed under the console's key-encryption key, the sign-in's state/nonce/PKCE verifier and then the
person's tokens. A sign-in gets a new session id (no fixation); a session ends after its idle time, its
lifetime, sign-out or the quick exit, and its row goes with it.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.console import domain, store
from services.console.service.oidc import Person, Provider, SignInFailed, Tokens
from shared.db import unit_of_work
from shared.kek import KeyRing, KeyUnavailable, Undecryptable

log = structlog.get_logger("refnet.console")

SIGNING_IN = "signing_in"
SIGNED_IN = "signed_in"


def new_session_id() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class SignedIn:
    """A signed-in session as a page sees it."""

    session_id: str
    person: Person
    tokens: Tokens
    language: str
    seconds_left: int

    @property
    def roles(self) -> frozenset[domain.Role]:
        return domain.known_roles(self.person.roles)

    @property
    def csrf(self) -> str:
        return domain.csrf_token(self.session_id)


@dataclass(frozen=True)
class Started:
    session_id: str
    url: str


class Sessions:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], keys: Callable[[], KeyRing], provider: Provider,
                 clock: domain.SessionClock, redirect_uri: str, post_logout_uri: str,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.sessions = sessions
        self.keys = keys
        self.provider = provider
        self.clock = clock
        self.redirect_uri = redirect_uri
        self.post_logout_uri = post_logout_uri
        self.now = now

    # --- sealing ---------------------------------------------------------------------------------------------

    @staticmethod
    def _context(key: str) -> bytes:
        return b"refnet-console-session:" + key.encode()

    def _seal(self, key: str, value: dict[str, Any]) -> tuple[bytes, str]:
        kek = self.keys().current
        return kek.wrap(json.dumps(value).encode(), self._context(key)), kek.key_id

    def _open(self, row: store.SessionRow) -> dict[str, Any] | None:
        try:
            opened = json.loads(self.keys().by_id(row.kek_id).unwrap(row.sealed, self._context(row.key)))
        except (KeyUnavailable, Undecryptable, ValueError) as exc:
            log.warning("console_session_unreadable", error=type(exc).__name__)
            return None
        return opened if isinstance(opened, dict) else None

    # --- signing in ------------------------------------------------------------------------------------------

    async def begin(self, return_to: str, language: str) -> Started:
        """A session in the "signing in" state, and the provider's URL to send the browser to."""
        found = await self.provider.authorization(self.redirect_uri)
        session_id = new_session_id()
        key = domain.session_key(session_id)
        sealed, kek_id = self._seal(key, {"state": found["state"], "nonce": found["nonce"],
                                          "code_verifier": found["code_verifier"], "return_to": return_to,
                                          "language": language})
        now = self.now()
        async with unit_of_work(self.sessions) as db:
            await store.add_session(db, store.SessionRow(key=key, state=SIGNING_IN, sealed=sealed, kek_id=kek_id,
                                                         person="", agency="", created_at=now, last_seen_at=now))
        return Started(session_id, found["url"])

    async def finish(self, session_id: str | None, code: str | None, state: str | None) -> tuple[str, str]:
        """The provider sent the browser back: the new session id (the signing-in one ends) and where to go."""
        if not session_id or not code or not state:
            raise SignInFailed("the answer or the session is missing")
        key = domain.session_key(session_id)
        async with unit_of_work(self.sessions) as db:
            row = await store.session_by_key(db, key, for_update=True)
            if row is None or row.state != SIGNING_IN:
                raise SignInFailed("no sign-in in progress for this browser")
            pending = self._open(row)
            await store.delete_session(db, key)  # one answer per sign-in, whatever it is
        if pending is None or not secrets.compare_digest(str(pending.get("state")), state):
            raise SignInFailed("the answer does not belong to this sign-in (state)")
        if self.clock.expired(row.created_at, row.last_seen_at, self.now()):
            raise SignInFailed("the sign-in took too long")
        tokens, person = await self.provider.exchange(code=code, redirect_uri=self.redirect_uri,
                                                      code_verifier=str(pending["code_verifier"]),
                                                      nonce=str(pending["nonce"]))
        new_id = new_session_id()
        new_key = domain.session_key(new_id)
        now = self.now()
        async with unit_of_work(self.sessions) as db:
            language = await store.language_of(db, person.sub) or str(pending.get("language") or "en")
            sealed, kek_id = self._seal(new_key, {"tokens": asdict(tokens), "person": asdict(person),
                                                  "language": language})
            await store.add_session(db, store.SessionRow(key=new_key, state=SIGNED_IN, person=person.sub,
                                                         agency=person.agency, sealed=sealed, kek_id=kek_id,
                                                         created_at=now, last_seen_at=now))
        log.info("console_signed_in", agency=person.agency)
        return new_id, str(pending.get("return_to") or "/")

    # --- the signed-in session -------------------------------------------------------------------------------

    async def current(self, session_id: str | None, *, touch: bool = True) -> SignedIn | None:
        """The signed-in session (its tokens fresh), or None: no such session, ended, or idle too long.

        ``touch``: a page the person asked for keeps the session alive; the inbox's own refresh does not."""
        if not session_id:
            return None
        key = domain.session_key(session_id)
        now = self.now()
        async with unit_of_work(self.sessions) as db:
            row = await store.session_by_key(db, key)
            if row is None or row.state != SIGNED_IN:
                return None
            if self.clock.expired(row.created_at, row.last_seen_at, now):
                await store.delete_session(db, key)
                return None
            opened = self._open(row)
            if opened is None:
                await store.delete_session(db, key)
                return None
            tokens = Tokens(**opened["tokens"])
            if domain.token_needs_refresh(datetime.fromtimestamp(tokens.expires_at, UTC), now):
                row = await store.session_by_key(db, key, for_update=True)  # one refresh per session at a time
                if row is None:
                    return None
                opened = self._open(row) or opened
                tokens = Tokens(**opened["tokens"])
                if domain.token_needs_refresh(datetime.fromtimestamp(tokens.expires_at, UTC), now):
                    try:
                        tokens = await self.provider.refresh(tokens)
                    except SignInFailed as exc:
                        log.info("console_refresh_failed", reason=str(exc))
                        await store.delete_session(db, key)
                        return None
                    opened["tokens"] = asdict(tokens)
                    row.sealed, row.kek_id = self._seal(key, opened)
            last_seen = row.last_seen_at
            if touch:
                await store.touch_session(db, key, now)
                last_seen = now
        return SignedIn(session_id=session_id, person=Person(**{**opened["person"],
                                                                "roles": tuple(opened["person"]["roles"])}),
                        tokens=tokens, language=str(opened.get("language") or "en"),
                        seconds_left=self.clock.seconds_left(last_seen, now))

    async def set_language(self, signed: SignedIn, language: str) -> None:
        key = domain.session_key(signed.session_id)
        now = self.now()
        async with unit_of_work(self.sessions) as db:
            row = await store.session_by_key(db, key, for_update=True)
            if row is None:
                return
            opened = self._open(row)
            if opened is None:
                return
            opened["language"] = language
            row.sealed, row.kek_id = self._seal(key, opened)
            await store.remember_language(db, signed.person.sub, language, now)

    async def end(self, session_id: str | None) -> str | None:
        """Sign out: the row goes, the refresh token is revoked; the provider's logout URL, if it has one."""
        if not session_id:
            return None
        key = domain.session_key(session_id)
        async with unit_of_work(self.sessions) as db:
            row = await store.session_by_key(db, key, for_update=True)
            if row is None:
                return None
            opened = self._open(row) if row.state == SIGNED_IN else None
            await store.delete_session(db, key)
        if opened is None:
            return None
        tokens = Tokens(**opened["tokens"])
        await self.provider.revoke(tokens)
        return await self.provider.logout_url(tokens, self.post_logout_uri)

    async def drop(self, session_id: str | None) -> None:
        """The quick exit: the row goes at once, nothing else is waited for."""
        if session_id:
            async with unit_of_work(self.sessions) as db:
                await store.delete_session(db, domain.session_key(session_id))

    async def sweep(self) -> int:
        """Delete sessions past their idle time or lifetime (a job; pages also refuse them one by one)."""
        now = self.now()
        async with unit_of_work(self.sessions) as db:
            return await store.delete_idle_sessions(db, now - self.clock.idle, now - self.clock.lifetime)
