"""Auditors list overrides with both people (issue 20, docs/domain.md rules 6 and 10): the request, the approval and the
revocation are each an entry naming its person and on whose authentication -- and entries from before, which
name none, still prove into the same log."""

from __future__ import annotations

import rfc8785

from services.audit.merkle import hash_leaf, verify_inclusion
from shared.topics import AUDIT_ACCESS, INTAKE_EVENTS
from tests.integration.audit.conftest import AuditHarness

CASE = "case-" + "0f1e2d3c4b5a6978" * 2
OVERRIDE = "override-" + "9a8b7c6d5e4f3021" * 2
REQUESTER = "person-" + "11" * 16
APPROVER = "person-" + "22" * 16


async def test_an_override_shows_both_people_and_old_entries_still_prove(audit: AuditHarness) -> None:
    # Before issue 20: an override whose approver was a name in the body, no attestation anywhere.
    await audit.send(INTAKE_EVENTS, "consent.overridden.v1", {
        "case_id": CASE, "agency": "agy_iom", "client_id": "cli_iom", "acting_user": "x1",
        "override_id": "override-" + "00" * 16, "recipient_agency": "agy_clinic", "approver": "x2",
        "valid_until": "2026-11-25T09:30:01Z"}, key=CASE)
    # After: the request, by a caseworker with her own token ...
    await audit.send(AUDIT_ACCESS, "access.recorded.v1", {
        "action": "consent.override.request", "outcome": "success", "agency": "agy_iom", "client_id": "refnet-console",
        "acting_user": REQUESTER, "attested_by": "token", "resource_type": "Override", "resource_id": OVERRIDE,
        "case_id": CASE, "details": {"recipient_agency": "agy_clinic"}}, key=CASE)
    # ... the approval, by a supervisor with his ...
    await audit.send(INTAKE_EVENTS, "consent.overridden.v1", {
        "case_id": CASE, "agency": "agy_iom", "client_id": "refnet-console", "acting_user": APPROVER,
        "attested_by": "token", "override_id": OVERRIDE, "recipient_agency": "agy_clinic", "approver": APPROVER,
        "requested_by": REQUESTER, "approved_at": "2026-11-22T09:30:01Z", "valid_until": "2026-11-25T09:30:01Z"},
        key=CASE)
    # ... a read a case system made, naming the user it asserts ...
    await audit.send(AUDIT_ACCESS, "access.recorded.v1", {
        "action": "case.read", "outcome": "success", "agency": "agy_iom", "client_id": "cli_iom",
        "acting_user": "officer.7", "attested_by": "system", "purpose": "case_management", "resource_type": "Case",
        "resource_id": CASE, "case_id": CASE, "details": {}}, key=CASE)
    # ... and the revocation, by the requester.
    await audit.send(AUDIT_ACCESS, "access.recorded.v1", {
        "action": "consent.override.revoke", "outcome": "success", "agency": "agy_iom", "client_id": "refnet-console",
        "acting_user": REQUESTER, "attested_by": "token", "resource_type": "Override", "resource_id": OVERRIDE,
        "case_id": CASE, "details": {"recipient_agency": "agy_clinic"}}, key=CASE)
    await audit.wait_for_size(5)

    consents = (await audit.get(f"/audit/cases/{CASE}/consents")).json()["items"]
    listed = [(c["action"], c["acting_user"], c["details"].get("attested_by"), c["details"].get("requested_by"))
              for c in consents]
    # (The log interleaves topics: its order across intake's events and access records is not theirs.)
    assert sorted(listed, key=str) == sorted([
        ("consent.override", "x1", None, None),  # as it was logged: nobody vouched for x1 or x2
        ("consent.override.request", REQUESTER, "token", None),
        ("consent.override", APPROVER, "token", REQUESTER),
        ("consent.override.revoke", REQUESTER, "token", None),
    ], key=str)
    assert {c["resource_id"] for c in consents if c["acting_user"] != "x1"} == {OVERRIDE}
    approvals = (await audit.get("/audit/entries", action="consent.override", case_id=CASE)).json()["items"]
    assert sorted((a["acting_user"], a["details"]["approver"], a["details"].get("requested_by") or "")
                  for a in approvals) == sorted([("x1", "x2", ""), (APPROVER, APPROVER, REQUESTER)])
    read = (await audit.get("/audit/entries", action="case.read", case_id=CASE)).json()["items"]
    assert [(r["acting_user"], r["details"]["attested_by"]) for r in read] == [("officer.7", "system")]

    checkpoint = (await audit.get("/audit/checkpoint")).json()
    size, root = checkpoint["tree_size"], bytes.fromhex(checkpoint["root_hash"])
    entries = (await audit.get("/audit/entries", limit=500)).json()["items"]
    assert size == len(entries) == 5
    for entry in entries:
        proof = (await audit.get("/audit/proofs/inclusion", index=entry["index"], tree_size=size)).json()
        leaf = hash_leaf(rfc8785.dumps(entry))
        assert proof["leaf_hash"] == leaf.hex()
        assert verify_inclusion(leaf, entry["index"], size, [bytes.fromhex(h) for h in proof["path"]], root)
