"""console's tables (its own database; no other service reads them) and every query on them.

A session row is keyed by the SHA-256 of the session id the browser holds (``domain.session_key``): the
database never sees the id itself. What the session carries -- the person's tokens before and after sign-in,
the sign-in's state, nonce and PKCE verifier -- is one sealed blob (AES-256-GCM under the console's
key-encryption key, bound to the row's key), so a copy of the database is not a copy of anyone's tokens.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, LargeBinary, String, Text, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class SessionRow(Base):
    __tablename__ = "console_sessions"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 hex of the session id
    # "signing_in" (between the redirect to the provider and its answer) or "signed_in".
    state: Mapped[str] = mapped_column(String(16))
    # Who (the token's sub and agency; ids, not names) -- empty while signing in.
    person: Mapped[str] = mapped_column(Text, default="")
    agency: Mapped[str] = mapped_column(Text, default="")
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    kek_id: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class PreferenceRow(Base):
    """What a person chose (their language), remembered across sessions, keyed by the token's ``sub``."""

    __tablename__ = "console_preferences"

    person: Mapped[str] = mapped_column(Text, primary_key=True)
    language: Mapped[str] = mapped_column(String(8))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


async def add_session(db: AsyncSession, row: SessionRow) -> None:
    db.add(row)
    await db.flush()


async def session_by_key(db: AsyncSession, key: str, *, for_update: bool = False) -> SessionRow | None:
    query = select(SessionRow).where(SessionRow.key == key)
    if for_update:
        # Held while a refresh token is used: two requests of one person must not both spend it (the provider
        # detects the reuse of a rotated refresh token and ends the whole sign-in).
        query = query.with_for_update()
    return (await db.execute(query)).scalar_one_or_none()


async def touch_session(db: AsyncSession, key: str, when: datetime) -> None:
    await db.execute(update(SessionRow).where(SessionRow.key == key).values(last_seen_at=when))


async def delete_session(db: AsyncSession, key: str) -> None:
    await db.execute(delete(SessionRow).where(SessionRow.key == key))


async def delete_idle_sessions(db: AsyncSession, seen_before: datetime, created_before: datetime) -> int:
    result = await db.execute(delete(SessionRow).where(
        (SessionRow.last_seen_at < seen_before) | (SessionRow.created_at < created_before)))
    return int(getattr(result, "rowcount", 0) or 0)


async def language_of(db: AsyncSession, person: str) -> str | None:
    row = await db.get(PreferenceRow, person)
    return row.language if row else None


async def remember_language(db: AsyncSession, person: str, language: str, when: datetime) -> None:
    row = await db.get(PreferenceRow, person)
    if row is None:
        db.add(PreferenceRow(person=person, language=language, updated_at=when))
    else:
        row.language = language
        row.updated_at = when
    await db.flush()
