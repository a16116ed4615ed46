"""The registry's ``/hsds/...`` answers on the demo directory validate against Open Referral's published HSDS 3.0
schemas (vendored in tests/data/hsds with their licence), with JSON Schema Draft 2020-12 -- the draft HSDS 3.0
names -- and its format checker (uri, email, date-time, ...)."""

from __future__ import annotations

import asyncio
import json
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
from shared.client_auth import request_token
from shared.migrations import upgrade
from tests.integration.registry.conftest import ISSUER, make_settings, serve

SCHEMAS = Path(__file__).resolve().parents[2] / "data" / "hsds"


# The draft's own checker, with the two formats HSDS uses that it checks only when optional packages are
# installed (rfc3987, rfc3339-validator): an absolute URI, an RFC 3339 date-time (with its offset).
# ``uuid`` is left out on purpose: HSDS declares every id a UUID, RefNet's ids are not (see hsds.py).
FORMATS = FormatChecker([name for name in Draft202012Validator.FORMAT_CHECKER.checkers if name != "uuid"])


@FORMATS.checks("uri", raises=ValidationError)
def _uri(value: object) -> bool:
    return not isinstance(value, str) or bool(TypeAdapter(AnyUrl).validate_python(value))


@FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    return not isinstance(value, str) or (
        "T" in value.upper() and datetime.fromisoformat(value).tzinfo is not None)


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
    assert everything == {service_id for service_id, _agency, _body in services}
    clinic = {service_id for service_id, agency, _body in services if agency == "agy_clinic"}
    assert clinic and await ids(organization_id="agy_clinic") == clinic
    assert await ids(organization_id="agy_nobody") == set()
    health = {service_id for service_id, _agency, body in services if body.taxonomy.startswith("health")}
    assert await ids(taxonomy_term_id="refnet:health") == health == await ids(taxonomy_term_id="health")
    assert await ids(taxonomy_id="refnet") == everything
    assert await ids(taxonomy_id="another-taxonomy") == set()
    rome = {service_id for service_id, _agency, body in services if "Rome" in body.names["en"]}
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
