"""The pure rules: derived facts, consent evaluation, projection by data category, overrides."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.intake import domain, schemas
from shared.reference import COUNTRIES as ISO_3166_ALPHA2

NOW = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.mark.parametrize(("age", "band"), [
    (None, "unknown"), (0, "0-8"), (8, "0-8"), (9, "9-17"), (17, "9-17"), (18, "18-20"), (20, "18-20"),
    (21, "21-23"), (24, "24-26"), (27, "27-29"), (29, "27-29"), (30, "30-38"), (38, "30-38"), (39, "39-47"),
    (47, "39-47"), (48, "48+"), (99, "48+"),
])
def test_ctdc_age_bands(age: int | None, band: str) -> None:
    assert domain.age_band(age) == band


@given(st.integers(min_value=0, max_value=120))
def test_minor_iff_under_18_and_bands_agree(age: int) -> None:
    assert domain.is_minor(age) is (age < 18)
    assert (domain.age_band(age) in ("0-8", "9-17")) is (age < 18)


def test_age_is_counted_on_the_day_of_intake() -> None:
    assert domain.age_on(date(2008, 6, 2), date(2026, 6, 1)) == 17
    assert domain.age_on(date(2008, 6, 1), date(2026, 6, 1)) == 18
    assert domain.age_on(date(2008, 2, 29), date(2026, 2, 28)) == 17


def test_country_list_is_iso_3166_alpha2() -> None:
    assert len(ISO_3166_ALPHA2) == 249
    assert {"ER", "LY", "SS", "XK"} & ISO_3166_ALPHA2 == {"ER", "LY", "SS"}  # XK is user-assigned


def _consent(*provisions: dict[str, Any], kind: str = "grant", version: int = 1,
             until: datetime | None = NOW + timedelta(days=1)) -> domain.ConsentState:
    return domain.ConsentState(id=f"c{version}", version=version, kind=kind,  # type: ignore[arg-type]
                               provisions=list(provisions), valid_from=NOW - timedelta(days=1), valid_until=until)


def _p(categories: list[str], recipient: str | None = None, decision: str = "permit",
       purpose: str = "referral") -> dict[str, Any]:
    return {"purpose": purpose, "recipient_agency": recipient, "data_categories": categories,
            "decision": decision}


def test_permits_every_category_for_that_recipient_and_purpose() -> None:
    c = _consent(_p(["identity", "contact"], "unhcr"))
    assert domain.permits(c, purpose="referral", recipient="unhcr", categories=["identity"])
    assert domain.permits(c, purpose="referral", recipient="unhcr", categories=["identity", "contact"])
    assert not domain.permits(c, purpose="referral", recipient="unhcr", categories=["identity", "health"])
    assert not domain.permits(c, purpose="referral", recipient="iom", categories=["identity"])
    assert not domain.permits(c, purpose="research", recipient="unhcr", categories=["identity"])
    assert not domain.permits(c, purpose="referral", recipient="unhcr", categories=[])
    assert not domain.permits(None, purpose="referral", recipient="unhcr", categories=["identity"])


def test_any_agency_and_deny_wins() -> None:
    c = _consent(_p(["identity", "contact"]), _p(["contact"], "iom", "deny"))
    assert domain.permits(c, purpose="referral", recipient="unhcr", categories=["contact"])
    assert not domain.permits(c, purpose="referral", recipient="iom", categories=["contact"])
    assert domain.permits(c, purpose="referral", recipient="iom", categories=["identity"])


def test_current_consent_is_the_latest_valid_grant() -> None:
    first = _consent(_p(["identity"]))
    assert domain.current_consent([first], NOW) == first
    withdrawal = _consent(kind="withdrawal", version=2, until=None)
    assert domain.current_consent([first, withdrawal], NOW) is None
    regrant = _consent(_p(["contact"]), version=3)
    assert domain.current_consent([first, withdrawal, regrant], NOW) == regrant
    assert domain.current_consent([first], NOW + timedelta(days=2)) is None  # expired
    assert domain.current_consent([], NOW) is None


def test_projection_keeps_only_the_shared_categories() -> None:
    view = {"id": "case-1", "status": "active", "owner_agency": "a", "created_at": "t", "is_minor": False,
            "age_band": "27-29", "person": {"given_name": "A", "phone": "+1", "gender": "feminine"},
            "screening": {"needs": ["shelter"], "notes": "n", "trafficking_status": "possible"}}
    assert domain.project(view, ["contact"]) == {"id": "case-1", "status": "active", "owner_agency": "a",
                                                  "created_at": "t", "person": {"phone": "+1"}}
    demographics = domain.project(view, ["demographics"])
    assert demographics["age_band"] == "27-29" and demographics["person"] == {"gender": "feminine"}
    assert "screening" not in demographics


def _consent_body(**overrides: Any) -> schemas.ConsentBody:
    body: dict[str, Any] = {
        "grantor": "self", "method": "oral", "language": "ar",
        "provisions": [_p(["identity"])], "valid_until": datetime.now(UTC) + timedelta(days=1),
        "checklist": dict.fromkeys(schemas.Checklist.model_fields, True),
    }
    return schemas.ConsentBody.model_validate(body | overrides)


def test_a_childs_consent_needs_a_guardian_with_assent() -> None:
    with pytest.raises(domain.ConsentRefused) as refused:
        domain.check_consent_for_case(_consent_body(), case_is_minor=True)
    assert refused.value.field == "grantor"
    with pytest.raises(domain.ConsentRefused) as refused:
        domain.check_consent_for_case(_consent_body(grantor="guardian"), case_is_minor=True)
    assert refused.value.field == "child_assent"
    domain.check_consent_for_case(_consent_body(grantor="guardian", child_assent=True), case_is_minor=True)
    domain.check_consent_for_case(_consent_body(), case_is_minor=False)
    with pytest.raises(domain.ConsentRefused):  # age unknown: presumed a child
        domain.check_consent_for_case(_consent_body(), case_is_minor=None)


# --- the risk-to-life override as two people's act (rule 6, issue 20) --------------------------------------

VALIDITY = timedelta(hours=72)
REQUESTED = domain.OverrideFacts(agency="agy_iom", requested_by="person-a", requested_at=NOW)
SUPERVISOR = domain.Signer(person="person-b", agency="agy_iom", roles=frozenset({"supervisor"}),
                           scopes=frozenset({"cases:write", "overrides:approve"}), acr=domain.ACR_MFA)


def _approved(at: datetime = NOW) -> domain.OverrideFacts:
    return domain.OverrideFacts(agency="agy_iom", requested_by="person-a", requested_at=NOW, approved_by="person-b",
                                approved_at=at, valid_until=at + VALIDITY)


def test_a_request_needs_a_person() -> None:
    assert domain.check_override_request(SUPERVISOR) == "person-b"
    with pytest.raises(domain.OverrideRefused) as refused:
        domain.check_override_request(domain.Signer(person=None, agency="agy_iom"))
    assert (refused.value.status, refused.value.slug) == (403, "person-token-required")


def test_a_different_supervisor_of_the_agency_approves() -> None:
    assert domain.check_override_approval(REQUESTED, SUPERVISOR, NOW + timedelta(hours=1), VALIDITY) == "person-b"


@pytest.mark.parametrize(("signer", "slug"), [
    (replace(SUPERVISOR, person=None), "person-token-required"),  # a system's token
    (replace(SUPERVISOR, person="person-a"), "self-approval"),
    (replace(SUPERVISOR, roles=frozenset({"caseworker"})), "supervisor-required"),
    (replace(SUPERVISOR, scopes=frozenset({"cases:write"})), "supervisor-required"),
    (replace(SUPERVISOR, agency="agy_unhcr"), "approver-of-another-agency"),
    (replace(SUPERVISOR, acr="urn:refnet:acr:pwd"), "second-factor-required"),
    (replace(SUPERVISOR, acr=None), "second-factor-required"),
])
def test_approval_refusals(signer: domain.Signer, slug: str) -> None:
    with pytest.raises(domain.OverrideRefused) as refused:
        domain.check_override_approval(REQUESTED, signer, NOW, VALIDITY)
    assert (refused.value.status, refused.value.slug) == (403, slug)


@pytest.mark.parametrize(("override", "at", "state"), [
    (REQUESTED, NOW, "pending"),
    (REQUESTED, NOW + VALIDITY, "expired"),  # a request nobody approved in time lapses
    (_approved(), NOW, "active"),
    (_approved(), NOW + VALIDITY - timedelta(seconds=1), "active"),
    (_approved(), NOW + VALIDITY, "expired"),
    (replace(_approved(), revoked_at=NOW + timedelta(hours=1)), NOW + timedelta(hours=1), "revoked"),
    (replace(REQUESTED, revoked_at=NOW), NOW, "revoked"),
])
def test_override_states(override: domain.OverrideFacts, at: datetime, state: str) -> None:
    assert domain.override_state(override, at, VALIDITY) == state


@pytest.mark.parametrize(("override", "at", "slug"), [
    (_approved(), NOW + timedelta(hours=1), "override-active"),
    (_approved(), NOW + VALIDITY, "override-expired"),
    (REQUESTED, NOW + VALIDITY, "override-expired"),
    (replace(REQUESTED, revoked_at=NOW), NOW + timedelta(minutes=1), "override-revoked"),
])
def test_only_a_pending_override_can_be_approved(override: domain.OverrideFacts, at: datetime, slug: str) -> None:
    with pytest.raises(domain.OverrideRefused) as refused:
        domain.check_override_approval(override, SUPERVISOR, at, VALIDITY)
    assert (refused.value.status, refused.value.slug) == (409, slug)


def test_revocation_by_the_requester_or_a_supervisor() -> None:
    requester = domain.Signer(person="person-a", agency="agy_iom", roles=frozenset({"caseworker"}))
    other_caseworker = replace(requester, person="person-c")
    assert domain.check_override_revocation(_approved(), requester, NOW, VALIDITY) == "person-a"
    assert domain.check_override_revocation(REQUESTED, SUPERVISOR, NOW, VALIDITY) == "person-b"
    for signer, slug in ((other_caseworker, "revoker-not-allowed"), (replace(requester, person=None),
                                                                     "person-token-required"),
                         (replace(SUPERVISOR, agency="agy_unhcr"), "revoker-not-allowed")):
        with pytest.raises(domain.OverrideRefused) as refused:
            domain.check_override_revocation(_approved(), signer, NOW, VALIDITY)
        assert refused.value.slug == slug
    with pytest.raises(domain.OverrideRefused) as late:
        domain.check_override_revocation(_approved(), requester, NOW + VALIDITY, VALIDITY)
    assert (late.value.status, late.value.slug) == (409, "override-expired")


def test_an_override_grants_only_once_approved_and_until_revoked() -> None:
    assert not domain.OverrideGrant("override-1", None, None).in_force(NOW)
    grant = domain.OverrideGrant("override-1", NOW, NOW + VALIDITY)
    assert grant.in_force(NOW) and not grant.in_force(NOW - timedelta(seconds=1))
    assert not grant.in_force(NOW + VALIDITY)
    revoked = domain.OverrideGrant("override-1", NOW, NOW + VALIDITY, revoked_at=NOW + timedelta(hours=1))
    assert revoked.in_force(NOW) and not revoked.in_force(NOW + timedelta(hours=1))


def test_unknown_age_is_presumed_a_child() -> None:
    assert domain.presumed_minor(None) is True
    assert domain.presumed_minor(True) is True
    assert domain.presumed_minor(False) is False


def test_a_recipients_purpose_needs_the_referral_and_itself_permitted() -> None:
    assert domain.recipient_purposes("referral") == {"referral"}
    assert domain.recipient_purposes("case_management") == {"referral", "case_management"}
    assert domain.recipient_purposes("audit") is None  # an oversight body's purpose, never a recipient's
    assert domain.recipient_purposes("curiosity") is None


def test_the_screening_is_split_between_clear_and_sealed_facts() -> None:
    screening = set(schemas.Screening.model_fields) - {"notes"}
    assert set(domain.CLEAR_FACTS) | set(domain.SEALED_FACTS) == screening
    assert not set(domain.CLEAR_FACTS) & set(domain.SEALED_FACTS)
