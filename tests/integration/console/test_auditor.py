"""The auditor's pages: a case's reads and consent history from the audit API, and the checkpoint page handing
the signed checkpoint, the log's key and an entry's inclusion proof to proof.js (verified in the browser)."""

from __future__ import annotations

import json
import re

from tests.integration.console.conftest import Console


async def test_the_auditor_sees_each_agencys_reads_and_gets_the_proof_to_verify(console: Console) -> None:
    console.network.person.roles = ["auditor"]
    console.network.person.agency = "agy_oversight"
    session = await console.sign_in()
    assert (await console.get("/", session=session)).headers["location"] == "/audit"
    assert (await console.get("/audit?case_id=case-1", session=session)).headers["location"] == "/audit/cases/case-1"
    history = await console.get("/audit/cases/case-1", session=session)
    assert history.status_code == 200
    assert "agy_iom" in history.text and "agy_unhcr" in history.text and "consent.granted" in history.text
    assert 'href="/audit/checkpoint?index=5"' in history.text
    page = await console.get("/audit/checkpoint?index=5", session=session)
    assert page.status_code == 200
    found = re.search(r'<script type="application/json" id="proof-input">(.*?)</script>', page.text, re.S)
    assert found
    given = json.loads(found.group(1))
    assert given["publicKey"] == "refnet.test/audit+00000000+AQ==" and given["index"] == 5
    assert given["treeSize"] == 8 and given["proof"] == ["ef" * 32] and given["checkpoint"]["tree_size"] == 8
    assert '<script src="/static/proof.js" defer></script>' in page.text
    assert ("GET", "/audit/proofs/inclusion?index=5&tree_size=8", None, None) in console.network.api_calls
    # The entry itself goes to the page, which hashes it instead of trusting the proof's leaf hash.
    assert ("GET", "/audit/entries?limit=1&cursor=4", None, None) in console.network.api_calls
    assert given["entry"] == {"index": 5, "action": "case.read", "agency": "agy_unhcr"}


async def test_a_caseworker_has_no_audit_page(console: Console) -> None:
    session = await console.sign_in()
    assert (await console.get("/audit/cases/case-1", session=session)).status_code == 403
