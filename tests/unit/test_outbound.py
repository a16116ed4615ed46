"""Outbound calls to partners' URLs: every non-public address class refused, by literal and by name, at
check time and at connect time (a name that resolves differently the second time is caught); plain http only
when allowed; an answer that never ends or trickles is cut at the byte cap and the total deadline."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from pathlib import Path

import httpx
import pytest

from deploy.launcher.stack import Stack, StackConfig
from services.referral.settings import ReferralSettings
from services.registry.settings import RegistrySettings
from shared.outbound import (
    DeadlineExceeded,
    GuardedTransport,
    OutboundPolicy,
    OutboundRefused,
    call,
    check_url,
    guarded_client,
    refused_address,
    refused_url,
)
from tests.support.hostile_http import hostile_server

REFUSED = {
    "127.0.0.1": "loopback", "127.255.0.9": "loopback", "10.1.2.3": "private", "172.16.0.1": "private",
    "192.168.1.1": "private", "169.254.169.254": "link-local", "100.64.0.1": "shared (CGNAT)",
    "100.127.255.254": "shared (CGNAT)", "0.0.0.0": "unspecified", "224.0.0.1": "multicast",
    "240.0.0.1": "reserved", "255.255.255.255": "reserved", "192.0.2.10": "documentation",
    "198.18.0.1": "benchmarking", "::1": "loopback", "::": "reserved", "fe80::1": "link-local",
    "fd00::1": "unique local", "fc00::1": "unique local", "ff02::1": "multicast", "2001:db8::1": "documentation",
    "::ffff:127.0.0.1": "loopback", "::ffff:10.0.0.1": "private", "::ffff:169.254.169.254": "link-local",
    "2002:7f00:1::": "loopback", "2002:a9fe:a9fe::1": "link-local", "64:ff9b::7f00:1": "loopback",
    "64:ff9b::a9fe:a9fe": "link-local", "64:ff9b:1::1": "local NAT64", "2001::1": "reserved (IETF protocols)",
    "::127.0.0.1": "reserved", "fec0::1": "site-local",
}
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808",
          "2002:808:808::1"]


@pytest.mark.parametrize("address", sorted(REFUSED))
def test_every_non_public_address_class_is_refused(address: str) -> None:
    assert refused_address(ipaddress.ip_address(address)) == REFUSED[address]


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    assert refused_address(ipaddress.ip_address(address)) is None


STRICT = OutboundPolicy()
DEV_HTTP = OutboundPolicy(allow_http=True)


@pytest.mark.parametrize("url", [
    "https://intake:8002/x", "https://kubernetes.default.svc/", "https://kubernetes.default.svc.cluster.local/",
    "https://localhost./", "https://localhost/", "https://a.localhost/", "https://100.64.0.1/",
    "https://[::1]/", "https://[::ffff:7f00:1]/", "https://169.254.169.254/latest/meta-data",
    "https://printer.local/", "https://metadata.google.internal/", "https://2130706433/", "https://0x7f000001/",
    "https://router.home.arpa/",
])
def test_urls_naming_internal_hosts_are_refused_before_any_lookup(url: str) -> None:
    assert refused_url(url, STRICT)
    assert refused_url(url, DEV_HTTP)


def test_plain_http_only_when_allowed() -> None:
    assert refused_url("http://hooks.example.org/h", STRICT) == "only https URLs are allowed"
    assert refused_url("http://hooks.example.org/h", DEV_HTTP) is None
    assert refused_url("https://hooks.example.org/h", STRICT) is None
    assert refused_url("ftp://hooks.example.org/h", DEV_HTTP) == "only https URLs are allowed"
    assert refused_url("http://127.0.0.1:9/h", OutboundPolicy(allow_http=True, allow_private=True)) is None


def resolving(table: dict[str, list[str]]) -> OutboundPolicy:
    async def resolver(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError("no such name")
        return table[host]

    return OutboundPolicy(allow_http=True, resolver=resolver, deadline_seconds=2.0)


async def test_a_name_resolving_to_a_private_address_is_refused_at_check_time() -> None:
    policy = resolving({"hook.example.org": ["127.0.0.1"], "mixed.example.org": ["8.8.8.8", "10.0.0.1"],
                        "ok.example.org": ["8.8.8.8", "2606:4700:4700::1111"], "cgnat.example.org": ["100.64.9.9"],
                        "mapped.example.org": ["::ffff:192.168.0.1"]})
    for host in ("hook", "mixed", "cgnat", "mapped"):
        with pytest.raises(OutboundRefused):
            await check_url(f"https://{host}.example.org/h", policy)
    await check_url("https://ok.example.org/h", policy)
    await check_url("https://not-yet.example.org/h", policy)  # does not resolve yet: connect time decides


async def test_connect_time_refuses_a_name_that_resolves_to_loopback_and_never_connects() -> None:
    async with hostile_server("ok") as server:
        policy = resolving({"hook.example.org": ["127.0.0.1"]})
        async with guarded_client(policy) as client:
            with pytest.raises(OutboundRefused) as refused:
                await call(client, policy, "POST", f"http://hook.example.org:{server.port}/h", content=b"{}")
            assert "loopback" in refused.value.reason
            with pytest.raises(OutboundRefused):
                await call(client, policy, "POST", f"http://127.0.0.1:{server.port}/h", content=b"{}")
            with pytest.raises(OutboundRefused):
                await call(client, policy, "POST", f"http://[::ffff:127.0.0.1]:{server.port}/h", content=b"{}")
        assert server.connections == 0


async def test_dns_rebinding_is_caught_at_connect_time() -> None:
    """The check sees a public address; the connection would have gone to loopback: refused."""
    answers = iter([["8.8.8.8"], ["127.0.0.1"]])

    async def rebinding(host: str, port: int) -> list[str]:
        return next(answers)

    policy = OutboundPolicy(allow_http=True, resolver=rebinding, deadline_seconds=2.0)
    async with hostile_server("ok") as server:
        url = f"http://rebind.example.org:{server.port}/h"
        await check_url(url, policy)
        async with guarded_client(policy) as client:
            with pytest.raises(OutboundRefused):
                await call(client, policy, "POST", url, content=b"{}")
        assert server.connections == 0


async def test_the_checked_address_is_the_one_connected_to_with_the_original_host() -> None:
    async with hostile_server("ok") as server:
        policy = OutboundPolicy(allow_http=True, allow_private=True, resolver=resolving(
            {"hook.example.org": ["127.0.0.1"]}).resolver)
        async with guarded_client(policy) as client:
            answer = await call(client, policy, "POST", f"http://hook.example.org:{server.port}/h", content=b"{}")
        assert answer.status_code == 204
        assert server.hosts == [f"hook.example.org:{server.port}"]


async def test_https_is_required_unless_allowed() -> None:
    async with hostile_server("ok") as server:
        policy = OutboundPolicy(allow_private=True)
        async with httpx.AsyncClient(transport=GuardedTransport(policy)) as client:
            with pytest.raises(OutboundRefused):
                await client.post(f"http://127.0.0.1:{server.port}/h")
        assert server.connections == 0


async def test_an_endless_answer_is_cut_at_the_byte_cap() -> None:
    policy = OutboundPolicy(allow_http=True, allow_private=True, deadline_seconds=5.0, max_response_bytes=100_000)
    async with hostile_server("endless") as server:
        async with guarded_client(policy) as client:
            started = time.monotonic()
            answer = await asyncio.wait_for(call(client, policy, "GET", f"http://127.0.0.1:{server.port}/"), 10)
        assert answer.status_code == 200 and not answer.complete and len(answer.content) == 100_000
        assert time.monotonic() - started < 5.0


async def test_a_trickling_answer_is_cut_at_the_total_deadline() -> None:
    policy = OutboundPolicy(allow_http=True, allow_private=True, deadline_seconds=1.0)
    async with hostile_server("trickle", trickle_seconds=0.05) as server:
        async with guarded_client(policy) as client:
            started = time.monotonic()
            with pytest.raises(DeadlineExceeded):
                await asyncio.wait_for(call(client, policy, "GET", f"http://127.0.0.1:{server.port}/"), 10)
        assert 0.9 < time.monotonic() - started < 3.0
        assert server.sent_bytes > 5  # it was sending all along: no single read timed out


def test_production_refuses_by_default_and_only_the_local_stack_allows(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REFNET_OUTBOUND_ALLOW_HTTP", "REFNET_OUTBOUND_ALLOW_PRIVATE"):
        monkeypatch.delenv(name, raising=False)
    for settings in (ReferralSettings(), RegistrySettings()):
        policy = settings.outbound_policy()
        assert not policy.allow_http and not policy.allow_private
    env = Stack(StackConfig(home=tmp_path)).service_env("referral")
    assert env["REFNET_OUTBOUND_ALLOW_HTTP"] == env["REFNET_OUTBOUND_ALLOW_PRIVATE"] == "true"
    monkeypatch.setenv("REFNET_OUTBOUND_ALLOW_PRIVATE", "true")
    assert ReferralSettings().outbound_policy().allow_private and RegistrySettings().outbound_policy().allow_private
