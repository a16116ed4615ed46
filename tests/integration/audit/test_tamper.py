# ruff: noqa: S608 -- the SQL here is the test's own constant text, run on purpose behind the service
"""The log is append-only in the database, and a rewrite behind the service's back is found."""

from __future__ import annotations

import base64
import subprocess

import pytest
import rfc8785

from services.audit.merkle import verify_consistency
from services.audit.signing import verify_signature
from shared.topics import INTAKE_EVENTS
from tests.integration.audit.conftest import AuditHarness
from tests.support.merkle_tree import root_of_leaves

# A column of each log table, to try to change.
LOG_TABLES = {"audit_entries": "agency", "merkle_nodes": "hash", "audit_checkpoints": "key_id"}


async def _fill(audit: AuditHarness, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        await audit.send(INTAKE_EVENTS, "case.updated.v1", {"case_id": f"case-{i}", "agency": "iom-ly"})
    await audit.wait_for_size(start + n)


def _refused(audit: AuditHarness, statement: str) -> str:
    with pytest.raises(subprocess.CalledProcessError) as failure:
        audit.sql(statement)
    return failure.value.stderr.decode()


async def test_the_service_role_can_only_insert_and_select(audit: AuditHarness) -> None:
    await _fill(audit, 3)
    await audit.get("/audit/checkpoint")
    as_writer = "SET ROLE refnet_audit_writer; "
    for table, column in LOG_TABLES.items():
        for statement in (f"UPDATE {table} SET {column} = {column}", f"DELETE FROM {table}",
                          f"TRUNCATE {table}"):
            error = _refused(audit, as_writer + statement)
            assert "permission denied" in error, (statement, error)
    # Dropping the guard is the owner's right only.
    assert "must be owner" in _refused(audit, as_writer + "ALTER TABLE audit_entries DISABLE TRIGGER USER")
    assert audit.sql(as_writer + "SELECT count(*) FROM audit_entries").strip() == "3"

    # Even the owner (here the superuser) is refused by the triggers.
    for table in LOG_TABLES:
        assert "append-only" in _refused(audit, f"DELETE FROM {table}")
        assert "append-only" in _refused(audit, f"TRUNCATE {table}")
    assert "append-only" in _refused(audit, "UPDATE audit_entries SET agency = 'x' WHERE idx = 0")

    # And the running service does act as the writer role.
    async with audit.app.state.runtime.engine.connect() as conn:
        from sqlalchemy import text

        assert (await conn.execute(text("SELECT current_user"))).scalar_one() == "refnet_audit_writer"


async def test_a_rewritten_entry_is_named_and_breaks_the_signed_history(audit: AuditHarness) -> None:
    await _fill(audit, 7)
    assert (await audit.get("/audit/verify")).json() == {
        **(await audit.get("/audit/verify")).json(), "ok": True, "first_bad_index": None}
    before = (await audit.get("/audit/checkpoint")).json()
    assert before["tree_size"] == 7
    key = base64.b64decode((await audit.client.get("/audit/public-key")).json()["public_key"])
    assert verify_signature(key, before["body"], base64.b64decode(before["signature"]))

    # Someone with the superuser's password, triggers off, changes who did something.
    audit.sql("SET session_replication_role = replica; "
              "UPDATE audit_entries SET agency = 'someone-else' WHERE idx = 4")
    report = (await audit.get("/audit/verify")).json()
    assert report["ok"] is False
    assert report["first_bad_index"] == 4
    assert report["tree_size"] == 7

    # The log as the API now shows it no longer has the root the earlier checkpoint signed.
    shown = (await audit.get("/audit/entries", limit=500)).json()["items"]
    assert root_of_leaves([rfc8785.dumps(e) for e in shown]).hex() != before["root_hash"]

    # A thorough forger also rewrites every stored hash so the leaves match again ...
    await audit.forge(4, "someone-else")
    report = (await audit.get("/audit/verify")).json()
    assert report["ok"] is False and report["first_bad_checkpoint"] == 7
    # ... and the log goes on growing, but the signer will not sign what does not extend its last checkpoint.
    await _fill(audit, 3, start=7)
    refused = await audit.get("/audit/checkpoint")
    assert refused.status_code == 503 and refused.json()["type"].endswith("log-inconsistent")
    assert audit.sql("SELECT max(tree_size) FROM audit_checkpoints").strip() == "7"
    proof = (await audit.get("/audit/proofs/consistency", first=7, second=10)).json()
    shown = (await audit.get("/audit/entries", limit=500)).json()["items"]
    forged_root = root_of_leaves([rfc8785.dumps(e) for e in shown])
    assert not verify_consistency(7, 10, bytes.fromhex(before["root_hash"]), forged_root,
                                  [bytes.fromhex(h) for h in proof["path"]])

    # A deleted entry leaves a hole, and the hole is named.
    audit.sql("SET session_replication_role = replica; DELETE FROM audit_entries WHERE idx = 8")
    report = (await audit.get("/audit/verify")).json()
    assert report["ok"] is False and report["first_bad_index"] == 8


async def test_the_writer_role_can_do_what_the_service_needs(audit: AuditHarness) -> None:
    as_writer = "SET ROLE refnet_audit_writer; BEGIN; "
    # The outbox relay's claim and delete, the consumer's marks: all must work as the writer.
    audit.sql(as_writer + "SELECT * FROM outbox FOR UPDATE SKIP LOCKED; DELETE FROM outbox; "
              "INSERT INTO consumer_marks VALUES ('c', 't', 0, 1, 'e') ON CONFLICT (consumer, topic, partition) "
              "DO UPDATE SET \"offset\" = 2; DELETE FROM consumer_marks; ROLLBACK;")
