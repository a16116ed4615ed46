"""GET /stats never reveals a count of 1 to 10; GET /referrals/suggestions ranks the registry read model."""

from __future__ import annotations

from typing import Any

from tests.integration.referral.conftest import Service, body


def small_counts(value: Any, path: str = "") -> list[str]:
    """Every place in a JSON document where a count of 1..10 shows (rates are floats, not counts)."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "k_anonymity":
                continue
            found += small_counts(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += small_counts(item, f"{path}[{i}]")
    elif isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 10:
        found.append(path)
    return found


async def test_stats_publish_only_counts_of_eleven_or_more(svc: Service) -> None:
    sender, recipient, small = await svc.agency(), await svc.agency(), await svc.agency()
    service_ids = []
    for _ in range(12):
        case_id, _ = svc.intake.add_case(sender)
        service_ids.append((await svc.refer(sender, body(case_id, recipient))).json()["id"])
    for rid in service_ids[:11]:
        await svc.move(recipient, rid, "received")
        await svc.move(recipient, rid, "accepted")
    for _ in range(3):
        case_id, _ = svc.intake.add_case(sender)
        await svc.refer(sender, body(case_id, small, pathway="protection", service_type="protection.rsd"))

    response = await svc.client.get("/stats", headers=svc.headers(recipient))
    assert response.status_code == 200, response.text
    stats = response.json()
    assert small_counts(stats) == []
    service = stats["by_pathway"]["service"]
    assert service["referrals"] == 12 and service["accepted"] == 11 and service["acknowledged"] == 11
    assert service["acceptance_rate"] == 1.0
    assert service["acknowledged_within_deadline"] == "<11"  # 11 of 12: the 1 left would show
    assert service["with_consent"] == 1.0
    assert stats["by_pathway"]["protection"]["referrals"] == "<11"
    assert stats["by_agency"][sender]["sent"] == {"service": 12, "protection": "<11"}
    assert stats["by_agency"][small]["received"] == {"protection": "<11"}
    # a period with nothing in it
    empty = await svc.client.get("/stats", params={"until": "2020-01-01T00:00:00Z"}, headers=svc.headers(sender))
    assert empty.json()["by_pathway"] == {}
    bad = await svc.client.get("/stats", params={"since": "2020-01-01T00:00:00"}, headers=svc.headers(sender))
    assert bad.status_code == 422 and bad.json()["errors"][0]["loc"] == ["query", "since"]


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
