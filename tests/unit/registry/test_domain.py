"""The registry's pure rules: assertion claims, scope grants, languages, geography, taxonomy, countries."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.registry import domain
from services.registry.domain import AssertionPolicy, OAuthError, check_assertion_claims, grant_scopes
from shared import geo, reference

NOW = 1_800_000_000.0
POLICY = AssertionPolicy(audiences=frozenset({"https://reg/oauth/token", "https://reg"}))


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"iss": "cli_a", "sub": "cli_a", "aud": "https://reg/oauth/token",
                            "exp": NOW + 60, "iat": NOW, "jti": "j1"}
    for name, value in overrides.items():
        if value is None:
            base.pop(name, None)
        else:
            base[name] = value
    return base


def test_a_good_assertion_yields_its_jti_and_exp() -> None:
    assert check_assertion_claims(claims(), "cli_a", POLICY, NOW) == ("j1", NOW + 60)
    assert check_assertion_claims(claims(aud=["x", "https://reg"]), "cli_a", POLICY, NOW)[0] == "j1"


@pytest.mark.parametrize(
    "overrides",
    [
        {"iss": "cli_b"}, {"sub": "cli_b"}, {"aud": "https://other"}, {"aud": [1, 2]}, {"aud": None},
        {"exp": None}, {"exp": NOW - 31}, {"exp": NOW + 301 + 30}, {"exp": "soon"}, {"exp": math.inf},
        {"exp": True}, {"nbf": NOW + 60}, {"iat": NOW + 60}, {"jti": None}, {"jti": ""}, {"jti": "x" * 257},
        {"jti": 5},
    ],
    ids=str,
)
def test_bad_assertion_claims_are_invalid_client(overrides: dict[str, Any]) -> None:
    with pytest.raises(OAuthError) as refused:
        check_assertion_claims(claims(**overrides), "cli_a", POLICY, NOW)
    assert refused.value.error == "invalid_client" and refused.value.status == 401


def test_scopes_granted_are_those_asked_for_and_held() -> None:
    assert grant_scopes(None, ["b", "a"]) == ["a", "b"]
    assert grant_scopes("  ", ["a"]) == ["a"]
    assert grant_scopes("a", ["a", "b"]) == ["a"]
    with pytest.raises(OAuthError) as refused:
        grant_scopes("a c", ["a", "b"])
    assert refused.value.error == "invalid_scope" and "c" in refused.value.description
    with pytest.raises(OAuthError):
        grant_scopes('a "b"', ["a"])


@given(st.sets(st.sampled_from(sorted(domain.SCOPES))), st.sets(st.sampled_from(sorted(domain.SCOPES))))
def test_a_token_never_carries_a_scope_not_held(held: set[str], asked: set[str]) -> None:
    try:
        granted = grant_scopes(" ".join(sorted(asked)) or None, held)
    except OAuthError:
        assert asked - held
        return
    assert set(granted) <= held


@pytest.mark.parametrize(
    ("header", "available", "expected"),
    [
        ("it-IT, en;q=0.5", ["en", "it"], "it"),
        ("fr", ["en"], "en"),
        ("pt-BR", ["en", "pt"], "pt"),
        ("de;q=0, fr;q=0.4, it;q=0.9", ["fr", "it", "de"], "it"),
        (None, ["fr", "ar"], "ar"),
        ("*", ["en", "fr"], "en"),
        ("garbage;q=x", ["fr"], "fr"),
    ],
)
def test_accept_language_picks_the_best_text(header: str | None, available: list[str], expected: str) -> None:
    assert domain.pick_language(header, available) == expected


def test_no_text_no_language() -> None:
    assert domain.pick_language("en", []) is None


def test_distance_rome_naples_and_near_parsing() -> None:
    assert geo.distance_km(41.9028, 12.4964, 40.8518, 14.2681) == pytest.approx(189, abs=3)
    assert geo.parse_near("41.9,12.5") == (41.9, 12.5)
    for bad in ("91,0", "0,181", "a,b", "1", "1,2,3", "nan,1"):
        with pytest.raises(ValueError):
            geo.parse_near(bad)


def test_taxonomy_codes_prefixes_and_countries() -> None:
    assert len(reference.TAXONOMY) == 20
    assert reference.is_taxonomy_code("protection.rsd") and not reference.is_taxonomy_code("protection")
    assert reference.is_taxonomy_prefix("protection") and reference.is_taxonomy_prefix("health.srh")
    assert not reference.is_taxonomy_prefix("heal") and not reference.is_taxonomy_prefix("spa")
    assert len(reference.COUNTRIES) == 249 and reference.is_country("ER") and not reference.is_country("XX")
    assert domain.check_capacity(3, 2) and domain.check_capacity(-1, 2) and domain.check_capacity(2, 2) is None


def test_only_an_active_client_authenticates_and_only_a_real_change_is_a_suspension() -> None:
    domain.check_client_active("active")
    with pytest.raises(OAuthError) as refused:
        domain.check_client_active("suspended")
    assert refused.value.error == "invalid_client"
    assert domain.is_suspension("active", "suspended")
    assert not domain.is_suspension("suspended", "suspended") and not domain.is_suspension("suspended", "active")


def test_only_oversight_agencies_may_hold_stats_read() -> None:
    assert domain.scopes_not_for_kind("ngo", ["cases:read", "stats:read"]) == ["stats:read"]
    assert domain.scopes_not_for_kind("oversight", ["audit:read", "stats:read"]) == []
    for kind in (*domain.AGENCY_KINDS, domain.PLATFORM_KIND):
        held = domain.holdable_scopes(kind, domain.SCOPES)
        assert ("stats:read" in held) == (kind == "oversight")
        assert set(domain.SCOPES) - set(held) <= {"stats:read"}


# --- who may hold what ----------------------------------------------------------------------------------


def test_the_api_may_not_add_a_platform_scope_but_may_keep_one_held() -> None:
    assert domain.scopes_the_api_may_not_grant(["admin", "cases:read", "cases:clearance"]) == [
        "admin", "cases:clearance"]
    assert domain.scopes_the_api_may_not_grant(["cases:clearance"], held=["cases:clearance"]) == []
    assert domain.scopes_the_api_may_not_grant(["admin", "cases:clearance"], held=["admin"]) == ["cases:clearance"]
    assert domain.scopes_the_api_may_not_grant(sorted(domain.SCOPES - domain.PLATFORM_SCOPES)) == []


def test_credentials_of_a_platform_scope_holder_are_not_set_by_the_api() -> None:
    assert not domain.credentials_settable_by_api(["registry:read", "admin"])
    assert not domain.credentials_settable_by_api(["cases:clearance"])
    assert domain.credentials_settable_by_api(["cases:read", "audit:read"])


def test_introspection_is_for_platform_clients_and_a_tokens_own_client() -> None:
    assert domain.may_introspect(domain.PLATFORM_KIND, "cli_referral", "cli_iom")
    assert domain.may_introspect("ngo", "cli_iom", "cli_iom")
    assert not domain.may_introspect("ngo", "cli_iom", "cli_unhcr")
    assert not domain.may_introspect("un_agency", "cli_iom", None)
