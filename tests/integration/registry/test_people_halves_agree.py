"""Where the two halves of issue #20 meet: the registry's person tokens pass the resource servers' checks
(shared/auth refuses a person's token that lives longer than ten minutes, so the registry issues none, whatever
lifetime the operator gives agencies' system tokens: REFNET_REGISTRY_ACCESS_TOKEN_LIFETIME_SECONDS goes up to
900), and both metadata documents list the grants the token endpoint really takes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from tests.integration.registry.conftest import ISSUER, Registry, make_settings, serve
from tests.integration.registry.people_support import (
    browser,
    claims_of,
    ensure_console,
    exchange,
    new_person,
    pkce,
    refresh,
    sign_in,
)


@pytest.fixture
async def long_lived(new_database: Callable[[str], str]) -> AsyncIterator[Registry]:
    """A registry whose agencies' system tokens live 15 minutes."""
    async for running in serve(make_settings(new_database("registry_long_tokens"),
                                             access_token_lifetime_seconds=900)):
        yield running


async def test_a_persons_token_keeps_to_ten_minutes_and_passes_the_resource_servers_checks(
        long_lived: Registry) -> None:
    await ensure_console(long_lived)
    platform = await long_lived.agency(["admin", "registry:read"], kind="platform", name="Operator")
    agency = await long_lived.agency(["registry:read", "cases:read"])
    person = await new_person(long_lived, await long_lived.headers(platform), agency)
    verifier, challenge = pkce()
    async with browser(long_lived) as http:
        code = await sign_in(http, person, challenge)
    issued = await exchange(long_lived, code, verifier)
    assert issued.status_code == 200, issued.text
    renewed = await refresh(long_lived, issued.json()["refresh_token"])
    assert renewed.status_code == 200, renewed.text
    for body in (issued.json(), renewed.json()):
        claims = claims_of(body["access_token"])
        assert claims["exp"] - claims["iat"] == body["expires_in"] == 600
        # shared/auth's TokenValidator, as every resource server runs it.
        principal = await long_lived.validator.validate(body["access_token"])
        assert (principal.person, principal.attested_by) == (person.id, "token")
    # Agencies' systems keep the lifetime the operator set.
    system = claims_of(await long_lived.token(agency))
    assert system["exp"] - system["iat"] == 900


async def test_both_metadata_documents_list_every_grant_pkce_and_the_authorization_endpoint(
        registry: Registry) -> None:
    oauth = (await registry.http.get("/.well-known/oauth-authorization-server")).json()
    oidc = (await registry.http.get("/.well-known/openid-configuration")).json()
    for document in (oauth, oidc):
        assert document["grant_types_supported"] == ["client_credentials", "authorization_code", "refresh_token"]
        assert document["response_types_supported"] == ["code"]
        assert document["code_challenge_methods_supported"] == ["S256"]
        assert document["authorization_endpoint"] == ISSUER + "/oauth/authorize"
        assert set(document["token_endpoint_auth_methods_supported"]) == {
            "private_key_jwt", "client_secret_basic", "none"}
        assert "openid" in document["scopes_supported"] and "cases:read" in document["scopes_supported"]
    assert oauth["scopes_supported"] == oidc["scopes_supported"]
    assert oauth["token_endpoint_auth_signing_alg_values_supported"] == \
        oidc["token_endpoint_auth_signing_alg_values_supported"]
    # The token endpoint's OpenAPI form offers the same grants, with PKCE's verifier.
    form = (await registry.http.get("/openapi.json")).json()["paths"]["/oauth/token"]["post"]["requestBody"][
        "content"]["application/x-www-form-urlencoded"]["schema"]["properties"]
    assert form["grant_type"]["enum"] == oauth["grant_types_supported"]
    assert {"code", "redirect_uri", "code_verifier", "refresh_token", "client_id"} <= set(form)


async def test_userinfo_like_every_service_refuses_a_header_naming_someone_else(registry: Registry) -> None:
    await ensure_console(registry)
    platform = await registry.agency(["admin", "registry:read"], kind="platform", name="Operator")
    person = await new_person(registry, await registry.headers(platform),
                              await registry.agency(["registry:read", "cases:read"]))
    verifier, challenge = pkce()
    async with browser(registry) as http:
        code = await sign_in(http, person, challenge)
    bearer = {"Authorization": "Bearer " + (await exchange(registry, code, verifier)).json()["access_token"]}
    posing = await registry.http.get("/oauth/userinfo", headers=bearer | {"X-Acting-User": "caseworker.1"})
    assert posing.status_code == 403, posing.text
    assert posing.json()["type"] == "urn:refnet:problem:acting-user-contradicts-token"
    assert "caseworker.1" not in posing.text and person.id not in posing.text
    themself = await registry.http.get("/oauth/userinfo", headers=bearer | {"X-Acting-User": person.id})
    assert themself.status_code == 200 and themself.json()["sub"] == person.id
