"""The sign-in pages' refusals: a page for a browser, an RFC 9457 problem for any other caller -- as every RefNet
error is -- and both declared in the OpenAPI document."""

from __future__ import annotations

import pytest

from tests.integration.registry.conftest import Registry

BAD_HINTS = ["-1", "../..", "9999999999999999999"]


@pytest.mark.parametrize("hint", BAD_HINTS)
async def test_a_bad_logout_request_is_a_problem_for_a_client(registry: Registry, hint: str) -> None:
    response = await registry.http.get("/oauth/end_session", params={"id_token_hint": hint})
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "urn:refnet:problem:invalid-request" and problem["status"] == 400
    assert hint not in problem["detail"]


@pytest.mark.parametrize("hint", BAD_HINTS)
async def test_a_bad_logout_request_is_a_page_for_a_browser(registry: Registry, hint: str) -> None:
    response = await registry.http.get("/oauth/end_session", params={"id_token_hint": hint},
                                       headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/html")
    assert "The sign-in request is not valid" in response.text


async def test_the_html_routes_declare_their_problem_answers(registry: Registry) -> None:
    document = (await registry.http.get("/openapi.json")).json()
    for path, method, status in [("/oauth/end_session", "get", "400"), ("/oauth/authorize", "get", "400"),
                                 ("/staff/enrol", "get", "422"), ("/staff/enrol", "post", "400"),
                                 ("/oauth/federated/callback", "get", "400")]:
        content = document["paths"][path][method]["responses"][status]["content"]
        assert {"text/html", "application/problem+json"} <= set(content), (path, method, status)


async def test_a_federated_callback_that_did_not_start_here_is_a_problem_for_a_client(registry: Registry) -> None:
    client = await registry.http.get("/oauth/federated/callback", params={"state": "-1", "code": "x"})
    assert client.status_code == 400 and client.headers["content-type"] == "application/problem+json"
    assert client.json()["type"] == "urn:refnet:problem:sign-in-not-started-here"
    browser = await registry.http.get("/oauth/federated/callback", params={"state": "-1", "code": "x"},
                                      headers={"Accept": "text/html"})
    assert browser.status_code == 400 and browser.headers["content-type"].startswith("text/html")
