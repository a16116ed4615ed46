"""Hostile or malformed requests get a 4xx problem, never a 500."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.intake.conftest import Intake, agency, case_body, consent_body

ODD_BODIES: list[Any] = [[], None, "text", 42, {"person": [], "screening": {}},
                         {"person": {"given_name": "A" * 10_000}, "screening": {}}]


@pytest.mark.parametrize("body", ODD_BODIES)
async def test_odd_case_bodies(intake: Intake, body: Any) -> None:
    response = await intake.client.post("/cases", json=body,
                                        headers=intake.writer(agency()))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"


async def test_odd_paths_headers_and_queries(intake: Intake) -> None:
    owner = agency()
    created = await intake.register(owner, case_body(consent=consent_body()))
    h = intake.writer(owner, acting_user="alice")
    weird = ["%00", "x" * 500, "case-%E2%80%8B", "..%2F..%2Fetc"]
    for case_id in weird:
        for method, path, body in [
            ("GET", f"/cases/{case_id}", None), ("PATCH", f"/cases/{case_id}", {"risk_level": "low"}),
            ("POST", f"/cases/{case_id}/erase", None), ("GET", f"/cases/{case_id}/consents", None),
            ("POST", f"/cases/{case_id}/consents", consent_body()),
            ("POST", f"/cases/{case_id}/consents/{case_id}/withdraw", {}),
            ("POST", f"/cases/{case_id}/overrides",
             {"recipient_agency": "b", "justification": "threat to life, urgent case"}),
            ("GET", f"/cases/{case_id}/overrides", None),
            ("POST", f"/cases/{case_id}/overrides/{case_id}/approval", None),
            ("POST", f"/cases/{case_id}/overrides/{case_id}/revocation", None),
        ]:
            response = await intake.client.request(method, path, json=body, headers=h)
            assert 400 <= response.status_code < 500, (method, path, response.status_code, response.text)
    for query in ("limit=0", "limit=501", "limit=x", "status=gone", "needs=x", "cursor=%00"):
        response = await intake.client.get(f"/cases?{query}", headers=h)
        assert 400 <= response.status_code < 500, (query, response.text)
    for purpose in ("", " ", "case_management,referral", "x" * 300):
        response = await intake.client.get(f"/cases/{created['id']}",
                                           headers={**intake.headers(owner), "X-Purpose": purpose})
        assert response.status_code == 400, purpose
    consent_id = "consent-%00"
    response = await intake.client.post(f"/cases/{created['id']}/consents/{consent_id}/withdraw",
                                        headers=h, content=b"not json")
    assert 400 <= response.status_code < 500
