"""GET /stats publishes no count under 11 and nothing that gives one away; GET /referrals/suggestions ranks the
registry read model."""

from __future__ import annotations

from datetime import UTC, datetime

from services.referral.domain import SUPPRESSED
from tests.integration.referral.conftest import Service, body
from tests.support.disclosure import audit, figures

OVERSIGHT = "agency-oversight"
STATS = "stats:read"


async def seed_quarter(svc: Service) -> list[str]:
    """Referrals made, acknowledged and decided across 2025-Q4, some counts large and some small."""
    senders = [await svc.agency() for _ in range(2)]
    recipients = [await svc.agency() for _ in range(3)]
    plan = [  # month, pathway, sender, recipient, how many, accepted, rejected, left unacknowledged
        (10, "service", 0, 0, 14, 12, 2, 0), (10, "protection", 1, 1, 12, 1, 0, 1), (10, "avrr", 1, 2, 11, 0, 0, 0),
        (11, "service", 0, 0, 12, 11, 0, 1), (11, "service", 1, 2, 2, 0, 0, 2),
        (12, "service", 1, 2, 5, 0, 0, 0), (12, "protection", 0, 1, 13, 0, 0, 0),
    ]
    for month, pathway, s, r, count, accepted, rejected, unacknowledged in plan:
        svc.clock.now = datetime(2025, month, 3, 9, tzinfo=UTC)
        ids = []
        for _ in range(count):
            case_id, _ = svc.intake.add_case(senders[s])
            extra = {"pathway": pathway, "service_type": {"protection": "protection.rsd", "avrr": "avrr",
                                                          "service": "shelter"}[pathway]}
            response = await svc.refer(senders[s], body(case_id, recipients[r], **extra))
            assert response.status_code == 201, response.text
            ids.append(response.json()["id"])
        svc.clock.advance(hours=20)
        for rid in ids[:count - unacknowledged]:
            assert (await svc.move(recipients[r], rid, "received")).status_code == 200
        svc.clock.advance(days=2)
        for rid in ids[:accepted]:
            assert (await svc.move(recipients[r], rid, "accepted")).status_code == 200
        for rid in ids[accepted:accepted + rejected]:
            assert (await svc.move(recipients[r], rid, "rejected", "no-capacity")).status_code == 200
        svc.clock.advance(days=20)
        await svc.referrals.flag_overdue()
    return senders + recipients


async def test_stats_of_every_month_and_quarter_give_no_suppressed_cell_away(svc: Service) -> None:
    ours = await seed_quarter(svc)
    svc.clock.now = datetime(2026, 3, 1, 9, tzinfo=UTC)
    documents = []
    for period in ("2025-07", "2025-08", "2025-09", "2025-10", "2025-11", "2025-12", "2026-01", "2025-Q3",
                   "2025-Q4", "2026-Q1"):
        response = await svc.client.get("/stats", params={"period": period}, headers=svc.headers(OVERSIGHT, STATS))
        if period == "2026-Q1":  # not ended
            assert response.status_code == 422 and "has not ended" in response.json()["detail"]
            continue
        assert response.status_code == 200, response.text
        documents.append(response.json())
    published = {cell: v for d in documents for cell, v in figures(d).items() if v != SUPPRESSED}
    assert all(isinstance(v, int) and v >= 11 for v in published.values()), published
    october, quarter = documents[3], documents[8]
    # Published where safe: October's 14 service and 12 protection referrals (the 11 avrr go to cover the
    # zeros of the other two pathways), the 23 the second sender sent, 14 acknowledged in 20 hours.
    assert october["referrals"]["total"] == 37
    assert october["referrals"]["share_with_consent"] == SUPPRESSED  # 37 of 37: the 0 overrides would show
    assert october["referrals"]["by_pathway"] == {"service": 14, "protection": 12, "avrr": SUPPRESSED,
                                                  "assistance": SUPPRESSED, "resettlement": SUPPRESSED}
    assert october["referrals"]["by_sending_agency"][ours[1]] == 23
    assert october["referrals"]["by_sending_agency"][ours[0]] == SUPPRESSED  # smallest, covers the zeros
    service = october["by_pathway"]["service"]
    assert (service["decisions"], service["accepted"], service["rejected"]) == (14, SUPPRESSED, SUPPRESSED)
    assert service["acknowledged"] == 14 and service["median_hours_to_acknowledge"] == 20.0
    # A quarter publishes a figure only where each of its months does, as their sum.
    assert quarter["referrals"]["total"] == 37 + 14 + 18
    months = [figures(d) for d in documents[3:6]]
    for (_, *cell), value in figures(quarter).items():
        shown = [m[("2025-" + str(n), *cell)] for m, n in zip(months, (10, 11, 12), strict=True)]
        if value != SUPPRESSED:
            assert SUPPRESSED not in shown and value == sum(shown), (cell, value, shown)
    # An attacker holding all of them, knowing every other agency's cells (all 0: a stronger attacker, and a
    # smaller program), works out nothing about any suppressed cell.
    others = {cell: 0 for d in documents for cell in figures(d)
              if cell[1] in ("by_sending_agency", "by_receiving_agency") and cell[2] not in ours}
    findings = audit(documents, known=others)
    assert len(findings) > 40
    assert [f.cell for f in findings if f.recovered] == []


async def test_stats_need_their_own_scope_and_a_closed_month_or_quarter(svc: Service) -> None:
    agency = await svc.agency()
    refused = await svc.client.get("/stats", params={"period": "2025-10"}, headers=svc.headers(agency))
    assert refused.status_code == 403 and refused.json()["required_scopes"] == [STATS]
    oversight = svc.headers(OVERSIGHT, STATS)
    for params, name in (({"period": "2025-13"}, "period"), ({"period": "2026-Q5"}, "period"),
                         ({"period": "2026-11"}, "period"), ({"period": "x" * 5000}, "period"), ({}, "period"),
                         ({"period": "2025-10", "since": "0001-01-01T00:00:00+14:00"}, "since"),
                         ({"period": "2025-10", "until": "9999-12-31T23:59:59-14:00"}, "until"),
                         ({"since": "0001-01-01T00:00:00+14:00", "until": "9999-12-31T23:59:59-14:00"}, None)):
        response = await svc.client.get("/stats", params=params, headers=oversight)
        assert response.status_code == 422, (params, response.text)
        problem = response.json()
        assert problem["type"] == "urn:refnet:problem:validation-error"
        if name is not None:
            assert problem["errors"][0]["loc"] == ["query", name], problem


async def test_suggestions_rank_the_registry_read_model(svc: Service) -> None:
    sender, good, full, far, busy = [await svc.agency() for _ in range(5)]
    tax = "legal.representation"
    best = await svc.service(good, taxonomy=tax, languages=["ti", "ar"], location={"lat": 15.6, "lon": 32.5})
    full_svc = await svc.service(full, taxonomy=tax, available=0, status="full")
    far_svc = await svc.service(far, taxonomy=tax, languages=["ar"], location={"lat": 19.6, "lon": 37.2})
    related = await svc.service(far, taxonomy="legal.counselling")
    busy_svc = await svc.service(busy, taxonomy=tax, languages=["ti", "ar"])
    await svc.service(good, taxonomy="shelter")
    case_id, _ = svc.intake.add_case(sender, consent_to=busy)
    await svc.refer(sender, body(case_id, busy, service_type=tax))

    response = await svc.client.get("/referrals/suggestions", headers=svc.headers(sender), params={
        "service_type": tax, "languages": "ti,ar", "near": "15.5,32.56", "case_id": case_id})
    assert response.status_code == 200, response.text
    ranked = [item["service_id"] for item in response.json()["items"]]
    assert ranked[:2] == [best, far_svc]
    assert busy_svc not in ranked  # this case already has an open referral there
    assert ranked.index(related) < ranked.index(full_svc)
    first = response.json()["items"][0]
    assert first["agency_id"] == good and first["distance_km"] < 20 and "accepting" in first["reasons"]
    for bad in ({"service_type": "spa"}, {"service_type": tax, "near": "x"}, {"service_type": tax, "near": "91,0"},
                {"service_type": tax, "languages": "Tigrinya!"}, {"service_type": tax, "country": "Sudan"}, {}):
        answer = await svc.client.get("/referrals/suggestions", params=bad, headers=svc.headers(sender))
        assert answer.status_code == 422, bad
