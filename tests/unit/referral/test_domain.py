"""The referral rules alone: every guard both ways, every legal move by its party, every illegal one."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.referral import domain
from services.referral.domain import (
    FAIL_REASONS,
    OPEN_STATES,
    REJECT_REASONS,
    SENDER_CANCEL_REASONS,
    SYSTEM_CANCEL_REASONS,
    TRANSITIONS,
    CaseFacts,
    InvalidTransition,
    NewReferral,
    Party,
    Pathway,
    Priority,
    ReasonCodeInvalid,
    Recipient,
    ServiceOffer,
    Status,
    allowed_moves,
    check_guards,
    decide_transition,
    due_at,
    is_overdue,
)

ADULT = CaseFacts(is_minor=False, bia_completed=False, bid_completed=False, fear_of_return=False)
CHILD_WITH_BIA_BID = CaseFacts(is_minor=True, bia_completed=True, bid_completed=True, fear_of_return=False)
ACTIVE = Recipient("agency-b", "active")
ACCEPTING = ServiceOffer("svc-1", "agency-b", "shelter", "accepting", 3)


def new(**changes: object) -> NewReferral:
    base = NewReferral(pathway=Pathway.service, consent_permitted=True, facts=ADULT, recipient=ACTIVE,
                       service=None, open_pathways_of_case=())
    return replace(base, **changes)  # type: ignore[arg-type]


def guard(referral: NewReferral) -> str | None:
    failure = check_guards(referral)
    return failure.guard if failure else None


# --- guards -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pathway", list(Pathway))
def test_an_adult_with_consent_to_an_active_recipient_passes_every_guard(pathway: Pathway) -> None:
    assert guard(new(pathway=pathway)) is None


def test_consent_missing_refuses_and_consent_present_passes() -> None:
    assert guard(new(consent_permitted=False)) == "consent-missing"
    assert guard(new(consent_permitted=True)) is None


def test_consent_is_checked_before_anything_else() -> None:
    everything_wrong = new(consent_permitted=False, facts=replace(ADULT, is_minor=True, fear_of_return=True),
                           pathway=Pathway.avrr, recipient=Recipient("agency-b", "suspended"))
    assert guard(everything_wrong) == "consent-missing"


@pytest.mark.parametrize("pathway", list(Pathway))
def test_child_without_bia_is_refused_on_every_pathway(pathway: Pathway) -> None:
    child = replace(CHILD_WITH_BIA_BID, bia_completed=False)
    assert guard(new(pathway=pathway, facts=child)) == "child-bia-missing"


def test_child_with_bia_passes_the_bia_guard() -> None:
    child = replace(CHILD_WITH_BIA_BID, bid_completed=False)
    assert guard(new(pathway=Pathway.service, facts=child)) is None


def test_adult_needs_no_bia() -> None:
    assert guard(new(facts=replace(ADULT, bia_completed=False))) is None


@pytest.mark.parametrize("pathway", [Pathway.avrr, Pathway.resettlement])
def test_child_without_bid_is_refused_for_avrr_and_resettlement(pathway: Pathway) -> None:
    child = replace(CHILD_WITH_BIA_BID, bid_completed=False)
    assert guard(new(pathway=pathway, facts=child)) == "child-bid-missing"
    assert guard(new(pathway=pathway, facts=CHILD_WITH_BIA_BID)) is None


@pytest.mark.parametrize("pathway", [Pathway.protection, Pathway.assistance, Pathway.service])
def test_child_without_bid_may_be_referred_on_other_pathways(pathway: Pathway) -> None:
    child = replace(CHILD_WITH_BIA_BID, bid_completed=False)
    assert guard(new(pathway=pathway, facts=child)) is None


@pytest.mark.parametrize("pathway", [Pathway.avrr, Pathway.resettlement])
def test_adult_needs_no_bid(pathway: Pathway) -> None:
    assert guard(new(pathway=pathway)) is None


def test_avrr_refused_while_case_records_fear_of_return() -> None:
    assert guard(new(pathway=Pathway.avrr, facts=replace(ADULT, fear_of_return=True))) == "non-refoulement"


def test_avrr_refused_while_a_protection_referral_is_open() -> None:
    referral = new(pathway=Pathway.avrr, open_pathways_of_case=(Pathway.service, Pathway.protection))
    assert guard(referral) == "non-refoulement"


def test_avrr_allowed_with_only_other_open_pathways_and_no_fear() -> None:
    assert guard(new(pathway=Pathway.avrr, open_pathways_of_case=(Pathway.service, Pathway.assistance))) is None


@pytest.mark.parametrize("pathway", [p for p in Pathway if p is not Pathway.avrr])
def test_fear_of_return_does_not_stop_other_pathways(pathway: Pathway) -> None:
    referral = new(pathway=pathway, facts=replace(ADULT, fear_of_return=True),
                   open_pathways_of_case=(Pathway.protection,))
    assert guard(referral) is None


def test_suspended_recipient_refused_active_passes() -> None:
    assert guard(new(recipient=Recipient("agency-b", "suspended"))) == "recipient-suspended"
    assert guard(new(recipient=Recipient("agency-b", "active"))) is None


@pytest.mark.parametrize(("status", "available"), [("full", 3), ("closed", 3), ("accepting", 0)])
def test_service_full_or_closed_refused(status: str, available: int) -> None:
    offer = replace(ACCEPTING, capacity_status=status, available=available)
    assert guard(new(service=offer)) == "service-full"


def test_accepting_service_with_room_passes() -> None:
    assert guard(new(service=ACCEPTING)) is None


# --- lifecycle ----------------------------------------------------------------------------------------------

LEGAL: list[tuple[Status, Status, Party]] = [(f, t, p) for (f, t), p in TRANSITIONS.items()]
LEGAL += [(s, Status.cancelled, Party.sender) for s in sorted(OPEN_STATES)]
LEGAL += [(s, Status.cancelled, Party.system) for s in sorted(OPEN_STATES)]


def reason_for(to: Status, party: Party) -> str | None:
    if to is Status.rejected:
        return "no-capacity"
    if to is Status.failed:
        return "lost-contact"
    if to is Status.cancelled:
        return "consent-withdrawn" if party is Party.system else "no-longer-needed"
    return None


def test_the_diagram() -> None:
    assert set(TRANSITIONS) == {
        (Status.requested, Status.received), (Status.received, Status.accepted),
        (Status.received, Status.rejected), (Status.accepted, Status.in_progress),
        (Status.in_progress, Status.completed), (Status.in_progress, Status.on_hold),
        (Status.on_hold, Status.in_progress), (Status.in_progress, Status.failed),
    }
    assert set(TRANSITIONS.values()) == {Party.recipient}
    assert {s.value for s in OPEN_STATES} == {"requested", "received", "accepted", "in_progress", "on_hold"}


@pytest.mark.parametrize(("frm", "to", "party"), LEGAL, ids=lambda v: str(v))
def test_every_legal_move_by_its_party(frm: Status, to: Status, party: Party) -> None:
    move = decide_transition(frm, to, party, reason_for(to, party))
    assert (move.frm, move.to, move.party) == (frm, to, party)


ILLEGAL = [
    (f, t, p)
    for f, t, p in itertools.product(Status, Status, Party)
    if (f, t, p) not in set(LEGAL)
]


@pytest.mark.parametrize(("frm", "to", "party"), ILLEGAL, ids=lambda v: str(v))
def test_every_illegal_move_and_every_wrong_party_is_refused(frm: Status, to: Status, party: Party) -> None:
    with pytest.raises(InvalidTransition) as refused:
        decide_transition(frm, to, party, reason_for(to, party))
    assert refused.value.current is frm
    assert refused.value.allowed == allowed_moves(frm, party)
    assert str(frm) in str(refused.value)


def test_unknown_target_state_is_an_invalid_transition() -> None:
    with pytest.raises(InvalidTransition) as refused:
        decide_transition(Status.requested, "overdue", Party.recipient)
    assert refused.value.allowed == [Status.received]


def test_terminal_states_allow_nothing() -> None:
    for state in set(Status) - OPEN_STATES:
        for party in Party:
            assert allowed_moves(state, party) == []


@pytest.mark.parametrize(("to", "frm", "party", "codes"), [
    (Status.rejected, Status.received, Party.recipient, REJECT_REASONS),
    (Status.failed, Status.in_progress, Party.recipient, FAIL_REASONS),
    (Status.cancelled, Status.accepted, Party.sender, SENDER_CANCEL_REASONS),
    (Status.cancelled, Status.accepted, Party.system, SYSTEM_CANCEL_REASONS),
])
def test_reason_codes_required_where_the_contract_says(to: Status, frm: Status, party: Party,
                                                       codes: frozenset[str]) -> None:
    with pytest.raises(ReasonCodeInvalid):
        decide_transition(frm, to, party, None)
    with pytest.raises(ReasonCodeInvalid):
        decide_transition(frm, to, party, "made-up")
    for code in codes:
        assert decide_transition(frm, to, party, code).reason_code == code


def test_a_sender_cannot_use_the_systems_reason_codes() -> None:
    for code in SYSTEM_CANCEL_REASONS:
        with pytest.raises(ReasonCodeInvalid):
            decide_transition(Status.requested, Status.cancelled, Party.sender, code)


def test_moves_without_reasons_refuse_a_reason_code_and_on_hold_takes_an_optional_one() -> None:
    with pytest.raises(ReasonCodeInvalid):
        decide_transition(Status.requested, Status.received, Party.recipient, "other")
    assert decide_transition(Status.in_progress, Status.on_hold, Party.recipient).reason_code is None
    assert decide_transition(Status.in_progress, Status.on_hold, Party.recipient, "awaiting-person")
    with pytest.raises(ReasonCodeInvalid):
        decide_transition(Status.in_progress, Status.on_hold, Party.recipient, "nope")


# --- deadlines ----------------------------------------------------------------------------------------------

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("priority", "delta"), [
    (Priority.emergency, timedelta(hours=24)), (Priority.urgent, timedelta(hours=72)),
    (Priority.normal, timedelta(days=14)),
])
def test_due_at_from_priority(priority: Priority, delta: timedelta) -> None:
    assert due_at(priority, T0) == T0 + delta


def test_due_at_follows_the_deadlines_the_sops_agreed() -> None:
    agreed = {Priority.emergency: timedelta(hours=12), Priority.urgent: timedelta(hours=48),
              Priority.normal: timedelta(days=7)}
    assert [due_at(p, T0, agreed) - T0 for p in Priority] == [timedelta(hours=12), timedelta(hours=48),
                                                              timedelta(days=7)]


def test_overdue_only_while_requested_and_past_due() -> None:
    due = T0 + timedelta(hours=24)
    assert not is_overdue(Status.requested, due, due - timedelta(seconds=1))
    assert is_overdue(Status.requested, due, due)
    for status in set(Status) - {Status.requested}:
        assert not is_overdue(status, due, due + timedelta(days=30))


@given(st.lists(st.tuples(st.sampled_from(list(Party)), st.sampled_from(list(Status))), max_size=30))
def test_random_walks_only_follow_the_diagram_and_never_leave_a_terminal_state(
        steps: list[tuple[Party, Status]]) -> None:
    state = Status.requested
    for party, to in steps:
        try:
            move = decide_transition(state, to, party, reason_for(to, party))
        except InvalidTransition:
            continue
        assert (state, to) in TRANSITIONS or to is Status.cancelled
        assert state in OPEN_STATES
        state = move.to


# --- consent in force (issue 16, finding 8) -----------------------------------------------------------------

_AT = datetime(2026, 3, 1, tzinfo=UTC)


def _consent(*provisions: tuple[str | None, list[str], str], version: int = 2,
             valid_until: datetime | None = None) -> domain.KnownConsent:
    return domain.KnownConsent(version=version, kind="grant", valid_from=_AT - timedelta(days=1),
                               valid_until=valid_until, provisions=tuple(
                                   {"purpose": "referral", "recipient_agency": to, "data_categories": cats,
                                    "decision": d} for to, cats, d in provisions))


def test_only_a_grant_in_force_covers_a_referral() -> None:
    consent = _consent((None, ["identity", "demographics"], "permit"))
    assert domain.consent_covers(consent, recipient="b", categories=["identity"], at=_AT)
    assert not domain.consent_covers(consent, recipient="b", categories=["identity", "health"], at=_AT)
    assert not domain.consent_covers(None, recipient="b", categories=["identity"], at=_AT)
    assert not domain.consent_covers(domain.KnownConsent(version=3, kind="withdrawal"), recipient="b",
                                     categories=["identity"], at=_AT)
    expired = _consent((None, ["identity"], "permit"), valid_until=_AT)
    assert not domain.consent_covers(expired, recipient="b", categories=["identity"], at=_AT)
    denied = _consent((None, ["identity"], "permit"), ("b", ["identity"], "deny"))
    assert not domain.consent_covers(denied, recipient="b", categories=["identity"], at=_AT)
    assert domain.consent_covers(denied, recipient="c", categories=["identity"], at=_AT)


def test_referrals_under_any_earlier_version_end_when_the_version_in_force_does_not_cover_them() -> None:
    consent = _consent(("b", ["identity"], "permit"))
    open_ = [domain.OpenReferral("r-a", "a", ("identity",), "consent-v1"),
             domain.OpenReferral("r-b", "b", ("identity",), "consent-v1"),
             domain.OpenReferral("r-b2", "b", ("identity", "health"), "consent-v2"),
             domain.OpenReferral("r-override", "a", ("identity",), None)]
    assert domain.no_longer_consented(consent, open_, _AT) == ["r-a", "r-b2"]
    assert domain.no_longer_consented(None, open_, _AT) == ["r-a", "r-b", "r-b2"]


def test_a_clearance_is_stale_once_a_later_version_is_known() -> None:
    assert domain.consent_still_current(1, None)
    assert domain.consent_still_current(2, 2)
    assert not domain.consent_still_current(1, 3)
    assert domain.consent_still_current(None, 3)  # an override, not a consent


def test_free_text_reaches_the_recipient_only_open_shared_and_consented() -> None:
    def shown(viewer: Party, author: Party | None, status: Status = Status.accepted,
              shared: tuple[str, ...] = ("identity", "notes"), consented: bool = True) -> bool:
        return domain.free_text_shown(viewer=viewer, author=author, status=status, shared_categories=shared,
                                      consented=consented)

    assert shown(Party.recipient, Party.sender)
    assert not shown(Party.recipient, Party.sender, shared=("identity", "health"))  # free text needs notes
    assert not shown(Party.recipient, Party.sender, consented=False)
    assert not shown(Party.recipient, Party.sender, status=Status.completed)
    assert shown(Party.recipient, Party.recipient, status=Status.rejected, shared=("identity",))  # its own note
    assert not shown(Party.recipient, Party.system, consented=False)
    assert shown(Party.sender, Party.recipient, status=Status.cancelled, consented=False)  # the case's owner
