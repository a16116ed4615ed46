"""The token endpoint's throttle keys on the client's address: behind the ingress that is the address the
ingress forwards, believed only from the ingress's own range (FORWARDED_ALLOW_IPS in the manifest, applied by
uvicorn's proxy-headers middleware, as ``refnet serve`` runs it)."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from starlette.requests import Request
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from services.registry.api import _address

from ._support import k8s_by_kind


def _forwarded_allow_ips() -> str:
    (container,) = k8s_by_kind("Deployment")["refnet-registry"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    # uvicorn's default when unset: only 127.0.0.1 is believed
    return str(env.get("FORWARDED_ALLOW_IPS") or "127.0.0.1")


def test_the_manifest_names_a_range_not_everyone() -> None:
    value = _forwarded_allow_ips()
    assert "*" not in value
    networks = [ipaddress.ip_network(item.strip()) for item in value.split(",")]
    # The ingress controller is another pod: believing only loopback (uvicorn's default) believes no one.
    assert any(n.is_private and not n.is_loopback for n in networks), value


async def _seen_address(peer: str, forwarded: str) -> str:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(_address(Request(scope)))

    middleware = ProxyHeadersMiddleware(app, trusted_hosts=_forwarded_allow_ips())
    scope = {"type": "http", "method": "POST", "path": "/oauth/token", "headers": [
        (b"x-forwarded-for", forwarded.encode())], "client": (peer, 40000), "scheme": "http",
        "server": ("refnet-registry", 8001), "query_string": b""}
    await middleware(scope, None, None)  # type: ignore[arg-type]
    return seen[0]


@pytest.fixture
def ingress_pod() -> str:
    # An ingress pod: an address in the (non-loopback) range the manifest trusts.
    networks = [ipaddress.ip_network(i.strip()) for i in _forwarded_allow_ips().split(",")]
    pods = [n for n in networks if not n.is_loopback and n.num_addresses > 17]
    assert pods, "no pod range is trusted"
    return str(pods[0].network_address + 17)


async def test_behind_the_ingress_the_throttle_sees_the_client(ingress_pod: str) -> None:
    assert await _seen_address(ingress_pod, "203.0.113.7") == "203.0.113.7"


async def test_a_peer_outside_the_range_cannot_choose_its_address() -> None:
    assert await _seen_address("192.0.2.50", "203.0.113.7") == "192.0.2.50"
