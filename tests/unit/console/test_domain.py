"""The console's rules, alone: roles and pages, the moves a party is offered, sessions' ageing, the CSRF token,
refusals in plain words, and the forms as the APIs' bodies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.console import domain
from services.console.domain import Page, Role


def test_pages_follow_roles() -> None:
    assert domain.pages_for([Role.caseworker]) == [Page.inbox, Page.cases]
    assert domain.pages_for([Role.supervisor]) == [Page.inbox, Page.cases, Page.overrides, Page.indicators]
    assert domain.pages_for([Role.auditor]) == [Page.audit]
    assert domain.home_page([Role.agency_admin]) == Page.staff and domain.home_page([]) is None
    assert not domain.may_use([Role.caseworker], Page.audit)
    # A claim the console does not know is not a role.
    assert domain.known_roles(["caseworker", "root", 3]) == frozenset({Role.caseworker})


def test_the_recipient_and_the_sender_are_offered_their_own_moves() -> None:
    recipient = domain.next_moves("received", my_agency="b", from_agency="a", to_agency="b")
    assert [(m.to, m.reason_required) for m in recipient] == [("accepted", False), ("rejected", True)]
    assert "no-capacity" in recipient[1].reasons
    sender = domain.next_moves("received", my_agency="a", from_agency="a", to_agency="b")
    assert [m.to for m in sender] == ["cancelled"]
    assert domain.next_moves("completed", my_agency="a", from_agency="a", to_agency="b") == []
    assert domain.next_moves("received", my_agency="c", from_agency="a", to_agency="b") == []


def test_a_session_ends_when_idle_or_too_old() -> None:
    clock = domain.SessionClock(idle=timedelta(minutes=15), lifetime=timedelta(hours=12))
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert not clock.expired(start, start, start + timedelta(minutes=14))
    assert clock.expired(start, start, start + timedelta(minutes=15))
    assert clock.expired(start, start + timedelta(hours=12), start + timedelta(hours=12, seconds=1))
    assert clock.seconds_left(start, start + timedelta(minutes=13)) == 120


def test_the_csrf_token_is_bound_to_its_session() -> None:
    token = domain.csrf_token("session-a")
    assert domain.csrf_ok("session-a", token)
    assert not domain.csrf_ok("session-b", token)
    assert not domain.csrf_ok("session-a", None) and not domain.csrf_ok("session-a", "")
    assert domain.session_key("session-a") != "session-a" and len(domain.session_key("session-a")) == 64


def test_refusals_in_plain_words() -> None:
    assert "consent" in domain.refusal_message("urn:refnet:problem:consent-missing", 409)
    assert domain.refusal_message("urn:refnet:problem:self-approval", 403) == domain.GUARD_MESSAGES["self-approval"]
    assert "consent" in domain.refusal_message("https://example.org/problems/consent-missing", 409)
    assert domain.refusal_message("about:blank", 404) == "Not found."
    assert domain.refusal_message(None, 500) == domain.GENERIC_REFUSAL
    assert domain.refusal_message("https://x/<script>", 409) == domain.GENERIC_REFUSAL


def test_field_errors_name_the_form_field() -> None:
    errors = [{"loc": ["body", "person", "given_name"], "msg": "required"},
              {"loc": ["body", "provisions", 0, "data_categories"], "msg": "at least 1"},
              {"loc": ["body"], "msg": "whole"}, "junk", {"loc": "x", "msg": 1}]
    assert domain.field_errors(errors) == {"given_name": "required", "data_categories": "at least 1",
                                           "_form": "whole"}


def test_the_language_remembered_comes_first() -> None:
    offered = ["en", "fr", "ar"]
    assert domain.choose_language("ar", "fr-FR,fr;q=0.9", offered, "en") == "ar"
    assert domain.choose_language(None, "fr-FR,fr;q=0.9", offered, "en") == "fr"
    assert domain.choose_language("xx", "de", offered, "en") == "en"
    assert domain.direction("ar") == "rtl" and domain.direction("fr") == "ltr"


def test_forms_become_the_apis_bodies() -> None:
    form = domain.Form([("given_name", " Amina "), ("trafficking_status", "possible"), ("identified_by", "ngo"),
                        ("languages", "ar, EN,ar"), ("estimated_age", "24"), ("exploitation_types", "begging"),
                        ("exploitation_types", "begging"), ("fear_of_return", "on"), ("citizenship", "ng")])
    body = domain.case_body(form)
    assert body["person"] == {"given_name": "Amina", "languages": ["ar", "en"], "estimated_age": 24,
                              "citizenship": "NG"}
    assert body["screening"] == {"trafficking_status": "possible", "identified_by": "ngo", "fear_of_return": True,
                                 "exploitation_types": ["begging"]}
    consent = domain.consent_body(domain.Form([("recipient_agency", "agy_unhcr"), ("data_categories", "identity"),
                                               ("grantor", "guardian"), ("child_assent", "yes"),
                                               ("checklist_use_explained", "on"), ("consent_language", "en")]),
                                  ["use_explained", "purpose_explained"], "2030-01-01T00:00:00+00:00")
    assert consent["provisions"] == [{"purpose": "referral", "recipient_agency": "agy_unhcr",
                                      "data_categories": ["identity"], "decision": "permit"}]
    assert consent["child_assent"] is True and consent["grantor"] == "guardian"
    assert consent["checklist"] == {"use_explained": True, "purpose_explained": False}


def test_choices_come_from_intakes_schema() -> None:
    document = {"components": {"schemas": {
        "Person": {"properties": {"gender": {"enum": ["feminine", "unknown"]},
                                  "documents": {"items": {"enum": ["passport"]}}}},
        "Screening": {"properties": {"trafficking_status": {"anyOf": [{"enum": ["possible"]}, {"type": "null"}]}}},
        "Checklist": {"properties": {"use_explained": {}, "purpose_explained": {}}}}}}
    choices = domain.choices_of(document)
    assert choices["gender"] == ["feminine", "unknown"] and choices["documents"] == ["passport"]
    assert choices["trafficking_status"] == ["possible"] and choices["identified_by"] == []
    assert choices["checklist"] == ["purpose_explained", "use_explained"]
    assert domain.choices_of({})["gender"] == []

