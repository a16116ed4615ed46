"""An agency's jwks_uri is fetched through the outbound guard: a key set served that never ends or trickles
costs at most the byte cap and the deadline; a host resolving to a non-public address is never connected to."""

from __future__ import annotations

import json
import time

import pytest

from services.registry.domain import OAuthError
from services.registry.oauth import RemoteJWKS
from shared.outbound import OutboundPolicy
from tests.support.hostile_http import hostile_server
from tests.support.issuer import generate_signing_key

LOCAL = OutboundPolicy(allow_http=True, allow_private=True, deadline_seconds=1.0)
JWKS = json.dumps({"keys": [dict(generate_signing_key("ES256").as_dict(private=False))]}).encode()


async def test_a_served_key_set_is_read() -> None:
    async with hostile_server("json", body=JWKS) as server:
        remote = RemoteJWKS(LOCAL)
        try:
            assert len(await remote.keys(f"http://127.0.0.1:{server.port}/jwks")) == 1
        finally:
            await remote.aclose()


@pytest.mark.parametrize("mode", ["endless", "trickle"])
async def test_a_key_set_that_never_ends_is_refused_within_the_deadline(mode: str) -> None:
    async with hostile_server(mode, trickle_seconds=0.05) as server:
        remote = RemoteJWKS(LOCAL)
        started = time.monotonic()
        try:
            with pytest.raises(OAuthError):
                await remote.keys(f"http://127.0.0.1:{server.port}/jwks")
        finally:
            await remote.aclose()
        assert time.monotonic() - started < 2.0


async def test_a_key_set_larger_than_the_cap_is_refused() -> None:
    big = json.dumps({"keys": [{"kty": "EC", "pad": "x" * 70_000}]}).encode()
    async with hostile_server("json", body=big) as server:
        remote = RemoteJWKS(LOCAL)
        try:
            with pytest.raises(OAuthError):
                await remote.keys(f"http://127.0.0.1:{server.port}/jwks")
        finally:
            await remote.aclose()


async def test_a_host_resolving_to_loopback_is_never_connected_to() -> None:
    async def to_loopback(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    async with hostile_server("json", body=JWKS) as server:
        for policy in (OutboundPolicy(allow_http=True, resolver=to_loopback), OutboundPolicy(resolver=to_loopback)):
            remote = RemoteJWKS(policy)
            try:
                with pytest.raises(OAuthError):
                    await remote.keys(f"http://keys.example.org:{server.port}/jwks")
                with pytest.raises(OAuthError):
                    await remote.keys(f"http://127.0.0.1:{server.port}/jwks")
            finally:
                await remote.aclose()
        assert server.connections == 0
