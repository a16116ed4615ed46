"""The few public-API steps the reliability suites need to make resources: a case with consent, a referral.

Fictional, unmarked personal data: the leak scan uses tests/e2e/scenarios.py with its marked people instead.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.e2e.network import CHECKLIST, Network, eventually

PERSON = {"given_name": "Nadia", "family_name": "Karimi", "birth_date": "1995-03-08", "gender": "feminine",
          "citizenship": "AF", "languages": ["fa"], "phone": "+393331234567", "email": None, "documents": ["none"]}
SCREENING = {"trafficking_status": "possible", "identified_by": "ngo", "country_of_exploitation": "LY",
             "exploitation_types": ["forced_labour"], "means_of_control": ["debt_bondage"],
             "recruiter_relation": "other", "migration_status": "asylum_seeker", "fear_of_return": False,
             "needs": ["shelter"], "risk_level": "medium", "notes": "reliability suite, fictional"}
CATEGORIES = ["identity", "demographics", "protection_needs"]


def consent(recipient: str) -> dict[str, Any]:
    valid_until = (datetime.now(UTC) + timedelta(days=365)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"grantor": "self", "method": "written", "language": "fa", "interpreter_used": True,
            "provisions": [{"purpose": "referral", "recipient_agency": recipient, "data_categories": CATEGORIES,
                            "decision": "permit"}],
            "valid_until": valid_until, "checklist": dict.fromkeys(CHECKLIST, True)}


async def register_case(http: httpx.AsyncClient, net: Network, owner: str, recipient: str) -> dict[str, Any]:
    """A case of ``owner`` whose consent permits a referral to ``recipient`` (a demo agency's short name)."""
    body = {"person": PERSON, "screening": SCREENING, "initial_consent": consent(net.agency(recipient))}
    created = await http.post(net.url("intake") + "/cases", headers=net.headers(owner), json=body)
    assert created.status_code == 201, created.text
    return dict(created.json())


async def consent_id(http: httpx.AsyncClient, net: Network, owner: str, case_id: str) -> str:
    got = await http.get(net.url("intake") + f"/cases/{case_id}/consents", headers=net.headers(owner))
    assert got.status_code == 200, got.text
    return str(got.json()["items"][-1]["id"])


async def refer(http: httpx.AsyncClient, net: Network, sender: str, case_id: str, recipient: str) -> dict[str, Any]:
    """A referral, retried while referral's read model of the registry is still filling after start-up."""
    body = {"case_id": case_id, "to_agency": net.agency(recipient), "pathway": "protection",
            "service_type": "shelter", "priority": "normal", "reason": "Needs a safe place",
            "shared_categories": CATEGORIES}

    headers = net.headers(sender) | {"Idempotency-Key": f"reliability-{uuid.uuid4().hex}"}  # retries are safe

    async def post() -> httpx.Response:
        return await http.post(net.url("referral") + "/referrals", headers=headers, json=body)

    created = await eventually(post, lambda r: r.status_code == 201, seconds=30)
    assert created.status_code == 201, created.text
    return dict(created.json())
