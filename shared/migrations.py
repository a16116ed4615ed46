"""Alembic, driven from code: each service keeps its migrations in ``services/<name>/migrations``."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from shared.db import ENGINE_OPTIONS, asyncpg_url, connect_args

SERVICES_DIR = Path(__file__).resolve().parent.parent / "services"


def alembic_config(service: str, database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(SERVICES_DIR / service / "migrations"))
    # '%' is ConfigParser's interpolation character; passwords may contain it.
    cfg.set_main_option("sqlalchemy.url", asyncpg_url(database_url).replace("%", "%%"))
    return cfg


def upgrade(service: str, database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(service, database_url), revision)


def run_env(target_metadata: MetaData | None) -> None:
    """The body of every service's ``migrations/env.py`` (online, async engine)."""
    url = context.config.get_main_option("sqlalchemy.url")
    assert url is not None

    def do_run(connection: Connection) -> None:
        context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()

    async def run() -> None:
        plain, args = connect_args(url)
        engine = create_async_engine(plain, poolclass=pool.NullPool, connect_args=args, **ENGINE_OPTIONS)
        async with engine.connect() as connection:
            await connection.run_sync(do_run)
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
