"""intake_0006: overrides made before it (one request naming an approver) stay what they were -- in force from
their creation until their valid_until; the two-person rule is held by the database too; and the way back drops
what the older release cannot know (a request never approved) and ends a revoked override where it was revoked."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine

from shared.migrations import alembic_config, upgrade

CASE = "case-" + "ab" * 16
OLD, PENDING, REVOKED = ("override-" + c * 32 for c in "123")
CREATED = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


async def _execute(url: str, statement: str, **params: object) -> list[sa.Row[tuple[object, ...]]]:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            result = await connection.execute(sa.text(statement), params)
            return list(result.all()) if result.returns_rows else []
    finally:
        await engine.dispose()


async def test_overrides_from_before_keep_their_effect_and_the_way_back_works(
        new_database: Callable[[str], str]) -> None:
    url = new_database("intake_0006")
    await asyncio.to_thread(upgrade, "intake", url, "intake_0005")
    await _execute(url, "INSERT INTO cases (id, owner_agency, status, facts, created_by_client) "
                        "VALUES (:id, 'agy_iom', 'active', '{}', 'cli_iom')", id=CASE)
    await _execute(url, "INSERT INTO overrides (id, case_id, agency, recipient_agency, requested_by, approver, "
                        "client_id, created_at, valid_until) VALUES (:id, :case, 'agy_iom', 'agy_clinic', 'x1', 'x2', "
                        "'cli_iom', :at, :until)", id=OLD, case=CASE, at=CREATED, until=CREATED + timedelta(hours=72))

    await asyncio.to_thread(upgrade, "intake", url, "intake_0006")
    [old] = await _execute(url, "SELECT requested_by, approved_by, approved_at, valid_until, revoked_at "
                                "FROM overrides WHERE id = :id", id=OLD)
    assert tuple(old) == ("x1", "x2", CREATED, CREATED + timedelta(hours=72), None)

    insert = ("INSERT INTO overrides (id, case_id, agency, recipient_agency, requested_by, client_id, created_at, "
              "approved_by, approved_at, valid_until, revoked_by, revoked_at) VALUES (:id, :case, 'agy_iom', "
              "'agy_clinic', 'person-a', 'refnet-console', :at, :by, :approved, :until, :revoker, :revoked)")
    later = CREATED + timedelta(days=1)
    await _execute(url, insert, id=PENDING, case=CASE, at=later, by=None, approved=None, until=None, revoker=None,
                   revoked=None)
    await _execute(url, insert, id=REVOKED, case=CASE, at=later, by="person-b", approved=later,
                   until=later + timedelta(hours=72), revoker="person-a", revoked=later + timedelta(hours=1))
    # The database refuses what the rule refuses: the requester approving, half an approval or revocation.
    for by, approved, until, revoker, revoked in (
            ("person-a", later, later + timedelta(hours=1), None, None),
            ("person-b", None, None, None, None),
            (None, None, None, "person-a", None)):
        with pytest.raises(IntegrityError):
            await _execute(url, insert, id="override-" + "f" * 32, case=CASE, at=later, by=by, approved=approved,
                           until=until, revoker=revoker, revoked=revoked)

    await asyncio.to_thread(command.downgrade, alembic_config("intake", url), "intake_0005")
    rows = await _execute(url, "SELECT id, approver, valid_until FROM overrides ORDER BY id")
    assert [tuple(r) for r in rows] == [(OLD, "x2", CREATED + timedelta(hours=72)),
                                        (REVOKED, "person-b", later + timedelta(hours=1))]
    await asyncio.to_thread(upgrade, "intake", url)
