"""A restore of intake's database to before an erasure brings the case's data key back; ``refnet intake
reapply-erasures`` reads the erasures from audit's log and shreds those cases again (docs/operations.md,
"Backup and restore")."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import typer
from sqlalchemy import select
from typer.testing import CliRunner

from deploy.commands import intake as cli
from deploy.launcher.infra import POSTGRES_BIN_PATH
from services.audit.service import record_event, sequence_pending
from services.intake.store import CaseKeyRow, CaseRow
from shared.db import make_engine, make_sessionmaker, unit_of_work
from shared.envelope import Event
from shared.migrations import upgrade
from shared.topics import INTAKE_EVENTS
from tests.conftest import Infra, psql
from tests.integration.intake.conftest import Intake, agency, topic_events


async def _case_state(database_url: str, case_id: str) -> tuple[str, bool, bool]:
    """-> (status, has a data key, has ciphertext)."""
    engine = make_engine(database_url, pool_size=1)
    try:
        async with make_sessionmaker(engine)() as session:
            row = (await session.execute(select(CaseRow).where(CaseRow.id == case_id))).scalar_one()
            key = (await session.execute(select(CaseKeyRow).where(CaseKeyRow.case_id == case_id))).scalar()
            return row.status, key is not None, row.sealed is not None
    finally:
        await engine.dispose()


async def _audit_log_with(infra: Infra, new_database: Callable[[str], str], events: list[Event]) -> str:
    """An audit database holding ``events`` in its log, as the audit consumer and sequencer append them."""
    url = new_database("audit")
    await asyncio.to_thread(upgrade, "audit", url)
    engine = make_engine(url, pool_size=1)
    try:
        sessions = make_sessionmaker(engine)
        for event in events:
            async with unit_of_work(sessions) as session:
                await record_event(session, event)
        assert await sequence_pending(sessions, 100) == len(events)
    finally:
        await engine.dispose()
    return url


def _run(*args: str) -> None:
    subprocess.run([str(POSTGRES_BIN_PATH / args[0]), *args[1:]], check=True, capture_output=True)


async def test_a_restore_to_before_an_erasure_is_erased_again_from_the_audit_log(
    intake: Intake, infra: Infra, new_database: Callable[[str], str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    owner = agency()
    erased_before = await intake.register(owner)
    erased_after = await intake.register(owner)
    kept = await intake.register(owner)
    response = await intake.client.post(f"/cases/{erased_before['id']}/erase", headers=intake.headers(owner))
    assert response.status_code == 202, response.text

    # The backup: intake's database as it was before the second erasure.
    dump = tmp_path / "intake.dump"
    await asyncio.to_thread(_run, "pg_dump", "-Fc", "-f", str(dump), f"{infra.server_url}/{intake.database_name}")
    response = await intake.client.post(f"/cases/{erased_after['id']}/erase", headers=intake.headers(owner))
    assert response.status_code == 202, response.text

    # audit's log got both erasures from the broker.
    ids = {erased_before["id"], erased_after["id"]}
    erasures = await topic_events(intake.bootstrap, INTAKE_EVENTS,
                                  lambda e: e.type.endswith("case.erased.v1") and e.data.get("case_id") in ids,
                                  expect=2)
    assert len(erasures) == 2
    audit_url = await _audit_log_with(infra, new_database, erasures)

    # The restore: the backup into a fresh database. The case erased after the backup is back, key and all.
    restored_name = f"restored_{uuid.uuid4().hex[:8]}"
    psql(infra.server_url, f'CREATE DATABASE "{restored_name}"')
    await asyncio.to_thread(_run, "pg_restore", "--no-owner", "-d", f"{infra.server_url}/{restored_name}", str(dump))
    restored_url = infra.database_url(restored_name)
    assert await _case_state(restored_url, erased_after["id"]) == ("active", True, True)

    monkeypatch.setenv("REFNET_INTAKE_DATABASE_URL", restored_url)
    app = typer.Typer()
    keys_app = typer.Typer()
    app.add_typer(keys_app, name="keys")
    cli.register(app, keys_app)
    command = ["intake", "reapply-erasures", "--audit-database", audit_url]
    result = await asyncio.to_thread(CliRunner().invoke, app, command)
    assert result.exit_code == 0, result.output
    assert "2 erasures in the audit log; 1 cases erased again" in result.output

    assert await _case_state(restored_url, erased_after["id"]) == ("erased", False, False)
    assert await _case_state(restored_url, erased_before["id"]) == ("erased", False, False)
    assert await _case_state(restored_url, kept["id"]) == ("active", True, True)  # nothing else touched

    again = await asyncio.to_thread(CliRunner().invoke, app, command)
    assert again.exit_code == 0 and "0 cases erased again" in again.output, again.output
