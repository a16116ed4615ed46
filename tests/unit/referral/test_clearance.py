"""The clearance client against a fake intake, and the client-credentials token source against a fake
token endpoint: an answer about consent, or ClearanceUnavailable -- never a guess."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from services.referral.clearance import CaseNotFound, ClearanceRequest, ClearanceUnavailable, HttpClearanceClient
from shared.client_auth import ASSERTION_TYPE, ClientCredentials

REQUEST = ClearanceRequest(case_id="case-1", requesting_agency="agy_a", to_agency="agy_b", pathway="service",
                           data_categories=["identity"])
FACTS = {"is_minor": True, "bia_completed": True, "bid_completed": False, "fear_of_return": False,
         "status": "active"}


def intake(status: int = 200, body: Any = None, seen: list[httpx.Request] | None = None) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        if isinstance(body, bytes):
            return httpx.Response(status, content=body)
        return httpx.Response(status, json=body)

    return httpx.MockTransport(handle)


async def test_an_answer_is_read_and_the_request_names_the_owner() -> None:
    seen: list[httpx.Request] = []
    answer = {"permitted": True, "reason": None, "consent_id": "cns-1", "consent_version": 3, "facts": FACTS,
              "override_id": None}
    client = HttpClearanceClient("http://intake", "tok", transport=intake(200, answer, seen))
    result = await client.clear(REQUEST)
    await client.aclose()
    assert result.permitted and result.consent_id == "cns-1" and result.consent_version == 3
    assert result.facts.is_minor and not result.facts.bid_completed
    assert seen[0].url.path == "/internal/clearance"
    assert seen[0].headers["authorization"] == "Bearer tok"
    assert json.loads(seen[0].content) == {"case_id": "case-1", "from_agency": "agy_a", "to_agency": "agy_b",
                                           "purpose": "referral", "data_categories": ["identity"],
                                           "pathway": "service"}


async def test_unknown_age_is_a_presumed_child_not_an_outage() -> None:
    """docs/domain.md rule 4: an intake answering ``is_minor: null`` (no birth date, no estimate) is a child case
    to the guards -- never ClearanceUnavailable (a 503 for ever)."""
    answer = {"permitted": True, "consent_id": "cns-1", "consent_version": 1, "facts": FACTS | {"is_minor": None}}
    client = HttpClearanceClient("http://intake", "tok", transport=intake(200, answer))
    result = await client.clear(REQUEST)
    await client.aclose()
    assert result.facts.is_minor is True


async def test_unknown_case_is_case_not_found() -> None:
    client = HttpClearanceClient("http://intake", "tok", transport=intake(404, {"type": "x"}))
    with pytest.raises(CaseNotFound):
        await client.clear(REQUEST)


@pytest.mark.parametrize(("status", "body"), [(500, {}), (503, {}), (403, {}), (422, {}), (200, b"not json"),
                                              (200, {"permitted": "perhaps"})])
async def test_anything_but_an_answer_is_unavailable(status: int, body: Any) -> None:
    client = HttpClearanceClient("http://intake", "tok", transport=intake(status, body))
    with pytest.raises(ClearanceUnavailable):
        await client.clear(REQUEST)


async def test_unreachable_intake_is_unavailable() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    client = HttpClearanceClient("http://intake", "tok", transport=httpx.MockTransport(down))
    with pytest.raises(ClearanceUnavailable):
        await client.clear(REQUEST)


def credentials(key: ECKey) -> dict[str, Any]:
    return {"client_id": "cli_referral_service", "token_url": "http://registry/oauth/token",
            "private_key_pem": key.as_pem(private=True).decode()}


async def test_client_credentials_with_a_signed_assertion_cached_and_renewed_on_401() -> None:
    key = ECKey.generate_key("P-256", private=True)
    issued: list[dict[str, list[str]]] = []

    def registry(request: httpx.Request) -> httpx.Response:
        form = parse_qs(request.content.decode())
        issued.append(form)
        return httpx.Response(200, json={"access_token": f"token-{len(issued)}", "expires_in": 900,
                                         "token_type": "Bearer"})

    tokens = ClientCredentials(credentials(key), scope="cases:clearance", transport=httpx.MockTransport(registry))
    assert await tokens.token() == "token-1"
    assert await tokens.token() == "token-1"  # cached
    form = issued[0]
    assert form["grant_type"] == ["client_credentials"] and form["scope"] == ["cases:clearance"]
    assert form["client_assertion_type"] == [ASSERTION_TYPE]
    claims = jwt.decode(form["client_assertion"][0], key, algorithms=["ES256"]).claims
    assert claims["iss"] == claims["sub"] == "cli_referral_service"
    assert claims["aud"] == "http://registry/oauth/token" and claims["exp"] > claims["iat"]

    # intake refuses the cached token once (revoked): one fresh token, one retry
    answers = iter([httpx.Response(401), httpx.Response(200, json={"permitted": False, "reason": "consent-missing",
                                                                   "facts": FACTS})])
    seen: list[str] = []

    def intake_once_401(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        return next(answers)

    client = HttpClearanceClient("http://intake", tokens, transport=httpx.MockTransport(intake_once_401))
    result = await client.clear(REQUEST)
    await client.aclose()
    assert not result.permitted and result.reason == "consent-missing"
    assert seen == ["Bearer token-1", "Bearer token-2"]


async def test_token_endpoint_down_makes_clearance_unavailable() -> None:
    def registry(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503)

    tokens = ClientCredentials(credentials(ECKey.generate_key("P-256", private=True)), scope="cases:clearance",
                               transport=httpx.MockTransport(registry))
    client = HttpClearanceClient("http://intake", tokens, transport=intake(200, {}))
    with pytest.raises(ClearanceUnavailable):
        await client.clear(REQUEST)
    await client.aclose()
