"""``refnet audit verify`` and ``refnet audit case`` against a running audit service."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import uvicorn
from typer.testing import CliRunner

from deploy.commands.audit import load_checkpoint_file, state_file, verify, verify_offline
from deploy.launcher.cli import app as refnet_cli
from shared.topics import AUDIT_ACCESS, INTAKE_EVENTS
from tests.integration.audit.conftest import AuditHarness

URL = "http://audit.test"


async def _grow(audit: AuditHarness, n: int, start: int) -> None:
    for i in range(start, start + n):
        await audit.send(INTAKE_EVENTS, "case.updated.v1", {"case_id": f"case-{i}", "agency": "iom"})
    await audit.wait_for_size(start + n)


def _token(audit: AuditHarness) -> str:
    return audit.headers["Authorization"].removeprefix("Bearer ")


async def test_verify_remembers_checkpoints_and_catches_a_rewritten_history(
        audit: AuditHarness, tmp_path: Path) -> None:
    token = _token(audit)
    first = await verify(audit.client, URL, token, tmp_path)
    assert first.ok, first.checks
    assert {c.name for c in first.checks} >= {"public key", "signature", "consistency", "checkpoint text"}

    await _grow(audit, 5, 0)
    grown = await verify(audit.client, URL, token, tmp_path, full=True)
    assert grown.ok, grown.checks
    await _grow(audit, 2, 5)
    again = await verify(audit.client, URL, token, tmp_path)
    assert again.ok, again.checks
    remembered = json.loads(state_file(tmp_path, URL).read_text())
    assert remembered["tree_size"] == 7
    # A restored database is checked directly, service or not, against a saved checkpoint.
    offline = await verify_offline(audit.database_url, load_checkpoint_file(state_file(tmp_path, URL)))
    assert offline.ok, offline.checks

    # Entry 2 rewritten, every stored hash recomputed to match.
    await audit.forge(2, "someone-else")
    await _grow(audit, 2, 7)
    # The service refuses to sign a history that does not extend its last checkpoint ...
    refused = await audit.get("/audit/checkpoint")
    assert refused.status_code == 503 and refused.json()["type"].endswith("log-inconsistent")
    # ... so the insider also deletes every checkpoint and restarts it without its memory: it signs again, and
    # only the checkpoint this machine remembers can tell.
    audit.sql("SET session_replication_role = replica; DELETE FROM audit_checkpoints")
    audit.deps.checkpoints.memory.last = None
    caught = await verify(audit.client, URL, token, tmp_path)
    assert not caught.ok
    (consistency,) = [c for c in caught.checks if c.name == "consistency"]
    assert not consistency.ok and "rewritten" in consistency.detail
    assert json.loads(state_file(tmp_path, URL).read_text())["tree_size"] == 7, "a bad checkpoint was remembered"
    full = await verify(audit.client, URL, token, tmp_path, full=True)
    assert not full.ok  # the server's recomputation matches what it signed since; the consistency check fails
    offline = await verify_offline(audit.database_url, load_checkpoint_file(state_file(tmp_path, URL)))
    assert [c.ok for c in offline.checks][:2] == [True, False]  # signature, contains checkpoint
    # The same, from a checkpoint file as the API returned it (here: the first one, of size 0 -- trivial).
    saved = tmp_path / "saved.json"
    saved.write_text(json.dumps(first.checkpoint))
    against = await verify(audit.client, URL, token, tmp_path, against=load_checkpoint_file(saved))
    assert [c.ok for c in against.checks if c.name == "consistency"] == [True]

    # A different signing key, or a log that shrank, is refused too.
    state = json.loads(state_file(tmp_path, URL).read_text())
    state_file(tmp_path, URL).write_text(json.dumps({**state, "public_key": "A" * 43 + "="}))
    swapped = await verify(audit.client, URL, token, tmp_path)
    assert [c.ok for c in swapped.checks if c.name in ("public key", "signature")] == [False, False]
    state_file(tmp_path, URL).write_text(json.dumps({**state, "tree_size": 100}))
    shrunk = await verify(audit.client, URL, token, tmp_path)
    assert any("SHRANK" in c.detail for c in shrunk.checks)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def over_http(audit: AuditHarness) -> AsyncIterator[str]:
    """The already started app, served over real HTTP (its lifespan is the harness's)."""
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(audit.app, host="127.0.0.1", port=port, lifespan="off",
                                           log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def test_the_commands(audit: AuditHarness, tmp_path: Path) -> None:
    case = "case-" + "c1" * 16
    await audit.send(INTAKE_EVENTS, "consent.granted.v1", {"case_id": case, "agency": "iom", "consent_id": "k1",
                                                           "consent_version": 1})
    await audit.send(AUDIT_ACCESS, "access.recorded.v1", {
        "action": "case.read", "outcome": "success", "agency": "agy_unhcr", "acting_user": "officer-1",
        "purpose": "referral", "case_id": case, "details": {"consent_id": "k1", "consent_version": 1}})
    await audit.wait_for_size(2)
    runner = CliRunner()
    env = {"REFNET_HOME": str(tmp_path), "REFNET_TOKEN": _token(audit), "COLUMNS": "200"}
    async with over_http(audit) as url:
        ok = await asyncio.to_thread(runner.invoke, refnet_cli, ["audit", "verify", "--url", url, "--full"], env=env)
        assert ok.exit_code == 0, ok.output
        assert "consistent" in ok.output and "FAILED" not in ok.output
        assert any((tmp_path / "audit").iterdir())
        offline = await asyncio.to_thread(runner.invoke, refnet_cli, ["audit", "verify", "--url", url, "--database",
                                                                      audit.database_url], env=env)
        assert offline.exit_code == 0, offline.output
        assert "contains checkpoint" in offline.output
        shown = await asyncio.to_thread(runner.invoke, refnet_cli, ["audit", "case", case, "--url", url, "--json"],
                                        env=env)
        assert shown.exit_code == 0, shown.output
        # The app logs from this process's other thread into the same captured stdout: find the document.
        history, _ = json.JSONDecoder().raw_decode(shown.output[shown.output.index('{\n  "case_id"'):])
        assert [(a["agency"], a["consent"]["consent_id"]) for a in history["access"]] == [("agy_unhcr", "k1")]
        assert [c["action"] for c in history["consents"]] == ["consent.grant"]
        # The console was made when the CLI was imported, perhaps by another test without COLUMNS: a wide screen.
        from deploy.commands import audit as audit_cli

        audit_cli.console.width = 200
        table = await asyncio.to_thread(runner.invoke, refnet_cli, ["audit", "case", case, "--url", url], env=env)
        assert table.exit_code == 0 and "officer-1" in table.output and "k1 v1" in table.output
        # A mistyped id, or one that is no case id, is not "a case nobody read".
        for unknown in ("case-" + "c2" * 16, "not a case id"):
            missing = await asyncio.to_thread(runner.invoke, refnet_cli, ["audit", "case", unknown, "--url", url],
                                              env=env)
            assert missing.exit_code == 1, missing.output
            assert "no case" in missing.output and "who saw" not in missing.output
        unread = "case-" + "c3" * 16
        await audit.send(INTAKE_EVENTS, "consent.granted.v1", {"case_id": unread, "agency": "iom",
                                                               "consent_id": "k3", "consent_version": 1})
        await audit.wait_for_size(3)
        nobody = await asyncio.to_thread(runner.invoke, refnet_cli, ["audit", "case", unread, "--url", url], env=env)
        assert nobody.exit_code == 0, nobody.output
        assert "Nobody has read case" in nobody.output
        refused = await asyncio.to_thread(runner.invoke, refnet_cli, ["audit", "verify", "--url", url],
                                          env={**env, "REFNET_TOKEN": "not-a-token"})
        assert refused.exit_code == 2 and "401" in refused.output
