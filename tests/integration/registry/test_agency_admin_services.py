"""Issue #21: an agency admin signed in (a person's token, `registry:write` from the role) sets the capacity of
the agency's own services; another agency's service is not found to them, and stays as it was."""

from __future__ import annotations

from tests.integration.registry.conftest import Registry
from tests.integration.registry.people_support import (
    browser,
    claims_of,
    ensure_console,
    exchange,
    new_person,
    pkce,
    sign_in,
)
from tests.integration.registry.test_directory_writes import body


async def test_an_agency_admin_sets_its_own_services_capacity_and_not_anothers(registry: Registry) -> None:
    await ensure_console(registry)
    platform = await registry.headers(await registry.agency(["admin", "registry:read"], kind="platform",
                                                            name="Operator"))
    mine = await registry.agency(["registry:read", "registry:write"])
    theirs = await registry.agency(["registry:read", "registry:write"])
    own_service = await registry.http.post("/services", json=body(), headers=await registry.headers(mine))
    their_service = await registry.http.post("/services", json=body(), headers=await registry.headers(theirs))
    assert own_service.status_code == their_service.status_code == 201
    person = await new_person(registry, platform, mine, ["agency_admin"])
    verifier, challenge = pkce()
    async with browser(registry) as http:
        code = await sign_in(http, person, challenge)
    token = (await exchange(registry, code, verifier)).json()["access_token"]
    assert "registry:write" in claims_of(token)["scope"].split()
    admin = {"Authorization": "Bearer " + token}
    capacity = {"available": 0, "total": 12, "status": "full"}
    set_ = await registry.http.put(f"/services/{own_service.json()['id']}/capacity", json=capacity, headers=admin)
    assert set_.status_code == 200, set_.text
    assert set_.json()["capacity"] == capacity
    refused = await registry.http.put(f"/services/{their_service.json()['id']}/capacity", json=capacity,
                                      headers=admin)
    assert refused.status_code == 404 and refused.json()["type"] == "urn:refnet:problem:not-found"
    unchanged = await registry.http.get(f"/services/{their_service.json()['id']}", headers=admin)
    assert unchanged.json()["capacity"] == {"available": 4, "total": 12, "status": "accepting"}
