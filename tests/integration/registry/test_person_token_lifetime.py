"""The two halves of issue #20 agree on a person's token's lifetime: resource servers (shared/auth) refuse a
person's token that lives longer than ten minutes, so the registry issues none, whatever lifetime the operator
gives agencies' system tokens (REFNET_REGISTRY_ACCESS_TOKEN_LIFETIME_SECONDS goes up to 900)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from tests.integration.registry.conftest import Registry, make_settings, serve
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
