"""The agency admin's pages' rules (issue #21): who has them, the forms as the APIs' bodies, the recent deliveries
newest first, the agency's own services out of the whole directory."""

from __future__ import annotations

from services.console import domain
from services.console.domain import Form, Page, Role


def test_only_an_agency_admin_has_the_webhooks_and_services() -> None:
    assert domain.pages_for([Role.agency_admin]) == [Page.staff, Page.webhooks, Page.services]
    assert domain.home_page([Role.agency_admin]) == Page.staff
    for role in (Role.caseworker, Role.supervisor, Role.auditor):
        assert not domain.may_use([role], Page.webhooks) and not domain.may_use([role], Page.services)


def test_a_subscription_form_as_the_body() -> None:
    assert domain.subscription_body(Form([("url", " https://x.example.org/h "), ("event_types", "")])) == {
        "url": "https://x.example.org/h", "event_types": None}
    typed = Form([("url", "https://x.example.org/h"), ("event_types", "referral.requested.v1, Referral.Overdue.v1,")])
    assert domain.subscription_body(typed)["event_types"] == ["referral.requested.v1", "referral.overdue.v1"]


def test_a_capacity_form_as_the_body_leaves_what_is_not_a_number_for_the_api_to_name() -> None:
    assert domain.capacity_body(Form([("total", "10"), ("available", "3"), ("status", "accepting")])) == {
        "total": 10, "available": 3, "status": "accepting"}
    assert domain.capacity_body(Form([("total", "ten"), ("status", "full")])) == {
        "total": "ten", "available": None, "status": "full"}


def test_recent_deliveries_are_the_last_ones_newest_first() -> None:
    log = [{"id": str(n)} for n in range(120)]
    recent = domain.recent_deliveries(log)
    assert len(recent) == domain.RECENT_DELIVERIES and recent[0]["id"] == "119" and recent[-1]["id"] == "70"
    assert domain.recent_deliveries([]) == []


def test_the_agencys_own_services() -> None:
    found = [{"id": "a", "agency_id": "agy_1"}, {"id": "b", "agency_id": "agy_2"}, {"id": "c"}]
    assert domain.own_services(found, "agy_1") == [{"id": "a", "agency_id": "agy_1"}]
