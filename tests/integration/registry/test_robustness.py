"""Hostile input never produces a 500: NUL bytes, oversized values, odd ids and headers."""

from __future__ import annotations

import pytest

from tests.integration.registry.conftest import ASSERTION_TYPE, Registry

NUL = "bad\x00value"


async def test_nul_bytes_in_bodies_queries_and_paths_are_4xx(registry: Registry) -> None:
    client = await registry.agency(["registry:read", "registry:write", "admin"])
    headers = await registry.headers(client)
    http = registry.http
    service = {"taxonomy": "shelter", "names": {"en": NUL}, "countries": ["IT"]}
    responses = [
        await http.post("/services", json=service, headers=headers),
        await http.post("/services", json={**service, "names": {"en": "ok"}, "hours": NUL}, headers=headers),
        await http.post("/services", json={**service, "names": {"en": "ok"}, "admin_areas": [NUL]},
                        headers=headers),
        await http.get("/services", params={"q": NUL}, headers=headers),
        await http.get("/services/svc%00x", headers=headers),
        await http.get("/agencies/agy%00x", headers=headers),
        await http.patch("/services/svc%00x", json={"hours": "x"}, headers=headers),
        await http.post("/agencies", json={"name": NUL, "kind": "ngo", "country": "IT", "generate_secret": True},
                        headers=headers),
    ]
    for response in responses:
        assert 400 <= response.status_code < 500, response.text
        assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    "form",
    [
        {"grant_type": "client_credentials", "client_id": NUL, "client_assertion_type": ASSERTION_TYPE,
         "client_assertion": "e30.e30.e30"},
        {"grant_type": "client_credentials", "client_id": "x" * 5000},
    ],
)
async def test_hostile_token_requests_get_oauth_errors(registry: Registry, form: dict[str, str]) -> None:
    response = await registry.http.post("/oauth/token", data=form)
    assert 400 <= response.status_code < 500 and "error" in response.json()


async def test_nul_in_assertion_claims_and_basic_credentials_is_invalid_client(registry: Registry) -> None:
    client = await registry.agency(["cases:read"])
    for form in (client.form(sub=NUL, iss=NUL), client.form(jti=NUL)):
        response = await registry.http.post("/oauth/token", data=form)
        assert response.status_code == 401 and response.json()["error"] == "invalid_client"
    basic = await registry.http.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=(NUL, NUL))
    assert basic.status_code == 401 and basic.json()["error"] == "invalid_client"
