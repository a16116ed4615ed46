"""The supervisor's page: colleagues' pending risk-to-life overrides to approve or refuse, never their own (the
page offers no approval of one's own request, and the API's refusal of a forged one is shown in plain words)."""

from __future__ import annotations

from tests.integration.console.conftest import Console


def pending(override_id: str, requested_by: str) -> dict[str, object]:
    return {"id": override_id, "case_id": "case-9", "recipient_agency": "agy_unhcr", "state": "pending",
            "requested_by": requested_by, "requested_at": "2026-12-03T10:00:00+00:00", "approved_by": None,
            "approved_at": None, "valid_until": None, "revoked_by": None, "revoked_at": None}


async def test_a_supervisor_approves_a_colleagues_override_and_not_their_own(console: Console) -> None:
    net = console.network
    net.person.roles = ["supervisor"]
    net.cases.append("case-9")
    net.overrides["ovr-colleague"] = pending("ovr-colleague", "person-2")
    net.overrides["ovr-mine"] = pending("ovr-mine", "person-1")
    session = await console.sign_in()
    page = await console.get("/overrides", session=session)
    assert page.status_code == 200
    assert 'id="approve-ovr-colleague"' in page.text
    assert 'id="approve-ovr-mine"' not in page.text  # one's own request offers no approval
    token = await console.csrf(session, "/overrides")
    # Forged anyway: the API refuses, the page says why in plain words, and nothing changed.
    forged = await console.post("/cases/case-9/overrides/ovr-mine/decision", session,
                                {"csrf": token, "decision": "approve", "back": "overrides"})
    assert forged.status_code == 403
    assert "You cannot approve an override you requested yourself." in forged.text
    assert net.overrides["ovr-mine"]["state"] == "pending"
    approved = await console.post("/cases/case-9/overrides/ovr-colleague/decision", session,
                                  {"csrf": token, "decision": "approve", "back": "overrides"})
    assert approved.status_code == 303 and approved.headers["location"] == "/overrides"
    assert net.overrides["ovr-colleague"]["state"] == "active"
    assert net.overrides["ovr-colleague"]["approved_by"] == "person-1"  # the supervisor's own token


async def test_a_caseworker_has_no_supervisor_page(console: Console) -> None:
    session = await console.sign_in()
    assert (await console.get("/overrides", session=session)).status_code == 403
    assert 'href="/overrides"' not in (await console.get("/inbox", session=session)).text
