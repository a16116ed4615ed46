"""Directory search: each filter alone, distance ordering, languages, pagination, HSDS output."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.integration.registry.conftest import Client, Registry, make_settings, serve

ROME = (41.9028, 12.4964)


def service(key: str, taxonomy: str, country: str, languages: list[str], children: bool,
            capacity: tuple[int, int, str], point: tuple[float, float], names: dict[str, str],
            description: str = "") -> dict[str, Any]:
    return {
        "taxonomy": taxonomy, "names": names, "descriptions": {"en": description or f"Service {key}"},
        "countries": [country], "languages": languages, "accepts_children": children,
        "capacity": {"available": capacity[0], "total": capacity[1], "status": capacity[2]},
        "locations": [{"name": key, "city": key, "country": country, "latitude": point[0], "longitude": point[1]}],
    }


DATASET = {
    "A": service("A", "shelter", "IT", ["it", "en"], True, (5, 10, "accepting"), ROME,
                 {"en": "Safe House Rome", "it": "Casa Sicura Roma"}),
    "B": service("B", "health.medical", "IT", ["en", "ar"], False, (0, 20, "full"), (38.1157, 13.3615),
                 {"en": "Palermo Migrant Clinic"}),
    "C": service("C", "health.srh", "GR", ["el", "en", "fr"], True, (3, 5, "accepting"), (37.9838, 23.7275),
                 {"en": "Athens Women's Health", "fr": "Santé des femmes Athènes"}),
    "D": service("D", "legal.counselling", "IT", ["it"], False, (0, 0, "closed"), (40.8518, 14.2681),
                 {"en": "Naples Legal Desk"}),
    "E": service("E", "mhpss", "NE", ["fr", "ha"], True, (10, 10, "accepting"), (13.5116, 2.1254),
                 {"en": "Niamey Listening Centre", "fr": "Centre d'écoute de Niamey"},
                 "Psychosocial support and trauma counselling"),
}


class Directory:
    def __init__(self, registry: Registry, reader: dict[str, str], ids: dict[str, str]) -> None:
        self.registry, self.reader, self.ids = registry, reader, ids
        self.keys = {v: k for k, v in ids.items()}

    async def search(self, **params: Any) -> list[str]:
        response = await self.registry.http.get("/services", params=params, headers=self.reader)
        assert response.status_code == 200, response.text
        return [self.keys[item["id"]] for item in response.json()["items"]]


@pytest.fixture(scope="module")
async def directory(new_database: Callable[[str], str]) -> AsyncIterator[Directory]:
    async for registry in serve(make_settings(new_database("registry_dir"))):
        provider: Client = await registry.agency(["registry:read", "registry:write"])
        writer = await registry.headers(provider)
        ids = {}
        for key, body in DATASET.items():
            created = await registry.http.post("/services", json=body, headers=writer)
            assert created.status_code == 201, created.text
            ids[key] = created.json()["id"]
        yield Directory(registry, writer, ids)


async def test_without_filters_every_service_is_listed(directory: Directory) -> None:
    assert sorted(await directory.search()) == ["A", "B", "C", "D", "E"]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"taxonomy": "health"}, ["B", "C"]),
        ({"taxonomy": "health.srh"}, ["C"]),
        ({"taxonomy": "shelter"}, ["A"]),
        ({"country": "IT"}, ["A", "B", "D"]),
        ({"country": "gr"}, ["C"]),
        ({"language": "fr"}, ["C", "E"]),
        ({"accepts_children": "true"}, ["A", "C", "E"]),
        ({"accepts_children": "false"}, ["B", "D"]),
        ({"accepting": "true"}, ["A", "C", "E"]),
        ({"q": "trauma"}, ["E"]),
        ({"q": "casa sicura"}, ["A"]),
        ({"q": "100%_"}, []),
        ({"q": "fr"}, []),  # a language code is not text
        ({"country": "IT", "accepting": "true"}, ["A"]),
    ],
    ids=lambda v: str(v),
)
async def test_each_search_filter(directory: Directory, params: dict[str, str], expected: list[str]) -> None:
    assert sorted(await directory.search(**params)) == expected


async def test_near_orders_by_distance_and_radius_cuts_off(directory: Directory) -> None:
    near = f"{ROME[0]},{ROME[1]}"
    assert await directory.search(near=near) == ["A", "D", "B", "C", "E"]
    assert await directory.search(near=near, radius_km=300) == ["A", "D"]
    response = await directory.registry.http.get("/services", params={"near": near, "radius_km": 300},
                                                 headers=directory.reader)
    distances = [item["distance_km"] for item in response.json()["items"]]
    assert distances[0] == pytest.approx(0, abs=0.01)
    assert distances[1] == pytest.approx(189, abs=5)  # Rome -> Naples


async def test_accept_language_picks_the_name_with_english_fallback(directory: Directory) -> None:
    http, reader = directory.registry.http, directory.reader
    italian = await http.get(f"/services/{directory.ids['A']}",
                             headers={**reader, "Accept-Language": "it-IT, en;q=0.5"})
    assert italian.json()["name"] == "Casa Sicura Roma" and italian.json()["language"] == "it"
    assert italian.headers["content-language"] == "it"
    fallback = await http.get(f"/services/{directory.ids['B']}", headers={**reader, "Accept-Language": "fr"})
    assert fallback.json()["name"] == "Palermo Migrant Clinic" and fallback.json()["language"] == "en"
    french = await http.get(f"/services/{directory.ids['E']}", headers={**reader, "Accept-Language": "fr"})
    assert french.json()["name"] == "Centre d'écoute de Niamey"
    assert french.json()["taxonomy_label"] == "Santé mentale et soutien psychosocial"


async def test_pagination_follows_next_cursor(directory: Directory) -> None:
    http, reader = directory.registry.http, directory.reader
    first = (await http.get("/services", params={"limit": 3}, headers=reader)).json()
    assert len(first["items"]) == 3 and first["next_cursor"]
    second = (await http.get("/services", params={"limit": 3, "cursor": first["next_cursor"]},
                             headers=reader)).json()
    assert len(second["items"]) == 2 and second["next_cursor"] is None
    seen = {i["id"] for i in first["items"]} | {i["id"] for i in second["items"]}
    assert seen == set(directory.ids.values())


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"taxonomy": "spa"}, "taxonomy"),
        ({"country": "XX"}, "country"),
        ({"near": "91,10"}, "near"),
        ({"near": "rome"}, "near"),
        ({"radius_km": "10"}, "query"),
        ({"limit": "0"}, "limit"),
        ({"cursor": "bogus!"}, "cursor"),
        ({"accepting": "maybe"}, "accepting"),
    ],
)
async def test_bad_search_parameters_are_422_naming_the_field(
    directory: Directory, params: dict[str, str], field: str
) -> None:
    response = await directory.registry.http.get("/services", params=params, headers=directory.reader)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert any(field in e["loc"] for e in response.json()["errors"]), response.json()


async def test_hsds_endpoint_answers_in_hsds_3_shape(directory: Directory) -> None:
    response = await directory.registry.http.get("/hsds/services", params={"per_page": 2},
                                                 headers=directory.reader)
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["total_items"] == 5 and page["total_pages"] == 3 and page["size"] == 2
    assert page["first_page"] is True and page["last_page"] is False
    item = page["contents"][0]
    for key in ("id", "organization_id", "name", "status", "service_at_locations", "capacities", "attributes",
                "languages", "organization"):
        assert key in item
    location = item["service_at_locations"][0]["location"]
    assert location["latitude"] is not None and location["addresses"][0]["country"]
    assert item["attributes"][0]["taxonomy_term"]["code"] in {s["taxonomy"] for s in DATASET.values()}
    health = (await directory.registry.http.get("/hsds/services", params={"taxonomy_term_id": "health"},
                                                headers=directory.reader)).json()
    assert health["total_items"] == 2
    one = await directory.registry.http.get(f"/hsds/services/{item['id']}", headers=directory.reader)
    assert one.status_code == 200 and one.json()["organization"]["id"] == item["organization_id"]


async def test_taxonomy_lists_every_code(directory: Directory) -> None:
    response = await directory.registry.http.get("/taxonomy", headers=directory.reader)
    codes = [item["code"] for item in response.json()["items"]]
    assert "protection.rsd" in codes and "child_protection.bia_bid" in codes and len(codes) == 20


async def test_search_needs_registry_read(directory: Directory) -> None:
    assert (await directory.registry.http.get("/services")).status_code == 401


async def test_near_searches_follow_every_change_of_a_service(directory: Directory) -> None:
    """A near + taxonomy + accepting search reads each location's copy of its service's taxonomy, capacity
    and status (migration registry_0004): every way of changing them must show in the next search."""
    http, writer = directory.registry.http, directory.reader
    tunis = (36.8065, 10.1815)
    body = service("F", "shelter", "TN", ["ar", "fr"], True, (2, 4, "accepting"), tunis, {"en": "Tunis Shelter"})
    created = await http.post("/services", json=body, headers=writer)
    assert created.status_code == 201, created.text
    service_id = created.json()["id"]
    directory.keys[service_id] = "F"

    async def found(**params: Any) -> bool:
        near = {"near": f"{tunis[0]},{tunis[1]}", "radius_km": 50, **params}
        return "F" in await directory.search(**near)

    assert await found(taxonomy="shelter", accepting="true")
    full = await http.put(f"/services/{service_id}/capacity", json={"available": 0, "total": 4, "status": "full"},
                          headers=writer)
    assert full.status_code == 200, full.text
    assert not await found(taxonomy="shelter", accepting="true")
    assert await found(taxonomy="shelter", accepting="false")
    reopened = await http.put(f"/services/{service_id}/capacity",
                              json={"available": 1, "total": 4, "status": "accepting"}, headers=writer)
    assert reopened.status_code == 200, reopened.text
    assert await found(taxonomy="shelter", accepting="true")
    retagged = await http.patch(f"/services/{service_id}", json={"taxonomy": "health.medical"}, headers=writer)
    assert retagged.status_code == 200, retagged.text
    assert not await found(taxonomy="shelter")
    assert await found(taxonomy="health", accepting="true") and await found(taxonomy="health.medical")
    moved = await http.patch(f"/services/{service_id}", headers=writer, json={"locations": [
        {"name": "F", "city": "Sfax", "country": "TN", "latitude": 34.7406, "longitude": 10.7603}]})
    assert moved.status_code == 200, moved.text
    assert not await found(taxonomy="health")
    sfax = await directory.search(near="34.7406,10.7603", radius_km=10, taxonomy="health", accepting="true")
    assert sfax == ["F"]
    assert (await http.delete(f"/services/{service_id}", headers=writer)).status_code == 204
    assert await directory.search(near="34.7406,10.7603", radius_km=10, taxonomy="health") == []
