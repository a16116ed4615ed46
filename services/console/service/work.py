"""The caseworker's, supervisor's and auditor's use cases: each one or a few calls to the APIs as the person."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from services.console import domain
from services.console.service.apis import Apis, Refused
from services.console.service.sessions import SignedIn

#: Why the console reads case data (intake's X-Purpose): a recipient reads what its referral shares.
PURPOSE_REFERRAL = "referral"
PURPOSE_CASEWORK = "case_management"


@dataclass(frozen=True)
class ReferralPage:
    referral: dict[str, Any]
    case: dict[str, Any] | None
    moves: list[domain.NextMove]
    case_refusal: str | None


class Referrals:
    def __init__(self, apis: Apis) -> None:
        self.apis = apis

    async def queue(self, who: SignedIn, *, role: str, status: str | None, pathway: str | None,
                    overdue: bool | None, cursor: str | None, limit: int = 20) -> dict[str, Any]:
        found: dict[str, Any] = await self.apis.referral.call(
            who.tokens.access_token, "GET", "/referrals",
            params={"role": role, "status": status, "pathway": pathway,
                    "overdue": None if overdue is None else str(overdue).lower(), "cursor": cursor, "limit": limit})
        return found

    async def open(self, who: SignedIn, referral_id: str) -> ReferralPage:
        """The referral, its history, and the minimised case the person's agency may see (read for the
        referral's purpose: intake records the read, and shares only the referral's categories)."""
        referral: dict[str, Any] = await self.apis.referral.call(who.tokens.access_token, "GET",
                                                                 f"/referrals/{referral_id}")
        case: dict[str, Any] | None = None
        refusal: str | None = None
        try:
            case = await self.apis.intake.call(who.tokens.access_token, "GET", f"/cases/{referral['case_id']}",
                                               headers={"X-Purpose": PURPOSE_REFERRAL})
        except Refused as refused:
            refusal = domain.refusal_message(refused.problem_type, refused.status)
        moves = domain.next_moves(str(referral.get("status")), my_agency=who.person.agency,
                                  from_agency=str(referral.get("from_agency")), to_agency=referral.get("to_agency"))
        return ReferralPage(referral, case, moves, refusal)

    async def move(self, who: SignedIn, referral_id: str, to: str, reason_code: str | None,
                   note: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"to": to}
        if reason_code:
            body["reason_code"] = reason_code
        if note:
            body["note"] = note
        moved: dict[str, Any] = await self.apis.referral.call(
            who.tokens.access_token, "POST", f"/referrals/{referral_id}/transitions", json=body)
        return moved

    async def indicators(self, who: SignedIn) -> dict[str, Any]:
        """The agency's own figures, month by month (the referral API's, for the agency the token names)."""
        found: dict[str, Any] = await self.apis.referral.call(who.tokens.access_token, "GET", "/indicators")
        return found

    async def refer(self, who: SignedIn, body: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
        created: dict[str, Any] = await self.apis.referral.call(
            who.tokens.access_token, "POST", "/referrals", json=body, headers={"Idempotency-Key": idempotency_key})
        return created


class Cases:
    def __init__(self, apis: Apis) -> None:
        self.apis = apis
        self._choices: dict[str, list[str]] | None = None

    async def choices(self) -> dict[str, list[str]]:
        """The forms' choices, from intake's own OpenAPI document (read once it answers)."""
        if self._choices is None:
            try:
                answer = await self.apis.intake.client.get("/openapi.json")
                answer.raise_for_status()
                self._choices = domain.choices_of(answer.json())
            except (httpx.HTTPError, ValueError):
                return domain.choices_of({})
        return self._choices

    async def mine(self, who: SignedIn, cursor: str | None) -> dict[str, Any]:
        found: dict[str, Any] = await self.apis.intake.call(who.tokens.access_token, "GET", "/cases",
                                                            params={"cursor": cursor, "limit": 20})
        return found

    async def register(self, who: SignedIn, body: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
        created: dict[str, Any] = await self.apis.intake.call(
            who.tokens.access_token, "POST", "/cases", json=body,
            headers={"X-Purpose": PURPOSE_CASEWORK, "Idempotency-Key": idempotency_key})
        return created

    async def read(self, who: SignedIn, case_id: str) -> dict[str, Any]:
        found: dict[str, Any] = await self.apis.intake.call(who.tokens.access_token, "GET", f"/cases/{case_id}",
                                                            headers={"X-Purpose": PURPOSE_CASEWORK})
        return found

    async def consents(self, who: SignedIn, case_id: str) -> dict[str, Any]:
        found: dict[str, Any] = await self.apis.intake.call(
            who.tokens.access_token, "GET", f"/cases/{case_id}/consents", headers={"X-Purpose": PURPOSE_CASEWORK})
        return found

    async def grant(self, who: SignedIn, case_id: str, body: dict[str, Any]) -> dict[str, Any]:
        created: dict[str, Any] = await self.apis.intake.call(who.tokens.access_token, "POST",
                                                              f"/cases/{case_id}/consents", json=body)
        return created

    async def withdraw(self, who: SignedIn, case_id: str, consent_id: str, reason: str | None) -> dict[str, Any]:
        done: dict[str, Any] = await self.apis.intake.call(
            who.tokens.access_token, "POST", f"/cases/{case_id}/consents/{consent_id}/withdraw",
            json={"reason": reason} if reason else {})
        return done


    async def overrides(self, who: SignedIn, case_id: str) -> list[dict[str, Any]]:
        found = await self.apis.intake.call(who.tokens.access_token, "GET", f"/cases/{case_id}/overrides")
        items = found.get("items", []) if isinstance(found, dict) else []
        return [item for item in items if isinstance(item, dict)]

    async def request_override(self, who: SignedIn, case_id: str, recipient_agency: str,
                               justification: str) -> dict[str, Any]:
        created: dict[str, Any] = await self.apis.intake.call(
            who.tokens.access_token, "POST", f"/cases/{case_id}/overrides",
            json={"recipient_agency": recipient_agency, "justification": justification})
        return created

    async def decide_override(self, who: SignedIn, case_id: str, override_id: str, approve: bool) -> dict[str, Any]:
        """Approve, or refuse (a revocation of the pending request): each the supervisor's own act."""
        step = "approval" if approve else "revocation"
        done: dict[str, Any] = await self.apis.intake.call(
            who.tokens.access_token, "POST", f"/cases/{case_id}/overrides/{override_id}/{step}")
        return done

    async def pending_overrides(self, who: SignedIn, limit: int = 50) -> list[dict[str, Any]]:
        """The agency's pending overrides, from its most recent cases (intake lists them per case)."""
        cases = await self.mine(who, None)
        found: list[dict[str, Any]] = []
        for case in (cases.get("items") or [])[:limit]:
            if not isinstance(case, dict) or not isinstance(case.get("id"), str):
                continue
            try:
                overrides = await self.overrides(who, case["id"])
            except Refused:
                continue
            found += domain.pending_for(overrides, me=who.person.sub, roles=who.roles)
        return found


class Staff:
    """The agency admin's: the agency's staff, inviting a person, resetting a sign-in (the registry's staff API)."""

    def __init__(self, apis: Apis) -> None:
        self.apis = apis

    def _path(self, who: SignedIn) -> str:
        return f"/agencies/{who.person.agency}/staff"

    async def members(self, who: SignedIn) -> list[dict[str, Any]]:
        found = await self.apis.registry.call(who.tokens.access_token, "GET", self._path(who))
        items = found.get("items", []) if isinstance(found, dict) else []
        return [item for item in items if isinstance(item, dict)]

    async def invite(self, who: SignedIn, login: str, roles: list[str]) -> dict[str, Any]:
        link: dict[str, Any] = await self.apis.registry.call(who.tokens.access_token, "POST", self._path(who),
                                                             json={"login": login, "roles": roles})
        return link

    async def reset(self, who: SignedIn, person_id: str) -> dict[str, Any]:
        link: dict[str, Any] = await self.apis.registry.call(who.tokens.access_token, "POST",
                                                             f"{self._path(who)}/{person_id}/reset")
        return link


class Directory:
    def __init__(self, apis: Apis) -> None:
        self.apis = apis

    async def search(self, who: SignedIn, *, taxonomy: str | None, country: str | None, language: str | None,
                     query: str | None) -> list[dict[str, Any]]:
        found = await self.apis.registry.call(
            who.tokens.access_token, "GET", "/services",
            params={"taxonomy": taxonomy, "country": country, "language": language, "q": query,
                    "limit": 20})
        items = found.get("items", []) if isinstance(found, dict) else []
        return [item for item in items if isinstance(item, dict)]


    async def suggest(self, who: SignedIn, *, case_id: str, service_type: str, country: str | None,
                      language: str | None) -> list[dict[str, Any]]:
        """The referral service's ranking for this case's need (leaving out agencies it is already referred to);
        none when the need is not a taxonomy code the ranking takes."""
        try:
            found = await self.apis.referral.call(
                who.tokens.access_token, "GET", "/referrals/suggestions",
                params={"service_type": service_type, "case_id": case_id, "country": country,
                        "languages": language, "limit": 5})
        except Refused as refused:
            if refused.status in (400, 422):
                return []
            raise
        items = found.get("items", []) if isinstance(found, dict) else []
        return [item for item in items if isinstance(item, dict)]


class Audit:
    def __init__(self, apis: Apis) -> None:
        self.apis = apis

    async def case_history(self, who: SignedIn, case_id: str) -> dict[str, Any]:
        token = who.tokens.access_token
        access = await self.apis.audit.call(token, "GET", f"/audit/cases/{case_id}/access")
        consents = await self.apis.audit.call(token, "GET", f"/audit/cases/{case_id}/consents")
        return {"access": access, "consents": consents}

    async def checkpoint(self, who: SignedIn) -> dict[str, Any]:
        token = who.tokens.access_token
        checkpoint = await self.apis.audit.call(token, "GET", "/audit/checkpoint")
        keys = await self.apis.audit.call(token, "GET", "/audit/public-key")
        return {"checkpoint": checkpoint, "keys": keys}

    async def inclusion(self, who: SignedIn, index: int, tree_size: int) -> dict[str, Any]:
        """The proof, and the entry itself: the page hashes the entry it shows rather than trust a leaf hash."""
        token = who.tokens.access_token
        found: dict[str, Any] = await self.apis.audit.call(
            token, "GET", "/audit/proofs/inclusion", params={"index": index, "tree_size": tree_size})
        # The entries' cursor is the index after which a page starts.
        params: dict[str, Any] = {"limit": 1} | ({"cursor": str(index - 1)} if index > 0 else {})
        page = await self.apis.audit.call(token, "GET", "/audit/entries", params=params)
        items = page.get("items") or []
        found["entry"] = items[0] if items and items[0].get("index") == index else None
        return found
