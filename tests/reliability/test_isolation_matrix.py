"""Isolation (issue #8, part 3; OWASP API1 broken object-level authorisation, API5 broken function-level authorisation).

Generated from the services' own OpenAPI documents, so that a new route cannot forget it:

- every operation whose path takes an id is in ``ROUTES``: either party-only (created here as one agency, called as
  another that holds every scope the operation needs and is party to nothing of it: 404, and nothing changed), or
  visible to every holder of its scope by design (the directory, the operator, the oversight body) with the reason;
  a route that is in neither fails the first test;
- every list an agency can read holds none of another agency's case, consent, referral or subscription ids;
- every secured operation refuses a token that lacks any one of its scopes with 403 ``insufficient_scope``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.e2e.network import Network, eventually
from tests.e2e.staff import Staff
from tests.reliability.flows import consent, consent_id, refer, register_case
from tests.reliability.report import Report
from tests.reliability.stack import Operation, operations, token_with
from tests.support.issuer import role_scopes

OWNER, RECIPIENT, STRANGER = "iom", "unhcr", "legalaid"


@dataclass(frozen=True)
class PartyOnly:
    """Only the resource's parties may use it: anyone else gets 404, as if it did not exist."""

    body: Callable[[Network], dict[str, Any] | None] = lambda net: None


@dataclass(frozen=True)
class OpenToScope:
    """Every holder of the operation's scope may use it, whoever made the resource: ``why`` says who and why."""

    why: str


ROUTES: dict[tuple[str, str, str], PartyOnly | OpenToScope] = {
    ("intake", "GET", "/cases/{case_id}"): PartyOnly(),
    ("intake", "PATCH", "/cases/{case_id}"): PartyOnly(lambda net: {"risk_level": "high"}),
    ("intake", "POST", "/cases/{case_id}/erase"): PartyOnly(),
    ("intake", "POST", "/cases/{case_id}/consents"): PartyOnly(lambda net: consent(net.agency(STRANGER))),
    ("intake", "GET", "/cases/{case_id}/consents"): PartyOnly(),
    ("intake", "POST", "/cases/{case_id}/consents/{consent_id}/withdraw"): PartyOnly(lambda net: {"reason": "x"}),
    ("intake", "POST", "/cases/{case_id}/overrides"): PartyOnly(lambda net: {
        "recipient_agency": net.agency(STRANGER),
        "justification": "Found unconscious; the recruiter is looking for her"}),
    ("intake", "GET", "/cases/{case_id}/overrides"): PartyOnly(),
    ("intake", "POST", "/cases/{case_id}/overrides/{override_id}/approval"): PartyOnly(),
    ("intake", "POST", "/cases/{case_id}/overrides/{override_id}/revocation"): PartyOnly(),
    ("referral", "GET", "/referrals/{referral_id}"): PartyOnly(),
    ("referral", "POST", "/referrals/{referral_id}/transitions"): PartyOnly(lambda net: {"to": "received"}),
    ("referral", "GET", "/subscriptions/{subscription_id}"): PartyOnly(),
    ("referral", "DELETE", "/subscriptions/{subscription_id}"): PartyOnly(),
    ("referral", "POST", "/subscriptions/{subscription_id}/reactivate"): PartyOnly(),
    ("referral", "GET", "/subscriptions/{subscription_id}/deliveries"): PartyOnly(),
    ("registry", "PATCH", "/services/{service_id}"): PartyOnly(lambda net: {"hours": "Mon-Fri 9-17"}),
    ("registry", "DELETE", "/services/{service_id}"): PartyOnly(),
    ("registry", "PUT", "/services/{service_id}/capacity"): PartyOnly(
        lambda net: {"available": 0, "total": 1, "status": "full"}),
    ("registry", "GET", "/agencies/{agency_id}"): OpenToScope("agencies' public profiles are the directory"),
    ("registry", "PATCH", "/agencies/{agency_id}"): OpenToScope("the operator (scope admin) manages every agency"),
    ("registry", "GET", "/services/{service_id}"): OpenToScope("the service directory is public to registry:read"),
    ("registry", "GET", "/hsds/services/{service_id}"): OpenToScope("the directory, in HSDS form"),
    ("audit", "GET", "/audit/cases/{case_id}/access"): OpenToScope("the oversight body (audit:read) audits every case"),
    ("audit", "GET", "/audit/cases/{case_id}/consents"): OpenToScope("the oversight body audits every case"),
    ("referral", "POST", "/subscriptions/{subscription_id}/rotate-secret"): PartyOnly(),
    ("audit", "POST", "/audit/checkpoints/{tree_size}/cosignatures"): OpenToScope(
        "a witness (audit:witness) cosigns the log's checkpoints, which are public to witnesses; a size is no id"),
}


def _key(op: Operation) -> tuple[str, str, str]:
    return (op.service, op.method.upper(), op.path)


def _holds(op: Operation, scopes: set[str]) -> bool:
    """Whether a token of ``scopes`` meets one of ``op``'s security requirements."""
    return any(set(alternative) <= scopes for alternative in op.alternatives or ((),))


def test_every_route_that_takes_an_id_is_in_the_matrix(reliability_network: Network) -> None:
    """A new id-taking route fails here until it is added to ROUTES, as party-only (and so tested) or open."""
    taking_ids = {_key(op) for op in operations(reliability_network) if op.path_params}
    assert taking_ids - set(ROUTES) == set(), "routes the isolation matrix does not cover yet"
    assert set(ROUTES) - taking_ids == set(), "routes in the matrix that no service has any more"


@dataclass
class OwnersResources:
    """What the owner made, by path parameter, and the ids nobody else may see anywhere."""

    ids: dict[str, str]
    private: set[str] = field(default_factory=set)


async def make_resources(http: httpx.AsyncClient, net: Network) -> OwnersResources:
    case = await register_case(http, net, OWNER, RECIPIENT)
    consent = await consent_id(http, net, OWNER, case["id"])
    # A risk-to-life override, requested by one of the owner's caseworkers with their own token (issue 20).
    override = await http.post(net.url("intake") + f"/cases/{case['id']}/overrides", headers=Staff(net).headers(
        OWNER), json={"recipient_agency": net.agency(STRANGER), "justification": "Threat to life, isolation test"})
    assert override.status_code == 201, override.text
    referral = await refer(http, net, OWNER, case["id"], RECIPIENT)
    subscription = await http.post(net.url("referral") + "/subscriptions", headers=net.headers(OWNER),
                                   json={"url": "http://127.0.0.1:9/case-system"})
    assert subscription.status_code == 201, subscription.text
    service = await http.post(net.url("registry") + "/services", headers=net.headers(OWNER), json={
        "taxonomy": "shelter", "names": {"en": "Isolation test shelter"}, "countries": ["IT"],
        "capacity": {"available": 2, "total": 4, "status": "accepting"}})
    assert service.status_code == 201, service.text
    ids = {"case_id": case["id"], "consent_id": consent, "referral_id": referral["id"],
           "subscription_id": subscription.json()["id"], "service_id": service.json()["id"],
           "agency_id": net.agency(OWNER), "override_id": override.json()["id"]}
    private = {ids[name] for name in ("case_id", "consent_id", "referral_id", "subscription_id", "override_id")}
    return OwnersResources(ids, private)


async def test_an_agency_that_is_not_a_party_gets_404_on_every_id_route_and_changes_nothing(
        reliability_network: Network, report: Report) -> None:
    net = reliability_network
    # The stranger calls as its system, and as one of its people: a supervisor (issue 20), who holds what
    # approving an override needs -- a scope no system token is given.
    system_scopes = set(net.credentials(STRANGER)["scopes"])
    person_scopes = set(role_scopes(("supervisor",)).split())
    staff = Staff(net)
    answers: dict[str, int] = {}
    uncalled: list[str] = []
    async with httpx.AsyncClient(timeout=30) as http:
        owned = await make_resources(http, net)
        party_only = [op for op in operations(net) if isinstance(ROUTES.get(_key(op)), PartyOnly)]
        # Reads first, then writes, and erasure last: a write that wrongly succeeded must not hide a later read.
        party_only.sort(key=lambda op: (op.method != "get", op.path.endswith("/erase"), op.method == "delete"))
        for op in party_only:
            route = ROUTES[_key(op)]
            assert isinstance(route, PartyOnly)
            body = route.body(net)
            callers = {"system": lambda: net.headers(STRANGER)} if _holds(op, system_scopes) else {}
            if _holds(op, person_scopes):
                callers["person"] = lambda: staff.headers(STRANGER, ("supervisor",))
            if not callers:
                uncalled.append(op.label)
            for caller, headers in callers.items():
                response = await http.request(op.method.upper(), op.url(net, **owned.ids), headers=headers(),
                                              json=body)
                answers[f"{op.label} ({caller})"] = response.status_code

        # Nothing the stranger tried took effect.
        owner = net.headers(OWNER)
        case = await http.get(net.url("intake") + f"/cases/{owned.ids['case_id']}", headers=owner)
        referral = await http.get(net.url("referral") + f"/referrals/{owned.ids['referral_id']}", headers=owner)
        subscription = await http.get(net.url("referral") + f"/subscriptions/{owned.ids['subscription_id']}",
                                      headers=owner)
        service = await http.get(net.url("registry") + f"/services/{owned.ids['service_id']}", headers=owner)
        consents = await http.get(net.url("intake") + f"/cases/{owned.ids['case_id']}/consents", headers=owner)
        overrides = await http.get(net.url("intake") + f"/cases/{owned.ids['case_id']}/overrides", headers=owner)
    untouched = {
        "case still active, risk level unchanged": case.status_code == 200 and case.json()["status"] == "active"
        and case.json()["screening"]["risk_level"] == "medium",
        "referral still requested": referral.status_code == 200 and referral.json()["status"] == "requested",
        "subscription still there": subscription.status_code == 200,
        "service unchanged": service.status_code == 200 and service.json()["status"] == "active"
        and service.json()["capacity"]["status"] == "accepting" and not service.json().get("hours"),
        "one consent version, not withdrawn": consents.status_code == 200 and len(consents.json()["items"]) == 1,
        "the override still pending": overrides.status_code == 200
        and [o["state"] for o in overrides.json()["items"]] == ["pending"],
    }
    assert not uncalled, f"party-only operations neither the stranger's system nor its people may call: {uncalled}"
    wrong = {label: status for label, status in answers.items() if status != 404}
    cross_agency = sum(1 for status in answers.values() if status < 300)
    report.add("isolation: non-party access by id",
               injected=f"the {len(answers)} party-only operations that take an id, called by an agency holding "
                        "every scope they need but party to nothing of the resource",
               checked="404 (not 403, not 2xx) on each; the owner's case, consent, referral, subscription and "
                       "service unchanged",
               figures={"operations": len(answers), "open by design": sum(
                   isinstance(r, OpenToScope) for r in ROUTES.values()), "cross-agency reads or writes": cross_agency},
               failures=len(wrong) + sum(not ok for ok in untouched.values()))
    assert not wrong, f"expected 404 for a non-party: {wrong}"
    assert all(untouched.values()), untouched


async def test_no_list_an_agency_can_read_holds_another_agencys_private_ids(
        reliability_network: Network, report: Report) -> None:
    net = reliability_network
    stranger_scopes = set(net.credentials(STRANGER)["scopes"])
    lists = [op for op in operations(net) if op.method == "get" and not op.path_params and op.scopes is not None
             and not op.required_query and any(set(alt) <= stranger_scopes for alt in op.alternatives)]
    leaks: dict[str, list[str]] = {}
    async with httpx.AsyncClient(timeout=30) as http:
        owned = await make_resources(http, net)
        # The owner's referral reaches the recipient's read models first (so a leak would have had the chance).
        await eventually(lambda: http.get(net.url("intake") + f"/cases/{owned.ids['case_id']}",
                                          headers=net.headers(RECIPIENT, "referral")),
                         lambda r: r.status_code == 200)
        for op in lists:
            # The longest page each list gives (HSDS calls its size per_page).
            params: dict[str, str | int] = {name: 500 for name in ("limit", "per_page") if name in op.query}
            if op.path == "/referrals/suggestions":
                params = {"service_type": "shelter", "case_id": owned.ids["case_id"]}
            response = await http.get(op.url(net), headers=net.headers(STRANGER), params=params)
            assert response.status_code == 200, f"{op.label}: {response.status_code} {response.text[:300]}"
            found = sorted(i for i in owned.private if i in response.text)
            if found:
                leaks[op.label] = found
    report.add("isolation: lists",
               injected="every list and feed (GET without an id) the stranger's scopes allow, after the owner made "
                        "a case, consent, referral and subscription",
               checked="none of the owner's private ids in any answer",
               figures={"lists": len(lists), "ids looked for": len(owned.private), "leaks": len(leaks)},
               failures=len(leaks))
    assert len(lists) >= 6, [op.label for op in lists]
    assert not leaks, leaks


# --- scopes -------------------------------------------------------------------------------------------------

#: The demo agencies that between them hold every scope (each also holds registry:read, so a token without the
#: scope under test still holds something).
HOLDERS = ("iom", "admin", "oversight", "referral-service")


#: A scope only people hold (issue 20): tested with a supervisor's token lacking it.
PERSON = "a supervisor of iom"


def _holder(net: Network, scopes: tuple[str, ...]) -> str:
    holders = [name for name in HOLDERS if set(scopes) <= set(net.credentials(name)["scopes"])]
    if not holders and set(scopes) <= set(role_scopes(("supervisor",)).split()):
        return PERSON
    return holders[0]


def _token_without(net: Network, holder: str, scope: str) -> str:
    if holder == PERSON:
        held = [s for s in role_scopes(("supervisor",)).split() if s not in scope.split()]
        return Staff(net).forge(OWNER, ("supervisor",), scope=" ".join(held))
    return token_with(net, holder, [s for s in net.credentials(holder)["scopes"] if s not in scope.split()])


def test_every_secured_operation_refuses_a_token_without_its_scope(
        reliability_network: Network, report: Report) -> None:
    net = reliability_network
    secured = [op for op in operations(net) if op.scopes]
    unscoped = [op.label for op in operations(net) if op.scopes == ()]
    refusals: dict[str, str] = {}
    tried = 0
    tokens: dict[tuple[str, str], str] = {}
    with httpx.Client(timeout=30) as http:
        for op in secured:
            scopes = op.scopes or ()
            holder = _holder(net, scopes if len(op.alternatives) < 2 else op.alternatives[0])
            # Where any one of several requirements is enough, the token must lack them all to be refused.
            for scope in (scopes if len(op.alternatives) < 2 else [" ".join(scopes)]):
                if (holder, scope) not in tokens:
                    tokens[(holder, scope)] = _token_without(net, holder, scope)
                headers = {"Authorization": f"Bearer {tokens[(holder, scope)]}", "X-Purpose": "case_management"}
                # The scope is checked before the body is validated, so any JSON body will do.
                response = http.request(op.method.upper(), op.url(net, **dict.fromkeys(op.path_params, "x1")),
                                        headers=headers, json={} if op.body_media_type == "application/json"
                                        else None)
                tried += 1
                challenge = response.headers.get("www-authenticate", "")
                ok = (response.status_code == 403 and 'error="insufficient_scope"' in challenge
                      and response.json().get("type") == "urn:refnet:problem:insufficient-scope"
                      and set(scope.split()) & set(response.json().get("required_scopes", [])))
                if not ok:
                    refusals[f"{op.label} without {scope}"] = f"{response.status_code} {response.text[:200]}"
    report.add("isolation: scopes",
               injected="for each secured operation and each scope it declares in OpenAPI, a token of an agency "
                        "holding every other scope it has",
               checked="403 insufficient-scope with the RFC 6750 challenge naming the scope",
               figures={"operations": len(secured), "tokens missing one scope": tried,
                        "secured without a scope": len(unscoped)},
               failures=len(refusals) + len(unscoped))
    assert not unscoped, f"secured operations that declare no scope: {unscoped}"
    assert not refusals, refusals


@pytest.mark.parametrize("service", ["intake", "referral"])
async def test_a_stranger_cannot_tell_a_hidden_resource_from_a_missing_one(
        reliability_network: Network, service: str) -> None:
    """The 404 a stranger gets is the 404 of a resource that does not exist: nothing tells them apart."""
    net = reliability_network
    path = {"intake": "/cases/case-does-not-exist", "referral": "/referrals/does-not-exist"}[service]
    async with httpx.AsyncClient(timeout=30) as http:
        missing = await http.get(net.url(service) + path, headers=net.headers(STRANGER))
        case = await register_case(http, net, OWNER, RECIPIENT)
        referral = await refer(http, net, OWNER, case["id"], RECIPIENT)
        existing_path = {"intake": f"/cases/{case['id']}", "referral": f"/referrals/{referral['id']}"}[service]
        hidden = await http.get(net.url(service) + existing_path, headers=net.headers(STRANGER))
    assert missing.status_code == hidden.status_code == 404
    strip = ("instance",)
    assert {k: v for k, v in missing.json().items() if k not in strip} == {
        k: v for k, v in hidden.json().items() if k not in strip}
