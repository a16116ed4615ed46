"""shared.auth and people's tokens (issue 20): the person a verified token names is the acting user, a header
may not contradict it, and a system's token keeps X-Acting-User as what that system asserts."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI

from shared.auth import Principal, require_scopes
from shared.errors import PROBLEM_TYPE_PREFIX, install_problem_handlers
from tests.support.issuer import CONSOLE_CLIENT, LocalIssuer, local_issuer_fixture, new_person

issuer = local_issuer_fixture()


@pytest.fixture
async def client(issuer: LocalIssuer) -> Any:
    app = FastAPI()
    install_problem_handlers(app)
    validator = issuer.validator()
    app.state.token_validator = validator

    @app.get("/whoami")
    async def whoami(principal: Annotated[Principal, Depends(require_scopes("cases:read"))]) -> dict[str, Any]:
        return {"client_id": principal.client_id, "agency": principal.agency_id, "person": principal.person,
                "acting_user": principal.acting_user, "attested_by": principal.attested_by,
                "roles": sorted(principal.roles), "amr": list(principal.amr), "acr": principal.acr,
                "scopes": sorted(principal.scopes)}

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc.test") as http:
        yield http
    await validator.aclose()


def _slug(response: httpx.Response) -> str:
    return str(response.json()["type"]).removeprefix(PROBLEM_TYPE_PREFIX)


async def test_a_persons_token_names_the_person_as_acting_user(client: httpx.AsyncClient, issuer: LocalIssuer
                                                               ) -> None:
    person = new_person()
    response = await client.get("/whoami", headers=issuer.person_headers(person, "agy_one", ("supervisor",)))
    assert response.status_code == 200, response.text
    me = response.json()
    assert me["person"] == me["acting_user"] == person
    assert me["client_id"] == CONSOLE_CLIENT and me["agency"] == "agy_one"
    assert me["attested_by"] == "token"
    assert me["roles"] == ["supervisor"] and me["amr"] == ["pwd", "otp"] and me["acr"] == "urn:refnet:acr:mfa"
    assert "overrides:approve" in me["scopes"]


async def test_a_header_repeating_the_person_is_fine(client: httpx.AsyncClient, issuer: LocalIssuer) -> None:
    person = new_person()
    response = await client.get("/whoami", headers=issuer.person_headers(person, acting_user=person))
    assert response.status_code == 200, response.text
    assert response.json()["acting_user"] == person


async def test_a_header_contradicting_the_persons_token_is_refused(client: httpx.AsyncClient,
                                                                   issuer: LocalIssuer) -> None:
    person = new_person()
    for other in ("supervisor.2", new_person(), person.upper()):
        response = await client.get("/whoami", headers=issuer.person_headers(person, acting_user=other))
        assert response.status_code == 403, response.text
        assert _slug(response) == "acting-user-contradicts-token"
        assert other not in response.text and person not in response.text  # no ids echoed


async def test_a_systems_token_keeps_x_acting_user_as_asserted(client: httpx.AsyncClient, issuer: LocalIssuer
                                                               ) -> None:
    # Roles in a system's token mean nothing: roles are people's.
    headers = issuer.auth_headers("cli_iom", "agy_iom", "cases:read", acting_user="caseworker.1",
                                  extra_claims={"roles": ["supervisor"]})
    me = (await client.get("/whoami", headers=headers)).json()
    assert (me["client_id"], me["person"], me["acting_user"], me["attested_by"], me["roles"]) == (
        "cli_iom", None, "caseworker.1", "system", [])
    anonymous = (await client.get("/whoami", headers=issuer.auth_headers("cli_iom", "agy_iom", "cases:read"))).json()
    assert (anonymous["acting_user"], anonymous["attested_by"]) == (None, None)


@pytest.mark.parametrize(("claims", "why"), [
    ({"roles": ["superuser"]}, "a role RefNet does not know"),
    ({"roles": "supervisor"}, "roles not a list"),
    ({"roles": ["supervisor", 1]}, "roles not strings"),
    ({"amr": "otp"}, "amr not a list"),
    ({"acr": 2}, "acr not a string"),
    ({"iat": None}, "no iat"),
])
async def test_malformed_person_claims_are_refused(client: httpx.AsyncClient, issuer: LocalIssuer,
                                                   claims: dict[str, Any], why: str) -> None:
    token = issuer.mint_person(extra_claims=claims)
    response = await client.get("/whoami", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401, why
    assert _slug(response) == "invalid-token"


async def test_a_long_lived_persons_token_is_refused(client: httpx.AsyncClient, issuer: LocalIssuer) -> None:
    ok = await client.get("/whoami", headers=issuer.person_headers(exp_in=600))
    assert ok.status_code == 200, ok.text
    response = await client.get("/whoami", headers=issuer.person_headers(exp_in=3600))
    assert response.status_code == 401 and _slug(response) == "invalid-token"


async def test_a_person_subject_that_is_no_id_is_refused(client: httpx.AsyncClient, issuer: LocalIssuer) -> None:
    response = await client.get("/whoami", headers=issuer.person_headers("Example Person"))
    assert response.status_code == 401 and _slug(response) == "invalid-token"


async def test_a_persons_token_needs_the_scope_its_route_needs(client: httpx.AsyncClient, issuer: LocalIssuer
                                                               ) -> None:
    response = await client.get("/whoami", headers=issuer.person_headers(roles=("agency_admin",)))
    assert response.status_code == 403 and _slug(response) == "insufficient-scope"
