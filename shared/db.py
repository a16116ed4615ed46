"""The async database engine and the unit of work: one transaction per use case."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

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


#: libpq's TLS modes we honour. ``prefer``/``allow`` fall back to plaintext silently, so they are refused.
SSL_MODES = ("disable", "require", "verify-ca", "verify-full")
# URL query parameters that mean TLS. SQLAlchemy passes query parameters to asyncpg.connect() as keyword
# arguments and raw asyncpg reads unknown ones as server settings, so the two paths disagreed about each of
# these; they are taken out of the URL and turned into one ``ssl`` argument both paths pass the same way.
_SSL_PARAMS = ("ssl", "sslmode", "sslrootcert")


def ssl_context(sslmode: str, sslrootcert: str = "") -> ssl.SSLContext | bool:
    """The ``ssl`` argument of asyncpg.connect() for a libpq ``sslmode`` (``verify-full``: the server's
    certificate chains to ``sslrootcert``, else the system's CAs, and names the host connected to)."""
    if sslmode not in SSL_MODES:
        raise ValueError(f"database sslmode must be one of {', '.join(SSL_MODES)}, not {sslmode!r}")
    if sslmode == "disable":
        return False
    context = ssl.create_default_context(cafile=sslrootcert or None)
    if sslmode == "require":  # encrypted, server unverified: libpq's meaning, kept for compatibility
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif sslmode == "verify-ca":
        context.check_hostname = False
    return context


def connect_args(url: str) -> tuple[str, dict[str, Any]]:
    """(URL without TLS query parameters, keyword arguments for asyncpg.connect()): the one place both the
    pooled engine (as ``connect_args``) and raw asyncpg connections (the outbox relay's) take TLS from.
    Understands libpq's ``sslmode``/``sslrootcert`` and the legacy ``ssl=<mode>``."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    found = {key: value for key, value in query if key in _SSL_PARAMS}
    rest = [(key, value) for key, value in query if key not in _SSL_PARAMS]
    clean = urlunsplit(parts._replace(query=urlencode(rest)))
    mode = found.get("sslmode") or found.get("ssl")
    if mode is None:
        if "sslrootcert" in found:
            raise ValueError("database sslrootcert is set without an sslmode")
        return clean, {}
    return clean, {"ssl": ssl_context(mode, found.get("sslrootcert", ""))}


def with_ssl(url: str, sslmode: str, sslrootcert: str = "") -> str:
    """``url`` with explicit TLS settings in libpq's form, replacing any it had."""
    if not sslmode:
        if sslrootcert:
            raise ValueError("database sslrootcert is set without an sslmode")
        return url
    try:  # refuse an unknown mode or an unreadable CA file at start-up, naming the setting
        ssl_context(sslmode, sslrootcert)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"database sslrootcert {sslrootcert} is not a readable CA file") from exc
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in _SSL_PARAMS]
    query.append(("sslmode", sslmode))
    if sslrootcert:
        query.append(("sslrootcert", sslrootcert))
    return urlunsplit(parts._replace(query=urlencode(query)))


def make_engine(url: str, *, pool_size: int = 10, max_overflow: int | None = None) -> AsyncEngine:
    url, args = connect_args(asyncpg_url(url))
    # pool_pre_ping costs three round trips per checkout with asyncpg (BEGIN, a query, ROLLBACK). Without it
    # the outbox tests' recovery after a paused broker took 17 s longer: the ping also catches connections
    # left unusable, not only those that died with the server. It stays.
    return create_async_engine(
        url, pool_size=pool_size, max_overflow=pool_size if max_overflow is None else max_overflow,
        pool_pre_ping=True, pool_recycle=1800, connect_args=args, **ENGINE_OPTIONS,
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
