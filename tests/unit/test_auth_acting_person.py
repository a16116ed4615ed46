"""A system may not name a RefNet person in X-Acting-User (issue 20): a RefNet person acts with their own token,
so an agency's system cannot put a person's id on an act that person never signed for."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI

from shared.auth import Principal, require_scopes
from shared.errors import PROBLEM_TYPE_PREFIX, install_problem_handlers
from tests.support.issuer import LocalIssuer, local_issuer_fixture, new_person

issuer = local_issuer_fixture()


@pytest.fixture
async def client(issuer: LocalIssuer) -> Any:
    app = FastAPI()
    install_problem_handlers(app)
    validator = issuer.validator()
    app.state.token_validator = validator

    @app.get("/whoami")
    async def whoami(principal: Annotated[Principal, Depends(require_scopes("cases:read"))]) -> dict[str, Any]:
        return {"acting_user": principal.acting_user, "attested_by": principal.attested_by}

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc.test") as http:
        yield http
    await validator.aclose()


async def test_a_system_naming_a_refnet_person_is_refused(client: httpx.AsyncClient, issuer: LocalIssuer) -> None:
    person = new_person()
    for named in (person, person.upper(), "Person-" + person.removeprefix("person-")):
        headers = issuer.auth_headers("cli_iom", "agy_iom", "cases:read", acting_user=named)
        response = await client.get("/whoami", headers=headers)
        assert response.status_code == 400, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["type"] == PROBLEM_TYPE_PREFIX + "acting-user-is-a-person"
        assert named not in response.text and person not in response.text  # the id is not echoed


@pytest.mark.parametrize("named", ["caseworker.1", "person-12", "person-" + "ab" * 16 + "x", "x-person-" + "ab" * 16,
                                   "person." + "ab" * 16])
async def test_a_system_may_still_name_its_own_users(client: httpx.AsyncClient, issuer: LocalIssuer,
                                                     named: str) -> None:
    headers = issuer.auth_headers("cli_iom", "agy_iom", "cases:read", acting_user=named)
    response = await client.get("/whoami", headers=headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"acting_user": named, "attested_by": "system"}


async def test_a_person_may_still_repeat_themself(client: httpx.AsyncClient, issuer: LocalIssuer) -> None:
    person = new_person()
    response = await client.get("/whoami", headers=issuer.person_headers(person, acting_user=person))
    assert response.status_code == 200, response.text
    assert response.json() == {"acting_user": person, "attested_by": "token"}
