"""Each service serves its documentation page with its own scripts (field offices are often offline), and a
query parameter an operation does not take is a 422 naming it, never silently ignored."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import pytest
from fastapi import FastAPI

from services.audit.app import create_app as audit_app
from services.intake.app import create_app as intake_app
from services.referral.app import create_app as referral_app
from services.registry.app import create_app as registry_app

APPS: dict[str, Callable[[], FastAPI]] = {"registry": registry_app, "intake": intake_app,
                                          "referral": referral_app, "audit": audit_app}


def client(service: str) -> httpx.AsyncClient:
    # No lifespan: neither the page nor the query check needs the database or the broker.
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=APPS[service]()), base_url="http://service")


@pytest.mark.parametrize("page_path", ["/docs", "/redoc"])
@pytest.mark.parametrize("service", sorted(APPS))
async def test_the_documentation_pages_load_nothing_from_elsewhere(service: str, page_path: str) -> None:
    async with client(service) as http:
        page = await http.get(page_path)
        assert page.status_code == 200
        sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert sources and all(s.startswith("/") for s in sources), sources
        for source in sources:
            asset = await http.get(source)
            assert asset.status_code == 200, source
        script = next(s for s in sources if s.endswith(".js"))
        if page_path == "/redoc":
            assert "redoc" in script and b"openapi" in (await http.get(script)).content.lower()
            return
        # Swagger UI 5 renders OpenAPI 3.1, which the services publish (4.x shows a blank error for it).
        assert re.search(rb'"5\.\d+\.\d+"', (await http.get(script)).content)


async def test_a_misspelt_filter_is_refused_and_named() -> None:
    async with client("registry") as http:
        answer = await http.get("/hsds/services", params={"taxonomy": "health"})
    assert answer.status_code == 422
    problem = answer.json()
    assert problem["type"].endswith(":validation-error")
    assert "taxonomy" in problem["detail"] and "taxonomy_term_id" in problem["detail"]
    assert problem["errors"] == [{"loc": ["query", "taxonomy"], "msg": "not a parameter of this operation"}]


async def test_declared_parameters_pass_the_check() -> None:
    async with client("registry") as http:
        answer = await http.get("/hsds/services", params={"taxonomy_term_id": "health", "page": "1"})
    # On to authentication: the query was not refused.
    assert answer.status_code == 401, answer.text


async def test_a_name_that_is_not_a_name_is_not_echoed() -> None:
    async with client("referral") as http:
        answer = await http.get("/referrals", params={"Amina Tesfay +249912345678": "x"})
    assert answer.status_code == 422
    assert "Amina" not in answer.text and "249912345678" not in answer.text
