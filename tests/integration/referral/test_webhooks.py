"""Webhooks: Standard Webhooks signatures verify with the subscriber's secret and fail on a tampered body; a
receiver down for a while gets every event once it is back, in order; one that keeps failing is disabled;
a slow receiver does not hold up another agency's deliveries; only the agency's own events go out."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from standardwebhooks import Webhook, WebhookVerificationError

from tests.conftest import Infra
from tests.integration.referral.conftest import Service, body, running_referral
from tests.support.issuer import LocalIssuer

HOOK_SCOPE = "events:read referrals:read referrals:write"


@dataclass
class Receiver:
    fail_first: int = 0  # answer 503 to this many requests, then 200
    always_fail: bool = False
    delay: float = 0.0
    attempts: int = 0
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.always_fail or self.attempts <= self.fail_first:
            return httpx.Response(503)
        self.received.append((dict(request.headers), request.content))
        return httpx.Response(204)

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(content) for _, content in self.received]


class Receivers:
    def __init__(self) -> None:
        self.by_host: dict[str, Receiver] = {}

    def new(self, name: str, **options: Any) -> tuple[str, Receiver]:
        receiver = Receiver(**options)
        self.by_host[f"{name}.test"] = receiver
        return f"http://{name}.test/hooks/refnet", receiver

    async def handle(self, request: httpx.Request) -> httpx.Response:
        receiver = self.by_host.get(request.url.host)
        if receiver is None:
            raise httpx.ConnectError("no such host")
        return await receiver.handle(request)


@pytest.fixture(scope="module")
def receivers() -> Receivers:
    return Receivers()


@pytest.fixture(scope="module")
async def hooked(infra: Infra, new_database: Callable[[str], str], issuer: LocalIssuer,
                 receivers: Receivers) -> AsyncIterator[Service]:
    async with running_referral(
        new_database("referral_hooks"), infra.bootstrap, issuer,
        webhook_transport=httpx.MockTransport(receivers.handle), webhook_poll_seconds=0.05,
        webhook_backoff_base_seconds=0.05, webhook_backoff_max_seconds=0.2, webhook_max_failures=6,
        outbound_allow_private=False,  # the mock receivers are *.test (http); private addresses are refused
    ) as service:
        yield service


async def subscribe(svc: Service, agency: str, url: str, **extra: Any) -> dict[str, Any]:
    response = await svc.client.post("/subscriptions", json={"url": url, **extra},
                                     headers=svc.headers(agency, HOOK_SCOPE))
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def new_referral(svc: Service, sender: str, recipient: str) -> str:
    case_id, _ = svc.intake.add_case(sender)
    created = await svc.refer(sender, body(case_id, recipient))
    assert created.status_code == 201, created.text
    return created.json()["id"]  # type: ignore[no-any-return]


async def test_signatures_verify_with_the_secret_and_a_tampered_body_does_not(hooked: Service,
                                                                              receivers: Receivers) -> None:
    sender, recipient = await hooked.agency(), await hooked.agency()
    url, receiver = receivers.new("signed")
    sub = await subscribe(hooked, recipient, url)
    assert sub["secret"].startswith("whsec_")
    rid = await new_referral(hooked, sender, recipient)
    await wait_for(lambda: len(receiver.received) >= 1)
    headers, content = receiver.received[0]
    assert headers["webhook-id"] and headers["webhook-timestamp"] and headers["webhook-signature"].startswith("v1,")
    event = Webhook(sub["secret"]).verify(content, headers)
    assert event["type"] == "org.refnet.referral.requested.v1" and event["subject"] == rid
    assert event["data"]["referral_id"] == rid and "reason" not in event["data"]
    assert headers["webhook-id"] == event["id"]
    tampered = content.replace(b"requested", b"accepted")
    with pytest.raises(WebhookVerificationError):
        Webhook(sub["secret"]).verify(tampered, headers)
    other = await subscribe(hooked, recipient, receivers.new("other-secret")[0])
    with pytest.raises(WebhookVerificationError):
        Webhook(other["secret"]).verify(content, headers)
    # the secret is shown once
    shown = await hooked.client.get(f"/subscriptions/{sub['id']}", headers=hooked.headers(recipient, HOOK_SCOPE))
    assert "secret" not in shown.json()


async def test_a_receiver_down_for_a_while_gets_every_event_once_in_order(hooked: Service,
                                                                           receivers: Receivers) -> None:
    sender, recipient = await hooked.agency(), await hooked.agency()
    url, receiver = receivers.new("flaky", fail_first=4)
    sub = await subscribe(hooked, recipient, url)
    first = await new_referral(hooked, sender, recipient)
    second = await new_referral(hooked, sender, recipient)
    for to in ("received", "accepted", "in_progress"):
        assert (await hooked.move(recipient, first, to)).status_code == 200
    assert (await hooked.move(sender, second, "cancelled", "duplicate")).status_code == 200

    feed = await hooked.client.get("/events", headers=hooked.headers(recipient, HOOK_SCOPE))
    expected = [e["id"] for e in feed.json()["items"]]
    assert len(expected) == 6
    await wait_for(lambda: len(receiver.received) >= 6)
    await asyncio.sleep(0.5)  # a duplicate would show now
    got = receiver.events()
    assert [e["id"] for e in got] == expected
    assert [e["type"].split(".")[-2] for e in got if e["subject"] == first] == [
        "requested", "received", "accepted", "in_progress"]

    log = await hooked.client.get(f"/subscriptions/{sub['id']}/deliveries",
                                  headers=hooked.headers(recipient, HOOK_SCOPE))
    items = log.json()["items"]
    assert [i["outcome"] for i in items[:4]] == ["failed"] * 4
    assert [i["attempt"] for i in items[:5]] == [1, 2, 3, 4, 5]
    assert all(i["status_code"] == 503 for i in items[:4])
    assert sum(1 for i in items if i["outcome"] == "delivered") == 6
    status = await hooked.client.get(f"/subscriptions/{sub['id']}", headers=hooked.headers(recipient, HOOK_SCOPE))
    assert status.json()["status"] == "active" and status.json()["consecutive_failures"] == 0


async def test_repeated_failure_disables_and_reactivation_resumes(hooked: Service, receivers: Receivers) -> None:
    sender, recipient = await hooked.agency(), await hooked.agency()
    url, receiver = receivers.new("dead", always_fail=True)
    sub = await subscribe(hooked, recipient, url)
    await new_referral(hooked, sender, recipient)
    headers = hooked.headers(recipient, HOOK_SCOPE)

    async def status() -> str:
        return str((await hooked.client.get(f"/subscriptions/{sub['id']}", headers=headers)).json()["status"])

    deadline = time.monotonic() + 20
    while await status() != "disabled":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    assert receiver.attempts == 6
    await asyncio.sleep(0.5)
    assert receiver.attempts == 6  # disabled: no more attempts
    receiver.always_fail = False
    assert (await hooked.client.post(f"/subscriptions/{sub['id']}/reactivate", headers=headers)).status_code == 200
    await wait_for(lambda: len(receiver.received) == 1)


async def test_a_slow_receiver_does_not_hold_up_another_agencys_deliveries(hooked: Service,
                                                                            receivers: Receivers) -> None:
    sender, slow_agency, fast_agency = await hooked.agency(), await hooked.agency(), await hooked.agency()
    slow_url, slow = receivers.new("slow", delay=30)
    fast_url, fast = receivers.new("fast")
    await subscribe(hooked, slow_agency, slow_url)
    await subscribe(hooked, fast_agency, fast_url)
    await new_referral(hooked, sender, slow_agency)
    await wait_for(lambda: slow.attempts >= 1)
    rid = await new_referral(hooked, sender, fast_agency)
    await wait_for(lambda: len(fast.received) >= 1, timeout=5)
    assert fast.events()[0]["subject"] == rid


async def test_only_the_agencys_events_and_types_and_own_subscriptions(hooked: Service,
                                                                      receivers: Receivers) -> None:
    sender, recipient, outsider = await hooked.agency(), await hooked.agency(), await hooked.agency()
    url, receiver = receivers.new("picky")
    sub = await subscribe(hooked, recipient, url, event_types=["referral.cancelled.v1"])
    assert sub["event_types"] == ["org.refnet.referral.cancelled.v1"]
    outsider_url, outsider_receiver = receivers.new("outsider")
    await subscribe(hooked, outsider, outsider_url)
    rid = await new_referral(hooked, sender, recipient)
    await hooked.move(sender, rid, "cancelled", "wrong-recipient")
    await wait_for(lambda: len(receiver.received) == 1)
    assert receiver.events()[0]["type"] == "org.refnet.referral.cancelled.v1"
    await asyncio.sleep(0.3)
    assert outsider_receiver.received == []
    own = hooked.headers(outsider, HOOK_SCOPE)
    assert (await hooked.client.get(f"/subscriptions/{sub['id']}", headers=own)).status_code == 404
    assert (await hooked.client.get(f"/subscriptions/{sub['id']}/deliveries", headers=own)).status_code == 404
    assert (await hooked.client.delete(f"/subscriptions/{sub['id']}", headers=own)).status_code == 404
    mine = hooked.headers(recipient, HOOK_SCOPE)
    listed = (await hooked.client.get("/subscriptions", headers=mine)).json()["items"]
    assert [s["id"] for s in listed] == [sub["id"]]
    assert (await hooked.client.delete(f"/subscriptions/{sub['id']}", headers=mine)).status_code == 204
    assert (await hooked.client.get("/subscriptions", headers=mine)).json()["items"] == []
    for bad in ({"url": "ftp://x.test/"}, {"url": "not a url"}, {"url": "http://x.test", "event_types": ["nope"]},
                {"url": "http://x.test", "extra": 1}, {"url": "http://127.0.0.1:8080/hook"},
                {"url": "http://169.254.169.254/latest/meta-data"}, {"url": "http://[::1]/x"},
                {"url": "https://10.1.2.3/x"}, {"url": "http://localhost/x"}, {"url": "http://intake:8002/x"},
                {"url": "https://kubernetes.default.svc/"}, {"url": "http://localhost./x"},
                {"url": "https://100.64.0.1/x"}, {"url": "https://[fd00::1]/x"}, {"url": "https://[::ffff:a00:1]/x"}):
        response = await hooked.client.post("/subscriptions", json=bad, headers=mine)
        assert response.status_code == 422, bad
        assert response.json()["errors"][0]["loc"][-1] in ("url", "event_types", "extra"), bad


async def test_an_agency_holds_a_bounded_number_of_subscriptions(hooked: Service) -> None:
    agency = await hooked.agency()
    headers = hooked.headers(agency, HOOK_SCOPE)
    for n in range(20):
        created = await hooked.client.post("/subscriptions", json={"url": f"https://cs{n}.example.org/h"},
                                           headers=headers)
        assert created.status_code == 201
    refused = await hooked.client.post("/subscriptions", json={"url": "https://one-more.example.org/h"},
                                       headers=headers)
    assert refused.status_code == 409 and refused.json()["type"].endswith("too-many-subscriptions")
    for item in (await hooked.client.get("/subscriptions", headers=headers)).json()["items"]:
        assert (await hooked.client.delete(f"/subscriptions/{item['id']}", headers=headers)).status_code == 204


async def test_secrets_are_sealed_at_rest_and_a_rotation_signs_with_both_for_a_while(
    hooked: Service, receivers: Receivers
) -> None:
    sender, recipient = await hooked.agency(), await hooked.agency()
    url, receiver = receivers.new("rotating")
    sub = await subscribe(hooked, recipient, url)
    old_secret = sub["secret"]
    # At rest: no column of the row holds the secret (or its key bytes) in clear.
    raw_key = base64.b64decode(old_secret.removeprefix("whsec_"))
    async with hooked.referrals.sessions() as session:
        row = (await session.execute(text("SELECT row_to_json(s)::text FROM webhook_subscriptions s WHERE id = :id"),
                                     {"id": sub["id"]})).scalar_one()
        assert old_secret.removeprefix("whsec_") not in row
        wrapped = (await session.execute(text("SELECT secret_wrapped FROM webhook_subscriptions WHERE id = :id"),
                                         {"id": sub["id"]})).scalar_one()
    assert wrapped is not None and raw_key not in bytes(wrapped)

    # Someone else's subscription is not there to rotate.
    stranger = await hooked.client.post(f"/subscriptions/{sub['id']}/rotate-secret",
                                        headers=hooked.headers(sender, HOOK_SCOPE))
    assert stranger.status_code == 404, stranger.text
    rotated = await hooked.client.post(f"/subscriptions/{sub['id']}/rotate-secret",
                                       headers=hooked.headers(recipient, HOOK_SCOPE))
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["secret"]
    assert new_secret.startswith("whsec_") and new_secret != old_secret
    assert rotated.json()["previous_secret_valid_until"]
    shown = (await hooked.client.get(f"/subscriptions/{sub['id']}", headers=hooked.headers(recipient, HOOK_SCOPE)))
    assert "secret" not in shown.json()

    await new_referral(hooked, sender, recipient)
    await wait_for(lambda: len(receiver.received) >= 1)
    headers, content = receiver.received[-1]
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(new_secret).verify(content, headers)  # a receiver that switched already
    Webhook(old_secret).verify(content, headers)  # and one that has not yet

    # After the grace period only the new secret signs.
    async with hooked.referrals.sessions() as session, session.begin():
        await session.execute(text("UPDATE webhook_subscriptions SET previous_secret_until = now() "
                                   "- interval '1 second' WHERE id = :id"), {"id": sub["id"]})
    await new_referral(hooked, sender, recipient)
    await wait_for(lambda: len(receiver.received) >= 2)
    headers, content = receiver.received[-1]
    Webhook(new_secret).verify(content, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(old_secret).verify(content, headers)


async def test_a_secret_kept_in_clear_before_the_upgrade_is_sealed_and_still_signs(
    hooked: Service, receivers: Receivers
) -> None:
    from services.referral.service.subscriptions import seal_clear_secrets
    from services.referral.webhooks import new_secret

    sender, recipient = await hooked.agency(), await hooked.agency()
    url, receiver = receivers.new("legacy")
    sub = await subscribe(hooked, recipient, url)
    legacy = new_secret()
    referrals = hooked.referrals
    async with referrals.sessions() as session, session.begin():  # as referral_0006 left it
        await session.execute(text("UPDATE webhook_subscriptions SET secret = :s, secret_wrapped = NULL, "
                                   "secret_key_id = NULL WHERE id = :id"), {"s": legacy, "id": sub["id"]})
    assert await seal_clear_secrets(referrals.sessions, referrals.keyring) >= 1
    async with referrals.sessions() as session:
        clear = (await session.execute(text("SELECT secret FROM webhook_subscriptions WHERE id = :id"),
                                       {"id": sub["id"]})).scalar_one()
    assert clear is None
    await new_referral(hooked, sender, recipient)
    await wait_for(lambda: len(receiver.received) >= 1)
    headers, content = receiver.received[-1]
    Webhook(legacy).verify(content, headers)
