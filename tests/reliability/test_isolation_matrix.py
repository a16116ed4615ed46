"""Isolation (issue #8, part 3; OWASP API1 broken object-level authorisation, API5 broken function-level authorisation).

Generated from the services' own OpenAPI documents, so that a new route cannot forget it:

- every operation whose path takes an id is in ``ROUTES``: either party-only (created here as one agency, called as
  another that holds every scope the operation needs and is party to nothing of it: 404, and nothing changed), or
  visible to every holder of its scope by design (the directory, the operator, the oversight body) with the reason;
  a route that is in neither fails the first test;
- every list an agency can read holds none of another agency's case, consent, referral, subscription or person ids
  (what only a signed-in person may read, such as ``/oauth/userinfo``, read with a stranger's person's token);
- every secured operation refuses a token that lacks any one of its scopes with 403 ``insufficient_scope`` (or, where
  that is the product's rule, with the 404 a non-party gets), and every secured operation without a scope is one
  only a signed-in person's token may call, which refuses a system's.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.e2e.network import Network, eventually
from tests.e2e.staff import Staff
from tests.reliability.flows import consent, consent_id, refer, register_case
from tests.reliability.report import Report
from tests.reliability.stack import PERSON_ONLY, PERSON_ROLES, Operation, operations, token_with
from tests.support.issuer import role_scopes

OWNER, RECIPIENT, STRANGER = "iom", "unhcr", "legalaid"


@dataclass(frozen=True)
class PartyOnly:
    """Only the resource's parties may use it: anyone else gets 404, as if it did not exist."""

    body: Callable[[Network], dict[str, Any] | None] = lambda net: None
    #: The 404 whatever the caller's scopes: a token without the operation's scopes is refused as a non-party is
    #: (so it is called with such tokens too, and the scope test expects that 404 rather than a 403).
    whatever_scopes: bool = False


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
    # An agency's staff (issue 20): the platform's operator (admin) or the agency's own admin (staff:admin);
    # another agency's admin, any system token without admin, any other person: 404 (domain.may_manage_staff).
    ("registry", "POST", "/agencies/{agency_id}/staff"): PartyOnly(
        lambda net: {"login": f"intruder-{uuid.uuid4().hex[:8]}", "roles": ["caseworker"]}, whatever_scopes=True),
    ("registry", "GET", "/agencies/{agency_id}/staff"): PartyOnly(whatever_scopes=True),
    ("registry", "POST", "/agencies/{agency_id}/staff/{person_id}/reset"): PartyOnly(whatever_scopes=True),
    # Agencies' own identity providers (issue 20 part 5).
    ("registry", "DELETE", "/identity-providers/{idp_id}"): OpenToScope(
        "the operator (scope admin) decides which agency's provider the platform trusts"),
    ("registry", "GET", "/oauth/federated/{idp_id}"): OpenToScope(
        "the start of a sign-in through an agency's provider, public as /oauth/authorize is: no token, nothing of "
        "a case; the id is in the sign-in link the agency's people follow"),
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
    # A person invited into the owner's staff by the platform's operator (issue 20).
    person = await http.post(net.url("registry") + f"/agencies/{net.agency(OWNER)}/staff", headers=net.headers(
        "admin"), json={"login": f"isolation-{uuid.uuid4().hex[:8]}", "roles": ["caseworker"]})
    assert person.status_code == 201, person.text
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
           "agency_id": net.agency(OWNER), "override_id": override.json()["id"],
           "person_id": person.json()["person"]["id"]}
    private = {ids[name] for name in ("case_id", "consent_id", "referral_id", "subscription_id", "override_id",
                                      "person_id")}
    return OwnersResources(ids, private)


async def test_an_agency_that_is_not_a_party_gets_404_on_every_id_route_and_changes_nothing(
        reliability_network: Network, report: Report) -> None:
    net = reliability_network
    # The stranger calls as its system, and as its people (issue 20): a supervisor, who holds what approving an
    # override needs, and an agency admin, who holds what managing staff needs -- scopes no system token is given.
    system_scopes = set(net.credentials(STRANGER)["scopes"])
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
            callers = {"system": lambda: net.headers(STRANGER)} \
                if _holds(op, system_scopes) or route.whatever_scopes else {}
            for roles in PERSON_ROLES:
                if _holds(op, set(role_scopes(roles).split())) or route.whatever_scopes:
                    callers[" and ".join(roles)] = lambda roles=roles: staff.headers(STRANGER, roles)
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
        staff_list = await http.get(net.url("registry") + f"/agencies/{owned.ids['agency_id']}/staff",
                                    headers=net.headers("admin"))
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
        "no one invited into the owner's staff by the stranger": staff_list.status_code == 200
        and not [p for p in staff_list.json()["items"] if p["login"].startswith("intruder-")],
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
    # What only a signed-in person may read is read by one of the stranger's people, signed in for real.
    person = {"Authorization": f"Bearer {Staff(net).token(STRANGER)}"}
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
            headers = person if _key(op) in PERSON_ONLY else net.headers(STRANGER)
            response = await http.get(op.url(net), headers=headers, params=params)
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
    unscoped = [op.label for op in operations(net) if op.scopes == () and _key(op) not in PERSON_ONLY]
    person_only = [op for op in operations(net) if _key(op) in PERSON_ONLY]
    assert {_key(op) for op in person_only} == set(PERSON_ONLY), "person-only operations no service has any more"
    assert all(op.scopes == () for op in person_only), "a person-only operation declares a scope: test it as such"
    refusals: dict[str, str] = {}
    tried = 0
    tokens: dict[tuple[str, str], str] = {}
    with httpx.Client(timeout=30) as http:
        for op in secured:
            scopes = op.scopes or ()
            holder = _holder(net, scopes if len(op.alternatives) < 2 else op.alternatives[0])
            route = ROUTES.get(_key(op))
            # Refused as a non-party is (404), on staff the full token may see (checked below): only the scope is why.
            as_not_found = isinstance(route, PartyOnly) and route.whatever_scopes
            ids = dict.fromkeys(op.path_params, "x1")
            if as_not_found and "agency_id" in ids:
                ids["agency_id"] = net.agency(OWNER)  # whose staff the holder's full token may see
            # Where any one of several requirements is enough, the token must lack them all to be refused.
            for scope in (scopes if len(op.alternatives) < 2 else [" ".join(scopes)]):
                if (holder, scope) not in tokens:
                    tokens[(holder, scope)] = _token_without(net, holder, scope)
                headers = {"Authorization": f"Bearer {tokens[(holder, scope)]}", "X-Purpose": "case_management"}
                # The scope is checked before the body is validated, so any JSON body will do.
                body = route.body(net) if as_not_found and isinstance(route, PartyOnly) else {}
                response = http.request(op.method.upper(), op.url(net, **ids), headers=headers,
                                        json=body if op.body_media_type == "application/json" else None)
                tried += 1
                challenge = response.headers.get("www-authenticate", "")
                if as_not_found:
                    ok = response.status_code == 404 and response.json().get("type") == "urn:refnet:problem:not-found"
                    if op.method == "get":  # and the holder of the scope is answered: the 404 was the scope's
                        full = http.get(op.url(net, **ids), headers=net.headers(holder))
                        ok = ok and full.status_code == 200
                    if not ok:
                        refusals[f"{op.label} without {scope}"] = f"{response.status_code} {response.text[:200]}"
                    continue
                ok = (response.status_code == 403 and 'error="insufficient_scope"' in challenge
                      and response.json().get("type") == "urn:refnet:problem:insufficient-scope"
                      and set(scope.split()) & set(response.json().get("required_scopes", [])))
                if not ok:
                    refusals[f"{op.label} without {scope}"] = f"{response.status_code} {response.text[:200]}"
        # Person-only operations: a system's token holding every scope is refused (401 invalid_token, RFC 6750);
        # a signed-in person's live token is answered.
        person = {"Authorization": f"Bearer {Staff(net).token(OWNER)}"}
        for op in person_only:
            system = http.request(op.method.upper(), op.url(net), headers=net.headers("admin"))
            signed_in = http.request(op.method.upper(), op.url(net), headers=person)
            tried += 1
            if not (system.status_code == 401 and 'error="invalid_token"' in system.headers.get("www-authenticate", "")
                    and system.headers.get("content-type", "").startswith("application/problem+json")
                    and signed_in.status_code == 200):
                refusals[f"{op.label} with a system's token"] = (f"{system.status_code} {system.text[:200]}; a "
                                                                  f"person's: {signed_in.status_code}")
    report.add("isolation: scopes",
               injected="for each secured operation and each scope it declares in OpenAPI, a token of an agency "
                        "holding every other scope it has",
               checked="403 insufficient-scope with the RFC 6750 challenge naming the scope",
               figures={"operations": len(secured), "tokens missing one scope": tried,
                        "person-only": len(person_only), "secured without a scope": len(unscoped)},
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
