"""Directory writes: only the owning agency may change or withdraw its services; bad input is 422 naming the
field; every change is an event on refnet.registry.events keyed by the agency."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.registry.conftest import Registry


def body(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "taxonomy": "shelter", "names": {"en": "Harbour Shelter", "fr": "Refuge du Port"},
        "descriptions": {"en": "Short-stay shelter for women and children"}, "countries": ["GR"],
        "languages": ["en", "el"], "accepts_children": True,
        "capacity": {"available": 4, "total": 12, "status": "accepting"},
        "eligibility": {"min_age": 0, "max_age": 120, "genders": ["feminine"]},
        "contact": {"phone": "+30 210 000 0000", "url": "https://shelter.example.org"},
        "locations": [{"name": "Piraeus", "city": "Piraeus", "country": "GR", "latitude": 37.94,
                       "longitude": 23.64}],
    }
    data.update(overrides)
    return data


async def owned_service(registry: Registry) -> tuple[dict[str, str], dict[str, str], str]:
    owner = await registry.agency(["registry:read", "registry:write"])
    other = await registry.agency(["registry:read", "registry:write"])
    owner_headers, other_headers = await registry.headers(owner), await registry.headers(other)
    created = await registry.http.post("/services", json=body(), headers=owner_headers)
    assert created.status_code == 201, created.text
    return owner_headers, other_headers, created.json()["id"]


async def test_publishing_a_service_emits_service_published(registry: Registry) -> None:
    owner = await registry.agency(["registry:read", "registry:write"])
    created = await registry.http.post("/services", json=body(), headers=await registry.headers(owner))
    assert created.status_code == 201, created.text
    service = created.json()
    assert service["agency_id"] == owner.agency_id and service["capacity"]["available"] == 4
    [event] = await registry.outbox("service.published.v1", subject=service["id"])
    assert event["topic"] == "refnet.registry.events" and event["aggregateid"] == owner.agency_id
    assert event["type"] == "org.refnet.service.published.v1"
    data = event["payload"]["data"]
    assert data == {
        "service_id": service["id"], "agency_id": owner.agency_id, "taxonomy": "shelter", "status": "active",
        "countries": ["GR"], "languages": ["en", "el"], "accepts_children": True,
        "capacity": {"available": 4, "total": 12, "status": "accepting"},
        "location": {"lat": 37.94, "lon": 23.64},
    }


async def test_another_agency_cannot_patch_delete_or_change_capacity(registry: Registry) -> None:
    owner, other, service_id = await owned_service(registry)
    http = registry.http
    for response in (
        await http.patch(f"/services/{service_id}", json={"hours": "24/7"}, headers=other),
        await http.delete(f"/services/{service_id}", headers=other),
        await http.put(f"/services/{service_id}/capacity", json={"available": 0, "total": 1, "status": "full"},
                       headers=other),
    ):
        assert response.status_code == 404, response.text
        assert response.headers["content-type"] == "application/problem+json"
    unchanged = (await http.get(f"/services/{service_id}", headers=owner)).json()
    assert unchanged["hours"] is None and unchanged["capacity"]["available"] == 4


async def test_owner_updates_capacity_and_withdraws(registry: Registry) -> None:
    owner, _, service_id = await owned_service(registry)
    http = registry.http
    patched = await http.patch(f"/services/{service_id}", json={"hours": "Mon-Fri 9-17",
                                                                "names": {"en": "Harbour House"}}, headers=owner)
    assert patched.status_code == 200, patched.text
    assert patched.json()["name"] == "Harbour House" and patched.json()["hours"] == "Mon-Fri 9-17"
    full = await http.put(f"/services/{service_id}/capacity",
                          json={"available": 0, "total": 12, "status": "full"}, headers=owner)
    assert full.status_code == 200 and full.json()["capacity"] == {"available": 0, "total": 12, "status": "full"}
    [capacity] = await registry.outbox("service.capacity_changed.v1", subject=service_id)
    assert capacity["payload"]["data"]["capacity"]["status"] == "full"
    assert await registry.outbox("service.updated.v1", subject=service_id)

    assert (await http.delete(f"/services/{service_id}", headers=owner)).status_code == 204
    assert (await http.get(f"/services/{service_id}", headers=owner)).status_code == 404
    assert (await http.delete(f"/services/{service_id}", headers=owner)).status_code == 404
    [withdrawn] = await registry.outbox("service.withdrawn.v1", subject=service_id)
    assert withdrawn["payload"]["data"]["status"] == "withdrawn"


@pytest.mark.parametrize(
    ("overrides", "loc"),
    [
        ({"taxonomy": "spa.massage"}, ["body", "taxonomy"]),
        ({"countries": ["XX"]}, ["body", "countries", "0"]),
        ({"locations": [{"country": "GR", "latitude": 91, "longitude": 10}]}, ["body", "locations", "0", "latitude"]),
        ({"locations": [{"country": "GR", "latitude": 10, "longitude": 181}]},
         ["body", "locations", "0", "longitude"]),
        ({"capacity": {"available": 5, "total": 2, "status": "accepting"}}, ["body", "capacity", "available"]),
        ({"capacity": {"available": 1, "total": 2, "status": "open"}}, ["body", "capacity", "status"]),
        ({"names": {}}, ["body", "names"]),
        ({"names": {"english!": "x"}}, ["body", "names"]),
        ({"languages": ["not a language"]}, ["body", "languages", "0"]),
        ({"unknown_field": 1}, ["body", "unknown_field"]),
    ],
)
async def test_invalid_service_is_422_problem_naming_the_field(
    registry: Registry, overrides: dict[str, Any], loc: list[str]
) -> None:
    owner = await registry.agency(["registry:read", "registry:write"])
    response = await registry.http.post("/services", json=body(**overrides), headers=await registry.headers(owner))
    assert response.status_code == 422, response.text
    problem = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert problem["type"].endswith("validation-error")
    assert any(e["loc"] == loc for e in problem["errors"]), problem["errors"]


async def test_patch_validates_and_refuses_nulls_for_required_fields(registry: Registry) -> None:
    owner, _, service_id = await owned_service(registry)
    bad = await registry.http.patch(f"/services/{service_id}", json={"countries": ["ZZ"]}, headers=owner)
    assert bad.status_code == 422 and bad.json()["errors"][0]["loc"] == ["body", "countries", "0"]
    null = await registry.http.patch(f"/services/{service_id}", json={"taxonomy": None}, headers=owner)
    assert null.status_code == 422 and null.json()["errors"][0]["loc"] == ["body", "taxonomy"]


async def test_writing_needs_registry_write(registry: Registry) -> None:
    reader = await registry.agency(["registry:read"])
    response = await registry.http.post("/services", json=body(), headers=await registry.headers(reader))
    assert response.status_code == 403
