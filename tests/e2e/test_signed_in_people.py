"""Issue #20's "done when", on the stack as `make run` starts it: the demo IOM caseworker signs in over HTTP
(code + PKCE + a TOTP code, tests/support/sign_in.py), registers a case and records consent as themself, and the
audit log names them from their verified token; the override they request cannot be approved by them, nor by
UNHCR's supervisor, only by IOM's supervisor, each signed in the same way -- and its entries name both people.

(Named to run after test_readme.py, which signs the same caseworker in: the sign-in helper steps past a TOTP code
spent there.)"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.e2e.network import CHECKLIST, Network, eventually
from tests.support.sign_in import Tokens, person_file, sign_in


def problem_type(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    return str(response.json()["type"]).removeprefix("urn:refnet:problem:")


async def signed_in(network: Network, login: str) -> tuple[str, Tokens]:
    """(the person's id, their tokens) for a demo person, signed in over HTTP."""
    credentials = network.home / "credentials" / "people" / f"{login}.json"
    tokens = await asyncio.to_thread(sign_in, network.url("registry"), credentials)
    return str(person_file(credentials)["person_id"]), tokens


def as_person(tokens: Tokens, purpose: str = "case_management") -> dict[str, str]:
    return {**tokens.bearer, "X-Purpose": purpose}


def consent(recipient: str) -> dict[str, Any]:
    return {"grantor": "self", "method": "written", "language": "en", "interpreter_used": False,
            "provisions": [{"purpose": "referral", "recipient_agency": recipient,
                            "data_categories": ["demographics"], "decision": "permit"}],
            "valid_until": "2030-01-01T00:00:00Z", "checklist": dict.fromkeys(CHECKLIST, True)}


async def test_people_sign_in_act_as_themselves_and_an_override_takes_two_of_them(network: Network) -> None:
    intake, audit = network.url("intake"), network.url("audit")
    iom, unhcr, clinic = network.agency("iom"), network.agency("unhcr"), network.agency("clinic")
    caseworker, caseworker_tokens = await signed_in(network, "iom-caseworker")

    async with httpx.AsyncClient(timeout=30) as http:
        # The caseworker registers a case and records a consent, with their own token and no X-Acting-User.
        created = await http.post(intake + "/cases", headers=as_person(caseworker_tokens), json={
            "person": {"given_name": "Sara", "family_name": "Nour", "birth_date": "1997-03-14", "gender": "feminine",
                       "citizenship": "SD", "languages": ["ar"], "documents": ["none"]},
            "screening": {"trafficking_status": "possible", "identified_by": "ngo", "country_of_exploitation": "LY",
                          "exploitation_types": ["forced_labour"], "means_of_control": ["threats"],
                          "recruiter_relation": "other", "migration_status": "asylum_seeker",
                          "fear_of_return": True, "needs": ["shelter"], "risk_level": "high"}})
        assert created.status_code == 201, created.text
        case_id = created.json()["id"]
        granted = await http.post(f"{intake}/cases/{case_id}/consents", headers=as_person(caseworker_tokens),
                                  json=consent(unhcr))
        assert granted.status_code == 201, granted.text
        assert (granted.json()["recorded_by_user"], granted.json()["recorded_by_attested_by"]) == (caseworker, "token")
        # A header naming someone else is refused: a person acts only as themself.
        posing = await http.get(f"{intake}/cases/{case_id}",
                                headers=as_person(caseworker_tokens) | {"X-Acting-User": "iom-supervisor"})
        assert (posing.status_code, problem_type(posing)) == (403, "acting-user-contradicts-token"), posing.text

        # The override: requested by the caseworker, with a justification ...
        overrides = f"{intake}/cases/{case_id}/overrides"
        requested = await http.post(overrides, headers=as_person(caseworker_tokens), json={
            "recipient_agency": clinic, "justification": "Found unconscious; needs urgent care; recruiter nearby"})
        assert requested.status_code == 201, requested.text
        assert (requested.json()["state"], requested.json()["requested_by"]) == ("pending", caseworker)
        approval = f"{overrides}/{requested.json()['id']}/approval"
        # ... which the requester cannot approve (a caseworker's token holds no overrides:approve) ...
        alone = await http.post(approval, headers=as_person(caseworker_tokens))
        assert (alone.status_code, problem_type(alone)) == (403, "insufficient-scope"), alone.text
        # ... nor another agency's supervisor (the case is not theirs to see) ...
        _, stranger_tokens = await signed_in(network, "unhcr-supervisor")
        stranger = await http.post(approval, headers=as_person(stranger_tokens))
        assert (stranger.status_code, problem_type(stranger)) == (404, "not-found"), stranger.text
        # ... only a supervisor of IOM, signed in as themself.
        supervisor, supervisor_tokens = await signed_in(network, "iom-supervisor")
        approved = await http.post(approval, headers=as_person(supervisor_tokens))
        assert approved.status_code == 200, approved.text
        assert (approved.json()["state"], approved.json()["requested_by"], approved.json()["approved_by"]) == (
            "active", caseworker, supervisor)

        # The audit log names each person from their verified token.
        auditor = {"Authorization": f"Bearer {network.token('oversight')}", "X-Purpose": "audit"}

        async def entries() -> list[dict[str, Any]]:
            got = await http.get(audit + "/audit/entries", headers=auditor, params={"case_id": case_id, "limit": 500})
            assert got.status_code == 200, got.text
            return list(got.json()["items"])

        wanted = {"case.create", "consent.grant", "consent.override.request", "consent.override"}
        logged = await eventually(entries, lambda es: wanted <= {e["action"] for e in es if e["outcome"] == "success"})
        acts = {e["action"]: e for e in logged if e["outcome"] == "success"}
        assert wanted <= set(acts), logged
        for action in ("case.create", "consent.grant", "consent.override.request"):
            assert (acts[action]["agency"], acts[action]["acting_user"],
                    acts[action]["details"].get("attested_by")) == (iom, caseworker, "token"), acts[action]
        override = acts["consent.override"]
        assert (override["acting_user"], override["details"].get("approver"), override["details"].get("requested_by"),
                override["details"].get("attested_by")) == (supervisor, supervisor, caseworker, "token"), override
        # Nobody's act is recorded as a system's assertion here.
        assert all(e["details"].get("attested_by") != "system" for e in logged), logged
