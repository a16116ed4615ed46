"""The people rules of services/registry/domain.py (issue #20): roles and their scopes, passwords, lockout,
inactivity, PKCE, redirect URIs -- and the TOTP and password mechanics of service/people.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyotp
import pytest

from services.registry import domain
from services.registry.service import people

NOW = datetime(2026, 12, 3, 16, 0, tzinfo=UTC)
CASEWORK = {"registry:read", "cases:read", "cases:write", "consent:write", "referrals:read", "referrals:write"}


def test_each_role_gets_the_agreed_scopes() -> None:
    assert set(domain.person_scopes("ngo", ["caseworker"])) == CASEWORK
    assert set(domain.person_scopes("ngo", ["supervisor"])) == CASEWORK | {"overrides:approve"}
    assert set(domain.person_scopes("ngo", ["agency_admin"])) == {"registry:read", "registry:write", "staff:admin",
                                                                 "webhooks:admin"}
    assert set(domain.person_scopes("oversight", ["auditor"])) == {"registry:read", "audit:read", "stats:read"}
    assert set(domain.person_scopes("ngo", ["caseworker", "agency_admin"])) == CASEWORK | {
        "registry:write", "staff:admin", "webhooks:admin"}


def test_an_agency_admin_keeps_the_agencys_services_and_webhooks() -> None:
    """Issue #21: the console's agency admin sets the agency's services' capacity (registry:write) and manages
    its webhook subscriptions (webhooks:admin); neither reaches another agency's (the APIs keep to one's own)."""
    scopes = set(domain.person_scopes("ngo", ["agency_admin"]))
    assert {"registry:write", "webhooks:admin"} <= scopes
    assert "events:read" not in scopes  # the event feed is an agency system's, not a person's


def test_stats_reach_only_an_oversight_agencys_people() -> None:
    assert "stats:read" not in domain.person_scopes("ngo", ["auditor"])


def test_an_agency_admin_reads_no_case_data() -> None:
    assert not {"cases:read", "referrals:read", "audit:read"} & set(domain.person_scopes("ngo", ["agency_admin"]))


def test_person_only_scopes_are_known_scopes_that_the_api_never_grants_to_clients() -> None:
    assert domain.PERSON_ONLY_SCOPES <= domain.SCOPES
    assert {"overrides:approve", "staff:admin", "webhooks:admin"} == domain.PERSON_ONLY_SCOPES


@pytest.mark.parametrize(("kind", "roles", "ok"), [
    ("ngo", ["caseworker"], True), ("ngo", ["caseworker", "supervisor"], True), ("oversight", ["auditor"], True),
    ("ngo", ["auditor"], False), ("ngo", [], False), ("ngo", ["root"], False), ("ngo", ["caseworker"] * 2, False),
    ("platform", ["agency_admin"], False),
])
def test_roles_an_agency_may_give(kind: str, roles: list[str], ok: bool) -> None:
    assert (domain.check_roles(kind, roles) is None) is ok


def test_roles_that_read_case_data_need_a_second_factor() -> None:
    for role in ("caseworker", "supervisor", "auditor"):
        assert domain.needs_second_factor([role])
    assert not domain.needs_second_factor(["agency_admin"])
    assert domain.needs_second_factor(["agency_admin", "caseworker"])


def test_authentication_context() -> None:
    assert domain.authentication_context(True) == (["pwd", "otp"], "urn:refnet:acr:mfa")
    assert domain.authentication_context(False) == (["pwd"], "urn:refnet:acr:pwd")


@pytest.mark.parametrize(("password", "ok"), [
    ("correct horse battery", True), ("short", False), ("x" * 300, False), ("aaaaaaaaaaaaaaaa", False),
    ("my-login-cw-7-and-more", False), ("            ", False),
])
def test_passwords(password: str, ok: bool) -> None:
    assert (domain.check_password(password, "cw-7") is None) is ok


def test_a_reason_never_repeats_the_password() -> None:
    reason = domain.check_password("cw-7 secret stuff", "cw-7")
    assert reason and "secret" not in reason


@pytest.mark.parametrize(("login", "ok"), [("cw-0142", True), ("a.b_c", True), ("Alice", False),
                                           ("person@example.org", False), ("x", False), ("-x", False)])
def test_logins_are_opaque_identifiers(login: str, ok: bool) -> None:
    assert (domain.check_login(login) is None) is ok


def test_lockout_after_the_limit_within_the_window_and_its_end() -> None:
    policy = domain.LockoutPolicy(max_failures=3, window_seconds=900, lock_seconds=600)
    state = domain.FailureState()
    for minute in range(3):
        assert not domain.is_locked(state, NOW)
        state = domain.after_failure(state, NOW + timedelta(minutes=minute), policy)
    assert domain.is_locked(state, NOW + timedelta(minutes=3))
    assert not domain.is_locked(state, NOW + timedelta(minutes=2, seconds=601))


def test_failures_outside_the_window_start_a_new_count() -> None:
    policy = domain.LockoutPolicy(max_failures=3, window_seconds=60, lock_seconds=600)
    state = domain.after_failure(domain.FailureState(), NOW, policy)
    state = domain.after_failure(state, NOW + timedelta(seconds=30), policy)
    state = domain.after_failure(state, NOW + timedelta(seconds=120), policy)  # the window has passed
    assert state.failures == 1 and not domain.is_locked(state, NOW + timedelta(seconds=121))


def test_idle_expiry() -> None:
    assert not domain.idle_expired(NOW, NOW + timedelta(seconds=899), 900)
    assert domain.idle_expired(NOW, NOW + timedelta(seconds=900), 900)


@pytest.mark.parametrize(("challenge", "method", "ok"), [
    ("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "S256", True),
    ("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "plain", False),
    ("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", None, False),
    (None, "S256", False), (None, None, False),
])
def test_pkce_is_s256_and_required(challenge: str | None, method: str | None, ok: bool) -> None:
    assert (domain.check_code_challenge(challenge, method) is None) is ok


@pytest.mark.parametrize(("uri", "ok"), [
    ("https://console.example.org/cb", True), ("http://127.0.0.1:8005/auth/callback", True),
    ("http://console.example.org/cb", False), ("https://console.example.org/cb#x", False), ("/cb", False),
])
def test_redirect_uris(uri: str, ok: bool) -> None:
    assert domain.redirect_uri_ok(uri) is ok


def test_staff_management_is_the_platform_admins_or_the_agencys_own_admins() -> None:
    assert domain.may_manage_staff({"admin"}, "agy_platform", "agy_x")
    assert domain.may_manage_staff({"staff:admin"}, "agy_x", "agy_x")
    assert not domain.may_manage_staff({"staff:admin"}, "agy_y", "agy_x")
    assert not domain.may_manage_staff({"registry:write", "cases:write"}, "agy_x", "agy_x")


# --- mechanics -------------------------------------------------------------------------------------------------


def test_passwords_are_argon2id_hashes() -> None:
    stored = people.hash_password("correct horse battery")
    assert stored.startswith("$argon2id$")
    assert people.verify_password("correct horse battery", stored)
    assert not people.verify_password("correct horse battery!", stored)
    assert not people.verify_password("anything", None)
    assert not people.verify_password("anything", "not a hash")


def test_a_totp_code_is_good_once_and_within_one_step_of_drift() -> None:
    secret = pyotp.random_base32()
    totp = pyotp.TOTP(secret)
    step = people.accepted_totp_step(secret, totp.at(NOW), None, NOW)
    assert step == totp.timecode(NOW)
    assert people.accepted_totp_step(secret, totp.at(NOW), step, NOW) is None  # replay
    assert people.accepted_totp_step(secret, totp.at(NOW + timedelta(seconds=30)), step, NOW) == step + 1
    assert people.accepted_totp_step(secret, totp.at(NOW + timedelta(seconds=90)), None, NOW) is None
    assert people.accepted_totp_step(secret, "12345", None, NOW) is None
