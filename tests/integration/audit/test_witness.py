# ruff: noqa: S608 -- the SQL here is the test's own constant text, run on purpose behind the service
"""An independent witness (C2SP tlog-cosignature): ``refnet audit witness`` cosigns only checkpoints that extend
the last one it saw, the log serves the cosignatures, and ``refnet audit verify`` requires a quorum of them."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from deploy.commands.audit import AuditCliError, verify, witness, witness_identity
from deploy.launcher.infra import Broker
from services.audit.settings import AuditSettings
from services.audit.signing import VerifierKey, cosign, raw_public
from shared.topics import INTAKE_EVENTS
from tests.conftest import Infra
from tests.integration.audit.conftest import AuditHarness, running_audit
from tests.support.issuer import LocalIssuer

URL = "http://audit.test"
BEHIND = "SET session_replication_role = replica; "


@pytest.fixture
def witness_dirs(tmp_path: Path) -> list[Path]:
    return [tmp_path / "witness-ngo", tmp_path / "witness-clinic"]


@pytest.fixture
async def witnessed(infra: Infra, private_broker: Broker, new_database: Callable[[str], str],
                    audit_settings: Callable[..., AuditSettings], issuer: LocalIssuer, witness_dirs: list[Path]
                    ) -> AsyncIterator[AuditHarness]:
    names = ["witness.ngo.example/w1", "witness.clinic.example/w1"]
    vkeys = []
    for directory, name in zip(witness_dirs, names, strict=True):
        private, _ = witness_identity(directory, name)
        vkeys.append(VerifierKey(name, "witness", raw_public(private.public_key())).text())
    settings = audit_settings(new_database("audit"), private_broker.bootstrap, witness_keys=vkeys)
    async with running_audit(settings, infra.server_url, issuer) as harness:
        yield harness


async def _fill(audit: AuditHarness, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        await audit.send(INTAKE_EVENTS, "case.updated.v1", {"case_id": f"case-{i}", "agency": "iom"})
    await audit.wait_for_size(start + n)


def _witness_token(audit: AuditHarness) -> str:
    headers = audit.issuer.auth_headers("cli_ngo", "agy_ngo", "audit:witness")
    return headers["Authorization"].removeprefix("Bearer ")


async def test_witnesses_cosign_and_verify_requires_the_quorum(witnessed: AuditHarness, witness_dirs: list[Path],
                                                               tmp_path: Path) -> None:
    audit = witnessed
    token = _witness_token(audit)
    auditor = audit.headers["Authorization"].removeprefix("Bearer ")
    vkeys = (await audit.client.get("/audit/public-key")).json()["witnesses"]
    assert len(vkeys) == 2

    await _fill(audit, 3)
    first = await witness(audit.client, URL, token, witness_dirs[0])
    assert first.ok and first.cosigned == 3, first.checks
    # One witness of two: a quorum of 2 is not met, a quorum of 1 is.
    with pytest.raises(AuditCliError, match="404"):
        await verify(audit.client, URL, auditor, tmp_path / "auditor", witness_keys=vkeys, quorum=2)
    one = await verify(audit.client, URL, auditor, tmp_path / "auditor", witness_keys=vkeys, quorum=1)
    assert one.ok, one.checks
    assert any(c.name == "witnesses" and "witness.ngo.example/w1" in c.detail for c in one.checks)

    await _fill(audit, 2, start=3)
    assert (await witness(audit.client, URL, token, witness_dirs[0])).cosigned == 5
    assert (await witness(audit.client, URL, token, witness_dirs[1])).cosigned == 5
    both = await verify(audit.client, URL, auditor, tmp_path / "auditor", witness_keys=vkeys, quorum=2)
    assert both.ok, both.checks
    served = (await audit.get("/audit/checkpoint", cosigned=2)).json()
    assert served["tree_size"] == 5 and len(served["cosignatures"]) == 2
    assert served["note"].count("\u2014 ") == 3  # the log's signature and two cosignatures: one signed note

    # An insider rewrites history, deletes the checkpoints and restarts the service with nothing remembered:
    # it signs the forged log. The witnesses will not cosign it, so no quorum vouches for anything after 5.
    await audit.forge(1, "someone-else")
    audit.sql(BEHIND + "DELETE FROM audit_checkpoints")
    audit.deps.checkpoints.memory.last = None
    await _fill(audit, 2, start=5)
    refused = await witness(audit.client, URL, token, witness_dirs[0])
    assert not refused.ok and refused.cosigned is None
    assert any(c.name == "consistency" and not c.ok for c in refused.checks)
    assert audit.sql("SELECT count(*) FROM audit_cosignatures WHERE tree_size = 7").strip() == "0"
    with pytest.raises(AuditCliError, match="404"):  # the cosigned checkpoint of size 5 is gone
        await verify(audit.client, URL, auditor, tmp_path / "fresh-auditor", witness_keys=vkeys, quorum=1)


async def test_the_log_takes_cosignatures_only_from_its_witnesses(witnessed: AuditHarness,
                                                                  witness_dirs: list[Path]) -> None:
    audit = witnessed
    await _fill(audit, 2)
    checkpoint = (await audit.get("/audit/checkpoint")).json()
    headers = audit.issuer.auth_headers("cli_ngo", "agy_ngo", "audit:witness")
    path = "/audit/checkpoints/2/cosignatures"

    stranger = cosign(Ed25519PrivateKey.generate(), "witness.ngo.example/w1", checkpoint["body"], 1_700_000_000)
    answer = await audit.client.post(path, json={"cosignature": stranger}, headers=headers)
    assert answer.status_code == 403 and answer.json()["type"].endswith("unknown-witness")

    private, name = witness_identity(witness_dirs[0], None)
    other_body = checkpoint["body"].replace("\n2\n", "\n3\n")
    wrong = cosign(private, name, other_body, 1_700_000_000)
    answer = await audit.client.post(path, json={"cosignature": wrong}, headers=headers)
    assert answer.status_code == 422 and answer.json()["type"].endswith("invalid-cosignature")
    answer = await audit.client.post(path, json={"cosignature": "\u2014 x " + base64.b64encode(b"\0").decode()},
                                     headers=headers)
    assert answer.status_code == 422
    good = cosign(private, name, checkpoint["body"], 1_700_000_000)
    answer = await audit.client.post("/audit/checkpoints/9/cosignatures", json={"cosignature": good},
                                     headers=headers)
    assert answer.status_code == 404
    # Only a witness may submit: the auditor's token lacks audit:witness.
    answer = await audit.client.post(path, json={"cosignature": good}, headers=audit.headers)
    assert answer.status_code == 403
    answer = await audit.client.post(path, json={"cosignature": good}, headers=headers)
    assert answer.status_code == 201 and answer.json()["witness"] == name
    # A witness sees checkpoints and proofs, not the entries.
    assert (await audit.client.get("/audit/checkpoint", headers=headers)).status_code == 200
    assert (await audit.client.get("/audit/entries", headers=headers)).status_code == 403


async def test_the_witness_command(witnessed: AuditHarness, witness_dirs: list[Path]) -> None:
    import asyncio

    from typer.testing import CliRunner

    from deploy.launcher.cli import app as refnet_cli
    from tests.integration.audit.test_cli import over_http

    audit = witnessed
    await _fill(audit, 2)
    runner = CliRunner()
    env = {"REFNET_TOKEN": _witness_token(audit), "COLUMNS": "200"}
    async with over_http(audit) as url:
        first = await asyncio.to_thread(runner.invoke, refnet_cli, [
            "audit", "witness", "--state", str(witness_dirs[0]), "--url", url], env=env)
        assert first.exit_code == 0, first.output
        assert "witness.ngo.example/w1+" in first.output  # its verifier key, to hand out
        renamed = await asyncio.to_thread(runner.invoke, refnet_cli, [
            "audit", "witness", "--state", str(witness_dirs[0]), "--name", "other.example/w", "--url", url], env=env)
        assert renamed.exit_code == 2 and "one key, one name" in renamed.output
    assert audit.sql("SELECT count(*) FROM audit_cosignatures").strip() == "1"
