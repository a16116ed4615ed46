"""Webhooks under the outbound guard, against real servers on loopback: every non-public address class is
refused at subscription (by literal and by a name that resolves to it) and at connect time (a name that
resolved to a public address first); a receiver that trickles is cut at the total deadline and one that
streams for ever at the byte cap, both recorded as attempts; one agency's slow receivers leave another
agency's deliveries a slot; an agency holds a bounded number of waiting /events requests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.conftest import Infra
from tests.integration.referral.conftest import Service, running_referral
from tests.integration.referral.test_webhooks import HOOK_SCOPE, new_referral, subscribe, wait_for
from tests.support.hostile_http import hostile_server
from tests.support.issuer import LocalIssuer

NAMES = {
    "loopback.example.org": ["127.0.0.1"], "metadata.example.org": ["169.254.169.254"],
    "cgnat.example.org": ["100.64.1.1"], "private.example.org": ["10.0.0.7"], "ula.example.org": ["fd00::1"],
    "mapped.example.org": ["::ffff:10.0.0.1"], "nat64.example.org": ["64:ff9b::7f00:1"],
    "sixtofour.example.org": ["2002:7f00:1::1"], "mixed.example.org": ["8.8.8.8", "127.0.0.1"],
}
rebind_lookups: dict[str, int] = {}


async def resolver(host: str, port: int) -> list[str]:
    """The names above, and rebind-*.example.org: public on the first lookup, loopback after it."""
    if host.startswith("rebind-"):
        rebind_lookups[host] = rebind_lookups.get(host, 0) + 1
        return ["8.8.8.8"] if rebind_lookups[host] == 1 else ["127.0.0.1"]
    if host in NAMES:
        return NAMES[host]
    raise OSError("no such name")


FAST_RETRIES = {"webhook_poll_seconds": 0.05, "webhook_backoff_base_seconds": 0.05,
                "webhook_backoff_max_seconds": 0.2}


@pytest.fixture(scope="module")
async def guarded(infra: Infra, new_database: Callable[[str], str], issuer: LocalIssuer) -> AsyncIterator[Service]:
    """Production's address rules (plain http allowed: the loopback servers have no certificates)."""
    async with running_referral(new_database("referral_guarded"), infra.bootstrap, issuer, resolver=resolver,
                                outbound_allow_private=False, **FAST_RETRIES) as service:
        yield service


@pytest.fixture(scope="module")
async def bounded(infra: Infra, new_database: Callable[[str], str], issuer: LocalIssuer) -> AsyncIterator[Service]:
    async with running_referral(new_database("referral_bounded"), infra.bootstrap, issuer,
                                outbound_deadline_seconds=2.0, outbound_max_response_bytes=4096,
                                feed_max_waiting_per_agency=2, **FAST_RETRIES) as service:
        yield service


async def deliveries(svc: Service, agency: str, subscription_id: str) -> list[dict[str, Any]]:
    response = await svc.client.get(f"/subscriptions/{subscription_id}/deliveries",
                                    headers=svc.headers(agency, HOOK_SCOPE))
    return response.json()["items"]  # type: ignore[no-any-return]


async def first_delivery(svc: Service, agency: str, subscription_id: str, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while not (items := await deliveries(svc, agency, subscription_id)):
        assert time.monotonic() < deadline, "no delivery attempt recorded"
        await asyncio.sleep(0.05)
    return items[0]


@pytest.mark.parametrize("url", [
    "http://loopback.example.org:8080/h", "http://metadata.example.org/latest", "http://cgnat.example.org/h",
    "http://private.example.org/h", "http://ula.example.org/h", "http://mapped.example.org/h",
    "http://nat64.example.org/h", "http://sixtofour.example.org/h", "http://mixed.example.org/h",
    "http://intake:8002/internal/clearance", "http://kubernetes.default.svc/api", "http://localhost./h",
    "http://100.64.0.1/h", "http://[fe80::1]/h", "http://[::ffff:7f00:1]/h", "http://0.0.0.0:8003/h",
])
async def test_a_url_reaching_a_non_public_address_is_refused_at_subscription(guarded: Service, url: str) -> None:
    agency = await guarded.agency()
    response = await guarded.client.post("/subscriptions", json={"url": url},
                                          headers=guarded.headers(agency, HOOK_SCOPE))
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["type"].endswith("webhook-url-not-allowed")
    assert problem["errors"][0]["loc"] == ["body", "url"]
    assert "example.org" not in problem["detail"] and problem["errors"][0]["msg"] in problem["detail"]


async def test_a_name_that_rebinds_to_loopback_is_refused_at_connect_as_a_failed_attempt(guarded: Service) -> None:
    sender, recipient = await guarded.agency(), await guarded.agency()
    async with hostile_server("ok") as server:
        sub = await subscribe(guarded, recipient, f"http://rebind-1.example.org:{server.port}/h")
        await new_referral(guarded, sender, recipient)
        attempt = await first_delivery(guarded, recipient, sub["id"])
        assert attempt["outcome"] == "failed" and attempt["error"] == "OutboundRefused"
        assert attempt["status_code"] is None
        assert server.connections == 0
        status = await guarded.client.get(f"/subscriptions/{sub['id']}", headers=guarded.headers(recipient, HOOK_SCOPE))
        assert status.json()["status"] == "active" and status.json()["consecutive_failures"] >= 1


async def test_a_trickling_receiver_is_cut_at_the_total_deadline(bounded: Service) -> None:
    sender, recipient = await bounded.agency(), await bounded.agency()
    async with hostile_server("trickle", trickle_seconds=0.05) as server:
        sub = await subscribe(bounded, recipient, f"http://127.0.0.1:{server.port}/h")
        await new_referral(bounded, sender, recipient)
        attempt = await first_delivery(bounded, recipient, sub["id"])
        assert attempt["outcome"] == "failed" and attempt["error"] == "DeadlineExceeded"
        assert 1900 <= attempt["duration_ms"] < 6000
        assert server.sent_bytes > 10  # bytes kept coming: a timeout per read would never have fired
        await bounded.client.delete(f"/subscriptions/{sub['id']}", headers=bounded.headers(recipient, HOOK_SCOPE))


async def test_a_receiver_that_streams_for_ever_is_read_up_to_the_cap(bounded: Service) -> None:
    sender, recipient = await bounded.agency(), await bounded.agency()
    async with hostile_server("endless") as server:
        sub = await subscribe(bounded, recipient, f"http://127.0.0.1:{server.port}/h")
        await new_referral(bounded, sender, recipient)
        attempt = await first_delivery(bounded, recipient, sub["id"])
        # The answer's status is all a delivery needs; the endless body was read to the cap, then dropped.
        assert attempt["outcome"] == "delivered" and attempt["status_code"] == 200
        assert attempt["duration_ms"] < 2000
        await bounded.client.delete(f"/subscriptions/{sub['id']}", headers=bounded.headers(recipient, HOOK_SCOPE))


async def test_an_agencys_slow_receivers_leave_another_agency_a_slot(
        infra: Infra, new_database: Callable[[str], str], issuer: LocalIssuer) -> None:
    async with running_referral(new_database("referral_crowded"), infra.bootstrap, issuer,
                                outbound_deadline_seconds=10.0, webhook_max_parallel=2,
                                webhook_max_parallel_per_agency=1, **FAST_RETRIES) as svc, \
            hostile_server("trickle", trickle_seconds=0.2) as slow, hostile_server("ok") as fast:
        sender, crowding, other = await svc.agency(), await svc.agency(), await svc.agency()
        for n in range(3):
            await subscribe(svc, crowding, f"http://127.0.0.1:{slow.port}/h{n}")
        await new_referral(svc, sender, crowding)
        await wait_for(lambda: slow.connections >= 1, timeout=10)
        await asyncio.sleep(0.3)  # the crowding agency's other subscriptions are due now too
        sub = await subscribe(svc, other, f"http://127.0.0.1:{fast.port}/h")
        await new_referral(svc, sender, other)
        attempt = await first_delivery(svc, other, sub["id"], timeout=5.0)  # half the slow ones' deadline
        assert attempt["outcome"] == "delivered"
        assert slow.connections == 1  # one slot for the crowding agency, however many subscriptions it has


async def test_an_agency_holds_a_bounded_number_of_waiting_polls(bounded: Service) -> None:
    agency, other = await bounded.agency(), await bounded.agency()

    async def poll(who: str, wait: float = 3.0) -> Any:
        return await bounded.client.get("/events", params={"wait": wait, "after": "999999999"},
                                        headers=bounded.headers(who, HOOK_SCOPE))

    waiting = [asyncio.create_task(poll(agency)) for _ in range(2)]
    await wait_for(lambda: bounded.deps.feed.waiting.held(agency) == 2, timeout=5)
    refused = await poll(agency)
    assert refused.status_code == 429, refused.text
    assert refused.json()["type"].endswith("too-many-waiting-polls") and refused.headers["retry-after"] == "1"
    assert (await poll(agency, wait=0)).status_code == 200  # no wait: no slot needed
    assert (await poll(other, wait=0.5)).status_code == 200  # another agency is not affected
    assert [r.status_code for r in await asyncio.gather(*waiting)] == [200, 200]
    assert (await poll(agency, wait=0.2)).status_code == 200  # the slots are free again
