"""Master-key rotation with the keys mounted read-only (Kubernetes Secrets): the two-key layout."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import typer
from sqlalchemy import select
from typer.testing import CliRunner

from deploy.commands import intake as cli
from services.intake.crypto import MasterKey, Undecryptable, unwrap, write_key_file
from services.intake.store import CaseKeyRow
from tests.integration.intake.conftest import Intake, agency, case_body, consent_body, unique_person


async def _wrapped(intake: Intake) -> list[CaseKeyRow]:
    async with intake.app.state.runtime.sessions() as session:
        return list((await session.execute(select(CaseKeyRow))).scalars())


async def test_rotation_with_read_only_key_mounts_writes_no_file(
    intake: Intake, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Kubernetes mounts key Secrets read-only: the new key arrives as the current key file and the old one as
    the previous key file (two-key layout); the rotation only re-wraps, and nothing is written beside them."""
    owner = agency()
    person = unique_person()
    case = await intake.register(owner, case_body(person, consent=consent_body()))
    mount = tmp_path / "secret"
    mount.mkdir()
    old_key = MasterKey.from_file(intake.key_file)
    new_key = MasterKey.generate()
    write_key_file(mount / "master.b64", new_key)
    write_key_file(mount / "previous.b64", old_key)
    before = {p.name: p.read_bytes() for p in mount.iterdir()}
    mount.chmod(0o555)
    try:
        monkeypatch.setenv("REFNET_INTAKE_DATABASE_URL", intake.database_url)
        monkeypatch.setenv("REFNET_INTAKE_MASTER_KEY_FILE", str(mount / "master.b64"))
        monkeypatch.setenv("REFNET_INTAKE_PREVIOUS_MASTER_KEY_FILE", str(mount / "previous.b64"))
        app = typer.Typer()
        keys_app = typer.Typer()
        app.add_typer(keys_app, name="keys")
        cli.register(app, keys_app)
        result = await asyncio.to_thread(CliRunner().invoke, app, ["keys", "rotate-intake", "--rewrap-only"])
    finally:
        mount.chmod(0o755)
    assert result.exit_code == 0, result.output
    assert "0 data keys are still wrapped" in result.output
    assert {p.name: p.read_bytes() for p in mount.iterdir()} == before  # no `.new`, nothing replaced
    wrapped = await _wrapped(intake)
    mine = [k for k in wrapped if k.case_id == case["id"]]
    assert mine and all(k.master_key_id == new_key.key_id for k in mine)
    assert all(k.master_key_id == new_key.key_id for k in wrapped)
    # The old key alone no longer opens it; the new one does.
    assert unwrap(mine[0].wrapped_key, new_key, case["id"])
    with pytest.raises(Undecryptable):
        unwrap(mine[0].wrapped_key, old_key, case["id"])
