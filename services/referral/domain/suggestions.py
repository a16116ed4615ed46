"""Ranking registry services for a need (GET /referrals/suggestions)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from shared import geo

# --- suggestions --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Offer:
    """A registry service as the read model knows it, for ranking."""

    service_id: str
    agency_id: str
    agency_active: bool
    taxonomy: str
    capacity_status: str
    available: int
    total: int
    languages: frozenset[str]
    countries: frozenset[str]
    accepts_children: bool
    lat: float | None
    lon: float | None


@dataclass(frozen=True)
class Need:
    """What the referring agency says it looks for (it knows its case; nothing here is sent anywhere)."""

    service_type: str
    languages: frozenset[str] = frozenset()
    is_child: bool | None = None
    country: str | None = None
    near: tuple[float, float] | None = None


@dataclass(frozen=True)
class Suggestion:
    offer: Offer
    score: int
    reasons: tuple[str, ...]
    distance_km: float | None


def _taxonomy_family(code: str) -> str:
    return code.split(".", 1)[0]


def rank_services(offers: Iterable[Offer], need: Need) -> list[Suggestion]:
    """Services fit for the need, best first: taxonomy match, then room to accept, languages in common,
    children accepted, country served; ties go to the nearest (when a location is given), then by id.

    Left out: services of suspended agencies, of another taxonomy family, and services that do not
    accept children when the person is a child. Full or closed services stay in, ranked last, so the
    sender sees them and why (a referral to them would be refused as service-full).
    """
    suggestions: list[Suggestion] = []
    for offer in offers:
        if not offer.agency_active:
            continue
        if need.is_child and not offer.accepts_children:
            continue
        reasons: list[str] = []
        score = 0
        if offer.taxonomy == need.service_type:
            score += 4
            reasons.append("taxonomy-exact")
        elif _taxonomy_family(offer.taxonomy) == _taxonomy_family(need.service_type):
            score += 1
            reasons.append("taxonomy-related")
        else:
            continue
        if offer.capacity_status == "accepting" and offer.available > 0:
            score += 3
            reasons.append("accepting")
        else:
            score -= 10
            reasons.append("full")
        common = len(need.languages & offer.languages)
        if common:
            score += min(common, 2)
            reasons.append("language")
        if need.is_child and offer.accepts_children:
            score += 1
            reasons.append("accepts-children")
        if need.country is not None:
            if need.country in offer.countries:
                score += 1
                reasons.append("country")
            else:
                score -= 1
        distance = None
        if need.near is not None and offer.lat is not None and offer.lon is not None:
            distance = round(geo.distance_km(*need.near, offer.lat, offer.lon), 1)
        suggestions.append(Suggestion(offer, score, tuple(reasons), distance))
    suggestions.sort(key=lambda s: (-s.score, s.distance_km if s.distance_km is not None else math.inf,
                                    s.offer.service_id))
    return suggestions
