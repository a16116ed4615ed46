"""Alembic, driven from code: each service keeps its migrations in ``services/<name>/migrations``."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from alembic import command, context, op
from alembic.config import Config
from sqlalchemy import MetaData, pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from shared.db import ENGINE_OPTIONS, asyncpg_url, connect_args
from shared.leader import lock_key

SERVICES_DIR = Path(__file__).resolve().parent.parent / "services"


# Every replica's migrate step (an init container, a Job, a compose one-shot) may start at once: one migrates,
# the others wait on this lock and then find nothing left to do.
MIGRATION_LOCK = "refnet-migrations"
# A migration that waits this long for a table lock gives up (and the deployment is retried) rather than
# queueing every query of the live release behind its ACCESS EXCLUSIVE request.
LOCK_TIMEOUT = "5s"


def alembic_config(service: str, database_url: str, *, lock_timeout: str = LOCK_TIMEOUT) -> Config:
    cfg = Config()
    cfg.attributes["lock_timeout"] = lock_timeout
    cfg.set_main_option("script_location", str(SERVICES_DIR / service / "migrations"))
    # '%' is ConfigParser's interpolation character; passwords may contain it.
    cfg.set_main_option("sqlalchemy.url", asyncpg_url(database_url).replace("%", "%%"))
    return cfg


def upgrade(service: str, database_url: str, revision: str = "head", *, lock_timeout: str = LOCK_TIMEOUT) -> None:
    command.upgrade(alembic_config(service, database_url, lock_timeout=lock_timeout), revision)


def run_env(target_metadata: MetaData | None) -> None:
    """The body of every service's ``migrations/env.py`` (online, async engine)."""
    url = context.config.get_main_option("sqlalchemy.url")
    assert url is not None
    lock_timeout = str(context.config.attributes.get("lock_timeout", LOCK_TIMEOUT))

    def do_run(connection: Connection) -> None:
        context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()

    async def run() -> None:
        plain, args = connect_args(url)
        engine = create_async_engine(plain, poolclass=pool.NullPool, connect_args=args, **ENGINE_OPTIONS)
        async with engine.connect() as connection:
            # Session-level: held across the migrations' transactions, released when the connection closes.
            await connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": lock_key(MIGRATION_LOCK)})
            # After the advisory lock (lock_timeout bounds advisory waits too): waiting for another migrator is
            # fine; waiting behind the live release's transactions for a table lock is not.
            await connection.execute(text("SELECT set_config('lock_timeout', :t, false)"), {"t": lock_timeout})
            await connection.commit()
            try:
                await connection.run_sync(do_run)
            finally:
                with contextlib.suppress(Exception):
                    await connection.rollback()
                    await connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": lock_key(MIGRATION_LOCK)})
        await engine.dispose()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(run())
    else:  # called from inside an event loop (tests, launcher): run in a fresh thread's loop
        import threading

        errors: list[BaseException] = []

        def target() -> None:
            try:
                asyncio.run(run())
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=target)
        thread.start()
        thread.join()
        if errors:
            raise errors[0]


def create_index_concurrently(name: str, table: str, columns: str, *, unique: bool = False,
                              where: str | None = None, using: str | None = None) -> None:
    """In a migration: build an index on an existing table without blocking its writes.

    ``CREATE INDEX CONCURRENTLY`` cannot run in a transaction, so it runs in Alembic's autocommit block (the
    migration's earlier statements are committed first). An interrupted concurrent build leaves an INVALID
    index behind, which ``IF NOT EXISTS`` would keep: it is dropped and built again. Arguments are the
    migration's own literals, never input."""
    with op.get_context().autocommit_block():
        bind = op.get_bind()
        invalid = bind.execute(text(
            "SELECT NOT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE c.relname = :name AND pg_table_is_visible(c.oid)"), {"name": name}).scalar()
        if invalid:
            bind.execute(text(f"DROP INDEX CONCURRENTLY IF EXISTS {name}"))
        bind.execute(text(
            f"CREATE {'UNIQUE ' if unique else ''}INDEX CONCURRENTLY IF NOT EXISTS {name} ON {table}"
            f"{f' USING {using}' if using else ''} ({columns}){f' WHERE {where}' if where else ''}"))
