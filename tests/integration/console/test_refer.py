"""Referring from the console: a guard's refusal is explained in plain words beside the form; a referral the
API accepts opens on its own page (ids in the URL only), sent with an Idempotency-Key."""

from __future__ import annotations

import re

from tests.integration.console.conftest import Console


async def test_a_guards_refusal_in_plain_words_then_the_referral(console: Console) -> None:
    session = await console.sign_in()
    page = await console.get("/cases/case-1/refer", session=session)
    token = await console.csrf(session, "/cases/case-1/refer")
    key = re.search(r'name="idempotency_key" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    form = {"csrf": token, "idempotency_key": key, "to_agency": "agy_unhcr", "pathway": "protection",
            "priority": "normal", "reason": "Needs protection.", "shared_categories": ["identity", "health"]}
    refused = await console.post("/cases/case-1/refer", session, form)
    assert refused.status_code == 409
    assert "There is no consent in force that covers this recipient" in refused.text
    assert 'id="refer-form"' in refused.text  # the form again, to correct
    again = re.search(r'name="idempotency_key" value="([^"]+)"', refused.text).group(1)  # type: ignore[union-attr]
    assert again != key  # the corrected form is another request
    accepted = await console.post("/cases/case-1/refer", session,
                                  {**form, "idempotency_key": again, "shared_categories": ["identity"]})
    assert accepted.status_code == 303 and accepted.headers["location"] == "/referrals/ref-new"
    keys = [call[3] for call in console.network.api_calls if call[:2] == ("POST", "/referrals")]
    assert keys == [key, again]  # the form's own key each time: a form sent twice refers once


async def test_the_refer_page_suggests_services_for_the_case(console: Console) -> None:
    session = await console.sign_in()
    page = await console.get("/cases/case-1/refer?need=protection.rsd&country=ch", session=session)
    assert page.status_code == 200 and 'data-service="svc-rsd"' in page.text and 'value="svc-rsd"' in page.text
    assert ("GET", "/referrals/suggestions", "case-1", "protection.rsd") in console.network.api_calls
    # A need the ranking does not take: the directory's search alone, no refusal.
    assert (await console.get("/cases/case-1/refer?need=protection", session=session)).status_code == 200
