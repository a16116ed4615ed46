"""The rules of agencies' own identity providers (services/registry/federation.py), without I/O."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from services.registry import federation as rules

TRUST = rules.Trust(
    issuer="https://sso.ngo.example.org/realms/staff", discovery_url=rules.default_discovery_url(
        "https://sso.ngo.example.org/realms/staff"), jwks_uri=None, client_id="refnet",
    auth_method="client_secret_basic", scope="openid", login_claim="preferred_username",
    roles_claim="realm_access.roles", role_map={"rn-cw": "caseworker", "rn-sup": "supervisor", "rn-aud": "auditor"},
    tenant_claim=None, tenant_value=None, mfa_amr=("mfa", "otp"), mfa_acr=("gold",),
    algorithms=rules.DEFAULT_ALGORITHMS)


def test_claims_are_read_by_dotted_path_and_by_a_name_with_dots() -> None:
    claims: dict[str, Any] = {"realm_access": {"roles": ["a"]}, "https://ngo.example.org/roles": ["b"]}
    assert rules.claim_at(claims, "realm_access.roles") == ["a"]
    assert rules.claim_at(claims, "https://ngo.example.org/roles") == ["b"]
    assert rules.claim_at(claims, "realm_access.missing") is None
    assert rules.claim_at({"realm_access": "text"}, "realm_access.roles") is None


def test_roles_map_and_unknown_values_are_ignored() -> None:
    claims = {"realm_access": {"roles": ["offline_access", "rn-sup", "rn-cw"]}}
    assert rules.mapped_roles(claims, TRUST, "ngo") == ["caseworker", "supervisor"]
    assert rules.mapped_roles({"realm_access": {"roles": ["offline_access"]}}, TRUST, "ngo") == []
    assert rules.mapped_roles({}, TRUST, "ngo") == []
    assert rules.mapped_roles({"realm_access": {"roles": "rn-cw other"}}, TRUST, "ngo") == ["caseworker"]
    # An auditor only in an oversight agency: a role the agency's kind may not give maps to nothing.
    assert rules.mapped_roles({"realm_access": {"roles": ["rn-aud"]}}, TRUST, "ngo") == []
    assert rules.mapped_roles({"realm_access": {"roles": ["rn-aud"]}}, TRUST, "oversight") == ["auditor"]


def test_the_tenant_must_match_when_the_trust_names_one() -> None:
    entra = replace(TRUST, tenant_claim="tid", tenant_value="t-ours")
    assert rules.tenant_matches({"tid": "t-ours"}, entra)
    assert not rules.tenant_matches({"tid": "t-theirs"}, entra)
    assert not rules.tenant_matches({}, entra)
    assert not rules.tenant_matches({"tid": ["t-ours"]}, entra)
    assert rules.tenant_matches({}, TRUST)


def test_a_second_factor_counts_only_as_the_trust_says() -> None:
    assert rules.second_factor_proven({"amr": ["pwd", "otp"]}, TRUST)
    assert rules.second_factor_proven({"amr": ["pwd"], "acr": "gold"}, TRUST)
    assert not rules.second_factor_proven({"amr": ["pwd"], "acr": "silver"}, TRUST)
    assert not rules.second_factor_proven({"amr": ["pwd", "otp"]}, replace(TRUST, mfa_amr=(), mfa_acr=()))


def test_the_registrys_amr_says_only_what_refnet_accepted() -> None:
    assert rules.session_amr({"amr": ["pwd", "otp"]}, True) == ["pwd", "otp"]
    assert rules.session_amr({"amr": ["pwd"], "acr": "gold"}, True) == ["pwd", "mfa"]
    assert rules.session_amr({"amr": ["pwd", "otp", "mfa"]}, False) == ["pwd"]
    assert rules.session_amr({"amr": ["pwd", "free text", "hwk"]}, False) == ["pwd", "hwk"]


@pytest.mark.parametrize(("value", "expected"), [
    ("cw-0142", "cw-0142"), ("CW-0142", "cw-0142"), ("amina@ngo.example.org", None), ("Amina K", None), (7, None)])
def test_a_login_is_the_login_claim_only_when_it_is_an_opaque_login(value: Any, expected: str | None) -> None:
    login = rules.login_for({"preferred_username": value}, TRUST, "sub-1")
    assert login == (expected or rules.derived_login(TRUST.issuer, "sub-1"))
    assert login.startswith("fed-") == (expected is None)


def test_a_subject_is_a_short_printable_string() -> None:
    assert rules.subject_of({"sub": "248289761001"}) == "248289761001"
    assert rules.subject_of({"sub": ""}) is None
    assert rules.subject_of({"sub": "x" * 256}) is None
    assert rules.subject_of({"sub": 5}) is None


def test_a_trust_is_checked() -> None:
    assert rules.check_trust(TRUST, "ngo", has_secret=True, allow_http=False) == [("role_map", "the role auditor "
                                                                                   "is only for agencies of kind "
                                                                                   "oversight")]
    good = replace(TRUST, role_map={"rn-cw": "caseworker"})
    assert rules.check_trust(good, "ngo", has_secret=True, allow_http=False) == []
    wrong = dict(rules.check_trust(replace(good, issuer="http://sso.example.org", algorithms=("RS256", "none"),
                                           scope="profile", roles_claim="a b"), "ngo", has_secret=False,
                                   allow_http=False))
    assert set(wrong) == {"issuer", "algorithms", "scope", "roles_claim", "client_secret"}
    assert rules.check_trust(replace(good, issuer="http://127.0.0.1:8080/realms/x", discovery_url=
                                     "http://127.0.0.1:8080/realms/x/.well-known/openid-configuration"),
                             "ngo", has_secret=True, allow_http=True) == []
    keyed = replace(good, auth_method="private_key_jwt")
    assert [f for f, _ in rules.check_trust(keyed, "ngo", has_secret=True, allow_http=False)] == ["client_secret"]
    assert rules.check_trust(keyed, "ngo", has_secret=False, allow_http=False) == []
    assert "HS256" not in rules.ALLOWED_ALGORITHMS and "none" not in rules.ALLOWED_ALGORITHMS
