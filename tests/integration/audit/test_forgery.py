# ruff: noqa: S608 -- the SQL here is the test's own constant text, run on purpose behind the service
"""Verification that cannot be fooled (finding 6): every checkpoint is checked with the key that signed it,
deleted checkpoints are missed, the signer will not sign a history that does not extend its last checkpoint,
and queued entries cannot be dropped unseen."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from deploy.commands.audit import verify_offline
from deploy.launcher.infra import Broker
from services.audit.domain import checkpoint_body
from services.audit.settings import AuditSettings
from services.audit.signing import CheckpointSigner, generate_key_file
from shared.topics import INTAKE_EVENTS
from tests.conftest import Infra
from tests.integration.audit.conftest import AuditHarness, running_audit
from tests.support.issuer import LocalIssuer

BEHIND = "SET session_replication_role = replica; "


async def _fill(audit: AuditHarness, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        await audit.send(INTAKE_EVENTS, "case.updated.v1", {"case_id": f"case-{i}", "agency": "iom"})
    await audit.wait_for_size(start + n)


def _forget(audit: AuditHarness) -> None:
    """What a restart without a checkpoint state file does: the signer remembers nothing."""
    audit.deps.checkpoints.memory.last = None


async def test_a_checkpoint_under_a_key_the_log_never_had_is_bad(audit: AuditHarness) -> None:
    await _fill(audit, 5)
    assert (await audit.get("/audit/checkpoint")).json()["tree_size"] == 5
    await audit.forge(2, "someone-else")
    # The insider replaces the checkpoint with one of the forged root, "signed" by a key of their own.
    shown = (await audit.get("/audit/verify", full="true")).json()
    forger = CheckpointSigner(Ed25519PrivateKey.generate(), "refnet.local/audit")
    body = checkpoint_body(forger.origin, 5, bytes.fromhex(shown["root_hash"]))
    audit.sql(BEHIND + "DELETE FROM audit_checkpoints; INSERT INTO audit_checkpoints VALUES "
              f"(5, '\\x{shown['root_hash']}', 'refnet.local/audit', now(), '{body}', '{forger.key_id}', "
              f"'\\x{forger.sign(body).hex()}')")
    _forget(audit)  # even a restarted service, with nothing remembered
    report = (await audit.get("/audit/verify")).json()
    assert report["ok"] is False and report["first_bad_checkpoint"] == 5
    refused = await audit.get("/audit/checkpoint")
    assert refused.status_code == 503 and refused.json()["type"].endswith("log-inconsistent")


async def test_deleted_checkpoints_are_missed_and_a_forged_root_is_not_signed(audit: AuditHarness) -> None:
    await _fill(audit, 5)
    signed = (await audit.get("/audit/checkpoint")).json()
    await audit.forge(2, "someone-else")
    audit.sql(BEHIND + "DELETE FROM audit_checkpoints")
    report = (await audit.get("/audit/verify", full="true")).json()
    assert report["ok"] is False and report["missing_checkpoint"] == 5 and report["first_bad_checkpoint"] == 5
    await _fill(audit, 2, start=5)
    refused = await audit.get("/audit/checkpoint")
    assert refused.status_code == 503 and refused.json()["type"].endswith("log-inconsistent")
    assert audit.sql("SELECT count(*) FROM audit_checkpoints").strip() == "0"
    assert signed["tree_size"] == 5


async def test_the_signer_remembers_across_a_restart(audit: AuditHarness, tmp_path: object) -> None:
    from pathlib import Path

    from services.audit.signing import CheckpointMemory

    state = Path(str(tmp_path)) / "last-checkpoint.json"
    memory = CheckpointMemory(state)
    audit.deps.checkpoints.memory = memory
    await _fill(audit, 3)
    signed = (await audit.get("/audit/checkpoint")).json()
    assert CheckpointMemory(state).size == 3 and CheckpointMemory(state).root.hex() == signed["root_hash"]
    await audit.forge(1, "someone-else")
    audit.sql(BEHIND + "DELETE FROM audit_checkpoints")
    audit.deps.checkpoints.memory = CheckpointMemory(state)  # a restart: read back from the file
    await _fill(audit, 1, start=3)
    assert (await audit.get("/audit/checkpoint")).status_code == 503


async def test_the_writer_cannot_drop_queued_entries(audit: AuditHarness) -> None:
    await _fill(audit, 1)
    as_writer = "SET ROLE refnet_audit_writer; BEGIN; "
    queue = ("INSERT INTO audit_pending (source_service, event_id, occurred_at, action, outcome) "
             "VALUES ('intake', 'ev-dropped', now(), 'case.read', 'success'); ")
    with pytest.raises(subprocess.CalledProcessError) as refused:
        audit.sql(as_writer + queue + "DELETE FROM audit_pending WHERE event_id = 'ev-dropped'; COMMIT;")
    assert "only into the log" in refused.value.stderr.decode()
    with pytest.raises(subprocess.CalledProcessError) as truncated:
        audit.sql(queue + "TRUNCATE audit_pending")
    assert "append-only" in truncated.value.stderr.decode()
    # What the sequencer does -- into the log, then out of the queue -- still works.
    await _fill(audit, 2, start=1)
    assert (await audit.get("/audit/verify")).json()["ok"] is True




async def test_a_rotated_key_counts_only_when_configured(
        infra: Infra, private_broker: Broker, new_database: Callable[[str], str],
        audit_settings: Callable[..., AuditSettings], issuer: LocalIssuer, tmp_path: Path) -> None:
    url = new_database("audit")
    async with running_audit(audit_settings(url, private_broker.bootstrap), infra.server_url, issuer) as audit:
        await _fill(audit, 3)
        old = (await audit.client.get("/audit/public-key")).json()["vkey"]
        assert (await audit.get("/audit/checkpoint")).json()["tree_size"] == 3
    new_key = tmp_path / "rotated.pem"
    generate_key_file(new_key)
    # The new key alone: the old key's checkpoint is not trusted, and nothing is signed after it.
    forgetful = audit_settings(url, private_broker.bootstrap, checkpoint_key_file=str(new_key))
    async with running_audit(forgetful, infra.server_url, issuer, migrate=False) as audit:
        report = (await audit.get("/audit/verify")).json()
        assert not report["ok"] and report["first_bad_checkpoint"] in (0, 3)  # the first under the old key
        assert (await audit.get("/audit/checkpoint")).status_code == 503
    # With the old key listed, both hold.
    rotated = audit_settings(url, private_broker.bootstrap, checkpoint_key_file=str(new_key),
                             checkpoint_previous_keys=[old])
    async with running_audit(rotated, infra.server_url, issuer, migrate=False) as audit:
        assert (await audit.client.get("/audit/public-key")).json()["previous_keys"] == [old]
        assert (await audit.get("/audit/verify")).json()["ok"] is True
        await _fill(audit, 2, start=3)
        signed = (await audit.get("/audit/checkpoint")).json()
        assert signed["tree_size"] == 5 and signed["key_id"] != old.split("+")[1]
        saved = {**signed, "public_key": (await audit.client.get("/audit/public-key")).json()["public_key"]}
    offline = await verify_offline(url, saved)
    assert not offline.ok  # the size-3 checkpoint is under a key the command was not given
    offline = await verify_offline(url, saved, [old])
    assert offline.ok, offline.checks
