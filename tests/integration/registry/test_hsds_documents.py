"""The registry's ``/hsds/...`` answers on the demo directory validate against Open Referral's published HSDS 3.0
schemas (vendored in tests/data/hsds with their licence), with JSON Schema Draft 2020-12 -- the draft HSDS 3.0
names -- and its format checker (uuid, uri, email, date-time, ...): every id is a UUID, derived from RefNet's
own id (services/registry/hsds_ids.py), and the HSDS routes find things by it."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator, FormatChecker
from pydantic import AnyUrl, TypeAdapter, ValidationError

from deploy.seed import demo_services, seed
from services.registry.hsds_ids import hsds_id
from shared.client_auth import request_token
from shared.migrations import upgrade
from tests.integration.registry.conftest import ISSUER, make_settings, serve

SCHEMAS = Path(__file__).resolve().parents[2] / "data" / "hsds"


# The draft's own checker (``uuid`` included: HSDS declares every id a UUID), with the two formats HSDS uses
# that it checks only when optional packages are installed (rfc3987, rfc3339-validator): an absolute URI, an
# RFC 3339 date-time (with its offset).
FORMATS = FormatChecker(list(Draft202012Validator.FORMAT_CHECKER.checkers))
assert "uuid" in FORMATS.checkers


@FORMATS.checks("uri", raises=ValidationError)
def _uri(value: object) -> bool:
    return not isinstance(value, str) or bool(TypeAdapter(AnyUrl).validate_python(value))


@FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    return not isinstance(value, str) or (
        "T" in value.upper() and datetime.fromisoformat(value).tzinfo is not None)


def hsds(service_id: str) -> str:
    """A service's HSDS id, as /hsds/... gives it."""
    return str(hsds_id("service", service_id))


def validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / name).read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FORMATS)


SERVICE = validator("service.json")
SERVICE_LIST = validator("service_list.json")


def violations(checker: Draft202012Validator, document: Any, where: str) -> list[str]:
    """Each violation as "<property path, indices as []> <keyword> (<where>: <message>)"."""
    return [f"{'/'.join('[]' if isinstance(p, int) else p for p in e.absolute_path)} {e.validator} "
            f"({where}: {e.message})" for e in checker.iter_errors(document)]


@pytest.fixture(scope="module")
async def demo(new_database: Callable[[str], str], tmp_path_factory: pytest.TempPathFactory,
               ) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    """A registry holding the directory `make run` seeds, and a demo agency's bearer header."""
    url = new_database("registry_hsds")
    await asyncio.to_thread(upgrade, "registry", url)
    credentials = tmp_path_factory.mktemp("hsds-credentials")
    await seed(url, credentials, ISSUER + "/oauth/token")
    async for registry in serve(make_settings(url)):
        token, _ = await request_token(registry.http, json.loads((credentials / "iom.json").read_text()), "")
        yield registry.http, {"Authorization": f"Bearer {token}"}


async def test_every_hsds_answer_on_the_demo_directory_is_valid_hsds_3(
    demo: tuple[httpx.AsyncClient, dict[str, str]],
) -> None:
    http, headers = demo
    found: list[str] = []
    per_page, page, seen = 50, 1, 0
    while True:
        answer = await http.get("/hsds/services", params={"page": page, "per_page": per_page}, headers=headers)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        # The HSDS 3.0 API's page envelope (openapi.json, components/schemas/Page), each item a service_list.
        assert set(body) == {"total_items", "total_pages", "page_number", "size", "first_page", "last_page",
                             "empty", "contents"}
        assert body["page_number"] == page and body["size"] == len(body["contents"])
        for index, item in enumerate(body["contents"]):
            found += violations(SERVICE_LIST, item, f"/hsds/services?page={page} contents/{index}")
        seen += body["size"]
        if body["last_page"]:
            break
        page += 1
    ids = [service_id for service_id, _agency, _body in demo_services()]
    assert seen == body["total_items"] == len(ids)
    for service_id in ids:
        answer = await http.get(f"/hsds/services/{service_id}", headers=headers)
        assert answer.status_code == 200, answer.text
        found += violations(SERVICE, answer.json(), f"/hsds/services/{service_id}")
        # Each service stored its HSDS id on insert: the id it is shown with finds it.
        again = await http.get(f"/hsds/services/{answer.json()['id']}", headers=headers)
        assert again.status_code == 200 and again.json() == answer.json(), again.text
    kinds = Counter(violation.split(" (")[0] for violation in found)
    assert not found, f"{len(found)} HSDS 3.0 violations, by kind:\n" + "\n".join(
        f"{n:4} {kind}" for kind, n in kinds.most_common()) + "\nfirst:\n" + "\n".join(found[:10])


async def test_hsds_query_parameters_filter_as_the_hsds_3_api_names_them(
    demo: tuple[httpx.AsyncClient, dict[str, str]],
) -> None:
    http, headers = demo
    services = demo_services()

    async def ids(**params: Any) -> set[str]:
        answer = await http.get("/hsds/services", params={"per_page": 500, **params}, headers=headers)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["total_items"] == body["size"]
        return {item["id"] for item in body["contents"]}

    everything = await ids()
    assert everything == {hsds(service_id) for service_id, _agency, _body in services}
    clinic = {hsds(service_id) for service_id, agency, _body in services if agency == "agy_clinic"}
    assert clinic and await ids(organization_id="agy_clinic") == clinic
    assert await ids(organization_id="agy_nobody") == set()
    health = {hsds(service_id) for service_id, _agency, body in services if body.taxonomy.startswith("health")}
    assert await ids(taxonomy_term_id="refnet:health") == health == await ids(taxonomy_term_id="health")
    assert await ids(taxonomy_id="refnet") == everything
    assert await ids(taxonomy_id="another-taxonomy") == set()
    rome = {hsds(service_id) for service_id, _agency, body in services if "Rome" in body.names["en"]}
    assert rome and await ids(search="rome") == rome
    assert await ids(modified_after="2000-01-01T00:00:00Z") == everything
    assert await ids(modified_after="2999-01-01T00:00:00+02:00") == set()
    # A time without its offset is ambiguous: refused, naming the parameter.
    naive = await http.get("/hsds/services", params={"modified_after": "2026-01-01T00:00:00"}, headers=headers)
    assert naive.status_code == 422 and "modified_after" in naive.text
    # What RefNet does not implement is refused by name, not ignored as if it had filtered.
    for name in ("minimal", "full", "format"):
        refused = await http.get("/hsds/services", params={name: "true"}, headers=headers)
        assert refused.status_code == 422 and name in refused.json()["detail"], refused.text


async def test_hsds_ids_are_uuids_the_hsds_routes_find_things_by(
    demo: tuple[httpx.AsyncClient, dict[str, str]],
) -> None:
    """An HSDS consumer uses the ids it was given: the service's, the organization's, the term's and the
    taxonomy's UUIDs find what they named; RefNet's own ids keep working there, and RefNet's own API keeps
    its ids."""
    http, headers = demo
    service_id, agency_id, body = next(s for s in demo_services() if s[1] == "agy_clinic" and "." in s[2].taxonomy)

    by_refnet = await http.get(f"/hsds/services/{service_id}", headers=headers)
    assert by_refnet.status_code == 200, by_refnet.text
    document = by_refnet.json()
    assert document["id"] == hsds(service_id) and document["organization_id"] == document["organization"]["id"]
    by_uuid = await http.get(f"/hsds/services/{document['id']}", headers=headers)
    assert by_uuid.status_code == 200 and by_uuid.json() == document
    # Any spelling of the UUID (RFC 9562 compares them as numbers).
    upper = await http.get(f"/hsds/services/{document['id'].upper()}", headers=headers)
    assert upper.status_code == 200 and upper.json()["id"] == document["id"]
    assert (await http.get(f"/hsds/services/{uuid.uuid4()}", headers=headers)).status_code == 404
    # RefNet's own API: its own ids, not the HSDS ones.
    own = await http.get(f"/services/{service_id}", headers=headers)
    assert own.status_code == 200 and own.json()["id"] == service_id
    assert (await http.get(f"/services/{document['id']}", headers=headers)).status_code == 404

    async def ids(**params: Any) -> set[str]:
        answer = await http.get("/hsds/services", params={"per_page": 500, **params}, headers=headers)
        assert answer.status_code == 200, answer.text
        return {item["id"] for item in answer.json()["contents"]}

    assert await ids(organization_id=document["organization_id"]) == await ids(organization_id=agency_id)
    assert hsds(service_id) in await ids(organization_id=document["organization_id"].upper())
    assert await ids(organization_id=str(uuid.uuid4())) == set()
    term = document["attributes"][0]["taxonomy_term"]
    assert term["code"] == body.taxonomy
    assert await ids(taxonomy_term_id=term["id"]) == await ids(taxonomy_term_id=body.taxonomy)
    # A parent term's id takes in its children, as its code does.
    parent = body.taxonomy.split(".")[0]
    assert await ids(taxonomy_term_id=term["parent_id"]) == await ids(taxonomy_term_id=parent)
    assert hsds(service_id) in await ids(taxonomy_term_id=term["parent_id"])
    unknown = await http.get("/hsds/services", params={"taxonomy_term_id": str(uuid.uuid4())}, headers=headers)
    assert unknown.status_code == 422 and "taxonomy_term_id" in unknown.text
    assert await ids(taxonomy_id=term["taxonomy_id"]) == await ids()
    assert await ids(taxonomy_id=str(uuid.uuid4())) == set()


def test_hsds_ids_never_change() -> None:
    """Consumers store these ids: the namespace and the names they are derived from are fixed for ever."""
    assert str(hsds_id("service", "svc_5d2e8a0c4b1f7e93")) == "ac6db812-5a99-5847-8367-35654facd654"
    assert str(hsds_id("organization", "agy_3f9c2a1b7d4e5f60")) == "ab7b0797-c5ad-59c9-a30b-e64f6057193e"
    assert str(hsds_id("location", "loc_0a7c3e9f1b5d2486")) == "ca00605f-25d7-5389-af5e-6380625402ec"
    assert str(hsds_id("taxonomy_term", "health.medical")) == "128e238c-3d0c-5ea8-a670-4a7d8a953c38"
    assert str(hsds_id("taxonomy", "refnet")) == "a925bb90-dbe0-530b-9d80-5c43bf71a303"
