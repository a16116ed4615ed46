"""Ranking registry services for a need, alone."""

from __future__ import annotations

from dataclasses import replace

import pytest

from services.referral.domain import Need, Offer, rank_services
from shared.geo import distance_km

BASE = Offer(service_id="s", agency_id="a", agency_active=True, taxonomy="shelter", capacity_status="accepting",
             available=3, total=10, languages=frozenset({"ar"}), countries=frozenset({"SD"}),
             accepts_children=True, lat=None, lon=None)


def offer(service_id: str, **changes: object) -> Offer:
    return replace(BASE, service_id=service_id, **changes)  # type: ignore[arg-type]


def ids(need: Need, *offers: Offer) -> list[str]:
    return [s.offer.service_id for s in rank_services(offers, need)]


def test_exact_taxonomy_beats_the_same_family_and_other_families_are_left_out() -> None:
    need = Need("health.medical")
    assert ids(need, offer("srh", taxonomy="health.srh"), offer("med", taxonomy="health.medical"),
               offer("shelter", taxonomy="shelter")) == ["med", "srh"]


def test_accepting_capacity_ranks_before_full_and_suspended_agencies_are_left_out() -> None:
    need = Need("shelter")
    assert ids(need, offer("full", capacity_status="full"), offer("open"), offer("zero", available=0),
               offer("suspended", agency_active=False)) == ["open", "full", "zero"]
    full = rank_services([offer("full", capacity_status="full")], need)[0]
    assert "full" in full.reasons


def test_languages_children_and_country_count() -> None:
    need = Need("shelter", languages=frozenset({"ti", "ar"}), is_child=True, country="SD")
    ranked = rank_services([offer("nothing", languages=frozenset({"fr"}), countries=frozenset({"LY"})),
                            offer("all", languages=frozenset({"ti", "ar"})),
                            offer("adults-only", accepts_children=False)], need)
    assert [s.offer.service_id for s in ranked] == ["all", "nothing"]
    assert set(ranked[0].reasons) >= {"language", "accepts-children", "country"}


def test_distance_breaks_ties_when_a_location_is_given() -> None:
    khartoum = (15.5007, 32.5599)
    need = Need("shelter", near=khartoum)
    far = offer("far", lat=19.6158, lon=37.2164)  # Port Sudan
    near = offer("near", lat=15.6, lon=32.5)
    nowhere = offer("nowhere")
    ranked = rank_services([far, nowhere, near], need)
    assert [s.offer.service_id for s in ranked] == ["near", "far", "nowhere"]
    assert ranked[0].distance_km is not None and ranked[0].distance_km < 20
    assert ranked[1].distance_km == pytest.approx(675, rel=0.05)


def test_haversine_known_distance() -> None:
    assert distance_km(51.5074, -0.1278, 48.8566, 2.3522) == pytest.approx(343.5, rel=0.01)
