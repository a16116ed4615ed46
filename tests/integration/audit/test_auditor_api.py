"""The auditor's API: signed checkpoints, proofs that verify, case views, and 4xx for impossible asks."""

from __future__ import annotations

import asyncio
import base64

import rfc8785

from services.audit.domain import parse_checkpoint_body
from services.audit.jobs import sign_checkpoints
from services.audit.merkle import hash_leaf, verify_consistency, verify_inclusion
from services.audit.signing import key_hash, verify_signature
from shared.errors import PROBLEM_MEDIA_TYPE
from shared.topics import AUDIT_ACCESS, INTAKE_EVENTS, REFERRAL_EVENTS
from tests.integration.audit.conftest import AuditHarness


async def test_checkpoints_and_proofs_verify(audit: AuditHarness) -> None:
    key = (await audit.client.get("/audit/public-key")).json()
    assert key["algorithm"] == "Ed25519"
    public = base64.b64decode(key["public_key"])
    assert len(public) == 32

    empty = (await audit.get("/audit/checkpoint")).json()
    assert empty["tree_size"] == 0
    checkpoints = [empty]
    for n in range(1, 14):
        await audit.send(INTAKE_EVENTS, "case.updated.v1", {"case_id": f"case-{n}", "agency": "a"})
        if n in (1, 4, 5, 8, 13):
            await audit.wait_for_size(n)
            checkpoints.append((await audit.get("/audit/checkpoint")).json())
    for cp in checkpoints:
        body = parse_checkpoint_body(cp["body"])
        assert body.origin == cp["origin"] == "refnet.local/audit"
        assert body.tree_size == cp["tree_size"] and body.root.hex() == cp["root_hash"]
        assert verify_signature(public, cp["body"], base64.b64decode(cp["signature"]))
        assert cp["key_id"] == key["key_id"] == key_hash(cp["origin"], public).hex()
    assert [cp["tree_size"] for cp in checkpoints] == [0, 1, 4, 5, 8, 13]
    # Nothing new: the same checkpoint again.
    assert (await audit.get("/audit/checkpoint")).json() == checkpoints[-1]

    entries = (await audit.get("/audit/entries", limit=500)).json()["items"]
    for cp in checkpoints[1:]:
        size, root = cp["tree_size"], bytes.fromhex(cp["root_hash"])
        for entry in entries[:size]:
            proof = (await audit.get("/audit/proofs/inclusion", index=entry["index"], tree_size=size)).json()
            leaf = hash_leaf(rfc8785.dumps(entry))
            assert proof["leaf_hash"] == leaf.hex()
            assert verify_inclusion(leaf, entry["index"], size, [bytes.fromhex(h) for h in proof["path"]], root)
    for old in checkpoints[1:]:
        for new in checkpoints[1:]:
            if old["tree_size"] > new["tree_size"]:
                continue
            proof = (await audit.get("/audit/proofs/consistency", first=old["tree_size"],
                                     second=new["tree_size"])).json()
            assert verify_consistency(old["tree_size"], new["tree_size"], bytes.fromhex(old["root_hash"]),
                                      bytes.fromhex(new["root_hash"]), [bytes.fromhex(h) for h in proof["path"]])
    # While entries arrive, the background signer makes checkpoints without being asked.
    signer_task = asyncio.create_task(sign_checkpoints(audit.deps.checkpoints, 0.2))
    try:
        await audit.send(INTAKE_EVENTS, "case.updated.v1", {"case_id": "case-14", "agency": "a"})
        await audit.wait_for_size(14)
        for _ in range(50):
            if audit.sql("SELECT max(tree_size) FROM audit_checkpoints").strip() == "14":
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("no checkpoint of size 14 was signed in the background")
    finally:
        signer_task.cancel()
    checkpoints.append((await audit.get("/audit/checkpoint")).json())

    report = (await audit.get("/audit/verify")).json()
    assert report == {"ok": True, "tree_size": 14, "first_bad_index": None, "root_hash": checkpoints[-1]["root_hash"],
                      "stored_root_matches": True, "checkpoints_checked": 7, "first_bad_checkpoint": None,
                      "missing_checkpoint": None, "full": True, "from_index": 0}
    # The next run starts where this one ended: nothing new, nothing recomputed.
    again = (await audit.get("/audit/verify")).json()
    assert again["ok"] and again["from_index"] == 14 and not again["full"] and again["checkpoints_checked"] == 0


async def test_impossible_requests_are_4xx_problems_naming_the_parameter(audit: AuditHarness) -> None:
    for n in range(3):
        await audit.send(INTAKE_EVENTS, "case.updated.v1", {"case_id": f"case-{n}", "agency": "a"})
    await audit.wait_for_size(3)
    cases = [
        ("/audit/proofs/inclusion", {"index": 3, "tree_size": 3}, 400, "index"),
        ("/audit/proofs/inclusion", {"index": 0, "tree_size": 4}, 400, "tree_size"),
        ("/audit/proofs/inclusion", {"index": -1}, 422, "index"),
        ("/audit/proofs/inclusion", {"index": "x"}, 422, "index"),
        ("/audit/proofs/inclusion", {"index": 0, "tree_size": 0}, 422, "tree_size"),
        ("/audit/proofs/inclusion", {}, 422, "index"),
        ("/audit/proofs/inclusion", {"index": 10**30}, 422, "index"),
        ("/audit/proofs/consistency", {"first": 3, "second": 2}, 400, "first"),
        ("/audit/proofs/consistency", {"first": 0, "second": 2}, 400, "first"),
        ("/audit/proofs/consistency", {"first": 1, "second": 9}, 400, "second"),
        ("/audit/entries", {"since": "yesterday"}, 422, "since"),
        ("/audit/entries", {"until": "2026-13-45"}, 422, "until"),
        ("/audit/entries", {"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, 400, "since"),
        ("/audit/entries", {"limit": 501}, 422, "limit"),
        ("/audit/entries", {"limit": 0}, 422, "limit"),
        ("/audit/entries", {"cursor": "abc"}, 422, "cursor"),
        ("/audit/entries", {"case_id": "has space"}, 422, "case_id"),
        ("/audit/entries", {"action": "x" * 300}, 422, "action"),
    ]
    for path, params, status, name in cases:
        response = await audit.get(path, **params)
        assert response.status_code == status, (path, params, response.text)
        assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
        problem = response.json()
        assert any(name in err["loc"] for err in problem["errors"]), (path, params, problem)
    assert (await audit.get("/audit/proofs/consistency", first=2, second=2)).json()["path"] == []
    assert (await audit.get("/audit/proofs/consistency", first=0, second=0)).json()["path"] == []
    assert (await audit.get("/audit/proofs/inclusion", index=2)).json()["tree_size"] == 3
    bad_case = await audit.client.get("/audit/cases/has%20space/access", headers=audit.headers)
    assert bad_case.status_code == 422

    # Everything but the public key needs a token with audit:read.
    for path in ("/audit/entries", "/audit/checkpoint", "/audit/verify", "/audit/cases/c-1/access",
                 "/audit/proofs/inclusion?index=0"):
        assert (await audit.client.get(path)).status_code == 401
        wrong = audit.issuer.auth_headers("c", "a", "cases:read")
        response = await audit.client.get(path, headers=wrong)
        assert response.status_code == 403 and response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert (await audit.client.get("/audit/public-key")).status_code == 200


async def test_case_access_and_consent_history(audit: AuditHarness) -> None:
    case = "case-" + "abc123" * 5 + "ab"

    async def access(agency: str, purpose: str, **details: object) -> None:
        await audit.send(AUDIT_ACCESS, "access.recorded.v1", {
            "action": "case.read", "outcome": "success", "agency": agency, "client_id": agency.replace("agy_", "cli_"),
            "acting_user": "u-1", "purpose": purpose, "resource_type": "Case", "resource_id": case,
            "case_id": case, "details": {"data_categories": ["identity"], **details}}, key=case)

    await audit.send(INTAKE_EVENTS, "case.registered.v1", {"case_id": case, "agency": "iom"}, key=case)
    await audit.send(INTAKE_EVENTS, "consent.granted.v1", {"case_id": case, "agency": "iom", "consent_id": "c1",
                                                           "consent_version": 1}, key=case)
    await access("agy_unhcr", "referral")  # consent in force from the log: c1 v1
    await audit.send(INTAKE_EVENTS, "consent.granted.v1", {"case_id": case, "agency": "iom", "consent_id": "c2",
                                                           "consent_version": 2}, key=case)
    await access("agy_unhcr", "referral", consent_id="c2", consent_version=2)  # recorded by the reader
    await audit.send(INTAKE_EVENTS, "consent.withdrawn.v1", {"case_id": case, "agency": "iom", "consent_id": "c2",
                                                             "consent_version": 2, "reason_code": "by_person"},
                     key=case)
    await audit.send(INTAKE_EVENTS, "consent.withdrawn.v1", {"case_id": case, "agency": "iom", "consent_id": "c1",
                                                             "consent_version": 1}, key=case)
    await audit.send(AUDIT_ACCESS, "access.recorded.v1", {
        "action": "access.denied", "outcome": "denied", "agency": "agy_ngo_z", "purpose": "referral",
        "case_id": case, "resource_type": "Case", "resource_id": case}, key=case)
    await audit.send(INTAKE_EVENTS, "consent.overridden.v1", {
        "case_id": case, "agency": "iom", "recipient_agency": "agy_clinic_1", "approver": "u-9",
        "acting_user": "u-1"}, key=case)
    await access("agy_clinic_1", "case_management")
    await audit.send(REFERRAL_EVENTS, "referral.requested.v1", {"case_id": case, "referral_id": "r1"},
                     source="/refnet/referral", key=case)
    await audit.wait_for_size(11)

    history = (await audit.get(f"/audit/cases/{case}/access")).json()
    assert history["case_id"] == case
    items = history["items"]
    assert [(i["agency"], i["action"], i["purpose"]) for i in items] == [
        ("agy_unhcr", "case.read", "referral"), ("agy_unhcr", "case.read", "referral"),
        ("agy_ngo_z", "access.denied", "referral"), ("agy_clinic_1", "case.read", "case_management")]
    assert [i["consent"] for i in items] == [
        {"consent_id": "c1", "consent_version": 1, "basis": "log"},
        {"consent_id": "c2", "consent_version": 2, "basis": "recorded"},
        {"consent_id": None, "consent_version": None, "basis": "none"},
        {"consent_id": None, "consent_version": None, "basis": "override"},
    ]
    assert items[0]["data_categories"] == ["identity"] and items[0]["acting_user"] == "u-1"
    assert items[2]["outcome"] == "denied"

    consents = (await audit.get(f"/audit/cases/{case}/consents")).json()["items"]
    assert [(c["action"], c["resource_id"]) for c in consents] == [
        ("consent.grant", "c1"), ("consent.grant", "c2"), ("consent.withdraw", "c2"), ("consent.withdraw", "c1"),
        ("consent.override", None)]
    assert consents[4]["details"]["recipient_agency"] == "agy_clinic_1"
    assert (await audit.get("/audit/cases/nobody/access")).json() == {"case_id": "nobody", "items": [],
                                                                     "next_cursor": None}
