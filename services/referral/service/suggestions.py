"""Registry services suggested for a need (GET /referrals/suggestions), from the registry read model."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.referral import domain, store
from services.referral.domain import OPEN_STATES
from shared.auth import Principal


class Suggestions:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def suggest(self, principal: Principal, need: domain.Need, *, case_id: str | None,
                      limit: int) -> list[dict[str, Any]]:
        """Registry services ranked for a need; with ``case_id``, leaving out agencies the caller already has
        an open referral of that case with."""
        family = need.service_type.split(".", 1)[0]
        async with self.sessions() as session:
            rows = await store.active_services_of_family(session, family)
            busy: set[str] = set()
            if case_id is not None:
                busy = await store.open_recipients_of_case(session, case_id, principal.agency_id,
                                                           [str(s) for s in OPEN_STATES])
        offers = [domain.Offer(
            service_id=svc.service_id, agency_id=svc.agency_id, agency_active=agency_status == "active",
            taxonomy=svc.taxonomy, capacity_status=svc.capacity_status, available=svc.capacity_available,
            total=svc.capacity_total, languages=frozenset(svc.languages), countries=frozenset(svc.countries),
            accepts_children=svc.accepts_children, lat=svc.lat, lon=svc.lon,
        ) for svc, agency_status in rows if svc.agency_id not in busy and svc.agency_id != principal.agency_id]
        return [{
            "service_id": s.offer.service_id, "agency_id": s.offer.agency_id, "taxonomy": s.offer.taxonomy,
            "score": s.score, "reasons": list(s.reasons), "distance_km": s.distance_km,
            "capacity": {"available": s.offer.available, "total": s.offer.total, "status": s.offer.capacity_status},
            "languages": sorted(s.offer.languages), "countries": sorted(s.offer.countries),
            "accepts_children": s.offer.accepts_children,
        } for s in domain.rank_services(offers, need)[:limit]]
