"""The agency admin's other pages (issue #21): the agency's webhook subscriptions (the signing secret shown once,
on the answer only; rotate, reactivate, delete; the recent deliveries) and the agency's services in the directory
with their capacity. Another agency's subscription or service is not found; nobody else has the pages."""

from __future__ import annotations

import re

from tests.integration.console.conftest import Console


async def _admin(console: Console) -> str:
    console.network.person.roles = ["agency_admin"]
    return await console.sign_in()


async def test_an_agency_admin_adds_a_webhook_and_sees_its_secret_once(console: Console) -> None:
    session = await _admin(console)
    page = await console.get("/webhooks", session=session)
    assert page.status_code == 200 and 'href="/webhooks"' in page.text and 'href="/services"' in page.text
    token = await console.csrf(session, "/webhooks")
    refused = await console.post("/webhooks", session, {"csrf": token, "url": "http://plain.example.org/hook"})
    assert refused.status_code == 422 and 'id="error-url"' in refused.text
    assert 'value="http://plain.example.org/hook"' in refused.text  # what was typed stays in the form
    added = await console.post("/webhooks", session, {"csrf": token, "url": "https://cms.example.org/hook",
                                                      "event_types": "referral.requested.v1, referral.overdue.v1"})
    assert added.status_code == 200 and "whsec_SECRET-ONE" in added.text
    assert added.headers["cache-control"] == "no-store"
    [created] = console.network.subscriptions.values()
    assert created["event_types"] == ["referral.requested.v1", "referral.overdue.v1"]
    assert console.network.api_calls[-1] == ("POST", "/subscriptions", "person-1", None)  # as the person
    again = await console.get("/webhooks", session=session)
    assert "https://cms.example.org/hook" in again.text and "whsec_" not in again.text
    # A new secret: shown on that answer only as well.
    rotated = await console.post(f"/webhooks/{created['id']}/rotate", session, {"csrf": token})
    assert rotated.status_code == 200 and "whsec_SECRET-TWO" in rotated.text
    assert "whsec_" not in (await console.get("/webhooks", session=session)).text


async def test_an_agency_admin_reactivates_and_deletes_a_subscription(console: Console) -> None:
    session = await _admin(console)
    console.network.subscriptions["sub_1"] = {
        "id": "sub_1", "agency_id": "agy_iom", "url": "https://cms.example.org/hook", "event_types": None,
        "status": "disabled", "consecutive_failures": 12, "next_attempt_at": "2026-12-03T10:00:00Z",
        "created_at": "2026-12-01T10:00:00Z", "disabled_at": "2026-12-02T10:00:00Z"}
    page = await console.get("/webhooks", session=session)
    assert 'id="reactivate-sub_1"' in page.text
    token = await console.csrf(session, "/webhooks")
    without_token = await console.post("/webhooks/sub_1/reactivate", session, {})
    assert without_token.status_code == 403 and console.network.subscriptions["sub_1"]["status"] == "disabled"
    reactivated = await console.post("/webhooks/sub_1/reactivate", session, {"csrf": token})
    assert reactivated.status_code == 303 and console.network.subscriptions["sub_1"]["status"] == "active"
    assert 'id="reactivate-sub_1"' not in (await console.get("/webhooks", session=session)).text
    deleted = await console.post("/webhooks/sub_1/delete", session, {"csrf": token})
    assert deleted.status_code == 303 and console.network.subscriptions["sub_1"]["status"] == "deleted"
    assert "cms.example.org" not in (await console.get("/webhooks", session=session)).text


async def test_a_subscriptions_recent_deliveries_newest_first(console: Console) -> None:
    session = await _admin(console)
    console.network.subscriptions["sub_1"] = {
        "id": "sub_1", "agency_id": "agy_iom", "url": "https://cms.example.org/hook", "event_types": None,
        "status": "active", "consecutive_failures": 1, "next_attempt_at": "2026-12-03T10:00:00Z",
        "created_at": "2026-12-01T10:00:00Z", "disabled_at": None}
    # More than a page of the log (500) and more than the page shows (50): the newest 50, newest first.
    console.network.deliveries["sub_1"] = [
        {"id": str(n), "event_id": f"evt-{n}", "event_type": "org.refnet.referral.requested.v1", "attempt": n % 3 + 1,
         "outcome": "failed" if n == 599 else "delivered", "status_code": 500 if n == 599 else 204, "error": None,
         "duration_ms": 80, "at": f"2026-12-02T10:{n // 60 % 60:02d}:{n % 60:02d}Z"} for n in range(600)]
    page = await console.get("/webhooks/sub_1", session=session)
    assert page.status_code == 200
    rows = re.findall(r"<tr>\s*<td>([^<]*)</td>", page.text.split('id="deliveries"')[1])
    assert len(rows) == 50 and rows[0] == "2026-12-02 10:09:59" and rows[-1] == "2026-12-02 10:09:10"
    assert "500" in page.text and "failed" in page.text


async def test_another_agencys_subscription_is_not_found(console: Console) -> None:
    session = await _admin(console)
    console.network.subscriptions["sub_other"] = {
        "id": "sub_other", "agency_id": "agy_unhcr", "url": "https://unhcr.example.org/hook", "event_types": None,
        "status": "disabled", "consecutive_failures": 12, "next_attempt_at": "2026-12-03T10:00:00Z",
        "created_at": "2026-12-01T10:00:00Z", "disabled_at": "2026-12-02T10:00:00Z"}
    assert "unhcr.example.org" not in (await console.get("/webhooks", session=session)).text
    assert (await console.get("/webhooks/sub_other", session=session)).status_code == 404
    token = await console.csrf(session, "/webhooks")
    for step in ("reactivate", "delete", "rotate"):
        answer = await console.post(f"/webhooks/sub_other/{step}", session, {"csrf": token})
        assert answer.status_code == 404, step
    assert console.network.subscriptions["sub_other"]["status"] == "disabled"


def _directory() -> list[dict[str, object]]:
    def service(sid: str, agency: str, name: str) -> dict[str, object]:
        return {"id": sid, "agency_id": agency, "name": name, "taxonomy": "shelter.emergency",
                "capacity": {"available": 2, "total": 10, "status": "accepting"}, "status": "active"}
    return [service("svc-a", "agy_unhcr", "Their shelter"), service("svc-b", "agy_iom", "Our shelter"),
            service("svc-c", "agy_unhcr", "Their clinic"), service("svc-d", "agy_iom", "Our clinic")]


async def test_an_agency_admin_sees_the_agencys_services_and_sets_a_capacity(console: Console) -> None:
    console.network.services = _directory()
    session = await _admin(console)
    page = await console.get("/services", session=session)
    # Its own services, across the directory's pages; no other agency's.
    assert page.status_code == 200 and "Our shelter" in page.text and "Our clinic" in page.text
    assert "Their" not in page.text and 'id="capacity-svc-b"' in page.text
    token = await console.csrf(session, "/services")
    refused = await console.post("/services/svc-b/capacity", session,
                                 {"csrf": token, "total": "4", "available": "9", "status": "accepting"})
    assert refused.status_code == 422 and 'id="error-available"' in refused.text
    assert 'aria-describedby="error-available"' in refused.text
    assert 'id="available-svc-b" name="available" inputmode="numeric" value="9"' in refused.text  # as typed
    set_ = await console.post("/services/svc-b/capacity", session,
                              {"csrf": token, "total": "4", "available": "0", "status": "full"})
    assert set_.status_code == 303 and set_.headers["location"] == "/services"
    assert console.network.services[1]["capacity"] == {"total": 4, "available": 0, "status": "full"}
    assert console.network.api_calls[-1] == ("PUT", "/services/svc-b/capacity", "person-1", None)
    # Another agency's service: not found, and unchanged.
    other = await console.post("/services/svc-a/capacity", session,
                               {"csrf": token, "total": "1", "available": "0", "status": "closed"})
    assert other.status_code == 404 and console.network.services[0]["capacity"]["status"] == "accepting"


async def test_a_caseworker_has_neither_page(console: Console) -> None:
    session = await console.sign_in()
    assert 'href="/webhooks"' not in (await console.get("/inbox", session=session)).text
    for page in ("/webhooks", "/webhooks/sub_1", "/services"):
        assert (await console.get(page, session=session)).status_code == 403, page
