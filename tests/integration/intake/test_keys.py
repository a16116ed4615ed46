"""Master-key rotation re-wraps data keys only; the launcher's development key; the key stays out of view."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest
import typer
from sqlalchemy import select
from typer.testing import CliRunner

from deploy.commands import intake as cli
from deploy.launcher.bootstrap import BootstrapContext
from deploy.launcher.bootstrap import intake as bootstrap
from services.intake.crypto import Keyring, MasterKey, Undecryptable, unwrap, wrap, write_key_file
from services.intake.deps import Deps
from services.intake.store import CaseKeyRow, CaseRow
from tests.integration.intake.conftest import Intake, agency, case_body, consent_body, unique_person


async def _sealed_and_keys(intake: Intake) -> tuple[dict[str, bytes | None], list[CaseKeyRow]]:
    async with intake.app.state.runtime.sessions() as session:
        sealed = {r.id: r.sealed for r in (await session.execute(select(CaseRow))).scalars()}
        keys = list((await session.execute(select(CaseKeyRow))).scalars())
    return sealed, keys


async def test_rotation_rewraps_every_data_key_and_retires_the_old_master_key(
    intake: Intake, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = agency()
    people = [unique_person() for _ in range(3)]
    cases = [await intake.register(owner, case_body(p, consent=consent_body())) for p in people]
    erased = await intake.register(owner)
    await intake.client.post(f"/cases/{erased['id']}/erase", headers=intake.headers(owner))
    old_key = MasterKey.from_file(intake.key_file)
    sealed_before, _ = await _sealed_and_keys(intake)

    monkeypatch.setenv("REFNET_INTAKE_DATABASE_URL", intake.database_url)
    monkeypatch.setenv("REFNET_INTAKE_MASTER_KEY_FILE", str(intake.key_file))
    app = typer.Typer()
    keys_app = typer.Typer()
    app.add_typer(keys_app, name="keys")
    cli.register(app, keys_app)
    result = await asyncio.to_thread(CliRunner().invoke, app, ["keys", "rotate-intake"])
    assert result.exit_code == 0, result.output
    new_key = MasterKey.from_file(intake.key_file)
    assert new_key.key_id != old_key.key_id
    assert old_key.encoded().decode() not in result.output and new_key.encoded().decode() not in result.output
    assert stat.S_IMODE(os.stat(intake.key_file).st_mode) == 0o600

    sealed_after, wrapped = await _sealed_and_keys(intake)
    assert sealed_after == sealed_before  # the case data was not touched
    assert {c["id"] for c in cases} <= {k.case_id for k in wrapped}
    assert erased["id"] not in {k.case_id for k in wrapped}  # an erased case stays erased
    assert all(k.master_key_id == new_key.key_id for k in wrapped)
    for row in wrapped:
        with pytest.raises(Undecryptable):
            unwrap(row.wrapped_key, old_key, row.case_id)

    assert "0 data keys are still wrapped" in result.output
    keys = intake.app.state.runtime.need(Deps).keys
    # intake holding only the old key cannot open any case any more ...
    saved_load = keys.load
    keys.keyring, keys.load = Keyring(old_key), None
    stale = await intake.read(cases[0]["id"], owner)
    assert stale.status_code == 503 and stale.json()["type"].endswith("master-key-unavailable")
    # ... while a running intake picks the new key file up by itself, and every case decrypts.
    keys.load = saved_load
    for case, person in zip(cases, people, strict=True):
        read = await intake.read(case["id"], owner)
        assert read.status_code == 200, read.text
        assert read.json()["person"]["phone"] == person["phone"]
    assert keys.keyring is not None and keys.keyring.current == new_key
    assert (await intake.register(owner))["status"] == "active"


async def test_the_launcher_generates_a_private_development_key(tmp_path: Path) -> None:
    ctx = BootstrapContext(service="intake", home=tmp_path, database_url="postgresql://x/y", service_urls={})
    bootstrap.prepare(ctx)
    path = Path(ctx.env["REFNET_INTAKE_MASTER_KEY_FILE"])
    assert path.parent == tmp_path / "keys"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    key = MasterKey.from_file(path)
    again = BootstrapContext(service="intake", home=tmp_path, database_url="postgresql://x/y", service_urls={})
    bootstrap.prepare(again)
    assert MasterKey.from_file(path) == key  # an existing key is kept
    assert key.encoded().decode() not in repr(key)


async def test_without_a_master_key_no_personal_data_is_accepted(intake: Intake) -> None:
    keys = intake.app.state.runtime.need(Deps).keys
    saved = keys.keyring
    keys.keyring = None
    try:
        response = await intake.client.post("/cases", json=case_body(),
                                            headers=intake.writer(agency()))
        assert response.status_code == 503
    finally:
        keys.keyring = saved


async def test_an_interrupted_rotation_resumes_with_the_staged_key(intake: Intake) -> None:
    owner = agency()
    cases = [await intake.register(owner) for _ in range(2)]
    old_key = MasterKey.from_file(intake.key_file)
    staged_key = MasterKey.generate()
    # As if a rotation had staged its key and re-wrapped one data key, then died.
    staged = Path(str(intake.key_file) + ".new")
    write_key_file(staged, staged_key)
    async with intake.app.state.runtime.sessions() as session, session.begin():
        row = await session.get(CaseKeyRow, cases[0]["id"])
        assert row is not None
        row.wrapped_key = wrap(unwrap(row.wrapped_key, old_key, row.case_id), staged_key, row.case_id)
        row.master_key_id = staged_key.key_id
    # Meanwhile intake still reads both kinds (it looks for the staged key).
    for case in cases:
        assert (await intake.read(case["id"], owner)).status_code == 200
    new_key, _count, left = await cli.rotate(intake.database_url, intake.key_file)
    assert new_key == staged_key and left == 0
    assert MasterKey.from_file(intake.key_file) == staged_key and not staged.exists()
    for case in cases:
        assert (await intake.read(case["id"], owner)).status_code == 200
