"""GET /indicators: an agency's own figures per month, exact, from the real service and database -- only the
calling agency's, whoever of it asks, and never with a case, a referral or another agency named."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from refnet_client import AgencyIndicators
from services.referral.domain.indicators import reason_counts
from tests.integration.referral.conftest import Service, body

T0 = datetime(2025, 10, 3, 9, tzinfo=UTC)
NOV = datetime(2025, 11, 5, 9, tzinfo=UTC)


async def send(svc: Service, sender: str, recipient: str, at: datetime) -> tuple[str, str]:
    svc.clock.now = at
    case_id, _ = svc.intake.add_case(sender)
    response = await svc.refer(sender, body(case_id, recipient))
    assert response.status_code == 201, response.text
    return response.json()["id"], case_id


async def move(svc: Service, agency: str, rid: str, to: str, at: datetime, reason: str | None = None) -> None:
    svc.clock.now = at
    response = await svc.move(agency, rid, to, reason)
    assert response.status_code == 200, response.text


def hours(n: float) -> datetime:
    return T0 + timedelta(hours=n)


async def seed(svc: Service) -> tuple[str, str, str, list[str]]:
    """Agencies A, B and C; referrals both ways between A and B, and from B to C, over October and November
    2025, in every state the indicators count. Returns the agencies and every case and referral id."""
    a, b, c = [await svc.agency() for _ in range(3)]
    made = [await send(svc, a, b, T0) for _ in range(4)]  # r1..r4: A -> B
    r1, r2, r3, r4 = (rid for rid, _ in made)
    s1, s2 = [(await send(svc, b, a, T0))[0] for _ in range(2)]  # B -> A
    made += [(s1, ""), (s2, "")]
    c1, _ = await send(svc, b, c, T0)  # B -> C: none of A's business
    # B acknowledges r1, r2, r3 after 2, 4 and 6 hours; A acknowledges s1 and s2 after 10; C c1 after 10.
    for rid, after in ((r1, 2), (r2, 4), (r3, 6)):
        await move(svc, b, rid, "received", hours(after))
    for rid in (s1, s2):
        await move(svc, a, rid, "received", hours(10))
    await move(svc, c, c1, "received", hours(10))
    # A day on: B accepts r1 and declines r2, A cancels r4 (never acknowledged); A accepts s1 after 30 hours and
    # declines s2; C accepts c1.
    await move(svc, b, r1, "accepted", hours(24))
    await move(svc, b, r2, "rejected", hours(24), "no-capacity")
    await move(svc, a, r4, "cancelled", hours(25), "no-longer-needed")
    await move(svc, a, s1, "accepted", hours(30))
    await move(svc, a, s2, "rejected", hours(30), "outside-mandate")
    await move(svc, c, c1, "accepted", hours(30))
    # November: B completes r1 (sent and accepted in October); A sends r5, left unanswered; B sends s3, which A
    # acknowledges within the hour.
    await move(svc, b, r1, "in_progress", NOV)
    await move(svc, b, r1, "completed", NOV + timedelta(days=1))
    r5, case5 = await send(svc, a, b, NOV)
    s3, _ = await send(svc, b, a, NOV)
    await move(svc, a, s3, "received", NOV + timedelta(minutes=45))
    ids = [x for pair in made for x in pair if x] + [c1, r5, case5, s3]
    return a, b, c, ids


def zeros(received: bool) -> dict[str, Any]:
    figures: dict[str, Any] = {"referrals": 0, "accepted": 0, "rejected": 0, "cancelled": 0, "completed": 0,
                               "acceptance_rate": None, "rejection_reasons": reason_counts({})}
    if received:
        figures |= {"acknowledged": 0, "median_hours_to_acknowledge": None, "median_hours_to_accept": None}
    return figures


async def test_each_agency_sees_its_own_exact_figures_and_nothing_of_anyone_else(svc: Service) -> None:
    a, b, c, ids = await seed(svc)
    svc.clock.now = datetime(2025, 12, 10, 12, tzinfo=UTC)
    months = {"from": "2025-10", "to": "2025-12"}
    response = await svc.client.get("/indicators", params=months, headers=svc.headers(a))
    assert response.status_code == 200, response.text
    mine = response.json()
    assert (mine["agency_id"], mine["from"], mine["to"]) == (a, "2025-10", "2025-12")
    october, november, december = mine["months"]
    assert [m["month"] for m in mine["months"]] == ["2025-10", "2025-11", "2025-12"]
    assert [m["complete"] for m in mine["months"]] == [True, True, False]
    assert october["sent"] == {"referrals": 4, "accepted": 1, "rejected": 1, "cancelled": 1, "completed": 0,
                               "acceptance_rate": 0.5, "rejection_reasons": reason_counts({"no-capacity": 1})}
    assert october["received"] == {
        "referrals": 2, "acknowledged": 2, "accepted": 1, "rejected": 1, "cancelled": 0, "completed": 0,
        "acceptance_rate": 0.5, "median_hours_to_acknowledge": 10.0, "median_hours_to_accept": 30.0,
        "rejection_reasons": reason_counts({"outside-mandate": 1})}
    # r1, sent and accepted in October, was completed in November: counted when it happened.
    assert november["sent"] == zeros(False) | {"referrals": 1, "completed": 1}
    assert november["received"] == zeros(True) | {"referrals": 1, "acknowledged": 1,
                                                   "median_hours_to_acknowledge": 0.8}
    assert december["sent"] == zeros(False) and december["received"] == zeros(True)
    # Nothing that names a case, a referral or another agency.
    for other in (*ids, b, c):
        assert other not in response.text

    theirs = (await svc.client.get("/indicators", params=months, headers=svc.headers(b))).json()
    assert theirs["agency_id"] == b
    october, november, _ = theirs["months"]
    assert october["sent"] == {"referrals": 3, "accepted": 2, "rejected": 1, "cancelled": 0, "completed": 0,
                               "acceptance_rate": 0.6667,
                               "rejection_reasons": reason_counts({"outside-mandate": 1})}
    assert october["received"] == {
        "referrals": 4, "acknowledged": 3, "accepted": 1, "rejected": 1, "cancelled": 1, "completed": 0,
        "acceptance_rate": 0.5, "median_hours_to_acknowledge": 4.0, "median_hours_to_accept": 24.0,
        "rejection_reasons": reason_counts({"no-capacity": 1})}
    assert november["received"] == zeros(True) | {"referrals": 1, "completed": 1}
    assert november["sent"] == zeros(False) | {"referrals": 1}
    assert a not in str(theirs) and c not in str(theirs)

    # One of A's people, with their own token, gets A's figures: the agency the token names, nobody else's.
    person = svc.issuer.mint_person(agency=a)
    as_person = await svc.client.get("/indicators", params=months, headers={"Authorization": f"Bearer {person}"})
    assert as_person.status_code == 200, as_person.text
    assert as_person.json() == mine
    # The integrators' client reads the answer as it is.
    parsed = AgencyIndicators.model_validate(mine)
    assert (parsed.from_, parsed.months[0].received.median_hours_to_accept) == ("2025-10", 30.0)


async def test_the_default_range_is_the_twelve_months_up_to_now(svc: Service) -> None:
    agency = await svc.agency()
    svc.clock.now = datetime(2026, 2, 1, 0, 0, tzinfo=UTC)
    answer = (await svc.client.get("/indicators", headers=svc.headers(agency))).json()
    assert (answer["from"], answer["to"], len(answer["months"])) == ("2025-03", "2026-02", 12)
    assert answer["months"][-1]["complete"] is False and answer["months"][-2]["complete"] is True


async def test_bad_parameters_are_422_naming_them_and_there_is_no_agency_parameter(svc: Service) -> None:
    agency, other = await svc.agency(), await svc.agency()
    svc.clock.now = datetime(2025, 12, 10, 12, tzinfo=UTC)
    for params, name in (({"from": "2025-13"}, "from"), ({"from": "2025-1"}, "from"), ({"to": "Dec"}, "to"),
                         ({"from": "x" * 5000}, "from"), ({"to": "2026-01"}, "to"),
                         ({"from": "2025-11", "to": "2025-10"}, "from"), ({"from": "2023-12", "to": "2025-12"}, "from"),
                         ({"agency": other}, "agency"), ({"agency_id": other}, "agency_id")):
        response = await svc.client.get("/indicators", params=params, headers=svc.headers(agency))
        assert response.status_code == 422, (params, response.text)
        problem = response.json()
        assert problem["type"] == "urn:refnet:problem:validation-error"
        assert problem["errors"][0]["loc"] == ["query", name], problem
        assert other not in response.text and "x" * 50 not in response.text
    refused = await svc.client.get("/indicators", headers=svc.headers(agency, "referrals:write"))
    assert refused.status_code == 403 and refused.json()["required_scopes"] == ["referrals:read"]
