"""Migrations run one at a time per database (an advisory lock) and give up on a table lock they cannot get
soon (``lock_timeout``) instead of queueing the live release's queries behind them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import asyncpg
import pytest

from shared.leader import lock_key
from shared.migrations import MIGRATION_LOCK, upgrade
from tests.conftest import Infra


def _in_thread(target: Callable[[], None]) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


async def test_a_second_migrator_waits_for_the_first(infra: Infra, new_database: Callable[[str], str]) -> None:
    url = new_database("registry")
    other = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        await other.execute("SELECT pg_advisory_lock($1)", lock_key(MIGRATION_LOCK))  # the first migrator
        thread, errors = _in_thread(lambda: upgrade("registry", url))
        time.sleep(2)
        waited = thread.is_alive()
        tables = await other.fetchval("SELECT count(*) FROM pg_tables WHERE tablename = 'alembic_version'")
        await other.execute("SELECT pg_advisory_unlock($1)", lock_key(MIGRATION_LOCK))
        thread.join(60)
        assert waited and tables == 0, "the second migrator did not wait for the first"
        assert not thread.is_alive() and not errors, errors
        assert await other.fetchval("SELECT version_num FROM alembic_version")
    finally:
        await other.close()


async def test_a_migration_gives_up_on_a_table_lock_it_cannot_get(
    infra: Infra, new_database: Callable[[str], str]
) -> None:
    url = new_database("registry")
    upgrade("registry", url, "registry_0003")
    live = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        # A long transaction of the running release holding a lock registry_0004's ALTER TABLE needs.
        transaction = live.transaction()
        await transaction.start()
        await live.execute("LOCK TABLE locations IN ACCESS SHARE MODE")
        thread, errors = _in_thread(lambda: upgrade("registry", url, lock_timeout="1s"))
        thread.join(15)
        hung = thread.is_alive()
        await transaction.rollback()
        thread.join(60)
        if hung:
            pytest.fail("the migration waited behind the live transaction instead of giving up")
        assert errors and "lock timeout" in str(errors[0]), errors
    finally:
        await live.close()


async def test_an_index_built_concurrently_replaces_an_invalid_leftover(
    infra: Infra, new_database: Callable[[str], str]
) -> None:
    """create_index_concurrently runs outside the migration's transaction and rebuilds an index an
    interrupted concurrent build left INVALID (IF NOT EXISTS alone would keep it)."""
    from alembic.migration import MigrationContext
    from alembic.operations import Operations
    from sqlalchemy.ext.asyncio import create_async_engine

    from shared.migrations import create_index_concurrently

    url = new_database("registry")
    upgrade("registry", url)
    check = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        await check.execute("CREATE INDEX ix_services_name_test ON services (agency_id, taxonomy)")
        await check.execute(
            "UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'ix_services_name_test'::regclass")
        engine = create_async_engine(url)

        def migrate(connection: object) -> None:
            ctx = MigrationContext.configure(connection)  # type: ignore[arg-type]
            with Operations.context(ctx), ctx.begin_transaction():
                create_index_concurrently("ix_services_name_test", "services", "agency_id, taxonomy")

        async with engine.connect() as conn:
            await conn.run_sync(migrate)
        await engine.dispose()
        assert await check.fetchval(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'ix_services_name_test'::regclass") is True
    finally:
        await check.close()
