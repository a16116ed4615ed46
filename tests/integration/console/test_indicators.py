"""A supervisor's page of the agency's own numbers (the referral API's /indicators, for the token's agency)."""

from __future__ import annotations

from tests.integration.console.conftest import Console


async def test_a_supervisor_sees_the_agencys_numbers(console: Console) -> None:
    net = console.network
    net.person.roles = ["supervisor"]
    session = await console.sign_in()
    page = await console.get("/indicators", session=session)
    assert page.status_code == 200
    assert "2026-12 *" in page.text and "50 %" in page.text and "3.0 h" in page.text
    assert "outside-mandate: 1" in page.text and "no-capacity: 1" in page.text
    await console.post("/language", session, {"csrf": await console.csrf(session, "/indicators"), "language": "fr"})
    assert "hors mandat: 1" in (await console.get("/indicators", session=session)).text
    net.person.roles = ["caseworker"]
    other = await console.get("/indicators", session=await console.sign_in())
    assert other.status_code == 403
