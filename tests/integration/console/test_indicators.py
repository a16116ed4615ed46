"""A supervisor's page of the agency's own numbers, from its referrals and their histories."""

from __future__ import annotations

from tests.integration.console.conftest import Console


async def test_a_supervisor_sees_the_agencys_numbers(console: Console) -> None:
    net = console.network
    net.person.roles = ["supervisor"]
    net.person.agency = "agy_unhcr"
    net.referrals["r1"] = {
        "id": "r1", "status": "rejected", "case_id": "case-1", "from_agency": "agy_iom", "to_agency": "agy_unhcr",
        "pathway": "protection", "priority": "normal", "created_at": "2026-12-01T08:00:00+00:00",
        "history": [{"from": None, "to": "requested", "at": "2026-12-01T08:00:00+00:00"},
                    {"from": "requested", "to": "received", "at": "2026-12-01T11:00:00+00:00"},
                    {"from": "received", "to": "rejected", "at": "2026-12-01T12:00:00+00:00",
                     "reason_code": "outside-mandate"}]}
    session = await console.sign_in()
    page = await console.get("/indicators", session=session)
    assert page.status_code == 200
    assert "0 %" in page.text and "3.0 h" in page.text and "outside mandate" not in page.text
    assert "outside-mandate" in page.text and "2026-12" in page.text
    net.person.roles = ["caseworker"]
    other = await console.sign_in()
    assert (await console.get("/indicators", session=other)).status_code == 403
