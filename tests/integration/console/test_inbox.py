"""The inbox: filters as the form sends them ("any" is an empty value), and paging that keeps the filters."""

from __future__ import annotations

import html
import re

from tests.integration.console.conftest import Console


def referral(number: int, status: str = "requested") -> dict[str, object]:
    return {"id": f"ref-{number}", "status": status, "case_id": f"case-{number}", "from_agency": "agy_iom",
            "to_agency": "agy_unhcr", "service_id": None, "pathway": "protection", "service_type": None,
            "priority": "normal", "reason": None, "shared_categories": ["identity"], "due_at": None,
            "overdue": False}


async def test_the_filter_form_and_paging(console: Console) -> None:
    console.network.person.agency = "agy_unhcr"
    for number in range(3):
        console.network.referrals[f"ref-{number}"] = referral(number)
    console.network.referrals["ref-9"] = referral(9, "accepted")
    session = await console.sign_in()
    # What the filter form sends with "any" chosen: empty values, not a refusal.
    page = await console.get("/inbox?role=received&status=&pathway=", session=session)
    assert page.status_code == 200 and "ref-0" in page.text and "ref-1" in page.text and "ref-2" not in page.text
    found = re.search(r'<a href="/inbox\?([^"]+)">Next page</a>', page.text)
    assert found
    assert html.unescape(found.group(1)) == "role=received&cursor=2"
    filtered = await console.get("/inbox?role=received&status=requested", session=session)
    link = html.unescape(re.search(r'<a href="/inbox\?([^"]+)">Next page</a>', filtered.text).group(1))  # type: ignore[union-attr]
    assert link == "role=received&status=requested&cursor=2"
    second = await console.get(f"/inbox?{link}", session=session)
    assert "ref-2" in second.text and "ref-9" not in second.text and "Next page" not in second.text
    # A value that is no status at all is refused by name (RFC 9457), not a 500.
    assert (await console.get("/inbox?status=NOT%20ONE", session=session)).status_code == 422
