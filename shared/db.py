"""The async database engine and the unit of work: one transaction per use case."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from asyncpg.exceptions import OperatorInterventionError, PostgresConnectionError
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

# Stable constraint names, so Alembic migrations can name what they drop. Each service declares its own
# declarative base with these (``services/<name>/store.py``): one MetaData per service, as one database each.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


#: Every engine's: a failed statement's error names its SQL but never its parameters -- they carry personal
#: data, and errors end in logs and dead-letter records.
ENGINE_OPTIONS: dict[str, Any] = {"hide_parameters": True}


def asyncpg_url(url: str) -> str:
    """Accept ``postgresql://`` as well as ``postgresql+asyncpg://``: operators paste either."""
    if url.startswith("postgresql://"):
        return "postgresql+asyncpg://" + url.removeprefix("postgresql://")
    if url.startswith("postgres://"):
        return "postgresql+asyncpg://" + url.removeprefix("postgres://")
    return url


def plain_url(url: str) -> str:
    """The libpq / asyncpg form of a SQLAlchemy URL (for LISTEN connections and tools)."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def make_engine(url: str, *, pool_size: int = 10, max_overflow: int | None = None) -> AsyncEngine:
    # pool_pre_ping costs three round trips per checkout with asyncpg (BEGIN, a query, ROLLBACK). Without it
    # the outbox tests' recovery after a paused broker took 17 s longer: the ping also catches connections
    # left unusable, not only those that died with the server. It stays.
    return create_async_engine(
        asyncpg_url(url), pool_size=pool_size, max_overflow=pool_size if max_overflow is None else max_overflow,
        pool_pre_ping=True, pool_recycle=1800, **ENGINE_OPTIONS,
    )


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def unit_of_work(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One transaction: everything inside commits together (state change and outbox row) or not at all."""
    async with sessions() as session, session.begin():
        yield session


async def database_reachable(engine: AsyncEngine) -> bool:
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


def dependency_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) means the database or another dependency cannot be reached:
    a refused or cut connection, PostgreSQL shutting down or starting up, a pooled connection found dead."""
    seen: BaseException | None = exc
    for _ in range(10):  # SQLAlchemy wraps the driver's error, which may wrap the socket's
        if seen is None:
            return False
        if isinstance(seen, DBAPIError) and seen.connection_invalidated:
            return True
        # SQLSTATE classes 08 (connection exception) and 57 (operator intervention: shutdown, starting up).
        if isinstance(seen, ConnectionError | PostgresConnectionError | OperatorInterventionError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
