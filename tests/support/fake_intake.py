"""A fake intake: its side of ``POST /internal/clearance`` as the contract describes it, in memory, behind an
``httpx.MockTransport`` -- what referral's tests refer cases against. ``tests/integration/referral/
test_clearance_contract.py`` checks that it answers as the real intake does.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

SERVICE_TOKEN = "referral-service-token"


@dataclass
class FakeCase:
    owner: str
    is_minor: bool | None = False  # None: an intake that answers an unknown age as such
    bia_completed: bool = False
    bid_completed: bool = False
    fear_of_return: bool = False
    # consent id -> (recipient agency or None for any, permitted categories)
    consents: dict[str, tuple[str | None, set[str]]] = field(default_factory=dict)
    # consent id -> its version (1 unless set)
    versions: dict[str, int] = field(default_factory=dict)
    # recipient agency -> override id: a risk-to-life disclosure without consent (docs/domain.md rule 6)
    overrides: dict[str, str] = field(default_factory=dict)


class FakeIntake:
    """intake's side of POST /internal/clearance, as the contract describes it; ``handle`` is the transport."""

    def __init__(self) -> None:
        self.cases: dict[str, FakeCase] = {}
        self.down: int | None = None  # an HTTP status to answer with, or 0 for "unreachable"
        self.calls: list[dict[str, Any]] = []
        self.suspended: set[str] = set()  # agencies intake already knows are suspended
        self.erased: set[str] = set()

    def add_case(self, owner: str, *, consent_to: str | None = None, categories: set[str] | None = None,
                 **facts: bool | None) -> tuple[str, str]:
        case_id = "case-" + uuid.uuid4().hex[:12]
        consent_id = "consent-" + uuid.uuid4().hex[:12]
        case = FakeCase(owner=owner, **facts)
        case.consents[consent_id] = (consent_to, categories or {"identity", "demographics", "protection_needs"})
        self.cases[case_id] = case
        return case_id, consent_id

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.down == 0:
            raise httpx.ConnectError("intake is down")
        if self.down is not None:
            return httpx.Response(self.down, json={"type": "urn:refnet:problem:internal-error"})
        assert request.url.path == "/internal/clearance"
        if request.headers.get("authorization") != f"Bearer {SERVICE_TOKEN}":
            return httpx.Response(401)
        body = json.loads(request.content)
        self.calls.append(body)
        case = self.cases.get(body["case_id"])
        if case is None or case.owner != body["from_agency"]:
            return httpx.Response(404, json={"type": "urn:refnet:problem:not-found"})
        facts = {"is_minor": case.is_minor, "bia_completed": case.bia_completed,
                 "bid_completed": case.bid_completed, "fear_of_return": case.fear_of_return,
                 "status": "erased" if body["case_id"] in self.erased else "active"}
        if body["case_id"] in self.erased or body["to_agency"] in self.suspended:
            reason = "case-erased" if body["case_id"] in self.erased else "recipient-suspended"
            return httpx.Response(200, json={"permitted": False, "reason": reason, "consent_id": None,
                                             "consent_version": None, "override_id": None, "facts": facts})
        wanted = set(body["data_categories"])
        match = next((cid for cid, (to, cats) in case.consents.items()
                      if (to is None or to == body["to_agency"]) and wanted <= cats), None)
        override = case.overrides.get(body["to_agency"]) if match is None else None
        if override is not None:  # as intake: an override counts only where no consent permits
            return httpx.Response(200, json={"permitted": True, "reason": "override", "consent_id": None,
                                             "consent_version": None, "override_id": override, "facts": facts})
        return httpx.Response(200, json={
            "permitted": match is not None, "reason": None if match else "consent-missing",
            "consent_id": match, "consent_version": case.versions.get(match, 1) if match else None,
            "facts": {"is_minor": case.is_minor, "bia_completed": case.bia_completed,
                      "bid_completed": case.bid_completed, "fear_of_return": case.fear_of_return,
                      "status": "active"},
        })
