"""With production's outbound settings the registry refuses a jwks_uri it must not call (plain http, a
non-public address by literal or by name) with a 422 naming why, on registration and on update; a name that
resolves to loopback only later is refused at connect time: the token request fails, nothing is connected to."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from tests.integration.registry.conftest import Client, Registry, make_settings, serve
from tests.support.hostile_http import hostile_server
from tests.support.issuer import generate_signing_key

lookups: dict[str, int] = {}


async def resolver(host: str, port: int) -> list[str]:
    lookups[host] = lookups.get(host, 0) + 1
    if host == "loopback.example.org":
        return ["127.0.0.1"]
    if host == "metadata.example.org":
        return ["169.254.169.254"]
    if host == "rebind.example.org":  # public when registered, loopback when called
        return ["8.8.8.8"] if lookups[host] == 1 else ["127.0.0.1"]
    raise OSError("no such name")


@pytest.fixture(scope="module")
async def strict(new_database: Callable[[str], str]) -> AsyncIterator[Registry]:
    settings = make_settings(new_database("registry_strict"), outbound_allow_http=False,
                             outbound_allow_private=False)
    async for running in serve(settings, resolver=resolver):
        yield running


async def admin(registry: Registry) -> dict[str, str]:
    return await registry.headers(await registry.agency(["admin", "registry:read"]))


BAD = ["http://keys.example.org/jwks", "https://127.0.0.1/jwks", "https://loopback.example.org/jwks",
       "https://metadata.example.org/jwks", "https://100.64.0.1/jwks", "https://intake/jwks",
       "https://[::ffff:127.0.0.1]/jwks", "https://localhost./jwks"]


@pytest.mark.parametrize("uri", BAD)
async def test_a_jwks_uri_the_registry_may_not_call_is_422(strict: Registry, uri: str) -> None:
    headers = await admin(strict)
    created = await strict.http.post("/agencies", headers=headers, json={
        "name": "Remote keys", "kind": "ngo", "country": "NE", "jwks_uri": uri})
    assert created.status_code == 422, created.text
    assert created.json()["type"].endswith("jwks-uri-not-allowed")
    assert created.json()["errors"][0]["loc"] == ["body", "jwks_uri"]
    agency = await strict.agency(["cases:read"])
    patched = await strict.http.patch(f"/agencies/{agency.agency_id}", headers=headers, json={"jwks_uri": uri})
    assert patched.status_code == 422 and patched.json()["type"].endswith("jwks-uri-not-allowed")


async def test_a_jwks_uri_that_rebinds_to_loopback_is_not_called(strict: Registry) -> None:
    async with hostile_server("ok") as server:
        created = await strict.http.post("/agencies", headers=await admin(strict), json={
            "name": "Rebinding", "kind": "ngo", "country": "NE", "scopes": ["cases:read"],
            "jwks_uri": f"https://rebind.example.org:{server.port}/jwks"})
        assert created.status_code == 201, created.text
        client = Client(created.json()["id"], created.json()["client_id"], generate_signing_key("ES256"), "ES256")
        refused = await strict.http.post("/oauth/token", data=client.form())
        assert refused.json()["error"] == "invalid_client"
        assert server.connections == 0 and lookups["rebind.example.org"] >= 2
