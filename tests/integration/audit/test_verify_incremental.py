# ruff: noqa: S608 -- the SQL here is the test's own constant text, run on purpose behind the service
"""/audit/verify goes on from the last checkpoint a verification reached; the full one is rate-limited
(finding 14)."""

from __future__ import annotations

from shared.topics import INTAKE_EVENTS
from tests.integration.audit.conftest import AuditHarness

BEHIND = "SET session_replication_role = replica; "


async def _fill(audit: AuditHarness, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        await audit.send(INTAKE_EVENTS, "case.updated.v1", {"case_id": f"case-{i}", "agency": "iom"})
    await audit.wait_for_size(start + n)


async def test_verify_recomputes_only_what_is_new(audit: AuditHarness) -> None:
    await _fill(audit, 6)
    await audit.get("/audit/checkpoint")
    first = (await audit.get("/audit/verify")).json()
    assert first["ok"] and first["full"] and first["from_index"] == 0 and first["tree_size"] == 6

    await _fill(audit, 4, start=6)
    await audit.get("/audit/checkpoint")
    second = (await audit.get("/audit/verify")).json()
    assert second["ok"] and not second["full"] and second["from_index"] == 6 and second["tree_size"] == 10
    assert second["checkpoints_checked"] == 1 and second["root_hash"] == (
        await audit.get("/audit/checkpoint")).json()["root_hash"]

    # A rewrite among the new entries is found by the incremental run ...
    await _fill(audit, 2, start=10)
    audit.sql(BEHIND + "UPDATE audit_entries SET agency = 'someone-else' WHERE idx = 11")
    third = (await audit.get("/audit/verify")).json()
    assert not third["ok"] and third["first_bad_index"] == 11 and third["from_index"] == 10
    # ... one among the entries already verified by the full run, which is the oversight's to ask for.
    audit.sql(BEHIND + "UPDATE audit_entries SET agency = 'someone-else' WHERE idx = 2")
    full = (await audit.get("/audit/verify", full="true")).json()
    assert not full["ok"] and full["first_bad_index"] == 2 and full["full"]
    limited = await audit.get("/audit/verify", full="true")
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert limited.json()["type"].endswith("rate-limited")


async def test_a_verification_mark_that_no_longer_holds_means_a_full_run(audit: AuditHarness) -> None:
    await _fill(audit, 4)
    await audit.get("/audit/checkpoint")
    assert (await audit.get("/audit/verify")).json()["ok"]
    # The nodes under the verified checkpoint rewritten: its border no longer folds to the signed root.
    audit.sql(BEHIND + "UPDATE merkle_nodes SET hash = '\\x" + "00" * 32 + "' WHERE level = 2 AND idx = 0")
    again = (await audit.get("/audit/verify")).json()
    assert again["full"] and again["from_index"] == 0 and not again["ok"]
