"""The agency admin's page: the agency's staff, inviting a person (the one-time link shown once, on the answer
only), refusals beside their fields; nobody else has the page."""

from __future__ import annotations

from tests.integration.console.conftest import Console


async def test_an_agency_admin_invites_a_person(console: Console) -> None:
    console.network.person.roles = ["agency_admin"]
    session = await console.sign_in()
    assert (await console.get("/", session=session)).headers["location"] == "/staff"
    token = await console.csrf(session, "/staff")
    refused = await console.post("/staff", session, {"csrf": token, "login": "cw-0142"})
    assert refused.status_code == 422 and 'id="error-roles"' in refused.text
    invited = await console.post("/staff", session, {"csrf": token, "login": "cw-0142", "roles": "caseworker"})
    assert invited.status_code == 200 and "SECRET-LINK" in invited.text and "cw-0142" in invited.text
    assert invited.headers["cache-control"] == "no-store"
    # Shown once: the list again has the person, not the link.
    again = await console.get("/staff", session=session)
    assert "cw-0142" in again.text and "SECRET-LINK" not in again.text


async def test_a_caseworker_has_no_staff_page(console: Console) -> None:
    session = await console.sign_in()
    assert (await console.get("/staff", session=session)).status_code == 403
