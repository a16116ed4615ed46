"""The disclosure rule (``domain.disclosure``): may this agency see these categories of this case now -- one
answer per reason, as reads and the referral service's clearance both ask it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from services.intake import domain

NOW = datetime(2026, 6, 1, tzinfo=UTC)
OWNER, RECIPIENT = "owner-agency", "recipient-agency"
SHARED = frozenset({"identity", "protection_needs"})


def _consent(*categories: str, purpose: str = "referral", recipient: str | None = RECIPIENT, version: int = 1,
             kind: str = "grant", decision: str = "permit") -> domain.ConsentState:
    provisions = [{"purpose": purpose, "recipient_agency": recipient, "data_categories": list(categories),
                   "decision": decision}] if categories else []
    return domain.ConsentState(id=f"consent-{version}", version=version, kind=kind,  # type: ignore[arg-type]
                               provisions=provisions, valid_from=NOW - timedelta(days=1),
                               valid_until=NOW + timedelta(days=1) if kind == "grant" else None)


def _referral(categories: frozenset[str] = SHARED, status: str = "accepted",
              consent_id: str | None = "consent-1") -> domain.Shared:
    return domain.Shared(status=status, categories=categories, consent_id=consent_id)


def _override(id: str = "override-1", *, start: timedelta = timedelta(hours=-1),
              hours: int = 72) -> domain.OverrideGrant:
    return domain.OverrideGrant(id=id, approved_at=NOW + start, valid_until=NOW + start + timedelta(hours=hours))


def decide(*, recipient: str = RECIPIENT, status: str = "active", referrals: Sequence[domain.Shared] = (),
           suspended: bool = False, consents: Sequence[domain.ConsentState] = (),
           overrides: Sequence[domain.OverrideGrant] = (), purpose: str = "referral",
           at: datetime = NOW) -> domain.Disclosure:
    return domain.disclosure(owner=OWNER, case_status=status, recipient=recipient, referrals=referrals,
                             suspended=suspended, consents=consents, overrides=overrides, purpose=purpose, at=at)


def test_the_owner_sees_all_of_its_case_even_erased() -> None:
    for status in ("active", "closed", "erased"):
        answer = decide(recipient=OWNER, status=status)
        assert answer.permitted and answer.owner and answer.reason is None
        assert answer.categories == frozenset(domain.ALL_CATEGORIES) and answer.basis == ("owner",)


def test_an_agency_without_a_referral_from_the_owner_is_not_a_party() -> None:
    answer = decide(consents=[_consent(*SHARED)])
    assert (answer.permitted, answer.reason, answer.categories) == (False, "not-a-party", frozenset())


@pytest.mark.parametrize("status", ["declined", "cancelled", "completed", "expired"])
def test_a_closed_referral_shows_nothing(status: str) -> None:
    answer = decide(referrals=[_referral(status=status)], consents=[_consent(*SHARED)])
    assert (answer.permitted, answer.reason) == (False, "referral-not-open")


def test_an_erased_case_shows_nothing_to_a_recipient_and_erasure_is_said_before_suspension() -> None:
    answer = decide(status="erased", referrals=[_referral()], consents=[_consent(*SHARED)], suspended=True)
    assert (answer.permitted, answer.reason) == (False, "case-erased")


def test_a_suspended_recipient_sees_nothing() -> None:
    answer = decide(referrals=[_referral()], consents=[_consent(*SHARED)], suspended=True,
                    overrides=[_override()])
    assert (answer.permitted, answer.reason) == (False, "recipient-suspended")


def test_audit_is_never_a_recipients_purpose() -> None:
    answer = decide(referrals=[_referral()], consents=[_consent(*SHARED)], purpose="audit")
    assert (answer.permitted, answer.reason) == (False, "purpose-not-permitted")


def test_another_purpose_needs_its_own_permission_beside_the_referrals() -> None:
    both = [_consent(*SHARED)]
    refused = decide(referrals=[_referral()], consents=both, purpose="law_enforcement")
    assert (refused.permitted, refused.reason) == (False, "purpose-not-permitted")
    provisions = [*_consent(*SHARED).provisions, *_consent(*SHARED, purpose="law_enforcement").provisions]
    granted = decide(referrals=[_referral()], purpose="law_enforcement", consents=[domain.ConsentState(
        id="consent-1", version=1, kind="grant", provisions=provisions, valid_from=NOW - timedelta(days=1),
        valid_until=NOW + timedelta(days=1))])
    assert granted.permitted and granted.categories == SHARED


def test_consent_in_force_permits_the_referrals_categories() -> None:
    consent = _consent(*SHARED)
    answer = decide(referrals=[_referral()], consents=[consent])
    assert answer.permitted and answer.reason is None
    assert answer.categories == SHARED and answer.consent == consent and answer.override_id is None
    assert answer.basis == ("consent",)


def test_without_consent_in_force_the_answer_is_consent_missing() -> None:
    withdrawn = [_consent(*SHARED), _consent(kind="withdrawal", version=2)]
    for consents in ([], [_consent("identity")], withdrawn, [_consent(*SHARED, recipient="someone-else")],
                     [_consent(*SHARED, decision="deny")]):
        answer = decide(referrals=[_referral()], consents=consents)
        assert (answer.permitted, answer.reason, answer.categories) == (False, "consent-missing", frozenset())
    expired = decide(referrals=[_referral()], consents=[_consent(*SHARED)], at=NOW + timedelta(days=2))
    assert (expired.permitted, expired.reason) == (False, "consent-missing")


def test_only_the_categories_of_permitted_referrals_are_shown() -> None:
    referrals = [_referral(frozenset({"identity"}), consent_id="consent-1"),
                 _referral(frozenset({"health"}), consent_id="consent-1"),
                 _referral(frozenset({"contact"}), status="declined")]
    answer = decide(referrals=referrals, consents=[_consent("identity", "contact")])
    assert answer.permitted and answer.categories == frozenset({"identity"})


def test_an_override_in_force_permits_a_referral_made_without_consent_for_its_own_purpose_only() -> None:
    referral = _referral(consent_id=None)
    answer = decide(referrals=[referral], overrides=[_override("override-1"), _override("override-2")])
    assert answer.permitted and answer.reason is None and answer.categories == SHARED
    assert answer.override_id == "override-2" and answer.consent is None and answer.basis == ("override",)
    # Not for another purpose, not for a referral made under consent, not before or after its time.
    other_purpose = decide(referrals=[referral], overrides=[_override()], purpose="law_enforcement")
    assert (other_purpose.permitted, other_purpose.reason) == (False, "purpose-not-permitted")
    under_consent = decide(referrals=[_referral(consent_id="consent-1")], overrides=[_override()])
    assert (under_consent.permitted, under_consent.reason) == (False, "consent-missing")
    for override in (_override(start=timedelta(hours=1)), _override(start=timedelta(hours=-73))):
        answer = decide(referrals=[referral], overrides=[override])
        assert (answer.permitted, answer.reason) == (False, "consent-missing")


def test_consent_and_override_each_for_their_own_referrals() -> None:
    consent = _consent("identity")
    answer = decide(referrals=[_referral(frozenset({"identity"})), _referral(frozenset({"contact"}), consent_id=None)],
                    consents=[consent], overrides=[_override()])
    assert answer.permitted and answer.categories == frozenset({"identity", "contact"})
    assert answer.basis == ("consent", "override") and answer.consent == consent


def test_clearance_asks_of_the_referral_about_to_be_made() -> None:
    """The referral service's question: no referral yet, so the one proposed, with no consent of its own."""
    proposed = [domain.Shared("requested", SHARED, consent_id=None)]
    assert decide(referrals=proposed, consents=[_consent(*SHARED)]).consent is not None
    assert decide(referrals=proposed, overrides=[_override()]).override_id == "override-1"
    assert decide(referrals=proposed).reason == "consent-missing"


