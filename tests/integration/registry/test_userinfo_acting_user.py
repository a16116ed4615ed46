"""Userinfo keeps the resource servers' rule (shared/auth): with a person's own token, ``X-Acting-User`` may be left
out or repeat the person; naming anyone else is refused (403 acting-user-contradicts-token)."""

from __future__ import annotations

from tests.integration.registry.conftest import Registry
from tests.integration.registry.people_support import browser, ensure_console, exchange, new_person, pkce, sign_in


async def test_userinfo_refuses_an_acting_user_who_is_not_the_person(registry: Registry) -> None:
    await ensure_console(registry)
    platform = await registry.agency(["admin", "registry:read"], kind="platform", name="Operator")
    person = await new_person(registry, await registry.headers(platform), await registry.agency(["registry:read"]))
    verifier, challenge = pkce()
    async with browser(registry) as http:
        code = await sign_in(http, person, challenge)
    bearer = {"Authorization": "Bearer " + (await exchange(registry, code, verifier)).json()["access_token"]}
    for method in ("GET", "POST"):
        other = await registry.http.request(method, "/oauth/userinfo", headers={**bearer,
                                                                              "X-Acting-User": "caseworker.1"})
        assert other.status_code == 403, other.text
        assert other.json()["type"] == "urn:refnet:problem:acting-user-contradicts-token"
        assert person.id not in other.text
        same = await registry.http.request(method, "/oauth/userinfo", headers={**bearer, "X-Acting-User": person.id})
        assert same.status_code == 200 and same.json()["sub"] == person.id
        left_out = await registry.http.request(method, "/oauth/userinfo", headers=bearer)
        assert left_out.status_code == 200
