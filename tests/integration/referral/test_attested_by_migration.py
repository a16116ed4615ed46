"""referral_0008: moves made before it keep an unknown attestation (null), the column holds only token or system,
and the downgrade takes it away again."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import pytest
from alembic import command

from shared.migrations import alembic_config, upgrade

REFERRAL = """INSERT INTO referrals (id, case_id, from_agency, to_agency, pathway, service_type, priority, reason,
    shared_categories, status, due_at, created_at, updated_at, created_by_client)
    VALUES ('r1', 'case-1', 'agy_a', 'agy_b', 'protection', 'shelter', 'urgent', '', ARRAY['identity'], 'requested',
            now(), now(), now(), 'cli_a')"""
MOVE = """INSERT INTO referral_transitions (referral_id, to_status, party, agency, acting_user, at)
    VALUES ('r1', 'requested', 'sender', 'agy_a', 'caseworker.1', now())"""


async def test_the_migration_adds_attested_by_to_moves(new_database: Callable[[str], str]) -> None:
    url = new_database("referral_0008")
    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    await asyncio.to_thread(upgrade, "referral", url, "referral_0007")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(REFERRAL)
        await conn.execute(MOVE)  # a move as the release before writes it
        await asyncio.to_thread(upgrade, "referral", url)
        assert await conn.fetchval("SELECT attested_by FROM referral_transitions") is None
        await conn.execute("UPDATE referral_transitions SET attested_by = 'token'")
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("UPDATE referral_transitions SET attested_by = 'registry'")
        await asyncio.to_thread(command.downgrade, alembic_config("referral", url), "referral_0007")
        columns = await conn.fetch("SELECT column_name FROM information_schema.columns "
                                   "WHERE table_name = 'referral_transitions'")
        assert "attested_by" not in {c["column_name"] for c in columns}
        await asyncio.to_thread(upgrade, "referral", url)
        assert await conn.fetchval("SELECT count(*) FROM referral_transitions WHERE attested_by IS NULL") == 1
    finally:
        await conn.close()
